//! A whole-dataset statistic (a grouped stage without a group column: batch whitening) from exact
//! per-worker deltas: each worker sums its rows' [`ExactMoments`] per epoch, the deltas are
//! broadcast, and every worker adds them up — integer additions, so the statistic is the same bits
//! whatever the worker count, the arrival order, or whether the rows came at once (`reprocess`) or
//! file by file (`watch`). Each worker then emits the summary to itself, for the join (or the
//! deferred whitening's recorder) next to it.
//!
//! Invariants:
//! - Rows reach the worker `hash(episode_id) % peers`, so a re-sent episode meets its earlier
//!   version on the same worker; within an epoch the later row of an episode wins.
//! - With groups spanning epochs ([`Rederive`]: the deferred whitening under `watch`), memory per
//!   stored row is one index entry, hash of the episode id → the input file its current version
//!   came from; a re-sent episode's old contribution is removed by reading that file again and
//!   running the stages before this one on it (they are local by construction, [`deferrable`]).
//!   Without it (`reprocess`: one epoch; training iterations: an epoch is its own dataset), only the
//!   open epoch's rows are remembered.
//! - With it, the index, the file table and this worker's own share of the totals are snapshotted
//!   on the schedule of the grouped stages' stores ([`super::open_groups`]); a worker restored from
//!   epoch t sends its share again as its delta of epoch t + 1, so every worker's totals are whole
//!   again from the first epoch on.
//!
//! [`deferrable`]: crate::pipeline::deferral::deferrable

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::broadcast::Broadcast;
use timely::dataflow::operators::Capability;

use super::batch::episode_ids;
use super::cluster::stable_hash;
use super::grouped::{Routed, Summaries};
use super::local::run_local;
use super::open_groups::{read_snapshot, write_pending, Decoder, Encoder, Schedule, Storage};
use super::sharded_map::ShardedMap;
use super::source::InputLayout;
use super::ErrorSlot;
use crate::error::{Error, Result};
use crate::ops::exact_moments::ExactMoments;
use crate::pipeline::Plan;
use crate::stages::{GroupedOp, Operator as Op, StageInput, Summary};

/// How a re-sent episode's earlier row is found again (the input layout its file is read with),
/// and where the index is snapshotted.
#[derive(Clone)]
pub struct Rederive {
    /// The layout input files are read with.
    pub layout: Arc<InputLayout>,
    /// This worker's state directory, snapshot cadence and restore point.
    pub storage: Storage,
}

impl std::fmt::Debug for Rederive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rederive")
    }
}

fn op(plan: &Plan, stage: usize) -> &dyn GroupedOp {
    match &plan.stages[stage].op {
        Op::Grouped(g) => g.as_ref(),
        Op::Local(_) | Op::Model(_) => unreachable!("whole-dataset statistics belong to grouped stages"),
    }
}

/// The exact moments of every row of `rows` for stage `stage`, with the rows' episode ids.
fn exact_rows(plan: &Plan, stage: usize, rows: &RecordBatch, source: &str) -> Result<Vec<(String, ExactMoments)>> {
    let st = &plan.stages[stage];
    let m = op(plan, stage)
        .exact(&StageInput::new(rows, &st.read))
        .map_err(|m| Error::stage(&st.id, format!("{source}: {m}")))?;
    Ok(episode_ids(rows).into_iter().zip(m).collect())
}

/// The rows of one worker for one whole-dataset stage, as far as the statistic needs them.
struct Deltas {
    plan: Arc<Plan>,
    stage: usize,
    rederive: Option<Rederive>,
    /// Input file of each episode's current version (with `rederive`).
    index: ShardedMap<u32>,
    files: Vec<Arc<str>>,
    file_ids: HashMap<Arc<str>, u32>,
    /// The sum of every delta this worker sent.
    own: ExactMoments,
}

const MAGIC: &[u8] = b"trajflow whole-dataset index v1\n";

impl Deltas {
    /// The delta of an epoch whose rows are `rows` (episode → its latest moments and file).
    fn delta(&mut self, rows: HashMap<String, (ExactMoments, Arc<str>)>) -> Result<ExactMoments> {
        let mut delta = ExactMoments::default();
        let mut again: BTreeMap<u32, HashSet<String>> = BTreeMap::new();
        for (ep, (m, file)) in rows {
            delta.merge(&m, 1);
            if self.rederive.is_some() {
                let next = self.file_ids.len() as u32;
                let id = *self.file_ids.entry(file.clone()).or_insert_with(|| {
                    self.files.push(file.clone());
                    next
                });
                if let Some(old) = self.index.insert(stable_hash(ep.as_bytes()), id) {
                    again.entry(old).or_default().insert(ep);
                }
            }
        }
        for (file, eps) in again {
            delta.merge(&self.earlier(&self.files[file as usize].clone(), &eps)?, -1);
        }
        self.own.merge(&delta, 1);
        Ok(delta)
    }

