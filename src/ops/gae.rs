//! Generalised advantage estimation over one episode. One operator whose
//! parameters give standard per-token GAE, POAD/BAD, NTPO and TWOSOME.
//!
//! The scan runs backwards over the decision steps of
//! [`super::steps::folded_steps`] (non-empty actions; empty turns folded into
//! the preceding action with effective reward `R`, discount `D = γ^(k+1)` and
//! GAE carry `C = D·λ^(k+1) = (γλ)^(k+1)`). Only action tokens are read or
//! written: prompt/observation/template tokens are skipped entirely, so the
//! running next-value and running GAE carry through them unchanged (veRL's
//! masked carry-through) and `values` at non-action tokens never affect the
//! result.
//!
//! [`ValueGranularity::Token`], inside the action of each step backwards:
//! - last token `j = end−1`: `δ = R + D·v_next − V[j]`, `gae = δ + C·gae_next`,
//!   where `v_next`/`gae_next` are the value and GAE at the first token of the
//!   next step (`bootstrap` and 0 after the last step);
//! - earlier tokens: `δ = γ_intra·V[j+1] − V[j]`,
//!   `gae = δ + (γ_intra·λ_intra)·gae`.
//!
//! POAD/BAD is `γ_intra = 1, λ_intra = λ`; NTPO is `γ_intra = γ, λ_intra = λ`,
//! which equals standard per-token GAE with the turn reward on the action's
//! last token.
//!
//! [`ValueGranularity::Action`] (TWOSOME): one value per step,
//! `V_t = values[start]`, `A_t = R + D·V_{t+1} − V_t + C·A_{t+1}`
//! (`V` after the last step = `bootstrap`), broadcast onto every token of the
//! action; `γ_intra`/`λ_intra` are unused.
//!
//! In both modes returns are `ret = A + V` (the token's own value, resp. `V_t`)
//! on action tokens; every non-action token gets 0.0 in both outputs. Rewards
//! of empty turns before the first non-empty action are credited to no token.
//! With `γ = λ = γ_intra = λ_intra = 1` and `V = 0` every action token's
//! advantage equals its turn's undiscounted return (including `bootstrap`).

use super::action_boundaries::ActionSpan;
use super::steps::folded_steps;

/// Where the critic's values live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueGranularity {
    /// One value per action token (standard GAE, POAD/BAD, NTPO).
    Token,
    /// One value per action, read at its first token (TWOSOME).
    Action,
}

/// Parameters of [`gae`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaeParams {
    /// Discount between turns.
    pub gamma: f32,
    /// GAE λ between turns.
    pub lambda: f32,
    /// Discount between tokens of one action (token granularity only).
    pub gamma_intra: f32,
    /// GAE λ between tokens of one action (token granularity only).
    pub lambda_intra: f32,
    /// Token- or action-level values.
    pub granularity: ValueGranularity,
}

impl GaeParams {
    /// POAD's Bellman backup with action decomposition: no discount inside an
    /// action (`γ_intra = 1, λ_intra = λ`).
    pub fn bad(gamma: f32, lambda: f32) -> Self {
        Self { gamma, lambda, gamma_intra: 1.0, lambda_intra: lambda, granularity: ValueGranularity::Token }
    }

    /// NTPO, identical to standard per-token GAE (`γ_intra = γ, λ_intra = λ`).
    pub fn ntpo(gamma: f32, lambda: f32) -> Self {
        Self { gamma, lambda, gamma_intra: gamma, lambda_intra: lambda, granularity: ValueGranularity::Token }
    }

    /// TWOSOME: action-level values and step-level GAE.
    pub fn twosome(gamma: f32, lambda: f32) -> Self {
        Self { gamma, lambda, gamma_intra: 1.0, lambda_intra: 1.0, granularity: ValueGranularity::Action }
    }
}

