//! The sending side of one read transfer, as a state machine with no sockets and no clock.
//!
//! The socket loop feeds it packets and timeouts together with `now`, sends what it returns, and
//! sleeps until [`ReadTransfer::deadline`]. That keeps every protocol rule testable on a virtual
//! clock (see the tests below) — the quinn-proto model.
//!
//! Blocks are numbered from 1 as `u64` here; on the wire they wrap from 65535 to 0, as tftp-hpa,
//! curl and U-Boot expect. An ACK is mapped back to the only block in the outstanding window with
//! the same low 16 bits, so a window may be as large as 65535 and files of any size work.
//!
//! Rules:
//! * an ACK of the whole window sends the next window at once;
//! * an ACK of a block inside the window (the client lost one) resends from the block after it at
//!   once (go-back-N, RFC 7440);
//! * a duplicate ACK (the client heard nothing of the window and retransmitted its ACK) resends
//!   the window at once — unless the window went out less than [`Timing::dup_ack_guard`] ago.
//!   Answering every duplicate at once is how the Sorcerer's Apprentice bug (RFC 1123 4.2.3.1)
//!   doubles the traffic; a client that timed out waited far longer than the guard;
//! * an ERROR from the client ends the transfer at once, without a reply;
//! * no progress for [`Timing::retries`] timeouts in a row (doubling each time up to
//!   [`Timing::max_timeout`]) ends the transfer with an ERROR.

use std::time::{Duration, Instant};

use super::error::TftpError;
use super::packet::{ErrorCode, Packet};

/// Retransmission timing of one transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// First retransmission timeout.
    pub timeout: Duration,
    /// Ceiling of the doubled timeout.
    pub max_timeout: Duration,
    /// Timeouts in a row without progress before the transfer is abandoned.
    pub retries: u32,
    /// Duplicate ACKs arriving sooner than this after a send are ignored (see module doc).
    pub dup_ack_guard: Duration,
}

impl Timing {
    /// The timeout after `attempt` retransmissions: doubles each time, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let cap = self.max_timeout.max(self.timeout);
        self.timeout
            .checked_mul(1u32 << attempt.min(20))
            .map_or(cap, |t| t.min(cap))
    }
}

