//! The trainer: the [`Driver`] of a run. It owns the policy (decoder, tokenizer, optimiser) on the
//! leader, plays each iteration's rollouts, and after the stages have run, stores the iteration's
//! trajectories, updates the policy, evaluates it, appends the metrics line and checkpoints.
//!
//! Invariants:
//! - Everything an iteration does is a function of the checkpoint before it and `(seed,
//!   iteration)`: the tasks (a window of the train split), the environment seed, the sampler seed
//!   and the minibatch order. Resuming from checkpoint `i` therefore reproduces iteration `i + 1`
//!   bit for bit on the CPU.
//! - Order of effects per iteration: trajectories committed → update → metrics line → checkpoint.
//!   A crash leaves at worst an iteration whose trajectories are stored twice (identical rows,
//!   deduplicated by `episode_id` on read) and whose metrics line is dropped at resume.

mod iteration;
mod model_steps;
mod update;
mod warm_start;

use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow::array::RecordBatch;

use super::critic::Critic;
use super::discriminator::Discriminator;
use super::examples::Example;
use super::gain::outcome_text;
use super::learner::Stats;
use super::metrics::{IterationMetrics, MetricsFile};
use crate::env::{demos, task_ids, Split};
use crate::error::{Error, Result};
use crate::model::generate::Sampling;
use crate::model::llama::Decoder;
use crate::model::lora::{self, LoraConfig};
use crate::model::tokenizer::Tok;
use crate::pipeline::training::{RolloutSource, TrainingSpec};
use crate::rollout::reflexion::{reflexion, solved_shares, trial_outcomes, ReflexionConfig};
use crate::rollout::{rollout, RolloutConfig};
use crate::schema::builder::EpisodeRow;
use crate::store::Dataset;
use crate::train::checkpoint::{self, TrainState};
use crate::train::optim::{AdamW, OptimConfig};

/// Latest checkpoints kept in `RUN/checkpoints/` besides checkpoint 0 (older ones are deleted).
const KEEP_CHECKPOINTS: usize = 2;
/// Environment seeds of the dev tasks used for evaluation (fixed for the whole run).
const EVAL_SEED: u64 = 1_000_000;
/// Evaluation episodes played at once when `rollout.slots` is unset: 1,000 greedy episodes at once
/// held 8.9 GB of prefix caches on the household env; finished episodes' slots are refilled.
const EVAL_SLOTS: usize = 256;

/// The policy and everything needed to train it.
pub struct Trainer {
    spec: TrainingSpec,
    model: Decoder,
    tok: Tok,
    opt: AdamW,
    critic: Option<Critic>,
    discriminator: Option<Discriminator>,
    /// RetroAct's imitation examples (`learner.imitation` > 0), loaded from `RUN/imitation` once.
    imitation: Option<Vec<Example>>,
    /// The KL penalty's reference policy (`learner.kl_coef` > 0): checkpoint 0, loaded once.
    reference: Option<Decoder>,
    dir: PathBuf,
    trajectories: Dataset,
    metrics: MetricsFile,
    /// Metrics of the iteration in flight (filled by `rollout`, finished by `learn`).
    current: IterationMetrics,
    /// The episode ids of the current iteration's rollout, in the order it made them: the order
    /// its model steps see the rows in (`None` between iterations and under `--train`).
    source_order: Option<Vec<String>>,
    rollout_done: Option<Instant>,
    verbose: bool,
}

fn rl_optimizer(model: &Decoder, spec: &TrainingSpec) -> AdamW {
    let l = &spec.learner;
    let cfg = OptimConfig {
        lr: l.lr,
        weight_decay: l.weight_decay,
        max_grad_norm: (l.max_grad_norm > 0.0).then_some(l.max_grad_norm),
        warmup_steps: l.warmup,
        ..Default::default()
    };
    AdamW::new(model.trainable_variables(), cfg)
}

/// Per expert episode, the admissible actions before each of its actions.
type Admissible = Vec<Vec<String>>;

/// `RUN/checkpoints/iter-NNNN`.
pub fn checkpoint_dir(run: &Path, iteration: u64) -> PathBuf {
    run.join("checkpoints").join(format!("iter-{iteration:04}"))
}

