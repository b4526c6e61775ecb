//! `discounted_return`: per-turn discounted return G_t = r_t + γ·G_{t+1}, reset at the episode's
//! end, with G_T = `bootstrap_value` when the episode was truncated (0 when it terminated, or when
//! no bootstrap value is stored). Writes `returns` (G_t on every token of action t) and
//! `episode_return` (G_0). Empty actions are ordinary steps of the discounting.

use arrow::array::{ArrayRef, Float32Array};
use arrow::datatypes::Float32Type;
use std::sync::Arc;

use super::columns::{opt_value, per_token_f32, StageInput};
use super::episode::Episodes;
use super::{params, Col, Describe, LocalOp, ParamError};
use crate::ops::broadcast::broadcast_turn_values;
use crate::ops::discounted_return::discounted_returns;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "one")]
    gamma: f32,
}

fn one() -> f32 {
    1.0
}

/// The operator.
pub struct DiscountedReturn {
    p: Params,
}

impl DiscountedReturn {
    /// Parses `gamma` (default 1.0, in [0, 1]).
    pub fn new(t: &toml::Table) -> Result<Self, ParamError> {
        let p: Params = params::parse(t)?;
        params::in_range("gamma", p.gamma as f64, 0.0, 1.0)?;
        Ok(DiscountedReturn { p })
    }
}

/// The bootstrap value of row `i`: the stored V(s_T) for a truncated episode, else 0.
pub(crate) fn bootstrap(input: &StageInput<'_>, i: usize) -> Result<f32, String> {
    let truncated = input.bools("truncated")?;
    let value = input.opt_scalars::<Float32Type>("bootstrap_value")?;
    Ok(if truncated.value(i) { opt_value(value, i).unwrap_or(0.0) } else { 0.0 })
}

/// The columns [`bootstrap`] reads.
pub(crate) fn bootstrap_columns() -> Vec<Col> {
    vec![Col::new("truncated", "bool"), Col::optional("bootstrap_value", "float32")]
}

impl Describe for DiscountedReturn {
    fn reads(&self) -> Vec<Col> {
        [Episodes::columns(), bootstrap_columns()].concat()
    }
    fn writes(&self) -> Vec<Col> {
        vec![Col::new("returns", "list<float32>"), Col::new("episode_return", "float32")]
    }
    fn params(&self) -> Vec<(String, String)> {
        params::show(&[("gamma", self.p.gamma)])
    }
}

impl LocalOp for DiscountedReturn {
    fn apply(&self, input: &StageInput<'_>) -> Result<Vec<ArrayRef>, String> {
        let ep = Episodes::new(input)?;
        let mut episode = Vec::with_capacity(input.num_rows());
        let returns = per_token_f32(&ep.segments, input.num_rows(), |i, out| {
            let g = discounted_returns(ep.turn_rewards.row(i), self.p.gamma, bootstrap(input, i)?);
            broadcast_turn_values(&ep.spans(i)?, &g, out.len(), out);
            episode.push(g.first().copied().unwrap_or_else(|| bootstrap(input, i).unwrap_or(0.0)));
            Ok(())
        })?;
        Ok(vec![returns, Arc::new(Float32Array::from(episode))])
    }
}
