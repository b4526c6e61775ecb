//! The model-bound operators of a graph-form pipeline: the steps that play, score or train a
//! model (rollouts, reward models, the critic's values, the warm start and the updates), next to
//! the data operators of [`crate::stages`]. Each declares its role in the graph, which kind of
//! model it names, the keys it takes and the columns it reads and writes; `trajflow ops` lists
//! them and [`super::lower`] validates a pipeline against these declarations.
//!
//! Invariant: a key an operator does not list is refused with the stage and key named, so a key
//! that only means something to another operator (`trials` outside `reflexion`) never passes
//! silently.

use crate::schema::TableSchema;
use crate::stages::{Col, Describe};

/// Where an operator sits in an iteration's graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A phase before iteration 1 (no data edges).
    Phase,
    /// Emits an iteration's rows.
    Source,
    /// Joins the rows of two sources.
    Join,
    /// Adds or rewrites columns of every row that reaches it, with a model: it stands among the
    /// data stages, and the dataflow hands an iteration's rows to the models there.
    Annotate,
    /// Trains the policy on the rows and emits its next version (the feedback edge to the sources).
    Update,
}

/// The kind of model an operator names with `model = "NAME"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// No model (the environment's expert plays).
    Nothing,
    /// The policy (a `[models.NAME]` table without `head`).
    Policy,
    /// A head on the policy's backbone: `head = "value"` or `head = "discriminator"`.
    Head(&'static str),
}

/// One model-bound operator.
#[derive(Debug)]
pub struct ModelOp {
    /// Operator name (`op = "..."`).
    pub name: &'static str,
    /// One line for `trajflow ops`.
    pub summary: &'static str,
    /// Its place in the graph.
    pub role: Role,
    /// The model it names.
    pub needs: Needs,
    /// The keys it takes besides `id`, `op`, `model` and `inputs`, in groups.
    pub keys: &'static [&'static [&'static str]],
    /// Columns it reads.
    pub reads: &'static str,
    /// Columns it writes.
    pub writes: &'static str,
}

/// The keys every source takes: how the policy plays (evaluation plays the same way), and `k`,
/// also the group size `--train` expects.
const PLAY: &[&str] = &[
    "env",
    "tasks",
    "k",
    "temperature",
    "top_k",
    "top_p",
    "max_turns",
    "max_action_tokens",
    "admissible",
    "slots",
    "action_scoring",
    "prefix_cache",
];
/// `reflexion`'s keys besides [`PLAY`].
const TRIALS: &[&str] = &["trials", "memory", "reflection_tokens"];
const UPDATE: &[&str] = &[
    "advantages",
    "keep",
    "rows",
    "logp_old",
    "clip",
    "clip_bound",
    "granularity",
    "span_logp",
    "reduction",
    "epochs",
    "minibatch",
    "lr",
    "warmup",
    "weight_decay",
    "max_grad_norm",
    "kl_stop",
    "kl_skip",
    "beta",
    "label_smoothing",
    "chosen_nll",
    "imitation",
    "kl_coef",
    "entropy_coef",
    "kl_estimator",
    "critic",
    "returns",
    "value_clip",
];
const ROWS: &str = "episode rows (trajectory table; `values` empty)";
const UPDATE_READS: &str =
    "tokens, segments, logp_behavior, advantages, keep?, returns (with a critic), values (with a critic)";

/// The model-bound operators, in documentation order.
pub const MODEL_OPERATORS: &[ModelOp] = &[
    ModelOp {
        name: "warm_start",
        summary: "SFT on expert demonstrations before iteration 1 (DAgger rounds, RetroAct's reflections)",
        role: Role::Phase,
        needs: Needs::Policy,
        keys: &[&[
            "demos",
            "epochs",
            "minibatch",
            "lr",
            "tokens",
            "dagger_rounds",
            "dagger_tasks",
            "dagger_epochs",
            "dagger_keep",
            "reflection_tasks",
            "reflection_epochs",
        ]],
        reads: "-",
        writes: "- (the policy's weights)",
    },
    ModelOp {
        name: "rollout",
        summary: "the policy plays `tasks` train tasks `k` times each (one group per task)",
        role: Role::Source,
        needs: Needs::Policy,
        keys: &[PLAY],
        reads: "-",
        writes: ROWS,
    },
    ModelOp {
        name: "expert_rollout",
        summary: "the environment's expert plays the tasks (SFT data; joined with a rollout: ETO)",
        role: Role::Source,
        needs: Needs::Nothing,
        keys: &[PLAY],
        reads: "-",
        writes: "episode rows without logp_behavior",
    },
    ModelOp {
        name: "expert_prefixes",
        summary: "StepAgent: at each expert action the policy proposes its own (groups of two one-step rows)",
        role: Role::Source,
        needs: Needs::Policy,
        keys: &[PLAY],
        reads: "-",
        writes: "one-step rows (expert's reward 1; the agent's 1 if it matched)",
    },
    ModelOp {
        name: "reflexion",
        summary: "RetroAct: Reflexion trials, a reflection after each failure carried by the next prompt",
        role: Role::Source,
        needs: Needs::Policy,
        keys: &[PLAY, TRIALS],
        reads: "-",
        writes: "planner rows (one per trial, prev_trial_reward) and reflector rows",
    },
    ModelOp {
        name: "join_expert",
        summary: "ETO: the expert's episode joins each task's group; failures cut at its turns + extra_turns",
        role: Role::Join,
        needs: Needs::Nothing,
        keys: &[&["extra_turns"]],
        reads: "the rows of a `rollout` and an `expert_rollout`",
        writes: ROWS,
    },
    ModelOp {
        name: "discriminator_reward",
        summary: "StepAgent-IRL: trains a discriminator (agent vs expert) and rewards each step -log D",
        role: Role::Annotate,
        needs: Needs::Head("discriminator"),
        keys: &[&["epochs", "minibatch"]],
        reads: "tokens, segments, logp_behavior",
        writes: "reward, turn_rewards",
    },
    ModelOp {
        name: "implicit_reward",
        summary: "StepAgent-implicit: a DPO-trained copy of the policy rewards each step beta*log ratio",
        role: Role::Annotate,
        needs: Needs::Policy,
        keys: &[&["beta", "chosen_nll", "lr", "epochs", "minibatch"]],
        reads: "tokens, segments, group_id, reward",
        writes: "reward, turn_rewards",
    },
    ModelOp {
        name: "values",
        summary: "the critic's value of every token (trained by the update that names it)",
        role: Role::Annotate,
        needs: Needs::Head("value"),
        keys: &[],
        reads: "tokens",
        writes: "values",
    },
    ModelOp {
        name: "ppo_update",
        summary: "clipped policy gradient (PPO/LOOP/POAD/GRPO...), optionally training the critic",
        role: Role::Update,
        needs: Needs::Policy,
        keys: &[UPDATE],
        reads: UPDATE_READS,
        writes: "- (the next policy version)",
    },
    ModelOp {
        name: "nll_update",
        summary: "negative log-likelihood of the rows' action tokens (SFT)",
        role: Role::Update,
        needs: Needs::Policy,
        keys: &[UPDATE],
        reads: "tokens, segments, keep?",
        writes: "- (the next policy version)",
    },
    ModelOp {
        name: "dpo_update",
        summary: "DPO on each group's best vs worst row (ETO, StepAgent's DPO form)",
        role: Role::Update,
        needs: Needs::Policy,
        keys: &[UPDATE],
        reads: "tokens, segments, group_id, reward",
        writes: "- (the next policy version)",
    },
    ModelOp {
        name: "clipped_is_update",
        summary: "RetroAct: clipped importance-weighted policy gradient, with an imitation mix",
        role: Role::Update,
        needs: Needs::Policy,
        keys: &[UPDATE],
        reads: UPDATE_READS,
        writes: "- (the next policy version)",
    },
];

impl ModelOp {
    /// Every key it takes.
    pub fn key_names(&self) -> impl Iterator<Item = &'static str> {
        self.keys.iter().flat_map(|group| group.iter().copied())
    }

