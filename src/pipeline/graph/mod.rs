//! The graph form of a training pipeline: every step is a `[[stage]]` — the model-bound ones
//! ([`model_ops`]: rollouts, reward models, the critic's values, the warm start, the update) next
//! to the data operators of [`crate::stages`] — and the models they use are `[models.NAME]`
//! tables ([`models`]):
//!
//! ```toml
//! [models.policy]
//! name = "small:household-pick"
//! [models.critic]
//! head = "value"
//! on = "policy"
//!
//! [[stage]]
//! id = "rollout"
//! op = "rollout"
//! model = "policy"
//! env = "household-pick"
//! [[stage]]
//! id = "values"
//! op = "values"
//! model = "critic"
//! inputs = ["rollout"]
//! [[stage]]
//! id = "gae"
//! op = "gae"
//! inputs = ["values"]
//! gamma = 1.0
//! lambda = 1.0
//! [[stage]]
//! id = "learner"
//! op = "ppo_update"
//! model = "policy"
//! critic = "critic"       # the update also trains this value head
//! inputs = ["gae"]
//! ```
//!
//! [`lower`] validates the graph and rewrites it, in the parsed table, into what the trainer and
//! the dataflow run: the sources, the warm start and the update become the trainer's sections
//! (`[model]`, `[rollout]`, `[learner]`, ...); the reward and value steps (`values`,
//! `discriminator_reward`, `implicit_reward`) stay in the stage list among the data stages, where
//! their inputs put them (their keys go to `[critic]`, `[discriminator]`, `[implicit_reward]`),
//! and the dataflow hands the rows that reach them to the models. The frame around the stages is
//! fixed: a phase (the warm start) before iteration 1; per iteration one source (or a rollout
//! joined with the expert's), the stages, one update, whose new policy feeds the next iteration's
//! source. A graph of another shape is refused here, naming the stage and key, before anything
//! loads.
//!
//! Invariants: every step a graph declares reaches the trainer (a step that would not run, a
//! model no stage uses, a critic nothing trains are errors); an error found while the sections
//! are parsed is reported at the stage or model table the key came from ([`Graph::relocate`]).

mod model_ops;
mod models;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub use model_ops::{model_op, ModelOp, Needs, Role, StepColumns, MODEL_OPERATORS};

use crate::error::{Error, Result};

/// The sections a graph-form pipeline writes as stages and model tables instead.
const SECTIONS: &[&str] = &["model", "rollout", "warm_start", "learner", "critic", "discriminator", "implicit_reward"];
/// The update's keys that belong to the critic it trains.
const CRITIC_KEYS: &[&str] = &["returns", "value_clip"];

/// A graph error before the file name is attached: where (a stage id or `[models.NAME]`), which
/// key, what.
#[derive(Debug)]
pub struct GraphError {
    at: String,
    key: Option<String>,
    message: String,
}

impl GraphError {
    fn new(at: &str, key: Option<&str>, message: &str) -> GraphError {
        GraphError { at: at.to_string(), key: key.map(str::to_string), message: message.to_string() }
    }

    fn into_error(self, file: &Path) -> Error {
        Error::Spec { file: file.to_path_buf(), stage: Some(self.at), key: self.key, message: self.message }
    }
}

/// A model-bound step, as `explain` shows it.
#[derive(Debug, Clone)]
pub struct ModelStep {
    /// Stage id.
    pub id: String,
    /// Operator name.
    pub op: &'static str,
    /// The model it names.
    pub model: Option<String>,
    /// Upstream stage ids.
    pub inputs: Vec<String>,
}

/// What a graph-form pipeline declared besides its data stages.
#[derive(Debug, Clone)]
pub struct Graph {
    /// The models: name and what it is.
    pub models: Vec<(String, String)>,
    /// The warm start and the sources, in execution order.
    pub before: Vec<ModelStep>,
    /// The reward and value steps, which stand in the stage list among the data stages.
    pub in_stages: Vec<ModelStep>,
    /// The update.
    pub update: ModelStep,
    /// The value head the update also trains.
    pub critic: Option<String>,
    /// Per lowered section, where its keys came from.
    origins: Origins,
}

