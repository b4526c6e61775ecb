//! Tool calling against an in-memory app, in the style of AppWorld (LOOP's setting): the agent's
//! actions are JSON function calls, and the episode's reward is the fraction of the task's unit
//! tests that pass on the final state.
//!
//! The app holds files (path → text), an inbox of messages (id, sender, subject, body), contacts
//! (name → address) and an outbox. Functions (the action is `{"name": F, "arguments": {...}}`):
//! `list_files`, `read_file{path}`, `write_file{path, content}`, `delete_file{path}`,
//! `list_messages`, `read_message{id}`, `find_contact{name}`, `send_message{to, body}`, and
//! `complete` (ends the episode). Answers are JSON; a bad call answers `{"error": ...}` and changes
//! nothing. Four task types (send a file to a contact, forward a message, save a message to a file,
//! delete the temporary files); each carries 3 to 5 unit tests on the final state, including ones
//! that nothing else was touched. Reward: 0 until the episode ends (by `complete` or the budget),
//! then the fraction of tests passed; success = all passed. Invariants: the app and the task come
//! from `task_id`, the order of listings from `(task_id, seed)`; the expert acts on what calls have
//! shown (it lists and reads before it uses a path, an id, an address or a text).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::{mix64, Env, Reset, Step};

/// Registry name of this environment.
pub const NAME: &str = "tools";

/// Step budget of an episode.
pub const DEFAULT_MAX_STEPS: usize = 15;

const PEOPLE: [&str; 8] = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"];
const WORDS: [&str; 16] = [
    "budget", "meeting", "draft", "invoice", "garden", "report", "travel", "recipe", "plan", "notes", "review",
    "photos", "schedule", "contract", "lunch", "ideas",
];

/// SplitMix64 stream.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        (mix64(self.0) % n as u64) as usize
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Message {
    id: u64,
    from: String,
    subject: String,
    body: String,
}

/// The app's state.
#[derive(Clone, Debug, Default, PartialEq)]
struct App {
    files: BTreeMap<String, String>,
    inbox: Vec<Message>,
    contacts: BTreeMap<String, String>,
    /// Sent messages: (to, body).
    outbox: Vec<(String, String)>,
}

/// What the task asks.
#[derive(Clone, Debug)]
enum Task {
    SendFile { path: String, contact: String },
    Forward { subject: String, contact: String },
    SaveMessage { from: String, path: String },
    DeleteTemporary,
}

/// The tool-calling environment.
pub struct Tools {
    start: App,
    app: App,
    task: Option<Task>,
    /// Listing order key (from the seed).
    order: u64,
    /// Values the agent's calls have shown: paths, message ids, addresses, texts.
    shown: BTreeSet<String>,
    steps: usize,
    done: bool,
    success: bool,
}

impl Default for Tools {
    fn default() -> Self {
        Self::new()
    }
}

fn address(name: &str) -> String {
    format!("{name}@example.org")
}

/// A call as the agent writes it: `{"name": ..., "arguments": {...}}`, name first, no arguments
/// key when there are none.
fn call(name: &str, args: Value) -> String {
    if args.as_object().is_some_and(|o| o.is_empty()) {
        format!("{{\"name\": \"{name}\"}}")
    } else {
        format!("{{\"name\": \"{name}\", \"arguments\": {args}}}")
    }
}

impl Tools {
    /// The environment with the default step budget.
    pub fn new() -> Self {
        Tools {
            start: App::default(),
            app: App::default(),
            task: None,
            order: 0,
            shown: BTreeSet::new(),
            steps: 0,
            done: true,
            success: false,
        }
    }

    fn build(task_id: u64) -> (App, Task) {
        let mut rng = Rng(mix64(task_id ^ 0x7001_5EED));
        let mut app = App::default();
        let mut words: Vec<&str> = WORDS.to_vec();
        let mut take = |rng: &mut Rng| words.remove(rng.below(words.len()));
        for _ in 0..3 + rng.below(3) {
            let w = take(&mut rng);
            let text = format!("{w} for {}: item {}", PEOPLE[rng.below(PEOPLE.len())], rng.below(1000));
            app.files.insert(format!("{w}.txt"), text);
        }
        for _ in 0..1 + rng.below(3) {
            let w = take(&mut rng);
            app.files.insert(format!("{w}.tmp"), format!("scratch {}", rng.below(1000)));
        }
        let mut people: Vec<&str> = PEOPLE.to_vec();
        for i in 0..3 + rng.below(3) {
            let from = people.remove(rng.below(people.len()));
            let w = take(&mut rng);
            let body = format!("about the {w}: see you at {}:00", 8 + rng.below(10));
            app.inbox.push(Message { id: 101 + i as u64, from: address(from), subject: w.to_string(), body });
        }
        for p in PEOPLE {
            if rng.below(3) > 0 || app.inbox.iter().any(|m| m.from == address(p)) {
                app.contacts.insert(p.to_string(), address(p));
            }
        }
        let contacts: Vec<String> = app.contacts.keys().cloned().collect();
        let contact = contacts[rng.below(contacts.len())].clone();
        let txt: Vec<String> = app.files.keys().filter(|p| p.ends_with(".txt")).cloned().collect();
        let task = match rng.below(4) {
            0 => Task::SendFile { path: txt[rng.below(txt.len())].clone(), contact },
            1 => Task::Forward { subject: app.inbox[rng.below(app.inbox.len())].subject.clone(), contact },
            2 => {
                let m = &app.inbox[rng.below(app.inbox.len())];
                let from = m.from.trim_end_matches("@example.org").to_string();
                let path = format!("{}.txt", take(&mut rng));
                Task::SaveMessage { from, path }
            }
            _ => Task::DeleteTemporary,
        };
        (app, task)
    }

