//! The distribution an action token was drawn from, and log-probs under it.
//!
//! A sampler draws an action token from the model's next-token logits after, in this order:
//! the logits of tokens outside the allowed set are set to −∞ (constrained decoding among the
//! admissible actions); the rest are divided by the temperature; top-k keeps the k largest; top-p
//! keeps the most likely tokens until their mass reaches p. Greedy decoding (temperature ≤ 0)
//! applies only the allowed set: its log-probs are those of the masked softmax.
//!
//! Invariant: the sampler ([`super::generate`]) and every training-side log-prob (the learner's
//! policy term, the recomputed `logp_old`, the reference, entropy, `trajflow score`) shape logits
//! through this module, so before the first gradient step the importance ratio of every trained
//! token is 1, and a token with a single allowed continuation has log-prob exactly 0 and no
//! gradient. The truncation of top-k/top-p is decided on the model's current logits (detached):
//! a token the current policy truncates away has log-prob −∞. The learner therefore fixes the
//! support before its first gradient step ([`Drawn::freeze`]): each drawn token's distribution
//! becomes the softmax at the sampler's temperature over the tokens the behaviour policy kept
//! (equal log-probs on the behaviour's logits). A positive action that an update pushes out of
//! the current top-k would otherwise sit at −∞ with no gradient for the rest of the update.

#[cfg(feature = "torch")]
use tch::{Kind, Tensor};

use super::scored_choice::ScoredChoice;

#[cfg(feature = "torch")]
use crate::train::losses::entropy_from_logits;

/// Temperature and truncation of a behaviour distribution (one per row: the rollout's sampling).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// Logits are divided by it; ≤ 0 is greedy (no scaling, no truncation).
    pub temperature: f64,
    /// Keep the k largest logits (0 = all).
    pub top_k: i64,
    /// Keep the most likely tokens until their mass reaches p (1 = all).
    pub top_p: f64,
}

impl Shape {
    /// The model's own softmax: temperature 1, no truncation.
    pub const PLAIN: Shape = Shape { temperature: 1.0, top_k: 0, top_p: 1.0 };

    /// Whether log-probs under this shape equal the plain log-softmax's (given the same mask).
    pub fn is_plain(&self) -> bool {
        self.temperature <= 0.0 || (self.temperature == 1.0 && !self.truncates())
    }

    /// Whether a sampled (not greedy) draw keeps only some tokens (top-k or top-p).
    pub fn truncates(&self) -> bool {
        self.temperature > 0.0 && (self.top_k > 0 || self.top_p < 1.0)
    }
}

/// How the behaviour policy drew one sequence's tokens: its shape, and per token whether the
/// policy drew it (an action token with a behaviour log-prob) and among which tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Drawn {
    /// The row's temperature and truncation.
    pub shape: Shape,
    /// Per token: drawn by the policy.
    pub sampled: Vec<bool>,
    /// Per token: the allowed set (empty: any token).
    pub allowed: Vec<Vec<i64>>,
    /// Actions chosen whole among scored candidates: their tokens' log-probs are the action's
    /// ([`super::scored_choice`]), whatever the shape and allowed sets say.
    pub scored: Vec<ScoredChoice>,
}

impl Drawn {
    /// The drawn tokens `j ≥ 1` (the first token is never predicted) with their allowed sets.
    pub fn tokens(&self) -> impl Iterator<Item = (usize, &[i64])> {
        (1..self.sampled.len()).filter(|&j| self.sampled[j]).map(|j| (j, self.allowed[j].as_slice()))
    }

    /// Makes `supports` (one per drawn token, in [`Drawn::tokens`] order, as [`supports`] gives
    /// them) the allowed sets and drops the truncation from the shape: on the logits the supports
    /// were cut from, every log-prob stays the same; on later logits the support no longer moves.
    pub fn freeze(&mut self, supports: Vec<Vec<i64>>) {
        let drawn: Vec<usize> = self.tokens().map(|(j, _)| j).collect();
        assert_eq!(drawn.len(), supports.len(), "one support per drawn token");
        for (j, support) in drawn.into_iter().zip(supports) {
            self.allowed[j] = support;
        }
        self.shape = Shape { top_k: 0, top_p: 1.0, ..self.shape };
    }
}

