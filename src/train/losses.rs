//! Loss functions for RL and SFT on token sequences, over `tch::Tensor`.
//!
//! **Shapes.** Per-token inputs are `[B, T]` (rows are sequences, columns token positions):
//! log-probs of the sampled tokens under the current policy (`logp`), the behaviour/old policy
//! (`logp_old`, `logp_beh`) or a reference (`logp_ref`); per-token advantages, returns, values and
//! rewards are already broadcast to `[B, T]`. Logits for the entropy are `[B, T, V]`. Sequence-level
//! inputs (DPO, the discriminator) are `[N]`.
//!
//! **Masks.** `mask` is `[B, T]`, 1.0 on trainable action tokens and 0.0 on prompt, observation,
//! template and padding tokens (interior zeros and fully masked rows are fine). Positions where the
//! mask is 0 are *replaced* by 0 (`masked_fill`, as veRL's `masked_sum` does) before any arithmetic,
//! never multiplied, so NaN/inf stored there cannot leak into the loss or into the gradient (whose
//! value at a masked position is exactly 0).
//!
//! **Precision.** Everything is computed in f64 when the first input is f64 and in f32 otherwise
//! (bf16/f16 inputs are upcast); gradients flow back through the casts.
//!
//! **Reductions.** Every per-token loss is reduced to a scalar by [`reduce`] with a [`Reduction`],
//! so each paper's normalisation can be reproduced: POAD and veRL's default use
//! [`Reduction::TokenMean`], LOOP [`Reduction::SeqMeanTokenMean`], RetroAct
//! [`Reduction::AllPositionsMean`]. Token counts in denominators get veRL's `masked_mean` epsilon
//! ([`MASK_EPS`] = 1e-8, invisible in f32 for any non-empty mask), row counts are clamped to ≥ 1,
//! so a fully masked batch gives a loss of exactly 0 with zero gradient instead of NaN.
//!
//! **Metrics** returned next to a loss are detached and always use the token mean over the mask
//! (veRL's `masked_mean`), whatever the loss's reduction.

use tch::{Kind, Tensor};

pub use crate::pipeline::reduction::Reduction;

/// veRL's `masked_mean` epsilon, added to token counts in denominators.
pub const MASK_EPS: f64 = 1e-8;
/// The log-ratio `logp − logp_old` is clamped to ±this before `exp` (veRL's safe ratio).
pub const LOG_RATIO_CLAMP: f64 = 20.0;
/// veRL's k3 clamps: `d = ref − logp` to ±[`K3_D_CLAMP`], the estimate to ±[`K3_CLAMP`].
pub const K3_D_CLAMP: f64 = 20.0;
/// See [`K3_D_CLAMP`].
pub const K3_CLAMP: f64 = 10.0;

/// The kind losses are computed in: f64 stays f64, anything else becomes f32.
fn compute_kind(t: &Tensor) -> Kind {
    match t.kind() {
        Kind::Double => Kind::Double,
        _ => Kind::Float,
    }
}

/// `x` cast to `kind` with masked positions (mask == 0) replaced by 0.
fn clean(x: &Tensor, off: &Tensor, kind: Kind) -> Tensor {
    x.to_kind(kind).masked_fill(off, 0.0)
}

/// The mask as `kind`, and the boolean "masked out" tensor.
fn mask_parts(mask: &Tensor, kind: Kind) -> (Tensor, Tensor) {
    let m = mask.to_kind(kind);
    let off = m.eq(0.0);
    (m, off)
}

/// `Σ(values·mask)` with masked values replaced by 0 first (veRL `masked_sum`; NaN-safe).
pub fn masked_sum(values: &Tensor, mask: &Tensor) -> Tensor {
    let kind = compute_kind(values);
    let (m, off) = mask_parts(mask, kind);
    (clean(values, &off, kind) * &m).sum(kind)
}

/// `Σ(values·mask) / (Σmask + 1e-8)` (veRL `masked_mean`; NaN-safe; 0 for an empty mask).
pub fn masked_mean(values: &Tensor, mask: &Tensor) -> Tensor {
    let kind = compute_kind(values);
    masked_sum(values, mask) / (mask.to_kind(kind).sum(kind) + MASK_EPS)
}

/// Reduces a per-token loss `[B, T]` to a scalar over `mask` `[B, T]` (see [`Reduction`]).
///
/// Masked positions are replaced by 0 before the product with the mask, so NaN/inf there never
/// reach the result or the gradient. Row reductions run over the last dimension.
pub fn reduce(loss: &Tensor, mask: &Tensor, r: Reduction) -> Tensor {
    let kind = compute_kind(loss);
    let (m, off) = mask_parts(mask, kind);
    let x = clean(loss, &off, kind) * &m;
    match r {
        Reduction::TokenMean => x.sum(kind) / (m.sum(kind) + MASK_EPS),
        Reduction::Sum => x.sum(kind),
        Reduction::AllPositionsMean => x.sum(kind) / (x.numel().max(1) as f64),
        Reduction::SeqMeanTokenMean | Reduction::SeqMeanTokenSum => {
            let row_tokens = m.sum_dim_intlist(-1, false, kind);
            let row_sums = x.sum_dim_intlist(-1, false, kind);
            let rows = if r == Reduction::SeqMeanTokenMean { row_sums / (&row_tokens + MASK_EPS) } else { row_sums };
            let non_empty = row_tokens.gt(0.0).to_kind(kind);
            (rows * &non_empty).sum(kind) / non_empty.sum(kind).clamp_min(1.0)
        }
    }
}

/// Clipping configuration of [`ppo_policy_loss`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PpoClip {
    /// ε_low: the ratio is clipped below at `1 − ε_low` (ignored when `loop_lower_bound`).
    pub eps_low: f64,
    /// ε_high: the ratio is clipped above at `1 + ε_high`.
    pub eps_high: f64,
    /// veRL's dual clip `c` (`clip_ratio_c`, > 1, typically 3.0): for A < 0 the per-token loss is
    /// additionally capped at `−A·c`. `None` disables it.
    pub dual_clip: Option<f64>,
    /// LOOP's bound: the lower clip bound becomes `1/(1 + ε_high)` instead of `1 − ε_low`.
    pub loop_lower_bound: bool,
}

impl PpoClip {
    /// Symmetric PPO clipping `[1 − ε, 1 + ε]`, no dual clip (POAD: ε = 0.2).
    pub fn symmetric(eps: f64) -> Self {
        PpoClip { eps_low: eps, eps_high: eps, dual_clip: None, loop_lower_bound: false }
    }

