//! Bad input gets a clear error that names the file, stage, key or column, exits non-zero, and
//! leaves output that was already written intact.

mod common;
use common::*;

use std::path::Path;

fn snapshot(out: &Path) -> (usize, Vec<(String, Vec<String>)>) {
    let ds = trajflow::store::Dataset::open(out).unwrap();
    (ds.commits().unwrap().len(), cells(&read_sorted(out)))
}

fn write_pipeline(dir: &Path, text: &str) -> String {
    let p = dir.join("bad.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn malformed_toml_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), "name = \"x\"\n[[stage]\nid = \"a\"\n");
    let err = fails(&["validate", &p]);
    assert!(err.contains(&p) && err.contains("line 2"), "{err}");
}

#[test]
fn unknown_operator_names_stage_and_lists_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), "name = \"x\"\n[[stage]]\nid = \"adv\"\nop = \"gea\"\n");
    let err = fails(&["validate", &p]);
    assert!(err.contains(&format!("{p}: stage 'adv': key 'op': unknown operator 'gea'")), "{err}");
    assert!(err.contains("gae"), "{err}");
}

#[test]
fn unknown_parameter_and_out_of_range_parameter_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        "name = \"x\"\n[[stage]]\nid = \"g\"\nop = \"gae\"\ngamma = 0.9\nlambda = 0.9\ngama_intra = 1.0\n",
    );
    let err = fails(&["validate", &p]);
    assert!(err.contains("stage 'g': key 'gama_intra'"), "{err}");
    let p =
        write_pipeline(dir.path(), "name = \"x\"\n[[stage]]\nid = \"g\"\nop = \"gae\"\ngamma = 1.5\nlambda = 0.9\n");
    let err = fails(&["validate", &p]);
    assert!(err.contains("stage 'g': key 'gamma': must be in [0, 1], got 1.5"), "{err}");
}

#[test]
fn cycle_is_reported_with_its_stages() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        "name = \"x\"\n[[stage]]\nid = \"a\"\nop = \"broadcast\"\ninputs = [\"b\"]\n[[stage]]\nid = \"b\"\nop = \"group_baseline\"\ninputs = [\"a\"]\n",
    );
    let err = fails(&["validate", &p]);
    assert!(
        err.contains("key 'inputs': the stage graph has a cycle: a -> b -> a") || err.contains("cycle: b -> a -> b"),
        "{err}"
    );
}

#[test]
fn missing_column_names_stage_and_column() {
    let dir = tempfile::tempdir().unwrap();
    // broadcast reads episode_advantage, which nothing upstream writes.
    let p = write_pipeline(dir.path(), "name = \"x\"\n[[stage]]\nid = \"b\"\nop = \"broadcast\"\n");
    let err = fails(&["validate", &p]);
    assert!(err.contains("stage 'b': key 'op': reads column 'episode_advantage', which is neither in trajectory.v1 nor written by an upstream stage"), "{err}");
    // Written by a stage that is not upstream.
    let p = write_pipeline(
        dir.path(),
        "name = \"x\"\n[[stage]]\nid = \"base\"\nop = \"group_baseline\"\n[[stage]]\nid = \"b\"\nop = \"broadcast\"\n",
    );
    let err = fails(&["validate", &p]);
    assert!(err.contains("stage 'base' writes it but is not upstream"), "{err}");
}

#[test]
fn wrong_column_type_in_a_rename_and_in_a_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        "name = \"x\"\n[[stage]]\nid = \"base\"\nop = \"group_baseline\"\nread = { reward = \"turn_rewards\" }\n",
    );
    let err = fails(&["validate", &p]);
    assert!(err.contains("stage 'base': key 'read.reward': column 'turn_rewards' is List"), "{err}");
    assert!(err.contains("expected float32"), "{err}");
    // A data file whose reward column is float64.
    use arrow::array::{Float64Array, RecordBatch};
    let batch = episodes_batch(&[Ep::outcome("a", "g", 1.0)]);
    let idx = batch.schema().index_of("reward").unwrap();
    let mut fields: Vec<_> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[idx] = arrow::datatypes::Field::new("reward", arrow::datatypes::DataType::Float64, false);
    let mut cols = batch.columns().to_vec();
    cols[idx] = arc(Float64Array::from(vec![1.0]));
    let batch = RecordBatch::try_new(std::sync::Arc::new(arrow::datatypes::Schema::new(fields)), cols).unwrap();
    write_file(&dir.path().join("in"), "f64.parquet", &batch);
    let err = fails(&[
        "reprocess",
        &pipeline("loop_advantages.toml"),
        "--input",
        s(&dir.path().join("in")),
        "--output",
        s(&dir.path().join("out")),
    ]);
    assert!(err.contains("key 'op': column 'reward' is Float64"), "{err}");
}

