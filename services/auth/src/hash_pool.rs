//! [`HashPool`]: a few dedicated threads that run every password hash and check.
//!
//! Argon2id takes tens of milliseconds of CPU and its configured memory (19 MiB by default)
//! per call. Run on tokio's blocking pool, a burst of logins would spread that memory over
//! up to hundreds of threads, each of whose allocator arenas keeps it afterwards; on a fixed
//! set of threads a burst queues instead, and memory stays at threads × the cost.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::domain::PasswordHasher;

type Job = Box<dyn FnOnce(&PasswordHasher) + Send>;

/// The hashing threads; they end when the pool is dropped.
#[derive(Clone)]
pub struct HashPool {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for HashPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashPool").finish_non_exhaustive()
    }
}

impl HashPool {
    /// `threads` threads (at least one), each hashing with `hasher`.
    pub fn new(hasher: PasswordHasher, threads: usize) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads.max(1) {
            let (queue, hasher) = (queue.clone(), hasher.clone());
            std::thread::Builder::new().name(format!("mesh-hash-{index}")).spawn(move || {
                loop {
                    // The lock is held only while waiting for the next job.
                    let job = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
                    match job {
                        Ok(job) => job(&hasher),
                        Err(_) => return,
                    }
                }
            })?;
        }
        Ok(Self { jobs })
    }

    /// Runs `work` on a hashing thread and returns its result.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce(&PasswordHasher) -> T + Send + 'static) -> T {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move |hasher| {
            let _ = done.send(work(hasher));
        });
        self.jobs.send(job).expect("the hashing threads live as long as the pool");
        result.await.expect("password hashing does not panic")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Argon2Params, Password};

    #[tokio::test]
    async fn hashes_run_on_the_pool_threads_and_answer_each_caller() {
        let hasher = PasswordHasher::new(Argon2Params { memory_kib: 64, iterations: 1, parallelism: 1 }).unwrap();
        let pool = HashPool::new(hasher, 2).unwrap();
        let password = Password::parse("correct horse battery", "password").unwrap();
        let hash = pool.run({
            let password = password.clone();
            move |hasher| hasher.hash(&password)
        });
        let hash = hash.await;
        let checks: Vec<_> = (0..8)
            .map(|_| {
                let (pool, password, hash) = (pool.clone(), password.clone(), hash.clone());
                tokio::spawn(async move {
                    let thread = pool.run(|_| std::thread::current().name().map(str::to_owned)).await;
                    (pool.run(move |hasher| hasher.verify(&password, &hash)).await, thread)
                })
            })
            .collect();
        for check in checks {
            let (verified, thread) = check.await.unwrap();
            assert!(verified);
            assert!(thread.is_some_and(|name| name.starts_with("mesh-hash-")));
        }
    }
}
