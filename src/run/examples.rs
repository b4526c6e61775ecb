//! Training examples: the learner's view of stage outputs — per episode the token ids, which
//! tokens are trained (action tokens of kept rows), and per-token advantages and old log-probs —
//! and their padding into `[B, T]` tensors for one forward pass.
//!
//! Invariants: every per-token vector has the length of `tokens`; position `t` of a padded
//! tensor refers to predicting token `t + 1` (the first token is never predicted); the mask is 0
//! on padding, so nothing stored there (NaN included) reaches a loss.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{ArrowPrimitiveType, Float32Type, Int32Type, UInt8Type};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::model::drawn::{Drawn, Positions, Shape};
use crate::ops::segment::Segment;

/// One episode as the learner sees it.
#[derive(Debug, Clone)]
pub struct Example {
    /// Token ids.
    pub tokens: Vec<i64>,
    /// 1.0 on trained tokens (the policy's own action tokens), 0.0 elsewhere.
    pub mask: Vec<f32>,
    /// Per-token advantage (0 where not trained).
    pub adv: Vec<f32>,
    /// Per-token `logp_old` (NaN where unknown); filled by the learner when recomputed.
    pub logp_old: Vec<f32>,
    /// Per-token log-probs under the reference policy (NaN where unknown); filled by the learner
    /// when a KL-to-reference penalty is configured.
    pub logp_ref: Vec<f32>,
    /// Per-token values at rollout time (`V_old`; 0 without a critic).
    pub values: Vec<f32>,
    /// Per-token value targets (0 without a critic).
    pub returns: Vec<f32>,
    /// Per-token turn index (0 where the rows have none): the spans of turn-level ratios.
    pub turns: Vec<i64>,
    /// How the behaviour policy drew the tokens, where the row says (None: the plain softmax).
    pub drawn: Option<Drawn>,
}

impl Example {
    /// Number of trained tokens.
    pub fn trained(&self) -> usize {
        self.mask.iter().filter(|&&m| m > 0.0).count()
    }
}

/// Row `i` of the list column `name` as `T` values (None: no such column, or null there).
fn list_values<T: ArrowPrimitiveType>(rows: &RecordBatch, name: &str, i: usize) -> Result<Option<Vec<T::Native>>> {
    let Some(col) = rows.column_by_name(name) else { return Ok(None) };
    let list = col.as_list_opt::<i32>().ok_or_else(|| Error::Usage(format!("column '{name}' is not a list")))?;
    if list.is_null(i) {
        return Ok(None);
    }
    let v = list.value(i);
    let v = v
        .as_primitive_opt::<T>()
        .ok_or_else(|| Error::Usage(format!("column '{name}' is not a list of {}", T::DATA_TYPE)))?;
    Ok(Some(v.values().to_vec()))
}

fn list_f32(rows: &RecordBatch, name: &str, i: usize) -> Result<Option<Vec<f32>>> {
    list_values::<Float32Type>(rows, name, i)
}

/// 1.0 on action tokens (the trainable ones), 0.0 elsewhere, for row `i` of `segments`.
fn action_mask(segments: &arrow::array::ListArray, i: usize) -> Vec<f32> {
    let segs = segments.value(i);
    segs.as_primitive::<UInt8Type>().values().iter().map(|&s| f32::from(u8::from(s == Segment::Action as u8))).collect()
}

/// Row `i`'s sampling shape (`sample_temperature`, `sample_top_k`, `sample_top_p`), if recorded.
fn shape(rows: &RecordBatch, i: usize) -> Result<Option<Shape>> {
    let float = |name: &str| -> Result<Option<f64>> {
        let Some(col) = rows.column_by_name(name) else { return Ok(None) };
        let v = col
            .as_primitive_opt::<Float32Type>()
            .ok_or_else(|| Error::Usage(format!("column '{name}' is not float32")))?;
        Ok(v.is_valid(i).then(|| f64::from(v.value(i))))
    };
    let Some(temperature) = float("sample_temperature")? else { return Ok(None) };
    let top_k = match rows.column_by_name("sample_top_k") {
        Some(col) => {
            let v = col
                .as_primitive_opt::<Int32Type>()
                .ok_or_else(|| Error::Usage("column 'sample_top_k' is not int32".into()))?;
            if v.is_valid(i) {
                i64::from(v.value(i))
            } else {
                0
            }
        }
        None => 0,
    };
    let top_p = float("sample_top_p")?.unwrap_or(1.0);
    Ok(Some(Shape { temperature, top_k, top_p }))
}

