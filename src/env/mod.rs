//! Text environments that LLM agents act in during rollouts.
//!
//! An [`Env`] is a deterministic state machine over plain text: [`Env::reset`] with the same
//! `(task_id, seed)` always yields the same episode, and the same action sequence afterwards always yields the
//! same observations. An action that is not valid in the current state never changes the world: it answers
//! `"Nothing happens."` with reward 0, or the environment's step penalty (it still counts toward [`Env::max_steps`]).
//! Rewards are sparse in the household (1.0 on the step that completes the task, 0 otherwise) and shaped in the
//! kitchen (sub-tasks, deliveries, a step penalty) and in bridged environments (score increments). Every environment carries an expert ([`Env::expert_action`]) that
//! plans from the current state, so it can take over after any prefix of agent actions. Task ids are split into
//! train/dev/test by a fixed hash ([`split_of`]), independent of the environment, so held-out ids stay held out.

pub mod bandit;
pub mod bridge;
#[cfg(feature = "torch")]
pub mod demos;
pub mod household;
pub mod kitchen;
pub mod qa;
#[cfg(test)]
mod testing;
pub mod tools;
pub mod verbose;

/// What an environment shows the agent at the start of an episode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reset {
    /// The opening observation (e.g. the room description).
    pub observation: String,
    /// The task statement, `"Your task is to: ..."`.
    pub task: String,
}

/// The outcome of one [`Env::step`].
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Text feedback for the action (`"Nothing happens."` when the action was invalid).
    pub observation: String,
    /// This step's reward (household: 1.0 on the step that completes the task, 0.0 otherwise).
    pub reward: f32,
    /// True once the task is completed or the step budget is spent.
    pub done: bool,
    /// True iff the task has been completed.
    pub success: bool,
}

/// A text environment: deterministic in `(task_id, seed)` and in the action sequence.
pub trait Env: Send {
    /// Registry name of the environment (see [`by_name`]).
    fn name(&self) -> &str;
    /// The environment's identity in stored data (ids, the `env` column): the same on every
    /// machine. The registry name, except for a user's bridge (see [`bridge`]), whose identity is
    /// known once its process has started (after the first reset).
    fn id(&self) -> String {
        self.name().to_string()
    }
    /// Starts a new episode; the same `(task_id, seed)` always produces the same episode.
    fn reset(&mut self, task_id: u64, seed: u64) -> Reset;
    /// Applies one text action. Unknown or invalid actions answer `"Nothing happens."`, reward 0, and leave the
    /// world unchanged.
    fn step(&mut self, action: &str) -> Step;
    /// The valid commands in the current state (empty once the episode is done).
    fn admissible_actions(&self) -> Vec<String>;
    /// Whether [`Env::admissible_actions`] lists every valid action (a bridge may declare its lists
    /// `partial`: ScienceWorld's omit a quarter of its expert's actions, so constrained decoding
    /// cannot take those).
    fn lists_every_valid_action(&self) -> bool {
        true
    }
    /// The expert's next action from the current state, or `None` once the episode is done.
    fn expert_action(&self) -> Option<String>;
    /// Step budget of an episode; the episode ends unsuccessfully when it is spent.
    fn max_steps(&self) -> usize;
    /// Why the episode in play broke, if the environment itself failed (a bridged environment's
    /// process died, hung or answered an error; see [`bridge`]). The episode is then done and not
    /// successful, through no fault of the agent's; the next reset starts afresh.
    fn failure(&self) -> Option<String> {
        None
    }
}

/// Names of the built-in environments accepted by [`by_name`].
pub const ENV_NAMES: &[&str] =
    &[household::NAME, household::PICK_NAME, kitchen::NAME, qa::NAME, qa::F1_NAME, tools::NAME, bandit::NAME];

