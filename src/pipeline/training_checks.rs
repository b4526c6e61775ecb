//! The checks that a training pipeline's sections and its stage graph agree, run on the validated
//! plan before any model loads or anything is written (`trajflow run`, `watch --train`,
//! `reprocess --train`, and `trajflow validate` of a training pipeline).
//!
//! Invariant: a step a pipeline declares either runs in the mode it is run in or is refused with
//! an error naming the file, the section or stage, and the key; nothing declared is skipped
//! silently.

use crate::error::{Error, Result};
use crate::pipeline::training::LossKind;
use crate::pipeline::{PipelineSpec, Plan};

/// How a training pipeline is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainingMode {
    /// `trajflow run`: rollouts from the environment, then the pipeline-declared steps.
    Run,
    /// `watch --train` / `reprocess --train`: stored rows through the model steps, the stages and
    /// the update.
    Stream,
}

/// Every check of a training pipeline for `mode` (none for a data pipeline).
pub fn check_training(spec: &PipelineSpec, plan: &Plan, mode: TrainingMode) -> Result<()> {
    if spec.training.is_none() {
        return Ok(());
    }
    let checked =
        check_model_sections(spec).and_then(|()| check_learner_columns(spec, plan)).and_then(|()| match mode {
            TrainingMode::Run => check_values_source(spec, plan),
            // Stored rows may carry `values` of their own (an actor's critic).
            TrainingMode::Stream => Ok(()),
        });
    // A graph-form pipeline's errors name the stage or model table the section came from.
    checked.map_err(|e| match &spec.graph {
        Some(g) => g.relocate(e),
        None => e,
    })
}

/// A model step runs where the graph puts it among the stages: the section form has no place for
/// one, so a `[critic]`, `[discriminator]` or `[implicit_reward]` written by hand would not run.
fn check_model_sections(spec: &PipelineSpec) -> Result<()> {
    let t = spec.training.as_ref().expect("checked by the caller");
    if spec.graph.is_some() {
        return Ok(());
    }
    let sections = [
        ("critic", t.critic.is_some(), "values"),
        ("discriminator", t.discriminator.is_some(), "discriminator_reward"),
        ("implicit_reward", t.implicit_reward.is_some(), "implicit_reward"),
    ];
    match sections.iter().find(|(_, present, _)| *present) {
        Some((section, _, op)) => Err(Error::Spec {
            file: spec.file.clone(),
            stage: Some(format!("[{section}]")),
            key: None,
            message: format!(
                "its step runs where a graph puts it: write the pipeline with [models] tables and an \
                 `op = \"{op}\"` [[stage]] (`trajflow ops`)"
            ),
        }),
        None => Ok(()),
    }
}

/// The learner's columns must be written by a stage or be trajectory columns.
fn check_learner_columns(spec: &PipelineSpec, plan: &Plan) -> Result<()> {
    let t = spec.training.as_ref().expect("checked by the caller");
    let l = &t.learner;
    let written: Vec<&str> = plan.stages.iter().flat_map(|s| s.writes.iter().map(|(n, _)| n.as_str())).collect();
    let table = crate::schema::TableSchema::trajectory();
    let known = |c: &str| written.contains(&c) || table.fields.iter().any(|f| f.name == c);
    let mut needed = Vec::new();
    if matches!(l.loss, LossKind::Ppo | LossKind::ClippedIs) {
        needed.push(("[learner]", "advantages", l.advantages.as_str()));
    }
    if let Some(k) = &l.keep {
        needed.push(("[learner]", "keep", k.as_str()));
    }
    if let Some(c) = &t.critic {
        needed.push(("[critic]", "returns", c.returns.as_str()));
    }
    for (section, key, col) in needed {
        if !known(col) {
            return Err(Error::Spec {
                file: spec.file.clone(),
                stage: Some(section.into()),
                key: Some(key.into()),
                message: format!("column '{col}' is written by no stage (stages write: {})", written.join(", ")),
            });
        }
    }
    Ok(())
}

/// In `trajflow run` only a `values` step fills the trajectory column `values` (rollouts leave it
/// empty): a stage that reads it with no `values` step (or other writer) before it is an error
/// here, before the model loads, not at the first iteration.
fn check_values_source(spec: &PipelineSpec, plan: &Plan) -> Result<()> {
    for (i, s) in plan.stages.iter().enumerate() {
        let written_before = |c: &str| plan.stages[..i].iter().any(|u| u.writes.iter().any(|(n, _)| n == c));
        if let Some((key, _)) = s.read.iter().find(|(_, col)| col.as_str() == "values" && !written_before(col)) {
            return Err(Error::Spec {
                file: spec.file.clone(),
                stage: Some(s.id.clone()),
                key: Some(key.clone()),
                message: format!(
                    "`{}` reads column 'values', which only a `values` step fills during a run: put one \
                     upstream of it (in its inputs) or use an advantage that needs no critic",
                    s.op_name
                ),
            });
        }
    }
    Ok(())
}
