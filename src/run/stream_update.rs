//! One update of stream training, on the device thread: a round of closed groups goes through the
//! graph after its source — the stages with their model steps (run on this thread), the update — and then its metrics line and,
//! every `checkpoint_every` updates, its checkpoint ([`super::stream`] queues the rounds).
//!
//! Invariant: update `n` depends only on its rows, the models after update `n − 1` and
//! `(seed, n)`; checkpoints are written in update order, so checkpoint `n` holds updates `1..=n`.

use std::sync::Arc;

use arrow::array::RecordBatch;

use super::metrics::{IterationMetrics, StreamCounts};
use super::row_columns::{check_token_ids, outcomes};
use super::staleness::{versions, Staleness};
use super::trainer::Trainer;
use crate::dataflow::stage_outputs;
use crate::error::{Error, Result};
use crate::pipeline::training::TrainingSpec;
use crate::pipeline::Plan;

/// What one update gets from the queue.
pub struct Round {
    /// The update's number (1-based).
    pub n: u64,
    /// The rows of the episodes that closed its groups, one batch per group.
    pub parts: Vec<RecordBatch>,
    /// Groups in the round.
    pub groups: u64,
    /// Groups closed partial.
    pub partial_groups: u64,
    /// Files ingested when it closed.
    pub files: u64,
    /// Late rows counted when it closed.
    pub late_rows: u64,
}

/// The models' side of stream training: the trainer and the pipeline's data stages.
pub struct StreamUpdates {
    /// The policy and its heads.
    pub trainer: Trainer,
    /// The training spec (`[stream]`, `[run]`).
    pub spec: TrainingSpec,
    /// The stages (data stages and model steps), applied to each round.
    pub plan: Arc<Plan>,
    /// The update of the last checkpoint written.
    pub checkpointed: u64,
}

impl StreamUpdates {
    /// Update `round.n`: the stages with their model steps, the learner; its metrics line; its
    /// checkpoint when due.
    pub fn train(&mut self, round: Round) -> Result<()> {
        let n = round.n;
        let s = &self.spec.stream;
        let version = s.initial_version + (n - 1) as i64;
        let bound = s.max_staleness.map(|max| Staleness { version, max, mode: s.stale });
        // The graph after its source, as in a run: the stages with their model steps, the update.
        let rows = crate::dataflow::sorted_by_episode(&round.parts)?;
        check_token_ids(&rows, self.trainer.vocab_size()).map_err(|e| Error::Usage(format!("update {n}: {e}")))?;
        // The outcome of the episodes as their source stored them (a reward step rewrites `reward`).
        let (success_rate, return_mean) = outcomes(&rows);
        let trainer = &mut self.trainer;
        trainer.begin_metrics(IterationMetrics { iteration: n, policy_version: version, ..Default::default() });
        let rows = stage_outputs(self.plan.clone(), n, rows, &mut |op, rows| trainer.model_step(n, op, rows))?;
        let mut m = trainer.take_metrics();
        self.trainer.store(n, &rows)?;
        let pv = versions(&rows)?;
        (m.success_rate, m.return_mean) = (success_rate, return_mean);
        m.episodes = rows.num_rows();
        m.stream = Some(StreamCounts {
            files: round.files,
            groups: round.groups,
            partial_groups: round.partial_groups,
            stale_rows: bound.as_ref().map(|b| b.count(&rows)).transpose()?.unwrap_or(0),
            late_rows: round.late_rows,
            max_staleness: pv.iter().map(|&v| version.saturating_sub(v)).max().unwrap_or(0),
        });
        self.trainer.update(n, &rows, bound.as_ref(), &mut m)?;
        self.trainer.evaluate(&mut m)?;
        self.trainer.say(&format!(
            "update {n} (version {version} -> {}): {} groups, {} rows, success {:.3} | loss {:.4} kl {:.4} clip {:.3} | \
             eval success {}",
            version + 1,
            round.groups,
            m.episodes,
            m.success_rate,
            m.loss,
            m.kl,
            m.clip_frac,
            m.eval_success_rate.map_or("-".into(), |x| format!("{x:.3}"))
        ));
        self.trainer.record(&m)?;
        if n.is_multiple_of(self.spec.stream.checkpoint_every) {
            self.checkpoint_through(n)?;
        }
        Ok(())
    }

    /// Checkpoints update `n` unless it is checkpointed already.
    pub fn checkpoint_through(&mut self, n: u64) -> Result<()> {
        if n > self.checkpointed {
            self.trainer.checkpoint(n)?;
            self.checkpointed = n;
        }
        Ok(())
    }
}
