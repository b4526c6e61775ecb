//! Real environments from PyPI over the JSON-lines protocol (bridges/PROTOCOL.md): TextWorldExpress
//! and ScienceWorld experts reach their full scores through the bridge, a bridge killed mid-episode
//! fails only that episode, and a model's rollouts through a bridge are stored token-exactly, with
//! a broken environment's episode marked and the rest of the batch played.
//!
//! Needs the cache venv with `requirements-envs.txt` (TRAJFLOW_PYTHON, set by `make test`);
//! without it each test says SKIPPED on stderr and passes.
#![cfg(feature = "torch")]

use trajflow::env::{by_name, Env};

fn have_python() -> bool {
    let set = std::env::var("TRAJFLOW_PYTHON").is_ok();
    if !set {
        eprintln!("SKIPPED: TRAJFLOW_PYTHON is not set (run through `make test`)");
    }
    set
}

/// What an expert episode gave: its rewards, its success, and how many of its actions were not
/// in the admissible list of their state.
struct Played {
    rewards: Vec<f32>,
    success: bool,
    inadmissible: usize,
}

/// The expert plays task `task` from the start; checks on the way that the environment accepts
/// every expert action.
fn expert_play(env: &mut dyn Env, task: u64) -> Played {
    env.reset(task, 0);
    let mut p = Played { rewards: Vec::new(), success: false, inadmissible: 0 };
    for _ in 0..env.max_steps() {
        let Some(action) = env.expert_action() else { break };
        p.inadmissible += usize::from(!env.admissible_actions().contains(&action));
        let step = env.step(&action);
        assert!(!step.observation.contains("No known action"), "{}: '{action}': {}", env.name(), step.observation);
        p.rewards.push(step.reward);
        if step.done {
            p.success = step.success;
            break;
        }
    }
    assert!(env.failure().is_none(), "{:?}", env.failure());
    p
}

#[test]
fn textworld_express_experts_score_fully_on_100_tasks() {
    if !have_python() {
        return;
    }
    let mut env = by_name("twx").unwrap();
    let (mut steps, mut inadmissible) = (0, 0);
    // Tasks 0..100 cycle through the eight games, in each split their ids fall in.
    for task in 0..100 {
        let p = expert_play(env.as_mut(), task);
        let score: f32 = p.rewards.iter().sum();
        assert!(p.success && (score - 1.0).abs() < 1e-5, "twx task {task}: success {}, score {score}", p.success);
        steps += p.rewards.len();
        inadmissible += p.inadmissible;
    }
    assert!(steps > 1000, "{steps} expert steps");
    // The gold paths hold a few redundant actions (opening what is open) that the game accepts but
    // does not list as valid.
    eprintln!("twx: {inadmissible} of {steps} expert actions were not in the admissible list");
    assert!(inadmissible * 50 < steps, "{inadmissible} of {steps} expert actions inadmissible");
    // Same task id, same episode; another id, another one.
    let a = env.reset(9, 0);
    let b = env.reset(9, 0);
    let c = env.reset(17, 0);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn scienceworld_experts_score_100_on_20_episodes() {
    if !have_python() {
        return;
    }
    // Tasks whose gold paths are short (5 to 11 steps), so that 20 episodes take about a minute.
    for (name, tasks) in [
        ("find-animal", 0..4),
        ("find-non-living-thing", 0..4),
        ("lifespan-longest-lived", 0..4),
        ("power-component", 0..4),
        ("find-plant", 0..4),
    ] {
        let mut env = by_name(&format!("scienceworld:{name}")).unwrap();
        for task in tasks {
            let p = expert_play(env.as_mut(), task);
            let score: f32 = p.rewards.iter().sum();
            assert!(
                p.success && (score - 1.0).abs() < 1e-4,
                "{name} task {task}: success {}, score {score}",
                p.success
            );
        }
    }
}

#[test]
fn a_bridge_killed_mid_episode_fails_that_episode_and_restarts() {
    if !have_python() {
        return;
    }
    let mut env = trajflow::env::bridge::Bridge::by_name("twx:coin").unwrap();
    env.reset(3, 0);
    let first = env.expert_action().unwrap();
    assert!(!env.step(&first).done);
    let pid = env.pid().unwrap();
    std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    let step = env.step(&env.expert_action().unwrap_or_default());
    assert!(step.done && !step.success);
    let error = env.failure().expect("the episode failed");
    assert!(error.contains("twx") && error.contains("signal: 9"), "{error}");
    let p = expert_play(&mut env, 3);
    assert!(
        p.success && (p.rewards.iter().sum::<f32>() - 1.0).abs() < 1e-5,
        "the same task, replayed by a new process"
    );
    assert_ne!(env.pid(), Some(pid));
}

/// SmolLM2's tokenizer and a random small decoder (None, reported as skipped, when the tokenizer
/// is not cached).
fn random_small() -> Option<(trajflow::model::tokenizer::Tok, trajflow::model::llama::Decoder)> {
    let tok = match trajflow::model::load_tokenizer("smollm2-135m") {
        Ok(t) => t,
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            return None;
        }
    };
    tch::manual_seed(4);
    let cfg = trajflow::model::config::DecoderConfig::small(49152);
    Some((tok, trajflow::model::llama::Decoder::new(cfg, tch::Device::Cpu)))
}

