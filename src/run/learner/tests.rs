//! The learner's golden and oracle tests: micro-batches == one pass, DPO, RetroAct's loss, the KL
//! penalty, the seeded shuffle.

use super::*;
use crate::model::config::DecoderConfig;
use crate::run::behaviour::{recompute_logp_old, score_reference};
use crate::train::optim::OptimConfig;
use crate::train::spans::SpanLogp;

fn example(seed: u64, n: usize) -> Example {
    let mut rng = SplitMix::new(seed);
    let tokens: Vec<i64> = (0..n).map(|_| (rng.next_u64() % 30) as i64).collect();
    let mask = (0..n).map(|j| f32::from(u8::from(j >= n / 2))).collect();
    let adv = (0..n).map(|j| if j >= n / 2 { rng.unit() - 0.5 } else { 0.0 }).collect();
    let unknown = vec![f32::NAN; n];
    Example {
        tokens,
        mask,
        adv,
        logp_old: unknown.clone(),
        logp_ref: unknown,
        values: vec![0.0; n],
        returns: vec![0.0; n],
        turns: (0..n as i64).map(|j| j / 3).collect(),
        drawn: None,
    }
}

/// Splitting a minibatch into micro-batches reproduces the one-pass update, for token means,
/// sequence means and DPO pairs.
#[test]
fn micro_batches_match_one_pass() {
    let run = |budget: usize, objective: Objective| {
        let m = Decoder::new(DecoderConfig::small(30), tch::Device::Cpu);
        // Deterministic weights (libtorch's global generator is shared by concurrent tests).
        let mut rng = SplitMix::new(3);
        tch::no_grad(|| {
            let mut vars: Vec<_> = m.vs.variables().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, mut v) in vars {
                let n = v.numel();
                let base = if name.ends_with("norm.weight") { 1.0 } else { 0.0 };
                let vals: Vec<f32> = (0..n).map(|_| base + (rng.unit() - 0.5) * 0.1).collect();
                v.copy_(&Tensor::from_slice(&vals).view(v.size().as_slice()));
            }
        });
        let mut ex: Vec<Example> = (0..6).map(|i| example(i, 8 + i as usize * 3)).collect();
        recompute_logp_old(&m, &mut ex, 4096).unwrap();
        for e in &mut ex {
            e.logp_ref = e.logp_old.iter().enumerate().map(|(j, x)| x - 0.05 * (j % 3) as f32).collect();
        }
        let mut opt =
            AdamW::new(m.vs.variables().into_iter().collect(), OptimConfig { lr: 1e-2, ..Default::default() });
        let s = Schedule { epochs: 1, minibatch: 0, max_batch_tokens: budget, kl_stop: 0.0, kl_skip: 0.0, seed: 1 };
        let st = fit(&m, &mut opt, None, &ex, objective, &s).unwrap();
        assert_eq!(st.updates, 1);
        let w: Vec<f32> = Vec::try_from(m.vs.variables()["model.norm.weight"].view([-1])).unwrap();
        (st.loss, w)
    };
    let ppo = |reduction| Objective::Ppo {
        clip: PpoClip::loop_(0.1),
        reduction,
        kl: None,
        granularity: Granularity::Token,
        entropy_coef: 0.0,
    };
    let dpo = Objective::Dpo { beta: 0.5, label_smoothing: 0.0, chosen_nll: 0.0 };
    let rpo = Objective::Dpo { beta: 0.5, label_smoothing: 0.1, chosen_nll: 0.7 };
    let retroact = Objective::ClippedIs { eps: 0.3, reduction: Reduction::SeqMeanTokenMean, imitation: 1.5 };
    let pg = Objective::ClippedIs { eps: 0.3, reduction: Reduction::TokenMean, imitation: 0.0 };
    let kl = Some(KlPenalty { coef: 0.5, estimator: KlEstimator::K3 });
    let ppo_kl = Objective::Ppo {
        clip: PpoClip::symmetric(0.2),
        reduction: Reduction::TokenMean,
        kl,
        granularity: Granularity::Token,
        entropy_coef: 0.0,
    };
    // Turn- and trajectory-level ratios (the examples have a turn every 3 tokens).
    let spans = |granularity| Objective::Ppo {
        clip: PpoClip::symmetric(0.2),
        reduction: Reduction::SeqMeanTokenMean,
        kl: None,
        granularity,
        entropy_coef: 0.0,
    };
    let (turn, whole) = (spans(Granularity::Turn(SpanLogp::Mean)), spans(Granularity::Trajectory(SpanLogp::Sum)));
    for objective in
        [ppo(Reduction::TokenMean), ppo(Reduction::SeqMeanTokenMean), dpo, rpo, retroact, pg, ppo_kl, turn, whole]
    {
        let (l1, w1) = run(100_000, objective);
        // 30 tokens fit one example (or none of the longer pairs): every pair is its own micro-batch.
        let (l2, w2) = run(30, objective);
        assert!((l1 - l2).abs() < 1e-6, "{objective:?}: {l1} vs {l2}");
        let d = w1.iter().zip(&w2).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(d < 1e-5, "{objective:?}: weights differ by {d}");
        assert!(w1.iter().any(|&x| (x - 1.0).abs() > 1e-4), "the update moved the weights");
    }
    // Before its first update the policy is its own reference: every pair's loss is −log σ(0).
    let (l, _) = run(100_000, dpo);
    assert!((l - std::f64::consts::LN_2).abs() < 1e-6, "DPO loss at the reference: {l}");
}

