//! The episode structure most operators need: per-token segments and turns, and the per-turn
//! rewards, with the action span of every turn.

use arrow::datatypes::{Float32Type, Int32Type, UInt8Type};

use super::columns::{Lists, StageInput};
use super::Col;
use crate::ops::action_boundaries::{action_spans, ActionSpan};

/// Views of `segments`, `turns` and `turn_rewards`.
pub struct Episodes<'a> {
    /// Per-token segment codes.
    pub segments: Lists<'a, u8>,
    /// Per-token turn indices.
    pub turns: Lists<'a, i32>,
    /// Per-turn rewards.
    pub turn_rewards: Lists<'a, f32>,
}

impl<'a> Episodes<'a> {
    /// The columns this view reads.
    pub fn columns() -> Vec<Col> {
        vec![
            Col::new("segments", "list<uint8>"),
            Col::new("turns", "list<int32>"),
            Col::new("turn_rewards", "list<float32>"),
        ]
    }

    /// Binds the view.
    pub fn new(input: &StageInput<'a>) -> Result<Self, String> {
        Ok(Episodes {
            segments: input.lists::<UInt8Type>("segments")?,
            turns: input.lists::<Int32Type>("turns")?,
            turn_rewards: input.lists::<Float32Type>("turn_rewards")?,
        })
    }

    /// The action span of every turn of row `i`.
    pub fn spans(&self, i: usize) -> Result<Vec<Option<ActionSpan>>, String> {
        action_spans(self.segments.row(i), self.turns.row(i), self.turn_rewards.row(i).len())
            .map_err(|e| format!("row {i}: {e}"))
    }
}
