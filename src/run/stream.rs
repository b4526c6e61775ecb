//! Training on trajectory files written by others: the learner of `watch --train` (a file per
//! epoch, as files land) and `reprocess --train` (every file in one epoch).
//!
//! The dataflow only ingests: it hands the leader each epoch's rows as they came and the files
//! the epoch ingested ([`crate::dataflow::EpochConsumer`]). The learner keeps the latest row of
//! every episode of every open group, lets a [`GroupTracker`] close groups in file order, and per
//! `groups_per_update` closed groups hands a round to the device thread that owns the models
//! ([`ModelThread`]), which runs the pipeline's graph after its source as a run does on an
//! iteration's rollouts ([`StreamUpdates::train`]: model steps, data stages, one update) while
//! the leader goes on ingesting. Update `n` gives policy version `initial_version + n`, its rows go to
//! `RUN/trajectories` as epoch `n`, and every `checkpoint_every` updates checkpoint `n` is written
//! (`RUN/checkpoints/iter-n`, with `RUN/metrics.jsonl` line `n`). A snapshot and the end of the
//! stream wait for the rounds handed over, then checkpoint.
//!
//! Invariants:
//! - An update's rows are those of the episodes that closed its groups (later rows of a group
//!   are late and ignored), sorted by episode id; everything the update computes from them is a
//!   function of those rows, the checkpoint and `(seed, n)`, so the files alone decide the weights:
//!   one file at a time equals all at once, on any number of workers or processes.
//! - Updates are numbered by their position in the tracker's queue, which depends on the files
//!   alone. A learner started from checkpoint `c` replays the stream and skips updates `≤ c`
//!   (their effect, model steps included, is in the checkpoint), so a `watch` killed at any point
//!   and restarted ends with the weights of a run that was never interrupted.
//! - Rows more than `max_staleness` versions behind the learner (by their `policy_version`) are
//!   dropped or trained with truncated importance weights (`[stream] stale`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};

use super::group_tracker::{ClosedGroup, GroupTracker};
use super::stream_update::{Round, StreamUpdates};
use super::trainer::Trainer;
use crate::dataflow::EpochConsumer;
use crate::error::{Error, Result};
use crate::model::thread::ModelThread;
use crate::pipeline::training::TrainingSpec;
use crate::pipeline::Plan;
use crate::store::PartReader;

/// The learner of a stream of trajectory files: the queue of closed groups here, the models on
/// their own thread.
pub struct StreamLearner {
    /// The models' side: each round's model steps, data stages and update, in order.
    models: ModelThread<StreamUpdates>,
    tracker: GroupTracker,
    groups_per_update: usize,
    /// The latest row of each episode of each open group.
    open_rows: HashMap<String, BTreeMap<String, RecordBatch>>,
    /// The rows of closed groups not yet trained.
    closed_rows: HashMap<String, RecordBatch>,
    /// Updates made (or, below `resumed`, replayed).
    updates: u64,
    /// Updates already in the checkpoint the learner started from.
    resumed: u64,
    dir: PathBuf,
}

impl StreamLearner {
    /// A learner of the training pipeline `plan` writing into the run directory `dir`: resumed
    /// from its last checkpoint if it has one, else started from the policy (after its warm start,
    /// if any: checkpoint 0).
    pub fn open(spec: TrainingSpec, plan: Plan, dir: &Path, verbose: bool) -> Result<StreamLearner> {
        let last = super::trainer::last_checkpoint(dir)?;
        let mut trainer = Trainer::new(spec.clone(), dir, last, verbose)?;
        match last {
            Some(c) => {
                super::metrics::MetricsFile::new(dir).truncate_after(c)?;
                if verbose {
                    eprintln!("stream learner: resuming {} after update {c}", dir.display());
                }
            }
            None => trainer.start()?,
        }
        let s = &spec.stream;
        let (tracker, groups_per_update) =
            (GroupTracker::new(s.group_size(&spec.rollout), s.partial_after), s.groups_per_update(&spec.rollout));
        let updates = StreamUpdates { trainer, spec, plan: Arc::new(plan), checkpointed: last.unwrap_or(0) };
        Ok(StreamLearner {
            models: ModelThread::spawn("device:trainer", updates)?,
            tracker,
            groups_per_update,
            open_rows: HashMap::new(),
            closed_rows: HashMap::new(),
            updates: 0,
            resumed: last.unwrap_or(0),
            dir: dir.to_path_buf(),
        })
    }

