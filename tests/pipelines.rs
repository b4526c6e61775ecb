//! Every shipped pipeline validates; `explain` output is pinned by snapshots; pipelines that
//! differ only in their TOML change the computed advantages as the theory says.

mod common;
use common::*;

#[test]
fn every_shipped_pipeline_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut n = 0;
    // The pipelines and those of the folders beside them (pipelines/smollm2/).
    let files = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).flat_map(|p| {
        if p.is_dir() {
            std::fs::read_dir(p).unwrap().map(|e| e.unwrap().path()).collect()
        } else {
            vec![p]
        }
    });
    for p in files {
        if p.extension().is_some_and(|e| e == "toml") {
            let out = ok(&["validate", s(&p)]);
            assert!(out.contains(": ok ("), "{out}");
            n += 1;
        }
    }
    assert!(n >= 8, "expected the shipped pipelines, found {n}");
}

fn explain(name: &str) -> String {
    let out = ok(&["explain", &pipeline(name)]);
    // The pipeline path is machine-specific; everything else must be stable.
    out.replace(env!("CARGO_MANIFEST_DIR"), "<repo>")
}

#[test]
fn explain_loop_advantages() {
    insta::assert_snapshot!(explain("loop_advantages.toml"));
}

#[test]
fn explain_poad_advantages() {
    insta::assert_snapshot!(explain("poad_advantages.toml"));
}

/// A training pipeline's graph: models, the model steps (a critic's values), the data stages and
/// the update.
#[test]
fn explain_poad_training_graph() {
    insta::assert_snapshot!(explain("poad.toml"));
}

/// A join of two sources (ETO: the policy's rollout and the expert's) straight into the update.
#[test]
fn explain_eto_training_graph() {
    insta::assert_snapshot!(explain("eto.toml"));
}

#[test]
fn explain_reinforce_pp_with_a_column_rename() {
    insta::assert_snapshot!(explain("reinforce_pp_advantages.toml"));
}

#[test]
fn renamed_columns_let_a_foreign_dataset_be_reprocessed_without_conversion() {
    // A logged dataset that calls the outcome "score" and the groups "prompt_uid".
    let dir = tempfile::tempdir().unwrap();
    let batch = episodes_batch(&[Ep::outcome("a", "g", 1.0), Ep::outcome("b", "g", 0.0)]);
    let schema = batch.schema();
    let fields: Vec<arrow::datatypes::Field> = schema
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            "reward" => f.as_ref().clone().with_name("score"),
            "group_id" => f.as_ref().clone().with_name("prompt_uid"),
            _ => f.as_ref().clone(),
        })
        .collect();
    let batch = arrow::array::RecordBatch::try_new(
        std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
        batch.columns().to_vec(),
    )
    .unwrap();
    write_file(&dir.path().join("in"), "foreign.parquet", &batch);
    let p = dir.path().join("p.toml");
    std::fs::write(&p, "name = \"x\"\n[[stage]]\nid = \"base\"\nop = \"group_baseline\"\nread = { reward = \"score\", group_id = \"prompt_uid\" }\nwrite = { episode_advantage = \"adv\" }\n").unwrap();
    // Against the declared table the renamed columns do not exist...
    assert!(fails(&["validate", s(&p)]).contains("reads column 'prompt_uid', which is neither in trajectory.v1"));
    // ...against the real input they do.
    ok(&["validate", s(&p), "--input", s(&dir.path().join("in"))]);
    ok(&["reprocess", s(&p), "--input", s(&dir.path().join("in")), "--output", s(&dir.path().join("out"))]);
    assert_eq!(f32s(&read_sorted(&dir.path().join("out")), "adv"), vec![1.0, -1.0]);
}

