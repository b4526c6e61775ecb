use std::path::Path;

use crate::error::Error;
use crate::pipeline::training::RolloutSource;
use crate::pipeline::PipelineSpec;

fn parse(text: &str) -> crate::error::Result<PipelineSpec> {
    PipelineSpec::parse(Path::new("g.toml"), text)
}

/// `(stage, key)` of a spec error, and its text.
fn error_at(text: &str) -> (Option<String>, Option<String>, String) {
    match parse(text).unwrap_err() {
        Error::Spec { stage, key, message, .. } => (stage, key, message),
        other => panic!("not a spec error: {other}"),
    }
}

const POAD_GRAPH: &str = r#"
name = "p"
[models.policy]
name = "small:household-pick"
[models.critic]
head = "value"
on = "policy"
hidden = [64]
backbone = "frozen"

[[stage]]
id = "warm"
op = "warm_start"
model = "policy"
demos = 10
[[stage]]
id = "play"
op = "rollout"
model = "policy"
env = "household-pick"
tasks = 3
k = 2
[[stage]]
id = "v"
op = "values"
model = "critic"
inputs = ["play"]
[[stage]]
id = "gae"
op = "gae"
inputs = ["v"]
gamma = 0.95
lambda = 1.0
[[stage]]
id = "whiten"
op = "normalize"
inputs = ["gae"]
[[stage]]
id = "up"
op = "ppo_update"
model = "policy"
critic = "critic"
inputs = ["whiten"]
lr = 5e-5
value_clip = 0.3
[run]
iterations = 2
"#;

const POAD_SECTIONS: &str = r#"
name = "p"
[model]
name = "small:household-pick"
[warm_start]
demos = 10
[rollout]
env = "household-pick"
tasks = 3
k = 2
[critic]
hidden = [64]
backbone = "frozen"
value_clip = 0.3
[learner]
loss = "ppo"
lr = 5e-5
[[stage]]
id = "gae"
op = "gae"
gamma = 0.95
lambda = 1.0
[[stage]]
id = "whiten"
op = "normalize"
inputs = ["gae"]
[run]
iterations = 2
"#;

fn json(spec: &PipelineSpec) -> String {
    serde_json::to_string(spec.training.as_ref().unwrap()).unwrap()
}

fn stages(p: &PipelineSpec) -> Vec<(&str, Vec<&str>)> {
    p.stages.iter().map(|s| (s.id.as_str(), s.inputs.iter().map(String::as_str).collect())).collect()
}

/// The graph form lowers to exactly the sections the section form parses to; the data stages keep
/// their ids, parameters and data edges, and the reward and value steps stay in the stage list
/// where their inputs put them (a stage reading the source reads the lowered list's input).
#[test]
fn graph_and_section_forms_train_alike() {
    let (g, s) = (parse(POAD_GRAPH).unwrap(), parse(POAD_SECTIONS).unwrap());
    assert_eq!(json(&g), json(&s));
    assert_eq!(stages(&g), [("v", vec![]), ("gae", vec!["v"]), ("whiten", vec!["gae"])]);
    assert_eq!(stages(&s), [("gae", vec![]), ("whiten", vec!["gae"])]);
    assert_eq!((g.stages[0].op.as_str(), &g.stages[1].params), ("values", &s.stages[0].params));
    let graph = g.graph.unwrap();
    let ids: Vec<&str> = graph.before.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["warm", "play"]);
    assert_eq!(graph.in_stages.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["v"]);
    assert_eq!((graph.update.id.as_str(), graph.update.op), ("up", "ppo_update"));
    assert!(s.graph.is_none());
}

/// A model step may stand after data stages: the critic's values of rows that went through a
/// data stage first, in the plan as a model step at that place.
#[test]
fn a_model_step_may_read_a_data_stage() {
    let text = POAD_GRAPH.replace(
        "[[stage]]\nid = \"v\"\nop = \"values\"\nmodel = \"critic\"\ninputs = [\"play\"]",
        "[[stage]]\nid = \"ends\"\nop = \"action_boundaries\"\ninputs = [\"play\"]\n\
         [[stage]]\nid = \"v\"\nop = \"values\"\nmodel = \"critic\"\ninputs = [\"ends\"]",
    );
    assert_ne!(text, POAD_GRAPH);
    let spec = parse(&text).unwrap();
    assert_eq!(stages(&spec), [("ends", vec![]), ("v", vec!["ends"]), ("gae", vec!["v"]), ("whiten", vec!["gae"])]);
    let plan = crate::pipeline::Plan::from_spec(spec).unwrap();
    let kinds: Vec<(&str, bool)> =
        plan.stages.iter().map(|s| (s.id.as_str(), matches!(s.op, crate::stages::Operator::Model(_)))).collect();
    assert_eq!(kinds, [("ends", false), ("v", true), ("gae", false), ("whiten", false)]);
    // The step's columns are checked like a data stage's: it writes `values`, gae reads them.
    assert_eq!(plan.stages[1].writes.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(), ["values"]);
}