#[cfg(feature = "torch")]
impl Shape {
    /// `logits` `[N, V]` divided by the temperature, with truncated tokens at −∞.
    pub fn apply(&self, logits: &Tensor) -> Tensor {
        if self.temperature <= 0.0 {
            return logits.shallow_clone();
        }
        let mut l = if self.temperature == 1.0 { logits.shallow_clone() } else { logits / self.temperature };
        let v = l.size()[1];
        if self.top_k > 0 && self.top_k < v {
            let (kth, _) = l.detach().topk(self.top_k, -1, true, true);
            let min = kth.narrow(1, self.top_k - 1, 1);
            l = l.masked_fill(&l.detach().lt_tensor(&min), f64::NEG_INFINITY);
        }
        if self.top_p < 1.0 {
            let (sorted, idx) = l.detach().sort(-1, true);
            let p = sorted.softmax(-1, Kind::Float);
            // Drop a token when the mass before it already reaches p (the first token always stays).
            let before = p.cumsum(-1, Kind::Float) - &p;
            let drop_sorted = before.ge(self.top_p);
            let drop = drop_sorted.scatter(-1, &idx, &drop_sorted);
            l = l.masked_fill(&drop, f64::NEG_INFINITY);
        }
        l
    }
}

#[cfg(feature = "torch")]
/// `logits` `[N, V]` with every token outside `allowed[i]` at −∞ in row i (an empty set allows all).
pub fn restrict(logits: &Tensor, allowed: &[&[i64]]) -> Tensor {
    if allowed.iter().all(|a| a.is_empty()) {
        return logits.shallow_clone();
    }
    let (n, v) = (allowed.len() as i64, logits.size()[1]);
    let dev = logits.device();
    let rows: Vec<i64> = allowed.iter().enumerate().flat_map(|(r, a)| std::iter::repeat_n(r as i64, a.len())).collect();
    let cols: Vec<i64> = allowed.iter().flat_map(|a| a.iter().copied()).collect();
    let free: Vec<bool> = allowed.iter().map(|a| a.is_empty()).collect();
    let keep = Tensor::zeros([n, v], (Kind::Bool, dev)).index_put(
        &[Some(Tensor::from_slice(&rows).to(dev)), Some(Tensor::from_slice(&cols).to(dev))],
        &Tensor::ones([rows.len() as i64], (Kind::Bool, dev)),
        false,
    );
    let keep = keep.logical_or(&Tensor::from_slice(&free).to(dev).unsqueeze(1));
    logits.masked_fill(&keep.logical_not(), f64::NEG_INFINITY)
}

#[cfg(feature = "torch")]
/// The positions of a batch whose tokens were drawn from a shaped distribution: flat indices into
/// the `[rows × positions]` of a logits tensor, each with its allowed set and shape.
#[derive(Debug, Default)]
pub struct Positions<'a> {
    /// Flat row index into `logits.view([-1, V])`.
    pub index: Vec<i64>,
    /// The allowed tokens there (empty: any).
    pub allowed: Vec<&'a [i64]>,
    /// The row's sampling shape.
    pub shape: Vec<Shape>,
}

#[cfg(feature = "torch")]
impl<'a> Positions<'a> {
    /// Adds the drawn tokens of `drawn` (if any): token `j` predicted at flat position `at(j)`.
    pub fn extend(&mut self, drawn: Option<&'a Drawn>, at: impl Fn(usize) -> usize) {
        if let Some(d) = drawn {
            for (j, allowed) in d.tokens() {
                self.push(at(j), allowed, d.shape);
            }
        }
    }

    /// Adds position `index` drawn with `shape` among `allowed`, unless that is the plain softmax.
    pub fn push(&mut self, index: usize, allowed: &'a [i64], shape: Shape) {
        if allowed.is_empty() && shape.is_plain() {
            return;
        }
        self.index.push(index as i64);
        self.allowed.push(allowed);
        self.shape.push(shape);
    }
}

