//! One board's console as everyone shares it: what the line says goes to every subscriber (a
//! tokio broadcast of [`Bytes`] after a backlog of the last 64 KiB), to the job that holds the
//! console (a channel of its own, which never lags), and one writer at a time types into it.
//!
//! The write side is a slot with a holder's name ("job 12", "http.tokens[0] via websocket"):
//! [`ConsoleHub::take_writer`] is refused while someone holds it, and the [`ConsoleWriter`]
//! releases it when dropped. A job takes it over whoever holds it
//! ([`ConsoleHub::take_writer_over`]): the writer it replaced then fails with the job's name.
//! Writes go to the keeper's writer thread through a channel, so a writer never blocks on the
//! line; while the line is down they fail with `NotConnected`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::broadcast;

/// How much of the line a new subscriber gets first.
pub const BACKLOG_BYTES: usize = 64 * 1024;
/// Chunks a subscriber may fall behind before it lags.
const CHANNEL_CHUNKS: usize = 1024;

/// A board's shared console.
pub struct ConsoleHub {
    board: String,
    connected: AtomicBool,
    reconnects: AtomicU64,
    state: Mutex<State>,
}

struct State {
    /// None once the hub is closed (the appliance stops): subscribers see the end.
    tx: Option<broadcast::Sender<Bytes>>,
    backlog: VecDeque<u8>,
    /// Generation and name of the write side's holder.
    writer: Option<(u64, String)>,
    generation: u64,
    /// The connected line's writer thread.
    line: Option<mpsc::Sender<Bytes>>,
    /// Jobs' readers (unbounded: a job reads everything, in order).
    taps: Vec<mpsc::Sender<Bytes>>,
}

