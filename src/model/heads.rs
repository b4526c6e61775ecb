//! Heads on the decoder's final hidden states: a per-token value head (POAD's critic, the PPO
//! baseline's critic) and a pooled scalar head (StepAgent's discriminator). An MLP with ReLU
//! between layers and a scalar output; POAD's critic is hidden → 1024 → 512 → 1 without bias.
//! With `detach_backbone`, no gradient reaches the decoder (POAD and LOOP's PPO baseline train the
//! head alone on a frozen backbone).

use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// An MLP head producing one number per input vector.
pub struct Head {
    /// The head's own variables (`head.0.weight`, ...), trained by their own optimiser.
    pub vs: nn::VarStore,
    layers: Vec<nn::Linear>,
    detach_backbone: bool,
}

impl Head {
    /// A head over `hidden`-wide states with the given inner widths (e.g. `[1024, 512]`).
    pub fn new(hidden: i64, inner: &[i64], bias: bool, detach_backbone: bool, device: Device) -> Head {
        let vs = nn::VarStore::new(device);
        let root = vs.root() / "head";
        let mut widths = vec![hidden];
        widths.extend_from_slice(inner);
        widths.push(1);
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| nn::linear(&root / i, w[0], w[1], nn::LinearConfig { bias, ..Default::default() }))
            .collect();
        Head { vs, layers, detach_backbone }
    }

    /// Sets the output layer's weights (and bias) to zero: every output starts at 0. The inner
    /// layers keep their random init, so they get gradient once the output layer has moved.
    pub fn zero_output(&mut self) {
        let last = self.layers.last_mut().expect("a head has an output layer");
        tch::no_grad(|| {
            let _ = last.ws.zero_();
            if let Some(b) = last.bs.as_mut() {
                let _ = b.zero_();
            }
        });
    }

    fn mlp(&self, x: &Tensor) -> Tensor {
        let x = if self.detach_backbone { x.detach() } else { x.shallow_clone() };
        let n = self.layers.len();
        let mut x = x.to_kind(Kind::Float);
        for (i, l) in self.layers.iter().enumerate() {
            x = l.forward(&x);
            if i + 1 < n {
                x = x.relu();
            }
        }
        x.squeeze_dim(-1)
    }

    /// Per-token values [B, T] from hidden states [B, T, D] (the value of the prefix ending at
    /// each token).
    pub fn values(&self, hidden: &Tensor) -> Tensor {
        self.mlp(hidden)
    }

    /// One score per sequence [B] from the hidden state of its last real token (`lengths` [B]).
    pub fn pooled(&self, hidden: &Tensor, lengths: &Tensor) -> Tensor {
        let d = hidden.size()[2];
        let last = (lengths - 1).clamp_min(0).view([-1, 1, 1]).expand([-1, 1, d], false);
        self.mlp(&hidden.gather(1, &last, false).squeeze_dim(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_pooling_and_detach() {
        tch::manual_seed(1);
        let head = Head::new(8, &[16, 4], false, true, Device::Cpu);
        let hidden = Tensor::randn([2, 5, 8], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let v = head.values(&hidden);
        assert_eq!(v.size(), vec![2, 5]);
        // Pooling picks the last real token of each row.
        let pooled = head.pooled(&hidden, &Tensor::from_slice(&[3i64, 5]));
        assert!((pooled.double_value(&[0]) - v.double_value(&[0, 2])).abs() < 1e-6);
        assert!((pooled.double_value(&[1]) - v.double_value(&[1, 4])).abs() < 1e-6);
        // A detached backbone gets no gradient.
        v.sum(Kind::Float).backward();
        assert!(!hidden.grad().defined() || hidden.grad().abs().sum(Kind::Float).double_value(&[]) == 0.0);
        assert_eq!(head.vs.trainable_variables().len(), 3);
    }

    #[test]
    fn a_zeroed_output_starts_at_zero_and_learns() {
        tch::manual_seed(2);
        let mut head = Head::new(8, &[16], true, true, Device::Cpu);
        head.zero_output();
        let hidden = Tensor::randn([3, 4, 8], (Kind::Float, Device::Cpu));
        assert_eq!(head.values(&hidden).abs().max().double_value(&[]), 0.0);
        // The output layer still gets gradient (the inner layers' activations are not zero).
        let loss = (head.values(&hidden) - 1.0).square().mean(Kind::Float);
        loss.backward();
        let grads: f64 =
            head.vs.trainable_variables().iter().map(|v| v.grad().abs().sum(Kind::Float).double_value(&[])).sum();
        assert!(grads > 0.0);
    }
}
