//! Import of the real logged datasets in ../shared/data (FireAct HotpotQA experts and Llama-2
//! rollouts, KnowAgent ALFWorld rollouts) and of OpenAI/ShareGPT chat logs: row counts and
//! success labels match the files, and decoding each turn's action tokens gives back exactly the
//! assistant message (plus the end-of-turn token the model emits). Needs the cached SmolLM2
//! tokenizer (`make model`); says SKIPPED and passes without it.
#![cfg(feature = "torch")]

mod common;
use common::*;

use std::path::{Path, PathBuf};

use arrow::array::AsArray;
use arrow::datatypes::{Int32Type, UInt8Type};
use trajflow::import::formats::{read, Format};
use trajflow::model::tokenizer::Tok;

fn tokenizer() -> Option<Tok> {
    match trajflow::model::load_tokenizer("smollm2-135m") {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            None
        }
    }
}

fn shared(rel: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("SKIPPED: {} is not there", p.display());
        None
    }
}

/// Imports `file` through the binary and checks counts and the action round trip.
fn check(format: &str, file: &Path, rows: usize, successes: usize) {
    let Some(tok) = tokenizer() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let msg = ok(&["import", "--format", format, "--input", s(file), "--output", s(&out)]);
    assert!(msg.contains(&format!("import: {rows} episodes ({successes} successful")), "{msg}");
    let batch = read_sorted(&out);
    assert_eq!(batch.num_rows(), rows);
    let fmt = match format {
        "knowagent" => Format::Knowagent,
        "fireact" => Format::Fireact,
        "sharegpt" => Format::Sharegpt,
        _ => Format::Openai,
    };
    let convs: std::collections::HashMap<String, _> =
        read(fmt, file).unwrap().into_iter().map(|c| (c.id.clone(), c)).collect();
    let ids = batch.column_by_name("episode_id").unwrap().as_string::<i32>();
    let tokens = batch.column_by_name("tokens").unwrap().as_list::<i32>();
    let segments = batch.column_by_name("segments").unwrap().as_list::<i32>();
    let turns = batch.column_by_name("turns").unwrap().as_list::<i32>();
    for r in 0..batch.num_rows() {
        let conv = &convs[ids.value(r)];
        let t = tokens.value(r);
        let t = t.as_primitive::<Int32Type>().values();
        let sg = segments.value(r);
        let sg = sg.as_primitive::<UInt8Type>().values();
        let tu = turns.value(r);
        let tu = tu.as_primitive::<Int32Type>().values();
        // The whole sequence decodes to the rendered conversation.
        let text = tok.decode(&t.iter().map(|&x| x as i64).collect::<Vec<_>>()).unwrap();
        let msgs: Vec<_> =
            conv.messages.iter().map(|m| trajflow::model::tokenizer::Message::new(&m.role, &m.content)).collect();
        assert_eq!(text, tok.apply_chat_template(&msgs, false).unwrap(), "{}", conv.id);
        // Each turn's action tokens decode to the assistant message + end-of-turn token.
        for (k, m) in conv.messages.iter().filter(|m| m.role == "assistant").enumerate() {
            let action: Vec<i64> =
                (0..t.len()).filter(|&j| sg[j] == 1 && tu[j] == k as i32).map(|j| t[j] as i64).collect();
            assert_eq!(tok.decode(&action).unwrap(), format!("{}{}", m.content, tok.eos_token), "{} turn {k}", conv.id);
        }
    }
    // The imported data runs through a pipeline.
    ok(&["reprocess", &pipeline("grpo_advantages.toml"), "--input", s(&out), "--output", s(&dir.path().join("adv"))]);
}

#[test]
fn knowagent_alfworld_rollouts() {
    if let Some(f) = shared("knowagent/alfworld_llama2-13b_rollouts.jsonl") {
        check("knowagent", &f, 510, 134);
    }
}

#[test]
fn fireact_gpt4_experts() {
    if let Some(f) = shared("fireact/hotpotqa_gpt4_expert.jsonl") {
        check("fireact", &f, 500, 500);
    }
}

#[test]
fn fireact_llama2_rollouts() {
    if let Some(f) = shared("fireact/hotpotqa_llama2-7b_rollouts.json") {
        check("fireact", &f, 500, 131);
    }
}

