//! Environments in another process, spoken to in JSON lines (the protocol is `bridges/PROTOCOL.md`).
//!
//! A [`Bridge`] is an [`Env`] whose state lives in a child process: ScienceWorld and
//! TextWorldExpress through `bridges/trajflow_bridges.py` (run with the cache venv's Python), or
//! any program a user names with `bridge:PROGRAM ARGS...`. Invariants:
//! - The process starts on the first reset, not when the env is built, so validating a pipeline
//!   starts nothing; processes of dropped, healthy bridges go back to a pool per command line and
//!   are reused by the next bridge of that command (a batch of K×tasks episodes needs as many
//!   processes as episodes in flight, but a run starts them once).
//! - Every answer has a deadline (`TRAJFLOW_ENV_TIMEOUT` seconds, default 60; the first answer of
//!   a new process, which may start a JVM, gets 4× that). A process that misses it, exits, or
//!   breaks the protocol is killed and never reused: the episode in play ends (done, not
//!   successful) and [`Env::failure`] says why, with the process's stderr tail; the next reset
//!   starts a fresh process, so the run goes on.
//! - An answer `{"error": ...}` is the environment's own error: the episode fails the same way, but
//!   the process, which kept the protocol, stays.

mod process;

use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use self::process::LineProcess;
use super::{split_of, Env, Reset, Split, Step};

/// The bundled bridges (ScienceWorld, TextWorldExpress), run with `python -c`.
const BRIDGES_PY: &str = include_str!("../../../bridges/trajflow_bridges.py");

/// Registry names of the bundled bridges; each also takes `NAME:VARIANT` (a task or game name).
pub const BRIDGE_NAMES: &[&str] = &["scienceworld", "twx"];

/// Prefix of a user's own bridge: `bridge:PROGRAM ARGS...`.
pub const USER_PREFIX: &str = "bridge:";

/// Step budget assumed until a process has said its own.
const DEFAULT_MAX_STEPS: usize = 100;

/// Idle processes by command line.
static POOL: Mutex<Vec<(Vec<String>, LineProcess, usize)>> = Mutex::new(Vec::new());

/// The Python that runs the bundled bridges: `TRAJFLOW_PYTHON`, else the cache venv's (where
/// `make setup` installs the environment packages), else `python3`.
pub fn python() -> String {
    if let Ok(p) = std::env::var("TRAJFLOW_PYTHON") {
        return p;
    }
    let cache = std::env::var("TRAJFLOW_CACHE").map(std::path::PathBuf::from).unwrap_or_else(|_| {
        std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/trajflow")
    });
    let venv = cache.join("venv/bin/python");
    if venv.exists() {
        venv.to_string_lossy().into_owned()
    } else {
        "python3".into()
    }
}

/// The command line of environment `name` if it is a bridge: `scienceworld[:TASK]`,
/// `twx[:GAME]`, or `bridge:PROGRAM ARGS...`.
pub fn command_of(name: &str) -> Option<Vec<String>> {
    if let Some(user) = name.strip_prefix(USER_PREFIX) {
        let argv: Vec<String> = user.split_whitespace().map(String::from).collect();
        return (!argv.is_empty()).then_some(argv);
    }
    let (kind, variant) = name.split_once(':').map_or((name, None), |(k, v)| (k, Some(v)));
    if !BRIDGE_NAMES.contains(&kind) || variant == Some("") {
        return None;
    }
    let mut argv = vec![python(), "-u".into(), "-c".into(), BRIDGES_PY.into(), kind.into()];
    argv.extend(variant.map(String::from));
    Some(argv)
}

/// The mutable side of a bridge: its process (if running) and the last failure.
struct Link {
    process: Option<LineProcess>,
    failure: Option<String>,
    max_steps: usize,
    done: bool,
}

/// An environment in a child process.
pub struct Bridge {
    name: String,
    argv: Vec<String>,
    timeout: Duration,
    link: Mutex<Link>,
}

impl Bridge {
    /// A bridge for the registry name `name` (see [`command_of`]); `None` if it is not one.
    pub fn by_name(name: &str) -> Option<Self> {
        let secs = std::env::var("TRAJFLOW_ENV_TIMEOUT").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(60.0);
        Some(Self::new(name, command_of(name)?, Duration::from_secs_f64(secs)))
    }

    /// A bridge running `argv`, named `name`, with a deadline of `timeout` per answer.
    pub fn new(name: &str, argv: Vec<String>, timeout: Duration) -> Self {
        let link = Link { process: None, failure: None, max_steps: DEFAULT_MAX_STEPS, done: true };
        Bridge { name: name.into(), argv, timeout, link: Mutex::new(link) }
    }

    /// The process id of the running process, if any (tests kill it).
    pub fn pid(&self) -> Option<u32> {
        self.link.lock().expect("bridge").process.as_ref().map(LineProcess::pid)
    }