/// The complete checkpoints of a run (those with a `state.json`), in no particular order.
fn checkpoints(run: &Path) -> Result<Vec<u64>> {
    let dir = run.join("checkpoints");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for e in entries {
        let name = e.map_err(|e| Error::io(&dir, e))?.file_name().to_string_lossy().into_owned();
        if let Some(n) = name.strip_prefix("iter-").and_then(|n| n.parse::<u64>().ok()) {
            if dir.join(&name).join("state.json").is_file() {
                out.push(n);
            }
        }
    }
    Ok(out)
}

/// The last complete checkpoint of a run, if any.
pub fn last_checkpoint(run: &Path) -> Result<Option<u64>> {
    Ok(checkpoints(run)?.into_iter().max())
}

impl Trainer {
    /// A trainer for `spec` writing into `dir`: a fresh policy (seeded), or the one of checkpoint
    /// `resume_from`.
    pub fn new(spec: TrainingSpec, dir: &Path, resume_from: Option<u64>, verbose: bool) -> Result<Trainer> {
        let device = tch::Device::cuda_if_available();
        let tok = crate::model::load_tokenizer(&spec.model.name)?;
        tch::manual_seed(spec.run.seed as i64);
        let mut model = crate::model::load_decoder(&spec.model.name, device)?;
        model.set_precision(spec.model.precision);
        if let Some(l) = &spec.model.lora {
            let cfg = LoraConfig { r: l.r, alpha: l.alpha, dropout: l.dropout, targets: l.targets.clone() };
            lora::attach(&mut model, cfg)?;
        }
        let mut opt = rl_optimizer(&model, &spec);
        let mut critic = spec.critic.as_ref().map(|c| Critic::new(&model, c));
        let mut discriminator = spec.discriminator.as_ref().map(|d| Discriminator::new(&model, d));
        if let Some(it) = resume_from {
            if spec.learner.imitation > 0.0 && !Dataset::is_dataset(&dir.join("imitation")) {
                return Err(Error::Spec {
                    file: dir.join("config.toml"),
                    stage: Some("[learner]".into()),
                    key: Some("imitation".into()),
                    message: "this run has no imitation set (its warm start did not use loss = \"clipped_is\")".into(),
                });
            }
            let ckpt = checkpoint_dir(dir, it);
            checkpoint::load(&ckpt, &model.stores(), &mut opt)?;
            if let Some(c) = critic.as_mut() {
                checkpoint::load(&ckpt.join("critic"), &[&c.head.vs], &mut c.opt)?;
            }
            if let Some(d) = discriminator.as_mut() {
                checkpoint::load(&ckpt.join("discriminator"), &[&d.head.vs], &mut d.opt)?;
            }
        }
        Ok(Trainer {
            trajectories: Dataset::create(dir.join("trajectories"))?,
            metrics: MetricsFile::new(dir),
            dir: dir.to_path_buf(),
            spec,
            model,
            tok,
            opt,
            critic,
            discriminator,
            imitation: None,
            reference: None,
            current: IterationMetrics::default(),
            source_order: None,
            rollout_done: None,
            verbose,
        })
    }

    pub(crate) fn say(&self, line: &str) {
        if self.verbose {
            eprintln!("{line}");
        }
    }

