//! A word-level tokenizer and chat template for the small model trained from scratch on a built-in
//! environment (`small:household`): its vocabulary is every word piece the environment can say or
//! accept — observations, task statements and every admissible action along expert episodes — plus
//! the numerals 0–99.
//!
//! Invariants:
//! - Pieces are a word with its leading space (` ?\S+`) or a run of whitespace; decoding
//!   concatenates pieces, so any generated sequence decodes to exactly the text the pieces spell,
//!   and re-encoding an action's text gives the same ids back. Text the environment never produced
//!   maps to `<unk>`.
//! - The chat template writes each message as `<|role|>content<|end|>` with nothing added, so
//!   rendering is prefix-stable and a rollout can append turns token-exactly.
//! - The vocabulary is a pure function of the environment: the same on every machine and run, so
//!   a process walks an environment once. An environment that answers an invalid action with an
//!   error (which the bridge protocol allows) is walked all the same.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use serde_json::json;

use super::tokenizer::Tok;
use crate::env::{by_name, Env};
use crate::error::{Error, Result};

/// Special tokens, in id order (ids 0..).
const SPECIAL: &[&str] = &["<unk>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"];
/// The end-of-turn token (the stop token of generation).
pub const END: &str = "<|end|>";
/// How many tasks (seeds 0 and 1) of the environment are walked to collect its vocabulary.
const TASKS: u64 = 300;
/// The numerals 0..=NUMERALS (alone, or ending a sentence or list item) are in every vocabulary.
const NUMERALS: u32 = 99;
const TEMPLATE: &str = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}\
{% if add_generation_prompt %}<|assistant|>{% endif %}";

fn spec(vocab: &[String]) -> serde_json::Value {
    let added: Vec<_> = SPECIAL
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": true})
        })
        .collect();
    let ids: serde_json::Map<String, serde_json::Value> = SPECIAL
        .iter()
        .map(|s| s.to_string())
        .chain(vocab.iter().cloned())
        .enumerate()
        .map(|(i, w)| (w, json!(i)))
        .collect();
    json!({"version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": " ?\\S+|\\s+"}, "behavior": "Isolated", "invert": false},
        "post_processor": null, "decoder": {"type": "Fuse"},
        "model": {"type": "WordLevel", "vocab": ids, "unk_token": "<unk>"}})
}

fn build(vocab: &[String]) -> Result<Tok> {
    let inner = spec(vocab).to_string().parse().map_err(|e| Error::Model(format!("env tokenizer: {e}")))?;
    Ok(Tok { inner, chat_template: Some(TEMPLATE.into()), bos_token: String::new(), eos_token: END.into() })
}

/// Every text an expert episode of `task` shows or accepts: observations, the task, admissible actions.
fn episode_texts(env: &mut dyn Env, task: u64, seed: u64, out: &mut Vec<String>) {
    let reset = env.reset(task, seed);
    out.push(reset.observation);
    out.push(reset.task);
    // What an invalid action answers (it changes nothing but the step count). An environment may
    // answer it with an error instead, which ends the episode: then the walk starts it again.
    let invalid = env.step("<an invalid action>");
    if env.failure().is_some() {
        env.reset(task, seed);
    } else {
        out.push(invalid.observation);
    }
    for _ in 0..env.max_steps() {
        out.extend(env.admissible_actions());
        let Some(action) = env.expert_action() else { break };
        let step = env.step(&action);
        out.push(step.observation);
        if step.done {
            break;
        }
    }
}

/// The tokenizer of the small model for environment `env_name`, walked once per process (the
/// vocabulary is a pure function of the environment; a bridge's walk costs 2×[`TASKS`] episodes).
pub fn for_env(env_name: &str) -> Result<Tok> {
    static WALKED: Mutex<BTreeMap<String, Tok>> = Mutex::new(BTreeMap::new());
    if let Some(tok) = WALKED.lock().expect("env tokenizers").get(env_name) {
        return Ok(tok.clone());
    }
    let tok = walk(env_name)?;
    WALKED.lock().expect("env tokenizers").insert(env_name.to_string(), tok.clone());
    Ok(tok)
}

