//! The loss reductions a `[learner]` can name (`reduction = "token-mean"`, …): how a per-token
//! loss `[B, T]` becomes a scalar over its mask. The names are veRL's `loss_agg_mode` where one
//! exists; the arithmetic is in [`crate::train::losses`] (libtorch build). This lives with the
//! pipeline spec so that a spec is validated the same way with or without libtorch.

use std::fmt;
use std::str::FromStr;

/// How a per-token loss `[B, T]` is reduced to a scalar over the mask `m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// `Σ(ℓ·m) / (Σm + 1e-8)` over the whole batch: every action token weighs the same.
    /// POAD's `masked_mean`; veRL `"token-mean"`.
    TokenMean,
    /// Per row `Σ_t(ℓ·m) / (Σ_t m + 1e-8)`, then the mean over rows with at least one token.
    /// LOOP's per-trajectory token mean averaged over the minibatch; veRL `"seq-mean-token-mean"`.
    SeqMeanTokenMean,
    /// Per row `Σ_t(ℓ·m)`, then the mean over rows with at least one token.
    /// veRL `"seq-mean-token-sum"`.
    SeqMeanTokenSum,
    /// `Σ(ℓ·m)`.
    Sum,
    /// `Σ(ℓ·m) / (B·T)`: masked positions count in the denominator (contributing 0).
    /// RetroAct's `mean` over all positions, prompt and padding included.
    AllPositionsMean,
}

impl Reduction {
    /// The config name: veRL's `loss_agg_mode` where one exists.
    pub fn as_str(self) -> &'static str {
        match self {
            Reduction::TokenMean => "token-mean",
            Reduction::SeqMeanTokenMean => "seq-mean-token-mean",
            Reduction::SeqMeanTokenSum => "seq-mean-token-sum",
            Reduction::Sum => "sum",
            Reduction::AllPositionsMean => "all-positions-mean",
        }
    }
}

impl fmt::Display for Reduction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Reduction {
    type Err = String;

    /// Parses the names of [`Reduction::as_str`] (`_` accepted for `-`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.replace('_', "-").as_str() {
            "token-mean" => Ok(Reduction::TokenMean),
            "seq-mean-token-mean" => Ok(Reduction::SeqMeanTokenMean),
            "seq-mean-token-sum" => Ok(Reduction::SeqMeanTokenSum),
            "sum" => Ok(Reduction::Sum),
            "all-positions-mean" => Ok(Reduction::AllPositionsMean),
            _ => Err(format!(
                "unknown reduction {s:?} (token-mean, seq-mean-token-mean, seq-mean-token-sum, sum, \
                 all-positions-mean)"
            )),
        }
    }
}
