//! `watch --compact-every N`: the output dataset compacted ([`crate::store::compact`]) and its
//! ingest log folded after every N logged files, by a `trajflow compact` child process, so that a
//! stream that runs for weeks keeps a bounded number of files while its own memory and epoch
//! latency stay untouched. Invariants: at most one compaction runs at a time (a trigger while one
//! runs is skipped); it covers only epochs already logged, so it never races the epoch being
//! written; its failure stops the `watch` once seen, naming what it printed; `wait` waits for it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::error::{Error, Result};

/// See the module docs.
pub struct Compactor {
    every: u64,
    output: PathBuf,
    running: Option<Child>,
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
        if let Some(child) = self.running.as_mut() {
            if child.try_wait().map_err(|e| Error::io(&self.output, e))?.is_none() {
                return Ok(());
            }
        }
        self.wait()?;
        let exe = std::env::current_exe().map_err(|e| Error::io("trajflow executable", e))?;
        let child = Command::new(&exe)
            .arg("compact")
            .arg(&self.output)
            .args(["--through", &t.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io(&exe, e))?;
        self.running = Some(child);
        Ok(())
    }

    /// Waits for the running compaction, if any, and returns its failure.
    pub fn wait(&mut self) -> Result<()> {
        let Some(child) = self.running.take() else { return Ok(()) };
        let out = child.wait_with_output().map_err(|e| Error::io(&self.output, e))?;
        if !out.status.success() {
            return Err(Error::file(
                &self.output,
                format!(
                    "background compaction failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        Ok(())
    }
}