    /// Updates made so far (replayed ones included).
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Stores the rows of open groups, replacing older rows of the same episodes.
    fn store(&mut self, rows: &RecordBatch) -> Result<()> {
        let (episodes, groups) = (strings(rows, "episode_id")?, strings(rows, "group_id")?);
        let mut by_group: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for (i, g) in groups.iter().enumerate() {
            if !self.tracker.is_closed(g) {
                by_group.entry(g).or_default().push(i as u32);
            }
        }
        for (g, idx) in by_group {
            let part = arrow::compute::take_record_batch(rows, &UInt32Array::from(idx.clone()))?;
            let slot = self.open_rows.entry(g.to_string()).or_default();
            for (j, &i) in idx.iter().enumerate() {
                slot.insert(episodes[i as usize].to_string(), part.slice(j, 1));
            }
        }
        Ok(())
    }

    /// Moves a closed group's rows (its closing episodes only) out of the open set.
    fn seal(&mut self, g: &ClosedGroup) -> Result<()> {
        let mut slot = self.open_rows.remove(&g.group).unwrap_or_default();
        let mut parts = Vec::with_capacity(g.episodes.len());
        for e in &g.episodes {
            parts.push(slot.remove(e).ok_or_else(|| {
                Error::Usage(format!("stream learner: group '{}' episode '{e}' has no rows", g.group))
            })?);
        }
        let schema = parts[0].schema();
        self.closed_rows.insert(g.group.clone(), arrow::compute::concat_batches(&schema, &parts)?);
        Ok(())
    }

    /// Hands update `n` (the next) of `groups` to the device thread, or skips its replay below
    /// `resumed`.
    fn update(&mut self, groups: Vec<ClosedGroup>) -> Result<()> {
        let parts: Vec<RecordBatch> =
            groups.iter().map(|g| self.closed_rows.remove(&g.group).expect("sealed when it closed")).collect();
        let n = self.updates + 1;
        self.updates = n;
        if n <= self.resumed {
            return Ok(());
        }
        let round = Round {
            n,
            parts,
            groups: groups.len() as u64,
            partial_groups: groups.iter().filter(|g| g.partial).count() as u64,
            files: self.tracker.files(),
            late_rows: self.tracker.late_rows(),
        };
        self.models.submit(move |u| u.train(round))
    }
}

