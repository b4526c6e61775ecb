//! Broadcasting onto action tokens: writes a per-turn value onto every token
//! of that turn's action, or one scalar onto every action token. All other
//! tokens (prompt, observation, template, and tokens of no action) get 0.0.
//! The output slice is fully overwritten.

use super::action_boundaries::ActionSpan;
use super::segment::ACTION;

/// Writes `per_turn[t]` onto every token of the action of turn `t` and 0.0
/// elsewhere.
///
/// # Panics
/// If `out.len() != n_tokens`, if `per_turn.len() != spans.len()`, or if a
/// span ends beyond `n_tokens`.
pub fn broadcast_turn_values(spans: &[Option<ActionSpan>], per_turn: &[f32], n_tokens: usize, out: &mut [f32]) {
    assert_eq!(out.len(), n_tokens, "output length must equal n_tokens");
    assert_eq!(per_turn.len(), spans.len(), "one value per turn");
    out.fill(0.0);
    for (span, &v) in spans.iter().zip(per_turn) {
        if let Some(span) = span {
            out[span.start..span.end].fill(v);
        }
    }
}

/// Writes `value` onto every action token and 0.0 elsewhere.
///
/// # Panics
/// If `out` and `segments` differ in length.
pub fn broadcast_scalar(segments: &[u8], value: f32, out: &mut [f32]) {
    assert_eq!(out.len(), segments.len(), "one output per token");
    for (o, &s) in out.iter_mut().zip(segments) {
        *o = if s == ACTION { value } else { 0.0 };
    }
}

#[cfg(test)]
mod tests {
    use super::super::action_boundaries::action_spans;
    use super::*;

    #[test]
    fn golden_turn_values() {
        // P A0 A0 O A2, turn 1 empty
        let seg = [0, 1, 1, 2, 1];
        let spans = action_spans(&seg, &[0, 0, 0, 1, 2], 3).unwrap();
        let mut out = [9.0; 5];
        broadcast_turn_values(&spans, &[1.5, 7.0, -2.0], 5, &mut out);
        assert_eq!(out, [0.0, 1.5, 1.5, 0.0, -2.0]);
    }

    #[test]
    fn golden_scalar() {
        let mut out = [9.0; 5];
        broadcast_scalar(&[0, 1, 3, 1, 2], 0.25, &mut out);
        assert_eq!(out, [0.0, 0.25, 0.0, 0.25, 0.0]);
    }
}
