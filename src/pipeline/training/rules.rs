//! The cross-key and cross-section rules of a training pipeline, checked once after parsing and
//! before anything runs: ranges, combinations a loss needs, sources that need a section.
//!
//! Invariant: every error names the file, the section and the key.

use std::path::Path;

use super::sections::{ClipBound, LossKind, RatioGranularity, RolloutSource, StaleRows};
use super::{spec_err, TrainingSpec};
use crate::error::Result;
use crate::pipeline::reduction::Reduction;

impl TrainingSpec {
    pub(super) fn check(&self, file: &Path) -> Result<()> {
        let bad = |section: &str, key: &str, message: String| Err(spec_err(file, section, Some(key), message));
        if self.model.name.is_empty() {
            return bad("model", "name", "must name a model".into());
        }
        if let Some(lo) = &self.model.lora {
            let known = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
            if let Some(t) = lo.targets.iter().find(|t| !known.contains(&t.as_str())) {
                return bad("model", "lora", format!("target '{t}' is not a projection (known: {})", known.join(", ")));
            }
            if lo.r < 1 || lo.targets.is_empty() || !(lo.alpha.is_finite() && lo.alpha > 0.0) {
                return bad("model", "lora", "r must be ≥ 1, alpha > 0 and targets non-empty".into());
            }
            if lo.dropout != 0.0 {
                return bad(
                    "model",
                    "lora",
                    "dropout must be 0 in runs (unseeded dropout would break bit-exact resume)".into(),
                );
            }
        }
        if self.rollout.action_scoring.is_some() && !self.rollout.admissible {
            return bad("rollout", "action_scoring", "scores admissible actions: set rollout.admissible = true".into());
        }
        if let Err(e) = crate::env::by_name(&self.rollout.env) {
            return bad("rollout", "env", e.to_string());
        }
        let r = &self.rollout;
        for (key, v) in
            [("tasks", r.tasks), ("k", r.k), ("max_turns", r.max_turns), ("max_action_tokens", r.max_action_tokens)]
        {
            if v == 0 {
                return bad("rollout", key, "must be at least 1".into());
            }
        }
        if !(r.temperature.is_finite() && r.temperature > 0.0) {
            return bad("rollout", "temperature", format!("must be > 0, got {}", r.temperature));
        }
        if !(r.top_p > 0.0 && r.top_p <= 1.0) || r.top_k < 0 {
            return bad(
                "rollout",
                "top_p",
                format!("top_p must be in (0, 1] and top_k ≥ 0, got {} and {}", r.top_p, r.top_k),
            );
        }
        if self.run.eval_every == 0 {
            return bad("run", "eval_every", "must be at least 1".into());
        }
        let l = &self.learner;
        if let Err(e) = l.reduction.parse::<Reduction>() {
            return bad("learner", "reduction", e);
        }
        if !(l.clip.is_finite() && l.clip > 0.0 && (l.clip < 1.0 || l.clip_bound != ClipBound::Symmetric)) {
            return bad("learner", "clip", format!("must be in (0, 1), got {}", l.clip));
        }
        if l.epochs == 0 {
            return bad("learner", "epochs", "must be at least 1".into());
        }
        if !(l.beta.is_finite() && l.beta > 0.0) {
            return bad("learner", "beta", format!("must be positive, got {}", l.beta));
        }
        if !(l.chosen_nll.is_finite() && l.chosen_nll >= 0.0) {
            return bad("learner", "chosen_nll", format!("must be a finite number ≥ 0, got {}", l.chosen_nll));
        }
        if !(0.0..0.5).contains(&l.label_smoothing) {
            return bad("learner", "label_smoothing", format!("must be in [0, 0.5), got {}", l.label_smoothing));
        }
        for (key, v) in [
            ("lr", l.lr),
            ("max_grad_norm", l.max_grad_norm),
            ("kl_stop", l.kl_stop),
            ("kl_skip", l.kl_skip),
            ("weight_decay", l.weight_decay),
            ("entropy_coef", l.entropy_coef),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad("learner", key, format!("must be a finite number ≥ 0, got {v}"));
            }
        }
        if let Some(w) = &self.warm_start {
            if w.demos > 0 && (w.epochs == 0 || w.minibatch == 0 || !(w.lr.is_finite() && w.lr > 0.0)) {
                return bad("warm_start", "epochs", "epochs, minibatch and lr must be positive".into());
            }
            if w.dagger_rounds > 0 && (w.dagger_tasks == 0 || w.dagger_epochs == 0) {
                return bad("warm_start", "dagger_tasks", "dagger_tasks and dagger_epochs must be positive".into());
            }
            if !(0.0..1.0).contains(&w.dagger_keep) {
                return bad("warm_start", "dagger_keep", format!("must be in [0, 1), got {}", w.dagger_keep));
            }
        }
        if let Some(c) = &self.critic {
            if !(c.lr.is_finite() && c.lr > 0.0) || c.hidden.iter().any(|&w| w < 1) {
                return bad("critic", "lr", "lr must be positive and hidden widths at least 1".into());
            }
            if !(c.value_clip.is_finite() && c.value_clip >= 0.0) {
                return bad("critic", "value_clip", format!("must be ≥ 0, got {}", c.value_clip));
            }
        }
        if let Some(d) = &self.discriminator {
            if !(d.lr.is_finite() && d.lr > 0.0) || d.hidden.iter().any(|&w| w < 1) || d.epochs == 0 || d.minibatch == 0
            {
                return bad(
                    "discriminator",
                    "lr",
                    "lr, epochs and minibatch must be positive, hidden widths at least 1".into(),
                );
            }
            if self.rollout.source != RolloutSource::ExpertPrefixes {
                return bad(
                    "discriminator",
                    "hidden",
                    "needs [rollout] source = \"expert_prefixes\" (one-step rows)".into(),
                );
            }
        }
        if l.granularity != RatioGranularity::Token && l.loss != LossKind::Ppo {
            return bad(
                "learner",
                "granularity",
                "turn and trajectory ratios are PPO's (learner.loss = \"ppo\")".into(),
            );
        }
        if let Some(ir) = &self.implicit_reward {
            if !(ir.beta.is_finite() && ir.beta > 0.0) {
                return bad("implicit_reward", "beta", format!("must be positive, got {}", ir.beta));
            }
            if !(ir.lr.is_finite() && ir.lr > 0.0) || ir.epochs == 0 || ir.minibatch == 0 {
                return bad("implicit_reward", "lr", "lr, epochs and minibatch must be positive".into());
            }
            if !(ir.chosen_nll.is_finite() && ir.chosen_nll >= 0.0) {
                return bad("implicit_reward", "chosen_nll", format!("must be ≥ 0, got {}", ir.chosen_nll));
            }
            if self.rollout.source != RolloutSource::ExpertPrefixes {
                return bad(
                    "implicit_reward",
                    "beta",
                    "needs [rollout] source = \"expert_prefixes\" (expert and agent actions at the same prefix)".into(),
                );
            }
            if self.discriminator.is_some() || l.loss == LossKind::Dpo {
                return bad(
                    "implicit_reward",
                    "beta",
                    "rewrites the rows' rewards for a policy-gradient learner: not with [discriminator] or \
                     learner.loss = \"dpo\" (which trains on the pairs directly)"
                        .into(),
                );
            }
        }
        for (key, v) in [("trials", r.trials), ("memory", r.memory), ("reflection_tokens", r.reflection_tokens)] {
            if v == 0 {
                return bad("rollout", key, "must be at least 1".into());
            }
        }
        if r.source == RolloutSource::Reflexion {
            if r.k != 1 {
                return bad(
                    "rollout",
                    "k",
                    format!("Reflexion plays one chain of trials per task: k must be 1, got {}", r.k),
                );
            }
            if l.loss == LossKind::Dpo {
                return bad(
                    "learner",
                    "loss",
                    "DPO pairs rows of a group; Reflexion groups mix planner and reflector rows".into(),
                );
            }
        }
        let warm_rows = self.warm_start.as_ref().is_some_and(|w| w.demos > 0);
        if !(l.imitation.is_finite() && l.imitation >= 0.0) {
            return bad("learner", "imitation", format!("must be a finite number ≥ 0, got {}", l.imitation));
        }
        if l.imitation > 0.0 && matches!(self.reduction(), Reduction::TokenMean | Reduction::AllPositionsMean) {
            return bad(
                "learner",
                "reduction",
                "with the imitation regulariser the reduction must be per row (seq_mean_token_mean, seq_mean_token_sum) \
                 or sum, so that its two terms split into micro-batches exactly"
                    .into(),
            );
        }
        if l.imitation > 0.0 && (l.loss != LossKind::ClippedIs || !warm_rows) {
            return bad(
                "learner",
                "imitation",
                "the imitation regulariser needs loss = \"clipped_is\" and a [warm_start] with demos > 0".into(),
            );
        }
        if !(l.kl_coef.is_finite() && l.kl_coef >= 0.0) {
            return bad("learner", "kl_coef", format!("must be a finite number ≥ 0, got {}", l.kl_coef));
        }
        if l.kl_coef > 0.0 && l.loss != LossKind::Ppo {
            return bad("learner", "kl_coef", "the KL-to-reference penalty is a term of loss = \"ppo\"".into());
        }
        let st = &self.stream;
        for (key, v) in [("group_size", st.group_size), ("groups_per_update", st.groups_per_update)] {
            if v == Some(0) {
                return bad("stream", key, "must be at least 1".into());
            }
        }
        if st.checkpoint_every == 0 {
            return bad("stream", "checkpoint_every", "must be at least 1".into());
        }
        if st.stale == StaleRows::Truncate && !matches!(l.loss, LossKind::Ppo | LossKind::ClippedIs) {
            return bad(
                "stream",
                "stale",
                "\"truncate\" weights per-token advantages: it needs loss = \"ppo\" or \"clipped_is\"".into(),
            );
        }
        if let Some(w) = self.warm_start.as_ref().filter(|w| w.reflection_tasks > 0) {
            if r.source != RolloutSource::Reflexion || w.reflection_epochs == 0 || w.demos == 0 {
                return bad(
                    "warm_start",
                    "reflection_tasks",
                    "needs [rollout] source = \"reflexion\", demos > 0 and reflection_epochs ≥ 1".into(),
                );
            }
        }
        Ok(())
    }
}