/// Builds the tokenizer of `env_name` by walking its expert episodes.
fn walk(env_name: &str) -> Result<Tok> {
    let mut env = by_name(env_name)?;
    let splitter = build(&[])?;
    let mut pieces = BTreeSet::new();
    let mut texts = Vec::new();
    for task in 0..TASKS {
        for seed in 0..2 {
            texts.clear();
            episode_texts(env.as_mut(), task, seed, &mut texts);
            // Texts appear after a special token or after a newline-joined prefix: both with and
            // without a leading space.
            for t in &texts {
                for variant in [t.clone(), format!(" {t}"), format!("{t}\n")] {
                    let enc =
                        splitter.inner.encode(variant.as_str(), false).map_err(|e| Error::Model(e.to_string()))?;
                    let offsets = enc.get_offsets();
                    for &(s, e) in offsets {
                        pieces.insert(variant[s..e].to_string());
                    }
                }
            }
        }
    }
    // Environments number their objects ("handtowel 4"), and a walk meets only the numbers its
    // rooms happened to hold: the numerals are always words.
    for n in 0..=NUMERALS {
        for end in ["", ".", ","] {
            pieces.insert(format!("{n}{end}"));
            pieces.insert(format!(" {n}{end}"));
        }
    }
    pieces.retain(|p| !SPECIAL.contains(&p.as_str()));
    build(&pieces.into_iter().collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tokenizer::Message;

    const COUNTER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/counter_bridge.py");

    /// A bridge may answer an unknown action with an error: the walk still sees every episode.
    #[test]
    fn a_bridge_answering_errors_to_unknown_actions_is_walked_all_the_same() {
        let tok = for_env(&format!("bridge:{} {COUNTER} --strict", crate::env::bridge::python())).unwrap();
        for text in ["inc", "dec", "The counter shows 4.", "Your task is to: count to 5."] {
            let ids = tok.encode(text).unwrap();
            assert!(!ids.contains(&0), "'{text}' has an unknown piece");
            assert_eq!(tok.decode(&ids).unwrap(), text);
        }
    }

    /// Loading a `small:ENV` model (tokenizer and decoder) walks the environment once.
    #[test]
    fn loading_a_small_model_walks_its_environment_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests");
        let spec = format!("small:bridge:{} {COUNTER} --log {}", crate::env::bridge::python(), log.display());
        crate::model::load(&spec, tch::Device::Cpu).unwrap();
        crate::model::load_tokenizer(&spec).unwrap();
        let resets = std::fs::read_to_string(&log).unwrap().lines().filter(|l| l.contains("\"reset\"")).count();
        assert_eq!(resets as u64, 2 * TASKS, "one walk: {TASKS} tasks x 2 seeds");
    }

    /// Expert episodes of tasks the walk never met (their rooms number objects it did not see,
    /// "handtowel 4"): every observation and admissible action can be written.
    #[test]
    fn every_text_of_unwalked_household_pick_tasks_can_be_written() {
        let tok = for_env("household-pick").unwrap();
        let mut env = by_name("household-pick").unwrap();
        let mut texts = Vec::new();
        for task in TASKS..TASKS + 1000 {
            texts.clear();
            episode_texts(env.as_mut(), task, 0, &mut texts);
            for text in &texts {
                assert_eq!(&tok.decode(&tok.encode(text).unwrap()).unwrap(), text, "task {task}");
            }
        }
    }

    #[test]
    fn actions_round_trip_and_template_is_prefix_stable() {
        let tok = for_env("household").unwrap();
        let vocab = tok.inner.get_vocab_size(true);
        assert!((200..5000).contains(&vocab), "vocabulary of {vocab} pieces");
        let mut env = by_name("household").unwrap();
        env.reset(3, 0);
        for action in env.admissible_actions() {
            let ids = tok.encode(&action).unwrap();
            assert!(!ids.contains(&0), "'{action}' has an unknown piece");
            assert_eq!(tok.decode(&ids).unwrap(), action);
        }
        let eos = tok.token_id(END).unwrap();
        let mut msgs = vec![Message::new("user", "You are in the middle of a room.\nYour task is to: x")];
        let prompt = tok.apply_chat_template(&msgs, true).unwrap();
        msgs.push(Message::new("assistant", "go to cabinet 1"));
        let mut ids = tok.encode("go to cabinet 1").unwrap();
        ids.push(eos);
        let generated = format!("{prompt}{}", tok.decode(&ids).unwrap());
        msgs.push(Message::new("user", "You arrive at cabinet 1."));
        assert!(tok.apply_chat_template(&msgs, true).unwrap().starts_with(&generated));
    }
}
