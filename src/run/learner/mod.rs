//! The learner (O13/O18/O21 + O25): epochs of shuffled minibatches over an iteration's examples,
//! one optimiser update per minibatch, with PPO's clipped surrogate, SFT's NLL, DPO's sigmoid
//! loss or RetroAct's clipped-importance-weight policy gradient (+ imitation NLL) as the objective.
//!
//! Invariants:
//! - What it does depends only on the examples (in order), the weights, the optimiser state and
//!   `(seed, iteration, epoch)`, never on wall-clock or a hidden generator, so runs and resumed
//!   runs are bit-identical on the CPU.
//! - A minibatch larger than `max_batch_tokens` padded tokens is split into micro-batches whose
//!   gradients are accumulated with weights that reproduce the minibatch's reduction exactly
//!   (token means by trained tokens, sequence means by rows).
//! - DPO examples are (chosen, rejected) pairs at positions `(2i, 2i + 1)`, and so are RetroAct's
//!   (trained, imitation) pairs; shuffling, minibatches and micro-batches move whole pairs, so
//!   every loss term sees both sides of its pair.

use tch::Tensor;

use super::critic::Critic;
use super::examples::{pad, Example};
use crate::error::Result;
use crate::model::drawn::Entropy;
use crate::model::llama::{Decoder, KvCache};
use crate::model::scored_choice::rescore;
use crate::synth::SplitMix;
use crate::train::losses::{
    clipped_is_pg_loss, dpo_loss, entropy_bonus, kl_loss, masked_mean, nll_loss, ppo_policy_loss, sequence_logp_sum,
    KlEstimator, PpoClip, Reduction,
};
use crate::train::optim::{AdamW, Outcome};
use crate::train::spans::{at_granularity, Granularity};

/// What the learner minimises.
#[derive(Debug, Clone, Copy)]
pub enum Objective {
    /// PPO's clipped surrogate ([`PpoClip::unclipped`]: the plain policy gradient `−A·ρ`).
    Ppo {
        /// Clipping.
        clip: PpoClip,
        /// Reduction over tokens.
        reduction: Reduction,
        /// A KL-to-reference penalty against the examples' `logp_ref` (veRL's `use_kl_loss`,
        /// GRPO's β·KL), reduced like the surrogate.
        kl: Option<KlPenalty>,
        /// What one importance ratio covers (the KL penalty stays per token).
        granularity: Granularity,
        /// Weight of the entropy bonus (POAD's `c_ent`; 0 = none): `− c·H(π)` over the trained
        /// tokens, reduced like the surrogate, H of the distribution the tokens were drawn from.
        entropy_coef: f64,
    },
    /// NLL of the trained tokens.
    Nll {
        /// Reduction over tokens.
        reduction: Reduction,
    },
    /// DPO on (chosen, rejected) pairs against `logp_old` as the reference; mean over pairs.
    Dpo {
        /// β.
        beta: f64,
        /// Label smoothing (0 = plain DPO).
        label_smoothing: f64,
        /// Weight of an NLL term on the chosen side (token mean; RPO-style, 0 = plain DPO), which
        /// keeps DPO from lowering the chosen actions' likelihood along with the rejected ones'.
        chosen_nll: f64,
    },
    /// RetroAct's clipped-importance-weight policy gradient (`adv` is the reward `R` per token,
    /// `logp_old` the behaviour policy's log-probs), plus `imitation` (λ) times the NLL of an
    /// imitation example: with λ > 0 the examples are (trained, imitation) pairs at `(2i, 2i + 1)`.
    ClippedIs {
        /// ε of the weight's clip.
        eps: f64,
        /// Reduction over tokens (of both terms; a per-row one when λ > 0).
        reduction: Reduction,
        /// λ.
        imitation: f64,
    },
}

/// `coef · KL(π ‖ π_ref)` with a per-token estimator.
#[derive(Debug, Clone, Copy)]
pub struct KlPenalty {
    /// β.
    pub coef: f64,
    /// k1, k2 or k3.
    pub estimator: KlEstimator,
}

