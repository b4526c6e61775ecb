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
//! - The grouped stage after this operator treats every epoch as its own dataset: it is handed,
//!   at epoch t, the complete current rows of every group t touched, so its differential state
//!   covers open epochs only and every summary is computed from the group's contributions in
//!   sorted order, bit-identical to `reprocess` over the same files.
//! - Rows are upserts keyed by `episode_id`: a row that arrives again replaces the stored one (the
//!   later of two in one epoch wins); one that arrives with another group leaves its old group,
//!   which is touched too.
//! - Memory per stored row is one entry of `episodes` (hash of the episode id -> hash of its
//!   group); per group, one [`Run`]. Episode and group ids are identified by 64-bit hashes: reading
//!   a group back checks that its rows carry the group's id, so a collision of two group ids is an
//!   error, never a silent merge; stored rows are matched by their full `episode_id` when upserted.
//! - With a retention window (`seal_after = N`), a group not touched for N epochs is sealed: its
//!   rows stay where they were written, its entries leave memory but for its hash, and later rows
//!   for it are late: counted, reported, and kept out.
//! - Every `snapshot_every` epochs (after epoch t with (t + 1) % every == 0, whether or not the
//!   worker saw rows), the store is written to `STAGE.<t>.pending` beside its row file, atomically,
//!   after the row file is synced; the worker's driver publishes it as `STAGE.<t>.snap` once its
//!   own parts of every epoch ≤ t are committed ([`publish_snapshots`]), so a published snapshot
//!   never covers output that could still be lost. A restart from snapshot t reopens the row file
//!   cut back to its recorded length and replays only the epochs after t. The two latest
//!   snapshots are kept, with the row files they name. Once more than half of the row file's rows are superseded it is
//!   rewritten (a new generation, `STAGE.<gen>.rows`) with the live groups only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use super::batch::{episode_ids, Batch};
use super::cluster::stable_hash;
use super::grouped::Routed;
use super::row_file::RowFile;
use super::sharded_map::ShardedMap;
use super::ErrorSlot;
use crate::error::{Error, Result};
use crate::pipeline::Plan;
use crate::stages::Operator as Op;

/// Where and how a `watch` worker keeps its grouped stages' rows.
#[derive(Clone, Debug)]
pub struct Storage {
    /// This worker's state directory (`OUTPUT/_state/w<worker>`).
    pub dir: PathBuf,
    /// Start from the snapshots of this epoch instead of empty stores.
    pub restore: Option<u64>,
    /// Snapshot every this many epochs (0: never).
    pub snapshot_every: u64,
    /// Seal a group this many epochs after it was last touched (`None`: never).
    pub seal_after: Option<u64>,
}

/// Where a group's current rows are, and when it was last touched.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Run {
    segment: u32,
    start: u32,
    len: u32,
    touched: u64,
}

/// The stored rows of one worker's groups for one grouped stage.
struct Store {
    stage: String,
    group_column: Option<String>,
    dir: PathBuf,
    generation: u64,
    file: RowFile,
    groups: ShardedMap<Run>,
    episodes: ShardedMap<u64>,
    sealed: ShardedMap<()>,
    /// With a retention window: the groups touched at each epoch (an entry is stale once the
    /// group was touched again).
    by_touch: BTreeMap<u64, Vec<u64>>,
    seal_after: Option<u64>,
    live: u64,
    late: u64,
    /// Snapshots written, oldest first, with the generation of the row file each names.
    snapshots: Vec<(u64, u64)>,
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

fn rows_path(dir: &Path, stage: &str, generation: u64) -> PathBuf {
    dir.join(format!("{stage}.{generation}.rows"))
}

fn snapshot_name(stage: &str, epoch: u64) -> String {
    format!("{stage}.{epoch:012}.snap")
}

const UNPUBLISHED: &str = "pending";

/// Publishes the snapshots in the worker state directory `dir` of the epochs `committed` says
/// this worker's output is committed through.
pub fn publish_snapshots(dir: &Path, committed: impl Fn(u64) -> bool) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    let mut published = false;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(&format!(".{UNPUBLISHED}")) else { continue };
        let epoch = stem.rsplit('.').next().and_then(|t| t.parse::<u64>().ok());
        if epoch.is_some_and(&committed) {
            let to = dir.join(format!("{stem}.snap"));
            std::fs::rename(entry.path(), &to).map_err(|e| Error::io(&to, e))?;
            published = true;
        }
    }
    if published {
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

/// The epochs of `stage`'s published snapshots in `dir`, ascending.
fn snapshot_epochs(dir: &Path, stage: &str) -> Vec<u64> {
    let prefix = format!("{stage}.");
    let mut out: Vec<u64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix(&prefix)?.strip_suffix(".snap")?.parse().ok()
        })
        .collect();
    out.sort_unstable();
    out
}

