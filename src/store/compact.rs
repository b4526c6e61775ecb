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

use super::{
    laid_out, nonce, part, read_part, union_schema, without_episodes, Commit, Compaction, Dataset, PartReader,
    PartWriter, Record, MANIFEST_DIR,
};
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
        Record::Compaction(c) => {
            (c.compacted.iter().map(|c| c.epoch).max().unwrap_or(0), c.compacted.iter().any(|c| c.whitening.is_some()))
        }
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
    let schemas = commits
        .iter()
        .map(|c| PartReader::open(&dataset.dir().join(&c.part)).map(|r| r.schema()))
        .collect::<Result<Vec<_>>>()?;
    let schema = union_schema(&schemas)?;
    let (stamp, tag) = (nonce(), commits[0].schema.clone());
    let whitening = commits.iter().rev().find_map(|c| c.whitening.clone());
    let mut compacted: Vec<Commit> = Vec::new();
    // The part being written (rows stream through it: memory holds one input part at a time).
    let mut open: Option<PartWriter> = None;
    let mut written = 0usize;
    let close = |open: &mut Option<PartWriter>, epoch: u64, compacted: &mut Vec<Commit>| -> Result<()> {
        let Some(w) = open.take() else { return Ok(()) };
        let part = w.name().to_string();
        let rows = w.finish()?;
        let (writer, schema, whitening) = ("compact".to_string(), tag.clone(), whitening.clone());
        compacted.push(Commit { part, rows, epoch, writer, schema, sources: Vec::new(), whitening });
        Ok(())
    };
    let mut epoch_held = first_epoch;
    for c in &commits {
        // A part an earlier compaction wrote full-sized is kept as it is, in its place.
        if c.writer == "compact" && c.rows as usize >= target_rows / 2 {
            close(&mut open, epoch_held, &mut compacted)?;
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
            if kept.num_rows() == 0 {
                continue;
            }
            if open.is_none() {
                let name = format!("part-{first_epoch:012}-c-{stamp}-{written:05}.parquet");
                open = Some(PartWriter::create(dataset.dir(), &name, schema.clone(), &tag)?);
                written += 1;
            }
            open.as_mut().expect("just opened").write(&laid_out(&kept, &schema)?)?;
        }
        epoch_held = c.epoch;
        if open.as_ref().is_some_and(|w| w.rows() as usize >= target_rows) {
            close(&mut open, epoch_held, &mut compacted)?;
        }
    }
    close(&mut open, epoch_held, &mut compacted)?;
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
    let files = record
        .replaces
        .iter()
        .map(|n| mdir.join(n))
        .chain(record.replaced_parts.iter().filter(|p| !kept.contains(p.as_str())).map(|p| dataset.dir().join(p)));
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