/// Computes advantages and returns of one episode into `adv_out`/`ret_out`
/// (fully overwritten; 0.0 on non-action tokens). See the module docs.
///
/// # Panics
/// If `values`, `adv_out` and `ret_out` differ in length, if
/// `spans.len() != turn_rewards.len()`, or if a span ends beyond `values`.
pub fn gae(
    spans: &[Option<ActionSpan>],
    turn_rewards: &[f32],
    values: &[f32],
    bootstrap: f32,
    p: &GaeParams,
    adv_out: &mut [f32],
    ret_out: &mut [f32],
) {
    assert_eq!(adv_out.len(), values.len(), "one advantage per token");
    assert_eq!(ret_out.len(), values.len(), "one return per token");
    adv_out.fill(0.0);
    ret_out.fill(0.0);
    let intra = p.gamma_intra * p.lambda_intra;
    let mut v_next = bootstrap;
    let mut gae_next = 0.0f32;
    for step in folded_steps(spans, turn_rewards, p.gamma).iter().rev() {
        let ActionSpan { start, end, .. } = step.span;
        let carry = step.discount * p.lambda.powi(step.n_turns);
        let last = end - 1;
        // Value the step's TD error is taken against: the last token's own
        // value (token level) or the action value V_t = values[start].
        let v_step = match p.granularity {
            ValueGranularity::Token => values[last],
            ValueGranularity::Action => values[start],
        };
        let delta = step.reward + step.discount * v_next - v_step;
        let mut running = delta + carry * gae_next;
        match p.granularity {
            ValueGranularity::Token => {
                adv_out[last] = running;
                ret_out[last] = running + values[last];
                for j in (start..last).rev() {
                    let delta = p.gamma_intra * values[j + 1] - values[j];
                    running = delta + intra * running;
                    adv_out[j] = running;
                    ret_out[j] = running + values[j];
                }
            }
            ValueGranularity::Action => {
                adv_out[start..end].fill(running);
                ret_out[start..end].fill(running + v_step);
            }
        }
        v_next = values[start];
        gae_next = running;
    }
}

#[cfg(test)]
mod tests {
    use super::super::action_boundaries::action_spans;
    use super::super::discounted_return::discounted_returns;
    use super::super::segment::ACTION;
    use super::super::steps::tests::{episodes, Episode};
    use super::*;
    use proptest::prelude::*;

    fn run(spans: &[Option<ActionSpan>], r: &[f32], v: &[f32], b: f32, p: &GaeParams) -> (Vec<f32>, Vec<f32>) {
        let mut a = vec![f32::NAN; v.len()];
        let mut ret = vec![f32::NAN; v.len()];
        gae(spans, r, v, b, p, &mut a, &mut ret);
        (a, ret)
    }

    /// P A0 A0 O A1 A1; r = [0.5, 1.0]; V = [9, 1.0, 0.5, 7, 0.25, 0.5]
    /// (9 and 7 sit on non-action tokens and are never read).
    fn two_actions() -> (Vec<Option<ActionSpan>>, Vec<f32>, Vec<f32>) {
        let spans = action_spans(&[0, 1, 1, 2, 1, 1], &[0, 0, 0, 0, 1, 1], 2).unwrap();
        (spans, vec![0.5, 1.0], vec![9.0, 1.0, 0.5, 7.0, 0.25, 0.5])
    }

    #[test]
    fn golden_bad_two_actions() {
        let (spans, r, v) = two_actions();
        let (a, ret) = run(&spans, &r, &v, 0.0, &GaeParams::bad(0.5, 0.5));
        // j=5: δ = 1.0 + 0.5·0 − 0.5 = 0.5; gae = 0.5                  ret = 1.0
        // j=4: δ = 1·0.5 − 0.25 = 0.25; gae = 0.25 + 1·0.5·0.5 = 0.5     ret = 0.75
        // j=2: δ = 0.5 + 0.5·0.25 − 0.5 = 0.125; gae = 0.125 + 0.25·0.5 = 0.25   ret = 0.75
        // j=1: δ = 1·0.5 − 1.0 = −0.5; gae = −0.5 + 0.5·0.25 = −0.375   ret = 0.625
        assert_eq!(a, vec![0.0, -0.375, 0.25, 0.0, 0.5, 0.5]);
        assert_eq!(ret, vec![0.0, 0.625, 0.75, 0.0, 0.75, 1.0]);
    }

    #[test]
    fn golden_ntpo_two_actions() {
        let (spans, r, v) = two_actions();
        let (a, ret) = run(&spans, &r, &v, 0.0, &GaeParams::ntpo(0.5, 0.5));
        // j=5: δ = 1.0 − 0.5 = 0.5; gae = 0.5                              ret = 1.0
        // j=4: δ = 0.5·0.5 − 0.25 = 0; gae = 0 + 0.25·0.5 = 0.125            ret = 0.375
        // j=2: δ = 0.5 + 0.5·0.25 − 0.5 = 0.125; gae = 0.125 + 0.25·0.125 = 0.15625  ret = 0.65625
        // j=1: δ = 0.5·0.5 − 1.0 = −0.75; gae = −0.75 + 0.25·0.15625 = −0.7109375   ret = 0.2890625
        assert_eq!(a, vec![0.0, -0.7109375, 0.15625, 0.0, 0.125, 0.5]);
        assert_eq!(ret, vec![0.0, 0.2890625, 0.65625, 0.0, 0.375, 1.0]);
    }