/// The latest epoch ≤ `logged` from which a restart of `workers` workers can restore every one of
/// `stages`: each worker's directory under `state` holds a snapshot of that epoch for each stage,
/// no other worker's directory exists (the worker count is unchanged), and `also` holds.
pub fn restorable(
    state: &Path,
    workers: usize,
    stages: &[String],
    logged: u64,
    also: impl Fn(u64) -> bool,
) -> Option<u64> {
    let first = stages.first()?;
    if state.join(format!("w{workers}")).exists() {
        return None;
    }
    let candidates = snapshot_epochs(&state.join("w0"), first);
    candidates.into_iter().rev().filter(|&t| t <= logged && also(t)).find(|&t| {
        (0..workers).all(|w| {
            let dir = state.join(format!("w{w}"));
            stages.iter().all(|s| dir.join(snapshot_name(s, t)).is_file())
        })
    })
}

impl Store {
    /// The store of `stage` in `storage`: restored from its snapshot, or empty (the stage's old
    /// files removed).
    fn open(storage: &Storage, stage: &str, group_column: Option<String>) -> Result<Store> {
        let dir = storage.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut store = match storage.restore {
            Some(t) => Store::load(&dir, stage, t)?,
            None => {
                let file = RowFile::create(rows_path(&dir, stage, 0))?;
                Store {
                    stage: stage.to_string(),
                    group_column: None,
                    dir: dir.clone(),
                    generation: 0,
                    file,
                    groups: ShardedMap::default(),
                    episodes: ShardedMap::default(),
                    sealed: ShardedMap::default(),
                    by_touch: BTreeMap::new(),
                    seal_after: None,
                    live: 0,
                    late: 0,
                    snapshots: Vec::new(),
                }
            }
        };
        store.group_column = group_column;
        store.seal_after = storage.seal_after;
        if store.seal_after.is_some() {
            for (g, run) in store.groups.iter() {
                store.by_touch.entry(run.touched).or_default().push(*g);
            }
        }
        store.remove_unused_files()?;
        Ok(store)
    }

    /// Seals the groups whose window closed by epoch `t`.
    fn seal(&mut self, t: u64) -> Result<()> {
        let Some(n) = self.seal_after else { return Ok(()) };
        let mut closing = Vec::new();
        while let Some((&u, _)) = self.by_touch.first_key_value() {
            if u + n > t {
                break;
            }
            let (_, groups) = self.by_touch.pop_first().expect("the key was just seen");
            closing.extend(groups.into_iter().filter(|g| self.groups.get(g).is_some_and(|r| r.touched == u)));
        }
        for (g, rows) in self.read_groups(&closing)? {
            for id in episode_ids(&rows) {
                self.episodes.remove(&stable_hash(id.as_bytes()));
            }
            self.drop_group(g);
            self.sealed.insert(g, ());
        }
        Ok(())
    }

    /// The stored rows of `groups` (those stored), decoding each segment once.
    fn read_groups(&self, groups: &[u64]) -> Result<Vec<(u64, RecordBatch)>> {
        let mut by_segment: BTreeMap<u32, Vec<(u64, Run)>> = BTreeMap::new();
        for g in groups {
            if let Some(run) = self.groups.get(g) {
                by_segment.entry(run.segment).or_default().push((*g, *run));
            }
        }
        let mut out = Vec::new();
        for (segment, runs) in by_segment {
            let batch = self.file.read(segment)?;
            out.extend(runs.into_iter().map(|(g, r)| (g, batch.slice(r.start as usize, r.len as usize))));
        }
        Ok(out)
    }

