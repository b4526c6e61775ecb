//! Building trajectory-table batches row by row: the one place that lays out episodes in the
//! columns of `schemas/trajectory.v1.json` (importers, the synthetic generator and, later, the
//! rollout engine all push [`EpisodeRow`]s here). Columns a row does not set are null.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float32Array, Int64Array, ListArray, RecordBatch, StringArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::Field;

use super::TableSchema;
use crate::model::drawn::Shape;
use crate::model::scored_choice::ScoredChoice;

/// One episode, as stored.
#[derive(Debug, Clone, Default)]
pub struct EpisodeRow {
    /// Episode id (unique).
    pub episode_id: String,
    /// Task id.
    pub task_id: String,
    /// Group id.
    pub group_id: String,
    /// Reflexion trial (RetroAct): the trial a planner row played, or the failed trial a
    /// reflector row reflects on.
    pub trial_index: Option<i32>,
    /// Policy version.
    pub policy_version: i64,
    /// Token ids.
    pub tokens: Vec<i32>,
    /// Per-token segment codes.
    pub segments: Vec<u8>,
    /// Per-token turn indices.
    pub turns: Vec<i32>,
    /// Per-token behaviour log-probs (None = null column value).
    pub logp_behavior: Option<Vec<f32>>,
    /// Per-token values.
    pub values: Option<Vec<f32>>,
    /// One reward per turn.
    pub turn_rewards: Vec<f32>,
    /// Episode outcome.
    pub reward: f32,
    /// Reflector rows (RetroAct): the outcome of the trial the reflection was written after
    /// (`reward` is then the outcome of the trial that followed it); null on every other row.
    pub prev_trial_reward: Option<f32>,
    /// Success, where known.
    pub success: Option<bool>,
    /// Whether the environment ended the episode.
    pub terminated: bool,
    /// Whether a limit cut it.
    pub truncated: bool,
    /// V(s_T) for truncated episodes.
    pub bootstrap_value: Option<f32>,
    /// Provenance: environment.
    pub env: Option<String>,
    /// Provenance: seed.
    pub seed: Option<i64>,
    /// Provenance: model.
    pub model: Option<String>,
    /// Why the environment broke during the episode (null when it worked).
    pub env_error: Option<String>,
    /// The temperature and truncation the policy's action tokens were drawn with (None: their
    /// behaviour log-probs are the plain softmax's, or there are none).
    pub sampling: Option<Shape>,
    /// Per token: the size of its allowed set under constrained decoding (0: any).
    pub allowed_counts: Option<Vec<i32>>,
    /// The allowed sets of tokens with a non-zero count, concatenated in token order.
    pub allowed_tokens: Option<Vec<i32>>,
    /// Actions chosen whole among scored candidates (the `candidate_*` columns).
    pub choices: Option<Vec<ScoredChoice>>,
}

impl EpisodeRow {
    /// Keeps the first `n` tokens: every per-token list (and the allowed sets of the tokens kept,
    /// and the scored actions that end within them) is cut together.
    pub fn truncate_tokens(&mut self, n: usize) {
        if let Some(choices) = self.choices.as_mut() {
            choices.retain(|c| c.start + c.taken().len() <= n);
        }
        if let (Some(counts), Some(sets)) = (self.allowed_counts.as_ref(), self.allowed_tokens.as_mut()) {
            sets.truncate(counts.iter().take(n).map(|&c| c.max(0) as usize).sum());
        }
        self.tokens.truncate(n);
        self.segments.truncate(n);
        self.turns.truncate(n);
        for per_token in [self.logp_behavior.as_mut(), self.values.as_mut()].into_iter().flatten() {
            per_token.truncate(n);
        }
        if let Some(c) = self.allowed_counts.as_mut() {
            c.truncate(n);
        }
    }
}

/// A row's scored actions laid out as the `candidate_*` columns: per action its first token's
/// index and candidate count, per candidate its length and divisor, and the candidates' tokens.
#[derive(Default)]
struct CandidateColumns {
    starts: Vec<i32>,
    counts: Vec<i32>,
    lengths: Vec<i32>,
    tokens: Vec<i32>,
    divisors: Vec<f32>,
}

impl CandidateColumns {
    fn of(choices: &[ScoredChoice]) -> CandidateColumns {
        let mut c = CandidateColumns::default();
        for choice in choices {
            c.starts.push(choice.start as i32);
            c.counts.push(choice.candidates.len() as i32);
            for cand in &choice.candidates {
                c.lengths.push(cand.len() as i32);
                c.tokens.extend(cand.iter().map(|&t| t as i32));
            }
            c.divisors.extend(&choice.divisors);
        }
        c
    }
}

/// Accumulates rows and builds one batch.
#[derive(Default)]
pub struct TrajectoryBuilder {
    rows: Vec<EpisodeRow>,
}

fn list<T: Clone>(
    rows: &[EpisodeRow],
    get: impl Fn(&EpisodeRow) -> Option<&Vec<T>>,
    values: impl FnOnce(Vec<T>) -> ArrayRef,
) -> ArrayRef {
    list_of(rows.iter().map(|r| get(r).map(Vec::as_slice)), values)
}

