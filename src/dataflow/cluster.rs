//! Where the dataflow's workers run: `threads` worker threads in this process, and optionally
//! several processes connected over TCP (timely's cluster mode). We build `timely::Config`
//! ourselves rather than handing argv to timely (whose getopts would claim `-h` and reject our
//! flags). Workers are numbered across processes: process p holds p·threads .. p·threads+threads−1.

use std::path::PathBuf;

use timely::communication::Config as CommConfig;

use crate::error::{Error, Result};

/// Worker placement.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Worker threads per process.
    pub threads: usize,
    /// Number of processes.
    pub processes: usize,
    /// This process's index.
    pub process_id: usize,
    /// One `host:port` line per process, in process order (required when processes > 1).
    pub hostfile: Option<PathBuf>,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster { threads: 1, processes: 1, process_id: 0, hostfile: None }
    }
}

impl Cluster {
    /// `threads` workers in this process.
    pub fn threads(threads: usize) -> Self {
        Cluster { threads, ..Cluster::default() }
    }

    /// Whether this process hosts worker 0 (which drives inputs and shows progress).
    pub fn is_leader(&self) -> bool {
        self.process_id == 0
    }

    /// The timely configuration.
    pub fn to_timely(&self) -> Result<timely::Config> {
        if self.threads == 0 {
            return Err(Error::Usage("--workers must be at least 1".into()));
        }
        let communication = if self.processes <= 1 {
            if self.threads == 1 {
                CommConfig::Thread
            } else {
                CommConfig::Process(self.threads)
            }
        } else {
            if self.process_id >= self.processes {
                return Err(Error::Usage(format!(
                    "--process-id {} is not below --processes {}",
                    self.process_id, self.processes
                )));
            }
            let path = self.hostfile.as_ref().ok_or_else(|| Error::Usage("--processes > 1 needs --hostfile".into()))?;
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let addresses: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect();
            if addresses.len() < self.processes {
                return Err(Error::file(
                    path,
                    format!("lists {} addresses for {} processes", addresses.len(), self.processes),
                ));
            }
            CommConfig::Cluster {
                threads: self.threads,
                process: self.process_id,
                addresses: addresses[..self.processes].to_vec(),
                report: false,
                zerocopy: false,
            }
        };
        Ok(timely::Config { communication, worker: timely::WorkerConfig::default() })
    }
}

/// A stable 64-bit FNV-1a hash: the same on every process and platform, used to route rows to
/// the worker that owns their group.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_reference_values() {
        assert_eq!(stable_hash(b""), 0xcbf29ce484222325);
        assert_eq!(stable_hash(b"a"), 0xaf63dc4c8601ec8c);
    }
}
