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
}

/// Log-probs of the targets `[B, T−1]` (differentiable) under the distributions they were drawn
/// from ([`crate::model::drawn`]; actions chosen whole, [`crate::model::scored_choice`]), the entropy of each (differentiable or not, as asked) and the
/// final hidden states
/// `[B, T, D]`.
fn forward(model: &Decoder, p: &super::examples::Padded<'_>, entropy: Entropy) -> (Tensor, Tensor, Tensor) {
    let t = p.ids.size()[1];
    let mut cache = KvCache::default();
    let hidden = model.hidden(&p.ids, &p.positions, &p.valid, (!p.choices.is_empty()).then_some(&mut cache));
    let logits = model.logits(&hidden).narrow(1, 0, t - 1);
    let (logp, h) = crate::model::drawn::log_probs(&logits, &p.targets, &p.drawn, entropy);
    let (logp, h) = rescore(model, &cache, &logits, &p.choices, logp, h, entropy);
    (logp, h.expect("entropy requested"), hidden)
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
                let (logp, entropy, hidden) = forward(model, &p, bonus);
                if let Some(c) = critic.as_deref_mut() {
                    let weight = mb.iter().map(|e| e.trained()).sum::<usize>() as f64 / tokens as f64;
                    let l = c.loss(&hidden, &p);
                    vloss += weight * l.double_value(&[]);
                    c.opt.backward(&(l * (weight * micro.len() as f64)), None)?;
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
                if let Outcome::Stepped { grad_norm: g } = opt.backward(&(loss * scale), None)? {
                    grad_norm = Some(g);
                }
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
    use crate::model::config::DecoderConfig;
    use crate::run::examples::from_rows;
    use crate::train::optim::OptimConfig;
    use crate::train::spans::SpanLogp;

    fn example(seed: u64, n: usize) -> Example {
        let mut rng = SplitMix::new(seed);
        let tokens: Vec<i64> = (0..n).map(|_| (rng.next_u64() % 30) as i64).collect();
        let mask = (0..n).map(|j| f32::from(u8::from(j >= n / 2))).collect();
        let adv = (0..n).map(|j| if j >= n / 2 { rng.unit() - 0.5 } else { 0.0 }).collect();
        let unknown = vec![f32::NAN; n];
        Example {
            tokens,
            mask,
            adv,
            logp_old: unknown.clone(),
            logp_ref: unknown,
            values: vec![0.0; n],
            returns: vec![0.0; n],
            turns: (0..n as i64).map(|j| j / 3).collect(),
            drawn: None,
        }
    }

    /// Splitting a minibatch into micro-batches reproduces the one-pass update, for token means,
    /// sequence means and DPO pairs.
    #[test]
    fn micro_batches_match_one_pass() {
        let run = |budget: usize, objective: Objective| {
            let m = Decoder::new(DecoderConfig::small(30), tch::Device::Cpu);
            // Deterministic weights (libtorch's global generator is shared by concurrent tests).
            let mut rng = SplitMix::new(3);
            tch::no_grad(|| {
                let mut vars: Vec<_> = m.vs.variables().into_iter().collect();
                vars.sort_by(|a, b| a.0.cmp(&b.0));
                for (name, mut v) in vars {
                    let n = v.numel();
                    let base = if name.ends_with("norm.weight") { 1.0 } else { 0.0 };
                    let vals: Vec<f32> = (0..n).map(|_| base + (rng.unit() - 0.5) * 0.1).collect();
                    v.copy_(&Tensor::from_slice(&vals).view(v.size().as_slice()));
                }
            });
            let mut ex: Vec<Example> = (0..6).map(|i| example(i, 8 + i as usize * 3)).collect();
            recompute_logp_old(&m, &mut ex, 4096).unwrap();
            for e in &mut ex {
                e.logp_ref = e.logp_old.iter().enumerate().map(|(j, x)| x - 0.05 * (j % 3) as f32).collect();
            }
            let mut opt =
                AdamW::new(m.vs.variables().into_iter().collect(), OptimConfig { lr: 1e-2, ..Default::default() });
            let s = Schedule { epochs: 1, minibatch: 0, max_batch_tokens: budget, kl_stop: 0.0, kl_skip: 0.0, seed: 1 };
            let st = fit(&m, &mut opt, None, &ex, objective, &s).unwrap();
            assert_eq!(st.updates, 1);
            let w: Vec<f32> = Vec::try_from(m.vs.variables()["model.norm.weight"].view([-1])).unwrap();
            (st.loss, w)
        };
        let ppo = |reduction| Objective::Ppo {
            clip: PpoClip::loop_(0.1),
            reduction,
            kl: None,
            granularity: Granularity::Token,
            entropy_coef: 0.0,
        };
        let dpo = Objective::Dpo { beta: 0.5, label_smoothing: 0.0, chosen_nll: 0.0 };
        let rpo = Objective::Dpo { beta: 0.5, label_smoothing: 0.1, chosen_nll: 0.7 };
        let retroact = Objective::ClippedIs { eps: 0.3, reduction: Reduction::SeqMeanTokenMean, imitation: 1.5 };
        let pg = Objective::ClippedIs { eps: 0.3, reduction: Reduction::TokenMean, imitation: 0.0 };
        let kl = Some(KlPenalty { coef: 0.5, estimator: KlEstimator::K3 });
        let ppo_kl = Objective::Ppo {
            clip: PpoClip::symmetric(0.2),
            reduction: Reduction::TokenMean,
            kl,
            granularity: Granularity::Token,
            entropy_coef: 0.0,
        };
        // Turn- and trajectory-level ratios (the examples have a turn every 3 tokens).
        let spans = |granularity| Objective::Ppo {
            clip: PpoClip::symmetric(0.2),
            reduction: Reduction::SeqMeanTokenMean,
            kl: None,
            granularity,
            entropy_coef: 0.0,
        };
        let (turn, whole) = (spans(Granularity::Turn(SpanLogp::Mean)), spans(Granularity::Trajectory(SpanLogp::Sum)));
        for objective in
            [ppo(Reduction::TokenMean), ppo(Reduction::SeqMeanTokenMean), dpo, rpo, retroact, pg, ppo_kl, turn, whole]
        {
            let (l1, w1) = run(100_000, objective);
            // 30 tokens fit one example (or none of the longer pairs): every pair is its own micro-batch.
            let (l2, w2) = run(30, objective);
            assert!((l1 - l2).abs() < 1e-6, "{objective:?}: {l1} vs {l2}");
            let d = w1.iter().zip(&w2).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(d < 1e-5, "{objective:?}: weights differ by {d}");
            assert!(w1.iter().any(|&x| (x - 1.0).abs() > 1e-4), "the update moved the weights");
        }
        // Before its first update the policy is its own reference: every pair's loss is −log σ(0).
        let (l, _) = run(100_000, dpo);
        assert!((l - std::f64::consts::LN_2).abs() < 1e-6, "DPO loss at the reference: {l}");
    }

    /// DPO moves probability from the rejected side to the chosen side of each pair.
    #[test]
    fn dpo_prefers_the_chosen_side() {
        let m = Decoder::new(DecoderConfig::small(30), tch::Device::Cpu);
        let mut ex: Vec<Example> = (0..8).map(|i| example(10 + i, 12)).collect();
        recompute_logp_old(&m, &mut ex, 4096).unwrap();
        let reference = ex.clone();
        let mut opt =
            AdamW::new(m.vs.variables().into_iter().collect(), OptimConfig { lr: 3e-3, ..Default::default() });
        let s = Schedule { epochs: 5, minibatch: 2, max_batch_tokens: 4096, kl_stop: 0.0, kl_skip: 0.0, seed: 4 };
        let st = fit(&m, &mut opt, None, &ex, Objective::Dpo { beta: 0.5, label_smoothing: 0.0, chosen_nll: 0.0 }, &s)
            .unwrap();
        assert_eq!(st.updates, 10, "4 pairs in minibatches of 2 pairs, 5 epochs");
        recompute_logp_old(&m, &mut ex, 4096).unwrap();
        let ratio = |now: &Example, then: &Example| -> f32 {
            (1..now.tokens.len()).filter(|&j| now.mask[j] > 0.0).map(|j| now.logp_old[j] - then.logp_old[j]).sum()
        };
        for pair in 0..4 {
            let (c, r) = (2 * pair, 2 * pair + 1);
            let margin = ratio(&ex[c], &reference[c]) - ratio(&ex[r], &reference[r]);
            assert!(margin > 0.1, "pair {pair}: log-ratio margin {margin}");
        }
        assert!(st.preference_accuracy > 0.5, "{st:?}");
    }

    /// RetroAct's loss before the first update, where the weights are their own behaviour policy
    /// (w = 1): per pair, the trained row's mean of −R·log π over its action tokens plus λ times
    /// the imitation row's mean NLL; averaged over pairs. Computed here from the scored log-probs.
    #[test]
    fn clipped_is_with_imitation_golden() {
        let m = Decoder::new(DecoderConfig::small(30), tch::Device::Cpu);
        let mut ex: Vec<Example> = (0..6).map(|i| example(20 + i, 9 + i as usize)).collect();
        recompute_logp_old(&m, &mut ex, 4096).unwrap();
        let row_mean = |e: &Example, f: &dyn Fn(usize) -> f64| -> f64 {
            let idx: Vec<usize> = (1..e.tokens.len()).filter(|&j| e.mask[j] > 0.0).collect();
            idx.iter().map(|&j| f(j)).sum::<f64>() / idx.len() as f64
        };
        let lambda = 0.7;
        let expected: f64 = (0..3)
            .map(|k| {
                let (t, i) = (&ex[2 * k], &ex[2 * k + 1]);
                let pg = row_mean(t, &|j| -(t.adv[j] as f64) * t.logp_old[j] as f64);
                let nll = row_mean(i, &|j| -(i.logp_old[j] as f64));
                pg + lambda * nll
            })
            .sum::<f64>()
            / 3.0;
        let mut opt = AdamW::new(m.vs.variables().into_iter().collect(), OptimConfig { lr: 0.0, ..Default::default() });
        let s = Schedule { epochs: 1, minibatch: 0, max_batch_tokens: 4096, kl_stop: 0.0, kl_skip: 0.0, seed: 2 };
        let objective = Objective::ClippedIs { eps: 0.3, reduction: Reduction::SeqMeanTokenMean, imitation: lambda };
        let st = fit(&m, &mut opt, None, &ex, objective, &s).unwrap();
        assert!((st.loss - expected).abs() < 1e-5, "{} vs {expected}", st.loss);
    }

    /// With zero advantages, PPO with a KL penalty only pulls the policy toward the reference.
    #[test]
    fn kl_penalty_pulls_toward_the_reference() {
        let m = Decoder::new(DecoderConfig::small(30), tch::Device::Cpu);
        let reference = Decoder::new(DecoderConfig::small(30), tch::Device::Cpu);
        let mut ex: Vec<Example> = (0..6).map(|i| example(30 + i, 12)).collect();
        for e in &mut ex {
            e.adv.iter_mut().for_each(|a| *a = 0.0);
        }
        score_reference(&reference, &mut ex, 4096).unwrap();
        let kl_now = |ex: &mut Vec<Example>| -> f64 {
            recompute_logp_old(&m, ex, 4096).unwrap();
            let (mut sum, mut n) = (0.0, 0.0);
            for e in ex.iter() {
                for j in (1..e.tokens.len()).filter(|&j| e.mask[j] > 0.0) {
                    let d = (e.logp_ref[j] - e.logp_old[j]) as f64;
                    sum += d.exp() - d - 1.0;
                    n += 1.0;
                }
            }
            sum / n
        };
        let before = kl_now(&mut ex);
        let mut opt =
            AdamW::new(m.vs.variables().into_iter().collect(), OptimConfig { lr: 3e-3, ..Default::default() });
        let s = Schedule { epochs: 10, minibatch: 0, max_batch_tokens: 4096, kl_stop: 0.0, kl_skip: 0.0, seed: 5 };
        let kl = Some(KlPenalty { coef: 1.0, estimator: KlEstimator::K3 });
        let objective = Objective::Ppo {
            clip: PpoClip::symmetric(0.2),
            reduction: Reduction::TokenMean,
            kl,
            granularity: Granularity::Token,
            entropy_coef: 0.0,
        };
        let st = fit(&m, &mut opt, None, &ex, objective, &s).unwrap();
        let after = kl_now(&mut ex);
        assert!(before > 0.01 && after < 0.5 * before, "KL to the reference {before} -> {after}");
        assert!(st.kl_ref > 0.0, "{st:?}");
    }

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

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let a = shuffled(50, 7);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
        assert_eq!(a, shuffled(50, 7));
        assert_ne!(a, shuffled(50, 8));
    }
}
