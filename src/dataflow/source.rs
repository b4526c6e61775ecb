//! Reading input files into the dataflow. Every worker receives every announced file and reads
//! its own shard: row group `g` of file `f` goes to worker `(hash(f) + g) mod workers`, so N
//! workers together read each row exactly once, and files of a single row group (small parts, the
//! usual case) are spread over the workers instead of all landing on worker 0. Each file is
//! checked against the columns the plan needs and its rows against [`crate::schema::rows`]; the
//! batch is then laid out in the plan's fixed output layout (missing optional columns become
//! nulls), so that batches from different files can be written to one part. Parts of a trajflow
//! dataset are read as the dataset's current rows: rows a later commit supersedes (same
//! `episode_id`, as `watch` writes them) are skipped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, RecordBatch};
use arrow::datatypes::{Field, Schema, SchemaRef};

use crate::error::{Error, Result};
use crate::pipeline::Plan;
use crate::schema::{check_columns, rows::check_rows, TableSchema};
use crate::store::{without_episodes, PartReader};

use super::Columns;

/// How input rows are laid out inside the dataflow.
pub struct InputLayout {
    /// Schema every input batch is brought to: the plan's input columns, then the remaining
    /// fields of the trajectory table.
    pub schema: SchemaRef,
    /// Logical name -> column name, for the row checks.
    pub roles: BTreeMap<String, String>,
    required: Vec<(String, crate::schema::ColumnType)>,
    /// Per file, the `episode_id`s superseded by a later commit of its dataset (skipped).
    superseded: HashMap<PathBuf, HashSet<String>>,
}

impl InputLayout {
    /// The layout for `plan`. With [`Columns::All`] rows carry every trajectory column (so the
    /// output is a complete dataset); otherwise only what the stages read.
    pub fn new(plan: &Plan, columns: Columns) -> InputLayout {
        // The trajectory table's fields in table order, then input columns it does not have
        // (renamed columns of a foreign dataset), so outputs keep the familiar column order.
        let mut fields: Vec<Field> = match columns {
            Columns::All => TableSchema::trajectory()
                .fields
                .iter()
                .map(|f| Field::new(&f.name, f.ty.to_arrow(), f.name != "episode_id"))
                .collect(),
            Columns::Outputs | Columns::Final => Vec::new(),
        };
        for (name, ty) in &plan.input_columns {
            match fields.iter().position(|f| f.name() == name) {
                Some(i) => fields[i] = Field::new(name, ty.to_arrow(), name != "episode_id"),
                None => fields.push(Field::new(name, ty.to_arrow(), true)),
            }
        }
        let mut roles = BTreeMap::new();
        let input: std::collections::BTreeSet<&str> = plan.input_columns.iter().map(|(n, _)| n.as_str()).collect();
        for st in &plan.stages {
            for (logical, column) in &st.read {
                if input.contains(column.as_str()) {
                    roles.insert(logical.clone(), column.clone());
                }
            }
        }
        roles.insert("episode_id".into(), "episode_id".into());
        InputLayout {
            schema: Arc::new(Schema::new(fields)),
            roles,
            required: plan.input_columns.clone(),
            superseded: HashMap::new(),
        }
    }

    /// The layout skipping, in each file, the rows whose `episode_id` is listed for it.
    pub fn skipping(self, superseded: HashMap<PathBuf, HashSet<String>>) -> InputLayout {
        InputLayout { superseded, ..self }
    }

    /// Reads the row groups of `path` assigned to `worker` of `peers`, checked and laid out.
    pub fn read_shard(&self, path: &Path, worker: usize, peers: usize) -> Result<Vec<RecordBatch>> {
        let reader = PartReader::open(path)?;
        let file_schema = reader.schema();
        check_columns(path, &file_schema, &self.required)?;
        let present: Vec<String> = self
            .schema
            .fields()
            .iter()
            .filter(|f| file_schema.field_with_name(f.name()).is_ok())
            .map(|f| f.name().clone())
            .collect();
        let first = (super::cluster::stable_hash(path.as_os_str().as_encoded_bytes()) % peers as u64) as usize;
        let groups: Vec<usize> = (0..reader.num_row_groups()).filter(|g| (first + g) % peers == worker).collect();
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let mut batches = reader.read(Some(&present), Some(groups))?;
        if let Some(gone) = self.superseded.get(path) {
            batches = batches.iter().map(|b| without_episodes(path, b, gone)).collect::<Result<_>>()?;
        }
        batches.iter().map(|b| self.lay_out(path, b)).collect()
    }

    fn lay_out(&self, path: &Path, b: &RecordBatch) -> Result<RecordBatch> {
        let columns = self
            .schema
            .fields()
            .iter()
            .map(|f| match b.column_by_name(f.name()) {
                None => Ok(new_null_array(f.data_type(), b.num_rows())),
                Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
                Some(c) => arrow::compute::cast(c, f.data_type()).map_err(|e| Error::Schema {
                    file: path.into(),
                    column: f.name().clone(),
                    message: format!("cannot be read as {}: {e}", f.data_type()),
                }),
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let batch = RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| Error::file(path, e))?;
        check_rows(path, &batch, &self.roles)?;
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{generate, SynthSpec};

    /// Sixteen files of one row group each, read by 2 workers: every row exactly once, and both
    /// workers get files (with `g mod workers` alone, worker 0 read them all).
    #[test]
    fn single_row_group_files_are_spread_over_the_workers() {
        let dir = tempfile::tempdir().unwrap();
        let rows = generate(&SynthSpec { groups: 16, group_size: 2, seed: 3, ..Default::default() });
        let files: Vec<_> = (0..16)
            .map(|i| {
                let name = format!("f{i}.parquet");
                crate::store::write_part(dir.path(), &name, &[rows.slice(2 * i, 2)], "trajectory.v1").unwrap();
                dir.path().join(name)
            })
            .collect();
        let plan = crate::pipeline::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/loop_advantages.toml"))
            .unwrap();
        let layout = InputLayout::new(&plan, Columns::Outputs);
        let mut read = [0usize; 2];
        for f in &files {
            for (w, n) in read.iter_mut().enumerate() {
                *n += layout.read_shard(f, w, 2).unwrap().iter().map(|b| b.num_rows()).sum::<usize>();
            }
        }
        assert_eq!(read[0] + read[1], 32, "every row exactly once: {read:?}");
        assert!(read[0] > 0 && read[1] > 0, "both workers read: {read:?}");
    }
}
