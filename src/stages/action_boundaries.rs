//! `action_boundaries`: writes `action_end` (true on the last token of each action), the
//! boundary flags POAD's Bellman backup and per-turn ratios need. Empty actions have no token.

use arrow::array::ArrayRef;

use super::columns::{per_token_bool, StageInput};
use super::episode::Episodes;
use super::{params, Col, Describe, LocalOp, ParamError};
use crate::ops::action_boundaries::action_end_flags;

/// The operator (no parameters).
pub struct ActionBoundaries;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {}

impl ActionBoundaries {
    /// Parses the (empty) parameter table.
    pub fn new(t: &toml::Table) -> Result<Self, ParamError> {
        let _: Params = params::parse(t)?;
        Ok(ActionBoundaries)
    }
}

impl Describe for ActionBoundaries {
    fn reads(&self) -> Vec<Col> {
        Episodes::columns()
    }
    fn writes(&self) -> Vec<Col> {
        vec![Col::new("action_end", "list<bool>")]
    }
    fn params(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

impl LocalOp for ActionBoundaries {
    fn apply(&self, input: &StageInput<'_>) -> Result<Vec<ArrayRef>, String> {
        let ep = Episodes::new(input)?;
        let out = per_token_bool(&ep.segments, input.num_rows(), |i, out| {
            let flags = action_end_flags(&ep.spans(i)?, out.len());
            out.copy_from_slice(&flags);
            Ok(())
        })?;
        Ok(vec![out])
    }
}
