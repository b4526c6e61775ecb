//! `verbose:ENV`: the environment ENV with every action spelled [`FILLER_WORDS`] words longer — the
//! same tasks, dynamics, observations, rewards and expert, but each admissible action (and each of
//! the expert's) ends in [`FILLER`]. POAD's claim that the gap between token-level credit with and
//! without intra-action discounting (NTPO vs POAD) grows with action length is measured on ENV
//! against `verbose:ENV`, where everything but the action length is equal.
//!
//! Invariants:
//! - `step(a + FILLER)` is ENV's `step(a)`; an action without the filler is passed to ENV as it
//!   is (so free-text policies are not punished for the spelling, only constrained ones see it).
//! - The filler comes after the action's own words, so the tokens that tell actions apart sit
//!   [`FILLER_WORDS`] tokens further from the action's end, where its reward arrives.

use super::{by_name, Env, Reset, Step};

/// The prefix of a verbose environment's name.
pub const PREFIX: &str = "verbose:";
/// What every action gains at its end.
pub const FILLER: &str = " and then wait for the next order";
/// Words in [`FILLER`].
pub const FILLER_WORDS: usize = 7;

/// ENV with longer actions (see the module docs).
pub struct Verbose {
    inner: Box<dyn Env>,
    name: String,
}

impl Verbose {
    /// `verbose:ENV` for the registry name `ENV` (any name [`by_name`] accepts).
    pub fn new(inner: &str) -> crate::error::Result<Verbose> {
        Ok(Verbose { inner: by_name(inner)?, name: format!("{PREFIX}{inner}") })
    }
}

impl Env for Verbose {
    fn name(&self) -> &str {
        &self.name
    }

    fn reset(&mut self, task_id: u64, seed: u64) -> Reset {
        self.inner.reset(task_id, seed)
    }

    fn step(&mut self, action: &str) -> Step {
        let action = action.trim();
        self.inner.step(action.strip_suffix(FILLER.trim_start()).map_or(action, str::trim_end))
    }

    fn admissible_actions(&self) -> Vec<String> {
        self.inner.admissible_actions().into_iter().map(|a| a + FILLER).collect()
    }

    fn expert_action(&self) -> Option<String> {
        self.inner.expert_action().map(|a| a + FILLER)
    }

    fn max_steps(&self) -> usize {
        self.inner.max_steps()
    }

    fn failure(&self) -> Option<String> {
        self.inner.failure()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::expert_play;
    use super::*;

    /// The verbose kitchen is the kitchen: the expert's transcript differs only in the actions'
    /// filler, with the same return; a policy dropping the filler plays the same game.
    #[test]
    fn a_verbose_env_plays_its_env_with_longer_actions() {
        assert_eq!(FILLER.split_whitespace().count(), FILLER_WORDS);
        let mut plain = by_name("kitchen").unwrap();
        let mut long = by_name("verbose:kitchen").unwrap();
        assert_eq!(long.name(), "verbose:kitchen");
        for task in 0..20 {
            let (a, ra, sa) = expert_play(plain.as_mut(), task, 3);
            let (b, rb, sb) = expert_play(long.as_mut(), task, 3);
            assert_eq!((ra, sa), (rb, sb), "task {task}");
            assert_eq!(a.len(), b.len());
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                // Entries 2, 4, ... are the actions.
                let want = if i >= 2 && i % 2 == 0 { format!("{x}{FILLER}") } else { x.clone() };
                assert_eq!(y, &want, "task {task} entry {i}");
            }
            long.reset(task, 3);
            plain.reset(task, 3);
            let first = plain.admissible_actions()[0].clone();
            assert_eq!(long.step(&first), plain.step(&first), "task {task}: the short spelling is understood");
        }
        assert!(by_name("verbose:nope").is_err());
    }
}
