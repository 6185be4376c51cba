//! Rate-limited log lines for events a hostile client can repeat at will: a DISCOVER refused
//! because the pool is full, a TFTP packet from a foreign port, a connection over a cap, an idle
//! connection closed.
//!
//! The first event is logged at once; after that at most one line per interval
//! ([`LOG_INTERVAL`] in the servers), carrying the number of events since the previous line, so
//! a flood costs one line a minute and the count still says how big it was. Events of a burst
//! that ends within an interval are counted into the next line (which may never come; the
//! servers' metrics keep the totals).
//!
//! [`LogThrottle`] is clock-free like the servers' state machines: callers pass `now` as the
//! time since an origin of their choice (the DHCP engine: Unix time; socket loops:
//! [`monotonic`]). [`SharedThrottle`] is the same behind a lock, for events reported from
//! several tasks or threads.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The interval the servers use between two lines about the same kind of event.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Decides when a repeated event is logged: the first at once, then at most once per interval.
#[derive(Debug, Clone)]
pub struct LogThrottle {
    interval: Duration,
    last: Option<Duration>,
    pending: u64,
}

impl LogThrottle {
    /// A throttle allowing one line per `interval`.
    pub const fn new(interval: Duration) -> LogThrottle {
        LogThrottle {
            interval,
            last: None,
            pending: 0,
        }
    }

    /// Counts one event at `now`; `Some(n)` when a line is due, `n` being the events since the
    /// previous line, this one included. A clock that went back (`now` before the last line)
    /// makes a line due, so the throttle never stays silent for longer than one interval.
    pub fn hit(&mut self, now: Duration) -> Option<u64> {
        self.pending += 1;
        match self.last {
            Some(last) if now >= last && now - last < self.interval => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.pending))
            }
        }
    }

    /// [`Self::hit`] at [`monotonic`] now.
    pub fn hit_now(&mut self) -> Option<u64> {
        self.hit(monotonic())
    }

    /// Events counted since the last line.
    pub fn pending(&self) -> u64 {
        self.pending
    }
}

/// A [`LogThrottle`] shared by tasks or threads.
#[derive(Debug)]
pub struct SharedThrottle(Mutex<LogThrottle>);

impl SharedThrottle {
    /// A shared throttle allowing one line per `interval`.
    pub const fn new(interval: Duration) -> SharedThrottle {
        SharedThrottle(Mutex::new(LogThrottle::new(interval)))
    }

    /// Counts one event now; `Some(n)` when a line is due (see [`LogThrottle::hit`]).
    pub fn hit_now(&self) -> Option<u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).hit_now()
    }
}

/// Time since the first call in this process, on the monotonic clock.
pub fn monotonic() -> Duration {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn first_at_once_then_once_per_interval_with_the_count() {
        let mut t = LogThrottle::new(s(60));
        assert_eq!(t.hit(s(100)), Some(1));
        for i in 1..=9 {
            assert_eq!(t.hit(s(100 + i)), None);
        }
        assert_eq!(t.pending(), 9);
        assert_eq!(t.hit(s(159)), None);
        // The tenth and eleventh suppressed events, and this one.
        assert_eq!(t.hit(s(160)), Some(11));
        assert_eq!(t.pending(), 0);
        assert_eq!(t.hit(s(161)), None);
        assert_eq!(t.hit(s(1000)), Some(2));
    }

    #[test]
    fn a_clock_that_goes_back_does_not_silence_it() {
        let mut t = LogThrottle::new(s(60));
        assert_eq!(t.hit(s(1000)), Some(1));
        assert_eq!(t.hit(s(10)), Some(1));
        assert_eq!(t.hit(s(20)), None);
    }

    #[test]
    fn shared() {
        let t = SharedThrottle::new(s(3600));
        assert_eq!(t.hit_now(), Some(1));
        assert_eq!(t.hit_now(), None);
    }
}
