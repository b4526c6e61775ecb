//! LoRA: a fresh adapter changes nothing; "adapter off" is exactly the base model; save/load in
//! PEFT's layout round-trips; merging gives the adapted model; training touches only the adapter.
#![cfg(feature = "torch")]

use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor};
use trajflow::model::config::DecoderConfig;
use trajflow::model::llama::Decoder;
use trajflow::model::lora::{self, LoraConfig};

/// The same model every time, whatever other tests do with libtorch's global generator: the
/// weights are filled from a seeded generator of our own.
fn model() -> Decoder {
    let m = Decoder::new(DecoderConfig::small(64), Device::Cpu);
    tch::no_grad(|| {
        let mut vars: Vec<(String, Tensor)> = m.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut rng = trajflow::synth::SplitMix::new(11);
        for (_, mut v) in vars {
            let n = v.numel();
            let vals: Vec<f32> = (0..n).map(|_| (rng.unit() - 0.5) * 0.2).collect();
            v.copy_(&Tensor::from_slice(&vals).view(v.size().as_slice()));
        }
    });
    m
}

fn logits(m: &Decoder, ids: &Tensor) -> Tensor {
    tch::no_grad(|| m.forward(ids))
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn ids() -> Tensor {
    Tensor::from_slice(&[3i64, 9, 1, 40, 22, 7, 5, 63]).view([2, 4])
}

fn train_adapter(m: &mut Decoder, steps: usize) {
    let ad = m.adapter().unwrap();
    let mut opt = tch::nn::AdamW::default().build(&ad.vs, 1e-2).unwrap();
    for _ in 0..steps {
        let l = m.forward(&ids()).log_softmax(-1, Kind::Float);
        let loss = -l.narrow(2, 0, 1).mean(Kind::Float);
        opt.backward_step(&loss);
    }
}

#[test]
fn fresh_adapter_is_the_identity_and_adapter_off_is_the_base_model() {
    let mut m = model();
    let base = logits(&m, &ids());
    lora::attach(
        &mut m,
        LoraConfig { targets: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()], ..Default::default() },
    )
    .unwrap();
    assert_eq!(max_diff(&logits(&m, &ids()), &base), 0.0);
    train_adapter(&mut m, 3);
    let adapted = logits(&m, &ids());
    assert!(max_diff(&adapted, &base) > 1e-4, "training the adapter changed nothing");
    let off = lora::with_adapter_disabled(&m, || logits(&m, &ids()));
    assert_eq!(max_diff(&off, &base), 0.0, "adapter off must be the untouched base model");
    assert_eq!(max_diff(&logits(&m, &ids()), &adapted), 0.0, "the adapter is back on afterwards");
}

#[test]
fn save_load_round_trip_in_peft_layout_and_merge() {
    let mut m = model();
    lora::attach(
        &mut m,
        LoraConfig { r: 4, alpha: 8.0, dropout: 0.0, targets: vec!["q_proj".into(), "o_proj".into()] },
    )
    .unwrap();
    train_adapter(&mut m, 2);
    let adapted = logits(&m, &ids());
    let dir = tempfile::tempdir().unwrap();
    lora::save(&m, dir.path()).unwrap();
    let names: Vec<String> = Tensor::read_safetensors(dir.path().join("adapter_model.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.contains(&"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight".to_string()), "{names:?}");
    assert!(names.contains(&"base_model.model.model.layers.3.self_attn.o_proj.lora_B.weight".to_string()), "{names:?}");
    assert_eq!(names.len(), 4 * 2 * 2);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["r"], 4);

    let mut fresh = model();
    lora::load(&mut fresh, dir.path()).unwrap();
    assert_eq!(max_diff(&logits(&fresh, &ids()), &adapted), 0.0);

    lora::merge(&mut fresh).unwrap();
    assert!(fresh.adapter().is_none());
    let merged = logits(&fresh, &ids());
    assert!(max_diff(&merged, &adapted) < 1e-4, "merged differs by {}", max_diff(&merged, &adapted));
}

#[test]
fn training_the_adapter_leaves_the_base_weights_untouched() {
    let mut m = model();
    let before: Vec<(String, Tensor)> = m.vs.variables().into_iter().map(|(n, t)| (n, t.copy())).collect();
    lora::attach(&mut m, LoraConfig::default()).unwrap();
    train_adapter(&mut m, 2);
    let after = m.vs.variables();
    for (n, t) in before {
        assert_eq!(max_diff(&t, &after[&n]), 0.0, "{n} changed");
    }
}

#[test]
fn unknown_target_is_rejected() {
    let mut m = model();
    let err = lora::attach(&mut m, LoraConfig { targets: vec!["qkv".into()], ..Default::default() }).unwrap_err();
    assert!(err.to_string().contains("LoRA target 'qkv'"));
}