impl Graph {
    /// Reports an error found in a lowered section at the stage or model table its key came from.
    pub fn relocate(&self, e: Error) -> Error {
        match e {
            Error::Spec { file, stage: Some(stage), key, message } => {
                let section = stage.strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or_default();
                let stage = match self.origins.get(section) {
                    Some((default, moved)) => key.as_ref().and_then(|k| moved.get(k)).unwrap_or(default).clone(),
                    None => stage,
                };
                Error::Spec { file, stage: Some(stage), key, message }
            }
            other => other,
        }
    }
}

/// One parsed `[[stage]]` of a model-bound operator.
struct Step {
    id: String,
    op: &'static ModelOp,
    model: Option<String>,
    inputs: Vec<String>,
    keys: toml::Table,
}

impl Step {
    fn view(&self) -> ModelStep {
        ModelStep { id: self.id.clone(), op: self.op.name, model: self.model.clone(), inputs: self.inputs.clone() }
    }

    /// The stage a reward or value step leaves in the lowered stage list: its id, operator and
    /// inputs (its keys go to its section).
    fn marker(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("id".into(), toml::Value::String(self.id.clone()));
        t.insert("op".into(), toml::Value::String(self.op.name.into()));
        t.insert("inputs".into(), self.inputs.iter().cloned().map(toml::Value::String).collect::<Vec<_>>().into());
        t
    }
}

/// If `table` is in graph form (it has `[models]`), validates it and rewrites it in place into
/// the section form: the model tables and model-bound stages become `[model]`, `[rollout]`, ...;
/// the data stages stay, with the model-bound steps removed from their `inputs`.
pub fn lower(file: &Path, table: &mut toml::Table) -> Result<Option<Graph>> {
    let Some(models) = table.remove("models") else { return Ok(None) };
    lower_graph(table, models).map(Some).map_err(|e| e.into_error(file))
}

fn lower_graph(table: &mut toml::Table, models: toml::Value) -> Result<Graph, GraphError> {
    if let Some(s) = SECTIONS.iter().find(|s| table.contains_key(**s)) {
        return Err(GraphError::new(
            &format!("[{s}]"),
            None,
            "a pipeline with [models] writes every step as a [[stage]] (`trajflow ops` lists the operators)",
        ));
    }
    let (models, policy) = models::parse(models)?;
    let stages = match table.remove("stage") {
        None => Vec::new(),
        Some(toml::Value::Array(a)) => a,
        Some(_) => return Err(GraphError::new("[[stage]]", None, "`stage` must be an array of [[stage]] tables")),
    };
    let mut steps = Vec::new();
    let mut data = Vec::new();
    // Where each stage of the lowered list stood in the file (the plan breaks ties by file order).
    let mut position: BTreeMap<String, usize> = BTreeMap::new();
    for (i, value) in stages.into_iter().enumerate() {
        let toml::Value::Table(t) = value else {
            return Err(GraphError::new(&format!("stage #{}", i + 1), None, "must be a table"));
        };
        match t.get("op").and_then(toml::Value::as_str).and_then(model_op) {
            Some(op) => {
                let step = parse_step(i, op, t, &models, &policy)?;
                position.insert(step.id.clone(), i);
                steps.push(step);
            }
            None => {
                if let Some(id) = t.get("id").and_then(toml::Value::as_str) {
                    position.insert(id.to_string(), i);
                }
                data.push(t);
            }
        }
    }
    let data_ids: Vec<String> =
        data.iter().filter_map(|t| t.get("id").and_then(toml::Value::as_str).map(str::to_string)).collect();
    let mut seen = BTreeSet::new();
    for id in steps.iter().map(|s| &s.id).chain(&data_ids) {
        if !seen.insert(id.clone()) {
            return Err(GraphError::new(id, Some("id"), "duplicate stage id"));
        }
    }

    let warm_start = single(&steps, Role::Phase)?;
    if let Some(w) = warm_start {
        no_inputs(w)?;
    }
    let (source, join) = source(&steps)?;
    let annotating = annotators(&steps)?;
    if let Some(r) = annotating.iter().find(|s| s.op.reads_expert_pairs()) {
        if source.op.name != "expert_prefixes" {
            return Err(GraphError::new(
                &r.id,
                Some("op"),
                &format!("`{}` compares the expert's and the agent's action at the same prefix: its source must be expert_prefixes, not {}", r.op.name, source.op.name),
            ));
        }
    }
    // The reward and value steps stay in the stage list, where the dataflow applies them.
    data.extend(annotating.iter().map(|s| s.marker()));
    data.sort_by_key(|t| t.get("id").and_then(toml::Value::as_str).and_then(|id| position.get(id)).copied());
    let data_ids: Vec<String> =
        data.iter().filter_map(|t| t.get("id").and_then(toml::Value::as_str).map(str::to_string)).collect();
    let end = join.unwrap_or(source).id.clone();
    attach_data_stages(&mut data, &steps, &end)?;
    let update = update(&steps, &data, &data_ids, &end)?;
    let critic = critic(update, &annotating, &models)?;
    for name in models.keys() {
        let used = steps.iter().any(|s| s.model.as_deref() == Some(name)) || critic.as_deref() == Some(name);
        if !used {
            return Err(GraphError::new(&format!("[models.{name}]"), None, "no stage uses this model"));
        }
    }

    let shape = Shape { warm_start, source, join, annotating: &annotating, update, critic: critic.as_deref() };
    let origins = write_sections(table, &models, &policy, &shape);
    if !data.is_empty() {
        table.insert("stage".into(), toml::Value::Array(data.into_iter().map(toml::Value::Table).collect()));
    }

    let mut before: Vec<ModelStep> = warm_start.into_iter().map(Step::view).collect();
    before.extend(steps.iter().filter(|s| matches!(s.op.role, Role::Source | Role::Join)).map(Step::view));
    let in_stages = annotating.iter().map(|s| s.view()).collect();
    let models = models
        .iter()
        .map(|(name, m)| {
            let what = match &m.head {
                None => format!("policy {}", m.keys.get("name").and_then(toml::Value::as_str).unwrap_or("?")),
                Some(h) => format!("{h} head on {policy}"),
            };
            (name.clone(), what)
        })
        .collect();
    Ok(Graph { models, before, in_stages, update: update.view(), critic, origins })
}

