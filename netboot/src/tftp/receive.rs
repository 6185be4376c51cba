//! The receiving side of one write transfer (WRQ), as a state machine with no I/O and no clock.
//!
//! Like [`super::transfer`], the socket loop passes `now` and sends what comes back. DATA blocks
//! are accepted strictly in order; the caller writes the payload when [`Receipt::deliver`] says
//! so. With a window (RFC 7440) an ACK goes out every `window` blocks, and at once — naming the
//! last block received in order — when a block arrives out of order. After the final (short)
//! block the ACK is sent and the transfer lingers one timeout ("dallying", RFC 1350) to answer
//! a retransmitted final block in case that ACK was lost.

use std::time::Instant;

use super::error::TftpError;
use super::packet::{ErrorCode, Packet};
use super::transfer::{Outcome, Timing};

/// What to send after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The OACK of the negotiated options.
    OptionAck,
    /// ACK of an absolute block number (sent as its low 16 bits).
    Ack(u64),
    /// An ERROR packet; the transfer is over.
    Error(TftpError),
}

/// The result of feeding one DATA packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Receipt {
    /// Whether the payload is the next block and must be written now.
    pub deliver: bool,
    /// Whether that block was the last one (the caller commits the file after writing it).
    pub last: bool,
    /// What to send.
    pub reply: Option<Reply>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Receiving,
    Dallying,
    Finished(Outcome),
}

/// The server side of one WRQ.
#[derive(Debug)]
pub struct WriteTransfer {
    blksize: usize,
    window: u64,
    limit: u64,
    timing: Timing,
    oack: bool,
    phase: Phase,
    /// Highest block received in order.
    received: u64,
    bytes: u64,
    /// Highest block acknowledged.
    acked: u64,
    attempts: u32,
    deadline: Instant,
    last_sent: Instant,
}

impl WriteTransfer {
    /// A transfer of blocks of `blksize`, acknowledged every `window` blocks, of at most `limit`
    /// bytes; `oack` says whether options were negotiated.
    pub fn new(
        blksize: u16,
        window: u16,
        limit: u64,
        oack: bool,
        timing: Timing,
        now: Instant,
    ) -> WriteTransfer {
        WriteTransfer {
            blksize: usize::from(blksize.max(1)),
            window: u64::from(window.max(1)),
            limit,
            timing,
            oack,
            phase: Phase::Receiving,
            received: 0,
            bytes: 0,
            acked: 0,
            attempts: 0,
            deadline: now,
            last_sent: now,
        }
    }

    /// The first packet to send: OACK or ACK 0.
    pub fn start(&mut self, now: Instant) -> Reply {
        self.arm(now);
        self.last_sent = now;
        if self.oack {
            Reply::OptionAck
        } else {
            Reply::Ack(0)
        }
    }

    /// Feeds one packet from the client.
    pub fn on_packet(&mut self, packet: &Packet<'_>, now: Instant) -> Receipt {
        match packet {
            Packet::Data { block, data } => self.on_data(*block, data.len(), now),
            Packet::Error { code, message } => {
                if !self.is_finished() {
                    self.phase = Phase::Finished(Outcome::ClientError {
                        code: *code,
                        message: message.clone(),
                    });
                }
                Receipt::default()
            }
            _ => Receipt::default(),
        }
    }

    fn on_data(&mut self, wire: u16, len: usize, now: Instant) -> Receipt {
        match self.phase {
            Phase::Finished(_) => return Receipt::default(),
            Phase::Dallying => {
                // The final ACK was lost and the client sent its last block again.
                let ack = self.received;
                return Receipt {
                    reply: (wire == ack as u16).then_some(Reply::Ack(ack)),
                    ..Receipt::default()
                };
            }
            Phase::Receiving => {}
        }
        let next = self.received + 1;
        if wire != next as u16 {
            // Duplicate or out of order: say where we are, once per guard interval.
            if now.saturating_duration_since(self.last_sent) < self.timing.dup_ack_guard {
                return Receipt::default();
            }
            return Receipt {
                reply: Some(self.ack(self.received, now)),
                ..Receipt::default()
            };
        }
        if len > self.blksize {
            return self.fail(TftpError::illegal_operation(format!(
                "DATA {wire} carries {len} bytes, more than the block size {}",
                self.blksize
            )));
        }
        self.bytes += len as u64;
        if self.bytes > self.limit {
            return self.fail(TftpError::new(
                ErrorCode::DiskFull,
                format!("upload exceeds the limit of {} bytes", self.limit),
            ));
        }
        self.received = next;
        self.attempts = 0;
        let last = len < self.blksize;
        if last {
            self.phase = Phase::Dallying;
            // Dally for one base timeout, then finish.
            let reply = Some(self.ack(next, now));
            self.deadline = now + self.timing.timeout;
            return Receipt {
                deliver: true,
                last: true,
                reply,
            };
        }
        let reply = (next - self.acked >= self.window).then(|| self.ack(next, now));
        if reply.is_none() {
            self.arm(now);
        }
        Receipt {
            deliver: true,
            last: false,
            reply,
        }
    }

    /// Called when [`Self::deadline`] has passed.
    pub fn on_timeout(&mut self, now: Instant) -> Option<Reply> {
        if now < self.deadline {
            return None;
        }
        match self.phase {
            Phase::Finished(_) => None,
            Phase::Dallying => {
                self.phase = Phase::Finished(Outcome::Complete);
                None
            }
            Phase::Receiving => {
                self.attempts += 1;
                if self.attempts > self.timing.retries {
                    self.phase = Phase::Finished(Outcome::TimedOut);
                    return Some(Reply::Error(TftpError::new(
                        ErrorCode::NotDefined,
                        format!("timed out after {} retransmissions", self.timing.retries),
                    )));
                }
                self.last_sent = now;
                self.arm(now);
                if self.received == 0 && self.oack {
                    Some(Reply::OptionAck)
                } else {
                    Some(Reply::Ack(self.received))
                }
            }
        }
    }

