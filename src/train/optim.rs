//! The optimiser and its guards. AdamW is implemented here over tensors we own (PyTorch's
//! `torch.optim.AdamW` update, decoupled weight decay), so its state can be checkpointed and a run
//! resumed bit-exactly. Around it: learning-rate schedules with warm-up (constant, linear, cosine),
//! gradient accumulation, global gradient-norm clipping, and the guards the algorithms use:
//! NaN/inf loss skipping with a limit (LOOP aborts after 20), skipping a minibatch whose KL estimate
//! exceeds a threshold (POAD's 0.02 KL-skip), and a stop signal for LOOP's KL-stop.

use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// Learning-rate schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// The base rate.
    Constant,
    /// Linear decay to 0 at `total_steps`.
    Linear,
    /// Cosine decay to 0 at `total_steps`.
    Cosine,
}

/// Optimiser settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OptimConfig {
    /// Base learning rate.
    pub lr: f64,
    /// Adam β1, β2.
    pub betas: (f64, f64),
    /// Adam ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (None = no clipping).
    pub max_grad_norm: Option<f64>,
    /// Schedule after warm-up.
    pub schedule: Schedule,
    /// Linear warm-up steps (from 0 to `lr`).
    pub warmup_steps: u64,
    /// Steps over which the schedule decays.
    pub total_steps: u64,
    /// Micro-batches whose gradients are summed before one update.
    pub grad_accum: u64,
    /// Abort after this many skipped non-finite losses.
    pub nan_skip_limit: u64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: 1e-5,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: Some(1.0),
            schedule: Schedule::Constant,
            warmup_steps: 0,
            total_steps: 1,
            grad_accum: 1,
            nan_skip_limit: 20,
        }
    }
}

