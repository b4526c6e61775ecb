//! The learner's view of stored log-probs: each example's per-token log-probs under a policy now,
//! every drawn token under the distribution it was drawn from (mask, temperature, top-k/top-p,
//! TWOSOME's action softmax), and how far the stored behaviour log-probs are from them.
//!
//! Invariant: before the first update of an iteration the policy that sampled the rows and the
//! learner are the same, so the mismatch is float rounding (≤ 1e-4 on CPU); truncated draws are
//! frozen to the support they had, so a later update keeps a gradient for every trained token.

use super::examples::Example;
use crate::error::Result;
use crate::model::llama::Decoder;

/// Every example's per-token log-probs under `model`, each drawn token's under the distribution
/// it was drawn from.
fn score(model: &Decoder, examples: &[Example], max_batch_tokens: usize) -> Result<Vec<Vec<f32>>> {
    let seqs: Vec<Vec<i64>> = examples.iter().map(|e| e.tokens.clone()).collect();
    let drawn: Vec<_> = examples.iter().map(|e| e.drawn.as_ref()).collect();
    crate::model::score::drawn_logprobs(model, &seqs, &drawn, max_batch_tokens)
}

/// |stored behaviour log-prob − log-prob under the learner now| over the trained tokens that have a
/// behaviour log-prob: (max, mean, tokens). Before the first update it must be ~0: the learner
/// trains the distribution the sampler drew from.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Mismatch {
    /// Largest difference.
    pub max: f64,
    /// Mean difference.
    pub mean: f64,
    /// Tokens compared.
    pub tokens: usize,
}

impl Mismatch {
    /// Compares `behaviour` (the examples' `logp_old` as read from the rows) with `now`.
    pub fn of(examples: &[Example], now: &[&[f32]]) -> Mismatch {
        let (mut max, mut sum, mut tokens) = (0f64, 0f64, 0usize);
        for (e, lp) in examples.iter().zip(now) {
            for j in (1..e.tokens.len()).filter(|&j| e.mask[j] > 0.0 && e.logp_old[j].is_finite()) {
                let d = (f64::from(e.logp_old[j]) - f64::from(lp[j])).abs();
                max = max.max(if d.is_nan() { f64::INFINITY } else { d });
                sum += d;
                tokens += 1;
            }
        }
        Mismatch { max, mean: sum / tokens.max(1) as f64, tokens }
    }
}

/// The examples' log-probs under `model` now, and how far their stored behaviour log-probs
/// (`logp_old` as read) are from them; with `recompute` they become the examples' `logp_old`
/// (LOOP's recompute step). Drawn tokens sampled with top-k/top-p get the support `model` keeps
/// now as their fixed allowed set ([`Drawn::freeze`](crate::model::drawn::Drawn::freeze)), so the
/// update keeps a gradient for every trained token whatever it does to the ranking.
pub fn check_behaviour(
    model: &Decoder,
    examples: &mut [Example],
    max_batch_tokens: usize,
    recompute: bool,
) -> Result<Mismatch> {
    let seqs: Vec<Vec<i64>> = examples.iter().map(|e| e.tokens.clone()).collect();
    let drawn: Vec<_> = examples.iter().map(|e| e.drawn.as_ref()).collect();
    let scored = crate::model::score::drawn_logprobs_and_supports(model, &seqs, &drawn, max_batch_tokens)?;
    let now: Vec<&[f32]> = scored.iter().map(|(lp, _)| lp.as_slice()).collect();
    let mismatch = Mismatch::of(examples, &now);
    for (e, (lp, supports)) in examples.iter_mut().zip(scored) {
        if let Some(d) = e.drawn.as_mut().filter(|d| d.shape.truncates()) {
            d.freeze(supports);
        }
        if recompute {
            e.logp_old = lp;
        }
    }
    Ok(mismatch)
}

/// Sets every example's `logp_old` to the log-probs under `model` now (LOOP's recompute step).
pub fn recompute_logp_old(model: &Decoder, examples: &mut [Example], max_batch_tokens: usize) -> Result<()> {
    check_behaviour(model, examples, max_batch_tokens, true).map(|_| ())
}