/// Mean |A_BAD − A_NTPO| over action tokens for synthetic data with actions of up to
/// `max_tokens` tokens, comparing the raw GAE stage of the two shipped pipelines.
fn ntpo_gap(dir: &std::path::Path, max_tokens: usize) -> f64 {
    let data = dir.join(format!("data-{max_tokens}"));
    ok(&[
        "synth",
        "--output",
        s(&data),
        "--groups",
        "30",
        "--group-size",
        "2",
        "--max-action-tokens",
        &max_tokens.to_string(),
    ]);
    let run = |p: &str| {
        let out = dir.join(format!("{max_tokens}-{p}"));
        // Drop the whitening stage: compare GAE itself.
        let text = std::fs::read_to_string(pipeline(p)).unwrap();
        let raw = text.split("[[stage]]\nid = \"whiten\"").next().unwrap().to_string();
        assert!(!raw.contains("normalize"));
        let f = dir.join(format!("{max_tokens}-{p}.raw.toml"));
        std::fs::write(&f, raw).unwrap();
        ok(&["reprocess", s(&f), "--input", s(&data), "--output", s(&out)]);
        f32_lists(&read_sorted(&out), "advantages")
    };
    let (bad, ntpo) = (run("poad_advantages.toml"), run("ntpo_advantages.toml"));
    let (mut gap, mut n) = (0f64, 0usize);
    for (a, b) in bad.iter().zip(&ntpo) {
        for (x, y) in a.iter().zip(b) {
            if *x != 0.0 || *y != 0.0 {
                gap += (x - y).abs() as f64;
                n += 1;
            }
        }
    }
    gap / n.max(1) as f64
}

#[test]
fn ntpo_equals_poad_for_one_token_actions_and_the_gap_grows_with_action_length() {
    // poad_advantages.toml and ntpo_advantages.toml differ only in gamma_intra (1 vs γ). With
    // one-token actions there is no intra-action step, so the two must agree exactly; the
    // difference comes from intra-action discounting and grows with the action's length.
    let dir = tempfile::tempdir().unwrap();
    let one = ntpo_gap(dir.path(), 1);
    let short = ntpo_gap(dir.path(), 4);
    let long = ntpo_gap(dir.path(), 32);
    eprintln!("mean |A_BAD − A_NTPO|: 1-token {one}, ≤4 tokens {short:.4}, ≤32 tokens {long:.4}");
    assert_eq!(one, 0.0);
    assert!(short > 0.0 && long > short, "short {short}, long {long}");
}

#[test]
fn outputs_only_mode_writes_the_key_and_the_new_columns_with_the_same_values() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    interleaved_files(&input, 10, 3, 2, 4);
    let (all, slim) = (dir.path().join("all"), dir.path().join("slim"));
    ok(&["reprocess", &pipeline("loop_advantages.toml"), "--input", s(&input), "--output", s(&all), "-w", "2"]);
    ok(&[
        "reprocess",
        &pipeline("loop_advantages.toml"),
        "--input",
        s(&input),
        "--output",
        s(&slim),
        "-w",
        "2",
        "--columns",
        "outputs",
    ]);
    let slim = read_sorted(&slim);
    let names: Vec<String> = slim.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, vec!["episode_id", "episode_advantage", "keep", "advantages"]);
    let all = read_sorted(&all);
    for c in &names {
        assert_eq!(slim.column_by_name(c).unwrap(), all.column_by_name(c).unwrap(), "{c}");
    }
}

#[test]
fn ops_lists_every_operator_with_the_columns_it_reads_and_writes() {
    let out = ok(&["ops"]);
    for (name, summary) in trajflow::stages::OPERATORS {
        assert!(out.contains(&format!("{name:<22} {summary}\n")), "{name} missing:\n{out}");
    }
    assert!(out.contains("reads group_id, reward; writes episode_advantage, keep\n"), "{out}");
    assert!(
        out.contains(
            "reads segments, turns, turn_rewards, values, truncated, bootstrap_value?; writes advantages, returns\n"
        ),
        "{out}"
    );
    assert!(!out.contains("missing field"), "{out}");
    for op in trajflow::pipeline::graph::MODEL_OPERATORS {
        assert!(out.contains(&format!("{:<22} {} (", op.name, op.summary)), "{} missing:\n{out}", op.name);
        assert!(out.contains(&format!("reads {}; writes {}\n", op.reads, op.writes)), "{}:\n{out}", op.name);
    }
}
