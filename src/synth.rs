//! Synthetic trajectory datasets for tests, benchmarks and demos: seeded, deterministic, in the
//! trajectory schema, shaped like multi-turn agent episodes (a prompt, then turns of action
//! tokens, template tokens and observation tokens; sparse or dense turn rewards; groups of K
//! rollouts per task; values and log-probs on action tokens). Not real model output: the token ids
//! are random; the structure is what the operators care about.

use arrow::array::RecordBatch;

use crate::ops::segment::Segment;
use crate::schema::builder::{EpisodeRow, TrajectoryBuilder};

/// Shape of a synthetic dataset.
#[derive(Debug, Clone)]
pub struct SynthSpec {
    /// Number of groups (tasks × iterations).
    pub groups: usize,
    /// Rollouts per group (K).
    pub group_size: usize,
    /// Turns per episode: uniform in [1, max_turns].
    pub max_turns: usize,
    /// Action tokens per turn: uniform in [0, max_action_tokens] (0 = an empty action).
    pub max_action_tokens: usize,
    /// Observation tokens per turn: uniform in [1, max_obs_tokens].
    pub max_obs_tokens: usize,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Seed.
    pub seed: u64,
    /// Prefix of episode and group ids (so that several files can hold disjoint data).
    pub id_prefix: String,
}

impl Default for SynthSpec {
    fn default() -> Self {
        SynthSpec {
            groups: 64,
            group_size: 6,
            max_turns: 6,
            max_action_tokens: 24,
            max_obs_tokens: 40,
            prompt_tokens: 64,
            seed: 0,
            id_prefix: "e".into(),
        }
    }
}

/// SplitMix64: a tiny, well-mixed, seedable generator (no dependency, stable across versions).
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi] (inclusive).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Generates the dataset as one record batch in the trajectory schema.
pub fn generate(spec: &SynthSpec) -> RecordBatch {
    let mut rng = SplitMix::new(spec.seed ^ 0x5eed);
    let mut out = TrajectoryBuilder::default();
    for g in 0..spec.groups {
        let difficulty = rng.unit();
        for k in 0..spec.group_size {
            let mut row = EpisodeRow {
                episode_id: format!("{}-{g}-{k}", spec.id_prefix),
                task_id: format!("task-{g}"),
                group_id: format!("{}-g{g}", spec.id_prefix),
                env: Some("synthetic".into()),
                seed: Some(spec.seed as i64),
                ..Default::default()
            };
            let (mut logp, mut values) = (Vec::new(), Vec::new());
            let mut push = |row: &mut EpisodeRow, tok: i32, seg: Segment, turn: i32, lp: f32, v: f32| {
                row.tokens.push(tok);
                row.segments.push(seg as u8);
                row.turns.push(turn);
                logp.push(lp);
                values.push(v);
            };
            for _ in 0..spec.prompt_tokens {
                push(&mut row, (rng.next_u64() % 49152) as i32, Segment::Prompt, 0, f32::NAN, 0.0);
            }
            let n_turns = rng.range(1, spec.max_turns);
            let solved = rng.unit() > difficulty;
            let cut = !solved && rng.unit() < 0.3;
            for t in 0..n_turns {
                for _ in 0..2 {
                    push(&mut row, 1, Segment::Template, t as i32, f32::NAN, 0.0);
                }
                for _ in 0..rng.range(0, spec.max_action_tokens) {
                    let lp = -3.0 * rng.unit();
                    let v = rng.unit();
                    push(&mut row, (rng.next_u64() % 49152) as i32, Segment::Action, t as i32, lp, v);
                }
                push(&mut row, 2, Segment::Template, t as i32, f32::NAN, 0.0);
                if t + 1 < n_turns {
                    for _ in 0..rng.range(1, spec.max_obs_tokens) {
                        push(&mut row, (rng.next_u64() % 49152) as i32, Segment::Observation, t as i32, f32::NAN, 0.0);
                    }
                }
                let r = if t + 1 == n_turns && solved {
                    1.0
                } else if rng.unit() < 0.1 {
                    0.1
                } else {
                    0.0
                };
                row.turn_rewards.push(r);
            }
            row.logp_behavior = Some(logp);
            row.values = Some(values);
            row.reward = if solved { 1.0 } else { 0.0 };
            row.success = Some(solved);
            row.terminated = !cut;
            row.truncated = cut;
            row.bootstrap_value = cut.then(|| 0.5 * rng.unit());
            out.push(row);
        }
    }
    out.finish()
}
