//! Reflexion trials (RetroAct, ALGORITHMS.md §3.1): every task is tried up to `trials` times from
//! the same start state. After a failed trial the reflector (the same model, prompted with the
//! trial's transcript) writes a reflection, and the next trial's first message carries the task's
//! last `memory` reflections. A task leaves once a trial succeeds.
//!
//! Invariants:
//! - Planner rows are ordinary rollout rows (token-exact, behaviour log-probs on action tokens),
//!   with `trial_index` k and id `ENV-TASK-itI-trialK`; all rows of a task share its group.
//! - A reflector row exists only for a reflection that a later trial used. Its tokens are the
//!   reflection prompt (`prompt`) and the reflection (`action`: the model's, with log-probs, or
//!   the expert's in imitation data, without). Its `reward` is the next trial's outcome and its
//!   `prev_trial_reward` the reflected trial's, which is what the `reflector_reward` stage scores
//!   (its one turn's reward is `reward` too); its id is `ENV-TASK-itI-reflectionK`, K the reflected
//!   trial. Planner rows have no `prev_trial_reward`.
//! - Trial k's turn t samples with seed `sampling.seed + k·TRIAL_SEED_STRIDE + 1000·iteration + t`
//!   (the rollout engine adds the last two terms) and the reflections after it with
//!   `… + 1000·iteration + 999`: a run is a function of its config, and no two iterations share
//!   random draws.

use std::collections::BTreeMap;

use super::{played, push_generation, push_tokens, tokenize_span, RolloutConfig};
use crate::error::{Error, Result};
use crate::model::generate::{generate, Sampling};
use crate::model::llama::Decoder;
use crate::model::tokenizer::{Message, Tok};
use crate::ops::segment::Segment;
use crate::schema::builder::EpisodeRow;

const TRIAL_SEED_STRIDE: i64 = 7_919_000_003;

/// How many trials, and how reflections are kept and written.
#[derive(Debug, Clone, Copy)]
pub struct ReflexionConfig {
    /// Trials per task at most (RetroAct: 10).
    pub trials: usize,
    /// Reflections carried into a trial (RetroAct's code: the last 3).
    pub memory: usize,
    /// Tokens per reflection at most.
    pub reflection_tokens: usize,
}

/// The reflector's prompt: the failed trial's transcript (`messages`: the task message without
/// memory, then actions and observations) and the request for a plan.
pub fn reflection_prompt(messages: &[Message]) -> String {
    let mut s = String::from("You tried this task and failed.\n");
    for m in messages {
        s.push('\n');
        if m.role == "assistant" {
            s.push_str("> ");
            s.push_str(m.content.trim());
        } else {
            s.push_str(&m.content);
        }
    }
    s.push_str("\n\nWrite your plan for the next trial in one sentence.");
    s
}

/// The memory text of a trial's first message: the last `keep` reflections.
pub fn render_memory(reflections: &[String], keep: usize) -> String {
    let from = reflections.len().saturating_sub(keep);
    let lines: Vec<String> = reflections[from..].iter().map(|r| format!("- {r}")).collect();
    format!("Your reflections on earlier trials:\n{}", lines.join("\n"))
}

/// A reflector row holding the chat rendering of `prompt` up to the assistant's turn; the
/// reflection's tokens are appended by the caller.
pub fn reflector_prompt_row(tok: &Tok, prompt: &str) -> Result<EpisodeRow> {
    let text = tok.apply_chat_template(&[Message::new("user", prompt)], true)?;
    let at = text.find(prompt).ok_or_else(|| Error::Model("the chat template dropped the reflection prompt".into()))?;
    let (ids, segs) = tokenize_span(tok, &text, at..at + prompt.len(), Segment::Prompt)?;
    let mut row = EpisodeRow::default();
    push_tokens(&mut row, &ids, &segs, 0);
    Ok(row)
}