/// How row `i`'s trained tokens were drawn: its shape and, per token, whether the policy drew it
/// (a trained token with a finite behaviour log-prob) and its allowed set (`allowed_counts`,
/// `allowed_tokens`). None when the row records no shape and no allowed sets.
fn drawn(rows: &RecordBatch, i: usize, mask: &[f32], behaviour: &[f32]) -> Result<Option<Drawn>> {
    let counts = list_values::<Int32Type>(rows, "allowed_counts", i)?;
    let shape = shape(rows, i)?;
    if shape.is_none() && counts.is_none() {
        return Ok(None);
    }
    let n = mask.len();
    let mut allowed = vec![Vec::new(); n];
    if let Some(counts) = counts {
        let sets = list_values::<Int32Type>(rows, "allowed_tokens", i)?.unwrap_or_default();
        let total: usize = counts.iter().map(|&c| c.max(0) as usize).sum();
        if counts.len() != n || total != sets.len() {
            return Err(Error::Usage(format!(
                "learner: 'allowed_counts' has {} values for {n} tokens and sums to {total}, but 'allowed_tokens' has {}",
                counts.len(),
                sets.len()
            )));
        }
        let mut at = 0;
        for (j, &c) in counts.iter().enumerate() {
            let c = c.max(0) as usize;
            allowed[j] = sets[at..at + c].iter().map(|&t| i64::from(t)).collect();
            at += c;
        }
    }
    let sampled = (0..n).map(|j| mask[j] > 0.0 && behaviour[j].is_finite()).collect();
    Ok(Some(Drawn { shape: shape.unwrap_or(Shape::PLAIN), sampled, allowed }))
}

/// How every row of `rows` was drawn (None for rows that record no sampling), as [`from_rows`]
/// reads it: what `trajflow score` scores the tokens under.
pub fn drawn_rows(rows: &RecordBatch) -> Result<Vec<Option<Drawn>>> {
    let segments =
        rows.column_by_name("segments").ok_or_else(|| Error::Usage("rows have no segments".into()))?.as_list::<i32>();
    (0..rows.num_rows())
        .map(|i| {
            let mask = action_mask(segments, i);
            let behaviour = list_f32(rows, "logp_behavior", i)?.unwrap_or_else(|| vec![f32::NAN; mask.len()]);
            if behaviour.len() != mask.len() {
                return Err(Error::Usage(format!(
                    "'logp_behavior' has {} values for {} tokens",
                    behaviour.len(),
                    mask.len()
                )));
            }
            drawn(rows, i, &mask, &behaviour)
        })
        .collect()
}

/// Which columns the learner reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Columns<'a> {
    /// Per-token advantages (PPO).
    pub advantages: Option<&'a str>,
    /// Per-token value targets (critic).
    pub returns: Option<&'a str>,
    /// Boolean row filter.
    pub keep: Option<&'a str>,
    /// Only rows with behaviour log-probs (the policy's own rows).
    pub policy_only: bool,
}

