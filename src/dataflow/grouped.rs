//! Rendering a grouped stage: group statistics in a differential arrangement, joined back to the
//! rows they belong to.
//!
//! ```text
//! rows ─► partition by hash(group) ─► exchange ─► [watch: open_groups, each touched group whole]
//!                                               ─┬─► contributions (+new, −old) ─► reduce per group (differential)
//!                                                │                                       │ summaries, exchanged to the same worker
//!                                                └─► GroupJoin ◄─────────────────────────┘
//!                                                      │ for every group of epoch t, once both inputs passed t:
//!                                                      ▼ its rows with the stage's columns, then the next local stages
//! ```
//! Invariants:
//! - A group's rows, its contributions and its summary all live on the worker `hash(group) % peers`,
//!   so the join never waits on another worker's state. A whole-dataset group (batch-scope
//!   whitening) is the exception: rows stay spread by `hash(episode_id)` and the one summary is
//!   broadcast to every worker, so that work stays parallel.
//! - Rows are upserts keyed by `episode_id`: a row that arrives again replaces the earlier one,
//!   and its old contribution is retracted. Downstream stages therefore see, for each epoch, the
//!   current version of every row whose group changed — never a stale row, never a duplicate.
//! - [`Scope`] says how groups meet epochs. Under `watch` ([`Scope::Stored`]) a group's rows stay
//!   in a row file on disk and each touched group is handed to the stage whole, so, as for
//!   training iterations ([`Scope::Epoch`]), the differential state and the join hold one open
//!   epoch: contributions are retracted at t + 1 and the arrangement compacts to nothing behind
//!   the frontier. Memory then grows with the number of stored rows only by the row file's index.
//! - The reduce sees a group's contributions in sorted order with multiplicities, whatever the
//!   arrival order or worker count, so summaries (and outputs) are bit-identical across `-w N`
//!   and across incremental vs one-shot runs.
//! - Work per epoch is proportional to the groups it touches, not to the dataset.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use differential_dataflow::AsCollection;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Capability, Exchange};
use timely::dataflow::Stream;

use super::batch::{episode_ids, Batch};
use super::cluster::stable_hash;
use super::local::{attach, run_local};
use super::open_groups::Storage;
use super::whole_dataset::Rederive;
use super::ErrorSlot;
use crate::error::{Error, Result};
use crate::pipeline::Plan;
use crate::stages::{GroupedOp, Operator as Op, StageInput, Stat, Summary};

fn grouped_op(plan: &Plan, stage: usize) -> &dyn GroupedOp {
    match &plan.stages[stage].op {
        Op::Grouped(g) => g.as_ref(),
        Op::Local(_) | Op::Model(_) => unreachable!("render_grouped is only called on grouped stages"),
    }
}

/// The group key of every row (empty strings for a whole-dataset group). With `epoch`, keys are
/// scoped to that epoch (`"{epoch}/{group}"`): groups, and the whole dataset, never span epochs.
fn group_keys(plan: &Plan, stage: usize, rows: &RecordBatch, epoch: Option<u64>) -> Result<Vec<String>> {
    let keys = unscoped_keys(plan, stage, rows)?;
    Ok(match epoch {
        Some(t) => keys.into_iter().map(|k| format!("{t}/{k}")).collect(),
        None => keys,
    })
}

fn unscoped_keys(plan: &Plan, stage: usize, rows: &RecordBatch) -> Result<Vec<String>> {
    let st = &plan.stages[stage];
    let Some(logical) = grouped_op(plan, stage).group_column() else {
        return Ok(vec![String::new(); rows.num_rows()]);
    };
    let name = st.read.get(logical).map(String::as_str).unwrap_or(logical);
    let col = rows
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| Error::stage(&st.id, format!("group column '{name}' is missing or not utf8")))?;
    Ok((0..col.len()).map(|i| if col.is_valid(i) { col.value(i).to_string() } else { String::new() }).collect())
}

/// A group key as arranged in differential: the whole-dataset group (and null groups), `""`,
/// becomes `None`, so that sorting its many contributions compares no strings.
fn arranged(key: &str) -> Option<String> {
    (!key.is_empty()).then(|| key.to_string())
}

/// Splits `rows` into one batch per owning worker: by group (unscoped, so that a group keeps its
/// worker across epochs), or by episode when the group is the whole dataset (its rows then stay
/// spread over all workers and only the summary moves).
fn partition(plan: &Plan, stage: usize, batch: Batch, peers: usize) -> Result<Vec<(u64, Batch)>> {
    let keys = match grouped_op(plan, stage).group_column() {
        Some(_) => unscoped_keys(plan, stage, &batch.rows)?,
        None => episode_ids(&batch.rows),
    };
    batch.split_by_keys(&keys, peers)
}

