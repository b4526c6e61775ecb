//! The sections of a training pipeline, as parsed: one struct per TOML table (`[model]`,
//! `[rollout]`, `[warm_start]`, `[learner]`, `[critic]`, `[discriminator]`, `[implicit_reward]`,
//! `[run]`, `[stream]`) and the enums of their keys.
//!
//! Invariant: every struct rejects unknown keys (`deny_unknown_fields`) and every key but
//! `model.name` has a default ([`super::defaults`]); values are range-checked by [`super::rules`].

use serde::{Deserialize, Serialize};

use super::defaults::*;

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
