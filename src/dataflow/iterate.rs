//! The training loop as a dataflow whose timestamps are iterations (policy versions).
//!
//! ```text
//! leader: rollout(i) ─► spread by hash(episode_id) ─► the plan's stages ─► gather on worker 0
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
//! - The learner receives an iteration's rows sorted by `episode_id`, so what it does cannot
//!   depend on the number of workers or processes, or on arrival order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::RecordBatch;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Exchange, Input};
use timely::dataflow::ProbeHandle;

use super::batch::episode_ids;
use super::{gather_to_leader, render, sorted_by_episode, Batch, Cluster, ErrorSlot, Gathered, Scope};
use crate::error::{Error, Result};
use crate::pipeline::Plan;

/// What the loop calls on the leader: make an iteration's rows, then learn from them.
pub trait Driver: Send {
    /// The episodes of `iteration` (in the trajectory schema), made with the current policy.
    fn rollout(&mut self, iteration: u64) -> Result<RecordBatch>;
    /// Consumes the stage outputs of `iteration`, sorted by `episode_id`.
    fn learn(&mut self, iteration: u64, rows: RecordBatch) -> Result<()>;
}

/// The stage outputs of `rows` as one iteration `epoch` of [`iterate`] makes them (on one worker:
/// the outputs do not depend on the number of workers), sorted by `episode_id`. The stream
/// learner applies the stages this way to each update's groups, after the model steps.
pub fn stage_outputs(plan: Arc<Plan>, epoch: u64, rows: RecordBatch) -> Result<RecordBatch> {
    /// A driver with one iteration: `rows` in, the stage outputs kept.
    struct Once {
        rows: Option<RecordBatch>,
        out: Arc<Mutex<Option<RecordBatch>>>,
    }
    impl Driver for Once {
        fn rollout(&mut self, _: u64) -> Result<RecordBatch> {
            self.rows.take().ok_or_else(|| Error::Usage("stage outputs: one iteration only".into()))
        }
        fn learn(&mut self, _: u64, rows: RecordBatch) -> Result<()> {
            *self.out.lock().unwrap_or_else(|p| p.into_inner()) = Some(rows);
            Ok(())
        }
    }
    let out = Arc::new(Mutex::new(None));
    let driver = Once { rows: Some(rows), out: out.clone() };
    iterate(plan, &Cluster::default(), epoch..epoch + 1, Some(Box::new(driver)))?;
    let rows = out.lock().unwrap_or_else(|p| p.into_inner()).take();
    rows.ok_or_else(|| Error::Usage("stage outputs: the stages returned no rows".into()))
}

/// Splits `rows` into one batch per worker by `hash(episode_id)`.
fn spread(rows: &RecordBatch, peers: usize) -> Result<Vec<(u64, Batch)>> {
    if rows.column_by_name("episode_id").is_none() {
        return Err(Error::Usage("rollouts have no episode_id".into()));
    }
    Batch { rows: rows.clone(), source: "rollout".into() }.split_by_keys(&episode_ids(rows), peers)
}

/// Runs iterations `iterations` of `plan` on `cluster`; `driver` is required in the process that
/// hosts worker 0 (the leader) and ignored elsewhere.
pub fn iterate(
    plan: Arc<Plan>,
    cluster: &Cluster,
    iterations: std::ops::Range<u64>,
    driver: Option<Box<dyn Driver>>,
) -> Result<()> {
    if cluster.is_leader() && driver.is_none() {
        return Err(Error::Usage("the leader process needs a driver".into()));
    }
    let config = cluster.to_timely()?;
    let driver = Arc::new(Mutex::new(driver));
    let errors = ErrorSlot::default();
    let e = errors.clone();
    let guards = timely::execute(config, move |worker| {
        let peers = worker.peers();
        let probe = ProbeHandle::new();
        let gathered = Gathered::default();
        let mut input = worker.dataflow::<u64, _, _>(|scope| {
            let (handle, rows) = scope.new_input::<Vec<(u64, Batch)>>();
            let rows = rows.exchange(|(w, _)| *w).unary(Pipeline, "Unwrap", |_, _| {
                |input, output| {
                    input.for_each_stamp(|cap, data| {
                        output.session(&cap).give_iterator(data.flat_map(|c| c.drain(..)).map(|(_, b)| b));
                    })
                }
            });
            gather_to_leader(
                render(rows.container::<Vec<Batch>>(), plan.clone(), e.clone(), Scope::Epoch, None, None),
                &probe,
                gathered.clone(),
            );
            handle
        });
        let mut mine = if worker.index() == 0 { driver.lock().unwrap_or_else(|p| p.into_inner()).take() } else { None };
        let Some(driver) = mine.as_mut() else {
            input.close();
            while !probe.done() {
                worker.step_or_park(Some(Duration::from_millis(20)));
            }
            return Ok(());
        };
        let mut outcome = Ok(());
        for it in iterations.clone() {
            input.advance_to(it);
            let rows = match driver.rollout(it) {
                Ok(rows) => rows,
                Err(err) => {
                    outcome = Err(err);
                    break;
                }
            };
            match spread(&rows, peers) {
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
        }
        outcome
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
