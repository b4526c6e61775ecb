//! StepAgent's inverse-RL discriminator (O19, ALGORITHMS.md §2.3, GAIL convention): `D(s, a) =
//! σ(head(h))`, where `h` is the policy's final hidden states averaged over the action tokens of
//! a one-step (prefix, action) row, detached, and `D → 1` on agent rows, `D → 0` on expert rows. Each
//! iteration it is trained on that iteration's rows with BCE, and then every row's reward becomes
//! `−log D(s, a)` (higher = more expert-like), which the stages turn into advantages for PPO.
//!
//! Invariants:
//! - A row is an agent row iff it has behaviour log-probs (the policy generated it); expert rows
//!   have none. Rows come in (expert, agent) pairs, so the classes are balanced.
//! - The backbone runs once per iteration (no gradient); the epochs train the head on the cached
//!   features, in an order that is a function of the seed alone, so runs resume bit-exactly.

use tch::{Device, Kind, Tensor};

use super::learner::shuffled;
use crate::error::Result;
use crate::model::heads::Head;
use crate::model::llama::Decoder;
use crate::model::score::for_each_chunk;
use crate::ops::segment::Segment;
use crate::pipeline::training::DiscriminatorSection;
use crate::schema::builder::EpisodeRow;
use crate::train::losses::bce_with_logits;
use crate::train::optim::{AdamW, OptimConfig};

/// The discriminator head, its optimiser and its schedule.
pub struct Discriminator {
    /// The head.
    pub head: Head,
    /// Its optimiser.
    pub opt: AdamW,
    epochs: usize,
    minibatch: usize,
}

/// One iteration's discriminator training.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscriminatorStats {
    /// Mean BCE of the last epoch.
    pub loss: f64,
    /// Fraction of rows classified right after training (agent iff D > ½).
    pub accuracy: f64,
}

impl Discriminator {
    /// A fresh discriminator for `model` (initialised from libtorch's generator: seed it first).
    pub fn new(model: &Decoder, cfg: &DiscriminatorSection) -> Discriminator {
        let head = Head::new(model.cfg.hidden_size, &cfg.hidden, true, true, model.device());
        let opt = AdamW::new(
            head.vs.variables().into_iter().collect(),
            OptimConfig { lr: cfg.lr, max_grad_norm: Some(1.0), ..Default::default() },
        );
        Discriminator { head, opt, epochs: cfg.epochs, minibatch: cfg.minibatch }
    }

    /// Every row's features, `[N, D]` on the model's device: the mean of the final hidden states
    /// over its `action` tokens (the last token's if it has none). Not the last token alone: there
    /// the decoder's state is shaped to predict the next turn's template, which every row shares.
    fn features(model: &Decoder, rows: &[EpisodeRow], max_batch_tokens: usize) -> Result<Tensor> {
        let seqs: Vec<Vec<i64>> = rows.iter().map(|r| r.tokens.iter().map(|&t| t as i64).collect()).collect();
        let mut out: Vec<Option<Tensor>> = (0..rows.len()).map(|_| None).collect();
        for_each_chunk(model, &seqs, max_batch_tokens, |chunk, _, _, hidden| {
            for (r, &i) in chunk.iter().enumerate() {
                let seg = &rows[i].segments;
                let mut at: Vec<i64> =
                    (0..seg.len()).filter(|&j| seg[j] == Segment::Action as u8).map(|j| j as i64).collect();
                if at.is_empty() {
                    at.push(seqs[i].len().max(1) as i64 - 1);
                }
                let idx = Tensor::from_slice(&at).to(hidden.device());
                out[i] = Some(hidden.get(r as i64).index_select(0, &idx).to_kind(Kind::Float).mean_dim(
                    0,
                    false,
                    Kind::Float,
                ));
            }
            Ok(())
        })?;
        let feats: Vec<Tensor> = out.into_iter().map(|t| t.expect("every row is scored")).collect();
        Ok(Tensor::stack(&feats, 0))
    }

