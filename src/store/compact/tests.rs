use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Float32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float32Type, Schema};

use super::*;

fn batch(ids: &[String], r: f32, with_note: bool) -> RecordBatch {
    let mut fields =
        vec![Field::new("episode_id", DataType::Utf8, false), Field::new("reward", DataType::Float32, false)];
    let mut columns: Vec<arrow::array::ArrayRef> =
        vec![Arc::new(StringArray::from(ids.to_vec())), Arc::new(Float32Array::from(vec![r; ids.len()]))];
    if with_note {
        fields.push(Field::new("note", DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from(vec![Some("n"); ids.len()])));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

/// The current rows as sorted (episode, reward, note) triples.
fn current(ds: &Dataset) -> Vec<(String, f32, Option<String>)> {
    let (batches, bad) = ds.read_latest(None, false).unwrap();
    assert!(bad.is_empty());
    let mut out = Vec::new();
    for b in batches {
        let ids = b.column_by_name("episode_id").unwrap().as_string::<i32>();
        let r = b.column_by_name("reward").unwrap().as_primitive::<Float32Type>();
        let note = b.column_by_name("note").map(|c| c.as_string::<i32>().clone());
        for i in 0..b.num_rows() {
            let n = note.as_ref().and_then(|n| n.is_valid(i).then(|| n.value(i).to_string()));
            out.push((ids.value(i).to_string(), r.value(i), n));
        }
    }
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

fn files(dir: &Path) -> usize {
    let part = fs::read_dir(dir).unwrap().count();
    part + fs::read_dir(dir.join(MANIFEST_DIR)).unwrap().count() - 1
}

/// 40 commits of 10 rows, every fourth rewriting earlier episodes, some with an extra nullable
/// column: compaction keeps the current rows exactly and leaves a handful of files.
fn dataset_with_upserts(dir: &Path) -> Dataset {
    let ds = Dataset::create(dir).unwrap();
    for e in 0..40u64 {
        let ids: Vec<String> = (0..10).map(|i| format!("e{}", if e % 4 == 3 { i * 3 } else { e * 10 + i })).collect();
        ds.append(&[batch(&ids, e as f32, e % 5 == 0)], e, "w0", "t.v1", vec![]).unwrap();
    }
    ds
}

#[test]
fn compaction_keeps_the_current_rows_and_merges_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset_with_upserts(dir.path());
    let before = current(&ds);
    assert_eq!(files(dir.path()), 80);
    let done = compact(&ds, u64::MAX, 100).unwrap();
    assert_eq!(current(&ds), before);
    assert_eq!(done.parts_merged, 40);
    assert_eq!(done.rows + done.superseded, 400);
    assert_eq!(done.rows as usize, before.len(), "superseded rows are left out");
    assert_eq!(files(dir.path()), done.parts_written + 1, "the merged parts and one record");
    assert!(done.parts_written >= 2, "{done:?}");
}

/// Only epochs ≤ `through` are merged; a part committed later for a compacted epoch (a writer
/// that was behind) is newer and wins; a second compaction carries full-sized parts over.
#[test]
fn later_parts_win_and_full_parts_are_carried_over() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset_with_upserts(dir.path());
    let first = compact(&ds, 29, 100).unwrap();
    assert_eq!(first.parts_merged, 30);
    let mut expected = current(&ds);
    ds.append(&[batch(&["e1".into()], 99.0, false)], 3, "w1", "t.v1", vec![]).unwrap();
    expected.retain(|r| r.0 != "e1");
    expected.push(("e1".into(), 99.0, None));
    expected.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(current(&ds), expected, "the late part of epoch 3 wins over the compacted rows");
    let carried: Vec<String> = ds.commits().unwrap().iter().filter(|c| c.rows >= 50).map(|c| c.part.clone()).collect();
    let second = compact(&ds, u64::MAX, 100).unwrap();
    assert_eq!(current(&ds), expected);
    let parts: Vec<String> = ds.commits().unwrap().into_iter().map(|c| c.part).collect();
    assert!(carried.iter().all(|p| parts.contains(p)), "full parts kept: {carried:?} in {parts:?}");
    assert_eq!(second.parts_merged, 10 + 1 + first.parts_written - carried.len());
}

/// A compaction interrupted after writing its record: the replaced records still present are
/// ignored by readers and deleted by the next compaction.
#[test]
fn an_interrupted_compaction_reads_right_and_is_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset_with_upserts(dir.path());
    let mdir = dir.path().join(MANIFEST_DIR);
    let saved: Vec<(std::path::PathBuf, Vec<u8>)> = fs::read_dir(&mdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .chain(ds.part_paths().unwrap())
        .map(|p| (p.clone(), fs::read(&p).unwrap()))
        .collect();
    let before = current(&ds);
    compact(&ds, u64::MAX, 1000).unwrap();
    for (p, bytes) in &saved {
        fs::write(p, bytes).unwrap();
    }
    assert_eq!(current(&ds), before, "replaced records are ignored while they remain");
    let done = compact(&ds, u64::MAX, 1000).unwrap();
    assert_eq!(done.leftovers, saved.len());
    assert_eq!(current(&ds), before);
    assert_eq!(files(dir.path()), 2);
}

#[test]
fn record_names_give_their_epochs() {
    assert_eq!(super::super::record_epochs("000000000007-w1-abc.json"), (7, 7));
    assert_eq!(super::super::record_epochs("000000000002-c000000000900-abc.json"), (2, 900));
    assert_eq!(super::super::record_epochs("odd.json"), (0, u64::MAX));
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset_with_upserts(dir.path());
    compact(&ds, 19, 1000).unwrap();
    let from: Vec<(u64, String)> = ds.commits_from(15).unwrap().into_iter().map(|c| (c.epoch, c.writer)).collect();
    assert_eq!(from[0], (19, "compact".to_string()), "the merged part stands for epochs 0-19: {from:?}");
    assert_eq!(from[1].0, 20);
    assert_eq!(ds.commits_from(25).unwrap().len(), 15);
}