#[test]
fn nan_reward_is_an_error_naming_file_episode_and_column_and_output_is_intact() {
    let dir = tempfile::tempdir().unwrap();
    let (good, bad, out) = (dir.path().join("good"), dir.path().join("bad"), dir.path().join("out"));
    write_file(&good, "g.parquet", &episodes_batch(&[Ep::outcome("a", "g", 1.0), Ep::outcome("b", "g", 0.0)]));
    ok(&["reprocess", &pipeline("loop_advantages.toml"), "--input", s(&good), "--output", s(&out)]);
    let before = snapshot(&out);
    write_file(&bad, "n.parquet", &episodes_batch(&[Ep::outcome("c", "h", 1.0), Ep::outcome("d", "h", f32::NAN)]));
    let err =
        fails(&["reprocess", &pipeline("loop_advantages.toml"), "--input", s(&bad), "--output", s(&out), "-w", "2"]);
    assert!(err.contains("n.parquet: episode 'd': column 'reward': is NaN"), "{err}");
    assert_eq!(snapshot(&out), before, "the failed run changed the output dataset");
}

/// Runs the POAD pipeline over one episode whose values are `values`; returns stderr.
fn poad_error_for_values(values: Vec<f32>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut e = Ep::outcome("a", "g", 1.0);
    e.values = values;
    write_file(&dir.path().join("in"), "v.parquet", &episodes_batch(&[e]));
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    fails(&["reprocess", &pipeline("poad_advantages.toml"), "--input", s(&input), "--output", s(&output)])
}

#[test]
fn nan_value_on_an_action_token_is_an_error() {
    // Token 1 is the action token; NaN on the prompt token alone would be allowed.
    let err = poad_error_for_values(vec![f32::NAN, f32::NAN]);
    assert!(err.contains("episode 'a': column 'values': is NaN at action token 1"), "{err}");
}

#[test]
fn per_token_list_of_the_wrong_length_is_an_error() {
    let err = poad_error_for_values(vec![0.0]);
    assert!(err.contains("column 'values': has 1 entries but segments has 2 tokens"), "{err}");
}

#[test]
fn truncated_input_part_is_named_and_output_is_intact() {
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = (dir.path().join("in"), dir.path().join("out"));
    let files = interleaved_files(&input, 10, 4, 3, 1);
    ok(&["reprocess", &pipeline("loop_advantages.toml"), "--input", s(&input), "--output", s(&out)]);
    let before = snapshot(&out);
    let bytes = std::fs::read(&files[1]).unwrap();
    std::fs::write(&files[1], &bytes[..bytes.len() / 2]).unwrap();
    let err =
        fails(&["reprocess", &pipeline("loop_advantages.toml"), "--input", s(&input), "--output", s(&out), "-w", "2"]);
    assert!(err.contains("rollouts-001.parquet") && err.contains("not a readable Parquet file"), "{err}");
    assert_eq!(snapshot(&out), before);
    // inspect still reads the rest of the directory and says which part it skipped.
    let report = ok(&["inspect", s(&input)]);
    assert!(report.contains("unreadable part skipped") && report.contains("rollouts-001.parquet"), "{report}");
}

