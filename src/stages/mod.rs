//! The operator registry: turns a stage's `op` name and parameter table into a typed operator,
//! and defines the two kinds of operator the dataflow knows how to run.
//!
//! - A [`LocalOp`] computes new columns of each episode row from that row alone (returns, GAE,
//!   broadcast, KL, ...). It runs on Arrow batches wherever they are, with no exchange.
//! - A [`GroupedOp`] needs statistics over a group of rows (a `group_id`, or the whole dataset):
//!   each row contributes a small [`Stat`], the dataflow folds the contributions of a group into a
//!   [`Summary`] inside a differential arrangement (so adding rows updates only their groups), and
//!   the operator then computes each row's columns from the row and its group's summary.
//!
//! Operators declare the columns they read and write by logical name and type; a stage's `read`
//! and `write` tables rename them. Parameters are parsed with unknown keys rejected and ranges
//! checked, and errors name the key. This file is the only place that maps names to operators.

pub mod columns;
mod grouped;
pub(crate) mod params;

mod action_boundaries;
mod broadcast;
mod discounted_return;
mod episode;
mod gae;
mod group_baseline;
mod kl;
#[cfg(feature = "torch")]
mod logprobs;
mod normalize;
mod reflector_reward;
mod reinforce_pp;

pub use columns::StageInput;
pub use grouped::{Stat, Summary};
pub use params::ParamError;

use arrow::array::ArrayRef;

use crate::ops::exact_moments::ExactMoments;
use crate::schema::ColumnType;

/// A column an operator reads or writes, by logical name.
#[derive(Debug, Clone)]
pub struct Col {
    /// Logical name (also the default column name).
    pub name: &'static str,
    /// Type.
    pub ty: ColumnType,
    /// Whether the stage works without it (reads only).
    pub optional: bool,
}

impl Col {
    /// A required column.
    pub fn new(name: &'static str, ty: &str) -> Col {
        Col { name, ty: ColumnType::parse(ty).expect("operator column types are valid"), optional: false }
    }

    /// An optional column.
    pub fn optional(name: &'static str, ty: &str) -> Col {
        Col { optional: true, ..Col::new(name, ty) }
    }
}

/// What every operator declares.
pub trait Describe: Send + Sync {
    /// Columns read.
    fn reads(&self) -> Vec<Col>;
    /// Columns written (replacing a column of the same name).
    fn writes(&self) -> Vec<Col>;
    /// The resolved parameters, one `key = value` per entry, for `explain`.
    fn params(&self) -> Vec<(String, String)>;
}