    /// Trains on `rows` (labels from the module docs) and replaces each row's reward by
    /// `−log D(s, a)`. `seed` orders the minibatches.
    pub fn train_and_reward(
        &mut self,
        model: &Decoder,
        rows: &mut [EpisodeRow],
        max_batch_tokens: usize,
        seed: u64,
    ) -> Result<DiscriminatorStats> {
        if rows.is_empty() {
            return Ok(DiscriminatorStats::default());
        }
        let feats = Self::features(model, rows, max_batch_tokens)?;
        let labels: Vec<f32> = rows.iter().map(|r| f32::from(u8::from(r.logp_behavior.is_some()))).collect();
        let device = feats.device();
        let labels = Tensor::from_slice(&labels).to(device);
        let mut stats = DiscriminatorStats::default();
        for epoch in 0..self.epochs {
            let order = shuffled(rows.len(), seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let (mut sum, mut n) = (0.0, 0.0);
            for batch in order.chunks(self.minibatch) {
                let idx: Vec<i64> = batch.iter().map(|&i| i as i64).collect();
                let idx = Tensor::from_slice(&idx).to(device);
                let logits = self.head.values(&feats.index_select(0, &idx));
                let loss = bce_with_logits(&logits, &labels.index_select(0, &idx));
                sum += loss.double_value(&[]);
                n += 1.0;
                self.opt.backward(&loss, None)?;
            }
            stats.loss = sum / n;
        }
        let logits = tch::no_grad(|| self.head.values(&feats)).to_device(Device::Cpu).to_kind(Kind::Float);
        let right = logits.gt(0.0).to_kind(Kind::Float).eq_tensor(&labels.to_device(Device::Cpu));
        stats.accuracy = right.to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        // −log σ(x) = softplus(−x).
        let rewards: Vec<f32> = Vec::try_from(logits.neg().softplus())?;
        for (row, r) in rows.iter_mut().zip(rewards) {
            row.reward = r;
            row.turn_rewards = vec![r];
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::DecoderConfig;

    /// Expert rows end in token 5, agent rows in token 9: the discriminator learns to tell them
    /// apart, and the expert-like rows get the higher reward.
    #[test]
    fn separates_expert_from_agent_rows_and_rewards_expert_likeness() {
        tch::manual_seed(0);
        let model = Decoder::new(DecoderConfig::small(12), Device::Cpu);
        let cfg = DiscriminatorSection { hidden: vec![32], lr: 1e-2, epochs: 60, minibatch: 8 };
        let mut d = Discriminator::new(&model, &cfg);
        let mut rows: Vec<EpisodeRow> = (0..16)
            .map(|i| {
                let agent = i % 2 == 1;
                let last = if agent { 9 } else { 5 };
                EpisodeRow {
                    tokens: vec![1, 2 + (i % 3), last],
                    segments: vec![Segment::Prompt as u8, Segment::Prompt as u8, Segment::Action as u8],
                    turns: vec![0; 3],
                    logp_behavior: agent.then(|| vec![f32::NAN, f32::NAN, -1.0]),
                    turn_rewards: vec![0.0],
                    ..Default::default()
                }
            })
            .collect();
        let stats = d.train_and_reward(&model, &mut rows, 4096, 1).unwrap();
        assert_eq!(stats.accuracy, 1.0, "{stats:?}");
        let (expert, agent): (Vec<&EpisodeRow>, Vec<&EpisodeRow>) =
            rows.iter().partition(|r| r.logp_behavior.is_none());
        let worst_expert = expert.iter().map(|r| r.reward).fold(f32::INFINITY, f32::min);
        let best_agent = agent.iter().map(|r| r.reward).fold(f32::NEG_INFINITY, f32::max);
        assert!(worst_expert > best_agent, "expert rewards ≥ {worst_expert}, agent rewards ≤ {best_agent}");
        assert!(rows.iter().all(|r| r.turn_rewards == vec![r.reward] && r.reward >= 0.0));
    }
}