#[cfg(feature = "torch")]
/// The tokens each position of `drawn` can be drawn from on `logits` `[N, V]` (rows indexed by
/// `drawn.index`): its allowed set cut by its shape's truncation, ascending; empty where the shape
/// does not truncate.
pub fn supports(logits: &Tensor, drawn: &Positions<'_>) -> Vec<Vec<i64>> {
    let _guard = tch::no_grad_guard();
    let flat = logits.to_kind(Kind::Float);
    let mut out = vec![Vec::new(); drawn.index.len()];
    for shape in distinct(&drawn.shape).into_iter().filter(Shape::truncates) {
        let members: Vec<usize> = (0..drawn.index.len()).filter(|&i| drawn.shape[i] == shape).collect();
        let idx = Tensor::from_slice(&members.iter().map(|&i| drawn.index[i]).collect::<Vec<_>>()).to(flat.device());
        let allowed: Vec<&[i64]> = members.iter().map(|&i| drawn.allowed[i]).collect();
        let kept = shape.apply(&restrict(&flat.index_select(0, &idx), &allowed)).isfinite();
        let pairs = Vec::<i64>::try_from(kept.nonzero().to_device(tch::Device::Cpu).reshape([-1]))
            .expect("nonzero gives int64 indices");
        for pair in pairs.chunks(2) {
            out[members[pair[0] as usize]].push(pair[1]);
        }
    }
    out
}

#[cfg(feature = "torch")]
/// The distinct shapes of `shapes`, in first-seen order.
fn distinct(shapes: &[Shape]) -> Vec<Shape> {
    let mut out: Vec<Shape> = Vec::new();
    for s in shapes {
        if !out.contains(s) {
            out.push(*s);
        }
    }
    out
}

/// Whether [`log_probs`] also returns the entropies of the distributions, and how.
#[cfg(feature = "torch")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entropy {
    /// None.
    Skip,
    /// Detached (a metric).
    Detached,
    /// Differentiable (an entropy bonus): keeps `[N, V]` probabilities for the backward pass.
    Differentiable,
}

#[cfg(feature = "torch")]
/// Log-probs of `targets` `[..]` under `logits` `[.., V]` (same leading shape), and the entropies
/// of those distributions as `entropy` asks: the plain log-softmax, except at `drawn` positions,
/// where the distribution is shaped as the sampler's. Differentiable in `logits`.
pub fn log_probs(
    logits: &Tensor,
    targets: &Tensor,
    drawn: &Positions<'_>,
    entropy: Entropy,
) -> (Tensor, Option<Tensor>) {
    let lead = targets.size();
    let v = *logits.size().last().expect("logits have a vocabulary dimension");
    let flat = logits.reshape([-1, v]).to_kind(Kind::Float);
    let target = targets.reshape([-1, 1]);
    let mut logp = flat.log_softmax(-1, Kind::Float).gather(1, &target, false).squeeze_dim(1);
    let h = |l: &Tensor| match entropy {
        Entropy::Differentiable => entropy_from_logits(l),
        _ => tch::no_grad(|| entropy_from_logits(&l.detach())),
    };
    let mut ent = (entropy != Entropy::Skip).then(|| h(&flat));
    for shape in distinct(&drawn.shape) {
        let members: Vec<usize> = (0..drawn.index.len()).filter(|&i| drawn.shape[i] == shape).collect();
        let index: Vec<i64> = members.iter().map(|&i| drawn.index[i]).collect();
        let allowed: Vec<&[i64]> = members.iter().map(|&i| drawn.allowed[i]).collect();
        let idx = Tensor::from_slice(&index).to(flat.device());
        let shaped = shape.apply(&restrict(&flat.index_select(0, &idx), &allowed));
        let lp = shaped.log_softmax(-1, Kind::Float).gather(1, &target.index_select(0, &idx), false).squeeze_dim(1);
        logp = logp.scatter(0, &idx, &lp);
        if let Some(e) = ent.as_mut() {
            *e = e.scatter(0, &idx, &h(&shaped));
        }
    }
    (logp.view(lead.as_slice()), ent.map(|e| e.view(lead.as_slice())))
}

#[cfg(all(test, feature = "torch"))]
mod tests {
    use super::*;