#[test]
fn a_rollout_joined_with_the_expert_is_eto() {
    let text = r#"
name = "eto"
[models.policy]
name = "small:household-pick"
[[stage]]
id = "explore"
op = "rollout"
model = "policy"
k = 1
[[stage]]
id = "expert"
op = "expert_rollout"
[[stage]]
id = "join"
op = "join_expert"
inputs = ["explore", "expert"]
extra_turns = 3
[[stage]]
id = "learner"
op = "dpo_update"
model = "policy"
inputs = ["join"]
beta = 0.2
"#;
    let t = parse(text).unwrap().training.unwrap();
    assert_eq!(t.rollout.source, RolloutSource::PolicyVsExpert);
    assert_eq!((t.rollout.k, t.rollout.extra_turns), (1, 3));
    assert_eq!(t.learner.beta, 0.2);
    let keyed = text.replace("op = \"expert_rollout\"", "op = \"expert_rollout\"\ntasks = 5");
    assert_eq!(error_at(&keyed).0.as_deref(), Some("expert"));
}

/// Each way a graph can leave a declared step out of training, or name the wrong thing, is an
/// error at the stage (or model table) and key at fault.
#[test]
fn invalid_graphs_are_refused_where_they_are_wrong() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // A critic whose values are computed but that nothing trains.
        ("critic = \"critic\"\n", "", "v", "model"),
        // A value head named by the update with no `values` step.
        ("[[stage]]\nid = \"v\"\nop = \"values\"\nmodel = \"critic\"\ninputs = [\"play\"]\n", "", "up", "critic"),
        // A key of another operator.
        ("k = 2\n", "k = 2\ntrials = 3\n", "play", "trials"),
        // A step naming a model of the wrong kind, or none.
        ("op = \"values\"\nmodel = \"critic\"", "op = \"values\"\nmodel = \"policy\"", "v", "model"),
        ("op = \"rollout\"\nmodel = \"policy\"", "op = \"rollout\"\nmodel = \"nope\"", "play", "model"),
        ("op = \"rollout\"\nmodel = \"policy\"", "op = \"rollout\"", "play", "model"),
        // A data stage reading the rollout beside the values step: the step feeds no update.
        ("inputs = [\"v\"]", "inputs = [\"play\"]", "v", "inputs"),
        // A step reading the update, or nothing.
        ("inputs = [\"play\"]", "inputs = [\"up\"]", "v", "inputs"),
        ("inputs = [\"play\"]\n", "", "v", "inputs"),
        // A second step of one operator.
        (
            "[[stage]]\nid = \"gae\"",
            "[[stage]]\nid = \"v2\"\nop = \"values\"\nmodel = \"critic\"\ninputs = [\"v\"]\n[[stage]]\nid = \"gae\"",
            "v2",
            "op",
        ),
        // A data stage without inputs.
        ("inputs = [\"v\"]\n", "", "gae", "inputs"),
        // A data stage that feeds no update.
        ("inputs = [\"whiten\"]", "inputs = [\"gae\"]", "whiten", "inputs"),
        // A section of the other form.
        ("[run]", "[learner]\nlr = 1.0\n[run]", "[learner]", ""),
        // An out-of-range key, reported where it was written.
        ("lr = 5e-5", "lr = -1.0", "up", "lr"),
        ("hidden = [64]", "hidden = [64]\ndropout = 0.5", "[models.critic]", "dropout"),
        ("value_clip = 0.3", "value_clip = -0.3", "up", "value_clip"),
        ("demos = 10", "demos = 10\nepochs = \"two\"", "warm", "epochs"),
    ];
    for (from, to, stage, key) in cases {
        assert!(POAD_GRAPH.contains(from), "{from}");
        let text = POAD_GRAPH.replacen(from, to, 1);
        let (s, k, message) = error_at(&text);
        assert_eq!(s.as_deref(), Some(*stage), "{from} -> {to}: {message}");
        if !key.is_empty() {
            assert_eq!(k.as_deref(), Some(*key), "{from} -> {to}: {message}");
        }
    }
}

#[test]
fn models_must_be_one_policy_and_used_heads() {
    let unused = POAD_GRAPH
        .replace("[models.critic]", "[models.spare]\nhead = \"discriminator\"\non = \"policy\"\n[models.critic]");
    assert_eq!(error_at(&unused).0.as_deref(), Some("[models.spare]"));
    let two = POAD_GRAPH.replace("[models.critic]", "[models.other]\nname = \"small:household\"\n[models.critic]");
    assert!(error_at(&two).2.contains("2 policies"));
    let off = POAD_GRAPH.replace("on = \"policy\"", "on = \"critic\"");
    assert_eq!(error_at(&off), (Some("[models.critic]".into()), Some("on".into()), error_at(&off).2));
}

/// Every shipped training pipeline is in the graph form.
#[test]
fn shipped_training_pipelines_are_graphs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut files: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    files.extend(std::fs::read_dir(root.join("smollm2")).unwrap().map(|e| e.unwrap().path()));
    let mut graphs = 0;
    for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "toml")) {
        let spec = PipelineSpec::from_file(f).unwrap();
        if spec.training.is_some() {
            assert!(spec.graph.is_some(), "{} is in the section form", f.display());
            graphs += 1;
        }
    }
    assert!(graphs >= 18, "{graphs}");
}