    /// Whether it reads the (expert, agent) action pairs that only `expert_prefixes` plays.
    pub fn reads_expert_pairs(&self) -> bool {
        matches!(self.name, "discriminator_reward" | "implicit_reward")
    }
}

/// The model-bound operator `name`, if it is one.
pub fn model_op(name: &str) -> Option<&'static ModelOp> {
    MODEL_OPERATORS.iter().find(|o| o.name == name)
}

/// A reward or value step's columns as the plan checks them: the names its [`ModelOp`] declares,
/// with their types in the trajectory table.
pub struct StepColumns(&'static ModelOp);

impl StepColumns {
    /// The columns of `op`, which must annotate rows ([`Role::Annotate`]).
    pub fn of(op: &'static ModelOp) -> Option<StepColumns> {
        (op.role == Role::Annotate).then_some(StepColumns(op))
    }

    fn columns(names: &'static str) -> Vec<Col> {
        let table = TableSchema::trajectory();
        names
            .split(", ")
            .map(|name| {
                let field = table.fields.iter().find(|f| f.name == name);
                let ty = field.unwrap_or_else(|| panic!("'{name}' is a trajectory column")).ty.clone();
                Col { name, ty, optional: false }
            })
            .collect()
    }
}

impl Describe for StepColumns {
    fn reads(&self) -> Vec<Col> {
        Self::columns(self.0.reads)
    }

    fn writes(&self) -> Vec<Col> {
        Self::columns(self.0.writes)
    }

    fn params(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::training::{LearnerSection, RolloutSection, WarmStartSection};

    /// Every key an operator lists is a key of the section it lowers into: a typo in these lists
    /// would refuse a valid key (or, worse, the lowering would pass it on to be refused there).
    #[test]
    fn listed_keys_are_section_keys() {
        fn keys_of<T: serde::Serialize>(section: T) -> Vec<String> {
            match toml::Value::try_from(section).unwrap() {
                toml::Value::Table(t) => t.keys().cloned().collect(),
                _ => unreachable!(),
            }
        }
        let empty = || toml::Value::Table(toml::Table::new());
        let mut rollout = keys_of::<RolloutSection>(empty().try_into().unwrap());
        rollout.extend(["slots".into(), "action_scoring".into()]);
        let mut learner = keys_of::<LearnerSection>(empty().try_into().unwrap());
        learner.extend(["keep".into(), "critic".into(), "returns".into(), "value_clip".into()]);
        let warm = keys_of::<WarmStartSection>(empty().try_into().unwrap());
        for op in MODEL_OPERATORS {
            let section = match op.name {
                "warm_start" => &warm,
                n if n.ends_with("_update") => &learner,
                "rollout" | "expert_rollout" | "expert_prefixes" | "reflexion" | "join_expert" => &rollout,
                _ => continue,
            };
            for k in op.key_names() {
                assert!(section.contains(&k.to_string()), "{}: {k}", op.name);
            }
        }
    }

    /// Every reward and value step declares trajectory columns only (the plan checks them).
    #[test]
    fn annotating_steps_declare_trajectory_columns() {
        for op in MODEL_OPERATORS.iter().filter_map(StepColumns::of) {
            assert!(!op.reads().is_empty() && !op.writes().is_empty(), "{}", op.0.name);
        }
        assert_eq!(MODEL_OPERATORS.iter().filter_map(StepColumns::of).count(), 3);
    }
}
