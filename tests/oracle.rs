//! Oracle tests: the same data must give bit-identical outputs whatever the execution —
//! 1 worker or 4, one process or two real processes on 127.0.0.1, files arriving one at a time
//! through `watch` or all at once through `reprocess`.

mod common;
use common::*;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PIPELINES: &[&str] =
    &["loop_advantages.toml", "grpo_advantages.toml", "poad_advantages.toml", "reinforce_pp_advantages.toml"];

#[test]
fn one_worker_equals_four_workers() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    interleaved_files(&input, 40, 5, 4, 7);
    for p in PIPELINES {
        let (a, b) = (dir.path().join(format!("{p}-w1")), dir.path().join(format!("{p}-w4")));
        ok(&["reprocess", &pipeline(p), "--input", s(&input), "--output", s(&a), "-w", "1"]);
        ok(&["reprocess", &pipeline(p), "--input", s(&input), "--output", s(&b), "-w", "4"]);
        assert_same_dataset(&a, &b);
    }
}

fn commits(dir: &Path) -> usize {
    trajflow::store::Dataset::open(dir).map(|d| d.commits().unwrap().len()).unwrap_or(0)
}

/// Files the ingest log of `out` holds.
fn ingested(out: &Path) -> usize {
    trajflow::dataflow::IngestLog::new(out).entries().map(|e| e.len()).unwrap_or(0)
}

