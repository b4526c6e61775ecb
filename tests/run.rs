//! `trajflow run` end to end through the real binary: every training pipeline runs 2 iterations
//! on a built-in environment with the small model and writes a well-formed run directory; a run
//! resumed after iteration 1 equals the uninterrupted run bit for bit (CPU; LOOP, PPO with its
//! critic, StepAgent-IRL with its discriminator, RetroAct with its imitation draws, GRPO with a KL
//! penalty to the warm start); `-w 1` and `-w 2` give identical trajectories and weights; a
//! warm-start-only run forks into variants.
#![cfg(feature = "torch")]

mod common;
use common::*;

use std::path::{Path, PathBuf};

/// Overrides that make any shipped training pipeline a seconds-long smoke run.
const TINY: &[&str] = &[
    "warm_start.demos=6",
    "warm_start.epochs=1",
    "rollout.tasks=2",
    "rollout.k=2",
    "rollout.max_turns=3",
    "rollout.max_action_tokens=6",
    "run.eval_tasks=2",
    "run.eval_every=1", // loop.toml evaluates only at its start and end; these tests compare every iteration
    "run.iterations=2",
];

fn training_pipelines() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .filter(|p| std::fs::read_to_string(p).unwrap().contains("\n[models."))
        .collect();
    out.sort();
    out
}

/// Per-pipeline additions to [`TINY`]: RetroAct's reflector warm start and trials.
fn tiny_extra(pipeline: &Path) -> &'static [&'static str] {
    match pipeline.file_stem().and_then(|s| s.to_str()) {
        Some("retroact") => {
            &["warm_start.reflection_tasks=4", "warm_start.reflection_epochs=1", "rollout.trials=2", "rollout.k=1"]
        }
        _ => &[],
    }
}

fn run(pipeline: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args: Vec<String> = vec!["run".into(), s(pipeline).into(), "--out".into(), s(out).into(), "--quiet".into()];
    // A key of a step the pipeline does not have is an error (sft.toml has no warm start).
    let warm = std::fs::read_to_string(pipeline).unwrap().contains("op = \"warm_start\"");
    let tiny = TINY.iter().filter(|set| warm || !set.starts_with("warm_start."));
    for set in tiny.chain(tiny_extra(pipeline)).chain(extra) {
        args.push("--set".into());
        args.push(set.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&args)
}

fn weights(run: &Path, iteration: u64) -> Vec<u8> {
    std::fs::read(run.join(format!("checkpoints/iter-{iteration:04}/weights.safetensors"))).unwrap()
}

/// Metrics lines without the wall-clock fields.
fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("time_s");
            o.remove("tokens_per_s");
            v
        })
        .collect()
}

