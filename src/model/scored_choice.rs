//! Actions chosen whole among scored candidates (TWOSOME; [`crate::rollout::action_scoring`]):
//! the action-level distribution they were drawn from, stored with the episode and rebuilt by
//! every training-side log-prob.
//!
//! A scored action was drawn from softmax(S / T) over its candidates, with
//! S_i = (Σ_k log π(c_ik | context, c_i<k)) / d_i — the candidate's summed token log-likelihood
//! under the plain softmax over its divisor d_i (token count, word count or 1) — and T the row's
//! temperature (T ≤ 0, greedy, is read as 1, as [`super::drawn`] reads greedy decoding).
//!
//! Invariants:
//! - Candidate 0 is the action taken; its tokens are the episode's from `start` on.
//! - The action's log-prob under that distribution sits on its first token, and every other token
//!   of the action has log-prob exactly 0 (a constant, no gradient): a span's sum is the action's
//!   log-prob, and a token-level ratio is the action's ratio on its first token and 1 elsewhere.
//!   The entropy of the action distribution likewise sits on the first token (0 on the others).
//! - Every candidate is re-scored by the model that is asked — never taken as fixed — from the
//!   same forward pass as the episode: its queries attend to the episode's cached keys and values
//!   before `start` and to its own earlier tokens, so the normaliser's gradient reaches the
//!   context too, and the log-probs equal those of scoring `context + candidate` on its own.

#[cfg(feature = "torch")]
use tch::{Kind, Tensor};

#[cfg(feature = "torch")]
use super::drawn::Entropy;
#[cfg(feature = "torch")]
use super::llama::{Decoder, KvCache};
#[cfg(feature = "torch")]
use crate::train::losses::entropy_from_logits;

/// One action chosen among scored candidates.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredChoice {
    /// Index of the action's first token in the episode.
    pub start: usize,
    /// The candidates' tokens (end-of-turn token included); candidate 0 is the action taken.
    pub candidates: Vec<Vec<i64>>,
    /// Each candidate's normaliser d_i (> 0).
    pub divisors: Vec<f32>,
}

impl ScoredChoice {
    /// The action taken.
    pub fn taken(&self) -> &[i64] {
        &self.candidates[0]
    }
}

/// The temperature of the candidates' softmax: T, with T ≤ 0 (greedy) read as 1.
fn softmax_temperature(temperature: f64) -> f64 {
    if temperature > 0.0 {
        temperature
    } else {
        1.0
    }
}

/// log softmax(`scores` / T) with T ≤ 0 read as 1: the log-probs of the candidates.
pub fn log_softmax(scores: &[f64], temperature: f64) -> Vec<f64> {
    let t = softmax_temperature(temperature);
    let z: Vec<f64> = scores.iter().map(|s| s / t).collect();
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let log_sum = max + z.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
    z.iter().map(|x| x - log_sum).collect()
}

/// One scored action of a padded batch: its batch row, the choice and the row's temperature.
#[cfg(feature = "torch")]
pub type InBatch<'a> = (usize, &'a ScoredChoice, f64);