/// The examples of `rows`: rows whose `keep` column (if named) is false are dropped, as are rows
/// without an action token and, with `policy_only`, rows without behaviour log-probs; named
/// per-token columns must have one value per token.
pub fn from_rows(rows: &RecordBatch, cols: Columns<'_>) -> Result<Vec<Example>> {
    let Columns { advantages, returns, keep, policy_only } = cols;
    let tokens =
        rows.column_by_name("tokens").ok_or_else(|| Error::Usage("rows have no tokens".into()))?.as_list::<i32>();
    let segments =
        rows.column_by_name("segments").ok_or_else(|| Error::Usage("rows have no segments".into()))?.as_list::<i32>();
    let keep = match keep {
        Some(name) => Some(
            rows.column_by_name(name)
                .and_then(|c| c.as_boolean_opt().cloned())
                .ok_or_else(|| Error::Usage(format!("learner: keep column '{name}' is missing or not boolean")))?,
        ),
        None => None,
    };
    let mut out = Vec::with_capacity(rows.num_rows());
    for i in 0..rows.num_rows() {
        if keep.as_ref().is_some_and(|k| k.is_valid(i) && !k.value(i)) {
            continue;
        }
        let toks: Vec<i64> = tokens.value(i).as_primitive::<Int32Type>().values().iter().map(|&t| t as i64).collect();
        let mask = action_mask(segments, i);
        let per_token = |name: Option<&str>| -> Result<Vec<f32>> {
            let Some(name) = name else { return Ok(vec![0.0; toks.len()]) };
            let v = list_f32(rows, name, i)?
                .ok_or_else(|| Error::Usage(format!("learner: column '{name}' is missing or null")))?;
            if v.len() != toks.len() {
                return Err(Error::Usage(format!(
                    "learner: '{name}' has {} values for {} tokens",
                    v.len(),
                    toks.len()
                )));
            }
            Ok(v)
        };
        let adv = per_token(advantages)?;
        let ret = per_token(returns)?;
        let values = match returns {
            Some(_) => per_token(Some("values"))?,
            None => vec![0.0; toks.len()],
        };
        let behaviour = list_f32(rows, "logp_behavior", i)?;
        if policy_only && behaviour.is_none() {
            continue;
        }
        let logp_old = behaviour.unwrap_or_else(|| vec![f32::NAN; toks.len()]);
        let logp_ref = vec![f32::NAN; toks.len()];
        let turns = match rows.column_by_name("turns") {
            Some(col) => col
                .as_list_opt::<i32>()
                .ok_or_else(|| Error::Usage("column 'turns' is not a list".into()))?
                .value(i)
                .as_primitive_opt::<Int32Type>()
                .ok_or_else(|| Error::Usage("column 'turns' is not list<int32>".into()))?
                .values()
                .iter()
                .map(|&t| i64::from(t.max(0)))
                .collect(),
            None => vec![0; toks.len()],
        };
        if turns.len() != toks.len() {
            return Err(Error::Usage(format!("learner: 'turns' has {} values for {} tokens", turns.len(), toks.len())));
        }
        let drawn = drawn(rows, i, &mask, &logp_old)?;
        let ex = Example { tokens: toks, mask, adv, logp_old, logp_ref, values, returns: ret, turns, drawn };
        if ex.trained() > 0 {
            out.push(ex);
        }
    }
    Ok(out)
}

/// A padded minibatch: `[B, T−1]` tensors aligned with the predicted tokens `1..T`.
pub struct Padded<'a> {
    /// Input ids `[B, T]`.
    pub ids: Tensor,
    /// Positions `[B, T]`.
    pub positions: Tensor,
    /// Real (non-padding) tokens `[B, T]`.
    pub valid: Tensor,
    /// Predicted ids `[B, T−1]`.
    pub targets: Tensor,
    /// Trained-token mask `[B, T−1]`.
    pub mask: Tensor,
    /// Advantages `[B, T−1]`.
    pub adv: Tensor,
    /// Old log-probs `[B, T−1]`.
    pub logp_old: Tensor,
    /// Reference log-probs `[B, T−1]`.
    pub logp_ref: Tensor,
    /// Rollout-time values `[B, T−1]`.
    pub values: Tensor,
    /// Value targets `[B, T−1]`.
    pub returns: Tensor,
    /// Turn index of each predicted token `[B, T−1]` (int64; 0 on padding).
    pub turns: Tensor,
    /// The predicted tokens drawn from a shaped distribution (flat indices into `[B × (T−1)]`).
    pub drawn: Positions<'a>,
}