/// Appends `text` (an expert's reflection) and the end-of-turn token as the row's action.
pub fn push_reflection_text(tok: &Tok, row: &mut EpisodeRow, text: &str) -> Result<()> {
    let eos = end_of_turn(tok)?;
    let mut ids: Vec<i32> = tok.encode(text)?.into_iter().map(|x| x as i32).collect();
    ids.push(eos as i32);
    push_tokens(row, &ids, &vec![Segment::Action as u8; ids.len()], 0);
    Ok(())
}

fn end_of_turn(tok: &Tok) -> Result<i64> {
    tok.token_id(&tok.eos_token).ok_or_else(|| Error::Model("the tokenizer has no end-of-turn token".into()))
}

/// The model's reflections on `prompts`, in one batched generation: each a row (prompt +
/// reflection with its log-probs) and the reflection's text.
fn reflect(model: &Decoder, tok: &Tok, prompts: &[String], sampling: &Sampling) -> Result<Vec<(EpisodeRow, String)>> {
    let eos = end_of_turn(tok)?;
    let mut rows = prompts.iter().map(|p| reflector_prompt_row(tok, p)).collect::<Result<Vec<_>>>()?;
    for row in &mut rows {
        row.logp_behavior = Some(vec![f32::NAN; row.tokens.len()]);
    }
    let inputs: Vec<Vec<i64>> = rows.iter().map(|r| r.tokens.iter().map(|&t| t as i64).collect()).collect();
    let mut sampling = sampling.clone();
    sampling.stop_tokens = vec![eos];
    let gens = generate(model, tok, &inputs, &sampling)?;
    rows.into_iter()
        .zip(gens)
        .map(|(mut row, g)| {
            let body: Vec<i64> = g.tokens.iter().copied().filter(|&x| x != eos).collect();
            let text = tok.decode(&body)?.trim().to_string();
            push_generation(&mut row, &g, eos, 0, Segment::Action);
            Ok((row, text))
        })
        .collect()
}

/// Plays `cfg.tasks` (one episode per trial; `cfg.k` is ignored) in Reflexion trials; returns the
/// planner rows of every trial and the reflector rows of the reflections a trial used.
pub fn reflexion(model: &Decoder, tok: &Tok, cfg: &RolloutConfig, r: &ReflexionConfig) -> Result<Vec<EpisodeRow>> {
    let mut out = Vec::new();
    let mut reflections: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut waiting: BTreeMap<u64, EpisodeRow> = BTreeMap::new();
    let mut open = cfg.tasks.clone();
    for trial in 0..r.trials {
        if open.is_empty() {
            break;
        }
        let seed = cfg.sampling.seed.wrapping_add(trial as i64 * TRIAL_SEED_STRIDE);
        let c = RolloutConfig {
            tasks: open.clone(),
            k: 1,
            sampling: Sampling { seed, ..cfg.sampling.clone() },
            memory: open.iter().filter_map(|t| reflections.get(t).map(|m| (*t, render_memory(m, r.memory)))).collect(),
            ..cfg.clone()
        };
        let mut failed = Vec::new();
        for (&task, (mut row, messages)) in open.iter().zip(played(model, tok, &c)?) {
            let id = row.env.clone().unwrap_or_else(|| cfg.env.clone());
            row.episode_id = format!("{id}-{task}-it{}-trial{trial}", cfg.iteration);
            row.trial_index = Some(trial as i32);
            if let Some(mut reflection) = waiting.remove(&task) {
                reflection.reward = row.reward;
                reflection.turn_rewards = vec![row.reward];
                out.push(reflection);
            }
            if row.success != Some(true) && trial + 1 < r.trials {
                failed.push((task, row.reward, reflection_prompt(&messages), id));
            }
            out.push(row);
        }
        let prompts: Vec<String> = failed.iter().map(|(_, _, p, _)| p.clone()).collect();
        let sampling = Sampling {
            seed: seed.wrapping_add((cfg.iteration * 1000 + 999) as i64),
            max_new_tokens: r.reflection_tokens,
            ..cfg.sampling.clone()
        };
        let written = if prompts.is_empty() { Vec::new() } else { reflect(model, tok, &prompts, &sampling)? };
        open.clear();
        for ((task, reward, _, id), (mut row, text)) in failed.into_iter().zip(written) {
            row.episode_id = format!("{id}-{task}-it{}-reflection{trial}", cfg.iteration);
            row.task_id = format!("{id}-{task}");
            row.group_id = format!("{id}-{task}@{}", cfg.iteration);
            row.trial_index = Some(trial as i32);
            row.prev_trial_reward = Some(reward);
            row.policy_version = cfg.policy_version;
            row.terminated = !row.truncated;
            row.env = Some(id);
            row.seed = Some(cfg.seed as i64);
            row.model = Some(cfg.model_name.clone());
            reflections.entry(task).or_default().push(text);
            waiting.insert(task, row);
            open.push(task);
        }
    }
    Ok(out)
}