    /// Writes the snapshot of epoch `t` (own share, file table, index), unpublished.
    fn snapshot(&self, t: u64, storage: &Storage, id: &str) -> Result<()> {
        let files: Vec<&str> = self.files.iter().map(|f| &**f).collect();
        let head = serde_json::to_vec(&(&self.own, files)).expect("a snapshot head serialises");
        let mut b = Encoder(Vec::with_capacity(64 + head.len() + 16 * self.index.len()));
        b.0.extend_from_slice(MAGIC);
        b.u64(head.len() as u64);
        b.0.extend_from_slice(&head);
        b.u64(self.index.len() as u64);
        for (k, v) in self.index.iter() {
            b.u64(*k);
            b.u64(*v as u64);
        }
        std::fs::create_dir_all(&storage.dir).map_err(|e| Error::io(&storage.dir, e))?;
        write_pending(&storage.dir, id, t, &b.0)?;
        keep_latest_two(&storage.dir, id)
    }

    /// Restores the snapshot of epoch `t`.
    fn restore(&mut self, t: u64, storage: &Storage, id: &str) -> Result<()> {
        let (path, bytes) = read_snapshot(&storage.dir, id, t)?;
        let bad = || Error::file(&path, "truncated or not a trajflow snapshot");
        let mut d = Decoder(bytes.strip_prefix(MAGIC).ok_or_else(bad)?);
        let len = d.u64().ok_or_else(bad)? as usize;
        let head = d.0.get(..len).ok_or_else(bad)?;
        let (own, files): (ExactMoments, Vec<String>) =
            serde_json::from_slice(head).map_err(|e| Error::file(&path, format!("bad snapshot: {e}")))?;
        d.0 = &d.0[len..];
        let n = d.u64().ok_or_else(bad)? as usize;
        self.index = ShardedMap::with_capacity(n);
        for _ in 0..n {
            let (k, v) = (d.u64().ok_or_else(bad)?, d.u64().ok_or_else(bad)?);
            self.index.insert(k, v as u32);
        }
        self.files = files.into_iter().map(Arc::from).collect();
        self.file_ids = self.files.iter().enumerate().map(|(i, f)| (f.clone(), i as u32)).collect();
        self.own = own;
        Ok(())
    }

    /// The moments the rows of `eps` in the input file `file` contributed (the last row of each).
    fn earlier(&self, file: &str, eps: &HashSet<String>) -> Result<ExactMoments> {
        let Some(r) = &self.rederive else { return Ok(ExactMoments::default()) };
        let before: Vec<_> = self.plan.stages[..self.stage].iter().collect();
        let mut last: HashMap<String, ExactMoments> = HashMap::new();
        for batch in r.layout.read_shard(Path::new(file), 0, 1)? {
            let ids = batch.column_by_name("episode_id").and_then(|c| c.as_string_opt::<i32>()).cloned();
            let Some(ids) = ids else { continue };
            let wanted: arrow::array::BooleanArray =
                (0..ids.len()).map(|i| Some(ids.is_valid(i) && eps.contains(ids.value(i)))).collect();
            let rows = arrow::compute::filter_record_batch(&batch, &wanted)?;
            let rows = run_local(&before, rows, file)?;
            last.extend(exact_rows(&self.plan, self.stage, &rows, file)?);
        }
        let mut sum = ExactMoments::default();
        last.values().for_each(|m| sum.merge(m, 1));
        Ok(sum)
    }
}

/// Deletes `stage`'s snapshots (published or pending) in `dir` but those of the two latest epochs.
fn keep_latest_two(dir: &Path, stage: &str) -> Result<()> {
    let prefix = format!("{stage}.");
    crate::store::keep_latest_epochs(dir, 2, |name| {
        let rest = name.strip_prefix(&prefix)?;
        rest.strip_suffix(".snap").or_else(|| rest.strip_suffix(".pending"))?.parse().ok()
    })
}