/// Pads `examples` to their longest length on `device`.
pub fn pad<'a>(examples: &[&'a Example], device: Device) -> Padded<'a> {
    let b = examples.len();
    let t = examples.iter().map(|e| e.tokens.len()).max().unwrap_or(1).max(2);
    let mut ids = vec![0i64; b * t];
    let mut valid = vec![false; b * t];
    let mut mask = vec![0f32; b * (t - 1)];
    let mut adv = vec![0f32; b * (t - 1)];
    let mut old = vec![0f32; b * (t - 1)];
    let mut reference = vec![0f32; b * (t - 1)];
    let mut values = vec![0f32; b * (t - 1)];
    let mut returns = vec![0f32; b * (t - 1)];
    let mut turns = vec![0i64; b * (t - 1)];
    let mut drawn = Positions::default();
    for (r, e) in examples.iter().enumerate() {
        drawn.extend(e.drawn.as_ref(), |j| r * (t - 1) + j - 1);
        for (j, &id) in e.tokens.iter().enumerate() {
            ids[r * t + j] = id;
            valid[r * t + j] = true;
            if j > 0 {
                let k = r * (t - 1) + j - 1;
                mask[k] = e.mask[j];
                adv[k] = e.adv[j];
                old[k] = e.logp_old[j];
                reference[k] = e.logp_ref[j];
                values[k] = e.values[j];
                returns[k] = e.returns[j];
                turns[k] = e.turns[j];
            }
        }
    }
    let (bi, ti) = (b as i64, t as i64);
    let ids = Tensor::from_slice(&ids).view([bi, ti]).to(device);
    let f = |v: &[f32]| Tensor::from_slice(v).view([bi, ti - 1]).to(device);
    Padded {
        positions: Tensor::arange(ti, (Kind::Int64, device)).unsqueeze(0).expand([bi, ti], false),
        valid: Tensor::from_slice(&valid).view([bi, ti]).to(device),
        targets: ids.narrow(1, 1, ti - 1),
        ids,
        mask: f(&mask),
        adv: f(&adv),
        logp_old: f(&old),
        logp_ref: f(&reference),
        values: f(&values),
        returns: f(&returns),
        turns: Tensor::from_slice(&turns).view([bi, ti - 1]).to(device),
        drawn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::builder::{EpisodeRow, TrajectoryBuilder};

    #[test]
    fn rows_to_examples_and_padding_align_targets() {
        let mut b = TrajectoryBuilder::default();
        for (id, n) in [("a", 3usize), ("b", 5)] {
            b.push(EpisodeRow {
                episode_id: id.into(),
                tokens: (0..n as i32).collect(),
                segments: (0..n)
                    .map(|j| if j % 2 == 1 { Segment::Action as u8 } else { Segment::Prompt as u8 })
                    .collect(),
                turns: vec![0; n],
                logp_behavior: Some(vec![-0.5; n]),
                turn_rewards: vec![1.0],
                ..Default::default()
            });
        }
        let ex = from_rows(&b.finish(), Columns::default()).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[1].mask, vec![0.0, 1.0, 0.0, 1.0, 0.0]);
        let p = pad(&[&ex[0], &ex[1]], Device::Cpu);
        assert_eq!(p.ids.size(), vec![2, 5]);
        assert_eq!(Vec::<i64>::try_from(p.targets.get(0)).unwrap(), vec![1, 2, 0, 0]);
        assert_eq!(Vec::<f32>::try_from(p.mask.get(0)).unwrap(), vec![1.0, 0.0, 0.0, 0.0]);
        assert_eq!(Vec::<f32>::try_from(p.mask.get(1)).unwrap(), vec![1.0, 0.0, 1.0, 0.0]);
    }
}