/// The learning rate at update `step` (0-based).
pub fn lr_at(cfg: &OptimConfig, step: u64) -> f64 {
    if step < cfg.warmup_steps {
        return cfg.lr * (step + 1) as f64 / cfg.warmup_steps as f64;
    }
    let span = cfg.total_steps.saturating_sub(cfg.warmup_steps).max(1) as f64;
    let progress = ((step - cfg.warmup_steps) as f64 / span).min(1.0);
    match cfg.schedule {
        Schedule::Constant => cfg.lr,
        Schedule::Linear => cfg.lr * (1.0 - progress),
        Schedule::Cosine => cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

/// What one call to [`AdamW::backward`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Gradients accumulated; no update yet.
    Accumulated,
    /// Parameters updated (with the gradient norm before clipping).
    Stepped {
        /// Global gradient norm before clipping.
        grad_norm: f64,
    },
    /// The loss was NaN or infinite: nothing accumulated.
    SkippedNonFinite,
    /// The caller's KL estimate exceeded the threshold: this micro-batch's gradients were dropped.
    SkippedKl,
}

/// AdamW over a fixed list of named parameters.
pub struct AdamW {
    /// The settings.
    pub cfg: OptimConfig,
    params: Vec<(String, Tensor)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Updates done so far.
    pub step: u64,
    micro: u64,
    /// A micro-batch of the update being accumulated had a non-finite loss: the update is dropped.
    poisoned: bool,
    /// Non-finite losses skipped so far.
    pub nan_skips: u64,
}

impl AdamW {
    /// An optimiser for `params` (e.g. `var_store.variables()` of the trainable parts).
    pub fn new(mut params: Vec<(String, Tensor)>, cfg: OptimConfig) -> AdamW {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let m = params.iter().map(|(_, p)| p.zeros_like().to_kind(Kind::Float)).collect();
        let v = params.iter().map(|(_, p)| p.zeros_like().to_kind(Kind::Float)).collect();
        AdamW { cfg, params, m, v, step: 0, micro: 0, poisoned: false, nan_skips: 0 }
    }

    /// Back-propagates `loss` of one micro-batch and updates the parameters every `grad_accum`
    /// micro-batches. With `kl_skip = Some((kl, threshold))` and kl > threshold, the micro-batch's
    /// gradients are discarded instead (POAD).
    pub fn backward(&mut self, loss: &Tensor, kl_skip: Option<(f64, f64)>) -> Result<Outcome> {
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            self.nan_skips += 1;
            if self.nan_skips > self.cfg.nan_skip_limit {
                return Err(Error::Usage(format!(
                    "{} non-finite losses (limit {}): stopping",
                    self.nan_skips, self.cfg.nan_skip_limit
                )));
            }
            // The whole accumulated update is dropped: its earlier micro-batches' gradients must
            // not leak into the next update, and its later ones start a new accumulation of their
            // own length (the micro-batches left in this update).
            self.poisoned = true;
            self.micro += 1;
            if self.micro >= self.cfg.grad_accum {
                self.zero_grad();
            }
            return Ok(Outcome::SkippedNonFinite);
        }
        if let Some((kl, threshold)) = kl_skip {
            if kl > threshold {
                return Ok(Outcome::SkippedKl);
            }
        }
        let scaled = if self.cfg.grad_accum > 1 { loss / self.cfg.grad_accum as f64 } else { loss.shallow_clone() };
        scaled.backward();
        self.micro += 1;
        if self.micro < self.cfg.grad_accum {
            return Ok(Outcome::Accumulated);
        }
        if self.poisoned {
            self.zero_grad();
            return Ok(Outcome::SkippedNonFinite);
        }
        self.micro = 0;
        let grad_norm = self.update();
        Ok(Outcome::Stepped { grad_norm })
    }

    fn update(&mut self) -> f64 {
        tch::no_grad(|| {
            let grads: Vec<Option<Tensor>> = self
                .params
                .iter()
                .map(|(_, p)| if p.grad().defined() { Some(p.grad().to_kind(Kind::Float)) } else { None })
                .collect();
            let sq: f64 =
                grads.iter().flatten().map(|g| g.pow_tensor_scalar(2).sum(Kind::Float).double_value(&[])).sum();
            let norm = sq.sqrt();
            let clip = match self.cfg.max_grad_norm {
                Some(max) if norm > max => max / (norm + 1e-6),
                _ => 1.0,
            };
            let lr = lr_at(&self.cfg, self.step);
            self.step += 1;
            let (b1, b2) = self.cfg.betas;
            let bc1 = 1.0 - b1.powi(self.step as i32);
            let bc2 = 1.0 - b2.powi(self.step as i32);
            for (i, g) in grads.into_iter().enumerate() {
                let Some(g) = g else { continue };
                let g = if clip < 1.0 { g * clip } else { g };
                let p = &mut self.params[i].1;
                if self.cfg.weight_decay > 0.0 {
                    let _ = p.g_mul_scalar_(1.0 - lr * self.cfg.weight_decay);
                }
                let _ = self.m[i].g_mul_scalar_(b1).g_add_(&(&g * (1.0 - b1)));
                let _ = self.v[i].g_mul_scalar_(b2).g_add_(&(&g * &g * (1.0 - b2)));
                let denom = (&self.v[i] / bc2).sqrt() + self.cfg.eps;
                let update = (&self.m[i] / bc1) / denom * lr;
                let _ = p.g_sub_(&update.to_kind(p.kind()));
                let _ = p.grad().zero_();
            }
            norm
        })
    }

    /// Drops accumulated gradients.
    pub fn zero_grad(&mut self) {
        for (_, p) in &self.params {
            if p.grad().defined() {
                let _ = p.grad().zero_();
            }
        }
        self.micro = 0;
        self.poisoned = false;
    }

    /// The optimiser state as named tensors (`adamw.m.NAME`, `adamw.v.NAME`) for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.push((format!("adamw.m.{name}"), self.m[i].shallow_clone()));
            out.push((format!("adamw.v.{name}"), self.v[i].shallow_clone()));
        }
        out
    }

    /// Restores the state written by [`AdamW::state`].
    pub fn load_state(&mut self, named: &std::collections::HashMap<String, Tensor>, step: u64) -> Result<()> {
        tch::no_grad(|| {
            for (i, (name, _)) in self.params.iter().enumerate() {
                for (which, buf) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                    let key = format!("adamw.{which}.{name}");
                    let t = named
                        .get(&key)
                        .ok_or_else(|| Error::Model(format!("checkpoint has no optimiser tensor '{key}'")))?;
                    buf.copy_(t);
                }
            }
            Ok::<(), Error>(())
        })?;
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_with_warmup() {
        let cfg =
            OptimConfig { lr: 1.0, warmup_steps: 2, total_steps: 6, schedule: Schedule::Linear, ..Default::default() };
        let lrs: Vec<f64> = (0..7).map(|s| lr_at(&cfg, s)).collect();
        assert_eq!(lrs, vec![0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]);
        let cos = OptimConfig { schedule: Schedule::Cosine, ..cfg.clone() };
        assert!((lr_at(&cos, 4) - 0.5).abs() < 1e-12);
        let constant = OptimConfig { schedule: Schedule::Constant, ..cfg };
        assert_eq!(lr_at(&constant, 100), 1.0);
    }

    #[test]
    fn one_adamw_step_by_hand() {
        // p = 1, loss = 3p → g = 3. m = 0.1·3 = 0.3, v = 0.001·9 = 0.009; bias-corrected
        // m̂ = 3, v̂ = 9; update = lr·3/(3 + ε) ≈ lr. With weight decay 0.1 and lr 0.5:
        // p ← 1·(1 − 0.05) − 0.5·3/(3 + 1e-8) = 0.45.
        let p = Tensor::from_slice(&[1f64]).set_requires_grad(true);
        let cfg = OptimConfig { lr: 0.5, weight_decay: 0.1, max_grad_norm: None, ..Default::default() };
        let mut opt = AdamW::new(vec![("p".into(), p.shallow_clone())], cfg);
        let out = opt.backward(&(&p * 3.0).sum(Kind::Double), None).unwrap();
        assert_eq!(out, Outcome::Stepped { grad_norm: 3.0 });
        assert!((p.double_value(&[0]) - 0.45).abs() < 1e-8, "{}", p.double_value(&[0]));
    }

    #[test]
    fn accumulation_clipping_and_guards() {
        let p = Tensor::from_slice(&[0f64, 0.]).set_requires_grad(true);
        let cfg =
            OptimConfig { lr: 0.1, grad_accum: 2, max_grad_norm: Some(1.0), nan_skip_limit: 1, ..Default::default() };
        let mut opt = AdamW::new(vec![("p".into(), p.shallow_clone())], cfg);
        let loss = |a: f64, b: f64| (&p * Tensor::from_slice(&[a, b])).sum(Kind::Double);
        assert_eq!(opt.backward(&loss(3.0, 4.0), None).unwrap(), Outcome::Accumulated);
        // Accumulated gradient (3,4)/2 + (3,4)/2 = (3,4): norm 5, clipped to 1.
        match opt.backward(&loss(3.0, 4.0), None).unwrap() {
            Outcome::Stepped { grad_norm } => assert!((grad_norm - 5.0).abs() < 1e-9),
            other => panic!("{other:?}"),
        }
        assert_eq!(opt.step, 1);
        // KL-skip drops the micro-batch.
        assert_eq!(opt.backward(&loss(1.0, 1.0), Some((0.05, 0.02))).unwrap(), Outcome::SkippedKl);
        // Non-finite losses are skipped up to the limit, then abort.
        let nan = Tensor::from_slice(&[f64::NAN]).sum(Kind::Double);
        assert_eq!(opt.backward(&nan, None).unwrap(), Outcome::SkippedNonFinite);
        assert!(opt.backward(&nan, None).is_err());
    }

    /// A non-finite loss in the middle of an accumulated update drops that whole update: the
    /// next update's gradient is its own micro-batches' only (before the fix, the first
    /// micro-batch's gradient (100, 0) leaked into the next update).
    #[test]
    fn a_non_finite_micro_batch_drops_its_whole_update() {
        let p = Tensor::from_slice(&[0f64, 0.]).set_requires_grad(true);
        let cfg = OptimConfig { lr: 0.1, grad_accum: 3, max_grad_norm: None, ..Default::default() };
        let mut opt = AdamW::new(vec![("p".into(), p.shallow_clone())], cfg);
        let loss = |a: f64, b: f64| (&p * Tensor::from_slice(&[a, b])).sum(Kind::Double);
        let nan = Tensor::from_slice(&[f64::NAN]).sum(Kind::Double);
        assert_eq!(opt.backward(&loss(300.0, 0.0), None).unwrap(), Outcome::Accumulated);
        assert_eq!(opt.backward(&nan, None).unwrap(), Outcome::SkippedNonFinite);
        assert_eq!(opt.backward(&loss(3.0, 0.0), None).unwrap(), Outcome::SkippedNonFinite);
        assert_eq!(opt.step, 0, "the poisoned update is not applied");
        assert_eq!(Vec::<f64>::try_from(&p.grad()).unwrap(), vec![0.0, 0.0]);
        // The next update: three micro-batches of gradient (0, 3)/3 each.
        for _ in 0..2 {
            assert_eq!(opt.backward(&loss(0.0, 3.0), None).unwrap(), Outcome::Accumulated);
        }
        match opt.backward(&loss(0.0, 3.0), None).unwrap() {
            Outcome::Stepped { grad_norm } => assert!((grad_norm - 3.0).abs() < 1e-9, "{grad_norm}"),
            other => panic!("{other:?}"),
        }
        let w = Vec::<f64>::try_from(&p.detach()).unwrap();
        assert_eq!(w[0], 0.0, "no gradient of the dropped update reached the weights: {w:?}");
        assert!(w[1] < 0.0);
    }
}
