//! The training-loop sections of a pipeline file, for `trajflow run`: which model, how rollouts are
//! made, the optional imitation warm start, the learner and the loop itself. A pipeline without
//! them is a data pipeline (`reprocess`, `watch`); with them it is also a training pipeline, whose
//! `[[stage]]` graph runs on each iteration's rollouts between the rollout and the learner.
//!
//! ```toml
//! [model]
//! name = "small:household"    # a model SPEC (see `trajflow generate --help`)
//! [rollout]
//! env = "household"
//! source = "policy"           # policy | expert (SFT) | expert_prefixes (StepAgent) | policy_vs_expert (ETO) | reflexion (RetroAct)
//! tasks = 16                  # train-split tasks per iteration (cycling over the split)
//! k = 4                       # rollouts per task: one group, all from the same start state
//! [warm_start]                # optional: SFT on expert demonstrations before iteration 1
//! demos = 200
//! [learner]
//! loss = "ppo"                # ppo | nll | dpo (pairs best vs worst row per group) | clipped_is (RetroAct)
//! [critic]                    # optional: value head for GAE (POAD, PPO)
//! hidden = [256]
//! advantages = "advantages"   # per-token column written by the stages
//! [run]
//! iterations = 8
//! [stream]                    # optional: training on files instead (`watch --train`, `reprocess --train`)
//! groups_per_update = 8
//! max_staleness = 2           # versions; stale = "drop" | "truncate"
//! ```
//!
//! Invariants: every key has a default except `model.name`; unknown keys and out-of-range values
//! are rejected with the section and key named, before anything runs.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::reduction::Reduction;
use crate::error::{Error, Result};

/// `[model]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A model SPEC: `small:ENV`, a short name, a Hugging Face folder or a `.gguf` file.
    pub name: String,
    /// Padded tokens per forward pass when scoring and training.
    #[serde(default = "d_batch_tokens")]
    pub max_batch_tokens: usize,
    /// Train a LoRA adapter instead of every weight (the base is frozen; checkpoints also hold the
    /// adapter in PEFT's layout and load as base + merged adapter).
    #[serde(default)]
    pub lora: Option<LoraSection>,
    /// `float32`, or `bf16`: matrix products with bfloat16 operands, the rest and the weights in
    /// float32 (autocast; [`crate::model::precision`]).
    #[serde(default)]
    pub precision: crate::model::precision::Precision,
}

/// `[model.lora]`: a LoRA adapter on the decoder's projections.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSection {
    /// Rank r.
    #[serde(default = "d_lora_r")]
    pub r: i64,
    /// α (the update is scaled by α / r).
    #[serde(default = "d_lora_alpha")]
    pub alpha: f64,
    /// Dropout on the adapter's input (only 0 is accepted in runs: resumes must be exact).
    #[serde(default)]
    pub dropout: f64,
    /// Projections to adapt.
    #[serde(default = "d_lora_targets")]
    pub targets: Vec<String>,
}

/// Who plays the rollouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutSource {
    /// The policy being trained samples actions.
    Policy,
    /// The environment's expert plays (imitation data for SFT).
    Expert,
    /// StepAgent's inspection: the expert plays each task, and at every expert action the policy
    /// proposes its own action at the same prefix; each decision is a group of two one-step rows
    /// (expert reward 1; agent reward 1 if it chose the expert's action). No environment stepping.
    ExpertPrefixes,
    /// ETO's exploration: the policy plays each task `k` times and the expert's episode of the same
    /// start state joins the group; failed policy episodes are cut at the expert's turns +
    /// `extra_turns`.
    PolicyVsExpert,
    /// RetroAct's Reflexion trials: the policy plays each task up to `trials` times, writing a
    /// reflection after each failed trial that the next trial's prompt carries; planner rows (one
    /// per trial) and reflector rows (one per used reflection) are trained alike.
    Reflexion,
}

/// `[rollout]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSection {
    /// Environment name.
    #[serde(default = "d_env")]
    pub env: String,
    /// Who plays.
    #[serde(default = "d_source")]
    pub source: RolloutSource,
    /// Train-split tasks per iteration.
    #[serde(default = "d_tasks")]
    pub tasks: usize,
    /// Rollouts per task (a group).
    #[serde(default = "d_k")]
    pub k: usize,
    /// Sampling temperature.
    #[serde(default = "d_one")]
    pub temperature: f64,
    /// Top-k sampling (0 = off).
    #[serde(default)]
    pub top_k: i64,
    /// Top-p (nucleus) sampling (1 = off). The learner applies the same truncation (on its own
    /// logits), so a token it truncates away has log-prob −∞: RL pipelines sample untruncated.
    #[serde(default = "d_one")]
    pub top_p: f64,
    /// Turns per episode at most.
    #[serde(default = "d_turns")]
    pub max_turns: usize,
    /// Tokens per action at most.
    #[serde(default = "d_action_tokens")]
    pub max_action_tokens: usize,
    /// `policy_vs_expert`: failed policy episodes keep at most the expert's turns + this many.
    #[serde(default = "d_extra_turns")]
    pub extra_turns: usize,
    /// `reflexion`: trials per task at most (RetroAct: 10).
    #[serde(default = "d_trials")]
    pub trials: usize,
    /// `reflexion`: reflections a trial's prompt carries (RetroAct's code: the last 3).
    #[serde(default = "d_memory")]
    pub memory: usize,
    /// `reflexion`: tokens per reflection at most.
    #[serde(default = "d_reflection_tokens")]
    pub reflection_tokens: usize,
    /// Choose among the environment's admissible actions (constrained decoding; TWOSOME's and
    /// the ALFWorld agents' setting) instead of free text; evaluation does the same.
    #[serde(default)]
    pub admissible: bool,
    /// Episodes played at once (the generation batch); a finished episode's slot goes to the next
    /// episode at once. Unset: all of an iteration's episodes at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<usize>,
    /// With `admissible`: choose by scoring whole actions, their log-likelihood normalised by
    /// `"token"` count, `"word"` count (TWOSOME) or not (`"sum"`), instead of constrained decoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_scoring: Option<Normalization>,
    /// Keep each episode's keys and values between turns, so a turn feeds only the new
    /// observation (results equal up to floating-point rounding; memory: the conversation's keys
    /// and values per playing episode).
    #[serde(default)]
    pub prefix_cache: bool,
}

