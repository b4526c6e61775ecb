//! The decoder configuration shared by the Llama family (Llama, Mistral, Qwen2, SmolLM): read
//! from a Hugging Face `config.json` or from GGUF metadata. Only what changes the computation is
//! kept; anything else in the file is ignored.

use std::path::Path;

use serde_json::Value as Json;

use super::gguf::Gguf;
use crate::error::{Error, Result};

/// Decoder hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    /// Vocabulary size.
    pub vocab_size: i64,
    /// Model width.
    pub hidden_size: i64,
    /// MLP inner width.
    pub intermediate_size: i64,
    /// Number of decoder blocks.
    pub num_layers: i64,
    /// Query heads.
    pub num_heads: i64,
    /// Key/value heads (grouped-query attention when fewer than query heads).
    pub num_kv_heads: i64,
    /// Width of one head.
    pub head_dim: i64,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub rms_eps: f64,
    /// Whether the output projection reuses the token embedding.
    pub tie_embeddings: bool,
    /// Whether q/k/v projections have a bias (Qwen2).
    pub qkv_bias: bool,
    /// Beginning-of-sequence token, if the model has one.
    pub bos_token_id: Option<i64>,
    /// End-of-sequence tokens.
    pub eos_token_ids: Vec<i64>,
}

fn int(cfg: &Json, key: &str, file: &Path) -> Result<i64> {
    cfg.get(key).and_then(Json::as_i64).ok_or_else(|| Error::file(file, format!("config has no integer '{key}'")))
}

fn ids(v: Option<&Json>) -> Vec<i64> {
    match v {
        Some(Json::Number(n)) => n.as_i64().into_iter().collect(),
        Some(Json::Array(a)) => a.iter().filter_map(Json::as_i64).collect(),
        _ => Vec::new(),
    }
}

impl DecoderConfig {
    /// Reads a Hugging Face `config.json` (architectures Llama, Mistral, Qwen2).
    pub fn from_hf_json(file: &Path) -> Result<DecoderConfig> {
        let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
        let cfg: Json = serde_json::from_str(&text).map_err(|e| Error::file(file, format!("invalid JSON: {e}")))?;
        let model_type = cfg.get("model_type").and_then(Json::as_str).unwrap_or("llama");
        if !matches!(model_type, "llama" | "mistral" | "qwen2") {
            return Err(Error::file(
                file,
                format!("model_type '{model_type}' is not a supported Llama-family decoder"),
            ));
        }
        let hidden = int(&cfg, "hidden_size", file)?;
        let heads = int(&cfg, "num_attention_heads", file)?;
        // transformers 5 moves rope_theta into rope_parameters.
        let rope_theta = cfg
            .get("rope_parameters")
            .and_then(|r| r.get("rope_theta"))
            .or_else(|| cfg.get("rope_theta"))
            .and_then(Json::as_f64)
            .unwrap_or(10000.0);
        if let Some(kind) = cfg.get("rope_parameters").and_then(|r| r.get("rope_type")).and_then(Json::as_str) {
            if kind != "default" {
                return Err(Error::file(file, format!("rope_type '{kind}' is not supported yet")));
            }
        }
        Ok(DecoderConfig {
            vocab_size: int(&cfg, "vocab_size", file)?,
            hidden_size: hidden,
            intermediate_size: int(&cfg, "intermediate_size", file)?,
            num_layers: int(&cfg, "num_hidden_layers", file)?,
            num_heads: heads,
            num_kv_heads: cfg.get("num_key_value_heads").and_then(Json::as_i64).unwrap_or(heads),
            head_dim: cfg.get("head_dim").and_then(Json::as_i64).unwrap_or(hidden / heads),
            rope_theta,
            rms_eps: cfg.get("rms_norm_eps").and_then(Json::as_f64).unwrap_or(1e-6),
            tie_embeddings: cfg.get("tie_word_embeddings").and_then(Json::as_bool).unwrap_or(false),
            qkv_bias: model_type == "qwen2" || cfg.get("attention_bias").and_then(Json::as_bool).unwrap_or(false),
            bos_token_id: ids(cfg.get("bos_token_id")).first().copied(),
            eos_token_ids: ids(cfg.get("eos_token_id")),
        })
    }

    /// Reads the `llama.*` / `qwen2.*` metadata of a GGUF file.
    pub fn from_gguf(g: &Gguf) -> Result<DecoderConfig> {
        let file = g.path().to_path_buf();
        let arch = g.architecture().ok_or_else(|| Error::file(&file, "no general.architecture"))?.to_string();
        if !matches!(arch.as_str(), "llama" | "qwen2") {
            return Err(Error::file(&file, format!("architecture '{arch}' is not a supported Llama-family decoder")));
        }
        let u = |k: &str| g.require_u64(&format!("{arch}.{k}")).map(|v| v as i64).map_err(Error::from);
        let hidden = u("embedding_length")?;
        let heads = u("attention.head_count")?;
        let vocab = g
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.as_array().map(|a| a.len() as i64))
            .or_else(|| g.get(&format!("{arch}.vocab_size")).and_then(|v| v.as_u64()).map(|v| v as i64))
            .ok_or_else(|| Error::file(&file, "no vocabulary size in the metadata"))?;
        let f = |k: &str, d: f64| g.get(&format!("{arch}.{k}")).and_then(|v| v.as_f64()).unwrap_or(d);
        let id = |k: &str| g.get(&format!("tokenizer.ggml.{k}")).and_then(|v| v.as_u64()).map(|v| v as i64);
        Ok(DecoderConfig {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: u("feed_forward_length")?,
            num_layers: u("block_count")?,
            num_heads: heads,
            num_kv_heads: u("attention.head_count_kv").unwrap_or(heads),
            head_dim: g
                .get(&format!("{arch}.attention.key_length"))
                .and_then(|v| v.as_u64())
                .map(|v| v as i64)
                .unwrap_or(hidden / heads),
            rope_theta: f("rope.freq_base", 10000.0),
            rms_eps: f("attention.layer_norm_rms_epsilon", 1e-6),
            tie_embeddings: g.tensor_info("output.weight").is_none(),
            qkv_bias: arch == "qwen2",
            bos_token_id: id("bos_token_id"),
            eos_token_ids: id("eos_token_id").into_iter().collect(),
        })
    }

    /// The Hugging Face `config.json` of this configuration (Llama, or Qwen2 with q/k/v bias).
    pub fn to_hf_json(&self) -> Json {
        serde_json::json!({
            "architectures": [if self.qkv_bias { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" }],
            "model_type": if self.qkv_bias { "qwen2" } else { "llama" },
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_eps,
            "tie_word_embeddings": self.tie_embeddings,
            "hidden_act": "silu",
            "torch_dtype": "float32",
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_ids,
        })
    }

    /// A small configuration for fast CPU work (trained from scratch, used by tests and demos).
    pub fn small(vocab_size: i64) -> DecoderConfig {
        DecoderConfig {
            vocab_size,
            hidden_size: 128,
            intermediate_size: 344,
            num_layers: 4,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 32,
            rope_theta: 10000.0,
            rms_eps: 1e-5,
            tie_embeddings: true,
            qkv_bias: false,
            bos_token_id: None,
            eos_token_ids: Vec::new(),
        }
    }
}
