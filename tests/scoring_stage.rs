//! The `logprobs` stage: a model-bound operator inside a pipeline, run by `trajflow reprocess` on
//! the device thread. Its output equals scoring the same tokens directly, and is the same for 1
//! and 2 workers.
#![cfg(feature = "torch")]

mod common;
use common::*;

use arrow::array::Array;
use tch::Device;
use trajflow::model::config::DecoderConfig;
use trajflow::model::llama::Decoder;

#[test]
fn logprobs_stage_recomputes_behaviour_logprobs_under_a_model() {
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(8);
    let model = Decoder::new(DecoderConfig::small(49152), Device::Cpu);
    let model_dir = dir.path().join("model");
    model.save_hf_folder(&model_dir).unwrap();
    let input = dir.path().join("in");
    interleaved_files(&input, 4, 3, 2, 1);
    let p = dir.path().join("score.toml");
    std::fs::write(
        &p,
        format!(
            "name = \"recompute\"\n[[stage]]\nid = \"recompute\"\nop = \"logprobs\"\nmodel = \"{}\"\nmax_batch_tokens = 2048\nentropy = true\nwrite = {{ logp = \"logp_behavior\" }}\n",
            model_dir.display()
        ),
    )
    .unwrap();
    let explained = ok(&["explain", s(&p)]);
    assert!(explained.contains("logprobs"), "{explained}");
    let (w1, w2) = (dir.path().join("w1"), dir.path().join("w2"));
    ok(&["reprocess", s(&p), "--input", s(&input), "--output", s(&w1), "-w", "1"]);
    ok(&["reprocess", s(&p), "--input", s(&input), "--output", s(&w2), "-w", "2"]);
    assert_same_dataset(&w1, &w2);
    let out = read_sorted(&w1);
    let tokens = out.column_by_name("tokens").unwrap();
    let tokens = arrow::array::AsArray::as_list::<i32>(tokens);
    let seqs: Vec<Vec<i64>> = (0..tokens.len())
        .map(|i| {
            arrow::array::AsArray::as_primitive::<arrow::datatypes::Int32Type>(&tokens.value(i))
                .values()
                .iter()
                .map(|&t| t as i64)
                .collect()
        })
        .collect();
    let direct = trajflow::model::score::token_logprobs(&model, &seqs, 100_000).unwrap();
    let got = f32_lists(&out, "logp_behavior");
    let entropy = f32_lists(&out, "entropy");
    let both = trajflow::model::score::token_logprobs_and_entropy(&model, &seqs, 100_000).unwrap();
    for (h, (_, d)) in entropy.iter().zip(&both) {
        assert!(h[0].is_nan());
        // Entropy of a 49,152-way distribution: between 0 and ln(49152) ≈ 10.8.
        assert!(h[1..].iter().all(|&x| (0.0..=10.81).contains(&x)));
        let max = h[1..].iter().zip(&d[1..]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max < 1e-4);
    }
    for (g, d) in got.iter().zip(&direct) {
        assert!(g[0].is_nan() && d[0].is_nan());
        let max = g[1..].iter().zip(&d[1..]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max < 1e-4, "stage vs direct scoring differ by {max}");
    }
}
