//! Golden values computed by hand, through the real binary and dataflow: each operator on tiny
//! episodes (groups of 1, 2 and 3, all-equal groups, observation tokens between actions,
//! truncation with bootstrap, empty actions, several episodes in one batch).

mod common;
use common::*;

fn close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-6, "got {got:?}, want {want:?}");
    }
}

#[test]
fn leave_one_out_groups_of_one_two_three_and_all_equal() {
    let eps = vec![
        Ep::outcome("a", "g1", 1.0),
        Ep::outcome("b1", "g2", 1.0),
        Ep::outcome("b2", "g2", 0.0),
        Ep::outcome("c1", "g3", 1.0),
        Ep::outcome("c2", "g3", 0.0),
        Ep::outcome("c3", "g3", 0.5),
        Ep::outcome("d1", "g4", 0.3),
        Ep::outcome("d2", "g4", 0.3),
    ];
    let out = run_pipeline_on(&eps, &std::fs::read_to_string(pipeline("loop_advantages.toml")).unwrap(), 2);
    // Sorted ids: a b1 b2 c1 c2 c3 d1 d2.
    // a: group of one -> 0. b: 1 - 0 = 1, 0 - 1 = -1. c: 1 - (0 + .5)/2 = .75, 0 - 1.5/2 = -.75,
    // .5 - 1/2 = 0. d: all equal -> 0 exactly.
    close(&f32s(&out, "episode_advantage"), &[0.0, 1.0, -1.0, 0.75, -0.75, 0.0, 0.0, 0.0]);
    let keep = out.column_by_name("keep").unwrap();
    let keep = arrow::array::AsArray::as_boolean(keep);
    let keep: Vec<bool> = (0..keep.len()).map(|i| keep.value(i)).collect();
    assert_eq!(keep, vec![false, true, true, true, true, false, false, false]);
    // Broadcast onto the single action token (segment 1), 0 on the prompt token.
    assert_eq!(f32_lists(&out, "advantages")[3], vec![0.0, 0.75]);
}

#[test]
fn grpo_mean_std_unbiased() {
    let eps = vec![Ep::outcome("a", "g", 1.0), Ep::outcome("b", "g", 0.0), Ep::outcome("s", "solo", 0.7)];
    let out = run_pipeline_on(&eps, &std::fs::read_to_string(pipeline("grpo_advantages.toml")).unwrap(), 1);
    // mean .5, unbiased std = sqrt((.25 + .25)/1) = 0.70710678; A = ±.5/(0.70710678 + 1e-6).
    let a = 0.5 / (0.5f64.sqrt() + 1e-6);
    close(&f32s(&out, "episode_advantage"), &[a as f32, -a as f32, 0.0]);
}

/// prompt(2) · action turn 0 (2 tokens) · observation · action turn 1 (1 token).
fn two_action_episode(id: &'static str, truncated: bool) -> Ep {
    Ep {
        id,
        group: "g",
        reward: 1.0,
        segments: vec![0, 0, 1, 1, 2, 1],
        turns: vec![0, 0, 0, 0, 0, 1],
        turn_rewards: vec![0.0, 1.0],
        values: vec![9.0, 9.0, 0.5, 0.6, 9.0, 0.8],
        truncated,
        bootstrap: truncated.then_some(0.5),
    }
}

const GAE: &str = r#"
name = "gae"
[[stage]]
id = "gae"
op = "gae"
gamma = 0.9
lambda = 0.95
GAMMA_INTRA
"#;

#[test]
fn gae_bad_vs_ntpo_with_observation_between_actions_and_bootstrap() {
    let eps = vec![two_action_episode("a-term", false), two_action_episode("b-trunc", true)];
    let bad = run_pipeline_on(&eps, &GAE.replace("GAMMA_INTRA", "gamma_intra = 1.0"), 2);
    let ntpo = run_pipeline_on(&eps, &GAE.replace("GAMMA_INTRA", "gamma_intra = 0.9"), 1);
    // Terminated, BAD. Turn 1 (token 5): δ = 1 + 0 − .8 = .2 → A = .2.
    // Turn 0 last token (3): δ = 0 + .9·.8 − .6 = .12; A = .12 + .9·.95·.2 = .291.
    // Token 2 (intra): δ = 1·.6 − .5 = .1; A = .1 + 1·.95·.291 = .37645.
    // Non-action tokens (values 9) are skipped: 0.
    close(&f32_lists(&bad, "advantages")[0], &[0.0, 0.0, 0.37645, 0.291, 0.0, 0.2]);
    close(&f32_lists(&bad, "returns")[0], &[0.0, 0.0, 0.87645, 0.891, 0.0, 1.0]);
    // NTPO differs only inside the action: δ = .9·.6 − .5 = .04; A = .04 + .9·.95·.291 = .288805.
    close(&f32_lists(&ntpo, "advantages")[0], &[0.0, 0.0, 0.288805, 0.291, 0.0, 0.2]);
    // Truncated with bootstrap .5: turn 1: δ = 1 + .9·.5 − .8 = .65.
    // token 3: δ = .12; A = .12 + .855·.65 = .67575. token 2 (BAD): .1 + .95·.67575 = .7419625.
    close(&f32_lists(&bad, "advantages")[1], &[0.0, 0.0, 0.7419625, 0.67575, 0.0, 0.65]);
}