/// Builds an environment by registry name, with default settings: a built-in one (`"household"`,
/// `"household-pick"`, `"kitchen"`, `"qa"`, `"qa-f1"`, `"tools"`; `"verbose:ENV"`, ENV with longer actions) or a bridged one (`"scienceworld[:TASK]"`, `"twx[:GAME]"`,
/// `"bridge:PROGRAM ARGS..."`; see [`bridge`]). A bridge starts its process on the first reset.
pub fn by_name(name: &str) -> crate::error::Result<Box<dyn Env>> {
    match name {
        household::NAME => Ok(Box::new(household::Household::new())),
        household::PICK_NAME => Ok(Box::new(household::Household::pick_and_place())),
        kitchen::NAME => Ok(Box::new(kitchen::Kitchen::new())),
        qa::NAME => Ok(Box::new(qa::Qa::exact_match())),
        qa::F1_NAME => Ok(Box::new(qa::Qa::token_f1())),
        tools::NAME => Ok(Box::new(tools::Tools::new())),
        bandit::NAME => Ok(Box::new(bandit::Bandit::new())),
        _ if name.starts_with(verbose::PREFIX) => Ok(Box::new(verbose::Verbose::new(&name[verbose::PREFIX.len()..])?)),
        _ => match bridge::Bridge::by_name(name) {
            Some(b) => Ok(Box::new(b)),
            None if name.starts_with(bridge::USER_PREFIX) => Err(crate::error::Error::Usage(format!(
                "environment '{name}': the bridge command is empty or has unbalanced quotes \
                 (quote a path with spaces: bridge:python3 'my envs/env.py')"
            ))),
            None => Err(crate::error::Error::Usage(format!(
                "unknown environment '{name}' (built in: {}, verbose:ENV; bridged: {}[:VARIANT], {}PROGRAM ARGS...)",
                ENV_NAMES.join(", "),
                bridge::BRIDGE_NAMES.join("[:VARIANT], "),
                bridge::USER_PREFIX
            ))),
        },
    }
}

/// Which part of the task-id space a task belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// About 80% of task ids.
    Train,
    /// About 10% of task ids.
    Dev,
    /// About 10% of task ids.
    Test,
}

/// The split of a task id: a fixed hash of the id, 8/1/1 buckets out of 10 for train/dev/test.
pub fn split_of(task_id: u64) -> Split {
    match mix64(task_id ^ 0x5EED_5EED_5EED_5EED) % 10 {
        8 => Split::Dev,
        9 => Split::Test,
        _ => Split::Train,
    }
}

/// The first `n` task ids (ascending from 0) that belong to `split`.
pub fn task_ids(split: Split, n: usize) -> Vec<u64> {
    (0u64..).filter(|&id| split_of(id) == split).take(n).collect()
}

/// `name` with its indefinite article (`an onion`, `a tomato`).
fn with_article(name: &str) -> String {
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {name}")
}

/// SplitMix64's output function: a bijective 64-bit mixer.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_about_80_10_10_and_disjoint() {
        let n = 100_000u64;
        let mut counts = [0usize; 3];
        for id in 0..n {
            counts[split_of(id) as usize] += 1;
        }
        assert!((78_000..82_000).contains(&counts[0]), "{counts:?}");
        assert!((9_000..11_000).contains(&counts[1]), "{counts:?}");
        assert!((9_000..11_000).contains(&counts[2]), "{counts:?}");
        let dev = task_ids(Split::Dev, 50);
        assert_eq!(dev.len(), 50);
        assert!(dev.iter().all(|&id| split_of(id) == Split::Dev));
        assert!(dev.windows(2).all(|w| w[0] < w[1]));
        assert!(task_ids(Split::Test, 50).iter().all(|id| !dev.contains(id)));
    }

    #[test]
    fn registry() {
        for name in ENV_NAMES {
            let env = by_name(name).expect("registered");
            assert_eq!(env.name(), *name);
        }
        let err = by_name("nope").err().unwrap().to_string();
        assert!(err.contains("unknown environment 'nope'") && err.contains("twx[:VARIANT]"), "{err}");
        for name in ["scienceworld", "scienceworld:boil", "twx:coin", "bridge:python3 my_env.py"] {
            assert_eq!(by_name(name).unwrap().name(), name, "a bridge starts nothing until reset");
        }
        assert!(by_name("twx:").is_err() && by_name("bridge:").is_err());
    }
}