    fn t(rows: &[&[f64]]) -> Tensor {
        let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_slice(&flat).view([rows.len() as i64, rows[0].len() as i64]).to_kind(Kind::Float)
    }

    fn vals(x: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(x.to_kind(Kind::Double).flatten(0, -1)).unwrap()
    }

    /// Golden values by hand over logits [ln 1, ln 2, ln 3, ln 4] (probabilities 0.1 … 0.4).
    #[test]
    fn shaped_log_probs_by_hand() {
        let l = t(&[&[1f64.ln(), 2f64.ln(), 3f64.ln(), 4f64.ln()]]);
        let lp = |allowed: &[i64], shape: Shape, target: i64| {
            let mut d = Positions::default();
            d.push(0, allowed, shape);
            let (lp, _) = log_probs(&l, &Tensor::from_slice(&[target]), &d, Entropy::Skip);
            vals(&lp)[0]
        };
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        close(lp(&[], Shape::PLAIN, 2), 0.3f64.ln());
        // Allowed {1, 3}: 2/6 and 4/6.
        close(lp(&[1, 3], Shape::PLAIN, 1), (2.0f64 / 6.0).ln());
        // One allowed continuation: probability 1.
        assert_eq!(lp(&[2], Shape::PLAIN, 2), 0.0);
        // Temperature 0.5 squares the odds: 9 / 30.
        let half = Shape { temperature: 0.5, ..Shape::PLAIN };
        close(lp(&[], half, 2), (9.0f64 / 30.0).ln());
        // Top-2 keeps 3 and 4: 3/7; a truncated token has log-prob −∞.
        let top2 = Shape { top_k: 2, ..Shape::PLAIN };
        close(lp(&[], top2, 2), (3.0f64 / 7.0).ln());
        assert_eq!(lp(&[], top2, 0), f64::NEG_INFINITY);
        // Top-p 0.65: 0.4 then 0.3 reach it (0.1 and 0.2 dropped): 3/7.
        close(lp(&[], Shape { top_p: 0.65, ..Shape::PLAIN }, 2), (3.0f64 / 7.0).ln());
        // Mask first, then top-k among the allowed: {0, 1, 2} top-2 → 2/5 and 3/5.
        close(lp(&[0, 1, 2], top2, 1), 0.4f64.ln());
        // Greedy: masked softmax at temperature 1, no truncation.
        let greedy = Shape { temperature: 0.0, top_k: 1, top_p: 0.1 };
        close(lp(&[0, 1], greedy, 0), (1.0f64 / 3.0).ln());
    }

    /// Where one continuation is allowed, the token carries no gradient; elsewhere the gradient
    /// is that of the restricted softmax.
    #[test]
    fn forced_tokens_carry_no_gradient() {
        let l = t(&[&[0.3, -0.2, 0.9], &[0.1, 0.5, -0.4]]).set_requires_grad(true);
        let mut d = Positions::default();
        d.push(0, &[1], Shape::PLAIN);
        d.push(1, &[0, 1], Shape::PLAIN);
        let (lp, ent) = log_probs(&l, &Tensor::from_slice(&[1i64, 0]), &d, Entropy::Detached);
        lp.sum(Kind::Float).backward();
        let g = vals(&l.grad());
        assert!(g[..3].iter().all(|&x| x == 0.0), "{g:?}");
        // d/dz log softmax over {0, 1} at target 0: (1 − p0, −p1, 0).
        let p0 = 0.1f64.exp() / (0.1f64.exp() + 0.5f64.exp());
        for (got, want) in g[3..].iter().zip([1.0 - p0, -(1.0 - p0), 0.0]) {
            assert!((got - want).abs() < 1e-6, "{g:?}");
        }
        let h = vals(&ent.unwrap());
        assert!(h[0].abs() < 1e-7, "a forced token's distribution has no entropy: {h:?}");
        let want = -(p0 * p0.ln() + (1.0 - p0) * (1.0 - p0).ln());
        assert!((h[1] - want).abs() < 1e-6, "{h:?}");
    }

