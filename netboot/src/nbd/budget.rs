//! Payload bytes in flight across every connection of a server
//! ([`super::NbdSettings::max_bytes_in_flight`]).
//!
//! Each connection already holds at most [`super::server::IN_FLIGHT_BYTES`] of read replies
//! being built and writes being applied; with hundreds of connections that alone would let a
//! handful of clients pin gigabytes. A request takes its bytes here too, after its
//! connection's own budget, and waits while the server as a whole is at its cap: the waiting
//! connection stops reading requests, so a client that floods the server slows itself down,
//! and the others keep their share. A request larger than the cap takes the whole cap.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// How often a waiting request looks whether its connection is ending.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// A server-wide byte budget (share it with `Arc`).
#[derive(Debug)]
pub struct SharedBudget {
    total: usize,
    free: Mutex<usize>,
    freed: Condvar,
    peak: AtomicUsize,
    waits: AtomicU64,
}

impl SharedBudget {
    /// A budget of `total` bytes (at least 1).
    pub fn new(total: usize) -> SharedBudget {
        let total = total.max(1);
        SharedBudget {
            total,
            free: Mutex::new(total),
            freed: Condvar::new(),
            peak: AtomicUsize::new(0),
            waits: AtomicU64::new(0),
        }
    }

    /// What a request of `bytes` takes from the budget: its size, at most the whole budget.
    pub fn cost(&self, bytes: usize) -> usize {
        bytes.min(self.total)
    }

    /// Takes [`SharedBudget::cost`] of `bytes`, waiting while it is not free; `false` (nothing
    /// taken) once `stopping` is set.
    pub fn take(&self, bytes: usize, stopping: &AtomicBool) -> bool {
        let cost = self.cost(bytes);
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if *free < cost {
            self.waits.fetch_add(1, Ordering::Relaxed);
        }
        while *free < cost {
            if stopping.load(Ordering::SeqCst) {
                return false;
            }
            free = self
                .freed
                .wait_timeout(free, STOP_CHECK)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *free -= cost;
        self.peak.fetch_max(self.total - *free, Ordering::Relaxed);
        true
    }

    /// Gives back what [`SharedBudget::take`] took for `bytes`.
    pub fn give(&self, bytes: usize) {
        let cost = self.cost(bytes);
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        *free = (*free + cost).min(self.total);
        self.freed.notify_all();
    }

    /// The cap, in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes taken now.
    pub fn in_use(&self) -> usize {
        self.total - *self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most bytes ever taken at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// How many requests had to wait for bytes.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn waits_at_the_cap_and_wakes_when_bytes_come_back() {
        let b = Arc::new(SharedBudget::new(100));
        let stop = AtomicBool::new(false);
        assert!(b.take(60, &stop));
        assert!(b.take(40, &stop));
        assert_eq!(b.in_use(), 100);
        let waiter = {
            let b = Arc::clone(&b);
            std::thread::spawn(move || b.take(30, &AtomicBool::new(false)))
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !waiter.is_finished(),
            "a request waits while the cap is reached"
        );
        b.give(60);
        assert!(waiter.join().unwrap());
        assert_eq!((b.in_use(), b.peak(), b.waits()), (70, 100, 1));
    }

    #[test]
    fn a_request_larger_than_the_cap_takes_all_of_it() {
        let b = SharedBudget::new(100);
        let stop = AtomicBool::new(false);
        assert!(b.take(1 << 30, &stop));
        assert_eq!(b.in_use(), 100);
        b.give(1 << 30);
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn a_stopping_connection_gives_up_waiting() {
        let b = SharedBudget::new(10);
        let stop = AtomicBool::new(false);
        assert!(b.take(10, &stop));
        stop.store(true, Ordering::SeqCst);
        assert!(!b.take(1, &stop));
        assert_eq!(b.in_use(), 10);
    }
}