/// Replaces, in `logp` (and `entropy`, if any) `[B, T − 1]`, the token log-probs of every action
/// in `choices` with its action-level log-prob (see the module doc). `logits` `[B, T − 1, V]` and
/// `cache` are those of the batch's forward pass (`ids` `[B, T]` at positions `0..T`); the
/// entropy is differentiable or detached as `mode` says. Differentiable in the model's weights
/// through `logits`, `cache` and the candidates' own forward pass (one per batch row).
#[cfg(feature = "torch")]
pub fn rescore(
    model: &Decoder,
    cache: &KvCache,
    logits: &Tensor,
    choices: &[InBatch<'_>],
    logp: Tensor,
    entropy: Option<Tensor>,
    mode: Entropy,
) -> (Tensor, Option<Tensor>) {
    if choices.is_empty() {
        return (logp, entropy);
    }
    let dev = logits.device();
    let (b, tm1, v) = (logits.size()[0], logits.size()[1], logits.size()[2]);
    let ti = |v: Vec<i64>| Tensor::from_slice(&v).to(dev);
    let n: usize = choices.iter().map(|(_, ch, _)| ch.candidates.len()).sum();
    // Each choice's first-token distribution: the logits before its action.
    let at = ti(choices.iter().map(|(r, ch, _)| (*r as i64) * tm1 + ch.start as i64 - 1).collect());
    let before = logits.reshape([-1, v]).index_select(0, &at).to_kind(Kind::Float).log_softmax(-1, Kind::Float);
    let sums = candidate_sums(model, cache, &before, choices);
    // Per choice: log softmax over its candidates of S / T.
    let widest = choices.iter().map(|(_, ch, _)| ch.candidates.len()).max().unwrap_or(1) as i64;
    let mut slot = Vec::with_capacity(n);
    let mut scale = Vec::with_capacity(n);
    for (c, (_, ch, t)) in choices.iter().enumerate() {
        let t = softmax_temperature(*t);
        for (i, d) in ch.divisors.iter().enumerate() {
            slot.push(c as i64 * widest + i as i64);
            scale.push(1.0 / (f64::from(*d) * t) as f32);
        }
    }
    let scaled = sums * Tensor::from_slice(&scale).to(dev);
    let grid = Tensor::full([choices.len() as i64 * widest], f64::NEG_INFINITY, (Kind::Float, dev))
        .index_put(&[Some(ti(slot))], &scaled, false)
        .view([choices.len() as i64, widest]);
    let action = grid.log_softmax(-1, Kind::Float).select(1, 0);
    // Onto the batch: the action's log-prob on its first token, 0 on its other tokens.
    let others: Vec<i64> = choices
        .iter()
        .flat_map(|(r, ch, _)| (1..ch.taken().len()).map(move |k| (*r as i64) * tm1 + (ch.start + k) as i64 - 1))
        .collect();
    let others = (!others.is_empty()).then(|| ti(others));
    let place = |flat: Tensor, value: &Tensor| -> Tensor {
        let flat = match &others {
            Some(idx) => flat.index_fill(0, idx, 0.0),
            None => flat,
        };
        flat.index_copy(0, &at, value).view([b, tm1])
    };
    let logp = place(logp.reshape([-1]), &action);
    let entropy = entropy.map(|e| {
        let h = match mode {
            Entropy::Differentiable => entropy_from_logits(&grid),
            _ => tch::no_grad(|| entropy_from_logits(&grid.detach())),
        };
        place(e.reshape([-1]), &h)
    });
    (logp, entropy)
}

/// The summed token log-likelihood of every candidate of `choices`, in order (choice by choice,
/// each choice's candidates in its order): the first token's from `before` `[C, V]` (row c: the
/// log-softmax at the position before choice c's action), the others from one pass per batch row
/// of all that row's candidates against its cached prefix (see [`continuations`]).
#[cfg(feature = "torch")]
pub fn candidate_sums(model: &Decoder, cache: &KvCache, before: &Tensor, choices: &[InBatch<'_>]) -> Tensor {
    let dev = before.device();
    let ti = |v: Vec<i64>| Tensor::from_slice(&v).to(dev);
    // Candidates in order: choice c's candidates are `first[c]..first[c] + count`.
    let mut first = Vec::with_capacity(choices.len());
    let (mut of_choice, mut first_token) = (Vec::new(), Vec::new());
    for (c, (_, ch, _)) in choices.iter().enumerate() {
        first.push(of_choice.len());
        for cand in &ch.candidates {
            of_choice.push(c as i64);
            first_token.push(cand[0]);
        }
    }
    let mut sums = before.index(&[Some(ti(of_choice)), Some(ti(first_token))]);
    let rows: std::collections::BTreeSet<usize> = choices.iter().map(|(r, _, _)| *r).collect();
    for row in rows {
        let mine: Vec<usize> = (0..choices.len()).filter(|&c| choices[c].0 == row).collect();
        if let Some((rest, index)) = continuations(model, cache, row, &mine, choices, &first) {
            sums = sums.index_add(0, &ti(index), &rest);
        }
    }
    sums
}

/// The summed log-probs of tokens `1..` of every candidate of `row`'s choices (indices `mine`
/// into `choices`), each attending to the row's cached keys before its action and to its own
/// earlier tokens, with the candidates' indices in [`rescore`]'s order; None when no candidate
/// has a second token.
#[cfg(feature = "torch")]
fn continuations(
    model: &Decoder,
    cache: &KvCache,
    row: usize,
    mine: &[usize],
    choices: &[InBatch<'_>],
    first: &[usize],
) -> Option<(Tensor, Vec<i64>)> {
    // Queries: every candidate token but the last, predicting the next.
    let (mut ids, mut positions, mut targets, mut owner, mut starts) = (vec![], vec![], vec![], vec![], vec![]);
    let mut index = Vec::new();
    for &c in mine {
        let ch = choices[c].1;
        for (i, cand) in ch.candidates.iter().enumerate().filter(|(_, cand)| cand.len() > 1) {
            let candidate = index.len() as i64;
            index.push((first[c] + i) as i64);
            for k in 0..cand.len() - 1 {
                ids.push(cand[k]);
                positions.push((ch.start + k) as i64);
                targets.push(cand[k + 1]);
                owner.push(candidate);
                starts.push(ch.start as i64);
            }
        }
    }
    if ids.is_empty() {
        return None;
    }
    let dev = model.device();
    let (q, past) = (ids.len(), cache.len() as usize);
    // Query i sees prefix keys before its action's start and its own candidate's tokens up to itself.
    let mut mask = vec![false; q * (past + q)];
    for i in 0..q {
        let keys = &mut mask[i * (past + q)..(i + 1) * (past + q)];
        keys[..starts[i] as usize].iter_mut().for_each(|k| *k = true);
        for j in (0..=i).rev().take_while(|&j| owner[j] == owner[i]) {
            keys[past + j] = true;
        }
    }
    let t = |v: Vec<i64>| Tensor::from_slice(&v).view([1, q as i64]).to(dev);
    let mask = Tensor::from_slice(&mask).view([1, 1, q as i64, (past + q) as i64]).to(dev);
    let mut own = cache.rows(row as i64, 1);
    let hidden = model.hidden_masked(&t(ids), &t(positions), &mask, Some(&mut own));
    let lp = model
        .logits(&hidden)
        .squeeze_dim(0)
        .to_kind(Kind::Float)
        .log_softmax(-1, Kind::Float)
        .gather(1, &Tensor::from_slice(&targets).unsqueeze(1).to(dev), false)
        .squeeze_dim(1);
    let per_candidate =
        Tensor::zeros([index.len() as i64], (Kind::Float, dev)).index_add(0, &Tensor::from_slice(&owner).to(dev), &lp);
    Some((per_candidate, index))
}

#[cfg(all(test, feature = "torch"))]
mod tests {
    use super::*;
    use crate::model::config::DecoderConfig;

    /// An independent computation: each candidate scored as its own sequence `context + candidate`
    /// with the plain forward pass, then the softmax over the normalised scores.
    fn by_full_sequences(m: &Decoder, context: &[i64], ch: &ScoredChoice, t: f64) -> Tensor {
        let scores: Vec<Tensor> = ch
            .candidates
            .iter()
            .zip(&ch.divisors)
            .map(|(cand, d)| {
                let seq: Vec<i64> = context.iter().chain(cand).copied().collect();
                let ids = Tensor::from_slice(&seq).unsqueeze(0);
                let lp = m.forward(&ids).squeeze_dim(0).log_softmax(-1, Kind::Float);
                let n = context.len() as i64;
                let picked =
                    lp.narrow(0, n - 1, cand.len() as i64).gather(1, &Tensor::from_slice(cand).unsqueeze(1), false);
                picked.sum(Kind::Float) / f64::from(*d)
            })
            .collect();
        (Tensor::stack(&scores, 0) / t).log_softmax(0, Kind::Float).get(0)
    }

    fn batch_logp(m: &Decoder, seqs: &[Vec<i64>], choices: &[InBatch<'_>]) -> Tensor {
        let t = seqs.iter().map(Vec::len).max().unwrap();
        let mut ids = vec![0i64; seqs.len() * t];
        let mut valid = vec![false; seqs.len() * t];
        for (r, s) in seqs.iter().enumerate() {
            ids[r * t..r * t + s.len()].copy_from_slice(s);
            valid[r * t..r * t + s.len()].iter_mut().for_each(|v| *v = true);
        }
        let (b, ti) = (seqs.len() as i64, t as i64);
        let ids = Tensor::from_slice(&ids).view([b, ti]);
        let pos = Tensor::arange(ti, (Kind::Int64, tch::Device::Cpu)).unsqueeze(0).expand([b, ti], false);
        let mut cache = KvCache::default();
        let hidden = m.hidden(&ids, &pos, &Tensor::from_slice(&valid).view([b, ti]), Some(&mut cache));
        let logits = m.logits(&hidden).narrow(1, 0, ti - 1);
        let logp =
            logits.log_softmax(-1, Kind::Float).gather(2, &ids.narrow(1, 1, ti - 1).unsqueeze(2), false).squeeze_dim(2);
        rescore(m, &cache, &logits, choices, logp, None, Entropy::Skip).0
    }

    fn grads(m: &Decoder, loss: Tensor) -> Vec<f64> {
        let mut named = m.trainable_variables();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let vars: Vec<Tensor> = named.into_iter().map(|(_, v)| v).collect();
        Tensor::run_backward(&[loss], &vars, false, false)
            .iter()
            .flat_map(|g| Vec::<f64>::try_from(g.to_kind(Kind::Double).flatten(0, -1)).unwrap())
            .collect()
    }

    /// Two episodes of different lengths in one padded batch, three scored actions (one with a
    /// one-token candidate, one in the second turn of an episode, two temperatures): every action's
    /// log-prob and its gradient equal the independent computation's; the other action tokens
    /// are 0, and tokens outside the actions keep their token log-probs.
    #[test]
    fn action_log_probs_and_gradients_equal_scoring_each_candidate_alone() {
        tch::manual_seed(3);
        let m = Decoder::new(DecoderConfig::small(40), tch::Device::Cpu);
        let a = ScoredChoice {
            start: 4,
            candidates: vec![vec![7, 8, 2], vec![9, 2], vec![2]],
            divisors: vec![3.0, 2.0, 1.0],
        };
        let b = ScoredChoice { start: 9, candidates: vec![vec![11, 2], vec![12, 13, 14, 2]], divisors: vec![1.0, 1.0] };
        let c = ScoredChoice {
            start: 3,
            candidates: vec![vec![20, 21, 2], vec![22, 2], vec![23, 24, 2]],
            divisors: vec![2.0, 1.0, 2.5],
        };
        let row0: Vec<i64> = vec![1, 5, 6, 3, 7, 8, 2, 30, 31, 11, 2];
        let row1: Vec<i64> = vec![1, 4, 3, 20, 21, 2];
        let choices = [(0, &a, 1.0), (0, &b, 1.0), (1, &c, 0.7)];
        let logp = batch_logp(&m, &[row0.clone(), row1.clone()], &choices);
        let want = [
            by_full_sequences(&m, &row0[..4], &a, 1.0),
            by_full_sequences(&m, &row0[..9], &b, 1.0),
            by_full_sequences(&m, &row1[..3], &c, 0.7),
        ];
        let got = [logp.double_value(&[0, 3]), logp.double_value(&[0, 8]), logp.double_value(&[1, 2])];
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w.double_value(&[])).abs() < 1e-5, "{got:?} vs {want:?}");
            assert!(*g < 0.0);
        }
        for (r, j) in [(0, 4), (0, 5), (0, 9), (1, 3), (1, 4)] {
            assert_eq!(logp.double_value(&[r, j]), 0.0, "action token ({r}, {j})");
        }
        let plain = m.forward(&Tensor::from_slice(&row0).unsqueeze(0)).log_softmax(-1, Kind::Float);
        let token_7 = plain.double_value(&[0, 6, 30]);
        assert!((logp.double_value(&[0, 6]) - token_7).abs() < 1e-5, "an observation token keeps its log-prob");
        // Gradients: the same, the context's included.
        let g = grads(&m, logp.get(0).get(3) + logp.get(1).get(2) * 0.5);
        let w = grads(&m, &want[0] + &want[2] * 0.5);
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(norm(&w) > 1e-6);
        let diff = g.iter().zip(&w).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
        assert!(diff <= 1e-4 * norm(&w).max(1.0), "gradient differs by {diff} (norm {})", norm(&w));
    }

    #[test]
    fn log_softmax_by_hand() {
        let p = log_softmax(&[-0.625, -1.2], 1.0);
        assert!((p[0].exp() - 1.0 / (1.0 + (-0.575f64).exp())).abs() < 1e-12);
        // T ≤ 0 (greedy) is read as 1; a lower temperature sharpens.
        assert_eq!(log_softmax(&[-1.0, -2.0], 0.0), log_softmax(&[-1.0, -2.0], 1.0));
        assert!(log_softmax(&[-1.0, -2.0], 0.5)[0] > log_softmax(&[-1.0, -2.0], 1.0)[0]);
    }
}