    /// Rows with different shapes in one batch each get their own; plain rows keep log-softmax.
    #[test]
    fn mixed_shapes_in_one_batch() {
        let row: &[f64] = &[1f64.ln(), 2f64.ln(), 3f64.ln(), 4f64.ln()];
        let l = t(&[row, row, row]);
        let mut d = Positions::default();
        d.push(0, &[], Shape { temperature: 0.5, ..Shape::PLAIN });
        d.push(2, &[], Shape { top_k: 2, ..Shape::PLAIN });
        d.push(1, &[], Shape::PLAIN); // plain: not recorded
        assert_eq!(d.index, vec![0, 2]);
        let (lp, _) = log_probs(&l, &Tensor::from_slice(&[3i64, 3, 3]), &d, Entropy::Skip);
        let got = vals(&lp);
        for (g, w) in got.iter().zip([16.0f64 / 30.0, 0.4, 4.0 / 7.0]) {
            assert!((g - w.ln()).abs() < 1e-6, "{got:?}");
        }
    }

    /// The support is the allowed set cut by the truncation; untruncated shapes give none.
    #[test]
    fn supports_by_hand() {
        let row: &[f64] = &[1f64.ln(), 2f64.ln(), 3f64.ln(), 4f64.ln()];
        let l = t(&[row, row, row, row]);
        let top2 = Shape { top_k: 2, ..Shape::PLAIN };
        let mut d = Positions::default();
        d.push(0, &[], top2);
        d.push(1, &[0, 1, 2], top2);
        d.push(2, &[], Shape { top_p: 0.65, temperature: 0.7, top_k: 0 });
        d.push(3, &[0, 3], Shape::PLAIN);
        assert_eq!(supports(&l, &d), vec![vec![2, 3], vec![1, 2], vec![2, 3], vec![]]);
    }

    /// Frozen, a drawn token keeps its log-prob on the behaviour's logits, and after the policy
    /// moves it out of the top-k it still has a finite log-prob and a gradient.
    #[test]
    fn frozen_support_keeps_log_probs_and_gradient() {
        let shape = Shape { temperature: 0.8, top_k: 2, top_p: 1.0 };
        let mut drawn = Drawn { shape, sampled: vec![false, true], allowed: vec![vec![], vec![]], scored: vec![] };
        let behaviour = t(&[&[1f64.ln(), 2f64.ln(), 3f64.ln(), 4f64.ln()]]);
        let target = Tensor::from_slice(&[2i64]);
        let lp_of = |l: &Tensor, d: &Drawn| {
            let mut p = Positions::default();
            p.extend(Some(d), |j| j - 1);
            log_probs(l, &target, &p, Entropy::Skip).0
        };
        let before = vals(&lp_of(&behaviour, &drawn))[0];
        let mut p = Positions::default();
        p.extend(Some(&drawn), |j| j - 1);
        let support = supports(&behaviour, &p);
        drop(p);
        drawn.freeze(support);
        assert_eq!(drawn.allowed[1], vec![2, 3]);
        assert_eq!(drawn.shape, Shape { temperature: 0.8, top_k: 0, top_p: 1.0 });
        assert!((vals(&lp_of(&behaviour, &drawn))[0] - before).abs() < 1e-6);
        // The policy moved: token 2 is now third, out of the top-2.
        let moved = t(&[&[0.0, 2.0, 1.0, 3.0]]).set_requires_grad(true);
        let unfrozen = Drawn { shape, sampled: vec![false, true], allowed: vec![vec![], vec![]], scored: vec![] };
        assert_eq!(vals(&lp_of(&moved, &unfrozen))[0], f64::NEG_INFINITY);
        let lp = lp_of(&moved, &drawn);
        // Softmax at temperature 0.8 over {2, 3}: log σ((1 − 3) / 0.8).
        let want = -(1.0 + (2.0f64 / 0.8).exp()).ln();
        assert!((vals(&lp)[0] - want).abs() < 1e-6, "{:?}", vals(&lp));
        lp.sum(Kind::Float).backward();
        let g = vals(&moved.grad());
        assert!(g[2] > 0.0 && g[3] < 0.0 && g[0] == 0.0 && g[1] == 0.0, "{g:?}");
    }
}
