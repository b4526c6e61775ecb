//! `trajflow run`: a training pipeline's whole loop — rollouts → stages → gradient steps → next
//! policy version — as one dataflow whose timestamps are iterations ([`crate::dataflow::iterate`]).
//!
//! A run directory holds everything about a run:
//! ```text
//! RUN/config.toml          the pipeline as run (after --set), so that --resume needs nothing else
//! RUN/trajectories/        a trajflow dataset: one part per iteration (rollouts + stage columns)
//!                          or, under `watch --train` / `reprocess --train`, per update
//! RUN/ingested/            (`--train` only) the files' rows as ingested
//! RUN/imitation/           RetroAct's imitation set (`learner.imitation` > 0): the warm start's
//!                          rows as trained, the NLL's tokens marked `action`
//! RUN/env-failures/        rollout episodes whose environment broke (only if one did), with
//!                          their `env_error`; kept out of `trajectories/` and the update
//! RUN/metrics.jsonl        one JSON line per iteration (0 = after the warm start)
//! RUN/checkpoints/iter-N/  weights, optimiser state and position (the last two are kept)
//! RUN/curves.png           learning curves (`trajflow report` redraws them)
//! RUN/tensorboard/         the metrics as TensorBoard scalars (`tensorboard --logdir RUN`)
//! ```
//! Invariant: a run resumed from its last checkpoint continues exactly as if it had never stopped.

pub mod behaviour;
pub mod critic;
pub mod discriminator;
pub mod examples;
pub mod gain;
pub mod group_tracker;
pub mod implicit_reward;
pub mod learner;
pub mod metrics;
pub mod plot;
pub mod preferences;
pub mod report;
pub mod row_columns;
pub mod staleness;
pub mod stream;
pub mod stream_update;
pub mod tensorboard;
pub mod trainer;

use std::path::PathBuf;

use crate::dataflow::{iterate, Cluster, Driver};
use crate::error::{Error, Result};
use crate::pipeline::training::{apply_sets, TrainingSpec};
use crate::pipeline::training_checks::{check_training, TrainingMode};
use crate::pipeline::{PipelineSpec, Plan};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The pipeline file (ignored with `resume`: the run directory's `config.toml` is used).
    pub pipeline: Option<PathBuf>,
    /// `KEY=VALUE` overrides.
    pub sets: Vec<String>,
    /// The run directory.
    pub dir: PathBuf,
    /// Continue the run in `dir` from its last checkpoint.
    pub resume: bool,
    /// Worker placement.
    pub cluster: Cluster,
    /// Print a line per iteration.
    pub verbose: bool,
}

/// The resolved config of a run: the pipeline text with overrides applied, parsed and validated.
fn resolve(opts: &RunOptions) -> Result<(String, Plan, TrainingSpec)> {
    let config = opts.dir.join("config.toml");
    let text = if opts.resume {
        let text = std::fs::read_to_string(&config).map_err(|e| Error::io(&config, e))?;
        apply_sets(&config, &text, &opts.sets)?
    } else {
        let file = opts.pipeline.as_ref().ok_or_else(|| Error::Usage("run: a pipeline file is required".into()))?;
        let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
        apply_sets(file, &text, &opts.sets)?
    };
    let origin = if opts.resume { config } else { opts.pipeline.clone().expect("checked") };
    let spec = PipelineSpec::parse(&origin, &text)?;
    if spec.training.is_none() {
        return Err(Error::Spec {
            file: origin,
            stage: None,
            key: Some("model".into()),
            message: "not a training pipeline: `trajflow run` needs [model] (and usually [rollout], [learner]); \
                      use `trajflow reprocess` for data pipelines"
                .into(),
        });
    }
    let plan = Plan::from_spec(spec.clone())?;
    check_training(&spec, &plan, TrainingMode::Run)?;
    Ok((text, plan, spec.training.expect("checked above")))
}

/// A training pipeline for `watch --train` / `reprocess --train`: the file with `sets` applied,
/// parsed (a training pipeline is required) with its validated plan, and recorded by the leader
/// as `RUN/config.toml`. A
/// run directory that already holds a config (a restarted `watch`) must have been made by the same
/// text.
pub fn stream_spec(
    pipeline: &std::path::Path,
    sets: &[String],
    dir: &std::path::Path,
    leader: bool,
) -> Result<(PipelineSpec, Plan)> {
    let (text, spec) = PipelineSpec::from_file_with_sets(pipeline, sets)?;
    if spec.training.is_none() {
        return Err(Error::Spec {
            file: pipeline.to_path_buf(),
            stage: None,
            key: Some("model".into()),
            message: "--train needs a training pipeline ([model], [learner])".into(),
        });
    }
    let plan = Plan::from_spec(spec.clone())?;
    check_training(&spec, &plan, TrainingMode::Stream)?;
    if !leader {
        return Ok((spec, plan));
    }
    let config = dir.join("config.toml");
    match std::fs::read_to_string(&config) {
        Ok(old) if old != text => {
            return Err(Error::Usage(format!(
                "{} holds a run of another config (a restart must use the same pipeline and --set values)",
                dir.display()
            )))
        }
        Ok(_) => {}
        Err(_) => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            std::fs::write(&config, &text).map_err(|e| Error::io(&config, e))?;
        }
    }
    Ok((spec, plan))
}

/// Runs (or resumes) a training pipeline; returns the run directory.
pub fn run(opts: RunOptions) -> Result<PathBuf> {
    let (text, plan, spec) = resolve(&opts)?;
    let dir = &opts.dir;
    let leader = opts.cluster.is_leader();
    let (first, driver): (u64, Option<Box<dyn Driver + Send>>) = if leader {
        let resume_from = if opts.resume {
            Some(
                trainer::last_checkpoint(dir)?
                    .ok_or_else(|| Error::Usage(format!("--resume {}: no checkpoint to resume from", dir.display())))?,
            )
        } else {
            if dir.join("config.toml").exists() {
                return Err(Error::Usage(format!(
                    "{} already holds a run; pass --resume to continue it or choose another --out",
                    dir.display()
                )));
            }
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            std::fs::write(dir.join("config.toml"), &text).map_err(|e| Error::io(dir, e))?;
            None
        };
        if opts.verbose {
            crate::progress::enable();
        }
        let mut t = trainer::Trainer::new(spec.clone(), dir, resume_from, opts.verbose)?;
        if opts.resume {
            // The config records the pipeline as run from now on (a resume may --set new values).
            std::fs::write(dir.join("config.toml"), &text).map_err(|e| Error::io(dir, e))?;
        }
        match resume_from {
            Some(it) => {
                metrics::MetricsFile::new(dir).truncate_after(it)?;
                if opts.verbose {
                    eprintln!("resuming {} after iteration {it}", dir.display());
                }
            }
            None => t.start()?,
        }
        (
            resume_from.map_or(1, |it| it + 1),
            Some(Box::new(crate::model::thread::ModelThread::spawn("device:trainer", t)?)),
        )
    } else {
        (1, None)
    };
    iterate(plan.into(), &opts.cluster, first..spec.run.iterations + 1, driver)?;
    if leader {
        report::report(std::slice::from_ref(dir), &dir.join("curves.png"))?;
    }
    Ok(dir.clone())
}
