//! The device thread: one thread owns models — a run's policy, its heads (critic, discriminator),
//! the KL reference and their optimisers (a [`crate::run::trainer::Trainer`]), or a frozen scoring
//! model ([`super::service`]) — and the dataflow hands it work through a channel, either waiting
//! for the answer ([`ModelThread::call`]: a run's rollout, whose rows the stages need next; a
//! scoring request) or not ([`ModelThread::submit`]: a stream update, so that the leader goes on
//! ingesting and storing files while the models train). Dataflow workers never run libtorch work
//! on models they share.
//!
//! Invariants:
//! - Jobs run one at a time, in the order they were handed over, so the models see the sequence of
//!   work they would see if called directly: nothing computed depends on the thread.
//! - At most one submitted job waits besides the running one (`submit` blocks beyond that), so a
//!   fast source cannot pile rows up in memory.
//! - A submitted job's error stops the thread (later jobs would work on models that missed a step)
//!   and is returned by the next `submit`, `call` or [`ModelThread::drain`]; a panic is reported
//!   the same way, as an error. An error of a `call` goes back to its caller only.

use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use crate::error::{Error, Result};

type Job<T> = Box<dyn FnOnce(&mut T) -> Result<()> + Send>;

/// A thread owning `T`, running the jobs handed to it in order.
pub struct ModelThread<T> {
    jobs: Option<SyncSender<Job<T>>>,
    failed: Receiver<Error>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> ModelThread<T> {
    /// Moves `owner` onto a new thread named `name`.
    pub fn spawn(name: &str, owner: T) -> Result<ModelThread<T>> {
        let (jobs, queue) = sync_channel::<Job<T>>(1);
        let (report, failed) = channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut owner = owner;
                for job in queue {
                    if let Err(e) = job(&mut owner) {
                        let _ = report.send(e);
                        return;
                    }
                }
            })
            .map_err(|e| Error::Usage(format!("cannot start the device thread {name}: {e}")))?;
        Ok(ModelThread { jobs: Some(jobs), failed, thread: Some(thread) })
    }

    /// Queues `job` (blocking while another one waits); returns the error of an earlier job, if one
    /// failed.
    pub fn submit(&mut self, job: impl FnOnce(&mut T) -> Result<()> + Send + 'static) -> Result<()> {
        self.check()?;
        let sent = self.jobs.as_ref().map(|j| j.send(Box::new(job)));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(self.stopped()),
        }
    }

    /// Runs `f` after every job handed over before it, and returns its result.
    pub fn call<R: Send + 'static>(&mut self, f: impl FnOnce(&mut T) -> Result<R> + Send + 'static) -> Result<R> {
        let (answer, answered) = sync_channel(1);
        self.submit(move |owner| {
            let _ = answer.send(f(owner));
            Ok(())
        })?;
        match answered.recv() {
            Ok(result) => result,
            Err(_) => Err(self.stopped()),
        }
    }

    /// Waits for every job handed over so far; returns the first error among them.
    pub fn drain(&mut self) -> Result<()> {
        self.call(|_| Ok(()))
    }

    fn check(&self) -> Result<()> {
        match self.failed.try_recv() {
            Ok(e) => Err(e),
            Err(_) => Ok(()),
        }
    }

    /// Why the thread no longer takes jobs: a job's error, or a panic (the thread is joined).
    fn stopped(&mut self) -> Error {
        self.jobs = None;
        if let Ok(e) = self.failed.try_recv() {
            return e;
        }
        let panic = self.thread.take().map(JoinHandle::join);
        match panic {
            Some(Err(p)) => {
                let text = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Error::Usage(format!("the device thread panicked: {text}"))
            }
            _ => self.failed.try_recv().unwrap_or_else(|_| Error::Usage("the device thread stopped".into())),
        }
    }
}

impl<T> Drop for ModelThread<T> {
    /// Closes the queue and waits for the jobs already handed over.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Jobs run in order on the owner; `call` sees every job before it; a failed job's error comes
    /// back from the next call, and nothing runs after it; a panic is an error naming the thread.
    #[test]
    fn jobs_run_in_order_and_errors_and_panics_come_back() {
        let mut t = ModelThread::spawn("test", Vec::<u32>::new()).unwrap();
        for i in 0..50 {
            t.submit(move |v| {
                v.push(i);
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(t.call(|v| Ok(v.clone())).unwrap(), (0..50).collect::<Vec<_>>());
        t.submit(|_| Err(Error::Usage("update 51 failed".into()))).unwrap();
        let e = t.drain().unwrap_err().to_string();
        assert!(e.contains("update 51 failed"), "{e}");
        assert!(t.submit(|_| Ok(())).is_err(), "nothing runs after a failed job");

        let mut t = ModelThread::spawn("test", 0u8).unwrap();
        let e = t.call(|_| -> Result<()> { panic!("boom") }).unwrap_err().to_string();
        assert!(e.contains("device thread panicked: boom"), "{e}");
    }
}
