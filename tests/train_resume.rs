//! A run interrupted and resumed from its checkpoint equals the uninterrupted run, bit for bit, on
//! the CPU: weights, optimiser moments and schedule position all come back.
#![cfg(feature = "torch")]

use tch::{Device, Kind, Tensor};
use trajflow::model::config::DecoderConfig;
use trajflow::model::llama::Decoder;
use trajflow::synth::SplitMix;
use trajflow::train::checkpoint::{self, TrainState};
use trajflow::train::losses::{nll_loss, Reduction};
use trajflow::train::optim::{AdamW, OptimConfig, Schedule};

fn model(seed: i64) -> Decoder {
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = INIT.lock().unwrap();
    tch::manual_seed(seed);
    Decoder::new(DecoderConfig::small(40), Device::Cpu)
}

fn optimizer(m: &Decoder) -> AdamW {
    let cfg = OptimConfig {
        lr: 3e-3,
        weight_decay: 0.01,
        max_grad_norm: Some(1.0),
        schedule: Schedule::Cosine,
        warmup_steps: 2,
        total_steps: 8,
        grad_accum: 2,
        ..Default::default()
    };
    AdamW::new(m.vs.variables().into_iter().collect(), cfg)
}

/// The micro-batch at data position `pos`: derived from the position alone.
fn batch(pos: u64) -> Tensor {
    let mut rng = SplitMix::new(1000 + pos);
    let ids: Vec<i64> = (0..2 * 12).map(|_| (rng.next_u64() % 40) as i64).collect();
    Tensor::from_slice(&ids).view([2, 12])
}

fn train(m: &Decoder, opt: &mut AdamW, from: u64, to: u64) {
    for pos in from..to {
        let ids = batch(pos);
        let logp = m
            .forward(&ids.narrow(1, 0, 11))
            .log_softmax(-1, Kind::Float)
            .gather(2, &ids.narrow(1, 1, 11).unsqueeze(-1), false)
            .squeeze_dim(-1);
        let loss = nll_loss(&logp, &Tensor::ones_like(&logp), Reduction::TokenMean);
        opt.backward(&loss, None).unwrap();
    }
}

fn flat(m: &Decoder) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> =
        m.vs.variables().into_iter().map(|(n, t)| (n, Vec::<f32>::try_from(t.view([-1])).unwrap())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn interrupted_and_resumed_run_equals_uninterrupted_run() {
    let full = model(5);
    let mut opt = optimizer(&full);
    train(&full, &mut opt, 0, 12);
    assert_eq!(opt.step, 6);

    let first = model(5);
    let mut opt1 = optimizer(&first);
    train(&first, &mut opt1, 0, 6);
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    checkpoint::save(&ckpt, &[&first.vs], &opt1, &TrainState { step: opt1.step, data_position: 6, seed: 5 }).unwrap();
    drop((first, opt1));

    // A different initialisation: everything must come from the checkpoint.
    let resumed = model(99);
    let mut opt2 = optimizer(&resumed);
    let state = checkpoint::load(&ckpt, &[&resumed.vs], &mut opt2).unwrap();
    assert_eq!(state, TrainState { step: 3, data_position: 6, seed: 5 });
    train(&resumed, &mut opt2, state.data_position, 12);
    assert_eq!(opt2.step, 6);
    let (a, b) = (flat(&full), flat(&resumed));
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(va.iter().zip(vb).all(|(x, y)| x.to_bits() == y.to_bits()), "{na} differs after resume");
    }
}
