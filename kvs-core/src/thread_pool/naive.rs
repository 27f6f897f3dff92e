use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use super::{run_job, ThreadPool};
use crate::Result;

/// Spawns a new thread for every job. Dropping the pool waits for its running jobs.
pub struct NaiveThreadPool {
    running: Mutex<Vec<JoinHandle<()>>>,
}

impl ThreadPool for NaiveThreadPool {
    fn new(_threads: u32) -> Result<Self> {
        Ok(NaiveThreadPool {
            running: Mutex::new(Vec::new()),
        })
    }

    fn spawn<F>(&self, job: F)
    where
        F: FnOnce() + Send + 'static,
    {
        // The job sits in a slot so that it can still be run here if no thread can be made.
        let slot = Arc::new(Mutex::new(Some(job)));
        let theirs = Arc::clone(&slot);
        let spawned = thread::Builder::new().spawn(move || {
            let job = theirs.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(job) = job {
                run_job(job);
            }
        });
        match spawned {
            Ok(handle) => {
                let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
                running.retain(|t| !t.is_finished());
                running.push(handle);
            }
            Err(e) => {
                log::warn!("could not spawn a thread ({e}); running the job on the caller's");
                let job = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(job) = job {
                    run_job(job);
                }
            }
        }
    }
}

impl Drop for NaiveThreadPool {
    fn drop(&mut self) {
        let running = std::mem::take(self.running.get_mut().unwrap_or_else(|p| p.into_inner()));
        for thread in running {
            let _ = thread.join();
        }
    }
}
