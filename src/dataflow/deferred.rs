//! Batch whitening under `watch`, recorded instead of applied.
//!
//! A whole-dataset whitening moves with every file, so applying it would re-emit and rewrite
//! every row per epoch. When such a stage ends the pipeline, `watch` renders it as: each epoch's
//! own rows pass through, once both they and the statistic passed the epoch, with the written
//! column a copy of the values before whitening; and the epoch's statistic is recorded, as a
//! [`DeferredWhitening`], for the sink to put in the epoch's commits and for the leader to apply
//! to what it hands a consumer. Readers of the dataset whiten with the latest statistic, so the
//! current rows read bit-identical to a `reprocess` over the same files; an epoch's work is
//! proportional to its own rows.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use super::batch::Batch;
use super::grouped::{summarize, Routed, Scope, Summaries};
use super::local::attach;
use super::whole_dataset::Rederive;
use super::ErrorSlot;
use crate::error::Error;
use crate::ops::normalize::Moments;
use crate::pipeline::deferral::Deferred;
use crate::pipeline::Plan;
use crate::stages::Summary;
use crate::store::DeferredWhitening;

/// The statistic recorded for each epoch (shared by the stage, the sink and the driver of one
/// worker): the stage keeps the latest two; readers take the latest entry at or before their
/// epoch (a worker that saw no row and no change of the statistic at an epoch records none).
pub type Recorded = Rc<RefCell<BTreeMap<u64, DeferredWhitening>>>;

/// An epoch not yet passed by both inputs: its capability, its rows, its new summary if any.
type PendingEpoch = (Capability<u64>, Vec<Batch>, Option<Summary>);