    /// LOOP's clipping `[1/(1 + ε), 1 + ε]` (LOOP: ε = 0.1).
    pub fn loop_(eps: f64) -> Self {
        PpoClip { eps_low: eps, eps_high: eps, dual_clip: None, loop_lower_bound: true }
    }

    /// No clipping at all (RLOO, REINFORCE): bounds so wide that no ratio `exp(±20)` reaches them,
    /// so the loss is `−A·ρ` and its gradient at ρ = 1 the plain policy gradient.
    pub fn unclipped() -> Self {
        PpoClip { eps_low: 1.0 - 1e-12, eps_high: 1e12, dual_clip: None, loop_lower_bound: false }
    }

    /// Checks the configuration: ε_high > 0, ε_low in (0, 1) unless LOOP's bound is used, dual clip
    /// `c > 1`.
    pub fn validate(&self) -> Result<(), String> {
        // Written so that NaN fails every check.
        if self.eps_high.is_nan() || self.eps_high <= 0.0 {
            return Err(format!("ppo clip: eps_high must be > 0, got {}", self.eps_high));
        }
        let low_ok = self.eps_low > 0.0 && self.eps_low < 1.0;
        if !self.loop_lower_bound && !low_ok {
            return Err(format!("ppo clip: eps_low must be in (0, 1), got {}", self.eps_low));
        }
        match self.dual_clip {
            Some(c) if c.is_nan() || c <= 1.0 => Err(format!("ppo clip: dual clip constant must be > 1, got {c}")),
            _ => Ok(()),
        }
    }
}

impl Default for PpoClip {
    /// veRL's defaults: ε = 0.2 both sides, no dual clip.
    fn default() -> Self {
        PpoClip::symmetric(0.2)
    }
}

/// Output of [`ppo_policy_loss`]. All metrics are detached scalars, token means over the mask.
#[derive(Debug)]
pub struct PolicyLoss {
    /// The reduced loss (differentiable scalar).
    pub loss: Tensor,
    /// Fraction of tokens where the clipped term was strictly chosen (veRL `pg_clipfrac`).
    pub clip_frac: Tensor,
    /// Fraction of tokens where the dual clip was strictly active (veRL `pg_clipfrac_lower`);
    /// 0 without dual clip.
    pub dual_clip_frac: Tensor,
    /// k3 estimate of KL(π_old‖π_θ): masked mean of `(ρ − 1) − log ρ` (POAD's KL guard).
    pub approx_kl_k3: Tensor,
    /// Masked mean of the ratio ρ.
    pub ratio_mean: Tensor,
}

/// PPO clipped surrogate loss per token, reduced with `r`.
///
/// `ρ = exp(clamp(logp − logp_old, −20, 20))` (veRL). With `ℓ₁ = −A·ρ`:
/// * standard (Schulman et al. 2017; POAD; veRL `compute_policy_loss_vanilla`):
///   `ℓ₂ = −A·clip(ρ, 1 − ε_low, 1 + ε_high)`, `ℓ = max(ℓ₁, ℓ₂) = −min(ρA, clip(ρ)A)`;
/// * LOOP (`loop_lower_bound`, apple/ml-loop `_surrogate_loss`): `ℓ₂ = −g(A)` with
///   `g(A) = (1 + ε_high)·A` for A ≥ 0 and `A/(1 + ε_high)` for A < 0, `ℓ = −min(ρA, g(A))`.
///   This equals standard clipping with the lower bound `1/(1 + ε_high)`; `eps_low` is unused.
/// * dual clip (veRL, `dual_clip = Some(c)`): for A < 0, `ℓ ← min(ℓ, −A·c)`.
///
/// The gradient is 0 on tokens where a clipped term is chosen. Use
/// [`Reduction::TokenMean`] for POAD/veRL and [`Reduction::SeqMeanTokenMean`] for LOOP.
pub fn ppo_policy_loss(
    logp: &Tensor,
    logp_old: &Tensor,
    adv: &Tensor,
    mask: &Tensor,
    c: &PpoClip,
    r: Reduction,
) -> PolicyLoss {
    let kind = compute_kind(logp);
    let (m, off) = mask_parts(mask, kind);
    let logp = clean(logp, &off, kind);
    let logp_old = clean(logp_old, &off, kind);
    let adv = clean(adv, &off, kind);

    let log_ratio = (&logp - &logp_old).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP);
    let ratio = log_ratio.exp();
    let loss1 = -(&adv * &ratio);
    let loss2 = if c.loop_lower_bound {
        let up = 1.0 + c.eps_high;
        let g = (&adv * up).where_self(&adv.ge(0.0), &(&adv / up));
        -g
    } else {
        -(&adv * ratio.clamp(1.0 - c.eps_low, 1.0 + c.eps_high))
    };
    let clipped = loss1.maximum(&loss2);
    let (per_token, dual_active) = match c.dual_clip {
        Some(cc) => {
            let loss3 = -(&adv * cc);
            let neg = adv.lt(0.0);
            let dual_active = clipped.gt_tensor(&loss3).logical_and(&neg);
            (clipped.minimum(&loss3).where_self(&neg, &clipped), dual_active)
        }
        None => (clipped, adv.zeros_like().to_kind(Kind::Bool)),
    };
    let loss = reduce(&per_token, &m, r);

    let (ratio_d, log_ratio_d) = (ratio.detach(), log_ratio.detach());
    let clip_frac = masked_mean(&loss2.detach().gt_tensor(&loss1.detach()).to_kind(kind), &m);
    let dual_clip_frac = masked_mean(&dual_active.to_kind(kind), &m);
    let approx_kl_k3 = masked_mean(&(log_ratio_d.expm1() - &log_ratio_d), &m);
    let ratio_mean = masked_mean(&ratio_d, &m);
    PolicyLoss { loss, clip_frac, dual_clip_frac, approx_kl_k3, ratio_mean }
}

/// Clipped value (critic) loss, reduced with `r`:
/// `½·max((V − R)², (V_clip − R)²)` with `V_clip = V_old + clamp(V − V_old, −ε, ε)`;
/// with `clip = None` it is `½·(V − R)²`.
///
/// Reproduces veRL `compute_value_loss` (the ½ included) and POAD's critic loss. POAD's code has
/// no ½: it multiplies the masked mean by its value coefficient `c_v` instead, so to reproduce POAD
/// with coefficient `c_v` pass `2·c_v` at the call site (or `c_v` and accept the ½ as part of it).
pub fn value_loss(
    v_new: &Tensor,
    v_old: &Tensor,
    returns: &Tensor,
    mask: &Tensor,
    clip: Option<f64>,
    r: Reduction,
) -> Tensor {
    let kind = compute_kind(v_new);
    let (m, off) = mask_parts(mask, kind);
    let v_new = clean(v_new, &off, kind);
    let ret = clean(returns, &off, kind);
    let err = (&v_new - &ret).square();
    let per_token = match clip {
        Some(eps) => {
            let v_old = clean(v_old, &off, kind);
            let v_clip = &v_old + (&v_new - &v_old).clamp(-eps, eps);
            err.maximum(&(v_clip - &ret).square())
        }
        None => err,
    };
    reduce(&per_token, &m, r) * 0.5
}

