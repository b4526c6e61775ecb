//! Group baselines for outcome rewards: statistics of one group of episode
//! scores (e.g. the K rollouts of one task) and each member's advantage.
//!
//! [`group_stats`] is two-pass in the given order (sum, then
//! `m2 = Σ (x − mean)²`), so it is deterministic; when all values are equal
//! the mean is that value exactly, making every mode's advantage exactly 0.
//! [`group_advantage`] expects `stats` to include `own`:
//! - [`BaselineMode::LeaveOneOut`] (LOOP, RLOO): `own − (sum − own)/(n − 1)`,
//!   evaluated as the equal `(own − mean)·n/(n − 1)`;
//! - [`BaselineMode::Mean`] (Dr.GRPO, leave-none-out, REINFORCE++-baseline):
//!   `own − mean`;
//! - [`BaselineMode::MeanStd`] (GRPO): `(own − mean)/(std + ε)`, std unbiased
//!   (veRL, OpenRLHF) or population; a zero numerator gives 0 even when
//!   `std + ε = 0`.
//!
//! Groups with `n ≤ 1` have no sibling information: [`Singleton::Zero`]
//! returns 0 (our default), [`Singleton::Raw`] returns `own` (veRL's loop RLOO
//! and, up to `1/(1+ε)`, veRL's GRPO, which uses mean 0 and std 1).
//! ε defaults: veRL 1e-6 ([`DEFAULT_EPSILON`]), OpenRLHF 1e-9, TRL 1e-4.

/// veRL's GRPO epsilon.
pub const DEFAULT_EPSILON: f64 = 1e-6;

/// Count, sum, mean and sum of squared deviations of one group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupStats {
    /// Number of values.
    pub n: u64,
    /// Sum of the values, in the given order.
    pub sum: f64,
    /// `sum / n` (exactly the common value if all are equal; 0 when empty).
    pub mean: f64,
    /// `Σ (x − mean)²`, in the given order.
    pub m2: f64,
}

/// How the baseline is formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaselineMode {
    /// Mean of the other members (LOOP, RLOO).
    LeaveOneOut,
    /// Group mean, no scaling (Dr.GRPO, REINFORCE++-baseline).
    Mean,
    /// Group mean and division by the group std (GRPO).
    MeanStd,
}

/// Which variance estimator a standard deviation uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StdKind {
    /// Bessel-corrected, `m2 / (n − 1)` (veRL default).
    Unbiased,
    /// Population, `m2 / n`.
    Population,
}

/// What a group of one member gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Singleton {
    /// Advantage 0 (no sibling information; our default).
    Zero,
    /// The raw score (veRL loop RLOO).
    Raw,
}

/// Parameters of [`group_advantage`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BaselineParams {
    /// Baseline formula.
    pub mode: BaselineMode,
    /// Std estimator for [`BaselineMode::MeanStd`].
    pub std: StdKind,
    /// Added to the std for [`BaselineMode::MeanStd`].
    pub epsilon: f64,
    /// Behaviour for groups of one.
    pub singleton: Singleton,
}

impl BaselineParams {
    /// GRPO as in veRL: unbiased std, ε = 1e-6, singletons 0.
    pub fn grpo() -> Self {
        Self {
            mode: BaselineMode::MeanStd,
            std: StdKind::Unbiased,
            epsilon: DEFAULT_EPSILON,
            singleton: Singleton::Zero,
        }
    }

    /// Leave-one-out (LOOP / RLOO), singletons 0.
    pub fn leave_one_out() -> Self {
        Self { mode: BaselineMode::LeaveOneOut, ..Self::grpo() }
    }

    /// Mean baseline without std scaling (Dr.GRPO), singletons 0.
    pub fn mean() -> Self {
        Self { mode: BaselineMode::Mean, ..Self::grpo() }
    }
}

/// Two-pass statistics of `values` in the given order.
pub fn group_stats(values: &[f64]) -> GroupStats {
    let n = values.len() as u64;
    let sum: f64 = values.iter().sum();
    let mean = match values.first() {
        None => 0.0,
        Some(&first) if values.iter().all(|&x| x == first) => first,
        Some(_) => sum / n as f64,
    };
    let m2 = values.iter().map(|&x| (x - mean) * (x - mean)).sum();
    GroupStats { n, sum, mean, m2 }
}

/// Advantage of a member with score `own` in the group described by `stats`
/// (which must include `own`). See the module docs.
pub fn group_advantage(own: f64, stats: &GroupStats, p: &BaselineParams) -> f64 {
    if stats.n <= 1 {
        return match p.singleton {
            Singleton::Zero => 0.0,
            Singleton::Raw => own,
        };
    }
    let centred = own - stats.mean;
    let n = stats.n as f64;
    match p.mode {
        BaselineMode::LeaveOneOut => centred * n / (n - 1.0),
        BaselineMode::Mean => centred,
        BaselineMode::MeanStd if centred == 0.0 => 0.0,
        BaselineMode::MeanStd => {
            let var = match p.std {
                StdKind::Unbiased => stats.m2 / (n - 1.0),
                StdKind::Population => stats.m2 / n,
            };
            centred / (var.sqrt() + p.epsilon)
        }
    }
}

