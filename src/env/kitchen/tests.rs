//! The kitchen's acceptance: the expert solves seeded tasks and replans after detours, a random
//! policy rarely does, episodes are deterministic, rewards are TWOSOME's, golden transcripts.

use super::*;
use crate::env::testing::{expert_play, random_play};
use crate::synth::SplitMix;

/// The expert plays task `id` from `(id, seed)` in a fresh kitchen.
fn expert_run(id: u64, seed: u64) -> (Vec<String>, f32, bool) {
    expert_play(&mut Kitchen::new(), id, seed)
}

#[test]
fn expert_solves_1000_seeded_tasks() {
    let mut solved = 0;
    for id in 0..1000u64 {
        let (t, ret, success) = expert_run(id, id % 7);
        solved += usize::from(success);
        let steps = (t.len() - 2) / 2;
        let mut env = Kitchen::new();
        env.reset(id, id % 7);
        let n = env.needs().len();
        assert!(steps <= 5 * n + 2 + 4, "task {id}: {steps} steps for {n} ingredients");
        // Two sub-tasks per ingredient, the delivery, and the step penalty: nothing else.
        let want = 2.0 * SUBTASK_REWARD * n as f32 + DELIVERY_REWARD + STEP_REWARD * steps as f32;
        assert!((ret - want).abs() < 1e-4, "task {id}: return {ret}, expected {want}");
    }
    assert!(solved >= 990, "expert solved {solved}/1000");
}

#[test]
fn random_policy_solves_few() {
    let check =
        |acts: &[String]| assert!((2..=10).contains(&acts.len()), "{} admissible actions: {acts:?}", acts.len());
    let (solved, _) = random_play(&mut Kitchen::new(), 500, 1, check);
    println!("random: solved {solved}/500 in {DEFAULT_MAX_STEPS} steps");
    assert!(solved < 75, "random policy solved {solved}/500");
}

#[test]
fn episodes_are_deterministic() {
    for id in 0..50u64 {
        assert_eq!(expert_run(id, 3).0, expert_run(id, 3).0);
    }
    // The seed changes the start (crate order, what is on the board or in hand), not the task.
    let differs = (0..20u64).filter(|&id| expert_run(id, 0).0 != expert_run(id, 1).0).count();
    assert!(differs > 10, "{differs} of 20");
    assert!((0..20u64).all(|id| expert_run(id, 0).0[1] == expert_run(id, 1).0[1]));
    let tasks: std::collections::BTreeSet<String> = (0..40u64).map(|id| expert_run(id, 0).0[1].clone()).collect();
    assert_eq!(tasks.len(), RECIPES.len(), "every recipe among 40 task ids");
}

#[test]
fn invalid_actions_change_nothing_but_the_clock() {
    let mut env = Kitchen::new();
    env.reset(4, 0);
    let before = (env.admissible_actions(), env.describe());
    for bad in ["chop the table", "take a banana", "deliver the plate", "", "put the tomato on the plate"] {
        if before.0.iter().any(|a| a == bad) {
            continue;
        }
        let s = env.step(bad);
        assert_eq!(s.observation, NOTHING);
        assert_eq!(s.reward, STEP_REWARD);
        assert_eq!((env.admissible_actions(), env.describe()), before);
    }
    // The budget ends the episode, unsuccessfully.
    let mut steps = 5;
    while !env.step("dance").done {
        steps += 1;
    }
    assert_eq!(steps + 1, DEFAULT_MAX_STEPS);
    assert!(env.admissible_actions().is_empty() && env.expert_action().is_none());
}

