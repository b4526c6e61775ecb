//! Datasets: a directory of Parquet part files plus a manifest of commit records.
//!
//! Layout:
//! ```text
//! DATASET/part-<epoch>-<writer>-<nonce>.parquet
//! DATASET/_manifest/<epoch>-<writer>-<nonce>.json     one commit record per part
//! ```
//! Invariants:
//! - A part belongs to the dataset if and only if its commit record exists. A part is written to a
//!   hidden temporary name, fsynced and renamed into place before its record is written the same
//!   way, so a crash at any point leaves either a committed part or an ignored leftover, never a
//!   half-visible one. Concurrent writers (workers, processes) never touch the same file.
//! - Records sort by (epoch, writer, nonce); rows of a later record supersede rows of an earlier
//!   one with the same `episode_id` (the upsert key), which is how `watch` publishes changes.
//! - Parts may differ by nullable columns (a column added to a schema keeps its version, and
//!   older parts lack it): reading unions the parts' columns by name, in order of first
//!   appearance, with nulls where a part lacks one; a column with two types is an error naming it.
//! - A commit may record a [`DeferredWhitening`] instead of whitened values (batch whitening under
//!   `watch`): its part stores the column before whitening, and [`Dataset::read_latest`] whitens
//!   it with the statistic of the latest commit that records one. Such a dataset is read through
//!   trajflow ([`Dataset::read_latest`], `inspect`, `export`), not as plain input files.
//! - A corrupt part makes reading that part fail with an error naming it; the other parts stay
//!   readable ([`Dataset::read_latest`] can skip bad parts and report them).

mod compact;
mod part;
mod retention;
mod whitening;

pub use compact::{compact, Compacted};
pub(crate) use part::write_atomically;
pub use part::{read_part, write_part, PartReader, PartWriter};
pub(crate) use retention::keep_latest_epochs;
pub use whitening::DeferredWhitening;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const MANIFEST_DIR: &str = "_manifest";

/// The commit record of one part file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    /// Part file name, relative to the dataset directory.
    pub part: String,
    /// Number of rows in the part.
    pub rows: u64,
    /// Ingest epoch (dataflow time) that produced the part.
    pub epoch: u64,
    /// Writer id (`w<worker>`), unique among concurrent writers.
    pub writer: String,
    /// Table schema tag of the input (`trajectory.v1`).
    pub schema: String,
    /// Input files this epoch ingested (recorded by the writer of worker 0 only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// The whitening this part's rows still need, with the dataset's statistic as of this commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whitening: Option<DeferredWhitening>,
}

/// A file of the manifest: one part's commit, or a compaction's.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Record {
    /// Parts that replace earlier records ([`compact`]).
    Compaction(Compaction),
    /// One part.
    Commit(Commit),
}

/// The record of a compaction: merged parts, in commit order, standing where the first record
/// they replace stood.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Compaction {
    /// The merged parts' commits.
    pub compacted: Vec<Commit>,
    /// The manifest records (file names) this compaction replaces.
    pub replaces: Vec<String>,
    /// The part files of those records (deleted once this record is written).
    pub replaced_parts: Vec<String>,
}

/// The (first, last) epoch a manifest record's name says it holds: `<epoch>-<writer>-<nonce>`
/// for a part, `<first>-c<last>-<nonce>` for a compaction; a name of another shape (0, MAX).
fn record_epochs(name: &str) -> (u64, u64) {
    let mut fields = name.split('-');
    let first = fields.next().and_then(|e| e.parse::<u64>().ok());
    let last = fields.next().and_then(|w| w.strip_prefix('c')).and_then(|e| e.parse::<u64>().ok());
    match (first, last) {
        (Some(a), Some(b)) => (a, b),
        (Some(a), None) => (a, a),
        _ => (0, u64::MAX),
    }
}

/// A dataset directory.
#[derive(Debug, Clone)]
pub struct Dataset {
    dir: PathBuf,
}

impl Dataset {
    /// Opens (creating if needed) the dataset at `dir` for writing.
    pub fn create(dir: impl Into<PathBuf>) -> Result<Dataset> {
        let dir = dir.into();
        fs::create_dir_all(dir.join(MANIFEST_DIR)).map_err(|e| Error::io(&dir, e))?;
        Ok(Dataset { dir })
    }