impl Objective {
    /// Examples per training unit: 2 for DPO's pairs and RetroAct's (trained, imitation) pairs,
    /// 1 otherwise.
    fn unit(&self) -> usize {
        match self {
            Objective::Dpo { .. } => 2,
            Objective::ClippedIs { imitation, .. } if *imitation > 0.0 => 2,
            _ => 1,
        }
    }
}

/// How the learner walks the examples.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Passes over the examples.
    pub epochs: usize,
    /// Examples (DPO: pairs) per update (0 = all).
    pub minibatch: usize,
    /// Padded tokens per forward pass at most.
    pub max_batch_tokens: usize,
    /// Stop the remaining minibatches once a minibatch's k3 KL to `logp_old` exceeds this (0 = never).
    pub kl_stop: f64,
    /// Drop a micro-batch's gradient when its k3 KL to `logp_old` exceeds this (0 = never).
    pub kl_skip: f64,
    /// Seed of the minibatch order (mixed with the epoch).
    pub seed: u64,
}

/// Averages over the updates of one `fit`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    /// Loss.
    pub loss: f64,
    /// Fraction of clipped tokens (PPO).
    pub clip_frac: f64,
    /// k3 KL(π_old ‖ π_θ) over trained tokens (PPO).
    pub kl: f64,
    /// Entropy of the policy on trained tokens.
    pub entropy: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Optimiser updates.
    pub updates: u64,
    /// Trained tokens per epoch.
    pub trained_tokens: u64,
    /// Whether the KL-stop ended the iteration early.
    pub kl_stopped: bool,
    /// Mean loss of each epoch.
    pub epoch_losses: Vec<f64>,
    /// Critic loss (0 without a critic).
    pub value_loss: f64,
    /// DPO: fraction of pairs whose implicit reward ranks the chosen row first.
    pub preference_accuracy: f64,
    /// PPO with a KL penalty: the penalty's KL estimate to the reference (before β).
    pub kl_ref: f64,
    /// Seconds in the policy's forward passes (padding included).
    pub forward_s: f64,
    /// Seconds in the policy's backward passes and optimiser steps.
    pub backward_s: f64,
    /// Seconds in the critic's forward, backward and steps.
    pub critic_s: f64,
}

/// From this vocabulary size on, the learner computes the vocabulary head at the trained positions
/// only. On SmolLM2 (49,152 tokens) that saves a fifth of the forward pass and a quarter of the
/// peak memory, with bit-identical LoRA updates (the head is frozen there; README, "Benchmarks");
/// on the built-in word-level models (under 1,000 tokens) the head is a small share of the work,
/// and computing it everywhere keeps the order of their head-gradient sums, so their runs, and the
/// results measured with them, stay bit for bit what they were.
const HEAD_AT_TRAINED_FROM_VOCAB: i64 = 8192;

/// Log-probs of the targets `[B, T−1]` (differentiable) under the distributions they were drawn
/// from ([`crate::model::drawn`]; actions chosen whole, [`crate::model::scored_choice`]), the
/// entropy of each (differentiable or not, as asked) and the final hidden states `[B, T, D]`.
/// With a large vocabulary and no action chosen whole, both are computed at the trained positions
/// only, 0 elsewhere, where every loss term masks them out.
fn forward(model: &Decoder, p: &super::examples::Padded<'_>, entropy: Entropy) -> (Tensor, Tensor, Tensor) {
    let t = p.ids.size()[1];
    let mut cache = KvCache::default();
    let hidden = model.hidden(&p.ids, &p.positions, &p.valid, (!p.choices.is_empty()).then_some(&mut cache));
    if p.choices.is_empty() && model.cfg.vocab_size >= HEAD_AT_TRAINED_FROM_VOCAB {
        let (logp, h) = trained_log_probs(model, &hidden.narrow(1, 0, t - 1), p, entropy);
        return (logp, h, hidden);
    }
    let logits = model.logits(&hidden).narrow(1, 0, t - 1);
    let (logp, h) = crate::model::drawn::log_probs(&logits, &p.targets, &p.drawn, entropy);
    let (logp, h) = rescore(model, &cache, &logits, &p.choices, logp, h, entropy);
    (logp, h.expect("entropy requested"), hidden)
}