    /// The running process, started (or taken from the pool) if there is none; its hello read.
    fn process<'a>(&self, link: &'a mut Link) -> Result<&'a mut LineProcess, String> {
        if link.process.is_none() {
            let pooled = {
                let mut pool = POOL.lock().expect("bridge pool");
                // A pooled process may have exited while idle: those are dropped.
                pool.retain_mut(|(_, p, _)| p.is_alive());
                pool.iter().position(|(argv, _, _)| *argv == self.argv).map(|i| pool.swap_remove(i))
            };
            let (process, max_steps) = match pooled {
                Some((_, p, max_steps)) => (p, max_steps),
                None => {
                    let mut p = LineProcess::spawn(&self.argv[0], &self.argv[1..])?;
                    let hello = p.read(self.timeout * 4)?;
                    if hello.get("protocol").and_then(Value::as_u64) != Some(1) {
                        return Err(format!(
                            "environment process '{}' did not say {{\"protocol\": 1}} first: {hello}",
                            self.name
                        ));
                    }
                    let max_steps =
                        hello.get("max_steps").and_then(Value::as_u64).map_or(DEFAULT_MAX_STEPS, |m| m as usize);
                    (p, max_steps)
                }
            };
            link.max_steps = max_steps;
            link.process = Some(process);
        }
        Ok(link.process.as_mut().expect("just set"))
    }

    /// Sends `request` and returns the answer; any failure ends the episode and is recorded.
    fn call(&self, link: &mut Link, request: Value) -> Option<Value> {
        if link.failure.is_some() {
            return None;
        }
        let answer = self.process(link).and_then(|p| p.request(&request, self.timeout));
        let failure = match answer {
            Ok(a) => match a.get("error") {
                None => return Some(a),
                Some(e) => format!("environment '{}' answered an error to {request}: {e}", self.name),
            },
            Err(e) => {
                link.process = None; // killed; the next reset starts another
                e
            }
        };
        link.failure = Some(failure);
        link.done = true;
        None
    }
}

fn text(answer: &Value, key: &str) -> String {
    answer.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
}

impl Env for Bridge {
    fn name(&self) -> &str {
        &self.name
    }

    /// The bridge gets the task id, the seed and the task's split (`"train"`, `"dev"`, `"test"`).
    fn reset(&mut self, task_id: u64, seed: u64) -> Reset {
        let mut link = self.link.lock().expect("bridge");
        link.failure = None;
        link.done = false;
        let split = match split_of(task_id) {
            Split::Train => "train",
            Split::Dev => "dev",
            Split::Test => "test",
        };
        let answer = self.call(&mut link, json!({"op": "reset", "task_id": task_id, "seed": seed, "split": split}));
        let answer = answer.unwrap_or_default();
        Reset { observation: text(&answer, "observation"), task: text(&answer, "task") }
    }

    fn step(&mut self, action: &str) -> Step {
        let mut link = self.link.lock().expect("bridge");
        let ended = Step { observation: "Nothing happens.".into(), reward: 0.0, done: true, success: false };
        if link.done {
            return ended;
        }
        let Some(answer) = self.call(&mut link, json!({"op": "step", "action": action})) else { return ended };
        let reward = answer.get("reward").and_then(Value::as_f64).unwrap_or(0.0) as f32;
        if !reward.is_finite() {
            link.failure = Some(format!("environment '{}' answered a non-finite reward to '{action}'", self.name));
            link.done = true;
            return ended;
        }
        let done = answer.get("done").and_then(Value::as_bool).unwrap_or(false);
        link.done = done;
        Step {
            observation: text(&answer, "observation"),
            reward,
            done,
            success: answer.get("success").and_then(Value::as_bool).unwrap_or(false),
        }
    }

    fn admissible_actions(&self) -> Vec<String> {
        let mut link = self.link.lock().expect("bridge");
        if link.done {
            return Vec::new();
        }
        let answer = self.call(&mut link, json!({"op": "admissible"})).unwrap_or_default();
        let actions = answer.get("actions").and_then(Value::as_array).cloned().unwrap_or_default();
        actions.iter().filter_map(|a| a.as_str().map(String::from)).collect()
    }

    fn expert_action(&self) -> Option<String> {
        let mut link = self.link.lock().expect("bridge");
        if link.done {
            return None;
        }
        self.call(&mut link, json!({"op": "expert"}))?.get("action").and_then(Value::as_str).map(String::from)
    }

    fn max_steps(&self) -> usize {
        self.link.lock().expect("bridge").max_steps
    }

    fn failure(&self) -> Option<String> {
        self.link.lock().expect("bridge").failure.clone()
    }
}

impl Drop for Bridge {
    /// A healthy process goes back to the pool; a failed one is already gone.
    fn drop(&mut self) {
        let link = self.link.get_mut().expect("bridge");
        if let Some(p) = link.process.take() {
            POOL.lock().expect("bridge pool").push((std::mem::take(&mut self.argv), p, link.max_steps));
        }
    }
}

#[cfg(test)]
mod tests;
