//! `watch --compact-every N`: the output dataset compacted ([`crate::store::compact`]) and its
//! ingest log folded in a background thread after every N logged files, so that a stream that
//! runs for weeks keeps a bounded number of files. Invariants: at most one compaction runs at a
//! time (a trigger while one runs is skipped); it covers only epochs already logged, so it never
//! races the epoch being written; its error stops the `watch` once seen, and `finish` waits for
//! it.

use std::path::PathBuf;
use std::thread::JoinHandle;

use super::IngestLog;
use crate::error::{Error, Result};
use crate::store::Dataset;

/// Rows per merged part of a background compaction.
const TARGET_ROWS: usize = 200_000;

/// See the module docs.
pub struct Compactor {
    every: u64,
    output: PathBuf,
    running: Option<JoinHandle<Result<()>>>,
}

impl Compactor {
    /// Compacts `output` every `every` files (`None` when `every` is 0).
    pub fn new(every: u64, output: PathBuf) -> Option<Compactor> {
        (every > 0).then_some(Compactor { every, output, running: None })
    }

    /// Epoch `t` was logged, the `n`-th file this process ingested.
    pub fn logged(&mut self, t: u64, n: u64) -> Result<()> {
        if !n.is_multiple_of(self.every) {
            return Ok(());
        }
        if self.running.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(());
        }
        self.wait()?;
        let output = self.output.clone();
        self.running = Some(std::thread::spawn(move || {
            let done = crate::store::compact(&Dataset::open(&output)?, t, TARGET_ROWS)?;
            let folded = IngestLog::new(&output).fold(t)?;
            tracing::info!(
                "compacted {} through epoch {t}: {} part(s) into {}, {folded} ingest record(s) folded",
                output.display(),
                done.parts_merged,
                done.parts_written
            );
            Ok(())
        }));
        Ok(())
    }

    /// Waits for the running compaction, if any, and returns its error.
    pub fn wait(&mut self) -> Result<()> {
        match self.running.take() {
            Some(h) => h.join().map_err(|_| Error::Usage("the background compaction panicked".into()))?,
            None => Ok(()),
        }
    }
}