/// DPO moves probability from the rejected side to the chosen side of each pair.
#[test]
fn dpo_prefers_the_chosen_side() {
    let m = Decoder::new(DecoderConfig::small(30), tch::Device::Cpu);
    let mut ex: Vec<Example> = (0..8).map(|i| example(10 + i, 12)).collect();
    recompute_logp_old(&m, &mut ex, 4096).unwrap();
    let reference = ex.clone();
    let mut opt = AdamW::new(m.vs.variables().into_iter().collect(), OptimConfig { lr: 3e-3, ..Default::default() });
    let s = Schedule { epochs: 5, minibatch: 2, max_batch_tokens: 4096, kl_stop: 0.0, kl_skip: 0.0, seed: 4 };
    let st =
        fit(&m, &mut opt, None, &ex, Objective::Dpo { beta: 0.5, label_smoothing: 0.0, chosen_nll: 0.0 }, &s).unwrap();
    assert_eq!(st.updates, 10, "4 pairs in minibatches of 2 pairs, 5 epochs");
    recompute_logp_old(&m, &mut ex, 4096).unwrap();
    let ratio = |now: &Example, then: &Example| -> f32 {
        (1..now.tokens.len()).filter(|&j| now.mask[j] > 0.0).map(|j| now.logp_old[j] - then.logp_old[j]).sum()
    };
    for pair in 0..4 {
        let (c, r) = (2 * pair, 2 * pair + 1);
        let margin = ratio(&ex[c], &reference[c]) - ratio(&ex[r], &reference[r]);
        assert!(margin > 0.1, "pair {pair}: log-ratio margin {margin}");
    }
    assert!(st.preference_accuracy > 0.5, "{st:?}");
}

