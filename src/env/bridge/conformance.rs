//! `trajflow env-check`: does a bridge keep the protocol (bridges/PROTOCOL.md)? Each check plays
//! the bridge through [`Bridge`], exactly as rollouts do, and says whether its part of the
//! contract holds, is violated, or could not be tried.
//!
//! Invariants: a failure of the process is attributed to the check it breaks, not to the check
//! that happened to be running — a non-JSON line to `stdout`, a missed deadline to `deadlines`, a
//! bad or missing hello line to `hello` — and the running check is then skipped (the next reset
//! starts a fresh process, so later checks still run). Everything else a check sees (an error
//! answer, a crash, a different replay) is that check's. Nothing here is timed against a
//! wall-clock goal except the protocol's own deadline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Bridge;
use crate::env::{task_ids, Env, Split};

/// An action no environment accepts, for the invalid-action check.
const INVALID: &str = "trajflow env-check: an action that is not valid";

/// What became of one part of the contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The bridge keeps it.
    Holds,
    /// The bridge breaks it.
    Violated,
    /// It could not be tried (the bridge broke otherwise, or has no expert / no admissible list).
    Skipped,
}

/// One row of the report.
#[derive(Clone, Debug)]
pub struct Finding {
    /// The check's name (`hello`, `determinism`, ...).
    pub check: &'static str,
    /// Its verdict.
    pub verdict: Verdict,
    /// What was seen.
    pub detail: String,
}

/// How a failure message of the bridge classifies: the check it belongs to, if not the running one.
fn owner(failure: &str) -> Option<&'static str> {
    if failure.contains("not a JSON object") {
        Some("stdout")
    } else if failure.contains("gave no answer within") {
        Some("deadlines")
    } else if failure.contains("did not say {\"protocol\": 1}") || failure.contains("cannot start") {
        Some("hello")
    } else {
        None
    }
}

/// How an expert episode ended.
#[derive(Clone, Debug, PartialEq)]
enum End {
    Solved,
    /// Done (or the expert had no action), not solved.
    Unsolved,
    /// Still going, or ended unsolved, when the step budget was spent.
    OverBudget,
    /// The bridge failed: the message.
    Broke(String),
}

/// One episode: what the environment answered to reset and to each step, in order, and how it
/// ended.
struct Play {
    transcript: Vec<String>,
    /// The expert's suggestion in each state.
    experts: Vec<Option<String>>,
    /// (action taken, the admissible actions it was chosen from) per step.
    choices: Vec<(String, Vec<String>)>,
    end: End,
}