fn config(env: &str, tasks: Vec<u64>) -> trajflow::rollout::RolloutConfig {
    let sampling =
        trajflow::model::generate::Sampling { temperature: 1.0, max_new_tokens: 24, seed: 9, ..Default::default() };
    let cfg = trajflow::rollout::RolloutConfig::new(env, tasks, 2, sampling, 3, "random-small");
    trajflow::rollout::RolloutConfig { admissible: true, ..cfg }
}

/// A model plays TextWorldExpress through the bridge: each action is one the game listed as
/// admissible, and the stored action tokens decode to exactly the actions the game received.
#[test]
fn a_model_plays_textworld_express_through_the_bridge() {
    if !have_python() {
        return;
    }
    let Some((tok, model)) = random_small() else { return };
    let played = trajflow::rollout::played(&model, &tok, &config("twx:coin", vec![0, 1])).unwrap();
    assert_eq!(played.len(), 4);
    for (row, messages) in &played {
        assert!(row.env_error.is_none(), "{:?}", row.env_error);
        assert_eq!(row.env.as_deref(), Some("twx:coin"));
        let actions: Vec<&str> =
            messages.iter().filter(|m| m.role == "assistant").map(|m| m.content.as_str()).collect();
        assert!(!actions.is_empty());
        // The action segments, turn by turn, decode to the actions (plus the end-of-turn token).
        for (turn, action) in actions.iter().enumerate() {
            let ids: Vec<i64> = (0..row.tokens.len())
                .filter(|&j| row.segments[j] == 1 && row.turns[j] == turn as i32)
                .map(|j| row.tokens[j] as i64)
                .collect();
            let text = tok.decode(&ids).unwrap();
            assert_eq!(text.trim_end_matches(tok.eos_token.as_str()), *action);
        }
        // Every observation after an action is the game's answer, not "No known action".
        assert!(messages.iter().skip(1).filter(|m| m.role == "user").all(|m| !m.content.contains("No known action")));
    }
}

/// A bridge that crashes in one task's episodes fails those episodes only: they are marked with
/// the error (and the process's stderr), the other task's episodes play on with the restarted
/// processes.
#[test]
fn a_crashing_bridge_fails_only_its_episodes_in_a_batch() {
    if !have_python() {
        return;
    }
    let Some((tok, model)) = random_small() else { return };
    let python = std::env::var("TRAJFLOW_PYTHON").unwrap();
    let env = format!("bridge:{python} {}/tests/fixtures/counter_bridge.py", env!("CARGO_MANIFEST_DIR"));
    let rows = trajflow::rollout::rollout(&model, &tok, &config(&env, vec![12, 13, 14])).unwrap();
    assert_eq!(rows.len(), 6);
    for row in &rows {
        let task: u64 = row.task_id.rsplit('-').next().unwrap().parse().unwrap();
        if task == 13 {
            let error = row.env_error.as_deref().expect("task 13 crashes at its second step");
            assert!(error.contains("crashing on purpose") && error.contains("exit status: 7"), "{error}");
            assert_eq!(row.turn_rewards.len(), 2, "the episode ends at the step that crashed");
            assert_eq!(row.success, Some(false));
        } else {
            assert!(row.env_error.is_none(), "task {task}: {:?}", row.env_error);
            let played_out = row.turn_rewards.len() == 3 || row.success == Some(true);
            assert!(played_out, "task {task}: played until success or max_turns");
        }
    }
}
