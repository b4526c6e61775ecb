//! Layer 3 of 3: a validated [`Plan`] rendered as a timely dataflow and driven over input files.
//!
//! Time is the ingest epoch (`u64`): `reprocess` puts every input file in epoch 0; `watch` gives
//! each new file its own epoch. Worker 0 announces files; every worker reads its shard of each;
//! local stages run where the rows are; each grouped stage exchanges rows by group and keeps its
//! statistics in a differential arrangement ([`grouped`]); each worker writes its own part per
//! epoch, and parts are committed once the epoch is complete everywhere with no error. Under
//! `watch`, a batch whitening that ends the pipeline is recorded with the commits instead of
//! applied ([`deferred`]); a grouped stage's rows live in its worker's row file, so that memory
//! grows with the stored rows only by a small index ([`open_groups`]); every `snapshot_every`
//! files the stores (and a consumer's state) are snapshotted, so that a restart replays only the
//! ingest log after the latest snapshot ([`IngestLog`]); and every `compact_every` files a child
//! process compacts the output ([`compactor`]).
//!
//! Every worker builds the same graph in the same order (timely matches channels by creation
//! order); only the *feeding* of inputs differs by worker.

mod batch;
pub mod cluster;
mod compactor;
mod deferred;
mod grouped;
mod ingest_log;
mod iterate;
mod local;
mod model_step;
mod open_groups;
mod row_file;
mod sharded_map;
mod sink;
mod source;

pub use batch::{episode_ids, Batch};
pub use cluster::Cluster;
pub use grouped::Scope;
pub use ingest_log::IngestLog;
pub use iterate::{iterate, stage_outputs, Driver};
pub use local::attach;
pub use open_groups::Storage;
pub use source::InputLayout;
pub use watch::Importer;
use whole_dataset::Rederive;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use std::time::{Duration, Instant};

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::broadcast::Broadcast;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Exchange, Input, Probe};
use timely::dataflow::{ProbeHandle, Stream};

use crate::error::{Error, Result};
use crate::pipeline::Plan;
use crate::stages::Operator as Op;
use crate::store::Dataset;

/// The directory of a `watch` output that holds its workers' private state (row files).
pub const STATE_DIR: &str = "_state";

/// The first error raised inside the dataflow of this process (operators never panic on data).
#[derive(Clone, Default)]
pub struct ErrorSlot(Arc<Mutex<Option<Error>>>);

impl ErrorSlot {
    /// Records `e` unless an earlier error is already recorded.
    pub fn set(&self, e: Error) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(e);
        }
    }

    /// Whether an error was recorded.
    pub fn is_set(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Takes the recorded error.
    pub fn take(&self) -> Option<Error> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// What to run the plan over.
#[derive(Debug, Clone)]
pub enum Job {
    /// Every input file at once (epoch 0).
    Reprocess {
        /// Input part files.
        inputs: Vec<PathBuf>,
        /// Per file, the `episode_id`s to skip (rows a later commit of its dataset supersedes;
        /// [`crate::store::superseded_rows`]).
        superseded: HashMap<PathBuf, HashSet<String>>,
    },
    /// Files dropped into `dir`, one epoch per file, as they arrive.
    Watch {
        /// Directory to watch for `*.parquet` files.
        dir: PathBuf,
        /// Poll interval.
        poll: Duration,
        /// Stop after this long without a new file.
        idle_exit: Option<Duration>,
        /// Stop after this many files.
        max_files: Option<usize>,
        /// Also ingest `*.jsonl` chat logs, converted by this.
        import: Option<Importer>,
        /// Snapshot the grouped stages' stores every this many epochs (0: never; a restart then
        /// replays every ingested file).
        snapshot_every: u64,
        /// Seal a group this many epochs after it was last touched; later rows for it are late.
        seal_after: Option<u64>,
        /// Compact the output and fold its ingest log in the background every this many files
        /// (0: never).
        compact_every: u64,
    },
}

/// Which columns the output dataset gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Columns {
    /// Every trajectory column plus the columns the stages write: a complete dataset.
    #[default]
    All,
    /// `episode_id` and the columns the stages write (join them back by `episode_id`).
    Outputs,
    /// `episode_id` and the pipeline's results: the columns the stages write that no later stage
    /// reads (intermediates such as POAD's `action_end` are left out).
    Final,
}