/// The slowest answer per request kind.
#[derive(Default)]
struct Clock(BTreeMap<&'static str, Duration>);

impl Clock {
    fn time<T>(&mut self, op: &'static str, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        let slowest = self.0.entry(op).or_default();
        *slowest = (*slowest).max(t.elapsed());
        out
    }
}

/// Plays `(task, seed)` within the step budget, with the actions of `script` when given (a
/// replay), else with the bridge's expert.
fn play(env: &mut Bridge, task: u64, seed: u64, script: Option<&Play>, clock: &mut Clock) -> Play {
    let reset = clock.time("reset", || env.reset(task, seed));
    let mut play =
        Play { transcript: vec![format!("{reset:?}")], experts: Vec::new(), choices: Vec::new(), end: End::Unsolved };
    for i in 0..env.max_steps() {
        let admissible = clock.time("admissible", || env.admissible_actions());
        let expert = clock.time("expert", || env.expert_action());
        play.experts.push(expert.clone());
        let action = match script {
            Some(s) => s.choices.get(i).map(|(a, _)| a.clone()),
            None => expert,
        };
        let Some(action) = action else { break };
        let step = clock.time("step", || env.step(&action));
        play.transcript.push(format!("{step:?}"));
        play.choices.push((action, admissible));
        if step.done {
            play.end = match (step.success, play.choices.len() == env.max_steps()) {
                (true, _) => End::Solved,
                (false, true) => End::OverBudget,
                (false, false) => End::Unsolved,
            };
            break;
        }
        if play.choices.len() == env.max_steps() {
            play.end = End::OverBudget;
        }
    }
    if let Some(f) = env.failure() {
        play.end = End::Broke(f);
    }
    play
}

/// The report under construction.
struct Report {
    findings: Vec<Finding>,
    /// Failures attributed to `stdout`, `deadlines` and `hello`.
    owned: BTreeMap<&'static str, String>,
}

impl Report {
    fn add(&mut self, check: &'static str, verdict: Verdict, detail: impl Into<String>) {
        self.findings.push(Finding { check, verdict, detail: detail.into() });
    }

    /// Records the check `check` as broken by `failure`: a violation of its own, or skipped and
    /// the failure handed to the check that owns it.
    fn broke(&mut self, check: &'static str, failure: &str) {
        match owner(failure) {
            Some(o) => {
                self.owned.entry(o).or_insert_with(|| failure.to_string());
                self.add(check, Verdict::Skipped, format!("the bridge broke (see {o})"));
            }
            None => self.add(check, Verdict::Violated, failure.to_string()),
        }
    }
}

/// Checks the bridge `env`, named `name`, on the first `tasks` train tasks with seeds 0 and 1.
pub fn check(mut env: Bridge, tasks: usize) -> Vec<Finding> {
    let mut r = Report { findings: Vec::new(), owned: BTreeMap::new() };
    let mut clock = Clock::default();
    let ids = task_ids(Split::Train, tasks.max(1));

    // hello: the first reset starts the process.
    clock.time("reset", || env.reset(ids[0], 0));
    let hello = env.hello();
    if let Some(f) = env.failure().filter(|_| hello.is_null()) {
        r.add("hello", Verdict::Violated, f);
        for check in ["determinism", "expert_admissible", "expert_solves", "budget", "invalid_action", "close"] {
            r.add(check, Verdict::Skipped, "no process to check");
        }
        return r.findings;
    }
    hello_check(&mut r, &hello);

    // Every (task, seed) played twice, the replays after all first plays.
    let pairs: Vec<(u64, u64)> = ids.iter().flat_map(|&t| [(t, 0), (t, 1)]).collect();
    let first: Vec<Play> = pairs.iter().map(|&(t, s)| play(&mut env, t, s, None, &mut clock)).collect();
    let again: Vec<Play> =
        pairs.iter().zip(&first).map(|(&(t, s), p)| play(&mut env, t, s, Some(p), &mut clock)).collect();
    let partial = !env.lists_every_valid_action();
    determinism(&mut r, &pairs, &first, &again, partial);
    expert(&mut r, &pairs, &first, env.max_steps(), partial);
    invalid_action(&mut r, &mut env, ids[0], &mut clock);

    let deadline = env.timeout();
    let slowest = clock.0.iter().map(|(op, d)| format!("{op} {:.2} s", d.as_secs_f64())).collect::<Vec<_>>().join(", ");
    match r.owned.get("deadlines").cloned() {
        Some(f) => r.add("deadlines", Verdict::Violated, f),
        None => r.add(
            "deadlines",
            Verdict::Holds,
            format!("slowest answers: {slowest} (deadline {:.0} s)", deadline.as_secs_f64()),
        ),
    }
    match r.owned.get("stdout").cloned() {
        Some(f) => r.add("stdout", Verdict::Violated, f),
        None => r.add("stdout", Verdict::Holds, "protocol lines only"),
    }
    if let Some(f) = r.owned.get("hello").cloned() {
        r.add("hello", Verdict::Violated, format!("a restarted process: {f}"));
    }
    if env.close() {
        r.add("close", Verdict::Holds, "answered close and exited");
    } else {
        r.add("close", Verdict::Violated, "did not exit within 2 s of close and end of input (killed)");
    }
    r.findings
}

fn hello_check(r: &mut Report, hello: &Value) {
    let name = hello.get("name").and_then(Value::as_str).filter(|n| !n.is_empty());
    let steps = hello.get("max_steps");
    let steps_ok = steps.is_none_or(|s| s.as_u64().is_some_and(|n| n > 0));
    let lists_ok = hello.get("admissible").is_none_or(|a| matches!(a.as_str(), Some("complete" | "partial")));
    match (name, steps_ok, lists_ok) {
        (None, _, _) => {
            r.add("hello", Verdict::Violated, format!("no \"name\" (ids fall back to the file name): {hello}"))
        }
        (_, false, _) => r.add("hello", Verdict::Violated, format!("\"max_steps\" is not a positive integer: {hello}")),
        (_, _, false) => r.add(
            "hello",
            Verdict::Violated,
            format!("\"admissible\" is neither \"complete\" nor \"partial\": {hello}"),
        ),
        (Some(n), true, true) => {
            let budget = steps.map_or("not given, 100 assumed".into(), |s| s.to_string());
            r.add("hello", Verdict::Holds, format!("name \"{n}\", max_steps {budget}"))
        }
    }
}

/// Replaying a (task, seed) pair's actions gives the same observations, rewards and ends, and —
/// unless the hello line declares them `partial` — the same admissible lists.
fn determinism(r: &mut Report, pairs: &[(u64, u64)], first: &[Play], again: &[Play], partial: bool) {
    let lists = |p: &Play| p.choices.iter().map(|(_, l)| format!("admissible {l:?}")).collect::<Vec<_>>();
    for ((&(task, seed), a), b) in pairs.iter().zip(first).zip(again) {
        for p in [a, b] {
            if let End::Broke(f) = &p.end {
                return r.broke("determinism", f);
            }
        }
        let mut compared = vec![(&a.transcript, &b.transcript, "answer")];
        let (lists_a, lists_b) = (lists(a), lists(b));
        if !partial {
            compared.push((&lists_a, &lists_b, "admissible list"));
        }
        for (x, y, what) in compared {
            if let Some(i) = (0..x.len().max(y.len())).find(|&i| x.get(i) != y.get(i)) {
                let show = |t: &Vec<String>| t.get(i).map_or("(nothing)".to_string(), |s| format!("{s:.160}"));
                return r.add(
                    "determinism",
                    Verdict::Violated,
                    format!("task {task} seed {seed} played twice differs at {what} {i}: {} vs {}", show(x), show(y)),
                );
            }
        }
    }
    // The protocol asks the environment, not its expert, to be deterministic: TextWorldExpress's
    // coin game, for one, draws a new gold path at every reset. Partial lists are hints, not the
    // action space: ScienceWorld names the same objects differently from one load to the next.
    let mut notes = String::new();
    let varied = first.iter().zip(again).filter(|(a, b)| a.experts != b.experts).count();
    if varied > 0 {
        notes += &format!("; the expert's suggestions varied in {varied}");
    }
    let varied = first.iter().zip(again).filter(|(a, b)| lists(a) != lists(b)).count();
    if varied > 0 {
        notes += &format!("; the (partial) admissible lists varied in {varied}");
    }
    r.add("determinism", Verdict::Holds, format!("{} (task, seed) pairs replayed identically{notes}", pairs.len()));
}

/// The expert solves its tasks within the budget, choosing from the admissible lists (unless the
/// hello line declares them `partial`).
fn expert(r: &mut Report, pairs: &[(u64, u64)], plays: &[Play], max_steps: usize, partial: bool) {
    if let Some(End::Broke(f)) = plays.iter().map(|p| &p.end).find(|e| matches!(e, End::Broke(_))) {
        for check in ["expert_admissible", "expert_solves", "budget"] {
            r.broke(check, f);
        }
        return;
    }
    if plays.iter().all(|p| p.choices.is_empty()) {
        for check in ["expert_admissible", "expert_solves", "budget"] {
            r.add(check, Verdict::Skipped, "the expert has no action in any start state");
        }
        return;
    }
    let listed: Vec<&(String, Vec<String>)> =
        plays.iter().flat_map(|p| &p.choices).filter(|(_, a)| !a.is_empty()).collect();
    let outside = listed.iter().filter(|(e, a)| !a.contains(e)).count();
    match listed.iter().find(|(e, a)| !a.contains(e)) {
        _ if listed.is_empty() => r.add("expert_admissible", Verdict::Skipped, "no admissible lists"),
        Some(_) if partial => r.add(
            "expert_admissible",
            Verdict::Holds,
            format!("the lists are declared partial: {outside} of {} expert actions are not listed", listed.len()),
        ),
        Some((e, a)) => r.add(
            "expert_admissible",
            Verdict::Violated,
            format!("the expert's '{e}' is not among the admissible actions {a:?}"),
        ),
        None => r.add("expert_admissible", Verdict::Holds, format!("{} expert actions, each admissible", listed.len())),
    }
    let ending = |end: End| -> Vec<String> {
        pairs.iter().zip(plays).filter(|(_, p)| p.end == end).map(|((t, s), _)| format!("task {t} seed {s}")).collect()
    };
    let unsolved = ending(End::Unsolved);
    let solved = plays.iter().filter(|p| p.end == End::Solved).count();
    match unsolved.first() {
        Some(first) => r.add(
            "expert_solves",
            Verdict::Violated,
            format!("{} expert episodes ended unsolved, e.g. {first}", unsolved.len()),
        ),
        None => {
            let budget = if solved < plays.len() { " (the others stopped by the step budget)" } else { "" };
            r.add(
                "expert_solves",
                Verdict::Holds,
                format!("{solved} of {} expert episodes solved{budget}", plays.len()),
            )
        }
    }
    let over = ending(End::OverBudget);
    let longest = plays.iter().map(|p| p.choices.len()).max().unwrap_or(0);
    match over.first() {
        Some(first) => r.add(
            "budget",
            Verdict::Violated,
            format!(
                "the expert needs more than max_steps = {max_steps} steps in {} episodes, e.g. {first}",
                over.len()
            ),
        ),
        None => {
            r.add("budget", Verdict::Holds, format!("the expert's longest episode: {longest} of {max_steps} steps"))
        }
    }
}

/// An invalid action is answered with an observation or an error, and the process stays: the
/// next episode plays.
fn invalid_action(r: &mut Report, env: &mut Bridge, task: u64, clock: &mut Clock) {
    clock.time("reset", || env.reset(task, 0));
    let step = clock.time("step", || env.step(INVALID));
    let answered = match env.failure() {
        None => format!("answered an observation: {:.80}", step.observation),
        Some(f) if f.contains("answered an error") => "answered an error".to_string(),
        Some(f) => return r.broke("invalid_action", &format!("on an invalid action: {f}")),
    };
    let pid = env.pid();
    let next = play(env, task, 0, None, clock);
    match next.end {
        End::Broke(f) => r.broke("invalid_action", &format!("the episode after an invalid action: {f}")),
        _ if env.pid() != pid => {
            r.add("invalid_action", Verdict::Violated, "the process exited after an invalid action")
        }
        _ => r.add("invalid_action", Verdict::Holds, format!("{answered}; the process stays")),
    }
}

/// The report as a table, one row per check.
pub fn table(name: &str, findings: &[Finding]) -> String {
    let mut out = format!("env-check {name}\n{:<18} {:<9} detail\n", "check", "verdict");
    for f in findings {
        let verdict = match f.verdict {
            Verdict::Holds => "holds",
            Verdict::Violated => "VIOLATED",
            Verdict::Skipped => "skipped",
        };
        let detail = f.detail.lines().next().unwrap_or_default();
        out.push_str(&format!("{:<18} {:<9} {detail:.300}\n", f.check, verdict));
    }
    out
}