/// How an admissible action's summed log-likelihood is normalised when actions are scored whole
/// (`rollout.action_scoring`; the scoring is `rollout::action_scoring`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Normalization {
    /// Divided by its token count.
    Token,
    /// Divided by its word count (TWOSOME).
    Word,
    /// Not normalised (GLAM).
    Sum,
}

/// `[warm_start]`: SFT on expert demonstrations before the first iteration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmStartSection {
    /// Expert demonstrations (train-split tasks); 0 skips the warm start (e.g. when `model.name`
    /// is already a trained checkpoint).
    #[serde(default = "d_demos")]
    pub demos: usize,
    /// Passes over them.
    #[serde(default = "d_ws_epochs")]
    pub epochs: usize,
    /// Episodes per update.
    #[serde(default = "d_minibatch")]
    pub minibatch: usize,
    /// Learning rate.
    #[serde(default = "d_ws_lr")]
    pub lr: f64,
    /// Which tokens the NLL trains on: `actions` (the expert's actions only, as SFT usually does)
    /// or `all` (every token after the first: observations too, which the small from-scratch model
    /// needs to learn to copy names from its context; RetroAct's IL loss does not mask either).
    #[serde(default = "d_ws_tokens")]
    pub tokens: ImitationTokens,
    /// DAgger rounds after the SFT epochs (0 = none). Each round plays `dagger_tasks` new train
    /// tasks with the policy under expert correction (see [`crate::rollout::RolloutConfig::correction`]),
    /// adds those episodes to the data, and trains `dagger_epochs` more passes over all of it.
    #[serde(default)]
    pub dagger_rounds: usize,
    /// Episodes played per DAgger round.
    #[serde(default = "d_dagger_tasks")]
    pub dagger_tasks: usize,
    /// Passes over the aggregated data per DAgger round.
    #[serde(default = "d_dagger_epochs")]
    pub dagger_epochs: usize,
    /// Probability that a policy action the expert disagrees with is kept (untrained context, so
    /// the data shows recovery from the policy's own mistakes) rather than replaced.
    #[serde(default = "d_dagger_keep")]
    pub dagger_keep: f64,
    /// `reflexion` rollouts: train tasks the warm-started policy plays once (sampled) to collect
    /// failed trials; each failed trial paired with the expert's reflection (its minimal solving
    /// plan) is imitation data for the reflector, trained together with the demonstrations for
    /// `reflection_epochs` (RetroAct's stage 1 for the reflector; 0 = none).
    #[serde(default)]
    pub reflection_tasks: usize,
    /// Passes over demonstrations + reflections.
    #[serde(default = "d_dagger_epochs")]
    pub reflection_epochs: usize,
}

/// Which rows the learner trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainedRows {
    /// Every row.
    All,
    /// Rows with behaviour log-probs (the policy's own).
    Policy,
}

/// Which tokens an imitation warm start trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImitationTokens {
    /// The action tokens.
    Actions,
    /// Every token but the first.
    All,
}

/// The learner's loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// PPO's clipped surrogate over per-token advantages (O13); one epoch and one minibatch
    /// without clipping is REINFORCE/RLOO.
    Ppo,
    /// Negative log-likelihood of the action tokens (O21: SFT).
    Nll,
    /// DPO's sigmoid loss (O18) on (chosen, rejected) pairs: the best and worst row of each group
    /// by reward, log-probs summed over action tokens, against the policy at the start of the
    /// iteration as reference (StepAgent's cycle-start snapshot, ETO's per-iteration reference).
    Dpo,
    /// RetroAct's off-policy policy gradient (O20): `−w·R·log π` with the importance weight
    /// `w = clip(π/π_old, 1 − ε, 1 + ε)` detached (`clip` is ε), `R` the per-token advantage
    /// column; plus `imitation` (λ) times the NLL of one imitation row per trained row.
    ClippedIs,
}

/// Where `logp_old` of the PPO ratio comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogpOld {
    /// Recomputed by the learner under the current weights before the first epoch (LOOP).
    Recompute,
    /// The sampler's `logp_behavior` column.
    Behavior,
}

/// What one PPO importance ratio covers (see [`crate::train::spans`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RatioGranularity {
    /// One ratio per token.
    Token,
    /// One per turn (the policy's action in that turn).
    Turn,
    /// One per trajectory.
    Trajectory,
}

/// How a span's tokens combine into its log-prob (see [`crate::train::spans`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanLogp {
    /// Σ log π: the span's likelihood.
    Sum,
    /// (Σ log π)/n over its n trained tokens.
    Mean,
}

/// PPO's lower clip bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipBound {
    /// `[1 − ε, 1 + ε]`.
    Symmetric,
    /// LOOP's `[1/(1 + ε), 1 + ε]`.
    Loop,
    /// No clipping (RLOO, REINFORCE).
    None,
}

