//! Expert demonstrations: the environment's expert plays each task to the end, and the episode is
//! stored as a token-exact trajectory through a model's chat template (the same conversion as
//! `trajflow import`: observations are user turns, the expert's actions assistant turns), ready
//! for SFT, StepAgent's expert prefixes and RetroAct's imitation stage.

use super::{Env, Split};
use crate::error::{Error, Result};
use crate::import::{to_row, Conversation, Msg};
use crate::model::tokenizer::Tok;
use crate::schema::builder::EpisodeRow;

/// Plays task `task_id` with the expert; returns the conversation and whether it succeeded.
pub fn expert_episode(env: &mut dyn Env, task_id: u64, seed: u64) -> Conversation {
    let reset = env.reset(task_id, seed);
    let mut messages = vec![Msg { role: "user".into(), content: format!("{}\n{}", reset.observation, reset.task) }];
    let mut success = false;
    for _ in 0..env.max_steps() {
        let Some(action) = env.expert_action() else { break };
        let step = env.step(&action);
        messages.push(Msg { role: "assistant".into(), content: action });
        success = step.success;
        if step.done {
            break;
        }
        messages.push(Msg { role: "user".into(), content: step.observation });
    }
    Conversation {
        id: format!("{}-expert-{task_id}-{seed}", env.name()),
        task_id: format!("{}-{task_id}", env.name()),
        group_id: format!("{}-{task_id}", env.name()),
        messages,
        reward: f32::from(u8::from(success)),
        success: Some(success),
    }
}

/// Expert trajectories of the first `n` tasks of `split` (environment seed 0), tokenised with `tok`.
pub fn expert_rows(env_name: &str, split: Split, n: usize, tok: &Tok, model: &str) -> Result<Vec<EpisodeRow>> {
    expert_rows_of(env_name, &super::task_ids(split, n), 0, tok, model)
}

/// Expert trajectories of `tasks` with environment seed `seed`, tokenised with `tok`.
pub fn expert_rows_of(env_name: &str, tasks: &[u64], seed: u64, tok: &Tok, model: &str) -> Result<Vec<EpisodeRow>> {
    let mut env = super::by_name(env_name).ok_or_else(|| {
        Error::Usage(format!("unknown environment '{env_name}' (known: {})", super::ENV_NAMES.join(", ")))
    })?;
    tasks
        .iter()
        .map(|&id| {
            let conv = expert_episode(env.as_mut(), id, seed);
            let mut row = to_row(tok, &conv, env_name, model)?;
            row.seed = Some(seed as i64);
            Ok(row)
        })
        .collect()
}
