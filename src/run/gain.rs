//! Whether a run improved its policy: greedy success on the same dev tasks after the warm start
//! (iteration 0) and at the end, each with a 95 % Wilson interval, and the gain with a paired 95 %
//! interval over tasks (task i solved after minus solved before; normal approximation of the mean
//! of these differences, which the evaluations' ≥ 200 tasks make adequate). A gain whose interval
//! excludes zero is a measured improvement; otherwise the run says it is inconclusive.
//!
//! Invariant: both evaluations cover the same tasks in the same order (the run's fixed dev set),
//! so the differences are paired; evaluations of different lengths are not compared.

use super::metrics::IterationMetrics;

/// z of a two-sided 95 % interval.
const Z95: f64 = 1.959_963_984_540_054;

/// The Wilson score interval of `k` successes in `n` trials.
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let z2 = Z95 * Z95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// A paired difference of success rates with its 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gain {
    /// Mean of after − before over tasks.
    pub mean: f64,
    /// Lower end of the interval.
    pub lo: f64,
    /// Upper end of the interval.
    pub hi: f64,
    /// Tasks.
    pub n: usize,
}

impl Gain {
    /// The paired gain of `after` over `before` (same tasks, same order); None if their lengths
    /// differ or are below 2.
    pub fn paired(before: &[bool], after: &[bool]) -> Option<Gain> {
        let n = before.len();
        if n < 2 || after.len() != n {
            return None;
        }
        let d: Vec<f64> =
            before.iter().zip(after).map(|(&b, &a)| f64::from(u8::from(a)) - f64::from(u8::from(b))).collect();
        let mean = d.iter().sum::<f64>() / n as f64;
        let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let half = Z95 * (var / n as f64).sqrt();
        Some(Gain { mean, lo: mean - half, hi: mean + half, n })
    }

    /// Whether the interval excludes zero.
    pub fn significant(&self) -> bool {
        self.lo > 0.0 || self.hi < 0.0
    }
}

/// Per-task greedy outcomes as stored in metrics (`1` solved, `0` not, in task order).
pub fn outcomes(text: &str) -> Vec<bool> {
    text.chars().map(|c| c == '1').collect()
}

/// Per-task outcomes as metrics store them: `1` solved, `0` not ([`outcomes`] reads them back).
pub fn outcome_text(solved: impl IntoIterator<Item = bool>) -> String {
    solved.into_iter().map(|ok| if ok { '1' } else { '0' }).collect()
}

fn rate(outcomes: &[bool]) -> String {
    let k = outcomes.iter().filter(|&&o| o).count();
    let (lo, hi) = wilson(k, outcomes.len());
    format!("{:.1} % [{:.1}, {:.1}]", 100.0 * k as f64 / outcomes.len() as f64, 100.0 * lo, 100.0 * hi)
}

/// The verdict of a run whose first metrics line is iteration 0 and whose last is its end, if both
/// recorded per-task evaluation outcomes.
pub fn verdict(metrics: &[IterationMetrics]) -> Option<String> {
    let (first, last) = (metrics.first()?, metrics.last()?);
    if last.iteration == 0 {
        return None;
    }
    let before = outcomes(first.eval_outcomes.as_deref()?);
    let after = outcomes(last.eval_outcomes.as_deref()?);
    let g = Gain::paired(&before, &after)?;
    let word = match (g.significant(), g.mean > 0.0) {
        (true, true) => "improved",
        (true, false) => "got worse",
        (false, _) => "inconclusive (the interval includes 0)",
    };
    Some(format!(
        "greedy success on {} dev tasks (95 % intervals): {} after the warm start, {} after iteration {}\n  \
         gain {:+.1} points, paired 95 % interval [{:+.1}, {:+.1}]: {word}\n",
        g.n,
        rate(&before),
        rate(&after),
        last.iteration,
        100.0 * g.mean,
        100.0 * g.lo,
        100.0 * g.hi
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values computed independently (Wilson's formula in Python): 50 of 200 →
    /// [0.19508, 0.31434]; 0 of 10 → [0, 0.27753].
    #[test]
    fn wilson_by_hand() {
        let (lo, hi) = wilson(50, 200);
        assert!((lo - 0.195_08).abs() < 1e-5 && (hi - 0.314_34).abs() < 1e-5, "{lo} {hi}");
        let (lo, hi) = wilson(0, 10);
        assert!(lo == 0.0 && (hi - 0.277_5).abs() < 1e-4, "{lo} {hi}");
    }

    /// Ten tasks: 4 gained, 1 lost, 5 unchanged: mean 0.3, sample variance of the differences
    /// (4·0.49 + 1·1.69 + 5·0.09) / 9 = 0.4556, half-width 1.96·√(0.4556/10) = 0.4184.
    #[test]
    fn paired_gain_by_hand() {
        let before = [false, false, false, false, true, true, true, false, false, true];
        let after = [true, true, true, true, false, true, true, false, false, true];
        let g = Gain::paired(&before, &after).unwrap();
        assert!((g.mean - 0.3).abs() < 1e-12);
        let half = Z95 * (4.1f64 / 9.0 / 10.0).sqrt();
        assert!((g.lo - (0.3 - half)).abs() < 1e-12 && (g.hi - (0.3 + half)).abs() < 1e-12, "{g:?}");
        assert!(!g.significant());
        assert!(Gain::paired(&before, &after[..9]).is_none());
        let all = Gain::paired(&[false; 200], &[true; 200]).unwrap();
        assert!(all.significant() && all.lo == 1.0);
    }

    #[test]
    fn verdict_reads_the_first_and_last_lines() {
        let line = |iteration: u64, o: &str| IterationMetrics {
            iteration,
            eval_outcomes: Some(o.into()),
            ..Default::default()
        };
        let text = verdict(&[
            line(0, &"0".repeat(200)),
            line(1, &"1".repeat(100)),
            line(2, &("1".repeat(120) + &"0".repeat(80))),
        ])
        .unwrap();
        assert!(text.contains("0.0 % [0.0, 1.9] after the warm start"), "{text}");
        assert!(text.contains("60.0 % [53.1, 66.5] after iteration 2"), "{text}");
        assert!(text.contains("gain +60.0 points") && text.contains(": improved"), "{text}");
        assert!(verdict(&[line(0, "01")]).is_none());
    }
}
