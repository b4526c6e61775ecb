//! Learning sanity tests: every shipped RL algorithm, from a freshly initialised small policy
//! (near-uniform over the four buttons of the one-step `bandit` environment), reaches ≥ 95 %
//! greedy success on 200 dev tasks within a few iterations. A learner that trains another
//! distribution than the sampler's, leaks or drops gradients, or flips an advantage's sign fails
//! here in seconds. Nothing is timed.

mod common;

use std::path::Path;

use common::{ok, pipeline, s};

/// The bandit, no warm start, constrained decoding among the buttons at temperature 1 without
/// truncation, 16 tasks × K = 4 per iteration, evaluation on 200 dev tasks.
const BANDIT: &[&str] = &[
    "env=bandit",
    "warm_start.demos=0",
    "rollout.tasks=16",
    "rollout.k=4",
    "rollout.temperature=1.0",
    "rollout.top_k=0",
    "rollout.admissible=true",
    "rollout.max_turns=1",
    "rollout.max_action_tokens=4",
    "run.eval_tasks=200",
    "run.iterations=10",
    "learner.lr=3e-3",
];

/// The metrics lines of a run.
fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn train(pipeline_file: &str, out: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let p = pipeline(pipeline_file);
    let mut args: Vec<&str> = vec!["run", &p, "--out", s(out), "--quiet"];
    for set in BANDIT.iter().chain(extra) {
        args.extend(["--set", set]);
    }
    ok(&args);
    metrics(out)
}

#[test]
fn every_rl_algorithm_learns_the_bandit() {
    let tmp = tempfile::tempdir().unwrap();
    let mut report = Vec::new();
    for (file, extra) in [
        ("loop.toml", &[][..]),
        ("grpo.toml", &[][..]),
        ("rloo.toml", &[][..]),
        ("reinforce_pp.toml", &[][..]),
        ("ppo.toml", &[][..]),
        ("poad.toml", &[][..]),
    ] {
        let m = train(file, &tmp.path().join(file), extra);
        let eval: Vec<f64> = m.iter().map(|l| l["eval_success_rate"].as_f64().unwrap()).collect();
        // The learner trains the sampler's distribution: ratios are 1 before every update.
        for l in &m[1..] {
            let max = l["logp_mismatch_max"].as_f64().unwrap();
            assert!(max <= 1e-4, "{file}: iteration {}: mismatch {max}", l["iteration"]);
        }
        report.push(format!("{file}: {eval:?}"));
        assert!(eval[0] < 0.5, "{file}: the fresh policy already solves the bandit: {eval:?}");
        assert!(*eval.last().unwrap() >= 0.95, "{file}: greedy success {eval:?}");
    }
    eprintln!("{}", report.join("\n"));
}