    pub(crate) fn evaluate(&self, m: &mut IterationMetrics) -> Result<()> {
        let n = self.spec.run.eval_tasks;
        if n == 0 {
            return Ok(());
        }
        let t = Instant::now();
        let r = &self.spec.rollout;
        let cfg = RolloutConfig {
            env: r.env.clone(),
            tasks: task_ids(Split::Dev, n),
            k: 1,
            seed: EVAL_SEED,
            sampling: Sampling { temperature: 0.0, max_new_tokens: r.max_action_tokens, ..Default::default() },
            max_turns: r.max_turns,
            policy_version: m.iteration as i64,
            model_name: self.spec.model.name.clone(),
            iteration: m.iteration,
            correction: None,
            memory: Default::default(),
            admissible: self.spec.rollout.admissible,
            slots: Some(self.spec.rollout.slots.unwrap_or(EVAL_SLOTS)),
            scoring: self.spec.rollout.action_scoring,
            prefix_cache: self.spec.rollout.prefix_cache,
        };
        if r.source == RolloutSource::Reflexion {
            let rows = reflexion(&self.model, &self.tok, &cfg, &self.reflexion_config())?;
            let outcomes = trial_outcomes(&rows);
            let (first, last) = solved_shares(&outcomes);
            m.eval_success_rate = Some(first);
            m.eval_final_success_rate = Some(last);
            m.eval_outcomes = Some(outcome_text(outcomes.iter().map(|o| o.first)));
            m.eval_final_outcomes = Some(outcome_text(outcomes.iter().map(|o| o.any)));
        } else {
            let rows = rollout(&self.model, &self.tok, &cfg)?;
            m.eval_success_rate =
                Some(rows.iter().filter(|r| r.success == Some(true)).count() as f64 / rows.len().max(1) as f64);
            m.eval_outcomes = Some(outcome_text(rows.iter().map(|r| r.success == Some(true))));
        }
        m.time_s.insert("eval".into(), t.elapsed().as_secs_f64());
        Ok(())
    }

    /// Saves checkpoint `iteration`; the folder is also a Hugging Face model folder (config,
    /// tokenizer, and an index naming the checkpoint's weight file), so `--model` accepts it.
    pub(crate) fn checkpoint(&self, iteration: u64) -> Result<()> {
        let state = TrainState { step: self.opt.step, data_position: iteration, seed: self.spec.run.seed };
        let dir = checkpoint_dir(&self.dir, iteration);
        checkpoint::save_with(&dir, &self.model.stores(), &self.opt, &state, |tmp| {
            // A LoRA run's checkpoint also holds the adapter in PEFT's layout: loading the folder
            // as a model gives base + merged adapter.
            if self.model.adapter().is_some() {
                lora::save(&self.model, tmp)?;
            }
            // Each head's folder records its own optimiser's step (Adam's bias correction on resume).
            if let Some(c) = &self.critic {
                let own = TrainState { step: c.opt.step, ..state };
                checkpoint::save(&tmp.join("critic"), &[&c.head.vs], &c.opt, &own)?;
            }
            if let Some(d) = &self.discriminator {
                let own = TrainState { step: d.opt.step, ..state };
                checkpoint::save(&tmp.join("discriminator"), &[&d.head.vs], &d.opt, &own)?;
            }
            let names: serde_json::Map<String, serde_json::Value> =
                self.model.vs.variables().into_keys().map(|n| (n, "weights.safetensors".into())).collect();
            let files = [
                ("config.json", self.model.cfg.to_hf_json().to_string()),
                ("model.safetensors.index.json", serde_json::json!({"weight_map": names}).to_string()),
            ];
            for (name, text) in files {
                std::fs::write(tmp.join(name), text).map_err(|e| Error::io(tmp, e))?;
            }
            self.tok.save_hf(tmp)
        })?;
        // Checkpoint 0 (the policy before RL, e.g. after the warm start) is always kept.
        let mut older: Vec<u64> = checkpoints(&self.dir)?.into_iter().filter(|&n| n > 0 && n < iteration).collect();
        older.sort_unstable_by(|a, b| b.cmp(a));
        for n in older.into_iter().skip(KEEP_CHECKPOINTS - 1) {
            let _ = std::fs::remove_dir_all(checkpoint_dir(&self.dir, n));
        }
        Ok(())
    }

    /// Starts the metrics of iteration or update `m.iteration`: the model steps record into them.
    pub(crate) fn begin_metrics(&mut self, m: IterationMetrics) {
        self.current = m;
    }

    /// The metrics recorded since [`Trainer::begin_metrics`].
    pub(crate) fn take_metrics(&mut self) -> IterationMetrics {
        std::mem::take(&mut self.current)
    }

    /// The number of token ids the policy knows.
    pub(crate) fn vocab_size(&self) -> i64 {
        self.model.cfg.vocab_size
    }

