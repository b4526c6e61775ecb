//! Exact, order-free moments of f32 values: the count, Σx and Σx² kept as integers — Σx in units of
//! 2^-149 and Σx² in units of 2^-298, the grids every f32 and every square of one lie on — so adding,
//! removing and merging values in any order, split over any number of workers, gives the same bits.
//! The mean and Σ(x − mean)² are computed once, from the integers: mean = Σx / n and
//! m2 = (n·Σx² − (Σx)²) / n, the numerator exact, each then rounded to f64 by one fixed rule.
//!
//! Invariants: integers are little-endian two's complement limbs wide enough for 2^40 values of
//! any finite f32 (|Σx| < 2^317, Σx² < 2^594, n·Σx² < 2^658); `n` counts values and may be negative
//! only in a delta that removes more than it adds. Non-finite values are refused by the caller.

use serde::{Deserialize, Serialize};

use super::normalize::Moments;

const S_LIMBS: usize = 6;
const Q_LIMBS: usize = 10;
const D_LIMBS: usize = 12;
/// Σx is kept in units of 2^-S_SCALE, Σx² in units of 2^-Q_SCALE.
const S_SCALE: i32 = 149;
const Q_SCALE: i32 = 298;

/// See the module docs. `Default` is the empty set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExactMoments {
    /// Number of values.
    pub n: i64,
    s: [u64; S_LIMBS],
    q: [u64; Q_LIMBS],
}

impl ExactMoments {
    /// Adds (`sign` = 1) or removes (−1) the finite value `x`.
    pub fn push(&mut self, x: f32, sign: i64) {
        debug_assert!(x.is_finite(), "callers refuse non-finite values");
        let bits = x.to_bits();
        let (exp, frac) = ((bits >> 23) & 0xff, (bits & 0x7f_ffff) as u64);
        // x = ±m · 2^(e − 149) with m < 2^24 and e ≥ 0.
        let (m, e) = if exp == 0 { (frac, 0) } else { (frac | 1 << 23, exp - 1) };
        if m == 0 {
            self.n += sign;
            return;
        }
        let negative = (bits >> 31 == 1) != (sign < 0);
        add_at(&mut self.s, m, e, negative);
        add_at(&mut self.q, m * m, 2 * e, sign < 0);
        self.n += sign;
    }

    /// Adds every value of `other` (or, with `sign` = −1, removes them).
    pub fn merge(&mut self, other: &ExactMoments, sign: i64) {
        let (s, q) = if sign < 0 { (negated(&other.s), negated(&other.q)) } else { (other.s, other.q) };
        add(&mut self.s, &s);
        add(&mut self.q, &q);
        self.n += sign * other.n;
    }

    /// The moments, each rounded once from the exact integers (see the module docs).
    pub fn moments(&self) -> Moments {
        if self.n <= 0 {
            return Moments { n: 0, mean: 0.0, m2: 0.0 };
        }
        let n = self.n as u64;
        let mean = to_f64(&self.s, -S_SCALE) / n as f64;
        let magnitude = if is_negative(&self.s) { negated(&self.s) } else { self.s };
        let mut d: [u64; D_LIMBS] = product(&self.q, &[n]);
        add(&mut d, &negated(&product::<D_LIMBS>(&magnitude, &magnitude)));
        let m2 = if is_negative(&d) { 0.0 } else { to_f64(&d, -Q_SCALE) / n as f64 };
        Moments { n, mean, m2 }
    }
}

/// Adds (or with `negative`, subtracts) `m · 2^shift` to `acc`.
fn add_at<const L: usize>(acc: &mut [u64; L], m: u64, shift: u32, negative: bool) {
    let (first, bit) = ((shift / 64) as usize, shift % 64);
    let wide = (m as u128) << bit;
    let parts = [wide as u64, (wide >> 64) as u64];
    let mut carry = 0u64;
    for (i, limb) in acc.iter_mut().enumerate().skip(first) {
        let p = parts.get(i - first).copied().unwrap_or(0);
        if i >= first + 2 && carry == 0 {
            break;
        }
        let (v, c1) = if negative { limb.overflowing_sub(p) } else { limb.overflowing_add(p) };
        let (v, c2) = if negative { v.overflowing_sub(carry) } else { v.overflowing_add(carry) };
        *limb = v;
        carry = u64::from(c1 || c2);
    }
}

fn add<const L: usize>(acc: &mut [u64; L], x: &[u64; L]) {
    let mut carry = false;
    for (a, &b) in acc.iter_mut().zip(x) {
        let (v, c1) = a.overflowing_add(b);
        let (v, c2) = v.overflowing_add(u64::from(carry));
        *a = v;
        carry = c1 || c2;
    }
}

fn negated<const L: usize>(x: &[u64; L]) -> [u64; L] {
    let mut out = x.map(|l| !l);
    add_at(&mut out, 1, 0, false);
    out
}

