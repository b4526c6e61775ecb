//! The output sink: buffers each worker's output batches by epoch and, once the input frontier
//! has passed an epoch (no more rows of it can arrive), writes them as one part file of the
//! output dataset. The part stays invisible until the driver commits it, which it does only when
//! the epoch completed on every worker without an error: a failed run leaves the output dataset
//! exactly as it was. A whitening recorded for the epoch ([`super::deferred`]) goes into the commit.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use arrow::array::RecordBatch;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use super::batch::Batch;
use super::deferred::Recorded;
use super::ErrorSlot;
use crate::store::{Commit, Dataset};

/// What this worker's sink has written: parts not yet committed, and the epoch below which every
/// epoch is written (or had nothing to write).
pub type Pending = Rc<RefCell<Written>>;

/// See [`Pending`].
#[derive(Default)]
pub struct Written {
    /// Parts written and not yet committed.
    pub commits: Vec<Commit>,
    /// Every epoch below this one is written.
    pub through: u64,
}

/// Renders the sink. With `keep`, only those columns are written; epochs in `committed` (replayed
/// by a restarted `watch` whose part of them this writer had committed) write nothing; an
/// epoch's whitening in `recorded` goes into its commit.
#[allow(clippy::too_many_arguments)]
pub fn write_parts<'s>(
    stream: Stream<'s, u64, Vec<Batch>>,
    dataset: Dataset,
    writer: String,
    schema_tag: String,
    keep: Option<Vec<String>>,
    committed: std::collections::HashSet<u64>,
    pending: Pending,
    recorded: Recorded,
    errors: ErrorSlot,
) {
    let mut stash: BTreeMap<u64, Vec<RecordBatch>> = BTreeMap::new();
    stream.sink(Pipeline, "WriteParts", move |(input, frontier)| {
        input.for_each_stamp(|cap, data| {
            let t = *cap.least().expect("a u64 stamp has a least time");
            let entry = stash.entry(t).or_default();
            for container in data {
                for b in container.drain(..).filter(|b| b.rows.num_rows() > 0) {
                    entry.push(match &keep {
                        None => b.rows,
                        Some(cols) => super::batch::select(&b.rows, cols),
                    });
                }
            }
        });
        while let Some((&t, _)) = stash.first_key_value() {
            if frontier.less_equal(&t) {
                break;
            }
            let batches = stash.remove(&t).expect("the key was just seen");
            if batches.is_empty() || errors.is_set() || committed.contains(&t) {
                continue;
            }
            match dataset.write_uncommitted(&batches, t, &writer, &schema_tag, Vec::new()) {
                Ok(mut commit) => {
                    commit.whitening = recorded.borrow().range(..=t).next_back().map(|(_, w)| w.clone());
                    pending.borrow_mut().commits.push(commit)
                }
                Err(e) => errors.set(e),
            }
        }
        pending.borrow_mut().through = frontier.frontier().first().copied().unwrap_or(u64::MAX);
    });
}
