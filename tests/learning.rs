//! Learning sanity tests: every shipped RL algorithm, from a freshly initialised small policy
//! (near-uniform over the four buttons of the one-step `bandit` environment), reaches ≥ 95 %
//! greedy success on 200 dev tasks within a few iterations. A learner that trains another
//! distribution than the sampler's, leaks or drops gradients, or flips an advantage's sign fails
//! here in seconds. Nothing is timed.

mod common;

use std::path::Path;

use common::{metrics, ok, pipeline, s};

/// The bandit, no warm start, constrained decoding among the buttons at temperature 1 without
/// truncation, 16 tasks × K = 4 per iteration, 10 iterations at the learning rate most of the
/// shipped RL pipelines use, evaluation on 200 dev tasks.
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
    "run.eval_every=1",
    "run.iterations=10",
    "learner.lr=3e-4",
];

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
        ("twosome.toml", &[][..]),
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

/// Per episode: Σ over its action tokens of the log-prob column `column` of a scored dataset.
fn action_logp(dataset: &Path, column: &str) -> std::collections::BTreeMap<String, f64> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float32Type, UInt8Type};
    let rows = common::read_sorted(dataset);
    let ids = rows.column_by_name("episode_id").unwrap().as_string::<i32>();
    let segs = rows.column_by_name("segments").unwrap().as_list::<i32>();
    let lp = rows.column_by_name(column).unwrap().as_list::<i32>();
    (0..rows.num_rows())
        .map(|i| {
            let s = segs.value(i);
            let l = lp.value(i);
            let (s, l) = (s.as_primitive::<UInt8Type>().values(), l.as_primitive::<Float32Type>().values());
            let sum = (0..s.len()).filter(|&j| s[j] == 1).map(|j| f64::from(l[j])).sum();
            (ids.value(i).to_string(), sum)
        })
        .collect()
}

/// Greedy successes of `model` on the first `tasks` train tasks at environment seed 1 (the
/// (task, seed) pairs of iteration 1 of a seed-0 run).
fn greedy_successes(model: &Path, tasks: usize, out: &Path) -> usize {
    let n = tasks.to_string();
    ok(&[
        "rollout",
        "--env",
        "bandit",
        "--model",
        s(model),
        "--tasks",
        &n,
        "--k",
        "1",
        "--max-turns",
        "1",
        "--max-action-tokens",
        "4",
        "--temperature",
        "0",
        "--seed",
        "1",
        "--admissible",
        "--output",
        s(out),
    ]);
    let rows = common::read_sorted(out);
    use arrow::array::AsArray;
    rows.column_by_name("success").unwrap().as_boolean().true_count()
}

/// A large update (learning rate 3e-3, 8 epochs, clip opened to 3, no KL-stop) on one batch of
/// LOOP rollouts: the action log-prob of ≥ 95 % of the trained episodes moves in the direction of
/// its advantage (scored with `trajflow score` before and after), and greedy success on those same
/// (task, seed) pairs rises.
#[test]
fn a_large_update_moves_every_action_the_way_of_its_advantage() {
    use arrow::array::AsArray;
    use arrow::datatypes::Float32Type;
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let big = ["run.iterations=1", "learner.lr=3e-3", "learner.epochs=8", "learner.clip=3", "learner.kl_stop=0"];
    train("loop.toml", &run, &big);
    let ckpt = |i: u64| run.join(format!("checkpoints/iter-{i:04}"));
    let (before, after) = (tmp.path().join("before"), tmp.path().join("after"));
    let trajectories = run.join("trajectories");
    ok(&["score", "--model", s(&ckpt(0)), "--input", s(&trajectories), "--output", s(&before), "--column", "lp"]);
    ok(&["score", "--model", s(&ckpt(1)), "--input", s(&trajectories), "--output", s(&after), "--column", "lp"]);
    let (lp0, lp1) = (action_logp(&before, "lp"), action_logp(&after, "lp"));
    let rows = common::read_sorted(&trajectories);
    let ids = rows.column_by_name("episode_id").unwrap().as_string::<i32>();
    let keep = rows.column_by_name("keep").unwrap().as_boolean();
    let adv = rows.column_by_name("advantages").unwrap().as_list::<i32>();
    let (mut agree, mut trained) = (0, 0);
    for i in 0..rows.num_rows() {
        let a = adv.value(i);
        let a =
            a.as_primitive::<Float32Type>()
                .values()
                .iter()
                .copied()
                .fold(0f32, |m, x| if x.abs() > m.abs() { x } else { m });
        if !keep.value(i) || a == 0.0 {
            continue;
        }
        let id = ids.value(i);
        trained += 1;
        if (lp1[id] - lp0[id]) * f64::from(a) > 0.0 {
            agree += 1;
        }
    }
    assert!(trained >= 20, "only {trained} trained episodes");
    let agreement = agree as f64 / trained as f64;
    assert!(agreement >= 0.95, "{agree} of {trained} episodes moved the way of their advantage");
    let solved_before = greedy_successes(&ckpt(0), 16, &tmp.path().join("greedy0"));
    let solved_after = greedy_successes(&ckpt(1), 16, &tmp.path().join("greedy1"));
    assert!(solved_after > solved_before, "greedy successes on the trained pairs {solved_before} -> {solved_after}");
    eprintln!("agreement {agreement:.3} over {trained} episodes; greedy {solved_before} -> {solved_after} of 16");
}
