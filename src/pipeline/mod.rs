//! Pipelines: TOML file → [`spec::PipelineSpec`] (syntax, unknown keys rejected) →
//! [`plan::Plan`] (operators built, DAG checked, columns resolved) → a timely dataflow
//! ([`crate::dataflow`]). Three layers, each with its own errors; only the last touches data.

pub mod deferral;
pub mod explain;
pub mod graph;
pub mod plan;
pub mod reduction;
pub mod spec;
pub mod training;
pub mod training_checks;

pub use plan::Plan;
pub use spec::PipelineSpec;

use std::path::Path;

use crate::error::Result;

/// Parses and validates a pipeline file against its declared input table.
pub fn load(path: &Path) -> Result<Plan> {
    Plan::from_spec(PipelineSpec::from_file(path)?)
}
