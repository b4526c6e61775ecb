//! Loading checkpoint tensors under Hugging Face names, from a Hugging Face folder
//! (`model.safetensors` or a sharded `model.safetensors.index.json`) or from a GGUF file
//! (dequantised to f32 on load; GGUF names mapped to Hugging Face names; llama.cpp's Q/K row
//! permutation for its interleaved RoPE undone for the `llama` architecture).

use std::collections::HashMap;
use std::path::Path;

use tch::{Kind, Tensor};

use super::config::DecoderConfig;
use super::gguf::Gguf;
use crate::error::{Error, Result};

/// Tensors by Hugging Face name, as f32 on the CPU.
pub type Weights = HashMap<String, Tensor>;

/// Reads every tensor of a Hugging Face folder.
pub fn from_hf_folder(dir: &Path) -> Result<Weights> {
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<std::path::PathBuf> = if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::file(&index, format!("invalid JSON: {e}")))?;
        let mut shards: Vec<String> = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::file(&index, "no weight_map"))?
            .values()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        shards.sort();
        shards.dedup();
        shards.into_iter().map(|s| dir.join(s)).collect()
    } else {
        vec![dir.join("model.safetensors")]
    };
    let mut out = Weights::new();
    for f in files {
        let tensors =
            Tensor::read_safetensors(&f).map_err(|e| Error::file(&f, format!("cannot read safetensors: {e}")))?;
        for (name, t) in tensors {
            out.insert(name, t.to_kind(Kind::Float));
        }
    }
    Ok(out)
}

/// The Hugging Face name of a GGUF tensor name (None for tensors the decoder does not use).
fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (part, kind) = rest.rsplit_once('.')?;
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// Undoes llama.cpp's permutation of Q/K rows: the converter stores each head's rows as
/// [head_dim/2][2] (interleaved pairs) where Hugging Face has [2][head_dim/2] (two halves).
fn unpermute(t: &Tensor, heads: i64) -> Tensor {
    let shape = t.size();
    let rows = shape[0];
    let rest: Vec<i64> = shape[1..].to_vec();
    let mut view = vec![heads, rows / heads / 2, 2];
    view.extend(&rest);
    t.view(view.as_slice()).transpose(1, 2).contiguous().view(shape.as_slice())
}

/// Reads and dequantises every decoder tensor of a GGUF file.
pub fn from_gguf(g: &Gguf, cfg: &DecoderConfig) -> Result<Weights> {
    let permuted = g.architecture() == Some("llama");
    let mut out = Weights::new();
    for info in &g.tensors {
        let Some(name) = hf_name(&info.name) else { continue };
        let (shape, values) = g.tensor_f32(&info.name)?;
        let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let mut t = Tensor::from_slice(&values).view(shape.as_slice());
        if permuted && name.ends_with("q_proj.weight") {
            t = unpermute(&t, cfg.num_heads);
        } else if permuted && name.ends_with("k_proj.weight") {
            t = unpermute(&t, cfg.num_kv_heads);
        }
        out.insert(name, t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names_map_to_hf_names() {
        assert_eq!(hf_name("blk.12.attn_q.weight").as_deref(), Some("model.layers.12.self_attn.q_proj.weight"));
        assert_eq!(hf_name("blk.0.ffn_down.weight").as_deref(), Some("model.layers.0.mlp.down_proj.weight"));
        assert_eq!(hf_name("token_embd.weight").as_deref(), Some("model.embed_tokens.weight"));
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }

    #[test]
    fn unpermute_inverts_the_llama_cpp_permutation() {
        // One head, head_dim 4, width 1: HF rows [a0 a1 | b0 b1] are stored as [a0 b0 a1 b1].
        let stored = Tensor::from_slice(&[0f32, 2., 1., 3.]).view([4, 1]);
        let hf = unpermute(&stored, 1);
        assert_eq!(Vec::<f32>::try_from(hf.view([-1])).unwrap(), vec![0., 1., 2., 3.]);
    }
}