/// Renders the deferred stage on `rows` (see the module docs).
pub fn render<'s>(
    rows: Stream<'s, u64, Vec<Batch>>,
    plan: Arc<Plan>,
    deferred: Deferred,
    recorded: Recorded,
    rederive: Rederive,
    errors: ErrorSlot,
) -> Stream<'s, u64, Vec<Batch>> {
    let stage = deferred.stage;
    let id = plan.stages[stage].id.clone();
    let (routed, summaries): (Routed<'s>, Summaries<'s>) =
        summarize(rows, plan.clone(), stage, errors.clone(), Scope::Job(Some(rederive)));
    routed.binary_frontier(summaries, Pipeline, Pipeline, &format!("RecordWhitening[{id}]"), move |_, _| {
        let mut current: Option<Summary> = None;
        let mut pending: BTreeMap<u64, PendingEpoch> = BTreeMap::new();
        move |(in_rows, f_rows), (in_sum, f_sum), output| {
            in_rows.for_each_stamp(|cap, data| {
                let t = *cap.least().expect("a u64 stamp has a least time");
                let entry = pending.entry(t).or_insert_with(|| (cap.delayed(&t, 0), Vec::new(), None));
                entry.1.extend(data.flat_map(|c| c.drain(..)).map(|(_, b)| b));
            });
            in_sum.for_each_stamp(|cap, data| {
                for ((_, summary), t, diff) in data.flat_map(|c| c.drain(..)) {
                    let entry = pending.entry(t).or_insert_with(|| (cap.delayed(&t, 0), Vec::new(), None));
                    if diff > 0 {
                        entry.2 = Some(summary);
                    }
                }
            });
            while let Some((&t, _)) = pending.first_key_value() {
                if f_rows.less_equal(&t) || f_sum.less_equal(&t) {
                    break;
                }
                let (cap, batches, summary) = pending.remove(&t).expect("the key was just seen");
                current = summary.or(current);
                let st = &plan.stages[stage];
                if let Some(s) = current {
                    if !(s.mean.is_finite() && s.m2.is_finite()) {
                        let what = format!("mean {} and m2 {} of '{}'", s.mean, s.m2, deferred.source);
                        errors.set(Error::stage(&st.id, format!("the whitening statistic is not finite ({what})")));
                        continue;
                    }
                    let moments = Moments { n: s.n, mean: s.mean, m2: s.m2 };
                    let mut recorded = recorded.borrow_mut();
                    // Keep the previous epoch's entry for a sink or consumer still behind.
                    let previous = recorded.range(..t).next_back().map(|(&e, _)| e);
                    recorded.retain(|&e, _| previous.is_some_and(|p| e >= p));
                    recorded.insert(t, DeferredWhitening { moments, ..deferred.whitening.clone() });
                }
                let mut session = output.session(&cap);
                for b in batches {
                    let Some(raw) = b.rows.column_by_name(&deferred.source).cloned() else {
                        errors.set(Error::stage(&st.id, format!("column '{}' is missing", deferred.source)));
                        continue;
                    };
                    match attach(&st.id, &b.rows, &st.writes, vec![raw]) {
                        Ok(rows) => session.give(Batch { rows, source: b.source }),
                        Err(err) => errors.set(err),
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use arrow::array::RecordBatch;

    use super::super::{run, sorted_by_episode, Cluster, Columns, EpochConsumer, Gather, Job};
    use crate::error::Result;
    use crate::pipeline::Plan;
    use crate::store::Dataset;
    use crate::synth::{generate, SynthSpec};

    type Seen = Arc<Mutex<Vec<RecordBatch>>>;

    struct Recorder(Seen);

    impl EpochConsumer for Recorder {
        fn consume(&mut self, _files: &[PathBuf], rows: Vec<RecordBatch>) -> Result<()> {
            self.0.lock().unwrap().push(sorted_by_episode(&rows)?);
            Ok(())
        }
        fn finish(&mut self) -> Result<()> {
            Ok(())
        }
        fn snapshot(&mut self, _: u64, _: &Path) -> Result<()> {
            unreachable!("a deferred whitening turns snapshots off")
        }
        fn restore(&mut self, _: u64, _: &Path) -> Result<()> {
            unreachable!("a deferred whitening turns snapshots off")
        }
    }

    fn poad() -> Plan {
        crate::pipeline::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/poad_advantages.toml")).unwrap()
    }

    fn cluster() -> Cluster {
        Cluster { threads: 2, ..Cluster::default() }
    }

    fn reprocess(files: &[PathBuf], out: &Path) -> RecordBatch {
        let job = Job::Reprocess { inputs: files.to_vec(), superseded: Default::default() };
        run(poad(), job, out.into(), Columns::All, &cluster(), Arc::new(|_| ()), Gather::No).unwrap();
        sorted_by_episode(&Dataset::open(out).unwrap().read_latest(None, false).unwrap().0).unwrap()
    }

    /// Under `watch`, POAD's whitening is recorded, not applied: each epoch writes only its own
    /// rows, and what a consumer is handed at epoch t is what `reprocess` gives the same rows over
    /// the files up to t (whitened with the statistic of everything seen so far).
    #[test]
    fn watch_records_the_whitening_and_hands_consumers_whitened_rows() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::create_dir_all(&input).unwrap();
        let files: Vec<PathBuf> = (0..2)
            .map(|i| {
                let spec =
                    SynthSpec { groups: 8, group_size: 3, seed: i, id_prefix: format!("f{i}"), ..Default::default() };
                let name = format!("{i}.parquet");
                crate::store::write_part(&input, &name, &[generate(&spec)], "trajectory.v1").unwrap();
                input.join(name)
            })
            .collect();
        let seen: Seen = Default::default();
        let job = Job::Watch {
            dir: input.clone(),
            poll: Duration::from_millis(5),
            idle_exit: None,
            max_files: Some(2),
            import: None,
            snapshot_every: 0,
            seal_after: None,
            compact_every: 0,
        };
        let out = dir.path().join("watched");
        let gather = Gather::To(Some(Box::new(Recorder(seen.clone()))));
        run(poad(), job, out.clone(), Columns::All, &cluster(), Arc::new(|_| ()), gather).unwrap();

        let commits = Dataset::open(&out).unwrap().commits().unwrap();
        let per_epoch: u64 = commits.iter().filter(|c| c.epoch == 1).map(|c| c.rows).sum();
        assert_eq!(per_epoch, 24, "epoch 1 writes only its own file's rows");
        assert!(commits.iter().all(|c| c.whitening.is_some()), "every commit records the statistic");
        let last = commits.iter().rev().find_map(|c| c.whitening.clone()).unwrap();
        assert_eq!(last.column, "advantages");

        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        let first = reprocess(&files[..1], &dir.path().join("first"));
        let both = reprocess(&files, &dir.path().join("both"));
        assert_eq!(seen[0], first, "epoch 0 is handed the rows of file 0, whitened over file 0");
        let second: Vec<u32> = (0..both.num_rows() as u32).filter(|&r| r >= 24).collect();
        let expected = arrow::compute::take_record_batch(&both, &arrow::array::UInt32Array::from(second)).unwrap();
        assert_eq!(seen[1], expected, "epoch 1 is handed file 1's rows, whitened over both files");
        let stored = sorted_by_episode(&Dataset::open(&out).unwrap().read_latest(None, false).unwrap().0).unwrap();
        assert_eq!(stored, both, "the stored rows read as reprocess's");
    }
}