    /// Ends the transfer for a local reason (a failed write); returns the ERROR to send.
    pub fn abort(&mut self, error: TftpError) -> Reply {
        self.phase = Phase::Finished(Outcome::Aborted(error.message.clone()));
        Reply::Error(error)
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

    /// Whether the transfer has ended (dallying is not the end).
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Finished(_))
    }

    /// Bytes received in order so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn ack(&mut self, block: u64, now: Instant) -> Reply {
        self.acked = block;
        self.last_sent = now;
        self.arm(now);
        Reply::Ack(block)
    }

    fn fail(&mut self, error: TftpError) -> Receipt {
        Receipt {
            reply: Some(self.abort(error)),
            ..Receipt::default()
        }
    }

    fn arm(&mut self, now: Instant) {
        self.deadline = now + self.timing.backoff(self.attempts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const T: Timing = Timing {
        timeout: Duration::from_secs(1),
        max_timeout: Duration::from_secs(4),
        retries: 2,
        dup_ack_guard: Duration::from_millis(20),
    };

    fn data(block: u16, data: &[u8]) -> Packet<'_> {
        Packet::Data { block, data }
    }

    #[test]
    fn lock_step_upload_then_dally() {
        let t0 = Instant::now();
        let mut w = WriteTransfer::new(4, 1, 100, false, T, t0);
        assert_eq!(w.start(t0), Reply::Ack(0));
        let r = w.on_packet(&data(1, b"abcd"), t0);
        assert_eq!(
            (r.deliver, r.last, r.reply),
            (true, false, Some(Reply::Ack(1)))
        );
        let r = w.on_packet(&data(2, b"ef"), t0);
        assert_eq!(
            (r.deliver, r.last, r.reply),
            (true, true, Some(Reply::Ack(2)))
        );
        assert_eq!(w.bytes(), 6);
        // Final ACK lost: the client repeats block 2, we repeat the ACK without delivering.
        let t1 = t0 + Duration::from_millis(500);
        let r = w.on_packet(&data(2, b"ef"), t1);
        assert_eq!((r.deliver, r.reply), (false, Some(Reply::Ack(2))));
        assert!(!w.is_finished());
        w.on_timeout(w.deadline().unwrap());
        assert_eq!(w.outcome(), Some(&Outcome::Complete));
    }

    #[test]
    fn windowed_upload_acks_every_window_and_on_gaps() {
        let t0 = Instant::now();
        let mut w = WriteTransfer::new(2, 3, 100, true, T, t0);
        assert_eq!(w.start(t0), Reply::OptionAck);
        assert_eq!(w.on_packet(&data(1, b"aa"), t0).reply, None);
        assert_eq!(w.on_packet(&data(2, b"bb"), t0).reply, None);
        assert_eq!(w.on_packet(&data(3, b"cc"), t0).reply, Some(Reply::Ack(3)));
        // Block 4 lost, 5 arrives later than the guard: ACK 3 at once, 5 not delivered.
        let t1 = t0 + Duration::from_millis(50);
        let r = w.on_packet(&data(5, b"ee"), t1);
        assert_eq!((r.deliver, r.reply), (false, Some(Reply::Ack(3))));
        let r = w.on_packet(&data(6, b"ff"), t1);
        assert_eq!((r.deliver, r.reply), (false, None), "guarded");
        let r = w.on_packet(&data(4, b"d"), t1);
        assert_eq!(
            (r.deliver, r.last, r.reply),
            (true, true, Some(Reply::Ack(4)))
        );
    }

    #[test]
    fn size_limit_and_oversized_blocks_fail() {
        let t0 = Instant::now();
        let mut w = WriteTransfer::new(4, 1, 5, false, T, t0);
        w.start(t0);
        w.on_packet(&data(1, b"abcd"), t0);
        let r = w.on_packet(&data(2, b"efgh"), t0);
        assert!(matches!(
            r.reply,
            Some(Reply::Error(TftpError {
                code: ErrorCode::DiskFull,
                ..
            }))
        ));
        assert!(w.is_finished());

        let mut w = WriteTransfer::new(4, 1, 100, false, T, t0);
        w.start(t0);
        let r = w.on_packet(&data(1, b"abcdef"), t0);
        assert!(matches!(
            r.reply,
            Some(Reply::Error(TftpError {
                code: ErrorCode::IllegalOperation,
                ..
            }))
        ));
    }

    #[test]
    fn silent_client_is_abandoned() {
        let t0 = Instant::now();
        let mut w = WriteTransfer::new(512, 1, 100, true, T, t0);
        w.start(t0);
        assert_eq!(w.on_timeout(w.deadline().unwrap()), Some(Reply::OptionAck));
        assert_eq!(w.on_timeout(w.deadline().unwrap()), Some(Reply::OptionAck));
        assert!(matches!(
            w.on_timeout(w.deadline().unwrap()),
            Some(Reply::Error(_))
        ));
        assert_eq!(w.outcome(), Some(&Outcome::TimedOut));
    }

    #[test]
    fn client_error_ends_upload() {
        let t0 = Instant::now();
        let mut w = WriteTransfer::new(512, 1, 100, false, T, t0);
        w.start(t0);
        w.on_packet(
            &Packet::Error {
                code: ErrorCode::DiskFull,
                message: "x".into(),
            },
            t0,
        );
        assert!(matches!(w.outcome(), Some(Outcome::ClientError { .. })));
        assert_eq!(w.deadline(), None);
    }
}
