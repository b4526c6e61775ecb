//! Under `watch`, the rows of a grouped stage live on disk, not in memory: each worker appends the
//! current rows of the groups an epoch touched to its own row file, and holds only where each
//! group's rows are and which group each episode belongs to.
//!
//! ```text
//! routed rows of epoch t ─► once t is complete: for every touched group, its stored rows (read
//!                            back from the row file) with the epoch's rows upserted
//!                         ─► appended to the row file as one segment (a group's rows contiguous)
//!                         ─► emitted at t: the grouped stage sees each touched group whole
//! ```
//! Invariants:
//! - The grouped stage after this operator treats every epoch as its own dataset (`per_epoch`):
//!   it is handed, at epoch t, the complete current rows of every group t touched, so its
//!   differential state covers open epochs only and every summary is computed from the group's
//!   contributions in sorted order, bit-identical to `reprocess` over the same files.
//! - Rows are upserts keyed by `episode_id`: a row that arrives again replaces the stored one (the
//!   later of two in one epoch wins); one that arrives with another group leaves its old group,
//!   which is touched too.
//! - Memory per stored row is one entry of `episodes` (hash of the episode id -> hash of its
//!   group); per group, one [`Run`]. Episode and group ids are identified by 64-bit hashes: reading
//!   a group back checks that its rows carry the group's id, so a collision of two group ids is an
//!   error, never a silent merge; rows are matched by their full `episode_id` when upserted.
//! - The row file is private to the worker and rebuilt from the ingest log on a restart; once
//!   more than half of its rows are superseded it is rewritten with the live groups only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use super::batch::Batch;
use super::cluster::stable_hash;
use super::grouped::Routed;
use super::ErrorSlot;
use crate::error::{Error, Result};
use crate::pipeline::Plan;
use crate::stages::Operator as Op;

/// Where a group's current rows are: `len` rows from `start` of segment `segment`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Run {
    segment: u32,
    start: u32,
    len: u32,
}

/// An append-only file of Arrow IPC segments (each a complete stream of one batch).
struct RowFile {
    path: PathBuf,
    file: File,
    /// Start offset of every segment; the file's length ends the last one.
    offsets: Vec<u64>,
    len: u64,
    /// Rows written, live or superseded.
    rows: u64,
}

impl RowFile {
    /// Creates (truncating) the row file at `path`.
    fn create(path: PathBuf) -> Result<RowFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(RowFile { path, file, offsets: Vec::new(), len: 0, rows: 0 })
    }

    /// Appends `rows` as a new segment; returns its index.
    fn append(&mut self, rows: &RecordBatch) -> Result<u32> {
        let io = |e: std::io::Error| Error::io(&self.path, e);
        (&self.file).seek(SeekFrom::Start(self.len)).map_err(io)?;
        let mut out = BufWriter::new(&self.file);
        {
            let mut w = StreamWriter::try_new(&mut out, &rows.schema())?;
            w.write(rows)?;
            w.finish()?;
        }
        out.flush().map_err(io)?;
        drop(out);
        let end = (&self.file).stream_position().map_err(io)?;
        self.offsets.push(self.len);
        self.len = end;
        self.rows += rows.num_rows() as u64;
        Ok((self.offsets.len() - 1) as u32)
    }

    /// Reads segment `segment` back.
    fn read(&self, segment: u32) -> Result<RecordBatch> {
        let s = segment as usize;
        let (start, end) = (self.offsets[s], self.offsets.get(s + 1).copied().unwrap_or(self.len));
        let mut bytes = vec![0u8; (end - start) as usize];
        self.file.read_exact_at(&mut bytes, start).map_err(|e| Error::io(&self.path, e))?;
        let mut reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
        let batch = reader.next().ok_or_else(|| Error::file(&self.path, format!("segment {s} is empty")))?;
        Ok(batch?)
    }
}

/// The stored rows of one worker's groups for one grouped stage.
struct Store {
    stage: String,
    group_column: Option<String>,
    file: RowFile,
    groups: HashMap<u64, Run>,
    episodes: HashMap<u64, u64>,
    live: u64,
}