impl Columns {
    /// The columns the output dataset gets, or `None` for every column.
    pub fn kept(self, plan: &Plan) -> Option<Vec<String>> {
        if self == Columns::All {
            return None;
        }
        let read_after = |i: usize, name: &str| plan.stages[i + 1..].iter().any(|s| s.read.values().any(|c| c == name));
        let mut kept = vec!["episode_id".to_string()];
        for (i, stage) in plan.stages.iter().enumerate() {
            for (name, _) in &stage.writes {
                let wanted = self == Columns::Outputs || !read_after(i, name);
                if wanted && !kept.contains(name) {
                    kept.push(name.clone());
                }
            }
        }
        Some(kept)
    }
}

/// What the leader does with each epoch's stage outputs when a pipeline trains on its input
/// (`watch --train`, `reprocess --train`; [`crate::run::stream`]).
pub trait EpochConsumer: Send {
    /// An epoch is complete: `files` are the files it ingested, in order, and `rows` the stage
    /// outputs it emitted, from every worker, in no particular order. Called before the epoch is
    /// recorded in the ingest log.
    fn consume(&mut self, files: &[PathBuf], rows: Vec<RecordBatch>) -> Result<()>;
    /// The job has ingested everything it will.
    fn finish(&mut self) -> Result<()>;
    /// Saves, under `dir`, what the consumer needs to go on after epoch `t` (every epoch ≤ t
    /// consumed; its effects durable), so that a restarted `watch` can skip replaying them.
    fn snapshot(&mut self, t: u64, dir: &std::path::Path) -> Result<()>;
    /// Goes back to the state [`EpochConsumer::snapshot`] saved at epoch `t` under `dir`.
    fn restore(&mut self, t: u64, dir: &std::path::Path) -> Result<()>;
}

/// Whether stage outputs are gathered to the leader (worker 0 of process 0) for a consumer.
/// Every process must agree (the dataflow's shape depends on it); only the leader's process
/// holds the consumer.
pub enum Gather {
    /// No consumer: outputs are only written.
    No,
    /// Outputs are also sent to the leader, whose process holds the consumer (`None` elsewhere).
    To(Option<Box<dyn EpochConsumer>>),
}

/// What a run did, summed over this process's workers.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Rows written to the output (including re-emitted rows of updated groups).
    pub rows_written: u64,
    /// Parts committed.
    pub parts: usize,
    /// Epochs (files, under `watch`) processed.
    pub epochs: u64,
    /// Files rejected by `watch` (with the reason).
    pub rejected: Vec<String>,
}