/// The whole-dataset stage `stage`'s summaries, on every worker, from the rows `routed` to it.
/// With `per_epoch`, each epoch is its own dataset (its summary is keyed `"<t>/"`); otherwise
/// epochs add up (key `""`), re-sent episodes replacing their earlier rows through `rederive`.
pub fn summaries<'s>(
    routed: Routed<'s>,
    plan: Arc<Plan>,
    stage: usize,
    errors: ErrorSlot,
    per_epoch: bool,
    rederive: Option<Rederive>,
) -> Summaries<'s> {
    let id = plan.stages[stage].id.clone();
    let storage = rederive.as_ref().map(|r| r.storage.clone());
    let mut state = Deltas {
        plan: plan.clone(),
        stage,
        rederive,
        index: ShardedMap::default(),
        files: Vec::new(),
        file_ids: HashMap::new(),
        own: ExactMoments::default(),
    };
    let restored = match storage.as_ref().and_then(|s| s.restore.map(|t| (s, t))) {
        Some((s, t)) => match state.restore(t, s, &id) {
            Ok(()) => Some(t),
            Err(err) => {
                errors.set(err);
                None
            }
        },
        None => None,
    };
    let mut schedule = storage.as_ref().map(Schedule::new);
    let e = errors.clone();
    let stage_id = id.clone();
    type Open = (Capability<u64>, HashMap<String, (ExactMoments, Arc<str>)>);
    let deltas = routed
        .unary_frontier(Pipeline, &format!("Deltas[{id}]"), move |initial, _| {
            let mut open: BTreeMap<u64, Open> = BTreeMap::new();
            // A restored worker sends its share of the totals again, at the first epoch after.
            let mut resend = restored.map(|t| (initial.delayed(&(t + 1)), state.own));
            move |(input, frontier), output| {
                if let Some((cap, own)) = resend.take() {
                    output.session(&cap).give(own);
                }
                input.for_each_stamp(|cap, data| {
                    let t = *cap.least().expect("a u64 stamp has a least time");
                    let (_, rows) = open.entry(t).or_insert_with(|| (cap.delayed(&t, 0), HashMap::new()));
                    for (_, batch) in data.flat_map(|c| c.drain(..)) {
                        match exact_rows(&state.plan, stage, &batch.rows, &batch.source) {
                            Ok(list) => rows.extend(list.into_iter().map(|(ep, m)| (ep, (m, batch.source.clone())))),
                            Err(err) => e.set(err),
                        }
                    }
                });
                let mut snapshot_before = |t: u64, state: &Deltas| {
                    let (Some(schedule), Some(storage)) = (schedule.as_mut(), storage.as_ref()) else { return };
                    for due in schedule.due_before(t) {
                        if let Err(err) = state.snapshot(due, storage, &stage_id) {
                            e.set(err);
                        }
                    }
                };
                while let Some((&t, _)) = open.first_key_value() {
                    if frontier.less_equal(&t) {
                        break;
                    }
                    let (cap, rows) = open.remove(&t).expect("the key was just seen");
                    snapshot_before(t, &state);
                    match state.delta(rows) {
                        Ok(delta) => output.session(&cap).give(delta),
                        Err(err) => e.set(err),
                    }
                }
                if let Some(&f) = frontier.frontier().first() {
                    snapshot_before(f, &state);
                }
            }
        })
        .container::<Vec<ExactMoments>>()
        .broadcast();
    deltas
        .unary_frontier(Pipeline, &format!("Totals[{id}]"), move |_, _| {
            let mut totals = ExactMoments::default();
            let mut open: BTreeMap<u64, (Capability<u64>, ExactMoments)> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let t = *cap.least().expect("a u64 stamp has a least time");
                    let (_, sum) = open.entry(t).or_insert_with(|| (cap.delayed(&t, 0), ExactMoments::default()));
                    for d in data.flat_map(|c| c.drain(..)) {
                        sum.merge(&d, 1);
                    }
                });
                while let Some((&t, _)) = open.first_key_value() {
                    if frontier.less_equal(&t) {
                        break;
                    }
                    let (cap, sum) = open.remove(&t).expect("the key was just seen");
                    let m = if per_epoch {
                        sum.moments()
                    } else {
                        totals.merge(&sum, 1);
                        totals.moments()
                    };
                    let key = if per_epoch { format!("{t}/") } else { String::new() };
                    let summary = Summary { n: m.n, sum: m.mean * m.n as f64, mean: m.mean, m2: m.m2 };
                    output.session(&cap).give(((key, summary), t, 1isize));
                }
            }
        })
        .container::<Vec<((String, Summary), u64, isize)>>()
}