#[test]
fn every_training_pipeline_runs_two_iterations_and_writes_a_run_directory() {
    let pipelines = training_pipelines();
    assert!(pipelines.len() >= 5, "expected the shipped training pipelines, found {pipelines:?}");
    let tmp = tempfile::tempdir().unwrap();
    for p in pipelines {
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        let dir = tmp.path().join(&name);
        let out = run(&p, &dir, &[]);
        assert!(out.contains("curves:"), "{name}: {out}");
        for f in ["config.toml", "metrics.jsonl", "curves.png", "checkpoints/iter-0002/state.json"] {
            assert!(dir.join(f).is_file(), "{name}: no {f}");
        }
        let m = metrics(&dir);
        assert_eq!(m.iter().map(|l| l["iteration"].as_u64().unwrap()).collect::<Vec<_>>(), vec![0, 1, 2], "{name}");
        assert!(m[1]["episodes"].as_u64().unwrap() > 0, "{name}");
        let rows = read_sorted(&dir.join("trajectories"));
        assert_eq!(rows.num_rows() as u64, m[1]["episodes"].as_u64().unwrap() + m[2]["episodes"].as_u64().unwrap());
        // The parts of the phases are recorded, each inside its phase.
        let text = std::fs::read_to_string(&p).unwrap();
        let line = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap().lines().nth(1).unwrap().to_string();
        let line: serde_json::Value = serde_json::from_str(&line).unwrap();
        let t = line["time_s"].as_object().unwrap();
        let mut parts = vec!["rollout/generate", "learn/recompute", "learn/fit", "learn/forward", "learn/backward"];
        if text.contains("op = \"values\"") {
            parts.extend(["stages/values", "learn/critic"]);
        }
        if text.contains("op = \"discriminator_reward\"") || text.contains("op = \"implicit_reward\"") {
            parts.push("stages/rewards");
        }
        for part in parts {
            let (phase, _) = part.split_once('/').unwrap();
            assert!(t[part].as_f64().unwrap() <= t[phase].as_f64().unwrap(), "{name}: {part} in {t:?}");
        }
        if name == "retroact" {
            // Random tiny episodes fail: every task gets its second trial, after a reflection.
            assert!(dir.join("imitation").is_dir(), "retroact: the imitation set was not stored");
            let reflections = rows.column_by_name("prev_trial_reward").unwrap().len()
                - rows.column_by_name("prev_trial_reward").unwrap().null_count();
            assert!(reflections > 0, "retroact: no reflector rows");
            assert!(m[1]["eval_final_success_rate"].is_number(), "retroact: no all-trials evaluation");
            // Per-task outcomes of both evaluations, so the run's gain is paired by task.
            for l in &m {
                let first = l["eval_outcomes"].as_str().expect("retroact: no per-task first-trial outcomes");
                let any = l["eval_final_outcomes"].as_str().expect("retroact: no per-task all-trials outcomes");
                assert_eq!((first.len(), any.len()), (2, 2), "retroact: {l}");
                assert!(first.chars().zip(any.chars()).all(|(f, a)| f == '0' || a == '1'), "retroact: {l}");
                let solved = first.matches('1').count() as f64 / 2.0;
                assert_eq!(l["eval_success_rate"].as_f64(), Some(solved), "retroact: {l}");
            }
            assert!(out.contains("greedy success on 2 dev tasks"), "retroact: no gain verdict in {out}");
        }
        if text.contains("op = \"implicit_reward\"") {
            // The reward model trains on the same pairs, and rewrites every row's reward.
            let pairs: u64 = m[1..].iter().map(|l| l["pairs"].as_u64().unwrap()).sum();
            assert!(pairs > 0 && m[1]["implicit_reward_loss"].is_number(), "{name}: no reward-model training");
        }
        if text.contains("op = \"dpo_update\"") {
            // An untrained policy disagrees with the expert: DPO must find pairs to train on.
            let pairs: u64 = m[1..].iter().map(|l| l["pairs"].as_u64().unwrap()).sum();
            assert!(pairs > 0, "{name}: DPO trained on no pairs");
        }
        // The checkpoint is a model folder: the policy can be loaded by --model.
        let ckpt = dir.join("checkpoints/iter-0002");
        ok(&["generate", "--model", s(&ckpt), "--prompt", "go to", "--max-new-tokens", "3"]);
    }
}

/// LOOP (policy only), PPO (policy + critic with its own optimiser), StepAgent-IRL (with its
/// discriminator), StepAgent's implicit reward into PPO (a reward model rebuilt every iteration,
/// admissible actions at the expert's prefixes), RetroAct (Reflexion trials, imitation rows drawn per iteration) and GRPO with a
/// KL penalty (its reference reloaded from checkpoint 0) resume bit-exactly.
#[test]
fn resumed_run_equals_the_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str]); 6] = [
        ("loop.toml", &[]),
        ("ppo.toml", &[]),
        ("stepagent_irl.toml", &[]),
        ("stepagent_implicit_ppo.toml", &["rollout.admissible=true"]),
        ("retroact.toml", &[]),
        ("grpo.toml", &["learner.kl_coef=0.5"]),
    ];
    for (name, sets) in cases {
        let p = pipeline(name);
        let full = tmp.path().join(format!("{name}-full"));
        run(Path::new(&p), &full, sets);
        let part = tmp.path().join(format!("{name}-part"));
        run(Path::new(&p), &part, &[sets, &["run.iterations=1"]].concat());
        assert!(!part.join("checkpoints/iter-0002").exists());
        ok(&["run", "--resume", s(&part), "--quiet", "--set", "run.iterations=2"]);
        assert_eq!(weights(&full, 2), weights(&part, 2), "{name}: weights after iteration 2 differ");
        let head = |r: &Path, h: &str| std::fs::read(r.join(format!("checkpoints/iter-0002/{h}/weights.safetensors")));
        if name == "ppo.toml" {
            assert_eq!(head(&full, "critic").unwrap(), head(&part, "critic").unwrap(), "critic weights differ");
        }
        if name == "stepagent_irl.toml" {
            let (a, b) = (head(&full, "discriminator").unwrap(), head(&part, "discriminator").unwrap());
            assert_eq!(a, b, "discriminator weights differ");
        }
        assert_eq!(metrics(&full), metrics(&part), "{name}");
        assert_same_dataset(&full.join("trajectories"), &part.join("trajectories"));
        // A finished run cannot be started again over itself.
        let err = fails(&["run", &p, "--out", s(&full)]);
        assert!(err.contains("--resume"), "{err}");
    }
}

