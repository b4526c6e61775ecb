//! The critic (O6 + O15): a value head on final hidden states, detached from the backbone, with
//! its own AdamW: the policy's own hidden states (LOOP's PPO baseline), or those of a frozen copy
//! of the policy before RL (POAD's critic on the frozen base model), which do not move under the
//! head when the policy is updated. It annotates each iteration's rollouts with per-token values
//! before the stages run (so GAE sees `V_old`), and is trained on the stages' returns next to the
//! policy.
//!
//! Alignment: `values[t]` is the value of the state in which token `t` is generated, i.e. the head
//! applied to the hidden state of token `t − 1` (so `values[0] = 0`, never an action token);
//! `bootstrap_value` of a truncated episode is the head on the last token's state. This is the
//! convention of [`crate::ops::gae`].

use arrow::array::RecordBatch;
use tch::Tensor;

use super::examples::Padded;
use super::row_columns::{flags, token_ids, with_values};
use crate::error::Result;
use crate::model::heads::Head;
use crate::model::llama::Decoder;
use crate::model::score::for_each_chunk;
use crate::pipeline::training::{CriticOutputInit, CriticSection};
use crate::train::losses::{value_loss, Reduction};
use crate::train::optim::{AdamW, OptimConfig};

/// The value head and its optimiser.
pub struct Critic {
    /// The head.
    pub head: Head,
    /// Its optimiser.
    pub opt: AdamW,
    /// Value clipping ε around `V_old` (None = unclipped).
    pub clip: Option<f64>,
    /// The frozen backbone whose hidden states the head reads (None: the policy's).
    pub backbone: Option<Decoder>,
}

impl Critic {
    /// A fresh critic for `model` (initialised from libtorch's generator: seed it first; the output
    /// layer zero unless `output_init = "uniform"`).
    pub fn new(model: &Decoder, cfg: &CriticSection) -> Critic {
        let mut head = Head::new(model.cfg.hidden_size, &cfg.hidden, true, true, model.device());
        if cfg.output_init == CriticOutputInit::Zero {
            head.zero_output();
        }
        let opt = AdamW::new(
            head.vs.variables().into_iter().collect(),
            OptimConfig { lr: cfg.lr, max_grad_norm: Some(1.0), ..Default::default() },
        );
        Critic { head, opt, clip: (cfg.value_clip > 0.0).then_some(cfg.value_clip), backbone: None }
    }

    /// `rows` with the critic's `values` (and `bootstrap_value` of truncated episodes); `model` is
    /// the policy (used unless the critic has a backbone of its own).
    pub fn annotate(&self, model: &Decoder, rows: &RecordBatch, max_batch_tokens: usize) -> Result<RecordBatch> {
        let model = self.backbone.as_ref().unwrap_or(model);
        let seqs = token_ids(rows)?;
        let truncated = flags(rows, "truncated");
        let mut all_values = vec![Vec::new(); seqs.len()];
        let mut bootstrap = vec![None; seqs.len()];
        for_each_chunk(model, &seqs, max_batch_tokens, |chunk, t, _, hidden| {
            let v: Vec<f32> = Vec::try_from(self.head.values(hidden).to_device(tch::Device::Cpu).view([-1]))?;
            for (r, &i) in chunk.iter().enumerate() {
                let len = seqs[i].len();
                let own = &v[r * t..r * t + len];
                let mut values = Vec::with_capacity(len);
                if len > 0 {
                    values.push(0.0);
                    values.extend_from_slice(&own[..len - 1]);
                }
                bootstrap[i] = (truncated[i] && len > 0).then(|| own[len - 1]);
                all_values[i] = values;
            }
            Ok(())
        })?;
        with_values(rows, &all_values, &bootstrap)
    }

    /// The value loss of a padded minibatch given the policy's hidden states `[B, T, D]` (the
    /// backbone's own are computed instead when the critic has one).
    pub fn loss(&self, hidden: &Tensor, p: &Padded) -> Tensor {
        let own = self.backbone.as_ref().map(|b| tch::no_grad(|| b.hidden(&p.ids, &p.positions, &p.valid, None)));
        let hidden = own.as_ref().unwrap_or(hidden);
        let t = hidden.size()[1];
        let v_new = self.head.values(&hidden.narrow(1, 0, t - 1));
        value_loss(&v_new, &p.values, &p.returns, &p.mask, self.clip, Reduction::TokenMean)
    }
}