    #[test]
    fn bad_and_ntpo_differ_by_gamma_intra_power() {
        // one 3-token action, V = 0, r = 2, γ = 0.5, λ = 0.5.
        // last token: gae = 2 in both. BAD: [λ²·2, λ·2, 2] = [0.5, 1, 2];
        // NTPO: [(γλ)²·2, γλ·2, 2] = [0.125, 0.5, 2], i.e. BAD·γ^(end−1−j).
        let spans = action_spans(&[1, 1, 1], &[0, 0, 0], 1).unwrap();
        let v = [0.0; 3];
        let (bad, _) = run(&spans, &[2.0], &v, 0.0, &GaeParams::bad(0.5, 0.5));
        let (ntpo, _) = run(&spans, &[2.0], &v, 0.0, &GaeParams::ntpo(0.5, 0.5));
        assert_eq!(bad, vec![0.5, 1.0, 2.0]);
        assert_eq!(ntpo, vec![0.125, 0.5, 2.0]);
        for j in 0..3 {
            assert_eq!(ntpo[j], bad[j] * 0.5f32.powi(2 - j as i32));
        }
    }

    #[test]
    fn golden_truncation_vs_termination() {
        let spans = action_spans(&[1, 1], &[0, 0], 1).unwrap();
        let v = [0.5, 0.5];
        let p = GaeParams::ntpo(0.5, 0.5);
        // terminated (b = 0): j=1: δ = 1 + 0 − 0.5 = 0.5; j=0: δ = 0.25 − 0.5 = −0.25,
        // gae = −0.25 + 0.25·0.5 = −0.125
        let (a, ret) = run(&spans, &[1.0], &v, 0.0, &p);
        assert_eq!(a, vec![-0.125, 0.5]);
        assert_eq!(ret, vec![0.375, 1.0]);
        // truncated (b = 2): j=1: δ = 1 + 0.5·2 − 0.5 = 1.5; j=0: gae = −0.25 + 0.25·1.5 = 0.125
        let (a, ret) = run(&spans, &[1.0], &v, 2.0, &p);
        assert_eq!(a, vec![0.125, 1.5]);
        assert_eq!(ret, vec![0.625, 2.0]);
    }

    #[test]
    fn golden_empty_action_in_middle() {
        // A0 O O A2, turn 1 empty; r = [1, 2, 4]; V = [0.5, x, x, 1.0]; γ = λ = 0.5
        let spans = action_spans(&[1, 2, 2, 1], &[0, 0, 1, 2], 3).unwrap();
        assert_eq!(spans[1], None);
        let v = [0.5, 100.0, -100.0, 1.0];
        let (a, ret) = run(&spans, &[1.0, 2.0, 4.0], &v, 0.0, &GaeParams::bad(0.5, 0.5));
        // A2: δ = 4 + 0.5·0 − 1 = 3; gae = 3; ret = 4
        // A0: R = 1 + 0.5·2 = 2, D = 0.25, C = 0.0625:
        //     δ = 2 + 0.25·1 − 0.5 = 1.75; gae = 1.75 + 0.0625·3 = 1.9375; ret = 2.4375
        // (= explicit V_1 = 2 + 0.5·1 = 2.5, δ_1 = 0, gae_1 = 0.25·3 = 0.75,
        //    δ_0 = 1 + 0.5·2.5 − 0.5 = 1.75, gae_0 = 1.75 + 0.25·0.75 = 1.9375)
        assert_eq!(a, vec![1.9375, 0.0, 0.0, 3.0]);
        assert_eq!(ret, vec![2.4375, 0.0, 0.0, 4.0]);
    }

    #[test]
    fn all_empty_episode_is_zero() {
        let spans = action_spans(&[0, 2, 2], &[0, 0, 1], 2).unwrap();
        for p in [GaeParams::bad(0.9, 0.9), GaeParams::twosome(0.9, 0.9)] {
            let (a, ret) = run(&spans, &[1.0, 2.0], &[1.0, 2.0, 3.0], 5.0, &p);
            assert_eq!(a, vec![0.0; 3]);
            assert_eq!(ret, vec![0.0; 3]);
        }
    }

    #[test]
    fn golden_single_token_action() {
        let spans = action_spans(&[1], &[0], 1).unwrap();
        // δ = 3 + 0.5·0.5 − 1 = 2.25; ret = 3.25 (same for every configuration)
        for p in [GaeParams::bad(0.5, 0.5), GaeParams::ntpo(0.5, 0.5), GaeParams::twosome(0.5, 0.5)] {
            let (a, ret) = run(&spans, &[3.0], &[1.0], 0.5, &p);
            assert_eq!((a[0], ret[0]), (2.25, 3.25));
        }
    }