#[test]
fn one_and_two_workers_give_identical_trajectories_and_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline("grpo.toml");
    let (one, two) = (tmp.path().join("w1"), tmp.path().join("w2"));
    run(Path::new(&p), &one, &[]);
    let mut args = vec!["run", &p, "--out", s(&two), "--quiet", "-w", "2"];
    for set in TINY {
        args.extend(["--set", set]);
    }
    ok(&args);
    assert_eq!(weights(&one, 2), weights(&two, 2));
    assert_same_dataset(&one.join("trajectories"), &two.join("trajectories"));
}

/// A model step after a data stage (the critic's values of rows that went through
/// `action_boundaries` first): the dataflow gathers the rows on worker 0 for it where the graph
/// puts it. Since the stage before it writes a column nothing after reads, the run equals PPO as
/// shipped bit for bit; on two workers, and on two processes, it equals one.
#[test]
fn a_model_step_after_a_data_stage_runs_where_the_graph_puts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let shipped = pipeline("ppo.toml");
    let text = std::fs::read_to_string(&shipped).unwrap();
    let values = "id = \"values\"\nop = \"values\"\nmodel = \"critic\"\ninputs = [\"rollout\"]";
    assert!(text.contains(values));
    let moved = text.replace(
        values,
        "id = \"ends\"\nop = \"action_boundaries\"\ninputs = [\"rollout\"]\n\n[[stage]]\n\
         id = \"values\"\nop = \"values\"\nmodel = \"critic\"\ninputs = [\"ends\"]",
    );
    let moved_file = tmp.path().join("ppo_moved.toml");
    std::fs::write(&moved_file, moved).unwrap();
    let explained = ok(&["explain", s(&moved_file)]);
    assert!(explained.contains("values = values (model step on critic) <- ends"), "{explained}");
    let (base, one, two) = (tmp.path().join("base"), tmp.path().join("w1"), tmp.path().join("w2"));
    run(Path::new(&shipped), &base, &[]);
    run(&moved_file, &one, &[]);
    let mut args = vec!["run", s(&moved_file), "--out", s(&two), "--quiet", "-w", "2"];
    for set in TINY {
        args.extend(["--set", set]);
    }
    ok(&args);
    let critic = |r: &Path| std::fs::read(r.join("checkpoints/iter-0002/critic/weights.safetensors")).unwrap();
    assert_eq!(weights(&base, 2), weights(&one, 2), "moving the values step changed the policy");
    assert_eq!(critic(&base), critic(&one), "moving the values step changed the critic");
    assert_eq!(weights(&one, 2), weights(&two, 2), "two workers differ from one");
    assert_eq!(critic(&one), critic(&two));
    assert_eq!(metrics(&one), metrics(&two));
    // Two processes on loopback (the rows cross the process boundary to reach the step) == one.
    let procs = tmp.path().join("p2");
    let hosts = loopback_hosts(&tmp.path().join("hosts.txt"), 2);
    let mut args = vec!["run", s(&moved_file), "--out", s(&procs), "--quiet", "-w", "1"];
    for set in TINY {
        args.extend(["--set", set]);
    }
    run_processes(&args, 2, &hosts, std::time::Duration::from_secs(600));
    assert_eq!(weights(&one, 2), weights(&procs, 2), "two processes differ from one");
    assert_eq!(critic(&one), critic(&procs));
    // The step ran in the stages phase, on the device thread, once per iteration.
    let raw = std::fs::read_to_string(one.join("metrics.jsonl")).unwrap();
    for line in raw.lines().skip(1) {
        let t: serde_json::Value = serde_json::from_str(line).unwrap();
        let (part, phase) = (t["time_s"]["stages/values"].as_f64().unwrap(), t["time_s"]["stages"].as_f64().unwrap());
        assert!(part <= phase, "{line}");
    }
}

