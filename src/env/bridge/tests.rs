//! The bridge against a tiny protocol-only environment (`tests/fixtures/counter_bridge.py`): plays,
//! pooling, the three ways a process breaks (it dies, it hangs, it answers an error), identities,
//! quoting, `close`, and `env-check` finding each violation the fixture can seed.

use super::*;

const COUNTER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/counter_bridge.py");

fn counter(timeout: Duration) -> Bridge {
    Bridge::new("counter", vec![python(), COUNTER.into()], timeout)
}

/// The counter bridge with `options`, by its `bridge:` name (as a user writes it).
fn counter_with(options: &str) -> Bridge {
    Bridge::by_name(&format!("bridge:{} {COUNTER} {options}", python())).unwrap()
}

/// Plays the expert to the end; returns the rewards.
fn expert_play(env: &mut Bridge, task: u64) -> Vec<f32> {
    env.reset(task, 0);
    let mut rewards = Vec::new();
    while let Some(a) = env.expert_action() {
        let step = env.step(&a);
        rewards.push(step.reward);
        if step.done {
            assert!(step.success);
            break;
        }
    }
    rewards
}

#[test]
fn plays_through_the_protocol() {
    let mut env = counter(Duration::from_secs(20));
    let reset = env.reset(5, 0);
    assert_eq!(reset.observation, "The counter shows 0.");
    assert_eq!(reset.task, "Your task is to: count to 3.");
    assert_eq!(env.max_steps(), 8, "from the hello line");
    assert_eq!(env.admissible_actions(), ["dec", "inc"]);
    assert_eq!(env.step("inc").observation, "The counter shows 1.");
    assert_eq!(expert_play(&mut env, 6), [0.0, 0.0, 0.0, 1.0]);
    assert!(env.failure().is_none());
    assert!(env.admissible_actions().is_empty() && env.expert_action().is_none(), "the episode is done");
}

#[test]
fn a_dropped_bridge_lends_its_process_to_the_next() {
    let mut a = counter(Duration::from_secs(20));
    a.reset(0, 0);
    let pid = a.pid().unwrap();
    drop(a);
    let mut b = counter(Duration::from_secs(20));
    assert_eq!(expert_play(&mut b, 1), [0.0, 0.0, 1.0]);
    // Other tests may have taken it first; then b started its own.
    let reused = b.pid() == Some(pid);
    assert!(reused || b.pid().is_some());
}

#[test]
fn a_killed_process_fails_the_episode_and_the_next_reset_starts_another() {
    let mut env = counter(Duration::from_secs(20));
    env.reset(2, 0);
    env.step("inc");
    let pid = env.pid().unwrap();
    std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    let step = env.step("inc");
    assert!(step.done && !step.success && step.reward == 0.0);
    let err = env.failure().unwrap();
    assert!(err.contains("closed its stdout") || err.contains("cannot be written"), "{err}");
    assert!(env.pid().is_none() && env.expert_action().is_none());
    assert_eq!(expert_play(&mut env, 2), [0.0, 0.0, 0.0, 1.0], "a fresh process, a fresh episode");
    assert_ne!(env.pid(), Some(pid));
    assert!(env.failure().is_none());
}

#[test]
fn a_crash_is_reported_with_the_stderr_tail() {
    let mut env = counter(Duration::from_secs(20));
    env.reset(0, 0);
    assert!(env.step("crash").done);
    let err = env.failure().unwrap();
    assert!(err.contains("exit status: 7") && err.contains("crashing on purpose"), "{err}");
}

#[test]
fn a_hung_process_is_killed_at_the_deadline() {
    let mut env = counter(Duration::from_millis(1500));
    env.reset(0, 0);
    let pid = env.pid().unwrap();
    assert!(env.step("hang").done);
    let err = env.failure().unwrap();
    assert!(err.contains("gave no answer within 1.5 s (killed)"), "{err}");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(expert_play(&mut env, 0).last(), Some(&1.0));
}

#[test]
fn an_error_answer_fails_the_episode_but_keeps_the_process() {
    let mut env = counter(Duration::from_secs(20));
    env.reset(0, 0);
    let pid = env.pid();
    assert!(env.step("oops").done);
    let err = env.failure().unwrap();
    assert!(err.contains("answered an error") && err.contains("oops on purpose"), "{err}");
    assert_eq!(env.step("inc").observation, "Nothing happens.", "the episode stays over");
    expert_play(&mut env, 0);
    assert_eq!(env.pid(), pid, "the process kept the protocol and stays");
}

#[test]
fn a_program_without_the_hello_line_is_refused() {
    let mut env =
        Bridge::new("cat", vec!["sh".into(), "-c".into(), "echo '{\"hi\": 1}'; cat".into()], Duration::from_secs(5));
    env.reset(0, 0);
    let err = env.failure().unwrap();
    assert!(err.contains("did not say {\"protocol\": 1} first"), "{err}");
}

