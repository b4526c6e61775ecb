//! The graph's model steps, applied where the dataflow reaches them to a batch of whole groups
//! (an iteration's rollouts in `trajflow run`, an update's groups under `--train`): the
//! discriminator's or the implicit reward model's training and one-step rewards
//! (`discriminator_reward`, `implicit_reward`) and the critic's values (`values`).
//!
//! Invariants: what a step writes is a function of the rows, the models' state and
//! `(seed, iteration)` alone, so the same rows give the same annotated batch in every mode and
//! after a resume. A step sees the rows in their source's order: the order the run's rollout made
//! them in (tasks, then samples), or `episode_id` order for stored rows under `--train` (the
//! dataflow hands them over in `episode_id` order, whatever the number of workers). A reward model
//! trains on them in that order.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use arrow::array::{RecordBatch, UInt32Array};

use super::Trainer;
use crate::dataflow::episode_ids;
use crate::error::{Error, Result};
use crate::run::implicit_reward;

impl Trainer {
    /// `rows` after the model step `op` of iteration (or update) `iteration`; its statistics and
    /// time go into the iteration's metrics (`stages/rewards`, `stages/values`).
    pub(crate) fn model_step(&mut self, iteration: u64, op: &str, rows: RecordBatch) -> Result<RecordBatch> {
        let t = Instant::now();
        let rows = match &self.source_order {
            Some(order) => in_order(&rows, order)?,
            None => rows,
        };
        let seed = self.spec.run.seed ^ iteration;
        let max_tokens = self.spec.model.max_batch_tokens;
        let missing = || Error::Usage(format!("the model step `{op}` has no model (the pipeline declares none)"));
        let (rows, part) = match op {
            "discriminator_reward" => {
                let d = self.discriminator.as_mut().ok_or_else(missing)?;
                let (rows, stats) = d.train_and_reward(&self.model, &rows, max_tokens, seed)?;
                let m = &mut self.current;
                (m.discriminator_loss, m.discriminator_accuracy) = (Some(stats.loss), Some(stats.accuracy));
                (rows, "stages/rewards")
            }
            "implicit_reward" => {
                let cfg = self.spec.implicit_reward.as_ref().ok_or_else(missing)?;
                let (rows, stats) = implicit_reward::train_and_reward(&self.model, cfg, &rows, max_tokens, seed)?;
                let m = &mut self.current;
                (m.pairs, m.preference_accuracy, m.implicit_reward_loss) =
                    (Some(stats.pairs), Some(stats.accuracy), Some(stats.loss));
                (rows, "stages/rewards")
            }
            "values" => {
                self.load_critic_backbone()?;
                let c = self.critic.as_ref().ok_or_else(missing)?;
                (c.annotate(&self.model, &rows, max_tokens)?, "stages/values")
            }
            other => return Err(Error::Usage(format!("`{other}` is not a model step"))),
        };
        self.current.time_s.insert(part.into(), t.elapsed().as_secs_f64());
        Ok(rows)
    }
}

/// `rows` in the order of `order` (episode ids); rows not in it follow, in their own order.
fn in_order(rows: &RecordBatch, order: &[String]) -> Result<RecordBatch> {
    let ids = episode_ids(rows);
    let at: HashMap<&str, u32> = ids.iter().enumerate().map(|(i, id)| (id.as_str(), i as u32)).collect();
    let mut take: Vec<u32> = order.iter().filter_map(|id| at.get(id.as_str()).copied()).collect();
    let placed: HashSet<u32> = take.iter().copied().collect();
    take.extend((0..ids.len() as u32).filter(|i| !placed.contains(i)));
    Ok(arrow::compute::take_record_batch(rows, &UInt32Array::from(take))?)
}
