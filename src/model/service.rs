//! Scoring models on device threads ([`super::thread`]): the `logprobs` stage's model, one thread
//! per model spec in the process, answering scoring requests in order, so dataflow workers never
//! run libtorch work themselves and never contend for the model (DESIGN.md, execution model).
//! Models load lazily, on the first request, so validating a pipeline never loads one; a service
//! is shared by every worker of the process and lives as long as the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::llama::Decoder;
use super::thread::ModelThread;
use crate::error::{Error, Result};
use crate::model::drawn::Drawn;
use crate::model::score::drawn_logprobs_and_entropy;

/// Per sequence: log-probs, and entropies when asked for (empty otherwise).
pub type Scores = Vec<(Vec<f32>, Vec<f32>)>;

/// What the device thread holds: the model once loaded (or why it could not be).
type Loaded = Option<std::result::Result<Decoder, String>>;

/// A handle to the device thread serving one model.
#[derive(Clone)]
pub struct ModelService {
    thread: Arc<Mutex<ModelThread<Loaded>>>,
    spec: String,
    max_batch_tokens: usize,
}

impl ModelService {
    /// The service for `spec` in this process (started on first use).
    pub fn get(spec: &str, max_batch_tokens: usize) -> ModelService {
        static SERVICES: OnceLock<Mutex<HashMap<(String, usize), ModelService>>> = OnceLock::new();
        let mut map = SERVICES.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
        map.entry((spec.to_string(), max_batch_tokens))
            .or_insert_with(|| {
                let thread = ModelThread::spawn(&format!("device:{spec}"), None).expect("the device thread starts");
                ModelService { thread: Arc::new(Mutex::new(thread)), spec: spec.to_string(), max_batch_tokens }
            })
            .clone()
    }

    /// Per-token log-probs of `seqs` (NaN for each first token) and, with `entropy`, the entropy
    /// of each token's predictive distribution, computed on the device thread (which loads the
    /// model at the first request). Tokens that `drawn[i]` names (empty: none) are scored under the
    /// distribution they were drawn from.
    pub fn score(&self, seqs: Vec<Vec<i64>>, drawn: Vec<Option<Drawn>>, entropy: bool) -> Result<Scores> {
        let (spec, max_batch_tokens) = (self.spec.clone(), self.max_batch_tokens);
        let mut thread = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        thread.call(move |loaded| {
            let model = loaded.get_or_insert_with(|| {
                crate::model::load_decoder(&spec, tch::Device::cuda_if_available()).map_err(|e| e.to_string())
            });
            let model = model.as_ref().map_err(|e| Error::Model(e.clone()))?;
            let drawn: Vec<Option<&Drawn>> = drawn.iter().map(Option::as_ref).collect();
            drawn_logprobs_and_entropy(model, &seqs, &drawn, max_batch_tokens, entropy)
        })
    }
}
