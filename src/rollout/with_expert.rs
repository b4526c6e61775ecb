//! ETO's exploration groups: the policy's episodes of a task joined by the expert's episode of the
//! same task and start state, so a preference learner can pair expert ≻ failure.
//!
//! Invariants:
//! - The expert row takes the group id of the policy rows it joins; rows are not re-tokenised.
//! - A policy episode that did not succeed is cut to at most the expert's turns + `extra_turns`
//!   (ETO's `construct_preference.py`), at a turn boundary: its tokens, segments, log-probs and
//!   turn rewards stop together, its return is recomputed, and it is marked truncated.

use crate::schema::builder::EpisodeRow;

/// Cuts `row` to its first `n` turns (no-op if it has no more).
pub fn truncate_turns(row: &mut EpisodeRow, n: usize) {
    if row.turn_rewards.len() <= n {
        return;
    }
    let keep = row.turns.iter().take_while(|&&t| (t as usize) < n).count();
    row.truncate_tokens(keep);
    row.turn_rewards.truncate(n);
    row.reward = row.turn_rewards.iter().sum();
    row.truncated = true;
    row.terminated = false;
}

/// `policy` rows followed, per group, by the expert row of the same task: `experts[i]` joins the
/// policy rows whose `task_id` is its own. Failed policy rows are cut as the module docs say.
pub fn join_expert(policy: Vec<EpisodeRow>, experts: Vec<EpisodeRow>, extra_turns: usize) -> Vec<EpisodeRow> {
    let mut out = Vec::with_capacity(policy.len() + experts.len());
    let mut policy = policy.into_iter().peekable();
    for mut expert in experts {
        let limit = expert.turn_rewards.len() + extra_turns;
        while let Some(mut row) = policy.next_if(|r| r.task_id == expert.task_id) {
            if row.success != Some(true) {
                truncate_turns(&mut row, limit);
            }
            expert.group_id.clone_from(&row.group_id);
            out.push(row);
        }
        out.push(expert);
    }
    out.extend(policy);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn episode(task: &str, turns: usize, success: bool) -> EpisodeRow {
        // Turn t: 2 action tokens then 1 observation token; the opening prompt is 1 token of turn 0.
        let mut row = EpisodeRow { task_id: task.into(), group_id: format!("{task}@1"), ..Default::default() };
        row.tokens.push(0);
        row.segments.push(0);
        row.turns.push(0);
        for t in 0..turns as i32 {
            row.tokens.extend([1, 2, 3]);
            row.segments.extend([1, 1, 2]);
            row.turns.extend([t, t, t]);
        }
        row.logp_behavior = Some(vec![-0.5; row.tokens.len()]);
        row.turn_rewards = vec![0.25; turns];
        row.reward = 0.25 * turns as f32;
        row.success = Some(success);
        row.terminated = success;
        row
    }

    #[test]
    fn failed_episodes_are_cut_at_expert_turns_plus_extra() {
        let mut expert = episode("a", 3, true);
        expert.group_id = "a-expert".into();
        let rows = join_expert(vec![episode("a", 12, false), episode("a", 9, true)], vec![expert], 5);
        assert_eq!(rows.len(), 3);
        let cut = &rows[0];
        assert_eq!(cut.turn_rewards.len(), 8);
        assert_eq!(cut.tokens.len(), 1 + 3 * 8);
        assert_eq!(cut.logp_behavior.as_ref().unwrap().len(), cut.tokens.len());
        assert_eq!(cut.reward, 2.0);
        assert!(cut.truncated && !cut.terminated);
        assert_eq!(rows[1].turn_rewards.len(), 9, "successes are kept whole");
        assert_eq!(rows[2].group_id, "a@1", "the expert joins the policy rows' group");
    }
}
