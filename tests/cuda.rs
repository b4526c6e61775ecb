//! CUDA: the decoder on the GPU agrees with the CPU (in float32, and in bf16 within its
//! precision) and trains.
//! These tests are `#[ignore]`d so that machines without a GPU report them as ignored (skipped),
//! not passed; on a GPU machine run `cargo test --test cuda -- --ignored`.
#![cfg(feature = "torch")]

use tch::{Device, Kind, Tensor};
use trajflow::model::config::DecoderConfig;
use trajflow::model::llama::Decoder;

fn pair() -> (Decoder, Decoder) {
    assert!(tch::Cuda::is_available(), "CUDA is not available to libtorch (is torch_cuda linked? see build.rs)");
    tch::manual_seed(2);
    let cpu = Decoder::new(DecoderConfig::small(300), Device::Cpu);
    let weights = cpu.vs.variables();
    let gpu = Decoder::from_weights(cpu.cfg.clone(), &weights, Device::Cuda(0)).unwrap();
    (cpu, gpu)
}

#[test]
#[ignore = "needs CUDA: cargo test --test cuda -- --ignored"]
fn decoder_on_cuda_matches_cpu_and_trains() {
    let (cpu, gpu) = pair();
    let ids = Tensor::from_slice(&[1i64, 5, 9, 200, 7, 3, 3, 8]).view([2, 4]);
    let a = tch::no_grad(|| cpu.forward(&ids));
    let b = tch::no_grad(|| gpu.forward(&ids.to(Device::Cuda(0)))).to(Device::Cpu);
    let diff = (&a - &b).abs().max().double_value(&[]);
    assert!(diff < 1e-3, "max |logit diff| CPU vs CUDA {diff}");
    let loss = gpu.forward(&ids.to(Device::Cuda(0))).log_softmax(-1, Kind::Float).mean(Kind::Float);
    loss.backward();
    let grads: f64 =
        gpu.vs.trainable_variables().iter().map(|v| v.grad().abs().sum(Kind::Float).double_value(&[])).sum();
    assert!(grads.is_finite() && grads > 0.0);
}

/// `bf16` on CUDA (tensor-core products, float32 weights) stays within bf16's precision of the
/// float32 CPU logits, and a training step's gradients are finite float32.
#[test]
#[ignore = "needs CUDA: cargo test --test cuda -- --ignored"]
fn bf16_on_cuda_matches_float32_cpu_and_trains() {
    let (cpu, mut gpu) = pair();
    gpu.set_precision(trajflow::model::precision::Precision::Bf16);
    let ids = Tensor::from_slice(&[1i64, 5, 9, 200, 7, 3, 3, 8]).view([2, 4]);
    let a = tch::no_grad(|| cpu.forward(&ids));
    let b = tch::no_grad(|| gpu.forward(&ids.to(Device::Cuda(0)))).to_kind(Kind::Float).to(Device::Cpu);
    let diff = (&a - &b).abs().max().double_value(&[]);
    let scale = a.abs().max().double_value(&[]);
    assert!(diff < 0.02 * scale, "max |logit diff| float32 CPU vs bf16 CUDA {diff} (max |logit| {scale})");
    let loss = gpu.forward(&ids.to(Device::Cuda(0))).log_softmax(-1, Kind::Float).mean(Kind::Float);
    loss.backward();
    let vars = gpu.vs.trainable_variables();
    assert!(vars.iter().all(|v| v.kind() == Kind::Float && v.grad().kind() == Kind::Float));
    let grads: f64 = vars.iter().map(|v| v.grad().abs().sum(Kind::Float).double_value(&[])).sum();
    assert!(grads.is_finite() && grads > 0.0);
}
