//! `trajflow import`: logged conversations (OpenAI/ShareGPT chat logs, FireAct, KnowAgent) turned
//! into token-exact trajectory rows through a model's tokenizer and chat template.
//!
//! The whole conversation is rendered once with the chat template and tokenised once, so the
//! stored tokens are exactly what the model would see. Segments come from character spans: the
//! template is rendered for each prefix of the messages (templates are prefix-stable, which is
//! checked), each message's region is the text its turn added, and inside a region the message's
//! content is `action` (assistant, plus the end-of-turn token that follows it, which the model
//! emits), `prompt` (system, and user turns before the first assistant turn) or `observation`
//! (later user and tool turns); everything else is `template`. A token takes the segment of its
//! first byte. Turn t is the t-th assistant message; tokens before the first belong to turn 0 and
//! observations belong to the turn whose action produced them. The outcome reward is placed on
//! the last turn.

pub mod formats;

use crate::error::{Error, Result};
use crate::model::tokenizer::{Message, Tok};
use crate::ops::segment::Segment;
use crate::schema::builder::EpisodeRow;

pub use formats::{Conversation, Format, Msg};

/// Reads `file` in `format` and converts every conversation (environment name: the format's).
pub fn rows_of(format: Format, file: &std::path::Path, tok: &Tok, model: &str) -> Result<Vec<EpisodeRow>> {
    let env = format!("{format:?}").to_lowercase();
    formats::read(format, file)?.iter().map(|c| to_row(tok, c, &env, model)).collect()
}

/// Converts one conversation to a trajectory row.
pub fn to_row(tok: &Tok, conv: &Conversation, env: &str, model: &str) -> Result<EpisodeRow> {
    let err = |m: String| Error::Model(format!("conversation '{}': {m}", conv.id));
    let msgs: Vec<Message> = conv.messages.iter().map(|m| Message::new(&m.role, &m.content)).collect();
    let text = tok.apply_chat_template(&msgs, false)?;
    // Byte spans: (region start, content start, content end, segment) per message.
    let mut seg = vec![Segment::Template as u8; text.len()];
    let mut turn_starts = Vec::new();
    let mut prev = 0usize;
    let mut seen_assistant = false;
    for k in 0..msgs.len() {
        let upto = tok.apply_chat_template(&msgs[..=k], false)?;
        if !text.starts_with(&upto) || upto.len() < prev {
            return Err(err("the chat template is not prefix-stable; cannot locate messages".into()));
        }
        let region = &text[prev..upto.len()];
        let content = conv.messages[k].content.as_str();
        let (at, len) = match region.rfind(content) {
            Some(at) if !content.is_empty() => (at, content.len()),
            _ => match region.rfind(content.trim()) {
                Some(at) if !content.trim().is_empty() => (at, content.trim().len()),
                _ => (0, 0),
            },
        };
        let kind = match conv.messages[k].role.as_str() {
            "assistant" => {
                seen_assistant = true;
                turn_starts.push(prev);
                Segment::Action
            }
            "user" if !seen_assistant => Segment::Prompt,
            "system" => Segment::Prompt,
            _ => Segment::Observation,
        };
        let mut end = prev + at + len;
        if kind == Segment::Action && !tok.eos_token.is_empty() && text[end..].starts_with(&tok.eos_token) {
            end += tok.eos_token.len();
        }
        seg[prev + at..end].fill(kind as u8);
        prev = upto.len();
    }
    let enc = tok.inner.encode(text.as_str(), false).map_err(|e| err(format!("tokenize: {e}")))?;
    let tokens: Vec<i32> = enc.get_ids().iter().map(|&i| i as i32).collect();
    let segments: Vec<u8> =
        enc.get_offsets().iter().map(|&(s, _)| seg.get(s).copied().unwrap_or(Segment::Template as u8)).collect();
    let turns: Vec<i32> = enc
        .get_offsets()
        .iter()
        .map(|&(s, _)| (turn_starts.iter().filter(|&&t| t <= s).count() as i32 - 1).max(0))
        .collect();
    let turn_rewards = match &conv.turn_rewards {
        Some(r) if r.len() == turn_starts.len() => r.clone(),
        Some(r) => return Err(err(format!("{} turn rewards for {} assistant turns", r.len(), turn_starts.len()))),
        None => {
            let mut r = vec![0f32; turn_starts.len()];
            if let Some(last) = r.last_mut() {
                *last = conv.reward;
            }
            r
        }
    };
    Ok(EpisodeRow {
        episode_id: conv.id.clone(),
        task_id: conv.task_id.clone(),
        group_id: conv.group_id.clone(),
        tokens,
        segments,
        turns,
        turn_rewards,
        reward: conv.reward,
        success: conv.success,
        terminated: true,
        env: Some(env.to_string()),
        model: Some(model.to_string()),
        ..Default::default()
    })
}
