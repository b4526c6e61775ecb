//! StepAgent's inspection stage (O2 expert-prefix expansion + O3 generate-at-prefix): every expert
//! action is cut out with the trajectory before it, and the policy proposes its own action at that
//! prefix. No environment is stepped, so generation runs over all prefixes at once.
//!
//! Invariants:
//! - For expert action `j` (a maximal run of `action` tokens, its end-of-turn token included), the
//!   two rows of group `GROUP/sJ` share the expert's tokens before the run exactly, with earlier
//!   actions re-marked `prompt` (context, not trained); the expert row continues with the run, the
//!   agent row with the policy's tokens (and their behaviour log-probs).
//! - Rewards are step-level: 1 for the expert's action, and for the agent's 1 if it is the same
//!   text as the expert's, else 0. The agent row's `success` says whether it matched, so a run's
//!   success rate is the agent–expert agreement (StepAgent's action distance).

use super::action_scoring::Normalization;
use crate::error::{Error, Result};
use crate::model::generate::Sampling;
use crate::model::llama::Decoder;
use crate::model::tokenizer::Tok;
use crate::ops::segment::Segment;
use crate::schema::builder::EpisodeRow;

/// Prompts generated per call (bounds the KV cache).
const CHUNK: usize = 64;

/// A decision point of an expert episode: the prefix length and the action run `start..end`.
struct Decision {
    episode: usize,
    step: usize,
    start: usize,
    end: usize,
}

fn decisions(expert: &[EpisodeRow]) -> Vec<Decision> {
    let mut out = Vec::new();
    for (episode, row) in expert.iter().enumerate() {
        let is_action = |i: usize| row.segments[i] == Segment::Action as u8;
        let mut i = 0;
        let mut step = 0;
        while i < row.tokens.len() {
            if is_action(i) {
                let start = i;
                while i < row.tokens.len() && is_action(i) {
                    i += 1;
                }
                out.push(Decision { episode, step, start, end: i });
                step += 1;
            } else {
                i += 1;
            }
        }
    }
    out
}

/// The expert's prefix before `d` as a row of group `GROUP/sJ` (actions re-marked `prompt`).
fn prefix_row(expert: &EpisodeRow, d: &Decision, who: &str) -> EpisodeRow {
    let prompt = |s: &u8| if *s == Segment::Action as u8 { Segment::Prompt as u8 } else { *s };
    EpisodeRow {
        episode_id: format!("{}/s{}/{who}", expert.episode_id, d.step),
        task_id: expert.task_id.clone(),
        group_id: format!("{}/s{}", expert.group_id, d.step),
        policy_version: expert.policy_version,
        tokens: expert.tokens[..d.start].to_vec(),
        segments: expert.segments[..d.start].iter().map(prompt).collect(),
        turns: expert.turns[..d.start].to_vec(),
        terminated: true,
        env: expert.env.clone(),
        seed: expert.seed,
        model: expert.model.clone(),
        ..Default::default()
    }
}

fn finish_step(row: &mut EpisodeRow, reward: f32) {
    row.turn_rewards = vec![reward];
    row.reward = reward;
    row.success = Some(reward > 0.0);
}

/// Two rows per expert action of `expert` (see the module docs): the expert's step and the step
/// `model` samples at the same prefix, tagged with `policy_version`. With `choices` (one list of
/// admissible actions per expert action, per expert row: [`crate::env::demos::expert_rows_and_choices`])
/// the policy picks among them as in rollouts: token by token, or with `scoring` by scoring whole
/// actions.
pub fn expert_prefix_rows(
    model: &Decoder,
    tok: &Tok,
    expert: &[EpisodeRow],
    choices: Option<&[Vec<Vec<String>>]>,
    scoring: Option<Normalization>,
    sampling: &Sampling,
    policy_version: i64,
) -> Result<Vec<EpisodeRow>> {
    let eos =
        tok.token_id(&tok.eos_token).ok_or_else(|| Error::Model("the tokenizer has no end-of-turn token".into()))?;
    let points = decisions(expert);
    if let Some(c) = choices {
        let per_row = |e: usize| points.iter().filter(|d| d.episode == e).count();
        if let Some(e) = (0..expert.len()).find(|&e| c.get(e).map(Vec::len) != Some(per_row(e))) {
            return Err(Error::Usage(format!(
                "expert prefixes: episode {} has {} actions but {} lists of admissible actions",
                expert[e].episode_id,
                per_row(e),
                c.get(e).map_or(0, Vec::len)
            )));
        }
    }
    let mut sampling = sampling.clone();
    sampling.stop_tokens = vec![eos];
    let mut out = Vec::with_capacity(2 * points.len());
    for (c, chunk) in points.chunks(CHUNK).enumerate() {
        let prompts: Vec<Vec<i64>> =
            chunk.iter().map(|d| expert[d.episode].tokens[..d.start].iter().map(|&t| t as i64).collect()).collect();
        let mut s = sampling.clone();
        s.seed = sampling.seed.wrapping_add(c as i64);
        let allowed = match choices {
            Some(lists) => Some(
                chunk
                    .iter()
                    .map(|d| {
                        let e = &expert[d.episode];
                        let (model, env) = (e.model.as_deref().unwrap_or("?"), e.env.as_deref().unwrap_or("?"));
                        super::candidates(tok, lists[d.episode][d.step].clone(), eos, model, env)
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            None => None,
        };
        let gens = super::act(model, tok, &prompts, allowed.as_deref(), &s, scoring, None)?;
        for (d, g) in chunk.iter().zip(gens) {
            let e = &expert[d.episode];
            // A one-step row has one turn (`turn_rewards = [r]`): its action is turn 0 whatever
            // the expert's turn was, so per-turn operators (GAE) index its reward.
            let turn = 0;
            let run: Vec<i64> = e.tokens[d.start..d.end].iter().map(|&t| t as i64).filter(|&t| t != eos).collect();
            let body: Vec<i64> = g.tokens.iter().copied().filter(|&t| t != eos).collect();
            let matched = tok.decode(&body)?.trim() == tok.decode(&run)?.trim();

            let mut expert_step = prefix_row(e, d, "expert");
            expert_step.tokens.extend_from_slice(&e.tokens[d.start..d.end]);
            expert_step.segments.extend(std::iter::repeat_n(Segment::Action as u8, d.end - d.start));
            expert_step.turns.extend(std::iter::repeat_n(turn, d.end - d.start));
            finish_step(&mut expert_step, 1.0);

            let mut agent_step = prefix_row(e, d, "agent");
            agent_step.policy_version = policy_version;
            agent_step.logp_behavior = Some(vec![f32::NAN; d.start]);
            super::push_generation(&mut agent_step, &g, eos, turn, Segment::Action);
            finish_step(&mut agent_step, f32::from(u8::from(matched)));
            out.extend([expert_step, agent_step]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_points_are_maximal_action_runs() {
        let a = Segment::Action as u8;
        let row = EpisodeRow { tokens: vec![0; 9], segments: vec![0, 3, a, a, 2, 3, a, 3, a], ..Default::default() };
        let d = decisions(&[row]);
        let spans: Vec<(usize, usize, usize)> = d.iter().map(|d| (d.step, d.start, d.end)).collect();
        assert_eq!(spans, vec![(0, 2, 4), (1, 6, 7), (2, 8, 9)]);
    }
}
