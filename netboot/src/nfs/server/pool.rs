//! The NFS calls' own threads ([`NfsSettings::workers`](crate::nfs::NfsSettings::workers)).
//!
//! Calls that may block on the disk (READ, WRITE, COMMIT, CREATE, …) run here rather than on
//! tokio's blocking pool, which the other servers of the same process share (a DHCP lease
//! write's fsync, a TFTP open): a slow walk of a large export, or many boards reading at once,
//! then waits for one of these threads and never delays a DHCP ACK. The threads are started
//! with the server and joined when it stops.

use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed set of threads taking calls from one queue (share it with `Arc`).
pub(crate) struct WorkPool {
    queue: Mutex<Option<Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl WorkPool {
    /// Starts `threads` threads (at least one); fails when none can be started.
    pub fn start(threads: usize) -> io::Result<WorkPool> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            match std::thread::Builder::new()
                .name("nfs-call".into())
                .spawn(move || work(&rx))
            {
                Ok(h) => handles.push(h),
                Err(e) if handles.is_empty() => return Err(e),
                Err(e) => {
                    tracing::warn!("nfs: started {i} of {threads} call threads: {e}");
                    break;
                }
            }
        }
        Ok(WorkPool {
            queue: Mutex::new(Some(tx)),
            threads: Mutex::new(handles),
        })
    }

    /// Queues `job`; `false` when the pool has been stopped (the job is dropped).
    pub fn run(&self, job: impl FnOnce() + Send + 'static) -> bool {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        match queue.as_ref() {
            Some(tx) => tx.send(Box::new(job)).is_ok(),
            None => false,
        }
    }

    /// Closes the queue and joins the threads once they have run what was queued, waiting up
    /// to `grace`; threads still busy then (a read stuck on a slow disk) are left to finish on
    /// their own, and said so.
    pub async fn stop(&self, grace: Duration) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        let deadline = Instant::now() + grace;
        let handles = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let mut busy = handles;
        loop {
            let (done, rest): (Vec<_>, Vec<_>) = busy.into_iter().partition(|h| h.is_finished());
            for h in done {
                if h.join().is_err() {
                    tracing::error!("nfs: a call thread panicked");
                }
            }
            busy = rest;
            if busy.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    "nfs: {} call threads still busy after {grace:?}; not waiting for them",
                    busy.len()
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One thread: runs jobs until the queue is closed and empty. A job that panics is logged and
/// the thread goes on.
fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
            tracing::error!("nfs: a call panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn runs_every_job_on_its_threads_and_joins_them() {
        let pool = WorkPool::start(3).unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let names = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
        for _ in 0..50 {
            let (ran, names) = (Arc::clone(&ran), Arc::clone(&names));
            assert!(pool.run(move || {
                let name = std::thread::current().name().unwrap_or("").to_string();
                names.lock().unwrap().insert(name);
                ran.fetch_add(1, Ordering::SeqCst);
            }));
        }
        pool.run(|| panic!("a job that panics"));
        pool.stop(Duration::from_secs(5)).await;
        assert_eq!(ran.load(Ordering::SeqCst), 50);
        assert_eq!(
            names.lock().unwrap().iter().collect::<Vec<_>>(),
            ["nfs-call"]
        );
        assert!(pool.threads.lock().unwrap().is_empty(), "threads joined");
        assert!(!pool.run(|| {}), "a stopped pool takes no more jobs");
    }
}