#[test]
fn openai_with_tool_calls_rewards_and_task_ids_and_sharegpt() {
    let dir = tempfile::tempdir().unwrap();
    let oa = dir.path().join("chat.jsonl");
    std::fs::write(
        &oa,
        concat!(
            r#"{"id": "a", "task_id": "t1", "reward": 0.5, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}}]}, {"role": "tool", "content": "18C, sunny"}, {"role": "assistant", "content": "It is 18C and sunny."}]}"#,
            "\n",
            r#"{"id": "b", "task_id": "t1", "success": true, "messages": [{"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": "Sunny."}]}"#,
            "\n"
        ),
    )
    .unwrap();
    check("openai", &oa, 2, 1);
    let convs = read(Format::Openai, &oa).unwrap();
    assert_eq!(convs[0].reward, 0.5);
    assert_eq!(convs[1].reward, 1.0);
    assert!(convs[0].messages[2].content.contains("\"name\":\"weather\""));
    let sg = dir.path().join("share.jsonl");
    std::fs::write(
        &sg,
        r#"{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}], "reward": 1.0}"#,
    )
    .unwrap();
    check("sharegpt", &sg, 1, 0);
}

#[test]
fn expert_demos_of_the_household_env_are_stored_token_exact() {
    let Some(tok) = tokenizer() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demos");
    let msg = ok(&["demos", "--env", "household", "--tasks", "40", "--split", "dev", "--output", s(&out)]);
    assert!(msg.starts_with("demos: 40 expert episodes of household (40 solved"), "{msg}");
    let batch = read_sorted(&out);
    let mut env = trajflow::env::by_name("household").unwrap();
    let ids = batch.column_by_name("task_id").unwrap().as_string::<i32>();
    let tokens = batch.column_by_name("tokens").unwrap().as_list::<i32>();
    let segments = batch.column_by_name("segments").unwrap().as_list::<i32>();
    for r in 0..batch.num_rows() {
        // Replaying the expert on the same task gives the stored actions, in order.
        let task: u64 = ids.value(r).rsplit('-').next().unwrap().parse().unwrap();
        let conv = trajflow::env::demos::expert_episode(env.as_mut(), task, 0);
        let t = tokens.value(r);
        let t = t.as_primitive::<Int32Type>().values().to_vec();
        let sg = segments.value(r);
        let sg = sg.as_primitive::<UInt8Type>().values().to_vec();
        let actions: Vec<i64> = t.iter().zip(&sg).filter(|(_, &g)| g == 1).map(|(&x, _)| x as i64).collect();
        let expected: String = conv
            .messages
            .iter()
            .filter(|m| m.role == "assistant")
            .map(|m| format!("{}{}", m.content, tok.eos_token))
            .collect();
        assert_eq!(tok.decode(&actions).unwrap(), expected);
    }
}

#[test]
fn watch_ingests_json_lines_logs_as_they_land_like_import_then_reprocess() {
    let (Some(_), Some(src)) = (tokenizer(), shared("fireact/hotpotqa_gpt4_expert.jsonl")) else { return };
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = std::fs::read_to_string(&src).unwrap().lines().take(30).map(str::to_string).collect();
    let wdir = dir.path().join("landing");
    std::fs::create_dir_all(&wdir).unwrap();
    for (name, chunk) in [("a.jsonl", &lines[..12]), ("b.jsonl", &lines[12..])] {
        std::fs::write(wdir.join(name), chunk.join("\n") + "\n").unwrap();
    }
    std::fs::write(wdir.join("c.jsonl"), "not json\n").unwrap();
    let watched = dir.path().join("watched");
    let p = pipeline("grpo_advantages.toml");
    let out = trajflow(
        &["watch", &p, "--input", s(&wdir), "--output", s(&watched), "--import", "fireact"]
            .into_iter()
            .chain(["--import-model", "smollm2-135m", "--idle-exit", "1", "--poll-ms", "20"])
            .collect::<Vec<_>>(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("2 file(s) ingested"), "{stdout}");
    assert!(stdout.contains("rejected: ") && stdout.contains("c.jsonl"), "the bad log is named: {stdout}");
    // The same logs imported into one dataset, then reprocessed at once.
    let (imported, once) = (dir.path().join("imported"), dir.path().join("once"));
    for name in ["a.jsonl", "b.jsonl"] {
        ok(&["import", "--format", "fireact", "--input", s(&wdir.join(name)), "--output", s(&imported)]);
    }
    ok(&["reprocess", &p, "--input", s(&imported), "--output", s(&once)]);
    assert_same_dataset(&once, &watched);
}
