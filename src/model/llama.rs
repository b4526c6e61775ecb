//! The Llama-family decoder in libtorch: RMSNorm, rotary position embeddings (Hugging Face's
//! half-rotation layout), SwiGLU MLP, grouped-query attention, tied or untied embeddings and
//! optional q/k/v bias (Qwen2). Variable names equal Hugging Face checkpoint names
//! (`model.layers.3.self_attn.q_proj.weight`), so checkpoints load by name and save the same way.
//!
//! Invariants: positions are explicit per token (left-padded batches and KV-cached decoding use
//! the same code path); a query never attends to a masked key, and every query row keeps at least
//! its own key, so padded rows stay finite; norms and softmax run in f32.

use tch::nn;
use tch::{Device, Kind, Tensor};

use super::config::DecoderConfig;
use super::precision::Precision;
use super::weights::Weights;
use crate::error::{Error, Result};

/// Key/value cache: per layer, keys and values of every position seen so far, [B, KVH, T, hd].
#[derive(Default)]
pub struct KvCache {
    pub(crate) layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    /// Number of cached positions.
    pub fn len(&self) -> i64 {
        self.layers.first().and_then(|l| l.as_ref()).map(|(k, _)| k.size()[2]).unwrap_or(0)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows `start..start + len` of the batch, sharing this cache's tensors (appending to the
    /// result leaves this cache as it is).
    pub fn rows(&self, start: i64, len: i64) -> KvCache {
        let narrow = |t: &Tensor| t.narrow(0, start, len);
        KvCache { layers: self.layers.iter().map(|l| l.as_ref().map(|(k, v)| (narrow(k), narrow(v)))).collect() }
    }

    /// Keeps only the batch rows in `rows` (for dropping finished sequences).
    pub fn select_rows(&mut self, rows: &Tensor) {
        for l in self.layers.iter_mut().flatten() {
            *l = (l.0.index_select(0, rows), l.1.index_select(0, rows));
        }
    }
}

/// A linear projection of a block, with its Hugging Face module path and, once an adapter is
/// attached, its LoRA factors.
pub(crate) struct Proj {
    pub(crate) linear: nn::Linear,
    pub(crate) path: String,
    pub(crate) lora: Option<(Tensor, Tensor)>,
}

impl Proj {
    /// The module name (`q_proj`, ..., `down_proj`).
    pub(crate) fn name(&self) -> &str {
        self.path.rsplit('.').next().unwrap_or(&self.path)
    }
}

pub(crate) struct Block {
    input_norm: Tensor,
    pub(crate) q: Proj,
    pub(crate) k: Proj,
    pub(crate) v: Proj,
    pub(crate) o: Proj,
    post_norm: Tensor,
    pub(crate) gate: Proj,
    pub(crate) up: Proj,
    pub(crate) down: Proj,
}

impl Block {
    /// The block's projections, in Hugging Face order.
    pub(crate) fn projections_mut(&mut self) -> [&mut Proj; 7] {
        [&mut self.q, &mut self.k, &mut self.v, &mut self.o, &mut self.gate, &mut self.up, &mut self.down]
    }
}

/// A decoder with its weights in a `VarStore`.
pub struct Decoder {
    /// The configuration.
    pub cfg: DecoderConfig,
    /// The variables (Hugging Face names).
    pub vs: nn::VarStore,
    embed: Tensor,
    pub(crate) blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Option<Tensor>,
    inv_freq: Tensor,
    /// The LoRA adapter, once attached ([`super::lora`]).
    pub(crate) adapter: Option<super::lora::Adapter>,
    /// The arithmetic of the matrix products ([`Precision`]).
    precision: Precision,
    /// Reduced-precision copies of weights for products that pass no gradient to them (see
    /// [`Decoder::cast`]), keyed by the weight's storage address, with its version counter then.
    casts: std::sync::Mutex<std::collections::HashMap<usize, (i64, Tensor)>>,
}

/// At most this many rows make a product "few rows" (a decoding step), see [`times_transposed`].
const FEW_ROWS: i64 = 16;
/// Weights of at least this many elements are "large", see [`times_transposed`].
const LARGE_WEIGHT: i64 = 1 << 17;

/// `x`·`w`ᵀ for `x` [..., D] and a weight `w` [O, D]. In a decoding step (few rows) MKL copies
/// (packs) the right-hand operand of the sgemm, and packing a large weight costs more than the
/// product; as the left-hand operand it is read in place: (`w`·`x`ᵀ)ᵀ. Measured on CPU
/// (`benches/model.py`, greedy decoding): SmolLM2-135M at 4 rows 53 -> 115 tokens/s; small
/// weights (below [`LARGE_WEIGHT`]) lose, so they keep the plain product, as do bf16 operands
/// (oneDNN's kernels, 1.5x slower the other way round) and CUDA.
fn times_transposed(x: &Tensor, w: &Tensor) -> Tensor {
    let size = x.size();
    let rows = size[..size.len() - 1].iter().product::<i64>();
    let packs = w.kind() == Kind::Float && w.device() == Device::Cpu;
    if !packs || rows > FEW_ROWS || (w.numel() as i64) < LARGE_WEIGHT {
        return x.matmul(&w.tr());
    }
    let mut out = size.clone();
    *out.last_mut().expect("x has a feature dimension") = w.size()[0];
    w.matmul(&x.reshape([rows, size[size.len() - 1]]).tr()).tr().contiguous().view(out.as_slice())
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Tensor {
    let kind = x.kind();
    let x = x.to_kind(Kind::Float);
    let var = x.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
    w * (x * (var + eps).rsqrt()).to_kind(kind)
}

fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    Tensor::cat(&[-x.narrow(3, half, half), x.narrow(3, 0, half)], 3)
}

impl Decoder {
    /// A decoder with freshly initialised weights on `device`.
    pub fn new(cfg: DecoderConfig, device: Device) -> Decoder {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let p = &root / "model";
        let (d, hd) = (cfg.hidden_size, cfg.head_dim);
        let lin = |p: nn::Path, i: i64, o: i64, bias: bool| Proj {
            path: p.components().collect::<Vec<_>>().join("."),
            linear: nn::linear(p, i, o, nn::LinearConfig { bias, ..Default::default() }),
            lora: None,
        };
        let embed =
            (&p / "embed_tokens").var("weight", &[cfg.vocab_size, d], nn::Init::Randn { mean: 0., stdev: 0.02 });
        let blocks = (0..cfg.num_layers)
            .map(|i| {
                let l = &p / "layers" / i;
                let a = &l / "self_attn";
                let m = &l / "mlp";
                Block {
                    input_norm: (&l / "input_layernorm").ones("weight", &[d]),
                    q: lin(&a / "q_proj", d, cfg.num_heads * hd, cfg.qkv_bias),
                    k: lin(&a / "k_proj", d, cfg.num_kv_heads * hd, cfg.qkv_bias),
                    v: lin(&a / "v_proj", d, cfg.num_kv_heads * hd, cfg.qkv_bias),
                    o: lin(&a / "o_proj", cfg.num_heads * hd, d, false),
                    post_norm: (&l / "post_attention_layernorm").ones("weight", &[d]),
                    gate: lin(&m / "gate_proj", d, cfg.intermediate_size, false),
                    up: lin(&m / "up_proj", d, cfg.intermediate_size, false),
                    down: lin(&m / "down_proj", cfg.intermediate_size, d, false),
                }
            })
            .collect();
        let norm = (&p / "norm").ones("weight", &[d]);
        let lm_head = (!cfg.tie_embeddings).then(|| {
            (&root / "lm_head").var("weight", &[cfg.vocab_size, d], nn::Init::Randn { mean: 0., stdev: 0.02 })
        });
        let inv_freq = Tensor::arange_start_step(0, hd, 2, (Kind::Float, device))
            .divide_scalar(hd as f64)
            .multiply_scalar(-(cfg.rope_theta.ln()))
            .exp();
        Decoder {
            cfg,
            vs,
            embed,
            blocks,
            norm,
            lm_head,
            inv_freq,
            adapter: None,
            precision: Precision::Float32,
            casts: Default::default(),
        }
    }

