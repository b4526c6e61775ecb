//! Synthetic trajectory datasets for tests, benchmarks and demos: seeded, deterministic, in the
//! trajectory schema, shaped like multi-turn agent episodes (a prompt, then turns of action
//! tokens, template tokens and observation tokens; sparse or dense turn rewards; groups of K
//! rollouts per task; values and log-probs on action tokens). Not real model output: the token ids
//! are random; the structure is what the operators care about.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Int32Array, Int64Array, ListArray, RecordBatch, StringArray, UInt8Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field};

use crate::ops::segment::Segment;
use crate::schema::TableSchema;

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

#[derive(Default)]
struct Lists<T> {
    offsets: Vec<i32>,
    values: Vec<T>,
}

impl<T> Lists<T> {
    fn new() -> Self {
        Lists { offsets: vec![0], values: Vec::new() }
    }
    fn end_row(&mut self) {
        self.offsets.push(self.values.len() as i32);
    }
}

fn list(values: ArrayRef, offsets: Vec<i32>, item: DataType) -> ArrayRef {
    Arc::new(ListArray::new(Arc::new(Field::new("item", item, true)), OffsetBuffer::new(offsets.into()), values, None))
}

/// Generates the dataset as one record batch in the trajectory schema.
pub fn generate(spec: &SynthSpec) -> RecordBatch {
    let mut rng = SplitMix::new(spec.seed ^ 0x5eed);
    let n = spec.groups * spec.group_size;
    let (mut ep, mut task, mut group) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut tokens, mut segments, mut turns) = (Lists::<i32>::new(), Lists::<u8>::new(), Lists::<i32>::new());
    let (mut logp, mut values, mut rewards) = (Lists::<f32>::new(), Lists::<f32>::new(), Lists::<f32>::new());
    let (mut reward, mut success, mut terminated, mut truncated, mut bootstrap) =
        (vec![], vec![], vec![], vec![], vec![]);
    for g in 0..spec.groups {
        let difficulty = rng.unit();
        for k in 0..spec.group_size {
            ep.push(format!("{}-{g}-{k}", spec.id_prefix));
            task.push(format!("task-{g}"));
            group.push(format!("{}-g{g}", spec.id_prefix));
            let mut push = |tok: i32, seg: Segment, turn: i32, lp: f32, v: f32| {
                tokens.values.push(tok);
                segments.values.push(seg as u8);
                turns.values.push(turn);
                logp.values.push(lp);
                values.values.push(v);
            };
            for _ in 0..spec.prompt_tokens {
                push((rng.next_u64() % 49152) as i32, Segment::Prompt, 0, f32::NAN, 0.0);
            }
            let n_turns = rng.range(1, spec.max_turns);
            let solved = rng.unit() > difficulty;
            let cut = !solved && rng.unit() < 0.3;
            for t in 0..n_turns {
                for _ in 0..2 {
                    push(1, Segment::Template, t as i32, f32::NAN, 0.0);
                }
                for _ in 0..rng.range(0, spec.max_action_tokens) {
                    let lp = -3.0 * rng.unit();
                    let v = rng.unit();
                    push((rng.next_u64() % 49152) as i32, Segment::Action, t as i32, lp, v);
                }
                push(2, Segment::Template, t as i32, f32::NAN, 0.0);
                if t + 1 < n_turns {
                    for _ in 0..rng.range(1, spec.max_obs_tokens) {
                        push((rng.next_u64() % 49152) as i32, Segment::Observation, t as i32, f32::NAN, 0.0);
                    }
                }
                let last = t + 1 == n_turns;
                let r = if last && solved {
                    1.0
                } else if rng.unit() < 0.1 {
                    0.1
                } else {
                    0.0
                };
                rewards.values.push(r);
            }
            tokens.end_row();
            segments.end_row();
            turns.end_row();
            logp.end_row();
            values.end_row();
            rewards.end_row();
            reward.push(if solved { 1.0f32 } else { 0.0 });
            success.push(solved);
            terminated.push(!cut);
            truncated.push(cut);
            bootstrap.push(if cut { Some(0.5 * rng.unit()) } else { None });
        }
    }
    let schema = TableSchema::trajectory().to_arrow();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            match f.name().as_str() {
                "episode_id" => Arc::new(StringArray::from(ep.clone())),
                "task_id" => Arc::new(StringArray::from(task.clone())),
                "group_id" => Arc::new(StringArray::from(group.clone())),
                "policy_version" => Arc::new(Int64Array::from(vec![0i64; n])),
                "tokens" => list(
                    Arc::new(Int32Array::from(std::mem::take(&mut tokens.values))),
                    tokens.offsets.clone(),
                    DataType::Int32,
                ),
                "segments" => list(
                    Arc::new(UInt8Array::from(std::mem::take(&mut segments.values))),
                    segments.offsets.clone(),
                    DataType::UInt8,
                ),
                "turns" => list(
                    Arc::new(Int32Array::from(std::mem::take(&mut turns.values))),
                    turns.offsets.clone(),
                    DataType::Int32,
                ),
                "logp_behavior" => list(
                    Arc::new(Float32Array::from(std::mem::take(&mut logp.values))),
                    logp.offsets.clone(),
                    DataType::Float32,
                ),
                "values" => list(
                    Arc::new(Float32Array::from(std::mem::take(&mut values.values))),
                    values.offsets.clone(),
                    DataType::Float32,
                ),
                "turn_rewards" => list(
                    Arc::new(Float32Array::from(std::mem::take(&mut rewards.values))),
                    rewards.offsets.clone(),
                    DataType::Float32,
                ),
                "reward" => Arc::new(Float32Array::from(reward.clone())),
                "success" => Arc::new(BooleanArray::from(success.clone())),
                "terminated" => Arc::new(BooleanArray::from(terminated.clone())),
                "truncated" => Arc::new(BooleanArray::from(truncated.clone())),
                "bootstrap_value" => Arc::new(Float32Array::from(bootstrap.clone())),
                "env" => Arc::new(StringArray::from(vec![Some("synthetic"); n])),
                "seed" => Arc::new(Int64Array::from(vec![spec.seed as i64; n])),
                _ => arrow::array::new_null_array(f.data_type(), n),
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns).expect("the generator builds the trajectory schema")
}
