//! Multi-turn rollouts: a model plays an environment, and every episode is stored exactly as the
//! model saw and produced it.
//!
//! Invariants:
//! - Tokens are appended, never re-tokenised: the model's own tokens (with their behaviour
//!   log-probs) are the `action` segment; each observation is rendered with the chat template as
//!   the text the template adds after the action, tokenised once, and appended (the template must
//!   be prefix-stable, which is checked). Decoding an action's tokens gives exactly the text the
//!   environment received (plus the end-of-turn token).
//! - Episodes of a batch advance in lock-step, one turn per generation call; finished episodes
//!   leave the batch. K rollouts of a task share its group id (LOOP/GRPO groups).
//! - An action cut by the token budget is marked by `truncated` at the episode level, and the
//!   end-of-turn token is appended as template (the model did not emit it).

use crate::env::{by_name, Env};
use crate::error::{Error, Result};
use crate::model::generate::{generate, Finish, Sampling};
use crate::model::llama::Decoder;
use crate::model::tokenizer::{Message, Tok};
use crate::ops::segment::Segment;
use crate::schema::builder::EpisodeRow;

/// What to roll out.
#[derive(Debug, Clone)]
pub struct RolloutConfig {
    /// Environment name.
    pub env: String,
    /// Task ids.
    pub tasks: Vec<u64>,
    /// Rollouts per task (a group).
    pub k: usize,
    /// Environment seed: the K rollouts of a task all start from the same state (LOOP's groups
    /// compare like with like); they differ only by sampling.
    pub seed: u64,
    /// Sampling of actions (`max_new_tokens` is the per-turn budget).
    pub sampling: Sampling,
    /// Turns per episode at most.
    pub max_turns: usize,
    /// Policy version recorded on every episode.
    pub policy_version: i64,
    /// Model name recorded as provenance.
    pub model_name: String,
    /// Iteration number, part of group ids (`task@iteration`).
    pub iteration: u64,
}

struct Episode {
    env: Box<dyn Env>,
    messages: Vec<Message>,
    text: String,
    row: EpisodeRow,
    done: bool,
}

/// Tokenises `text`, marking bytes in `content` (a byte range) with `seg` and the rest as template.
fn tokenize_span(tok: &Tok, text: &str, content: std::ops::Range<usize>, seg: Segment) -> Result<(Vec<i32>, Vec<u8>)> {
    let enc = tok.inner.encode(text, false).map_err(|e| Error::Model(format!("tokenize: {e}")))?;
    let ids = enc.get_ids().iter().map(|&i| i as i32).collect();
    let segs = enc
        .get_offsets()
        .iter()
        .map(|&(s, _)| if content.contains(&s) { seg as u8 } else { Segment::Template as u8 })
        .collect();
    Ok((ids, segs))
}

fn push_tokens(row: &mut EpisodeRow, ids: &[i32], segs: &[u8], turn: i32) {
    row.tokens.extend_from_slice(ids);
    row.segments.extend_from_slice(segs);
    row.turns.extend(std::iter::repeat_n(turn, ids.len()));
    if let Some(lp) = row.logp_behavior.as_mut() {
        lp.extend(std::iter::repeat_n(f32::NAN, ids.len()));
    }
}

/// Appends the template's rendering of `messages` beyond `ep.text`, with `content` as `seg`.
fn append_rendered(tok: &Tok, ep: &mut Episode, content: &str, seg: Segment, turn: i32) -> Result<()> {
    let full = tok.apply_chat_template(&ep.messages, true)?;
    if !full.starts_with(&ep.text) {
        return Err(Error::Model("the chat template is not prefix-stable; cannot append turns token-exactly".into()));
    }
    let delta = &full[ep.text.len()..];
    let at = delta.rfind(content).unwrap_or(delta.len());
    let (ids, segs) = tokenize_span(tok, delta, at..at + content.len(), seg)?;
    push_tokens(&mut ep.row, &ids, &segs, turn);
    ep.text = full;
    Ok(())
}

