use super::{run_job, ThreadPool};
use crate::{KvsError, Result};

/// rayon's work-stealing thread pool. Dropping it lets its threads exit once idle.
pub struct RayonThreadPool {
    pool: rayon::ThreadPool,
}

impl ThreadPool for RayonThreadPool {
    fn new(threads: u32) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1) as usize)
            .thread_name(|i| format!("kvs-rayon-{i}"))
            .build()
            .map_err(|e| KvsError::Io(std::io::Error::other(e)))?;
        Ok(RayonThreadPool { pool })
    }

    fn spawn<F>(&self, job: F)
    where
        F: FnOnce() + Send + 'static,
    {
        // rayon aborts the process on a panic in `spawn` unless a handler is set; catching it
        // in the job keeps the behaviour the same as the other pools.
        self.pool.spawn(move || run_job(job));
    }
}
