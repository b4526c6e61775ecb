//! REINFORCE++ token returns: a reverse discounted cumulative sum over the
//! action tokens of one episode, one factor γ per action token. Each turn's
//! reward sits on the last token of its action; empty turns are folded into
//! the preceding action as in [`super::steps`] (effective reward
//! `r_a + γ·r_e1 + …`, factor `γ^(k+1)` from the next action's first token to
//! this action's last token; rewards of empty turns before the first action
//! are credited nowhere). Non-action tokens get 0.0 and are not part of the
//! sum; how the sum crosses them is the [`ObservationPolicy`]:
//! - [`ObservationPolicy::Reset`] (veRL): the running sum is zeroed when a gap
//!   of non-action tokens separates two actions, so a turn sees none of the
//!   later turns' rewards. Two actions adjacent in the token list (no token
//!   between them) are not separated.
//! - [`ObservationPolicy::Carry`] (AgentGym-RL): the sum carries across gaps
//!   unchanged. This equals [`super::gae::gae`] with `γ_intra = γ`,
//!   `λ = λ_intra = 1`, zero values and zero bootstrap.
//!
//! There is no bootstrap: REINFORCE++ is an outcome estimator. Whitening
//! ([`super::normalize`]) is a separate step.

use super::action_boundaries::ActionSpan;
use super::steps::folded_steps;

/// How the running return crosses non-action tokens between actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObservationPolicy {
    /// Zero the running sum across a gap (veRL).
    Reset,
    /// Carry the running sum across a gap (AgentGym-RL).
    Carry,
}

/// Writes the REINFORCE++ return of every action token into `out` (fully
/// overwritten; 0.0 on non-action tokens). See the module docs.
///
/// # Panics
/// If `out.len() != segments_len`, if `spans.len() != turn_rewards.len()`, or
/// if a span ends beyond `segments_len`.
pub fn reinforce_pp_returns(
    spans: &[Option<ActionSpan>],
    turn_rewards: &[f32],
    segments_len: usize,
    gamma: f32,
    obs: ObservationPolicy,
    out: &mut [f32],
) {
    assert_eq!(out.len(), segments_len, "one return per token");
    out.fill(0.0);
    let mut running = 0.0f32;
    let mut next_start: Option<usize> = None;
    for step in folded_steps(spans, turn_rewards, gamma).iter().rev() {
        let ActionSpan { start, end, .. } = step.span;
        if obs == ObservationPolicy::Reset && next_start.is_some_and(|s| s > end) {
            running = 0.0;
        }
        running = step.reward + step.discount * running;
        out[end - 1] = running;
        for j in (start..end - 1).rev() {
            running *= gamma;
            out[j] = running;
        }
        next_start = Some(start);
    }
}

#[cfg(test)]
mod tests {
    use super::super::action_boundaries::action_spans;
    use super::super::gae::{gae, GaeParams};
    use super::super::steps::tests::episodes;
    use super::*;
    use proptest::prelude::*;

    fn run(seg: &[u8], turns: &[i32], r: &[f32], obs: ObservationPolicy) -> Vec<f32> {
        let spans = action_spans(seg, turns, r.len()).unwrap();
        let mut out = vec![f32::NAN; seg.len()];
        reinforce_pp_returns(&spans, r, seg.len(), 0.5, obs, &mut out);
        out
    }

    // P A0 A0 O A1 A1, r = [1, 2], γ = 0.5
    const SEG: [u8; 6] = [0, 1, 1, 2, 1, 1];
    const TURNS: [i32; 6] = [0, 0, 0, 0, 1, 1];

    #[test]
    fn golden_reset() {
        // A1: j=5: 2; j=4: 0.5·2 = 1. Gap (token 3) → reset.
        // A0: j=2: 1 + 0.5·0 = 1; j=1: 0.5·1 = 0.5
        assert_eq!(run(&SEG, &TURNS, &[1.0, 2.0], ObservationPolicy::Reset), vec![0.0, 0.5, 1.0, 0.0, 1.0, 2.0]);
    }

    #[test]
    fn golden_carry() {
        // A1 as above; A0: j=2: 1 + 0.5·1 = 1.5; j=1: 0.5·1.5 = 0.75
        assert_eq!(run(&SEG, &TURNS, &[1.0, 2.0], ObservationPolicy::Carry), vec![0.0, 0.75, 1.5, 0.0, 1.0, 2.0]);
    }

    #[test]
    fn adjacent_actions_are_not_reset() {
        // A0 A1 with no gap: j=1: 2; j=0: 1 + 0.5·2 = 2
        assert_eq!(run(&[1, 1], &[0, 1], &[1.0, 2.0], ObservationPolicy::Reset), vec![2.0, 2.0]);
    }

    #[test]
    fn golden_empty_turn_folding() {
        // A0 O O(turn 1, empty) A2; r = [1, 2, 4]
        // A2: 4. A0 (carry): R = 1 + 0.5·2 = 2, D = 0.25: 2 + 0.25·4 = 3; reset: 2
        let (seg, turns, r) = ([1, 2, 2, 1], [0, 0, 1, 2], [1.0, 2.0, 4.0]);
        assert_eq!(run(&seg, &turns, &r, ObservationPolicy::Carry), vec![3.0, 0.0, 0.0, 4.0]);
        assert_eq!(run(&seg, &turns, &r, ObservationPolicy::Reset), vec![2.0, 0.0, 0.0, 4.0]);
    }

    proptest! {
        #[test]
        fn carry_equals_zero_value_ntpo_gae(ep in episodes(), g in 0.0f32..1.0) {
            let n = ep.segments.len();
            let mut out = vec![0.0f32; n];
            reinforce_pp_returns(&ep.spans, &ep.rewards, n, g, ObservationPolicy::Carry, &mut out);
            let zeros = vec![0.0f32; n];
            let (mut a, mut ret) = (vec![0.0f32; n], vec![0.0f32; n]);
            gae(&ep.spans, &ep.rewards, &zeros, 0.0, &GaeParams::ntpo(g, 1.0), &mut a, &mut ret);
            prop_assert_eq!(out, a);
        }

        #[test]
        fn reset_agrees_with_carry_on_last_action(ep in episodes(), g in 0.0f32..1.0) {
            let n = ep.segments.len();
            let mut reset = vec![0.0f32; n];
            let mut carry = vec![0.0f32; n];
            reinforce_pp_returns(&ep.spans, &ep.rewards, n, g, ObservationPolicy::Reset, &mut reset);
            reinforce_pp_returns(&ep.spans, &ep.rewards, n, g, ObservationPolicy::Carry, &mut carry);
            // the last action is never reset, so both policies agree on it
            if let Some(last) = ep.spans.iter().flatten().last() {
                for j in last.start..last.end {
                    prop_assert_eq!(reset[j], carry[j]);
                }
            }
            for j in 0..n {
                if ep.segments[j] != 1 {
                    prop_assert_eq!((reset[j], carry[j]), (0.0, 0.0));
                }
            }
        }
    }
}