#[test]
fn bad_training_sections_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline("loop.toml");
    let err = fails(&["run", &p, "--out", s(&tmp.path().join("x")), "--set", "learner.clip=-1"]);
    assert!(err.contains("stage 'learner': key 'clip'"), "{err}");
    let err = fails(&["run", &p, "--out", s(&tmp.path().join("y")), "--set", "learner.advantages=nope"]);
    assert!(err.contains("nope"), "{err}");
    let err = fails(&["run", &pipeline("loop_advantages.toml"), "--out", s(&tmp.path().join("z"))]);
    assert!(err.contains("not a training pipeline"), "{err}");
    let err = fails(&["run", "--resume", s(&tmp.path().join("none"))]);
    assert!(err.contains("config.toml"), "{err}");
    // The discriminator scores one-step (prefix, action) rows: it needs expert-prefix rollouts.
    let irl = pipeline("stepagent_irl.toml");
    let err = fails(&["run", &irl, "--out", s(&tmp.path().join("w")), "--set", "rollout.op=rollout"]);
    assert!(err.contains("stage 'discriminator'") && err.contains("expert_prefixes"), "{err}");
    let implicit = pipeline("stepagent_implicit_ppo.toml");
    let err = fails(&["run", &implicit, "--out", s(&tmp.path().join("w2")), "--set", "learner.op=dpo_update"]);
    assert!(err.contains("stage 'implicit_reward'") && err.contains("dpo"), "{err}");
    let err = fails(&["run", &pipeline("eto.toml"), "--out", s(&tmp.path().join("v")), "--set", "learner.beta=0"]);
    assert!(err.contains("stage 'learner': key 'beta'"), "{err}");
    // RetroAct's imitation regulariser draws from the warm start's rows: it needs one.
    let retro = pipeline("retroact.toml");
    let err = fails(&["run", &retro, "--out", s(&tmp.path().join("u")), "--set", "warm_start.demos=0"]);
    assert!(err.contains("stage 'learner'") && err.contains("imitation"), "{err}");
    let err = fails(&[
        "run",
        &pipeline("loop.toml"),
        "--out",
        s(&tmp.path().join("t")),
        "--set",
        "warm_start.reflection_tasks=5",
    ]);
    assert!(err.contains("stage 'warm_start'") && err.contains("reflexion"), "{err}");
}

/// `run.eval_every` evaluates after the warm start, every N iterations and after the last, and the
/// verdict compares the first and the last evaluation; 0 is refused.
#[test]
fn evaluation_every_n_iterations_keeps_the_first_and_the_last() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline("loop.toml");
    let out = run(Path::new(&p), &tmp.path().join("r"), &["run.iterations=5", "run.eval_every=2"]);
    let evaluated: Vec<u64> = metrics(&tmp.path().join("r"))
        .iter()
        .filter(|m| m["eval_success_rate"].is_number())
        .map(|m| m["iteration"].as_u64().unwrap())
        .collect();
    assert_eq!(evaluated, [0, 2, 4, 5]);
    assert!(out.contains("after iteration 5"), "{out}");
    let err = fails(&["run", &p, "--out", s(&tmp.path().join("z")), "--set", "run.eval_every=0"]);
    assert!(err.contains("[run]") && err.contains("eval_every"), "{err}");
}