/// `[learner]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnerSection {
    /// The loss.
    #[serde(default = "d_loss")]
    pub loss: LossKind,
    /// Per-token advantage column (PPO).
    #[serde(default = "d_advantages")]
    pub advantages: String,
    /// Optional boolean column: rows with `false` are not trained on (LOOP's |A| filter).
    #[serde(default)]
    pub keep: Option<String>,
    /// Which rows are trained on: `all`, or `policy` (only rows the policy generated, i.e. with
    /// behaviour log-probs: expert rows joined for comparison are context for the stages only).
    #[serde(default = "d_rows")]
    pub rows: TrainedRows,
    /// Source of `logp_old`.
    #[serde(default = "d_logp_old")]
    pub logp_old: LogpOld,
    /// Clip ε.
    #[serde(default = "d_clip")]
    pub clip: f64,
    /// Lower clip bound.
    #[serde(default = "d_clip_bound")]
    pub clip_bound: ClipBound,
    /// PPO: what one importance ratio covers — `token` (default), `turn` (one action: LOOP's
    /// turn level, TWOSOME's action level) or `trajectory` (LOOP's bandit variant).
    #[serde(default = "d_granularity")]
    pub granularity: RatioGranularity,
    /// PPO with turn or trajectory ratios: a span's log-prob is the `sum` of its tokens' (the
    /// span's likelihood) or their `mean` (token-normalised, as TWOSOME scores actions).
    #[serde(default = "d_span_logp")]
    pub span_logp: SpanLogp,
    /// Loss reduction (`token_mean`, `seq_mean_token_mean`, ...).
    #[serde(default = "d_reduction")]
    pub reduction: String,
    /// Passes over each iteration's rows.
    #[serde(default = "d_epochs")]
    pub epochs: usize,
    /// Rows per minibatch (0 = all rows in one); DPO's pairs and RetroAct's (row, imitation row)
    /// pairs count as one.
    #[serde(default = "d_minibatch")]
    pub minibatch: usize,
    /// Learning rate (AdamW).
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// Linear warm-up of the rate over the learner's first N updates (0 = none): a fresh AdamW's
    /// first steps are as large as its rate whatever the gradient's scale.
    #[serde(default)]
    pub warmup: u64,
    /// AdamW weight decay.
    #[serde(default)]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 = none).
    #[serde(default = "d_one")]
    pub max_grad_norm: f64,
    /// Stop the epoch loop of an iteration once the k3 KL to `logp_old` exceeds this (0 = never;
    /// LOOP's KL-stop).
    #[serde(default)]
    pub kl_stop: f64,
    /// Drop a micro-batch's gradient when its k3 KL to `logp_old` exceeds this (0 = never;
    /// POAD's KL-skip, 0.02).
    #[serde(default)]
    pub kl_skip: f64,
    /// DPO's β (the implicit reward's scale).
    #[serde(default = "d_beta")]
    pub beta: f64,
    /// DPO's label smoothing (conservative DPO; 0 = plain DPO).
    #[serde(default)]
    pub label_smoothing: f64,
    /// DPO: weight of an NLL term on the chosen rows' action tokens (RPO-style; 0 = plain DPO).
    #[serde(default)]
    pub chosen_nll: f64,
    /// `clipped_is`: λ, the weight of RetroAct's imitation regulariser (0 = none). The warm
    /// start's rows (demonstrations and reflections, stored in `RUN/imitation`) are drawn with
    /// replacement, one per trained row, and their NLL (same reduction) is added with weight λ.
    #[serde(default)]
    pub imitation: f64,
    /// `ppo`: β of a KL-to-reference penalty added to the loss (0 = none; GRPO's β = 0.04,
    /// veRL's `use_kl_loss`). The reference is the policy after the warm start (checkpoint 0).
    #[serde(default)]
    pub kl_coef: f64,
    /// `ppo`: weight of an entropy bonus `− c·H(π)` on the trained tokens (POAD's `c_ent`, 0.01 in
    /// its code; 0 = none). H is the entropy of the distribution the tokens were drawn from.
    #[serde(default)]
    pub entropy_coef: f64,
    /// The penalty's per-token estimator: `k1`, `k2` or `k3` (GRPO's, ≥ 0).
    #[serde(default = "d_kl_estimator")]
    pub kl_estimator: KlEstimatorName,
}

/// A KL estimator's config name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlEstimatorName {
    /// `logp − ref`.
    K1,
    /// `½(logp − ref)²`.
    K2,
    /// `exp(ref − logp) − (ref − logp) − 1`.
    K3,
}

/// The hidden states a critic's head reads (`[critic] backbone`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CriticBackbone {
    /// The policy's own, detached.
    #[default]
    Policy,
    /// A frozen copy of the policy before RL (checkpoint 0).
    Frozen,
}

/// How a fresh critic's output layer starts (`[critic] output_init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CriticOutputInit {
    /// Zero weights and bias: every value starts at 0, so the first advantages are the returns
    /// themselves (their signs follow the outcomes) and value clipping moves the values from 0.
    #[default]
    Zero,
    /// libtorch's default (Kaiming-uniform) init, as every other layer: the first values are
    /// arbitrary, of the order of the hidden states' scale.
    Uniform,
}

