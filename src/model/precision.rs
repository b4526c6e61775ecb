//! The arithmetic a decoder computes in. `float32` everywhere, or `bf16` mixed precision with
//! the semantics of PyTorch's autocast: the weights (the optimiser's master copy), their
//! gradients, the residual stream, norms, softmax and every loss stay in float32; the matrix
//! products (projections, attention, the vocabulary head) take bfloat16 operands. The weights are
//! cast on the fly, so checkpoints and resumes are those of a float32 run. `[model] precision`
//! sets it for a run's policy (rollouts and learner alike), `--precision` for `trajflow generate`
//! and `score`; the torch-free build validates it.

use serde::{Deserialize, Serialize};

/// The arithmetic of the matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in float32.
    #[default]
    Float32,
    /// bfloat16 operands for the matrix products, float32 for the rest (autocast).
    Bf16,
}

#[cfg(feature = "torch")]
impl Precision {
    /// The element type of the matrix products' operands.
    pub fn matmul_kind(self) -> tch::Kind {
        match self {
            Precision::Float32 => tch::Kind::Float,
            Precision::Bf16 => tch::Kind::BFloat16,
        }
    }
}
