//! Environment and rollout throughput, trajflow's side of `benches/envs.py`:
//!
//!     cargo bench --bench envs -- --mode steps --env NAME [--episodes 200]
//!     cargo bench --bench envs -- --mode rollout --env NAME --model SPEC [--tasks 8] [--k 4]
//!                                 [--max-turns 10] [--max-new-tokens 16] [--prefix-cache]
//!
//! steps: the expert plays `episodes` tasks; every step is an expert query and a step (two round
//! trips for a bridge), steps/s = steps / wall time, resets included. The first episode (a bridge's
//! process start) is not timed.
//! rollout: the model plays tasks × k episodes in admissible-action mode (sampled, temperature 1);
//! episodes/s and generated tokens/s of the whole rollout, env time included; `--prefix-cache`
//! keeps each episode's keys and values between turns.
//! Prints one JSON line.

use std::time::Instant;

use trajflow::env::by_name;
use trajflow::model::generate::Sampling;
use trajflow::rollout::{rollout, RolloutConfig};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(default)
}

/// Plays task `task` with the expert; returns (steps, success).
fn expert_episode(env: &mut dyn trajflow::env::Env, task: u64) -> (usize, bool) {
    env.reset(task, 0);
    let mut steps = 0;
    while let Some(action) = env.expert_action() {
        steps += 1;
        let step = env.step(&action);
        if step.done || steps == env.max_steps() {
            return (steps, step.success);
        }
    }
    (steps, false)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode: String = arg(&args, "--mode", "steps".to_string());
    let name: String = arg(&args, "--env", "household".to_string());
    if mode == "steps" {
        let episodes: u64 = arg(&args, "--episodes", 200);
        let mut env = by_name(&name).expect("a known environment");
        expert_episode(env.as_mut(), episodes);
        let start = Instant::now();
        let (mut steps, mut solved) = (0, 0);
        for task in 0..episodes {
            let (n, ok) = expert_episode(env.as_mut(), task);
            steps += n;
            solved += usize::from(ok);
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{{\"mode\": \"steps\", \"env\": \"{name}\", \"episodes\": {episodes}, \"steps\": {steps}, \"solved\": {solved}, \
             \"seconds\": {secs:.4}, \"steps_per_s\": {:.1}}}",
            steps as f64 / secs
        );
    } else {
        let spec: String = arg(&args, "--model", "small:household-pick".to_string());
        let tasks: u64 = arg(&args, "--tasks", 8);
        let k: usize = arg(&args, "--k", 4);
        let (model, tok) = trajflow::model::load(&spec, tch::Device::Cpu).expect("a loadable model");
        let sampling = Sampling {
            temperature: 1.0,
            max_new_tokens: arg(&args, "--max-new-tokens", 16),
            seed: 1,
            ..Default::default()
        };
        let max_turns = arg(&args, "--max-turns", 10);
        let prefix_cache = args.iter().any(|a| a == "--prefix-cache");
        let cfg = RolloutConfig {
            admissible: true,
            prefix_cache,
            ..RolloutConfig::new(&name, (0..tasks).collect(), k, sampling, max_turns, &spec)
        };
        let start = Instant::now();
        let rows = rollout(&model, &tok, &cfg).expect("the rollout runs");
        let secs = start.elapsed().as_secs_f64();
        let generated: usize = rows
            .iter()
            .map(|r| r.logp_behavior.as_ref().map_or(0, |lp| lp.iter().filter(|x| x.is_finite()).count()))
            .sum();
        let turns: usize = rows.iter().map(|r| r.turn_rewards.len()).sum();
        println!(
            "{{\"mode\": \"rollout\", \"env\": \"{name}\", \"model\": \"{spec}\", \"prefix_cache\": {prefix_cache}, \"episodes\": {}, \"turns\": {turns}, \
             \"generated_tokens\": {generated}, \"seconds\": {secs:.3}, \"episodes_per_s\": {:.3}, \"tokens_per_s\": {:.1}}}",
            rows.len(),
            rows.len() as f64 / secs,
            generated as f64 / secs
        );
    }
}