fn is_negative<const L: usize>(x: &[u64; L]) -> bool {
    x[L - 1] >> 63 == 1
}

/// The product of the non-negative integers `a` and `b`, in `O` limbs.
fn product<const O: usize>(a: &[u64], b: &[u64]) -> [u64; O] {
    let mut out = [0u64; O];
    for (i, &x) in a.iter().enumerate().filter(|(_, &x)| x != 0) {
        let mut carry = 0u128;
        for (j, &y) in b.iter().enumerate() {
            let cur = out[i + j] as u128 + x as u128 * y as u128 + carry;
            out[i + j] = cur as u64;
            carry = cur >> 64;
        }
        let mut k = i + b.len();
        while carry != 0 {
            let cur = out[k] as u128 + carry;
            out[k] = cur as u64;
            carry = cur >> 64;
            k += 1;
        }
    }
    out
}

/// `x · 2^scale` rounded to f64: the top 64 significant bits, rounded by the u64 → f64 conversion.
fn to_f64<const L: usize>(x: &[u64; L], scale: i32) -> f64 {
    let negative = is_negative(x);
    let mag = if negative { negated(x) } else { *x };
    let Some(top) = mag.iter().rposition(|&l| l != 0) else { return 0.0 };
    let length = 64 * top as u32 + (64 - mag[top].leading_zeros());
    let from = length.saturating_sub(64);
    let (limb, bit) = ((from / 64) as usize, from % 64);
    let mut window = mag[limb] >> bit;
    if bit > 0 && limb + 1 < L {
        window |= mag[limb + 1] << (64 - bit);
    }
    let value = window as f64 * pow2(from as i32 + scale);
    if negative {
        -value
    } else {
        value
    }
}

/// 2^e for the exponents these sums reach (−298 ≤ e ≤ 700).
fn pow2(e: i32) -> f64 {
    let half = |e: i32| f64::from_bits(((e + 1023) as u64) << 52);
    if e > 1023 {
        half(e - 600) * half(600)
    } else {
        half(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::normalize::moments;
    use proptest::prelude::*;

    fn of(values: &[f32]) -> ExactMoments {
        let mut m = ExactMoments::default();
        values.iter().for_each(|&x| m.push(x, 1));
        m
    }

    #[test]
    fn golden_moments() {
        // 1, 2, 3, 6: mean 3, m2 = 4 + 1 + 0 + 9 = 14; with −0.5: Σx = 11.5, Σx² = 50.25, so
        // mean = 11.5/5 and m2 = (n·Σx² − (Σx)²)/n = (251.25 − 132.25)/5 = 119/5.
        assert_eq!(of(&[1.0, 2.0, 3.0, 6.0]).moments(), Moments { n: 4, mean: 3.0, m2: 14.0 });
        let m = of(&[1.0, 2.0, 3.0, 6.0, -0.5]).moments();
        assert_eq!((m.n, m.mean, m.m2), (5, 11.5 / 5.0, 119.0 / 5.0));
        assert_eq!(of(&[]).moments(), Moments { n: 0, mean: 0.0, m2: 0.0 });
        // Extremes of the f32 range: a subnormal, the largest value, zeros.
        let m = of(&[f32::from_bits(1), f32::MAX, 0.0, -0.0]).moments();
        assert_eq!((m.n, m.mean), (4, f64::from(f32::MAX) / 4.0));
    }

    proptest! {
        /// The same multiset gives the same bits whatever the order, the split into parts merged
        /// together, or values added and removed on the way; and agrees with Welford in f64.
        #[test]
        fn order_free_and_accurate(
            values in prop::collection::vec(-1e4f32..1e4, 1..200),
            extra in prop::collection::vec(-1e3f32..1e3, 0..20),
            split in 0usize..200,
        ) {
            let whole = of(&values);
            let mut reversed = values.clone();
            reversed.reverse();
            prop_assert_eq!(of(&reversed), whole);
            let k = split.min(values.len());
            let mut merged = of(&values[..k]);
            merged.merge(&of(&values[k..]), 1);
            prop_assert_eq!(merged, whole);
            let mut churned = of(&values);
            extra.iter().for_each(|&x| churned.push(x, 1));
            churned.merge(&of(&extra), -1);
            prop_assert_eq!(churned, whole);
            let (exact, f64s) = (whole.moments(), moments(&values, &vec![crate::ops::segment::ACTION; values.len()]));
            prop_assert_eq!(exact.n, f64s.n);
            prop_assert!((exact.mean - f64s.mean).abs() <= 1e-9 * (1.0 + f64s.mean.abs()));
            prop_assert!((exact.m2 - f64s.m2).abs() <= 1e-9 * (1.0 + f64s.m2));
        }
    }
}
