//! `reinforce_pp_returns`: REINFORCE++ token returns, the reverse discounted sum of rewards over
//! action tokens (γ per token), rewards on each action's last token. At an observation gap the
//! running sum is reset (`observation_tokens = "reset"`, veRL's semantics: earlier turns see none
//! of the later rewards) or carried through (`"carry"`, AgentGym-RL's multi-turn fix). Follow with
//! `normalize` (batch scope) for REINFORCE++'s global whitening. Writes `returns`.

use arrow::array::ArrayRef;

use super::columns::{per_token_f32, StageInput};
use super::episode::Episodes;
use super::{params, Col, Describe, LocalOp, ParamError};
use crate::ops::reinforce_pp::{reinforce_pp_returns, ObservationPolicy};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "one")]
    gamma: f32,
    #[serde(default)]
    observation_tokens: Obs,
}

#[derive(Debug, Default, Clone, Copy, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Obs {
    #[default]
    Reset,
    Carry,
}

fn one() -> f32 {
    1.0
}

/// The operator.
pub struct ReinforcePpReturns {
    gamma: f32,
    obs: Obs,
}

impl ReinforcePpReturns {
    /// Parses `gamma` (default 1.0) and `observation_tokens` (`reset` | `carry`).
    pub fn new(t: &toml::Table) -> Result<Self, ParamError> {
        let p: Params = params::parse(t)?;
        params::in_range("gamma", p.gamma as f64, 0.0, 1.0)?;
        Ok(ReinforcePpReturns { gamma: p.gamma, obs: p.observation_tokens })
    }
}

impl Describe for ReinforcePpReturns {
    fn reads(&self) -> Vec<Col> {
        Episodes::columns()
    }
    fn writes(&self) -> Vec<Col> {
        vec![Col::new("returns", "list<float32>")]
    }
    fn params(&self) -> Vec<(String, String)> {
        vec![("gamma".into(), format!("{:?}", self.gamma)), ("observation_tokens".into(), format!("{:?}", self.obs))]
    }
}

impl LocalOp for ReinforcePpReturns {
    fn apply(&self, input: &StageInput<'_>) -> Result<Vec<ArrayRef>, String> {
        let ep = Episodes::new(input)?;
        let obs = match self.obs {
            Obs::Reset => ObservationPolicy::Reset,
            Obs::Carry => ObservationPolicy::Carry,
        };
        let out = per_token_f32(&ep.segments, input.num_rows(), |i, out| {
            reinforce_pp_returns(&ep.spans(i)?, ep.turn_rewards.row(i), out.len(), self.gamma, obs, out);
            Ok(())
        })?;
        Ok(vec![out])
    }
}