impl ConsoleHub {
    /// A hub for `board`, not connected yet.
    pub fn new(board: &str) -> ConsoleHub {
        let (tx, _) = broadcast::channel(CHANNEL_CHUNKS);
        ConsoleHub {
            board: board.to_string(),
            connected: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            state: Mutex::new(State {
                tx: Some(tx),
                backlog: VecDeque::with_capacity(BACKLOG_BYTES),
                writer: None,
                generation: 0,
                line: None,
                taps: Vec::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The board this console belongs to.
    pub fn board(&self) -> &str {
        &self.board
    }

    /// The last bytes seen (up to 64 KiB) and a receiver of everything after them.
    pub fn subscribe(&self) -> (Vec<u8>, broadcast::Receiver<Bytes>) {
        let st = self.state();
        let backlog = st.backlog.iter().copied().collect();
        let rx = match &st.tx {
            Some(tx) => tx.subscribe(),
            // Closed: a receiver that ends at once.
            None => broadcast::channel(1).1,
        };
        (backlog, rx)
    }

    /// Takes the write side for `who` (e.g. "job 12", "http.tokens[0] via websocket");
    /// Err(holder) if someone holds it.
    pub fn take_writer(self: &Arc<Self>, who: &str) -> Result<ConsoleWriter, String> {
        let mut st = self.state();
        if let Some((_, holder)) = &st.writer {
            return Err(holder.clone());
        }
        Ok(self.hand_writer(&mut st, who))
    }

    /// Takes the write side for `who` (a job) whoever holds it; the holder it replaced, whose
    /// writes then fail naming `who`.
    pub fn take_writer_over(self: &Arc<Self>, who: &str) -> (ConsoleWriter, Option<String>) {
        let mut st = self.state();
        let previous = st.writer.take().map(|(_, holder)| holder);
        (self.hand_writer(&mut st, who), previous)
    }

    fn hand_writer(self: &Arc<Self>, st: &mut State, who: &str) -> ConsoleWriter {
        st.generation += 1;
        st.writer = Some((st.generation, who.to_string()));
        ConsoleWriter {
            hub: Arc::clone(self),
            generation: st.generation,
            who: who.to_string(),
        }
    }

    /// Who holds the write side, if anyone.
    pub fn writer(&self) -> Option<String> {
        self.state().writer.as_ref().map(|(_, who)| who.clone())
    }

    /// Whether the line is connected now.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// How many times the line was opened again after it dropped (or failed to open).
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::SeqCst)
    }

    /// Bytes the line said: into the backlog, to every subscriber and every job's tap.
    pub(crate) fn publish(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let bytes = Bytes::copy_from_slice(data);
        let mut st = self.state();
        let keep = data.len().min(BACKLOG_BYTES);
        let excess = (st.backlog.len() + keep).saturating_sub(BACKLOG_BYTES);
        st.backlog.drain(..excess);
        st.backlog.extend(&data[data.len() - keep..]);
        if let Some(tx) = &st.tx {
            // No subscriber is not an error.
            let _ = tx.send(bytes.clone());
        }
        st.taps.retain(|t| t.send(bytes.clone()).is_ok());
    }

    /// The line is connected (its writer thread's channel) or down (None).
    pub(crate) fn set_line(&self, line: Option<mpsc::Sender<Bytes>>) {
        let up = line.is_some();
        self.state().line = line;
        self.connected.store(up, Ordering::SeqCst);
    }

    /// The line was opened again.
    pub(crate) fn count_reconnect(&self) -> u64 {
        self.reconnects.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// A reader of everything the line says from now on, for a job (never lags; ends when the
    /// hub closes or the receiver is dropped).
    pub(crate) fn tap(&self) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel();
        let mut st = self.state();
        if st.tx.is_some() {
            st.taps.push(tx);
        }
        rx
    }

    /// The appliance stops: subscribers and taps see the end, writes fail.
    pub(crate) fn close(&self) {
        let mut st = self.state();
        st.tx = None;
        st.taps.clear();
        st.line = None;
        self.connected.store(false, Ordering::SeqCst);
    }
}

/// The write side of a console; releases it when dropped.
pub struct ConsoleWriter {
    hub: Arc<ConsoleHub>,
    generation: u64,
    who: String,
}

impl ConsoleWriter {
    /// Sends `bytes` to the board (queued to the line's writer thread); fails when the line is
    /// down or a job took the write side over.
    pub fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::{Error, ErrorKind};
        let st = self.hub.state();
        match &st.writer {
            Some((g, _)) if *g == self.generation => {}
            Some((_, holder)) => {
                return Err(Error::new(
                    ErrorKind::PermissionDenied,
                    format!(
                        "board {}'s console: the write side was taken by {holder}",
                        self.hub.board
                    ),
                ))
            }
            None => {
                return Err(Error::new(
                    ErrorKind::PermissionDenied,
                    format!(
                        "board {}'s console: the write side was taken back",
                        self.hub.board
                    ),
                ))
            }
        }
        let line = st.line.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::NotConnected,
                format!(
                    "board {}'s console is not connected (reconnecting)",
                    self.hub.board
                ),
            )
        })?;
        if bytes.is_empty() {
            return Ok(());
        }
        line.send(Bytes::copy_from_slice(bytes)).map_err(|_| {
            Error::new(
                ErrorKind::NotConnected,
                format!("board {}'s console dropped", self.hub.board),
            )
        })
    }

    /// Who holds this writer.
    pub fn who(&self) -> &str {
        &self.who
    }

    /// The hub this writer writes to.
    pub fn hub(&self) -> &Arc<ConsoleHub> {
        &self.hub
    }
}

impl Drop for ConsoleWriter {
    fn drop(&mut self) {
        let mut st = self.hub.state();
        if st
            .writer
            .as_ref()
            .is_some_and(|(g, _)| *g == self.generation)
        {
            st.writer = None;
        }
    }
}

