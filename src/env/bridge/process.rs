//! A child process spoken to one JSON line at a time, with a deadline on every answer.
//!
//! Invariants: the child's stdout carries only protocol lines (one JSON object each); a reader
//! thread turns them into a channel, so waiting for an answer is a `recv_timeout`, never a blocking
//! read that a hung child could hold forever. The child's stderr is drained by a second thread
//! into a bounded tail (the last [`STDERR_TAIL`] lines), quoted in every error, so a bridge that
//! dies says why. A process that missed a deadline, broke the protocol or exited is killed and
//! never used again ([`LineProcess::request`] consumes nothing, but the caller drops it). A
//! process that closed its stdout is given [`EXIT_GRACE`] to exit on its own first, so the status
//! quoted is its own, not the kill's. A healthy process is dropped by sending it `close` and
//! giving it [`EXIT_GRACE`] to exit before it is killed.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// Lines of the child's stderr kept for error messages.
pub const STDERR_TAIL: usize = 20;

/// How long a process that closed its stdout, or was asked to close, may take to exit by itself.
pub const EXIT_GRACE: Duration = Duration::from_secs(2);

/// A running child process with a line protocol on stdin/stdout.
pub struct LineProcess {
    child: Child,
    /// `None` once the child was asked to close (its stdin then is closed too).
    stdin: Option<ChildStdin>,
    lines: Receiver<std::io::Result<String>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    /// Requests sent so far.
    requests: usize,
    /// The command line, for messages.
    pub command: String,
}

impl LineProcess {
    /// Starts `program args...` with piped stdin/stdout/stderr.
    pub fn spawn(program: &str, args: &[String]) -> Result<Self, String> {
        let command = std::iter::once(program)
            .chain(args.iter().map(String::as_str))
            .map(|a| shlex::try_quote(a).map_or_else(|_| a.to_string(), |q| q.into_owned()))
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start '{command}': {e}"))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr_pipe = child.stderr.take().expect("piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let tail = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines().map_while(|l| l.ok()) {
                let mut t = tail.lock().expect("stderr tail");
                if t.len() == STDERR_TAIL {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
        Ok(LineProcess { child, stdin: Some(stdin), lines, stderr, requests: 0, command })
    }

    /// The operating-system process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the next line and parses it as a JSON object.
    pub fn read(&mut self, timeout: Duration) -> Result<Value, String> {
        match self.lines.recv_timeout(timeout) {
            Ok(Ok(line)) => serde_json::from_str::<Value>(&line)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| self.kill(&format!("answered a line that is not a JSON object: {line:.200}"))),
            Ok(Err(e)) => Err(self.fail(&format!("stdout could not be read: {e}"))),
            Err(RecvTimeoutError::Timeout) => {
                Err(self.kill(&format!("gave no answer within {:.1} s (killed)", timeout.as_secs_f64())))
            }
            Err(RecvTimeoutError::Disconnected) => Err(self.fail("closed its stdout")),
        }
    }

    /// Whether no request was sent yet (the first may load what the hello line did not).
    pub fn fresh(&self) -> bool {
        self.requests == 0
    }

    /// Sends `request` as one line and waits up to `timeout` for the answer.
    pub fn request(&mut self, request: &Value, timeout: Duration) -> Result<Value, String> {
        self.requests += 1;
        let Some(stdin) = self.stdin.as_mut() else { return Err(self.kill("was asked to close before")) };
        let sent = writeln!(stdin, "{request}").and_then(|()| stdin.flush());
        if let Err(e) = sent {
            return Err(self.fail(&format!("cannot be written to: {e}")));
        }
        self.read(timeout)
    }

    /// Waits up to `grace` for the child to exit by itself; its status if it did.
    fn exited_within(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let start = std::time::Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if start.elapsed() < grace => std::thread::sleep(Duration::from_millis(10)),
                _ => return None,
            }
        }
    }

    /// Asks a healthy child to close (`{"op": "close"}`, then end of input) and waits up to
    /// [`EXIT_GRACE`] for it to exit; kills it if it does not. Returns whether it exited by itself.
    pub fn close(&mut self) -> bool {
        let Some(mut stdin) = self.stdin.take() else { return !self.is_alive() };
        if !self.is_alive() {
            return true;
        }
        let _ = writeln!(stdin, "{{\"op\": \"close\"}}").and_then(|()| stdin.flush());
        drop(stdin);
        let exited = self.exited_within(EXIT_GRACE).is_some();
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        exited
    }

    /// The child broke the protocol or went away: gives it [`EXIT_GRACE`] to exit by itself (so
    /// that its own status is quoted), then kills it; see [`LineProcess::kill`].
    fn fail(&mut self, what: &str) -> String {
        self.exited_within(EXIT_GRACE);
        self.kill(what)
    }

    /// Kills the child and describes what went wrong: `what`, its exit status and its stderr tail.
    fn kill(&mut self, what: &str) -> String {
        let _ = self.child.kill();
        let status = self.child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
        // The stderr thread may still be draining the last lines of a dying child.
        std::thread::sleep(Duration::from_millis(50));
        let tail = self.stderr.lock().expect("stderr tail").iter().cloned().collect::<Vec<_>>().join("\n  ");
        let tail = if tail.is_empty() { String::new() } else { format!("; its stderr ends with:\n  {tail}") };
        format!("environment process '{}' {what} ({status}){tail}", self.command)
    }
}