/// `run.iterations = 0` stops after the warm start; `--resume --set` forks such a run into a
/// variant (the learning benchmark's RetroAct ablations), and its config records the variant.
#[test]
fn a_warm_start_only_run_forks_into_variants() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline("retroact.toml");
    let base = tmp.path().join("base");
    run(Path::new(&p), &base, &["run.iterations=0"]);
    assert_eq!(metrics(&base).len(), 1);
    assert!(base.join("checkpoints/iter-0000/state.json").is_file());
    assert!(!base.join("checkpoints/iter-0001").exists());
    let fork = tmp.path().join("planner-only");
    let status = std::process::Command::new("cp").args(["-r", s(&base), s(&fork)]).status().unwrap();
    assert!(status.success());
    ok(&["run", "--resume", s(&fork), "--quiet", "--set", "run.iterations=1", "--set", "stage.rewards.train=planner"]);
    assert!(std::fs::read_to_string(fork.join("config.toml")).unwrap().contains("train = \"planner\""));
    let rows = read_sorted(&fork.join("trajectories"));
    let keep = arrow::array::AsArray::as_boolean(rows.column_by_name("keep").unwrap());
    let reflector = rows.column_by_name("prev_trial_reward").unwrap();
    let reflections = (0..rows.num_rows()).filter(|&i| arrow::array::Array::is_valid(reflector, i)).count();
    assert!(reflections > 0);
    for i in 0..rows.num_rows() {
        if arrow::array::Array::is_valid(reflector, i) {
            assert!(!keep.value(i), "planner-only RL trains a reflector row");
        }
    }
}

