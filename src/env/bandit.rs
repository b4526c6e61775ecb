//! A one-step contextual bandit: the smallest environment on which an RL learner must visibly
//! learn, for sanity tests of every algorithm in seconds.
//!
//! A task shows a lamp of one of [`COLORS`] and offers one button per colour (the admissible
//! actions, `press COLOR`, in an order that depends on `(task_id, seed)`). Pressing the button of
//! the lamp's colour gives reward 1 and success; any other admissible button gives 0. Either way
//! the episode ends after one step; anything not admissible answers `"Nothing happens."`, gives 0
//! and also ends it. The lamp's colour is a function of `task_id`, so the dev split holds every
//! colour. A uniformly random policy succeeds on 1 / [`COLORS`]`.len()` of the tasks; the expert
//! presses the right button.

use super::{mix64, Env, Reset, Step};

/// Registry name of this environment.
pub const NAME: &str = "bandit";

/// The lamp's colours, one button each.
pub const COLORS: [&str; 4] = ["red", "green", "blue", "yellow"];

/// The bandit.
#[derive(Default)]
pub struct Bandit {
    lamp: usize,
    order: [usize; COLORS.len()],
    done: bool,
}

impl Bandit {
    /// A bandit (call [`Env::reset`] before stepping).
    pub fn new() -> Self {
        Bandit::default()
    }
}

fn press(color: usize) -> String {
    format!("press {}", COLORS[color])
}

impl Env for Bandit {
    fn name(&self) -> &str {
        NAME
    }

    fn reset(&mut self, task_id: u64, seed: u64) -> Reset {
        self.lamp = (mix64(task_id ^ 0xB4AD) % COLORS.len() as u64) as usize;
        let mut order = [0, 1, 2, 3];
        let mut z = mix64(task_id.wrapping_mul(31) ^ seed.wrapping_add(0x0DE5));
        for i in (1..order.len()).rev() {
            order.swap(i, (z % (i as u64 + 1)) as usize);
            z = mix64(z);
        }
        self.order = order;
        self.done = false;
        Reset {
            observation: format!("The lamp is {}.", COLORS[self.lamp]),
            task: "Your task is to: press the button of the lamp's colour.".into(),
        }
    }

    fn step(&mut self, action: &str) -> Step {
        self.done = true;
        let success = action == press(self.lamp);
        let observation = if success {
            "Correct.".to_string()
        } else if self.admissible_actions().iter().any(|a| a == action) {
            "Wrong button.".to_string()
        } else {
            "Nothing happens.".to_string()
        };
        Step { observation, reward: f32::from(u8::from(success)), done: true, success }
    }

    fn admissible_actions(&self) -> Vec<String> {
        self.order.iter().map(|&c| press(c)).collect()
    }

    fn expert_action(&self) -> Option<String> {
        (!self.done).then(|| press(self.lamp))
    }

    fn max_steps(&self) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::testing::{expert_play, random_play};

    #[test]
    fn expert_solves_and_random_gets_a_quarter() {
        let mut env = Bandit::new();
        for id in 0..100 {
            let (_, ret, success) = expert_play(&mut env, id, 0);
            assert!(success && ret == 1.0, "task {id}");
        }
        let (solved, _) = random_play(&mut env, 2000, 3, |acts| assert_eq!(acts.len(), COLORS.len()));
        assert!((400..600).contains(&solved), "{solved} of 2000");
    }

    #[test]
    fn every_colour_appears_in_the_dev_split_and_orders_vary() {
        let mut env = Bandit::new();
        let mut seen = [0usize; COLORS.len()];
        let mut orders = std::collections::BTreeSet::new();
        for id in crate::env::task_ids(crate::env::Split::Dev, 200) {
            env.reset(id, 1);
            seen[env.lamp] += 1;
            orders.insert(env.admissible_actions());
        }
        assert!(seen.iter().all(|&n| n >= 30), "{seen:?}");
        assert!(orders.len() > 10, "{} orders", orders.len());
        env.reset(5, 0);
        assert_eq!(env.step("dance").observation, "Nothing happens.");
    }
}
