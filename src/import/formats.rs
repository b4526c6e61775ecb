//! Readers for logged conversation formats, each turning a file into [`Conversation`]s:
//!
//! | format | file | messages | outcome |
//! |---|---|---|---|
//! | `openai` | JSONL, `{"messages": [...], "reward"?, "success"?, "task_id"?, "id"?}` | OpenAI chat messages; `tool_calls` are appended to the assistant text as JSON, `tool` messages kept | `reward` (default: 1 if `success`, else 0), `success` |
//! | `sharegpt` | JSONL or a JSON list, `{"conversations": [{"from", "value"}], ...}` | `system`/`human`/`gpt`/`tool` → system/user/assistant/tool | as `openai` |
//! | `fireact` | FireAct's GPT-4 expert JSONL (openai messages) or its rollouts JSON (`{qid: {reward, traj, …}}`) | the `traj` text split into Thought/Action (assistant) and Observation (user) lines | experts: reward 1; rollouts: `reward` |
//! | `knowagent` | JSONL `{"name", "result", "traj"}` (ALFWorld) | `> ` lines are the agent's (consecutive ones form one turn); the lines after them, the environment's | `result` (bool or 0/1) → reward 1/0; group = the ALFWorld task family |

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

/// A chat message.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Text.
    pub content: String,
}

/// One logged episode.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// Episode id (unique within the file).
    pub id: String,
    /// Task id.
    pub task_id: String,
    /// Group id (rollouts compared with each other); the task id unless the format knows better.
    pub group_id: String,
    /// Messages in order.
    pub messages: Vec<Msg>,
    /// Outcome reward (the return: the sum of `turn_rewards` where those are known).
    pub reward: f32,
    /// The reward of each assistant turn, where the source knows them (an environment's step
    /// rewards); `None`: the whole reward on the last turn.
    pub turn_rewards: Option<Vec<f32>>,
    /// Success, where known.
    pub success: Option<bool>,
}

/// The supported formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// OpenAI chat messages, one conversation per line.
    Openai,
    /// ShareGPT conversations.
    Sharegpt,
    /// FireAct HotpotQA files.
    Fireact,
    /// KnowAgent ALFWorld logs.
    Knowagent,
}

fn msg(role: &str, content: impl Into<String>) -> Msg {
    Msg { role: role.into(), content: content.into() }
}

fn bad(file: &Path, line: usize, m: impl std::fmt::Display) -> Error {
    Error::file(file, format!("line {line}: {m}"))
}

fn task_of(first_user: &str) -> String {
    format!("{:016x}", crate::dataflow::cluster::stable_hash(first_user.as_bytes()))
}

fn outcome(v: &Value) -> (f32, Option<bool>) {
    let success = v.get("success").and_then(Value::as_bool);
    let reward = v
        .get("reward")
        .and_then(|r| r.as_f64().or_else(|| r.as_bool().map(|b| f64::from(u8::from(b)))))
        .map(|r| r as f32)
        .unwrap_or(if success == Some(true) { 1.0 } else { 0.0 });
    (reward, success)
}

fn openai_messages(v: &Value, file: &Path, line: usize) -> Result<Vec<Msg>> {
    let arr = v.get("messages").and_then(Value::as_array).ok_or_else(|| bad(file, line, "no 'messages' list"))?;
    arr.iter()
        .map(|m| {
            let role = m.get("role").and_then(Value::as_str).ok_or_else(|| bad(file, line, "a message has no role"))?;
            let mut content = match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => {
                    parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("")
                }
                _ => String::new(),
            };
            if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                for c in calls {
                    let f = c.get("function").unwrap_or(c);
                    let call = serde_json::json!({"name": f.get("name"), "arguments": f.get("arguments")});
                    if !content.is_empty() {
                        content.push('\n');
                    }
                    content.push_str(&call.to_string());
                }
            }
            Ok(msg(role, content))
        })
        .collect()
}

fn jsonl(file: &Path) -> Result<Vec<(usize, Value)>> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let all: Vec<Value> =
            serde_json::from_str(trimmed).map_err(|e| Error::file(file, format!("invalid JSON: {e}")))?;
        return Ok(all.into_iter().enumerate().map(|(i, v)| (i + 1, v)).collect());
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map(|v| (i + 1, v)).map_err(|e| bad(file, i + 1, format!("invalid JSON: {e}")))
        })
        .collect()
}

