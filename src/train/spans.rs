//! Importance ratios over spans of tokens: LOOP's turn- and trajectory-level PPO (ALGORITHMS.md
//! §5.4, "LOOP (turn)" and "LOOP (bandit)") and TWOSOME's action-level PPO (§6.7). Every trained
//! token of a span is given the span's log-prob — the sum of its trained tokens' log-probs (the
//! span's likelihood, so that the ratio becomes the product of the token ratios) or their mean (the
//! per-token geometric mean, TWOSOME's token normalisation) — and the per-token PPO loss applied
//! to these sees one ratio per span, clipped as a whole.
//!
//! Invariants:
//! - Untrained positions (mask 0) add nothing to any span, whatever they hold (NaN included), and
//!   keep their own value.
//! - With every trained token alone in its span, `Sum` and `Mean` both return the input on
//!   trained tokens (token-level PPO).
//! - Gradients flow to every trained token of a span (scatter-add, then gather).

use tch::{Kind, Tensor};

pub use crate::pipeline::training::SpanLogp;

/// The unit one importance ratio covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// One ratio per token.
    Token,
    /// One per turn: the action tokens the policy wrote in one turn (an action).
    Turn(SpanLogp),
    /// One per trajectory: all of a row's trained tokens.
    Trajectory(SpanLogp),
}

/// `logp` `[B, T]` with each trained token's value replaced by its span's (see the module docs);
/// `span` `[B, T]` holds span ids ≥ 0 (int64), `mask` is 1.0 on trained tokens.
pub fn span_logp(logp: &Tensor, mask: &Tensor, span: &Tensor, how: SpanLogp) -> Tensor {
    let on = mask.gt(0.0);
    let off = on.logical_not();
    let kind = logp.kind();
    let x = logp.masked_fill(&off, 0.0);
    let idx = span.masked_fill(&off, 0);
    let spans = idx.max().int64_value(&[]) + 1;
    let zeros = Tensor::zeros([logp.size()[0], spans], (kind, logp.device()));
    let sums = zeros.scatter_add(1, &idx, &x);
    let agg = match how {
        SpanLogp::Sum => sums,
        SpanLogp::Mean => {
            let counts = zeros.scatter_add(1, &idx, &on.to_kind(kind));
            sums / counts.clamp_min(1.0)
        }
    };
    agg.gather(1, &idx, false).where_self(&on, logp)
}

/// [`span_logp`] at `granularity`, with `turns` `[B, T]` the tokens' turn indices.
pub fn at_granularity(logp: &Tensor, mask: &Tensor, turns: &Tensor, granularity: Granularity) -> Tensor {
    match granularity {
        Granularity::Token => logp.shallow_clone(),
        Granularity::Turn(how) => span_logp(logp, mask, turns, how),
        Granularity::Trajectory(how) => span_logp(logp, mask, &turns.zeros_like().to_kind(Kind::Int64), how),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], rows: i64) -> Tensor {
        Tensor::from_slice(v).view([rows, -1])
    }

    /// Values by hand: two rows, turns [0 0 1 1 1] and [0 1 1 2 2], some positions untrained
    /// (one holding NaN).
    #[test]
    fn spans_sum_or_average_their_trained_tokens_by_hand() {
        let logp = t(&[-1.0, -2.0, -3.0, f32::NAN, -5.0, -0.5, -1.5, -2.5, -4.0, -6.0], 2);
        let mask = t(&[1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0], 2);
        let turns = Tensor::from_slice(&[0i64, 0, 1, 1, 1, 0, 1, 1, 2, 2]).view([2, 5]);
        let sum = Vec::<f32>::try_from(span_logp(&logp, &mask, &turns, SpanLogp::Sum).view([-1])).unwrap();
        let want = [-3.0, -3.0, -8.0, f32::NAN, -8.0, -0.5, -4.0, -4.0, -10.0, -10.0];
        for (i, (a, b)) in sum.iter().zip(want).enumerate() {
            assert!((a.is_nan() && b.is_nan()) || a == &b, "sum {i}: {a} vs {b}");
        }
        let mean = Vec::<f32>::try_from(span_logp(&logp, &mask, &turns, SpanLogp::Mean).view([-1])).unwrap();
        let want = [-1.5, -1.5, -4.0, f32::NAN, -4.0, -0.5, -2.0, -2.0, -5.0, -5.0];
        for (i, (a, b)) in mean.iter().zip(want).enumerate() {
            assert!((a.is_nan() && b.is_nan()) || a == &b, "mean {i}: {a} vs {b}");
        }
        let whole = at_granularity(&logp, &mask, &turns, Granularity::Trajectory(SpanLogp::Sum));
        assert_eq!(Vec::<f32>::try_from(whole.get(1)).unwrap(), vec![-0.5, -14.0, -14.0, -14.0, -14.0]);
    }

    /// One token per span gives token-level values; the gradient of a span's sum reaches each of
    /// its trained tokens with weight 1 (and untrained ones with 0).
    #[test]
    fn singleton_spans_are_tokens_and_gradients_reach_every_member() {
        let logp = t(&[-1.0, -2.0, -3.0, -4.0], 1).set_requires_grad(true);
        let mask = t(&[1.0, 1.0, 0.0, 1.0], 1);
        let own = Tensor::from_slice(&[0i64, 1, 2, 3]).view([1, 4]);
        for how in [SpanLogp::Sum, SpanLogp::Mean] {
            assert!(span_logp(&logp, &mask, &own, how).equal(&logp));
        }
        let one = Tensor::zeros([1, 4], (Kind::Int64, tch::Device::Cpu));
        let out = span_logp(&logp, &mask, &one, SpanLogp::Sum);
        // Read at the first token only: d/dlogp = mask.
        out.get(0).get(0).backward();
        assert_eq!(Vec::<f32>::try_from(logp.grad().view([-1])).unwrap(), vec![1.0, 1.0, 0.0, 1.0]);
    }
}
