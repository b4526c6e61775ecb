//! Multi-turn rollouts: a model plays an environment, and every episode is stored exactly as the
//! model saw and produced it.
//!
//! Invariants:
//! - Tokens are appended, never re-tokenised: the model's own tokens (with their behaviour
//!   log-probs) are the `action` segment; each observation is rendered with the chat template as
//!   the text the template adds after the action, tokenised once, and appended (the template must
//!   be prefix-stable, which is checked). Decoding an action's tokens gives exactly the text the
//!   environment received (plus the end-of-turn token).
//! - Playing episodes advance together, one turn per generation call. At most `slots` play at
//!   once: a finished episode leaves the batch and the next episode (in task order) takes its
//!   slot before the next call, so the batch stays full. With unlimited slots (the default) all
//!   episodes start together and the result does not depend on `slots` being set. K rollouts of a
//!   task share its group id (LOOP/GRPO groups).
//! - An action cut by the token budget gets the end-of-turn token appended as template (the
//!   model did not emit it); the episode goes on, so the cut does not mark the row.
//! - With expert correction (DAgger), the stored sequence is still exactly what the environment
//!   received: a policy action that differs from the expert's is either replaced by the expert's
//!   (its tokens then are the `action` segment, with no behaviour log-probs) or kept as `prompt`
//!   context (with its behaviour log-probs, which tell it from the opening prompt), so SFT on the
//!   rows trains only on expert actions, taken in states the policy reached.
//! - An environment that breaks (a bridge's process dies or hangs) ends only its own episode:
//!   the row keeps what was played, with `env_error` saying why, and the batch goes on.
//! - With `admissible`, the model chooses among the environment's admissible actions (TWOSOME's
//!   and the ALFWorld agents' setting): decoding is constrained to their token sequences, so every
//!   action is valid, and the behaviour log-probs are those of the constrained distribution. With
//!   `scoring`, whole actions are scored instead (TWOSOME; see [`action_scoring`]).
//! - The model must be able to write the environment's actions: every admissible (and expert)
//!   action of the rollout's first state survives its tokenizer (the tokens decode back to exactly
//!   the action, [`action_tokens`]), or the rollout stops before the first step with an error
//!   naming the model, the environment and the action. Later, an action it cannot write (a rare
//!   word) is left out of the choice, with a warning, never sent garbled.
//! - An episode ends at `max_turns` or at the environment's own step budget, whichever is first;
//!   its ids and `env` column carry the environment's stable identity ([`Env::id`]). Running out
//!   of turns ends the episode for good (`terminated`, not `truncated`): the task is to finish
//!   within the budget, the policy and critic do not see how many turns are left, and a bootstrap
//!   from V(s_T) at γ = 1 would make a failure worth whatever the critic says (its fixed point is
//!   then the largest return). veRL's and LOOP's multi-turn rollouts score it a failure too.

use self::action_scoring::{choose, Candidate};
use crate::env::{by_name, Env};
use crate::error::{Error, Result};
use crate::model::generate::{generate_cached, Finish, Generation, Sampling};
use crate::model::llama::Decoder;
use crate::model::prefix_cache::PrefixCache;
use crate::model::scored_choice::ScoredChoice;
use crate::model::tokenizer::{Message, Tok};
use crate::ops::segment::Segment;
use crate::schema::builder::EpisodeRow;
use crate::synth::SplitMix;

