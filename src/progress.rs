//! Progress bars for the long phases of a training run, on stderr: the turns of every rollout
//! (RL rollouts, DAgger and Reflexion trials, evaluation) and the updates of every learner pass
//! (imitation epochs, RL updates).
//!
//! Invariant: progress is display only. A bar draws only after [`enable`] (a verbose `trajflow
//! run`) and only when stderr is a terminal (indicatif hides it otherwise, so logs and tests see
//! nothing); it is cleared when its phase ends, leaving the run's own log lines in place. Nothing
//! else reads it.

use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns bars on (for this process).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// One phase's bar; cleared when dropped.
pub struct Phase {
    bar: ProgressBar,
}

impl Phase {
    /// A bar of `len` steps labelled `label` (hidden unless enabled and stderr is a terminal).
    pub fn new(label: &str, len: u64) -> Phase {
        let target =
            if ENABLED.load(Ordering::Relaxed) { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(Some(len), target);
        bar.set_style(
            ProgressStyle::with_template("  {prefix:<18} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        Phase { bar }
    }

    /// Advances by one step, with `msg` beside the bar.
    pub fn step(&self, msg: impl Into<std::borrow::Cow<'static, str>>) {
        self.bar.set_message(msg);
        self.bar.inc(1);
    }

    /// Moves to position `pos`, with `msg` beside the bar.
    pub fn set(&self, pos: u64, msg: impl Into<std::borrow::Cow<'static, str>>) {
        self.bar.set_message(msg);
        self.bar.set_position(pos);
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
