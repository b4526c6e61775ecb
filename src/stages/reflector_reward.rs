//! `reflector_reward`: RetroAct's reward for the reflection written between two trials, from the
//! trial's outcome (`reward`) and the previous trial's (`prev_trial_reward`). The official code's
//! (R − R_last)·(R_last + α)/α (`formula = "code"`, α = 1) weights improvements from an already
//! partly-correct trial more; the paper's R − R_last is `formula = "paper"`. Rows without a
//! previous trial get null. Writes `reflector_reward`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float32Array};
use arrow::datatypes::Float32Type;

use super::columns::StageInput;
use super::{params, Col, Describe, LocalOp, ParamError};
use crate::ops::reward_transform::{reflector_reward, ReflectorFormula};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    formula: Formula,
    #[serde(default = "one")]
    alpha: f64,
}

#[derive(Debug, Default, Clone, Copy, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Formula {
    #[default]
    Code,
    Paper,
}

fn one() -> f64 {
    1.0
}

/// The operator.
pub struct ReflectorReward {
    formula: ReflectorFormula,
}

impl ReflectorReward {
    /// Parses `formula` (`code` | `paper`) and `alpha` (> 0, code formula only).
    pub fn new(t: &toml::Table) -> Result<Self, ParamError> {
        let p: Params = params::parse(t)?;
        params::positive("alpha", p.alpha)?;
        let formula = match p.formula {
            Formula::Code => ReflectorFormula::Code { alpha: p.alpha },
            Formula::Paper => ReflectorFormula::Paper,
        };
        Ok(ReflectorReward { formula })
    }
}

impl Describe for ReflectorReward {
    fn reads(&self) -> Vec<Col> {
        vec![Col::new("reward", "float32"), Col::new("prev_trial_reward", "float32")]
    }
    fn writes(&self) -> Vec<Col> {
        vec![Col::new("reflector_reward", "float32")]
    }
    fn params(&self) -> Vec<(String, String)> {
        vec![("formula".into(), format!("{:?}", self.formula))]
    }
}

impl LocalOp for ReflectorReward {
    fn apply(&self, input: &StageInput<'_>) -> Result<Vec<ArrayRef>, String> {
        let r = input.scalars::<Float32Type>("reward")?;
        let last = input.scalars::<Float32Type>("prev_trial_reward")?;
        let out: Float32Array = (0..r.len())
            .map(|i| {
                last.is_valid(i)
                    .then(|| reflector_reward(r.value(i) as f64, last.value(i) as f64, &self.formula) as f32)
            })
            .collect();
        Ok(vec![Arc::new(out)])
    }
}