/// `[critic]`: a value head on the policy's detached hidden states (POAD, PPO with GAE).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriticSection {
    /// Inner widths of the MLP (POAD: `[1024, 512]`).
    #[serde(default = "d_critic_hidden")]
    pub hidden: Vec<i64>,
    /// Learning rate of the head's own AdamW.
    #[serde(default = "d_critic_lr")]
    pub lr: f64,
    /// Value clipping ε around the rollout-time value (0 = none).
    #[serde(default = "d_clip")]
    pub value_clip: f64,
    /// Whose hidden states the head reads: the `policy`'s (detached; they move with every update)
    /// or a `frozen` copy of the policy before RL (checkpoint 0), as POAD's critic reads the
    /// frozen base model: the head then fits a stationary target.
    #[serde(default)]
    pub backbone: CriticBackbone,
    /// How the head's output layer starts (`zero`, the default, or libtorch's `uniform`).
    #[serde(default)]
    pub output_init: CriticOutputInit,
    /// Per-token value targets written by the stages (the GAE stage's `returns`).
    #[serde(default = "d_returns")]
    pub returns: String,
}

/// `[discriminator]`: StepAgent's inverse-RL reward model on expert-prefix rows
/// (`rollout.source = "expert_prefixes"`): a scalar head on the policy's detached final hidden
/// states (mean over the action tokens), trained each iteration to tell agent actions from expert
/// ones; every row's reward then becomes −log D(s, a).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscriminatorSection {
    /// Inner widths of the MLP.
    #[serde(default = "d_disc_hidden")]
    pub hidden: Vec<i64>,
    /// Learning rate of the head's own AdamW.
    #[serde(default = "d_critic_lr")]
    pub lr: f64,
    /// Passes over each iteration's rows.
    #[serde(default = "d_disc_epochs")]
    pub epochs: usize,
    /// Rows per update.
    #[serde(default = "d_disc_minibatch")]
    pub minibatch: usize,
}

/// `[implicit_reward]`: StepAgent's implicit step reward fed into PPO, on expert-prefix rows
/// (`rollout.source = "expert_prefixes"`): each iteration a copy of the policy is trained with
/// step-level DPO (expert ≻ agent) against the policy as reference, and every row's reward then
/// becomes that copy's implicit reward β·log π_copy(a|s)/π(a|s).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImplicitRewardSection {
    /// DPO's β, which also scales the reward.
    #[serde(default = "d_beta")]
    pub beta: f64,
    /// Weight of an NLL term on the chosen (expert) side of the copy's DPO loss.
    #[serde(default)]
    pub chosen_nll: f64,
    /// Learning rate of the copy's AdamW.
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// Passes over each iteration's pairs.
    #[serde(default = "d_implicit_epochs")]
    pub epochs: usize,
    /// Pairs per update.
    #[serde(default = "d_minibatch")]
    pub minibatch: usize,
}

/// `[run]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Iterations (policy updates from new rollouts); 0 runs the warm start and its evaluation
    /// only (a checkpoint 0 that other runs can start from, or fork with `--resume --set ...`).
    #[serde(default = "d_iterations")]
    pub iterations: u64,
    /// Seed of everything random: initial weights, sampling, minibatch order.
    #[serde(default)]
    pub seed: u64,
    /// Dev-split tasks played greedily after the warm start and every `eval_every` iterations
    /// (0 = none).
    #[serde(default = "d_eval")]
    pub eval_tasks: usize,
    /// Evaluate after every this many iterations (at least 1), and always after the last: on a
    /// small machine greedy evaluation of hundreds of tasks costs more than an iteration's
    /// rollouts and update.
    #[serde(default = "d_eval_every")]
    pub eval_every: u64,
}

/// What a stream learner does with rows older than `max_staleness` policy versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StaleRows {
    /// They are not trained on (counted in the metrics).
    Drop,
    /// They are trained with each action token's advantage multiplied by the truncated
    /// importance weight `min(1, π(a)/μ(a))` (π the learner's current policy, μ the behaviour
    /// policy's `logp_behavior`), as V-trace/IMPALA do.
    Truncate,
}

/// `[stream]`: how `watch --train` and `reprocess --train` train on trajectory files written by
/// others (actors, a production agent, a log) instead of the pipeline's own rollouts.
///
/// The learner sees rows in a fixed order: file by file (in the order they were ingested), row by
/// row. A group is *complete* when its `group_size`-th distinct episode arrives; complete groups
/// queue in that order, and every `groups_per_update` of them make one update (the learner's
/// epochs and minibatches over their rows) and one new policy version. Because the order is a
/// function of the files alone, one file at a time and all files at once train identically.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSection {
    /// Episodes per group (default: `rollout.k`).
    #[serde(default)]
    pub group_size: Option<usize>,
    /// Complete groups per update (default: `rollout.tasks`).
    #[serde(default)]
    pub groups_per_update: Option<usize>,
    /// A group still incomplete once this many more files have been ingested after the file of
    /// its first episode is queued as it is, a partial group, as LOOP does with late rollouts
    /// (0 = wait for ever). Counted in files, not seconds, so that a restarted `watch` (and
    /// `reprocess`) makes exactly the same decisions.
    #[serde(default)]
    pub partial_after: u64,
    /// Rows whose `policy_version` is more than this many versions behind the learner's are stale
    /// (none: no bound). The learner's version starts at `initial_version` and counts updates.
    #[serde(default)]
    pub max_staleness: Option<u64>,
    /// What happens to stale rows.
    #[serde(default = "d_stale")]
    pub stale: StaleRows,
    /// The policy version of the model the stream starts from (the actors' version of it).
    #[serde(default)]
    pub initial_version: i64,
    /// Checkpoint after every this many updates (a restart re-trains at most this many − 1).
    #[serde(default = "d_checkpoint_every")]
    pub checkpoint_every: u64,
}

impl StreamSection {
    /// Episodes per group.
    pub fn group_size(&self, rollout: &RolloutSection) -> usize {
        self.group_size.unwrap_or(rollout.k)
    }

