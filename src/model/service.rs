//! The device thread: one thread owns a loaded model and answers scoring requests sent over a
//! channel, so dataflow workers never run libtorch work themselves and never contend for the model
//! (DESIGN.md, execution model). Models load lazily, on the first request, so validating a pipeline
//! never loads one; a service is shared by every worker of the process and lives as long as a
//! handle to it does.

use std::collections::HashMap;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Error, Result};
use crate::model::drawn::Drawn;
use crate::model::score::drawn_logprobs_and_entropy;

/// Per sequence: log-probs, and entropies when asked for (empty otherwise).
pub type Scores = Vec<(Vec<f32>, Vec<f32>)>;

type Reply = Sender<std::result::Result<Scores, String>>;

struct Request {
    seqs: Vec<Vec<i64>>,
    /// How each sequence's tokens were drawn (empty, or one per sequence).
    drawn: Vec<Option<Drawn>>,
    entropy: bool,
    reply: Reply,
}

/// A handle to the device thread serving one model.
#[derive(Clone)]
pub struct ModelService {
    tx: Arc<Mutex<Sender<Request>>>,
}

impl ModelService {
    /// The service for `spec` in this process (started on first use).
    pub fn get(spec: &str, max_batch_tokens: usize) -> ModelService {
        static SERVICES: OnceLock<Mutex<HashMap<(String, usize), ModelService>>> = OnceLock::new();
        let mut map = SERVICES.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
        map.entry((spec.to_string(), max_batch_tokens))
            .or_insert_with(|| Self::start(spec.to_string(), max_batch_tokens))
            .clone()
    }

    fn start(spec: String, max_batch_tokens: usize) -> ModelService {
        let (tx, rx) = channel::<Request>();
        std::thread::Builder::new()
            .name(format!("device:{spec}"))
            .spawn(move || {
                let device = tch::Device::cuda_if_available();
                let model = crate::model::load_decoder(&spec, device).map_err(|e| e.to_string());
                for req in rx {
                    let drawn: Vec<Option<&Drawn>> = req.drawn.iter().map(Option::as_ref).collect();
                    let out = match &model {
                        Ok(m) => drawn_logprobs_and_entropy(m, &req.seqs, &drawn, max_batch_tokens, req.entropy),
                        Err(e) => Err(Error::Model(e.clone())),
                    }
                    .map_err(|e| e.to_string());
                    let _ = req.reply.send(out);
                }
            })
            .expect("the device thread starts");
        ModelService { tx: Arc::new(Mutex::new(tx)) }
    }

    /// Per-token log-probs of `seqs` (NaN for each first token) and, with `entropy`, the entropy
    /// of each token's predictive distribution, computed on the device thread. Tokens that
    /// `drawn[i]` names (empty: none) are scored under the distribution they were drawn from.
    pub fn score(&self, seqs: Vec<Vec<i64>>, drawn: Vec<Option<Drawn>>, entropy: bool) -> Result<Scores> {
        let (reply, rx) = channel();
        self.tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Request { seqs, drawn, entropy, reply })
            .map_err(|_| Error::Model("the device thread has stopped".into()))?;
        rx.recv().map_err(|_| Error::Model("the device thread has stopped".into()))?.map_err(Error::Model)
    }
}
