//! Per-token log-probs (and, on request, entropies) of stored token sequences under a model: the kernel behind recomputed
//! behaviour log-probs (LOOP), reference log-probs (KL, DPO) and `trajflow score`. Actions chosen
//! whole among scored candidates get their action-level log-prob ([`super::scored_choice`]). Sequences are
//! scored in length-sorted chunks of at most `max_batch_tokens` padded tokens, so memory is
//! bounded whatever the dataset; results do not depend on the chunking (each row has its own
//! positions and padding is masked).

use tch::{Kind, Tensor};

use super::drawn::{Drawn, Entropy, Positions};
use super::llama::{Decoder, KvCache};
use super::scored_choice::{rescore, InBatch};
use crate::error::Result;

/// Log-prob of every token given the tokens before it; the first token of each sequence gets NaN.
pub fn token_logprobs(model: &Decoder, seqs: &[Vec<i64>], max_batch_tokens: usize) -> Result<Vec<Vec<f32>>> {
    drawn_logprobs(model, seqs, &[], max_batch_tokens)
}

/// [`token_logprobs`], where the tokens `drawn[i]` names (if any) get their log-prob under the
/// distribution they were drawn from (allowed set, temperature, truncation: [`super::drawn`]).
pub fn drawn_logprobs(
    model: &Decoder,
    seqs: &[Vec<i64>],
    drawn: &[Option<&Drawn>],
    max_batch_tokens: usize,
) -> Result<Vec<Vec<f32>>> {
    Ok(score(model, seqs, drawn, max_batch_tokens, Extras::NONE)?.into_iter().map(|s| s.logp).collect())
}

/// A sequence's log-probs and the supports of its drawn tokens.
pub type LogpAndSupports = (Vec<f32>, Vec<Vec<i64>>);

/// [`drawn_logprobs`], plus per sequence the supports of its drawn tokens where its shape
/// truncates (top-k/top-p; in [`Drawn::tokens`] order, empty otherwise): what [`Drawn::freeze`] takes.
pub fn drawn_logprobs_and_supports(
    model: &Decoder,
    seqs: &[Vec<i64>],
    drawn: &[Option<&Drawn>],
    max_batch_tokens: usize,
) -> Result<Vec<LogpAndSupports>> {
    let extras = Extras { entropy: false, supports: true };
    Ok(score(model, seqs, drawn, max_batch_tokens, extras)?.into_iter().map(|s| (s.logp, s.supports)).collect())
}

/// Log-probs as [`token_logprobs`], plus the entropy of the distribution each token was drawn
/// from (computed from the logits before it; NaN for the first token).
pub fn token_logprobs_and_entropy(
    model: &Decoder,
    seqs: &[Vec<i64>],
    max_batch_tokens: usize,
) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
    drawn_logprobs_and_entropy(model, seqs, &[], max_batch_tokens, true)
}

/// [`drawn_logprobs`], plus (with `entropy`; empty otherwise) the entropy of the distribution
/// each token was drawn from.
pub fn drawn_logprobs_and_entropy(
    model: &Decoder,
    seqs: &[Vec<i64>],
    drawn: &[Option<&Drawn>],
    max_batch_tokens: usize,
    entropy: bool,
) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
    let extras = Extras { entropy, supports: false };
    Ok(score(model, seqs, drawn, max_batch_tokens, extras)?
        .into_iter()
        .map(|s| (s.logp, s.entropy.unwrap_or_default()))
        .collect())
}

/// What [`score`] computes besides the log-probs.
#[derive(Debug, Clone, Copy)]
struct Extras {
    entropy: bool,
    supports: bool,
}

impl Extras {
    const NONE: Extras = Extras { entropy: false, supports: false };
}

/// One sequence's log-probs, entropies (if asked) and drawn tokens' supports (if asked and truncated).
#[derive(Debug, Clone, Default)]
struct Scored {
    logp: Vec<f32>,
    entropy: Option<Vec<f32>>,
    supports: Vec<Vec<i64>>,
}

/// Runs `model` over `seqs` in length-sorted chunks of at most `max_batch_tokens` padded tokens
/// (without gradients) and calls `f(members, t, ids, hidden)` per chunk: the indices of its
/// sequences (row `r` of the chunk is `seqs[members[r]]`), the padded length, the padded ids
/// `[rows, t]` and the final hidden states `[rows, t, D]`. Padding is masked, so what a sequence
/// gets does not depend on the chunking. Scoring and the critic's value annotation share it.
pub fn for_each_chunk(
    model: &Decoder,
    seqs: &[Vec<i64>],
    max_batch_tokens: usize,
    mut f: impl FnMut(&[usize], usize, &Tensor, &Tensor) -> Result<()>,
) -> Result<()> {
    chunks(model, seqs, max_batch_tokens, false, |chunk, t, ids, hidden, _| f(chunk, t, ids, hidden))
}