impl EpochConsumer for StreamLearner {
    fn consume(&mut self, files: &[PathBuf], rows: Vec<RecordBatch>) -> Result<()> {
        for b in &rows {
            self.store(b)?;
        }
        for f in files {
            let keys = file_keys(f)?;
            // Seal the groups this file closed, then train every full round of them.
            for g in &self.tracker.file(keys.iter().map(|(e, g)| (e.as_str(), g.as_str()))) {
                self.seal(g)?;
            }
            while let Some(groups) = self.tracker.take(self.groups_per_update) {
                self.update(groups)?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.checkpoint_now()?;
        super::report::report(std::slice::from_ref(&self.dir), &self.dir.join("curves.png")).map(|_| ())
    }

    /// Checkpoints the updates made so far, then writes the tracker and the rows of open and
    /// closed-but-untrained groups to `learner.<t>.snap` (JSON) and `learner.<t>.rows` (Arrow IPC),
    /// each atomically, rows first; keeps the two latest.
    fn snapshot(&mut self, t: u64, dir: &Path) -> Result<()> {
        self.checkpoint_now()?;
        let mut rows: Vec<RecordBatch> = self.open_rows.values().flat_map(|eps| eps.values().cloned()).collect();
        rows.extend(self.closed_rows.values().cloned());
        let mut bytes = Vec::new();
        if let Some(first) = rows.first() {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut bytes, &first.schema())?;
            for b in &rows {
                w.write(b)?;
            }
            w.finish()?;
        }
        let state = LearnerSnapshot {
            epoch: t,
            updates: self.updates,
            tracker: &self.tracker,
            closed: self.closed_rows.keys().cloned().collect(),
        };
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        crate::store::write_atomically(dir, &format!("learner.{t:012}.rows"), &bytes)?;
        let json = serde_json::to_vec(&state).expect("a learner snapshot serialises");
        crate::store::write_atomically(dir, &format!("learner.{t:012}.snap"), &json)?;
        remove_snapshots_before_the_last_two(dir)
    }

    fn restore(&mut self, t: u64, dir: &Path) -> Result<()> {
        let path = dir.join(format!("learner.{t:012}.snap"));
        let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let saved: LearnerSnapshot<GroupTracker> =
            serde_json::from_slice(&text).map_err(|e| Error::file(&path, format!("bad learner snapshot: {e}")))?;
        if saved.updates > self.resumed {
            return Err(Error::Usage(format!(
                "stream learner: the snapshot of epoch {t} follows update {}, but the last checkpoint is update {}",
                saved.updates, self.resumed
            )));
        }
        let path = dir.join(format!("learner.{t:012}.rows"));
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        self.open_rows.clear();
        self.closed_rows.clear();
        let closed: std::collections::HashSet<&String> = saved.closed.iter().collect();
        let mut closed_parts: HashMap<String, Vec<RecordBatch>> = HashMap::new();
        if !bytes.is_empty() {
            for b in arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)? {
                let b = b?;
                let (eps, groups) = (strings(&b, "episode_id")?, strings(&b, "group_id")?);
                for r in 0..b.num_rows() {
                    let (g, e) = (groups[r].to_string(), eps[r].to_string());
                    if closed.contains(&g) {
                        closed_parts.entry(g).or_default().push(b.slice(r, 1));
                    } else {
                        self.open_rows.entry(g).or_default().insert(e, b.slice(r, 1));
                    }
                }
            }
        }
        for (g, parts) in closed_parts {
            self.closed_rows.insert(g, arrow::compute::concat_batches(&parts[0].schema(), &parts)?);
        }
        self.tracker = saved.tracker;
        self.updates = saved.updates;
        Ok(())
    }
}

/// What a learner snapshot holds besides the rows (`T`: the tracker, borrowed when written).
#[derive(serde::Serialize, serde::Deserialize)]
struct LearnerSnapshot<T> {
    epoch: u64,
    updates: u64,
    tracker: T,
    /// The closed groups whose rows are in the snapshot (the others are open).
    closed: Vec<String>,
}

/// Deletes the learner snapshots in `dir` (each a `.snap` and its `.rows`) older than its two latest.
fn remove_snapshots_before_the_last_two(dir: &Path) -> Result<()> {
    crate::store::keep_latest_epochs(dir, 2, |name| {
        let rest = name.strip_prefix("learner.")?;
        rest.strip_suffix(".snap").or_else(|| rest.strip_suffix(".rows"))?.parse().ok()
    })
}

impl StreamLearner {
    /// Waits for the updates handed over, then checkpoints the last one unless it is already.
    fn checkpoint_now(&mut self) -> Result<()> {
        let n = self.updates;
        self.models.call(move |u| u.checkpoint_through(n))
    }
}

/// `(episode_id, group_id)` of every row of a trajectory file, in row order.
fn file_keys(path: &Path) -> Result<Vec<(String, String)>> {
    let reader = PartReader::open(path)?;
    let cols = ["episode_id".to_string(), "group_id".to_string()];
    let mut out = Vec::new();
    for b in reader.read(Some(&cols), None)? {
        let (e, g) = (strings(&b, "episode_id")?, strings(&b, "group_id")?);
        out.extend(e.into_iter().zip(g).map(|(e, g)| (e.to_string(), g.to_string())));
    }
    Ok(out)
}

fn strings<'a>(rows: &'a RecordBatch, name: &str) -> Result<Vec<&'a str>> {
    let col = rows
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| Error::Usage(format!("stream learner: rows have no utf8 '{name}' column")))?;
    Ok((0..col.len()).map(|i| if col.is_null(i) { "" } else { col.value(i) }).collect())
}
