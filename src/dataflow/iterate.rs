//! The training loop as a dataflow whose timestamps are iterations (policy versions).
//!
//! ```text
//! leader: rollout(i) ─► spread by hash(episode_id) ─► the plan's stages ─► gather on worker 0
//!                                 (a model step: gather on worker 0 ─► driver ─► spread again)
//!                                                                              │ frontier passes i
//! leader: learn(i, rows) ◄─────────────────────────────────────────────────────┘ then rollout(i + 1)
//! ```
//! Invariants:
//! - The [`Driver`] (the policy, its optimiser, the environment) lives on worker 0 of process 0
//!   only; every other worker runs the stages on its share of the rows. Rollouts of iteration
//!   `i + 1` start only after the learner has consumed every row of iteration `i`, so every row of
//!   iteration `i` was produced by policy version `i − 1`: staleness is exactly one version.
//! - Each iteration is its own dataset for the grouped stages: groups and batch statistics never
//!   span iterations, and no row of an earlier iteration is re-emitted.
//! - A model step (a reward model, the critic) sits in the graph where the pipeline puts it: the
//!   iteration's rows that reach it are gathered on worker 0, where the loop hands them to the
//!   driver ([`Driver::model_step`]) between steps of the dataflow, and what it returns is spread
//!   again. The driver is called from the loop only, so its models never leave the thread that
//!   drives (the device thread's caller in a run, the device thread itself under `--train`).
//! - The learner receives an iteration's rows sorted by `episode_id`, so what it does cannot
//!   depend on the number of workers or processes, or on arrival order.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use timely::communication::allocator::thread::Thread;
use timely::communication::Allocator;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Exchange, Input};
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

use super::batch::spread_by_episode;
use super::model_step::StepRequests;
use super::{gather_to_leader, render, sorted_by_episode, Batch, Cluster, ErrorSlot, Gathered, Scope};
use crate::error::{Error, Result};
use crate::pipeline::Plan;

/// What the loop calls on the leader: make an iteration's rows, apply the graph's model steps
/// where the stages reach them, then learn from the stage outputs.
pub trait Driver {
    /// The episodes of `iteration` (in the trajectory schema), made with the current policy.
    fn rollout(&mut self, iteration: u64) -> Result<RecordBatch>;
    /// The model step `op` (a [`crate::stages::Operator::Model`] stage) on every row of
    /// `iteration` that reaches it, sorted by `episode_id`.
    fn model_step(&mut self, iteration: u64, op: &str, rows: RecordBatch) -> Result<RecordBatch>;
    /// Consumes the stage outputs of `iteration`, sorted by `episode_id`.
    fn learn(&mut self, iteration: u64, rows: RecordBatch) -> Result<()>;
}

/// The stage outputs of `rows` as one iteration `epoch` of [`iterate`] makes them (on one worker:
/// the outputs do not depend on the number of workers), sorted by `episode_id`; the model steps
/// are applied by `model_step(op, rows)` on the calling thread. The stream learner runs each
/// update's groups through the graph this way.
pub fn stage_outputs(
    plan: Arc<Plan>,
    epoch: u64,
    rows: RecordBatch,
    model_step: &mut dyn FnMut(&str, RecordBatch) -> Result<RecordBatch>,
) -> Result<RecordBatch> {
    /// A driver with one iteration: `rows` in, the stage outputs kept.
    struct Once<'a> {
        rows: Option<RecordBatch>,
        model_step: &'a mut dyn FnMut(&str, RecordBatch) -> Result<RecordBatch>,
        out: Option<RecordBatch>,
    }
    impl Driver for Once<'_> {
        fn rollout(&mut self, _: u64) -> Result<RecordBatch> {
            self.rows.take().ok_or_else(|| Error::Usage("stage outputs: one iteration only".into()))
        }
        fn model_step(&mut self, _: u64, op: &str, rows: RecordBatch) -> Result<RecordBatch> {
            (self.model_step)(op, rows)
        }
        fn learn(&mut self, _: u64, rows: RecordBatch) -> Result<()> {
            self.out = Some(rows);
            Ok(())
        }
    }
    let mut once = Once { rows: Some(rows), model_step, out: None };
    // One worker on this thread, as `timely::execute_directly` makes it, but with a borrowed driver.
    let mut worker =
        Worker::new(timely::WorkerConfig::default(), Allocator::Thread(Thread::default()), Some(Instant::now()));
    let errors = ErrorSlot::default();
    let outcome = drive(&mut worker, plan, epoch..epoch + 1, Some(&mut once), errors.clone());
    while worker.has_dataflows() {
        worker.step_or_park(None);
    }
    if let Some(e) = errors.take() {
        return Err(e);
    }
    outcome?;
    once.out.ok_or_else(|| Error::Usage("stage outputs: the stages returned no rows".into()))
}