/// TensorBoard's own reader (the `tensorboard` package of the test venv) sees every numeric metric
/// of every iteration exactly once, also after a run died between a metrics line and its
/// checkpoint and was resumed (the abandoned line is dropped from both files).
#[test]
fn tensorboard_scalars_mirror_the_metrics_across_a_resume() {
    let Ok(python) = std::env::var("TRAJFLOW_PYTHON") else {
        eprintln!("SKIPPED: TRAJFLOW_PYTHON is not set (run through `make test`)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("loop");
    run(Path::new(&pipeline("loop.toml")), &dir, &[]);
    // Iteration 2 wrote its metrics line, then "crashed" before its checkpoint.
    std::fs::remove_dir_all(dir.join("checkpoints/iter-0002")).unwrap();
    ok(&["run", "--resume", s(&dir), "--quiet"]);
    let script = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1] + "/tensorboard", size_guidance={"scalars": 0})
acc.Reload()
out = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
print(json.dumps(out))
"#;
    let out = std::process::Command::new(&python).args(["-c", script, s(&dir)]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let scalars: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for tag in ["eval_success_rate", "loss", "kl", "time_s/learn", "updates"] {
        let series = scalars[tag].as_array().unwrap_or_else(|| panic!("no scalar {tag}: {scalars}"));
        let steps: Vec<u64> = series.iter().map(|p| p[0].as_u64().unwrap()).collect();
        let expected: Vec<u64> = lines
            .iter()
            .filter(|l| l.pointer(&format!("/{tag}")).is_some_and(|v| v.is_number()))
            .map(|l| l["iteration"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, expected, "{tag}: one point per iteration");
        for (p, l) in series.iter().zip(lines.iter().filter(|l| l.pointer(&format!("/{tag}")).is_some())) {
            let want = l.pointer(&format!("/{tag}")).unwrap().as_f64().unwrap() as f32;
            assert_eq!(p[1].as_f64().unwrap() as f32, want, "{tag} at step {}", p[0]);
        }
    }
}

/// `[model.lora]`: only the adapter trains, in the warm start and in RL (the base weights of
/// checkpoints 0 and 2 equal the initial ones; the warm start moved the adapter's B factors off
/// zero); a resumed LoRA run equals the uninterrupted one; the checkpoint folder loads as base +
/// merged adapter.
#[test]
fn lora_runs_train_only_the_adapter_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline("loop.toml");
    let lora = ["model.lora.r=4", "model.lora.targets=[\"q_proj\", \"v_proj\", \"down_proj\"]"];
    let full = tmp.path().join("full");
    run(Path::new(&p), &full, &lora);
    let tensors = |run: &Path, it: u64| -> std::collections::HashMap<String, tch::Tensor> {
        let f = run.join(format!("checkpoints/iter-{it:04}/weights.safetensors"));
        tch::Tensor::read_safetensors(f).unwrap().into_iter().collect()
    };
    let (w0, w2) = (tensors(&full, 0), tensors(&full, 2));
    // The run's initial weights: the pipeline's model, seeded with run.seed = 0.
    tch::manual_seed(0);
    let init = trajflow::model::load_decoder("small:household-pick", tch::Device::Cpu).unwrap();
    let init: std::collections::HashMap<String, tch::Tensor> = init.vs.variables();
    let (mut base, mut adapter) = (0, 0);
    for (name, t0) in &w0 {
        assert!(t0.equal(&w2[name]) || name.contains("lora_"), "{name}: a frozen weight changed in RL");
        if name.contains("lora_") {
            adapter += 1;
            if name.contains("lora_B") {
                assert!(t0.abs().sum(tch::Kind::Float).double_value(&[]) > 0.0, "{name}: the warm start left B at 0");
            }
        } else {
            base += 1;
            assert!(t0.equal(&init[name]), "{name}: the warm start changed a frozen base weight");
        }
    }
    assert_eq!(adapter, 4 * 3 * 2, "4 layers x 3 targets x (A, B)");
    assert!(base > 0);
    let dir = full.join("checkpoints/iter-0002");
    assert!(dir.join("adapter_config.json").is_file() && dir.join("adapter_model.safetensors").is_file());
    ok(&["generate", "--model", s(&dir), "--prompt", "go to", "--max-new-tokens", "3"]);
    // Resume after iteration 1.
    let part = tmp.path().join("part");
    run(Path::new(&p), &part, &[&lora[..], &["run.iterations=1"]].concat());
    ok(&["run", "--resume", s(&part), "--quiet", "--set", "run.iterations=2"]);
    assert_eq!(weights(&full, 2), weights(&part, 2));
    assert_eq!(metrics(&full), metrics(&part));
    let err = fails(&["run", &p, "--out", s(&tmp.path().join("bad")), "--set", "model.lora.targets=[\"x_proj\"]"]);
    assert!(err.contains("[models.policy]: key 'lora'") && err.contains("x_proj"), "{err}");
}

/// A real pretrained LLM: `pipelines/smollm2/poad.toml` (SmolLM2-135M-Instruct + LoRA, POAD,
/// the kitchen, no warm start) runs two iterations end to end; checkpoint 2's base weights are the
/// pretrained ones bit for bit and only the adapter moved; a run resumed after iteration 1 equals
/// the uninterrupted one (weights and metrics).
#[test]
fn smollm2_poad_with_lora_in_the_kitchen_keeps_its_base_and_resumes_exactly() {
    let base = match trajflow::model::load_decoder("smollm2-135m", tch::Device::Cpu) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/smollm2/poad.toml");
    let small = [
        "rollout.tasks=1",
        "rollout.k=2",
        "rollout.max_turns=3",
        "rollout.max_action_tokens=6",
        "run.eval_tasks=1",
        "run.eval_every=1",
        "learner.minibatch=2",
    ];
    let go = |out: &Path, iterations: &str| {
        let mut args = vec!["run", s(&p), "--out", s(out), "--quiet", "--set", iterations];
        small.iter().for_each(|x| args.extend(["--set", x]));
        ok(&args);
    };
    let full = tmp.path().join("full");
    go(&full, "run.iterations=2");
    let m = metrics(&full);
    assert_eq!(m.len(), 3, "iterations 0, 1 and 2");
    assert!(m[1]["trained_tokens"].as_u64().unwrap() > 0, "iteration 1 trained: {}", m[1]);
    assert!(m[1]["logp_mismatch_max"].as_f64().unwrap() <= 1e-3, "behaviour vs learner: {}", m[1]);
    let file = full.join("checkpoints/iter-0002/weights.safetensors");
    let w2: std::collections::HashMap<String, tch::Tensor> =
        tch::Tensor::read_safetensors(&file).unwrap().into_iter().collect();
    let pretrained = base.vs.variables();
    let (mut frozen, mut moved) = (0, 0);
    for (name, t) in &w2 {
        if name.contains("lora_") {
            moved += usize::from(name.contains("lora_B") && t.abs().sum(tch::Kind::Float).double_value(&[]) > 0.0);
        } else {
            assert!(t.equal(&pretrained[name]), "{name}: a base weight changed");
            frozen += 1;
        }
    }
    assert!(frozen > 0 && moved > 0, "{frozen} base tensors, {moved} adapter B factors moved off zero");
    drop((w2, pretrained, base));
    for it in [0, 1] {
        std::fs::remove_dir_all(full.join(format!("checkpoints/iter-{it:04}"))).unwrap();
    }
    let part = tmp.path().join("part");
    go(&part, "run.iterations=1");
    ok(&["run", "--resume", s(&part), "--quiet", "--set", "run.iterations=2"]);
    assert!(weights(&full, 2) == weights(&part, 2), "resumed weights differ");
    assert_eq!(metrics(&full), metrics(&part));
}

/// `[model] precision = "bf16"`: a run trains with bfloat16 products and float32 weights; a
/// resumed bf16 run equals the uninterrupted one bit for bit (the cached bf16 weight copies are
/// rebuilt, not saved); an unknown precision is an error naming the key.
#[test]
fn bf16_runs_keep_float32_weights_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline("loop.toml");
    let bf16 = ["model.precision=\"bf16\""];
    let full = tmp.path().join("full");
    run(Path::new(&p), &full, &bf16);
    let f = full.join("checkpoints/iter-0002/weights.safetensors");
    let tensors = tch::Tensor::read_safetensors(f).unwrap();
    assert!(!tensors.is_empty() && tensors.iter().all(|(_, t)| t.kind() == tch::Kind::Float));
    let part = tmp.path().join("part");
    run(Path::new(&p), &part, &[&bf16[..], &["run.iterations=1"]].concat());
    ok(&["run", "--resume", s(&part), "--quiet", "--set", "run.iterations=2"]);
    assert_eq!(weights(&full, 2), weights(&part, 2));
    assert_eq!(metrics(&full), metrics(&part));
    let f32_run = tmp.path().join("f32");
    run(Path::new(&p), &f32_run, &["run.iterations=1"]);
    assert_ne!(weights(&f32_run, 1), weights(&part, 1), "bf16 trained exactly like float32");
    let err = fails(&["run", &p, "--out", s(&tmp.path().join("bad")), "--set", "model.precision=\"fp8\""]);
    assert!(err.contains("[models.policy]: ") && err.contains("fp8"), "{err}");
}

