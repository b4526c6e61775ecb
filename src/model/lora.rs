//! LoRA adapters on a decoder's projections (Hu et al. 2021): y = W x + (α/r)·B A dropout(x), with
//! A [r, in] Kaiming-uniform and B [out, r] zero at the start (so a fresh adapter changes nothing).
//!
//! - The adapter's variables live in their own `VarStore`, named in the PEFT layout
//!   (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`), so an optimiser can train
//!   only them and `save` writes `adapter_model.safetensors` + `adapter_config.json` that PEFT
//!   loads, and `load` reads PEFT's files.
//! - Turning the adapter off ([`Adapter::set_enabled`], [`with_adapter_disabled`]) gives the
//!   base model — the reference policy, and the frozen backbone of POAD's critic — without a
//!   second copy of the weights.
//! - [`merge`] folds the adapter into the base weights for export.

use std::cell::Cell;
use std::path::Path;

use tch::nn::{self, Init};
use tch::{Kind, Tensor};

use super::llama::Decoder;
use crate::error::{Error, Result};

/// Adapter hyper-parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraConfig {
    /// Rank r.
    pub r: i64,
    /// Scale numerator α (the update is scaled by α / r).
    pub alpha: f64,
    /// Dropout on the adapter's input while training.
    pub dropout: f64,
    /// Projection names to adapt (`q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`, `up_proj`, `down_proj`).
    pub targets: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig { r: 8, alpha: 16.0, dropout: 0.0, targets: vec!["q_proj".into(), "v_proj".into()] }
    }
}

/// An attached adapter.
pub struct Adapter {
    /// Its variables (PEFT names).
    pub vs: nn::VarStore,
    /// Its configuration.
    pub cfg: LoraConfig,
    enabled: Cell<bool>,
    training: Cell<bool>,
}

impl Adapter {
    /// Whether the adapter contributes to the forward pass.
    pub fn is_enabled(&self) -> bool {
        self.enabled.get()
    }

    /// Turns the adapter on or off.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.set(on);
    }

    /// Whether dropout is active.
    pub fn set_training(&self, on: bool) {
        self.training.set(on);
    }

    /// The LoRA update (α/r)·B A dropout(x).
    pub(crate) fn delta(&self, x: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
        let x = if self.training.get() && self.cfg.dropout > 0.0 {
            x.dropout(self.cfg.dropout, true)
        } else {
            x.shallow_clone()
        };
        x.matmul(&a.tr()).matmul(&b.tr()) * (self.cfg.alpha / self.cfg.r as f64)
    }
}

/// The `nn::Path` of a dotted module name (`a.b.0.c`).
fn module_path<'a>(vs: &'a nn::VarStore, dotted: &str) -> nn::Path<'a> {
    dotted.split('.').fold(vs.root(), |p, c| &p / c)
}

/// Attaches a fresh adapter to `model` (replacing any earlier one).
pub fn attach(model: &mut Decoder, cfg: LoraConfig) -> Result<()> {
    let known = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
    if let Some(bad) = cfg.targets.iter().find(|t| !known.contains(&t.as_str())) {
        return Err(Error::Usage(format!("LoRA target '{bad}' is not a projection (known: {})", known.join(", "))));
    }
    if cfg.r <= 0 {
        return Err(Error::Usage(format!("LoRA rank must be positive, got {}", cfg.r)));
    }
    let vs = nn::VarStore::new(model.device());
    for blk in &mut model.blocks {
        for p in blk.projections_mut() {
            p.lora = None;
            if !cfg.targets.iter().any(|t| t == p.name()) {
                continue;
            }
            let (out_dim, in_dim) = (p.linear.ws.size()[0], p.linear.ws.size()[1]);
            let kaiming = Init::Kaiming {
                dist: nn::init::NormalOrUniform::Uniform,
                fan: nn::init::FanInOut::FanIn,
                non_linearity: nn::init::NonLinearity::ReLU,
            };
            let a = module_path(&vs, &format!("base_model.model.{}.lora_A", p.path)).var(
                "weight",
                &[cfg.r, in_dim],
                kaiming,
            );
            let b = module_path(&vs, &format!("base_model.model.{}.lora_B", p.path)).var(
                "weight",
                &[out_dim, cfg.r],
                Init::Const(0.0),
            );
            p.lora = Some((a, b));
        }
    }
    model.vs.freeze();
    model.adapter = Some(Adapter { vs, cfg, enabled: Cell::new(true), training: Cell::new(false) });
    Ok(())
}