/// RetroAct's loss before the first update, where the weights are their own behaviour policy
/// (w = 1): per pair, the trained row's mean of −R·log π over its action tokens plus λ times
/// the imitation row's mean NLL; averaged over pairs. Computed here from the scored log-probs.
#[test]
fn clipped_is_with_imitation_golden() {
    let m = Decoder::new(DecoderConfig::small(30), tch::Device::Cpu);
    let mut ex: Vec<Example> = (0..6).map(|i| example(20 + i, 9 + i as usize)).collect();
    recompute_logp_old(&m, &mut ex, 4096).unwrap();
    let row_mean = |e: &Example, f: &dyn Fn(usize) -> f64| -> f64 {
        let idx: Vec<usize> = (1..e.tokens.len()).filter(|&j| e.mask[j] > 0.0).collect();
        idx.iter().map(|&j| f(j)).sum::<f64>() / idx.len() as f64
    };
    let lambda = 0.7;
    let expected: f64 = (0..3)
        .map(|k| {
            let (t, i) = (&ex[2 * k], &ex[2 * k + 1]);
            let pg = row_mean(t, &|j| -(t.adv[j] as f64) * t.logp_old[j] as f64);
            let nll = row_mean(i, &|j| -(i.logp_old[j] as f64));
            pg + lambda * nll
        })
        .sum::<f64>()
        / 3.0;
    let mut opt = AdamW::new(m.vs.variables().into_iter().collect(), OptimConfig { lr: 0.0, ..Default::default() });
    let s = Schedule { epochs: 1, minibatch: 0, max_batch_tokens: 4096, kl_stop: 0.0, kl_skip: 0.0, seed: 2 };
    let objective = Objective::ClippedIs { eps: 0.3, reduction: Reduction::SeqMeanTokenMean, imitation: lambda };
    let st = fit(&m, &mut opt, None, &ex, objective, &s).unwrap();
    assert!((st.loss - expected).abs() < 1e-5, "{} vs {expected}", st.loss);
}

/// With zero advantages, PPO with a KL penalty only pulls the policy toward the reference.
#[test]
fn kl_penalty_pulls_toward_the_reference() {
    let m = Decoder::new(DecoderConfig::small(30), tch::Device::Cpu);
    let reference = Decoder::new(DecoderConfig::small(30), tch::Device::Cpu);
    let mut ex: Vec<Example> = (0..6).map(|i| example(30 + i, 12)).collect();
    for e in &mut ex {
        e.adv.iter_mut().for_each(|a| *a = 0.0);
    }
    score_reference(&reference, &mut ex, 4096).unwrap();
    let kl_now = |ex: &mut Vec<Example>| -> f64 {
        recompute_logp_old(&m, ex, 4096).unwrap();
        let (mut sum, mut n) = (0.0, 0.0);
        for e in ex.iter() {
            for j in (1..e.tokens.len()).filter(|&j| e.mask[j] > 0.0) {
                let d = (e.logp_ref[j] - e.logp_old[j]) as f64;
                sum += d.exp() - d - 1.0;
                n += 1.0;
            }
        }
        sum / n
    };
    let before = kl_now(&mut ex);
    let mut opt = AdamW::new(m.vs.variables().into_iter().collect(), OptimConfig { lr: 3e-3, ..Default::default() });
    let s = Schedule { epochs: 10, minibatch: 0, max_batch_tokens: 4096, kl_stop: 0.0, kl_skip: 0.0, seed: 5 };
    let kl = Some(KlPenalty { coef: 1.0, estimator: KlEstimator::K3 });
    let objective = Objective::Ppo {
        clip: PpoClip::symmetric(0.2),
        reduction: Reduction::TokenMean,
        kl,
        granularity: Granularity::Token,
        entropy_coef: 0.0,
    };
    let st = fit(&m, &mut opt, None, &ex, objective, &s).unwrap();
    let after = kl_now(&mut ex);
    assert!(before > 0.01 && after < 0.5 * before, "KL to the reference {before} -> {after}");
    assert!(st.kl_ref > 0.0, "{st:?}");
}

#[test]
fn shuffle_is_a_seeded_permutation() {
    let a = shuffled(50, 7);
    let mut s = a.clone();
    s.sort();
    assert_eq!(s, (0..50).collect::<Vec<_>>());
    assert_eq!(a, shuffled(50, 7));
    assert_ne!(a, shuffled(50, 8));
}

