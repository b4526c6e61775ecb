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
use crate::model::score::chunks;
use crate::model::scored_choice::{candidate_sums, log_softmax, InBatch, ScoredChoice};
pub use crate::pipeline::training::Normalization;
use crate::synth::SplitMix;
use tch::{Kind, Tensor};

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

/// Normalised scores of candidates whose summed token log-likelihoods are `sums`.
pub fn normalized_scores(candidates: &[Candidate], sums: &[f64], norm: Normalization) -> Vec<f64> {
    candidates.iter().zip(sums).map(|(c, s)| s / divisor(c, norm)).collect()
}

/// Every row's candidates' summed token log-likelihoods after its prompt: the prompts in padded
/// chunks of at most `max_batch_tokens`, one forward pass each, then all of a row's candidates in
/// one pass against its prompt's cached keys and values ([`candidate_sums`]): a prompt is run once,
/// not once per candidate, and the sums equal scoring `prompt + candidate` on its own.
fn summed_logprobs(
    model: &Decoder,
    prompts: &[Vec<i64>],
    candidates: &[Vec<Candidate>],
    max_batch_tokens: usize,
) -> Result<Vec<Vec<f64>>> {
    let mut out = vec![Vec::new(); prompts.len()];
    chunks(model, prompts, max_batch_tokens, true, |chunk, _, _, hidden, cache| {
        let choices: Vec<ScoredChoice> = chunk
            .iter()
            .map(|&i| ScoredChoice {
                start: prompts[i].len(),
                candidates: candidates[i].iter().map(|c| c.ids.clone()).collect(),
                divisors: vec![1.0; candidates[i].len()],
            })
            .collect();
        let in_batch: Vec<InBatch<'_>> = choices.iter().enumerate().map(|(r, ch)| (r, ch, 1.0)).collect();
        let dev = hidden.device();
        let rows = Tensor::arange(chunk.len() as i64, (Kind::Int64, dev));
        let last: Vec<i64> = chunk.iter().map(|&i| prompts[i].len() as i64 - 1).collect();
        let last = hidden.index(&[Some(rows), Some(Tensor::from_slice(&last).to(dev))]);
        let before = model.logits(&last).to_kind(Kind::Float).log_softmax(-1, Kind::Float);
        let sums = Vec::<f32>::try_from(candidate_sums(model, cache, &before, &in_batch).to_device(tch::Device::Cpu))?;
        let mut next = sums.into_iter();
        for &i in chunk {
            out[i] = candidates[i].iter().map(|_| f64::from(next.next().expect("one sum per candidate"))).collect();
        }
        Ok(())
    })?;
    Ok(out)
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
    assert!(candidates.iter().all(|cs| !cs.is_empty()), "a row without admissible actions");
    let sums = summed_logprobs(model, prompts, candidates, max_batch_tokens)?;
    let mut rng = SplitMix::new(seed as u64);
    let mut out = Vec::with_capacity(prompts.len());
    for (cs, sums) in candidates.iter().zip(&sums) {
        let scores = normalized_scores(cs, sums, norm);
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
    use crate::model::config::DecoderConfig;
    use crate::model::score::token_logprobs;

    fn cand(text: &str, n: usize) -> Candidate {
        Candidate { text: text.into(), ids: vec![0; n] }
    }

    /// Golden values by hand: two candidates, "go to fridge 1" (4 words, 5 tokens) with log-probs
    /// summing to −2.5, and "look" (1 word, 2 tokens) summing to −1.2.
    #[test]
    fn normalisations_by_hand() {
        let cs = [cand("go to fridge 1", 5), cand("look", 2)];
        let lps = [-2.5, -1.2];
        let close = |a: Vec<f64>, b: [f64; 2]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
        assert!(close(normalized_scores(&cs, &lps, Normalization::Token), [-0.5, -0.6]));
        assert!(close(normalized_scores(&cs, &lps, Normalization::Word), [-0.625, -1.2]));
        assert!(close(normalized_scores(&cs, &lps, Normalization::Sum), [-2.5, -1.2]));
        // Word normalisation favours the long action that sum scoring penalises.
        let p = log_softmax(&[-0.625, -1.2], 1.0);
        assert!((p[0].exp() - 1.0 / (1.0 + (-0.575f64).exp())).abs() < 1e-9);
        assert!((p.iter().map(|x| x.exp()).sum::<f64>() - 1.0).abs() < 1e-12);
    }

    /// The prompt run once and the candidates against its cache give the sums of scoring each
    /// `prompt + candidate` as its own sequence (an independent computation), for prompts of
    /// different lengths split over several chunks, one-token candidates included.
    #[test]
    fn cached_sums_equal_scoring_each_candidate_alone() {
        tch::manual_seed(5);
        let m = Decoder::new(DecoderConfig::small(40), tch::Device::Cpu);
        let prompts: Vec<Vec<i64>> = vec![vec![1, 5, 6, 3], vec![1, 4, 3, 9, 9, 8, 7, 3], vec![1, 3]];
        let ids = |v: &[i64]| Candidate { text: String::new(), ids: v.to_vec() };
        let candidates = vec![
            vec![ids(&[7, 8, 2]), ids(&[9, 2]), ids(&[2])],
            vec![ids(&[11, 12, 13, 2]), ids(&[11, 2])],
            vec![ids(&[20, 21, 2]), ids(&[22, 2]), ids(&[23, 24, 25, 26, 2]), ids(&[2])],
        ];
        // 8 padded tokens per chunk: every prompt in a chunk of its own.
        let got = summed_logprobs(&m, &prompts, &candidates, 8).unwrap();
        for ((p, cs), sums) in prompts.iter().zip(&candidates).zip(&got) {
            let seqs: Vec<Vec<i64>> = cs.iter().map(|c| p.iter().chain(&c.ids).copied().collect()).collect();
            let want = token_logprobs(&m, &seqs, 1 << 14).unwrap();
            assert_eq!(sums.len(), cs.len());
            for (s, w) in sums.iter().zip(&want) {
                let w: f64 = w[p.len()..].iter().map(|&x| f64::from(x)).sum();
                assert!((s - w).abs() < 1e-4, "{s} vs {w}");
                assert!(*s < 0.0);
            }
        }
        // One chunk for all three: the same sums.
        let together = summed_logprobs(&m, &prompts, &candidates, 1 << 14).unwrap();
        for (a, b) in got.iter().flatten().zip(together.iter().flatten()) {
            assert!((a - b).abs() < 1e-5);
        }
    }
}