/// Runs `f` with the adapter turned off (the base model), restoring its state afterwards.
pub fn with_adapter_disabled<T>(model: &Decoder, f: impl FnOnce() -> T) -> T {
    let was = model.adapter.as_ref().map(|a| a.is_enabled());
    if let Some(a) = &model.adapter {
        a.set_enabled(false);
    }
    let out = f();
    if let (Some(a), Some(w)) = (&model.adapter, was) {
        a.set_enabled(w);
    }
    out
}

/// Writes `adapter_model.safetensors` and `adapter_config.json` (PEFT's layout) into `dir`.
pub fn save(model: &Decoder, dir: &Path) -> Result<()> {
    let ad = model.adapter.as_ref().ok_or_else(|| Error::Usage("the model has no adapter to save".into()))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    ad.vs.save(dir.join("adapter_model.safetensors"))?;
    let cfg = serde_json::json!({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": ad.cfg.r, "lora_alpha": ad.cfg.alpha,
        "lora_dropout": ad.cfg.dropout, "target_modules": ad.cfg.targets, "bias": "none",
        "fan_in_fan_out": false, "inference_mode": false,
    });
    let path = dir.join("adapter_config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).expect("json")).map_err(|e| Error::io(&path, e))
}

/// Attaches the adapter saved in `dir` (PEFT layout) to `model`.
pub fn load(model: &mut Decoder, dir: &Path) -> Result<()> {
    let path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let j: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::file(&path, format!("invalid JSON: {e}")))?;
    let cfg = LoraConfig {
        r: j["r"].as_i64().ok_or_else(|| Error::file(&path, "no integer 'r'"))?,
        alpha: j["lora_alpha"].as_f64().ok_or_else(|| Error::file(&path, "no 'lora_alpha'"))?,
        dropout: j["lora_dropout"].as_f64().unwrap_or(0.0),
        targets: j["target_modules"]
            .as_array()
            .ok_or_else(|| Error::file(&path, "no 'target_modules' list"))?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
    };
    attach(model, cfg)?;
    // Copy in place: the factors the projections hold share storage with the VarStore's variables
    // (VarStore::load would swap the variables' storage and leave those handles stale).
    let file = dir.join("adapter_model.safetensors");
    let saved: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(&file).map_err(|e| Error::file(&file, e))?.into_iter().collect();
    tch::no_grad(|| -> Result<()> {
        for blk in &mut model.blocks {
            for p in blk.projections_mut() {
                let Some((a, b)) = p.lora.as_mut() else { continue };
                for (factor, t) in [("lora_A", a), ("lora_B", b)] {
                    let name = format!("base_model.model.{}.{factor}.weight", p.path);
                    let src = saved.get(&name).ok_or_else(|| Error::file(&file, format!("no tensor '{name}'")))?;
                    if src.size() != t.size() {
                        return Err(Error::file(
                            &file,
                            format!("'{name}' has shape {:?}, expected {:?}", src.size(), t.size()),
                        ));
                    }
                    t.copy_(src);
                }
            }
        }
        Ok(())
    })
}

/// Folds the adapter into the base weights (W += (α/r)·B A) and removes it.
pub fn merge(model: &mut Decoder) -> Result<()> {
    let ad = model.adapter.take().ok_or_else(|| Error::Usage("the model has no adapter to merge".into()))?;
    let scale = ad.cfg.alpha / ad.cfg.r as f64;
    tch::no_grad(|| {
        for blk in &mut model.blocks {
            for p in blk.projections_mut() {
                if let Some((a, b)) = p.lora.take() {
                    let update = b.matmul(&a).to_kind(Kind::Float) * scale;
                    let _ = p.linear.ws.f_add_(&update);
                }
            }
        }
    });
    Ok(())
}