impl Drop for LineProcess {
    /// A child still running is asked to close; one that already failed is gone.
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sh(script: &str) -> LineProcess {
        LineProcess::spawn("sh", &["-c".into(), script.into()]).unwrap()
    }

    #[test]
    fn answers_are_read_line_by_line() {
        let mut p = sh("while read line; do echo \"{\\\"echo\\\": $line}\"; done");
        let a = p.request(&json!({"op": "x"}), Duration::from_secs(5)).unwrap();
        assert_eq!(a, json!({"echo": {"op": "x"}}));
        let b = p.request(&json!(3), Duration::from_secs(5)).unwrap();
        assert_eq!(b, json!({"echo": 3}));
    }

    #[test]
    fn a_silent_process_times_out_and_is_killed() {
        let mut p = sh("echo starting >&2; sleep 30");
        let pid = p.pid();
        let err = p.request(&json!({}), Duration::from_millis(200)).unwrap_err();
        assert!(err.contains("gave no answer within 0.2 s (killed)"), "{err}");
        assert!(err.contains("starting"), "the stderr tail is quoted: {err}");
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the process is gone");
    }

    #[test]
    fn a_dying_process_is_reported_with_its_stderr() {
        let mut p = sh("read line; echo 'Traceback: boom' >&2; exit 3");
        let err = p.request(&json!({}), Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("closed its stdout") && err.contains("exit status: 3"), "{err}");
        assert!(err.contains("Traceback: boom"), "{err}");
    }

    #[test]
    fn a_process_that_exits_by_itself_is_reported_with_its_own_status() {
        let mut p = sh("read line; exit 1");
        let err = p.request(&json!({}), Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("exit status: 1"), "not the kill's signal: {err}");
    }

    #[test]
    fn a_dropped_process_is_asked_to_close() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ops");
        let p = sh(&format!("while read line; do echo \"$line\" >> '{}'; exit 0; done", log.display()));
        let pid = p.pid();
        drop(p);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "{\"op\": \"close\"}\n");
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn a_non_json_answer_is_an_error() {
        let mut p = sh("read line; echo hello");
        let err = p.request(&json!({}), Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("not a JSON object: hello"), "{err}");
    }

    #[test]
    fn a_missing_program_is_named() {
        let err = LineProcess::spawn("/nonexistent/bridge", &[]).err().unwrap();
        assert!(err.starts_with("cannot start '/nonexistent/bridge'"), "{err}");
    }
}