/// What the socket loop must send now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// The OACK of the negotiated options.
    OptionAck,
    /// DATA blocks `first..=last` (absolute numbers), in order.
    Blocks {
        /// First block to send.
        first: u64,
        /// Last block to send.
        last: u64,
    },
    /// An ERROR packet; the transfer is over.
    Error(TftpError),
}

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every block was acknowledged.
    Complete,
    /// The client sent an ERROR packet.
    ClientError {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// The client stopped answering.
    TimedOut,
    /// The server gave up for a local reason (read error, shutdown).
    Aborted(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    AwaitOptionAck,
    Sending,
    Finished(Outcome),
}

/// The server side of one RRQ.
#[derive(Debug)]
pub struct ReadTransfer {
    window: u64,
    last_block: u64,
    timing: Timing,
    phase: Phase,
    /// Highest block the client acknowledged (0 before any).
    acked: u64,
    /// Highest block sent so far.
    sent_upto: u64,
    /// Timeouts in a row without progress.
    attempts: u32,
    deadline: Instant,
    /// When the blocks after `acked` (or the OACK) were last sent.
    last_sent: Instant,
    retransmitted: u64,
}

impl ReadTransfer {
    /// A transfer of `size` bytes in blocks of `blksize`, `window` blocks at a time; `oack` says
    /// whether options were negotiated (then the OACK goes first and ACK 0 starts the data).
    pub fn new(
        size: u64,
        blksize: u16,
        window: u16,
        oack: bool,
        timing: Timing,
        now: Instant,
    ) -> Self {
        let blksize = u64::from(blksize.max(1));
        ReadTransfer {
            window: u64::from(window.max(1)),
            // A final short (possibly empty) block always ends the transfer.
            last_block: size / blksize + 1,
            timing,
            phase: if oack {
                Phase::AwaitOptionAck
            } else {
                Phase::Sending
            },
            acked: 0,
            sent_upto: 0,
            attempts: 0,
            deadline: now,
            last_sent: now,
            retransmitted: 0,
        }
    }

    /// The first packet(s) to send.
    pub fn start(&mut self, now: Instant) -> Option<Transmit> {
        match self.phase {
            Phase::AwaitOptionAck => {
                self.arm(now);
                Some(Transmit::OptionAck)
            }
            Phase::Sending => Some(self.send_window(now)),
            Phase::Finished(_) => None,
        }
    }

    /// Feeds one packet from the client.
    pub fn on_packet(&mut self, packet: &Packet<'_>, now: Instant) -> Option<Transmit> {
        match packet {
            Packet::Ack { block } => self.on_ack(*block, now),
            Packet::Error { code, message } => {
                if !self.is_finished() {
                    self.phase = Phase::Finished(Outcome::ClientError {
                        code: *code,
                        message: message.clone(),
                    });
                }
                None
            }
            // DATA, requests or OACKs make no sense here; ignore them like a stray datagram.
            _ => None,
        }
    }

    /// Called when [`Self::deadline`] has passed.
    pub fn on_timeout(&mut self, now: Instant) -> Option<Transmit> {
        if self.is_finished() || now < self.deadline {
            return None;
        }
        self.attempts += 1;
        if self.attempts > self.timing.retries {
            self.phase = Phase::Finished(Outcome::TimedOut);
            return Some(Transmit::Error(TftpError::new(
                ErrorCode::NotDefined,
                format!("timed out after {} retransmissions", self.timing.retries),
            )));
        }
        match self.phase {
            Phase::AwaitOptionAck => {
                self.arm(now);
                Some(Transmit::OptionAck)
            }
            Phase::Sending => {
                let t = self.resend_window(now);
                // `resend_window` re-arms with the backoff for `attempts`.
                Some(t)
            }
            Phase::Finished(_) => None,
        }
    }

    /// Ends the transfer for a local reason; returns the ERROR to send.
    pub fn abort(&mut self, error: TftpError) -> Transmit {
        self.phase = Phase::Finished(Outcome::Aborted(error.message.clone()));
        Transmit::Error(error)
    }

    /// When [`Self::on_timeout`] is due; `None` once finished.
    pub fn deadline(&self) -> Option<Instant> {
        (!self.is_finished()).then_some(self.deadline)
    }

    /// How the transfer ended, if it has.
    pub fn outcome(&self) -> Option<&Outcome> {
        match &self.phase {
            Phase::Finished(o) => Some(o),
            _ => None,
        }
    }

    /// Whether the transfer has ended.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Finished(_))
    }

    /// Number of the last block (the short or empty one).
    pub fn last_block(&self) -> u64 {
        self.last_block
    }

    /// Blocks sent more than once so far.
    pub fn retransmitted(&self) -> u64 {
        self.retransmitted
    }

    fn on_ack(&mut self, wire: u16, now: Instant) -> Option<Transmit> {
        match self.phase {
            Phase::AwaitOptionAck => {
                if wire != 0 {
                    return None;
                }
                self.phase = Phase::Sending;
                self.attempts = 0;
                Some(self.send_window(now))
            }
            Phase::Sending => {
                // The only block in acked..=sent_upto whose low 16 bits are `wire`.
                let n = self.acked + u64::from(wire.wrapping_sub(self.acked as u16));
                if n > self.sent_upto {
                    return None; // older than `acked`, or never sent: stale.
                }
                if n > self.acked {
                    self.acked = n;
                    self.attempts = 0;
                    if n == self.last_block {
                        self.phase = Phase::Finished(Outcome::Complete);
                        return None;
                    }
                    if n < self.sent_upto {
                        // Part of the window was lost: go back to the block after `n`.
                        self.retransmitted += self.sent_upto - n;
                    }
                    return Some(self.send_window(now));
                }
                // Duplicate ACK of `acked`.
                if now.saturating_duration_since(self.last_sent) < self.timing.dup_ack_guard {
                    return None;
                }
                Some(self.resend_window(now))
            }
            Phase::Finished(_) => None,
        }
    }

    /// Sends the window after `acked`, counting what was sent before as retransmitted.
    fn send_window(&mut self, now: Instant) -> Transmit {
        let first = self.acked + 1;
        let last = (self.acked + self.window).min(self.last_block);
        self.sent_upto = self.sent_upto.max(last);
        self.last_sent = now;
        self.arm(now);
        Transmit::Blocks { first, last }
    }

    fn resend_window(&mut self, now: Instant) -> Transmit {
        let first = self.acked + 1;
        let last = self.sent_upto.max(first).min(self.last_block);
        self.retransmitted += last + 1 - first;
        self.last_sent = now;
        self.arm(now);
        Transmit::Blocks { first, last }
    }

    fn arm(&mut self, now: Instant) {
        self.deadline = now + self.timing.backoff(self.attempts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing {
        timeout: Duration::from_secs(1),
        max_timeout: Duration::from_secs(4),
        retries: 3,
        dup_ack_guard: Duration::from_millis(20),
    };

    fn ack(block: u16) -> Packet<'static> {
        Packet::Ack { block }
    }

    fn blocks(first: u64, last: u64) -> Option<Transmit> {
        Some(Transmit::Blocks { first, last })
    }

    #[test]
    fn lock_step_without_options() {
        let t0 = Instant::now();
        let mut t = ReadTransfer::new(1024, 512, 1, false, T, t0);
        assert_eq!(
            t.last_block(),
            3,
            "1024 bytes at 512 end with an empty block"
        );
        assert_eq!(t.start(t0), blocks(1, 1));
        assert_eq!(t.deadline(), Some(t0 + T.timeout));
        assert_eq!(t.on_packet(&ack(1), t0), blocks(2, 2));
        assert_eq!(t.on_packet(&ack(2), t0), blocks(3, 3));
        assert_eq!(t.on_packet(&ack(3), t0), None);
        assert_eq!(t.outcome(), Some(&Outcome::Complete));
        assert_eq!(t.deadline(), None);
    }

    #[test]
    fn empty_file_is_one_empty_block() {
        let t0 = Instant::now();
        let mut t = ReadTransfer::new(0, 512, 1, false, T, t0);
        assert_eq!(t.start(t0), blocks(1, 1));
        assert_eq!(t.on_packet(&ack(1), t0), None);
        assert!(t.is_finished());
    }

    #[test]
    fn option_ack_then_windows() {
        let t0 = Instant::now();
        let mut t = ReadTransfer::new(10 * 100 + 50, 100, 4, true, T, t0);
        assert_eq!(t.start(t0), Some(Transmit::OptionAck));
        assert_eq!(t.on_packet(&ack(5), t0), None, "only ACK 0 answers an OACK");
        assert_eq!(t.on_packet(&ack(0), t0), blocks(1, 4));
        assert_eq!(t.on_packet(&ack(4), t0), blocks(5, 8));
        assert_eq!(t.on_packet(&ack(8), t0), blocks(9, 11));
        assert_eq!(t.on_packet(&ack(11), t0), None);
        assert_eq!(t.outcome(), Some(&Outcome::Complete));
    }

    #[test]
    fn tsize_probe_error_ends_at_once() {
        let t0 = Instant::now();
        let mut t = ReadTransfer::new(5000, 512, 1, true, T, t0);
        assert_eq!(t.start(t0), Some(Transmit::OptionAck));
        let err = Packet::Error {
            code: ErrorCode::OptionRefused,
            message: "tsize only".into(),
        };
        assert_eq!(t.on_packet(&err, t0), None);
        assert!(matches!(
            t.outcome(),
            Some(Outcome::ClientError {
                code: ErrorCode::OptionRefused,
                ..
            })
        ));
        assert_eq!(t.deadline(), None);
        assert_eq!(t.on_timeout(t0 + Duration::from_secs(10)), None);
    }

    #[test]
    fn partial_ack_goes_back_at_once() {
        let t0 = Instant::now();
        let mut t = ReadTransfer::new(100 * 512, 512, 8, true, T, t0);
        t.start(t0);
        assert_eq!(t.on_packet(&ack(0), t0), blocks(1, 8));
        // Block 4 was lost: the client acknowledges 3.
        assert_eq!(t.on_packet(&ack(3), t0), blocks(4, 11));
        assert_eq!(t.retransmitted(), 5);
        // The same ACK again right away (one per out-of-order block) is absorbed by the guard.
        assert_eq!(t.on_packet(&ack(3), t0 + Duration::from_millis(1)), None);
        // A stale ACK from before is ignored.
        assert_eq!(t.on_packet(&ack(2), t0 + Duration::from_millis(2)), None);
    }

    #[test]
    fn duplicate_ack_resends_at_once_after_the_guard() {
        let t0 = Instant::now();
        let mut t = ReadTransfer::new(10 * 512, 512, 1, false, T, t0);
        assert_eq!(t.start(t0), blocks(1, 1));
        assert_eq!(t.on_packet(&ack(1), t0), blocks(2, 2));
        // The client's own timer fired (long after the guard): DATA 2 goes again immediately,
        // not after our 1 s timeout.
        let t1 = t0 + Duration::from_millis(300);
        assert_eq!(t.on_packet(&ack(1), t1), blocks(2, 2));
        assert_eq!(t.deadline(), Some(t1 + T.timeout));
        // An immediate echo of that duplicate (Sorcerer's Apprentice) is not answered.
        assert_eq!(t.on_packet(&ack(1), t1 + Duration::from_millis(1)), None);
    }

    #[test]
    fn retransmits_with_backoff_then_gives_up() {
        let t0 = Instant::now();
        let mut t = ReadTransfer::new(2000, 512, 2, true, T, t0);
        t.start(t0);
        let mut now = t0;
        assert_eq!(t.on_packet(&ack(0), now), blocks(1, 2));
        assert_eq!(
            t.on_timeout(now + Duration::from_millis(500)),
            None,
            "not due yet"
        );
        let mut waits = Vec::new();
        for _ in 0..T.retries {
            let d = t.deadline().unwrap();
            waits.push(d - now);
            now = d;
            assert_eq!(t.on_timeout(now), blocks(1, 2));
        }
        waits.push(t.deadline().unwrap() - now);
        assert_eq!(
            waits,
            [1, 2, 4, 4].map(Duration::from_secs),
            "doubling, capped at max_timeout"
        );
        now = t.deadline().unwrap();
        assert!(matches!(t.on_timeout(now), Some(Transmit::Error(_))));
        assert_eq!(t.outcome(), Some(&Outcome::TimedOut));
        assert_eq!(t.deadline(), None);
    }

    #[test]
    fn progress_resets_the_backoff() {
        let t0 = Instant::now();
        let mut t = ReadTransfer::new(5000, 512, 1, false, T, t0);
        t.start(t0);
        let now = t.deadline().unwrap();
        t.on_timeout(now);
        assert_eq!(t.deadline(), Some(now + Duration::from_secs(2)));
        t.on_packet(&ack(1), now);
        assert_eq!(t.deadline(), Some(now + Duration::from_secs(1)));
    }

    #[test]
    fn block_numbers_wrap_to_zero() {
        // 70 000 blocks of 8 bytes: the wire number passes 65535 → 0 → 1.
        let t0 = Instant::now();
        let blocks_total = 70_000u64;
        let mut t = ReadTransfer::new(blocks_total * 8 - 3, 8, 1, false, T, t0);
        let mut sent = Vec::new();
        let mut next = t.start(t0);
        while let Some(Transmit::Blocks { first, last }) = next {
            assert_eq!(first, last);
            sent.push(first);
            next = t.on_packet(&ack(first as u16), t0);
        }
        assert_eq!(sent.len() as u64, blocks_total);
        assert_eq!(sent[65535], 65536, "wire block 0 is absolute block 65536");
        assert_eq!(t.outcome(), Some(&Outcome::Complete));
    }

    #[test]
    fn windows_across_the_wrap() {
        let t0 = Instant::now();
        let mut t = ReadTransfer::new(70_000 * 512, 512, 16, true, T, t0);
        t.start(t0);
        let mut next = t.on_packet(&ack(0), t0);
        let mut acked = 0u64;
        while let Some(Transmit::Blocks { first, last }) = next {
            assert_eq!(first, acked + 1);
            // Lose the middle of every 10th window.
            let upto = if (first / 16) % 10 == 3 {
                (first + last) / 2
            } else {
                last
            };
            acked = upto;
            next = t.on_packet(&ack(upto as u16), t0);
        }
        assert_eq!(acked, t.last_block());
        assert_eq!(t.outcome(), Some(&Outcome::Complete));
    }

    #[test]
    fn abort_reports_the_reason() {
        let t0 = Instant::now();
        let mut t = ReadTransfer::new(10, 512, 1, false, T, t0);
        t.start(t0);
        let e = TftpError::new(ErrorCode::NotDefined, "read failed");
        assert_eq!(t.abort(e.clone()), Transmit::Error(e));
        assert_eq!(t.outcome(), Some(&Outcome::Aborted("read failed".into())));
    }
}
