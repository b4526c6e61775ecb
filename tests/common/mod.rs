//! Shared helpers for the integration tests: running the real binary, writing small datasets,
//! and reading outputs in a canonical order for comparisons.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use trajflow::store::{write_part, Dataset};

/// The `trajflow` binary built for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_trajflow"))
}

/// Publishes `f` in the watched directory `dir` atomically, as `trajflow append` does: copied
/// under a hidden name, then renamed (a plain copy can be seen empty under load, and rejected).
pub fn publish(f: &Path, dir: &Path) {
    let name = f.file_name().unwrap().to_string_lossy().into_owned();
    let hidden = dir.join(format!(".{name}.tmp"));
    std::fs::copy(f, &hidden).unwrap();
    std::fs::rename(&hidden, dir.join(name)).unwrap();
}

/// A hostfile for `processes` processes on 127.0.0.1 (free ports), written to `path`.
pub fn loopback_hosts(path: &Path, processes: usize) -> PathBuf {
    let port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let lines: String = (0..processes).map(|_| format!("127.0.0.1:{}\n", port())).collect();
    std::fs::write(path, lines).unwrap();
    path.to_path_buf()
}

/// Runs `args` as processes `0..processes` of a cluster on 127.0.0.1 (`--processes`,
/// `--process-id`, `--hostfile` appended) and waits for all; a failure or a run over `limit`
/// fails the test (the processes are killed).
pub fn run_processes(args: &[&str], processes: usize, hosts: &Path, limit: std::time::Duration) {
    let start = std::time::Instant::now();
    let mut children: Vec<std::process::Child> = (0..processes)
        .map(|i| {
            Command::new(bin())
                .args(args)
                .args(["--processes", &processes.to_string(), "--process-id", &i.to_string()])
                .args(["--hostfile", hosts.to_str().unwrap()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for i in 0..children.len() {
        loop {
            if let Some(status) = children[i].try_wait().unwrap() {
                assert!(status.success(), "process {i} failed");
                break;
            }
            if start.elapsed() > limit {
                children.iter_mut().for_each(|c| drop(c.kill()));
                panic!("processes did not finish within {limit:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Runs the binary with `args`.
pub fn trajflow(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("the binary runs")
}

/// Runs the binary and asserts success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = trajflow(args);
    assert!(out.status.success(), "trajflow {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the binary and asserts failure; returns stderr.
pub fn fails(args: &[&str]) -> String {
    let out = trajflow(args);
    assert!(
        !out.status.success(),
        "trajflow {args:?} unexpectedly succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The metrics lines of a run directory.
pub fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The repository's pipelines directory.
pub fn pipeline(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines").join(name).display().to_string()
}

/// Path as &str.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("temp paths are utf8")
}

/// Writes `batch` as a plain Parquet file `dir/name`.
pub fn write_file(dir: &Path, name: &str, batch: &RecordBatch) {
    std::fs::create_dir_all(dir).unwrap();
    write_part(dir, name, std::slice::from_ref(batch), "trajectory.v1").unwrap();
}

/// A synthetic dataset whose groups are spread over `files` plain Parquet files (row i goes to
/// file i % files), so that later files add rollouts to groups that earlier files started.
pub fn interleaved_files(dir: &Path, groups: usize, group_size: usize, files: usize, seed: u64) -> Vec<PathBuf> {
    let spec = trajflow::synth::SynthSpec { groups, group_size, seed, ..Default::default() };
    let batch = trajflow::synth::generate(&spec);
    (0..files)
        .map(|f| {
            let idx: Vec<u32> = (0..batch.num_rows() as u32).filter(|i| *i as usize % files == f).collect();
            let part = arrow::compute::take_record_batch(&batch, &arrow::array::UInt32Array::from(idx)).unwrap();
            let name = format!("rollouts-{f:03}.parquet");
            write_file(dir, &name, &part);
            dir.join(name)
        })
        .collect()
}

/// The current rows of a dataset (latest per episode), sorted by episode_id, columns by name.
pub fn read_sorted(dir: &Path) -> RecordBatch {
    let (batches, bad) = Dataset::open(dir).unwrap().read_latest(None, false).unwrap();
    assert!(bad.is_empty());
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let ids = batch.column_by_name("episode_id").unwrap();
    let order = arrow::compute::sort_to_indices(ids, None, None).unwrap();
    arrow::compute::take_record_batch(&batch, &order).unwrap()
}

/// Renders every cell (floats in shortest round-trip form, so equal strings = equal bits, NaN
/// included) for exact comparisons.
pub fn cells(batch: &RecordBatch) -> Vec<(String, Vec<String>)> {
    let opts = FormatOptions::default().with_null("null");
    let mut names: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let col = batch.column_by_name(&n).unwrap();
            let f = ArrayFormatter::try_new(col.as_ref(), &opts).unwrap();
            let v = (0..col.len()).map(|i| f.value(i).to_string()).collect();
            (n, v)
        })
        .collect()
}

/// Asserts two datasets hold identical rows (bit-exact), whatever their part layout.
pub fn assert_same_dataset(a: &Path, b: &Path) {
    let (x, y) = (cells(&read_sorted(a)), cells(&read_sorted(b)));
    assert_eq!(x.len(), y.len(), "different columns");
    for ((na, va), (nb, vb)) in x.iter().zip(&y) {
        assert_eq!(na, nb);
        assert_eq!(va.len(), vb.len(), "column {na}: different row counts");
        for (i, (p, q)) in va.iter().zip(vb).enumerate() {
            assert_eq!(p, q, "column {na}, row {i} differs");
        }
    }
}

/// A float32 column as a Vec.
pub fn f32s(batch: &RecordBatch, name: &str) -> Vec<f32> {
    batch.column_by_name(name).unwrap().as_primitive::<arrow::datatypes::Float32Type>().values().to_vec()
}

/// A list<float32> column as nested Vecs.
pub fn f32_lists(batch: &RecordBatch, name: &str) -> Vec<Vec<f32>> {
    let l = batch.column_by_name(name).unwrap().as_list::<i32>();
    (0..l.len()).map(|i| l.value(i).as_primitive::<arrow::datatypes::Float32Type>().values().to_vec()).collect()
}

/// Builds a one-column array reference.
pub fn arc<A: Array + 'static>(a: A) -> ArrayRef {
    Arc::new(a)
}

/// A hand-written episode for golden tests.
#[derive(Clone, Debug)]
pub struct Ep {
    pub id: &'static str,
    pub group: &'static str,
    pub reward: f32,
    pub segments: Vec<u8>,
    pub turns: Vec<i32>,
    pub turn_rewards: Vec<f32>,
    pub values: Vec<f32>,
    pub truncated: bool,
    pub bootstrap: Option<f32>,
}

impl Ep {
    /// An episode with only an outcome (one 1-token action), for baseline tests.
    pub fn outcome(id: &'static str, group: &'static str, reward: f32) -> Ep {
        Ep {
            id,
            group,
            reward,
            segments: vec![0, 1],
            turns: vec![0, 0],
            turn_rewards: vec![reward],
            values: vec![0.0, 0.0],
            truncated: false,
            bootstrap: None,
        }
    }
}

fn list_of<T: arrow::datatypes::ArrowPrimitiveType>(rows: Vec<Vec<T::Native>>) -> ArrayRef {
    Arc::new(arrow::array::ListArray::from_iter_primitive::<T, _, _>(
        rows.into_iter().map(|r| Some(r.into_iter().map(Some))),
    ))
}

/// The episodes as a batch in the trajectory schema (columns not given are null/defaults).
pub fn episodes_batch(eps: &[Ep]) -> RecordBatch {
    use arrow::array::*;
    use arrow::datatypes::*;
    let schema = trajflow::schema::TableSchema::trajectory().to_arrow();
    let n = eps.len();
    let cols: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            match f.name().as_str() {
                "episode_id" => arc(StringArray::from_iter_values(eps.iter().map(|e| e.id))),
                "task_id" | "group_id" => arc(StringArray::from_iter_values(eps.iter().map(|e| e.group))),
                "policy_version" => arc(Int64Array::from(vec![0; n])),
                "tokens" => list_of::<Int32Type>(eps.iter().map(|e| (0..e.segments.len() as i32).collect()).collect()),
                "segments" => list_of::<UInt8Type>(eps.iter().map(|e| e.segments.clone()).collect()),
                "turns" => list_of::<Int32Type>(eps.iter().map(|e| e.turns.clone()).collect()),
                "values" => list_of::<Float32Type>(eps.iter().map(|e| e.values.clone()).collect()),
                "logp_behavior" => list_of::<Float32Type>(eps.iter().map(|e| vec![-1.0; e.segments.len()]).collect()),
                "turn_rewards" => list_of::<Float32Type>(eps.iter().map(|e| e.turn_rewards.clone()).collect()),
                "reward" => arc(Float32Array::from_iter_values(eps.iter().map(|e| e.reward))),
                "terminated" => arc(BooleanArray::from_iter(eps.iter().map(|e| Some(!e.truncated)))),
                "truncated" => arc(BooleanArray::from_iter(eps.iter().map(|e| Some(e.truncated)))),
                "bootstrap_value" => arc(Float32Array::from_iter(eps.iter().map(|e| e.bootstrap))),
                _ => new_null_array(f.data_type(), n),
            }
        })
        .collect();
    RecordBatch::try_new(schema, cols).unwrap()
}

/// Writes `eps` as one file, runs `pipeline_toml` (text) over it, and returns the output rows
/// sorted by episode_id.
pub fn run_pipeline_on(eps: &[Ep], pipeline_toml: &str, workers: usize) -> RecordBatch {
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir.path().join("in"), "eps.parquet", &episodes_batch(eps));
    let p = dir.path().join("p.toml");
    std::fs::write(&p, pipeline_toml).unwrap();
    let w = workers.to_string();
    ok(&["reprocess", s(&p), "--input", s(&dir.path().join("in")), "--output", s(&dir.path().join("out")), "-w", &w]);
    read_sorted(&dir.path().join("out"))
}
