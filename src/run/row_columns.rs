//! The trajectory columns the model steps read and write, on Arrow batches: token ids, segment
//! codes, which rows the policy played, and the episode outcome; and a batch with its `reward`
//! and `turn_rewards` (a reward model's one-step rewards) or its `values` and `bootstrap_value`
//! (a critic's) replaced.
//!
//! Invariants: a replaced column keeps its field (name, type, nullability) and its position, so
//! an annotated batch has the schema of the batch it came from; every reader checks the column's
//! type and names the column when it is missing or of another type.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float32Array, ListArray, RecordBatch};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Int32Type, UInt8Type};

use crate::error::{Error, Result};

fn list<'a>(rows: &'a RecordBatch, name: &str) -> Result<&'a ListArray> {
    rows.column_by_name(name)
        .and_then(|c| c.as_list_opt::<i32>())
        .ok_or_else(|| Error::Usage(format!("rows have no list column '{name}'")))
}

/// Every row's token ids.
pub fn token_ids(rows: &RecordBatch) -> Result<Vec<Vec<i64>>> {
    let tokens = list(rows, "tokens")?;
    (0..rows.num_rows())
        .map(|i| {
            let v = tokens.value(i);
            let v =
                v.as_primitive_opt::<Int32Type>().ok_or_else(|| Error::Usage("'tokens' is not list<int32>".into()))?;
            Ok(v.values().iter().map(|&t| i64::from(t)).collect())
        })
        .collect()
}

/// Checks that every token id of `rows` is one of the model's `vocab_size` ids: rows logged for
/// another model's tokenizer would otherwise fail deep inside the model (an index out of range).
/// The error names the first offending episode and token.
pub fn check_token_ids(rows: &RecordBatch, vocab_size: i64) -> Result<()> {
    let ids = rows.column_by_name("episode_id").and_then(|c| c.as_string_opt::<i32>());
    for (i, tokens) in token_ids(rows)?.iter().enumerate() {
        if let Some((j, t)) = tokens.iter().enumerate().find(|(_, &t)| t < 0 || t >= vocab_size) {
            let episode = ids.map_or(String::new(), |c| c.value(i).to_string());
            return Err(Error::Usage(format!(
                "episode '{episode}': column 'tokens': token {j} has id {t}, outside the model's vocabulary of \
                 {vocab_size} ids (were the rows tokenized for another model?)"
            )));
        }
    }
    Ok(())
}

/// Every row's segment codes (one per token).
pub fn segment_codes(rows: &RecordBatch) -> Result<Vec<Vec<u8>>> {
    let segments = list(rows, "segments")?;
    (0..rows.num_rows())
        .map(|i| {
            let v = segments.value(i);
            let v = v
                .as_primitive_opt::<UInt8Type>()
                .ok_or_else(|| Error::Usage("'segments' is not list<uint8>".into()))?;
            Ok(v.values().to_vec())
        })
        .collect()
}

/// Per row: whether the policy generated it (it has behaviour log-probs; expert rows have none).
pub fn generated(rows: &RecordBatch) -> Vec<bool> {
    match rows.column_by_name("logp_behavior") {
        Some(c) => (0..rows.num_rows()).map(|i| c.is_valid(i)).collect(),
        None => vec![false; rows.num_rows()],
    }
}

/// Per row: the boolean column `name` (null and absent = false).
pub fn flags(rows: &RecordBatch, name: &str) -> Vec<bool> {
    match rows.column_by_name(name).and_then(|c| c.as_boolean_opt()) {
        Some(c) => (0..rows.num_rows()).map(|i| c.is_valid(i) && c.value(i)).collect(),
        None => vec![false; rows.num_rows()],
    }
}

/// `(success rate, mean reward)` over the episodes the policy played (rows with behaviour
/// log-probs, reflector rows excepted), or over all rows when the policy played none (expert
/// rollouts): expert rows joined for comparison do not count in a rollout's statistics.
pub fn outcomes(rows: &RecordBatch) -> (f64, f64) {
    let reflector = rows.column_by_name("prev_trial_reward");
    let own: Vec<usize> = generated(rows)
        .into_iter()
        .enumerate()
        .filter(|&(i, g)| g && reflector.is_none_or(|c| c.is_null(i)))
        .map(|(i, _)| i)
        .collect();
    let played = if own.is_empty() { (0..rows.num_rows()).collect() } else { own };
    let success = flags(rows, "success");
    let reward = rows.column_by_name("reward").and_then(|c| c.as_primitive_opt::<arrow::datatypes::Float32Type>());
    let n = played.len().max(1) as f64;
    let wins = played.iter().filter(|&&i| success[i]).count() as f64;
    let sum: f64 = match reward {
        Some(r) => played.iter().filter(|&&i| r.is_valid(i)).map(|&i| f64::from(r.value(i))).sum(),
        None => 0.0,
    };
    (wins / n, sum / n)
}