#[test]
fn names_map_to_command_lines() {
    assert_eq!(command_of("bridge:python3 my_env.py --fast").unwrap(), ["python3", "my_env.py", "--fast"]);
    let sw = command_of("scienceworld:boil").unwrap();
    assert_eq!(&sw[1..3], ["-u", "-c"]);
    assert_eq!(&sw[4..], ["scienceworld", "boil"]);
    assert_eq!(command_of("twx").unwrap()[4..], ["twx"]);
    assert!(command_of("household").is_none() && command_of("twx:").is_none() && command_of("bridge: ").is_none());
    assert_eq!(
        command_of("bridge:python3 'my envs/env.py' \"a b\" c\\ d").unwrap(),
        ["python3", "my envs/env.py", "a b", "c d"]
    );
    assert!(command_of("bridge:python3 'unbalanced").is_none());
}

#[test]
fn identities_are_the_hello_name_and_the_bridges_own_arguments() {
    let mut env = counter_with("--max-steps 9 --shaped");
    assert!(env.id().starts_with("bridge:"), "before the process said hello: its registry name");
    env.reset(0, 0);
    assert_eq!(env.id(), "counter:--max-steps:9:--shaped", "no interpreter or script path");
    assert_eq!(env.max_steps(), 9);
    let mut plain = counter_with("");
    plain.reset(0, 0);
    assert_eq!(plain.id(), "counter");
    let mut nameless = counter_with("--violate no-name");
    nameless.reset(0, 0);
    assert_eq!(nameless.id(), "counter_bridge:--violate:no-name", "the script's stem stands in for the name");
    assert_eq!(Bridge::by_name("twx:coin").unwrap().id(), "twx:coin", "bundled bridges keep their names");
}

#[test]
fn a_path_with_a_space_is_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("my bridges").join("counter bridge.py");
    std::fs::create_dir_all(script.parent().unwrap()).unwrap();
    std::fs::copy(COUNTER, &script).unwrap();
    let mut env = Bridge::by_name(&format!("bridge:{} '{}' --shaped", python(), script.display())).unwrap();
    assert_eq!(env.reset(1, 0).observation, "The counter shows 0.");
    assert!(env.failure().is_none(), "{:?}", env.failure());
    assert_eq!(env.id(), "counter:--shaped");
}

#[test]
fn processes_are_closed_not_killed() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests");
    let mut env = counter_with(&format!("--log {}", log.display()));
    env.reset(0, 0);
    assert!(env.close(), "the counter exits when asked");
    env.reset(1, 0);
    drop(env); // to the idle pool
    close_idle();
    let requests = std::fs::read_to_string(&log).unwrap();
    let ops: Vec<&str> = requests.lines().filter_map(|l| l.split('"').nth(3)).collect();
    assert_eq!(ops, ["reset", "close", "reset", "close"], "{requests}");
}

/// A new process's first answer may take 4× the deadline (a bridge may load lazily); later answers
/// may not.
#[test]
fn a_lazy_first_reset_gets_four_deadlines() {
    let within = |options: &str| {
        let name = format!("bridge:{} {COUNTER} {options}", python());
        Bridge::by_name_within(&name, Duration::from_millis(500)).unwrap()
    };
    let mut lazy = within("--lazy 1.2");
    lazy.reset(2, 0);
    assert_eq!(lazy.failure(), None);
    assert_eq!(lazy.step("inc").observation, "The counter shows 1.");
    let mut too_lazy = within("--lazy 3");
    too_lazy.reset(2, 0);
    let failure = too_lazy.failure().expect("3 s is more than 4 × 0.5 s");
    assert!(failure.contains("gave no answer within 2.0 s"), "{failure}");
}

#[test]
fn env_check_holds_on_the_counter_and_names_each_seeded_violation() {
    let holds = conformance::check(counter_with(""), 2);
    let violated: Vec<_> = holds.iter().filter(|f| f.verdict != conformance::Verdict::Holds).collect();
    assert!(violated.is_empty(), "{}", conformance::table("counter", &holds));
    for (options, check) in [
        ("--violate no-name", "hello"),
        ("--violate nondeterministic", "determinism"),
        ("--violate varying-lists", "determinism"),
        ("--violate expert-not-admissible", "expert_admissible"),
        ("--violate expert-unsolved", "expert_solves"),
        ("--max-steps 2", "budget"),
        ("--violate crash-on-invalid", "invalid_action"),
        ("--violate noisy-stdout", "stdout"),
        ("--violate ignore-close", "close"),
    ] {
        let findings = conformance::check(counter_with(options), 2);
        let violated: Vec<&str> =
            findings.iter().filter(|f| f.verdict == conformance::Verdict::Violated).map(|f| f.check).collect();
        assert_eq!(violated, [check], "{options}:\n{}", conformance::table(options, &findings));
    }
    // Partial lists are hints: that they vary is reported, not a violation.
    let partial = conformance::check(counter_with("--partial --violate varying-lists"), 2);
    let table = conformance::table("partial", &partial);
    assert!(partial.iter().all(|f| f.verdict == conformance::Verdict::Holds), "{table}");
    assert!(table.contains("the (partial) admissible lists varied in 4"), "{table}");
    let slow =
        Bridge::by_name_within(&format!("bridge:{} {COUNTER} --violate slow", python()), Duration::from_millis(500));
    let findings = conformance::check(slow.unwrap(), 1);
    let violated: Vec<&str> =
        findings.iter().filter(|f| f.verdict == conformance::Verdict::Violated).map(|f| f.check).collect();
    assert_eq!(violated, ["deadlines"], "{}", conformance::table("slow", &findings));
}
