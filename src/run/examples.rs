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
use crate::model::scored_choice::{InBatch, ScoredChoice};
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

    /// Tokens a forward pass over the example runs: its own, and its scored actions' candidates.
    pub fn cost(&self) -> usize {
        let candidates = self.drawn.iter().flat_map(|d| &d.scored).flat_map(|c| &c.candidates).map(Vec::len);
        self.tokens.len() + candidates.sum::<usize>()
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

/// Row `i`'s token ids.
fn token_ids(tokens: &arrow::array::ListArray, i: usize) -> Vec<i64> {
    tokens.value(i).as_primitive::<Int32Type>().values().iter().map(|&t| i64::from(t)).collect()
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

/// Row `i`'s actions chosen whole among scored candidates (`candidate_starts`, `candidate_counts`,
/// `candidate_lengths`, `candidate_tokens`, `candidate_divisors`), checked against its `tokens`;
/// None when the row records none.
fn scored_choices(rows: &RecordBatch, i: usize, tokens: &[i64]) -> Result<Option<Vec<ScoredChoice>>> {
    let Some(starts) = list_values::<Int32Type>(rows, "candidate_starts", i)? else { return Ok(None) };
    let column = |name: &str| -> Result<Vec<i32>> {
        list_values::<Int32Type>(rows, name, i)?
            .ok_or_else(|| Error::Usage(format!("learner: 'candidate_starts' is set but '{name}' is null")))
    };
    let (counts, lengths, flat) =
        (column("candidate_counts")?, column("candidate_lengths")?, column("candidate_tokens")?);
    let divisors = list_f32(rows, "candidate_divisors", i)?
        .ok_or_else(|| Error::Usage("learner: 'candidate_starts' is set but 'candidate_divisors' is null".into()))?;
    let bad = |what: String| Error::Usage(format!("learner: scored actions: {what}"));
    let candidates: usize = counts.iter().map(|&c| c.max(0) as usize).sum();
    if counts.len() != starts.len() || lengths.len() != candidates || divisors.len() != candidates {
        return Err(bad(format!(
            "'candidate_starts' has {} values, 'candidate_counts' {} summing to {candidates}, 'candidate_lengths' {} and \
             'candidate_divisors' {}",
            starts.len(),
            counts.len(),
            lengths.len(),
            divisors.len()
        )));
    }
    if lengths.iter().map(|&l| l.max(0) as usize).sum::<usize>() != flat.len() || lengths.iter().any(|&l| l < 1) {
        return Err(bad(format!(
            "'candidate_lengths' {lengths:?} do not lay out the {} 'candidate_tokens'",
            flat.len()
        )));
    }
    if let Some(d) = divisors.iter().find(|d| !(d.is_finite() && **d > 0.0)) {
        return Err(bad(format!("'candidate_divisors' holds {d}; a normaliser must be positive")));
    }
    let (mut at, mut cand, mut out) = (0usize, 0usize, Vec::with_capacity(starts.len()));
    for (&start, &count) in starts.iter().zip(&counts) {
        let mut choice = ScoredChoice { start: start.max(0) as usize, candidates: Vec::new(), divisors: Vec::new() };
        for _ in 0..count.max(1) {
            let len = lengths[cand] as usize;
            choice.candidates.push(flat[at..at + len].iter().map(|&t| i64::from(t)).collect());
            choice.divisors.push(divisors[cand]);
            (at, cand) = (at + len, cand + 1);
        }
        let end = choice.start + choice.taken().len();
        if count < 1 || start < 1 || end > tokens.len() || tokens[choice.start..end] != *choice.taken() {
            return Err(bad(format!(
                "the action at token {start} is not its first candidate ({count} candidates; 'candidate_starts', \
                 'candidate_tokens')"
            )));
        }
        out.push(choice);
    }
    Ok(Some(out))
}

/// How row `i`'s trained tokens were drawn: its shape and, per token, whether the policy drew it
/// (a trained token with a finite behaviour log-prob) and its allowed set (`allowed_counts`,
/// `allowed_tokens`), and its actions chosen whole among scored candidates. None when the row
/// records no shape, no allowed sets and no scored actions.
fn drawn(rows: &RecordBatch, i: usize, tokens: &[i64], mask: &[f32], behaviour: &[f32]) -> Result<Option<Drawn>> {
    let counts = list_values::<Int32Type>(rows, "allowed_counts", i)?;
    let shape = shape(rows, i)?;
    let scored = scored_choices(rows, i, tokens)?;
    if shape.is_none() && counts.is_none() && scored.is_none() {
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
    Ok(Some(Drawn { shape: shape.unwrap_or(Shape::PLAIN), sampled, allowed, scored: scored.unwrap_or_default() }))
}

/// How every row of `rows` was drawn (None for rows that record no sampling), as [`from_rows`]
/// reads it: what `trajflow score` scores the tokens under.
pub fn drawn_rows(rows: &RecordBatch) -> Result<Vec<Option<Drawn>>> {
    let segments =
        rows.column_by_name("segments").ok_or_else(|| Error::Usage("rows have no segments".into()))?.as_list::<i32>();
    let tokens =
        rows.column_by_name("tokens").ok_or_else(|| Error::Usage("rows have no tokens".into()))?.as_list::<i32>();
    (0..rows.num_rows())
        .map(|i| {
            let mask = action_mask(segments, i);
            let toks = token_ids(tokens, i);
            let behaviour = list_f32(rows, "logp_behavior", i)?.unwrap_or_else(|| vec![f32::NAN; mask.len()]);
            if behaviour.len() != mask.len() {
                return Err(Error::Usage(format!(
                    "'logp_behavior' has {} values for {} tokens",
                    behaviour.len(),
                    mask.len()
                )));
            }
            drawn(rows, i, &toks, &mask, &behaviour)
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
        let toks = token_ids(tokens, i);
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
        let drawn = drawn(rows, i, &toks, &mask, &logp_old)?;
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
    /// The actions chosen whole among scored candidates, by batch row.
    pub choices: Vec<InBatch<'a>>,
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
    let mut choices = Vec::new();
    for (r, e) in examples.iter().enumerate() {
        drawn.extend(e.drawn.as_ref(), |j| r * (t - 1) + j - 1);
        if let Some(d) = e.drawn.as_ref() {
            choices.extend(d.scored.iter().map(|c| (r, c, d.shape.temperature)));
        }
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
        choices,
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

    /// Scored actions go through the `candidate_*` columns and back; a cut that ends inside an
    /// action drops its candidates; a layout whose first candidate is not the action is an error
    /// naming the columns.
    #[test]
    fn scored_actions_round_trip_and_bad_layouts_are_named() {
        let (p, a, o) = (Segment::Prompt as u8, Segment::Action as u8, Segment::Observation as u8);
        let choice = ScoredChoice {
            start: 2,
            candidates: vec![vec![5, 6], vec![7], vec![8, 9, 6]],
            divisors: vec![2.0, 1.0, 3.0],
        };
        let row = EpisodeRow {
            episode_id: "e".into(),
            tokens: vec![1, 2, 5, 6, 3],
            segments: vec![p, p, a, a, o],
            turns: vec![0; 5],
            logp_behavior: Some(vec![f32::NAN, f32::NAN, -0.4, 0.0, f32::NAN]),
            sampling: Some(Shape { temperature: 0.7, top_k: 0, top_p: 1.0 }),
            choices: Some(vec![choice.clone()]),
            turn_rewards: vec![1.0],
            ..Default::default()
        };
        let read = |row: &EpisodeRow| {
            let mut b = TrajectoryBuilder::default();
            b.push(row.clone());
            from_rows(&b.finish(), Columns::default())
        };
        let ex = read(&row).unwrap();
        let d = ex[0].drawn.as_ref().unwrap();
        assert_eq!(d.scored, vec![choice.clone()]);
        assert_eq!(d.shape.temperature as f32, 0.7);
        assert_eq!(ex[0].cost(), 5 + 6);
        let mut cut = row.clone();
        cut.truncate_tokens(3);
        assert_eq!(cut.choices, Some(vec![]));
        let mut bad = row.clone();
        bad.choices = Some(vec![ScoredChoice { candidates: vec![vec![7], vec![5, 6], vec![8, 9, 6]], ..choice }]);
        let err = read(&bad).unwrap_err().to_string();
        assert!(err.contains("candidate_starts") && err.contains("token 2"), "{err}");
    }
}