/// The validated shape the trainer runs.
#[derive(Clone, Copy)]
struct Shape<'a> {
    warm_start: Option<&'a Step>,
    source: &'a Step,
    join: Option<&'a Step>,
    annotating: &'a [&'a Step],
    update: &'a Step,
    critic: Option<&'a str>,
}

/// Per lowered section: the place its keys come from by default, and keys placed elsewhere.
type Origins = BTreeMap<&'static str, (String, BTreeMap<String, String>)>;

/// Writes the trainer's sections for `shape` into `table`; returns where each key came from.
fn write_sections(
    table: &mut toml::Table,
    models: &BTreeMap<String, models::ModelDecl>,
    policy: &str,
    shape: &Shape<'_>,
) -> Origins {
    // The sections, and where each key came from: a section's keys by default from one stage,
    // a head's architecture and optimiser from its model table.
    let Shape { warm_start, source, join, annotating, update, critic } = *shape;
    let discriminator = annotating.iter().find(|s| s.op.name == "discriminator_reward");
    let implicit = annotating.iter().find(|s| s.op.name == "implicit_reward");
    let mut origins = BTreeMap::new();
    let mut put =
        |table: &mut toml::Table, name: &'static str, keys: toml::Table, at: &str, moved: Vec<(String, String)>| {
            table.insert(name.into(), toml::Value::Table(keys));
            origins.insert(name, (at.to_string(), moved.into_iter().collect()));
        };
    let placed = |keys: &toml::Table, at: &str| -> Vec<(String, String)> {
        keys.keys().map(|k| (k.clone(), at.to_string())).collect()
    };
    put(table, "model", models[policy].keys.clone(), &format!("[models.{policy}]"), vec![]);
    let mut rollout = source.keys.clone();
    let kind = match (join, source.op.name) {
        (Some(_), _) => "policy_vs_expert",
        (None, "rollout") => "policy",
        (None, "expert_rollout") => "expert",
        (None, other) => other,
    };
    rollout.insert("source".into(), toml::Value::String(kind.into()));
    let mut moved = Vec::new();
    if let Some(j) = join {
        rollout.extend(j.keys.clone());
        moved = placed(&j.keys, &j.id);
    }
    put(table, "rollout", rollout, &source.id, moved);
    if let Some(w) = warm_start {
        put(table, "warm_start", w.keys.clone(), &w.id, vec![]);
    }
    let mut learner = update.keys.clone();
    learner.remove("critic");
    let critic_keys: toml::Table =
        CRITIC_KEYS.iter().filter_map(|k| learner.remove(*k).map(|v| (k.to_string(), v))).collect();
    let loss = update.op.name.trim_end_matches("_update");
    learner.insert("loss".into(), toml::Value::String(loss.into()));
    put(table, "learner", learner, &update.id, vec![]);
    if let (Some(c), Some(v)) = (critic, annotating.iter().find(|s| s.op.name == "values")) {
        let mut keys = models[c].keys.clone();
        let mut moved = placed(&keys, &format!("[models.{c}]"));
        moved.extend(CRITIC_KEYS.iter().map(|k| (k.to_string(), update.id.clone())));
        keys.extend(critic_keys);
        put(table, "critic", keys, &v.id, moved);
    }
    if let Some(d) = discriminator {
        let name = d.model.as_deref().expect("checked: a discriminator step names its head");
        let mut keys = models[name].keys.clone();
        let moved = placed(&keys, &format!("[models.{name}]"));
        keys.extend(d.keys.clone());
        put(table, "discriminator", keys, &d.id, moved);
    }
    if let Some(r) = implicit {
        put(table, "implicit_reward", r.keys.clone(), &r.id, vec![]);
    }
    origins
}