    fn describe(task: &Task) -> String {
        match task {
            Task::SendFile { path, contact } => format!("send {contact} the content of the file {path}"),
            Task::Forward { subject, contact } => {
                format!("forward the body of the message with subject '{subject}' to {contact}")
            }
            Task::SaveMessage { from, path } => {
                format!("save the body of the message from {from} to a new file {path}")
            }
            Task::DeleteTemporary => "delete every file whose name ends with .tmp, and nothing else".into(),
        }
    }

    /// The task's unit tests on the current state: (what it checks, whether it passes).
    fn tests(&self) -> Vec<(&'static str, bool)> {
        let (s, a) = (&self.start, &self.app);
        let files_kept = |except: &dyn Fn(&str) -> bool| {
            s.files.iter().filter(|(p, _)| !except(p)).all(|(p, t)| a.files.get(p) == Some(t))
        };
        match self.task.as_ref().expect("reset first") {
            Task::SendFile { path, contact } => {
                let sent = a.outbox.iter().filter(|(to, _)| *to == address(contact)).collect::<Vec<_>>();
                vec![
                    ("a message went to the contact", !sent.is_empty()),
                    ("its body is the file's content", sent.iter().any(|(_, b)| Some(b) == s.files.get(path))),
                    ("no other message was sent", a.outbox.len() == sent.len()),
                    ("no file changed", a.files == s.files),
                ]
            }
            Task::Forward { subject, contact } => {
                let body = &s.inbox.iter().find(|m| m.subject == *subject).expect("task message").body;
                vec![
                    ("a message went to the contact", a.outbox.iter().any(|(to, _)| *to == address(contact))),
                    ("its body is the message's", a.outbox.iter().any(|(to, b)| *to == address(contact) && b == body)),
                    ("no other message was sent", a.outbox.len() == 1),
                    ("no file changed", a.files == s.files),
                ]
            }
            Task::SaveMessage { from, path } => {
                let body = &s.inbox.iter().find(|m| m.from == address(from)).expect("task message").body;
                vec![
                    ("the file exists", a.files.contains_key(path)),
                    ("it holds the message's body", a.files.get(path) == Some(body)),
                    ("no other file changed", files_kept(&|p: &str| p == path) && a.files.len() == s.files.len() + 1),
                    ("no message was sent", a.outbox.is_empty()),
                ]
            }
            Task::DeleteTemporary => {
                let mut t: Vec<(&'static str, bool)> = s
                    .files
                    .keys()
                    .filter(|p| p.ends_with(".tmp"))
                    .map(|p| ("a temporary file is gone", !a.files.contains_key(p)))
                    .collect();
                t.push(("every other file is intact", files_kept(&|p: &str| p.ends_with(".tmp"))));
                t.push(("no new file", a.files.keys().all(|p| s.files.contains_key(p))));
                t
            }
        }
    }

    /// Fraction of the task's tests that pass now.
    pub fn score(&self) -> f32 {
        let t = self.tests();
        t.iter().filter(|(_, ok)| *ok).count() as f32 / t.len() as f32
    }

    fn shuffled<T: Clone>(&self, xs: &[T], salt: u64) -> Vec<T> {
        let mut out = xs.to_vec();
        let mut rng = Rng(mix64(self.order ^ salt));
        for i in (1..out.len()).rev() {
            out.swap(i, rng.below(i + 1));
        }
        out
    }

    /// Runs one call; returns its JSON answer.
    fn run(&mut self, name: &str, args: &Value) -> Value {
        let arg = |k: &str| args.get(k).and_then(Value::as_str).map(String::from);
        let err = |m: String| json!({ "error": m });
        match name {
            "list_files" => {
                let paths: Vec<String> = self.app.files.keys().cloned().collect();
                json!({ "files": self.shuffled(&paths, 1) })
            }
            "read_file" => match arg("path") {
                Some(p) => match self.app.files.get(&p) {
                    Some(t) => json!({ "path": p, "content": t }),
                    None => err(format!("no such file '{p}'")),
                },
                None => err("read_file needs a string 'path'".into()),
            },
            "write_file" => match (arg("path"), arg("content")) {
                (Some(p), Some(c)) => {
                    self.app.files.insert(p.clone(), c);
                    json!({ "written": p })
                }
                _ => err("write_file needs string 'path' and 'content'".into()),
            },
            "delete_file" => match arg("path") {
                Some(p) if self.app.files.remove(&p).is_some() => json!({ "deleted": p }),
                Some(p) => err(format!("no such file '{p}'")),
                None => err("delete_file needs a string 'path'".into()),
            },
            "list_messages" => {
                let heads: Vec<Value> = self
                    .shuffled(&self.app.inbox, 2)
                    .iter()
                    .map(|m| json!({"id": m.id, "from": m.from, "subject": m.subject}))
                    .collect();
                json!({ "messages": heads })
            }
            "read_message" => match args.get("id").and_then(Value::as_u64) {
                Some(id) => match self.app.inbox.iter().find(|m| m.id == id) {
                    Some(m) => json!({"id": m.id, "from": m.from, "subject": m.subject, "body": m.body}),
                    None => err(format!("no message {id}")),
                },
                None => err("read_message needs an integer 'id'".into()),
            },
            "find_contact" => match arg("name") {
                Some(n) => match self.app.contacts.get(&n.to_lowercase()) {
                    Some(a) => json!({ "name": n.to_lowercase(), "address": a }),
                    None => err(format!("no contact named '{n}'")),
                },
                None => err("find_contact needs a string 'name'".into()),
            },
            "send_message" => match (arg("to"), arg("body")) {
                (Some(to), Some(body)) if self.app.contacts.values().any(|a| *a == to) => {
                    self.app.outbox.push((to.clone(), body));
                    json!({ "sent_to": to })
                }
                (Some(to), Some(_)) => err(format!("'{to}' is not the address of a contact")),
                _ => err("send_message needs string 'to' and 'body'".into()),
            },
            other => err(format!("unknown function '{other}'")),
        }
    }

    /// Records the values an answer shows.
    fn remember(&mut self, answer: &Value) {
        match answer {
            Value::String(s) => {
                self.shown.insert(s.clone());
            }
            Value::Number(n) => {
                self.shown.insert(n.to_string());
            }
            Value::Array(xs) => xs.iter().for_each(|x| self.remember(x)),
            Value::Object(o) => o.values().for_each(|x| self.remember(x)),
            _ => {}
        }
    }

    fn seen(&self, value: &str) -> bool {
        self.shown.contains(value)
    }

    /// Whether every file of the start has been shown (a listing was seen).
    fn seen_listing(&self) -> bool {
        self.start.files.keys().all(|p| self.seen(p))
    }

    /// The expert's call that shows `contact`'s address, if it has not been shown.
    fn contact_step(&self, contact: &str) -> Option<String> {
        (!self.seen(&address(contact))).then(|| call("find_contact", json!({ "name": contact })))
    }

    /// The expert's next call toward reading the start's file `path`: list, then read; `None`
    /// once its content has been shown.
    fn file_step(&self, path: &str) -> Option<String> {
        if !self.seen(path) {
            Some(call("list_files", json!({})))
        } else {
            (!self.seen(&self.start.files[path])).then(|| call("read_file", json!({ "path": path })))
        }
    }

    /// The expert's next call toward reading message `m`: list, then read; `None` once its body
    /// has been shown.
    fn message_step(&self, m: &Message) -> Option<String> {
        if !self.seen(&m.id.to_string()) {
            Some(call("list_messages", json!({})))
        } else {
            (!self.seen(&m.body)).then(|| call("read_message", json!({ "id": m.id })))
        }
    }
}

impl Env for Tools {
    fn name(&self) -> &str {
        NAME
    }

