//! `reflector_reward`: RetroAct's reward for the reflection written between two trials, from the
//! trial's outcome (`reward`) and the previous trial's (`prev_trial_reward`). The official code's
//! (R − R_last)·(R_last + α)/α (`formula = "code"`, α = 1) weights improvements from an already
//! partly-correct trial more; the paper's R − R_last is `formula = "paper"`. Rows without a
//! previous trial (planner rows) get null.
//!
//! It also writes what RetroAct trains each row with (O22 + O24): `episode_advantage`, the
//! reflector reward on reflector rows and the trial's own reward on planner rows (no baseline),
//! and `keep`, false where that is 0 (RetroAct drops planner rows with reward 0 and reflector
//! rows whose trials scored the same) or where the row's role is not trained (`train = "planner"`
//! is RetroAct's planner-only ablation, `"reflector"` the reflector-only one; default `"both"`).
//! Writes `reflector_reward`, `episode_advantage` and `keep`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Float32Array};
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
    #[serde(default)]
    train: Roles,
}

/// Which rows RetroAct trains on.
#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Roles {
    #[default]
    Both,
    Planner,
    Reflector,
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
    train: Roles,
}

impl ReflectorReward {
    /// Parses `formula` (`code` | `paper`), `alpha` (> 0, code formula only) and `train`
    /// (`both` | `planner` | `reflector`).
    pub fn new(t: &toml::Table) -> Result<Self, ParamError> {
        let p: Params = params::parse(t)?;
        params::positive("alpha", p.alpha)?;
        let formula = match p.formula {
            Formula::Code => ReflectorFormula::Code { alpha: p.alpha },
            Formula::Paper => ReflectorFormula::Paper,
        };
        Ok(ReflectorReward { formula, train: p.train })
    }
}

impl Describe for ReflectorReward {
    fn reads(&self) -> Vec<Col> {
        vec![Col::new("reward", "float32"), Col::new("prev_trial_reward", "float32")]
    }
    fn writes(&self) -> Vec<Col> {
        vec![
            Col::new("reflector_reward", "float32"),
            Col::new("episode_advantage", "float32"),
            Col::new("keep", "bool"),
        ]
    }
    fn params(&self) -> Vec<(String, String)> {
        vec![("formula".into(), format!("{:?}", self.formula)), ("train".into(), format!("{:?}", self.train))]
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
        let advantage: Float32Array =
            (0..r.len()).map(|i| if out.is_valid(i) { out.value(i) } else { r.value(i) }).map(Some).collect();
        let keep: BooleanArray = (0..r.len())
            .map(|i| {
                let role_trained = match self.train {
                    Roles::Both => true,
                    Roles::Planner => out.is_null(i),
                    Roles::Reflector => out.is_valid(i),
                };
                Some(role_trained && advantage.value(i) != 0.0)
            })
            .collect();
        Ok(vec![Arc::new(out), Arc::new(advantage), Arc::new(keep)])
    }
}
