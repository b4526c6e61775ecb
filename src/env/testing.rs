//! Helpers shared by the environments' acceptance tests: an expert episode as a transcript, and
//! a uniformly random admissible policy.

use super::Env;
use crate::synth::SplitMix;

/// The expert plays `(id, seed)` to the end, each of its actions checked to be admissible.
/// Returns the transcript (observation, task, then action and observation per step), the return
/// and whether the task was solved.
pub fn expert_play(env: &mut dyn Env, id: u64, seed: u64) -> (Vec<String>, f32, bool) {
    let r = env.reset(id, seed);
    let mut out = vec![r.observation, r.task];
    let (mut ret, mut success) = (0.0, false);
    while let Some(a) = env.expert_action() {
        assert!(env.admissible_actions().contains(&a), "{} task {id}: expert action '{a}' not admissible", env.name());
        let s = env.step(&a);
        out.push(a);
        out.push(s.observation);
        ret += s.reward;
        success = s.success;
        if s.done {
            break;
        }
    }
    (out, ret, success)
}

/// A policy drawing uniformly among the admissible actions plays tasks `0..tasks` from `seed`,
/// with `check` called on every admissible list; returns (tasks solved, total return).
pub fn random_play(env: &mut dyn Env, tasks: u64, seed: u64, check: impl Fn(&[String])) -> (usize, f32) {
    let mut rng = SplitMix::new(seed ^ 0x4A4D);
    let (mut solved, mut total) = (0, 0.0);
    for id in 0..tasks {
        env.reset(id, seed);
        loop {
            let acts = env.admissible_actions();
            check(&acts);
            let s = env.step(&acts[rng.range(0, acts.len() - 1)]);
            total += s.reward;
            if s.done {
                solved += usize::from(s.success);
                break;
            }
        }
    }
    (solved, total)
}