    /// Complete groups per update.
    pub fn groups_per_update(&self, rollout: &RolloutSection) -> usize {
        self.groups_per_update.unwrap_or(rollout.tasks)
    }
}

/// All training-loop sections of a pipeline file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingSpec {
    /// `[model]`.
    pub model: ModelSection,
    /// `[rollout]`.
    pub rollout: RolloutSection,
    /// `[warm_start]`, if any.
    pub warm_start: Option<WarmStartSection>,
    /// `[learner]`.
    pub learner: LearnerSection,
    /// `[critic]`, if any.
    pub critic: Option<CriticSection>,
    /// `[discriminator]`, if any.
    pub discriminator: Option<DiscriminatorSection>,
    /// `[implicit_reward]`, if any.
    pub implicit_reward: Option<ImplicitRewardSection>,
    /// `[run]`.
    pub run: RunSection,
    /// `[stream]`: training on files (`watch --train`, `reprocess --train`).
    pub stream: StreamSection,
}

fn d_lora_r() -> i64 {
    8
}
fn d_lora_alpha() -> f64 {
    16.0
}
fn d_lora_targets() -> Vec<String> {
    ["q_proj", "k_proj", "v_proj", "o_proj"].map(String::from).to_vec()
}
fn d_batch_tokens() -> usize {
    16384
}
fn d_env() -> String {
    "household".into()
}
fn d_source() -> RolloutSource {
    RolloutSource::Policy
}
fn d_tasks() -> usize {
    8
}
fn d_k() -> usize {
    4
}
fn d_one() -> f64 {
    1.0
}
fn d_turns() -> usize {
    20
}
fn d_action_tokens() -> usize {
    16
}
fn d_demos() -> usize {
    200
}
fn d_ws_epochs() -> usize {
    4
}
fn d_minibatch() -> usize {
    16
}
fn d_rows() -> TrainedRows {
    TrainedRows::All
}
fn d_ws_tokens() -> ImitationTokens {
    ImitationTokens::Actions
}
fn d_extra_turns() -> usize {
    5
}
fn d_kl_estimator() -> KlEstimatorName {
    KlEstimatorName::K3
}
fn d_trials() -> usize {
    3
}
fn d_memory() -> usize {
    3
}
fn d_reflection_tokens() -> usize {
    64
}
fn d_beta() -> f64 {
    0.1
}
fn d_dagger_tasks() -> usize {
    200
}
fn d_dagger_epochs() -> usize {
    2
}
fn d_dagger_keep() -> f64 {
    0.5
}
fn d_ws_lr() -> f64 {
    1e-3
}
fn d_loss() -> LossKind {
    LossKind::Ppo
}
fn d_advantages() -> String {
    "advantages".into()
}
fn d_logp_old() -> LogpOld {
    LogpOld::Recompute
}
fn d_clip() -> f64 {
    0.2
}
fn d_granularity() -> RatioGranularity {
    RatioGranularity::Token
}
fn d_span_logp() -> SpanLogp {
    SpanLogp::Sum
}
fn d_clip_bound() -> ClipBound {
    ClipBound::Symmetric
}
fn d_reduction() -> String {
    "token_mean".into()
}
fn d_epochs() -> usize {
    1
}
fn d_lr() -> f64 {
    1e-4
}
fn d_disc_hidden() -> Vec<i64> {
    vec![256]
}
fn d_implicit_epochs() -> usize {
    2
}
fn d_disc_epochs() -> usize {
    4
}
fn d_disc_minibatch() -> usize {
    32
}
fn d_critic_hidden() -> Vec<i64> {
    vec![256]
}
fn d_critic_lr() -> f64 {
    1e-3
}
fn d_returns() -> String {
    "returns".into()
}
fn d_stale() -> StaleRows {
    StaleRows::Drop
}
fn d_checkpoint_every() -> u64 {
    1
}
fn d_iterations() -> u64 {
    4
}
fn d_eval() -> usize {
    32
}

fn d_eval_every() -> u64 {
    1
}

impl TrainingSpec {
    /// The training sections of `file`'s top-level table, or `None` if it has no `[model]`
    /// (a data pipeline). Removes the sections it reads from `table`.
    pub fn take(file: &Path, table: &mut toml::Table) -> Result<Option<TrainingSpec>> {
        let names = [
            "model",
            "rollout",
            "warm_start",
            "learner",
            "critic",
            "discriminator",
            "implicit_reward",
            "run",
            "stream",
        ];
        if !table.contains_key("model") {
            if let Some(n) = names.iter().find(|n| table.contains_key(**n)) {
                return Err(spec_err(file, n, Some("model"), "a training pipeline needs a [model] section".into()));
            }
            return Ok(None);
        }
        fn section<T: serde::de::DeserializeOwned>(
            file: &Path,
            table: &mut toml::Table,
            name: &str,
        ) -> Result<Option<T>> {
            let Some(v) = table.remove(name) else { return Ok(None) };
            let t = match v {
                toml::Value::Table(t) => t,
                _ => return Err(spec_err(file, name, None, "must be a table".into())),
            };
            crate::stages::params::parse::<T>(&t)
                .map(Some)
                .map_err(|e| spec_err(file, name, (!e.key.is_empty()).then_some(e.key.as_str()), e.message))
        }
        let empty = || toml::Value::Table(toml::Table::new());
        let spec = TrainingSpec {
            model: section(file, table, "model")?.expect("checked above"),
            rollout: section(file, table, "rollout")?.unwrap_or_else(|| empty().try_into().expect("all defaults")),
            warm_start: section(file, table, "warm_start")?,
            learner: section(file, table, "learner")?.unwrap_or_else(|| empty().try_into().expect("all defaults")),
            critic: section(file, table, "critic")?,
            discriminator: section(file, table, "discriminator")?,
            implicit_reward: section(file, table, "implicit_reward")?,
            run: section(file, table, "run")?.unwrap_or_else(|| empty().try_into().expect("all defaults")),
            stream: section(file, table, "stream")?.unwrap_or_else(|| empty().try_into().expect("all defaults")),
        };
        spec.check(file)?;
        Ok(Some(spec))
    }

