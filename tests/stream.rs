//! Training on trajectory files as they arrive (`watch --train`) against training on all of them
//! at once (`reprocess --train`): the same groups in the same order, so the same weights, bit for
//! bit — one file at a time or all at once, 1 worker or 2, and across a `watch` killed with
//! SIGKILL at random points and restarted. Also the staleness bound and partial groups.
#![cfg(feature = "torch")]

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use trajflow::model::generate::Sampling;
use trajflow::rollout::{rollout, RolloutConfig};
use trajflow::schema::builder::TrajectoryBuilder;

const TASKS: usize = 16;
const K: usize = 4;
const FILES: usize = 6;

/// Episodes of the pipelines' own model (`small:household-pick`, seed 0) on the built-in
/// environment, spread over `FILES` Parquet files (row i to file i % FILES, so groups span
/// files). A random policy never succeeds, so rewards are assigned by a fixed rule (about a third
/// of the episodes), which gives every group a non-trivial leave-one-out / GRPO advantage.
fn actor_files(dir: &Path, drop_rows: &[usize]) -> Vec<PathBuf> {
    let spec = "small:household-pick";
    let tok = trajflow::model::load_tokenizer(spec).unwrap();
    tch::manual_seed(0);
    let model = trajflow::model::load_decoder(spec, tch::Device::Cpu).unwrap();
    let sampling = Sampling { temperature: 1.0, max_new_tokens: 6, seed: 9, ..Default::default() };
    let cfg = RolloutConfig {
        seed: 3,
        ..RolloutConfig::new("household-pick", (0..TASKS as u64).collect(), K, sampling, 3, spec)
    };
    let mut rows = rollout(&model, &tok, &cfg).unwrap();
    for (i, r) in rows.iter_mut().enumerate() {
        let won = (i * 7 + i / K).is_multiple_of(3);
        r.reward = f32::from(u8::from(won));
        r.success = Some(won);
    }
    (0..FILES)
        .map(|f| {
            let mut b = TrajectoryBuilder::default();
            for (_, r) in rows.iter().enumerate().filter(|(i, _)| i % FILES == f && !drop_rows.contains(i)) {
                b.push(r.clone());
            }
            let name = format!("actor-{f:03}.parquet");
            write_file(dir, &name, &b.finish());
            dir.join(name)
        })
        .collect()
}

/// StepAgent's rows, as an actor running `expert_prefixes` would log them: the expert's episodes
/// of `TASKS / 4` tasks cut at each of its actions, the expert's row and the policy's row
/// (`small:household-pick`, sampled) at each prefix forming a group of 2, spread over `FILES`
/// files (row i to file i % FILES, so each group spans two files).
fn prefix_files(dir: &Path) -> Vec<PathBuf> {
    let spec = "small:household-pick";
    let tok = trajflow::model::load_tokenizer(spec).unwrap();
    tch::manual_seed(0);
    let model = trajflow::model::load_decoder(spec, tch::Device::Cpu).unwrap();
    let tasks: Vec<u64> = (0..(TASKS / 4) as u64).collect();
    let mut expert = trajflow::env::demos::expert_rows_of("household-pick", &tasks, 3, &tok, spec).unwrap();
    for (row, task) in expert.iter_mut().zip(&tasks) {
        row.episode_id = format!("household-pick-{task}-expert");
        row.group_id = format!("household-pick-{task}");
    }
    let sampling = Sampling { temperature: 1.0, max_new_tokens: 6, seed: 9, ..Default::default() };
    let rows =
        trajflow::rollout::prefixes::expert_prefix_rows(&model, &tok, &expert, None, None, &sampling, 0).unwrap();
    (0..FILES)
        .map(|f| {
            let mut b = TrajectoryBuilder::default();
            for (_, r) in rows.iter().enumerate().filter(|(i, _)| i % FILES == f) {
                b.push(r.clone());
            }
            let name = format!("actor-{f:03}.parquet");
            write_file(dir, &name, &b.finish());
            dir.join(name)
        })
        .collect()
}

/// The `--set`s of a stream run from the pipeline's model, untrained: no warm start, no
/// evaluation, groups of K, 3 groups per update.
fn sets(extra: &[&str]) -> Vec<String> {
    stream_sets(&["rollout.k=4"], extra)
}

/// [`sets`] for StepAgent's one-step rows: groups of 2 (an expert and the policy at a prefix).
fn prefix_sets() -> Vec<String> {
    stream_sets(&["stream.group_size=2"], &[])
}

fn stream_sets(groups: &[&str], extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> =
        ["warm_start.demos=0", "run.eval_tasks=0", "stream.groups_per_update=3", "learner.minibatch=4"]
            .iter()
            .chain(groups)
            .chain(extra)
            .flat_map(|s| ["--set".to_string(), s.to_string()])
            .collect();
    v.push("--quiet".into());
    v
}

fn args<'a>(head: &[&'a str], sets: &'a [String]) -> Vec<&'a str> {
    head.iter().copied().chain(sets.iter().map(String::as_str)).collect()
}

