//! KL estimators between the policy log-prob `logp` and the reference
//! log-prob `ref_logp` of one token (Schulman's k1/k2/k3):
//! k1 = `logp − ref`; k2 = `½(logp − ref)²`; k3 with `d = ref − logp`:
//! `exp(d) − d − 1`, evaluated as `exp_m1(d) − d`, which is the same value
//! but accurate near 0 and never negative. Clamping follows the peers:
//! [`KlClamp::Verl`] clamps `d` to [−20, 20] before k3 and the k3 result to
//! [−10, 10] (k1/k2 unclamped); [`KlClamp::OpenRlhf`] clamps every
//! estimator's result to [−10, 10] with no pre-clamp; [`KlClamp::None`]
//! clamps nothing (k3 may overflow to +∞). k2 and k3 are ≥ 0.

use super::segment::ACTION;

/// Which estimator of KL(π‖π_ref) to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KlEstimator {
    /// `logp − ref` (unbiased, high variance, can be negative).
    K1,
    /// `½(logp − ref)²`.
    K2,
    /// `exp(ref − logp) − (ref − logp) − 1` (unbiased, low variance, ≥ 0).
    K3,
}

/// Which framework's clamping to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KlClamp {
    /// veRL `kl_penalty`: k3 only, `d` to [−20, 20] and result to [−10, 10].
    Verl,
    /// OpenRLHF `compute_approx_kl`: every result to [−10, 10].
    OpenRlhf,
    /// No clamping.
    None,
}

/// KL estimate for one token.
pub fn kl(logp: f32, ref_logp: f32, e: KlEstimator, c: KlClamp) -> f32 {
    let value = match e {
        KlEstimator::K1 => logp - ref_logp,
        KlEstimator::K2 => 0.5 * (logp - ref_logp) * (logp - ref_logp),
        KlEstimator::K3 => {
            let d = ref_logp - logp;
            let d = if c == KlClamp::Verl { d.clamp(-20.0, 20.0) } else { d };
            d.exp_m1() - d
        }
    };
    match (c, e) {
        (KlClamp::OpenRlhf, _) | (KlClamp::Verl, KlEstimator::K3) => value.clamp(-10.0, 10.0),
        _ => value,
    }
}

/// Per-token KL estimates into `out`: [`kl`] on action tokens, 0.0 elsewhere.
///
/// # Panics
/// If `logp`, `ref_logp`, `segments` and `out` differ in length.
pub fn kl_tokens(logp: &[f32], ref_logp: &[f32], segments: &[u8], e: KlEstimator, c: KlClamp, out: &mut [f32]) {
    assert_eq!(logp.len(), segments.len(), "one logp per token");
    assert_eq!(ref_logp.len(), segments.len(), "one ref logp per token");
    assert_eq!(out.len(), segments.len(), "one output per token");
    for (((o, &lp), &rp), &s) in out.iter_mut().zip(logp).zip(ref_logp).zip(segments) {
        *o = if s == ACTION { kl(lp, rp, e, c) } else { 0.0 };
    }
}

impl std::str::FromStr for KlEstimator {
    type Err = String;

    /// Parses veRL's names: `kl`/`k1`, `mse`/`k2`, `low_var_kl`/`k3`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kl" | "k1" => Ok(KlEstimator::K1),
            "mse" | "k2" => Ok(KlEstimator::K2),
            "low_var_kl" | "k3" => Ok(KlEstimator::K3),
            _ => Err(format!("unknown KL estimator {s:?} (k1/kl, k2/mse, k3/low_var_kl)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [KlClamp; 3] = [KlClamp::Verl, KlClamp::OpenRlhf, KlClamp::None];

    #[test]
    fn golden_small() {
        // logp = −1, ref = −2: k1 = 1; k2 = ½·1² = 0.5; d = −1: e^−1 + 1 − 1 = 0.36787944
        for c in ALL {
            assert_eq!(kl(-1.0, -2.0, KlEstimator::K1, c), 1.0);
            assert_eq!(kl(-1.0, -2.0, KlEstimator::K2, c), 0.5);
            let k3 = kl(-1.0, -2.0, KlEstimator::K3, c);
            assert!((k3 - 0.36787944).abs() < 1e-7);
            // reversed: d = 1: e − 1 − 1 = 0.71828183; k1 = −1
            assert_eq!(kl(-2.0, -1.0, KlEstimator::K1, c), -1.0);
            assert!((kl(-2.0, -1.0, KlEstimator::K3, c) - 0.718_281_8).abs() < 1e-6);
        }
        assert_eq!(kl(-0.5, -0.5, KlEstimator::K3, KlClamp::None), 0.0);
    }

    #[test]
    fn golden_clamps() {
        // logp = 0, ref = −30: k1 = 30, k2 = 450, d = −30
        assert_eq!(kl(0.0, -30.0, KlEstimator::K1, KlClamp::Verl), 30.0);
        assert_eq!(kl(0.0, -30.0, KlEstimator::K1, KlClamp::OpenRlhf), 10.0);
        assert_eq!(kl(0.0, -30.0, KlEstimator::K2, KlClamp::Verl), 450.0);
        assert_eq!(kl(0.0, -30.0, KlEstimator::K2, KlClamp::OpenRlhf), 10.0);
        // k3: e^−30 + 30 − 1 = 29 (None); Verl: d → −20, 19.000000002 → 10
        assert_eq!(kl(0.0, -30.0, KlEstimator::K3, KlClamp::None), 29.0);
        assert_eq!(kl(0.0, -30.0, KlEstimator::K3, KlClamp::Verl), 10.0);
        assert_eq!(kl(0.0, -30.0, KlEstimator::K3, KlClamp::OpenRlhf), 10.0);
        // k1 = −30 is clamped to −10 by OpenRLHF only
        assert_eq!(kl(-30.0, 0.0, KlEstimator::K1, KlClamp::OpenRlhf), -10.0);
        assert_eq!(kl(-30.0, 0.0, KlEstimator::K1, KlClamp::Verl), -30.0);
        // d = 100: e^100 overflows f32 → +∞ unclamped; Verl pre-clamps d to 20, then 10
        assert_eq!(kl(-100.0, 0.0, KlEstimator::K3, KlClamp::None), f32::INFINITY);
        assert_eq!(kl(-100.0, 0.0, KlEstimator::K3, KlClamp::Verl), 10.0);
        assert_eq!(kl(-100.0, 0.0, KlEstimator::K3, KlClamp::OpenRlhf), 10.0);
    }

    #[test]
    fn golden_tokens() {
        let mut out = [9.0f32; 3];
        kl_tokens(&[-1.0, -1.0, -3.0], &[-2.0, -2.0, -1.0], &[1, 2, 1], KlEstimator::K1, KlClamp::Verl, &mut out);
        // token 0: −1 − (−2) = 1; token 1 observation; token 2: −3 − (−1) = −2
        assert_eq!(out, [1.0, 0.0, -2.0]);
    }

    proptest! {
        #[test]
        fn k2_k3_non_negative(logp in -60.0f32..0.0, r in -60.0f32..0.0, tiny in -1e-3f32..1e-3) {
            for c in ALL {
                prop_assert!(kl(logp, r, KlEstimator::K2, c) >= 0.0);
                prop_assert!(kl(logp, r, KlEstimator::K3, c) >= 0.0);
                prop_assert!(kl(logp, logp + tiny, KlEstimator::K3, c) >= 0.0);
            }
        }
    }
}