#[test]
fn subtasks_pay_once_and_a_wrong_delivery_costs() {
    let mut env = Kitchen::new();
    let id = (0..).find(|&id| {
        env.reset(id, 0);
        env.recipe == 0 && env.board.is_none() && env.held.is_none()
    });
    env.reset(id.unwrap(), 0);
    let r = |env: &mut Kitchen, a: &str| env.step(a).reward - STEP_REWARD;
    assert_eq!(r(&mut env, "take a tomato"), 0.0);
    assert_eq!(r(&mut env, "put the tomato on the cutting board"), 0.0);
    assert_eq!(r(&mut env, "chop the tomato"), SUBTASK_REWARD);
    assert_eq!(r(&mut env, "take the chopped tomato from the cutting board"), 0.0);
    assert_eq!(r(&mut env, "put the chopped tomato on the plate"), SUBTASK_REWARD);
    assert_eq!(r(&mut env, "take a tomato"), 0.0);
    assert_eq!(r(&mut env, "put the tomato on the cutting board"), 0.0);
    assert_eq!(r(&mut env, "chop the tomato"), 0.0, "chopping the same ingredient again pays nothing");
    assert_eq!(r(&mut env, "take the chopped tomato from the cutting board"), 0.0);
    assert_eq!(r(&mut env, "put the chopped tomato on the plate"), 0.0, "two tomatoes: no reward");
    assert_eq!(r(&mut env, "pick up the plate"), 0.0);
    let s = env.step("deliver the plate");
    assert_eq!((s.reward - STEP_REWARD, s.done), (WRONG_DELIVERY_REWARD, false), "{}", s.observation);
    assert!(env.plate.is_empty() && env.held.is_none());
    // The expert finishes from here; the plating reward is not paid twice.
    let mut ret = 0.0;
    while let Some(a) = env.expert_action() {
        ret += env.step(&a).reward - STEP_REWARD;
    }
    assert_eq!(ret, DELIVERY_REWARD);
    assert!(env.success);
}

#[test]
fn expert_replans_after_random_detours() {
    let mut rng = SplitMix::new(11);
    for id in 0..300u64 {
        let mut env = Kitchen::new();
        env.reset(id, 2);
        for _ in 0..rng.range(1, 12) {
            let acts = env.admissible_actions();
            if acts.is_empty() {
                break;
            }
            env.step(&acts[rng.range(0, acts.len() - 1)]);
        }
        if env.done {
            continue;
        }
        let left = env.max_steps - env.steps;
        let mut used = 0;
        while let Some(a) = env.expert_action() {
            used += 1;
            if env.step(&a).done {
                break;
            }
        }
        assert!(env.success || used >= left, "task {id}: the expert failed with {left} steps left");
        assert!(used <= 5 * env.needs().len() + 8, "task {id}: {used} steps");
    }
}

#[test]
fn golden_transcripts() {
    let (t, _, _) = expert_run(0, 0);
    assert_eq!(t[..6], GOLDEN_0);
    let (t, _, _) = expert_run(31, 1);
    assert_eq!(t[..8], GOLDEN_31);
}

/// Task 0, seed 0: the room, the task, and the expert's first two steps (action, observation).
const GOLDEN_0: [&str; 6] = [
    "You are in a kitchen. There are crates of lettuces, peppers and tomatoes, a cutting board, a plate on the counter, a bin and a serving window. You hold nothing. The cutting board is empty. The plate has nothing.",
    "Your task is to: make a lettuce salad (chopped lettuce on a plate) and deliver it.",
    "take a lettuce",
    "You take a lettuce from its crate. You hold a lettuce. The cutting board is empty. The plate has nothing.",
    "put the lettuce on the cutting board",
    "You put the lettuce on the cutting board. You hold nothing. The cutting board holds a lettuce. The plate has nothing.",
];
/// Task 31, seed 1: a pepper in hand and a carrot on the board at the start; the expert clears them.
const GOLDEN_31: [&str; 8] = [
    "You are in a kitchen. There are crates of carrots, peppers, lettuces and onions, a cutting board, a plate on the counter, a bin and a serving window. You hold a pepper. The cutting board holds a carrot. The plate has nothing.",
    "Your task is to: make an onion-carrot-pepper salad (chopped onion, chopped carrot and chopped pepper on a plate) and deliver it.",
    "throw away the pepper",
    "You throw the pepper into the bin. You hold nothing. The cutting board holds a carrot. The plate has nothing.",
    "chop the carrot",
    "You chop the carrot on the cutting board. You hold nothing. The cutting board holds a chopped carrot. The plate has nothing.",
    "take the chopped carrot from the cutting board",
    "You take the chopped carrot from the cutting board. You hold a chopped carrot. The cutting board is empty. The plate has nothing.",
];
