//! Thread pools that run the server's jobs.
//!
//! - [`NaiveThreadPool`]: a new thread for every job. A baseline, not for production.
//! - [`SharedQueueThreadPool`]: a fixed set of threads taking jobs from one crossbeam channel.
//! - [`RayonThreadPool`]: rayon's work-stealing pool.
//!
//! In all three, a job that panics costs the pool nothing: the panic is caught and logged, and
//! the thread goes on with the next job. Dropping a pool ends its threads.

mod naive;
mod rayon;
mod shared_queue;

pub use self::naive::NaiveThreadPool;
pub use self::rayon::RayonThreadPool;
pub use self::shared_queue::SharedQueueThreadPool;

use crate::Result;

/// A pool of threads that runs jobs.
pub trait ThreadPool: Send + Sync + Sized + 'static {
    /// Creates a pool with `threads` threads (at least 1). Fails if threads cannot be spawned.
    fn new(threads: u32) -> Result<Self>;

    /// Runs `job` on one of the pool's threads. A panic inside `job` is caught and logged.
    fn spawn<F>(&self, job: F)
    where
        F: FnOnce() + Send + 'static;
}

/// Runs `job`, catching and logging a panic so that it does not unwind through a pool thread.
pub(crate) fn run_job(job: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)) {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_string());
        log::error!("a job panicked: {message}");
    }
}
