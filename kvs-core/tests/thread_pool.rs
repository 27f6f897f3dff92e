//! The thread pools run every job, survive panicking jobs without losing threads, and end
//! their threads when dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use crossbeam_channel::bounded;
use kvs::thread_pool::{NaiveThreadPool, RayonThreadPool, SharedQueueThreadPool, ThreadPool};

fn runs_every_job<P: ThreadPool>() {
    let pool = P::new(4).unwrap();
    let counter = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = bounded(1000);
    for _ in 0..1000 {
        let counter = Arc::clone(&counter);
        let tx = tx.clone();
        pool.spawn(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            tx.send(()).unwrap();
        });
    }
    for _ in 0..1000 {
        rx.recv_timeout(Duration::from_secs(60)).expect("job ran");
    }
    assert_eq!(counter.load(Ordering::SeqCst), 1000);
}

/// After many panicking jobs, the pool still runs `threads` jobs *at the same time*: each
/// waits on a barrier that only opens when all of them are running.
fn panicking_jobs_cost_no_threads<P: ThreadPool>() {
    let threads = 4;
    let pool = P::new(threads as u32).unwrap();
    for _ in 0..20 {
        pool.spawn(|| panic!("a job that panics (expected in this test)"));
    }
    let barrier = Arc::new(Barrier::new(threads + 1));
    for _ in 0..threads {
        let barrier = Arc::clone(&barrier);
        pool.spawn(move || {
            barrier.wait();
        });
    }
    let (tx, rx) = bounded(1);
    std::thread::spawn(move || {
        barrier.wait();
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("all pool threads alive after panics");
}

fn drop_ends_the_threads_after_queued_jobs<P: ThreadPool>() {
    let counter = Arc::new(AtomicUsize::new(0));
    {
        let pool = P::new(2).unwrap();
        for _ in 0..50 {
            let counter = Arc::clone(&counter);
            pool.spawn(move || {
                std::thread::sleep(Duration::from_millis(1));
                counter.fetch_add(1, Ordering::SeqCst);
            });
        }
    }
    // Every job handed to the pool has either run by now or holds the last reference.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while Arc::strong_count(&counter) > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        Arc::strong_count(&counter),
        1,
        "pool threads still hold jobs"
    );
    assert_eq!(counter.load(Ordering::SeqCst), 50);
}

macro_rules! pool_suite {
    ($module:ident, $pool:ty) => {
        mod $module {
            #[test]
            fn runs_every_job() {
                super::runs_every_job::<$pool>()
            }
            #[test]
            fn panicking_jobs_cost_no_threads() {
                super::panicking_jobs_cost_no_threads::<$pool>()
            }
            #[test]
            fn drop_ends_the_threads_after_queued_jobs() {
                super::drop_ends_the_threads_after_queued_jobs::<$pool>()
            }
        }
    };
}

pool_suite!(naive, super::NaiveThreadPool);
pool_suite!(shared_queue, super::SharedQueueThreadPool);
pool_suite!(rayon, super::RayonThreadPool);
