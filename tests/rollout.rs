//! Rollouts: a model plays the household environment for K rollouts per task. For every stored
//! episode, the tokens decode to the chat-template rendering of the conversation (nothing was
//! re-tokenised), the stored behaviour log-probs equal a fresh scoring of the same tokens, only the
//! model's own tokens are `action`, and the K rollouts of a task share a group.
#![cfg(feature = "torch")]

use tch::Device;
use trajflow::model::config::DecoderConfig;
use trajflow::model::generate::Sampling;
use trajflow::model::llama::Decoder;
use trajflow::model::score::token_logprobs;
use trajflow::rollout::{rollout, RolloutConfig};

#[test]
fn rollouts_are_token_exact_with_behaviour_logprobs() {
    let tok = match trajflow::model::load_tokenizer("smollm2-135m") {
        Ok(t) => t,
        Err(e) => return eprintln!("SKIPPED: {e}"),
    };
    tch::manual_seed(21);
    let model = Decoder::new(DecoderConfig::small(49152), Device::Cpu);
    let cfg = RolloutConfig {
        env: "household".into(),
        tasks: vec![3, 7],
        k: 2,
        seed: 0,
        sampling: Sampling { temperature: 1.0, max_new_tokens: 6, seed: 5, ..Default::default() },
        max_turns: 3,
        policy_version: 4,
        model_name: "random-small".into(),
        iteration: 0,
    };
    let rows = rollout(&model, &tok, &cfg).unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0].group_id, rows[1].group_id);
    assert_ne!(rows[1].group_id, rows[2].group_id);
    let seqs: Vec<Vec<i64>> = rows.iter().map(|r| r.tokens.iter().map(|&t| t as i64).collect()).collect();
    let fresh = token_logprobs(&model, &seqs, 100_000).unwrap();
    for (r, f) in rows.iter().zip(&fresh) {
        let n = r.tokens.len();
        assert!(r.segments.len() == n && r.turns.len() == n && r.logp_behavior.as_ref().unwrap().len() == n);
        assert_eq!(r.turn_rewards.len(), 3, "three turns (random actions never finish a task)");
        assert!(r.truncated && !r.terminated);
        let lp = r.logp_behavior.as_ref().unwrap();
        for j in 0..n {
            let action = r.segments[j] == 1;
            // Only generated tokens are actions, and only they carry a behaviour log-prob.
            assert_eq!(action, lp[j].is_finite(), "token {j}");
            if action {
                assert!((lp[j] - f[j]).abs() < 1e-5, "token {j}: stored {} vs fresh {}", lp[j], f[j]);
            }
        }
        // Replaying the stored actions reproduces the episode's text exactly.
        let text = tok.decode(&seqs[rows.iter().position(|x| x.episode_id == r.episode_id).unwrap()]).unwrap();
        assert!(text.starts_with("<|im_start|>system\n"), "{text}");
        assert!(text.contains("Your task is to:"));
    }
}
