//! The staleness bound of stream training: rows more than `max` policy versions behind the
//! learner are dropped or trained with V-trace-style truncated importance weights.
//!
//! Invariants: a row's staleness is the learner's version minus the row's `policy_version` (a null
//! version is infinitely stale); truncation only ever shrinks a trained token's advantage
//! (min(1, π/μ)) and leaves tokens without a behaviour log-prob as they are.

use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::datatypes::Int64Type;

use super::examples::Example;
use crate::error::{Error, Result};
use crate::pipeline::training::StaleRows;

/// The staleness bound of one update.
pub struct Staleness {
    /// The learner's policy version.
    pub version: i64,
    /// Largest staleness trained as fresh.
    pub max: u64,
    /// What happens to older rows.
    pub mode: StaleRows,
}

impl Staleness {
    /// Number of stale rows in `rows`.
    pub fn count(&self, rows: &RecordBatch) -> Result<u64> {
        Ok(self.is_stale(rows)?.iter().filter(|&&s| s).count() as u64)
    }

    fn is_stale(&self, rows: &RecordBatch) -> Result<Vec<bool>> {
        let pv = versions(rows)?;
        Ok(pv.iter().map(|&v| self.version.saturating_sub(v) > self.max as i64).collect())
    }

    /// Splits `rows` into the rows trained as they are and, with `stale = "truncate"`, the stale
    /// rows to train with truncated importance weights (`stale = "drop"`: those are left out).
    pub fn split(&self, rows: &RecordBatch) -> Result<(RecordBatch, Option<RecordBatch>)> {
        let stale = self.is_stale(rows)?;
        let pick = |want: bool| -> Result<RecordBatch> {
            let idx: UInt32Array = (0..rows.num_rows() as u32).filter(|&i| stale[i as usize] == want).collect();
            Ok(arrow::compute::take_record_batch(rows, &idx)?)
        };
        let fresh = pick(false)?;
        let old = match self.mode {
            StaleRows::Truncate if stale.contains(&true) => Some(pick(true)?),
            _ => None,
        };
        Ok((fresh, old))
    }
}

/// Each row's `policy_version` (`i64::MIN` where it is null: older than any bound).
pub fn versions(rows: &RecordBatch) -> Result<Vec<i64>> {
    let col = rows
        .column_by_name("policy_version")
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .ok_or_else(|| Error::Usage("stream learner: rows have no int64 policy_version column".into()))?;
    Ok((0..col.len()).map(|i| if col.is_null(i) { i64::MIN } else { col.value(i) }).collect())
}

/// Scales each trained token's advantage by the truncated importance weight `min(1, π/μ)`, where
/// `logp_now` is π's log-prob and the example's `logp_old` is μ's (the behaviour log-prob as
/// read from the row). Tokens without a behaviour log-prob keep their advantage.
pub fn truncate_advantages(e: &mut Example, logp_now: &[f32]) {
    for ((a, &mu), (&pi, &m)) in e.adv.iter_mut().zip(&e.logp_old).zip(logp_now.iter().zip(&e.mask)) {
        if m > 0.0 && mu.is_finite() && pi.is_finite() {
            *a *= (pi - mu).exp().min(1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::builder::{EpisodeRow, TrajectoryBuilder};

    fn ids(rows: &RecordBatch) -> Vec<String> {
        let col = rows.column_by_name("episode_id").unwrap().as_string::<i32>();
        (0..col.len()).map(|i| col.value(i).to_string()).collect()
    }

    #[test]
    fn truncated_importance_weights_only_shrink_trained_advantages() {
        let mut e = Example {
            tokens: vec![1, 2, 3, 4],
            mask: vec![0.0, 1.0, 1.0, 1.0],
            adv: vec![5.0, 2.0, 2.0, 2.0],
            logp_old: vec![f32::NAN, -1.0, -1.0, f32::NAN],
            logp_ref: vec![f32::NAN; 4],
            values: vec![0.0; 4],
            returns: vec![0.0; 4],
            turns: vec![0; 4],
            drawn: None,
        };
        truncate_advantages(&mut e, &[-9.0, -2.0, -0.5, -3.0]);
        // Untrained token 0 and token 3 (no behaviour log-prob) keep theirs; π < μ shrinks by
        // e^(−1); π > μ is truncated at 1.
        assert_eq!(e.adv[0], 5.0);
        assert!((e.adv[1] - 2.0 * (-1.0f32).exp()).abs() < 1e-6);
        assert_eq!(e.adv[2], 2.0);
        assert_eq!(e.adv[3], 2.0);
    }

    #[test]
    fn staleness_splits_by_policy_version() {
        let mut b = TrajectoryBuilder::default();
        for (i, v) in [5i64, 3, 2, 4].iter().enumerate() {
            b.push(EpisodeRow { episode_id: format!("e{i}"), policy_version: *v, ..Default::default() });
        }
        let rows = b.finish();
        let drop = Staleness { version: 5, max: 2, mode: StaleRows::Drop };
        assert_eq!(drop.count(&rows).unwrap(), 1);
        let (fresh, old) = drop.split(&rows).unwrap();
        assert_eq!(ids(&fresh), vec!["e0", "e1", "e3"]);
        assert!(old.is_none());
        let (fresh, old) = Staleness { mode: StaleRows::Truncate, ..drop }.split(&rows).unwrap();
        assert_eq!(fresh.num_rows(), 3);
        assert_eq!(ids(&old.unwrap()), vec!["e2"]);
    }
}
