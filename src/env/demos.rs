//! Expert demonstrations: the environment's expert plays each task to the end, and the episode is
//! stored as a token-exact trajectory through a model's chat template (the same conversion as
//! `trajflow import`: observations are user turns, the expert's actions assistant turns), ready
//! for SFT, StepAgent's expert prefixes and RetroAct's imitation stage. Rows keep the
//! environment's step rewards (`turn_rewards`, summed into `reward`), as rollouts do, and every
//! expert action must survive the model's tokenizer (the rows would train on another text).

use super::{Env, Split};
use crate::error::Result;
use crate::import::{to_row, Conversation, Msg};
use crate::model::tokenizer::Tok;
use crate::schema::builder::EpisodeRow;

/// Plays task `task_id` from the state of `seed`, taking `next(env, i)` as the `i`-th action
/// until it returns `None`, the episode ends or the step budget is spent; `memory` (Reflexion
/// reflections) is appended to the first message.
fn scripted_episode(
    env: &mut dyn Env,
    task_id: u64,
    seed: u64,
    memory: Option<&str>,
    mut next: impl FnMut(&dyn Env, usize) -> Option<String>,
) -> Conversation {
    let reset = env.reset(task_id, seed);
    let mut first = format!("{}\n{}", reset.observation, reset.task);
    if let Some(m) = memory {
        first = format!("{first}\n\n{m}");
    }
    let mut messages = vec![Msg { role: "user".into(), content: first }];
    let mut success = false;
    let mut rewards = Vec::new();
    for i in 0..env.max_steps() {
        let Some(action) = next(&*env, i) else { break };
        let step = env.step(&action);
        messages.push(Msg { role: "assistant".into(), content: action });
        rewards.push(step.reward);
        success = step.success;
        if step.done {
            break;
        }
        messages.push(Msg { role: "user".into(), content: step.observation });
    }
    let id = env.id();
    Conversation {
        id: format!("{id}-expert-{task_id}-{seed}"),
        task_id: format!("{id}-{task_id}"),
        group_id: format!("{id}-{task_id}"),
        messages,
        reward: rewards.iter().sum(),
        success: Some(success),
        turn_rewards: Some(rewards),
    }
}

/// Plays task `task_id` with the expert; returns the conversation and whether it succeeded.
pub fn expert_episode(env: &mut dyn Env, task_id: u64, seed: u64) -> Conversation {
    scripted_episode(env, task_id, seed, None, |env, _| env.expert_action())
}

/// Plays `plan` on task `task_id` with `memory` in the first message: RetroAct's planner data for
/// a trial after a reflection (the expert follows the reflection's plan).
pub fn plan_episode(env: &mut dyn Env, task_id: u64, seed: u64, plan: &[String], memory: &str) -> Conversation {
    scripted_episode(env, task_id, seed, Some(memory), |_, i| plan.get(i).cloned())
}

/// Whether playing `plan` from the start state of `(task_id, seed)` solves the task.
fn solves(env: &mut dyn Env, task_id: u64, seed: u64, plan: &[String]) -> bool {
    plan_episode(env, task_id, seed, plan, "").success == Some(true)
}

/// The expert's plan for `task_id` knowing where everything is: its episode with the search
/// removed. Actions are dropped, first to last and in repeated passes, while the rest still solves
/// the task, until every remaining action is needed (each check replays the environment). A task
/// the expert does not solve keeps the expert's actions.
pub fn minimal_plan(env: &mut dyn Env, task_id: u64, seed: u64) -> Vec<String> {
    let conv = expert_episode(env, task_id, seed);
    let mut plan: Vec<String> =
        conv.messages.iter().filter(|m| m.role == "assistant").map(|m| m.content.clone()).collect();
    if !solves(env, task_id, seed, &plan) {
        return plan;
    }
    // Passes until none removes an action: dropping a later action can make an earlier one
    // unnecessary.
    loop {
        let before = plan.len();
        let mut i = 0;
        while i < plan.len() {
            let mut shorter = plan.clone();
            shorter.remove(i);
            if solves(env, task_id, seed, &shorter) {
                plan = shorter;
            } else {
                i += 1;
            }
        }
        if plan.len() == before {
            return plan;
        }
    }
}

/// The expert's reflection on a failed trial (RetroAct's imitation data for the reflector): its
/// [`minimal_plan`] in words.
pub fn plan_reflection(plan: &[String]) -> String {
    format!("I should {}.", plan.join(", then "))
}

/// Expert trajectories of the first `n` tasks of `split` (environment seed 0), tokenised with `tok`.
pub fn expert_rows(env_name: &str, split: Split, n: usize, tok: &Tok, model: &str) -> Result<Vec<EpisodeRow>> {
    expert_rows_of(env_name, &super::task_ids(split, n), 0, tok, model)
}

/// Expert trajectories of `tasks` with environment seed `seed`, tokenised with `tok`.
pub fn expert_rows_of(env_name: &str, tasks: &[u64], seed: u64, tok: &Tok, model: &str) -> Result<Vec<EpisodeRow>> {
    let rows = expert_rows_and_choices(env_name, tasks, seed, tok, model, false)?;
    Ok(rows.into_iter().map(|(row, _)| row).collect())
}

/// [`expert_rows_of`], with `choices` each row with the environment's admissible actions before
/// each of the expert's actions (one list per assistant turn, in order; empty without): the
/// choices a policy constrained to admissible actions has at the expert's prefixes.
pub fn expert_rows_and_choices(
    env_name: &str,
    tasks: &[u64],
    seed: u64,
    tok: &Tok,
    model: &str,
    choices: bool,
) -> Result<Vec<(EpisodeRow, Vec<Vec<String>>)>> {
    let mut env = super::by_name(env_name)?;
    tasks
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let mut admissible = Vec::new();
            let conv = scripted_episode(env.as_mut(), id, seed, None, |env, _| {
                let action = env.expert_action();
                if choices && action.is_some() {
                    admissible.push(env.admissible_actions());
                }
                action
            });
            let env_id = env.id();
            for m in conv.messages.iter().filter(|m| m.role == "assistant") {
                crate::rollout::action_tokens(tok, &m.content, model, &env_id)?;
            }
            let mut row = to_row(tok, &conv, &env_id, model)?;
            row.seed = Some(seed as i64);
            row.env_error = env.failure();
            if let (0, Some(error)) = (i, &row.env_error) {
                return Err(crate::error::Error::Usage(format!(
                    "environment '{env_name}' failed on its first demonstration (task {id}): {error}"
                )));
            }
            Ok((row, admissible))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reflection's plan solves its task, without the expert's search, and every action in
    /// it is needed.
    #[test]
    fn the_reflection_plan_is_minimal_and_solves_its_task() {
        let mut env = super::super::by_name("household-pick").unwrap();
        let mut shorter = 0;
        for task in super::super::task_ids(Split::Train, 20) {
            let plan = minimal_plan(env.as_mut(), task, 3);
            let text = plan_reflection(&plan);
            assert!(text.starts_with("I should go to ") && text.contains(", then "), "{text}");
            assert!(solves(env.as_mut(), task, 3, &plan), "task {task}: {text}");
            for i in 0..plan.len() {
                let mut less = plan.clone();
                less.remove(i);
                assert!(!solves(env.as_mut(), task, 3, &less), "task {task}: '{}' is not needed", plan[i]);
            }
            let expert = expert_episode(env.as_mut(), task, 3).messages.len() / 2;
            shorter += usize::from(plan.len() < expert);
        }
        assert!(shorter > 5, "the expert searches in most tasks; its plan should shrink ({shorter} of 20)");
    }
}