    fn reset(&mut self, task_id: u64, seed: u64) -> Reset {
        let (app, task) = Self::build(task_id);
        self.start = app.clone();
        self.app = app;
        self.order = mix64(task_id.wrapping_mul(0x9E37_79B9) ^ seed ^ 0x0DE5);
        self.shown.clear();
        self.steps = 0;
        self.done = false;
        self.success = false;
        let text = Self::describe(&task);
        self.task = Some(task);
        Reset {
            observation: "You operate a personal app by calling functions, one JSON object per turn: \
                          {\"name\": FUNCTION, \"arguments\": {...}}. Functions: list_files, read_file{path}, \
                          write_file{path, content}, delete_file{path}, list_messages, read_message{id}, \
                          find_contact{name}, send_message{to, body}, complete."
                .into(),
            task: format!("Your task is to: {text}. Call complete when you are done."),
        }
    }

    fn step(&mut self, action: &str) -> Step {
        if self.done {
            return Step { observation: "Nothing happens.".into(), reward: 0.0, done: true, success: self.success };
        }
        self.steps += 1;
        let parsed: Option<(String, Value)> = serde_json::from_str::<Value>(action.trim()).ok().and_then(|v| {
            let name = v.get("name")?.as_str()?.to_string();
            Some((name, v.get("arguments").cloned().unwrap_or_else(|| json!({}))))
        });
        let observation = match parsed {
            None => {
                json!({"error": "the action must be a JSON object {\"name\": ..., \"arguments\": {...}}"}).to_string()
            }
            Some((name, _)) if name == "complete" => {
                self.done = true;
                json!({"completed": true}).to_string()
            }
            Some((name, args)) => {
                let answer = self.run(&name, &args);
                if answer.get("error").is_none() {
                    self.remember(&answer);
                }
                answer.to_string()
            }
        };
        if self.steps >= DEFAULT_MAX_STEPS {
            self.done = true;
        }
        let mut reward = 0.0;
        if self.done {
            reward = self.score();
            self.success = reward == 1.0;
        }
        Step { observation, reward, done: self.done, success: self.success }
    }