/// Checks that every stage of the lowered list (data stages, reward and value steps) names its
/// inputs and reads no model step but the source `end` (or its join) and the reward and value
/// steps, and removes `end` from their inputs: in the lowered pipeline a stage without inputs
/// reads the source's rows.
fn attach_data_stages(data: &mut [toml::Table], steps: &[Step], end: &str) -> Result<(), GraphError> {
    let elsewhere: BTreeSet<&str> =
        steps.iter().filter(|s| s.op.role != Role::Annotate && s.id != end).map(|s| s.id.as_str()).collect();
    for t in data.iter_mut() {
        let id = t.get("id").and_then(toml::Value::as_str).unwrap_or("?").to_string();
        let inputs: Vec<String> = t.get("inputs").cloned().and_then(|v| v.try_into().ok()).unwrap_or_default();
        if inputs.is_empty() {
            return Err(GraphError::new(
                &id,
                Some("inputs"),
                &format!("name the stage it reads (the rows come from '{end}')"),
            ));
        }
        if let Some(step) = inputs.iter().find(|i| elsewhere.contains(i.as_str())) {
            return Err(GraphError::new(
                &id,
                Some("inputs"),
                &format!("reads '{step}': a stage reads the rows of '{end}', a data stage or a reward or value step"),
            ));
        }
        let kept: Vec<toml::Value> = inputs.into_iter().filter(|i| *i != end).map(toml::Value::String).collect();
        t.insert("inputs".into(), toml::Value::Array(kept));
    }
    Ok(())
}

