//! A model-bound stage of a training graph (`values`, `discriminator_reward`, `implicit_reward`)
//! as a dataflow operator: every row of an epoch goes to worker 0; once the frontier passes the
//! epoch, the rows, sorted by `episode_id`, are posted as a request that the loop driving the
//! dataflow answers with the driver that owns the models ([`StepRequests::serve`]); the answer
//! wakes the operator, which spreads the returned rows over the workers by `hash(episode_id)`
//! for the stages after it.
//!
//! Invariants: the driver sees an epoch's rows all at once and in an order that does not depend
//! on the number of workers or processes or on arrival order (a reward model trains on them, so
//! its result may depend on their order); the operator holds the epoch's capability until the
//! answer is in, so no downstream stage sees rows the step has not annotated; the models are
//! only ever called by the driving loop, on its thread, never from inside an operator.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use arrow::array::RecordBatch;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Capability, Exchange};
use timely::dataflow::Stream;
use timely::scheduling::Activator;

use super::batch::spread_by_episode;
use super::{sorted_by_episode, Batch, Driver, ErrorSlot};
use crate::error::{Error, Result};
use crate::pipeline::Plan;

/// The model steps the operators of one worker ask for, and their answers.
#[derive(Clone, Default)]
pub(super) struct StepRequests(Rc<RefCell<Mailbox>>);

#[derive(Default)]
struct Mailbox {
    asked: VecDeque<Request>,
    answers: BTreeMap<(String, u64), Result<RecordBatch>>,
    wake: BTreeMap<String, Activator>,
}

/// One model step on one epoch's rows.
struct Request {
    stage: String,
    op: String,
    epoch: u64,
    rows: RecordBatch,
}

impl StepRequests {
    /// Answers every waiting request with `driver`, in the order they were asked.
    pub(super) fn serve(&self, driver: &mut dyn Driver) {
        loop {
            let next = self.0.borrow_mut().asked.pop_front();
            let Some(r) = next else { return };
            let rows = driver.model_step(r.epoch, &r.op, r.rows).map_err(|e| Error::stage(&r.stage, e));
            self.answer(r.stage, r.epoch, rows);
        }
    }

    /// Answers every waiting request with an error: nothing is computed after a failure.
    pub(super) fn cancel(&self) {
        loop {
            let next = self.0.borrow_mut().asked.pop_front();
            let Some(r) = next else { return };
            let stopped = Err(Error::stage(&r.stage, "not run: the dataflow stopped on an earlier error"));
            self.answer(r.stage, r.epoch, stopped);
        }
    }

    fn answer(&self, stage: String, epoch: u64, rows: Result<RecordBatch>) {
        let mut m = self.0.borrow_mut();
        if let Some(a) = m.wake.get(&stage) {
            a.activate();
        }
        m.answers.insert((stage, epoch), rows);
    }
}

/// Renders stage `stage` of `plan` (a model step) on `rows`.
pub(super) fn render<'s>(
    rows: Stream<'s, u64, Vec<Batch>>,
    plan: Arc<Plan>,
    stage: usize,
    requests: StepRequests,
    errors: ErrorSlot,
) -> Stream<'s, u64, Vec<Batch>> {
    let st = &plan.stages[stage];
    let (id, op) = (st.id.clone(), st.op_name.clone());
    let scope = rows.scope();
    let peers = scope.peers();
    rows.map(|b| (0u64, b))
        .exchange(|(w, _)| *w)
        .unary_frontier(Pipeline, &format!("ModelStep[{id}]"), move |_, info| {
            requests.0.borrow_mut().wake.insert(id.clone(), scope.activator_for(info.address.clone()));
            let mut arriving: BTreeMap<u64, (Capability<u64>, Vec<RecordBatch>)> = BTreeMap::new();
            let mut asked: BTreeMap<u64, Capability<u64>> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let t = *cap.least().expect("a u64 stamp has a least time");
                    let entry = arriving.entry(t).or_insert_with(|| (cap.delayed(&t, 0), Vec::new()));
                    entry.1.extend(data.flat_map(|c| c.drain(..)).map(|(_, b)| b.rows).filter(|r| r.num_rows() > 0));
                });
                while let Some((&t, _)) = arriving.first_key_value() {
                    if frontier.less_equal(&t) {
                        break;
                    }
                    let (cap, parts) = arriving.remove(&t).expect("the key was just seen");
                    if parts.is_empty() || errors.is_set() {
                        continue;
                    }
                    match sorted_by_episode(&parts) {
                        Ok(rows) => {
                            let request = Request { stage: id.clone(), op: op.clone(), epoch: t, rows };
                            requests.0.borrow_mut().asked.push_back(request);
                            asked.insert(t, cap);
                        }
                        Err(e) => errors.set(e),
                    }
                }
                let answered: Vec<u64> = asked
                    .keys()
                    .copied()
                    .filter(|&t| requests.0.borrow().answers.contains_key(&(id.clone(), t)))
                    .collect();
                for t in answered {
                    let cap = asked.remove(&t).expect("the key was just seen");
                    let rows = requests.0.borrow_mut().answers.remove(&(id.clone(), t)).expect("checked above");
                    match rows.and_then(|rows| spread_by_episode(rows, peers, &id)) {
                        Ok(shares) => output.session(&cap).give_iterator(shares.into_iter()),
                        Err(e) => errors.set(e),
                    }
                }
            }
        })
        .exchange(|(w, _): &(u64, Batch)| *w)
        .map(|(_, b)| b)
        .container::<Vec<Batch>>()
}