/// Per-token entropy of the categorical distribution given by `logits` `[B, T, V]` → `[B, T]`:
/// `H = logsumexp(z) − Σ_v softmax(z)_v·z_v` (veRL `entropy_from_logits`), computed in f32 (f64
/// stays f64). Logits of −∞ (excluded tokens) are allowed: their `p·z` term is taken as 0.
///
/// Allocates a few `[B, T, V]` temporaries; chunk over `T` for long sequences with big vocabularies.
pub fn entropy_from_logits(logits: &Tensor) -> Tensor {
    let kind = compute_kind(logits);
    let z = logits.to_kind(kind);
    let p = z.softmax(-1, kind);
    let z_finite = z.masked_fill(&p.eq(0.0), 0.0);
    z.logsumexp(-1, false) - (p * z_finite).sum_dim_intlist(-1, false, kind)
}

/// The entropy bonus: the per-token entropy `[B, T]` reduced over `mask` with `r`. It is a positive
/// quantity; the caller subtracts `c_ent ·` it from the loss (POAD, veRL `compute_entropy_loss`).
pub fn entropy_bonus(entropy: &Tensor, mask: &Tensor, r: Reduction) -> Tensor {
    reduce(entropy, mask, r)
}

pub use crate::ops::kl::KlEstimator;

/// KL-to-reference loss: the per-token estimate `e` (veRL `kl_penalty` semantics, see
/// [`KlEstimator`]) reduced with `r` (veRL `use_kl_loss`: `agg_loss(kl_penalty(logp, ref))`, times
/// `kl_loss_coef` at the call site; GRPO's KL term with `K3`).
///
/// k3 is evaluated as `expm1(d) − d`, equal to veRL's `exp(d) − d − 1` up to rounding and accurate
/// near 0. Clamped tokens have zero gradient.
pub fn kl_loss(logp: &Tensor, logp_ref: &Tensor, mask: &Tensor, e: KlEstimator, r: Reduction) -> Tensor {
    let kind = compute_kind(logp);
    let (m, off) = mask_parts(mask, kind);
    let logp = clean(logp, &off, kind);
    let logp_ref = clean(logp_ref, &off, kind);
    let per_token = match e {
        KlEstimator::K1 => &logp - &logp_ref,
        KlEstimator::K2 => (&logp - &logp_ref).square() * 0.5,
        KlEstimator::K3 => {
            let d = (&logp_ref - &logp).clamp(-K3_D_CLAMP, K3_D_CLAMP);
            (d.expm1() - &d).clamp(-K3_CLAMP, K3_CLAMP)
        }
    };
    reduce(&per_token, &m, r)
}

/// Output of [`dpo_loss`].
#[derive(Debug)]
pub struct DpoLoss {
    /// Mean loss over the `N` pairs (differentiable scalar).
    pub loss: Tensor,
    /// Implicit rewards of the chosen sequences, `β·(logπ − logπ_ref)`, detached, `[N]`.
    pub chosen_reward: Tensor,
    /// Implicit rewards of the rejected sequences, detached, `[N]`.
    pub rejected_reward: Tensor,
    /// Fraction of pairs with `chosen_reward > rejected_reward` (strict), detached scalar.
    pub accuracy: Tensor,
}

/// Sigmoid DPO loss (Rafailov et al. 2023) over `N` preference pairs of sequence log-probs (sums
/// over the agent tokens, see [`sequence_logp_sum`]; ETO's `dpo_trainer`):
/// `z = β·[(logπ(y_w) − logπ_ref(y_w)) − (logπ(y_l) − logπ_ref(y_l))]`,
/// `ℓ = −(1 − s)·log σ(z) − s·log σ(−z)` with label smoothing `s` (0 = plain DPO; conservative
/// DPO otherwise, as in TRL), averaged over the pairs.
pub fn dpo_loss(
    chosen_logp_sum: &Tensor,
    rejected_logp_sum: &Tensor,
    chosen_ref_sum: &Tensor,
    rejected_ref_sum: &Tensor,
    beta: f64,
    label_smoothing: f64,
) -> DpoLoss {
    let kind = compute_kind(chosen_logp_sum);
    let chosen = chosen_logp_sum.to_kind(kind) - chosen_ref_sum.to_kind(kind);
    let rejected = rejected_logp_sum.to_kind(kind) - rejected_ref_sum.to_kind(kind);
    let z = (&chosen - &rejected) * beta;
    let per_pair = -(z.log_sigmoid() * (1.0 - label_smoothing) + (-&z).log_sigmoid() * label_smoothing);
    let loss = per_pair.mean(kind);
    let chosen_reward = (chosen * beta).detach();
    let rejected_reward = (rejected * beta).detach();
    let accuracy = chosen_reward.gt_tensor(&rejected_reward).to_kind(kind).mean(kind);
    DpoLoss { loss, chosen_reward, rejected_reward, accuracy }
}

/// Sequence log-prob: the masked sum over each row of `logp` `[B, T]` → `[B]` (NaN-safe; 0 for a
/// fully masked row). DPO/ETO's `logπ(y|x)` over the agent tokens.
pub fn sequence_logp_sum(logp: &Tensor, mask: &Tensor) -> Tensor {
    let kind = compute_kind(logp);
    let (m, off) = mask_parts(mask, kind);
    (clean(logp, &off, kind) * m).sum_dim_intlist(-1, false, kind)
}

/// Negative log-likelihood `−logp` reduced with `r`: SFT / behaviour cloning (ETO masks
/// observations, use `TokenMean`), and RetroAct's IL regulariser (no observation masking in its
/// code, `AllPositionsMean`).
pub fn nll_loss(logp: &Tensor, mask: &Tensor, r: Reduction) -> Tensor {
    let kind = compute_kind(logp);
    let (m, off) = mask_parts(mask, kind);
    reduce(&-clean(logp, &off, kind), &m, r)
}

