//! Row-level invariants checked when data enters a dataflow, so that operators can assume them:
//! ids are present; per-token lists have one entry per token; segment codes are known and each
//! turn's action is contiguous; rewards, values and action-token log-probs are finite.
//!
//! NaN policy: a NaN or infinite reward, value or action-token log-prob is an error that names
//! the file, the episode and the column (a NaN would otherwise silently poison a whole group's
//! baseline). Log-probs on non-action tokens are NaN by convention and are not checked.

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float32Type, Int32Type, UInt8Type};

use crate::error::{Error, Result};
use crate::ops::action_boundaries::action_spans;
use crate::ops::segment::ACTION;

/// Logical columns holding one value per token.
const PER_TOKEN: &[&str] = &["tokens", "turns", "values", "logp", "logp_ref", "logp_behavior"];
/// Per-token float columns that must be finite on action tokens.
const FINITE_ON_ACTIONS: &[&str] = &["values", "logp", "logp_ref", "logp_behavior"];

/// Checks every row of `batch`. `roles` maps logical column names (as operators know them) to the
/// batch's column names; only roles present in it are checked.
pub fn check_rows(file: &Path, batch: &RecordBatch, roles: &BTreeMap<String, String>) -> Result<()> {
    let ids = batch.column_by_name("episode_id").and_then(|c| c.as_string_opt::<i32>()).ok_or_else(|| {
        Error::Schema { file: file.into(), column: "episode_id".into(), message: "missing or not utf8".into() }
    })?;
    let episode = |i: usize| if ids.is_valid(i) { ids.value(i).to_string() } else { format!("<row {i}>") };
    let data_err = |i: usize, column: &str, message: String| Error::Data {
        file: file.into(),
        episode: episode(i),
        column: column.into(),
        message,
    };
    if let Some(i) = (0..ids.len()).find(|&i| ids.is_null(i)) {
        return Err(data_err(i, "episode_id", "is null".into()));
    }
    let col = |role: &str| roles.get(role).and_then(|name| batch.column_by_name(name).map(|c| (name.as_str(), c)));

    for role in ["group_id", "task_id"] {
        if let Some((name, c)) = col(role) {
            if let Some(i) = (0..c.len()).find(|&i| c.is_null(i)) {
                return Err(data_err(i, name, "is null".into()));
            }
        }
    }
    for role in ["reward", "bootstrap_value", "prev_trial_reward"] {
        if let Some((name, c)) = col(role) {
            let v = c.as_primitive::<Float32Type>();
            if role == "reward" {
                if let Some(i) = (0..v.len()).find(|&i| v.is_null(i)) {
                    return Err(data_err(i, name, "is null".into()));
                }
            }
            if let Some(i) = (0..v.len()).find(|&i| v.is_valid(i) && !v.value(i).is_finite()) {
                return Err(data_err(i, name, format!("is {} (rewards and values must be finite)", v.value(i))));
            }
        }
    }
    if let Some((name, c)) = col("turn_rewards") {
        let l = c.as_list::<i32>();
        for i in 0..l.len() {
            if l.is_null(i) {
                return Err(data_err(i, name, "is null".into()));
            }
            let r = l.value(i);
            let r = r.as_primitive::<Float32Type>();
            if let Some(j) = (0..r.len()).find(|&j| !r.value(j).is_finite()) {
                return Err(data_err(i, name, format!("turn {j} reward is {}", r.value(j))));
            }
        }
    }
    let Some((seg_name, seg)) = col("segments") else { return Ok(()) };
    let seg = seg.as_list::<i32>();
    let seg_values = seg.values().as_primitive::<UInt8Type>().values();
    let seg_off = seg.value_offsets();
    let segments = |i: usize| &seg_values[seg_off[i] as usize..seg_off[i + 1] as usize];
    for i in 0..seg.len() {
        if seg.is_null(i) {
            return Err(data_err(i, seg_name, "is null".into()));
        }
    }
    for role in PER_TOKEN {
        let Some((name, c)) = col(role) else { continue };
        let l = c.as_list::<i32>();
        let off = l.value_offsets();
        for i in 0..l.len() {
            let n = (off[i + 1] - off[i]) as usize;
            if l.is_valid(i) && n != segments(i).len() {
                return Err(data_err(
                    i,
                    name,
                    format!("has {n} entries but segments has {} tokens", segments(i).len()),
                ));
            }
        }
        if FINITE_ON_ACTIONS.contains(role) {
            let v = l.values().as_primitive::<Float32Type>().values();
            for (i, &start) in off.iter().take(l.len()).enumerate() {
                if l.is_null(i) {
                    continue;
                }
                let (s, segs) = (start as usize, segments(i));
                if let Some(j) = (0..segs.len()).find(|&j| segs[j] == ACTION && !v[s + j].is_finite()) {
                    return Err(data_err(i, name, format!("is {} at action token {j}", v[s + j])));
                }
            }
        }
    }
    if let (Some((_, turns)), Some((_, rewards))) = (col("turns"), col("turn_rewards")) {
        let turns = turns.as_list::<i32>();
        let rewards = rewards.as_list::<i32>();
        let t_values = turns.values().as_primitive::<Int32Type>().values();
        let t_off = turns.value_offsets();
        let r_off = rewards.value_offsets();
        for i in 0..seg.len() {
            let t = &t_values[t_off[i] as usize..t_off[i + 1] as usize];
            let n_turns = (r_off[i + 1] - r_off[i]) as usize;
            action_spans(segments(i), t, n_turns).map_err(|e| data_err(i, seg_name, e.to_string()))?;
        }
    }
    Ok(())
}