/// Runs the rollouts and returns one row per episode.
pub fn rollout(model: &Decoder, tok: &Tok, cfg: &RolloutConfig) -> Result<Vec<EpisodeRow>> {
    let eos =
        tok.token_id(&tok.eos_token).ok_or_else(|| Error::Model("the tokenizer has no end-of-turn token".into()))?;
    let mut episodes = Vec::new();
    for &task in &cfg.tasks {
        for i in 0..cfg.k {
            let mut env =
                by_name(&cfg.env).ok_or_else(|| Error::Usage(format!("unknown environment '{}'", cfg.env)))?;
            let seed = cfg.seed;
            let reset = env.reset(task, seed);
            let first = format!("{}\n{}", reset.observation, reset.task);
            let mut ep = Episode {
                messages: vec![Message::new("user", &first)],
                text: String::new(),
                row: EpisodeRow {
                    episode_id: format!("{}-{task}-it{}-r{i}", cfg.env, cfg.iteration),
                    task_id: format!("{}-{task}", cfg.env),
                    group_id: format!("{}-{task}@{}", cfg.env, cfg.iteration),
                    policy_version: cfg.policy_version,
                    logp_behavior: Some(Vec::new()),
                    terminated: false,
                    env: Some(cfg.env.clone()),
                    seed: Some(seed as i64),
                    model: Some(cfg.model_name.clone()),
                    ..Default::default()
                },
                env,
                done: false,
            };
            append_rendered(tok, &mut ep, &first, Segment::Prompt, 0)?;
            episodes.push(ep);
        }
    }
    let mut sampling = cfg.sampling.clone();
    sampling.stop_tokens = vec![eos];
    for turn in 0..cfg.max_turns {
        let active: Vec<usize> = (0..episodes.len()).filter(|&i| !episodes[i].done).collect();
        if active.is_empty() {
            break;
        }
        let prompts: Vec<Vec<i64>> =
            active.iter().map(|&i| episodes[i].row.tokens.iter().map(|&t| t as i64).collect()).collect();
        sampling.seed = cfg.sampling.seed.wrapping_add((cfg.iteration * 1000 + turn as u64) as i64);
        let gens = generate(model, tok, &prompts, &sampling)?;
        for (&i, g) in active.iter().zip(gens) {
            let ep = &mut episodes[i];
            let t = turn as i32;
            let body: Vec<i64> = g.tokens.iter().copied().filter(|&x| x != eos).collect();
            let action = tok.decode(&body)?;
            ep.row.tokens.extend(g.tokens.iter().map(|&x| x as i32));
            ep.row.segments.extend(std::iter::repeat_n(Segment::Action as u8, g.tokens.len()));
            ep.row.turns.extend(std::iter::repeat_n(t, g.tokens.len()));
            ep.row.logp_behavior.as_mut().expect("set at reset").extend(&g.logprobs);
            ep.text.push_str(&tok.decode(&g.tokens)?);
            if g.finish == Finish::Length {
                push_tokens(&mut ep.row, &[eos as i32], &[Segment::Template as u8], t);
                ep.text.push_str(&tok.eos_token);
                ep.row.truncated = true;
            }
            let step = ep.env.step(action.trim());
            ep.row.turn_rewards.push(step.reward);
            ep.row.reward += step.reward;
            ep.messages.push(Message::new("assistant", &action));
            if step.done || turn + 1 == cfg.max_turns {
                ep.done = true;
                ep.row.success = Some(step.success);
                ep.row.terminated = step.done;
                ep.row.truncated |= !step.done;
                continue;
            }
            ep.messages.push(Message::new("user", &step.observation));
            append_rendered(tok, ep, &step.observation, Segment::Observation, t)?;
        }
    }
    Ok(episodes.into_iter().map(|e| e.row).collect())
}
