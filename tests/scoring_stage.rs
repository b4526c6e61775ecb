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

/// The `tokens` column of `batch`, one sequence per row.
fn token_lists(batch: &arrow::array::RecordBatch) -> Vec<Vec<i64>> {
    let tokens = arrow::array::AsArray::as_list::<i32>(batch.column_by_name("tokens").unwrap());
    (0..tokens.len())
        .map(|i| {
            let row = tokens.value(i);
            let ids = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int32Type>(&row);
            ids.values().iter().map(|&t| t as i64).collect()
        })
        .collect()
}

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
    let seqs = token_lists(&out);
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

/// Rows a policy drew among admissible actions at temperature 0.7: the stage scores every drawn
/// token under the distribution it was drawn from, so a recomputed `logp_behavior` equals the
/// sampler's (the plain softmax's does not).
#[test]
fn logprobs_stage_scores_drawn_tokens_under_the_distribution_they_were_drawn_from() {
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(5);
    let (model, tok) = trajflow::model::load("small:household", Device::Cpu).unwrap();
    let folder = dir.path().join("model");
    model.save_hf_folder(&folder).unwrap();
    tok.save_hf(&folder).unwrap();
    let rows = dir.path().join("rows");
    ok(&[
        "rollout",
        "--env",
        "household",
        "--model",
        s(&folder),
        "--tasks",
        "3",
        "--k",
        "2",
        "--max-turns",
        "3",
        "--temperature",
        "0.7",
        "--admissible",
        "--output",
        s(&rows),
    ]);
    let p = dir.path().join("recompute.toml");
    let stage = format!("[[stage]]\nid = \"recompute\"\nop = \"logprobs\"\nmodel = \"{}\"\n", folder.display());
    std::fs::write(&p, format!("name = \"recompute\"\n{stage}write = {{ logp = \"lp\" }}\n")).unwrap();
    let out = dir.path().join("out");
    ok(&["reprocess", s(&p), "--input", s(&rows), "--output", s(&out)]);
    let batch = read_sorted(&out);
    let (stored, recomputed) = (f32_lists(&batch, "logp_behavior"), f32_lists(&batch, "lp"));
    let seqs = token_lists(&batch);
    let plain = trajflow::model::score::token_logprobs(&model, &seqs, 100_000).unwrap();
    let (mut drawn, mut worst, mut plain_worst) = (0, 0f32, 0f32);
    for ((b, r), p) in stored.iter().zip(&recomputed).zip(&plain) {
        for j in (1..b.len()).filter(|&j| b[j].is_finite()) {
            drawn += 1;
            worst = worst.max((b[j] - r[j]).abs());
            plain_worst = plain_worst.max((b[j] - p[j]).abs());
        }
    }
    assert!(drawn > 20, "{drawn} drawn tokens");
    assert!(worst < 1e-4, "stored and recomputed behaviour log-probs differ by {worst}");
    assert!(plain_worst > 1e-2, "the plain softmax would differ: {plain_worst}");
}
