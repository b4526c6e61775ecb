//! Discovering new input files for `watch`: `*.parquet` files in the directory (hidden and
//! temporary names ignored), taken in name order, once their size has been stable for one poll
//! (a writer still copying a file is not read half-way). A file that fails its checks is
//! rejected with the reason and never retried; the run goes on.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use super::source::InputLayout;
use crate::error::Result;
use crate::store::input_parts;

/// Polls a directory for new files.
pub struct Watcher {
    dir: PathBuf,
    layout: Arc<InputLayout>,
    seen: HashSet<PathBuf>,
    sizes: HashMap<PathBuf, u64>,
}

impl Watcher {
    /// Watches `dir`.
    pub fn new(dir: PathBuf, layout: Arc<InputLayout>) -> Self {
        Watcher { dir, layout, seen: HashSet::new(), sizes: HashMap::new() }
    }

    /// New, stable, valid files since the last poll, in name order. Invalid ones are appended to
    /// `rejected` as "file: reason".
    pub fn poll(&mut self, rejected: &mut Vec<String>) -> Result<Vec<PathBuf>> {
        let mut ready = Vec::new();
        for path in input_parts(&self.dir)? {
            if self.seen.contains(&path) {
                continue;
            }
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if self.sizes.insert(path.clone(), size) != Some(size) {
                continue;
            }
            self.seen.insert(path.clone());
            match self.layout.read_shard(&path, 0, 1) {
                Ok(_) => ready.push(path),
                Err(e) => {
                    tracing::error!("rejected {}: {e}", path.display());
                    rejected.push(e.to_string());
                }
            }
        }
        Ok(ready)
    }
}
