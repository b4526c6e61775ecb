//! Environments in another process, spoken to in JSON lines (the protocol is `bridges/PROTOCOL.md`).
//!
//! A [`Bridge`] is an [`Env`] whose state lives in a child process: ScienceWorld and
//! TextWorldExpress through `bridges/trajflow_bridges.py` (run with the cache venv's Python), or
//! any program a user names with `bridge:PROGRAM ARGS...`. Invariants:
//! - The process starts on the first reset, not when the env is built, so validating a pipeline
//!   starts nothing; processes of dropped, healthy bridges go back to a pool per command line and
//!   are reused by the next bridge of that command (a batch of K×tasks episodes needs as many
//!   processes as episodes in flight, but a run starts them once).
//! - Every answer has a deadline (`TRAJFLOW_ENV_TIMEOUT` seconds, default 60; a new process's
//!   hello line and its first answer, which may start a JVM or load a task, get 4× that each). A
//!   process that misses it, exits, or breaks the protocol is killed and never reused: the episode in play ends (done, not
//!   successful) and [`Env::failure`] says why, with the process's stderr tail; the next reset
//!   starts a fresh process, so the run goes on.
//! - An answer `{"error": ...}` is the environment's own error: the episode fails the same way, but
//!   the process, which kept the protocol, stays.
//! - A user's bridge is stored under a stable identity ([`Env::id`]): its hello line's `name`, plus
//!   the arguments after its program file (`counter:--level:3`), never the interpreter's or the
//!   script's path, so ids are the same on every machine. The bundled bridges keep their registry
//!   names (`twx:coin`).
//! - Processes are closed, not killed: a dropped healthy process gets `{"op": "close"}` and end of
//!   input; the idle pool is closed by [`close_idle`] when the command ends.

pub mod conformance;
mod process;

use std::sync::{Mutex, OnceLock};
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

/// Idle processes by command line, with their hello lines.
static POOL: Mutex<Vec<(Vec<String>, LineProcess, Value)>> = Mutex::new(Vec::new());

/// Closes every idle process (`close`, then end of input; killed after a grace period): called
/// when a command ends, so bridges exit as the protocol says rather than being killed.
pub fn close_idle() {
    let idle = std::mem::take(&mut *POOL.lock().expect("bridge pool"));
    for (_, mut process, _) in idle {
        process.close();
    }
}

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
/// `twx[:GAME]`, or `bridge:PROGRAM ARGS...` (split as a POSIX shell would: quotes and
/// backslashes keep spaces in a path; `None` for unbalanced quotes or nothing to run).
pub fn command_of(name: &str) -> Option<Vec<String>> {
    if let Some(user) = name.strip_prefix(USER_PREFIX) {
        return shlex::split(user).filter(|argv| !argv.is_empty());
    }
    let (kind, variant) = name.split_once(':').map_or((name, None), |(k, v)| (k, Some(v)));
    if !BRIDGE_NAMES.contains(&kind) || variant == Some("") {
        return None;
    }
    let mut argv = vec![python(), "-u".into(), "-c".into(), BRIDGES_PY.into(), kind.into()];
    argv.extend(variant.map(String::from));
    Some(argv)
}

/// The identity stored for a user bridge whose hello line is `hello`: its `name` (else the program
/// file's stem), then its own arguments, joined by `:`. The program file is the last argument that
/// names an existing file (the script after an interpreter and its flags), else the program; the
/// bridge's own arguments are those after it.
fn identity(argv: &[String], hello: &Value) -> String {
    let file = argv.iter().rposition(|a| std::path::Path::new(a).is_file()).unwrap_or(0);
    let name = hello.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()).map_or_else(
        || {
            std::path::Path::new(&argv[file])
                .file_stem()
                .map_or_else(|| argv[file].clone(), |s| s.to_string_lossy().into())
        },
        String::from,
    );
    std::iter::once(name).chain(argv[file + 1..].iter().cloned()).collect::<Vec<_>>().join(":")
}

/// The mutable side of a bridge: its process (if running) and the last failure.
struct Link {
    process: Option<LineProcess>,
    /// The running process's hello line.
    hello: Value,
    failure: Option<String>,
    done: bool,
}

