//! A salad kitchen in the style of the text Overcooked tasks that TWOSOME and POAD trained on: a small
//! admissible action set and shaped rewards.
//!
//! The agent makes one salad (a recipe of one to three ingredients, see [`RECIPES`]): take an
//! ingredient from its crate, put it on the cutting board, chop it, take it back, put it on the plate;
//! when the plate holds exactly the recipe's chopped ingredients, pick the plate up and deliver it.
//! Rewards follow TWOSOME's Overcooked: +0.2 for each sub-task (chopping a needed ingredient, putting
//! it chopped on the plate; each at most once per ingredient), +1 for the right delivery (the
//! episode ends, successful), −0.1 for a wrong one (the plate comes back empty), and −0.001 every
//! step. Invariants: the agent holds at most one thing (an ingredient, raw or chopped, or the plate);
//! the board holds at most one ingredient; crates never run out; an action is valid iff it is in
//! [`Env::admissible_actions`] (2 to 10 of them), anything else answers `"Nothing happens."`
//! and changes nothing but the step count. The recipe and the crates come from `task_id`; the crates'
//! order and what starts on the board and in the agent's hands come from `(task_id, seed)`. The
//! expert replans from any state: it clears whatever is in the way (throwing away, emptying a wrong
//! plate) and then makes the salad: 5 steps per ingredient and 2 to deliver, from a clean start.

use super::{mix64, with_article as a, Env, Reset, Step};

/// Registry name of this environment.
pub const NAME: &str = "kitchen";

/// Step budget of an episode.
pub const DEFAULT_MAX_STEPS: usize = 40;

/// Reward of a sub-task: a needed ingredient chopped, or put chopped on the plate.
pub const SUBTASK_REWARD: f32 = 0.2;
/// Reward of delivering the recipe.
pub const DELIVERY_REWARD: f32 = 1.0;
/// Reward of delivering anything else.
pub const WRONG_DELIVERY_REWARD: f32 = -0.1;
/// Reward added to every step.
pub const STEP_REWARD: f32 = -0.001;

const NOTHING: &str = "Nothing happens.";

/// Ingredients; crates hold the recipe's and some others.
const INGREDIENTS: [&str; 6] = ["tomato", "lettuce", "onion", "cucumber", "carrot", "pepper"];
/// Their plurals, for the crates.
const PLURALS: [&str; 6] = ["tomatoes", "lettuces", "onions", "cucumbers", "carrots", "peppers"];

/// Recipes: a name and ingredient indices into [`INGREDIENTS`].
pub const RECIPES: [(&str, &[usize]); 8] = [
    ("tomato salad", &[0]),
    ("lettuce salad", &[1]),
    ("carrot salad", &[4]),
    ("tomato-lettuce salad", &[0, 1]),
    ("tomato-onion salad", &[0, 2]),
    ("cucumber-pepper salad", &[3, 5]),
    ("garden salad", &[0, 1, 3]),
    ("onion-carrot-pepper salad", &[2, 4, 5]),
];

/// An ingredient, raw or chopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Food {
    ing: usize,
    chopped: bool,
}

impl Food {
    fn name(self) -> String {
        if self.chopped {
            format!("chopped {}", INGREDIENTS[self.ing])
        } else {
            INGREDIENTS[self.ing].to_string()
        }
    }
}

/// What the agent holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    Food(Food),
    Plate,
}

/// The salad kitchen.
pub struct Kitchen {
    recipe: usize,
    /// Ingredients with a crate, in the order the room lists them.
    crates: Vec<usize>,
    held: Option<Held>,
    board: Option<Food>,
    plate: Vec<Food>,
    /// Sub-tasks already rewarded: (chopped, plated) per ingredient.
    rewarded: [(bool, bool); INGREDIENTS.len()],
    intro: String,
    steps: usize,
    max_steps: usize,
    done: bool,
    success: bool,
}

impl Default for Kitchen {
    fn default() -> Self {
        Self::new()
    }
}

