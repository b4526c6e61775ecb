//! Real environments from PyPI over the JSON-lines protocol (bridges/PROTOCOL.md): TextWorldExpress
//! and ScienceWorld experts reach their full scores through the bridge, a bridge killed mid-episode
//! fails only that episode, and a model's rollouts through a bridge are stored token-exactly, with
//! a broken environment's episode marked and the rest of the batch played. The protocol as a
//! contract: the bridge's step budget and stable identity in rollouts, its step rewards in demos,
//! a bridge that cannot start stops `demos`, a model that cannot write an environment's actions
//! stops a rollout before its first step, and `env-check` passes on the bundled bridges.
//!
//! Needs the cache venv with `requirements-envs.txt` (TRAJFLOW_PYTHON, set by `make test`);
//! without it each test says SKIPPED on stderr and passes.
#![cfg(feature = "torch")]

mod common;

use trajflow::env::{by_name, Env};

/// The counter fixture (tests/fixtures/counter_bridge.py) with `options`, as a `bridge:` name.
fn counter(options: &str) -> String {
    let python = std::env::var("TRAJFLOW_PYTHON").unwrap();
    format!("bridge:{python} {}/tests/fixtures/counter_bridge.py {options}", env!("CARGO_MANIFEST_DIR"))
}

/// The target of counter task `task` (its expert needs that many steps).
fn target(task: u64) -> usize {
    (task % 4 + 2) as usize
}

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

/// Rollouts end at the bridge's own step budget (3) even when the run allows more turns (6), and
/// rows carry the bridge's identity (hello name and own arguments), not the interpreter's path.
#[test]
fn rollouts_keep_the_bridges_step_budget_and_identity() {
    if !have_python() {
        return;
    }
    let Some((tok, model)) = random_small() else { return };
    let mut cfg = config(&counter("--max-steps 3"), vec![1, 2, 3]);
    cfg.max_turns = 6;
    let rows = trajflow::rollout::rollout(&model, &tok, &cfg).unwrap();
    for row in &rows {
        assert!(row.turn_rewards.len() <= 3, "{}: {} turns", row.episode_id, row.turn_rewards.len());
        assert!(row.task_id.starts_with("counter:--max-steps:3-"), "{}", row.task_id);
        assert_eq!(row.env.as_deref(), Some("counter:--max-steps:3"));
        assert!(!row.episode_id.contains('/') && !row.group_id.contains('/'));
    }
    assert!(rows.iter().any(|r| r.turn_rewards.len() == 3), "task 3 needs 5 steps: its episodes use the whole budget");
}

/// `demos` rows keep the environment's shaped step rewards and their sum, as rollouts do.
#[test]
fn demos_keep_the_environments_step_rewards() {
    if !have_python() {
        return;
    }
    let Some((tok, _)) = random_small() else { return };
    let rows = trajflow::env::demos::expert_rows_of(&counter("--shaped"), &[1, 2], 0, &tok, "smollm2-135m").unwrap();
    for (row, task) in rows.iter().zip([1, 2]) {
        let mut want = vec![0.1f32; target(task) - 1];
        want.push(1.1);
        assert_eq!(row.turn_rewards.len(), want.len());
        assert!(row.turn_rewards.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6), "{:?}", row.turn_rewards);
        assert!((row.reward - want.iter().sum::<f32>()).abs() < 1e-5 && row.success == Some(true));
    }
}

/// A bridge that cannot start stops `demos` with its own exit status and stderr, writing nothing.
#[test]
fn demos_stop_when_the_bridge_cannot_start() {
    if !have_python() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let python = std::env::var("TRAJFLOW_PYTHON").unwrap();
    let env = format!("bridge:{python} -c 'import sys; print(\"no such game\", file=sys.stderr); sys.exit(1)'");
    let out = dir.path().join("demos");
    let err = common::fails(&["demos", "--env", &env, "--tasks", "3", "--output", common::s(&out)]);
    assert!(err.contains("failed on its first demonstration") && err.contains("exit status: 1"), "{err}");
    assert!(err.contains("no such game") && !err.contains("SIGKILL"), "{err}");
    assert!(!out.exists());
}

/// A small model of the household cannot write the counter's actions: the rollout stops before its
/// first step, naming the model, the environment and an action. The counter's own small model
/// can, and every action the bridge receives is one of its admissible actions.
#[test]
fn a_model_that_cannot_write_the_actions_stops_before_the_first_step() {
    if !have_python() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sampling =
        trajflow::model::generate::Sampling { temperature: 1.0, max_new_tokens: 8, seed: 3, ..Default::default() };
    for (spec, log) in [("small:household", "foreign"), ("", "own")] {
        let log = dir.path().join(log);
        let env = counter(&format!("--log {}", log.display()));
        // The compatible model walks a counter without the log, so the log holds the rollout alone.
        let spec = if spec.is_empty() { format!("small:{}", counter("")) } else { spec.to_string() };
        let (model, tok) = trajflow::model::load(&spec, tch::Device::Cpu).unwrap();
        let mut cfg = trajflow::rollout::RolloutConfig::new(&env, vec![1, 2], 2, sampling.clone(), 4, &spec);
        cfg.admissible = true;
        let result = trajflow::rollout::rollout(&model, &tok, &cfg);
        let requests = std::fs::read_to_string(&log).unwrap();
        let steps: Vec<&str> = requests.lines().filter(|l| l.contains("\"step\"")).collect();
        if spec == "small:household" {
            let err = result.expect_err("the household's words cannot write 'inc'").to_string();
            assert!(
                err.contains("model 'small:household' cannot write the actions of environment 'counter:--log:"),
                "{err}"
            );
            assert!(err.contains("'dec'") || err.contains("'inc'"), "{err}");
            assert!(steps.is_empty(), "no step was sent: {steps:?}");
        } else {
            assert_eq!(result.unwrap().len(), 4);
            assert!(!steps.is_empty());
            for step in steps {
                let action: serde_json::Value = serde_json::from_str(step).unwrap();
                assert!(["inc", "dec"].contains(&action["action"].as_str().unwrap()), "{step}");
            }
        }
    }
}

/// `trajflow env-check` passes on both bundled bridges, and names a seeded violation.
#[test]
fn env_check_passes_on_the_bundled_bridges() {
    if !have_python() {
        return;
    }
    for env in ["twx", "scienceworld:find-animal"] {
        let out = common::ok(&["env-check", env, "--tasks", "2"]);
        assert!(out.contains("every check holds"), "{out}");
        assert!(!out.contains("VIOLATED") && !out.contains("skipped"), "{out}");
    }
    let out = common::trajflow(&["env-check", &counter("--violate expert-not-admissible"), "--tasks", "1"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success());
    assert!(stdout.contains("expert_admissible  VIOLATED"), "{stdout}");
    assert!(stderr.contains("violates the protocol: expert_admissible"), "{stderr}");
}