    /// A decoder holding `weights` (every variable must be present, with its shape).
    pub fn from_weights(cfg: DecoderConfig, weights: &Weights, device: Device) -> Result<Decoder> {
        let model = Decoder::new(cfg, device);
        tch::no_grad(|| -> Result<()> {
            for (name, mut var) in model.vs.variables() {
                let w = weights.get(&name).ok_or_else(|| Error::Model(format!("checkpoint has no tensor '{name}'")))?;
                if w.size() != var.size() {
                    return Err(Error::Model(format!(
                        "tensor '{name}' has shape {:?}, the model expects {:?}",
                        w.size(),
                        var.size()
                    )));
                }
                var.copy_(w);
            }
            Ok(())
        })?;
        Ok(model)
    }

    /// An independent copy of the weights (and of the attached adapter, with its on/off state) on
    /// the same device. Building it draws libtorch's generator for the throw-away initialisation.
    pub fn duplicate(&self) -> Result<Decoder> {
        let mut copy = Decoder::new(self.cfg.clone(), self.device());
        copy.vs.copy(&self.vs)?;
        copy.precision = self.precision;
        if let Some(a) = &self.adapter {
            super::lora::attach(&mut copy, a.cfg.clone())?;
            let own = copy.adapter.as_mut().expect("attached above");
            own.vs.copy(&a.vs)?;
            own.set_enabled(a.is_enabled());
        }
        Ok(copy)
    }