/// The vocabulary head at the trained positions only gives, there, the log-probs, entropies and
/// gradients of the head at every position (within float rounding), for plain, temperature-shaped
/// and constrained (allowed-set) tokens; elsewhere it gives 0.
#[test]
fn the_head_at_trained_positions_equals_the_head_everywhere_where_trained() {
    use crate::model::drawn::{Drawn, Shape};
    tch::manual_seed(5);
    let m = Decoder::new(DecoderConfig::small(30), tch::Device::Cpu);
    let mut ex: Vec<Example> = (0..3).map(|i| example(10 + i, 9 + 2 * i as usize)).collect();
    // Row 0 drawn at temperature 0.7 among allowed sets (the token itself and two others), row 1
    // plain, row 2 at temperature 1.3 with any token allowed.
    for (r, temperature) in [(0usize, 0.7), (2, 1.3)] {
        let e = &mut ex[r];
        let n = e.tokens.len();
        let sampled: Vec<bool> = (0..n).map(|j| e.mask[j] > 0.0).collect();
        let allowed = (0..n)
            .map(|j| {
                if r == 0 && sampled[j] {
                    vec![e.tokens[j], (e.tokens[j] + 1) % 30, (e.tokens[j] + 7) % 30]
                } else {
                    vec![]
                }
            })
            .map(|mut a: Vec<i64>| {
                a.sort_unstable();
                a.dedup();
                a
            })
            .collect();
        e.drawn = Some(Drawn { shape: Shape { temperature, ..Shape::PLAIN }, sampled, allowed, scored: vec![] });
    }
    let refs: Vec<&Example> = ex.iter().collect();
    let p = pad(&refs, tch::Device::Cpu);
    let t = p.ids.size()[1];
    // Every weight's gradient, in name order.
    let grads = |logp: &Tensor| {
        let mut vars: Vec<_> = m.vs.variables().into_iter().collect();
        vars.iter_mut().for_each(|(_, v)| v.zero_grad());
        crate::train::losses::masked_sum(logp, &p.mask).backward();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars.iter().flat_map(|(_, v)| Vec::<f32>::try_from(v.grad().view([-1])).unwrap()).collect::<Vec<f32>>()
    };
    let hidden = m.hidden(&p.ids, &p.positions, &p.valid, None);
    let logits = m.logits(&hidden).narrow(1, 0, t - 1);
    let (full, full_h) = crate::model::drawn::log_probs(&logits, &p.targets, &p.drawn, Entropy::Detached);
    let full_g = grads(&full);
    let hidden = m.hidden(&p.ids, &p.positions, &p.valid, None);
    let (part, part_h) = trained_log_probs(&m, &hidden.narrow(1, 0, t - 1), &p, Entropy::Detached);
    let part_g = grads(&part);
    let mask = Vec::<f32>::try_from(p.mask.view([-1])).unwrap();
    let flat = |x: &Tensor| Vec::<f32>::try_from(x.detach().view([-1])).unwrap();
    let (full, full_h, part, part_h) = (flat(&full), flat(&full_h.unwrap()), flat(&part), flat(&part_h));
    let mut trained = 0;
    for i in 0..mask.len() {
        if mask[i] > 0.0 {
            trained += 1;
            assert!((full[i] - part[i]).abs() < 1e-5, "log-prob {i}: {} vs {}", full[i], part[i]);
            assert!((full_h[i] - part_h[i]).abs() < 1e-5, "entropy {i}: {} vs {}", full_h[i], part_h[i]);
        } else {
            assert_eq!((part[i], part_h[i]), (0.0, 0.0), "position {i} is not trained");
        }
    }
    assert!(trained >= 12 && !p.drawn.index.is_empty());
    assert!(full_g.iter().zip(&part_g).all(|(a, b)| (a - b).abs() < 1e-5), "gradients differ");
    assert!(part_g.iter().any(|&g| g != 0.0));
}