/// An environment in a child process.
pub struct Bridge {
    name: String,
    argv: Vec<String>,
    timeout: Duration,
    /// The identity in stored data: the registry name of a bundled bridge; a user bridge's from
    /// its first hello line.
    id: OnceLock<String>,
    link: Mutex<Link>,
}

impl Bridge {
    /// A bridge for the registry name `name` (see [`command_of`]); `None` if it is not one.
    pub fn by_name(name: &str) -> Option<Self> {
        Self::by_name_within(name, deadline())
    }

    /// [`Bridge::by_name`] with a deadline of `timeout` per answer.
    pub fn by_name_within(name: &str, timeout: Duration) -> Option<Self> {
        let bridge = Self::new(name, command_of(name)?, timeout);
        if !name.starts_with(USER_PREFIX) {
            bridge.id.get_or_init(|| name.to_string());
        }
        Some(bridge)
    }

    /// A bridge running `argv`, named `name`, with a deadline of `timeout` per answer.
    pub fn new(name: &str, argv: Vec<String>, timeout: Duration) -> Self {
        let link = Link { process: None, hello: Value::Null, failure: None, done: true };
        Bridge { name: name.into(), argv, timeout, id: OnceLock::new(), link: Mutex::new(link) }
    }

    /// The deadline per answer.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The hello line of the running process (`null` before the first reset).
    pub fn hello(&self) -> Value {
        self.link.lock().expect("bridge").hello.clone()
    }

    /// Ends the running process as the protocol says (`close`); returns whether it exited by
    /// itself within the grace period. The next reset starts a fresh one.
    pub fn close(&mut self) -> bool {
        let link = self.link.get_mut().expect("bridge");
        link.done = true;
        link.process.take().is_none_or(|mut p| p.close())
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
            let (process, hello) = match pooled {
                Some((_, p, hello)) => (p, hello),
                None => {
                    let mut p = LineProcess::spawn(&self.argv[0], &self.argv[1..])?;
                    let hello = p.read(self.timeout * 4)?;
                    if hello.get("protocol").and_then(Value::as_u64) != Some(1) {
                        return Err(format!(
                            "environment process '{}' did not say {{\"protocol\": 1}} first: {hello}",
                            self.name
                        ));
                    }
                    (p, hello)
                }
            };
            self.id.get_or_init(|| identity(&self.argv, &hello));
            link.hello = hello;
            link.process = Some(process);
        }
        Ok(link.process.as_mut().expect("just set"))
    }

    /// Sends `request` and returns the answer; any failure ends the episode and is recorded.
    fn call(&self, link: &mut Link, request: Value) -> Option<Value> {
        if link.failure.is_some() {
            return None;
        }
        let answer = self.process(link).and_then(|p| {
            let deadline = if p.fresh() { self.timeout * 4 } else { self.timeout };
            p.request(&request, deadline)
        });
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

/// The deadline per answer: `TRAJFLOW_ENV_TIMEOUT` seconds, default 60.
pub fn deadline() -> Duration {
    let secs = std::env::var("TRAJFLOW_ENV_TIMEOUT").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(60.0);
    Duration::from_secs_f64(secs)
}

impl Env for Bridge {
    fn name(&self) -> &str {
        &self.name
    }

    /// A bundled bridge's registry name; a user bridge's hello name and own arguments, once its
    /// process has started (its registry name before).
    fn id(&self) -> String {
        self.id.get().unwrap_or(&self.name).clone()
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

    /// Unless the hello line says `"admissible": "partial"`.
    fn lists_every_valid_action(&self) -> bool {
        self.link.lock().expect("bridge").hello.get("admissible").and_then(Value::as_str) != Some("partial")
    }

    fn expert_action(&self) -> Option<String> {
        let mut link = self.link.lock().expect("bridge");
        if link.done {
            return None;
        }
        self.call(&mut link, json!({"op": "expert"}))?.get("action").and_then(Value::as_str).map(String::from)
    }

    fn max_steps(&self) -> usize {
        let hello = &self.link.lock().expect("bridge").hello;
        hello.get("max_steps").and_then(Value::as_u64).map_or(DEFAULT_MAX_STEPS, |m| m as usize)
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
            POOL.lock().expect("bridge pool").push((
                std::mem::take(&mut self.argv),
                p,
                std::mem::take(&mut link.hello),
            ));
        }
    }
}

#[cfg(test)]
mod tests;