/// [`crate::model::drawn::log_probs`] and the entropies at the positions `p.mask` trains (and any
/// drawn position), from the hidden states `[B, T−1, D]` before each target; 0 elsewhere.
fn trained_log_probs(
    model: &Decoder,
    hidden: &Tensor,
    p: &super::examples::Padded<'_>,
    entropy: Entropy,
) -> (Tensor, Tensor) {
    let lead = p.targets.size();
    let dev = hidden.device();
    let mask = Vec::<f32>::try_from(p.mask.reshape([-1]).to_device(tch::Device::Cpu).to_kind(tch::Kind::Float))
        .expect("a float mask");
    let mut at: Vec<i64> = (0..mask.len() as i64).filter(|&i| mask[i as usize] > 0.0).collect();
    at.extend(&p.drawn.index);
    at.sort_unstable();
    at.dedup();
    let drawn = crate::model::drawn::Positions {
        index: p
            .drawn
            .index
            .iter()
            .map(|i| at.binary_search(i).expect("every drawn position is kept") as i64)
            .collect(),
        allowed: p.drawn.allowed.clone(),
        shape: p.drawn.shape.clone(),
    };
    let idx = Tensor::from_slice(&at).to(dev);
    let d = hidden.size()[2];
    let logits = model.logits(&hidden.reshape([-1, d]).index_select(0, &idx));
    let targets = p.targets.reshape([-1]).index_select(0, &idx);
    let (logp, h) = crate::model::drawn::log_probs(&logits, &targets, &drawn, entropy);
    let zeros = Tensor::zeros([mask.len() as i64], (tch::Kind::Float, dev));
    let spread = |x: &Tensor| zeros.scatter(0, &idx, x).view(lead.as_slice());
    (spread(&logp), spread(&h.expect("entropy requested")))
}

/// Splits `batch` (indices, in runs of `unit` that stay together) into runs of at most `budget`
/// padded tokens (or one unit, if a unit alone is larger); an example's scored candidates count
/// as tokens of it ([`Example::cost`]).
fn micro_batches<'a>(examples: &'a [Example], batch: &[usize], budget: usize, unit: usize) -> Vec<Vec<&'a Example>> {
    let mut out: Vec<Vec<&Example>> = Vec::new();
    let mut longest = 0;
    for group in batch.chunks(unit) {
        let len = group.iter().map(|&i| examples[i].cost()).max().unwrap_or(0);
        let members = group.iter().map(|&i| &examples[i]);
        match out.last_mut() {
            Some(cur) if longest.max(len) * (cur.len() + group.len()) <= budget => {
                cur.extend(members);
                longest = longest.max(len);
            }
            _ => {
                out.push(members.collect());
                longest = len;
            }
        }
    }
    out
}

/// A permutation of `0..n` from `seed`.
pub(crate) fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = SplitMix::new(seed);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    order
}