/// The worker owning group `key` (as arranged: scoped by epoch with `per_epoch`), which is the
/// worker [`partition`] sends its rows to.
fn owner(key: &str, per_epoch: bool, peers: usize) -> u64 {
    let group = if per_epoch { key.split_once('/').map_or(key, |(_, g)| g) } else { key };
    stable_hash(group.as_bytes()) % peers as u64
}

/// Rows routed to the worker that owns their group (tagged with that worker).
pub type Routed<'s> = Stream<'s, u64, Vec<(u64, Batch)>>;
/// Group summaries as differential updates, on the workers holding the groups' rows.
pub type Summaries<'s> = Stream<'s, u64, Vec<((String, Summary), u64, isize)>>;

/// How a grouped stage's groups relate to epochs.
#[derive(Clone, Debug)]
pub enum Scope {
    /// Groups span the whole job: rows are upserted into them as epochs go (`reprocess`, which
    /// has one epoch, and the statistic of a deferred whitening under `watch`, whose re-sent
    /// episodes are found again through [`Rederive`]).
    Job(Option<Rederive>),
    /// Every epoch is its own dataset (training iterations: a batch statistic covers one
    /// iteration's rows, and rows of earlier iterations are never re-emitted).
    Epoch,
    /// Groups span epochs, their rows stored on disk as [`Storage`] says and handed to the stage
    /// whole, each epoch its own dataset ([`super::open_groups`]; `watch`).
    Stored(Storage),
}

/// Renders grouped stage `stage` followed by the local stages `then` on `rows`.
pub fn render_grouped<'s>(
    rows: Stream<'s, u64, Vec<Batch>>,
    plan: Arc<Plan>,
    stage: usize,
    then: Vec<usize>,
    errors: ErrorSlot,
    scope: Scope,
) -> Stream<'s, u64, Vec<Batch>> {
    let per_epoch = !matches!(scope, Scope::Job(_));
    let (routed, summaries) = summarize(rows, plan.clone(), stage, errors.clone(), scope);
    join(routed, summaries, plan, stage, then, errors, per_epoch)
}