    /// The functions with arguments drawn from the task text and from what earlier calls showed.
    fn admissible_actions(&self) -> Vec<String> {
        if self.done {
            return Vec::new();
        }
        let mut out = vec![call("list_files", json!({})), call("list_messages", json!({}))];
        let paths: Vec<&String> = self.shown.iter().filter(|s| s.ends_with(".txt") || s.ends_with(".tmp")).collect();
        let ids: Vec<u64> = self.app.inbox.iter().map(|m| m.id).filter(|id| self.seen(&id.to_string())).collect();
        let texts: Vec<&String> = self.shown.iter().filter(|s| s.contains(' ')).collect();
        for p in &paths {
            out.push(call("read_file", json!({ "path": p })));
            out.push(call("delete_file", json!({ "path": p })));
        }
        for id in ids {
            out.push(call("read_message", json!({ "id": id })));
        }
        for name in PEOPLE {
            out.push(call("find_contact", json!({ "name": name })));
        }
        let target = match self.task.as_ref() {
            Some(Task::SaveMessage { path, .. }) => Some(path.clone()),
            _ => None,
        };
        for t in &texts {
            for a in self.shown.iter().filter(|s| s.ends_with("@example.org")) {
                out.push(call("send_message", json!({ "to": a, "body": t })));
            }
            if let Some(p) = &target {
                out.push(call("write_file", json!({ "path": p, "content": t })));
            }
        }
        out.push(call("complete", json!({})));
        out
    }

    fn expert_action(&self) -> Option<String> {
        if self.done {
            return None;
        }
        let s = &self.start;
        let sent = !self.app.outbox.is_empty();
        let next = match self.task.as_ref()? {
            Task::SendFile { path, contact } if !sent => self
                .contact_step(contact)
                .or_else(|| self.file_step(path))
                .unwrap_or_else(|| call("send_message", json!({ "to": address(contact), "body": s.files[path] }))),
            Task::Forward { subject, contact } if !sent => {
                let m = s.inbox.iter().find(|m| m.subject == *subject).expect("task message");
                self.contact_step(contact)
                    .or_else(|| self.message_step(m))
                    .unwrap_or_else(|| call("send_message", json!({ "to": address(contact), "body": m.body })))
            }
            Task::SaveMessage { from, path } if !self.app.files.contains_key(path) => {
                let m = s.inbox.iter().find(|m| m.from == address(from)).expect("task message");
                self.message_step(m).unwrap_or_else(|| call("write_file", json!({ "path": path, "content": m.body })))
            }
            Task::DeleteTemporary => {
                let left = self.app.files.keys().find(|p| p.ends_with(".tmp") && self.seen(p));
                match left {
                    Some(p) => call("delete_file", json!({ "path": p })),
                    None if !self.seen_listing() => call("list_files", json!({})),
                    None => call("complete", json!({})),
                }
            }
            _ => call("complete", json!({})),
        };
        Some(next)
    }

    fn max_steps(&self) -> usize {
        DEFAULT_MAX_STEPS
    }
}

#[cfg(test)]
mod tests;
