//! StepAgent's implicit step reward fed into PPO (ALGORITHMS.md §2.3–2.4; the sources leave open
//! whether the implicit variant trains by DPO alone or feeds its reward to PPO, and this is the
//! second graph). Each iteration a copy φ of the policy θ is trained with step-level DPO on the
//! iteration's (expert ≻ agent) pairs, θ being the reference; every row's reward then becomes φ's
//! DPO implicit reward `r(s, a) = β·(log π_φ(a|s) − log π_θ(a|s))`, summed over the action's
//! tokens, and the stages and a PPO learner turn it into θ's update. The reward model is to this
//! variant what the discriminator is to the inverse-RL one.
//!
//! Invariants:
//! - θ is never changed here. φ is a fresh copy each iteration, so the reference is the policy at
//!   the start of the cycle and nothing of φ is checkpointed: a resumed run rebuilds it exactly.
//! - Before φ trains it equals θ and every reward is 0; a row without action tokens gets 0.
//! - Pairs and minibatch order are functions of the rows and the seed (the learner's `fit`), so
//!   runs are bit-identical on the CPU.

use arrow::array::RecordBatch;

use super::behaviour::recompute_logp_old;
use super::examples::{drawn_rows, Example};
use super::learner::{fit, Objective, Schedule};
use super::preferences::preference_pairs;
use super::row_columns::{segment_codes, token_ids, with_rewards};
use crate::error::Result;
use crate::model::llama::Decoder;
use crate::model::score::drawn_logprobs;
use crate::ops::segment::Segment;
use crate::pipeline::training::ImplicitRewardSection;
use crate::train::optim::{AdamW, OptimConfig};

/// One iteration's reward-model training.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImplicitRewardStats {
    /// (expert, agent) pairs φ trained on (identical actions give none).
    pub pairs: usize,
    /// Mean DPO loss of φ's updates.
    pub loss: f64,
    /// Fraction of those pairs whose expert action φ rewards above the agent's, after training.
    pub accuracy: f64,
}

/// Trains φ (see the module docs) on the pairs of `rows` and returns `rows` with every reward
/// replaced by φ's implicit reward. `seed` orders the minibatches.
pub fn train_and_reward(
    policy: &Decoder,
    cfg: &ImplicitRewardSection,
    rows: &RecordBatch,
    max_batch_tokens: usize,
    seed: u64,
) -> Result<(RecordBatch, ImplicitRewardStats)> {
    let (mut pairs, count) = preference_pairs(rows)?;
    let mut stats = ImplicitRewardStats { pairs: count.pairs, ..Default::default() };
    let reward_model = policy.duplicate()?;
    if !pairs.is_empty() {
        recompute_logp_old(policy, &mut pairs, max_batch_tokens)?;
        let mut opt = AdamW::new(
            reward_model.trainable_variables(),
            OptimConfig { lr: cfg.lr, max_grad_norm: Some(1.0), ..Default::default() },
        );
        let objective = Objective::Dpo { beta: cfg.beta, label_smoothing: 0.0, chosen_nll: cfg.chosen_nll };
        let schedule = Schedule {
            epochs: cfg.epochs,
            minibatch: cfg.minibatch,
            max_batch_tokens,
            kl_stop: 0.0,
            kl_skip: 0.0,
            seed,
        };
        stats.loss = fit(&reward_model, &mut opt, None, &pairs, objective, &schedule)?.loss;
        // The policy's log-probs of the pairs are their DPO reference, already in `logp_old`.
        let theta: Vec<Vec<f32>> = pairs.iter().map(|e| e.logp_old.clone()).collect();
        let r = reward(&reward_model, &theta, cfg.beta, &pairs, max_batch_tokens)?;
        let right = r.chunks(2).filter(|p| p[0] > p[1]).count();
        stats.accuracy = right as f64 / count.pairs as f64;
    }
    // Each row's action tokens under the distribution they were drawn from (the expert's: the
    // plain softmax), as the pairs φ was trained on.
    let examples: Vec<Example> = token_ids(rows)?
        .into_iter()
        .zip(segment_codes(rows)?)
        .zip(drawn_rows(rows)?)
        .map(|((tokens, segments), drawn)| Example { drawn, ..action_example(tokens, &segments) })
        .collect();
    let theta = scored(policy, &examples, max_batch_tokens)?;
    let rewards = reward(&reward_model, &theta, cfg.beta, &examples, max_batch_tokens)?;
    Ok((with_rewards(rows, &rewards)?, stats))
}

/// A row's tokens with its action tokens marked (the only fields [`reward`] reads).
fn action_example(tokens: Vec<i64>, segments: &[u8]) -> Example {
    let n = tokens.len();
    Example {
        tokens,
        mask: segments.iter().map(|&s| f32::from(u8::from(s == Segment::Action as u8))).collect(),
        adv: vec![0.0; n],
        logp_old: vec![f32::NAN; n],
        logp_ref: vec![f32::NAN; n],
        values: vec![0.0; n],
        returns: vec![0.0; n],
        turns: vec![0; n],
        drawn: None,
    }
}

/// Every example's per-token log-probs under `model`, drawn tokens under their distribution.
fn scored(model: &Decoder, examples: &[Example], max_batch_tokens: usize) -> Result<Vec<Vec<f32>>> {
    let seqs: Vec<Vec<i64>> = examples.iter().map(|e| e.tokens.clone()).collect();
    let drawn: Vec<_> = examples.iter().map(|e| e.drawn.as_ref()).collect();
    drawn_logprobs(model, &seqs, &drawn, max_batch_tokens)
}