    /// The variables an optimiser trains: the adapter's when one is attached (the base is then
    /// frozen), else every weight.
    pub fn trainable_variables(&self) -> Vec<(String, Tensor)> {
        match &self.adapter {
            Some(a) => a.vs.variables().into_iter().collect(),
            None => self.vs.variables().into_iter().collect(),
        }
    }

    /// Every variable store of the model (the base, then the adapter's), for checkpoints.
    pub fn stores(&self) -> Vec<&nn::VarStore> {
        std::iter::once(&self.vs).chain(self.adapter.as_ref().map(|a| &a.vs)).collect()
    }

    /// Sets the arithmetic of the matrix products (the weights stay float32).
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
        self.casts.get_mut().expect("no thread panicked holding the casts").clear();
    }

    /// The arithmetic of the matrix products.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The attached LoRA adapter, if any.
    pub fn adapter(&self) -> Option<&super::lora::Adapter> {
        self.adapter.as_ref()
    }

    /// Writes `config.json` and `model.safetensors` (Hugging Face names) into `dir`, a folder
    /// transformers and [`crate::model::load`] read back.
    pub fn save_hf_folder(&self, dir: &std::path::Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let cfg = serde_json::to_string_pretty(&self.cfg.to_hf_json()).expect("json");
        std::fs::write(dir.join("config.json"), cfg).map_err(|e| Error::io(dir, e))?;
        self.vs.save(dir.join("model.safetensors"))?;
        Ok(())
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Final hidden states [B, T, D] for tokens `ids` [B, T] at `positions` [B, T], with
    /// `key_valid` [B, past + T] marking real (non-padding) keys. Appends to `cache` if given.
    pub fn hidden(&self, ids: &Tensor, positions: &Tensor, key_valid: &Tensor, cache: Option<&mut KvCache>) -> Tensor {
        let past = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        let mask = attention_mask(key_valid, ids.size()[1], past);
        self.hidden_masked(ids, positions, &mask, cache)
    }

    /// [`Decoder::hidden`] with an explicit boolean attention mask [B, 1, T, past + T] (true: the
    /// query may attend to the key), for queries that see other keys than the causal ones (several
    /// candidate continuations of one cached prefix in one sequence). Appends to `cache` if given.
    #[allow(clippy::assign_op_pattern)] // `x += …` would be in place and break autograd
    pub fn hidden_masked(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        mask: &Tensor,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor {
        let (b, t) = (ids.size()[0], ids.size()[1]);
        let (h, kvh, hd) = (self.cfg.num_heads, self.cfg.num_kv_heads, self.cfg.head_dim);
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * &self.inv_freq;
        let emb = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1);
        let (cos, sin) = (emb.cos(), emb.sin());
        let mut x = Tensor::embedding(&self.embed, ids, -1, false, false);
        if let Some(c) = cache.as_mut() {
            c.layers.resize_with(self.blocks.len(), || None);
        }
        for (i, blk) in self.blocks.iter().enumerate() {
            let a = rms_norm(&x, &blk.input_norm, self.cfg.rms_eps);
            let q = self.project(&blk.q, &a).view([b, t, h, hd]).transpose(1, 2);
            let k = self.project(&blk.k, &a).view([b, t, kvh, hd]).transpose(1, 2);
            let v = self.project(&blk.v, &a).view([b, t, kvh, hd]).transpose(1, 2);
            let kind = self.precision.matmul_kind();
            let q = (&q * &cos + rotate_half(&q) * &sin).to_kind(kind);
            let mut k = (&k * &cos + rotate_half(&k) * &sin).to_kind(kind);
            let mut v = v.to_kind(kind);
            if let Some(c) = cache.as_mut() {
                if let Some((pk, pv)) = &c.layers[i] {
                    k = Tensor::cat(&[pk, &k], 2);
                    v = Tensor::cat(&[pv, &v], 2);
                }
                c.layers[i] = Some((k.shallow_clone(), v.shallow_clone()));
            }
            let att = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask), 0.0, false, None::<f64>, kvh != h);
            let att = att.transpose(1, 2).contiguous().view([b, t, h * hd]);
            // Not `+=`: an in-place add would overwrite activations autograd saved for backward.
            x = x + self.project(&blk.o, &att);
            let m = rms_norm(&x, &blk.post_norm, self.cfg.rms_eps);
            x = x + self.project(&blk.down, &(self.project(&blk.gate, &m).silu() * self.project(&blk.up, &m)));
        }
        rms_norm(&x, &self.norm, self.cfg.rms_eps)
    }

    /// `x`·`w`ᵀ ([`times_transposed`]) in this decoder's precision.
    fn weight_product(&self, x: &Tensor, w: &Tensor) -> Tensor {
        match self.precision {
            Precision::Float32 => times_transposed(x, w),
            p => times_transposed(&x.to_kind(p.matmul_kind()), &self.cast(w, x)),
        }
    }

    /// Weight `w` in the matrix products' kind, for a product with `x`. When the product passes a
    /// gradient to `w` (both require one) this is a fresh, differentiable cast; otherwise (decoding,
    /// scoring, a frozen base under LoRA) a cached copy, recast once `w`'s version counter shows an
    /// in-place change (an optimiser step, a load): a decoding step would otherwise cast every
    /// weight again.
    fn cast(&self, w: &Tensor, x: &Tensor) -> Tensor {
        let kind = self.precision.matmul_kind();
        if x.requires_grad() && w.requires_grad() {
            return w.to_kind(kind);
        }
        let (key, version) = (w.data_ptr() as usize, w.internal_version());
        let mut casts = self.casts.lock().expect("no thread panicked holding the casts");
        match casts.get(&key) {
            Some((v, c)) if *v == version => c.shallow_clone(),
            _ => {
                let c = tch::no_grad(|| w.to_kind(kind));
                casts.insert(key, (version, c.shallow_clone()));
                c
            }
        }
    }

    /// `x` through projection `p`, plus its LoRA update when the adapter is attached and on.
    fn project(&self, p: &Proj, x: &Tensor) -> Tensor {
        let y = self.weight_product(x, &p.linear.ws);
        let y = match &p.linear.bs {
            Some(b) => y + b,
            None => y,
        };
        match (&p.lora, &self.adapter) {
            (Some((a, b)), Some(ad)) if ad.is_enabled() => y + ad.delta(x, a, b),
            _ => y,
        }
    }

    /// Logits [B, T, V] of `hidden` states.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        self.weight_product(hidden, self.lm_head.as_ref().unwrap_or(&self.embed))
    }

    /// Logits [B, T, V] for unpadded sequences `ids` [B, T] starting at position 0.
    pub fn forward(&self, ids: &Tensor) -> Tensor {
        let (b, t) = (ids.size()[0], ids.size()[1]);
        let pos = Tensor::arange(t, (Kind::Int64, ids.device())).unsqueeze(0).expand([b, t], false);
        let valid = Tensor::ones([b, t], (Kind::Bool, ids.device()));
        self.logits(&self.hidden(ids, &pos, &valid, None))
    }
}

