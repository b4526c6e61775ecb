//! Decision steps: folds turns without action tokens ("empty actions") into
//! the preceding non-empty action, shared by [`super::gae`] and
//! [`super::reinforce_pp`].
//!
//! An empty turn `e` is treated as a step whose value is perfect
//! (`V_e = r_e + γ·V_next`, so its TD error is 0). Eliminating it, the
//! preceding non-empty action `a` followed by `k` empty turns `e1..ek` gets
//! the effective reward `r_a + γ·r_e1 + … + γ^k·r_ek` and the discount
//! `γ^(k+1)` to whatever follows (the next non-empty action's value, or the
//! bootstrap value after the last turn). Rewards of empty turns that precede
//! the first non-empty action are credited to no step (there is no token to
//! carry them). Powers are formed by repeated multiplication in turn order,
//! so results are deterministic.

use super::action_boundaries::ActionSpan;

/// One decision step: a non-empty action plus the empty turns folded into it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// The action's token range.
    pub span: ActionSpan,
    /// Effective reward `r_a + γ·r_e1 + … + γ^k·r_ek`.
    pub reward: f32,
    /// Discount to the next step or bootstrap, `γ^(k+1)`.
    pub discount: f32,
    /// Number of turns covered, `k + 1` (the exponent of `discount`).
    pub n_turns: i32,
}

/// Folds empty turns into the preceding non-empty action; one [`Step`] per
/// non-empty action, in turn order.
///
/// # Panics
/// If `spans` and `turn_rewards` differ in length.
pub fn folded_steps(spans: &[Option<ActionSpan>], turn_rewards: &[f32], gamma: f32) -> Vec<Step> {
    assert_eq!(spans.len(), turn_rewards.len(), "one span entry per turn reward");
    let mut steps: Vec<Step> = Vec::with_capacity(spans.len());
    for (span, &reward) in spans.iter().zip(turn_rewards) {
        match span {
            Some(span) => steps.push(Step { span: *span, reward, discount: gamma, n_turns: 1 }),
            None => {
                if let Some(step) = steps.last_mut() {
                    step.reward += step.discount * reward;
                    step.discount *= gamma;
                    step.n_turns += 1;
                }
            }
        }
    }
    steps
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::action_boundaries::{action_spans, ActionSpan};
    use super::*;
    use proptest::prelude::*;

    /// A generated episode: per-token segments, turns, values and per-turn rewards.
    #[derive(Debug, Clone)]
    pub(crate) struct Episode {
        pub segments: Vec<u8>,
        pub values: Vec<f32>,
        pub rewards: Vec<f32>,
        pub spans: Vec<Option<ActionSpan>>,
    }

    /// Episodes of up to 6 turns: a prompt, then per turn an action of 0..4
    /// tokens (0 = empty) followed by 0..3 observation tokens. Rewards are
    /// small integers so sums are exact in f32.
    pub(crate) fn episodes() -> impl Strategy<Value = Episode> {
        (
            prop::collection::vec((0usize..4, 0usize..3, -4i32..5), 0..6),
            0usize..3,
            prop::collection::vec(-2.0f32..2.0, 64),
        )
            .prop_map(|(layout, prompt, pool)| {
                let mut segments = vec![0u8; prompt];
                let mut turns = vec![0i32; prompt];
                for (t, &(alen, olen, _)) in layout.iter().enumerate() {
                    segments.extend(std::iter::repeat_n(1u8, alen));
                    segments.extend(std::iter::repeat_n(2u8, olen));
                    turns.extend(std::iter::repeat_n(t as i32, alen + olen));
                }
                let rewards: Vec<f32> = layout.iter().map(|&(_, _, r)| r as f32).collect();
                let spans = action_spans(&segments, &turns, rewards.len()).expect("generated layout is valid");
                let values = pool[..segments.len()].to_vec();
                Episode { segments, values, rewards, spans }
            })
    }

    fn sp(turn: usize, start: usize, end: usize) -> Option<ActionSpan> {
        Some(ActionSpan { turn, start, end })
    }

    #[test]
    fn golden_folding() {
        // turns: 0 empty, 1 action, 2 empty, 3 empty, 4 action; γ = 0.5
        let spans = [None, sp(1, 0, 2), None, None, sp(4, 5, 6)];
        let r = [8.0, 1.0, 2.0, 4.0, 3.0];
        let steps = folded_steps(&spans, &r, 0.5);
        assert_eq!(steps.len(), 2);
        // turn 0's reward 8 is credited nowhere.
        // step 1: 1 + 0.5·2 + 0.25·4 = 3; discount 0.5³ = 0.125; 3 turns
        assert_eq!(steps[0].span, ActionSpan { turn: 1, start: 0, end: 2 });
        assert_eq!(steps[0].reward, 3.0);
        assert_eq!(steps[0].discount, 0.125);
        assert_eq!(steps[0].n_turns, 3);
        // step 4: 3, discount 0.5
        assert_eq!((steps[1].reward, steps[1].discount, steps[1].n_turns), (3.0, 0.5, 1));
        assert!(folded_steps(&[None, None], &[1.0, 2.0], 0.9).is_empty());
    }

    proptest! {
        #[test]
        fn steps_cover_every_turn_after_first_action(ep in episodes()) {
            let steps = folded_steps(&ep.spans, &ep.rewards, 1.0);
            let first = ep.spans.iter().position(Option::is_some);
            let covered: i32 = steps.iter().map(|s| s.n_turns).sum();
            prop_assert_eq!(covered as usize, first.map_or(0, |f| ep.spans.len() - f));
            // γ = 1: effective rewards sum to all rewards from the first action on.
            let total: f32 = steps.iter().map(|s| s.reward).sum();
            let expected: f32 = first.map_or(0.0, |f| ep.rewards[f..].iter().sum());
            prop_assert_eq!(total, expected);
        }
    }
}