#[test]
fn watch_rejects_a_bad_file_and_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let (watch_dir, out) = (dir.path().join("w"), dir.path().join("out"));
    write_file(&watch_dir, "1-bad.parquet", &episodes_batch(&[Ep::outcome("x", "g", f32::INFINITY)]));
    write_file(
        &watch_dir,
        "2-good.parquet",
        &episodes_batch(&[Ep::outcome("a", "g", 1.0), Ep::outcome("b", "g", 0.0)]),
    );
    let stdout = ok(&[
        "watch",
        &pipeline("loop_advantages.toml"),
        "--input",
        s(&watch_dir),
        "--output",
        s(&out),
        "--poll-ms",
        "20",
        "--idle-exit",
        "1",
    ]);
    assert!(
        stdout.contains("rejected: ") && stdout.contains("1-bad.parquet: episode 'x': column 'reward': is inf"),
        "{stdout}"
    );
    assert_eq!(f32s(&read_sorted(&out), "episode_advantage"), vec![1.0, -1.0]);
}

#[test]
fn append_publishes_whole_files_and_rejects_broken_ones() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let files = interleaved_files(&src, 4, 2, 2, 9);
    let watched = dir.path().join("watched");
    let out = ok(&["append", "--dir", s(&watched), s(&files[0]), s(&files[0])]);
    assert_eq!(out.lines().count(), 2);
    let names: Vec<String> =
        std::fs::read_dir(&watched).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| !n.starts_with('.')), "no temporary file is left: {names:?}");
    // A truncated file is rejected, naming it, and nothing is published.
    let bytes = std::fs::read(&files[1]).unwrap();
    std::fs::write(&files[1], &bytes[..bytes.len() / 3]).unwrap();
    let err = fails(&["append", "--dir", s(&watched), s(&files[1])]);
    assert!(err.contains("rollouts-001.parquet"), "{err}");
    assert_eq!(std::fs::read_dir(&watched).unwrap().count(), 2);
}

#[test]
fn a_gae_stage_without_a_critic_is_refused_before_the_run_starts() {
    let dir = tempfile::tempdir().unwrap();
    let text = "name = \"no-critic\"\n[models.policy]\nname = \"small:household-pick\"\n\
                [[stage]]\nid = \"rollout\"\nop = \"rollout\"\nmodel = \"policy\"\n\
                [[stage]]\nid = \"gae\"\nop = \"gae\"\ninputs = [\"rollout\"]\ngamma = 1.0\nlambda = 1.0\n\
                [[stage]]\nid = \"learner\"\nop = \"ppo_update\"\nmodel = \"policy\"\ninputs = [\"gae\"]\n";
    let p = write_pipeline(dir.path(), text);
    let out = dir.path().join("run");
    let err = fails(&["run", &p, "--out", s(&out)]);
    assert!(err.contains(&format!("{p}: stage 'gae': key 'values': `gae` reads column 'values'")), "{err}");
    assert!(err.contains("a `values` step"), "{err}");
    assert!(!out.exists(), "nothing is written before the error: {}", out.display());
    let err = fails(&["validate", &p]);
    assert!(err.contains(&format!("{p}: stage 'gae': key 'values'")), "validate: {err}");
}

/// Stored rows whose token ids the pipeline's model does not know (logged for another tokenizer)
/// are refused under `--train` with the episode, the column and the vocabulary named, not with an
/// index error from inside the model; nothing is trained.
#[test]
fn stream_training_refuses_rows_of_another_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    // Synthetic ids range over 49,152; loop.toml's model knows 772.
    interleaved_files(&input, 4, 2, 1, 1);
    let out = dir.path().join("run");
    let sets = ["warm_start.demos=0", "run.eval_tasks=0", "rollout.k=2", "stream.groups_per_update=2"];
    let mut args = vec!["reprocess", &pipeline("loop.toml"), "--input", s(&input), "--output", s(&out), "--train"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    for set in sets {
        args.extend(["--set".to_string(), set.to_string()]);
    }
    let err = fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("update 1: episode '") && err.contains("column 'tokens'"), "{err}");
    assert!(err.contains("outside the model's vocabulary of 772 ids"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        out.join("checkpoints/iter-0000").is_dir() && !out.join("checkpoints/iter-0001").exists(),
        "nothing trained"
    );
}
