//! The ingest log of a `watch` output: `OUTPUT/_ingested/<epoch>.json` records, written
//! atomically by the leader once an epoch's parts are committed, that name the file each epoch
//! ingested. A restarted `watch` replays the logged files after its latest snapshot (rebuilding
//! its grouped state without writing anything) and carries on after the last logged epoch. A file
//! whose epoch was not logged is ingested again; rows it may already have written are then
//! written once more, which readers resolve by `episode_id` (latest wins), so every file counts
//! exactly once.
//!
//! Folding ([`IngestLog::fold`]) replaces the records of epochs ≤ t by one
//! `<t>-folded-<nonce>.json` record holding their entries and naming the records it replaces:
//! written atomically first, the replaced records deleted after, so a reader sees every entry
//! once whenever it lists (an entry in both is counted once).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::watch::Ready;
use crate::error::{Error, Result};

/// See the module docs.
pub struct IngestLog {
    dir: PathBuf,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Ingested {
    epoch: u64,
    file: PathBuf,
    /// The file that landed, when `file` is its conversion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<PathBuf>,
}

/// A record of the log: one epoch's, or a fold of many.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum Record {
    Folded { entries: Vec<Ingested>, replaces: Vec<String> },
    One(Ingested),
}

impl IngestLog {
    /// The log of the output dataset `output`.
    pub fn new(output: &Path) -> IngestLog {
        IngestLog { dir: output.join("_ingested") }
    }

    /// The records (file name, record), replaced ones left out.
    fn records(&self) -> Result<Vec<(String, Record)>> {
        let mut out = Vec::new();
        let Ok(read) = std::fs::read_dir(&self.dir) else { return Ok(out) };
        for entry in read {
            let path = entry.map_err(|e| Error::io(&self.dir, e))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if !name.ends_with(".json") || name.starts_with('.') {
                continue;
            }
            let text = match std::fs::read_to_string(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                other => other.map_err(|e| Error::io(&path, e))?,
            };
            let r: Record =
                serde_json::from_str(&text).map_err(|e| Error::file(&path, format!("bad ingest record: {e}")))?;
            out.push((name, r));
        }
        let replaced: HashSet<String> = out
            .iter()
            .filter_map(|(_, r)| match r {
                Record::Folded { replaces, .. } => Some(replaces.iter().cloned()),
                Record::One(_) => None,
            })
            .flatten()
            .collect();
        out.retain(|(n, _)| !replaced.contains(n));
        Ok(out)
    }

    fn by_epoch(&self) -> Result<BTreeMap<u64, Ingested>> {
        let mut out = BTreeMap::new();
        for (_, r) in self.records()? {
            match r {
                Record::Folded { entries, .. } => out.extend(entries.into_iter().map(|e| (e.epoch, e))),
                Record::One(e) => {
                    out.insert(e.epoch, e);
                }
            }
        }
        Ok(out)
    }

    /// Every logged (epoch, file read, file that landed), in epoch order.
    pub fn entries(&self) -> Result<Vec<(u64, PathBuf, PathBuf)>> {
        Ok(self
            .by_epoch()?
            .into_values()
            .map(|r| {
                let landed = r.source.unwrap_or_else(|| r.file.clone());
                (r.epoch, r.file, landed)
            })
            .collect())
    }

    /// The last logged epoch.
    pub fn last_epoch(&self) -> Result<Option<u64>> {
        Ok(self.by_epoch()?.last_key_value().map(|(e, _)| *e))
    }

    /// Records that `epoch` ingested `r`.
    pub fn record(&self, epoch: u64, r: &Ready) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let json = serde_json::to_vec(&Ingested { epoch, file: r.file.clone(), source: r.source.clone() })
            .expect("a record serialises");
        crate::store::write_atomically(&self.dir, &format!("{epoch:012}.json"), &json)
    }

    /// Folds the records of epochs ≤ `through` into one (see the module docs). Returns how many
    /// records were folded.
    pub fn fold(&self, through: u64) -> Result<usize> {
        let records = self.records()?;
        let mut entries = Vec::new();
        let mut replaces = Vec::new();
        let mut leftovers = Vec::new();
        for (name, r) in &records {
            let within = match r {
                Record::Folded { entries, .. } => entries.iter().all(|e| e.epoch <= through),
                Record::One(e) => e.epoch <= through,
            };
            if within {
                replaces.push(name.clone());
                match r {
                    // What an earlier fold replaced and may still be there (it was interrupted)
                    // is replaced by this one too.
                    Record::Folded { entries: more, replaces: earlier } => {
                        entries.extend(more.iter().cloned());
                        leftovers.extend(earlier.iter().filter(|n| self.dir.join(n).exists()).cloned());
                    }
                    Record::One(e) => entries.push(e.clone()),
                }
            }
        }
        if replaces.len() < 2 {
            return Ok(0);
        }
        let folded = replaces.len();
        replaces.extend(leftovers);
        entries.sort_by_key(|e| e.epoch);
        entries.dedup_by_key(|e| e.epoch);
        let name = format!("{through:012}-folded-{}.json", crate::store::nonce());
        let json =
            serde_json::to_vec(&Record::Folded { entries, replaces: replaces.clone() }).expect("a record serialises");
        crate::store::write_atomically(&self.dir, &name, &json)?;
        for n in &replaces {
            let path = self.dir.join(n);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&path, e)),
                _ => {}
            }
        }
        Ok(folded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(i: u64) -> Ready {
        Ready { file: PathBuf::from(format!("/in/{i}.parquet")), source: None }
    }

    /// Folding keeps every entry once, whether it is interrupted (the folded record and the ones
    /// it replaces both present) or repeated; later records go on after it.
    #[test]
    fn folding_keeps_every_entry_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = IngestLog::new(dir.path());
        for t in 0..10 {
            log.record(t, &ready(t)).unwrap();
        }
        let all = log.entries().unwrap();
        let saved: Vec<_> = std::fs::read_dir(&log.dir).unwrap().map(|e| e.unwrap().path()).collect();
        let texts: Vec<_> = saved.iter().map(|p| std::fs::read(p).unwrap()).collect();
        assert_eq!(log.fold(6).unwrap(), 7);
        assert_eq!(log.entries().unwrap(), all);
        assert_eq!(std::fs::read_dir(&log.dir).unwrap().count(), 4, "one folded record and epochs 7-9");
        for (p, t) in saved.iter().zip(&texts) {
            std::fs::write(p, t).unwrap();
        }
        assert_eq!(log.entries().unwrap(), all, "an interrupted fold counts each entry once");
        log.record(10, &ready(10)).unwrap();
        assert_eq!(log.fold(10).unwrap(), 5, "the earlier fold and epochs 7-10");
        assert_eq!(log.entries().unwrap().len(), 11);
        assert_eq!(log.last_epoch().unwrap(), Some(10));
        assert_eq!(std::fs::read_dir(&log.dir).unwrap().count(), 1);
    }
}
