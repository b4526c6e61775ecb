//! `gae`: generalised advantage estimation over action tokens, with a separate discount inside an
//! action. One operator, four published estimators as parameter sets:
//!
//! | estimator | parameters |
//! |---|---|
//! | POAD / BAD (default) | `gamma_intra = 1.0` |
//! | NTPO, and standard per-token GAE with the reward on the action's last token | `gamma_intra = gamma` |
//! | TWOSOME (one value per action) | `value_granularity = "action"` |
//! | LOOP's stable PPO baseline | `gamma = 1.0, lambda = 1.0` |
//!
//! Observation, prompt and template tokens are skipped: the running next value and running
//! advantage carry through them unchanged (veRL's masked carry-through; OpenRLHF instead scans
//! through them with zeroed values, which lets observation positions leak discounting). They get
//! advantage and return 0. Writes `advantages` and `returns` (= advantage + value).

use arrow::array::ArrayRef;
use arrow::datatypes::Float32Type;

use super::columns::{per_token_f32_pair, StageInput};
use super::discounted_return::{bootstrap, bootstrap_columns};
use super::episode::Episodes;
use super::{params, Col, Describe, LocalOp, ParamError};
use crate::ops::gae::{gae, GaeParams, ValueGranularity};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    gamma: f32,
    lambda: f32,
    gamma_intra: Option<f32>,
    lambda_intra: Option<f32>,
    #[serde(default)]
    value_granularity: Granularity,
}

#[derive(Debug, Default, Clone, Copy, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Granularity {
    #[default]
    Token,
    Action,
}

/// The operator.
pub struct Gae {
    p: GaeParams,
}

impl Gae {
    /// Parses `gamma`, `lambda` (required, in [0, 1]), `gamma_intra` (default 1.0: BAD),
    /// `lambda_intra` (default `lambda`) and `value_granularity` (`token` | `action`).
    pub fn new(t: &toml::Table) -> Result<Self, ParamError> {
        let p: Params = params::parse(t)?;
        let gamma_intra = p.gamma_intra.unwrap_or(1.0);
        let lambda_intra = p.lambda_intra.unwrap_or(p.lambda);
        for (k, v) in
            [("gamma", p.gamma), ("lambda", p.lambda), ("gamma_intra", gamma_intra), ("lambda_intra", lambda_intra)]
        {
            params::in_range(k, v as f64, 0.0, 1.0)?;
        }
        if matches!(p.value_granularity, Granularity::Action) && (p.gamma_intra.is_some() || p.lambda_intra.is_some()) {
            return Err(ParamError::new("gamma_intra", "has no meaning with value_granularity = \"action\""));
        }
        let granularity = match p.value_granularity {
            Granularity::Token => ValueGranularity::Token,
            Granularity::Action => ValueGranularity::Action,
        };
        Ok(Gae { p: GaeParams { gamma: p.gamma, lambda: p.lambda, gamma_intra, lambda_intra, granularity } })
    }
}

impl Describe for Gae {
    fn reads(&self) -> Vec<Col> {
        [Episodes::columns(), vec![Col::new("values", "list<float32>")], bootstrap_columns()].concat()
    }
    fn writes(&self) -> Vec<Col> {
        vec![Col::new("advantages", "list<float32>"), Col::new("returns", "list<float32>")]
    }
    fn params(&self) -> Vec<(String, String)> {
        let p = &self.p;
        let mut out = params::show(&[
            ("gamma", p.gamma),
            ("lambda", p.lambda),
            ("gamma_intra", p.gamma_intra),
            ("lambda_intra", p.lambda_intra),
        ]);
        out.push(("value_granularity".into(), format!("{:?}", p.granularity)));
        out
    }
}

impl LocalOp for Gae {
    fn apply(&self, input: &StageInput<'_>) -> Result<Vec<ArrayRef>, String> {
        let ep = Episodes::new(input)?;
        let values = input.lists::<Float32Type>("values")?;
        let (advantages, returns) = per_token_f32_pair(&ep.segments, input.num_rows(), |i, adv, ret| {
            let v = values.row(i);
            if v.len() != adv.len() {
                return Err(format!("row {i}: values has {} entries for {} tokens", v.len(), adv.len()));
            }
            gae(&ep.spans(i)?, ep.turn_rewards.row(i), v, bootstrap(input, i)?, &self.p, adv, ret);
            Ok(())
        })?;
        Ok(vec![advantages, returns])
    }
}
