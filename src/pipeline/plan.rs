//! Layer 2 of 3: a parsed pipeline validated into an executable [`Plan`]: operators built from
//! their parameters, the stage graph checked to be a DAG and put in a deterministic topological
//! order, and every column checked: a stage may read only columns of the input table or columns
//! written by one of its upstream stages (transitively), with the declared type.
//!
//! Nothing here touches data, models or the dataflow runtime, so `trajflow validate` is instant.
//! Every error names the file, the stage and the key.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use arrow::datatypes::DataType;

use super::graph::{model_op, StepColumns};
use super::spec::{PipelineSpec, StageSpec};
use crate::error::{Error, Result};
use crate::schema::{ColumnType, TableSchema};
use crate::stages::{self, Operator};

/// A validated stage.
pub struct PlannedStage {
    /// Stage id.
    pub id: String,
    /// Operator name.
    pub op_name: String,
    /// Upstream stage ids, as written.
    pub inputs: Vec<String>,
    /// The operator.
    pub op: Operator,
    /// Every column read: logical name -> column name.
    pub read: BTreeMap<String, String>,
    /// Every column written: column name and type, in the operator's order.
    pub writes: Vec<(String, ColumnType)>,
}

/// A validated pipeline, stages in execution order.
pub struct Plan {
    /// The pipeline file.
    pub file: PathBuf,
    /// Pipeline name.
    pub name: String,
    /// Description.
    pub description: String,
    /// What the input columns were checked against (a schema tag or a file).
    pub input_source: String,
    /// Stages in a topological order (ties broken by file order).
    pub stages: Vec<PlannedStage>,
    /// Input columns the stages read (plus `episode_id`), with their types.
    pub input_columns: Vec<(String, ColumnType)>,
    /// A graph-form training pipeline's models and model-bound steps.
    pub graph: Option<crate::pipeline::graph::Graph>,
}

/// The columns of an input: name -> Arrow type.
pub type InputColumns = BTreeMap<String, DataType>;

/// The input columns of a table schema.
pub fn table_columns(table: &TableSchema) -> InputColumns {
    table.fields.iter().map(|f| (f.name.clone(), f.ty.to_arrow())).collect()
}

impl Plan {
    /// Validates `spec` against its declared input table.
    pub fn from_spec(spec: PipelineSpec) -> Result<Plan> {
        let table = TableSchema::by_name(&spec.input).ok_or_else(|| Error::Spec {
            file: spec.file.clone(),
            stage: None,
            key: Some("input".into()),
            message: format!("unknown table '{}' (known: trajectory)", spec.input),
        })?;
        let tag = table.tag();
        Self::with_input(spec, &table_columns(table), tag)
    }

