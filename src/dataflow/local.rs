//! Applying row-local stages to a batch: run the operator on the stage's view of the batch and
//! attach its outputs under their column names (replacing columns of the same name in place,
//! appending new ones at the end, so every batch that went through the same stages has the same
//! schema).

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{Field, Schema};

use crate::error::{Error, Result};
use crate::pipeline::plan::PlannedStage;
use crate::schema::ColumnType;
use crate::stages::{Operator, StageInput};

/// Attaches `arrays` as the columns `writes` of `batch`.
pub fn attach(
    stage: &str,
    batch: &RecordBatch,
    writes: &[(String, ColumnType)],
    arrays: Vec<ArrayRef>,
) -> Result<RecordBatch> {
    if arrays.len() != writes.len() {
        return Err(Error::stage(stage, format!("produced {} columns, declared {}", arrays.len(), writes.len())));
    }
    let schema = batch.schema();
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    for ((name, ty), array) in writes.iter().zip(arrays) {
        if array.len() != batch.num_rows() {
            return Err(Error::stage(
                stage,
                format!("column '{name}' has {} rows, the batch {}", array.len(), batch.num_rows()),
            ));
        }
        let field = Arc::new(Field::new(name, ty.to_arrow(), true));
        match fields.iter().position(|f| f.name() == name) {
            Some(i) => {
                fields[i] = field;
                columns[i] = array;
            }
            None => {
                fields.push(field);
                columns.push(array);
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| Error::stage(stage, e))
}

/// Runs the local stages `stages` in order over `batch`. `source` names the file in errors.
pub fn run_local(stages: &[&PlannedStage], batch: RecordBatch, source: &str) -> Result<RecordBatch> {
    let mut batch = batch;
    for st in stages {
        let Operator::Local(op) = &st.op else {
            return Err(Error::stage(&st.id, "is not a local stage"));
        };
        let arrays =
            op.apply(&StageInput::new(&batch, &st.read)).map_err(|m| Error::stage(&st.id, format!("{source}: {m}")))?;
        batch = attach(&st.id, &batch, &st.writes, arrays)?;
    }
    Ok(batch)
}