/// A bridged environment that crashes in one task's episodes (tests/fixtures/counter_bridge.py
/// kills itself at task 13's second step): the run goes on; the broken episodes are stored in
/// `RUN/env-failures/` with their error, counted in the metrics, and kept out of the trajectories
/// the update trains on.
#[test]
fn a_crashing_bridge_fails_its_episodes_and_the_run_goes_on() {
    let Ok(python) = std::env::var("TRAJFLOW_PYTHON") else {
        eprintln!("SKIPPED: TRAJFLOW_PYTHON is not set (run through `make test`)");
        return;
    };
    let train = trajflow::env::task_ids(trajflow::env::Split::Train, 16);
    assert!(train.contains(&13), "task 13 is among the first 16 train tasks: {train:?}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/counter_bridge.py");
    let env = format!("env=bridge:{python} {}", s(&fixture));
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/loop.toml");
    run(&pipeline, &out, &[&env, "rollout.tasks=16", "run.iterations=1", "rollout.admissible=true"]);
    let m = metrics(&out);
    assert_eq!(m[1]["env_failures"], 2, "both rollouts of task 13: {}", m[1]);
    assert_eq!(m[1]["episodes"], 30);
    let failed = read_sorted(&out.join("env-failures"));
    assert_eq!(failed.num_rows(), 2);
    use arrow::array::{Array, AsArray};
    let errors = failed.column_by_name("env_error").unwrap().as_string::<i32>();
    for i in 0..2 {
        assert!(errors.value(i).contains("crashing on purpose"), "{}", errors.value(i));
    }
    let trained = read_sorted(&out.join("trajectories"));
    assert_eq!(trained.num_rows(), 30);
    assert_eq!(trained.column_by_name("env_error").unwrap().null_count(), 30);
}