/// Sets every example's `logp_ref` to the log-probs under the reference policy `reference`.
pub fn score_reference(reference: &Decoder, examples: &mut [Example], max_batch_tokens: usize) -> Result<()> {
    let scored = score(reference, examples, max_batch_tokens)?;
    for (e, lp) in examples.iter_mut().zip(scored) {
        e.logp_ref = lp;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::examples::from_rows;

    /// Rollouts of a fresh small policy on the household env, sampled six ways: constrained
    /// decoding among the admissible actions with top-k 3, free text at temperature 0.7, free text
    /// with top-k 5, free text with top-p 0.9, and whole admissible actions scored (TWOSOME, word
    /// normalisation) at temperatures 1 and 0.7. Before any update the learner's log-probs of
    /// the trained tokens equal the stored behaviour log-probs within 1e-4 (the run-time check's
    /// bound), also once top-k/top-p draws are frozen to their support; the plain log-softmax the
    /// learner used before differs by far more.
    #[test]
    fn the_learner_rebuilds_the_behaviour_distribution() {
        use crate::model::generate::Sampling;
        use crate::rollout::{rollout, RolloutConfig};
        use crate::schema::builder::TrajectoryBuilder;
        let (model, tok) = crate::model::load("small:household", tch::Device::Cpu).unwrap();
        let word = Some(crate::rollout::action_scoring::Normalization::Word);
        let cases = [
            ("constrained, top-k 3", true, None, Sampling { temperature: 1.0, top_k: 3, ..Default::default() }),
            ("free text, temperature 0.7", false, None, Sampling { temperature: 0.7, ..Default::default() }),
            ("free text, top-k 5", false, None, Sampling { temperature: 1.0, top_k: 5, ..Default::default() }),
            ("free text, top-p 0.9", false, None, Sampling { temperature: 1.0, top_p: 0.9, ..Default::default() }),
            ("scored actions", true, word, Sampling { temperature: 1.0, ..Default::default() }),
            ("scored actions, temperature 0.7", true, word, Sampling { temperature: 0.7, ..Default::default() }),
        ];
        for (name, admissible, scoring, sampling) in cases {
            let truncated = sampling.top_k > 0 || sampling.top_p < 1.0;
            let sampling = Sampling { max_new_tokens: 6, seed: 11, ..sampling };
            let mut cfg = RolloutConfig::new("household", vec![0, 1, 2, 3], 2, sampling, 3, "small:household");
            cfg.admissible = admissible;
            cfg.scoring = scoring;
            let mut b = TrajectoryBuilder::default();
            rollout(&model, &tok, &cfg).unwrap().into_iter().for_each(|r| b.push(r));
            let mut examples = from_rows(&b.finish(), crate::run::examples::Columns::default()).unwrap();
            let m = check_behaviour(&model, &mut examples, 4096, false).unwrap();
            assert!(m.tokens > 20, "{name}: {m:?}");
            assert!(m.max <= 1e-4, "{name}: {m:?}");
            // Truncated draws are now frozen to the support they were drawn from: same log-probs.
            assert!(examples.iter().all(|e| e.drawn.as_ref().is_none_or(|d| !d.shape.truncates())), "{name}");
            let frozen = check_behaviour(&model, &mut examples, 4096, false).unwrap();
            assert!(frozen.max <= 1e-4 && frozen.tokens == m.tokens, "{name}, frozen: {frozen:?}");
            assert!(!truncated || examples.iter().any(|e| e.drawn.is_some()), "{name}");
            let scored = examples.iter().flat_map(|e| &e.drawn).map(|d| d.scored.len()).sum::<usize>();
            assert!(scoring.is_none() || scored >= 8, "{name}: {scored} scored actions");
            // The plain softmax is another distribution: the check can fail.
            examples.iter_mut().for_each(|e| e.drawn = None);
            let plain = check_behaviour(&model, &mut examples, 4096, false).unwrap();
            assert!(plain.max > 1e-2, "{name}: the plain softmax agrees too: {plain:?}");
        }
    }
}
