//! `broadcast`: puts an episode-level value (`episode_advantage` by default) on every action token
//! of the episode, 0 elsewhere: LOOP's and RLOO's per-token advantage. Writes `advantages`.

use arrow::array::{Array, ArrayRef};
use arrow::datatypes::{Float32Type, UInt8Type};

use super::columns::{per_token_f32, StageInput};
use super::{params, Col, Describe, LocalOp, ParamError};
use crate::ops::broadcast::broadcast_scalar;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {}

/// The operator (no parameters; rename the columns with `read`/`write`).
pub struct Broadcast;

impl Broadcast {
    /// Parses the (empty) parameter table.
    pub fn new(t: &toml::Table) -> Result<Self, ParamError> {
        let _: Params = params::parse(t)?;
        Ok(Broadcast)
    }
}

impl Describe for Broadcast {
    fn reads(&self) -> Vec<Col> {
        vec![Col::new("segments", "list<uint8>"), Col::new("episode_advantage", "float32")]
    }
    fn writes(&self) -> Vec<Col> {
        vec![Col::new("advantages", "list<float32>")]
    }
    fn params(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

impl LocalOp for Broadcast {
    fn apply(&self, input: &StageInput<'_>) -> Result<Vec<ArrayRef>, String> {
        let segments = input.lists::<UInt8Type>("segments")?;
        let value = input.scalars::<Float32Type>("episode_advantage")?;
        let out = per_token_f32(&segments, input.num_rows(), |i, out| {
            if value.is_null(i) {
                return Err(format!("row {i}: column '{}' is null", input.name("episode_advantage")));
            }
            broadcast_scalar(segments.row(i), value.value(i), out);
            Ok(())
        })?;
        Ok(vec![out])
    }
}