/// Boolean attention mask [B, 1, T, past + T]: causal, restricted to valid keys, and always
/// allowing a query its own key (so rows of padding tokens are never fully masked).
pub fn attention_mask(key_valid: &Tensor, t: i64, past: i64) -> Tensor {
    let dev = key_valid.device();
    let tk = past + t;
    let q_idx = Tensor::arange(t, (Kind::Int64, dev)).unsqueeze(1) + past;
    let k_idx = Tensor::arange(tk, (Kind::Int64, dev)).unsqueeze(0);
    let causal = k_idx.le_tensor(&q_idx);
    let own = k_idx.eq_tensor(&q_idx);
    let valid = key_valid.to_kind(Kind::Bool).unsqueeze(1).unsqueeze(1);
    causal.unsqueeze(0).unsqueeze(0).logical_and(&valid).logical_or(&own.unsqueeze(0).unsqueeze(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Tensor {
        Tensor::from_slice(&[1i64, 5, 9, 20, 7, 3, 3, 8, 11, 2, 4, 6]).view([2, 6])
    }

    /// bf16 logits stay close to float32's (and do differ: the products really ran in bf16);
    /// the gradients of a bf16 step point the same way as float32's and land in float32 weights.
    #[test]
    fn bf16_matches_float32_within_its_precision() {
        tch::manual_seed(11);
        let mut m = Decoder::new(DecoderConfig::small(64), Device::Cpu);
        let loss = |m: &Decoder| m.forward(&ids()).log_softmax(-1, Kind::Float).mean(Kind::Float);
        let grads = |m: &Decoder| {
            for mut v in m.vs.trainable_variables() {
                v.zero_grad();
            }
            loss(m).backward();
            Tensor::cat(&m.vs.trainable_variables().iter().map(|v| v.grad().flatten(0, -1)).collect::<Vec<_>>(), 0)
        };
        let (f32_logits, f32_grads) = (tch::no_grad(|| m.forward(&ids())), grads(&m));
        m.set_precision(Precision::Bf16);
        let (bf_logits, bf_grads) = (tch::no_grad(|| m.forward(&ids())), grads(&m));
        assert_eq!(bf_logits.kind(), Kind::BFloat16);
        let diff = (&f32_logits - bf_logits.to_kind(Kind::Float)).abs().max().double_value(&[]);
        let scale = f32_logits.abs().max().double_value(&[]);
        // bf16 keeps 8 significant bits (relative step 2^-8 ≈ 0.004); how the products accumulate
        // depends on the CPU (measured: 0.015 of scale on an AMX-BF16 Xeon, 0.027 on the CI machine).
        // A wrong weight or a missed cast moves logits by the order of the scale itself.
        assert!(diff > 0.0 && diff < 0.05 * scale, "max |logit diff| {diff} (max |logit| {scale})");
        assert!(m.vs.trainable_variables().iter().all(|v| v.kind() == Kind::Float && v.grad().kind() == Kind::Float));
        let cos = (&f32_grads * &bf_grads).sum(Kind::Float).double_value(&[])
            / (f32_grads.norm().double_value(&[]) * bf_grads.norm().double_value(&[]));
        assert!(cos > 0.99, "cosine of float32 and bf16 gradients {cos}");
    }

    /// Inference reuses cached bf16 weights, but an in-place change of a weight (an optimiser
    /// step) invalidates its copy: the next forward equals a fresh decoder's.
    #[test]
    fn cached_bf16_weights_follow_in_place_updates() {
        tch::manual_seed(12);
        let mut m = Decoder::new(DecoderConfig::small(64), Device::Cpu);
        m.set_precision(Precision::Bf16);
        let before = tch::no_grad(|| m.forward(&ids()));
        tch::no_grad(|| {
            let mut w = m.blocks[1].up.linear.ws.shallow_clone();
            let _ = w.g_mul_scalar_(1.5);
        });
        let after = tch::no_grad(|| m.forward(&ids()));
        let fresh = tch::no_grad(|| m.duplicate().unwrap().forward(&ids()));
        assert!(after.not_equal_tensor(&before).any().int64_value(&[]) == 1, "the update changed nothing");
        assert!(after.equal(&fresh), "a stale bf16 copy was used after the update");
    }

    /// The decoding-step product (weight on the left) equals the plain one, for few and many
    /// rows, small and large weights, 2-D and 3-D inputs, and passes gradients to both operands.
    #[test]
    fn times_transposed_equals_the_plain_product() {
        tch::manual_seed(7);
        for (shape, out) in [(vec![4, 1, 576], 1536), (vec![3, 576], 576), (vec![2, 40, 64], 2048), (vec![8, 128], 128)]
        {
            let x = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)).set_requires_grad(true);
            let w = Tensor::randn([out, *shape.last().unwrap()], (Kind::Float, Device::Cpu)).set_requires_grad(true);
            let got = times_transposed(&x, &w);
            let want = x.matmul(&w.tr());
            assert_eq!(got.size(), want.size(), "{shape:?}");
            let diff = (&got - &want).abs().max().double_value(&[]);
            assert!(diff < 1e-3, "{shape:?} x {out}: differs by {diff}");
            got.sum(Kind::Float).backward();
            let (gx, gw) = (x.grad(), w.grad());
            let ones = Tensor::ones_like(&want);
            let want_gx = ones.matmul(&w);
            let diff = (&gx - &want_gx).abs().max().double_value(&[]);
            assert!(diff < 1e-3, "{shape:?} x {out}: input gradient differs by {diff}");
            assert!(gw.abs().sum(Kind::Float).double_value(&[]) > 0.0);
        }
    }
}