    /// Commits the stage outputs `rows` of iteration (or update) `iteration` to `RUN/trajectories`.
    pub(crate) fn store(&self, iteration: u64, rows: &RecordBatch) -> Result<()> {
        let tag = crate::schema::TableSchema::trajectory().tag();
        let commit =
            self.trajectories.write_uncommitted(std::slice::from_ref(rows), iteration, "run", &tag, Vec::new())?;
        self.trajectories.commit(&commit)
    }

    /// Appends `m` to the run's metrics.
    pub(crate) fn record(&self, m: &IterationMetrics) -> Result<()> {
        self.metrics.append(m)
    }

    /// The expert's episodes of `tasks`, with this run's ids (one rollout per task).
    fn expert_rows(&self, tasks: &[u64], seed: u64, iteration: u64) -> Result<Vec<EpisodeRow>> {
        Ok(self.expert_rows_and_choices(tasks, seed, iteration, false)?.0)
    }

    /// [`Self::expert_rows`], with `choices` also the admissible actions before each expert
    /// action of each row.
    fn expert_rows_and_choices(
        &self,
        tasks: &[u64],
        seed: u64,
        iteration: u64,
        choices: bool,
    ) -> Result<(Vec<EpisodeRow>, Vec<Admissible>)> {
        let env = &self.spec.rollout.env;
        let rows = demos::expert_rows_and_choices(env, tasks, seed, &self.tok, &self.spec.model.name, choices)?;
        Ok(rows
            .into_iter()
            .zip(tasks)
            .map(|((mut row, admissible), task)| {
                row.episode_id = format!("{env}-{task}-it{iteration}-expert");
                row.group_id = format!("{env}-{task}@{iteration}");
                row.policy_version = iteration as i64 - 1;
                (row, admissible)
            })
            .unzip())
    }

    /// How the policy samples actions in rollouts.
    fn sampling(&self) -> Sampling {
        let r = &self.spec.rollout;
        Sampling {
            temperature: r.temperature,
            top_k: r.top_k,
            top_p: r.top_p,
            max_new_tokens: r.max_action_tokens,
            seed: self.spec.run.seed as i64,
            ..Default::default()
        }
    }

    /// The RL rollouts' configuration for `tasks` in `iteration`.
    fn rollout_config(&self, tasks: Vec<u64>, env_seed: u64, iteration: u64) -> RolloutConfig {
        let r = &self.spec.rollout;
        RolloutConfig {
            env: r.env.clone(),
            tasks,
            k: r.k,
            seed: env_seed,
            sampling: self.sampling(),
            max_turns: r.max_turns,
            policy_version: iteration as i64 - 1,
            model_name: self.spec.model.name.clone(),
            iteration,
            correction: None,
            memory: Default::default(),
            admissible: self.spec.rollout.admissible,
            slots: self.spec.rollout.slots,
            scoring: self.spec.rollout.action_scoring,
            prefix_cache: self.spec.rollout.prefix_cache,
        }
    }

    /// The policy's episodes of `tasks`, `k` per task.
    fn policy_rows(&self, tasks: Vec<u64>, env_seed: u64, iteration: u64) -> Result<Vec<EpisodeRow>> {
        rollout(&self.model, &self.tok, &self.rollout_config(tasks, env_seed, iteration))
    }

    fn reflexion_config(&self) -> ReflexionConfig {
        let r = &self.spec.rollout;
        ReflexionConfig { trials: r.trials, memory: r.memory, reflection_tokens: r.reflection_tokens }
    }
}

fn fmt_opt(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into())
}

/// The evaluation's success rate, and with Reflexion trials the rate after all trials.
fn fmt_eval(m: &IterationMetrics) -> String {
    match m.eval_final_success_rate {
        Some(last) => format!("{} (all trials {last:.3})", fmt_opt(m.eval_success_rate)),
        None => fmt_opt(m.eval_success_rate),
    }
}

fn fill_learner(m: &mut IterationMetrics, s: &Stats) {
    m.loss = s.loss;
    m.clip_frac = s.clip_frac;
    m.kl = s.kl;
    m.entropy = s.entropy;
    m.value_loss = s.value_loss;
    m.grad_norm = s.grad_norm;
    m.updates = s.updates;
    m.trained_tokens = s.trained_tokens;
    m.kl_stopped = s.kl_stopped;
}
