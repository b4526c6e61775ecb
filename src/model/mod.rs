//! Models: the Llama-family decoder and everything needed to load and run it — configurations,
//! weights from Hugging Face folders and GGUF files, tokenizers and chat templates, generation and
//! per-token scoring. A model is named by a SPEC: a Hugging Face folder, a `.gguf` file, a short
//! name of a model fetched into the cache (`smollm2-135m`, by `make model`), or `small:ENV`, the
//! small configuration with freshly initialised weights (seed them with `tch::manual_seed`) and the
//! word-level tokenizer of a built-in environment ([`env_tokenizer`]), to be trained from scratch.

pub mod config;
pub mod drawn;
#[cfg(feature = "torch")]
pub mod env_tokenizer;
#[cfg(feature = "torch")]
pub mod generate;
pub mod gguf;
#[cfg(feature = "torch")]
pub mod heads;
#[cfg(feature = "torch")]
pub mod llama;
#[cfg(feature = "torch")]
pub mod lora;
pub mod precision;
#[cfg(feature = "torch")]
pub mod prefix_cache;
#[cfg(feature = "torch")]
pub mod score;
pub mod scored_choice;
#[cfg(feature = "torch")]
pub mod service;
#[cfg(feature = "torch")]
pub mod thread;
#[cfg(feature = "torch")]
pub mod tokenizer;
#[cfg(feature = "torch")]
pub mod weights;

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Short model names and the cached file each resolves to.
pub const SHORT_NAMES: &[(&str, &str)] = &[("smollm2-135m", "models/SmolLM2-135M-Instruct.Q4_1.gguf")];

/// The cache folder (`$TRAJFLOW_CACHE`, default `~/.cache/trajflow`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("TRAJFLOW_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/trajflow"))
}

/// Resolves a model SPEC to a path.
pub fn resolve(spec: &str) -> Result<PathBuf> {
    if let Some((_, rel)) = SHORT_NAMES.iter().find(|(n, _)| *n == spec) {
        let path = cache_dir().join(rel);
        return if path.exists() {
            Ok(path)
        } else {
            Err(Error::Model(format!(
                "model '{spec}' is not in the cache ({}); run `make model` to fetch it",
                path.display()
            )))
        };
    }
    let path = PathBuf::from(spec);
    if path.exists() {
        Ok(path)
    } else {
        let names: Vec<&str> = SHORT_NAMES.iter().map(|(n, _)| *n).collect();
        Err(Error::Model(format!(
            "model '{spec}': no such file or folder, and not a known name ({})",
            names.join(", ")
        )))
    }
}

/// Loads a model and its tokenizer from a SPEC onto `device`.
#[cfg(feature = "torch")]
pub fn load(spec: &str, device: tch::Device) -> Result<(llama::Decoder, tokenizer::Tok)> {
    Ok((load_decoder(spec, device)?, load_tokenizer(spec)?))
}

/// The environment of a `small:ENV` SPEC.
pub fn small_env(spec: &str) -> Option<&str> {
    spec.strip_prefix("small:")
}

/// Loads only the tokenizer (and chat template) of a SPEC.
#[cfg(feature = "torch")]
pub fn load_tokenizer(spec: &str) -> Result<tokenizer::Tok> {
    if let Some(env) = small_env(spec) {
        return env_tokenizer::for_env(env);
    }
    let path = resolve(spec)?;
    if path.is_dir() {
        tokenizer::Tok::from_hf_folder(&path)
    } else {
        tokenizer::Tok::from_gguf(&gguf::Gguf::open(&path)?)
    }
}

/// Loads only the decoder of a SPEC (no tokenizer needed: scoring works on token ids).
#[cfg(feature = "torch")]
pub fn load_decoder(spec: &str, device: tch::Device) -> Result<llama::Decoder> {
    if small_env(spec).is_some() {
        let tok = load_tokenizer(spec)?;
        let mut cfg = config::DecoderConfig::small(tok.inner.get_vocab_size(true) as i64);
        cfg.eos_token_ids = tok.token_id(&tok.eos_token).into_iter().collect();
        return Ok(llama::Decoder::new(cfg, device));
    }
    let path = resolve(spec)?;
    if path.is_dir() {
        let cfg = config::DecoderConfig::from_hf_json(&path.join("config.json"))?;
        let mut model = llama::Decoder::from_weights(cfg, &weights::from_hf_folder(&path)?, device)?;
        // A LoRA run's checkpoint: the base plus its adapter, merged.
        if path.join("adapter_config.json").is_file() {
            lora::load(&mut model, &path)?;
            lora::merge(&mut model)?;
        }
        Ok(model)
    } else {
        let g = gguf::Gguf::open(&path)?;
        let cfg = config::DecoderConfig::from_gguf(&g)?;
        llama::Decoder::from_weights(cfg.clone(), &weights::from_gguf(&g, &cfg)?, device)
    }
}