/// The group key of every row of `rows` (`""` for a whole-dataset group or a null).
fn keys(column: Option<&str>, rows: &RecordBatch, stage: &str) -> Result<Vec<String>> {
    let Some(name) = column else { return Ok(vec![String::new(); rows.num_rows()]) };
    let col = rows
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| Error::stage(stage, format!("group column '{name}' is missing or not utf8")))?;
    Ok((0..col.len()).map(|i| if col.is_valid(i) { col.value(i).to_string() } else { String::new() }).collect())
}

impl Store {
    /// Upserts the rows of one epoch and returns the current rows of every group they touch.
    fn upsert(&mut self, arrived: &[RecordBatch]) -> Result<Option<RecordBatch>> {
        let Some(first) = arrived.first() else { return Ok(None) };
        let new = arrow::compute::concat_batches(&first.schema(), arrived)
            .map_err(|e| Error::stage(&self.stage, format!("rows of one epoch differ in layout: {e}")))?;
        let groups = keys(self.group_column.as_deref(), &new, &self.stage)?;
        let ids = super::batch::episode_ids(&new);
        // The later of two rows of one episode wins.
        let mut latest: HashMap<&str, usize> = HashMap::new();
        for (r, id) in ids.iter().enumerate() {
            latest.insert(id, r);
        }
        // Per touched group (by hash): its id (unless only an episode left it) and the rows it gains.
        let mut touched: BTreeMap<u64, (Option<&str>, Vec<usize>)> = BTreeMap::new();
        let mut rows: Vec<usize> = latest.values().copied().collect();
        rows.sort_unstable();
        for &r in &rows {
            let g = stable_hash(groups[r].as_bytes());
            let entry = touched.entry(g).or_default();
            entry.0 = Some(&groups[r]);
            entry.1.push(r);
            // An episode that moves leaves its old group, which is touched too.
            if let Some(&old) = self.episodes.get(&stable_hash(ids[r].as_bytes())) {
                touched.entry(old).or_default();
            }
        }
        // Read each touched group's stored rows, one decode per segment.
        let mut by_segment: BTreeMap<u32, Vec<(u64, Run)>> = BTreeMap::new();
        for g in touched.keys() {
            if let Some(run) = self.groups.get(g) {
                by_segment.entry(run.segment).or_default().push((*g, *run));
            }
        }
        let mut sources: Vec<RecordBatch> = vec![new.clone()];
        let mut stored: HashMap<u64, usize> = HashMap::new();
        for (segment, runs) in by_segment {
            let batch = self.file.read(segment)?;
            for (g, run) in runs {
                stored.insert(g, sources.len());
                sources.push(batch.slice(run.start as usize, run.len as usize));
            }
        }
        // A stored row of an episode that arrived again is replaced (or has left for another group).
        let replaced: HashSet<&str> = latest.keys().copied().collect();
        let mut picks: Vec<(usize, usize)> = Vec::new();
        let mut runs: Vec<(u64, u32, u32)> = Vec::new();
        for (g, (name, gained)) in &touched {
            let start = picks.len() as u32;
            if let Some(&s) = stored.get(g) {
                let old = &sources[s];
                let old_groups = keys(self.group_column.as_deref(), old, &self.stage)?;
                let expected = name.map(str::to_string).unwrap_or_else(|| old_groups.first().cloned().unwrap_or_default());
                if let Some(other) = old_groups.iter().find(|k| **k != expected) {
                    return Err(Error::stage(
                        &self.stage,
                        format!("groups '{expected}' and '{other}' have the same 64-bit hash; rename one"),
                    ));
                }
                for (r, id) in super::batch::episode_ids(old).iter().enumerate() {
                    if !replaced.contains(id.as_str()) {
                        picks.push((s, r));
                    }
                }
            }
            picks.extend(gained.iter().map(|&r| (0, r)));
            runs.push((*g, start, picks.len() as u32 - start));
        }
        for &r in &rows {
            self.episodes.insert(stable_hash(ids[r].as_bytes()), stable_hash(groups[r].as_bytes()));
        }
        if picks.is_empty() {
            for (g, _, _) in runs {
                self.drop_group(g);
            }
            return Ok(None);
        }
        let refs: Vec<&RecordBatch> = sources.iter().collect();
        let out = arrow::compute::interleave_record_batch(&refs, &picks)?;
        let segment = self.file.append(&out)?;
        for (g, start, len) in runs {
            self.drop_group(g);
            if len > 0 {
                self.groups.insert(g, Run { segment, start, len });
                self.live += len as u64;
            }
        }
        if self.file.rows > 2 * self.live + 100_000 {
            self.rewrite()?;
        }
        Ok(Some(out))
    }

