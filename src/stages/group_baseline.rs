//! `group_baseline`: an episode-level advantage from the scores of the episode's group.
//!
//! | mode | advantage | used by |
//! |---|---|---|
//! | `leave_one_out` (default) | R_i − mean of the others | LOOP, RLOO |
//! | `mean` | R_i − group mean | Dr.GRPO, REINFORCE++-baseline, LOOP leave-none-out |
//! | `mean_std` | (R_i − mean)/(std + ε) | GRPO, LOOP RwNorm |
//!
//! Choices where peers differ, all parameters: `std = "unbiased"` (Bessel, veRL/OpenRLHF; TRL
//! too) or `"population"`; `epsilon = 1e-6` (veRL, SkyRL; OpenRLHF 1e-9, TRL 1e-4); a group of one
//! gets advantage 0 (`singleton = "zero"`: no sibling, no signal) or its raw score (`"raw"`, veRL's
//! loop RLOO). Partial groups (fewer than K rollouts arrived) use the actual count, as LOOP does.
//! `min_abs` is LOOP's filter: `keep` is false when |A| < min_abs (LOOP: 0.01); rows are kept in
//! the output with `keep = false` so that a later rollout joining the group can flip them back.
//! Reads `reward` and `group_id`; writes `episode_advantage` and `keep`.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float32Array};
use arrow::datatypes::Float32Type;

use super::columns::StageInput;
use super::{params, Col, Describe, GroupedOp, ParamError, Stat, Summary};
use crate::ops::group_baseline::{
    group_advantage, group_stats, passes_abs_filter, BaselineMode, BaselineParams, Singleton, StdKind,
};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    std: Std,
    #[serde(default = "default_eps")]
    epsilon: f64,
    #[serde(default)]
    singleton: One,
    #[serde(default)]
    min_abs: f64,
}

/// Baseline mode names.
#[derive(Debug, Default, Clone, Copy, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Mode {
    #[default]
    LeaveOneOut,
    Mean,
    MeanStd,
}

/// Standard deviation kinds.
#[derive(Debug, Default, Clone, Copy, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Std {
    #[default]
    Unbiased,
    Population,
}

impl From<Std> for StdKind {
    fn from(s: Std) -> StdKind {
        match s {
            Std::Unbiased => StdKind::Unbiased,
            Std::Population => StdKind::Population,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum One {
    #[default]
    Zero,
    Raw,
}

fn default_eps() -> f64 {
    1e-6
}

/// The operator.
pub struct GroupBaseline {
    p: BaselineParams,
    min_abs: f64,
}

impl GroupBaseline {
    /// Parses `mode`, `std`, `epsilon`, `singleton`, `min_abs`.
    pub fn new(t: &toml::Table) -> Result<Self, ParamError> {
        let p: Params = params::parse(t)?;
        params::in_range("epsilon", p.epsilon, 0.0, 1.0)?;
        params::in_range("min_abs", p.min_abs, 0.0, f64::MAX)?;
        let mode = match p.mode {
            Mode::LeaveOneOut => BaselineMode::LeaveOneOut,
            Mode::Mean => BaselineMode::Mean,
            Mode::MeanStd => BaselineMode::MeanStd,
        };
        let singleton = match p.singleton {
            One::Zero => Singleton::Zero,
            One::Raw => Singleton::Raw,
        };
        Ok(GroupBaseline {
            p: BaselineParams { mode, std: p.std.into(), epsilon: p.epsilon, singleton },
            min_abs: p.min_abs,
        })
    }
}

impl Describe for GroupBaseline {
    fn reads(&self) -> Vec<Col> {
        vec![Col::new("group_id", "utf8"), Col::new("reward", "float32")]
    }
    fn writes(&self) -> Vec<Col> {
        vec![Col::new("episode_advantage", "float32"), Col::new("keep", "bool")]
    }
    fn params(&self) -> Vec<(String, String)> {
        let p = &self.p;
        vec![
            ("mode".into(), format!("{:?}", p.mode)),
            ("std".into(), format!("{:?}", p.std)),
            ("epsilon".into(), format!("{:?}", p.epsilon)),
            ("singleton".into(), format!("{:?}", p.singleton)),
            ("min_abs".into(), format!("{:?}", self.min_abs)),
        ]
    }
}

impl GroupedOp for GroupBaseline {
    fn group_column(&self) -> Option<&'static str> {
        Some("group_id")
    }

    fn contributions(&self, input: &StageInput<'_>) -> Result<Vec<Stat>, String> {
        let r = input.scalars::<Float32Type>("reward")?;
        Ok(r.values().iter().map(|&x| Stat { n: 1, mean: x as f64, m2: 0.0 }).collect())
    }

    fn summarize(&self, stats: &mut dyn Iterator<Item = (Stat, usize)>) -> Summary {
        let values: Vec<f64> = stats.flat_map(|(s, m)| std::iter::repeat_n(s.mean, m)).collect();
        let g = group_stats(&values);
        Summary { n: g.n, sum: g.sum, mean: g.mean, m2: g.m2 }
    }

    fn apply(&self, input: &StageInput<'_>, summaries: &[Summary]) -> Result<Vec<ArrayRef>, String> {
        let r = input.scalars::<Float32Type>("reward")?;
        let mut adv = Vec::with_capacity(r.len());
        let mut keep = Vec::with_capacity(r.len());
        for (i, s) in summaries.iter().enumerate() {
            let stats = crate::ops::group_baseline::GroupStats { n: s.n, sum: s.sum, mean: s.mean, m2: s.m2 };
            let a = group_advantage(r.value(i) as f64, &stats, &self.p);
            adv.push(a as f32);
            keep.push(passes_abs_filter(a, self.min_abs));
        }
        Ok(vec![Arc::new(Float32Array::from(adv)), Arc::new(BooleanArray::from(keep))])
    }
}
