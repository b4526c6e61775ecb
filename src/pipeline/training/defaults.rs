//! The default of every training key that has one (serde's `default = "…"` functions). One
//! function per default, so a default changed here changes it everywhere it applies.

use super::sections::{
    ClipBound, ImitationTokens, KlEstimatorName, LogpOld, LossKind, RatioGranularity, RolloutSource, SpanLogp,
    StaleRows, TrainedRows,
};

pub(super) fn d_lora_r() -> i64 {
    8
}
pub(super) fn d_lora_alpha() -> f64 {
    16.0
}
pub(super) fn d_lora_targets() -> Vec<String> {
    ["q_proj", "k_proj", "v_proj", "o_proj"].map(String::from).to_vec()
}
pub(super) fn d_batch_tokens() -> usize {
    16384
}
pub(super) fn d_env() -> String {
    "household".into()
}
pub(super) fn d_source() -> RolloutSource {
    RolloutSource::Policy
}
pub(super) fn d_tasks() -> usize {
    8
}
pub(super) fn d_k() -> usize {
    4
}
pub(super) fn d_one() -> f64 {
    1.0
}
pub(super) fn d_turns() -> usize {
    20
}
pub(super) fn d_action_tokens() -> usize {
    16
}
pub(super) fn d_demos() -> usize {
    200
}
pub(super) fn d_ws_epochs() -> usize {
    4
}
pub(super) fn d_minibatch() -> usize {
    16
}
pub(super) fn d_rows() -> TrainedRows {
    TrainedRows::All
}
pub(super) fn d_ws_tokens() -> ImitationTokens {
    ImitationTokens::Actions
}
pub(super) fn d_extra_turns() -> usize {
    5
}
pub(super) fn d_kl_estimator() -> KlEstimatorName {
    KlEstimatorName::K3
}
pub(super) fn d_trials() -> usize {
    3
}
pub(super) fn d_memory() -> usize {
    3
}
pub(super) fn d_reflection_tokens() -> usize {
    64
}
pub(super) fn d_beta() -> f64 {
    0.1
}
pub(super) fn d_dagger_tasks() -> usize {
    200
}
pub(super) fn d_dagger_epochs() -> usize {
    2
}
pub(super) fn d_dagger_keep() -> f64 {
    0.5
}
pub(super) fn d_ws_lr() -> f64 {
    1e-3
}
pub(super) fn d_loss() -> LossKind {
    LossKind::Ppo
}
pub(super) fn d_advantages() -> String {
    "advantages".into()
}
pub(super) fn d_logp_old() -> LogpOld {
    LogpOld::Recompute
}
pub(super) fn d_clip() -> f64 {
    0.2
}
pub(super) fn d_granularity() -> RatioGranularity {
    RatioGranularity::Token
}
pub(super) fn d_span_logp() -> SpanLogp {
    SpanLogp::Sum
}
pub(super) fn d_clip_bound() -> ClipBound {
    ClipBound::Symmetric
}
pub(super) fn d_reduction() -> String {
    "token_mean".into()
}
pub(super) fn d_epochs() -> usize {
    1
}
pub(super) fn d_lr() -> f64 {
    1e-4
}
pub(super) fn d_disc_hidden() -> Vec<i64> {
    vec![256]
}
pub(super) fn d_implicit_epochs() -> usize {
    2
}
pub(super) fn d_disc_epochs() -> usize {
    4
}
pub(super) fn d_disc_minibatch() -> usize {
    32
}
pub(super) fn d_critic_hidden() -> Vec<i64> {
    vec![256]
}
pub(super) fn d_critic_lr() -> f64 {
    1e-3
}
pub(super) fn d_returns() -> String {
    "returns".into()
}
pub(super) fn d_stale() -> StaleRows {
    StaleRows::Drop
}
pub(super) fn d_checkpoint_every() -> u64 {
    1
}
pub(super) fn d_iterations() -> u64 {
    4
}
pub(super) fn d_eval() -> usize {
    32
}

pub(super) fn d_eval_every() -> u64 {
    1
}