/// Steps 1–3: rows routed by group (and, with [`Scope::Stored`], each touched group reassembled),
/// and each group's summary kept up to date in differential.
pub fn summarize<'s>(
    rows: Stream<'s, u64, Vec<Batch>>,
    plan: Arc<Plan>,
    stage: usize,
    errors: ErrorSlot,
    scope: Scope,
) -> (Routed<'s>, Summaries<'s>) {
    let peers = rows.scope().peers();
    let per_epoch = !matches!(scope, Scope::Job(_));
    let id = plan.stages[stage].id.clone();

    // 1. Route every row to the worker that owns its group.
    let (p, e) = (plan.clone(), errors.clone());
    let routed = rows
        .unary(Pipeline, &format!("Partition[{id}]"), move |_, _| {
            move |input, output| {
                input.for_each_stamp(|cap, data| {
                    let mut session = output.session(&cap);
                    for batch in data.flat_map(|c| c.drain(..)) {
                        match partition(&p, stage, batch, peers) {
                            Ok(parts) => session.give_iterator(parts.into_iter()),
                            Err(err) => e.set(err),
                        }
                    }
                });
            }
        })
        .container::<Vec<(u64, Batch)>>()
        .exchange(|(worker, _)| *worker);
    let (routed, rederive) = match scope {
        Scope::Stored(storage) => {
            (super::open_groups::render(routed, plan.clone(), stage, storage, errors.clone()), None)
        }
        Scope::Job(rederive) => (routed, rederive),
        Scope::Epoch => (routed, None),
    };
    // A whole-dataset statistic: exact per-worker deltas, summed on every worker.
    if grouped_op(&plan, stage).group_column().is_none() {
        let summaries = super::whole_dataset::summaries(routed.clone(), plan, stage, errors, per_epoch, rederive);
        return (routed, summaries);
    }

    // 2. Contributions, as differential updates: +1 for a row's new contribution, −1 for the one it
    //    replaces. A contribution is tagged with its episode's hash, not its id: the reduce only
    //    needs each (tag, stat) with its multiplicity (two episodes sharing a hash and a stat add up
    //    to multiplicity 2, and a retraction cancels exactly one), and sorting u64s is far cheaper.
    //    With `per_epoch`, every epoch is its own dataset: its contributions are retracted at t + 1,
    //    once the epoch is complete, so that the arrangement holds only open epochs (and compacts
    //    to nothing behind the frontier) and no row is remembered past its epoch.
    let (p, e) = (plan.clone(), errors.clone());
    let contributions = routed
        .clone()
        .unary_frontier(Pipeline, &format!("Contributions[{id}]"), move |_, _| {
            // Per epoch (one entry, epoch 0, without `per_epoch`): each episode's current
            // contribution, and with `per_epoch` the capability to retract them at t + 1.
            let mut last: BTreeMap<u64, HashMap<String, (String, Stat)>> = BTreeMap::new();
            let mut open: BTreeMap<u64, Capability<u64>> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let t = *cap.least().expect("a u64 stamp has a least time");
                    if per_epoch {
                        open.entry(t).or_insert_with(|| cap.delayed(&t, 0));
                    }
                    let last = last.entry(if per_epoch { t } else { 0 }).or_default();
                    let mut session = output.session(&cap);
                    for (_, batch) in data.flat_map(|c| c.drain(..)) {
                        let st = &p.stages[stage];
                        let stats = grouped_op(&p, stage).contributions(&StageInput::new(&batch.rows, &st.read));
                        let (stats, keys) = match (stats, group_keys(&p, stage, &batch.rows, per_epoch.then_some(t))) {
                            (Ok(s), Ok(k)) => (s, k),
                            (Err(m), _) => {
                                e.set(Error::stage(&st.id, format!("{}: {m}", batch.source)));
                                continue;
                            }
                            (_, Err(err)) => {
                                e.set(err);
                                continue;
                            }
                        };
                        for ((ep, key), stat) in episode_ids(&batch.rows).into_iter().zip(keys).zip(stats) {
                            let (new, id) = ((key, stat), stable_hash(ep.as_bytes()));
                            match last.get(&ep) {
                                Some(old) if *old == new => continue,
                                Some(old) => session.give(((arranged(&old.0), (id, old.1)), t, -1isize)),
                                None => {}
                            }
                            session.give(((arranged(&new.0), (id, new.1)), t, 1isize));
                            last.insert(ep, new);
                        }
                    }
                });
                while let Some((&t, _)) = open.first_key_value() {
                    if frontier.less_equal(&t) {
                        break;
                    }
                    let cap = open.remove(&t).expect("the key was just seen").delayed(&(t + 1));
                    let mut session = output.session(&cap);
                    for (ep, (key, stat)) in last.remove(&t).unwrap_or_default() {
                        session.give(((arranged(&key), (stable_hash(ep.as_bytes()), stat)), t + 1, -1isize));
                    }
                }
            }
        })
        .container::<Vec<((Option<String>, (u64, Stat)), u64, isize)>>();

    // 3. Fold each group's contributions in a differential arrangement.
    let p = plan.clone();
    let summaries = contributions
        .as_collection()
        .reduce_named(&format!("Summarize[{id}]"), move |_group, vals: &[(&(u64, Stat), isize)], out| {
            let mut it = vals.iter().map(|(v, m)| (v.1, (*m).max(0) as usize));
            out.push((grouped_op(&p, stage).summarize(&mut it), 1isize));
        })
        .inner
        .map(|((group, summary), t, diff)| ((group.unwrap_or_default(), summary), t, diff));
    // A group's summary goes to the worker holding its rows.
    let summaries =
        summaries.exchange(move |((group, _), _, _): &((String, Summary), u64, isize)| owner(group, per_epoch, peers));
    (routed, summaries)
}

