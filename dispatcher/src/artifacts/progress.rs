//! Download progress: what the downloader reports, and LAVA's rule for when a log line is due.
//!
//! The downloader calls back with a [`Progress`] after every chunk; whoever renders it decides
//! how often to draw. A terminal redraws a bar each time; a job log wants few lines, so
//! [`LogThrottle`] reproduces LAVA's pace: every 5 % when the size is known, every 25 MB
//! otherwise, and never more than ten lines a second.

use std::fmt;
use std::time::{Duration, Instant};

const MB: u64 = 1024 * 1024;

/// How far a download is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes fetched so far (as sent: compressed when the artefact is).
    pub done: u64,
    /// The size announced by the server or the file system, if known.
    pub total: Option<u64>,
}

impl Progress {
    /// Whole percent done, when the total is known (0 to 100; an empty file is 100).
    pub fn percent(&self) -> Option<u8> {
        let total = self.total?;
        if total == 0 {
            return Some(100);
        }
        Some((self.done.min(total) * 100 / total) as u8)
    }
}

impl fmt::Display for Progress {
    /// LAVA's wording: `progress  45 % (12 MB)` or `progress 12 MB`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.percent() {
            Some(p) => write!(f, "progress {p:3} % ({} MB)", self.done / MB),
            None => write!(f, "progress {} MB", self.done / MB),
        }
    }
}

/// Says when a progress line is due in a log, at LAVA's pace.
#[derive(Debug, Clone)]
pub struct LogThrottle {
    last_value: Option<u64>,
    last_time: Instant,
}

impl Default for LogThrottle {
    fn default() -> Self {
        LogThrottle::new()
    }
}

impl LogThrottle {
    /// A throttle that has printed nothing yet.
    pub fn new() -> LogThrottle {
        LogThrottle {
            last_value: None,
            last_time: Instant::now(),
        }
    }

    /// The line to log for `p`, if one is due now.
    pub fn due(&mut self, p: &Progress) -> Option<String> {
        self.due_at(p, Instant::now())
    }

    /// [`Self::due`] at a given instant (for tests).
    pub fn due_at(&mut self, p: &Progress, now: Instant) -> Option<String> {
        let since = now.saturating_duration_since(self.last_time);
        let (value, step) = match p.percent() {
            Some(percent) => (u64::from(percent), 5),
            None => (p.done, 25 * MB),
        };
        let moved = match self.last_value {
            None => true,
            Some(last) => value >= last + step,
        };
        let due = match p.percent() {
            Some(_) => moved && (self.last_value.is_none() || since >= Duration::from_millis(100)),
            None => {
                (moved && (self.last_value.is_none() || since >= Duration::from_millis(100)))
                    || since >= Duration::from_secs(1)
            }
        };
        if !due {
            return None;
        }
        self.last_value = Some(value);
        self.last_time = now;
        Some(p.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wording() {
        let p = Progress {
            done: 12 * MB,
            total: Some(26 * MB),
        };
        assert_eq!(p.percent(), Some(46));
        assert_eq!(p.to_string(), "progress  46 % (12 MB)");
        let p = Progress {
            done: 3 * MB,
            total: None,
        };
        assert_eq!(p.to_string(), "progress 3 MB");
        assert_eq!(
            Progress {
                done: 0,
                total: Some(0)
            }
            .percent(),
            Some(100)
        );
    }

    #[test]
    fn throttle_known_size() {
        let mut t = LogThrottle::new();
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let p = |done| Progress {
            done,
            total: Some(100),
        };
        assert!(t.due_at(&p(1), at(0)).is_some());
        assert!(t.due_at(&p(3), at(500)).is_none());
        assert!(t.due_at(&p(6), at(550)).is_some());
        assert!(t.due_at(&p(20), at(560)).is_none(), "at most ten a second");
        assert!(t.due_at(&p(20), at(700)).is_some());
    }

    #[test]
    fn throttle_unknown_size() {
        let mut t = LogThrottle::new();
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let p = |done| Progress { done, total: None };
        assert!(t.due_at(&p(0), at(0)).is_some());
        assert!(t.due_at(&p(MB), at(200)).is_none());
        assert!(t.due_at(&p(30 * MB), at(300)).is_some());
        assert!(
            t.due_at(&p(31 * MB), at(1400)).is_some(),
            "once a second anyway"
        );
    }
}