/// Runs iterations `iterations` of `plan` on `cluster`; `driver` is required in the process that
/// hosts worker 0 (the leader) and ignored elsewhere.
pub fn iterate(
    plan: Arc<Plan>,
    cluster: &Cluster,
    iterations: std::ops::Range<u64>,
    driver: Option<Box<dyn Driver + Send>>,
) -> Result<()> {
    if cluster.is_leader() && driver.is_none() {
        return Err(Error::Usage("the leader process needs a driver".into()));
    }
    let config = cluster.to_timely()?;
    let driver = Arc::new(Mutex::new(driver));
    let errors = ErrorSlot::default();
    let e = errors.clone();
    let guards = timely::execute(config, move |worker| {
        let mut mine = if worker.index() == 0 { driver.lock().unwrap_or_else(|p| p.into_inner()).take() } else { None };
        let mine = mine.as_mut().map(|d| d.as_mut() as &mut dyn Driver);
        drive(worker, plan.clone(), iterations.clone(), mine, e.clone())
    })
    .map_err(Error::Dataflow)?;
    let mut first = None;
    for r in guards.join() {
        if let Err(err) = r.map_err(Error::Dataflow)? {
            first.get_or_insert(err);
        }
    }
    match (errors.take(), first) {
        (Some(e), _) | (None, Some(e)) => Err(e),
        (None, None) => Ok(()),
    }
}

/// One worker's part of [`iterate`]: build the dataflow; on the leader (`driver` given), per
/// iteration: rollout, send, step the dataflow (serving its model steps) until the iteration is
/// through, learn.
fn drive(
    worker: &mut Worker,
    plan: Arc<Plan>,
    iterations: std::ops::Range<u64>,
    driver: Option<&mut dyn Driver>,
    e: ErrorSlot,
) -> Result<()> {
    let peers = worker.peers();
    let probe = ProbeHandle::new();
    let gathered = Gathered::default();
    let requests = StepRequests::default();
    let mut input = worker.dataflow::<u64, _, _>(|scope| {
        let (handle, rows) = scope.new_input::<Vec<(u64, Batch)>>();
        let rows = rows.exchange(|(w, _)| *w).unary(Pipeline, "Unwrap", |_, _| {
            |input, output| {
                input.for_each_stamp(|cap, data| {
                    output.session(&cap).give_iterator(data.flat_map(|c| c.drain(..)).map(|(_, b)| b));
                })
            }
        });
        let staged = render(
            rows.container::<Vec<Batch>>(),
            plan.clone(),
            e.clone(),
            Scope::Epoch,
            None,
            None,
            Some(requests.clone()),
        );
        gather_to_leader(staged, &probe, gathered.clone());
        handle
    });
    let Some(driver) = driver else {
        input.close();
        while !probe.done() {
            worker.step_or_park(Some(Duration::from_millis(20)));
            requests.cancel(); // only worker 0, the leader's, gets model steps
        }
        return Ok(());
    };
    let mut outcome = Ok(());
    for it in iterations {
        input.advance_to(it);
        let rows = match driver.rollout(it) {
            Ok(rows) => rows,
            Err(err) => {
                outcome = Err(err);
                break;
            }
        };
        match spread_by_episode(rows, peers, "rollout") {
            Ok(parts) => {
                for p in parts {
                    input.send(p);
                }
            }
            Err(err) => {
                outcome = Err(err);
                break;
            }
        }
        input.advance_to(it + 1);
        while probe.less_than(&(it + 1)) && !e.is_set() {
            worker.step_or_park(Some(Duration::from_millis(1)));
            requests.serve(driver);
        }
        if e.is_set() {
            break;
        }
        let batches = gathered.borrow_mut().remove(&it).unwrap_or_default();
        if let Err(err) = sorted_by_episode(&batches).and_then(|rows| driver.learn(it, rows)) {
            outcome = Err(err);
            break;
        }
    }
    input.close();
    while !probe.done() {
        worker.step_or_park(Some(Duration::from_millis(5)));
        // After an error nothing more is computed: a waiting model step is answered with one.
        requests.cancel();
    }
    outcome
}