#[test]
fn twosome_one_value_per_action() {
    let eps = vec![two_action_episode("a", false)];
    let pipeline = "name = \"t\"\n[[stage]]\nid = \"gae\"\nop = \"gae\"\ngamma = 0.9\nlambda = 0.95\nvalue_granularity = \"action\"\n";
    let out = run_pipeline_on(&eps, pipeline, 1);
    // V_0 = .5 (first token of action 0), V_1 = .8. A_1 = 1 − .8 = .2; A_0 = 0 + .9·.8 − .5 + .855·.2 = .391.
    close(&f32_lists(&out, "advantages")[0], &[0.0, 0.0, 0.391, 0.391, 0.0, 0.2]);
    close(&f32_lists(&out, "returns")[0], &[0.0, 0.0, 0.891, 0.891, 0.0, 1.0]);
}

#[test]
fn discounted_return_with_empty_action_and_truncation_bootstrap() {
    // Turn 0: 1 action token; turn 1: empty action (template token only); turn 2: 2 action tokens.
    let ep = Ep {
        id: "e",
        group: "g",
        reward: 0.0,
        segments: vec![0, 1, 2, 3, 2, 1, 1],
        turns: vec![0, 0, 0, 1, 1, 2, 2],
        turn_rewards: vec![1.0, 0.0, 2.0],
        values: vec![0.0; 7],
        truncated: true,
        bootstrap: Some(4.0),
    };
    let pipeline = "name = \"r\"\n[[stage]]\nid = \"ret\"\nop = \"discounted_return\"\ngamma = 0.5\n";
    let out = run_pipeline_on(&[ep], pipeline, 1);
    // G2 = 2 + .5·4 = 4; G1 = 0 + .5·4 = 2; G0 = 1 + .5·2 = 2.
    close(&f32_lists(&out, "returns")[0], &[0.0, 2.0, 0.0, 0.0, 0.0, 4.0, 4.0]);
    close(&f32s(&out, "episode_return"), &[2.0]);
}

#[test]
fn group_whitening_over_action_tokens_only() {
    let mut a = Ep::outcome("a", "g", 0.0);
    a.segments = vec![1, 2, 1];
    a.turns = vec![0, 0, 1];
    a.turn_rewards = vec![0.0, 0.0];
    a.values = vec![0.0; 3];
    let mut b = Ep::outcome("b", "g", 0.0);
    b.segments = vec![1];
    b.turns = vec![0];
    b.values = vec![0.0];
    // Advantages from discounted returns: a: turn rewards 1 then 2 (γ = 1) -> tokens [3, 0, 2]; b: [3].
    a.turn_rewards = vec![1.0, 2.0];
    b.turn_rewards = vec![3.0];
    let pipeline = r#"
name = "w"
[[stage]]
id = "ret"
op = "discounted_return"
[[stage]]
id = "white"
op = "normalize"
inputs = ["ret"]
scope = "group"
read = { advantages = "returns" }
"#;
    let out = run_pipeline_on(&[a, b], pipeline, 2);
    // Action values 3, 2, 3: mean 8/3, unbiased var = (1/9 + 4/9 + 1/9)/2 = 1/3.
    let (m, sd) = (8.0f64 / 3.0, (1.0f64 / 3.0 + 1e-8).sqrt());
    let z = |x: f64| ((x - m) / sd) as f32;
    close(&f32_lists(&out, "advantages")[0], &[z(3.0), 0.0, z(2.0)]);
    close(&f32_lists(&out, "advantages")[1], &[z(3.0)]);
}

#[test]
fn reflector_reward_code_and_paper_formulas() {
    let mut eps = vec![
        Ep::outcome("a", "g", 0.6),
        Ep::outcome("b", "g", 0.2),
        Ep::outcome("c", "g", 0.0),
        Ep::outcome("d", "g", 0.5),
    ];
    eps[0].id = "a";
    let batch = episodes_batch(&eps);
    // Reflector rows a (0.2 → 0.6) and d (0.5 → 0.5, no change); planner rows b (0.2), c (0.0).
    let idx = batch.schema().index_of("prev_trial_reward").unwrap();
    let mut cols = batch.columns().to_vec();
    cols[idx] = arc(arrow::array::Float32Array::from(vec![Some(0.2), None, None, Some(0.5)]));
    let batch = arrow::array::RecordBatch::try_new(batch.schema(), cols).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir.path().join("in"), "x.parquet", &batch);
    ok(&[
        "reprocess",
        &pipeline("retroact_rewards.toml"),
        "--input",
        s(&dir.path().join("in")),
        "--output",
        s(&dir.path().join("out")),
    ]);
    let out = read_sorted(&dir.path().join("out"));
    let r = out.column_by_name("reflector_reward").unwrap();
    let r = arrow::array::AsArray::as_primitive::<arrow::datatypes::Float32Type>(r);
    // (0.6 − 0.2)·(0.2 + 1)/1 = 0.48.
    assert!((r.value(0) - 0.48).abs() < 1e-6);
    assert!(arrow::array::Array::is_null(r, 1));
    // What each row trains with: the reflector reward, or the planner's own reward; rows whose
    // reward is 0 (planner c, reflector d whose trials tied) are not trained on.
    let a = out.column_by_name("episode_advantage").unwrap();
    let a = arrow::array::AsArray::as_primitive::<arrow::datatypes::Float32Type>(a);
    assert_eq!(a.values().len(), 4);
    assert!((a.value(0) - 0.48).abs() < 1e-6 && a.value(1) == 0.2 && a.value(2) == 0.0 && a.value(3) == 0.0);
    let keep = arrow::array::AsArray::as_boolean(out.column_by_name("keep").unwrap());
    assert_eq!((0..4).map(|i| keep.value(i)).collect::<Vec<_>>(), [true, true, false, false]);
}
