//! Choosing among admissible actions by scoring them whole, as TWOSOME (and POAD on its
//! restricted-action environments) do: each candidate's log-likelihood given the prompt, normalised
//! by its length, and a softmax over the candidates.
//!
//! Invariants: a candidate's score is S = Σ log π(token | prompt, earlier tokens) over its tokens
//! (the end-of-turn token included), divided by its token count (`token`), its whitespace-separated
//! word count (`word`, TWOSOME's and POAD's scripts) or by 1 (`sum`, GLAM). The action is drawn from
//! softmax(S / temperature) (argmax at temperature 0) with the sampler's own seeded generator, one
//! draw per row in row order, so a choice does not depend on the batch. The chosen action's tokens
//! are returned with their action-level log-prob on the first token (0 on the others) and the
//! candidates, chosen first, with their divisors ([`ScoredChoice`]): what the learner needs to
//! rebuild the distribution ([`crate::model::scored_choice`]), so the ratio is TWOSOME's
//! action-level one with the normaliser over the candidates re-scored.

use crate::error::Result;
use crate::model::drawn::Shape;
use crate::model::generate::{Finish, Generation};
use crate::model::llama::Decoder;
use crate::model::score::token_logprobs;
use crate::model::scored_choice::{log_softmax, ScoredChoice};
pub use crate::pipeline::training::Normalization;
use crate::synth::SplitMix;

/// One candidate action: its text and its token ids (ending with the end-of-turn token).
pub struct Candidate {
    /// The action text (for the word count).
    pub text: String,
    /// Its tokens.
    pub ids: Vec<i64>,
}

/// What a candidate's summed log-likelihood is divided by.
fn divisor(c: &Candidate, norm: Normalization) -> f64 {
    let n = match norm {
        Normalization::Token => c.ids.len(),
        Normalization::Word => c.text.split_whitespace().count(),
        Normalization::Sum => 1,
    };
    n.max(1) as f64
}

/// Normalised scores of candidates whose per-token log-probs are `token_logps`.
pub fn normalized_scores(candidates: &[Candidate], token_logps: &[Vec<f32>], norm: Normalization) -> Vec<f64> {
    candidates
        .iter()
        .zip(token_logps)
        .map(|(c, lp)| lp.iter().map(|&x| x as f64).sum::<f64>() / divisor(c, norm))
        .collect()
}

/// Scores every row's candidates after its prompt and draws one per row (see the module doc);
/// returns the chosen candidates as [`Generation`]s with their action-level log-probs and candidates.
pub fn choose(
    model: &Decoder,
    prompts: &[Vec<i64>],
    candidates: &[Vec<Candidate>],
    norm: Normalization,
    temperature: f64,
    seed: i64,
    max_batch_tokens: usize,
) -> Result<Vec<Generation>> {
    let seqs: Vec<Vec<i64>> = prompts
        .iter()
        .zip(candidates)
        .flat_map(|(p, cs)| cs.iter().map(move |c| p.iter().chain(&c.ids).copied().collect()))
        .collect();
    let scored = token_logprobs(model, &seqs, max_batch_tokens)?;
    let mut rng = SplitMix::new(seed as u64);
    let mut next = scored.into_iter();
    let mut out = Vec::with_capacity(prompts.len());
    for (p, cs) in prompts.iter().zip(candidates) {
        assert!(!cs.is_empty(), "a row without admissible actions");
        let token_logps: Vec<Vec<f32>> =
            cs.iter().map(|_| next.next().expect("one scoring per candidate")[p.len()..].to_vec()).collect();
        let scores = normalized_scores(cs, &token_logps, norm);
        let logp = log_softmax(&scores, temperature);
        let index = if temperature <= 0.0 {
            (0..cs.len()).fold(0, |b, i| if scores[i] > scores[b] { i } else { b })
        } else {
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let mut acc = 0.0;
            (0..cs.len())
                .find(|&i| {
                    acc += logp[i].exp();
                    u < acc
                })
                .unwrap_or(cs.len() - 1)
        };
        let order: Vec<usize> = std::iter::once(index).chain((0..cs.len()).filter(|&i| i != index)).collect();
        let taken = &cs[index].ids;
        let mut logprobs = vec![0.0; taken.len()];
        logprobs[0] = logp[index] as f32;
        out.push(Generation {
            tokens: taken.clone(),
            logprobs,
            allowed: vec![Vec::new(); taken.len()],
            shape: Some(Shape { temperature, top_k: 0, top_p: 1.0 }),
            finish: Finish::Stop,
            choice: Some(ScoredChoice {
                start: 0,
                candidates: order.iter().map(|&i| cs[i].ids.clone()).collect(),
                divisors: order.iter().map(|&i| divisor(&cs[i], norm) as f32).collect(),
            }),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(text: &str, n: usize) -> Candidate {
        Candidate { text: text.into(), ids: vec![0; n] }
    }

    /// Golden values by hand: two candidates, "go to fridge 1" (4 words, 5 tokens) with log-probs
    /// summing to −2.5, and "look" (1 word, 2 tokens) summing to −1.2.
    #[test]
    fn normalisations_by_hand() {
        let cs = [cand("go to fridge 1", 5), cand("look", 2)];
        let lps = [vec![-0.5, -0.5, -0.5, -0.5, -0.5], vec![-1.0, -0.2]];
        let close = |a: Vec<f64>, b: [f64; 2]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
        assert!(close(normalized_scores(&cs, &lps, Normalization::Token), [-0.5, -0.6]));
        assert!(close(normalized_scores(&cs, &lps, Normalization::Word), [-0.625, -1.2]));
        assert!(close(normalized_scores(&cs, &lps, Normalization::Sum), [-2.5, -1.2]));
        // Word normalisation favours the long action that sum scoring penalises.
        let p = log_softmax(&[-0.625, -1.2], 1.0);
        assert!((p[0].exp() - 1.0 / (1.0 + (-0.575f64).exp())).abs() < 1e-9);
        assert!((p.iter().map(|x| x.exp()).sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