    /// Opens an existing dataset for reading.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Dataset> {
        let dir = dir.into();
        if !dir.join(MANIFEST_DIR).is_dir() {
            return Err(Error::file(&dir, "not a trajflow dataset (no _manifest directory)"));
        }
        Ok(Dataset { dir })
    }

    /// Whether `dir` holds a trajflow dataset.
    pub fn is_dataset(dir: &Path) -> bool {
        dir.join(MANIFEST_DIR).is_dir()
    }

    /// The dataset directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// All commit records, in commit order (epoch, writer, nonce).
    pub fn commits(&self) -> Result<Vec<Commit>> {
        self.commits_from(0)
    }

    /// The commit records of epochs ≥ `epoch`, in commit order; records of earlier epochs only
    /// are not read (their epochs are in their names).
    pub fn commits_from(&self, epoch: u64) -> Result<Vec<Commit>> {
        let mut out = Vec::new();
        for (_, record) in self.records_from(epoch)? {
            match record {
                Record::Commit(c) => out.push(c),
                Record::Compaction(c) => out.extend(c.compacted),
            }
        }
        out.retain(|c| c.epoch >= epoch);
        Ok(out)
    }

    /// The manifest's records of epochs ≥ `epoch` (by name) that no compaction replaced, with
    /// their file names, in commit order.
    pub(crate) fn records_from(&self, epoch: u64) -> Result<Vec<(String, Record)>> {
        let mdir = self.dir.join(MANIFEST_DIR);
        let mut names = Vec::new();
        for entry in fs::read_dir(&mdir).map_err(|e| Error::io(&mdir, e))? {
            let name = entry.map_err(|e| Error::io(&mdir, e))?.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") && !name.starts_with('.') && record_epochs(&name).1 >= epoch {
                names.push(name);
            }
        }
        names.sort();
        let mut records = Vec::with_capacity(names.len());
        for n in names {
            let path = mdir.join(&n);
            let text = match fs::read_to_string(&path) {
                // Deleted by a compaction after the listing: its compaction record replaces it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                other => other.map_err(|e| Error::io(&path, e))?,
            };
            let record: Record =
                serde_json::from_str(&text).map_err(|e| Error::file(&path, format!("bad commit record: {e}")))?;
            records.push((n, record));
        }
        let replaced: HashSet<String> = records
            .iter()
            .filter_map(|(_, r)| match r {
                Record::Compaction(c) => Some(c.replaces.iter().cloned()),
                Record::Commit(_) => None,
            })
            .flatten()
            .collect();
        records.retain(|(n, _)| !replaced.contains(n));
        Ok(records)
    }

    /// Paths of the committed parts, in commit order.
    pub fn part_paths(&self) -> Result<Vec<PathBuf>> {
        Ok(self.commits()?.into_iter().map(|c| self.dir.join(c.part)).collect())
    }

    /// Writes `batches` as one part and commits it. Returns the commit record.
    pub fn append(
        &self,
        batches: &[RecordBatch],
        epoch: u64,
        writer: &str,
        schema_tag: &str,
        sources: Vec<String>,
    ) -> Result<Commit> {
        let commit = self.write_uncommitted(batches, epoch, writer, schema_tag, sources)?;
        self.commit(&commit)?;
        Ok(commit)
    }

    /// Writes `batches` as a part file that readers do not see until [`Dataset::commit`].
    pub fn write_uncommitted(
        &self,
        batches: &[RecordBatch],
        epoch: u64,
        writer: &str,
        schema_tag: &str,
        sources: Vec<String>,
    ) -> Result<Commit> {
        let part = format!("part-{epoch:012}-{writer}-{}.parquet", nonce());
        let rows = write_part(&self.dir, &part, batches, schema_tag)?;
        Ok(Commit {
            part,
            rows,
            epoch,
            writer: writer.to_string(),
            schema: schema_tag.to_string(),
            sources,
            whitening: None,
        })
    }

    /// Publishes a written part by writing its commit record (atomically).
    pub fn commit(&self, commit: &Commit) -> Result<()> {
        let stem = commit.part.trim_start_matches("part-").trim_end_matches(".parquet");
        let json = serde_json::to_vec_pretty(commit).expect("a commit record serialises");
        part::write_atomically(&self.dir.join(MANIFEST_DIR), &format!("{stem}.json"), &json)
    }

    /// Reads every committed part and returns the latest row of each `episode_id` (later commits
    /// win), in commit order, with any deferred whitening applied. With `skip_bad`, unreadable
    /// parts are skipped and returned as errors instead of failing the whole read.
    /// A part deleted by a compaction between listing and reading makes the read start again
    /// from a fresh listing (a few times).
    pub fn read_latest(&self, columns: Option<&[String]>, skip_bad: bool) -> Result<(Vec<RecordBatch>, Vec<Error>)> {
        let mut attempt = 0;
        loop {
            match self.read_latest_once(columns, skip_bad) {
                Err(e) if is_missing(&e) && attempt < 3 => attempt += 1,
                other => return other,
            }
        }
    }

    fn read_latest_once(&self, columns: Option<&[String]>, skip_bad: bool) -> Result<(Vec<RecordBatch>, Vec<Error>)> {
        let commits = self.commits()?;
        let whitening = latest_whitening(&commits);
        let mut batches = Vec::new();
        let mut bad = Vec::new();
        for c in &commits {
            let path = self.dir.join(&c.part);
            let read = match (c.whitening.as_ref(), whitening) {
                (Some(_), Some(w)) => w.read(&path, columns),
                _ => read_part(&path, columns),
            };
            match read {
                Ok(mut b) => batches.append(&mut b),
                Err(e) if skip_bad && !is_missing(&e) => bad.push(e),
                Err(e) => return Err(e),
            }
        }
        Ok((latest_by_episode(&batches)?, bad))
    }

    /// For every committed part, the `episode_id`s a later commit supersedes: the rows a reader
    /// of the parts as plain files must skip to see what [`Dataset::read_latest`] sees. Reads only
    /// the `episode_id` column; parts without superseded rows are left out.
    pub fn superseded(&self) -> Result<HashMap<PathBuf, HashSet<String>>> {
        let mut later: HashSet<String> = HashSet::new();
        let mut out = HashMap::new();
        for path in self.part_paths()?.into_iter().rev() {
            let mut here = HashSet::new();
            for b in read_part(&path, Some(&["episode_id".to_string()]))? {
                let ids = b.column_by_name("episode_id").and_then(|c| c.as_string_opt::<i32>()).ok_or_else(|| {
                    Error::Schema {
                        file: path.clone(),
                        column: "episode_id".into(),
                        message: "missing or not utf8".into(),
                    }
                })?;
                here.extend(ids.iter().flatten().map(str::to_string));
            }
            let gone: HashSet<String> = here.iter().filter(|id| later.contains(*id)).cloned().collect();
            later.extend(here);
            if !gone.is_empty() {
                out.insert(path, gone);
            }
        }
        Ok(out)
    }
}

