//! A child process spoken to one JSON line at a time, with a deadline on every answer.
//!
//! Invariants: the child's stdout carries only protocol lines (one JSON object each); a reader
//! thread turns them into a channel, so waiting for an answer is a `recv_timeout`, never a blocking
//! read that a hung child could hold forever. The child's stderr is drained by a second thread
//! into a bounded tail (the last [`STDERR_TAIL`] lines), quoted in every error, so a bridge that
//! dies says why. A process that missed a deadline, broke the protocol or exited is killed and
//! never used again ([`LineProcess::request`] consumes nothing, but the caller drops it).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// Lines of the child's stderr kept for error messages.
pub const STDERR_TAIL: usize = 20;

/// A running child process with a line protocol on stdin/stdout.
pub struct LineProcess {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<std::io::Result<String>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    /// The command line, for messages.
    pub command: String,
}

impl LineProcess {
    /// Starts `program args...` with piped stdin/stdout/stderr.
    pub fn spawn(program: &str, args: &[String]) -> Result<Self, String> {
        let command = std::iter::once(program).chain(args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ");
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
        Ok(LineProcess { child, stdin, lines, stderr, command })
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
                .ok_or_else(|| self.fail(&format!("answered a line that is not a JSON object: {line:.200}"))),
            Ok(Err(e)) => Err(self.fail(&format!("stdout could not be read: {e}"))),
            Err(RecvTimeoutError::Timeout) => {
                Err(self.fail(&format!("gave no answer within {:.1} s (killed)", timeout.as_secs_f64())))
            }
            Err(RecvTimeoutError::Disconnected) => Err(self.fail("closed its stdout")),
        }
    }

    /// Sends `request` as one line and waits up to `timeout` for the answer.
    pub fn request(&mut self, request: &Value, timeout: Duration) -> Result<Value, String> {
        let sent = writeln!(self.stdin, "{request}").and_then(|()| self.stdin.flush());
        if let Err(e) = sent {
            return Err(self.fail(&format!("cannot be written to: {e}")));
        }
        self.read(timeout)
    }

    /// Kills the child and describes what went wrong: `what`, its exit status and its stderr tail.
    fn fail(&mut self, what: &str) -> String {
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
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