/// Runs `watch` (with `extra` arguments) while copying `files` into its directory one at a time,
/// waiting for each file to be logged as ingested before dropping the next.
fn watch_one_by_one(
    p: &str,
    files: &[std::path::PathBuf],
    root: &Path,
    workers: &str,
    extra: &[&str],
) -> std::path::PathBuf {
    let (dir, out) = (root.join(format!("watch-{p}")), root.join(format!("watched-{p}")));
    std::fs::create_dir_all(&dir).unwrap();
    let n = files.len().to_string();
    let mut child = Command::new(bin())
        .args([
            "watch",
            &pipeline(p),
            "--input",
            s(&dir),
            "--output",
            s(&out),
            "--poll-ms",
            "20",
            "--max-files",
            &n,
            "-w",
            workers,
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for f in files {
        let before = ingested(&out);
        publish(f, &dir);
        let start = Instant::now();
        while ingested(&out) == before {
            assert!(start.elapsed() < Duration::from_secs(60), "watch did not commit {}", f.display());
            // It exits right after logging its last file.
            if child.try_wait().unwrap().is_some() && ingested(&out) == before {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                panic!("watch exited early: {err}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success());
    out
}

#[test]
fn watch_one_file_at_a_time_equals_reprocess_all_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    // Groups span files: every file adds rollouts to groups the earlier files started.
    let files = interleaved_files(&input, 12, 4, 4, 11);
    for p in PIPELINES {
        let once = dir.path().join(format!("once-{p}"));
        ok(&["reprocess", &pipeline(p), "--input", s(&input), "--output", s(&once), "-w", "2"]);
        let watched = watch_one_by_one(p, &files, dir.path(), "2", &[]);
        // The watch output has one commit group per file, and later ones supersede earlier rows.
        let uncompacted = commits(&watched);
        assert!(uncompacted >= files.len());
        assert_same_dataset(&once, &watched);
        // With snapshots, and compaction in the background as files arrive: the same rows.
        std::fs::remove_dir_all(&watched).unwrap();
        std::fs::remove_dir_all(dir.path().join(format!("watch-{p}"))).unwrap();
        let args = ["--snapshot-every", "3", "--compact-every", "2"];
        let compacted = watch_one_by_one(p, &files, dir.path(), "2", &args);
        assert_same_dataset(&once, &compacted);
        let manifest = std::fs::read_dir(compacted.join("_manifest")).unwrap().count();
        assert!(manifest < uncompacted, "{manifest} commit records, {uncompacted} without compaction");
    }
}

/// Two files in `input`: 10 groups of 4 rollouts, then one brand-new group of 3.
fn forty_then_three(input: &Path) -> Vec<std::path::PathBuf> {
    let spec = trajflow::synth::SynthSpec { groups: 10, group_size: 4, id_prefix: "old".into(), ..Default::default() };
    write_file(input, "a.parquet", &trajflow::synth::generate(&spec));
    let spec =
        trajflow::synth::SynthSpec { groups: 1, group_size: 3, id_prefix: "new".into(), seed: 5, ..Default::default() };
    write_file(input, "b.parquet", &trajflow::synth::generate(&spec));
    vec![input.join("a.parquet"), input.join("b.parquet")]
}

#[test]
fn watch_recomputes_only_the_groups_a_file_touches() {
    let dir = tempfile::tempdir().unwrap();
    let files = forty_then_three(&dir.path().join("in"));
    let out = watch_one_by_one("loop_advantages.toml", &files, dir.path(), "1", &[]);
    let ds = trajflow::store::Dataset::open(&out).unwrap();
    let rows_per_epoch: Vec<(u64, u64)> = ds.commits().unwrap().iter().map(|c| (c.epoch, c.rows)).collect();
    // Epoch 0 emits all 40 rows; epoch 1 only the 3 rows of the new group.
    assert_eq!(rows_per_epoch, vec![(0, 40), (1, 3)]);
}

/// A batch whitening under `watch` writes each file's own rows and records the statistic; the
/// dataset reads (and `export`s) as `reprocess` writes it, and is refused as plain input.
#[test]
fn watch_records_a_batch_whitening_instead_of_rewriting_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let files = forty_then_three(&input);
    let out = watch_one_by_one("poad_advantages.toml", &files, dir.path(), "1", &[]);
    let commits = trajflow::store::Dataset::open(&out).unwrap().commits().unwrap();
    let rows_per_epoch: Vec<(u64, u64)> = commits.iter().map(|c| (c.epoch, c.rows)).collect();
    assert_eq!(rows_per_epoch, vec![(0, 40), (1, 3)], "the second file's 3 rows only");
    let (w0, w1) = (commits[0].whitening.as_ref().unwrap(), commits[1].whitening.as_ref().unwrap());
    assert!(w1.moments.n > w0.moments.n, "the statistic grows with the data: {w0:?} then {w1:?}");

    let once = dir.path().join("once");
    ok(&["reprocess", &pipeline("poad_advantages.toml"), "--input", s(&input), "--output", s(&once)]);
    assert_same_dataset(&once, &out);
    // Compacted, the parts keep their raw values and the latest statistic: the same rows.
    let compacted = dir.path().join("compacted");
    copy_dir(&out, &compacted);
    let said = ok(&["compact", s(&compacted)]);
    assert!(said.contains("2 part(s) merged into 1"), "{said}");
    assert_same_dataset(&once, &compacted);
    let inspected = ok(&["inspect", s(&out), "--rows", "0"]);
    assert!(inspected.contains("'advantages' is stored before its whitening and whitened when read"), "{inspected}");

    // Other tools get the values as read through `export`: a plain file equal to reprocess's rows.
    let exported = dir.path().join("export").join("advantages.parquet");
    ok(&["export", s(&out), "--output", s(&exported)]);
    let plain = dir.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    std::fs::copy(&exported, plain.join("advantages.parquet")).unwrap();
    ok(&["reprocess", &pipeline("grpo_advantages.toml"), "--input", s(&plain), "--output", s(&dir.path().join("g"))]);
    let batches = trajflow::store::read_part(&exported, None).unwrap();
    let table = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let order = arrow::compute::sort_to_indices(table.column_by_name("episode_id").unwrap(), None, None).unwrap();
    let table = arrow::compute::take_record_batch(&table, &order).unwrap();
    assert_eq!(cells(&table), cells(&read_sorted(&once)));

    let err = fails(&["reprocess", &pipeline("grpo_advantages.toml"), "--input", s(&out), "--output", s(&plain)]);
    assert!(err.contains("before a deferred whitening") && err.contains("trajflow export"), "{err}");
    // One of its part files given alone is refused too.
    let part = out.join(&commits[1].part);
    let err = fails(&["reprocess", &pipeline("grpo_advantages.toml"), "--input", s(&part), "--output", s(&plain)]);
    assert!(err.contains("before a deferred whitening"), "{err}");
    // Exporting some columns (episode_id left out) gives just those, whitened.
    let only = dir.path().join("only.parquet");
    ok(&["export", s(&out), "--output", s(&only), "--columns", "advantages"]);
    let batches = trajflow::store::read_part(&only, None).unwrap();
    assert_eq!(batches[0].schema().fields().len(), 1);
    let whitened: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(whitened, 43);
}

/// Under `watch`, an episode sent again replaces its earlier row in a batch whitening's statistic:
/// the watched dataset reads as `reprocess` of the current episodes, with 1 or 2 workers, and with
/// a restart from a snapshot in between.
#[test]
fn a_resent_episode_replaces_its_row_in_a_deferred_whitening() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let first = [Ep::outcome("e1", "g", 1.0), Ep::outcome("e2", "g", 0.0), Ep::outcome("e3", "h", 0.5)];
    let update = [Ep::outcome("e2", "g", 2.0), Ep::outcome("e4", "h", -1.0)];
    let again = [Ep::outcome("e1", "g", -3.0)];
    write_file(&input, "a.parquet", &episodes_batch(&first));
    write_file(&input, "b.parquet", &episodes_batch(&update));
    write_file(&input, "c.parquet", &episodes_batch(&again));
    let files = vec![input.join("a.parquet"), input.join("b.parquet"), input.join("c.parquet")];
    let current = dir.path().join("current");
    let now = [again[0].clone(), update[0].clone(), first[2].clone(), update[1].clone()];
    write_file(&current, "c.parquet", &episodes_batch(&now));
    let direct = dir.path().join("direct");
    ok(&["reprocess", &pipeline("poad_advantages.toml"), "--input", s(&current), "--output", s(&direct)]);
    for workers in ["1", "2"] {
        let root = dir.path().join(format!("w{workers}"));
        let watched = watch_one_by_one("poad_advantages.toml", &files, &root, workers, &["--snapshot-every", "1"]);
        let wdir = root.join("watch-poad_advantages.toml");
        assert_same_dataset(&direct, &watched);
        // Restarted from its last snapshot with one more file: still the current episodes.
        let more = [Ep::outcome("e3", "h", 4.0)];
        write_file(&wdir, "d.parquet", &episodes_batch(&more));
        let p = pipeline("poad_advantages.toml");
        let out =
            trajflow(&["watch", &p, "--input", s(&wdir), "--output", s(&watched), "--idle-exit", "1", "-w", workers]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && said.contains("from its snapshot"), "{said}");
        let latest = [again[0].clone(), update[0].clone(), more[0].clone(), update[1].clone()];
        let current = root.join("current");
        write_file(&current, "c.parquet", &episodes_batch(&latest));
        let direct = root.join("direct");
        ok(&["reprocess", &pipeline("poad_advantages.toml"), "--input", s(&current), "--output", s(&direct)]);
        assert_same_dataset(&direct, &watched);
    }
}

/// A dataset written by `watch` keeps superseded rows (an episode sent again with a new reward, and
/// its group's rows written again); reprocessing it reads only its current rows, as reprocessing
/// the current episodes themselves.
#[test]
fn reprocessing_a_watched_dataset_reads_only_its_current_rows() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let first = [Ep::outcome("e1", "g", 1.0), Ep::outcome("e2", "g", 0.0), Ep::outcome("e3", "g", 0.0)];
    let update = [Ep::outcome("e2", "g", 1.0)];
    write_file(&input, "a.parquet", &episodes_batch(&first));
    write_file(&input, "b.parquet", &episodes_batch(&update));
    let files = vec![input.join("a.parquet"), input.join("b.parquet")];
    let watched = watch_one_by_one("grpo_advantages.toml", &files, dir.path(), "2", &[]);
    let current = dir.path().join("current");
    write_file(&current, "c.parquet", &episodes_batch(&[first[0].clone(), update[0].clone(), first[2].clone()]));
    // A local-only pipeline writes every row it reads: a superseded row would come out too.
    let returns = dir.path().join("returns.toml");
    std::fs::write(&returns, "name = \"r\"\n[[stage]]\nid = \"ret\"\nop = \"discounted_return\"\n").unwrap();
    for p in [pipeline("grpo_advantages.toml"), s(&returns).to_string()] {
        let (again, direct) = (dir.path().join("again"), dir.path().join("direct"));
        let _ = (std::fs::remove_dir_all(&again), std::fs::remove_dir_all(&direct));
        let out = ok(&["reprocess", &p, "--input", s(&watched), "--output", s(&again), "-w", "2"]);
        assert!(out.contains("3 input rows from 2 file(s) (3 superseded rows skipped) -> 3 rows"), "{out}");
        ok(&["reprocess", &p, "--input", s(&current), "--output", s(&direct), "-w", "2"]);
        let columns = |d: &Path| {
            let b = read_sorted(d);
            let keep: Vec<usize> = (0..b.num_columns()).filter(|&i| b.schema().field(i).name() != "keep").collect();
            cells(&b.project(&keep).unwrap())
        };
        assert_eq!(columns(&again), columns(&direct), "{p}");
    }
}

/// `watch` killed after the leader logged a file but before another worker committed its part of
/// that epoch (its commit record missing): the restart writes that part again from the replayed
/// state, so no row is lost.
#[test]
fn a_restart_writes_the_parts_another_worker_had_not_committed() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let files = interleaved_files(&input, 12, 4, 3, 5);
    let once = dir.path().join("once");
    ok(&["reprocess", &pipeline("loop_advantages.toml"), "--input", s(&input), "--output", s(&once)]);
    let out = watch_one_by_one("loop_advantages.toml", &files, dir.path(), "2", &[]);
    let manifest = out.join("_manifest");
    let mut records: Vec<String> = std::fs::read_dir(&manifest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("-w1-"))
        .collect();
    records.sort();
    std::fs::remove_file(manifest.join(records.last().expect("worker 1 committed parts"))).unwrap();
    // Killed before committing, worker 1 would not have published its snapshots either.
    let state = out.join("_state").join("w1");
    for entry in std::fs::read_dir(&state).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "snap") {
            std::fs::remove_file(path).unwrap();
        }
    }
    assert_ne!(cells(&read_sorted(&out)), cells(&read_sorted(&once)), "the missing part's rows are lost or stale");
    let wdir = dir.path().join("watch-loop_advantages.toml");
    let restart = ["watch", &pipeline("loop_advantages.toml"), "--input", s(&wdir), "--output", s(&out)];
    ok(&[&restart[..], &["--idle-exit", "1", "-w", "2"]].concat());
    assert_same_dataset(&once, &out);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let dest = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).unwrap();
        }
    }
}

