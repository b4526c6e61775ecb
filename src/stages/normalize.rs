//! `normalize`: masked whitening of a per-token column (`advantages` by default, in place) over
//! the action tokens of the whole dataset (`scope = "batch"`) or of each group (`"group"`).
//!
//! Semantics follow veRL's `masked_whiten`: (x − mean)/sqrt(var + ε) with the unbiased variance
//! and ε = 1e-8; `std = "population"` gives OpenRLHF's ÷N variance; `shift_mean = false` adds the
//! mean back. Statistics are combined from per-episode moments in a fixed order (Chan's formula),
//! so they do not depend on batching or worker count. A batch-scope statistic changes whenever any
//! row arrives; when the stage ends the pipeline, `watch` records it with each commit instead of
//! re-emitting every row ([`Deferral`], [`crate::store::DeferredWhitening`]); elsewhere every row
//! is re-emitted.

use arrow::array::ArrayRef;
use arrow::datatypes::{Float32Type, UInt8Type};

use super::columns::{per_token_f32, StageInput};
use super::group_baseline::Std;
use super::{params, Col, Deferral, Describe, GroupedOp, ParamError, Stat, Summary};
use crate::ops::exact_moments::ExactMoments;
use crate::ops::normalize::{combine, moments, whiten, Moments, NormalizeParams};
use crate::ops::segment::ACTION;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    scope: Scope,
    #[serde(default)]
    std: Std,
    #[serde(default = "default_eps")]
    epsilon: f64,
    #[serde(default = "yes")]
    shift_mean: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Scope {
    #[default]
    Batch,
    Group,
}

fn default_eps() -> f64 {
    1e-8
}

fn yes() -> bool {
    true
}

/// The operator.
pub struct Normalize {
    scope: Scope,
    p: NormalizeParams,
}

impl Normalize {
    /// Parses `scope`, `std`, `epsilon`, `shift_mean`.
    pub fn new(t: &toml::Table) -> Result<Self, ParamError> {
        let p: Params = params::parse(t)?;
        params::in_range("epsilon", p.epsilon, 0.0, 1.0)?;
        Ok(Normalize {
            scope: p.scope,
            p: NormalizeParams { std: p.std.into(), epsilon: p.epsilon, shift_mean: p.shift_mean },
        })
    }
}

impl Describe for Normalize {
    fn reads(&self) -> Vec<Col> {
        let mut cols = vec![Col::new("segments", "list<uint8>"), Col::new("advantages", "list<float32>")];
        if self.scope == Scope::Group {
            cols.push(Col::new("group_id", "utf8"));
        }
        cols
    }
    fn writes(&self) -> Vec<Col> {
        vec![Col::new("advantages", "list<float32>")]
    }
    fn params(&self) -> Vec<(String, String)> {
        vec![
            ("scope".into(), format!("{:?}", self.scope)),
            ("std".into(), format!("{:?}", self.p.std)),
            ("epsilon".into(), format!("{:?}", self.p.epsilon)),
            ("shift_mean".into(), format!("{:?}", self.p.shift_mean)),
        ]
    }
}

impl GroupedOp for Normalize {
    fn group_column(&self) -> Option<&'static str> {
        (self.scope == Scope::Group).then_some("group_id")
    }

    fn contributions(&self, input: &StageInput<'_>) -> Result<Vec<Stat>, String> {
        let segments = input.lists::<UInt8Type>("segments")?;
        let x = input.lists::<Float32Type>("advantages")?;
        Ok((0..input.num_rows())
            .map(|i| {
                let m = moments(x.row(i), segments.row(i));
                Stat { n: m.n, mean: m.mean, m2: m.m2 }
            })
            .collect())
    }

    fn summarize(&self, stats: &mut dyn Iterator<Item = (Stat, usize)>) -> Summary {
        let mut acc = Moments { n: 0, mean: 0.0, m2: 0.0 };
        for (s, mult) in stats {
            for _ in 0..mult {
                acc = combine(&acc, &Moments { n: s.n, mean: s.mean, m2: s.m2 });
            }
        }
        Summary { n: acc.n, sum: acc.mean * acc.n as f64, mean: acc.mean, m2: acc.m2 }
    }

    fn apply(&self, input: &StageInput<'_>, summaries: &[Summary]) -> Result<Vec<ArrayRef>, String> {
        let segments = input.lists::<UInt8Type>("segments")?;
        let x = input.lists::<Float32Type>("advantages")?;
        let out = per_token_f32(&segments, input.num_rows(), |i, out| {
            let s = &summaries[i];
            whiten(x.row(i), segments.row(i), &Moments { n: s.n, mean: s.mean, m2: s.m2 }, &self.p, out);
            Ok(())
        })?;
        Ok(vec![out])
    }

    fn exact(&self, input: &StageInput<'_>) -> Result<Vec<ExactMoments>, String> {
        let segments = input.lists::<UInt8Type>("segments")?;
        let x = input.lists::<Float32Type>("advantages")?;
        (0..input.num_rows())
            .map(|i| {
                let mut m = ExactMoments::default();
                for (&v, &s) in x.row(i).iter().zip(segments.row(i)) {
                    if s == ACTION {
                        if !v.is_finite() {
                            return Err(format!("row {i}: a non-finite value ({v}) to whiten"));
                        }
                        m.push(v, 1);
                    }
                }
                Ok(m)
            })
            .collect()
    }

    fn deferral(&self) -> Option<Deferral> {
        (self.scope == Scope::Batch).then_some(Deferral { values: "advantages", segments: "segments", params: self.p })
    }
}
