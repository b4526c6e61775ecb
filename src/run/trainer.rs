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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow::array::RecordBatch;

use super::critic::Critic;
use super::discriminator::Discriminator;
use super::examples::{from_rows, Columns, Example};
use super::gain::outcome_text;
use super::implicit_reward;
use super::learner::{
    check_behaviour, fit, recompute_logp_old, score_reference, KlPenalty, Objective, Schedule, Stats,
};
use super::metrics::{IterationMetrics, MetricsFile};
use super::preferences::preference_pairs;
use super::stream::{truncate_advantages, Staleness};
use crate::dataflow::Driver;
use crate::env::{demos, task_ids, Split};
use crate::error::{Error, Result};
use crate::model::generate::Sampling;
use crate::model::llama::Decoder;
use crate::model::lora::{self, LoraConfig};
use crate::model::tokenizer::Tok;
use crate::ops::segment::Segment;
use crate::pipeline::training::{
    ClipBound, CriticBackbone, ImitationTokens, KlEstimatorName, LogpOld, LossKind, RatioGranularity, RolloutSource,
    TrainedRows, TrainingSpec, WarmStartSection,
};
use crate::rollout::prefixes::expert_prefix_rows;
use crate::rollout::reflexion::{
    push_reflection_text, reflection_prompt, reflector_prompt_row, reflexion, render_memory, solved_shares,
    trial_outcomes, ReflexionConfig,
};
use crate::rollout::with_expert::join_expert;
use crate::rollout::{played as played_with_transcripts, rollout, RolloutConfig};
use crate::schema::builder::{EpisodeRow, TrajectoryBuilder};
use crate::store::Dataset;
use crate::train::checkpoint::{self, TrainState};
use crate::train::losses::{KlEstimator, PpoClip, Reduction};
use crate::train::optim::{AdamW, OptimConfig};
use crate::train::spans::Granularity;