    /// The loss reduction.
    pub fn reduction(&self) -> Reduction {
        self.learner.reduction.parse().expect("checked at parse time")
    }

    fn check(&self, file: &Path) -> Result<()> {
        let bad = |section: &str, key: &str, message: String| Err(spec_err(file, section, Some(key), message));
        if self.model.name.is_empty() {
            return bad("model", "name", "must name a model".into());
        }
        if let Some(lo) = &self.model.lora {
            let known = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
            if let Some(t) = lo.targets.iter().find(|t| !known.contains(&t.as_str())) {
                return bad("model", "lora", format!("target '{t}' is not a projection (known: {})", known.join(", ")));
            }
            if lo.r < 1 || lo.targets.is_empty() || !(lo.alpha.is_finite() && lo.alpha > 0.0) {
                return bad("model", "lora", "r must be ≥ 1, alpha > 0 and targets non-empty".into());
            }
            if lo.dropout != 0.0 {
                return bad(
                    "model",
                    "lora",
                    "dropout must be 0 in runs (unseeded dropout would break bit-exact resume)".into(),
                );
            }
        }
        if self.rollout.action_scoring.is_some() && !self.rollout.admissible {
            return bad("rollout", "action_scoring", "scores admissible actions: set rollout.admissible = true".into());
        }
        if let Err(e) = crate::env::by_name(&self.rollout.env) {
            return bad("rollout", "env", e.to_string());
        }
        let r = &self.rollout;
        for (key, v) in
            [("tasks", r.tasks), ("k", r.k), ("max_turns", r.max_turns), ("max_action_tokens", r.max_action_tokens)]
        {
            if v == 0 {
                return bad("rollout", key, "must be at least 1".into());
            }
        }
        if !(r.temperature.is_finite() && r.temperature > 0.0) {
            return bad("rollout", "temperature", format!("must be > 0, got {}", r.temperature));
        }
        if !(r.top_p > 0.0 && r.top_p <= 1.0) || r.top_k < 0 {
            return bad(
                "rollout",
                "top_p",
                format!("top_p must be in (0, 1] and top_k ≥ 0, got {} and {}", r.top_p, r.top_k),
            );
        }
        if self.run.eval_every == 0 {
            return bad("run", "eval_every", "must be at least 1".into());
        }
        let l = &self.learner;
        if let Err(e) = l.reduction.parse::<Reduction>() {
            return bad("learner", "reduction", e);
        }
        if !(l.clip.is_finite() && l.clip > 0.0 && (l.clip < 1.0 || l.clip_bound != ClipBound::Symmetric)) {
            return bad("learner", "clip", format!("must be in (0, 1), got {}", l.clip));
        }
        if l.epochs == 0 {
            return bad("learner", "epochs", "must be at least 1".into());
        }
        if !(l.beta.is_finite() && l.beta > 0.0) {
            return bad("learner", "beta", format!("must be positive, got {}", l.beta));
        }
        if !(l.chosen_nll.is_finite() && l.chosen_nll >= 0.0) {
            return bad("learner", "chosen_nll", format!("must be a finite number ≥ 0, got {}", l.chosen_nll));
        }
        if !(0.0..0.5).contains(&l.label_smoothing) {
            return bad("learner", "label_smoothing", format!("must be in [0, 0.5), got {}", l.label_smoothing));
        }
        for (key, v) in [
            ("lr", l.lr),
            ("max_grad_norm", l.max_grad_norm),
            ("kl_stop", l.kl_stop),
            ("kl_skip", l.kl_skip),
            ("weight_decay", l.weight_decay),
            ("entropy_coef", l.entropy_coef),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad("learner", key, format!("must be a finite number ≥ 0, got {v}"));
            }
        }
        if let Some(w) = &self.warm_start {
            if w.demos > 0 && (w.epochs == 0 || w.minibatch == 0 || !(w.lr.is_finite() && w.lr > 0.0)) {
                return bad("warm_start", "epochs", "epochs, minibatch and lr must be positive".into());
            }
            if w.dagger_rounds > 0 && (w.dagger_tasks == 0 || w.dagger_epochs == 0) {
                return bad("warm_start", "dagger_tasks", "dagger_tasks and dagger_epochs must be positive".into());
            }
            if !(0.0..1.0).contains(&w.dagger_keep) {
                return bad("warm_start", "dagger_keep", format!("must be in [0, 1), got {}", w.dagger_keep));
            }
        }
        if let Some(c) = &self.critic {
            if !(c.lr.is_finite() && c.lr > 0.0) || c.hidden.iter().any(|&w| w < 1) {
                return bad("critic", "lr", "lr must be positive and hidden widths at least 1".into());
            }
            if !(c.value_clip.is_finite() && c.value_clip >= 0.0) {
                return bad("critic", "value_clip", format!("must be ≥ 0, got {}", c.value_clip));
            }
        }
        if let Some(d) = &self.discriminator {
            if !(d.lr.is_finite() && d.lr > 0.0) || d.hidden.iter().any(|&w| w < 1) || d.epochs == 0 || d.minibatch == 0
            {
                return bad(
                    "discriminator",
                    "lr",
                    "lr, epochs and minibatch must be positive, hidden widths at least 1".into(),
                );
            }
            if self.rollout.source != RolloutSource::ExpertPrefixes {
                return bad(
                    "discriminator",
                    "hidden",
                    "needs [rollout] source = \"expert_prefixes\" (one-step rows)".into(),
                );
            }
        }
        if l.granularity != RatioGranularity::Token && l.loss != LossKind::Ppo {
            return bad(
                "learner",
                "granularity",
                "turn and trajectory ratios are PPO's (learner.loss = \"ppo\")".into(),
            );
        }
        if let Some(ir) = &self.implicit_reward {
            if !(ir.beta.is_finite() && ir.beta > 0.0) {
                return bad("implicit_reward", "beta", format!("must be positive, got {}", ir.beta));
            }
            if !(ir.lr.is_finite() && ir.lr > 0.0) || ir.epochs == 0 || ir.minibatch == 0 {
                return bad("implicit_reward", "lr", "lr, epochs and minibatch must be positive".into());
            }
            if !(ir.chosen_nll.is_finite() && ir.chosen_nll >= 0.0) {
                return bad("implicit_reward", "chosen_nll", format!("must be ≥ 0, got {}", ir.chosen_nll));
            }
            if self.rollout.source != RolloutSource::ExpertPrefixes {
                return bad(
                    "implicit_reward",
                    "beta",
                    "needs [rollout] source = \"expert_prefixes\" (expert and agent actions at the same prefix)".into(),
                );
            }
            if self.discriminator.is_some() || l.loss == LossKind::Dpo {
                return bad(
                    "implicit_reward",
                    "beta",
                    "rewrites the rows' rewards for a policy-gradient learner: not with [discriminator] or \
                     learner.loss = \"dpo\" (which trains on the pairs directly)"
                        .into(),
                );
            }
        }
        for (key, v) in [("trials", r.trials), ("memory", r.memory), ("reflection_tokens", r.reflection_tokens)] {
            if v == 0 {
                return bad("rollout", key, "must be at least 1".into());
            }
        }
        if r.source == RolloutSource::Reflexion {
            if r.k != 1 {
                return bad(
                    "rollout",
                    "k",
                    format!("Reflexion plays one chain of trials per task: k must be 1, got {}", r.k),
                );
            }
            if l.loss == LossKind::Dpo {
                return bad(
                    "learner",
                    "loss",
                    "DPO pairs rows of a group; Reflexion groups mix planner and reflector rows".into(),
                );
            }
        }
        let warm_rows = self.warm_start.as_ref().is_some_and(|w| w.demos > 0);
        if !(l.imitation.is_finite() && l.imitation >= 0.0) {
            return bad("learner", "imitation", format!("must be a finite number ≥ 0, got {}", l.imitation));
        }
        if l.imitation > 0.0 && matches!(self.reduction(), Reduction::TokenMean | Reduction::AllPositionsMean) {
            return bad(
                "learner",
                "reduction",
                "with the imitation regulariser the reduction must be per row (seq_mean_token_mean, seq_mean_token_sum) \
                 or sum, so that its two terms split into micro-batches exactly"
                    .into(),
            );
        }
        if l.imitation > 0.0 && (l.loss != LossKind::ClippedIs || !warm_rows) {
            return bad(
                "learner",
                "imitation",
                "the imitation regulariser needs loss = \"clipped_is\" and a [warm_start] with demos > 0".into(),
            );
        }
        if !(l.kl_coef.is_finite() && l.kl_coef >= 0.0) {
            return bad("learner", "kl_coef", format!("must be a finite number ≥ 0, got {}", l.kl_coef));
        }
        if l.kl_coef > 0.0 && l.loss != LossKind::Ppo {
            return bad("learner", "kl_coef", "the KL-to-reference penalty is a term of loss = \"ppo\"".into());
        }
        let st = &self.stream;
        for (key, v) in [("group_size", st.group_size), ("groups_per_update", st.groups_per_update)] {
            if v == Some(0) {
                return bad("stream", key, "must be at least 1".into());
            }
        }
        if st.checkpoint_every == 0 {
            return bad("stream", "checkpoint_every", "must be at least 1".into());
        }
        if st.stale == StaleRows::Truncate && !matches!(l.loss, LossKind::Ppo | LossKind::ClippedIs) {
            return bad(
                "stream",
                "stale",
                "\"truncate\" weights per-token advantages: it needs loss = \"ppo\" or \"clipped_is\"".into(),
            );
        }
        if let Some(w) = self.warm_start.as_ref().filter(|w| w.reflection_tasks > 0) {
            if r.source != RolloutSource::Reflexion || w.reflection_epochs == 0 || w.demos == 0 {
                return bad(
                    "warm_start",
                    "reflection_tasks",
                    "needs [rollout] source = \"reflexion\", demos > 0 and reflection_epochs ≥ 1".into(),
                );
            }
        }
        Ok(())
    }
}

