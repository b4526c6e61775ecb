//! Which groups a stream learner trains, and in what order: the bookkeeping of `[stream]`.
//!
//! Rows arrive file by file; within a file, in row order. A group is *open* from its first
//! episode until its `group_size`-th distinct episode arrives (it is then *complete*) or, with
//! `partial_after = N > 0`, until N more files have been ingested since its first episode (it is
//! then *partial*). Closed groups queue in the order they closed; partial groups closed by the
//! same file queue after that file's complete ones, by group id. A row of a closed group is
//! *late*: counted, never trained.
//!
//! Invariant: the queue is a function of the sequence of files alone — feeding the same files one
//! call at a time or all in one call gives the same queue — so `watch` (a file per epoch) and
//! `reprocess` (every file at once) train on the same groups in the same order.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

/// A closed group, ready to be trained on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClosedGroup {
    /// `group_id`.
    pub group: String,
    /// Its episodes, in arrival order (only the first `group_size`).
    pub episodes: Vec<String>,
    /// Closed by the timeout with fewer than `group_size` episodes.
    pub partial: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct OpenGroup {
    first_file: u64,
    episodes: Vec<String>,
    seen: BTreeSet<String>,
}

/// The open groups, the closed ones, and the queue of groups ready to train (serialisable, for
/// `watch` snapshots).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct GroupTracker {
    group_size: usize,
    partial_after: u64,
    files: u64,
    open: BTreeMap<String, OpenGroup>,
    closed: HashSet<String>,
    ready: VecDeque<ClosedGroup>,
    late_rows: u64,
}

impl GroupTracker {
    /// A tracker closing groups at `group_size` episodes, or once `partial_after` more files have
    /// been fed after the one with their first episode (0 = never).
    pub fn new(group_size: usize, partial_after: u64) -> GroupTracker {
        GroupTracker {
            group_size: group_size.max(1),
            partial_after,
            files: 0,
            open: BTreeMap::new(),
            closed: HashSet::new(),
            ready: VecDeque::new(),
            late_rows: 0,
        }
    }

    /// Whether `group` is closed (its rows are final for training).
    pub fn is_closed(&self, group: &str) -> bool {
        self.closed.contains(group)
    }

    /// Files fed so far.
    pub fn files(&self) -> u64 {
        self.files
    }

    /// Rows that arrived for closed groups so far.
    pub fn late_rows(&self) -> u64 {
        self.late_rows
    }

    /// Feeds one file's `(episode_id, group_id)` pairs in row order; returns the groups it closed,
    /// in queue order.
    pub fn file<'a>(&mut self, rows: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<ClosedGroup> {
        let index = self.files;
        let before = self.ready.len();
        for (episode, group) in rows {
            if self.closed.contains(group) {
                self.late_rows += 1;
                continue;
            }
            let g = self.open.entry(group.to_string()).or_insert_with(|| OpenGroup {
                first_file: index,
                episodes: Vec::new(),
                seen: BTreeSet::new(),
            });
            if g.seen.insert(episode.to_string()) {
                g.episodes.push(episode.to_string());
            }
            if g.episodes.len() >= self.group_size {
                self.close(group.to_string(), false);
            }
        }
        self.files += 1;
        if self.partial_after > 0 {
            let due: Vec<String> = self
                .open
                .iter()
                .filter(|(_, g)| self.files - g.first_file > self.partial_after)
                .map(|(id, _)| id.clone())
                .collect();
            for id in due {
                self.close(id, true);
            }
        }
        self.ready.range(before..).cloned().collect()
    }

    fn close(&mut self, group: String, partial: bool) {
        let g = self.open.remove(&group).expect("only open groups are closed");
        self.closed.insert(group.clone());
        self.ready.push_back(ClosedGroup { group, episodes: g.episodes, partial });
    }

    /// The next `n` queued groups, if at least `n` are queued.
    pub fn take(&mut self, n: usize) -> Option<Vec<ClosedGroup>> {
        (self.ready.len() >= n.max(1)).then(|| self.ready.drain(..n.max(1)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(ids: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        ids.to_vec()
    }

    #[test]
    fn groups_close_at_group_size_in_arrival_order_and_late_rows_are_counted() {
        let mut t = GroupTracker::new(2, 0);
        t.file(file(&[("a1", "a"), ("b1", "b"), ("b2", "b")]));
        t.file(file(&[("a1", "a"), ("a2", "a"), ("b3", "b")]));
        // b closed first (in file 0); a re-sent a1 does not count twice; b3 is late.
        let got = t.take(2).unwrap();
        assert_eq!(got[0], ClosedGroup { group: "b".into(), episodes: vec!["b1".into(), "b2".into()], partial: false });
        assert_eq!(got[1].group, "a");
        assert_eq!(got[1].episodes, vec!["a1", "a2"]);
        assert_eq!(t.late_rows(), 1);
        assert!(t.take(1).is_none());
    }

    #[test]
    fn partial_groups_close_after_the_configured_number_of_files() {
        let mut t = GroupTracker::new(3, 2);
        assert!(t.file(file(&[("z1", "z"), ("y1", "y")])).is_empty());
        assert!(t.file(file(&[("x1", "x")])).is_empty());
        assert!(t.file(file(&[])).len() == 2);
        // Two more files since y's and z's first rows: both close as partial, by group id.
        let got = t.take(2).unwrap();
        assert_eq!((got[0].group.as_str(), got[0].partial), ("y", true));
        assert_eq!((got[1].group.as_str(), got[1].episodes.len()), ("z", 1));
        assert!(t.take(1).is_none());
        t.file(file(&[]));
        assert_eq!(t.take(1).unwrap()[0].group, "x");
    }

    #[test]
    fn the_queue_depends_on_the_files_not_on_how_they_are_fed() {
        // A pseudo-random stream of 40 files; feeding them one by one or in chunks of 7 gives the
        // same closed groups in the same order.
        // New groups keep appearing (three per 5 files); some complete, some time out.
        let mut files: Vec<Vec<(String, String)>> = Vec::new();
        let mut rng = crate::synth::SplitMix::new(12345);
        for f in 0..40 {
            let rows = (0..rng.range(0, 4))
                .map(|_| {
                    let (g, e) = (f / 5 * 3 + rng.range(0, 2), rng.range(0, 5));
                    (format!("g{g}-e{e}"), format!("g{g}"))
                })
                .collect();
            files.push(rows);
        }
        let run = |chunk: usize| {
            let mut t = GroupTracker::new(3, 4);
            let mut out = Vec::new();
            for c in files.chunks(chunk) {
                for f in c {
                    t.file(f.iter().map(|(e, g)| (e.as_str(), g.as_str())));
                }
                while let Some(g) = t.take(1) {
                    out.extend(g);
                }
            }
            (out, t.late_rows())
        };
        let one = run(1);
        assert!(one.0.len() > 5 && one.0.iter().any(|g| g.partial) && one.0.iter().any(|g| !g.partial));
        assert!(one.1 > 0, "some rows are late");
        assert_eq!(one, run(7));
        assert_eq!(one, run(40));
    }
}