fn stem(file: &Path) -> String {
    file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Reads `file` in `format`.
pub fn read(format: Format, file: &Path) -> Result<Vec<Conversation>> {
    match format {
        Format::Openai | Format::Sharegpt => read_chat(format, file, None),
        Format::Fireact if file.extension().is_some_and(|e| e == "jsonl") => read_chat(Format::Openai, file, Some(1.0)),
        Format::Fireact => read_fireact_rollouts(file),
        Format::Knowagent => read_knowagent(file),
    }
}

fn read_chat(format: Format, file: &Path, reward: Option<f32>) -> Result<Vec<Conversation>> {
    jsonl(file)?
        .into_iter()
        .map(|(line, v)| {
            let messages = if format == Format::Sharegpt {
                let conv = v
                    .get("conversations")
                    .and_then(Value::as_array)
                    .ok_or_else(|| bad(file, line, "no 'conversations' list"))?;
                conv.iter()
                    .map(|m| {
                        let from = m.get("from").and_then(Value::as_str).unwrap_or("");
                        let role = match from {
                            "system" => "system",
                            "human" | "user" => "user",
                            "gpt" | "assistant" => "assistant",
                            "tool" | "observation" | "function" => "tool",
                            other => return Err(bad(file, line, format!("unknown speaker '{other}'"))),
                        };
                        Ok(msg(role, m.get("value").and_then(Value::as_str).unwrap_or("")))
                    })
                    .collect::<Result<Vec<_>>>()?
            } else {
                openai_messages(&v, file, line)?
            };
            let (r, s) = outcome(&v);
            let first_user = messages.iter().find(|m| m.role == "user").map(|m| m.content.as_str()).unwrap_or("");
            let task_id =
                v.get("task_id").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| task_of(first_user));
            Ok(Conversation {
                id: v
                    .get("id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{}-{line}", stem(file))),
                group_id: v
                    .get("group_id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| task_id.clone()),
                task_id,
                messages,
                reward: reward.unwrap_or(r),
                success: if reward.is_some() { Some(true) } else { s },
                turn_rewards: None,
            })
        })
        .collect()
}

/// Splits a ReAct trace into assistant (Thought/Action) and user (Observation) messages.
fn react_turns(lines: &[&str], messages: &mut Vec<Msg>) {
    for l in lines {
        let role = if l.starts_with("Observation") { "user" } else { "assistant" };
        match messages.last_mut() {
            Some(m) if m.role == role && role == "assistant" => {
                m.content.push('\n');
                m.content.push_str(l);
            }
            _ => messages.push(msg(role, *l)),
        }
    }
}

fn read_fireact_rollouts(file: &Path) -> Result<Vec<Conversation>> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    let all: serde_json::Map<String, Value> =
        serde_json::from_str(&text).map_err(|e| Error::file(file, format!("invalid JSON: {e}")))?;
    all.into_iter()
        .map(|(qid, v)| {
            let traj = v
                .get("traj")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::file(file, format!("'{qid}' has no traj")))?;
            let (prompt, rest) = traj.split_once("### Response:\n").unwrap_or((traj, ""));
            let mut messages = vec![msg("user", format!("{prompt}### Response:"))];
            let lines: Vec<&str> = rest.lines().filter(|l| !l.is_empty()).collect();
            react_turns(&lines, &mut messages);
            let (reward, success) = outcome(&v);
            Ok(Conversation {
                id: qid.clone(),
                group_id: qid.clone(),
                task_id: qid,
                messages,
                reward,
                success: success.or(Some(reward > 0.0)),
                turn_rewards: None,
            })
        })
        .collect()
}

fn read_knowagent(file: &Path) -> Result<Vec<Conversation>> {
    jsonl(file)?
        .into_iter()
        .map(|(line, v)| {
            let name = v.get("name").and_then(Value::as_str).ok_or_else(|| bad(file, line, "no 'name'"))?;
            let result = v
                .get("result")
                .and_then(|r| r.as_bool().or_else(|| r.as_i64().map(|i| i != 0)))
                .ok_or_else(|| bad(file, line, "no boolean or 0/1 'result'"))?;
            let traj = v.get("traj").and_then(Value::as_str).ok_or_else(|| bad(file, line, "no 'traj'"))?;
            let mut messages: Vec<Msg> = Vec::new();
            for l in traj.lines() {
                let (role, text) = match l.strip_prefix("> ") {
                    Some(a) => ("assistant", a),
                    None => ("user", l),
                };
                match messages.last_mut() {
                    Some(m) if m.role == role => {
                        m.content.push('\n');
                        m.content.push_str(text);
                    }
                    _ => messages.push(msg(role, text)),
                }
            }
            Ok(Conversation {
                id: format!("{name}#{line}"),
                // ALFWorld's task family (pick_and_place_simple, pick_heat_then_place_in_recep, ...).
                group_id: name.split('-').next().unwrap_or(name).to_string(),
                task_id: name.to_string(),
                messages,
                reward: f32::from(u8::from(result)),
                success: Some(result),
                turn_rewards: None,
            })
        })
        .collect()
}
