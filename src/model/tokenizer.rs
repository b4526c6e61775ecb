//! Tokenizers and chat templates. A Hugging Face folder's `tokenizer.json` is loaded as is; a
//! GGUF file's byte-level BPE (`tokenizer.ggml.model = gpt2`) is rebuilt from its vocabulary,
//! merges and token types as the equivalent `tokenizer.json`, with the pre-tokenizer its
//! `tokenizer.ggml.pre` names. Chat templates are the model's own Jinja templates, rendered with
//! minijinja (with Python string methods), so prompts are byte-identical to transformers'.

use std::path::Path;

use serde_json::{json, Value as Json};

use super::gguf::Gguf;
use crate::error::{Error, Result};

/// A tokenizer with the model's chat template and special tokens.
#[derive(Clone)]
pub struct Tok {
    /// The Hugging Face tokenizer.
    pub inner: tokenizers::Tokenizer,
    /// Jinja chat template, if the model has one.
    pub chat_template: Option<String>,
    /// Beginning-of-sequence token text (for templates).
    pub bos_token: String,
    /// End-of-sequence token text (for templates).
    pub eos_token: String,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message.
    pub fn new(role: &str, content: &str) -> Message {
        Message { role: role.into(), content: content.into() }
    }
}

impl Tok {
    /// Loads `tokenizer.json` and the chat template from `tokenizer_config.json` of a folder.
    pub fn from_hf_folder(dir: &Path) -> Result<Tok> {
        let file = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&file).map_err(|e| Error::file(&file, e))?;
        let cfg_file = dir.join("tokenizer_config.json");
        let cfg: Json = match std::fs::read_to_string(&cfg_file) {
            Ok(t) => serde_json::from_str(&t).map_err(|e| Error::file(&cfg_file, format!("invalid JSON: {e}")))?,
            Err(_) => Json::Null,
        };
        let text = |k: &str| match cfg.get(k) {
            Some(Json::String(s)) => s.clone(),
            Some(Json::Object(o)) => o.get("content").and_then(Json::as_str).unwrap_or_default().to_string(),
            _ => String::new(),
        };
        Ok(Tok {
            inner,
            chat_template: cfg.get("chat_template").and_then(Json::as_str).map(str::to_string),
            bos_token: text("bos_token"),
            eos_token: text("eos_token"),
        })
    }

    /// Rebuilds the tokenizer stored in a GGUF file's metadata.
    pub fn from_gguf(g: &Gguf) -> Result<Tok> {
        let err = |m: String| Error::Model(format!("{}: {m}", g.path().display()));
        let model = g.get("tokenizer.ggml.model").and_then(|v| v.as_str()).unwrap_or("");
        if model != "gpt2" {
            return Err(err(format!("tokenizer model '{model}' is not supported (byte-level BPE 'gpt2' is)")));
        }
        let tokens = g
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.as_str_array())
            .ok_or_else(|| err("no tokenizer.ggml.tokens".into()))?;
        let merges = g.get("tokenizer.ggml.merges").and_then(|v| v.as_str_array()).unwrap_or_default();
        let types = g.get("tokenizer.ggml.token_type").and_then(|v| v.as_i64_array()).unwrap_or_default();
        let pre = g.get("tokenizer.ggml.pre").and_then(|v| v.as_str()).unwrap_or("default");
        let byte_level =
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
        let pre_tokenizer = match pre {
            "smollm" => {
                json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level]})
            }
            "gpt2" | "default" => byte_level.clone(),
            other => {
                return Err(err(format!(
                    "pre-tokenizer '{other}' is not supported yet; load the Hugging Face folder instead"
                )))
            }
        };
        let vocab: serde_json::Map<String, Json> =
            tokens.iter().enumerate().map(|(i, t)| (t.to_string(), json!(i))).collect();
        // Control (3) and user-defined (4) tokens are matched whole, before BPE.
        let added: Vec<Json> = types
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == 3 || t == 4)
            .map(|(i, &t)| {
                json!({"id": i, "content": tokens[i], "single_word": false, "lstrip": false, "rstrip": false,
                       "normalized": false, "special": t == 3})
            })
            .collect();
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges},
        });
        let inner: tokenizers::Tokenizer =
            spec.to_string().parse().map_err(|e: tokenizers::Error| err(format!("cannot build the tokenizer: {e}")))?;
        let token = |key: &str| {
            g.get(key)
                .and_then(|v| v.as_u64())
                .and_then(|i| tokens.get(i as usize))
                .map(|s| s.to_string())
                .unwrap_or_default()
        };
        Ok(Tok {
            inner,
            chat_template: g.get("tokenizer.chat_template").and_then(|v| v.as_str()).map(str::to_string),
            bos_token: token("tokenizer.ggml.bos_token_id"),
            eos_token: token("tokenizer.ggml.eos_token_id"),
        })
    }

    /// A stand-in for working on token ids alone (generation without stop strings, benchmarks
    /// of random models): it has no vocabulary, chat template or special tokens.
    pub fn ids_only() -> Tok {
        let spec = json!({"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"<unk>": 0}, "unk_token": "<unk>"}});
        let inner = spec.to_string().parse().expect("a constant, valid tokenizer spec");
        Tok { inner, chat_template: None, bos_token: String::new(), eos_token: String::new() }
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` (chat template, special tokens) into
    /// `dir`, so that [`Tok::from_hf_folder`] (and transformers) load it back.
    pub fn save_hf(&self, dir: &Path) -> Result<()> {
        let file = dir.join("tokenizer.json");
        self.inner.save(&file, false).map_err(|e| Error::file(&file, e))?;
        let cfg =
            json!({"chat_template": self.chat_template, "bos_token": self.bos_token, "eos_token": self.eos_token});
        let file = dir.join("tokenizer_config.json");
        std::fs::write(&file, cfg.to_string()).map_err(|e| Error::io(&file, e))
    }

    /// Token ids of `text` (special tokens in the text are recognised; nothing is added).
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Model(format!("tokenize: {e}")))?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// Text of `ids` (special tokens kept, so decoding round-trips).
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.inner.decode(&ids, false).map_err(|e| Error::Model(format!("detokenize: {e}")))
    }

    /// The id of a token given by its text, if it is one token.
    pub fn token_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(|i| i as i64)
    }

    /// Renders `messages` with the model's chat template.
    pub fn apply_chat_template(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template =
            self.chat_template.as_deref().ok_or_else(|| Error::Model("the model has no chat template".into()))?;
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", template).map_err(|e| Error::Model(format!("chat template: {e}")))?;
        let tmpl = env.get_template("chat").map_err(|e| Error::Model(format!("chat template: {e}")))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone(),
            eos_token => self.eos_token.clone(),
        })
        .map_err(|e| Error::Model(format!("chat template: {e}")))
    }
}