fn list(names: &[String]) -> String {
    match names {
        [] => "nothing".into(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

impl Kitchen {
    /// The kitchen with the default step budget.
    pub fn new() -> Self {
        Kitchen {
            recipe: 0,
            crates: Vec::new(),
            held: None,
            board: None,
            plate: Vec::new(),
            rewarded: Default::default(),
            intro: String::new(),
            steps: 0,
            max_steps: DEFAULT_MAX_STEPS,
            done: true,
            success: false,
        }
    }

    fn needs(&self) -> &'static [usize] {
        RECIPES[self.recipe].1
    }

    /// Whether the plate holds something the recipe does not want (a raw or foreign ingredient, or
    /// one twice).
    fn plate_wrong(&self) -> bool {
        self.plate.iter().enumerate().any(|(i, f)| {
            !f.chopped || !self.needs().contains(&f.ing) || self.plate[..i].iter().any(|g| g.ing == f.ing)
        })
    }

    /// The needed ingredient to bring next: the one on the board if it is missing, else the first
    /// missing in recipe order; `None` once the plate is complete.
    fn missing(&self) -> Option<usize> {
        let on_plate = |ing: usize| self.plate.iter().any(|f| f.ing == ing);
        let board = self.board.map(|f| f.ing).filter(|&i| self.needs().contains(&i) && !on_plate(i));
        board.or_else(|| self.needs().iter().copied().find(|&i| !on_plate(i)))
    }

    fn describe(&self) -> String {
        let held = match self.held {
            None => "nothing".to_string(),
            Some(Held::Plate) => "the plate".to_string(),
            Some(Held::Food(f)) => a(&f.name()),
        };
        let board = self.board.map_or("is empty".to_string(), |f| format!("holds {}", a(&f.name())));
        let plate: Vec<String> = self.plate.iter().map(|f| f.name()).collect();
        format!("You hold {held}. The cutting board {board}. The plate has {}.", list(&plate))
    }

    fn actions(&self) -> Vec<String> {
        if self.done {
            return Vec::new();
        }
        let mut out = Vec::new();
        match self.held {
            None => {
                out.extend(self.crates.iter().map(|&i| format!("take {}", a(INGREDIENTS[i]))));
                if let Some(f) = self.board {
                    out.push(format!("take the {} from the cutting board", f.name()));
                }
                out.push("pick up the plate".into());
            }
            Some(Held::Food(f)) => {
                if self.board.is_none() {
                    out.push(format!("put the {} on the cutting board", f.name()));
                }
                out.push(format!("put the {} on the plate", f.name()));
                out.push(format!("throw away the {}", f.name()));
            }
            Some(Held::Plate) => {
                out.push("deliver the plate".into());
                out.push("put down the plate".into());
                if !self.plate.is_empty() {
                    out.push("empty the plate".into());
                }
            }
        }
        if let Some(f) = self.board.filter(|f| !f.chopped) {
            out.push(format!("chop the {}", INGREDIENTS[f.ing]));
        }
        out
    }

    /// Applies a valid action; returns its observation and sub-task reward.
    fn apply(&mut self, action: &str) -> (String, f32) {
        let mut reward = 0.0;
        let crate_of = |ing: &usize| action == format!("take {}", a(INGREDIENTS[*ing]));
        let text = if let Some(&ing) = self.crates.iter().find(|i| crate_of(i)) {
            self.held = Some(Held::Food(Food { ing, chopped: false }));
            format!("You take {} from its crate.", a(INGREDIENTS[ing]))
        } else if action.ends_with("from the cutting board") {
            let f = self.board.take().expect("valid");
            self.held = Some(Held::Food(f));
            format!("You take the {} from the cutting board.", f.name())
        } else if action == "pick up the plate" {
            self.held = Some(Held::Plate);
            "You pick up the plate.".into()
        } else if action.ends_with("on the cutting board") {
            let Some(Held::Food(f)) = self.held.take() else { unreachable!("valid") };
            self.board = Some(f);
            format!("You put the {} on the cutting board.", f.name())
        } else if action.ends_with("on the plate") {
            let Some(Held::Food(f)) = self.held.take() else { unreachable!("valid") };
            let needed = f.chopped && self.missing_on_plate(f.ing);
            self.plate.push(f);
            if needed && !self.rewarded[f.ing].1 {
                self.rewarded[f.ing].1 = true;
                reward = SUBTASK_REWARD;
            }
            format!("You put the {} on the plate.", f.name())
        } else if action.starts_with("throw away") {
            let Some(Held::Food(f)) = self.held.take() else { unreachable!("valid") };
            format!("You throw the {} into the bin.", f.name())
        } else if action.starts_with("chop the ") {
            let f = self.board.as_mut().expect("valid");
            f.chopped = true;
            let ing = f.ing;
            if self.needs().contains(&ing) && !self.rewarded[ing].0 {
                self.rewarded[ing].0 = true;
                reward = SUBTASK_REWARD;
            }
            format!("You chop the {} on the cutting board.", INGREDIENTS[ing])
        } else if action == "put down the plate" {
            self.held = None;
            "You put the plate down on the counter.".into()
        } else if action == "empty the plate" {
            self.plate.clear();
            "You empty the plate into the bin.".into()
        } else {
            debug_assert_eq!(action, "deliver the plate");
            self.held = None;
            let salad = RECIPES[self.recipe].0;
            if self.missing().is_none() && !self.plate_wrong() {
                self.done = true;
                self.success = true;
                reward = DELIVERY_REWARD;
                format!("You deliver the {salad}. Order complete!")
            } else {
                self.plate.clear();
                reward = WRONG_DELIVERY_REWARD;
                format!("You deliver the plate, but it is not a {salad}. A clean plate is put back on the counter.")
            }
        };
        (text, reward)
    }

    /// Whether `ing` is needed and not yet on the plate (before the food being added).
    fn missing_on_plate(&self, ing: usize) -> bool {
        self.needs().contains(&ing) && !self.plate.iter().any(|f| f.ing == ing)
    }
}

/// SplitMix64 stream, for the layout.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        (mix64(self.0) % n as u64) as usize
    }
}

