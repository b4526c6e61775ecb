//! Per-iteration metrics of a run: one JSON object per line in `RUN/metrics.jsonl`, iteration 0
//! being the policy before any RL (after the warm start, if any).
//!
//! Invariant: the file holds at most one line per iteration, in order; a resumed run first drops
//! lines of iterations after its checkpoint, so the file always describes the weights on disk.
//! The run's TensorBoard event file ([`super::tensorboard`]) mirrors it line for line.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One iteration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IterationMetrics {
    /// Iteration (0 = before RL).
    pub iteration: u64,
    /// Policy version that made this iteration's rollouts.
    pub policy_version: i64,
    /// Rollout episodes.
    pub episodes: usize,
    /// Fraction of rollout episodes that succeeded.
    pub success_rate: f64,
    /// Mean episode return of the rollouts, as their source gave it (before a reward step
    /// rewrites `reward`).
    pub return_mean: f64,
    /// Greedy success rate on the dev tasks after this iteration's update (Reflexion rollouts:
    /// of the first trial, RetroAct's IR).
    pub eval_success_rate: Option<f64>,
    /// Per dev task, in task order (Reflexion rollouts: task-id order, the first trial): `1` if
    /// the greedy evaluation solved it, else `0` (the paired comparison of a run's start and end,
    /// [`super::gain`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_outcomes: Option<String>,
    /// Reflexion rollouts: the fraction of dev tasks solved by any trial (RetroAct's FR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_final_success_rate: Option<f64>,
    /// Reflexion rollouts: per dev task, in task-id order, `1` if any trial solved it (the first
    /// trial's outcomes are `eval_outcomes`, in the same order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_final_outcomes: Option<String>,
    /// Learner loss (mean over updates).
    pub loss: f64,
    /// Fraction of clipped tokens.
    pub clip_frac: f64,
    /// k3 KL between the old and updated policy on trained tokens.
    pub kl: f64,
    /// Policy entropy on trained tokens.
    pub entropy: f64,
    /// Critic loss (0 without a critic).
    #[serde(default)]
    pub value_loss: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Optimiser updates.
    pub updates: u64,
    /// Tokens trained on per epoch.
    pub trained_tokens: u64,
    /// Whether LOOP's KL-stop ended the iteration's updates early.
    pub kl_stopped: bool,
    /// DPO: (chosen, rejected) pairs trained on, and the fraction whose implicit reward ranked the
    /// chosen row first (the learner's: mean over updates; `[implicit_reward]`'s: after training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairs: Option<usize>,
    /// DPO: see `pairs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preference_accuracy: Option<f64>,
    /// Over the update's trained tokens with a behaviour log-prob: the largest and the mean
    /// |stored behaviour log-prob − the learner's log-prob| before the first gradient step
    /// (veRL's `training/rollout_probs_diff_*`). ~0 when the learner trains the distribution the
    /// sampler drew from; large values are warned about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logp_mismatch_max: Option<f64>,
    /// See `logp_mismatch_max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logp_mismatch_mean: Option<f64>,
    /// PPO with a KL penalty: the penalty's KL estimate to the reference policy (mean over updates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_ref: Option<f64>,
    /// Inverse RL: the discriminator's BCE (last epoch) and its accuracy on the iteration's rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discriminator_loss: Option<f64>,
    /// Inverse RL: see `discriminator_loss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discriminator_accuracy: Option<f64>,
    /// Implicit reward into PPO: the reward model's mean DPO loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implicit_reward_loss: Option<f64>,
    /// Training on files (`watch --train`, `reprocess --train`): where this update's rows came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamCounts>,
    /// Rollout episodes whose environment broke (a bridge process died or hung): stored with
    /// their `env_error`, left out of `episodes` and of the update.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub env_failures: usize,
    /// Tokens the policy generated.
    pub generated_tokens: u64,
    /// Generated tokens per second of rollout time.
    pub tokens_per_s: f64,
    /// Seconds per phase: `rollout`, `stages` (the graph's stages, model steps included),
    /// `learn`, `eval`; and the parts of a phase, named `phase/part` (`rollout/generate`,
    /// `stages/rewards` (discriminator or implicit reward model), `stages/values` (critic),
    /// `learn/recompute` (behaviour check and `logp_old`),
    /// `learn/reference`, `learn/fit` (the epochs), and within it `learn/forward`,
    /// `learn/backward` (with the optimiser steps) and `learn/critic`).
    pub time_s: BTreeMap<String, f64>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A stream update's bookkeeping (see [`crate::run::stream`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StreamCounts {
    /// Files ingested so far.
    pub files: u64,
    /// Groups in this update, and how many of them were partial (timed out).
    pub groups: u64,
    /// See `groups`.
    pub partial_groups: u64,
    /// Rows of this update beyond the staleness bound (dropped or down-weighted).
    pub stale_rows: u64,
    /// Rows that arrived after their group was trained, so far (never trained).
    pub late_rows: u64,
    /// The oldest row's staleness in this update (learner version − row's policy_version).
    pub max_staleness: i64,
}

/// The metrics file of a run directory.
pub struct MetricsFile(PathBuf);

impl MetricsFile {
    /// The file in `run_dir`.
    pub fn new(run_dir: &Path) -> Self {
        MetricsFile(run_dir.join("metrics.jsonl"))
    }

    /// Every line, in order (none if the file does not exist).
    pub fn read(&self) -> Result<Vec<IterationMetrics>> {
        let text = match std::fs::read_to_string(&self.0) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.0, e)),
        };
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| serde_json::from_str(l).map_err(|e| Error::file(&self.0, format!("line {}: {e}", i + 1))))
            .collect()
    }

    /// Keeps only iterations `≤ last` (a resumed run drops what its checkpoint does not cover).
    pub fn truncate_after(&self, last: u64) -> Result<()> {
        let keep: Vec<IterationMetrics> = self.read()?.into_iter().filter(|m| m.iteration <= last).collect();
        let mut text = String::new();
        for m in &keep {
            text.push_str(&serde_json::to_string(m).expect("metrics serialise"));
            text.push('\n');
        }
        std::fs::write(&self.0, text).map_err(|e| Error::io(&self.0, e))?;
        let lines: Vec<serde_json::Value> =
            keep.iter().map(|m| serde_json::to_value(m).expect("metrics serialise")).collect();
        super::tensorboard::rewrite(self.run_dir(), &lines)
    }

    fn run_dir(&self) -> &Path {
        self.0.parent().expect("metrics.jsonl is in the run directory")
    }

    /// Appends one line.
    pub fn append(&self, m: &IterationMetrics) -> Result<()> {
        let mut f =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.0).map_err(|e| Error::io(&self.0, e))?;
        writeln!(f, "{}", serde_json::to_string(m).expect("metrics serialise")).map_err(|e| Error::io(&self.0, e))?;
        super::tensorboard::append(self.run_dir(), &serde_json::to_value(m).expect("metrics serialise"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let f = MetricsFile::new(dir.path());
        assert!(f.read().unwrap().is_empty());
        for i in 0..4 {
            f.append(&IterationMetrics { iteration: i, success_rate: i as f64 / 4.0, ..Default::default() }).unwrap();
        }
        f.truncate_after(1).unwrap();
        let back = f.read().unwrap();
        assert_eq!(back.iter().map(|m| m.iteration).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(back[1].success_rate, 0.25);
    }
}