    fn drop_group(&mut self, g: u64) {
        if let Some(run) = self.groups.remove(&g) {
            self.live -= run.len as u64;
        }
    }

    /// Rewrites the row file with the live groups only (segment by segment, in order).
    fn rewrite(&mut self) -> Result<()> {
        let path = self.file.path.clone();
        let tmp = path.with_extension("rewrite");
        let mut fresh = RowFile::create(tmp.clone())?;
        let mut by_segment: BTreeMap<u32, Vec<(u64, Run)>> = BTreeMap::new();
        for (g, run) in &self.groups {
            by_segment.entry(run.segment).or_default().push((*g, *run));
        }
        for (segment, mut runs) in by_segment {
            runs.sort_by_key(|(_, r)| r.start);
            let batch = self.file.read(segment)?;
            let parts: Vec<RecordBatch> =
                runs.iter().map(|(_, r)| batch.slice(r.start as usize, r.len as usize)).collect();
            let rows = arrow::compute::concat_batches(&batch.schema(), &parts)?;
            let new_segment = fresh.append(&rows)?;
            let mut start = 0;
            for (g, r) in runs {
                self.groups.insert(g, Run { segment: new_segment, start, len: r.len });
                start += r.len;
            }
        }
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        fresh.path = path;
        self.file = fresh;
        Ok(())
    }
}

/// Renders the reassembly of grouped stage `stage`'s touched groups on the rows `routed` to this
/// worker, storing them in the row file `path` (see the module docs).
pub fn render<'s>(routed: Routed<'s>, plan: Arc<Plan>, stage: usize, path: PathBuf, errors: ErrorSlot) -> Routed<'s> {
    let st = &plan.stages[stage];
    let id = st.id.clone();
    let group_column = match &st.op {
        Op::Grouped(g) => g.group_column().map(|c| st.read.get(c).cloned().unwrap_or_else(|| c.to_string())),
        Op::Local(_) => unreachable!("open groups are only rendered for grouped stages"),
    };
    let mut store = match RowFile::create(path) {
        Ok(file) => Some(Store {
            stage: id.clone(),
            group_column,
            file,
            groups: HashMap::new(),
            episodes: HashMap::new(),
            live: 0,
        }),
        Err(e) => {
            errors.set(e);
            None
        }
    };
    routed.unary_frontier(Pipeline, &format!("OpenGroups[{id}]"), move |_, _| {
        let mut pending: BTreeMap<u64, (Capability<u64>, Vec<RecordBatch>)> = BTreeMap::new();
        move |(input, frontier), output| {
            input.for_each_stamp(|cap, data| {
                let t = *cap.least().expect("a u64 stamp has a least time");
                let entry = pending.entry(t).or_insert_with(|| (cap.delayed(&t, 0), Vec::new()));
                entry.1.extend(data.flat_map(|c| c.drain(..)).map(|(_, b)| b.rows).filter(|r| r.num_rows() > 0));
            });
            while let Some((&t, _)) = pending.first_key_value() {
                if frontier.less_equal(&t) {
                    break;
                }
                let (cap, arrived) = pending.remove(&t).expect("the key was just seen");
                let Some(store) = store.as_mut() else { continue };
                if errors.is_set() {
                    continue;
                }
                match store.upsert(&arrived) {
                    Ok(Some(rows)) => output.session(&cap).give((0u64, Batch { rows, source: "-".into() })),
                    Ok(None) => {}
                    Err(e) => errors.set(e),
                }
            }
        }
    })
}
