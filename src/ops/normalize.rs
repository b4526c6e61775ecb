//! Masked whitening of per-token values over action tokens (veRL
//! `masked_whiten`). [`moments`] gathers count, mean and `m2 = Σ (x − mean)²`
//! of the action tokens of one episode (two-pass, f64, token order);
//! [`combine`] merges moments of disjoint token sets with Chan et al.'s
//! parallel formula, so statistics over a batch are combined per episode
//! (deterministic for a fixed combination order, equal to the direct
//! moments up to rounding). [`variance`] is `m2/(n − 1)` (unbiased, needs
//! `n ≥ 2`) or `m2/n` (population); with too few values it is defined as 0.
//! [`whiten`] writes `(x − mean)/sqrt(var + ε)` on action tokens (the mean
//! added back when `shift_mean` is false) and 0.0 elsewhere; the statistics
//! are f64 and each token's result is rounded to f32 once. With `var + ε = 0`
//! the result is non-finite: callers keep ε > 0 (veRL: unbiased, ε = 1e-8,
//! the [`NormalizeParams::default`]; OpenRLHF: population variance).

pub use super::group_baseline::StdKind;
use super::segment::ACTION;

/// Count, mean and sum of squared deviations of a set of values.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Moments {
    /// Number of values.
    pub n: u64,
    /// Mean (0 when `n = 0`).
    pub mean: f64,
    /// `Σ (x − mean)²`.
    pub m2: f64,
}

/// Parameters of [`whiten`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NormalizeParams {
    /// Variance estimator.
    pub std: StdKind,
    /// Added to the variance before the square root.
    pub epsilon: f64,
    /// Subtract the mean (true) or add it back after scaling (false).
    pub shift_mean: bool,
}

impl Default for NormalizeParams {
    /// veRL `masked_whiten`: unbiased variance, ε = 1e-8, mean subtracted.
    fn default() -> Self {
        Self { std: StdKind::Unbiased, epsilon: 1e-8, shift_mean: true }
    }
}

fn action_values<'a>(values: &'a [f32], segments: &'a [u8]) -> impl Iterator<Item = f64> + 'a {
    values.iter().zip(segments).filter(|(_, &s)| s == ACTION).map(|(&v, _)| f64::from(v))
}

/// Moments of `values` over the action tokens.
///
/// # Panics
/// If `values` and `segments` differ in length.
pub fn moments(values: &[f32], segments: &[u8]) -> Moments {
    assert_eq!(values.len(), segments.len(), "one segment per value");
    let (n, sum) = action_values(values, segments).fold((0u64, 0.0f64), |(n, s), x| (n + 1, s + x));
    if n == 0 {
        return Moments { n: 0, mean: 0.0, m2: 0.0 };
    }
    let mean = sum / n as f64;
    let m2 = action_values(values, segments).map(|x| (x - mean) * (x - mean)).sum();
    Moments { n, mean, m2 }
}

/// Moments of the union of two disjoint sets (Chan's parallel formula).
/// An empty side returns the other unchanged.
pub fn combine(a: &Moments, b: &Moments) -> Moments {
    if a.n == 0 {
        return *b;
    }
    if b.n == 0 {
        return *a;
    }
    let n = a.n + b.n;
    let (na, nb, nf) = (a.n as f64, b.n as f64, n as f64);
    let delta = b.mean - a.mean;
    Moments { n, mean: a.mean + delta * nb / nf, m2: a.m2 + b.m2 + delta * delta * na * nb / nf }
}

/// Variance of `m`: `m2/(n − 1)` (unbiased; 0 when `n < 2`) or `m2/n`
/// (population; 0 when `n = 0`).
pub fn variance(m: &Moments, std: StdKind) -> f64 {
    match std {
        StdKind::Unbiased if m.n >= 2 => m.m2 / (m.n - 1) as f64,
        StdKind::Population if m.n >= 1 => m.m2 / m.n as f64,
        _ => 0.0,
    }
}

