//! Preference pairs for DPO-style learners (StepAgent's step-level DPO, ETO's trajectory DPO): the
//! rows of a group (one decision point, or one task) are ranked by `reward`, and the best row is
//! paired with the worst as (chosen, rejected).
//!
//! Invariants:
//! - Pairs come out as consecutive examples `(2i, 2i + 1)` = (chosen, rejected), in the order of
//!   the groups' first rows, so the result is a function of the rows alone.
//! - A group whose best and worst rewards tie gives no pair (the two actions are equally good, and
//!   for identical actions DPO's gradient is zero anyway); rows without an action token, or with a
//!   non-finite reward, never enter a pair.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::datatypes::{Float32Type, UInt8Type};

use super::examples::{from_rows, Columns, Example};
use crate::error::{Error, Result};
use crate::ops::segment::Segment;

/// How many groups gave a pair and how many were skipped as ties.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairCount {
    /// Groups that gave a (chosen, rejected) pair.
    pub pairs: usize,
    /// Groups whose rewards tie (or with fewer than two usable rows).
    pub ties: usize,
}

/// The (chosen, rejected) examples of `rows` (see the module docs), grouped by `group_id`.
pub fn preference_pairs(rows: &RecordBatch) -> Result<(Vec<Example>, PairCount)> {
    let column = |name: &str| {
        rows.column_by_name(name).ok_or_else(|| Error::Usage(format!("learner (dpo): rows have no '{name}' column")))
    };
    let groups = column("group_id")?;
    let groups = groups
        .as_string_opt::<i32>()
        .ok_or_else(|| Error::Usage("learner (dpo): 'group_id' is not a string".into()))?;
    let rewards = column("reward")?
        .as_primitive_opt::<Float32Type>()
        .ok_or_else(|| Error::Usage("learner (dpo): 'reward' is not float32".into()))?
        .clone();
    let segments = column("segments")?.as_list::<i32>().clone();
    let mut by_group: BTreeMap<&str, (usize, Vec<usize>)> = BTreeMap::new();
    for i in 0..rows.num_rows() {
        let acts = segments.value(i);
        let has_action = acts.as_primitive::<UInt8Type>().values().contains(&(Segment::Action as u8));
        let usable = groups.is_valid(i) && rewards.is_valid(i) && rewards.value(i).is_finite() && has_action;
        if usable {
            by_group.entry(groups.value(i)).or_insert_with(|| (i, Vec::new())).1.push(i);
        }
    }
    let mut ordered: Vec<(usize, Vec<usize>)> = by_group.into_values().collect();
    ordered.sort_by_key(|(first, _)| *first);
    let mut take = Vec::new();
    let mut count = PairCount::default();
    for (_, members) in ordered {
        // Best: highest reward, first row on ties; worst: lowest reward, last row on ties.
        let best = members.iter().copied().reduce(|a, b| if rewards.value(b) > rewards.value(a) { b } else { a });
        let worst = members.iter().copied().reduce(|a, b| if rewards.value(b) <= rewards.value(a) { b } else { a });
        match (best, worst) {
            (Some(b), Some(w)) if rewards.value(b) > rewards.value(w) => {
                take.extend([b as u32, w as u32]);
                count.pairs += 1;
            }
            _ => count.ties += 1,
        }
    }
    let paired = arrow::compute::take_record_batch(rows, &UInt32Array::from(take))
        .map_err(|e| Error::Usage(format!("learner (dpo): {e}")))?;
    let examples = from_rows(&paired, Columns::default())?;
    debug_assert_eq!(examples.len(), 2 * count.pairs);
    Ok((examples, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::builder::{EpisodeRow, TrajectoryBuilder};

    fn row(id: &str, group: &str, reward: f32, first_token: i32) -> EpisodeRow {
        EpisodeRow {
            episode_id: id.into(),
            group_id: group.into(),
            tokens: vec![first_token, 7, 8],
            segments: vec![Segment::Prompt as u8, Segment::Action as u8, Segment::Action as u8],
            turns: vec![0; 3],
            turn_rewards: vec![reward],
            reward,
            ..Default::default()
        }
    }

    #[test]
    fn best_and_worst_of_each_group_in_row_order_ties_skipped() {
        let mut b = TrajectoryBuilder::default();
        for r in [
            row("a0", "g2", 0.0, 10),
            row("b0", "g1", 0.5, 20),
            row("a1", "g2", 1.0, 11),
            row("b1", "g1", 0.5, 21),
            row("a2", "g2", 0.0, 12),
            row("c0", "g3", 0.2, 30),
            row("c1", "g3", f32::NAN, 31),
            row("d0", "g4", 1.0, 40),
            row("d1", "g4", 0.0, 41),
        ] {
            b.push(r);
        }
        let (ex, count) = preference_pairs(&b.finish()).unwrap();
        assert_eq!(count, PairCount { pairs: 2, ties: 2 });
        let firsts: Vec<i64> = ex.iter().map(|e| e.tokens[0]).collect();
        // g2 (first row 0): best a1, worst a2 (the last of the tied worst); g4: d0 ≻ d1.
        assert_eq!(firsts, vec![11, 12, 40, 41]);
    }

    #[test]
    fn missing_columns_are_named() {
        let batch = RecordBatch::new_empty(std::sync::Arc::new(arrow::datatypes::Schema::empty()));
        let err = preference_pairs(&batch).unwrap_err().to_string();
        assert!(err.contains("group_id"), "{err}");
    }
}