/// RetroAct's off-policy policy gradient with a clipped, detached importance weight
/// (RetroAct `LlamaForPolicyLM.forward`, `clip_advantage = False`; veRL's CISPO has the same shape):
/// `w = clip(exp(logp − logp_beh), 1 − ε, 1 + ε)` under no-grad, `ℓ = −w·R·logp`, reduced with `r`
/// (RetroAct: [`Reduction::AllPositionsMean`], ε = 0.3). `reward_per_token` is the sequence reward
/// `R` broadcast to `[B, T]`.
///
/// This is not PPO clipping: the gradient `−w·R·∇logp` never vanishes outside the trust region.
pub fn clipped_is_pg_loss(
    logp: &Tensor,
    logp_beh: &Tensor,
    reward_per_token: &Tensor,
    mask: &Tensor,
    eps: f64,
    r: Reduction,
) -> Tensor {
    let kind = compute_kind(logp);
    let (m, off) = mask_parts(mask, kind);
    let logp = clean(logp, &off, kind);
    let logp_beh = clean(logp_beh, &off, kind);
    let reward = clean(reward_per_token, &off, kind);
    let w = (logp.detach() - &logp_beh).exp().clamp(1.0 - eps, 1.0 + eps).detach();
    reduce(&-(w * reward * &logp), &m, r)
}

/// Binary cross-entropy on logits, mean over `[N]` (the GAIL/AIRL discriminator; libtorch's stable
/// `binary_cross_entropy_with_logits`): `ℓ = max(x, 0) − x·y + log(1 + exp(−|x|))`.
pub fn bce_with_logits(logits: &Tensor, labels: &Tensor) -> Tensor {
    let kind = compute_kind(logits);
    logits.to_kind(kind).binary_cross_entropy_with_logits::<Tensor>(
        &labels.to_kind(kind),
        None,
        None,
        tch::Reduction::Mean,
    )
}

#[cfg(test)]
mod tests {
    //! Golden values are worked out by hand in the comments; tensors are f64 so the comparisons can
    //! be tight. `E` below is [`MASK_EPS`] (1e-8) where a masked mean's denominator carries it.
    use super::*;

    const NAN: f64 = f64::NAN;
    const INF: f64 = f64::INFINITY;
    const E: f64 = MASK_EPS;

    fn t(rows: &[&[f64]]) -> Tensor {
        let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_slice(&flat).view([rows.len() as i64, rows[0].len() as i64])
    }

    fn leaf(rows: &[&[f64]]) -> Tensor {
        t(rows).set_requires_grad(true)
    }

    fn s(x: &Tensor) -> f64 {
        x.double_value(&[])
    }

    fn vals(x: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(x.to_kind(Kind::Double).flatten(0, -1)).unwrap()
    }

    fn close(got: f64, want: f64) {
        assert!((got - want).abs() <= 1e-12 * (1.0 + want.abs()), "got {got}, want {want}");
    }