pub mod action_scoring;
pub mod prefixes;
pub mod reflexion;
pub mod with_expert;

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
    /// Expert correction (DAgger with a mixture policy): `Some(keep)` asks the environment's expert
    /// for its action at every turn; when the policy's action differs, the policy's is kept (as
    /// untrained context) with probability `keep` and replaced by the expert's otherwise. Episodes
    /// thus contain the policy's own mistakes followed by the expert's recovery from them.
    pub correction: Option<f64>,
    /// Reflexion memory: text appended to a task's first message (RetroAct's reflections from
    /// earlier trials of that task); tasks not in the map get none.
    pub memory: std::collections::BTreeMap<u64, String>,
    /// Constrain every action to the environment's admissible actions.
    pub admissible: bool,
    /// Episodes played at once (the generation batch); `None`: all. With fewer slots than
    /// episodes, a finished episode's slot goes to the next episode in task order at once.
    pub slots: Option<usize>,
    /// With `admissible`: choose by scoring whole actions, normalised so (TWOSOME;
    /// [`action_scoring`]), instead of constrained decoding.
    pub scoring: Option<action_scoring::Normalization>,
    /// Keep each episode's keys and values between turns, so that a turn feeds only the new
    /// observation instead of the whole conversation ([`crate::model::prefix_cache`]; not with
    /// `scoring`, which scores candidates in batches of its own).
    pub prefix_cache: bool,
}

impl RolloutConfig {
    /// `k` rollouts of each of `tasks` in `env` by `model_name`, sampled with `sampling`, at most
    /// `max_turns` turns each; environment seed 0, policy version 0, iteration 0, free text, all
    /// episodes at once, no correction or memory (set those fields after).
    pub fn new(env: &str, tasks: Vec<u64>, k: usize, sampling: Sampling, max_turns: usize, model_name: &str) -> Self {
        RolloutConfig {
            env: env.into(),
            tasks,
            k,
            seed: 0,
            sampling,
            max_turns,
            policy_version: 0,
            model_name: model_name.into(),
            iteration: 0,
            correction: None,
            memory: Default::default(),
            admissible: false,
            slots: None,
            scoring: None,
            prefix_cache: false,
        }
    }
}

/// Padded tokens per scoring chunk when actions are scored whole.
const SCORING_BATCH_TOKENS: usize = 16_384;