    #[test]
    fn golden_twosome() {
        let (spans, r, v) = two_actions();
        let (a, ret) = run(&spans, &r, &v, 0.0, &GaeParams::twosome(0.5, 0.5));
        // V_0 = values[1] = 1.0, V_1 = values[4] = 0.25
        // A_1 = 1.0 + 0.5·0 − 0.25 = 0.75;                 ret = 0.75 + 0.25 = 1.0
        // A_0 = 0.5 + 0.5·0.25 − 1.0 + 0.25·0.75 = −0.1875; ret = −0.1875 + 1.0 = 0.8125
        assert_eq!(a, vec![0.0, -0.1875, -0.1875, 0.0, 0.75, 0.75]);
        assert_eq!(ret, vec![0.0, 0.8125, 0.8125, 0.0, 1.0, 1.0]);
    }

    /// Classic per-token GAE (veRL) over the compacted action tokens, reward
    /// on the last token of each action; only valid without empty turns.
    fn reference_token_gae(ep: &Episode, b: f32, g: f32, l: f32) -> Vec<f32> {
        let idx: Vec<usize> = (0..ep.segments.len()).filter(|&i| ep.segments[i] == ACTION).collect();
        let mut rew = vec![0.0f32; idx.len()];
        for (span, &r) in ep.spans.iter().zip(&ep.rewards) {
            if let Some(s) = span {
                let k = idx.iter().position(|&i| i == s.end - 1).unwrap();
                rew[k] = r;
            }
        }
        let mut out = vec![0.0f32; ep.segments.len()];
        let mut running = 0.0f32;
        for k in (0..idx.len()).rev() {
            let nv = if k + 1 < idx.len() { ep.values[idx[k + 1]] } else { b };
            let delta = rew[k] + g * nv - ep.values[idx[k]];
            running = delta + g * l * running;
            out[idx[k]] = running;
        }
        out
    }

    fn no_empty_turns(ep: &Episode) -> bool {
        ep.spans.iter().all(Option::is_some)
    }

    proptest! {
        #[test]
        fn non_action_values_never_matter(
            ep in episodes(),
            noise in prop::collection::vec(-50.0f32..50.0, 64),
            b in -2.0f32..2.0,
            g in 0.0f32..1.0,
            l in 0.0f32..1.0,
        ) {
            let mut v2 = ep.values.clone();
            for (i, v) in v2.iter_mut().enumerate() {
                if ep.segments[i] != ACTION {
                    *v = noise[i];
                }
            }
            for p in [GaeParams::bad(g, l), GaeParams::ntpo(g, l), GaeParams::twosome(g, l)] {
                let (a1, r1) = run(&ep.spans, &ep.rewards, &ep.values, b, &p);
                let (a2, r2) = run(&ep.spans, &ep.rewards, &v2, b, &p);
                let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                prop_assert_eq!(bits(&a1), bits(&a2));
                prop_assert_eq!(bits(&r1), bits(&r2));
                for i in 0..ep.segments.len() {
                    if ep.segments[i] != ACTION {
                        prop_assert_eq!((a1[i], r1[i]), (0.0, 0.0));
                    }
                }
            }
        }

        #[test]
        fn undiscounted_zero_value_is_suffix_return(ep in episodes(), b in -4i32..5) {
            let zeros = vec![0.0f32; ep.values.len()];
            let g = discounted_returns(&ep.rewards, 1.0, b as f32);
            for p in [GaeParams::bad(1.0, 1.0), GaeParams::twosome(1.0, 1.0)] {
                let (a, ret) = run(&ep.spans, &ep.rewards, &zeros, b as f32, &p);
                for span in ep.spans.iter().flatten() {
                    for j in span.start..span.end {
                        prop_assert_eq!(a[j], g[span.turn]);
                        prop_assert_eq!(ret[j], g[span.turn]);
                    }
                }
            }
        }

        #[test]
        fn bad_with_unit_lambda_has_constant_return_per_action(
            ep in episodes(),
            b in -2.0f32..2.0,
            g in 0.0f32..1.0,
        ) {
            // γ_intra = λ = λ_intra = 1: δ's telescope inside an action, so
            // A[j] + V[j] = R + D·v_next + C·gae_next for every token j.
            let (_, ret) = run(&ep.spans, &ep.rewards, &ep.values, b, &GaeParams::bad(g, 1.0));
            for span in ep.spans.iter().flatten() {
                let target = ret[span.end - 1];
                for r in &ret[span.start..span.end] {
                    prop_assert!((r - target).abs() <= 1e-4 * (1.0 + target.abs()));
                }
            }
        }

        #[test]
        fn ntpo_equals_classic_token_gae(
            ep in episodes().prop_filter("no empty turns", no_empty_turns),
            b in -2.0f32..2.0,
            g in 0.0f32..1.0,
            l in 0.0f32..1.0,
        ) {
            let (a, _) = run(&ep.spans, &ep.rewards, &ep.values, b, &GaeParams::ntpo(g, l));
            prop_assert_eq!(a, reference_token_gae(&ep, b, g, l));
        }
    }
}