fn parse_step(
    i: usize,
    op: &'static ModelOp,
    mut t: toml::Table,
    models: &BTreeMap<String, models::ModelDecl>,
    policy: &str,
) -> Result<Step, GraphError> {
    let id = match t.remove("id") {
        Some(toml::Value::String(s)) if !s.is_empty() => s,
        _ => return Err(GraphError::new(&format!("stage #{}", i + 1), Some("id"), "needs a non-empty string id")),
    };
    t.remove("op");
    let model = match t.remove("model") {
        None => None,
        Some(toml::Value::String(m)) => Some(m),
        Some(_) => return Err(GraphError::new(&id, Some("model"), "must be a model name")),
    };
    let inputs: Vec<String> = match t.remove("inputs") {
        None => Vec::new(),
        Some(v) => v.try_into().map_err(|_| GraphError::new(&id, Some("inputs"), "must be a list of stage ids"))?,
    };
    if let Some(k) = t.keys().find(|k| !op.key_names().any(|n| n == k.as_str())) {
        let names: Vec<&str> = op.key_names().collect();
        let known = if names.is_empty() { "none".to_string() } else { names.join(", ") };
        return Err(GraphError::new(&id, Some(k), &format!("`{}` has no key '{k}' (its keys: {known})", op.name)));
    }
    let wanted = match op.needs {
        Needs::Nothing => None,
        Needs::Policy => Some("the policy"),
        Needs::Head("value") => Some("a value head (`head = \"value\"`)"),
        Needs::Head(_) => Some("a discriminator head (`head = \"discriminator\"`)"),
    };
    match (&model, wanted) {
        (None, None) => {}
        (Some(_), None) => {
            return Err(GraphError::new(&id, Some("model"), &format!("`{}` uses no model", op.name)));
        }
        (None, Some(what)) => {
            return Err(GraphError::new(&id, Some("model"), &format!("`{}` needs `model = ...`, {what}", op.name)));
        }
        (Some(m), Some(what)) => {
            let Some(decl) = models.get(m) else {
                let known: Vec<&str> = models.keys().map(String::as_str).collect();
                return Err(GraphError::new(
                    &id,
                    Some("model"),
                    &format!("unknown model '{m}' (declared: {})", known.join(", ")),
                ));
            };
            let fits = match op.needs {
                Needs::Policy => m == policy,
                Needs::Head(h) => decl.head.as_deref() == Some(h),
                Needs::Nothing => unreachable!(),
            };
            if !fits {
                return Err(GraphError::new(&id, Some("model"), &format!("'{m}' is not {what}")));
            }
        }
    }
    Ok(Step { id, op, model, inputs, keys: t })
}

/// The one step of `role`, if any (two are an error).
fn single(steps: &[Step], role: Role) -> Result<Option<&Step>, GraphError> {
    let mut of: Vec<&Step> = steps.iter().filter(|s| s.op.role == role).collect();
    if of.len() > 1 {
        let ids: Vec<&str> = of.iter().map(|s| s.id.as_str()).collect();
        return Err(GraphError::new(
            &of[1].id,
            Some("op"),
            &format!("one {} step at most ({})", format!("{role:?}").to_lowercase(), ids.join(", ")),
        ));
    }
    Ok(of.pop())
}

fn no_inputs(s: &Step) -> Result<(), GraphError> {
    if s.inputs.is_empty() {
        return Ok(());
    }
    Err(GraphError::new(&s.id, Some("inputs"), &format!("`{}` reads no stage (it starts the graph)", s.op.name)))
}

/// The iteration's source, and the join when a rollout is joined with the expert's episodes.
fn source(steps: &[Step]) -> Result<(&Step, Option<&Step>), GraphError> {
    let sources: Vec<&Step> = steps.iter().filter(|s| s.op.role == Role::Source).collect();
    for s in &sources {
        no_inputs(s)?;
    }
    let Some(join) = single(steps, Role::Join)? else {
        return match sources.as_slice() {
            [one] => Ok((one, None)),
            [] => Err(GraphError::new(
                "[[stage]]",
                Some("op"),
                "no source: a training graph starts at rollout, expert_rollout, expert_prefixes or reflexion",
            )),
            [_, second, ..] => Err(GraphError::new(
                &second.id,
                Some("op"),
                "a second source: only a join_expert stage combines two (a rollout and an expert_rollout)",
            )),
        };
    };
    let find = |op: &str| sources.iter().find(|s| s.op.name == op && join.inputs.contains(&s.id)).copied();
    let (Some(policy), Some(expert), 2, 2) =
        (find("rollout"), find("expert_rollout"), join.inputs.len(), sources.len())
    else {
        return Err(GraphError::new(
            &join.id,
            Some("inputs"),
            "joins exactly a rollout and an expert_rollout, the graph's only two sources",
        ));
    };
    if let Some(k) = expert.keys.keys().next() {
        return Err(GraphError::new(
            &expert.id,
            Some(k),
            &format!("joined with '{}', the expert plays that rollout's tasks: set it there", policy.id),
        ));
    }
    Ok((policy, Some(join)))
}

