//! Compute-only throughput of the advantage operators, single thread, on a dataset already in
//! memory: the counterpart of `reference.py`'s "compute" phase (PyTorch on padded tensors),
//! without Parquet I/O on either side.
//!
//!     cargo bench --bench kernels -- DATASET [--repeat 3]
//!
//! Prints one JSON line per pipeline: tokens, seconds (best of --repeat), tokens/s.

use std::collections::HashMap;
use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float32Type, Int32Type, UInt8Type};
use trajflow::ops::action_boundaries::action_spans;
use trajflow::ops::broadcast::broadcast_scalar;
use trajflow::ops::gae::{gae, GaeParams};
use trajflow::ops::group_baseline::{group_advantage, group_stats, BaselineParams};
use trajflow::ops::normalize::{combine, moments, whiten, Moments, NormalizeParams};
use trajflow::ops::reinforce_pp::{reinforce_pp_returns, ObservationPolicy};

struct Data {
    group: Vec<String>,
    reward: Vec<f64>,
    offsets: Vec<usize>,
    segments: Vec<u8>,
    turns: Vec<i32>,
    values: Vec<f32>,
    turn_rewards: Vec<Vec<f32>>,
    bootstrap: Vec<f32>,
}

fn load(path: &std::path::Path) -> Data {
    let cols: Vec<String> =
        ["group_id", "reward", "segments", "turns", "turn_rewards", "values", "truncated", "bootstrap_value"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let mut d = Data {
        group: vec![],
        reward: vec![],
        offsets: vec![0],
        segments: vec![],
        turns: vec![],
        values: vec![],
        turn_rewards: vec![],
        bootstrap: vec![],
    };
    for part in trajflow::store::input_parts(path).expect("a dataset") {
        for b in trajflow::store::read_part(&part, Some(&cols)).expect("readable") {
            append(&mut d, &b);
        }
    }
    d
}

fn append(d: &mut Data, b: &RecordBatch) {
    let col = |n: &str| b.column_by_name(n).unwrap();
    let g = col("group_id").as_string::<i32>();
    let r = col("reward").as_primitive::<Float32Type>();
    let seg = col("segments").as_list::<i32>();
    let tur = col("turns").as_list::<i32>();
    let val = col("values").as_list::<i32>();
    let tr = col("turn_rewards").as_list::<i32>();
    let trunc = col("truncated").as_boolean();
    let boot = col("bootstrap_value").as_primitive::<Float32Type>();
    for i in 0..b.num_rows() {
        d.group.push(g.value(i).to_string());
        d.reward.push(r.value(i) as f64);
        d.segments.extend_from_slice(seg.value(i).as_primitive::<UInt8Type>().values());
        d.turns.extend_from_slice(tur.value(i).as_primitive::<Int32Type>().values());
        d.values.extend_from_slice(val.value(i).as_primitive::<Float32Type>().values());
        d.turn_rewards.push(tr.value(i).as_primitive::<Float32Type>().values().to_vec());
        d.bootstrap.push(if trunc.value(i) && boot.is_valid(i) { boot.value(i) } else { 0.0 });
        d.offsets.push(d.segments.len());
    }
}

fn episode<'a, T>(d: &Data, v: &'a [T], i: usize) -> &'a [T] {
    &v[d.offsets[i]..d.offsets[i + 1]]
}

fn baseline(d: &Data, p: &BaselineParams, out: &mut [f32]) {
    let mut groups: HashMap<&str, Vec<f64>> = HashMap::new();
    for (g, r) in d.group.iter().zip(&d.reward) {
        groups.entry(g).or_default().push(*r);
    }
    let stats: HashMap<&str, _> = groups.iter().map(|(g, v)| (*g, group_stats(v))).collect();
    for i in 0..d.group.len() {
        let a = group_advantage(d.reward[i], &stats[d.group[i].as_str()], p) as f32;
        let (s, e) = (d.offsets[i], d.offsets[i + 1]);
        broadcast_scalar(&d.segments[s..e], a, &mut out[s..e]);
    }
}

fn whiten_all(d: &Data, x: &mut [f32]) {
    let mut m = Moments { n: 0, mean: 0.0, m2: 0.0 };
    for i in 0..d.group.len() {
        m = combine(&m, &moments(episode(d, x, i), episode(d, &d.segments, i)));
    }
    let p = NormalizeParams::default();
    let src = x.to_vec();
    for i in 0..d.group.len() {
        let (s, e) = (d.offsets[i], d.offsets[i + 1]);
        whiten(&src[s..e], &d.segments[s..e], &m, &p, &mut x[s..e]);
    }
}

fn token_gae(d: &Data, p: &GaeParams, adv: &mut [f32], ret: &mut [f32]) {
    for i in 0..d.group.len() {
        let (s, e) = (d.offsets[i], d.offsets[i + 1]);
        let spans = action_spans(&d.segments[s..e], &d.turns[s..e], d.turn_rewards[i].len()).unwrap();
        gae(&spans, &d.turn_rewards[i], &d.values[s..e], d.bootstrap[i], p, &mut adv[s..e], &mut ret[s..e]);
    }
    whiten_all(d, adv);
}

fn reinforce_pp(d: &Data, ret: &mut [f32], adv: &mut [f32]) {
    for i in 0..d.group.len() {
        let (s, e) = (d.offsets[i], d.offsets[i + 1]);
        let spans = action_spans(&d.segments[s..e], &d.turns[s..e], d.turn_rewards[i].len()).unwrap();
        reinforce_pp_returns(&spans, &d.turn_rewards[i], e - s, 1.0, ObservationPolicy::Reset, &mut ret[s..e]);
    }
    adv.copy_from_slice(ret);
    whiten_all(d, adv);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let path = args.first().expect("usage: cargo bench --bench kernels -- DATASET [--repeat N]");
    let repeat: usize =
        args.iter().position(|a| a == "--repeat").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(3);
    let d = load(std::path::Path::new(path));
    let n = d.segments.len();
    let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
    type Run<'a> = Box<dyn Fn(&mut [f32], &mut [f32]) + 'a>;
    let runs: Vec<(&str, Run)> = vec![
        ("loop_advantages", Box::new(|a, _| baseline(&d, &BaselineParams::leave_one_out(), a))),
        ("grpo_advantages", Box::new(|a, _| baseline(&d, &BaselineParams::grpo(), a))),
        ("poad_advantages", Box::new(|a, b| token_gae(&d, &GaeParams::bad(0.95, 0.95), a, b))),
        ("ntpo_advantages", Box::new(|a, b| token_gae(&d, &GaeParams::ntpo(0.95, 0.95), a, b))),
        ("reinforce_pp_advantages", Box::new(|a, b| reinforce_pp(&d, b, a))),
    ];
    for (name, f) in runs {
        let best = (0..repeat)
            .map(|_| {
                let t = Instant::now();
                f(&mut a, &mut b);
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        println!(
            "{{\"pipeline\": \"{name}\", \"tokens\": {n}, \"seconds\": {best:.6}, \"tokens_per_s\": {:.0}, \"checksum\": {:.6}}}",
            n as f64 / best,
            a.iter().map(|x| *x as f64).sum::<f64>()
        );
    }
}
