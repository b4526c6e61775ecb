//! The [`Driver`] side of a run: one iteration's rollouts from the configured source; the graph's
//! model steps (a reward model's step rewards, the critic's values) where the dataflow reaches
//! them; then, after the stages, trajectories committed → update → evaluation → metrics line →
//! checkpoint.
//!
//! Invariant: an iteration's tasks, environment seed and sampler seed are functions of
//! `(seed, iteration)` alone, so a resumed run replays the next iteration bit for bit.

use std::time::Instant;

use arrow::array::RecordBatch;

use super::{fmt_eval, Trainer};
use crate::dataflow::{episode_ids, Driver};
use crate::env::{task_ids, Split};
use crate::error::Result;
use crate::model::thread::ModelThread;
use crate::pipeline::training::RolloutSource;
use crate::rollout::prefixes::expert_prefix_rows;
use crate::rollout::reflexion::reflexion;
use crate::rollout::with_expert::join_expert;
use crate::run::metrics::IterationMetrics;
use crate::run::row_columns::outcomes;
use crate::schema::builder::TrajectoryBuilder;
use crate::store::Dataset;

impl Driver for Trainer {
    fn rollout(&mut self, iteration: u64) -> Result<RecordBatch> {
        let t = Instant::now();
        let r = &self.spec.rollout;
        let seed = self.spec.run.seed;
        // Iteration i plays the i-th window of the train split (not a function of `iterations`,
        // so a run extended with --resume --set run.iterations=N continues the same sequence).
        let tasks: Vec<u64> =
            task_ids(Split::Train, iteration as usize * r.tasks).split_off((iteration as usize - 1) * r.tasks);
        let env_seed = seed.wrapping_mul(1_000_003).wrapping_add(iteration);
        let rows = match r.source {
            RolloutSource::Expert => self.expert_rows(&tasks, env_seed, iteration)?,
            RolloutSource::Policy => self.policy_rows(tasks, env_seed, iteration)?,
            RolloutSource::ExpertPrefixes => {
                let (expert, choices) = self.expert_rows_and_choices(&tasks, env_seed, iteration, r.admissible)?;
                let mut sampling = self.sampling();
                sampling.seed = sampling.seed.wrapping_add(iteration as i64 * 1000);
                let choices = r.admissible.then_some(choices.as_slice());
                let version = iteration as i64 - 1;
                expert_prefix_rows(&self.model, &self.tok, &expert, choices, r.action_scoring, &sampling, version)?
            }
            RolloutSource::PolicyVsExpert => {
                let expert = self.expert_rows(&tasks, env_seed, iteration)?;
                join_expert(self.policy_rows(tasks, env_seed, iteration)?, expert, r.extra_turns)
            }
            RolloutSource::Reflexion => {
                let cfg = self.rollout_config(tasks, env_seed, iteration);
                reflexion(&self.model, &self.tok, &cfg, &self.reflexion_config())?
            }
        };
        // Episodes whose environment broke are not the policy's doing: they are stored, said, and
        // kept out of the stages and the update.
        let (failed, rows): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.env_error.is_some());
        let env_failures = failed.len();
        if env_failures > 0 {
            let mut b = TrajectoryBuilder::default();
            for f in failed {
                self.say(&format!(
                    "environment failed in episode {}: {}",
                    f.episode_id,
                    f.env_error.as_deref().unwrap_or("")
                ));
                b.push(f);
            }
            let tag = crate::schema::TableSchema::trajectory().tag();
            Dataset::create(self.dir.join("env-failures"))?.append(
                &[b.finish()],
                iteration,
                "run",
                &tag,
                Vec::new(),
            )?;
        }
        let generate = t.elapsed().as_secs_f64();
        // Tokens the policy sampled: those with a behaviour log-prob (expert rows have none).
        let generated: u64 = rows
            .iter()
            .filter_map(|e| e.logp_behavior.as_ref())
            .map(|lp| lp.iter().filter(|x| x.is_finite()).count() as u64)
            .sum();
        let mut m = IterationMetrics { iteration, policy_version: iteration as i64 - 1, ..Default::default() };
        m.time_s.insert("rollout/generate".into(), generate);
        let mut b = TrajectoryBuilder::default();
        rows.into_iter().for_each(|r| b.push(r));
        let rows = b.finish();
        self.source_order = Some(episode_ids(&rows));
        let secs = t.elapsed().as_secs_f64();
        (m.success_rate, m.return_mean) = outcomes(&rows);
        self.current = IterationMetrics {
            episodes: rows.num_rows(),
            env_failures,
            generated_tokens: generated,
            tokens_per_s: generated as f64 / secs.max(1e-9),
            ..m
        };
        self.current.time_s.insert("rollout".into(), secs);
        self.rollout_done = Some(Instant::now());
        Ok(rows)
    }

    fn model_step(&mut self, iteration: u64, op: &str, rows: RecordBatch) -> Result<RecordBatch> {
        Trainer::model_step(self, iteration, op, rows)
    }

    fn learn(&mut self, iteration: u64, rows: RecordBatch) -> Result<()> {
        let mut m = std::mem::take(&mut self.current);
        self.source_order = None;
        if let Some(t) = self.rollout_done.take() {
            m.time_s.insert("stages".into(), t.elapsed().as_secs_f64());
        }
        self.store(iteration, &rows)?;
        self.update(iteration, &rows, None, &mut m)?;
        let run = &self.spec.run;
        if iteration.is_multiple_of(run.eval_every) || iteration >= run.iterations {
            self.evaluate(&mut m)?;
        }
        let extra = match (m.pairs, m.preference_accuracy, m.discriminator_accuracy) {
            (Some(n), Some(a), _) => format!(" | {n} pairs, preference accuracy {a:.3}"),
            (_, _, Some(a)) => format!(" | discriminator accuracy {a:.3}"),
            _ => String::new(),
        };
        self.say(&format!(
            "iter {iteration}/{}: rollouts {} success {:.3} return {:.3} | eval success {} | loss {:.4} kl {:.4} clip {:.3} \
             entropy {:.3}{extra} | {:.1} s",
            self.spec.run.iterations,
            m.episodes,
            m.success_rate,
            m.return_mean,
            fmt_eval(&m),
            m.loss,
            m.kl,
            m.clip_frac,
            m.entropy,
            m.time_s.iter().filter(|(k, _)| !k.contains('/')).map(|(_, v)| v).sum::<f64>()
        ));
        self.metrics.append(&m)?;
        self.checkpoint(iteration)
    }
}

/// A run's driver whose trainer lives on the device thread: each rollout and each learning step is
/// handed over and waited for (a run is on-policy: nothing else can go on meanwhile).
impl Driver for ModelThread<Trainer> {
    fn rollout(&mut self, iteration: u64) -> Result<RecordBatch> {
        self.call(move |t| t.rollout(iteration))
    }

    fn model_step(&mut self, iteration: u64, op: &str, rows: RecordBatch) -> Result<RecordBatch> {
        let op = op.to_string();
        self.call(move |t| t.model_step(iteration, &op, rows))
    }

    fn learn(&mut self, iteration: u64, rows: RecordBatch) -> Result<()> {
        self.call(move |t| t.learn(iteration, rows))
    }
}