/// A list column with one entry per item (None: null).
fn list_of<'a, T: Clone + 'a>(
    items: impl ExactSizeIterator<Item = Option<&'a [T]>>,
    values: impl FnOnce(Vec<T>) -> ArrayRef,
) -> ArrayRef {
    let mut offsets = vec![0i32];
    let mut flat = Vec::new();
    let mut valid = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Some(v) => {
                flat.extend_from_slice(v);
                valid.push(true);
            }
            None => valid.push(false),
        }
        offsets.push(flat.len() as i32);
    }
    let values = values(flat);
    let field = Arc::new(Field::new("item", values.data_type().clone(), true));
    let nulls = valid.iter().any(|v| !v).then(|| arrow::buffer::NullBuffer::from(valid));
    Arc::new(ListArray::new(field, OffsetBuffer::new(offsets.into()), values, nulls))
}

impl TrajectoryBuilder {
    /// Adds a row.
    pub fn push(&mut self, row: EpisodeRow) {
        self.rows.push(row);
    }

    /// Rows so far.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The batch, in the trajectory schema.
    pub fn finish(self) -> RecordBatch {
        let r = &self.rows;
        let n = r.len();
        let schema = TableSchema::trajectory().to_arrow();
        let strings =
            |f: fn(&EpisodeRow) -> Option<&str>| -> ArrayRef { Arc::new(r.iter().map(f).collect::<StringArray>()) };
        let candidates: Vec<Option<CandidateColumns>> =
            r.iter().map(|e| e.choices.as_deref().map(CandidateColumns::of)).collect();
        let ints = |get: fn(&CandidateColumns) -> &Vec<i32>| -> ArrayRef {
            list_of(candidates.iter().map(|c| c.as_ref().map(|c| get(c).as_slice())), |v| {
                Arc::new(arrow::array::Int32Array::from(v))
            })
        };
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|field| -> ArrayRef {
                match field.name().as_str() {
                    "episode_id" => strings(|e| Some(&e.episode_id)),
                    "task_id" => strings(|e| Some(&e.task_id)),
                    "group_id" => strings(|e| Some(&e.group_id)),
                    "trial_index" => Arc::new(r.iter().map(|e| e.trial_index).collect::<arrow::array::Int32Array>()),
                    "prev_trial_reward" => Arc::new(r.iter().map(|e| e.prev_trial_reward).collect::<Float32Array>()),
                    "policy_version" => Arc::new(Int64Array::from_iter_values(r.iter().map(|e| e.policy_version))),
                    "tokens" => list(r, |e| Some(&e.tokens), |v| Arc::new(arrow::array::Int32Array::from(v))),
                    "segments" => list(r, |e| Some(&e.segments), |v| Arc::new(arrow::array::UInt8Array::from(v))),
                    "turns" => list(r, |e| Some(&e.turns), |v| Arc::new(arrow::array::Int32Array::from(v))),
                    "logp_behavior" => list(r, |e| e.logp_behavior.as_ref(), |v| Arc::new(Float32Array::from(v))),
                    "values" => list(r, |e| e.values.as_ref(), |v| Arc::new(Float32Array::from(v))),
                    "turn_rewards" => list(r, |e| Some(&e.turn_rewards), |v| Arc::new(Float32Array::from(v))),
                    "reward" => Arc::new(Float32Array::from_iter_values(r.iter().map(|e| e.reward))),
                    "success" => Arc::new(r.iter().map(|e| e.success).collect::<BooleanArray>()),
                    "terminated" => Arc::new(r.iter().map(|e| Some(e.terminated)).collect::<BooleanArray>()),
                    "truncated" => Arc::new(r.iter().map(|e| Some(e.truncated)).collect::<BooleanArray>()),
                    "bootstrap_value" => Arc::new(r.iter().map(|e| e.bootstrap_value).collect::<Float32Array>()),
                    "env" => strings(|e| e.env.as_deref()),
                    "seed" => Arc::new(r.iter().map(|e| e.seed).collect::<Int64Array>()),
                    "model" => strings(|e| e.model.as_deref()),
                    "env_error" => strings(|e| e.env_error.as_deref()),
                    "sample_temperature" => {
                        Arc::new(r.iter().map(|e| e.sampling.map(|s| s.temperature as f32)).collect::<Float32Array>())
                    }
                    "sample_top_k" => Arc::new(
                        r.iter().map(|e| e.sampling.map(|s| s.top_k as i32)).collect::<arrow::array::Int32Array>(),
                    ),
                    "sample_top_p" => {
                        Arc::new(r.iter().map(|e| e.sampling.map(|s| s.top_p as f32)).collect::<Float32Array>())
                    }
                    "allowed_counts" => {
                        list(r, |e| e.allowed_counts.as_ref(), |v| Arc::new(arrow::array::Int32Array::from(v)))
                    }
                    "allowed_tokens" => {
                        list(r, |e| e.allowed_tokens.as_ref(), |v| Arc::new(arrow::array::Int32Array::from(v)))
                    }
                    "candidate_starts" => ints(|c| &c.starts),
                    "candidate_counts" => ints(|c| &c.counts),
                    "candidate_lengths" => ints(|c| &c.lengths),
                    "candidate_tokens" => ints(|c| &c.tokens),
                    "candidate_divisors" => {
                        list_of(candidates.iter().map(|c| c.as_ref().map(|c| c.divisors.as_slice())), |v| {
                            Arc::new(Float32Array::from(v))
                        })
                    }
                    _ => arrow::array::new_null_array(field.data_type(), n),
                }
            })
            .collect();
        RecordBatch::try_new(schema, columns).expect("the builder lays out the trajectory schema")
    }
}
