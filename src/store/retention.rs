//! Retention of per-epoch files in a state directory: keep the files of the latest few epochs,
//! remove the rest. A file belongs to epoch `t` when `epoch_of(its name)` says so; files it does
//! not recognise are never touched. Several files may share an epoch (a snapshot and its rows)
//! and go together. Removing is the last step of a checkpoint, after the newest files are
//! published, so a crash in the middle leaves extra old files, never too few.

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::{Error, Result};

/// Removes from `dir` every file whose epoch (`epoch_of` of its name) is older than the latest
/// `keep` epochs found there.
pub(crate) fn keep_latest_epochs(dir: &Path, keep: usize, epoch_of: impl Fn(&str) -> Option<u64>) -> Result<()> {
    let files: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .filter_map(|e| Some((epoch_of(&e.file_name().to_string_lossy())?, e.path())))
        .collect();
    let epochs: BTreeSet<u64> = files.iter().map(|(t, _)| *t).collect();
    // Fewer epochs than `keep` (at least one is always kept): nothing to remove.
    let Some(&oldest_kept) = epochs.iter().rev().nth(keep.max(1) - 1) else { return Ok(()) };
    for (t, path) in files {
        if t < oldest_kept {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    fn snapshot_epoch(name: &str) -> Option<u64> {
        let rest = name.strip_prefix("s.")?;
        rest.strip_suffix(".snap").or_else(|| rest.strip_suffix(".rows"))?.parse().ok()
    }

    #[test]
    fn keeps_every_file_of_the_latest_epochs_and_nothing_older() {
        let dir = tempfile::tempdir().unwrap();
        for name in
            ["s.1.snap", "s.1.rows", "s.3.snap", "s.3.rows", "s.10.snap", "s.10.rows", "s.2.snap", "other.1.snap"]
        {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        keep_latest_epochs(dir.path(), 2, snapshot_epoch).unwrap();
        // Epochs compare as numbers (10 > 3), both files of an epoch go together, and a name the
        // parser does not recognise stays.
        assert_eq!(names(dir.path()), ["other.1.snap", "s.10.rows", "s.10.snap", "s.3.rows", "s.3.snap"]);
        keep_latest_epochs(dir.path(), 2, snapshot_epoch).unwrap();
        assert_eq!(names(dir.path()).len(), 5, "a second pass removes nothing");
    }

    #[test]
    fn fewer_epochs_than_kept_or_an_empty_directory_remove_nothing() {
        let dir = tempfile::tempdir().unwrap();
        keep_latest_epochs(dir.path(), 2, snapshot_epoch).unwrap();
        std::fs::write(dir.path().join("s.7.snap"), b"").unwrap();
        keep_latest_epochs(dir.path(), 2, snapshot_epoch).unwrap();
        assert_eq!(names(dir.path()), ["s.7.snap"]);
    }
}
