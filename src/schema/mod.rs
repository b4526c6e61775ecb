//! Stored table schemas: the JSON files in `schemas/` (embedded at build time), their Arrow form,
//! and the check of a Parquet file's schema against what a pipeline needs.
//!
//! Invariant: a column is identified by its name alone; a file may carry more columns than a
//! reader needs (reads use projection), but every column it is asked for must exist with exactly
//! the declared Arrow type, and non-nullable columns must hold no nulls.

pub mod builder;
pub mod rows;
mod types;

pub use types::ColumnType;

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Parquet key-value metadata key that names a file's table schema (`trajectory.v1`).
pub const SCHEMA_METADATA_KEY: &str = "trajflow.schema";

/// One field of a stored table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    /// Column name.
    pub name: String,
    /// Column type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Whether nulls are allowed.
    pub nullable: bool,
    /// What the column means.
    pub doc: String,
}

/// A versioned table schema as stored in `schemas/NAME.vN.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSchema {
    /// Table name.
    pub name: String,
    /// Schema version.
    pub version: u32,
    /// What one row is.
    pub doc: String,
    /// The fields, in storage order.
    pub fields: Vec<FieldDef>,
}

impl TableSchema {
    /// The built-in trajectory table (`schemas/trajectory.v1.json`).
    pub fn trajectory() -> &'static TableSchema {
        static SCHEMA: std::sync::OnceLock<TableSchema> = std::sync::OnceLock::new();
        SCHEMA.get_or_init(|| {
            serde_json::from_str(include_str!("../../schemas/trajectory.v1.json"))
                .expect("schemas/trajectory.v1.json is valid (checked by a unit test)")
        })
    }

    /// Looks a table schema up by name (`trajectory`).
    pub fn by_name(name: &str) -> Option<&'static TableSchema> {
        match name {
            "trajectory" => Some(Self::trajectory()),
            _ => None,
        }
    }

    /// `NAME.vVERSION`, as stamped into Parquet metadata.
    pub fn tag(&self) -> String {
        format!("{}.v{}", self.name, self.version)
    }

    /// The field named `name`.
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The Arrow schema of the whole table.
    pub fn to_arrow(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.fields.iter().map(|f| Field::new(&f.name, f.ty.to_arrow(), f.nullable)).collect::<Vec<_>>(),
        ))
    }
}

/// Checks that `schema` (read from `file`) has every column of `required` with its declared
/// type. The error names the file and the first column that is missing or mistyped.
pub fn check_columns(file: &Path, schema: &Schema, required: &[(String, ColumnType)]) -> Result<()> {
    for (name, ty) in required {
        let field = schema.field_with_name(name).map_err(|_| Error::Schema {
            file: file.to_path_buf(),
            column: name.clone(),
            message: format!(
                "missing (the file has: {})",
                schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
            ),
        })?;
        if !ty.matches(field.data_type()) {
            return Err(Error::Schema {
                file: file.to_path_buf(),
                column: name.clone(),
                message: format!("has type {}, expected {ty}", field.data_type()),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::DataType;

    #[test]
    fn trajectory_schema_loads_and_is_documented() {
        let s = TableSchema::trajectory();
        assert_eq!(s.tag(), "trajectory.v1");
        assert!(s.fields.iter().all(|f| !f.doc.is_empty()));
        let arrow = s.to_arrow();
        assert_eq!(
            arrow.field_with_name("tokens").unwrap().data_type(),
            &ColumnType::parse("list<int32>").unwrap().to_arrow()
        );
        assert!(!arrow.field_with_name("episode_id").unwrap().is_nullable());
    }

    #[test]
    fn check_columns_names_file_and_column() {
        let schema = Schema::new(vec![Field::new("reward", DataType::Float64, false)]);
        let err =
            check_columns(Path::new("x.parquet"), &schema, &[("reward".into(), ColumnType::parse("float32").unwrap())])
                .unwrap_err()
                .to_string();
        assert_eq!(err, "x.parquet: column 'reward': has type Float64, expected float32");
        let err = check_columns(
            Path::new("x.parquet"),
            &schema,
            &[("tokens".into(), ColumnType::parse("list<int32>").unwrap())],
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("x.parquet: column 'tokens': missing"), "{err}");
    }
}