/// An operator that computes a row's outputs from that row alone.
pub trait LocalOp: Describe {
    /// Computes the written columns (in `writes()` order) for every row.
    fn apply(&self, input: &StageInput<'_>) -> Result<Vec<ArrayRef>, String>;
}

/// An operator whose outputs depend on statistics over a group of rows.
pub trait GroupedOp: Describe {
    /// Logical name of the grouping column; `None` = one group holding every row.
    fn group_column(&self) -> Option<&'static str>;
    /// Each row's contribution to its group.
    fn contributions(&self, input: &StageInput<'_>) -> Result<Vec<Stat>, String>;
    /// Folds a group's contributions (in a deterministic, sorted order, with multiplicities).
    fn summarize(&self, stats: &mut dyn Iterator<Item = (Stat, usize)>) -> Summary;
    /// Computes the written columns for every row given its group's summary.
    fn apply(&self, input: &StageInput<'_>, summaries: &[Summary]) -> Result<Vec<ArrayRef>, String>;
    /// For a whole-dataset statistic (no group column): each row's values as exact moments, so
    /// that the statistic is the same whatever the order rows are merged in, incrementally or at
    /// once, on any number of workers ([`crate::ops::exact_moments`]).
    fn exact(&self, _input: &StageInput<'_>) -> Result<Vec<ExactMoments>, String> {
        Err("has no whole-dataset statistic".into())
    }
    /// For a whole-dataset whitening: what `apply` does, as a [`Deferral`] that `watch` can record
    /// with the statistic instead of rewriting every row when it moves. `None` for other ops.
    fn deferral(&self) -> Option<Deferral> {
        None
    }
}

/// A whitening [`GroupedOp::apply`] would perform in place, given the summary's moments.
pub struct Deferral {
    /// Logical name of the whitened per-token column (read, and written in place).
    pub values: &'static str,
    /// Logical name of the segment column whose action tokens are whitened.
    pub segments: &'static str,
    /// Variance estimator, ε and mean handling.
    pub params: crate::ops::normalize::NormalizeParams,
}

/// A typed operator.
pub enum Operator {
    /// Row-local.
    Local(Box<dyn LocalOp>),
    /// Grouped.
    Grouped(Box<dyn GroupedOp>),
    /// A model-bound step of a training graph (a reward model's rewards, the critic's values):
    /// it needs every row of an iteration at once and the models, so the dataflow hands the
    /// iteration's rows to the driver that owns them ([`crate::dataflow::Driver::model_step`]).
    Model(Box<dyn Describe>),
}

impl Operator {
    /// The declaration part.
    pub fn describe(&self) -> &dyn Describe {
        match self {
            Operator::Local(op) => op.as_ref(),
            Operator::Grouped(op) => op.as_ref(),
            Operator::Model(op) => op.as_ref(),
        }
    }
}

/// Operator names with a one-line summary, in documentation order.
pub const OPERATORS: &[(&str, &str)] = &[
    ("action_boundaries", "marks the last token of every action (from segments and turns)"),
    ("discounted_return", "per-turn discounted return with bootstrap at truncation, broadcast onto action tokens"),
    ("gae", "GAE with separate inter-/intra-action discount: standard, POAD/BAD, NTPO, TWOSOME"),
    ("group_baseline", "leave-one-out / mean / mean-std (GRPO) episode advantage per group, with LOOP's |A| filter"),
    ("broadcast", "an episode-level value onto every action token"),
    ("normalize", "masked whitening of a per-token column over the whole batch or per group"),
    ("reinforce_pp_returns", "REINFORCE++ discounted token returns (veRL reset or carry across observations)"),
    ("reflector_reward", "RetroAct's reflector reward from a trial's and the previous trial's outcome"),
    ("kl", "k1/k2/k3 KL estimate between two log-prob columns"),
    ("logprobs", "per-token log-probs of the tokens under a model, on the device thread"),
];

/// Builds the operator `name` from its parameter table.
pub fn build(name: &str, params: &toml::Table) -> Result<Operator, ParamError> {
    use Operator::{Grouped, Local};
    Ok(match name {
        "action_boundaries" => Local(Box::new(action_boundaries::ActionBoundaries::new(params)?)),
        "discounted_return" => Local(Box::new(discounted_return::DiscountedReturn::new(params)?)),
        "gae" => Local(Box::new(gae::Gae::new(params)?)),
        "group_baseline" => Grouped(Box::new(group_baseline::GroupBaseline::new(params)?)),
        "broadcast" => Local(Box::new(broadcast::Broadcast::new(params)?)),
        "normalize" => Grouped(Box::new(normalize::Normalize::new(params)?)),
        "reinforce_pp_returns" => Local(Box::new(reinforce_pp::ReinforcePpReturns::new(params)?)),
        "reflector_reward" => Local(Box::new(reflector_reward::ReflectorReward::new(params)?)),
        "kl" => Local(Box::new(kl::Kl::new(params)?)),
        #[cfg(feature = "torch")]
        "logprobs" => Local(Box::new(logprobs::Logprobs::new(params)?)),
        other => {
            return Err(ParamError::new(
                "op",
                format!(
                    "unknown operator '{other}' (known: {})",
                    OPERATORS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ),
            ))
        }
    })
}
