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

use arrow::array::RecordBatch;

use super::learner::shuffled;
use super::row_columns::{generated, segment_codes, token_ids, with_rewards};
use crate::error::Result;
use crate::model::heads::Head;
use crate::model::llama::Decoder;
use crate::model::score::for_each_chunk;
use crate::ops::segment::Segment;
use crate::pipeline::training::DiscriminatorSection;
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
    fn features(model: &Decoder, seqs: &[Vec<i64>], segments: &[Vec<u8>], max_batch_tokens: usize) -> Result<Tensor> {
        let mut out: Vec<Option<Tensor>> = (0..seqs.len()).map(|_| None).collect();
        for_each_chunk(model, seqs, max_batch_tokens, |chunk, _, _, hidden| {
            for (r, &i) in chunk.iter().enumerate() {
                let seg = &segments[i];
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

    /// Trains on `rows` (labels from the module docs) and returns `rows` with each reward replaced
    /// by `−log D(s, a)`. `seed` orders the minibatches.
    pub fn train_and_reward(
        &mut self,
        model: &Decoder,
        rows: &RecordBatch,
        max_batch_tokens: usize,
        seed: u64,
    ) -> Result<(RecordBatch, DiscriminatorStats)> {
        if rows.num_rows() == 0 {
            return Ok((rows.clone(), DiscriminatorStats::default()));
        }
        let feats = Self::features(model, &token_ids(rows)?, &segment_codes(rows)?, max_batch_tokens)?;
        let labels: Vec<f32> = generated(rows).into_iter().map(|g| f32::from(u8::from(g))).collect();
        let device = feats.device();
        let labels = Tensor::from_slice(&labels).to(device);
        let mut stats = DiscriminatorStats::default();
        for epoch in 0..self.epochs {
            let order = shuffled(rows.num_rows(), seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
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
        Ok((with_rewards(rows, &rewards)?, stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::DecoderConfig;
    use crate::schema::builder::{EpisodeRow, TrajectoryBuilder};
    use arrow::array::AsArray;

    /// Expert rows end in token 5, agent rows in token 9: the discriminator learns to tell them
    /// apart, and the expert-like rows get the higher reward.
    #[test]
    fn separates_expert_from_agent_rows_and_rewards_expert_likeness() {
        tch::manual_seed(0);
        let model = Decoder::new(DecoderConfig::small(12), Device::Cpu);
        let cfg = DiscriminatorSection { hidden: vec![32], lr: 1e-2, epochs: 60, minibatch: 8 };
        let mut d = Discriminator::new(&model, &cfg);
        let rows: Vec<EpisodeRow> = (0..16)
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
        let mut b = TrajectoryBuilder::default();
        rows.into_iter().for_each(|r| b.push(r));
        let (rows, stats) = d.train_and_reward(&model, &b.finish(), 4096, 1).unwrap();
        assert_eq!(stats.accuracy, 1.0, "{stats:?}");
        let rewards = rows.column_by_name("reward").unwrap().as_primitive::<arrow::datatypes::Float32Type>();
        let agent = generated(&rows);
        let worst_expert = (0..16).filter(|&i| !agent[i]).map(|i| rewards.value(i)).fold(f32::INFINITY, f32::min);
        let best_agent = (0..16).filter(|&i| agent[i]).map(|i| rewards.value(i)).fold(f32::NEG_INFINITY, f32::max);
        assert!(worst_expert > best_agent, "expert rewards ≥ {worst_expert}, agent rewards ≤ {best_agent}");
        assert!(rewards.values().iter().all(|&r| r >= 0.0));
    }
}
