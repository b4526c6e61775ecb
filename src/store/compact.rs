//! Compaction: many small parts and their commit records merged into a few large parts under one
//! compaction record, without losing a row or showing readers a half-done state.
//!
//! Invariants:
//! - What is merged is the records of epochs ≤ `through` (for a `watch` output, the last epoch
//!   its ingest log holds: later epochs may still be being written), from the first one on, as
//!   long as they agree on whether a whitening is deferred (the readers' whitening applies to
//!   parts that store raw values only). Rows a later commit supersedes are left out; the rest keep
//!   their commit order.
//! - The merged parts are written first (invisible: no record names them), then the compaction
//!   record, atomically, named `<first epoch>-c<last epoch>-<nonce>.json` so that it sorts where
//!   the first record it replaces sorted and before any part a writer commits later for those
//!   epochs (a late part is newer, and must win). A reader that lists the manifest sees either
//!   the old records or the compaction record, which names the records it replaces; those are
//!   ignored until deleted, then their parts are deleted. A crash at any point leaves either the
//!   old state or the new one plus leftovers that the next compaction deletes.
//! - A part an earlier compaction wrote with at least half the target's rows is carried over as
//!   it is (superseded rows in it stay, skipped by readers), so repeated compactions of a growing
//!   dataset rewrite only its new small parts.
//! - Readers that listed the manifest before a compaction and open a deleted part retry from a
//!   fresh listing ([`super::Dataset::read_latest`]).

use std::collections::HashSet;
use std::fs;

use arrow::array::RecordBatch;

use super::{aligned, nonce, part, read_part, without_episodes, Commit, Compaction, Dataset, Record, MANIFEST_DIR};
use crate::error::{Error, Result};

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Compacted {
    /// Parts merged.
    pub parts_merged: usize,
    /// Parts written.
    pub parts_written: usize,
    /// Rows written.
    pub rows: u64,
    /// Superseded rows left out.
    pub superseded: u64,
    /// Records and parts of an interrupted earlier compaction deleted.
    pub leftovers: usize,
}

/// Compacts the records of `dataset` of epochs ≤ `through` into parts of about `target_rows` rows
/// (see the module docs).
pub fn compact(dataset: &Dataset, through: u64, target_rows: usize) -> Result<Compacted> {
    let mut done = Compacted { leftovers: delete_leftovers(dataset)?, ..Compacted::default() };
    let records = dataset.records_from(0)?;
    let kind = |r: &Record| match r {
        Record::Commit(c) => (c.epoch, c.whitening.is_some()),
        Record::Compaction(c) => (c.compacted.iter().map(|c| c.epoch).max().unwrap_or(0), c.compacted[0].whitening.is_some()),
    };
    let Some(first) = records.first().map(|(_, r)| kind(r).1) else { return Ok(done) };
    let selected: Vec<&(String, Record)> =
        records.iter().take_while(|(_, r)| kind(r).0 <= through && kind(r).1 == first).collect();
    let commits: Vec<&Commit> = selected
        .iter()
        .flat_map(|(_, r)| match r {
            Record::Commit(c) => vec![c],
            Record::Compaction(c) => c.compacted.iter().collect(),
        })
        .collect();
    if commits.len() < 2 {
        return Ok(done);
    }
    let gone = dataset.superseded()?;
    let first_epoch = commits.iter().map(|c| c.epoch).min().unwrap_or(0);
    let last_epoch = commits.iter().map(|c| c.epoch).max().unwrap_or(0);
    let stamp = nonce();
    let mut compacted: Vec<Commit> = Vec::new();
    let mut batches: Vec<RecordBatch> = Vec::new();
    let mut rows_held = 0usize;
    let mut epoch_held = first_epoch;
    let flush = |batches: &mut Vec<RecordBatch>, epoch: u64, compacted: &mut Vec<Commit>| -> Result<()> {
        if batches.iter().all(|b| b.num_rows() == 0) {
            batches.clear();
            return Ok(());
        }
        let name = format!("part-{first_epoch:012}-c-{stamp}-{:05}.parquet", compacted.len());
        let tag = commits[0].schema.clone();
        let rows = part::write_part(dataset.dir(), &name, &aligned(batches)?, &tag)?;
        let whitening = commits.iter().rev().find_map(|c| c.whitening.clone());
        compacted.push(Commit {
            part: name,
            rows,
            epoch,
            writer: "compact".into(),
            schema: tag,
            sources: Vec::new(),
            whitening,
        });
        batches.clear();
        Ok(())
    };
    for c in &commits {
        // A part an earlier compaction wrote full-sized is kept as it is, in its place.
        if c.writer == "compact" && c.rows as usize >= target_rows / 2 {
            flush(&mut batches, epoch_held, &mut compacted)?;
            rows_held = 0;
            compacted.push((*c).clone());
            continue;
        }
        let path = dataset.dir().join(&c.part);
        for b in read_part(&path, None)? {
            let kept = match gone.get(&path) {
                Some(ids) => without_episodes(&path, &b, ids)?,
                None => b.clone(),
            };
            done.superseded += (b.num_rows() - kept.num_rows()) as u64;
            done.rows += kept.num_rows() as u64;
            rows_held += kept.num_rows();
            batches.push(kept);
        }
        epoch_held = c.epoch;
        if rows_held >= target_rows {
            flush(&mut batches, epoch_held, &mut compacted)?;
            rows_held = 0;
        }
    }
    flush(&mut batches, epoch_held, &mut compacted)?;
    let sources: Vec<String> = commits.iter().flat_map(|c| c.sources.iter().cloned()).collect();
    if let Some(first) = compacted.first_mut() {
        first.sources = sources;
    }
    let record = Compaction {
        replaces: selected.iter().map(|(n, _)| n.clone()).collect(),
        replaced_parts: commits.iter().map(|c| c.part.clone()).collect(),
        compacted,
    };
    let carried: HashSet<&str> = commits.iter().filter(|c| c.writer == "compact").map(|c| c.part.as_str()).collect();
    done.parts_merged = commits.iter().filter(|c| !record.compacted.iter().any(|k| k.part == c.part)).count();
    done.parts_written = record.compacted.iter().filter(|c| !carried.contains(c.part.as_str())).count();
    let json = serde_json::to_vec(&Record::Compaction(record.clone())).expect("a compaction record serialises");
    let name = format!("{first_epoch:012}-c{last_epoch:012}-{stamp}.json");
    part::write_atomically(&dataset.dir().join(MANIFEST_DIR), &name, &json)?;
    delete_replaced(dataset, &record)?;
    Ok(done)
}

/// Deletes what `record` replaces: its records, then their parts. Returns how many files went.
fn delete_replaced(dataset: &Dataset, record: &Compaction) -> Result<usize> {
    let mdir = dataset.dir().join(MANIFEST_DIR);
    let kept: HashSet<&str> = record.compacted.iter().map(|c| c.part.as_str()).collect();
    let files = record.replaces.iter().map(|n| mdir.join(n)).chain(
        record.replaced_parts.iter().filter(|p| !kept.contains(p.as_str())).map(|p| dataset.dir().join(p)),
    );
    let mut deleted = 0;
    for path in files {
        match fs::remove_file(&path) {
            Ok(()) => deleted += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
    Ok(deleted)
}

/// Deletes what the compaction records in the manifest replace and is still there (an earlier
/// compaction interrupted after writing its record).
fn delete_leftovers(dataset: &Dataset) -> Result<usize> {
    let mut deleted = 0;
    for (_, record) in dataset.records_from(0)? {
        if let Record::Compaction(c) = record {
            deleted += delete_replaced(dataset, &c)?;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests;