    /// Validates `spec` against the columns of an actual input (`source` names it in messages).
    pub fn with_input(spec: PipelineSpec, input: &InputColumns, source: String) -> Result<Plan> {
        let file = spec.file.clone();
        let err = |stage: &str, key: &str, message: String| Error::Spec {
            file: file.clone(),
            stage: Some(stage.to_string()),
            key: Some(key.to_string()),
            message,
        };
        // A training pipeline may feed rollouts straight to its learner (SFT); a data pipeline
        // without stages would do nothing.
        if spec.stages.is_empty() && spec.training.is_none() {
            return Err(Error::Spec {
                file: file.clone(),
                stage: None,
                key: Some("stage".into()),
                message: "the pipeline has no stages".into(),
            });
        }
        // Ids and edges.
        let mut index = BTreeMap::new();
        for (i, s) in spec.stages.iter().enumerate() {
            if index.insert(s.id.clone(), i).is_some() {
                return Err(err(&s.id, "id", "duplicate stage id".into()));
            }
        }
        for s in &spec.stages {
            for up in &s.inputs {
                if !index.contains_key(up) {
                    return Err(err(&s.id, "inputs", format!("unknown stage '{up}'")));
                }
            }
        }
        let order = topo_order(&spec.stages, &index).map_err(|cycle| {
            err(&cycle[0], "inputs", format!("the stage graph has a cycle: {}", cycle.join(" -> ")))
        })?;
        let ancestors = ancestors(&spec.stages, &index, &order);

        // Operators and columns.
        let mut planned: Vec<Option<PlannedStage>> = Vec::new();
        planned.resize_with(spec.stages.len(), || None);
        let mut written_by: BTreeMap<String, (usize, ColumnType)> = BTreeMap::new();
        let mut input_columns: BTreeMap<String, ColumnType> = BTreeMap::new();
        input_columns.insert("episode_id".into(), ColumnType::Utf8);
        if !input.get("episode_id").is_some_and(|t| ColumnType::Utf8.matches(t)) {
            return Err(Error::Spec {
                file: file.clone(),
                stage: None,
                key: Some("input".into()),
                message: format!("{source} has no utf8 column 'episode_id' (the row key every pipeline needs)"),
            });
        }
        for &i in &order {
            let s = &spec.stages[i];
            // A graph's reward and value steps stand in the stage list; elsewhere the names are
            // unknown operators.
            let step = spec.graph.as_ref().and(model_op(&s.op)).and_then(StepColumns::of);
            let op = match step {
                Some(columns) => Operator::Model(Box::new(columns)),
                None => stages::build(&s.op, &s.params).map_err(|e| err(&s.id, &e.key, e.message))?,
            };
            let (reads, writes) = (op.describe().reads(), op.describe().writes());
            check_renames(s, "read", reads.iter().map(|c| c.name)).map_err(|(k, m)| err(&s.id, &k, m))?;
            check_renames(s, "write", writes.iter().map(|c| c.name)).map_err(|(k, m)| err(&s.id, &k, m))?;
            let mut read = BTreeMap::new();
            for c in &reads {
                let name = s.read.get(c.name).cloned().unwrap_or_else(|| c.name.to_string());
                let key = if s.read.contains_key(c.name) { format!("read.{}", c.name) } else { "op".to_string() };
                let found = match written_by.get(&name) {
                    Some((w, ty)) if ancestors[i].contains(w) => Some(ty.clone()),
                    _ => None,
                };
                match (found, input.get(&name)) {
                    (Some(ty), _) => {
                        if ty != c.ty {
                            return Err(err(
                                &s.id,
                                &key,
                                format!(
                                    "column '{name}' is {ty} (written by stage '{}'), expected {}",
                                    spec.stages[written_by[&name].0].id, c.ty
                                ),
                            ));
                        }
                    }
                    (None, Some(dt)) => {
                        if !c.ty.matches(dt) {
                            return Err(err(
                                &s.id,
                                &key,
                                format!("column '{name}' is {dt} in {source}, expected {}", c.ty),
                            ));
                        }
                        input_columns.insert(name.clone(), c.ty.clone());
                    }
                    (None, None) if c.optional => {}
                    (None, None) => {
                        let hint = match written_by.get(&name) {
                            Some((w, _)) => format!(
                                "; stage '{}' writes it but is not upstream (add it to inputs)",
                                spec.stages[*w].id
                            ),
                            None => String::new(),
                        };
                        return Err(err(&s.id, &key, format!("reads column '{name}', which is neither in {source} nor written by an upstream stage{hint}")));
                    }
                }
                read.insert(c.name.to_string(), name);
            }
            let mut out = Vec::new();
            for c in &writes {
                let name = s.write.get(c.name).cloned().unwrap_or_else(|| c.name.to_string());
                let key = if s.write.contains_key(c.name) { format!("write.{}", c.name) } else { "op".to_string() };
                if let Some(dt) = input.get(&name) {
                    if !c.ty.matches(dt) {
                        return Err(err(
                            &s.id,
                            &key,
                            format!("would overwrite input column '{name}' ({dt}) with {}", c.ty),
                        ));
                    }
                }
                if let Some((w, _)) = written_by.get(&name) {
                    if !ancestors[i].contains(w) {
                        return Err(err(
                            &s.id,
                            &key,
                            format!(
                                "column '{name}' is also written by stage '{}', which is not upstream of this one",
                                spec.stages[*w].id
                            ),
                        ));
                    }
                }
                written_by.insert(name.clone(), (i, c.ty.clone()));
                out.push((name, c.ty.clone()));
            }
            planned[i] = Some(PlannedStage {
                id: s.id.clone(),
                op_name: s.op.clone(),
                inputs: s.inputs.clone(),
                op,
                read,
                writes: out,
            });
        }
        let stages = order.iter().map(|&i| planned[i].take().expect("every stage was planned")).collect();
        Ok(Plan {
            file,
            name: spec.name,
            description: spec.description,
            input_source: source,
            stages,
            input_columns: input_columns.into_iter().collect(),
            graph: spec.graph,
        })
    }

    /// Whether any stage needs group statistics.
    pub fn has_grouped_stage(&self) -> bool {
        self.stages.iter().any(|s| matches!(s.op, Operator::Grouped(_)))
    }
}

fn check_renames<'a>(
    s: &StageSpec,
    which: &str,
    names: impl Iterator<Item = &'a str>,
) -> std::result::Result<(), (String, String)> {
    let known: BTreeSet<&str> = names.collect();
    let map = if which == "read" { &s.read } else { &s.write };
    for k in map.keys() {
        if !known.contains(k.as_str()) {
            return Err((
                format!("{which}.{k}"),
                format!(
                    "operator '{}' has no {which} column '{k}' (it has: {})",
                    s.op,
                    known.iter().copied().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Kahn's algorithm, always taking the earliest ready stage in file order. Err: a cycle's ids.
fn topo_order(stages: &[StageSpec], index: &BTreeMap<String, usize>) -> std::result::Result<Vec<usize>, Vec<String>> {
    let n = stages.len();
    let mut indegree: Vec<usize> = stages.iter().map(|s| s.inputs.len()).collect();
    let mut downstream = vec![Vec::new(); n];
    for (i, s) in stages.iter().enumerate() {
        for up in &s.inputs {
            downstream[index[up]].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &d in &downstream[i] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.insert(d);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Walk upstream from any unplaced stage until a stage repeats: that loop is a cycle.
    let mut path = vec![(0..n).find(|&i| indegree[i] > 0).expect("some stage is unplaced")];
    loop {
        let cur = *path.last().expect("non-empty");
        let next = stages[cur]
            .inputs
            .iter()
            .map(|u| index[u])
            .find(|&u| indegree[u] > 0)
            .expect("an unplaced stage has an unplaced input");
        if let Some(pos) = path.iter().position(|&p| p == next) {
            let mut cycle: Vec<String> = path[pos..].iter().rev().map(|&p| stages[p].id.clone()).collect();
            cycle.push(cycle[0].clone());
            return Err(cycle);
        }
        path.push(next);
    }
}

fn ancestors(stages: &[StageSpec], index: &BTreeMap<String, usize>, order: &[usize]) -> Vec<BTreeSet<usize>> {
    let mut anc = vec![BTreeSet::new(); stages.len()];
    for &i in order {
        let mut set = BTreeSet::new();
        for up in &stages[i].inputs {
            let u = index[up];
            set.insert(u);
            set.extend(anc[u].iter().copied());
        }
        anc[i] = set;
    }
    anc
}
