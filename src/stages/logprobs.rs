//! `logprobs`: per-token log-probs of each episode's `tokens` under a model (`model` = a SPEC:
//! Hugging Face folder, `.gguf` file or short name), written to `logp` (NaN for the first token),
//! and with `entropy = true` the entropy of each token's predictive distribution (`entropy`).
//! Tokens a policy drew (rows that record their sampling: `sample_*`, `allowed_*`) get their
//! log-prob under the distribution they were drawn from — the allowed set, temperature and
//! truncation ([`crate::model::drawn`]) — as the learner and `trajflow score` compute it, so a
//! recomputed `logp_behavior` equals the sampler's before any update; other tokens get the plain
//! softmax's.
//! Rename the output to recompute behaviour log-probs (`write = { logp = "logp_behavior" }`, LOOP's
//! recompute step) or reference log-probs (`logp_ref`). The model runs on the process's device
//! thread ([`crate::model::service`]) and is loaded at the first batch, not at validation.

use arrow::array::ArrayRef;
use arrow::datatypes::Int32Type;

use super::columns::{per_token_f32, StageInput};
use super::{params, Col, Describe, LocalOp, ParamError};
use crate::model::service::ModelService;
use crate::run::examples::drawn_rows;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    model: String,
    #[serde(default = "default_tokens")]
    max_batch_tokens: usize,
    #[serde(default)]
    entropy: bool,
}

fn default_tokens() -> usize {
    16384
}

/// The operator.
pub struct Logprobs {
    model: String,
    max_batch_tokens: usize,
    entropy: bool,
}

impl Logprobs {
    /// Parses `model` (required), `max_batch_tokens` (padded tokens per forward pass) and
    /// `entropy` (also write the per-token predictive entropy).
    pub fn new(t: &toml::Table) -> Result<Self, ParamError> {
        let p: Params = params::parse(t)?;
        if p.model.is_empty() {
            return Err(ParamError::new("model", "must name a model"));
        }
        params::positive("max_batch_tokens", p.max_batch_tokens as f64)?;
        Ok(Logprobs { model: p.model, max_batch_tokens: p.max_batch_tokens, entropy: p.entropy })
    }
}

impl Describe for Logprobs {
    fn reads(&self) -> Vec<Col> {
        vec![Col::new("tokens", "list<int32>")]
    }
    fn writes(&self) -> Vec<Col> {
        let mut cols = vec![Col::new("logp", "list<float32>")];
        if self.entropy {
            cols.push(Col::new("entropy", "list<float32>"));
        }
        cols
    }
    fn params(&self) -> Vec<(String, String)> {
        params::show(&[("model", &self.model)])
            .into_iter()
            .chain([("max_batch_tokens".into(), self.max_batch_tokens.to_string())])
            .collect()
    }
}

impl LocalOp for Logprobs {
    fn apply(&self, input: &StageInput<'_>) -> Result<Vec<ArrayRef>, String> {
        let tokens = input.lists::<Int32Type>("tokens")?;
        let seqs: Vec<Vec<i64>> =
            (0..input.num_rows()).map(|i| tokens.row(i).iter().map(|&t| t as i64).collect()).collect();
        // Tokens a policy drew are scored under the distribution they were drawn from, when the
        // rows say how (`segments`, `logp_behavior`, `sample_*`, `allowed_*`).
        let drawn = match input.batch().column_by_name("segments") {
            Some(_) => drawn_rows(input.batch()).map_err(|e| format!("how the tokens were drawn: {e}"))?,
            None => Vec::new(),
        };
        let scored = ModelService::get(&self.model, self.max_batch_tokens)
            .score(seqs, drawn, self.entropy)
            .map_err(|e| e.to_string())?;
        let mut outs = vec![per_token_f32(&tokens, input.num_rows(), |i, out| {
            out.copy_from_slice(&scored[i].0);
            Ok(())
        })?];
        if self.entropy {
            outs.push(per_token_f32(&tokens, input.num_rows(), |i, out| {
                out.copy_from_slice(&scored[i].1);
                Ok(())
            })?);
        }
        Ok(outs)
    }
}