/// Runs `plan` over `job`, writing to the dataset at `output`. `on_rows` is called from worker
/// threads with the number of rows each input batch holds as it is read (for progress bars).
/// With [`Gather::To`], each completed epoch's outputs also go to the consumer, on the leader,
/// before the epoch is logged as ingested.
pub fn run(
    plan: Plan,
    job: Job,
    output: PathBuf,
    columns: Columns,
    cluster: &Cluster,
    on_rows: Arc<dyn Fn(u64) + Send + Sync>,
    gather: Gather,
) -> Result<RunReport> {
    if let Some(st) = plan.stages.iter().find(|s| matches!(s.op, Op::Model(_))) {
        return Err(Error::Spec {
            file: plan.file.clone(),
            stage: Some(st.id.clone()),
            key: Some("op".into()),
            message: format!(
                "`{}` is a model step: it runs where the pipeline trains (`trajflow run`, or --train); stored rows \
                 are processed without training by a data pipeline (e.g. pipelines/poad_advantages.toml)",
                st.op_name
            ),
        });
    }
    let config = cluster.to_timely()?;
    let (gathering, consumer) = match gather {
        Gather::No => (false, None),
        Gather::To(c) => (true, c),
    };
    if cluster.is_leader() && gathering && consumer.is_none() {
        return Err(Error::Usage("the leader process needs the consumer of the gathered outputs".into()));
    }
    let consumer = Arc::new(Mutex::new(consumer));
    let plan = Arc::new(plan);
    let superseded = match &job {
        Job::Reprocess { superseded, .. } => superseded.clone(),
        Job::Watch { .. } => Default::default(),
    };
    let layout = Arc::new(InputLayout::new(&plan, columns).skipping(superseded));
    let dataset = Dataset::create(&output)?;
    // A dataset whose earlier commits hold whitened values (written before whitening was
    // deferred) goes on being whitened when written: its old rows would otherwise stay stale.
    let mut deferrable = match &job {
        Job::Watch { .. } => crate::pipeline::deferral::deferrable(&plan),
        Job::Reprocess { .. } => None,
    };
    if deferrable.is_some() && dataset.commits()?.iter().any(|c| c.whitening.is_none()) {
        deferrable = None;
    }
    let mut keep = columns.kept(&plan);
    // Rows stored before their whitening keep the segments it needs (left out again when read).
    if let (Some(k), Some(d)) = (keep.as_mut(), deferrable.as_mut()) {
        if !k.contains(&d.whitening.segments) {
            k.push(d.whitening.segments.clone());
            d.whitening.segments_only_for_whitening = true;
        }
    }
    let errors = ErrorSlot::default();
    let tag = crate::schema::TableSchema::trajectory().tag();
    // A restarted `watch` replays what it ingested before, writing only what was not committed:
    // from its grouped stages' latest complete snapshot when it has one, else from the start.
    // Snapshots cover the stored groups, a deferred whitening's index and share of the statistic,
    // and, with a consumer (learner), its state (written by the leader after it consumed the
    // epoch, then marked done).
    let logged = match &job {
        Job::Watch { .. } => IngestLog::new(&output).entries()?,
        Job::Reprocess { .. } => Vec::new(),
    };
    let consumer_dir = output.join(STATE_DIR).join("consumer");
    let stored_stages: Vec<String> =
        plan.stages.iter().filter(|s| matches!(s.op, Op::Grouped(_))).map(|s| s.id.clone()).collect();
    let restore = match (&job, logged.last()) {
        (Job::Watch { snapshot_every, .. }, Some((last, _, _))) if *snapshot_every > 0 => {
            let workers = cluster.processes * cluster.threads;
            let consumed = |t: u64| !gathering || consumer_dir.join(consumer_mark(t)).is_file();
            if stored_stages.is_empty() && gathering {
                // Only the consumer holds state (`--train` ingests without stages).
                consumed_epochs(&consumer_dir).into_iter().rev().find(|t| t <= last)
            } else {
                open_groups::restorable(&output.join(STATE_DIR), workers, &stored_stages, *last, consumed)
            }
        }
        _ => None,
    };
    if let Some(t) = restore {
        eprintln!("watch: restoring the state as of epoch {t} from its snapshot");
    }
    let (seen_before, replay): (Vec<_>, Vec<_>) =
        logged.into_iter().partition(|(e, _, _)| restore.is_some_and(|t| *e <= t));
    let seen_before: Vec<PathBuf> = seen_before.into_iter().map(|(_, _, landed)| landed).collect();
    let next_epoch = restore.map_or(0, |t| t + 1);
    let replay_epoch = replay.last().map(|(e, _, _)| *e);
    // What each writer committed of the replayed epochs. The leader logs a file once its own
    // parts are committed; another worker may be killed before committing its part of that
    // epoch, so a replayed epoch still writes the parts its writer has not committed.
    let committed: Vec<(u64, String)> = match replay_epoch {
        Some(last) => dataset
            .commits_from(next_epoch)?
            .into_iter()
            .filter(|c| c.epoch <= last)
            .map(|c| (c.epoch, c.writer))
            .collect(),
        None => Vec::new(),
    };
    let (e, p) = (errors.clone(), plan.clone());
    let process = cluster.process_id;
    let output_dir = output.clone();
    let guards = timely::execute(config, move |worker| {
        let output = output_dir.clone();
        let index = worker.index();
        let peers = worker.peers();
        let pending: sink::Pending = Default::default();
        let probe = ProbeHandle::new();
        let gathered = Gathered::default();
        let recorded: deferred::Recorded = Default::default();
        let storage = match &job {
            Job::Watch { snapshot_every, seal_after, .. } => Some(Storage {
                dir: output.join(STATE_DIR).join(format!("w{index}")),
                restore,
                snapshot_every: *snapshot_every,
                seal_after: *seal_after,
            }),
            Job::Reprocess { .. } => None,
        };
        let deferral = deferrable
            .clone()
            .zip(storage.clone())
            .map(|(d, storage)| (d, recorded.clone(), Rederive { layout: layout.clone(), storage }));
        let mut announce = worker.dataflow::<u64, _, _>(|scope| {
            let (handle, files) = scope.new_input::<Vec<String>>();
            let rows = read_files(files.broadcast(), layout.clone(), e.clone(), index, peers, on_rows.clone());
            // Under `watch`, grouped stages keep their groups' rows in this worker's row files.
            let scope = match &storage {
                Some(storage) => Scope::Stored(storage.clone()),
                None => Scope::Job(None),
            };
            let out = render(rows, p.clone(), e.clone(), scope, keep.as_deref(), deferral, None);
            if gathering {
                gather_to_leader(out.clone(), &probe, gathered.clone());
            }
            sink::write_parts(
                out.probe_with(&probe),
                dataset.clone(),
                format!("w{index}"),
                tag.clone(),
                keep.clone(),
                committed.iter().filter(|(_, w)| *w == format!("w{index}")).map(|(e, _)| *e).collect(),
                pending.clone(),
                recorded.clone(),
                e.clone(),
            );
            handle
        });
        let mut report = RunReport::default();
        let snapshot_dir = match &job {
            Job::Watch { snapshot_every, .. } if *snapshot_every > 0 => {
                Some(output.join(STATE_DIR).join(format!("w{index}")))
            }
            _ => None,
        };
        let commit_done = |report: &mut RunReport| -> Result<()> {
            let mut pend = pending.borrow_mut();
            let (done, wait): (Vec<_>, Vec<_>) = pend.commits.drain(..).partition(|c| !probe.less_equal(&c.epoch));
            pend.commits = wait;
            let written_through = pend.through;
            drop(pend);
            if e.is_set() {
                return Ok(());
            }
            for c in done {
                dataset.commit(&c)?;
                report.rows_written += c.rows;
                report.parts += 1;
            }
            // This worker's parts of every epoch its sink has written are now committed: its
            // snapshots of those epochs may be restored from.
            if let Some(dir) = &snapshot_dir {
                open_groups::publish_snapshots(dir, |t| t < written_through)?;
            }
            Ok(())
        };
        let leader = index == 0 && process == 0;
        let mut consumer = if leader { consumer.lock().unwrap_or_else(|p| p.into_inner()).take() } else { None };
        if let (Some(t), Some(c)) = (restore, consumer.as_mut()) {
            c.restore(t, &consumer_dir)?;
        }
        // Hands epoch `t`'s gathered outputs and `files` to the consumer (leader only).
        let mut consume = |t: u64, files: &[PathBuf]| -> Result<()> {
            let Some(c) = consumer.as_mut() else { return Ok(()) };
            let mut rows = gathered.borrow_mut().remove(&t).unwrap_or_default();
            if let Some((_, w)) = recorded.borrow().range(..=t).next_back() {
                let at = PathBuf::from(format!("epoch {t}"));
                rows = rows.iter().map(|b| w.apply(b, &at)).collect::<Result<_>>()?;
            }
            c.consume(files, rows)?;
            match &job {
                Job::Watch { snapshot_every, .. } if *snapshot_every > 0 => {
                    if (t + 1).is_multiple_of(*snapshot_every) {
                        c.snapshot(t, &consumer_dir)?;
                        mark_consumed(&consumer_dir, t)?;
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        };
        match &job {
            Job::Reprocess { inputs, .. } => {
                if leader {
                    for f in inputs {
                        announce.send(f.display().to_string());
                    }
                    report.epochs = 1;
                }
                announce.close();
                while !probe.done() {
                    worker.step_or_park(None);
                }
                commit_done(&mut report)?;
                if !e.is_set() {
                    consume(0, inputs)?;
                }
            }
            Job::Watch { dir, poll, idle_exit, max_files, import, compact_every, .. } => {
                if !leader {
                    announce.close();
                    while !probe.done() {
                        worker.step_or_park(Some(Duration::from_millis(50)));
                        commit_done(&mut report)?;
                    }
                } else {
                    let mut watcher = watch::Watcher::new(dir.clone(), layout.clone(), import.clone());
                    let log = IngestLog::new(&output);
                    let mut last_new = Instant::now();
                    let mut compactor = compactor::Compactor::new(*compact_every, output.clone());
                    let mut next = next_epoch;
                    announce.advance_to(next);
                    for landed in &seen_before {
                        watcher.mark_seen(landed.clone());
                    }
                    // Each logged file is replayed as its own epoch again, so that the grouped
                    // state (and a consumer) sees exactly what it saw the first time.
                    if !replay.is_empty() {
                        eprintln!("watch: replaying {} file(s) ingested before a restart", replay.len());
                    }
                    for (t, file, landed) in &replay {
                        announce.advance_to(*t);
                        announce.send(file.display().to_string());
                        watcher.mark_seen(landed.clone());
                        next = t + 1;
                        announce.advance_to(next);
                        while probe.less_than(&next) && !e.is_set() {
                            worker.step_or_park(Some(Duration::from_millis(1)));
                        }
                        if e.is_set() {
                            break;
                        }
                        consume(*t, std::slice::from_ref(file))?;
                    }
                    let mut ingested = 0usize;
                    loop {
                        for ready in watcher.poll(&mut report.rejected)? {
                            let file = &ready.file;
                            let started = Instant::now();
                            let t = next;
                            announce.send(file.display().to_string());
                            next += 1;
                            announce.advance_to(next);
                            while probe.less_than(&next) && !e.is_set() {
                                worker.step_or_park(Some(Duration::from_millis(1)));
                            }
                            commit_done(&mut report)?;
                            if e.is_set() {
                                break;
                            }
                            consume(t, std::slice::from_ref(file))?;
                            log.record(t, &ready)?;
                            ingested += 1;
                            if let Some(c) = compactor.as_mut() {
                                c.logged(t, ingested as u64)?;
                            }
                            eprintln!(
                                "watch: epoch {t} ({}) done in {:.1} ms",
                                file.display(),
                                started.elapsed().as_secs_f64() * 1e3
                            );
                            last_new = Instant::now();
                            if max_files.is_some_and(|m| ingested >= m) {
                                break;
                            }
                        }
                        let full = max_files.is_some_and(|m| ingested >= m);
                        if e.is_set() || full || idle_exit.is_some_and(|d| last_new.elapsed() >= d) {
                            break;
                        }
                        worker.step_or_park(Some(*poll));
                        commit_done(&mut report)?;
                    }
                    report.epochs = ingested as u64;
                    announce.close();
                    while !probe.done() {
                        worker.step_or_park(Some(Duration::from_millis(10)));
                    }
                    commit_done(&mut report)?;
                    if let Some(c) = compactor.as_mut() {
                        c.wait()?;
                    }
                }
            }
        }
        if let Some(c) = consumer.as_mut().filter(|_| !e.is_set()) {
            c.finish()?;
        }
        Ok::<RunReport, Error>(report)
    })
    .map_err(Error::Dataflow)?;
    let mut total = RunReport::default();
    for r in guards.join() {
        let r = r.map_err(Error::Dataflow)??;
        total.rows_written += r.rows_written;
        total.parts += r.parts;
        total.epochs = total.epochs.max(r.epochs);
        total.rejected.extend(r.rejected);
    }
    match errors.take() {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

mod watch;
mod whole_dataset;

/// The marker of a consumer snapshot of epoch `t` that is complete.
fn consumer_mark(t: u64) -> String {
    format!("done.{t:012}")
}

/// Marks the consumer snapshot of epoch `t` in `dir` complete, keeping the two latest marks.
/// The epochs whose consumer snapshot is complete (marked done), ascending.
fn consumed_epochs(dir: &std::path::Path) -> Vec<u64> {
    let names = std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.file_name());
    let mut out: Vec<u64> = names.filter_map(|n| n.to_str()?.strip_prefix("done.")?.parse().ok()).collect();
    out.sort_unstable();
    out
}

fn mark_consumed(dir: &std::path::Path, t: u64) -> Result<()> {
    crate::store::write_atomically(dir, &consumer_mark(t), b"")?;
    crate::store::keep_latest_epochs(dir, 2, |name| name.strip_prefix("done.")?.parse().ok())
}

/// Stage outputs gathered on the leader, by epoch.
type Gathered = Rc<RefCell<BTreeMap<u64, Vec<RecordBatch>>>>;

/// Concatenates `batches` and sorts the rows by `episode_id`, so that what a learner does with
/// them depends neither on the number of workers nor on arrival order.
pub(crate) fn sorted_by_episode(batches: &[RecordBatch]) -> Result<RecordBatch> {
    let schema = batches.first().map(|b| b.schema()).ok_or_else(|| Error::Usage("no rows to sort".into()))?;
    let all = arrow::compute::concat_batches(&schema, batches)?;
    let ids = all
        .column_by_name("episode_id")
        .and_then(|c| arrow::array::AsArray::as_string_opt::<i32>(c))
        .ok_or_else(|| Error::Usage("rows have no utf8 episode_id".into()))?;
    let mut order: Vec<u32> = (0..all.num_rows() as u32).collect();
    order.sort_by(|&a, &b| ids.value(a as usize).cmp(ids.value(b as usize)));
    Ok(arrow::compute::take_record_batch(&all, &arrow::array::UInt32Array::from(order))?)
}

/// Sends every output batch to worker 0 and keeps it there under its epoch. `probe` is attached
/// after the exchange, so once it passes an epoch every batch of that epoch has arrived.
fn gather_to_leader(out: Stream<'_, u64, Vec<Batch>>, probe: &ProbeHandle<u64>, gathered: Gathered) {
    let arrived = out.map(|b| (0u64, b)).exchange(|(w, _)| *w).probe_with(probe);
    arrived.sink(Pipeline, "GatherToLeader", move |(input, _)| {
        input.for_each_stamp(|cap, data| {
            let t = *cap.least().expect("a u64 stamp has a least time");
            let mut g = gathered.borrow_mut();
            g.entry(t)
                .or_default()
                .extend(data.flat_map(|c| c.drain(..)).map(|(_, b)| b.rows).filter(|r| r.num_rows() > 0));
        });
    });
}

/// Every worker reads its shard of every announced file.
fn read_files<'s>(
    files: Stream<'s, u64, Vec<String>>,
    layout: Arc<InputLayout>,
    errors: ErrorSlot,
    index: usize,
    peers: usize,
    on_rows: Arc<dyn Fn(u64) + Send + Sync>,
) -> Stream<'s, u64, Vec<Batch>> {
    files
        .unary(Pipeline, "ReadShards", move |_, _| {
            move |input, output| {
                input.for_each_stamp(|cap, data| {
                    let mut session = output.session(&cap);
                    for file in data.flat_map(|c| c.drain(..)) {
                        let path = PathBuf::from(&file);
                        match layout.read_shard(&path, index, peers) {
                            Ok(batches) => {
                                on_rows(batches.iter().map(|b| b.num_rows() as u64).sum());
                                let source: Arc<str> = file.into();
                                session.give_iterator(
                                    batches.into_iter().map(|rows| Batch { rows, source: source.clone() }),
                                );
                            }
                            Err(err) => errors.set(err),
                        }
                    }
                });
            }
        })
        .container::<Vec<Batch>>()
}

/// Renders the plan's stages: runs of local stages as one map, grouped stages via [`grouped`]
/// (`scope`: see [`grouped::Scope`]), and the stage of `deferral` via [`deferred`].
/// With `keep` (the output's columns), rows entering a grouped stage are first cut down to `keep`
/// and what this and later stages read, so that the grouped stage's exchange moves no column that
/// nothing downstream uses.
fn render<'s>(
    rows: Stream<'s, u64, Vec<Batch>>,
    plan: Arc<Plan>,
    errors: ErrorSlot,
    scope: Scope,
    keep: Option<&[String]>,
    deferral: Option<(crate::pipeline::deferral::Deferred, deferred::Recorded, Rederive)>,
    steps: Option<model_step::StepRequests>,
) -> Stream<'s, u64, Vec<Batch>> {
    /// A piece of the stage list, rendered as one operator chain.
    enum Segment {
        /// Local stages in a row: one map.
        Local(Vec<usize>),
        /// A grouped stage and the local stages after it.
        Grouped(usize, Vec<usize>),
        /// A model step.
        Model(usize),
    }
    let mut segments: Vec<Segment> = Vec::new();
    for (i, st) in plan.stages.iter().enumerate() {
        match (&st.op, segments.last_mut()) {
            (Op::Grouped(_), _) => segments.push(Segment::Grouped(i, Vec::new())),
            (Op::Model(_), _) => segments.push(Segment::Model(i)),
            (Op::Local(_), Some(Segment::Grouped(_, run) | Segment::Local(run))) => run.push(i),
            (Op::Local(_), _) => segments.push(Segment::Local(vec![i])),
        }
    }
    let mut stream = rows;
    for segment in segments {
        stream = match segment {
            Segment::Local(run) => render_local(stream, plan.clone(), run, errors.clone()),
            Segment::Model(i) => match &steps {
                Some(requests) => model_step::render(stream, plan.clone(), i, requests.clone(), errors.clone()),
                None => unreachable!("dataflow::run refuses plans with model steps"),
            },
            Segment::Grouped(g, after) => {
                if let Some(keep) = keep {
                    let mut live = keep.to_vec();
                    for column in plan.stages[g..].iter().flat_map(|s| s.read.values()) {
                        if !live.contains(column) {
                            live.push(column.clone());
                        }
                    }
                    stream = stream.map_in_place(move |b| b.rows = batch::select(&b.rows, &live));
                }
                match &deferral {
                    Some((d, recorded, rederive)) if d.stage == g => deferred::render(
                        stream,
                        plan.clone(),
                        d.clone(),
                        recorded.clone(),
                        rederive.clone(),
                        errors.clone(),
                    ),
                    _ => grouped::render_grouped(stream, plan.clone(), g, after, errors.clone(), scope.clone()),
                }
            }
        };
    }
    stream
}

