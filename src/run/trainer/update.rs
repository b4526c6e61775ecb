//! One update of the policy (and critic) from an iteration's stage outputs: examples from the
//! rows, the behaviour-vs-learner log-prob check (and `logp_old` recompute), the staleness split of
//! stream training, the KL reference, RetroAct's imitation rows, then the learner's epochs.
//!
//! Invariants: the learner's log-probs are those of the distribution each token was drawn from, so
//! the mismatch logged before the first step is float rounding (≤ 1e-4 on CPU) unless the rows
//! came from another policy; the update depends only on the rows, the checkpoint and
//! `(seed, iteration)`.

use std::time::Instant;

use arrow::array::RecordBatch;

use super::{checkpoint_dir, fill_learner, Trainer};
use crate::error::{Error, Result};
use crate::model::llama::Decoder;
use crate::pipeline::training::{
    ClipBound, CriticBackbone, KlEstimatorName, LogpOld, LossKind, RatioGranularity, TrainedRows,
};
use crate::run::behaviour::{check_behaviour, recompute_logp_old, score_reference};
use crate::run::examples::{from_rows, Columns, Example};
use crate::run::learner::{fit, KlPenalty, Objective, Schedule};
use crate::run::metrics::IterationMetrics;
use crate::run::preferences::preference_pairs;
use crate::run::staleness::{truncate_advantages, Staleness};
use crate::store::Dataset;
use crate::train::losses::{KlEstimator, PpoClip};
use crate::train::spans::Granularity;

/// A stored behaviour log-prob farther than this from the learner's before the first update is
/// warned about (float32 rounding of the same computation stays below 1e-4).
const MISMATCH_WARNING: f64 = 1e-3;

impl Trainer {
    /// `examples` each paired with an imitation example drawn with replacement (RetroAct
    /// oversamples its IL set to the RL set's length), seeded by `seed`: `(trained, imitation)` at
    /// `(2i, 2i + 1)`.
    fn with_imitation(&mut self, examples: Vec<Example>, seed: u64) -> Result<Vec<Example>> {
        if self.imitation.is_none() {
            let (batches, _) = Dataset::open(self.dir.join("imitation"))?.read_latest(None, false)?;
            let mut il = Vec::new();
            for b in &batches {
                il.extend(from_rows(b, Columns::default())?);
            }
            if il.is_empty() {
                return Err(Error::Usage("learner.imitation: the run's imitation set is empty".into()));
            }
            self.imitation = Some(il);
        }
        let il = self.imitation.as_deref().expect("loaded above");
        let mut rng = crate::synth::SplitMix::new(seed);
        Ok(examples.into_iter().flat_map(|e| [e, il[(rng.next_u64() % il.len() as u64) as usize].clone()]).collect())
    }

