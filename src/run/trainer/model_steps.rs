//! The model steps between a graph's source and its data stages, on a batch of whole groups: the
//! discriminator's or implicit reward model's training and one-step rewards (`discriminator_reward`,
//! `implicit_reward`), then the critic's values (`values`). `trajflow run` applies them to each
//! iteration's rollouts; `watch --train` and `reprocess --train` to each update's groups, so that
//! a step a pipeline declares runs, in the same order, whatever the source of its rows.
//!
//! Invariant: what the steps write is a function of the rows, the models' state and `seed`
//! alone, so the same rows give the same annotated batch in every mode and after a resume.

use std::time::Instant;

use arrow::array::RecordBatch;

use super::Trainer;
use crate::error::Result;
use crate::run::implicit_reward;
use crate::run::metrics::IterationMetrics;

impl Trainer {
    /// `rows` after the pipeline's model steps; their statistics and times go into `m`.
    pub(crate) fn model_steps(
        &mut self,
        mut rows: RecordBatch,
        seed: u64,
        m: &mut IterationMetrics,
    ) -> Result<RecordBatch> {
        let t = Instant::now();
        let max_tokens = self.spec.model.max_batch_tokens;
        if let Some(d) = self.discriminator.as_mut() {
            let (rewarded, stats) = d.train_and_reward(&self.model, &rows, max_tokens, seed)?;
            (rows, m.discriminator_loss, m.discriminator_accuracy) = (rewarded, Some(stats.loss), Some(stats.accuracy));
        }
        if let Some(cfg) = &self.spec.implicit_reward {
            let (rewarded, stats) = implicit_reward::train_and_reward(&self.model, cfg, &rows, max_tokens, seed)?;
            rows = rewarded;
            (m.pairs, m.preference_accuracy, m.implicit_reward_loss) =
                (Some(stats.pairs), Some(stats.accuracy), Some(stats.loss));
        }
        if self.discriminator.is_some() || self.spec.implicit_reward.is_some() {
            m.time_s.insert("rollout/rewards".into(), t.elapsed().as_secs_f64());
        }
        self.load_critic_backbone()?;
        if let Some(c) = &self.critic {
            let t = Instant::now();
            rows = c.annotate(&self.model, &rows, max_tokens)?;
            m.time_s.insert("rollout/values".into(), t.elapsed().as_secs_f64());
        }
        Ok(rows)
    }
}