impl Env for Kitchen {
    fn name(&self) -> &str {
        NAME
    }

    fn reset(&mut self, task_id: u64, seed: u64) -> Reset {
        let mut by_task = Rng(mix64(task_id ^ 0x0C0C_4E11));
        self.recipe = by_task.below(RECIPES.len());
        let needs = self.needs();
        let extra = 1 + by_task.below(3);
        let mut crates: Vec<usize> = needs.to_vec();
        let mut others: Vec<usize> = (0..INGREDIENTS.len()).filter(|i| !needs.contains(i)).collect();
        for _ in 0..extra.min(others.len()) {
            crates.push(others.remove(by_task.below(others.len())));
        }
        let mut by_seed = Rng(mix64(task_id.wrapping_mul(0x9E37_79B9) ^ seed ^ 0x5EED));
        for i in (1..crates.len()).rev() {
            crates.swap(i, by_seed.below(i + 1));
        }
        // Something may already be on the board or in hand: any crate's ingredient, raw.
        let raw = |r: &mut Rng| Food { ing: crates[r.below(crates.len())], chopped: false };
        self.board = (by_seed.below(3) == 0).then(|| raw(&mut by_seed));
        self.held = (by_seed.below(3) == 0).then(|| Held::Food(raw(&mut by_seed)));
        self.crates = crates;
        self.plate.clear();
        self.rewarded = Default::default();
        self.steps = 0;
        self.done = false;
        self.success = false;
        let names: Vec<String> = self.crates.iter().map(|&i| PLURALS[i].to_string()).collect();
        self.intro = format!(
            "You are in a kitchen. There are crates of {}, a cutting board, a plate on the counter, a bin and a \
             serving window. {}",
            list(&names),
            self.describe()
        );
        let salad = RECIPES[self.recipe].0;
        let parts: Vec<String> = needs.iter().map(|&i| format!("chopped {}", INGREDIENTS[i])).collect();
        let task = format!("Your task is to: make {} ({} on a plate) and deliver it.", a(salad), list(&parts));
        Reset { observation: self.intro.clone(), task }
    }

    /// Every step, valid or not, adds [`STEP_REWARD`]; after the episode is done every action answers
    /// `"Nothing happens."` with reward 0.
    fn step(&mut self, action: &str) -> Step {
        if self.done {
            return Step { observation: NOTHING.into(), reward: 0.0, done: true, success: self.success };
        }
        self.steps += 1;
        let action = action.trim();
        let (mut observation, mut reward) = if self.actions().iter().any(|a| a == action) {
            let (text, r) = self.apply(action);
            (format!("{text} {}", self.describe()), r)
        } else {
            (NOTHING.to_string(), 0.0)
        };
        reward += STEP_REWARD;
        if self.success {
            observation = observation.split(" You hold").next().unwrap_or_default().to_string();
        } else if self.steps >= self.max_steps {
            self.done = true;
        }
        Step { observation, reward, done: self.done, success: self.success }
    }

    fn admissible_actions(&self) -> Vec<String> {
        self.actions()
    }

    fn expert_action(&self) -> Option<String> {
        if self.done {
            return None;
        }
        let wrong = self.plate_wrong();
        let missing = self.missing();
        Some(match self.held {
            Some(Held::Plate) if wrong => "empty the plate".into(),
            Some(Held::Plate) if missing.is_none() => "deliver the plate".into(),
            Some(Held::Plate) => "put down the plate".into(),
            Some(Held::Food(f)) => {
                let useful = self.missing_on_plate(f.ing);
                if useful && f.chopped && !wrong {
                    format!("put the {} on the plate", f.name())
                } else if useful && self.board.is_none() {
                    format!("put the {} on the cutting board", f.name())
                } else {
                    format!("throw away the {}", f.name())
                }
            }
            None if wrong || missing.is_none() => "pick up the plate".into(),
            None => {
                let m = missing.expect("checked");
                match self.board {
                    Some(b) if b.ing == m && b.chopped => format!("take the {} from the cutting board", b.name()),
                    Some(b) if b.ing == m => format!("chop the {}", INGREDIENTS[m]),
                    Some(b) => format!("take the {} from the cutting board", b.name()),
                    None => format!("take {}", a(INGREDIENTS[m])),
                }
            }
        })
    }

    fn max_steps(&self) -> usize {
        self.max_steps
    }
}

#[cfg(test)]
mod tests;
