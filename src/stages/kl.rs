//! `kl`: per-token KL estimate between the policy log-probs (`logp`) and the reference's
//! (`logp_ref`) on action tokens, 0 elsewhere. Estimators k1 = logp − ref, k2 = ½(logp − ref)²,
//! k3 = exp(ref − logp) − (ref − logp) − 1. Clamping differs between peers and is a parameter:
//! `clamp = "verl"` (k3 only: log-ratio clamped to [−20, 20], result to [−10, 10]), `"openrlhf"`
//! (every estimator's result clamped to [−10, 10]) or `"none"` (TRL). Writes `kl`.

use arrow::array::ArrayRef;
use arrow::datatypes::{Float32Type, UInt8Type};

use super::columns::{per_token_f32, StageInput};
use super::{params, Col, Describe, LocalOp, ParamError};
use crate::ops::kl::{kl_tokens, KlClamp, KlEstimator};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    estimator: Estimator,
    #[serde(default)]
    clamp: Clamp,
}

#[derive(Debug, Default, Clone, Copy, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Estimator {
    K1,
    K2,
    #[default]
    K3,
}

#[derive(Debug, Default, Clone, Copy, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Clamp {
    #[default]
    Verl,
    Openrlhf,
    None,
}

/// The operator.
pub struct Kl {
    estimator: Estimator,
    clamp: Clamp,
}

impl Kl {
    /// Parses `estimator` (`k1` | `k2` | `k3`, default k3) and `clamp` (`verl` | `openrlhf` | `none`).
    pub fn new(t: &toml::Table) -> Result<Self, ParamError> {
        let p: Params = params::parse(t)?;
        Ok(Kl { estimator: p.estimator, clamp: p.clamp })
    }
}

impl Describe for Kl {
    fn reads(&self) -> Vec<Col> {
        vec![
            Col::new("segments", "list<uint8>"),
            Col::new("logp", "list<float32>"),
            Col::new("logp_ref", "list<float32>"),
        ]
    }
    fn writes(&self) -> Vec<Col> {
        vec![Col::new("kl", "list<float32>")]
    }
    fn params(&self) -> Vec<(String, String)> {
        vec![("estimator".into(), format!("{:?}", self.estimator)), ("clamp".into(), format!("{:?}", self.clamp))]
    }
}

impl LocalOp for Kl {
    fn apply(&self, input: &StageInput<'_>) -> Result<Vec<ArrayRef>, String> {
        let segments = input.lists::<UInt8Type>("segments")?;
        let logp = input.lists::<Float32Type>("logp")?;
        let reference = input.lists::<Float32Type>("logp_ref")?;
        let e = match self.estimator {
            Estimator::K1 => KlEstimator::K1,
            Estimator::K2 => KlEstimator::K2,
            Estimator::K3 => KlEstimator::K3,
        };
        let c = match self.clamp {
            Clamp::Verl => KlClamp::Verl,
            Clamp::Openrlhf => KlClamp::OpenRlhf,
            Clamp::None => KlClamp::None,
        };
        let out = per_token_f32(&segments, input.num_rows(), |i, out| {
            let (lp, rf) = (logp.row(i), reference.row(i));
            if lp.len() != out.len() || rf.len() != out.len() {
                return Err(format!("row {i}: log-prob lists do not match the {} tokens", out.len()));
            }
            kl_tokens(lp, rf, segments.row(i), e, c, out);
            Ok(())
        })?;
        Ok(vec![out])
    }
}
