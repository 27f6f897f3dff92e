use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};

use super::{run_job, ThreadPool};
use crate::{KvsError, Result};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed number of threads taking jobs from one shared crossbeam channel.
///
/// A panicking job is caught inside the worker's loop, so the worker lives on: the pool never
/// loses a thread. Dropping the pool closes the channel; the workers finish the jobs already
/// queued and exit, and the drop waits for them.
pub struct SharedQueueThreadPool {
    sender: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl ThreadPool for SharedQueueThreadPool {
    fn new(threads: u32) -> Result<Self> {
        let (sender, receiver) = crossbeam_channel::unbounded::<Job>();
        let mut workers = Vec::with_capacity(threads.max(1) as usize);
        for i in 0..threads.max(1) {
            let receiver: Receiver<Job> = receiver.clone();
            let worker = thread::Builder::new()
                .name(format!("kvs-worker-{i}"))
                .spawn(move || {
                    for job in receiver.iter() {
                        run_job(job);
                    }
                })
                .map_err(KvsError::Io)?;
            workers.push(worker);
        }
        Ok(SharedQueueThreadPool {
            sender: Some(sender),
            workers,
        })
    }

    fn spawn<F>(&self, job: F)
    where
        F: FnOnce() + Send + 'static,
    {
        if let Some(sender) = &self.sender {
            // Sending fails only once every worker is gone, which cannot happen while the pool
            // is alive: workers never exit before the sender is dropped.
            if sender.send(Box::new(job)).is_err() {
                log::error!("thread pool has no workers left; job dropped");
            }
        }
    }
}

impl Drop for SharedQueueThreadPool {
    fn drop(&mut self) {
        drop(self.sender.take());
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}