/// The local stages `run` of `plan`, in order, on each batch where it is.
fn render_local<'s>(
    stream: Stream<'s, u64, Vec<Batch>>,
    plan: Arc<Plan>,
    run: Vec<usize>,
    errors: ErrorSlot,
) -> Stream<'s, u64, Vec<Batch>> {
    stream
        .unary(Pipeline, "LocalStages", move |_, _| {
            move |input, output| {
                input.for_each_stamp(|cap, data| {
                    let mut session = output.session(&cap);
                    let stages: Vec<_> = run.iter().map(|&i| &plan.stages[i]).collect();
                    for b in data.flat_map(|c| c.drain(..)) {
                        match local::run_local(&stages, b.rows, &b.source) {
                            Ok(rows) => session.give(Batch { rows, source: b.source }),
                            Err(err) => errors.set(err),
                        }
                    }
                });
            }
        })
        .container::<Vec<Batch>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(pipeline: &str, columns: Columns) -> Option<Vec<String>> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines").join(pipeline);
        columns.kept(&crate::pipeline::load(&path).unwrap())
    }

    #[test]
    fn final_columns_leave_out_what_a_later_stage_reads() {
        let rpp = "reinforce_pp_advantages.toml";
        assert_eq!(kept(rpp, Columns::All), None);
        assert_eq!(kept(rpp, Columns::Outputs).unwrap(), ["episode_id", "returns", "advantages"]);
        assert_eq!(kept(rpp, Columns::Final).unwrap(), ["episode_id", "advantages"], "whitening reads returns");
        // GAE's advantages are rewritten in place by the whitening: kept once, as its result.
        let poad = "poad_advantages.toml";
        assert_eq!(kept(poad, Columns::Final).unwrap(), ["episode_id", "action_end", "returns", "advantages"]);
        let lp = "loop_advantages.toml";
        assert_eq!(kept(lp, Columns::Final).unwrap(), ["episode_id", "keep", "advantages"]);
    }
}
