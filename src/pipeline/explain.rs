//! `trajflow explain`: the validated plan as text — input columns, stages in execution order
//! with parameters and resolved columns, and the dataflow shape (where rows are exchanged and
//! which state lives in differential arrangements). The format is pinned by snapshot tests.

use std::fmt::Write;

use super::plan::Plan;
use crate::stages::Operator;

/// `ID = OP [model M] <- INPUTS` for a model-bound step.
fn step_line(step: &crate::pipeline::graph::ModelStep) -> String {
    let model = step.model.as_ref().map(|m| format!(" [model {m}]")).unwrap_or_default();
    let inputs = if step.inputs.is_empty() { String::new() } else { format!(" <- {}", step.inputs.join(", ")) };
    format!("{} = {}{model}{inputs}", step.id, step.op)
}

/// Renders the plan.
pub fn explain(plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "pipeline {}", plan.name);
    if !plan.description.is_empty() {
        let _ = writeln!(s, "  {}", plan.description);
    }
    let _ = writeln!(s, "input: {}", plan.input_source);
    let cols: Vec<String> = plan.input_columns.iter().map(|(n, t)| format!("{n}: {t}")).collect();
    let _ = writeln!(s, "  reads {}", cols.join(", "));
    if let Some(g) = &plan.graph {
        let _ = writeln!(s, "models:");
        for (name, what) in &g.models {
            let _ = writeln!(s, "  {name}: {what}");
        }
        let _ = writeln!(s, "model steps, before the stages (the sources play the latest policy version):");
        for step in &g.before {
            let _ = writeln!(s, "  {}", step_line(step));
        }
    }
    let _ = writeln!(s, "stages, in execution order:");
    for (i, st) in plan.stages.iter().enumerate() {
        let kind = match &st.op {
            Operator::Local(_) => "local".to_string(),
            Operator::Grouped(g) => match g.group_column() {
                Some(c) => format!("grouped by {}", st.read.get(c).map(String::as_str).unwrap_or(c)),
                None => "grouped over all rows".to_string(),
            },
            Operator::Model(_) => {
                let step = plan.graph.as_ref().and_then(|g| g.in_stages.iter().find(|m| m.id == st.id));
                match step.and_then(|m| m.model.as_ref()) {
                    Some(m) => format!("model step on {m}"),
                    None => "model step".to_string(),
                }
            }
        };
        let input = plan.graph.as_ref().and_then(|g| g.before.last()).map_or("input", |last| last.id.as_str());
        let inputs = if st.inputs.is_empty() { input.to_string() } else { st.inputs.join(", ") };
        let _ = writeln!(s, "  {}. {} = {} ({kind}) <- {inputs}", i + 1, st.id, st.op_name);
        let params = st.op.describe().params();
        if !params.is_empty() {
            let p: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(s, "       params: {}", p.join(" "));
        }
        let reads: Vec<String> =
            st.read.iter().map(|(l, c)| if l == c { c.clone() } else { format!("{c} as {l}") }).collect();
        let _ = writeln!(s, "       reads:  {}", reads.join(", "));
        let writes: Vec<String> = st.writes.iter().map(|(c, t)| format!("{c}: {t}")).collect();
        let _ = writeln!(s, "       writes: {}", writes.join(", "));
    }
    if let Some(g) = &plan.graph {
        if plan.stages.is_empty() {
            let _ = writeln!(s, "  (none: the update reads the rows)");
        }
        let critic = g.critic.as_ref().map(|c| format!(", also trains {c}")).unwrap_or_default();
        let _ = writeln!(s, "update (emits the next policy version):\n  {}{critic}", step_line(&g.update));
    }
    let _ = writeln!(s, "dataflow:");
    let _ = write!(s, "  read shards (row groups by worker)");
    let mut local: Vec<&str> = Vec::new();
    for st in &plan.stages {
        match &st.op {
            Operator::Local(_) => local.push(&st.id),
            Operator::Model(_) => {
                if !local.is_empty() {
                    let _ = write!(s, " -> map[{}]", local.join(", "));
                    local.clear();
                }
                let _ = write!(s, " -> gather on worker 0 -> model step[{}] -> exchange by episode_id", st.id);
            }
            Operator::Grouped(g) => {
                if !local.is_empty() {
                    let _ = write!(s, " -> map[{}]", local.join(", "));
                    local.clear();
                }
                let key = g.group_column().map(|c| st.read.get(c).map(String::as_str).unwrap_or(c).to_string());
                let _ = write!(
                    s,
                    " -> exchange by {} -> arrange+reduce[{}]",
                    key.as_deref().unwrap_or("episode_id (one statistic, broadcast to every worker)"),
                    st.id
                );
            }
        }
    }
    if !local.is_empty() {
        let _ = write!(s, " -> map[{}]", local.join(", "));
    }
    let _ = writeln!(s, " -> write parts (one per worker per epoch)");
    if let Some(d) = super::deferral::deferrable(plan) {
        let _ = writeln!(
            s,
            "  under watch: '{}' is written before whitening (each file writes only its own rows); the statistic \
             is recorded with every commit and applied when the dataset is read",
            d.whitening.column
        );
    }
    s
}
