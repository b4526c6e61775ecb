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

/// SmolLM2's tokenizer and a random small decoder seeded with `seed` (None, reported as skipped,
/// when the tokenizer is not cached).
fn random_small(seed: i64) -> Option<(trajflow::model::tokenizer::Tok, Decoder)> {
    let tok = match trajflow::model::load_tokenizer("smollm2-135m") {
        Ok(t) => t,
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            return None;
        }
    };
    tch::manual_seed(seed);
    Some((tok, Decoder::new(DecoderConfig::small(49152), Device::Cpu)))
}

/// The env-vocabulary small model of `household-pick`, random weights seeded with `seed`.
fn small_pick(seed: i64) -> (trajflow::model::tokenizer::Tok, Decoder) {
    let tok = trajflow::model::load_tokenizer("small:household-pick").unwrap();
    tch::manual_seed(seed);
    (tok, trajflow::model::load_decoder("small:household-pick", Device::Cpu).unwrap())
}

/// Two rollouts of each of `tasks` in `household-pick`, free text, no correction.
fn pick_config(tasks: Vec<u64>, sampling: Sampling, max_turns: usize) -> RolloutConfig {
    RolloutConfig::new("household-pick", tasks, 2, sampling, max_turns, "random-small")
}

#[test]
fn rollouts_are_token_exact_with_behaviour_logprobs() {
    let Some((tok, model)) = random_small(21) else { return };
    let sampling = Sampling { temperature: 1.0, max_new_tokens: 6, seed: 5, ..Default::default() };
    let cfg = RolloutConfig {
        policy_version: 4,
        ..RolloutConfig::new("household", vec![3, 7], 2, sampling, 3, "random-small")
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
        assert!(r.terminated && !r.truncated, "running out of turns ends the episode: a failure, no bootstrap");
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

/// The executed action of each turn: the turn's `action` tokens and its policy tokens kept as
/// `prompt` context (those with a behaviour log-prob), without the end-of-turn token, and whether
/// they were marked `action`.
fn executed_actions(
    row: &trajflow::schema::builder::EpisodeRow,
    tok: &trajflow::model::tokenizer::Tok,
) -> Vec<(String, bool)> {
    let eos = tok.token_id(&tok.eos_token).unwrap() as i32;
    let lp = row.logp_behavior.as_ref().unwrap();
    (0..row.turn_rewards.len() as i32)
        .map(|t| {
            let idx: Vec<usize> = (0..row.tokens.len())
                .filter(|&i| row.turns[i] == t && (row.segments[i] == 1 || (row.segments[i] == 0 && lp[i].is_finite())))
                .collect();
            let ids: Vec<i64> = idx.iter().map(|&i| row.tokens[i]).filter(|&x| x != eos).map(i64::from).collect();
            (tok.decode(&ids).unwrap(), idx.iter().all(|&i| row.segments[i] == 1))
        })
        .collect()
}

/// Expert correction (DAgger): replaying an episode's executed actions in the environment, every
/// `action`-marked turn is exactly the expert's action in that state and every policy action kept
/// as context is one the expert disagreed with; with `keep = 0` every action is the expert's, so
/// every episode succeeds as the expert does.
#[test]
fn expert_correction_trains_only_on_expert_actions_in_visited_states() {
    use trajflow::env::{by_name, Env};
    let (tok, model) = small_pick(3);
    for keep in [0.0, 0.6] {
        let sampling = Sampling { temperature: 1.0, max_new_tokens: 8, seed: 9, ..Default::default() };
        let cfg = RolloutConfig { correction: Some(keep), ..pick_config(vec![1, 2, 3, 4], sampling, 30) };
        let rows = rollout(&model, &tok, &cfg).unwrap();
        let mut kept = 0;
        for (row, task) in rows.iter().zip([1u64, 1, 2, 2, 3, 3, 4, 4]) {
            let mut env: Box<dyn Env> = by_name("household-pick").unwrap();
            env.reset(task, 0);
            let mut success = false;
            for (action, trained) in executed_actions(row, &tok) {
                let expert = env.expert_action().unwrap();
                assert_eq!(action == expert, trained, "keep {keep}: {action:?} vs expert {expert:?}");
                kept += usize::from(!trained);
                success = env.step(&action).success;
            }
            assert_eq!(row.success, Some(success));
            if keep == 0.0 {
                assert_eq!(row.success, Some(true), "the expert solves every pick task");
            }
        }
        assert_eq!(kept > 0, keep > 0.0, "keep {keep}: {kept} policy mistakes kept as context");
    }
}

/// StepAgent's inspection: two rows per expert action sharing the expert's prefix exactly (earlier
/// actions re-marked as prompt); the expert row continues with the expert's action tokens, the
/// agent row with the policy's, whose stored log-probs equal a fresh scoring of the row.
#[test]
fn expert_prefixes_pair_the_expert_and_the_policy_at_every_expert_action() {
    use trajflow::rollout::prefixes::expert_prefix_rows;
    let (tok, model) = small_pick(5);
    let expert = trajflow::env::demos::expert_rows_of("household-pick", &[4, 9], 0, &tok, "small").unwrap();
    let sampling = Sampling { temperature: 1.0, max_new_tokens: 6, seed: 2, ..Default::default() };
    let rows = expert_prefix_rows(&model, &tok, &expert, None, None, &sampling, 3).unwrap();
    let actions: usize = expert.iter().map(|e| e.turn_rewards.len()).sum();
    assert_eq!(rows.len(), 2 * actions, "one expert and one agent row per expert action");
    let seqs: Vec<Vec<i64>> = rows.iter().map(|r| r.tokens.iter().map(|&t| t as i64).collect()).collect();
    let fresh = token_logprobs(&model, &seqs, 100_000).unwrap();
    for (k, pair) in rows.chunks(2).enumerate() {
        let (e, a) = (&pair[0], &pair[1]);
        assert_eq!(e.group_id, a.group_id);
        assert!(e.episode_id.ends_with("/expert") && a.episode_id.ends_with("/agent"));
        let prefix = e.segments.iter().rposition(|&s| s != 1).unwrap() + 1;
        assert_eq!(e.tokens[..prefix], a.tokens[..prefix], "decision {k}: the same prefix");
        assert!(e.segments[..prefix].iter().all(|&s| s != 1), "decision {k}: earlier actions are context");
        assert!(a.segments[prefix..].iter().all(|&s| s == 1 || s == 3));
        assert_eq!((e.reward, e.success), (1.0, Some(true)));
        let same = tok.decode(&seqs[2 * k][prefix..]).unwrap() == tok.decode(&seqs[2 * k + 1][prefix..]).unwrap();
        assert_eq!(a.success, Some(same));
        assert_eq!(a.policy_version, 3);
        let lp = a.logp_behavior.as_ref().unwrap();
        for j in prefix..a.tokens.len() {
            if a.segments[j] == 1 {
                assert!((lp[j] - fresh[2 * k + 1][j]).abs() < 1e-4, "decision {k} token {j}");
            }
        }
    }
    // The expert rows' action tokens, in order, are exactly the expert trajectories' action tokens.
    let ours: Vec<i32> = rows
        .iter()
        .step_by(2)
        .flat_map(|r| {
            let p = r.segments.iter().rposition(|&s| s != 1).unwrap() + 1;
            r.tokens[p..].to_vec()
        })
        .collect();
    let theirs: Vec<i32> =
        expert.iter().flat_map(|e| (0..e.tokens.len()).filter(|&i| e.segments[i] == 1).map(|i| e.tokens[i])).collect();
    assert_eq!(ours, theirs);
}

/// With admissible actions, the policy's action at every expert prefix is one of the actions the
/// environment allowed at that point of the expert's episode (the lists are recorded while the
/// expert plays), by token-level constraint and by TWOSOME scoring alike; the expert's own action
/// is always among them.
#[test]
fn expert_prefix_actions_are_chosen_among_the_admissible_ones() {
    use trajflow::rollout::action_scoring::Normalization;
    use trajflow::rollout::prefixes::expert_prefix_rows;
    let (tok, model) = small_pick(6);
    let both =
        trajflow::env::demos::expert_rows_and_choices("household-pick", &[4, 9, 13], 0, &tok, "small", true).unwrap();
    let (expert, choices): (Vec<_>, Vec<_>) = both.into_iter().unzip();
    let lists: Vec<&Vec<String>> = choices.iter().flatten().collect();
    assert_eq!(lists.len(), expert.iter().map(|e| e.turn_rewards.len()).sum::<usize>());
    let sampling = Sampling { temperature: 1.0, max_new_tokens: 16, seed: 2, ..Default::default() };
    for scoring in [None, Some(Normalization::Word)] {
        let rows = expert_prefix_rows(&model, &tok, &expert, Some(&choices), scoring, &sampling, 0).unwrap();
        assert_eq!(rows.len(), 2 * lists.len());
        for (pair, allowed) in rows.chunks(2).zip(&lists) {
            let text = |r: &trajflow::schema::builder::EpisodeRow| {
                let ids: Vec<i64> =
                    (0..r.tokens.len()).filter(|&j| r.segments[j] == 1).map(|j| r.tokens[j] as i64).collect();
                tok.decode(&ids).unwrap().replace(&tok.eos_token, "").trim().to_string()
            };
            let (e, a) = (text(&pair[0]), text(&pair[1]));
            assert!(allowed.contains(&e), "expert action '{e}' not in {allowed:?}");
            assert!(allowed.contains(&a), "{scoring:?}: agent action '{a}' not in {allowed:?}");
        }
    }
    // A list per expert action is required.
    let short: Vec<Vec<Vec<String>>> = choices.iter().map(|c| c[1..].to_vec()).collect();
    let err = expert_prefix_rows(&model, &tok, &expert, Some(&short), None, &sampling, 0).unwrap_err();
    assert!(err.to_string().contains("admissible"), "{err}");
}

/// Reflexion trials (RetroAct): a task's trials share its group; the reflection written after
/// trial k is a reflector row (prompt: trial k's transcript; action: the reflection, with its
/// behaviour log-probs; reward: trial k + 1's; `prev_trial_reward`: trial k's), and trial k + 1's
/// prompt carries it (with memory 1, only the latest reflection).
#[test]
fn reflexion_trials_carry_their_reflections() {
    use trajflow::rollout::reflexion::{reflexion, ReflexionConfig};
    let Some((tok, model)) = random_small(8) else { return };
    let sampling = Sampling { temperature: 1.0, max_new_tokens: 6, seed: 9, ..Default::default() };
    let cfg = RolloutConfig {
        policy_version: 2,
        iteration: 1,
        ..RolloutConfig::new("household", vec![3, 7], 1, sampling, 2, "random-small")
    };
    let r = ReflexionConfig { trials: 3, memory: 1, reflection_tokens: 8 };
    let rows = reflexion(&model, &tok, &cfg, &r).unwrap();
    let planner = |task: u64, trial: i32| {
        rows.iter()
            .find(|x| x.episode_id == format!("household-{task}-it1-trial{trial}"))
            .unwrap_or_else(|| panic!("no trial {trial} of task {task}"))
    };
    let eos = tok.token_id(&tok.eos_token).unwrap();
    let text = |row: &trajflow::schema::builder::EpisodeRow, seg: u8| -> String {
        let ids: Vec<i64> =
            (0..row.tokens.len()).filter(|&i| row.segments[i] == seg).map(|i| row.tokens[i] as i64).collect();
        tok.decode(&ids.into_iter().filter(|&t| t != eos).collect::<Vec<_>>()).unwrap()
    };
    let all = |row: &trajflow::schema::builder::EpisodeRow| {
        tok.decode(&row.tokens.iter().map(|&t| t as i64).collect::<Vec<_>>()).unwrap()
    };
    // Random actions never solve a task: every task plays all 3 trials, with 2 reflections.
    assert_eq!(rows.len(), 2 * 3 + 2 * 2);
    for task in [3u64, 7] {
        let mut reflections = Vec::new();
        for k in 0..2 {
            let id = format!("household-{task}-it1-reflection{k}");
            let f = rows.iter().find(|x| x.episode_id == id).unwrap_or_else(|| panic!("no {id}"));
            let (before, after) = (planner(task, k), planner(task, k + 1));
            assert_eq!(f.group_id, before.group_id);
            assert_eq!((f.prev_trial_reward, f.reward, f.trial_index), (Some(before.reward), after.reward, Some(k)));
            assert!(before.prev_trial_reward.is_none() && before.trial_index == Some(k));
            // The reflector read the trial: its prompt holds the trial's actions.
            let prompt = all(f);
            for (action, _) in executed_actions(before, &tok) {
                assert!(prompt.contains(&format!("> {}", action.trim())), "{prompt:?} lacks {action:?}");
            }
            // Its own tokens carry behaviour log-probs equal to a fresh scoring.
            let seq: Vec<i64> = f.tokens.iter().map(|&t| t as i64).collect();
            let fresh = &token_logprobs(&model, &[seq], 100_000).unwrap()[0];
            let lp = f.logp_behavior.as_ref().unwrap();
            for j in 0..f.tokens.len() {
                assert_eq!(f.segments[j] == 1, lp[j].is_finite(), "token {j}");
                if f.segments[j] == 1 {
                    assert!((lp[j] - fresh[j]).abs() < 1e-5);
                }
            }
            // The next trial's first message carries the reflection.
            let reflection = text(f, 1).trim().to_string();
            let next = all(after);
            assert!(next.contains(&format!("Your reflections on earlier trials:\n- {reflection}")), "{next:?}");
            reflections.push(reflection);
        }
        if reflections[0] != reflections[1] {
            assert!(!all(planner(task, 2)).contains(&format!("- {}\n", reflections[0])), "memory 1 keeps one");
        }
        assert!(!all(planner(task, 0)).contains("Your reflections"));
    }
}

/// Admissible-action mode: a random policy that, playing freely, mostly writes actions the
/// environment rejects ("Nothing happens."), only ever plays admissible actions when its decoding
/// is constrained to them; the stored tokens still decode to the action played, and the behaviour
/// log-probs (of the constrained distribution) are finite on action tokens and at most 0.
#[test]
fn admissible_mode_only_plays_admissible_actions() {
    let (tok, model) = small_pick(3);
    let cfg = |admissible: bool| {
        let sampling = Sampling { temperature: 1.0, max_new_tokens: 16, seed: 5, ..Default::default() };
        RolloutConfig { admissible, ..pick_config(vec![0, 1, 2, 3], sampling, 6) }
    };
    let rejected = |admissible: bool| -> (usize, usize) {
        let played = trajflow::rollout::played(&model, &tok, &cfg(admissible)).unwrap();
        let mut n = (0, 0);
        for (row, messages) in &played {
            let lp = row.logp_behavior.as_ref().unwrap();
            for (j, &s) in row.segments.iter().enumerate() {
                if s == 1 {
                    assert!(lp[j].is_finite() && lp[j] <= 0.0);
                }
            }
            for m in messages.iter().skip(1).filter(|m| m.role == "user") {
                n.0 += usize::from(m.content == "Nothing happens.");
                n.1 += 1;
            }
        }
        n
    };
    let (free_rejected, free_total) = rejected(false);
    assert!(free_total > 0 && free_rejected * 2 > free_total, "free play: {free_rejected} of {free_total} rejected");
    let (rejected, total) = rejected(true);
    assert!(total > 0);
    assert_eq!(rejected, 0, "an action outside the admissible set was played");
}

/// Prefix caches across turns: free and constrained play, greedy and sampled, with 2 slots for 6
/// episodes (slots refill, so batches mix first turns with later ones), give the same
/// conversations as re-reading every conversation each turn, with behaviour log-probs within 1e-4.
#[test]
fn prefix_caches_across_turns_do_not_change_rollouts() {
    let (tok, model) = small_pick(9);
    for (admissible, temperature) in [(false, 0.0), (true, 1.0), (false, 1.0)] {
        let sampling = Sampling { temperature, max_new_tokens: 8, seed: 4, ..Default::default() };
        let base = RolloutConfig { admissible, slots: Some(2), ..pick_config(vec![0, 1, 2], sampling, 5) };
        let plain = trajflow::rollout::played(&model, &tok, &base).unwrap();
        let cached =
            trajflow::rollout::played(&model, &tok, &RolloutConfig { prefix_cache: true, ..base.clone() }).unwrap();
        assert_eq!(plain.len(), 6);
        for ((a, ma), (b, mb)) in plain.iter().zip(&cached) {
            let what = format!("admissible {admissible}, T {temperature}, {}", a.episode_id);
            assert_eq!(a.tokens, b.tokens, "{what}");
            assert_eq!(ma, mb, "{what}");
            let (la, lb) = (a.logp_behavior.as_ref().unwrap(), b.logp_behavior.as_ref().unwrap());
            for (j, (x, y)) in la.iter().zip(lb).enumerate() {
                assert!((x.is_nan() && y.is_nan()) || (x - y).abs() < 1e-4, "{what} token {j}: {x} vs {y}");
            }
        }
    }
}

/// Slot refilling: with 3 slots for 8 kitchen episodes under full expert correction, episodes end
/// at different turns (recipes differ in length) and waiting episodes take the freed slots. Every
/// episode still plays exactly the expert's episode from its own start, turn by turn, and rows
/// come back in task order.
#[test]
fn refilled_slots_play_every_episode_from_its_own_start() {
    use trajflow::env::by_name;
    let tok = trajflow::model::load_tokenizer("small:kitchen").unwrap();
    tch::manual_seed(2);
    let model = trajflow::model::load_decoder("small:kitchen", Device::Cpu).unwrap();
    let tasks = vec![0, 1, 2, 5];
    let sampling = Sampling { temperature: 1.0, max_new_tokens: 12, seed: 1, ..Default::default() };
    let cfg = RolloutConfig {
        seed: 3,
        correction: Some(0.0),
        admissible: true,
        slots: Some(3),
        ..RolloutConfig::new("kitchen", tasks.clone(), 2, sampling, 30, "random-small")
    };
    let rows = rollout(&model, &tok, &cfg).unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r.episode_id.as_str()).collect();
    let want: Vec<String> = tasks.iter().flat_map(|t| (0..2).map(move |r| format!("kitchen-{t}-it0-r{r}"))).collect();
    assert_eq!(ids, want);
    let mut lengths = std::collections::BTreeSet::new();
    for (row, &task) in rows.iter().zip(tasks.iter().flat_map(|t| [t, t])) {
        let mut env = by_name("kitchen").unwrap();
        env.reset(task, 3);
        let mut expert_steps = 0;
        while let Some(a) = env.expert_action() {
            expert_steps += 1;
            if env.step(&a).done {
                break;
            }
        }
        assert_eq!(row.success, Some(true), "{}", row.episode_id);
        assert_eq!(row.turn_rewards.len(), expert_steps, "{}: one turn per expert step", row.episode_id);
        assert_eq!(row.turns.iter().copied().max(), Some(expert_steps as i32 - 1));
        lengths.insert(expert_steps);
    }
    assert!(lengths.len() > 1, "episodes of different lengths, so slots were refilled mid-batch: {lengths:?}");
}

/// TWOSOME's action scoring: at temperature 0 the played action is the admissible action with the
/// best word-normalised log-likelihood, computed here independently by scoring each candidate
/// after the prompt; with sampling, every action's stored candidates start with it, and its stored
/// log-prob (on its first token, 0 on the others) equals the action-level softmax of a fresh
/// scoring of every candidate.
#[test]
fn scored_actions_follow_word_normalised_likelihoods() {
    use trajflow::env::by_name;
    use trajflow::pipeline::training::Normalization;
    let tok = trajflow::model::load_tokenizer("small:kitchen").unwrap();
    tch::manual_seed(8);
    let model = trajflow::model::load_decoder("small:kitchen", Device::Cpu).unwrap();
    let eos = tok.token_id(&tok.eos_token).unwrap();
    let cfg = |temperature: f64, max_turns: usize| {
        let sampling = Sampling { temperature, max_new_tokens: 16, seed: 2, ..Default::default() };
        let cfg = RolloutConfig::new("kitchen", vec![0, 3, 6], 1, sampling, max_turns, "random-small");
        RolloutConfig { admissible: true, scoring: Some(Normalization::Word), ..cfg }
    };
    let played = trajflow::rollout::played(&model, &tok, &cfg(0.0, 1)).unwrap();
    for ((row, messages), task) in played.iter().zip([0u64, 3, 6]) {
        let mut env = by_name("kitchen").unwrap();
        env.reset(task, 0);
        let prompt: Vec<i64> = (0..row.tokens.len())
            .filter(|&j| row.turns[j] == 0 && row.segments[j] != 1)
            .map(|j| row.tokens[j] as i64)
            .collect();
        let best = env
            .admissible_actions()
            .into_iter()
            .map(|a| {
                let mut ids = tok.encode(&a).unwrap();
                ids.push(eos);
                let seq: Vec<i64> = prompt.iter().chain(&ids).copied().collect();
                let lp = token_logprobs(&model, &[seq], 100_000).unwrap().remove(0);
                let sum: f64 = lp[prompt.len()..].iter().map(|&x| x as f64).sum();
                (sum / a.split_whitespace().count() as f64, a)
            })
            .fold((f64::NEG_INFINITY, String::new()), |b, x| if x.0 > b.0 { x } else { b });
        assert_eq!(messages[1].content, best.1, "task {task}");
    }
    let rows = rollout(&model, &tok, &cfg(1.0, 6)).unwrap();
    let mut scored = 0;
    for r in &rows {
        let tokens: Vec<i64> = r.tokens.iter().map(|&t| t as i64).collect();
        let lp = r.logp_behavior.as_ref().unwrap();
        let choices = r.choices.as_ref().unwrap();
        let actions = (0..tokens.len()).filter(|&j| r.segments[j] == 1 && (j == 0 || r.segments[j - 1] != 1)).count();
        assert_eq!(choices.len(), actions, "one scored choice per action");
        for c in choices {
            // Independently: each candidate scored as its own sequence after the episode so far.
            let seqs: Vec<Vec<i64>> =
                c.candidates.iter().map(|cand| tokens[..c.start].iter().chain(cand).copied().collect()).collect();
            let scores: Vec<f64> = token_logprobs(&model, &seqs, 100_000)
                .unwrap()
                .iter()
                .zip(&c.divisors)
                .map(|(l, d)| l[c.start..].iter().map(|&x| x as f64).sum::<f64>() / *d as f64)
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let want = scores[0] - max - scores.iter().map(|s| (s - max).exp()).sum::<f64>().ln();
            assert_eq!(&tokens[c.start..c.start + c.taken().len()], c.taken());
            assert!(
                (lp[c.start] as f64 - want).abs() < 1e-5,
                "token {}: stored {} vs fresh {want}",
                c.start,
                lp[c.start]
            );
            assert!((1..c.taken().len()).all(|k| lp[c.start + k] == 0.0), "the action's other tokens hold 0");
            scored += 1;
        }
    }
    assert!(scored >= 6, "{scored} scored actions");
}