    /// Upserts the rows of epoch `t` and returns the current rows of every group they touch.
    fn upsert(&mut self, t: u64, arrived: &[RecordBatch]) -> Result<Option<RecordBatch>> {
        self.seal(t)?;
        let Some(first) = arrived.first() else { return Ok(None) };
        let new = arrow::compute::concat_batches(&first.schema(), arrived)
            .map_err(|e| Error::stage(&self.stage, format!("rows of one epoch differ in layout: {e}")))?;
        let groups = keys(self.group_column.as_deref(), &new, &self.stage)?;
        let ids = episode_ids(&new);
        // The later of two rows of one episode wins; rows of sealed groups are late.
        let mut latest: HashMap<&str, usize> = HashMap::new();
        let mut late = 0u64;
        for (r, id) in ids.iter().enumerate() {
            if self.sealed.contains_key(&stable_hash(groups[r].as_bytes())) {
                late += 1;
            } else {
                latest.insert(id, r);
            }
        }
        if late > 0 {
            self.late += late;
            tracing::warn!(
                "stage '{}': {late} late row(s) at epoch {t} for groups sealed by the retention window kept out \
                 ({} so far)",
                self.stage,
                self.late
            );
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
        let touched_ids: Vec<u64> = touched.keys().copied().collect();
        let mut sources: Vec<RecordBatch> = vec![new.clone()];
        let mut stored: HashMap<u64, usize> = HashMap::new();
        for (g, rows) in self.read_groups(&touched_ids)? {
            stored.insert(g, sources.len());
            sources.push(rows);
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
                let expected = name.map(str::to_string).unwrap_or_else(|| old_groups[0].clone());
                if let Some(other) = old_groups.iter().find(|k| **k != expected) {
                    return Err(Error::stage(
                        &self.stage,
                        format!("groups '{expected}' and '{other}' have the same 64-bit hash; rename one"),
                    ));
                }
                for (r, id) in episode_ids(old).iter().enumerate() {
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
        let out = if picks.is_empty() {
            None
        } else {
            let refs: Vec<&RecordBatch> = sources.iter().collect();
            Some(arrow::compute::interleave_record_batch(&refs, &picks)?)
        };
        let segment = match &out {
            Some(rows) => self.file.append(rows)?,
            None => 0,
        };
        for (g, start, len) in runs {
            self.drop_group(g);
            if len > 0 {
                self.groups.insert(g, Run { segment, start, len, touched: t });
                self.live += len as u64;
                if self.seal_after.is_some() {
                    self.by_touch.entry(t).or_default().push(g);
                }
            }
        }
        Ok(out)
    }

    fn drop_group(&mut self, g: u64) {
        if let Some(run) = self.groups.remove(&g) {
            self.live -= run.len as u64;
        }
    }

    /// Whether more than half of the row file's rows are superseded (and it is worth rewriting).
    fn mostly_superseded(&self) -> bool {
        self.file.rows > 2 * self.live + 10_000
    }

    /// Rewrites the live groups into a new generation of the row file, segment by segment.
    fn rewrite(&mut self) -> Result<()> {
        let mut fresh = RowFile::create(rows_path(&self.dir, &self.stage, self.generation + 1))?;
        let mut by_segment: BTreeMap<u32, Vec<(u64, Run)>> = BTreeMap::new();
        for (g, run) in self.groups.iter() {
            by_segment.entry(run.segment).or_default().push((*g, *run));
        }
        for (segment, mut runs) in by_segment {
            runs.sort_by_key(|(_, r)| r.start);
            let batch = self.file.read(segment)?;
            let parts: Vec<RecordBatch> =
                runs.iter().map(|(_, r)| batch.slice(r.start as usize, r.len as usize)).collect();
            let new_segment = fresh.append(&arrow::compute::concat_batches(&batch.schema(), &parts)?)?;
            let mut start = 0;
            for (g, r) in runs {
                self.groups.insert(g, Run { segment: new_segment, start, ..r });
                start += r.len;
            }
        }
        self.file = fresh;
        self.generation += 1;
        Ok(())
    }

    /// Removes the row files and snapshots of this stage that no kept snapshot needs.
    fn remove_unused_files(&self) -> Result<()> {
        let keep_rows: HashSet<u64> =
            self.snapshots.iter().map(|(_, g)| *g).chain(std::iter::once(self.generation)).collect();
        let keep_snaps: HashSet<u64> = self.snapshots.iter().map(|(t, _)| *t).collect();
        let prefix = format!("{}.", self.stage);
        for entry in std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(&prefix) else { continue };
            let snapshot = rest.strip_suffix(".snap").or_else(|| rest.strip_suffix(&format!(".{UNPUBLISHED}")));
            let unused = match (rest.strip_suffix(".rows"), snapshot) {
                (Some(g), _) => g.parse().is_ok_and(|g: u64| !keep_rows.contains(&g)),
                (_, Some(t)) => t.parse().is_ok_and(|t: u64| !keep_snaps.contains(&t)),
                _ => false,
            };
            if unused {
                std::fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            }
        }
        Ok(())
    }

    /// Writes the snapshot of epoch `t` (the state after it), rewriting the row file first when
    /// it is mostly superseded; keeps the two latest snapshots.
    fn snapshot(&mut self, t: u64) -> Result<()> {
        if self.mostly_superseded() {
            self.rewrite()?;
        }
        self.file.sync()?;
        let mut b = Encoder(Vec::with_capacity(64 + 16 * self.episodes.len() + 32 * self.groups.len()));
        b.0.extend_from_slice(MAGIC);
        for x in [t, self.generation, self.file.len, self.file.rows, self.live, self.late] {
            b.u64(x);
        }
        b.u64(self.file.offsets.len() as u64);
        self.file.offsets.iter().for_each(|&o| b.u64(o));
        b.u64(self.groups.len() as u64);
        for (g, r) in self.groups.iter() {
            b.u64(*g);
            b.u64(((r.segment as u64) << 32) | r.start as u64);
            b.u64(r.len as u64);
            b.u64(r.touched);
        }
        b.u64(self.episodes.len() as u64);
        for (e, g) in self.episodes.iter() {
            b.u64(*e);
            b.u64(*g);
        }
        b.u64(self.sealed.len() as u64);
        self.sealed.iter().for_each(|(&g, _)| b.u64(g));
        write_pending(&self.dir, &self.stage, t, &b.0)?;
        self.snapshots.push((t, self.generation));
        if self.snapshots.len() > 2 {
            self.snapshots.remove(0);
        }
        Ok(())
    }

    /// The store as the snapshot of epoch `t` left it; later snapshots are forgotten.
    fn load(dir: &Path, stage: &str, t: u64) -> Result<Store> {
        let (path, bytes) = read_snapshot(dir, stage, t)?;
        let bad = || Error::file(&path, "truncated or not a trajflow snapshot");
        let body = bytes.strip_prefix(MAGIC).ok_or_else(bad)?;
        let mut d = Decoder(body);
        let mut next = || d.u64().ok_or_else(bad);
        let (epoch, generation, len, rows, live, late) = (next()?, next()?, next()?, next()?, next()?, next()?);
        if epoch != t {
            return Err(Error::file(&path, format!("records epoch {epoch}, not {t}")));
        }
        let offsets = (0..next()?).map(|_| next()).collect::<Result<Vec<u64>>>()?;
        let n = next()?;
        let mut groups = ShardedMap::with_capacity(n as usize);
        for _ in 0..n {
            let (g, at, len, touched) = (next()?, next()?, next()?, next()?);
            groups.insert(g, Run { segment: (at >> 32) as u32, start: at as u32, len: len as u32, touched });
        }
        let n = next()?;
        let mut episodes = ShardedMap::with_capacity(n as usize);
        for _ in 0..n {
            episodes.insert(next()?, next()?);
        }
        let mut sealed = ShardedMap::default();
        for _ in 0..next()? {
            sealed.insert(next()?, ());
        }
        let file = RowFile::reopen(rows_path(dir, stage, generation), offsets, len, rows)?;
        Ok(Store {
            stage: stage.to_string(),
            group_column: None,
            dir: dir.to_path_buf(),
            generation,
            file,
            groups,
            episodes,
            sealed,
            by_touch: BTreeMap::new(),
            seal_after: None,
            live,
            late,
            snapshots: vec![(t, generation)],
        })
    }
}

const MAGIC: &[u8] = b"trajflow open groups v1\n";

/// When snapshots are due: after every epoch t with (t + 1) % every == 0, from the restored one on.
pub(crate) struct Schedule {
    every: u64,
    due: u64,
}

impl Schedule {
    pub(crate) fn new(storage: &Storage) -> Schedule {
        let every = storage.snapshot_every;
        let due = match (every, storage.restore) {
            (0, _) => u64::MAX,
            (_, Some(t)) => t + every,
            (_, None) => every - 1,
        };
        Schedule { every, due }
    }

    /// The snapshot epochs due before epoch `t` (every epoch before `t` is complete).
    pub(crate) fn due_before(&mut self, t: u64) -> Vec<u64> {
        let mut out = Vec::new();
        while self.due < t {
            out.push(self.due);
            self.due += self.every;
        }
        out
    }
}

/// Writes `bytes` as `stage`'s unpublished snapshot of epoch `t` in `dir`, atomically.
pub(crate) fn write_pending(dir: &Path, stage: &str, t: u64, bytes: &[u8]) -> Result<()> {
    let name = snapshot_name(stage, t).replace(".snap", &format!(".{UNPUBLISHED}"));
    crate::store::write_atomically(dir, &name, bytes)
}

/// The bytes of `stage`'s published snapshot of epoch `t` in `dir`.
pub(crate) fn read_snapshot(dir: &Path, stage: &str, t: u64) -> Result<(PathBuf, Vec<u8>)> {
    let path = dir.join(snapshot_name(stage, t));
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    Ok((path, bytes))
}

pub(crate) struct Encoder(pub(crate) Vec<u8>);

impl Encoder {
    pub(crate) fn u64(&mut self, x: u64) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
}

pub(crate) struct Decoder<'a>(pub(crate) &'a [u8]);

impl Decoder<'_> {
    pub(crate) fn u64(&mut self) -> Option<u64> {
        let (head, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(u64::from_le_bytes(*head))
    }
}

/// Renders the reassembly of grouped stage `stage`'s touched groups on the rows `routed` to this
/// worker, stored as `storage` says (see the module docs).
pub fn render<'s>(
    routed: Routed<'s>,
    plan: Arc<Plan>,
    stage: usize,
    storage: Storage,
    errors: ErrorSlot,
) -> Routed<'s> {
    let st = &plan.stages[stage];
    let id = st.id.clone();
    let group_column = match &st.op {
        Op::Grouped(g) => g.group_column().map(|c| st.read.get(c).cloned().unwrap_or_else(|| c.to_string())),
        Op::Local(_) | Op::Model(_) => unreachable!("open groups are only rendered for grouped stages"),
    };
    let mut store = Store::open(&storage, &id, group_column).map_err(|e| errors.set(e)).ok();
    let mut schedule = Schedule::new(&storage);
    let every = storage.snapshot_every;
    routed.unary_frontier(Pipeline, &format!("OpenGroups[{id}]"), move |_, _| {
        let mut pending: BTreeMap<u64, (Capability<u64>, Vec<RecordBatch>)> = BTreeMap::new();
        move |(input, frontier), output| {
            input.for_each_stamp(|cap, data| {
                let t = *cap.least().expect("a u64 stamp has a least time");
                let entry = pending.entry(t).or_insert_with(|| (cap.delayed(&t, 0), Vec::new()));
                entry.1.extend(data.flat_map(|c| c.drain(..)).map(|(_, b)| b.rows).filter(|r| r.num_rows() > 0));
            });
            let Some(store) = store.as_mut() else {
                pending.clear();
                return;
            };
            let complete = frontier.frontier().first().copied();
            let mut snapshot_before = |t: u64, store: &mut Store| {
                for due in schedule.due_before(t) {
                    if let Err(e) = store.snapshot(due).and_then(|()| store.remove_unused_files()) {
                        errors.set(e);
                    }
                }
            };
            while let Some((&t, _)) = pending.first_key_value() {
                if frontier.less_equal(&t) {
                    break;
                }
                let (cap, arrived) = pending.remove(&t).expect("the key was just seen");
                snapshot_before(t, store);
                if errors.is_set() {
                    continue;
                }
                match store.upsert(t, &arrived) {
                    Ok(Some(rows)) => output.session(&cap).give((0u64, Batch { rows, source: "-".into() })),
                    Ok(None) => {}
                    Err(e) => errors.set(e),
                }
                if every == 0 && store.mostly_superseded() {
                    if let Err(e) = store.rewrite().and_then(|()| store.remove_unused_files()) {
                        errors.set(e);
                    }
                }
            }
            if let Some(f) = complete {
                snapshot_before(f, store);
            }
        }
    })
}

#[cfg(test)]
mod tests;