/// LOOP's filter: keep an episode only if `|adv| >= min_abs` (LOOP uses
/// 0.01; `min_abs = 0` keeps everything except NaN).
pub fn passes_abs_filter(adv: f64, min_abs: f64) -> bool {
    adv.abs() >= min_abs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(mode: BaselineMode, std: StdKind, epsilon: f64) -> BaselineParams {
        BaselineParams { mode, std, epsilon, singleton: Singleton::Zero }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * (1.0 + b.abs())
    }

    #[test]
    fn golden_stats() {
        // [1, 2, 3, 6]: sum 12, mean 3, m2 = 4 + 1 + 0 + 9 = 14
        let s = group_stats(&[1.0, 2.0, 3.0, 6.0]);
        assert_eq!(s, GroupStats { n: 4, sum: 12.0, mean: 3.0, m2: 14.0 });
        assert_eq!(group_stats(&[]), GroupStats { n: 0, sum: 0.0, mean: 0.0, m2: 0.0 });
    }

    #[test]
    fn golden_singleton() {
        let s = group_stats(&[3.0]);
        for mode in [BaselineMode::LeaveOneOut, BaselineMode::Mean, BaselineMode::MeanStd] {
            let mut p = with(mode, StdKind::Unbiased, 1e-6);
            assert_eq!(group_advantage(3.0, &s, &p), 0.0);
            p.singleton = Singleton::Raw;
            assert_eq!(group_advantage(3.0, &s, &p), 3.0);
        }
    }

    #[test]
    fn golden_pair() {
        // [1, 3]: mean 2, m2 = 1 + 1 = 2
        let s = group_stats(&[1.0, 3.0]);
        // LOO: 1 − 3/1 = −2 ((1 − 2)·2/1 = −2)
        assert_eq!(group_advantage(1.0, &s, &BaselineParams::leave_one_out()), -2.0);
        assert_eq!(group_advantage(3.0, &s, &BaselineParams::leave_one_out()), 2.0);
        // Mean: 1 − 2 = −1
        assert_eq!(group_advantage(1.0, &s, &BaselineParams::mean()), -1.0);
        // unbiased std = sqrt(2/1); −1/sqrt(2) = −0.7071067811865475
        let unb = group_advantage(1.0, &s, &with(BaselineMode::MeanStd, StdKind::Unbiased, 0.0));
        assert!(close(unb, -0.7071067811865475));
        // with ε = 1e-6: −1/(1.4142135623730951 + 1e-6) = −0.7071062811869011
        assert!(close(group_advantage(1.0, &s, &BaselineParams::grpo()), -0.7071062811869011));
        // population std = sqrt(2/2) = 1 → −1 exactly
        let pop = with(BaselineMode::MeanStd, StdKind::Population, 0.0);
        assert_eq!(group_advantage(1.0, &s, &pop), -1.0);
    }

    #[test]
    fn golden_four() {
        let s = group_stats(&[1.0, 2.0, 3.0, 6.0]);
        // LOO own 6: 6 − (1+2+3)/3 = 4; own 1: 1 − 11/3 = −2.6666666666666665
        let loo = BaselineParams::leave_one_out();
        assert_eq!(group_advantage(6.0, &s, &loo), 4.0);
        assert!(close(group_advantage(1.0, &s, &loo), -2.6666666666666665));
        // Mean own 6: 6 − 3 = 3
        assert_eq!(group_advantage(6.0, &s, &BaselineParams::mean()), 3.0);
        // unbiased: 3/sqrt(14/3) = 1.3887301496588271; population: 3/sqrt(3.5) = 1.6035674514745464
        let unb = with(BaselineMode::MeanStd, StdKind::Unbiased, 0.0);
        let pop = with(BaselineMode::MeanStd, StdKind::Population, 0.0);
        assert!(close(group_advantage(6.0, &s, &unb), 1.3887301496588271));
        assert!(close(group_advantage(6.0, &s, &pop), 1.6035674514745464));
        // ε = 1e-6: 3/(2.160246899469287 + 1e-6) = 1.3887295068019816
        assert!(close(group_advantage(6.0, &s, &BaselineParams::grpo()), 1.3887295068019816));
    }

    #[test]
    fn all_equal_group_is_exactly_zero() {
        // 0.1 + 0.1 + 0.1 = 0.30000000000000004 and /3 ≠ 0.1, hence the exact-mean rule.
        let s = group_stats(&[0.1, 0.1, 0.1]);
        assert_eq!((s.mean, s.m2), (0.1, 0.0));
        for mode in [BaselineMode::LeaveOneOut, BaselineMode::Mean, BaselineMode::MeanStd] {
            for std in [StdKind::Unbiased, StdKind::Population] {
                for eps in [0.0, 1e-6] {
                    assert_eq!(group_advantage(0.1, &s, &with(mode, std, eps)), 0.0);
                }
            }
        }
    }

    #[test]
    fn abs_filter() {
        assert!(!passes_abs_filter(0.005, 0.01));
        assert!(!passes_abs_filter(-0.005, 0.01));
        assert!(passes_abs_filter(-0.02, 0.01));
        assert!(passes_abs_filter(0.0, 0.0));
    }
}
