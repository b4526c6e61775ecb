//! Pure math kernels ("operators") of trajflow. Each works on the slices of one
//! episode (or on one group's scalars), allocates nothing it does not return,
//! and writes 0.0 on every non-action token of a per-token output.
//!
//! - [`segment`]: token segment kinds ([`segment::Segment`]).
//! - [`action_boundaries`]: validated per-turn action token ranges.
//! - [`steps`]: folding of empty-action turns into decision steps.
//! - [`discounted_return`]: per-turn discounted returns.
//! - [`broadcast`]: per-turn or scalar values written onto action tokens.
//! - [`gae`]: generalised advantage estimation (token GAE, POAD/BAD, NTPO, TWOSOME).
//! - [`group_baseline`]: group statistics and RLOO/LOOP, Dr.GRPO, GRPO advantages.
//! - [`normalize`]: masked moments, parallel combination and whitening.
//! - [`reinforce_pp`]: REINFORCE++ token returns (veRL reset / AgentGym-RL carry).
//! - [`reward_transform`]: RetroAct reflector reward and clipping.
//! - [`kl`]: k1/k2/k3 KL estimators with veRL / OpenRLHF clamping.

pub mod action_boundaries;
pub mod broadcast;
pub mod discounted_return;
pub mod exact_moments;
pub mod gae;
pub mod group_baseline;
pub mod kl;
pub mod normalize;
pub mod reinforce_pp;
pub mod reward_transform;
pub mod segment;
pub mod steps;