/// [`for_each_chunk`], with (when `cached`) the chunk's KV cache passed along (empty otherwise).
pub(crate) fn chunks(
    model: &Decoder,
    seqs: &[Vec<i64>],
    max_batch_tokens: usize,
    cached: bool,
    mut f: impl FnMut(&[usize], usize, &Tensor, &Tensor, &KvCache) -> Result<()>,
) -> Result<()> {
    let dev = model.device();
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(seqs[i].len()));
    let _guard = tch::no_grad_guard();
    let mut start = 0;
    while start < order.len() {
        let t = seqs[order[start]].len().max(1);
        let rows = (max_batch_tokens / t).max(1).min(order.len() - start);
        let chunk = &order[start..start + rows];
        let mut ids = vec![0i64; rows * t];
        let mut valid = vec![false; rows * t];
        for (r, &i) in chunk.iter().enumerate() {
            for (j, &id) in seqs[i].iter().enumerate() {
                ids[r * t + j] = id;
                valid[r * t + j] = true;
            }
        }
        let ids = Tensor::from_slice(&ids).view([rows as i64, t as i64]).to(dev);
        let valid = Tensor::from_slice(&valid).view([rows as i64, t as i64]).to(dev);
        let pos = Tensor::arange(t as i64, (Kind::Int64, dev)).unsqueeze(0).expand([rows as i64, t as i64], false);
        let mut cache = KvCache::default();
        let hidden = model.hidden(&ids, &pos, &valid, cached.then_some(&mut cache));
        f(chunk, t, &ids, &hidden, &cache)?;
        start += rows;
    }
    Ok(())
}

fn score(
    model: &Decoder,
    seqs: &[Vec<i64>],
    drawn: &[Option<&Drawn>],
    max_batch_tokens: usize,
    extras: Extras,
) -> Result<Vec<Scored>> {
    let mut out: Vec<Scored> = vec![Scored::default(); seqs.len()];
    let cached = drawn.iter().flatten().any(|d| !d.scored.is_empty());
    chunks(model, seqs, max_batch_tokens, cached, |chunk, t, ids, hidden, cache| {
        let logits = model.logits(hidden).narrow(1, 0, t as i64 - 1);
        let target = ids.narrow(1, 1, t as i64 - 1);
        let mut positions = Positions::default();
        let mut ranges = Vec::with_capacity(chunk.len());
        for (r, &i) in chunk.iter().enumerate() {
            let start = positions.index.len();
            positions.extend(drawn.get(i).copied().flatten(), |j| r * (t - 1) + j - 1);
            ranges.push(start..positions.index.len());
        }
        let supports = match extras.supports {
            true => super::drawn::supports(&logits.reshape([-1, logits.size()[2]]), &positions),
            false => Vec::new(),
        };
        let want = if extras.entropy { Entropy::Detached } else { Entropy::Skip };
        let (picked, ent) = super::drawn::log_probs(&logits, &target, &positions, want);
        let choices: Vec<InBatch<'_>> = chunk
            .iter()
            .enumerate()
            .filter_map(|(r, &i)| drawn.get(i).copied().flatten().map(|d| (r, d)))
            .flat_map(|(r, d)| d.scored.iter().map(move |c| (r, c, d.shape.temperature)))
            .collect();
        let (picked, ent) = rescore(model, cache, &logits, &choices, picked, ent, want);
        let picked: Vec<f32> = Vec::try_from(picked.to_device(tch::Device::Cpu).view([-1]))?;
        let ent: Option<Vec<f32>> = match ent {
            Some(h) => Some(Vec::try_from(h.to_device(tch::Device::Cpu).view([-1]))?),
            None => None,
        };
        let row = |flat: &[f32], r: usize, n: usize| {
            let mut v = Vec::with_capacity(n);
            if n > 0 {
                v.push(f32::NAN);
                v.extend_from_slice(&flat[r * (t - 1)..r * (t - 1) + n - 1]);
            }
            v
        };
        for (r, &i) in chunk.iter().enumerate() {
            let n = seqs[i].len();
            let truncated = drawn.get(i).copied().flatten().is_some_and(|d| d.shape.truncates());
            out[i] = Scored {
                logp: row(&picked, r, n),
                entropy: ent.as_ref().map(|h| row(h, r, n)),
                supports: if truncated && extras.supports { supports[ranges[r].clone()].to_vec() } else { Vec::new() },
            };
        }
        Ok(())
    })?;
    Ok(out)
}
