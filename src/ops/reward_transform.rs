//! Reward transforms. RetroAct's reflector reward scores a reflection by the
//! improvement it caused between the last trial's reward and the current one:
//! the official code uses `(current − last)·(last + α)/α` (α =
//! `reflector_reward_coefficient`, 1.0 by default, so improvements from an
//! already partly correct trial count more); the paper states
//! `current − last`. [`clip_min`] bounds a reward from below.

/// Which reflector-reward formula to use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReflectorFormula {
    /// Official code: `(current − last)·(last + α)/α`.
    Code {
        /// Reflector reward coefficient α (1.0 in the official code).
        alpha: f64,
    },
    /// Paper: `current − last`.
    Paper,
}

impl Default for ReflectorFormula {
    /// The official code with α = 1.
    fn default() -> Self {
        ReflectorFormula::Code { alpha: 1.0 }
    }
}

/// Reflector reward from the current and last trial rewards.
pub fn reflector_reward(current: f64, last: f64, f: &ReflectorFormula) -> f64 {
    match *f {
        ReflectorFormula::Code { alpha } => (current - last) * (last + alpha) / alpha,
        ReflectorFormula::Paper => current - last,
    }
}

/// `max(x, min)`; a NaN `x` yields `min`.
pub fn clip_min(x: f64, min: f64) -> f64 {
    x.max(min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_reflector() {
        // code, α = 1: (0.75 − 0.25)·(0.25 + 1)/1 = 0.5·1.25 = 0.625
        assert_eq!(reflector_reward(0.75, 0.25, &ReflectorFormula::default()), 0.625);
        // code, α = 0.5: 0.5·(0.25 + 0.5)/0.5 = 0.75
        assert_eq!(reflector_reward(0.75, 0.25, &ReflectorFormula::Code { alpha: 0.5 }), 0.75);
        // paper: 0.75 − 0.25 = 0.5
        assert_eq!(reflector_reward(0.75, 0.25, &ReflectorFormula::Paper), 0.5);
        // regression, code α = 1: (0 − 1)·(1 + 1) = −2; paper: −1
        assert_eq!(reflector_reward(0.0, 1.0, &ReflectorFormula::default()), -2.0);
        assert_eq!(reflector_reward(0.0, 1.0, &ReflectorFormula::Paper), -1.0);
    }

    #[test]
    fn golden_clip_min() {
        assert_eq!(clip_min(-0.5, 0.0), 0.0);
        assert_eq!(clip_min(0.3, 0.0), 0.3);
        assert_eq!(clip_min(f64::NAN, -1.0), -1.0);
    }
}