/// The reward and value steps: at most one of each operator. Each stands in the stage list where
/// its inputs put it, like a data stage ([`attach_data_stages`] checks what it reads).
fn annotators(steps: &[Step]) -> Result<Vec<&Step>, GraphError> {
    let annotators: Vec<&Step> = steps.iter().filter(|s| s.op.role == Role::Annotate).collect();
    for (i, s) in annotators.iter().enumerate() {
        if annotators[..i].iter().any(|a| a.op.name == s.op.name) {
            return Err(GraphError::new(&s.id, Some("op"), &format!("a second `{}` step", s.op.name)));
        }
    }
    Ok(annotators)
}

/// The update: the one step that trains the policy, reading the data stages (or the rows
/// themselves when there are none), every data stage upstream of it.
fn update<'a>(steps: &'a [Step], data: &[toml::Table], data_ids: &[String], end: &str) -> Result<&'a Step, GraphError> {
    let Some(update) = single(steps, Role::Update)? else {
        return Err(GraphError::new(
            "[[stage]]",
            Some("op"),
            "no update: a training graph ends at ppo_update, nll_update, dpo_update or clipped_is_update",
        ));
    };
    if update.inputs.is_empty() {
        return Err(GraphError::new(&update.id, Some("inputs"), "name the stages it trains on"));
    }
    if let Some(i) = update.inputs.iter().find(|i| !data_ids.contains(i) && i.as_str() != end) {
        return Err(GraphError::new(
            &update.id,
            Some("inputs"),
            &format!("reads '{i}': an update reads data stages or '{end}'"),
        ));
    }
    // Every data stage feeds the update.
    let inputs_of = |id: &str| -> Vec<String> {
        data.iter()
            .find(|t| t.get("id").and_then(toml::Value::as_str) == Some(id))
            .and_then(|t| t.get("inputs").cloned())
            .and_then(|v| v.try_into().ok())
            .unwrap_or_default()
    };
    let mut reached = BTreeSet::new();
    let mut todo: Vec<String> = update.inputs.clone();
    while let Some(id) = todo.pop() {
        if reached.insert(id.clone()) {
            todo.extend(inputs_of(&id));
        }
    }
    if let Some(lost) = data_ids.iter().find(|id| !reached.contains(*id)) {
        return Err(GraphError::new(
            lost,
            Some("inputs"),
            &format!("no path from this stage to the update '{}': what it writes would not be trained on", update.id),
        ));
    }
    Ok(update)
}

/// The value head the update trains, checked against the `values` step that fills its column.
fn critic(
    update: &Step,
    annotating: &[&Step],
    models: &BTreeMap<String, models::ModelDecl>,
) -> Result<Option<String>, GraphError> {
    let values = annotating.iter().find(|s| s.op.name == "values");
    let named = match update.keys.get("critic") {
        None => None,
        Some(toml::Value::String(c)) => Some(c.clone()),
        Some(_) => return Err(GraphError::new(&update.id, Some("critic"), "must be a model name")),
    };
    match (&named, values) {
        (None, None) => {
            if let Some(k) = CRITIC_KEYS.iter().find(|k| update.keys.contains_key(**k)) {
                return Err(GraphError::new(&update.id, Some(k), "trains a critic: name it with `critic = \"NAME\"`"));
            }
        }
        (None, Some(v)) => {
            return Err(GraphError::new(
                &v.id,
                Some("model"),
                &format!("nothing trains this critic: name it in the update ('{}': critic = ...)", update.id),
            ))
        }
        (Some(c), _) if models.get(c).and_then(|m| m.head.as_deref()) != Some("value") => {
            return Err(GraphError::new(&update.id, Some("critic"), &format!("'{c}' is not a value head")))
        }
        (Some(c), None) => {
            return Err(GraphError::new(
                &update.id,
                Some("critic"),
                &format!("no `values` step fills the column of '{c}': add one reading the source"),
            ))
        }
        (Some(c), Some(v)) if v.model.as_deref() != Some(c.as_str()) => {
            return Err(GraphError::new(
                &update.id,
                Some("critic"),
                &format!("the `values` step '{}' uses another head", v.id),
            ))
        }
        (Some(_), Some(_)) => {}
    }
    Ok(named)
}

#[cfg(test)]
mod tests;