/// The weights of a run's last checkpoint.
fn last_weights(run: &Path) -> (u64, Vec<u8>) {
    let n = trajflow::run::trainer::last_checkpoint(run).unwrap().expect("a checkpoint");
    let dir = trajflow::run::trainer::checkpoint_dir(run, n);
    let mut bytes = std::fs::read(dir.join("weights.safetensors")).unwrap();
    bytes.extend(std::fs::read(dir.join("optimizer.safetensors")).unwrap());
    (n, bytes)
}

fn logged(out: &Path) -> usize {
    std::fs::read_dir(out.join("ingested").join("_ingested"))
        .map(|d| d.filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))).count())
        .unwrap_or(0)
}

fn watch(pipeline_file: &str, wdir: &Path, out: &Path, sets: &[String]) -> Command {
    let mut c = Command::new(bin());
    c.args(["watch", pipeline_file, "--input", s(wdir), "--output", s(out), "--train"])
        .args(["--poll-ms", "10", "--idle-exit", "2", "-w", "2"])
        .args(sets)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// `reprocess --train` of `files` at once, then `watch --train` of the same files dropped in one
/// at a time (2 workers): the same stage outputs, metrics lines, losses, weights and optimiser
/// state. Returns the metrics of the reprocess.
fn watch_equals_reprocess(
    dir: &Path,
    p: &str,
    input: &Path,
    files: &[PathBuf],
    sets: &[String],
) -> Vec<serde_json::Value> {
    let once = dir.join(format!("once-{p}"));
    ok(&args(&["reprocess", &pipeline(p), "--input", s(input), "--output", s(&once), "--train"], sets));
    let m = metrics(&once);
    assert!(m[1..].iter().all(|x| x["updates"].as_u64() > Some(0)), "{p}: every update trained");
    let (wdir, out) = (dir.join(format!("w-{p}")), dir.join(format!("watched-{p}")));
    std::fs::create_dir_all(&wdir).unwrap();
    let mut child = watch(&pipeline(p), &wdir, &out, sets).spawn().unwrap();
    for f in files {
        let n = logged(&out);
        publish(f, &wdir);
        let start = Instant::now();
        while logged(&out) == n {
            assert!(start.elapsed() < Duration::from_secs(120), "{p}: watch did not ingest {}", f.display());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    assert!(child.wait().unwrap().success());
    assert_same_dataset(&once.join("trajectories"), &out.join("trajectories"));
    assert_eq!(last_weights(&once), last_weights(&out), "{p}: same weights and optimiser state");
    let w = metrics(&out);
    assert_eq!(w.len(), m.len());
    for (a, b) in m.iter().zip(&w) {
        assert_eq!(a["loss"], b["loss"], "{p}: same losses update by update");
    }
    m
}

#[test]
fn watch_one_file_at_a_time_trains_the_weights_of_reprocess_all_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let files = actor_files(&input, &[]);
    for p in ["loop.toml", "grpo.toml", "ppo.toml"] {
        // 16 groups close over 6 files; 3 per update: 5 updates (one group waits for more data).
        let m = watch_equals_reprocess(dir.path(), p, &input, &files, &sets(&[]));
        assert_eq!(m.len(), 6, "{p}: iteration 0 and 5 updates");
    }
}

/// The model steps of a graph run on each update's groups before its data stages, in both modes:
/// the discriminator (trained on every update's rows, then rewarding them), the implicit reward
/// model, and (ppo.toml above) the critic's values.
#[test]
fn watch_equals_reprocess_with_a_discriminator_and_an_implicit_reward_model() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let files = prefix_files(&input);
    for (p, trained) in [("stepagent_irl.toml", "discriminator_accuracy"), ("stepagent_implicit_ppo.toml", "pairs")] {
        let m = watch_equals_reprocess(dir.path(), p, &input, &files, &prefix_sets());
        assert!(m.len() >= 3, "{p}: at least two updates: {}", m.len());
        assert!(m[1..].iter().all(|x| x[trained].is_number()), "{p}: {trained} logged every update");
        // The rewards the stages saw are the reward model's, not the logged 0/1.
        let rows = read_sorted(&dir.path().join(format!("once-{p}")).join("trajectories"));
        let r = f32s(&rows, "reward");
        assert!(r.iter().any(|&x| x != 0.0 && x != 1.0), "{p}: rewards {r:?}");
    }
}

#[test]
fn watch_with_a_learner_killed_at_random_points_ends_with_the_weights_of_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let files = actor_files(&input, &[]);
    // Checkpointing every 2 updates makes a restart re-train the updates after the last one.
    let sets = sets(&["stream.checkpoint_every=2"]);
    let once = dir.path().join("once");
    ok(&args(&["reprocess", &pipeline("loop.toml"), "--input", s(&input), "--output", s(&once), "--train"], &sets));
    let mut restored = 0;
    for seed in [1u64, 2, 3] {
        let (wdir, out) = (dir.path().join(format!("w{seed}")), dir.path().join(format!("out{seed}")));
        std::fs::create_dir_all(&wdir).unwrap();
        let mut rng = trajflow::synth::SplitMix::new(seed);
        let before_kill = rng.range(1, FILES - 2);
        let snapshots = ["--snapshot-every", "1"];
        let mut child = watch(&pipeline("loop.toml"), &wdir, &out, &sets).args(snapshots).spawn().unwrap();
        for f in &files[..before_kill] {
            let n = logged(&out);
            publish(f, &wdir);
            let start = Instant::now();
            while logged(&out) == n {
                assert!(start.elapsed() < Duration::from_secs(120));
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // The next file, and SIGKILL at a random moment while it is ingested and trained on.
        publish(&files[before_kill], &wdir);
        std::thread::sleep(Duration::from_millis(rng.range(0, 400) as u64));
        child.kill().unwrap();
        child.wait().unwrap();
        for f in &files[before_kill + 1..] {
            publish(f, &wdir);
        }
        let restart = watch(&pipeline("loop.toml"), &wdir, &out, &sets).args(snapshots).stderr(Stdio::piped()).output();
        let restart = restart.unwrap();
        assert!(restart.status.success(), "{}", String::from_utf8_lossy(&restart.stderr));
        restored += String::from_utf8_lossy(&restart.stderr).contains("from its snapshot") as usize;
        assert_eq!(logged(&out), FILES, "seed {seed}: every file logged once");
        assert_same_dataset(&once.join("trajectories"), &out.join("trajectories"));
        assert_eq!(last_weights(&once), last_weights(&out), "seed {seed}: the weights of the uninterrupted run");
        let iterations: Vec<u64> = metrics(&out).iter().map(|m| m["iteration"].as_u64().unwrap()).collect();
        assert_eq!(iterations, (0..=5).collect::<Vec<_>>(), "seed {seed}: one metrics line per update");
    }
    assert!(restored > 0, "no restart restored the learner from a snapshot");
}

#[test]
fn stale_rows_are_dropped_or_down_weighted_and_late_groups_close_as_partial() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    // Row 1 (the second episode of task 0's group) never arrives: that group can only close as a
    // partial group, 5 files after its first row (file 0), i.e. after the last file.
    actor_files(&input, &[1]);
    // One group per update, so that the group closed last (the partial one) is trained too.
    let run = |name: &str, extra: &[&str]| {
        let sets = sets(&[extra, &["stream.groups_per_update=1"]].concat());
        let out = dir.path().join(name);
        ok(&args(&["reprocess", &pipeline("loop.toml"), "--input", s(&input), "--output", s(&out), "--train"], &sets));
        metrics(&out)
    };
    let stream = |m: &serde_json::Value, key: &str| m["stream"][key].as_u64().unwrap();
    // Every row was made by version 0; with max_staleness = 0 only update 1 (version 0) is fresh.
    let dropped = run("drop", &["stream.max_staleness=0", "stream.partial_after=5"]);
    assert!(dropped[1]["trained_tokens"].as_u64() > Some(0));
    assert_eq!(stream(&dropped[1], "stale_rows"), 0);
    for m in &dropped[2..] {
        assert_eq!(m["trained_tokens"], 0, "stale rows are not trained on");
        assert_eq!(stream(m, "stale_rows"), m["episodes"].as_u64().unwrap());
        assert!(m["stream"]["max_staleness"].as_i64() >= Some(1));
    }
    assert_eq!(dropped[1..].iter().map(|m| stream(m, "partial_groups")).sum::<u64>(), 1);
    let truncated = run("truncate", &["stream.max_staleness=0", "stream.stale=\"truncate\"", "stream.partial_after=5"]);
    for m in &truncated[2..] {
        assert!(m["trained_tokens"].as_u64() > Some(0), "down-weighted, still trained");
        assert_eq!(stream(m, "stale_rows"), m["episodes"].as_u64().unwrap());
    }
    // Without a timeout the incomplete group never closes: 15 complete groups, 15 updates.
    let waiting = run("wait", &[]);
    assert_eq!(waiting[1..].iter().map(|m| stream(m, "groups")).sum::<u64>(), 15);
    assert_eq!(waiting[1..].iter().map(|m| stream(m, "partial_groups")).sum::<u64>(), 0);
}

#[test]
fn two_processes_on_loopback_train_the_weights_of_one() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    actor_files(&input, &[]);
    let sets = sets(&[]);
    let one = dir.path().join("one");
    ok(&args(&["reprocess", &pipeline("loop.toml"), "--input", s(&input), "--output", s(&one), "--train"], &sets));
    let hosts = loopback_hosts(&dir.path().join("hosts.txt"), 2);
    let two = dir.path().join("two");
    let train = ["reprocess", &pipeline("loop.toml"), "--input", s(&input), "--output", s(&two), "--train"];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    run_processes(&[&train[..], &sets].concat(), 2, &hosts, Duration::from_secs(120));
    assert_same_dataset(&one.join("trajectories"), &two.join("trajectories"));
    assert_eq!(last_weights(&one), last_weights(&two));
}