    /// One update of the policy (and critic) from stage outputs `rows`: builds the examples the
    /// loss needs, recomputes old and reference log-probs as configured, and runs the learner's
    /// epochs and minibatches; fills `m`'s learner fields. `stale` (stream training only) drops or
    /// down-weights rows beyond the staleness bound.
    pub(crate) fn update(
        &mut self,
        iteration: u64,
        rows: &RecordBatch,
        stale: Option<&Staleness>,
        m: &mut IterationMetrics,
    ) -> Result<()> {
        let t = Instant::now();
        let l = &self.spec.learner.clone();
        let (rows, stale_rows) = match stale {
            Some(s) => s.split(rows)?,
            None => (rows.clone(), None),
        };
        let cols = Columns {
            advantages: matches!(l.loss, LossKind::Ppo | LossKind::ClippedIs).then_some(l.advantages.as_str()),
            returns: self.spec.critic.as_ref().map(|c| c.returns.as_str()),
            keep: l.keep.as_deref(),
            policy_only: l.rows == TrainedRows::Policy,
        };
        let mut examples: Vec<Example> = if l.loss == LossKind::Dpo {
            let (pairs, count) = preference_pairs(&rows)?;
            m.pairs = Some(count.pairs);
            pairs
        } else {
            from_rows(&rows, cols)?
        };
        // DPO's reference is the policy at the start of the iteration, whatever `logp_old` says.
        let recompute = (l.loss != LossKind::Nll && l.logp_old == LogpOld::Recompute) || l.loss == LossKind::Dpo;
        let phase = Instant::now();
        if l.loss != LossKind::Nll {
            let mismatch = check_behaviour(&self.model, &mut examples, self.spec.model.max_batch_tokens, recompute)?;
            if mismatch.tokens > 0 {
                m.logp_mismatch_max = Some(mismatch.max);
                m.logp_mismatch_mean = Some(mismatch.mean);
                if stale.is_none() && mismatch.max > MISMATCH_WARNING {
                    eprintln!(
                        "warning: iteration {iteration}: stored behaviour log-probs differ from the learner's by up to \
                         {:.3e} (mean {:.3e}) before the first update: the learner does not train the distribution \
                         the sampler drew from",
                        mismatch.max, mismatch.mean
                    );
                }
            }
        }
        m.time_s.insert("learn/recompute".into(), phase.elapsed().as_secs_f64());
        if let Some(stale_rows) = stale_rows {
            // Beyond the staleness bound with `stale = "truncate"`: each action token's advantage
            // is scaled by min(1, π/μ), π the current policy, μ the behaviour policy.
            let mut old = from_rows(&stale_rows, cols)?;
            let mut now = old.clone();
            recompute_logp_old(&self.model, &mut now, self.spec.model.max_batch_tokens)?;
            for (e, n) in old.iter_mut().zip(now) {
                truncate_advantages(e, &n.logp_old);
                e.drawn = n.drawn;
                if l.logp_old == LogpOld::Recompute {
                    e.logp_old = n.logp_old;
                }
            }
            examples.extend(old);
        }
        if l.kl_coef > 0.0 {
            if self.reference.is_none() {
                self.reference = Some(self.frozen_policy()?);
            }
            let reference = self.reference.as_ref().expect("loaded above");
            let phase = Instant::now();
            score_reference(reference, &mut examples, self.spec.model.max_batch_tokens)?;
            m.time_s.insert("learn/reference".into(), phase.elapsed().as_secs_f64());
        }
        if l.loss == LossKind::ClippedIs && l.imitation > 0.0 {
            let seed = self.spec.run.seed.wrapping_mul(0x5851_F42D_4C95_7F2D) ^ iteration;
            examples = self.with_imitation(examples, seed)?;
        }
        let schedule = Schedule {
            epochs: l.epochs,
            minibatch: l.minibatch,
            max_batch_tokens: self.spec.model.max_batch_tokens,
            kl_stop: l.kl_stop,
            kl_skip: l.kl_skip,
            seed: self.spec.run.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ iteration,
        };
        let objective = self.objective();
        self.load_critic_backbone()?;
        let phase = Instant::now();
        let stats = fit(&self.model, &mut self.opt, self.critic.as_mut(), &examples, objective, &schedule)?;
        m.time_s.insert("learn/fit".into(), phase.elapsed().as_secs_f64());
        m.time_s.insert("learn/forward".into(), stats.forward_s);
        m.time_s.insert("learn/backward".into(), stats.backward_s);
        if self.critic.is_some() {
            m.time_s.insert("learn/critic".into(), stats.critic_s);
        }
        fill_learner(m, &stats);
        if l.loss == LossKind::Dpo {
            m.preference_accuracy = Some(stats.preference_accuracy);
        }
        if l.kl_coef > 0.0 {
            m.kl_ref = Some(stats.kl_ref);
        }
        m.time_s.insert("learn".into(), t.elapsed().as_secs_f64());
        Ok(())
    }

    /// Gives a critic with `backbone = "frozen"` its backbone, once (checkpoint 0 exists from the
    /// first rollout or update on).
    pub(super) fn load_critic_backbone(&mut self) -> Result<()> {
        let frozen = self.spec.critic.as_ref().is_some_and(|s| s.backbone == CriticBackbone::Frozen);
        if frozen && self.critic.as_ref().is_some_and(|c| c.backbone.is_none()) {
            let backbone = self.frozen_policy()?;
            self.critic.as_mut().expect("checked above").backbone = Some(backbone);
        }
        Ok(())
    }

    /// The policy before RL (checkpoint 0), loaded anew: the KL penalty's reference and a frozen
    /// critic's backbone.
    fn frozen_policy(&self) -> Result<Decoder> {
        let ckpt = checkpoint_dir(&self.dir, 0);
        let mut model = crate::model::load_decoder(&ckpt.to_string_lossy(), self.model.device())?;
        model.set_precision(self.spec.model.precision);
        Ok(model)
    }

    fn objective(&self) -> Objective {
        let l = &self.spec.learner;
        let reduction = self.spec.reduction();
        match l.loss {
            LossKind::Nll => Objective::Nll { reduction },
            LossKind::Dpo => {
                Objective::Dpo { beta: l.beta, label_smoothing: l.label_smoothing, chosen_nll: l.chosen_nll }
            }
            LossKind::ClippedIs => Objective::ClippedIs { eps: l.clip, reduction, imitation: l.imitation },
            LossKind::Ppo => Objective::Ppo {
                clip: match l.clip_bound {
                    ClipBound::Symmetric => PpoClip::symmetric(l.clip),
                    ClipBound::Loop => PpoClip::loop_(l.clip),
                    ClipBound::None => PpoClip::unclipped(),
                },
                reduction,
                granularity: match l.granularity {
                    RatioGranularity::Token => Granularity::Token,
                    RatioGranularity::Turn => Granularity::Turn(l.span_logp),
                    RatioGranularity::Trajectory => Granularity::Trajectory(l.span_logp),
                },
                entropy_coef: l.entropy_coef,
                kl: (l.kl_coef > 0.0).then_some(KlPenalty {
                    coef: l.kl_coef,
                    estimator: match l.kl_estimator {
                        KlEstimatorName::K1 => KlEstimator::K1,
                        KlEstimatorName::K2 => KlEstimator::K2,
                        KlEstimatorName::K3 => KlEstimator::K3,
                    },
                }),
            },
        }
    }
}
