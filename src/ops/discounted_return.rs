//! Per-turn discounted returns `G_t = r_t + γ·G_{t+1}` with
//! `G_{n_turns} = bootstrap` (0 for a terminated episode, `V(s_T)` for a
//! truncated one). Every turn is an ordinary step here, whether or not it has
//! action tokens. Computed backwards in f32, one multiply-add per turn.

/// Discounted return of every turn; same length as `turn_rewards`.
pub fn discounted_returns(turn_rewards: &[f32], gamma: f32, bootstrap: f32) -> Vec<f32> {
    let mut out = vec![0.0f32; turn_rewards.len()];
    let mut running = bootstrap;
    for (g, &r) in out.iter_mut().zip(turn_rewards).rev() {
        running = r + gamma * running;
        *g = running;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_terminated_and_truncated() {
        let r = [1.0, 2.0, 4.0];
        // G2 = 4; G1 = 2 + 0.5·4 = 4; G0 = 1 + 0.5·4 = 3
        assert_eq!(discounted_returns(&r, 0.5, 0.0), vec![3.0, 4.0, 4.0]);
        // bootstrap 8: G2 = 4 + 0.5·8 = 8; G1 = 2 + 4 = 6; G0 = 1 + 3 = 4
        assert_eq!(discounted_returns(&r, 0.5, 8.0), vec![4.0, 6.0, 8.0]);
        assert!(discounted_returns(&[], 0.9, 5.0).is_empty());
    }

    proptest! {
        #[test]
        fn gamma_one_is_suffix_sum(r in prop::collection::vec(-8i32..8, 0..10), b in -8i32..8) {
            let r: Vec<f32> = r.into_iter().map(|x| x as f32).collect();
            let g = discounted_returns(&r, 1.0, b as f32);
            for t in 0..r.len() {
                prop_assert_eq!(g[t], r[t..].iter().sum::<f32>() + b as f32);
            }
        }
    }
}