/// Step 4: summaries joined back to rows; every touched group's rows are emitted once the epoch is
/// complete, with the stage's columns and the local stages `then` applied. A group is emitted once,
/// at the epoch its rows arrived (every epoch is its own dataset with `per_epoch`, and `reprocess`
/// has one epoch; under `watch`, [`super::open_groups`] hands this stage each touched group whole),
/// so an epoch's rows, groups and summaries are dropped as soon as it is emitted.
fn join<'s>(
    routed: Routed<'s>,
    summaries: Summaries<'s>,
    plan: Arc<Plan>,
    stage: usize,
    then: Vec<usize>,
    errors: ErrorSlot,
    per_epoch: bool,
) -> Stream<'s, u64, Vec<Batch>> {
    let id = plan.stages[stage].id.clone();
    let p = plan;
    routed.binary_frontier(summaries, Pipeline, Pipeline, &format!("GroupJoin[{id}]"), move |_, _| {
        let mut pending: BTreeMap<u64, OpenEpoch> = BTreeMap::new();
        move |(in_rows, f_rows), (in_sum, f_sum), output| {
            in_rows.for_each_stamp(|cap, data| {
                let t = *cap.least().expect("a u64 stamp has a least time");
                let epoch = pending.entry(t).or_insert_with(|| OpenEpoch::new(cap.delayed(&t, 0)));
                for (_, batch) in data.flat_map(|c| c.drain(..)) {
                    let keys = match group_keys(&p, stage, &batch.rows, per_epoch.then_some(t)) {
                        Ok(k) => k,
                        Err(err) => {
                            errors.set(err);
                            continue;
                        }
                    };
                    let b = epoch.store.len();
                    for (r, (ep, key)) in episode_ids(&batch.rows).into_iter().zip(keys).enumerate() {
                        epoch.rows.entry(key).or_default().insert(ep, (b, r));
                    }
                    epoch.store.push(batch.rows);
                }
            });
            in_sum.for_each_stamp(|cap, data| {
                for ((group, summary), t, diff) in data.flat_map(|c| c.drain(..)) {
                    // Retractions only take back an earlier epoch's summaries (or, within an epoch,
                    // one that an addition replaces): nothing to emit.
                    if diff > 0 {
                        let epoch = pending.entry(t).or_insert_with(|| OpenEpoch::new(cap.delayed(&t, 0)));
                        epoch.summaries.insert(group, summary);
                    }
                }
            });
            while let Some((&t, _)) = pending.first_key_value() {
                if f_rows.less_equal(&t) || f_sum.less_equal(&t) {
                    break;
                }
                let epoch = pending.remove(&t).expect("the key was just seen");
                match emit(&p, stage, &then, &epoch) {
                    Ok(batches) => output.session(&epoch.cap).give_iterator(batches.into_iter()),
                    Err(err) => errors.set(err),
                }
            }
        }
    })
}

/// What the join holds of an epoch until both its inputs passed it.
struct OpenEpoch {
    cap: Capability<u64>,
    /// The batches its rows arrived in.
    store: Vec<RecordBatch>,
    /// Group -> episode -> (batch, row): the current row of each episode.
    rows: HashMap<String, BTreeMap<String, (usize, usize)>>,
    /// The epoch's group summaries (a whole-dataset summary is broadcast, under key "").
    summaries: HashMap<String, Summary>,
}

impl OpenEpoch {
    fn new(cap: Capability<u64>) -> OpenEpoch {
        OpenEpoch { cap, store: Vec::new(), rows: HashMap::new(), summaries: HashMap::new() }
    }
}

/// Builds the output of one epoch: the rows of every group, with the grouped stage's columns and
/// the following local stages applied. Rows are taken from the batches they arrived in (a whole
/// batch is reused as is, otherwise its rows are gathered), one output batch per arrived batch, so
/// nothing is copied row by row across batches.
fn emit(plan: &Plan, stage: usize, then: &[usize], epoch: &OpenEpoch) -> Result<Vec<Batch>> {
    let st = &plan.stages[stage];
    let mut per_batch: BTreeMap<usize, Vec<(u32, Summary)>> = BTreeMap::new();
    for (group, members) in &epoch.rows {
        let summary = epoch
            .summaries
            .get(group)
            .ok_or_else(|| Error::stage(&st.id, format!("group '{group}' has rows but no statistics")))?;
        for &(b, r) in members.values() {
            per_batch.entry(b).or_default().push((r as u32, *summary));
        }
    }
    let locals: Vec<_> = then.iter().map(|&i| &plan.stages[i]).collect();
    let mut out = Vec::with_capacity(per_batch.len());
    for (b, mut picked) in per_batch {
        picked.sort_unstable_by_key(|(r, _)| *r);
        let arrived = &epoch.store[b];
        let batch = if picked.len() == arrived.num_rows() {
            arrived.clone()
        } else {
            let idx = UInt32Array::from(picked.iter().map(|(r, _)| *r).collect::<Vec<_>>());
            arrow::compute::take_record_batch(arrived, &idx)?
        };
        let summaries: Vec<Summary> = picked.into_iter().map(|(_, s)| s).collect();
        let arrays = grouped_op(plan, stage)
            .apply(&StageInput::new(&batch, &st.read), &summaries)
            .map_err(|m| Error::stage(&st.id, m))?;
        let batch = attach(&st.id, &batch, &st.writes, arrays)?;
        out.push(Batch { rows: run_local(&locals, batch, "-")?, source: "-".into() });
    }
    Ok(out)
}
