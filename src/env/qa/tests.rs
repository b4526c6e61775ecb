//! The QA environment's acceptance: the expert answers seeded questions from what it has read, a
//! random policy rarely does, episodes are deterministic, exact match and F1 as HotpotQA computes
//! them, golden transcripts.

use super::*;
use crate::env::testing::{expert_play, random_play};

fn expert_run(env: &mut Qa, id: u64, seed: u64) -> (Vec<String>, f32, bool) {
    expert_play(env, id, seed)
}

#[test]
fn expert_answers_1000_seeded_questions() {
    let mut env = Qa::exact_match();
    let (mut solved, mut lookups) = (0, 0);
    for id in 0..1000u64 {
        let (t, ret, success) = expert_run(&mut env, id, id % 5);
        solved += usize::from(success && ret == 1.0);
        lookups += t.iter().filter(|s| s.starts_with("lookup[")).count();
        assert!(t.len() <= 2 + 2 * 5, "task {id}: {} steps", (t.len() - 2) / 2);
    }
    assert!(solved >= 990, "expert solved {solved}/1000");
    assert!(lookups > 200, "the preview hides the needed fact often enough to need lookup ({lookups})");
}

#[test]
fn random_policy_solves_few() {
    let (solved, _) = random_play(&mut Qa::exact_match(), 500, 0, |_| {});
    // Comparisons (2 in 5 questions) are a coin flip once both names are in the question.
    println!("random: solved {solved}/500");
    assert!(solved < 100, "random policy solved {solved}/500");
}

#[test]
fn episodes_are_deterministic_and_seeds_reorder_pages() {
    let mut env = Qa::exact_match();
    for id in 0..50u64 {
        assert_eq!(expert_run(&mut env, id, 2), expert_run(&mut env, id, 2));
    }
    let differs = (0..40u64).filter(|&id| expert_run(&mut env, id, 0).0 != expert_run(&mut env, id, 1).0).count();
    assert!(differs > 5, "{differs} of 40");
    assert!((0..40u64).all(|id| expert_run(&mut env, id, 0).0[1] == expert_run(&mut env, id, 1).0[1]));
    let questions: BTreeSet<String> = (0..100u64).map(|id| question(id).text).collect();
    assert!(questions.len() > 95);
}

#[test]
fn exact_match_and_f1_follow_hotpotqa() {
    assert_eq!(normalize("The  Arvel-Don!"), "arvel don");
    assert_eq!(f1("the Arvel", "Arvel"), 1.0);
    assert_eq!(f1("Arvel Don", "Arvel"), 2.0 * 0.5 * 1.0 / 1.5);
    assert_eq!(f1("Kasel", "Arvel"), 0.0);
    let mut env = Qa::token_f1();
    let id = (0..).find(|&id| question(id).answer.parse::<u32>().is_err()).unwrap();
    env.reset(id, 0);
    let gold = question(id).answer;
    let s = env.step(&format!("finish[{gold} river town]"));
    assert!(s.done && !s.success);
    assert!((s.reward - 0.5).abs() < 1e-6, "F1 of 1 of 3 words against 1: {}", s.reward);
    let mut em = Qa::exact_match();
    em.reset(id, 0);
    let s = em.step(&format!("finish[the {gold}]"));
    assert!(s.success && s.reward == 1.0);
}

#[test]
fn search_lookup_and_invalid_actions() {
    let mut env = Qa::exact_match();
    env.reset(0, 0);
    let s = env.step("search[Nowhere At All]");
    assert!(s.observation.starts_with("Could not find [Nowhere At All]. Similar: ["), "{}", s.observation);
    assert_eq!(env.step("lookup[born]").observation, "No page is open: search first.");
    assert!(env.step("dance").observation.starts_with("Invalid action"));
    let q = question(0);
    let first = &q.hops[0];
    env.step(&format!("search[{}]", first.page.to_uppercase()));
    let a = env.step(&format!("lookup[{}]", first.keyword)).observation;
    assert!(a.starts_with("(Result 1 / 1) ") && a.ends_with(&first.fact), "{a}");
    for _ in 0..10 {
        env.step("lookup[x]");
    }
    assert!(env.done && !env.success, "the budget ends the episode");
}

#[test]
fn golden_transcripts() {
    let mut env = Qa::exact_match();
    let (t, _, _) = expert_run(&mut env, 0, 0);
    assert_eq!(t, GOLDEN_0);
}

/// Task 0, seed 0: a bridge question whose first fact the preview hides.
const GOLDEN_0: [&str; 10] = [
    "You can search a local encyclopedia with search[entity], look up a keyword on the open page with lookup[keyword], and answer with finish[answer].",
    "Your task is to: answer the question. Question: On which river lies the town where Lita Vindordon was born?",
    "search[Lita Vindordon]",
    "Lita Vindordon is an engineer. As an engineer, Lita Vindordon worked for many years in Kaostrek.",
    "lookup[born]",
    "(Result 1 / 1) Lita Vindordon was born in Kaveldon in 1851.",
    "search[Kaveldon]",
    "Kaveldon is a town in Vinmirka. Kaveldon lies on the Garlo river.",
    "finish[Garlo]",
    "Your answer is correct.",
];
