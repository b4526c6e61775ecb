//! One Parquet part file: atomic write (temporary name, fsync, rename, fsync of the directory)
//! and projected, optionally row-group-sharded reads. Files are zstd-compressed with 8192-row
//! row groups and stamped with the table schema tag.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::error::{Error, Result};
use crate::schema::SCHEMA_METADATA_KEY;

/// Rows per Parquet row group (also the unit of sharding reads across workers).
pub const ROW_GROUP_ROWS: usize = 8192;

/// Writes `bytes` to `dir/name` atomically: temporary file, fsync, rename, fsync of `dir`.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".tmp-{name}"));
    let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    publish(&tmp, &dir.join(name))
}

fn publish(tmp: &Path, dest: &Path) -> Result<()> {
    fs::rename(tmp, dest).map_err(|e| Error::io(dest, e))?;
    let dir = dest.parent().unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))
}

/// Writes `batches` (all of one schema) as the Parquet file `dir/name`, atomically. Returns the
/// number of rows written.
pub fn write_part(dir: &Path, name: &str, batches: &[RecordBatch], schema_tag: &str) -> Result<u64> {
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| Error::file(dir.join(name), "refusing to write a part with no batches"))?;
    let mut w = PartWriter::create(dir, name, schema, schema_tag)?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()
}

/// A part being written batch by batch under a temporary name, published by [`PartWriter::finish`].
pub struct PartWriter {
    tmp: PathBuf,
    dest: PathBuf,
    writer: ArrowWriter<File>,
    rows: u64,
}

impl PartWriter {
    /// Starts the part `dir/name` of `schema`, stamped with `schema_tag`.
    pub fn create(dir: &Path, name: &str, schema: arrow::datatypes::SchemaRef, schema_tag: &str) -> Result<PartWriter> {
        let tmp = dir.join(format!(".tmp-{name}"));
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        // Dictionary encoding pays off for the repeated ids and names, not for floats and token ids:
        // trying it on 10M-value float lists costs more than the compression itself. Page statistics
        // (min/max, and the column index built from them) let readers skip pages of scalar columns;
        // on per-token lists they cost a pass over every value and prune nothing.
        let mut props =
            WriterProperties::builder().set_dictionary_enabled(false).set_statistics_enabled(EnabledStatistics::None);
        for f in schema.fields() {
            if matches!(f.data_type(), arrow::datatypes::DataType::Utf8) {
                props = props.set_column_dictionary_enabled(f.name().as_str().into(), true);
            }
            if !f.data_type().is_nested() {
                props = props.set_column_statistics_enabled(f.name().as_str().into(), EnabledStatistics::Page);
            }
        }
        let props = props
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("zstd level 1 is valid")))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_key_value_metadata(Some(vec![KeyValue::new(SCHEMA_METADATA_KEY.to_string(), schema_tag.to_string())]))
            .build();
        let writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| Error::file(&tmp, e))?;
        Ok(PartWriter { dest: dir.join(name), tmp, writer, rows: 0 })
    }

    /// Appends `batch`.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer.write(batch).map_err(|e| Error::file(&self.tmp, e))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// The part's file name.
    pub fn name(&self) -> &str {
        self.dest.file_name().and_then(|n| n.to_str()).unwrap_or_default()
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Closes, syncs and publishes the part; returns its number of rows.
    pub fn finish(self) -> Result<u64> {
        let file = self.writer.into_inner().map_err(|e| Error::file(&self.tmp, e))?;
        file.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        publish(&self.tmp, &self.dest)?;
        Ok(self.rows)
    }
}

/// An opened Parquet part: its schema and row groups, before any data is read.
pub struct PartReader {
    path: PathBuf,
    builder: ParquetRecordBatchReaderBuilder<File>,
}

impl PartReader {
    /// Opens `path` and reads its footer. A truncated or foreign file fails here, naming it.
    pub fn open(path: &Path) -> Result<PartReader> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| Error::file(path, format!("not a readable Parquet file (truncated or foreign?): {e}")))?;
        Ok(PartReader { path: path.to_path_buf(), builder })
    }

    /// The file's Arrow schema.
    pub fn schema(&self) -> arrow::datatypes::SchemaRef {
        self.builder.schema().clone()
    }

    /// Number of row groups.
    pub fn num_row_groups(&self) -> usize {
        self.builder.metadata().num_row_groups()
    }

    /// Number of rows.
    pub fn num_rows(&self) -> u64 {
        self.builder.metadata().file_metadata().num_rows().max(0) as u64
    }

    /// Reads the given row groups (all when `None`) of the given columns (all when `None`).
    pub fn read(self, columns: Option<&[String]>, row_groups: Option<Vec<usize>>) -> Result<Vec<RecordBatch>> {
        let path = self.path;
        let mut builder = self.builder.with_batch_size(ROW_GROUP_ROWS);
        if let Some(cols) = columns {
            let schema = builder.schema().clone();
            let mut idx = Vec::with_capacity(cols.len());
            for c in cols {
                idx.push(schema.index_of(c).map_err(|_| Error::Schema {
                    file: path.clone(),
                    column: c.clone(),
                    message: "missing".into(),
                })?);
            }
            let mask = ProjectionMask::roots(builder.parquet_schema(), idx);
            builder = builder.with_projection(mask);
        }
        if let Some(rg) = row_groups {
            builder = builder.with_row_groups(rg);
        }
        let reader = builder.build().map_err(|e| Error::file(&path, e))?;
        reader.map(|b| b.map_err(|e| Error::file(&path, format!("corrupt data: {e}")))).collect()
    }
}

/// Reads the given columns (all when `None`) of the whole file.
pub fn read_part(path: &Path, columns: Option<&[String]>) -> Result<Vec<RecordBatch>> {
    PartReader::open(path)?.read(columns, None)
}
