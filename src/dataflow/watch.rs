//! Discovering new input files for `watch`: `*.parquet` files in the directory (and, with an
//! [`Importer`], `*.jsonl` chat logs, converted to Parquet first), hidden and temporary names
//! ignored, taken in name order, once their size has been stable for one poll (a writer still
//! copying a file is not read half-way). A file that fails its checks is rejected with the reason
//! and never retried; the run goes on.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::source::InputLayout;
use crate::error::Result;
use crate::store::input_parts;

/// Converts a JSON-lines chat log into a trajectory Parquet file and returns its path (written
/// atomically, outside the watched directory).
#[derive(Clone)]
pub struct Importer(pub Arc<ImportFn>);

/// What an [`Importer`] calls: the landed log's path -> the Parquet file made from it.
pub type ImportFn = dyn Fn(&Path) -> Result<PathBuf> + Send + Sync;

impl std::fmt::Debug for Importer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Importer")
    }
}

/// A file ready to ingest.
pub struct Ready {
    /// The Parquet file the dataflow reads.
    pub file: PathBuf,
    /// The file that landed in the watched directory, when it was converted (a JSON-lines log).
    pub source: Option<PathBuf>,
}

/// Polls a directory for new files.
pub struct Watcher {
    dir: PathBuf,
    layout: Arc<InputLayout>,
    importer: Option<Importer>,
    seen: HashSet<PathBuf>,
    sizes: HashMap<PathBuf, u64>,
}

impl Watcher {
    /// Watches `dir`; `importer` admits `*.jsonl` files too.
    pub fn new(dir: PathBuf, layout: Arc<InputLayout>, importer: Option<Importer>) -> Self {
        Watcher { dir, layout, importer, seen: HashSet::new(), sizes: HashMap::new() }
    }

    /// The candidate files in the directory, in name order.
    fn candidates(&self) -> Result<Vec<PathBuf>> {
        let mut files = input_parts(&self.dir)?;
        if self.importer.is_some() {
            let read = std::fs::read_dir(&self.dir).map_err(|e| crate::error::Error::io(&self.dir, e))?;
            for entry in read.flatten() {
                let p = entry.path();
                let hidden = p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
                if p.is_file() && !hidden && p.extension().is_some_and(|x| x == "jsonl") {
                    files.push(p);
                }
            }
        }
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        Ok(files)
    }

    /// Treats `path` as already ingested.
    pub fn mark_seen(&mut self, path: PathBuf) {
        self.seen.insert(path);
    }

    /// New, stable, valid files since the last poll, in name order. Invalid ones are appended to
    /// `rejected` as "file: reason".
    pub fn poll(&mut self, rejected: &mut Vec<String>) -> Result<Vec<Ready>> {
        let mut ready = Vec::new();
        for path in self.candidates()? {
            if self.seen.contains(&path) {
                continue;
            }
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if self.sizes.insert(path.clone(), size) != Some(size) {
                continue;
            }
            self.seen.insert(path.clone());
            let converted = match &self.importer {
                Some(import) if path.extension().is_some_and(|x| x == "jsonl") => {
                    (import.0)(&path).map(|file| Ready { file, source: Some(path.clone()) })
                }
                _ => Ok(Ready { file: path.clone(), source: None }),
            };
            match converted.and_then(|r| self.layout.read_shard(&r.file, 0, 1).map(|_| r)) {
                Ok(r) => ready.push(r),
                Err(e) => {
                    tracing::error!("rejected {e}");
                    rejected.push(e.to_string());
                }
            }
        }
        Ok(ready)
    }
}