/// A uniform number in [0, 1) from `(seed, episode, turn)`, so that corrections do not
/// depend on the batch an episode was played in.
fn uniform(seed: i64, episode: usize, turn: usize) -> f64 {
    let key = (seed as u64) ^ ((episode as u64) << 20) ^ (turn as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (SplitMix::new(key).next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

struct Episode {
    env: Box<dyn Env>,
    /// The first message without the memory.
    plain: String,
    messages: Vec<Message>,
    text: String,
    row: EpisodeRow,
    /// Turns played so far.
    turn: usize,
    done: bool,
    /// Keys and values of the conversation so far (with `prefix_cache`).
    cache: Option<PrefixCache>,
}

impl Episode {
    /// Ends the episode because its environment broke (`error`): not successful, neither
    /// terminated by the task nor cut by a limit, and marked so that learners skip it.
    fn fail(&mut self, error: String) {
        self.done = true;
        self.cache = None;
        self.row.success = Some(false);
        self.row.terminated = false;
        self.row.env_error = Some(error);
    }
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
    if let Some(c) = row.allowed_counts.as_mut() {
        c.extend(std::iter::repeat_n(0, ids.len()));
    }
}

/// The tokens of `action`, which model `model` writes for environment `env`; an error naming both
/// if they do not decode back to exactly `action` (a tokenizer that cannot write the action, such
/// as a `small:ENV` model's word list on another environment: what it would send is not the
/// action).
pub(crate) fn action_tokens(tok: &Tok, action: &str, model: &str, env: &str) -> Result<Vec<i64>> {
    let ids = tok.encode(action)?;
    let back = tok.decode(&ids)?;
    if back != action {
        return Err(Error::Usage(format!(
            "model '{model}' cannot write the actions of environment '{env}': the action '{action}' comes back \
             from its tokenizer as '{back}' (a small:ENV model knows only ENV's words: use small:{env} or \
             another model)"
        )));
    }
    Ok(ids)
}

/// `actions` as candidates: each action's tokens ([`action_tokens`]) followed by the end-of-turn
/// token `eos`. An action the model cannot write (a word its vocabulary never met, in a state the
/// first-step check did not see) is left out, with one warning per process: the policy cannot
/// choose it, rather than sending a garbled action. None writable is the error of
/// [`action_tokens`].
pub(crate) fn candidates(tok: &Tok, actions: Vec<String>, eos: i64, model: &str, env: &str) -> Result<Vec<Candidate>> {
    static WARNED: std::sync::Once = std::sync::Once::new();
    let mut out = Vec::with_capacity(actions.len());
    let mut first_error = None;
    for text in actions {
        match action_tokens(tok, &text, model, env) {
            Ok(mut ids) => {
                ids.push(eos);
                out.push(Candidate { text, ids });
            }
            Err(e) => {
                WARNED.call_once(|| tracing::warn!("an admissible action was left out: {e}"));
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if out.is_empty() => Err(e),
        _ => Ok(out),
    }
}

/// One action per prompt: sampled freely, or with `allowed` only among each prompt's candidates —
/// token by token, or with `scoring` by scoring whole candidates (TWOSOME). Generation starts from
/// and updates `caches` when given (scoring ignores them).
pub(crate) fn act(
    model: &Decoder,
    tok: &Tok,
    prompts: &[Vec<i64>],
    allowed: Option<&[Vec<Candidate>]>,
    sampling: &Sampling,
    scoring: Option<action_scoring::Normalization>,
    caches: Option<&mut [Option<PrefixCache>]>,
) -> Result<Vec<Generation>> {
    match (allowed, scoring) {
        (Some(cands), Some(norm)) => {
            choose(model, prompts, cands, norm, sampling.temperature, sampling.seed, SCORING_BATCH_TOKENS)
        }
        _ => {
            let token_lists: Option<Vec<Vec<Vec<i64>>>> =
                allowed.map(|rows| rows.iter().map(|cs| cs.iter().map(|c| c.ids.clone()).collect()).collect());
            generate_cached(model, tok, prompts, sampling, token_lists.as_deref(), caches)
        }
    }
}

/// Appends generated tokens as `seg` with their behaviour log-probs, allowed sets, sampling
/// shape and scored candidates (what the learner needs to rebuild the distribution they were
/// drawn from); an action cut by the token budget gets the end-of-turn token as template (returns
/// true then).
fn push_generation(row: &mut EpisodeRow, g: &Generation, eos: i64, turn: i32, seg: Segment) -> bool {
    if g.allowed.iter().any(|a| !a.is_empty()) && row.allowed_counts.is_none() {
        row.allowed_counts = Some(vec![0; row.tokens.len()]);
        row.allowed_tokens = Some(Vec::new());
    }
    if let (Some(counts), Some(sets)) = (row.allowed_counts.as_mut(), row.allowed_tokens.as_mut()) {
        for a in &g.allowed {
            counts.push(a.len() as i32);
            sets.extend(a.iter().map(|&t| t as i32));
        }
    }
    row.sampling = g.shape.or(row.sampling);
    if let Some(choice) = &g.choice {
        let placed = ScoredChoice { start: row.tokens.len(), ..choice.clone() };
        row.choices.get_or_insert_with(Vec::new).push(placed);
    }
    row.tokens.extend(g.tokens.iter().map(|&x| x as i32));
    row.segments.extend(std::iter::repeat_n(seg as u8, g.tokens.len()));
    row.turns.extend(std::iter::repeat_n(turn, g.tokens.len()));
    row.logp_behavior.get_or_insert_with(Vec::new).extend(&g.logprobs);
    let cut = g.finish == Finish::Length;
    if cut {
        push_tokens(row, &[eos as i32], &[Segment::Template as u8], turn);
    }
    cut
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
    Ok(played(model, tok, cfg)?.into_iter().map(|(row, _)| row).collect())
}

/// A played episode: its row, and its conversation (the first user message without the memory,
/// then the actions as the model wrote them, which the environment received trimmed, and the
/// observations).
pub type Transcript = (EpisodeRow, Vec<Message>);

/// Starts episode `i` (rollout `i % k` of task `i / k`): resets its environment and renders the
/// first message.
fn start_episode(tok: &Tok, cfg: &RolloutConfig, i: usize) -> Result<Episode> {
    let task = cfg.tasks[i / cfg.k];
    let mut env = by_name(&cfg.env)?;
    let seed = cfg.seed;
    let reset = env.reset(task, seed);
    let id = env.id();
    if i == 0 && cfg.admissible && !env.lists_every_valid_action() {
        tracing::warn!(
            "environment '{id}' lists only part of its valid actions: constrained decoding cannot take the others"
        );
    }
    // Before the first step: the model must be able to write this environment's actions.
    if i == 0 {
        for action in env.admissible_actions().iter().chain(env.expert_action().as_ref()) {
            action_tokens(tok, action, &cfg.model_name, &id)?;
        }
    }
    let plain = format!("{}\n{}", reset.observation, reset.task);
    let first = match cfg.memory.get(&task) {
        Some(memory) => format!("{plain}\n\n{memory}"),
        None => plain.clone(),
    };
    let r = i % cfg.k;
    let mut ep = Episode {
        plain,
        messages: vec![Message::new("user", &first)],
        text: String::new(),
        row: EpisodeRow {
            episode_id: format!("{id}-{task}-it{}-r{r}", cfg.iteration),
            task_id: format!("{id}-{task}"),
            group_id: format!("{id}-{task}@{}", cfg.iteration),
            policy_version: cfg.policy_version,
            logp_behavior: Some(Vec::new()),
            terminated: false,
            env: Some(id),
            seed: Some(seed as i64),
            model: Some(cfg.model_name.clone()),
            ..Default::default()
        },
        env,
        turn: 0,
        done: false,
        cache: None,
    };
    append_rendered(tok, &mut ep, &first, Segment::Prompt, 0)?;
    if let Some(error) = ep.env.failure() {
        ep.fail(error);
    }
    Ok(ep)
}

/// Runs the rollouts; returns each episode's row with its conversation, in task order.
pub fn played(model: &Decoder, tok: &Tok, cfg: &RolloutConfig) -> Result<Vec<Transcript>> {
    let eos =
        tok.token_id(&tok.eos_token).ok_or_else(|| Error::Model("the tokenizer has no end-of-turn token".into()))?;
    let total = cfg.tasks.len() * cfg.k;
    let slots = cfg.slots.unwrap_or(total).max(1);
    let mut episodes: Vec<Episode> = Vec::with_capacity(total);
    let mut sampling = cfg.sampling.clone();
    sampling.stop_tokens = vec![eos];
    let bar = crate::progress::Phase::new("playing (episodes)", total as u64);
    for call in 0u64.. {
        // Refill: episodes start, in task order, while fewer than `slots` are playing.
        while episodes.len() < total && episodes.iter().filter(|e| !e.done).count() < slots {
            episodes.push(start_episode(tok, cfg, episodes.len())?);
        }
        let mut active: Vec<usize> = (0..episodes.len()).filter(|&i| !episodes[i].done).collect();
        let allowed = if cfg.admissible {
            let mut per_row = Vec::with_capacity(active.len());
            for &i in &active {
                let actions = episodes[i].env.admissible_actions();
                if let Some(error) = episodes[i].env.failure() {
                    episodes[i].fail(error);
                    continue;
                }
                let id = episodes[i].row.env.as_deref().unwrap_or(&cfg.env);
                per_row.push(candidates(tok, actions, eos, &cfg.model_name, id)?);
            }
            active.retain(|&i| !episodes[i].done);
            Some(per_row)
        } else {
            None
        };
        if active.is_empty() {
            if episodes.len() == total {
                break;
            }
            continue; // every playing episode failed: refill
        }
        let finished = episodes.iter().filter(|e| e.done).count();
        bar.set(finished as u64, format!("{} playing, {finished} of {total} done", active.len()));
        let prompts: Vec<Vec<i64>> =
            active.iter().map(|&i| episodes[i].row.tokens.iter().map(|&t| t as i64).collect()).collect();
        sampling.seed = cfg.sampling.seed.wrapping_add((cfg.iteration * 1000 + call) as i64);
        let mut caches: Vec<Option<PrefixCache>> =
            active.iter().map(|&i| if cfg.prefix_cache { episodes[i].cache.take() } else { None }).collect();
        let keep = cfg.prefix_cache.then_some(caches.as_mut_slice());
        let gens = act(model, tok, &prompts, allowed.as_deref(), &sampling, cfg.scoring, keep)?;
        for ((&i, g), cache) in active.iter().zip(gens).zip(caches) {
            let ep = &mut episodes[i];
            ep.cache = cache;
            let turn = ep.turn;
            ep.turn += 1;
            let t = turn as i32;
            let body: Vec<i64> = g.tokens.iter().copied().filter(|&x| x != eos).collect();
            let mut action = tok.decode(&body)?;
            let expert = cfg.correction.and_then(|_| ep.env.expert_action()).filter(|e| e != action.trim());
            let id = ep.row.env.as_deref().unwrap_or(&cfg.env);
            // An expert action the model cannot write is not imitated.
            let corrected = match (&expert, cfg.correction) {
                (Some(e), Some(keep)) if uniform(sampling.seed, i, turn) >= keep => {
                    action_tokens(tok, e, &cfg.model_name, id).ok().map(|ids| (e.clone(), ids))
                }
                _ => None,
            };
            if let Some((e, ids)) = corrected {
                let mut ids: Vec<i32> = ids.into_iter().map(|x| x as i32).collect();
                ids.push(eos as i32);
                push_tokens(&mut ep.row, &ids, &vec![Segment::Action as u8; ids.len()], t);
                ep.text.push_str(&e);
                ep.text.push_str(&tok.eos_token);
                action = e;
            } else {
                // A policy action the expert disagrees with is context, not a target.
                let seg = if expert.is_some() { Segment::Prompt } else { Segment::Action };
                ep.text.push_str(&tok.decode(&g.tokens)?);
                if push_generation(&mut ep.row, &g, eos, t, seg) {
                    ep.text.push_str(&tok.eos_token);
                }
            }
            let step = ep.env.step(action.trim());
            ep.row.turn_rewards.push(step.reward);
            ep.row.reward += step.reward;
            ep.messages.push(Message::new("assistant", &action));
            if let Some(error) = ep.env.failure() {
                ep.fail(error);
                continue;
            }
            // The episode's budget: the run's turns, and the environment's own step budget. Either
            // end is terminal (module docs).
            if step.done || ep.turn == cfg.max_turns.min(ep.env.max_steps()) {
                ep.done = true;
                ep.cache = None;
                ep.row.success = Some(step.success);
                ep.row.terminated = true;
                continue;
            }
            ep.messages.push(Message::new("user", &step.observation));
            append_rendered(tok, ep, &step.observation, Segment::Observation, t)?;
        }
    }
    bar.set(total as u64, "done");
    Ok(episodes
        .into_iter()
        .map(|mut e| {
            e.messages[0] = Message::new("user", &e.plain);
            (e.row, e.messages)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_the_model_cannot_write_are_left_out_and_none_writable_is_an_error() {
        let tok = crate::model::env_tokenizer::for_env("household").unwrap();
        let actions = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let kept = candidates(&tok, actions(&["go to cabinet 1", "zorblax the quux"]), 4, "m", "e").unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].text, "go to cabinet 1");
        assert_eq!(kept[0].ids.last(), Some(&4), "ends with the end-of-turn token");
        let err =
            candidates(&tok, actions(&["zorblax the quux"]), 4, "m", "e").err().expect("none writable").to_string();
        assert!(err.contains("model 'm' cannot write the actions of environment 'e'"), "{err}");
        assert!(candidates(&tok, Vec::new(), 4, "m", "e").unwrap().is_empty());
    }
}