#[test]
fn two_processes_on_loopback_equal_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    interleaved_files(&input, 30, 4, 3, 3);
    let hosts = loopback_hosts(&dir.path().join("hosts.txt"), 2);
    for p in ["loop_advantages.toml", "poad_advantages.toml"] {
        let (one, two) = (dir.path().join(format!("one-{p}")), dir.path().join(format!("two-{p}")));
        ok(&["reprocess", &pipeline(p), "--input", s(&input), "--output", s(&one), "-w", "1"]);
        let args = ["reprocess", &pipeline(p), "--input", s(&input), "--output", s(&two), "-w", "1"];
        run_processes(&args, 2, &hosts, Duration::from_secs(120));
        assert_same_dataset(&one, &two);
    }
}

#[test]
fn watch_killed_at_random_points_and_restarted_counts_every_file_exactly_once() {
    let mut restored = 0;
    // POAD's batch whitening is deferred: its statistic's index is snapshotted and restored too.
    let runs = [("loop_advantages.toml", 1u64), ("loop_advantages.toml", 2), ("loop_advantages.toml", 3)];
    for (p, seed) in runs.into_iter().chain([("poad_advantages.toml", 4), ("poad_advantages.toml", 5)]) {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        let files = interleaved_files(&input, 12, 4, 5, seed);
        let once = dir.path().join("once");
        ok(&["reprocess", &pipeline(p), "--input", s(&input), "--output", s(&once)]);
        let (wdir, out) = (dir.path().join("w"), dir.path().join("out"));
        std::fs::create_dir_all(&wdir).unwrap();
        let mut rng = trajflow::synth::SplitMix::new(seed);
        let before_kill = rng.range(1, 3);
        let watch = || {
            Command::new(bin())
                .args(["watch", &pipeline(p), "--input", s(&wdir), "--output", s(&out)])
                .args(["--poll-ms", "10", "--idle-exit", "2", "-w", "2", "--snapshot-every", "1"])
                .args(["--compact-every", "2"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let mut child = watch();
        for f in &files[..before_kill] {
            publish(f, &wdir);
            let (n, start) = (ingested(&out), Instant::now());
            while ingested(&out) == n {
                assert!(start.elapsed() < Duration::from_secs(60));
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // Drop the next file and SIGKILL the process at a random moment while it works on it.
        let f = &files[before_kill];
        publish(f, &wdir);
        std::thread::sleep(Duration::from_millis(rng.range(0, 60) as u64));
        child.kill().unwrap();
        child.wait().unwrap();
        // Restart with the rest of the files present; it exits once idle.
        for f in &files[before_kill + 1..] {
            publish(f, &wdir);
        }
        let restart = watch().wait_with_output().unwrap();
        assert!(restart.status.success());
        restored += String::from_utf8_lossy(&restart.stderr).contains("from its snapshot") as usize;
        assert_eq!(ingested(&out), files.len(), "seed {seed}: every file logged once");
        assert_same_dataset(&once, &out);
    }
    assert!(restored > 0, "no restart restored from a snapshot");
}