/// Trains `model` on `examples` with `opt` (whose parameters are the model's trainable ones), and
/// the critic, if any, on the same minibatches (its head reads detached hidden states, so its
/// loss and the policy's have separate graphs and optimisers).
pub fn fit(
    model: &Decoder,
    opt: &mut AdamW,
    mut critic: Option<&mut Critic>,
    examples: &[Example],
    objective: Objective,
    s: &Schedule,
) -> Result<Stats> {
    let mut stats = Stats { trained_tokens: examples.iter().map(|e| e.trained() as u64).sum(), ..Default::default() };
    let mut n = 0.0;
    let device = model.device();
    let units = examples.len() / objective.unit();
    let per_epoch = if s.minibatch == 0 { 1 } else { units.div_ceil(s.minibatch) };
    let bar = crate::progress::Phase::new("learning (updates)", (s.epochs * per_epoch) as u64);
    'epochs: for epoch in 0..s.epochs {
        let unit = objective.unit();
        let order: Vec<usize> =
            shuffled(examples.len() / unit, s.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .into_iter()
                .flat_map(|u| (0..unit).map(move |j| u * unit + j))
                .collect();
        let size = if s.minibatch == 0 { examples.len().max(1) } else { s.minibatch * unit };
        let (mut epoch_loss, mut epoch_n) = (0.0f64, 0.0f64);
        for batch in order.chunks(size) {
            let micro = micro_batches(examples, batch, s.max_batch_tokens, unit);
            let tokens: usize = batch.iter().map(|&i| examples[i].trained()).sum();
            let reduction = match objective {
                Objective::Ppo { reduction, .. }
                | Objective::Nll { reduction }
                | Objective::ClippedIs { reduction, .. } => reduction,
                Objective::Dpo { .. } => Reduction::SeqMeanTokenMean,
            };
            opt.cfg.grad_accum = micro.len() as u64;
            if let Some(c) = critic.as_deref_mut() {
                c.opt.cfg.grad_accum = micro.len() as u64;
            }
            let (mut loss_sum, mut clip, mut kl, mut ent, mut vloss) = (0.0, 0.0, 0.0, 0.0, 0.0);
            let (mut accuracy, mut kl_ref) = (0.0, 0.0);
            let mut grad_norm = None;
            for mb in &micro {
                let weight = match reduction {
                    Reduction::TokenMean => mb.iter().map(|e| e.trained()).sum::<usize>() as f64 / tokens as f64,
                    Reduction::Sum => 1.0,
                    _ => mb.len() as f64 / batch.len() as f64,
                };
                let p = pad(mb, device);
                let bonus = match objective {
                    Objective::Ppo { entropy_coef, .. } if entropy_coef > 0.0 => Entropy::Differentiable,
                    _ => Entropy::Detached,
                };
                let clock = std::time::Instant::now();
                let (logp, entropy, hidden) = forward(model, &p, bonus);
                stats.forward_s += clock.elapsed().as_secs_f64();
                if let Some(c) = critic.as_deref_mut() {
                    let clock = std::time::Instant::now();
                    let weight = mb.iter().map(|e| e.trained()).sum::<usize>() as f64 / tokens as f64;
                    let l = c.loss(&hidden, &p);
                    vloss += weight * l.double_value(&[]);
                    c.opt.backward(&(l * (weight * micro.len() as f64)), None)?;
                    stats.critic_s += clock.elapsed().as_secs_f64();
                }
                let mut micro_kl = 0.0;
                let loss = match objective {
                    Objective::Ppo { clip: c, reduction, kl: penalty, granularity, entropy_coef } => {
                        let (new, old) = (
                            at_granularity(&logp, &p.mask, &p.turns, granularity),
                            at_granularity(&p.logp_old, &p.mask, &p.turns, granularity),
                        );
                        let out = ppo_policy_loss(&new, &old, &p.adv, &p.mask, &c, reduction);
                        clip += weight * out.clip_frac.double_value(&[]);
                        micro_kl = out.approx_kl_k3.double_value(&[]);
                        kl += weight * micro_kl;
                        let loss = match penalty {
                            Some(KlPenalty { coef, estimator }) => {
                                let to_ref = kl_loss(&logp, &p.logp_ref, &p.mask, estimator, reduction);
                                kl_ref += weight * to_ref.double_value(&[]);
                                out.loss + to_ref * coef
                            }
                            None => out.loss,
                        };
                        if entropy_coef > 0.0 {
                            loss - entropy_bonus(&entropy, &p.mask, reduction) * entropy_coef
                        } else {
                            loss
                        }
                    }
                    Objective::Nll { reduction } => nll_loss(&logp, &p.mask, reduction),
                    Objective::ClippedIs { eps, reduction, imitation } => {
                        // Trained rows: all, or the even ones of (trained, imitation) pairs.
                        let step = if imitation > 0.0 { 2 } else { 1 };
                        let trained = Tensor::arange_start_step(0, mb.len() as i64, step, (tch::Kind::Int64, device));
                        let rows = |t: &Tensor, idx: &Tensor| t.index_select(0, idx);
                        let (lp, old, mask) =
                            (rows(&logp, &trained), rows(&p.logp_old, &trained), rows(&p.mask, &trained));
                        let (c, k) = weight_stats(&lp, &old, &mask, eps);
                        clip += weight * c;
                        micro_kl = k;
                        kl += weight * k;
                        let pg = clipped_is_pg_loss(&lp, &old, &rows(&p.adv, &trained), &mask, eps, reduction);
                        if imitation > 0.0 {
                            let imitated = &trained + 1;
                            pg + nll_loss(&rows(&logp, &imitated), &rows(&p.mask, &imitated), reduction) * imitation
                        } else {
                            pg
                        }
                    }
                    Objective::Dpo { beta, label_smoothing, chosen_nll } => {
                        let policy = sequence_logp_sum(&logp, &p.mask);
                        let reference = sequence_logp_sum(&p.logp_old, &p.mask);
                        let chosen = Tensor::arange_start_step(0, mb.len() as i64, 2, (tch::Kind::Int64, device));
                        let rejected = &chosen + 1;
                        let side = |t: &Tensor, idx: &Tensor| t.index_select(0, idx);
                        let out = dpo_loss(
                            &side(&policy, &chosen),
                            &side(&policy, &rejected),
                            &side(&reference, &chosen),
                            &side(&reference, &rejected),
                            beta,
                            label_smoothing,
                        );
                        accuracy += weight * out.accuracy.double_value(&[]);
                        if chosen_nll > 0.0 {
                            let nll =
                                nll_loss(&side(&logp, &chosen), &side(&p.mask, &chosen), Reduction::SeqMeanTokenMean);
                            out.loss + nll * chosen_nll
                        } else {
                            out.loss
                        }
                    }
                };
                ent += weight * masked_mean(&entropy.detach(), &p.mask).double_value(&[]);
                loss_sum += weight * loss.double_value(&[]);
                // POAD's KL-skip: this micro-batch contributes no gradient (it still counts toward
                // the accumulation, so the minibatch's update happens on schedule).
                let skip = s.kl_skip > 0.0 && micro_kl > s.kl_skip;
                let scale = if skip { 0.0 } else { weight * micro.len() as f64 };
                let clock = std::time::Instant::now();
                if let Outcome::Stepped { grad_norm: g } = opt.backward(&(loss * scale), None)? {
                    grad_norm = Some(g);
                }
                stats.backward_s += clock.elapsed().as_secs_f64();
            }
            bar.step(format!("epoch {}/{}, loss {loss_sum:.4}", epoch + 1, s.epochs));
            n += 1.0;
            epoch_n += 1.0;
            epoch_loss += loss_sum;
            stats.loss += loss_sum;
            stats.clip_frac += clip;
            stats.kl += kl;
            stats.entropy += ent;
            stats.value_loss += vloss;
            stats.preference_accuracy += accuracy;
            stats.kl_ref += kl_ref;
            if let Some(g) = grad_norm {
                stats.grad_norm += g;
                stats.updates += 1;
            }
            if s.kl_stop > 0.0 && kl > s.kl_stop {
                stats.kl_stopped = true;
                break 'epochs;
            }
        }
        stats.epoch_losses.push(epoch_loss / epoch_n.max(1.0));
    }
    if n > 0.0 {
        stats.loss /= n;
        stats.clip_frac /= n;
        stats.kl /= n;
        stats.entropy /= n;
        stats.value_loss /= n;
        stats.preference_accuracy /= n;
        stats.kl_ref /= n;
    }
    if stats.updates > 0 {
        stats.grad_norm /= stats.updates as f64;
    }
    Ok(stats)
}

/// The fraction of trained tokens whose importance weight π/π_old lies outside [1 − ε, 1 + ε],
/// and the k3 estimate `(ρ − 1) − log ρ` of KL(π_old ‖ π) on them: what PPO reports, for
/// RetroAct's weights (so `kl_stop` and `kl_skip` apply to it too).
fn weight_stats(logp: &Tensor, logp_old: &Tensor, mask: &Tensor, eps: f64) -> (f64, f64) {
    tch::no_grad(|| {
        let log_ratio = (logp.detach() - logp_old).masked_fill(&mask.eq(0.0), 0.0);
        let ratio = log_ratio.exp();
        let clipped = ratio.lt(1.0 - eps).logical_or(&ratio.gt(1.0 + eps)).to_kind(tch::Kind::Float);
        let k3 = log_ratio.expm1() - &log_ratio;
        (masked_mean(&clipped, mask).double_value(&[]), masked_mean(&k3, mask).double_value(&[]))
    })
}

#[cfg(test)]
mod tests;
