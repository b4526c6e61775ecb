//! The tool-calling environment's acceptance: the expert passes every unit test of seeded tasks,
//! a random caller rarely does, partial work earns partial reward, bad calls change nothing,
//! episodes are deterministic, golden transcript.

use super::*;
use crate::env::testing::{expert_play, random_play};

fn expert_run(env: &mut Tools, id: u64, seed: u64) -> (Vec<String>, f32, bool) {
    expert_play(env, id, seed)
}

#[test]
fn expert_passes_every_test_of_1000_seeded_tasks() {
    let mut env = Tools::new();
    let mut kinds = BTreeSet::new();
    for id in 0..1000u64 {
        let (t, ret, success) = expert_run(&mut env, id, id % 3);
        assert!(success && ret == 1.0, "task {id}: return {ret}: {t:?}");
        assert!(t.len() <= 2 + 2 * 6, "task {id}: {} calls", (t.len() - 2) / 2);
        kinds.insert(t[1].split_whitespace().nth(4).unwrap_or_default().to_string());
    }
    assert_eq!(kinds.len(), 4, "all four task types: {kinds:?}");
}

#[test]
fn random_caller_solves_few() {
    let (solved, total) = random_play(&mut Tools::new(), 500, 0, |_| {});
    println!("random: solved {solved}/500, mean reward {:.3}", total / 500.0);
    assert!(solved < 50, "random caller solved {solved}/500");
}

#[test]
fn partial_work_earns_partial_reward() {
    let mut env = Tools::new();
    let id = (0..)
        .find(|&id| {
            matches!(Tools::build(id).1, Task::DeleteTemporary)
                && Tools::build(id).0.files.keys().filter(|p| p.ends_with(".tmp")).count() >= 2
        })
        .unwrap();
    env.reset(id, 0);
    let tmp: Vec<String> = env.app.files.keys().filter(|p| p.ends_with(".tmp")).cloned().collect();
    let n = tmp.len() as f32 + 2.0;
    env.step(&call("delete_file", json!({ "path": tmp[0] })));
    // A wrong file deleted too: the "intact" test fails.
    let other = env.app.files.keys().find(|p| p.ends_with(".txt")).unwrap().clone();
    env.step(&call("delete_file", json!({ "path": other })));
    let s = env.step(&call("complete", json!({})));
    assert!(s.done && !s.success);
    assert!(
        (s.reward - 2.0 / n).abs() < 1e-6,
        "1 of {} deleted, nothing new: {} (want {})",
        tmp.len(),
        s.reward,
        2.0 / n
    );
}

#[test]
fn bad_calls_answer_errors_and_change_nothing() {
    let mut env = Tools::new();
    env.reset(3, 0);
    let before = env.app.clone();
    for (action, error) in [
        ("delete everything", "must be a JSON object"),
        ("{\"name\": \"format_disk\"}", "unknown function 'format_disk'"),
        ("{\"name\": \"read_file\", \"arguments\": {\"path\": 3}}", "needs a string 'path'"),
        ("{\"name\": \"delete_file\", \"arguments\": {\"path\": \"nope.txt\"}}", "no such file 'nope.txt'"),
        ("{\"name\": \"send_message\", \"arguments\": {\"to\": \"x@y.z\", \"body\": \"hi\"}}", "not the address"),
        ("{\"name\": \"read_message\", \"arguments\": {\"id\": 7}}", "no message 7"),
    ] {
        let s = env.step(action);
        assert!(s.observation.contains(error), "{action}: {}", s.observation);
        assert_eq!(env.app, before);
        assert_eq!(s.reward, 0.0);
    }
    while !env.step("{\"name\": \"list_files\"}").done {}
    assert_eq!(env.steps, DEFAULT_MAX_STEPS, "the budget ends the episode (and scores it)");
}

#[test]
fn episodes_are_deterministic_and_seeds_reorder_listings() {
    let mut env = Tools::new();
    for id in 0..50u64 {
        assert_eq!(expert_run(&mut env, id, 1), expert_run(&mut env, id, 1));
    }
    let differs = (0..40u64).filter(|&id| expert_run(&mut env, id, 0).0 != expert_run(&mut env, id, 1).0).count();
    assert!(differs > 10, "{differs} of 40");
}

#[test]
fn golden_transcripts() {
    let mut env = Tools::new();
    let (t, _, _) = expert_run(&mut env, 0, 0);
    assert_eq!(t[1..], GOLDEN_0);
}

/// Task 0, seed 0 (after the opening observation): save a message to a file.
const GOLDEN_0: [&str; 9] = [
    "Your task is to: save the body of the message from frank to a new file review.txt. Call complete when you are done.",
    "{\"name\": \"list_messages\"}",
    "{\"messages\":[{\"from\":\"bob@example.org\",\"id\":102,\"subject\":\"garden\"},{\"from\":\"frank@example.org\",\"id\":101,\"subject\":\"notes\"},{\"from\":\"grace@example.org\",\"id\":105,\"subject\":\"contract\"},{\"from\":\"dave@example.org\",\"id\":104,\"subject\":\"schedule\"},{\"from\":\"heidi@example.org\",\"id\":103,\"subject\":\"recipe\"}]}",
    "{\"name\": \"read_message\", \"arguments\": {\"id\":101}}",
    "{\"body\":\"about the notes: see you at 8:00\",\"from\":\"frank@example.org\",\"id\":101,\"subject\":\"notes\"}",
    "{\"name\": \"write_file\", \"arguments\": {\"content\":\"about the notes: see you at 8:00\",\"path\":\"review.txt\"}}",
    "{\"written\":\"review.txt\"}",
    "{\"name\": \"complete\"}",
    "{\"completed\":true}",
];