/// `rows` with column `name` replaced by what `make` builds from its field's type (same field,
/// same position).
fn replaced(rows: &RecordBatch, name: &str, make: impl FnOnce(&DataType) -> Result<ArrayRef>) -> Result<RecordBatch> {
    let schema = rows.schema();
    let i = schema.index_of(name).map_err(|_| Error::Usage(format!("rows have no column '{name}'")))?;
    let mut columns = rows.columns().to_vec();
    columns[i] = make(schema.field(i).data_type())?;
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// A list<float32> column of type `ty` with one (non-null) list per item.
fn float_lists(ty: &DataType, items: &[Vec<f32>]) -> Result<ArrayRef> {
    let DataType::List(item) = ty else {
        return Err(Error::Usage(format!("expected a list<float32> column, not {ty}")));
    };
    let offsets = OffsetBuffer::from_lengths(items.iter().map(Vec::len));
    Ok(Arc::new(ListArray::try_new(item.clone(), offsets, Arc::new(Float32Array::from(items.concat())), None)?))
}

/// `rows` with one reward per row: `reward` set to it and `turn_rewards` to `[reward]` (the
/// rows of reward models are one-step rows).
pub fn with_rewards(rows: &RecordBatch, rewards: &[f32]) -> Result<RecordBatch> {
    let rows = replaced(rows, "reward", |_| Ok(Arc::new(Float32Array::from(rewards.to_vec()))))?;
    let turns: Vec<Vec<f32>> = rewards.iter().map(|&r| vec![r]).collect();
    replaced(&rows, "turn_rewards", |ty| float_lists(ty, &turns))
}

/// `rows` with the critic's per-token `values` and, for truncated episodes, `bootstrap_value`.
pub fn with_values(rows: &RecordBatch, values: &[Vec<f32>], bootstrap: &[Option<f32>]) -> Result<RecordBatch> {
    let rows = replaced(rows, "values", |ty| float_lists(ty, values))?;
    replaced(&rows, "bootstrap_value", |_| Ok(Arc::new(bootstrap.iter().copied().collect::<Float32Array>())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::builder::{EpisodeRow, TrajectoryBuilder};

    fn batch(rows: Vec<EpisodeRow>) -> RecordBatch {
        let mut b = TrajectoryBuilder::default();
        rows.into_iter().for_each(|r| b.push(r));
        b.finish()
    }

    fn row(id: &str, tokens: Vec<i32>, played: bool, success: bool, reward: f32) -> EpisodeRow {
        let n = tokens.len();
        EpisodeRow {
            episode_id: id.into(),
            segments: (0..n as u8).map(|i| i % 2).collect(),
            turns: vec![0; n],
            tokens,
            logp_behavior: played.then(|| vec![-1.0; n]),
            turn_rewards: vec![reward, 0.5],
            reward,
            success: Some(success),
            truncated: id == "b",
            ..Default::default()
        }
    }

    /// Written columns read back as built, with the schema of the batch they came from; the
    /// outcome counts the policy's rows only, all rows when it played none.
    #[test]
    fn columns_read_back_and_replacements_keep_the_schema() {
        let rows = batch(vec![row("a", vec![4, 5, 6], true, true, 1.0), row("b", vec![7], false, false, 3.0)]);
        assert_eq!(token_ids(&rows).unwrap(), vec![vec![4, 5, 6], vec![7]]);
        assert_eq!(segment_codes(&rows).unwrap(), vec![vec![0, 1, 0], vec![0]]);
        assert_eq!(generated(&rows), vec![true, false]);
        assert_eq!(outcomes(&rows), (1.0, 1.0));
        let experts = batch(vec![row("a", vec![1], false, true, 1.0), row("b", vec![2], false, false, 3.0)]);
        assert_eq!(outcomes(&experts), (0.5, 2.0));

        let rewarded = with_rewards(&rows, &[0.25, -2.0]).unwrap();
        assert_eq!(rewarded.schema(), rows.schema());
        let r = rewarded.column_by_name("reward").unwrap().as_primitive::<arrow::datatypes::Float32Type>();
        assert_eq!(r.values().to_vec(), vec![0.25, -2.0]);
        let turns = rewarded.column_by_name("turn_rewards").unwrap().as_list::<i32>();
        assert_eq!(turns.value(1).as_primitive::<arrow::datatypes::Float32Type>().values().to_vec(), vec![-2.0]);

        let valued = with_values(&rows, &[vec![0.0, 1.0, 2.0], vec![0.0]], &[None, Some(9.0)]).unwrap();
        assert_eq!(valued.schema(), rows.schema());
        let b = valued.column_by_name("bootstrap_value").unwrap().as_primitive::<arrow::datatypes::Float32Type>();
        assert!(b.is_null(0) && b.value(1) == 9.0);
        assert_eq!(flags(&valued, "truncated"), vec![false, true]);
        assert!(token_ids(&batch(vec![])).unwrap().is_empty());
        assert!(with_rewards(&rows.project(&[0]).unwrap(), &[0.0, 0.0]).is_err(), "no reward column to replace");
        check_token_ids(&rows, 8).unwrap();
        let e = check_token_ids(&rows, 7).unwrap_err().to_string();
        assert!(e.contains("episode 'b'") && e.contains("token 0 has id 7") && e.contains("vocabulary of 7"), "{e}");
    }
}
