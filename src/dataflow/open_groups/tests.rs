use std::sync::Arc;

use arrow::array::{Float32Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use super::*;

fn rows(list: &[(&str, &str, f32)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("episode_id", DataType::Utf8, false),
        Field::new("group_id", DataType::Utf8, true),
        Field::new("reward", DataType::Float32, false),
    ]));
    let ids = StringArray::from(list.iter().map(|r| r.0).collect::<Vec<_>>());
    let groups = StringArray::from(list.iter().map(|r| r.1).collect::<Vec<_>>());
    let rewards = Float32Array::from(list.iter().map(|r| r.2).collect::<Vec<_>>());
    RecordBatch::try_new(schema, vec![Arc::new(ids), Arc::new(groups), Arc::new(rewards)]).unwrap()
}

/// (group, episode, reward) of `batch`, sorted.
fn cells(batch: &Option<RecordBatch>) -> Vec<(String, String, f32)> {
    let Some(b) = batch else { return Vec::new() };
    let (e, g) = (b.column(0).as_string::<i32>(), b.column(1).as_string::<i32>());
    let r = b.column(2).as_primitive::<arrow::datatypes::Float32Type>();
    let mut out: Vec<_> =
        (0..b.num_rows()).map(|i| (g.value(i).to_string(), e.value(i).to_string(), r.value(i))).collect();
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

fn cell(g: &str, e: &str, r: f32) -> (String, String, f32) {
    (g.into(), e.into(), r)
}

fn storage(dir: &Path) -> Storage {
    Storage { dir: dir.to_path_buf(), restore: None, snapshot_every: 0, seal_after: None }
}

fn open(storage: &Storage) -> Store {
    Store::open(storage, "baseline", Some("group_id".into())).unwrap()
}

/// Each epoch hands on the whole current rows of every group it touched: replaced rows, rows of
/// other episodes stored earlier, and the group an episode left.
#[test]
fn touched_groups_come_out_whole_with_rows_upserted() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&storage(dir.path()));
    let out = s.upsert(0, &[rows(&[("a1", "g1", 1.0), ("a2", "g1", 2.0), ("b1", "g2", 3.0)])]).unwrap();
    assert_eq!(cells(&out), [cell("g1", "a1", 1.0), cell("g1", "a2", 2.0), cell("g2", "b1", 3.0)]);
    // a2 sent again; a new group. g2 is untouched.
    let out = s.upsert(1, &[rows(&[("a2", "g1", 5.0), ("c1", "g3", 4.0)])]).unwrap();
    assert_eq!(cells(&out), [cell("g1", "a1", 1.0), cell("g1", "a2", 5.0), cell("g3", "c1", 4.0)]);
    // a1 moves to g2: both groups are touched. Two rows of one episode in one epoch: the later wins.
    let out = s.upsert(2, &[rows(&[("a1", "g2", 6.0)]), rows(&[("c2", "g3", 7.0), ("c2", "g3", 8.0)])]).unwrap();
    assert_eq!(
        cells(&out),
        [
            cell("g1", "a2", 5.0),
            cell("g2", "a1", 6.0),
            cell("g2", "b1", 3.0),
            cell("g3", "c1", 4.0),
            cell("g3", "c2", 8.0)
        ]
    );
    assert_eq!((s.episodes.len(), s.groups.len(), s.live), (5, 3, 5));
    // The last row of a group leaves it: the group is touched, comes out empty and is forgotten.
    let out = s.upsert(3, &[rows(&[("a2", "g2", 9.0)])]).unwrap();
    assert_eq!(cells(&out), [cell("g2", "a1", 6.0), cell("g2", "a2", 9.0), cell("g2", "b1", 3.0)]);
    assert!(!s.groups.contains_key(&stable_hash(b"g1")));
}

/// Rewriting the row file keeps every group's rows (and drops the superseded ones).
#[test]
fn rewriting_the_row_file_keeps_the_live_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&storage(dir.path()));
    for t in 0..20 {
        s.upsert(t, &[rows(&[("a", "g1", t as f32), ("b", "g2", 1.0), (&format!("n{t}"), "g3", 2.0)])]).unwrap();
    }
    let ids: Vec<u64> = ["g1", "g2", "g3"].iter().map(|g| stable_hash(g.as_bytes())).collect();
    let read = |s: &Store| {
        let mut all: Vec<_> = s.read_groups(&ids).unwrap().into_iter().flat_map(|(_, b)| cells(&Some(b))).collect();
        all.sort_by(|a, b| a.partial_cmp(b).unwrap());
        all
    };
    let before = read(&s);
    assert_eq!(before.len(), 22);
    let written = s.file.rows;
    s.rewrite().unwrap();
    assert_eq!(read(&s), before);
    assert_eq!((s.file.rows, s.generation), (22, 1), "was {written}");
    s.remove_unused_files().unwrap();
    assert!(!rows_path(dir.path(), "baseline", 0).exists() && rows_path(dir.path(), "baseline", 1).exists());
    // Appending after a rewrite goes on in the new file.
    let out = s.upsert(20, &[rows(&[("b", "g2", 3.0)])]).unwrap();
    assert_eq!(cells(&out), [cell("g2", "b", 3.0)]);
}