/// `β·Σ (log π_φ − log π_θ)` over each example's masked tokens, `theta` holding the policy's
/// per-token log-probs of each example.
fn reward(
    reward_model: &Decoder,
    theta: &[Vec<f32>],
    beta: f64,
    examples: &[Example],
    max_batch_tokens: usize,
) -> Result<Vec<f32>> {
    let phi = scored(reward_model, examples, max_batch_tokens)?;
    Ok(examples
        .iter()
        .zip(phi.iter().zip(theta))
        .map(|(e, (p, t))| {
            let sum: f64 = (0..e.tokens.len()).filter(|&j| e.mask[j] > 0.0).map(|j| f64::from(p[j] - t[j])).sum();
            (beta * sum) as f32
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::DecoderConfig;
    use crate::model::score::token_logprobs;
    use crate::schema::builder::{EpisodeRow, TrajectoryBuilder};
    use arrow::array::AsArray;
    use tch::Device;

    /// One-step rows at 4 prefixes: the expert answers token 5, the agent token 9 (except at
    /// prefix 3, where it agrees).
    fn rows() -> Vec<EpisodeRow> {
        let mut out = Vec::new();
        for p in 0..4 {
            for agent in [false, true] {
                let last = if agent && p != 3 { 9 } else { 5 };
                out.push(EpisodeRow {
                    episode_id: format!("e{p}/{}", if agent { "agent" } else { "expert" }),
                    group_id: format!("e/s{p}"),
                    tokens: vec![1, 2 + p, last, 3],
                    segments: vec![
                        Segment::Prompt as u8,
                        Segment::Prompt as u8,
                        Segment::Action as u8,
                        Segment::Action as u8,
                    ],
                    turns: vec![0; 4],
                    logp_behavior: agent.then(|| vec![f32::NAN, f32::NAN, -1.0, -1.0]),
                    reward: f32::from(u8::from(last == 5)),
                    turn_rewards: vec![f32::from(u8::from(last == 5))],
                    ..Default::default()
                });
            }
        }
        out
    }

    fn cfg(lr: f64) -> ImplicitRewardSection {
        ImplicitRewardSection { beta: 0.5, chosen_nll: 0.0, lr, epochs: 30, minibatch: 2 }
    }

    /// After training, φ rewards the expert's action above the agent's at every disagreeing
    /// prefix, the agreeing prefix's two rows get the same reward, and the policy is untouched.
    #[test]
    fn rewards_expert_actions_above_agent_actions_and_leaves_the_policy_alone() {
        tch::manual_seed(0);
        let policy = Decoder::new(DecoderConfig::small(12), Device::Cpu);
        let weights = |m: &Decoder| -> std::collections::BTreeMap<String, tch::Tensor> {
            m.vs.variables().into_iter().map(|(k, t)| (k, t.copy())).collect()
        };
        let before = weights(&policy);
        let rows = rows();
        let mut b = TrajectoryBuilder::default();
        rows.iter().for_each(|r| b.push(r.clone()));
        let (rewarded, stats) = train_and_reward(&policy, &cfg(1e-2), &b.finish(), 4096, 7).unwrap();
        assert_eq!(stats.pairs, 3, "{stats:?}");
        assert_eq!(stats.accuracy, 1.0, "{stats:?}");
        let reward = rewarded.column_by_name("reward").unwrap().as_primitive::<arrow::datatypes::Float32Type>();
        for (p, pair) in rows.chunks(2).enumerate() {
            let (expert, agent) = (reward.value(2 * p), reward.value(2 * p + 1));
            if pair[0].tokens == pair[1].tokens {
                assert_eq!(expert, agent);
            } else {
                assert!(expert > agent, "{expert} vs {agent}");
            }
        }
        let after = weights(&policy);
        assert!(before.iter().zip(&after).all(|((k, a), (l, b))| k == l && a.equal(b)), "the policy's weights changed");
    }

    /// The reward is β times the log-ratio summed over action tokens, checked against scoring by
    /// hand; an untrained copy gives exactly 0.
    #[test]
    fn reward_is_beta_times_the_summed_log_ratio() {
        tch::manual_seed(1);
        let policy = Decoder::new(DecoderConfig::small(12), Device::Cpu);
        let other = Decoder::new(DecoderConfig::small(12), Device::Cpu);
        let row = &rows()[1];
        let ex = action_example(row.tokens.iter().map(|&t| i64::from(t)).collect(), &row.segments);
        let t = token_logprobs(&policy, std::slice::from_ref(&ex.tokens), 4096).unwrap();
        let r = reward(&other, &t, 0.5, std::slice::from_ref(&ex), 4096).unwrap()[0];
        let p = token_logprobs(&other, std::slice::from_ref(&ex.tokens), 4096).unwrap().remove(0);
        let t = t[0].clone();
        let want = 0.5 * ((p[2] - t[2]) + (p[3] - t[3]));
        assert!((r - want).abs() < 1e-5, "{r} vs {want}");
        assert!(r != 0.0);
        let same = policy.duplicate().unwrap();
        let theta = token_logprobs(&policy, std::slice::from_ref(&ex.tokens), 4096).unwrap();
        assert_eq!(reward(&same, &theta, 0.5, &[ex], 4096).unwrap()[0], 0.0);
    }
}