impl std::fmt::Debug for ConsoleWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleWriter")
            .field("board", &self.hub.board)
            .field("who", &self.who)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_subscribers_see_the_same_bytes_after_the_backlog() {
        let hub = Arc::new(ConsoleHub::new("b1"));
        hub.publish(b"U-Boot 2024.01\r\n");
        let (back1, mut rx1) = hub.subscribe();
        hub.publish(b"=> ");
        let (back2, mut rx2) = hub.subscribe();
        hub.publish(b"version\r\n");
        assert_eq!(back1, b"U-Boot 2024.01\r\n");
        assert_eq!(back2, b"U-Boot 2024.01\r\n=> ");
        assert_eq!(rx1.try_recv().unwrap(), Bytes::from_static(b"=> "));
        assert_eq!(rx1.try_recv().unwrap(), Bytes::from_static(b"version\r\n"));
        assert_eq!(rx2.try_recv().unwrap(), Bytes::from_static(b"version\r\n"));
        assert!(rx1.try_recv().is_err() && rx2.try_recv().is_err());
        // The backlog keeps the last 64 KiB.
        hub.publish(&vec![b'x'; BACKLOG_BYTES + 10]);
        hub.publish(b"end");
        let (back, _) = hub.subscribe();
        assert_eq!(back.len(), BACKLOG_BYTES);
        assert!(back.ends_with(b"xxend"));
        // Closed: subscribers see the end, new ones get the backlog and an ended receiver.
        hub.close();
        let end = loop {
            match rx1.try_recv() {
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        assert_eq!(end, broadcast::error::TryRecvError::Closed);
        let (back, mut rx) = hub.subscribe();
        assert_eq!(back.len(), BACKLOG_BYTES);
        assert_eq!(rx.try_recv(), Err(broadcast::error::TryRecvError::Closed));
    }

    #[test]
    fn one_writer_at_a_time_and_the_slot_comes_back_on_drop() {
        let hub = Arc::new(ConsoleHub::new("b1"));
        let (line, to_line) = mpsc::channel();
        let w = hub.take_writer("http.tokens[0] via websocket").unwrap();
        assert_eq!(
            hub.writer().as_deref(),
            Some("http.tokens[0] via websocket")
        );
        assert_eq!(
            hub.take_writer("http.tokens[1] via websocket").unwrap_err(),
            "http.tokens[0] via websocket"
        );
        // Not connected: the write fails, says so.
        let e = w.write(b"help\n").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotConnected, "{e}");
        hub.set_line(Some(line));
        assert!(hub.connected());
        w.write(b"help\n").unwrap();
        assert_eq!(to_line.try_recv().unwrap(), Bytes::from_static(b"help\n"));
        drop(w);
        assert_eq!(hub.writer(), None);
        let w2 = hub.take_writer("http.tokens[1] via websocket").unwrap();
        assert_eq!(w2.who(), "http.tokens[1] via websocket");
        // A job takes it over: the person's writer fails naming the job, and dropping it
        // does not release the job's slot.
        let (job, previous) = hub.take_writer_over("job 12");
        assert_eq!(previous.as_deref(), Some("http.tokens[1] via websocket"));
        let e = w2.write(b"x").unwrap_err();
        assert!(e.to_string().contains("taken by job 12"), "{e}");
        drop(w2);
        assert_eq!(hub.writer().as_deref(), Some("job 12"));
        job.write(b"boot\n").unwrap();
        assert_eq!(to_line.try_recv().unwrap(), Bytes::from_static(b"boot\n"));
        drop(job);
        assert_eq!(hub.writer(), None);
    }

    #[test]
    fn taps_get_everything_in_order_until_the_hub_closes() {
        let hub = Arc::new(ConsoleHub::new("b1"));
        hub.publish(b"before");
        let tap = hub.tap();
        for i in 0..5000u32 {
            hub.publish(i.to_string().as_bytes());
        }
        let got: Vec<Bytes> = tap.try_iter().collect();
        assert_eq!(got.len(), 5000, "a tap never lags");
        assert_eq!(got[4999], Bytes::from("4999"));
        drop(tap);
        hub.publish(b"after");
        assert!(hub.state().taps.is_empty(), "a dropped tap is forgotten");
        let tap = hub.tap();
        hub.close();
        assert!(matches!(tap.recv(), Err(mpsc::RecvError)));
    }
}