/// A store restored from the snapshot of epoch t, fed the epochs after t, hands on exactly what an
/// uninterrupted store does, even though the interrupted one appended (and rewrote) past t.
#[test]
fn a_store_restored_from_a_snapshot_continues_like_an_uninterrupted_one() {
    let epochs: Vec<Vec<RecordBatch>> = (0..12u64)
        .map(|t| {
            let list: Vec<(String, String, f32)> = (0..5)
                .map(|i| (format!("e{}", (t * 3 + i) % 17), format!("g{}", (t + i) % 4), (t * 10 + i) as f32))
                .collect();
            vec![rows(&list.iter().map(|(e, g, r)| (e.as_str(), g.as_str(), *r)).collect::<Vec<_>>())]
        })
        .collect();
    let whole = tempfile::tempdir().unwrap();
    let mut s = open(&storage(whole.path()));
    let expected: Vec<_> = epochs.iter().enumerate().map(|(t, b)| cells(&s.upsert(t as u64, b).unwrap())).collect();

    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&storage(dir.path()));
    for (t, b) in epochs.iter().enumerate().take(9) {
        s.upsert(t as u64, b).unwrap();
        if t == 3 || t == 6 {
            s.snapshot(t as u64).unwrap();
            s.remove_unused_files().unwrap();
        }
        if t == 7 {
            s.rewrite().unwrap();
        }
    }
    drop(s);
    assert!(snapshot_epochs(dir.path(), "baseline").is_empty(), "nothing is published before its parts are committed");
    publish_snapshots(dir.path(), |t| t <= 6).unwrap();
    assert_eq!(snapshot_epochs(dir.path(), "baseline"), [3, 6]);
    let mut s = open(&Storage { restore: Some(6), ..storage(dir.path()) });
    for (t, b) in epochs.iter().enumerate().skip(7) {
        assert_eq!(cells(&s.upsert(t as u64, b).unwrap()), expected[t], "epoch {t}");
    }
    assert_eq!(
        restorable(dir.path().parent().unwrap(), 1, &["baseline".into()], 100, |_| true),
        None,
        "no w0 directory"
    );
}

/// Restarts pick the latest epoch every worker has a snapshot of, at or before the last logged one.
#[test]
fn the_restart_epoch_is_the_latest_complete_logged_snapshot() {
    let state = tempfile::tempdir().unwrap();
    let touch = |w: usize, stage: &str, t: u64| {
        let dir = state.path().join(format!("w{w}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(snapshot_name(stage, t)), b"").unwrap();
    };
    let stages = ["a".to_string(), "b".to_string()];
    for (w, s, t) in
        [(0, "a", 99), (0, "b", 99), (1, "a", 99), (1, "b", 99), (0, "a", 199), (0, "b", 199), (1, "a", 199)]
    {
        touch(w, s, t);
    }
    assert_eq!(restorable(state.path(), 2, &stages, 500, |_| true), Some(99), "worker 1 has no snapshot 199 of b");
    touch(1, "b", 199);
    assert_eq!(restorable(state.path(), 2, &stages, 500, |_| true), Some(199));
    assert_eq!(restorable(state.path(), 2, &stages, 150, |_| true), Some(99), "epoch 199 is not logged yet");
    assert_eq!(restorable(state.path(), 1, &stages, 500, |_| true), None, "the worker count changed");
    assert_eq!(restorable(state.path(), 2, &stages, 500, |t| t < 150), Some(99), "the consumer's snapshot is older");
}

/// With a retention window, a group untouched for N epochs is sealed: its entries leave memory
/// and a later row for it is kept out; other groups go on.
#[test]
fn sealed_groups_leave_memory_and_keep_late_rows_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&Storage { seal_after: Some(2), ..storage(dir.path()) });
    s.upsert(0, &[rows(&[("a1", "g1", 1.0), ("a2", "g1", 2.0)])]).unwrap();
    s.upsert(1, &[rows(&[("b1", "g2", 1.0)])]).unwrap();
    let out = s.upsert(2, &[rows(&[("a3", "g1", 3.0), ("b2", "g2", 4.0)])]).unwrap();
    assert_eq!(cells(&out), [cell("g2", "b1", 1.0), cell("g2", "b2", 4.0)], "g1 closed at epoch 2");
    assert_eq!((s.late, s.episodes.len(), s.groups.len(), s.sealed.len()), (1, 2, 1, 1));
}

/// Memory per stored row, from the store's tables as allocated (hash-table buckets and control
/// bytes at their capacity), for the soak benchmark's files: 180 rows in 30 groups of 6, measured
/// between 40 and 400 files. The bound is 64 bytes per row; with a retention window only the
/// sealed groups' hashes remain, a few bytes per row.
#[test]
fn the_store_holds_under_64_bytes_per_row_and_a_few_with_a_retention_window() {
    let heap = |s: &Store| {
        s.episodes.capacity() * (std::mem::size_of::<(u64, u64)>() + 1)
            + s.groups.capacity() * (std::mem::size_of::<(u64, Run)>() + 1)
            + s.sealed.capacity() * (std::mem::size_of::<(u64, ())>() + 1)
            + s.by_touch.values().map(|v| v.capacity() * 8 + 24).sum::<usize>()
            + s.file.offsets.capacity() * 8
    };
    let per_row = |seal_after: Option<u64>| {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&Storage { seal_after, ..storage(dir.path()) });
        let mut at_40 = 0;
        for t in 0..400u64 {
            let list: Vec<(String, String, f32)> =
                (0..180).map(|i| (format!("f{t}-e{i}"), format!("f{t}-g{}", i / 6), i as f32)).collect();
            let batch = rows(&list.iter().map(|(e, g, r)| (e.as_str(), g.as_str(), *r)).collect::<Vec<_>>());
            s.upsert(t, &[batch]).unwrap();
            if t == 39 {
                at_40 = heap(&s);
            }
        }
        (heap(&s) - at_40) as f64 / (360.0 * 180.0)
    };
    let (open_forever, window) = (per_row(None), per_row(Some(10)));
    eprintln!("bytes per row: {open_forever:.1} (groups open forever), {window:.1} (sealed after 10 files)");
    assert!(open_forever <= 64.0, "{open_forever:.1} bytes per row");
    assert!(window <= 4.0, "{window:.1} bytes per row with a retention window");
}
