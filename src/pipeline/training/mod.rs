//! The training-loop sections of a pipeline file, for `trajflow run`: which model, how rollouts are
//! made, the optional imitation warm start, the learner and the loop itself. A pipeline without
//! them is a data pipeline (`reprocess`, `watch`); with them it is also a training pipeline, whose
//! `[[stage]]` graph runs on each iteration's rollouts between the rollout and the learner.
//!
//! ```toml
//! [model]
//! name = "small:household"    # a model SPEC (see `trajflow generate --help`)
//! [rollout]
//! env = "household"
//! source = "policy"           # policy | expert (SFT) | expert_prefixes (StepAgent) | policy_vs_expert (ETO) | reflexion (RetroAct)
//! tasks = 16                  # train-split tasks per iteration (cycling over the split)
//! k = 4                       # rollouts per task: one group, all from the same start state
//! [warm_start]                # optional: SFT on expert demonstrations before iteration 1
//! demos = 200
//! [learner]
//! loss = "ppo"                # ppo | nll | dpo (pairs best vs worst row per group) | clipped_is (RetroAct)
//! [critic]                    # optional: value head for GAE (POAD, PPO)
//! hidden = [256]
//! advantages = "advantages"   # per-token column written by the stages
//! [run]
//! iterations = 8
//! [stream]                    # optional: training on files instead (`watch --train`, `reprocess --train`)
//! groups_per_update = 8
//! max_staleness = 2           # versions; stale = "drop" | "truncate"
//! ```
//!
//! Invariants: every key has a default except `model.name`; unknown keys and out-of-range values
//! are rejected with the section and key named, before anything runs.

mod defaults;
mod rules;
mod sections;
mod sets;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use sections::*;
pub use sets::apply_sets;

use super::reduction::Reduction;
use crate::error::{Error, Result};

/// All training-loop sections of a pipeline file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingSpec {
    /// `[model]`.
    pub model: ModelSection,
    /// `[rollout]`.
    pub rollout: RolloutSection,
    /// `[warm_start]`, if any.
    pub warm_start: Option<WarmStartSection>,
    /// `[learner]`.
    pub learner: LearnerSection,
    /// `[critic]`, if any.
    pub critic: Option<CriticSection>,
    /// `[discriminator]`, if any.
    pub discriminator: Option<DiscriminatorSection>,
    /// `[implicit_reward]`, if any.
    pub implicit_reward: Option<ImplicitRewardSection>,
    /// `[run]`.
    pub run: RunSection,
    /// `[stream]`: training on files (`watch --train`, `reprocess --train`).
    pub stream: StreamSection,
}

impl TrainingSpec {
    /// The training sections of `file`'s top-level table, or `None` if it has no `[model]`
    /// (a data pipeline). Removes the sections it reads from `table`.
    pub fn take(file: &Path, table: &mut toml::Table) -> Result<Option<TrainingSpec>> {
        let names = [
            "model",
            "rollout",
            "warm_start",
            "learner",
            "critic",
            "discriminator",
            "implicit_reward",
            "run",
            "stream",
        ];
        if !table.contains_key("model") {
            if let Some(n) = names.iter().find(|n| table.contains_key(**n)) {
                return Err(spec_err(file, n, Some("model"), "a training pipeline needs a [model] section".into()));
            }
            return Ok(None);
        }
        fn section<T: serde::de::DeserializeOwned>(
            file: &Path,
            table: &mut toml::Table,
            name: &str,
        ) -> Result<Option<T>> {
            let Some(v) = table.remove(name) else { return Ok(None) };
            let t = match v {
                toml::Value::Table(t) => t,
                _ => return Err(spec_err(file, name, None, "must be a table".into())),
            };
            crate::stages::params::parse::<T>(&t)
                .map(Some)
                .map_err(|e| spec_err(file, name, (!e.key.is_empty()).then_some(e.key.as_str()), e.message))
        }
        let empty = || toml::Value::Table(toml::Table::new());
        let spec = TrainingSpec {
            model: section(file, table, "model")?.expect("checked above"),
            rollout: section(file, table, "rollout")?.unwrap_or_else(|| empty().try_into().expect("all defaults")),
            warm_start: section(file, table, "warm_start")?,
            learner: section(file, table, "learner")?.unwrap_or_else(|| empty().try_into().expect("all defaults")),
            critic: section(file, table, "critic")?,
            discriminator: section(file, table, "discriminator")?,
            implicit_reward: section(file, table, "implicit_reward")?,
            run: section(file, table, "run")?.unwrap_or_else(|| empty().try_into().expect("all defaults")),
            stream: section(file, table, "stream")?.unwrap_or_else(|| empty().try_into().expect("all defaults")),
        };
        spec.check(file)?;
        Ok(Some(spec))
    }

    /// The loss reduction.
    pub fn reduction(&self) -> Reduction {
        self.learner.reduction.parse().expect("checked at parse time")
    }
}

fn spec_err(file: &Path, section: &str, key: Option<&str>, message: String) -> Error {
    Error::Spec { file: file.to_path_buf(), stage: Some(format!("[{section}]")), key: key.map(str::to_string), message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<TrainingSpec>> {
        let mut t: toml::Table = toml::from_str(text).unwrap();
        TrainingSpec::take(Path::new("p.toml"), &mut t)
    }

    #[test]
    fn defaults_fill_everything_but_the_model() {
        let s = parse("[model]\nname = \"small:household\"\n").unwrap().unwrap();
        assert_eq!(s.rollout.k, 4);
        assert_eq!(s.learner.loss, LossKind::Ppo);
        assert!(s.warm_start.is_none());
        assert!(parse("name = \"x\"\n").unwrap().is_none());
    }

    #[test]
    fn errors_name_section_and_key() {
        let e = parse("[model]\nname = \"m\"\n[learner]\nlr = -1.0\n").unwrap_err().to_string();
        assert!(e.contains("[learner]") && e.contains("lr"), "{e}");
        let e = parse("[model]\nname = \"m\"\n[rollout]\nkk = 3\n").unwrap_err().to_string();
        assert!(e.contains("[rollout]") && e.contains("kk"), "{e}");
        let e = parse("[rollout]\nk = 3\n").unwrap_err().to_string();
        assert!(e.contains("[model]") || e.contains("model"), "{e}");
        let e = parse("[model]\nname = \"m\"\n[learner]\nreduction = \"median\"\n").unwrap_err().to_string();
        assert!(e.contains("reduction"), "{e}");
    }

    #[test]
    fn stream_section_defaults_and_checks() {
        let s = parse("[model]\nname = \"m\"\n[rollout]\nk = 6\ntasks = 3\n").unwrap().unwrap();
        assert_eq!((s.stream.group_size(&s.rollout), s.stream.groups_per_update(&s.rollout)), (6, 3));
        assert_eq!((s.stream.stale, s.stream.checkpoint_every, s.stream.max_staleness), (StaleRows::Drop, 1, None));
        for (text, key) in [
            ("[stream]\ngroups_per_update = 0\n", "groups_per_update"),
            ("[stream]\ncheckpoint_every = 0\n", "checkpoint_every"),
            ("[stream]\nstale = \"truncate\"\n[learner]\nloss = \"dpo\"\n", "stale"),
            ("[stream]\nstale = \"later\"\n", "stale"),
        ] {
            let e = parse(&format!("[model]\nname = \"m\"\n{text}")).unwrap_err().to_string();
            assert!(e.contains("[stream]") && e.contains(key), "{text}: {e}");
        }
    }
}