/// Latest checkpoints kept in `RUN/checkpoints/` besides checkpoint 0 (older ones are deleted).
const KEEP_CHECKPOINTS: usize = 2;
/// A stored behaviour log-prob farther than this from the learner's before the first update is
/// warned about (float32 rounding of the same computation stays below 1e-4).
const MISMATCH_WARNING: f64 = 1e-3;
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
            rollout_done: None,
            verbose,
        })
    }

    pub(crate) fn say(&self, line: &str) {
        if self.verbose {
            eprintln!("{line}");
        }
    }

    /// Iteration 0: the imitation warm start (if configured: SFT on expert demonstrations, then
    /// DAgger rounds), then the first evaluation and checkpoint.
    pub fn start(&mut self) -> Result<()> {
        let mut m = IterationMetrics::default();
        if let Some(ws) = self.spec.warm_start.clone().filter(|w| w.demos > 0) {
            let t = Instant::now();
            let name = &self.spec.model.name;
            let mut rows = demos::expert_rows(&self.spec.rollout.env, Split::Train, ws.demos, &self.tok, name)?;
            let played = rows.len();
            rows.retain(|r| r.env_error.is_none());
            if rows.len() < played {
                self.say(&format!(
                    "warm start: {} demonstrations left out: their environment failed",
                    played - rows.len()
                ));
            }
            self.say(&format!("warm start: SFT on {} expert demonstrations, {} epochs", rows.len(), ws.epochs));
            let mut stats = self.imitate(&rows, ws.epochs, &ws)?;
            for round in 0..ws.dagger_rounds {
                let played = self.corrected_rollouts(&ws, round)?;
                self.say(&format!(
                    "warm start: DAgger round {}/{}: {} episodes, the policy agreed with the expert on {:.1}% of turns; \
                     {} epochs on {} episodes",
                    round + 1,
                    ws.dagger_rounds,
                    played.len(),
                    100.0 * agreement(&played),
                    ws.dagger_epochs,
                    rows.len() + played.len()
                ));
                rows.extend(played);
                stats = self.imitate(&rows, ws.dagger_epochs, &ws)?;
            }
            if ws.reflection_tasks > 0 {
                let reflections = self.reflection_demos(&ws)?;
                self.say(&format!(
                    "warm start: {} of {} trials failed; {} epochs on the demonstrations, the expert's reflections on \
                     the failures and its trials following them",
                    reflections.len() / 2,
                    ws.reflection_tasks,
                    ws.reflection_epochs
                ));
                rows.extend(reflections);
                stats = self.imitate(&rows, ws.reflection_epochs, &ws)?;
            }
            if self.spec.learner.loss == LossKind::ClippedIs {
                let mut b = TrajectoryBuilder::default();
                rows.iter().for_each(|r| b.push(imitation_targets(r, ws.tokens)));
                let tag = crate::schema::TableSchema::trajectory().tag();
                Dataset::create(self.dir.join("imitation"))?.append(
                    &[b.finish()],
                    0,
                    "warm-start",
                    &tag,
                    Vec::new(),
                )?;
            }
            fill_learner(&mut m, &stats);
            m.time_s.insert("learn".into(), t.elapsed().as_secs_f64());
        }
        self.evaluate(&mut m)?;
        self.say(&format!(
            "iter 0 (warm start{}): eval success {}",
            if self.spec.warm_start.as_ref().is_some_and(|w| w.demos > 0) { "" } else { ": none" },
            fmt_eval(&m)
        ));
        self.metrics.truncate_after(0)?;
        self.metrics.append(&m)?;
        self.checkpoint(0)
    }

    /// `epochs` passes of NLL on `rows` (the tokens `warm_start.tokens` names), with a fresh
    /// optimiser: linear warm-up over the first 5% of updates, then cosine decay to 0.
    fn imitate(&self, rows: &[EpisodeRow], epochs: usize, ws: &WarmStartSection) -> Result<Stats> {
        let t = Instant::now();
        let mut b = TrajectoryBuilder::default();
        rows.iter().for_each(|r| b.push(imitation_targets(r, ws.tokens)));
        let examples = from_rows(&b.finish(), Columns::default())?;
        let updates = (epochs * examples.len().div_ceil(ws.minibatch)) as u64;
        let cfg = OptimConfig {
            lr: ws.lr,
            max_grad_norm: Some(1.0),
            schedule: crate::train::optim::Schedule::Cosine,
            warmup_steps: updates / 20,
            total_steps: updates,
            ..Default::default()
        };
        let mut opt = AdamW::new(self.model.trainable_variables(), cfg);
        let schedule = Schedule {
            epochs,
            minibatch: ws.minibatch,
            max_batch_tokens: self.spec.model.max_batch_tokens,
            kl_stop: 0.0,
            kl_skip: 0.0,
            seed: self.spec.run.seed.wrapping_add(rows.len() as u64),
        };
        let stats =
            fit(&self.model, &mut opt, None, &examples, Objective::Nll { reduction: Reduction::TokenMean }, &schedule)?;
        let losses: Vec<String> = stats.epoch_losses.iter().map(|l| format!("{l:.3}")).collect();
        self.say(&format!("warm start: NLL per epoch {} ({:.1} s)", losses.join(" "), t.elapsed().as_secs_f64()));
        Ok(stats)
    }

    /// DAgger round `round`: the policy plays new train tasks (after the demonstrations' and the
    /// earlier rounds'), sampled as in the RL rollouts, under expert correction.
    fn corrected_rollouts(&self, ws: &WarmStartSection, round: usize) -> Result<Vec<EpisodeRow>> {
        let r = &self.spec.rollout;
        let first = ws.demos + round * ws.dagger_tasks;
        let cfg = RolloutConfig {
            env: r.env.clone(),
            tasks: task_ids(Split::Train, first + ws.dagger_tasks).split_off(first),
            k: 1,
            seed: 0,
            sampling: Sampling { seed: self.spec.run.seed as i64 ^ 0x0DA6_6E20, ..self.sampling() },
            max_turns: r.max_turns,
            policy_version: -1,
            model_name: self.spec.model.name.clone(),
            iteration: round as u64,
            correction: Some(ws.dagger_keep),
            memory: Default::default(),
            admissible: self.spec.rollout.admissible,
            slots: self.spec.rollout.slots,
            scoring: self.spec.rollout.action_scoring,
            prefix_cache: self.spec.rollout.prefix_cache,
        };
        rollout(&self.model, &self.tok, &cfg)
    }

    /// RetroAct's imitation data for Reflexion: the policy plays `reflection_tasks` new train
    /// tasks once (sampled as in the RL rollouts). Each failed trial gives a reflector row, whose
    /// reflection is the expert's (its minimal plan for the task), and a planner row for the next
    /// trial: that reflection in the first message, and the expert following it.
    fn reflection_demos(&self, ws: &WarmStartSection) -> Result<Vec<EpisodeRow>> {
        let r = &self.spec.rollout;
        let first = ws.demos + ws.dagger_rounds * ws.dagger_tasks;
        let tasks = task_ids(Split::Train, first + ws.reflection_tasks).split_off(first);
        let mut cfg = self.rollout_config(tasks, 0, 0);
        cfg.k = 1;
        cfg.policy_version = -1;
        cfg.sampling.seed ^= 0x2EF1_EC70;
        let mut env = crate::env::by_name(&r.env)?;
        let model = &self.spec.model.name;
        let mut rows = Vec::new();
        for (task, (trial, messages)) in cfg.tasks.iter().zip(played_with_transcripts(&self.model, &self.tok, &cfg)?) {
            if trial.success == Some(true) {
                continue;
            }
            let plan = demos::minimal_plan(env.as_mut(), *task, 0);
            let reflection = demos::plan_reflection(&plan);
            let memory = render_memory(std::slice::from_ref(&reflection), r.memory);
            // The memory is prompt text only: the episode plays as it would without it.
            let following = demos::plan_episode(env.as_mut(), *task, 0, &plan, &memory);
            if following.success != Some(true) {
                continue; // the expert failed this task too: it has no plan to teach
            }
            let mut row = reflector_prompt_row(&self.tok, &reflection_prompt(&messages))?;
            push_reflection_text(&self.tok, &mut row, &reflection)?;
            let env_id = env.id();
            let id = format!("{env_id}-{task}-imitation");
            let mut next = crate::import::to_row(&self.tok, &following, &env_id, model)?;
            next.episode_id = format!("{id}-trial1");
            next.trial_index = Some(1);
            row.episode_id = format!("{id}-reflection0");
            row.task_id = next.task_id.clone();
            row.group_id = next.group_id.clone();
            row.trial_index = Some(0);
            row.prev_trial_reward = Some(trial.reward);
            row.reward = next.reward;
            row.turn_rewards = vec![next.reward];
            row.terminated = !row.truncated;
            row.env = Some(env_id);
            row.seed = Some(0);
            row.model = Some(model.clone());
            rows.extend([row, next]);
        }
        Ok(rows)
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
            m.eval_success_rate = Some(success_rate(&rows));
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
            score_reference(reference, &mut examples, self.spec.model.max_batch_tokens)?;
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
        let stats = fit(&self.model, &mut self.opt, self.critic.as_mut(), &examples, objective, &schedule)?;
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
    fn load_critic_backbone(&mut self) -> Result<()> {
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

/// `row` with the tokens an imitation warm start trains on marked `action`: with
/// [`ImitationTokens::All`], every token except policy actions kept as context under expert
/// correction (`prompt` tokens with a behaviour log-prob), which are never targets. Reflector rows
/// train on their reflection only (their prompt holds the policy's failed trial).
fn imitation_targets(row: &EpisodeRow, tokens: ImitationTokens) -> EpisodeRow {
    let mut row = row.clone();
    if tokens == ImitationTokens::All && row.prev_trial_reward.is_none() {
        let lp = row.logp_behavior.as_deref().unwrap_or(&[]);
        for (j, s) in row.segments.iter_mut().enumerate() {
            let kept_mistake = *s == Segment::Prompt as u8 && lp.get(j).is_some_and(|x| x.is_finite());
            if !kept_mistake {
                *s = Segment::Action as u8;
            }
        }
    }
    row
}

/// The fraction of turns whose action the policy chose as the expert would have (under expert
/// correction, the other turns hold a replaced action or a kept mistake, neither with behaviour
/// log-probs on `action` tokens).
fn agreement(rows: &[EpisodeRow]) -> f64 {
    let (mut agreed, mut turns) = (0usize, 0usize);
    for r in rows {
        turns += r.turn_rewards.len();
        let lp = r.logp_behavior.as_deref().unwrap_or(&[]);
        let mut own: Vec<i32> = (0..r.tokens.len())
            .filter(|&i| r.segments[i] == Segment::Action as u8 && lp.get(i).is_some_and(|x| x.is_finite()))
            .map(|i| r.turns[i])
            .collect();
        own.dedup();
        agreed += own.len();
    }
    agreed as f64 / turns.max(1) as f64
}

/// The policy's episodes (rows with behaviour log-probs, reflector rows excepted), or all rows
/// when the policy played none (expert rollouts): expert rows joined for comparison do not count
/// in a rollout's statistics.
fn played(rows: &[EpisodeRow]) -> Vec<&EpisodeRow> {
    let own: Vec<&EpisodeRow> =
        rows.iter().filter(|r| r.logp_behavior.is_some() && r.prev_trial_reward.is_none()).collect();
    if own.is_empty() {
        rows.iter().collect()
    } else {
        own
    }
}

fn success_rate(rows: &[EpisodeRow]) -> f64 {
    let rows = played(rows);
    rows.iter().filter(|r| r.success == Some(true)).count() as f64 / rows.len().max(1) as f64
}

fn return_mean(rows: &[EpisodeRow]) -> f64 {
    let rows = played(rows);
    rows.iter().map(|e| e.reward as f64).sum::<f64>() / rows.len().max(1) as f64
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
        let (failed, mut rows): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.env_error.is_some());
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
        let disc = match self.discriminator.as_mut() {
            Some(d) => {
                Some(d.train_and_reward(&self.model, &mut rows, self.spec.model.max_batch_tokens, seed ^ iteration)?)
            }
            None => None,
        };
        let implicit = match &self.spec.implicit_reward {
            Some(cfg) => Some(implicit_reward::train_and_reward(
                &self.model,
                cfg,
                &mut rows,
                self.spec.model.max_batch_tokens,
                seed ^ iteration,
            )?),
            None => None,
        };
        self.load_critic_backbone()?;
        if let Some(c) = &self.critic {
            c.annotate(&self.model, &mut rows, self.spec.model.max_batch_tokens)?;
        }
        let secs = t.elapsed().as_secs_f64();
        // Tokens the policy sampled: those with a behaviour log-prob (expert rows have none).
        let generated: u64 = rows
            .iter()
            .filter_map(|e| e.logp_behavior.as_ref())
            .map(|lp| lp.iter().filter(|x| x.is_finite()).count() as u64)
            .sum();
        self.current = IterationMetrics {
            iteration,
            policy_version: iteration as i64 - 1,
            episodes: rows.len(),
            success_rate: success_rate(&rows),
            return_mean: return_mean(&rows),
            env_failures,
            generated_tokens: generated,
            tokens_per_s: generated as f64 / secs.max(1e-9),
            time_s: BTreeMap::from([("rollout".to_string(), secs)]),
            discriminator_loss: disc.map(|d| d.loss),
            discriminator_accuracy: disc.map(|d| d.accuracy),
            pairs: implicit.map(|s| s.pairs),
            preference_accuracy: implicit.map(|s| s.accuracy),
            implicit_reward_loss: implicit.map(|s| s.loss),
            ..Default::default()
        };
        let mut b = TrajectoryBuilder::default();
        rows.into_iter().for_each(|r| b.push(r));
        self.rollout_done = Some(Instant::now());
        Ok(b.finish())
    }

    fn learn(&mut self, iteration: u64, rows: RecordBatch) -> Result<()> {
        let mut m = std::mem::take(&mut self.current);
        if let Some(t) = self.rollout_done.take() {
            m.time_s.insert("stages".into(), t.elapsed().as_secs_f64());
        }
        let tag = crate::schema::TableSchema::trajectory().tag();
        let commit =
            self.trajectories.write_uncommitted(std::slice::from_ref(&rows), iteration, "run", &tag, Vec::new())?;
        self.trajectories.commit(&commit)?;

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
            m.time_s.values().sum::<f64>()
        ));
        self.metrics.append(&m)?;
        self.checkpoint(iteration)
    }
}