fn spec_err(file: &Path, section: &str, key: Option<&str>, message: String) -> Error {
    Error::Spec { file: file.to_path_buf(), stage: Some(format!("[{section}]")), key: key.map(str::to_string), message }
}

/// Applies `--set KEY=VALUE` overrides to a pipeline file's text. KEY is a dotted path
/// (`learner.lr`, `rollout.k`; `stage.ID.KEY` is the key of the `[[stage]]` with id ID); `model`
/// and `env` are short for `model.name` and `rollout.env`, and setting `env` also retargets a
/// `small:ENV` model. VALUE is read as TOML (`0.5`, `true`,
/// `"x"`), or as a string when it is not valid TOML.
pub fn apply_sets(file: &Path, text: &str, sets: &[String]) -> Result<String> {
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| Error::Spec {
        file: file.to_path_buf(),
        stage: None,
        key: None,
        message: e.to_string(),
    })?;
    for set in sets {
        let (key, value) =
            set.split_once('=').ok_or_else(|| Error::Usage(format!("--set {set}: expected KEY=VALUE")))?;
        let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_string()));
        let path: Vec<&str> = match key {
            "model" => vec!["model", "name"],
            "env" => vec!["rollout", "env"],
            k => k.split('.').collect(),
        };
        if key == "env" {
            let model = doc.get_mut("model").and_then(|m| m.get_mut("name"));
            if let Some(toml::Value::String(name)) = model {
                if name.starts_with("small:") {
                    *name = format!("small:{}", value.as_str().unwrap_or_default());
                }
            }
        }
        // `stage.ID.KEY` addresses the `[[stage]]` whose id is ID.
        let (mut at, path) = match path.as_slice() {
            ["stage", id, rest @ ..] if !rest.is_empty() => {
                let stage = doc
                    .get_mut("stage")
                    .and_then(toml::Value::as_array_mut)
                    .and_then(|stages| {
                        stages
                            .iter_mut()
                            .filter_map(toml::Value::as_table_mut)
                            .find(|t| t.get("id").and_then(toml::Value::as_str) == Some(*id))
                    })
                    .ok_or_else(|| Error::Usage(format!("--set {key}: no [[stage]] with id '{id}'")))?;
                (stage, rest.to_vec())
            }
            _ => (&mut doc, path.clone()),
        };
        for part in &path[..path.len() - 1] {
            at = at
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| Error::Usage(format!("--set {key}: '{part}' is not a table")))?;
        }
        at.insert(path[path.len() - 1].to_string(), value);
    }
    Ok(toml::to_string(&doc).expect("a TOML table serialises"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<TrainingSpec>> {
        let mut t: toml::Table = toml::from_str(text).unwrap();
        TrainingSpec::take(Path::new("p.toml"), &mut t)
    }

    #[test]
    fn defaults_fill_everything_but_the_model() {
        let s = parse("[model]\nname = \"small:household\"\n").unwrap().unwrap();
        assert_eq!(s.rollout.k, 4);
        assert_eq!(s.learner.loss, LossKind::Ppo);
        assert!(s.warm_start.is_none());
        assert!(parse("name = \"x\"\n").unwrap().is_none());
    }

    #[test]
    fn errors_name_section_and_key() {
        let e = parse("[model]\nname = \"m\"\n[learner]\nlr = -1.0\n").unwrap_err().to_string();
        assert!(e.contains("[learner]") && e.contains("lr"), "{e}");
        let e = parse("[model]\nname = \"m\"\n[rollout]\nkk = 3\n").unwrap_err().to_string();
        assert!(e.contains("[rollout]") && e.contains("kk"), "{e}");
        let e = parse("[rollout]\nk = 3\n").unwrap_err().to_string();
        assert!(e.contains("[model]") || e.contains("model"), "{e}");
        let e = parse("[model]\nname = \"m\"\n[learner]\nreduction = \"median\"\n").unwrap_err().to_string();
        assert!(e.contains("reduction"), "{e}");
    }

    #[test]
    fn stream_section_defaults_and_checks() {
        let s = parse("[model]\nname = \"m\"\n[rollout]\nk = 6\ntasks = 3\n").unwrap().unwrap();
        assert_eq!((s.stream.group_size(&s.rollout), s.stream.groups_per_update(&s.rollout)), (6, 3));
        assert_eq!((s.stream.stale, s.stream.checkpoint_every, s.stream.max_staleness), (StaleRows::Drop, 1, None));
        for (text, key) in [
            ("[stream]\ngroups_per_update = 0\n", "groups_per_update"),
            ("[stream]\ncheckpoint_every = 0\n", "checkpoint_every"),
            ("[stream]\nstale = \"truncate\"\n[learner]\nloss = \"dpo\"\n", "stale"),
            ("[stream]\nstale = \"later\"\n", "stale"),
        ] {
            let e = parse(&format!("[model]\nname = \"m\"\n{text}")).unwrap_err().to_string();
            assert!(e.contains("[stream]") && e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn sets_override_dotted_keys_and_shorthands() {
        let text = "[model]\nname = \"small:household\"\n[learner]\nlr = 0.1\n";
        let out = apply_sets(
            Path::new("p.toml"),
            text,
            &["learner.lr=0.5".into(), "rollout.k=2".into(), "env=household".into()],
        )
        .unwrap();
        let s = parse(&out).unwrap().unwrap();
        assert_eq!(s.learner.lr, 0.5);
        assert_eq!(s.rollout.k, 2);
        let staged = "name = \"x\"\n[[stage]]\nid = \"a\"\nop = \"broadcast\"\n[[stage]]\nid = \"b\"\nop = \"kl\"\n";
        let out = apply_sets(Path::new("p.toml"), staged, &["stage.b.kind=\"k3\"".into()]).unwrap();
        let t: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(t["stage"][1]["kind"].as_str(), Some("k3"));
        assert!(t["stage"][0].get("kind").is_none());
        assert!(apply_sets(Path::new("p.toml"), staged, &["stage.c.kind=1".into()]).is_err());
        let out = apply_sets(Path::new("p.toml"), text, &["model=/some/folder".into()]).unwrap();
        assert!(out.contains("/some/folder"));
        assert!(apply_sets(Path::new("p.toml"), text, &["nokey".into()]).is_err());
    }
}
