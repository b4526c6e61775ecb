//! Iteration 0 of a run: the imitation warm start (SFT on expert demonstrations, DAgger rounds
//! under expert correction, RetroAct's reflection demonstrations), then the first evaluation and
//! checkpoint 0.
//!
//! Invariants: every warm-start pass uses a fresh optimiser (the RL optimiser is untouched); the
//! tokens trained are the ones `warm_start.tokens` names, never a policy mistake kept as context
//! under expert correction; what it does is a function of the spec and the seed alone.

use std::time::Instant;

use super::{fill_learner, fmt_eval, Trainer};
use crate::env::{demos, task_ids, Split};
use crate::error::Result;
use crate::model::generate::Sampling;
use crate::ops::segment::Segment;
use crate::pipeline::training::{ImitationTokens, LossKind, WarmStartSection};
use crate::rollout::reflexion::{push_reflection_text, reflection_prompt, reflector_prompt_row, render_memory};
use crate::rollout::{played as played_with_transcripts, rollout, RolloutConfig};
use crate::run::examples::{from_rows, Columns};
use crate::run::learner::{fit, Objective, Schedule, Stats};
use crate::run::metrics::IterationMetrics;
use crate::schema::builder::{EpisodeRow, TrajectoryBuilder};
use crate::store::Dataset;
use crate::train::losses::Reduction;
use crate::train::optim::{AdamW, OptimConfig};

impl Trainer {
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
