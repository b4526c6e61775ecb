//! Layer 1 of 3: the pipeline TOML file as written, parsed into typed structs with unknown keys
//! rejected. Nothing here knows what an operator does; [`super::plan`] validates and resolves.
//!
//! ```toml
//! name = "loop-advantages"
//! description = "..."
//! input = "trajectory"            # table schema of the input (schemas/)
//!
//! [[stage]]
//! id = "returns"                  # unique stage id
//! op = "discounted_return"        # operator name (trajflow explain --ops lists them)
//! inputs = []                     # upstream stage ids; empty = the input table
//! gamma = 1.0                     # operator parameters
//! read = { turn_rewards = "rewards" }    # optional: logical column -> dataset column
//! write = { returns = "ret" }            # optional: logical output -> column name
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// A parsed pipeline file.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    /// The file it came from (for error messages).
    pub file: PathBuf,
    /// Pipeline name.
    pub name: String,
    /// Free-text description.
    pub description: String,
    /// Input table schema name.
    pub input: String,
    /// Stages, in file order.
    pub stages: Vec<StageSpec>,
    /// The training-loop sections (`[model]`, `[rollout]`, ...), if this is a training pipeline.
    pub training: Option<super::training::TrainingSpec>,
    /// The models and model-bound steps of a graph-form pipeline ([`super::graph`]), lowered
    /// into `training`.
    pub graph: Option<super::graph::Graph>,
}

/// One `[[stage]]` table.
#[derive(Debug, Clone)]
pub struct StageSpec {
    /// Stage id.
    pub id: String,
    /// Operator name.
    pub op: String,
    /// Upstream stage ids.
    pub inputs: Vec<String>,
    /// Column renames for what the stage reads (logical name -> column).
    pub read: BTreeMap<String, String>,
    /// Column renames for what the stage writes (logical name -> column).
    pub write: BTreeMap<String, String>,
    /// The operator's own parameters (everything else in the table).
    pub params: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default = "default_input")]
    input: String,
    #[serde(default)]
    stage: Vec<toml::Table>,
}

/// The top-level keys of a pipeline file besides the training sections.
const DATA_KEYS: &[&str] = &["name", "description", "input", "stage"];

fn default_input() -> String {
    "trajectory".into()
}

impl PipelineSpec {
    /// Reads and parses a pipeline file.
    pub fn from_file(path: &Path) -> Result<PipelineSpec> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(path, &text)
    }

    /// Reads a pipeline file, applies `--set KEY=VALUE` overrides and parses the result; returns
    /// the resolved text too (what a run records as its config).
    pub fn from_file_with_sets(path: &Path, sets: &[String]) -> Result<(String, PipelineSpec)> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let text = crate::pipeline::training::apply_sets(path, &text, sets)?;
        let spec = Self::parse(path, &text)?;
        Ok((text, spec))
    }

    /// Parses pipeline text; `file` is used in error messages.
    pub fn parse(file: &Path, text: &str) -> Result<PipelineSpec> {
        let err = |stage: Option<&str>, key: Option<&str>, message: String| Error::Spec {
            file: file.to_path_buf(),
            stage: stage.map(str::to_string),
            key: key.map(str::to_string),
            message,
        };
        let syntax = |e: toml::de::Error| {
            let msg = e.to_string();
            err(None, unknown_field(&msg).as_deref(), msg.trim().to_string())
        };
        let mut table: toml::Table = toml::from_str(text).map_err(syntax)?;
        let graph = super::graph::lower(file, &mut table)?;
        let training = super::training::TrainingSpec::take(file, &mut table).map_err(|e| match &graph {
            Some(g) => g.relocate(e),
            None => e,
        })?;
        if let Some(k) = table.keys().find(|k| !DATA_KEYS.contains(&k.as_str())) {
            let known =
                "name, description, input, stage, models, run, stream (or the section form's model, rollout, warm_start, learner, critic, discriminator, implicit_reward)";
            return Err(err(None, Some(k), format!("unknown field `{k}`, expected one of {known}")));
        }
        let raw: RawFile = toml::Value::Table(table).try_into().map_err(syntax)?;
        let mut stages = Vec::with_capacity(raw.stage.len());
        for (i, mut t) in raw.stage.into_iter().enumerate() {
            let id = match t.remove("id") {
                Some(toml::Value::String(s)) if !s.is_empty() => s,
                Some(_) => {
                    return Err(err(None, Some("id"), format!("stage #{}: id must be a non-empty string", i + 1)))
                }
                None => return Err(err(None, Some("id"), format!("stage #{} has no id", i + 1))),
            };
            let op = match t.remove("op") {
                Some(toml::Value::String(s)) => s,
                _ => return Err(err(Some(&id), Some("op"), "missing or not a string".into())),
            };
            let inputs = match t.remove("inputs") {
                None => Vec::new(),
                Some(v) => v
                    .try_into::<Vec<String>>()
                    .map_err(|_| err(Some(&id), Some("inputs"), "must be a list of stage ids".into()))?,
            };
            let mut renames = |key: &str| -> Result<BTreeMap<String, String>> {
                match t.remove(key) {
                    None => Ok(BTreeMap::new()),
                    Some(v) => v
                        .try_into()
                        .map_err(|_| err(Some(&id), Some(key), "must be a table of logical name = \"column\"".into())),
                }
            };
            let read = renames("read")?;
            let write = renames("write")?;
            stages.push(StageSpec { id, op, inputs, read, write, params: t });
        }
        Ok(PipelineSpec {
            file: file.to_path_buf(),
            name: raw.name,
            description: raw.description,
            input: raw.input,
            stages,
            training,
            graph,
        })
    }
}

/// Extracts the key from a serde "unknown field `x`" message.
pub(crate) fn unknown_field(msg: &str) -> Option<String> {
    let rest = msg.split("unknown field `").nth(1)?;
    Some(rest.split('`').next()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stages_and_keeps_params() {
        let s = PipelineSpec::parse(
            Path::new("p.toml"),
            r#"
name = "x"
[[stage]]
id = "a"
op = "discounted_return"
gamma = 0.9
read = { turn_rewards = "r" }
"#,
        )
        .unwrap();
        assert_eq!(s.input, "trajectory");
        assert_eq!(s.stages[0].read["turn_rewards"], "r");
        assert_eq!(s.stages[0].params["gamma"].as_float(), Some(0.9));
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let e = PipelineSpec::parse(Path::new("p.toml"), "name = \"x\"\nstages = []\n").unwrap_err();
        match e {
            Error::Spec { key, .. } => assert_eq!(key.as_deref(), Some("stages")),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn malformed_toml_names_file_and_line() {
        let e = PipelineSpec::parse(Path::new("p.toml"), "name = \"x\"\n[[stage]\n").unwrap_err().to_string();
        assert!(e.starts_with("p.toml: "), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }
}
