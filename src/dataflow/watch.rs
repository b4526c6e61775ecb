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

    /// Treats `path` as already ingested.
    pub fn mark_seen(&mut self, path: PathBuf) {
        self.seen.insert(path);
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

/// The ingest log of a `watch` output: `OUTPUT/_ingested/<epoch>.json` records, written
/// atomically by the leader once an epoch's parts are committed, that name the file each epoch
/// ingested. A restarted `watch` replays the logged files (rebuilding its grouped state without
/// writing anything) and carries on after the last logged epoch. A file whose epoch was not
/// logged is ingested again; rows it may already have written are then written once more, which
/// readers resolve by `episode_id` (latest wins), so every file counts exactly once.
pub struct IngestLog {
    dir: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Ingested {
    epoch: u64,
    file: PathBuf,
}

impl IngestLog {
    /// The log of the output dataset `output`.
    pub fn new(output: &std::path::Path) -> IngestLog {
        IngestLog { dir: output.join("_ingested") }
    }

    /// Every logged (epoch, file), in epoch order.
    pub fn entries(&self) -> Result<Vec<(u64, PathBuf)>> {
        let mut out = Vec::new();
        let Ok(read) = std::fs::read_dir(&self.dir) else { return Ok(out) };
        for entry in read {
            let path = entry.map_err(|e| crate::error::Error::io(&self.dir, e))?.path();
            if path.extension().is_some_and(|x| x == "json")
                && !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                let text = std::fs::read_to_string(&path).map_err(|e| crate::error::Error::io(&path, e))?;
                let r: Ingested = serde_json::from_str(&text)
                    .map_err(|e| crate::error::Error::file(&path, format!("bad ingest record: {e}")))?;
                out.push((r.epoch, r.file));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Records that `epoch` ingested `file`.
    pub fn record(&self, epoch: u64, file: &std::path::Path) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| crate::error::Error::io(&self.dir, e))?;
        let json = serde_json::to_vec(&Ingested { epoch, file: file.to_path_buf() }).expect("a record serialises");
        crate::store::write_atomically(&self.dir, &format!("{epoch:012}.json"), &json)
    }
}