/// Whitens the action tokens of `values` with the statistics `m` into `out`
/// (0.0 on other tokens). See the module docs.
///
/// # Panics
/// If `values`, `segments` and `out` differ in length.
pub fn whiten(values: &[f32], segments: &[u8], m: &Moments, p: &NormalizeParams, out: &mut [f32]) {
    assert_eq!(values.len(), segments.len(), "one segment per value");
    assert_eq!(out.len(), values.len(), "one output per value");
    let scale = 1.0 / (variance(m, p.std) + p.epsilon).sqrt();
    let offset = if p.shift_mean { 0.0 } else { m.mean };
    for ((o, &v), &s) in out.iter_mut().zip(values).zip(segments) {
        *o = if s == ACTION { ((f64::from(v) - m.mean) * scale + offset) as f32 } else { 0.0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_moments_and_variance() {
        // action values 1, 2, 3, 6 (9s are non-action): mean 3, m2 = 4 + 1 + 0 + 9 = 14
        let m = moments(&[9.0, 1.0, 2.0, 9.0, 3.0, 6.0], &[0, 1, 1, 2, 1, 1]);
        assert_eq!(m, Moments { n: 4, mean: 3.0, m2: 14.0 });
        // unbiased 14/3, population 14/4 = 3.5
        assert_eq!(variance(&m, StdKind::Unbiased), 14.0 / 3.0);
        assert_eq!(variance(&m, StdKind::Population), 3.5);
        let one = Moments { n: 1, mean: 5.0, m2: 0.0 };
        assert_eq!(variance(&one, StdKind::Unbiased), 0.0);
        assert_eq!(variance(&one, StdKind::Population), 0.0);
        assert_eq!(moments(&[1.0], &[0]), Moments { n: 0, mean: 0.0, m2: 0.0 });
    }

    #[test]
    fn golden_combine() {
        // [1, 3] ⊕ [6]: δ = 6 − 2 = 4; mean = 2 + 4·1/3 = 10/3;
        // m2 = 2 + 0 + 16·2·1/3 = 38/3 (direct: (49 + 1 + 64)/9 = 114/9 = 38/3)
        let a = moments(&[1.0, 3.0], &[1, 1]);
        let b = moments(&[6.0], &[1]);
        let c = combine(&a, &b);
        assert_eq!(c.n, 3);
        assert!((c.mean - 10.0 / 3.0).abs() < 1e-15);
        assert!((c.m2 - 38.0 / 3.0).abs() < 1e-14);
        let empty = Moments { n: 0, mean: 0.0, m2: 0.0 };
        assert_eq!(combine(&empty, &a), a);
        assert_eq!(combine(&a, &empty), a);
    }

    #[test]
    fn golden_whiten() {
        // action values 1, 3: mean 2, m2 2; population var 1, ε = 0 → ±1 exactly
        let seg = [1, 2, 1];
        let v = [1.0, 50.0, 3.0];
        let m = moments(&v, &seg);
        let mut out = [9.0f32; 3];
        let pop = NormalizeParams { std: StdKind::Population, epsilon: 0.0, shift_mean: true };
        whiten(&v, &seg, &m, &pop, &mut out);
        assert_eq!(out, [-1.0, 0.0, 1.0]);
        // shift_mean = false: −1 + 2 = 1, 1 + 2 = 3
        whiten(&v, &seg, &m, &NormalizeParams { shift_mean: false, ..pop }, &mut out);
        assert_eq!(out, [1.0, 0.0, 3.0]);
        // unbiased var 2, ε = 1e-8: ±1/sqrt(2.00000001) = ±0.70710677 (f32)
        whiten(&v, &seg, &m, &NormalizeParams::default(), &mut out);
        assert_eq!(out, [(-1.0 / 2.00000001f64.sqrt()) as f32, 0.0, (1.0 / 2.00000001f64.sqrt()) as f32]);
        assert!((out[2] - 0.70710677).abs() < 1e-7);
    }

    #[test]
    fn golden_whiten_four() {
        // 1, 2, 3, 6 with unbiased var 14/3, ε = 1e-8:
        // (x − 3)/sqrt(14/3 + 1e-8) = −0.92582009878, −0.46291004939, 0, 1.38873014817
        let seg = [1u8; 4];
        let v = [1.0, 2.0, 3.0, 6.0];
        let mut out = [0.0f32; 4];
        whiten(&v, &seg, &moments(&v, &seg), &NormalizeParams::default(), &mut out);
        let want: [f64; 4] = [-0.9258200987806015, -0.4629100493903007, 0.0, 1.3887301481709022];
        for (o, w) in out.iter().zip(want) {
            assert!((f64::from(*o) - w).abs() < 1e-6);
        }
    }

    proptest! {
        #[test]
        fn combined_episode_moments_match_concatenation(
            a in prop::collection::vec((-10.0f32..10.0, 0u8..4), 0..20),
            b in prop::collection::vec((-10.0f32..10.0, 0u8..4), 0..20),
        ) {
            let (va, sa): (Vec<f32>, Vec<u8>) = a.into_iter().unzip();
            let (vb, sb): (Vec<f32>, Vec<u8>) = b.into_iter().unzip();
            let v: Vec<f32> = va.iter().chain(&vb).copied().collect();
            let s: Vec<u8> = sa.iter().chain(&sb).copied().collect();
            let direct = moments(&v, &s);
            let merged = combine(&moments(&va, &sa), &moments(&vb, &sb));
            prop_assert_eq!(direct.n, merged.n);
            prop_assert!((direct.mean - merged.mean).abs() <= 1e-9);
            prop_assert!((direct.m2 - merged.m2).abs() <= 1e-9 * (1.0 + direct.m2));
            let p = NormalizeParams::default();
            let mut o1 = vec![0.0f32; v.len()];
            let mut o2 = vec![0.0f32; v.len()];
            whiten(&v, &s, &direct, &p, &mut o1);
            whiten(&v, &s, &merged, &p, &mut o2);
            for i in 0..v.len() {
                prop_assert!((o1[i] - o2[i]).abs() <= 1e-4 * (1.0 + o1[i].abs()));
                if s[i] != ACTION {
                    prop_assert_eq!(o1[i], 0.0);
                }
            }
            // whitened action values have mean ≈ 0 and (unbiased) variance ≈ 1
            let w = moments(&o1, &s);
            prop_assert!(w.mean.abs() <= 1e-4);
            if w.n >= 2 && direct.m2 > 1e-3 {
                prop_assert!((variance(&w, StdKind::Unbiased) - 1.0).abs() <= 1e-3);
            }
        }
    }
}