/// Whether `e` is a file that does not exist (any more).
fn is_missing(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

/// The whitening a dataset's readers apply: that of the latest of its `commits` recording one.
pub fn latest_whitening(commits: &[Commit]) -> Option<&DeferredWhitening> {
    commits.iter().rev().find_map(|c| c.whitening.as_ref())
}

/// Keeps the last occurrence of each `episode_id` across `batches` (in order).
pub fn latest_by_episode(batches: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
    let mut last: HashMap<String, (usize, usize)> = HashMap::new();
    for (b, batch) in batches.iter().enumerate() {
        let ids = batch
            .column_by_name("episode_id")
            .ok_or_else(|| Error::Usage("dataset rows have no episode_id column".into()))?
            .as_string_opt::<i32>()
            .ok_or_else(|| Error::Usage("episode_id is not utf8".into()))?;
        for r in 0..ids.len() {
            last.insert(ids.value(r).to_string(), (b, r));
        }
    }
    let mut keep: Vec<(usize, usize)> = last.into_values().collect();
    keep.sort_unstable();
    if keep.is_empty() {
        return Ok(Vec::new());
    }
    let batches = aligned(batches)?;
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    let schema = batches[0].schema();
    let columns = (0..schema.fields().len())
        .map(|c| {
            let arrays: Vec<&dyn Array> = refs.iter().map(|b| b.column(c).as_ref()).collect();
            arrow::compute::interleave(&arrays, &keep)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(vec![RecordBatch::try_new(schema, columns)?])
}

/// `batches` with one schema: the union of their columns by name (in order of first appearance;
/// nullable where some batch lacks the column), nulls filling the gaps.
pub(crate) fn aligned(batches: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
    let schemas: Vec<_> = batches.iter().map(|b| b.schema()).collect();
    let schema = union_schema(&schemas)?;
    if batches.iter().all(|b| b.schema().fields().len() == schema.fields().len()) {
        return Ok(batches.to_vec());
    }
    batches.iter().map(|b| laid_out(b, &schema)).collect()
}

/// The union of `schemas`' columns by name, in order of first appearance, nullable where some
/// schema lacks the column; a column with two types is an error naming it.
pub(crate) fn union_schema(schemas: &[arrow::datatypes::SchemaRef]) -> Result<arrow::datatypes::SchemaRef> {
    let mut fields: Vec<arrow::datatypes::Field> = Vec::new();
    for s in schemas {
        for f in s.fields() {
            match fields.iter().find(|g| g.name() == f.name()) {
                Some(g) if g.data_type() != f.data_type() => {
                    return Err(Error::Usage(format!(
                        "column '{}' is {} in one part and {} in another",
                        f.name(),
                        g.data_type(),
                        f.data_type()
                    )))
                }
                Some(_) => {}
                None => fields.push(f.as_ref().clone()),
            }
        }
    }
    let fields: Vec<_> = fields
        .into_iter()
        .map(|f| {
            let everywhere = schemas.iter().all(|s| s.field_with_name(f.name()).is_ok());
            f.clone().with_nullable(f.is_nullable() || !everywhere)
        })
        .collect();
    Ok(std::sync::Arc::new(arrow::datatypes::Schema::new(fields)))
}

/// `b` laid out as `schema` (a union of its columns and others): nulls where it lacks a column.
pub(crate) fn laid_out(b: &RecordBatch, schema: &arrow::datatypes::SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            b.column_by_name(f.name())
                .cloned()
                .unwrap_or_else(|| arrow::array::new_null_array(f.data_type(), b.num_rows()))
        })
        .collect();
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Publishes the Parquet file `src` into the directory `dir` (watched by `trajflow watch`) so that
/// a reader never sees it half-written: it is checked to be a readable Parquet file with an
/// `episode_id` column, copied to a hidden temporary name, fsynced, and renamed into place.
/// Returns the published path (`src`'s name, or the name with a numeric suffix if it is taken).
pub fn publish_file(src: &Path, dir: &Path) -> Result<PathBuf> {
    let schema = PartReader::open(src)?.schema();
    if schema.field_with_name("episode_id").is_err() {
        return Err(Error::Schema { file: src.to_path_buf(), column: "episode_id".into(), message: "missing".into() });
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let stem = src.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "part".into());
    let name = (0..)
        .map(|i| if i == 0 { format!("{stem}.parquet") } else { format!("{stem}-{i}.parquet") })
        .find(|n| !dir.join(n).exists())
        .expect("some name is free");
    let bytes = fs::read(src).map_err(|e| Error::io(src, e))?;
    part::write_atomically(dir, &name, &bytes)?;
    Ok(dir.join(name))
}

/// The rows to skip when reading `parts` as input: for parts of a trajflow dataset, the
/// `episode_id`s a later commit of that dataset supersedes ([`Dataset::superseded`]).
pub fn superseded_rows(parts: &[PathBuf]) -> Result<HashMap<PathBuf, HashSet<String>>> {
    let mut dirs: Vec<&Path> = parts.iter().filter_map(|p| p.parent()).filter(|d| Dataset::is_dataset(d)).collect();
    dirs.sort();
    dirs.dedup();
    let mut out = HashMap::new();
    for d in dirs {
        out.extend(Dataset::open(d)?.superseded()?);
    }
    Ok(out)
}

/// `batch` (read from `path`) without the rows whose `episode_id` is in `gone`.
pub fn without_episodes(path: &Path, batch: &RecordBatch, gone: &HashSet<String>) -> Result<RecordBatch> {
    let ids = batch.column_by_name("episode_id").and_then(|c| c.as_string_opt::<i32>()).ok_or_else(|| {
        Error::Schema { file: path.into(), column: "episode_id".into(), message: "missing or not utf8".into() }
    })?;
    let keep: BooleanArray = ids.iter().map(|id| Some(!id.is_some_and(|id| gone.contains(id)))).collect();
    Ok(arrow::compute::filter_record_batch(batch, &keep)?)
}

/// Lists the input parts behind `path`: a dataset's committed parts, the `*.parquet` files of a
/// plain directory (sorted by name), or the file itself.
pub fn input_parts(path: &Path) -> Result<Vec<PathBuf>> {
    // Parts that store a column before its deferred whitening are not plain input.
    let refuse = |dataset: &Path, w: &DeferredWhitening| {
        Error::file(
            path,
            format!(
                "stores '{}' before a deferred whitening (written by `watch`): its part files are not plain input; \
                 run `trajflow export {} --output FILE.parquet` and read that",
                w.column,
                dataset.display()
            ),
        )
    };
    if path.is_file() {
        if let Some(dir) = path.parent().filter(|d| Dataset::is_dataset(d)) {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if let Some(w) =
                Dataset::open(dir)?.commits()?.iter().find(|c| c.part == name).and_then(|c| c.whitening.as_ref())
            {
                return Err(refuse(dir, w));
            }
        }
        return Ok(vec![path.to_path_buf()]);
    }
    if Dataset::is_dataset(path) {
        let commits = Dataset::open(path)?.commits()?;
        if let Some(w) = latest_whitening(&commits) {
            return Err(refuse(path, w));
        }
        return Ok(commits.into_iter().map(|c| path.join(c.part)).collect());
    }
    if !path.is_dir() {
        return Err(Error::file(path, "no such file or directory"));
    }
    let mut parts = Vec::new();
    for entry in fs::read_dir(path).map_err(|e| Error::io(path, e))? {
        let p = entry.map_err(|e| Error::io(path, e))?.path();
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.ends_with(".parquet") && !name.starts_with('.') {
            parts.push(p);
        }
    }
    parts.sort();
    Ok(parts)
}

pub(crate) fn nonce() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:x}{:x}", std::process::id(), nanos & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float32Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch(ids: &[&str], r: &[f32]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("episode_id", DataType::Utf8, false),
            Field::new("reward", DataType::Float32, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from(ids.to_vec())), Arc::new(Float32Array::from(r.to_vec()))],
        )
        .unwrap()
    }

    #[test]
    fn append_commit_and_upsert() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::create(dir.path()).unwrap();
        ds.append(&[batch(&["a", "b"], &[1.0, 2.0])], 0, "w0", "t.v1", vec![]).unwrap();
        ds.append(&[batch(&["b", "c"], &[3.0, 4.0])], 1, "w0", "t.v1", vec![]).unwrap();
        // An uncommitted leftover is ignored.
        fs::write(dir.path().join("part-999.parquet"), b"junk").unwrap();
        let ds = Dataset::open(dir.path()).unwrap();
        assert_eq!(ds.commits().unwrap().len(), 2);
        let (out, bad) = ds.read_latest(None, false).unwrap();
        assert!(bad.is_empty());
        let ids = out[0].column(0).as_string::<i32>();
        let r = out[0].column(1).as_primitive::<arrow::datatypes::Float32Type>();
        let got: Vec<(String, f32)> = (0..ids.len()).map(|i| (ids.value(i).to_string(), r.value(i))).collect();
        assert_eq!(got, vec![("a".into(), 1.0), ("b".into(), 3.0), ("c".into(), 4.0)]);
    }

    /// Rows a later commit rewrites are listed for their part, and skipped by `without_episodes`:
    /// reading the parts as plain files then sees what `read_latest` sees.
    #[test]
    fn superseded_rows_are_listed_per_part_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::create(dir.path()).unwrap();
        let first = ds.append(&[batch(&["a", "b", "c"], &[1.0, 2.0, 3.0])], 0, "w0", "t.v1", vec![]).unwrap();
        let second = ds.append(&[batch(&["b", "d"], &[5.0, 6.0])], 1, "w0", "t.v1", vec![]).unwrap();
        ds.append(&[batch(&["c"], &[7.0])], 2, "w0", "t.v1", vec![]).unwrap();
        let parts = ds.part_paths().unwrap();
        let gone = superseded_rows(&parts).unwrap();
        let first = dir.path().join(&first.part);
        assert_eq!(gone.len(), 1, "only the first part has superseded rows: {gone:?}");
        assert_eq!(gone[&first], ["b".to_string(), "c".to_string()].into_iter().collect());
        assert!(!gone.contains_key(&dir.path().join(second.part)));
        let kept = without_episodes(&first, &read_part(&first, None).unwrap()[0], &gone[&first]).unwrap();
        assert_eq!(kept.column(0).as_string::<i32>().iter().flatten().collect::<Vec<_>>(), ["a"]);
        let plain = dir.path().join("plain");
        fs::create_dir_all(&plain).unwrap();
        write_part(&plain, "p.parquet", &[batch(&["a"], &[1.0])], "t.v1").unwrap();
        assert!(superseded_rows(&[plain.join("p.parquet")]).unwrap().is_empty(), "plain files are read whole");
    }

    #[test]
    fn scalar_columns_get_page_statistics_and_token_lists_none() {
        use arrow::array::ListArray;
        let b = batch(&["a", "b"], &[1.0, 2.0]);
        let lists = ListArray::from_iter_primitive::<arrow::datatypes::Float32Type, _, _>(vec![
            Some(vec![Some(0.5), Some(-1.0)]),
            Some(vec![Some(2.0)]),
        ]);
        let mut fields = b.schema().fields().to_vec();
        fields.push(Arc::new(Field::new("values", lists.data_type().clone(), true)));
        let mut columns = b.columns().to_vec();
        columns.push(Arc::new(lists));
        let b = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_part(dir.path(), "p.parquet", &[b], "t.v1").unwrap();
        use parquet::file::reader::FileReader;
        let file = fs::File::open(dir.path().join("p.parquet")).unwrap();
        let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
        let rg = reader.metadata().row_group(0);
        let stats: Vec<(String, bool)> =
            rg.columns().iter().map(|c| (c.column_path().string(), c.statistics().is_some())).collect();
        assert_eq!(stats.len(), 3, "{stats:?}");
        assert!(stats[0].1 && stats[1].1, "episode_id and reward keep min/max: {stats:?}");
        assert!(stats[2].0.starts_with("values") && !stats[2].1, "the list has none: {stats:?}");
    }

    /// An older part without a newer nullable column reads with nulls there, whichever comes first.
    #[test]
    fn parts_missing_a_nullable_column_read_with_nulls() {
        let old = batch(&["a", "b"], &[1.0, 2.0]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("episode_id", DataType::Utf8, false),
            Field::new("reward", DataType::Float32, false),
            Field::new("env_error", DataType::Utf8, true),
        ]));
        let new = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["b", "c"])),
                Arc::new(Float32Array::from(vec![3.0, 4.0])),
                Arc::new(StringArray::from(vec![None, Some("died")])),
            ],
        )
        .unwrap();
        for parts in [vec![old.clone(), new.clone()], vec![new.clone(), old.clone()]] {
            let out = latest_by_episode(&parts).unwrap().remove(0);
            assert_eq!(out.num_columns(), 3);
            let ids = out.column_by_name("episode_id").unwrap().as_string::<i32>();
            let err = out.column_by_name("env_error").unwrap().as_string::<i32>();
            let got: Vec<(&str, Option<&str>)> =
                (0..ids.len()).map(|i| (ids.value(i), err.is_valid(i).then(|| err.value(i)))).collect();
            assert!(got.contains(&("c", Some("died"))) && got.contains(&("a", None)), "{got:?}");
        }
        let retyped = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("episode_id", DataType::Utf8, false),
                Field::new("reward", DataType::Float64, false),
            ])),
            vec![Arc::new(StringArray::from(vec!["d"])), Arc::new(arrow::array::Float64Array::from(vec![1.0]))],
        )
        .unwrap();
        let err = latest_by_episode(&[old, retyped]).unwrap_err().to_string();
        assert!(err.contains("column 'reward' is Float32 in one part and Float64 in another"), "{err}");
    }

    #[test]
    fn truncated_part_is_named_and_rest_stays_readable() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::create(dir.path()).unwrap();
        ds.append(&[batch(&["a"], &[1.0])], 0, "w0", "t.v1", vec![]).unwrap();
        let c = ds.append(&[batch(&["b"], &[2.0])], 1, "w0", "t.v1", vec![]).unwrap();
        let path = dir.path().join(&c.part);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = ds.read_latest(None, false).unwrap_err().to_string();
        assert!(err.contains(&c.part), "{err}");
        let (out, bad) = ds.read_latest(None, true).unwrap();
        assert_eq!(bad.len(), 1);
        assert_eq!(out[0].num_rows(), 1);
    }
}