/// One task's outcome in a Reflexion rollout: solved by its first trial (RetroAct's IR), by any
/// trial (FR).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrialOutcome {
    /// The first trial solved the task.
    pub first: bool,
    /// Some trial solved it.
    pub any: bool,
}

/// Per task, in task-id order (so two evaluations of the same tasks pair up), its outcome over
/// the planner rows of a Reflexion rollout.
pub fn trial_outcomes(rows: &[EpisodeRow]) -> Vec<TrialOutcome> {
    let mut by_task: std::collections::BTreeMap<&str, TrialOutcome> = Default::default();
    for r in rows.iter().filter(|r| r.prev_trial_reward.is_none()) {
        let o = by_task.entry(r.task_id.as_str()).or_default();
        let solved = r.success == Some(true);
        o.first |= solved && r.trial_index == Some(0);
        o.any |= solved;
    }
    by_task.into_values().collect()
}

/// The fraction of tasks solved by the first trial (RetroAct's IR) and by any trial (FR).
pub fn solved_shares(outcomes: &[TrialOutcome]) -> (f64, f64) {
    let n = outcomes.len().max(1) as f64;
    let share = |solved: fn(&TrialOutcome) -> bool| outcomes.iter().filter(|o| solved(o)).count() as f64 / n;
    (share(|o| o.first), share(|o| o.any))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_keeps_the_last_reflections() {
        let r: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        assert_eq!(render_memory(&r, 3), "Your reflections on earlier trials:\n- b\n- c\n- d");
        assert_eq!(render_memory(&r[..1], 3), "Your reflections on earlier trials:\n- a");
    }

    #[test]
    fn prompt_is_the_transcript() {
        let m = vec![
            Message::new("user", "You are in a room.\nYour task is to: put a cup in cabinet 1."),
            Message::new("assistant", "go to desk 1"),
            Message::new("user", "On the desk 1, you see a cup 1."),
        ];
        let p = reflection_prompt(&m);
        assert!(p.contains("\n> go to desk 1\nOn the desk 1, you see a cup 1.\n\nWrite your plan"), "{p}");
    }

    #[test]
    fn trial_outcomes_count_tasks() {
        let row = |task: &str, trial: i32, ok: bool, reflector: bool| EpisodeRow {
            task_id: task.into(),
            trial_index: Some(trial),
            success: Some(ok),
            prev_trial_reward: reflector.then_some(0.0),
            ..Default::default()
        };
        let rows = vec![
            row("a", 0, true, false),
            row("b", 0, false, false),
            row("b", 0, false, true),
            row("b", 1, true, false),
            row("c", 0, false, false),
            row("c", 1, false, false),
        ];
        assert_eq!(solved_shares(&trial_outcomes(&rows)), (1.0 / 3.0, 2.0 / 3.0));
        let o = |first, any| TrialOutcome { first, any };
        assert_eq!(trial_outcomes(&rows), vec![o(true, true), o(false, true), o(false, false)]);
        // Task-id order, whatever order the slots finished in.
        let reversed: Vec<EpisodeRow> = rows.iter().rev().cloned().collect();
        assert_eq!(trial_outcomes(&reversed), trial_outcomes(&rows));
    }
}