    fn close_all(got: &Tensor, want: &[f64]) {
        let got = vals(got);
        assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-12 * (1.0 + w.abs()), "got {got:?}, want {want:?}");
        }
    }

    fn grad_of(x: &Tensor) -> Tensor {
        x.grad()
    }

    // Shared reduction input: NaN/inf only at masked positions, row 1 fully masked.
    // Unmasked values: row 0 → 1, 3; row 2 → 9, 10, 11, 12. Σ = 46 over 6 tokens, B·T = 12.
    fn reduction_input() -> (Tensor, Tensor) {
        let loss = leaf(&[&[1.0, NAN, 3.0, INF], &[INF, NAN, 7.0, 8.0], &[9.0, 10.0, 11.0, 12.0]]);
        let mask = t(&[&[1.0, 0.0, 1.0, 0.0], &[0.0, 0.0, 0.0, 0.0], &[1.0, 1.0, 1.0, 1.0]]);
        (loss, mask)
    }

    #[test]
    fn reduce_each_mode_same_input() {
        let (loss, mask) = reduction_input();
        // TokenMean: 46 / 6 ≈ 7.6667.
        close(s(&reduce(&loss, &mask, Reduction::TokenMean)), 46.0 / (6.0 + E));
        // SeqMeanTokenMean: row means 4/2 = 2 and 42/4 = 10.5; the empty row is skipped:
        // (2 + 10.5) / 2 = 6.25.
        close(s(&reduce(&loss, &mask, Reduction::SeqMeanTokenMean)), (4.0 / (2.0 + E) + 42.0 / (4.0 + E)) / 2.0);
        // SeqMeanTokenSum: row sums 4 and 42 → 46 / 2 = 23.
        close(s(&reduce(&loss, &mask, Reduction::SeqMeanTokenSum)), 23.0);
        // Sum: 46.
        close(s(&reduce(&loss, &mask, Reduction::Sum)), 46.0);
        // AllPositionsMean (RetroAct): 46 / (3·4) ≈ 3.8333.
        close(s(&reduce(&loss, &mask, Reduction::AllPositionsMean)), 46.0 / 12.0);
    }

    #[test]
    fn reduce_gradients_are_finite_and_zero_where_masked() {
        // d/dℓ of TokenMean = m / 6; of SeqMeanTokenMean = m / (2·n_row): 1/4 on row 0, 1/8 on row 2.
        let (loss, mask) = reduction_input();
        reduce(&loss, &mask, Reduction::TokenMean).backward();
        let g = 1.0 / (6.0 + E);
        close_all(&grad_of(&loss), &[g, 0.0, g, 0.0, 0.0, 0.0, 0.0, 0.0, g, g, g, g]);

        let (loss, mask) = reduction_input();
        reduce(&loss, &mask, Reduction::SeqMeanTokenMean).backward();
        let (a, b) = (1.0 / (2.0 * (2.0 + E)), 1.0 / (2.0 * (4.0 + E)));
        close_all(&grad_of(&loss), &[a, 0.0, a, 0.0, 0.0, 0.0, 0.0, 0.0, b, b, b, b]);
    }

    #[test]
    fn reduce_fully_masked_batch_is_zero() {
        let loss = leaf(&[&[NAN, 1.0], &[INF, -INF]]);
        let mask = t(&[&[0.0, 0.0], &[0.0, 0.0]]);
        for r in [
            Reduction::TokenMean,
            Reduction::SeqMeanTokenMean,
            Reduction::SeqMeanTokenSum,
            Reduction::Sum,
            Reduction::AllPositionsMean,
        ] {
            let l = reduce(&loss, &mask, r);
            assert_eq!(s(&l), 0.0, "{r}");
            l.backward();
            close_all(&grad_of(&loss), &[0.0; 4]);
            let _ = loss.grad().zero_();
        }
    }

    #[test]
    fn reduction_names_round_trip() {
        for r in [
            Reduction::TokenMean,
            Reduction::SeqMeanTokenMean,
            Reduction::SeqMeanTokenSum,
            Reduction::Sum,
            Reduction::AllPositionsMean,
        ] {
            assert_eq!(r.as_str().parse::<Reduction>(), Ok(r));
        }
        assert_eq!("seq_mean_token_mean".parse::<Reduction>(), Ok(Reduction::SeqMeanTokenMean));
        assert!("mean".parse::<Reduction>().is_err());
        assert_eq!("low_var_kl".parse::<KlEstimator>(), Ok(KlEstimator::K3));
    }

    /// Builds (logp, logp_old) with logp − logp_old = ln ρ per token; logp_old = −1.
    fn ratio_inputs(rhos: &[f64]) -> (Tensor, Tensor) {
        let logp: Vec<f64> = rhos.iter().map(|r| -1.0 + r.ln()).collect();
        (leaf(&[&logp]), t(&[&vec![-1.0; rhos.len()]]))
    }

    #[test]
    fn ppo_standard_golden() {
        // ε = 0.2, clip range [0.8, 1.2]. ℓ1 = −ρA, ℓ2 = −clip(ρ)A, ℓ = max(ℓ1, ℓ2).
        // t0: ρ 1.5, A  1  → ℓ1 −1.5, ℓ2 −1.2 → −1.2 (clipped)
        // t1: ρ 0.5, A  1  → ℓ1 −0.5, ℓ2 −0.8 → −0.5
        // t2: ρ 0.5, A −2  → ℓ1  1.0, ℓ2  1.6 →  1.6 (clipped)
        // t3: ρ 1.1, A −2  → ℓ1  2.2, ℓ2  2.2 →  2.2 (tie: not counted as clipped)
        // t4: masked, logp/A NaN
        // t5: ρ 1.0, A 0.5 → −0.5
        // Σ = −1.2 − 0.5 + 1.6 + 2.2 − 0.5 = 1.6 over 5 tokens.
        let (logp, logp_old) = ratio_inputs(&[1.5, 0.5, 0.5, 1.1, NAN, 1.0]);
        assert!(logp.double_value(&[0, 4]).is_nan());
        let adv = t(&[&[1.0, 1.0, -2.0, -2.0, NAN, 0.5]]);
        let mask = t(&[&[1.0, 1.0, 1.0, 1.0, 0.0, 1.0]]);
        let c = PpoClip::symmetric(0.2);
        let out = ppo_policy_loss(&logp, &logp_old, &adv, &mask, &c, Reduction::TokenMean);
        close(s(&out.loss), 1.6 / (5.0 + E));
        close(s(&out.clip_frac), 2.0 / (5.0 + E));
        close(s(&out.dual_clip_frac), 0.0);
        // ratio mean = (1.5 + 0.5 + 0.5 + 1.1 + 1.0) / 5 = 0.92.
        close(s(&out.ratio_mean), 4.6 / (5.0 + E));
        // k3 = Σ (ρ − 1 − ln ρ) / 5 = (0.0945349 + 2·0.1931472 + 0.0046898 + 0) / 5.
        let k3 = (0.5 - 1.5f64.ln()) + 2.0 * (-0.5 - 0.5f64.ln()) + (0.1 - 1.1f64.ln());
        close(s(&out.approx_kl_k3), k3 / (5.0 + E));
        assert!(!out.approx_kl_k3.requires_grad() && !out.clip_frac.requires_grad());

        // Sum reduction: dℓ/dlogp = −Aρ where ℓ1 is chosen, 0 where clipped or masked:
        // [0, −0.5, 0, 2.2, 0, −0.5].
        let out = ppo_policy_loss(&logp, &logp_old, &adv, &mask, &c, Reduction::Sum);
        close(s(&out.loss), 1.6);
        out.loss.backward();
        close_all(&grad_of(&logp), &[0.0, -0.5, 0.0, 2.2, 0.0, -0.5]);
    }

    #[test]
    fn ppo_gradient_zero_when_clipped_above_with_positive_advantage() {
        // ρ = 1.5 > 1 + ε = 1.2, A = 3 > 0: ℓ = −1.2·3 = −3.6, a constant in logp.
        let (logp, logp_old) = ratio_inputs(&[1.5]);
        let out = ppo_policy_loss(&logp, &logp_old, &t(&[&[3.0]]), &t(&[&[1.0]]), &PpoClip::default(), Reduction::Sum);
        close(s(&out.loss), -3.6);
        out.loss.backward();
        close_all(&grad_of(&logp), &[0.0]);
    }

    #[test]
    fn ppo_clip_boundaries_exactly_at_one_plus_minus_eps() {
        // ρ_hi = exp(0.2), ρ_lo = exp(−0.2) as libtorch computes them; ε_high = ρ_hi − 1 and
        // ε_low = 1 − ρ_lo are exact (Sterbenz), so 1 ± ε hit the ratios bit for bit.
        // t0: ρ_hi, A = 1  → ℓ1 = ℓ2 = −ρ_hi, not clipped (strict).
        // t1: ρ_lo, A = −1 → ℓ1 = ℓ2 = ρ_lo, not clipped.
        // t2: ρ = e^0.25 > 1 + ε, A = 1 → ℓ2 = −ρ_hi, clipped.
        let logp = leaf(&[&[0.2, -0.2, 0.25]]);
        let logp_old = t(&[&[0.0, 0.0, 0.0]]);
        let rho = vals(&(&logp - &logp_old).detach().exp());
        let c = PpoClip { eps_low: 1.0 - rho[1], eps_high: rho[0] - 1.0, dual_clip: None, loop_lower_bound: false };
        assert_eq!(1.0 + c.eps_high, rho[0]);
        assert_eq!(1.0 - c.eps_low, rho[1]);
        let adv = t(&[&[1.0, -1.0, 1.0]]);
        let mask = t(&[&[1.0, 1.0, 1.0]]);
        let out = ppo_policy_loss(&logp, &logp_old, &adv, &mask, &c, Reduction::Sum);
        close(s(&out.loss), -rho[0] + rho[1] - rho[0]);
        close(s(&out.clip_frac), 1.0 / (3.0 + E));
        // At the tie the gradient is the unclipped one, −Aρ (max splits it half/half between
        // ℓ1 and ℓ2, and clamp passes it at its inclusive bounds); the clipped token gets 0.
        out.loss.backward();
        close_all(&grad_of(&logp), &[-rho[0], rho[1], 0.0]);
    }

    #[test]
    fn ppo_loop_bound_vs_standard() {
        // ε = 0.1. Standard range [0.9, 1.1]; LOOP's g(A) = 1.1·A (A ≥ 0), A/1.1 (A < 0), i.e. a
        // lower bound of 1/1.1 ≈ 0.90909.
        //            standard                       LOOP −min(ρA, g(A))
        // t0 ρ 0.85,  A −1: max(0.85, 0.9) = 0.9 c    max(0.85, 0.90909) = 0.90909 c
        // t1 ρ 0.905, A −1: 0.905 (inside)            0.90909 c
        // t2 ρ 1.2,   A  2: max(−2.4, −2.2) = −2.2 c  −min(2.4, 2.2) = −2.2 c
        // t3 ρ 0.95,  A −1: 0.95                      0.95
        // Σ standard = 0.9 + 0.905 − 2.2 + 0.95 = 0.555, clip 2/4.
        // Σ LOOP = 2/1.1 − 2.2 + 0.95 ≈ 0.568182, clip 3/4.
        let (logp, logp_old) = ratio_inputs(&[0.85, 0.905, 1.2, 0.95]);
        let adv = t(&[&[-1.0, -1.0, 2.0, -1.0]]);
        let mask = t(&[&[1.0; 4]]);
        let std = ppo_policy_loss(&logp, &logp_old, &adv, &mask, &PpoClip::symmetric(0.1), Reduction::Sum);
        close(s(&std.loss), 0.555);
        close(s(&std.clip_frac), 2.0 / (4.0 + E));
        let lp = PpoClip::loop_(0.1);
        let lo = ppo_policy_loss(&logp, &logp_old, &adv, &mask, &lp, Reduction::Sum);
        close(s(&lo.loss), 2.0 / 1.1 - 2.2 + 0.95);
        close(s(&lo.clip_frac), 3.0 / (4.0 + E));
        // eps_low is ignored under LOOP's bound.
        let lp_low = PpoClip { eps_low: 0.5, ..lp };
        close(s(&ppo_policy_loss(&logp, &logp_old, &adv, &mask, &lp_low, Reduction::Sum).loss), s(&lo.loss));
        // LOOP's form equals standard clipping with 1 − ε_low = 1/(1 + ε).
        let eq = PpoClip { eps_low: 1.0 - 1.0 / 1.1, ..PpoClip::symmetric(0.1) };
        close(s(&ppo_policy_loss(&logp, &logp_old, &adv, &mask, &eq, Reduction::Sum).loss), s(&lo.loss));

        // LOOP's reduction: token mean per trajectory, then mean over the minibatch. Row 1 keeps
        // only t3 (0.95): ((2/1.1 − 2.2 + 0.95)/4 + 0.95/1) / 2.
        let (logp2, logp_old2) = ratio_inputs(&[0.85, 0.905, 1.2, 0.95, 1.0, 1.0, 1.0, 0.95]);
        let logp2 = logp2.detach().view([2, 4]);
        let logp_old2 = logp_old2.view([2, 4]);
        let adv2 = t(&[&[-1.0, -1.0, 2.0, -1.0], &[NAN, 7.0, -7.0, -1.0]]);
        let mask2 = t(&[&[1.0; 4], &[0.0, 0.0, 0.0, 1.0]]);
        let out = ppo_policy_loss(&logp2, &logp_old2, &adv2, &mask2, &lp, Reduction::SeqMeanTokenMean);
        close(s(&out.loss), ((2.0 / 1.1 - 2.2 + 0.95) / (4.0 + E) + 0.95 / (1.0 + E)) / 2.0);
    }

    #[test]
    fn ppo_dual_clip_for_negative_advantage() {
        // ε = 0.2, c = 3.
        // t0: ρ 5, A −1: max(5, 1.2) = 5 → min(5, 3) = 3 (dual active, zero gradient)
        // t1: ρ 5, A  1: max(−5, −1.2) = −1.2 (A > 0: no dual clip; clipped)
        // t2: ρ 2, A −1: max(2, 1.2) = 2 → min(2, 3) = 2 (gradient −Aρ = 2)
        // Σ without dual clip: 5 − 1.2 + 2 = 5.8; with: 3 − 1.2 + 2 = 3.8.
        let (logp, logp_old) = ratio_inputs(&[5.0, 5.0, 2.0]);
        let adv = t(&[&[-1.0, 1.0, -1.0]]);
        let mask = t(&[&[1.0; 3]]);
        let plain = ppo_policy_loss(&logp, &logp_old, &adv, &mask, &PpoClip::default(), Reduction::Sum);
        close(s(&plain.loss), 5.8);
        let c = PpoClip { dual_clip: Some(3.0), ..PpoClip::default() };
        assert!(c.validate().is_ok());
        assert!(PpoClip { dual_clip: Some(0.5), ..c }.validate().is_err());
        let out = ppo_policy_loss(&logp, &logp_old, &adv, &mask, &c, Reduction::Sum);
        close(s(&out.loss), 3.8);
        close(s(&out.clip_frac), 1.0 / (3.0 + E));
        close(s(&out.dual_clip_frac), 1.0 / (3.0 + E));
        out.loss.backward();
        close_all(&grad_of(&logp), &[0.0, 0.0, 2.0]);
    }

    #[test]
    fn ppo_log_ratio_is_clamped_at_20() {
        // logp − logp_old = 30 → ρ = e^20; A = −1 without dual clip: ℓ = max(e^20, 1.2) = e^20.
        // k3 = e^20 − 1 − 20.
        let out = ppo_policy_loss(
            &t(&[&[0.0]]),
            &t(&[&[-30.0]]),
            &t(&[&[-1.0]]),
            &t(&[&[1.0]]),
            &PpoClip::default(),
            Reduction::Sum,
        );
        close(s(&out.loss), 20f64.exp());
        close(s(&out.approx_kl_k3), (20f64.exp() - 21.0) / (1.0 + E));
    }

    #[test]
    fn ppo_fully_masked_is_zero_and_finite() {
        let logp = leaf(&[&[NAN, INF], &[-INF, 0.0]]);
        let nan = t(&[&[NAN, NAN], &[NAN, NAN]]);
        let mask = t(&[&[0.0, 0.0], &[0.0, 0.0]]);
        let c = PpoClip { dual_clip: Some(3.0), ..PpoClip::default() };
        let out = ppo_policy_loss(&logp, &nan, &nan, &mask, &c, Reduction::SeqMeanTokenMean);
        for x in [&out.loss, &out.clip_frac, &out.dual_clip_frac, &out.approx_kl_k3, &out.ratio_mean] {
            assert_eq!(s(x), 0.0);
        }
        out.loss.backward();
        close_all(&grad_of(&logp), &[0.0; 4]);
    }

    #[test]
    fn ppo_f32_matches_f64() {
        let (logp, logp_old) = ratio_inputs(&[1.5, 0.5, 0.5, 1.1]);
        let adv = t(&[&[1.0, 1.0, -2.0, -2.0]]);
        let mask = t(&[&[1.0, 0.0, 1.0, 1.0]]);
        let c = PpoClip::default();
        let f64_loss = s(&ppo_policy_loss(&logp, &logp_old, &adv, &mask, &c, Reduction::TokenMean).loss);
        let f = |x: &Tensor| x.to_kind(Kind::Float);
        let out = ppo_policy_loss(&f(&logp), &f(&logp_old), &f(&adv), &f(&mask), &c, Reduction::TokenMean);
        assert_eq!(out.loss.kind(), Kind::Float);
        assert!((s(&out.loss) - f64_loss).abs() < 1e-6);
        // bf16 log-probs are computed in f32.
        let b = |x: &Tensor| x.to_kind(Kind::BFloat16);
        let out = ppo_policy_loss(&b(&logp), &logp_old, &adv, &b(&mask), &c, Reduction::TokenMean);
        assert_eq!(out.loss.kind(), Kind::Float);
    }

    #[test]
    fn value_loss_golden() {
        // ε = 0.2. V_clip = V_old + clamp(V − V_old, ±0.2).
        //      V_old V    R   (V−R)²  V_clip (V_clip−R)²  max
        // t0:  0    0.5  1    0.25    0.2    0.64         0.64  (clipped branch)
        // t1:  0    0.1  0    0.01    0.1    0.01         0.01  (tie)
        // t2:  1    0.5  0    0.25    0.8    0.64         0.64  (clipped branch)
        // t3:  masked, NaN everywhere
        // t4:  0    0.5  0    0.25    0.2    0.04         0.25  (unclipped branch)
        // Σmax = 1.54 → ½·1.54/4 = 0.1925. Unclipped: Σ = 0.76 → ½·0.76/4 = 0.095.
        let v_new = leaf(&[&[0.5, 0.1, 0.5, NAN, 0.5], &[NAN; 5]]);
        let v_old = t(&[&[0.0, 0.0, 1.0, NAN, 0.0], &[NAN; 5]]);
        let ret = t(&[&[1.0, 0.0, 0.0, NAN, 0.0], &[NAN; 5]]);
        let mask = t(&[&[1.0, 1.0, 1.0, 0.0, 1.0], &[0.0; 5]]);
        close(s(&value_loss(&v_new, &v_old, &ret, &mask, Some(0.2), Reduction::TokenMean)), 0.5 * 1.54 / (4.0 + E));
        close(s(&value_loss(&v_new, &v_old, &ret, &mask, None, Reduction::TokenMean)), 0.5 * 0.76 / (4.0 + E));
        // Gradient (Sum): ½·d/dV = (V − R) where the chosen branch depends on V; 0 on t0 and t2
        // (clipped branch is constant in V); t1 tie: (0.1 − 0) split ½/½ between equal branches.
        let l = value_loss(&v_new, &v_old, &ret, &mask, Some(0.2), Reduction::Sum);
        close(s(&l), 0.5 * 1.54);
        l.backward();
        close_all(&grad_of(&v_new), &[0.0, 0.1, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn entropy_golden() {
        // pos0: uniform over 3 → ln 3. pos1: [0, ln 3, −∞] → p = [¼, ¾, 0],
        // H = −(¼ ln ¼ + ¾ ln ¾) = ln 4 − ¾ ln 3 ≈ 0.562335. pos2: [5, 5, 5] → ln 3.
        let logits = Tensor::from_slice(&[0.0, 0.0, 0.0, 0.0, 3f64.ln(), -INF, 5.0, 5.0, 5.0])
            .view([1, 3, 3])
            .set_requires_grad(true);
        let h = entropy_from_logits(&logits);
        assert_eq!(h.size(), vec![1, 3]);
        let h1 = 4f64.ln() - 0.75 * 3f64.ln();
        close_all(&h, &[3f64.ln(), h1, 3f64.ln()]);
        // dH/dz_i = −p_i (ln p_i + H): 0 at the uniform rows and for the −∞ logit.
        h.sum(Kind::Double).backward();
        let g1 = [-0.25 * (0.25f64.ln() + h1), -0.75 * (0.75f64.ln() + h1), 0.0];
        close_all(&grad_of(&logits), &[0.0, 0.0, 0.0, g1[0], g1[1], g1[2], 0.0, 0.0, 0.0]);
        // bf16 logits are computed (and returned) in f32.
        let hb = entropy_from_logits(&logits.detach().to_kind(Kind::BFloat16));
        assert_eq!(hb.kind(), Kind::Float);
        assert!((hb.double_value(&[0, 0]) - 3f64.ln()).abs() < 1e-6);
        // Bonus: tokens 0 and 2 → (ln 3 + ln 3) / 2.
        let mask = t(&[&[1.0, 0.0, 1.0]]);
        close(s(&entropy_bonus(&h, &mask, Reduction::TokenMean)), 2.0 * 3f64.ln() / (2.0 + E));
    }

    #[test]
    fn kl_estimators_golden() {
        // logp = [−1, −2, NaN (masked), −0.5], ref = [−1.5, −1, NaN, −0.5].
        // k1 = logp − ref = [0.5, −1, ·, 0] → −0.5/3.
        // k2 = ½(logp − ref)² = [0.125, 0.5, ·, 0] → 0.625/3.
        // k3: d = ref − logp = [−0.5, 1, ·, 0], e^d − d − 1 = [e^−0.5 − 0.5, e − 2, ·, 0]
        //     ≈ [0.1065307, 0.7182818, ·, 0].
        let logp = t(&[&[-1.0, -2.0, NAN, -0.5]]);
        let lref = t(&[&[-1.5, -1.0, NAN, -0.5]]);
        let mask = t(&[&[1.0, 1.0, 0.0, 1.0]]);
        let kl = |e| s(&kl_loss(&logp, &lref, &mask, e, Reduction::TokenMean));
        close(kl(KlEstimator::K1), -0.5 / (3.0 + E));
        close(kl(KlEstimator::K2), 0.625 / (3.0 + E));
        close(kl(KlEstimator::K3), ((-0.5f64).exp() - 0.5 + 1f64.exp() - 2.0) / (3.0 + E));
    }

    #[test]
    fn kl_k3_clamps() {
        // d = ref − logp = 30 → clamp 20 → e^20 − 21 ≫ 10 → 10;
        // d = −30 → −20 → e^−20 + 19 → 10; d = 2 → e² − 3 ≈ 4.389 (inside).
        // Σ = 20 + e² − 3. Gradient: 0 on the clamped tokens, d/dlogp (e^d − d − 1) = 1 − e^d at d = 2.
        let logp = leaf(&[&[0.0, 0.0, 0.0]]);
        let lref = t(&[&[30.0, -30.0, 2.0]]);
        let l = kl_loss(&logp, &lref, &t(&[&[1.0; 3]]), KlEstimator::K3, Reduction::Sum);
        close(s(&l), 20.0 + 2f64.exp() - 3.0);
        l.backward();
        close_all(&grad_of(&logp), &[0.0, 0.0, 1.0 - 2f64.exp()]);
    }

    #[test]
    fn dpo_golden() {
        // β = 0.5.
        // pair 0: chosen −1 vs ref −2 → +1; rejected −3 vs ref −2 → −1; z = 0.5·(1 − (−1)) = 1.
        // pair 1: chosen −2 vs ref −1.5 → −0.5; rejected −1 vs ref −1.5 → +0.5; z = 0.5·(−1) = −0.5.
        // rewards: chosen [0.5, −0.25], rejected [−0.5, 0.25]; accuracy 1/2.
        // loss = mean(softplus(−z)) = (ln(1 + e^−1) + ln(1 + e^0.5)) / 2 ≈ (0.3132617 + 0.9740770)/2.
        let sp = |x: f64| (1.0 + x.exp()).ln();
        let chosen = Tensor::from_slice(&[-1.0, -2.0]).set_requires_grad(true);
        let rejected = Tensor::from_slice(&[-3.0, -1.0]);
        let (cref, rref) = (Tensor::from_slice(&[-2.0, -1.5]), Tensor::from_slice(&[-2.0, -1.5]));
        let out = dpo_loss(&chosen, &rejected, &cref, &rref, 0.5, 0.0);
        close(s(&out.loss), (sp(-1.0) + sp(0.5)) / 2.0);
        close_all(&out.chosen_reward, &[0.5, -0.25]);
        close_all(&out.rejected_reward, &[-0.5, 0.25]);
        close(s(&out.accuracy), 0.5);
        assert!(!out.chosen_reward.requires_grad());
        // dL/dchosen_i = −(β/N)·σ(−z_i) = −0.25·σ(−1), −0.25·σ(0.5).
        out.loss.backward();
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        close_all(&grad_of(&chosen), &[-0.25 * sig(-1.0), -0.25 * sig(0.5)]);
        // Label smoothing 0.1: per pair 0.9·softplus(−z) + 0.1·softplus(z).
        let out = dpo_loss(&chosen, &rejected, &cref, &rref, 0.5, 0.1);
        let want = (0.9 * sp(-1.0) + 0.1 * sp(1.0) + 0.9 * sp(0.5) + 0.1 * sp(-0.5)) / 2.0;
        close(s(&out.loss), want);
    }

    #[test]
    fn sequence_logp_sum_golden() {
        // Row 0: −1 + −2 = −3 (NaN masked); row 1 fully masked → 0.
        let logp = t(&[&[-1.0, NAN, -2.0], &[NAN, NAN, NAN]]);
        let mask = t(&[&[1.0, 0.0, 1.0], &[0.0, 0.0, 0.0]]);
        close_all(&sequence_logp_sum(&logp, &mask), &[-3.0, 0.0]);
    }

    #[test]
    fn nll_golden() {
        // Unmasked logp: −1, −3, −0.5 → NLL Σ = 4.5 over 3 tokens; 8 positions in all.
        let logp = leaf(&[&[-1.0, NAN, -3.0, -0.5], &[NAN; 4]]);
        let mask = t(&[&[1.0, 0.0, 1.0, 1.0], &[0.0; 4]]);
        close(s(&nll_loss(&logp, &mask, Reduction::TokenMean)), 4.5 / (3.0 + E));
        close(s(&nll_loss(&logp, &mask, Reduction::SeqMeanTokenMean)), 4.5 / (3.0 + E));
        // RetroAct: 4.5 / 8.
        let l = nll_loss(&logp, &mask, Reduction::AllPositionsMean);
        close(s(&l), 4.5 / 8.0);
        l.backward();
        let g = -1.0 / 8.0;
        close_all(&grad_of(&logp), &[g, 0.0, g, g, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn clipped_is_pg_golden_and_gradient() {
        // ε = 0.3, R = 2. ρ = [2, 0.5, 1.1] → w = clip(ρ, 0.7, 1.3) = [1.3, 0.7, 1.1]; t3 masked.
        // logp = [−1, −2, −0.5]: ℓ = −w·R·logp = [2.6, 2.8, 1.1] → Σ = 6.5.
        // Gradient = −w·R = [−2.6, −1.4, −2.2, 0], nonzero even where ρ is outside [0.7, 1.3].
        let logp = leaf(&[&[-1.0, -2.0, -0.5, NAN]]);
        let logp_beh = t(&[&[-1.0 - 2f64.ln(), -2.0 - 0.5f64.ln(), -0.5 - 1.1f64.ln(), NAN]]);
        let reward = t(&[&[2.0, 2.0, 2.0, NAN]]);
        let mask = t(&[&[1.0, 1.0, 1.0, 0.0]]);
        let l = clipped_is_pg_loss(&logp, &logp_beh, &reward, &mask, 0.3, Reduction::Sum);
        close(s(&l), 6.5);
        l.backward();
        close_all(&grad_of(&logp), &[-2.6, -1.4, -2.2, 0.0]);
        // RetroAct's reduction: mean over all 4 positions → 6.5/4, gradient /4.
        let _ = logp.grad().zero_();
        let l = clipped_is_pg_loss(&logp, &logp_beh, &reward, &mask, 0.3, Reduction::AllPositionsMean);
        close(s(&l), 6.5 / 4.0);
        l.backward();
        close_all(&grad_of(&logp), &[-0.65, -0.35, -0.55, 0.0]);
    }

    #[test]
    fn bce_golden() {
        // x = [0, 2, −1], y = [1, 0, 1]: ℓ = [ln 2, ln(1 + e²), ln(1 + e)] ≈ [0.693147, 2.126928, 1.313262].
        let l = bce_with_logits(&Tensor::from_slice(&[0.0, 2.0, -1.0]), &Tensor::from_slice(&[1.0, 0.0, 1.0]));
        close(s(&l), (2f64.ln() + (1.0 + 2f64.exp()).ln() + (1.0 + 1f64.exp()).ln()) / 3.0);
    }
}
