//! The board's serial line, reached through the device's `connection_command` (telnet to a
//! ser2net port, `socat` to a socket, `cat` of a pipe pair, …) run under `sh -c`, or through a
//! [`ConsolePort`] the lab gives (`LabServices::console`: `labboot serve` keeps every board's
//! line open itself and lends it to the job).
//!
//! A thread reads the command's stdout and hands the bytes over a channel, so waits can have
//! deadlines and be cancelled without blocking in `read`. Typing goes to the command's stdin
//! (or the port), one character at a time with the device's `boot_character_delay` when
//! asked: slow U-Boot consoles drop characters that arrive faster than they are read.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// What a read from the console gave.
#[derive(Debug)]
pub enum Chunk {
    /// Bytes from the board.
    Data(Vec<u8>),
    /// Nothing arrived before the deadline.
    Idle,
    /// The connection command ended (or the lent port is gone).
    Closed,
}

/// A console someone else keeps open and lends to the job (`LabServices::console`).
pub trait ConsolePort: Send {
    /// What the console is, for the job's log (e.g. "board b1's console, kept by labboot serve").
    fn describe(&self) -> String;
    /// The next bytes from the board, waiting at most until `until`; `Closed` when the port is
    /// gone for good (a line that drops and reconnects is only quiet meanwhile).
    fn read(&mut self, until: Instant) -> Chunk;
    /// Writes `bytes` to the board.
    fn write(&mut self, bytes: &[u8]) -> Result<()>;
    /// Gives the console back; may be called more than once (dropping the port does it too).
    fn close(&mut self);
}

/// A running connection command, or a lent port.
pub struct Connection {
    command: String,
    inner: Inner,
    closed: bool,
}

enum Inner {
    Command {
        child: Child,
        stdin: Option<ChildStdin>,
        rx: Receiver<Vec<u8>>,
    },
    Port(Box<dyn ConsolePort>),
}

impl Connection {
    /// Starts `command` with `sh -c`.
    pub fn open(command: &str) -> Result<Connection> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group, so closing ends every process the command started.
            .process_group(0)
            .spawn()
            .map_err(|e| Error::infra(format!("connection command '{command}': {e}")))?;
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::bug("connection command has no stdout"))?;
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("console-read".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match stdout.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tx.send(buf[..n].to_vec()).is_err() {
                                break;
                            }
                        }
                    }
                }
            })
            .map_err(|e| Error::infra(format!("console reader thread: {e}")))?;
        Ok(Connection {
            command: command.to_string(),
            inner: Inner::Command { child, stdin, rx },
            closed: false,
        })
    }

    /// A connection over a port the lab lends (its description stands for the command).
    pub fn from_port(port: Box<dyn ConsolePort>) -> Connection {
        Connection {
            command: port.describe(),
            inner: Inner::Port(port),
            closed: false,
        }
    }

    /// The command this connection runs (a port's description).
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The next bytes from the board, waiting at most until `until`.
    pub fn read(&mut self, until: Instant) -> Chunk {
        if self.closed {
            return Chunk::Closed;
        }
        let chunk = match &mut self.inner {
            Inner::Command { rx, .. } => {
                let wait = until.saturating_duration_since(Instant::now());
                match rx.recv_timeout(wait) {
                    Ok(data) => Chunk::Data(data),
                    Err(RecvTimeoutError::Timeout) => Chunk::Idle,
                    Err(RecvTimeoutError::Disconnected) => Chunk::Closed,
                }
            }
            Inner::Port(port) => port.read(until),
        };
        if matches!(chunk, Chunk::Closed) {
            self.closed = true;
        }
        chunk
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let command = &self.command;
        match &mut self.inner {
            Inner::Command { stdin, .. } => {
                let stdin = stdin
                    .as_mut()
                    .ok_or_else(|| Error::infra(format!("console '{command}' is closed")))?;
                let fail = |e: std::io::Error| Error::infra(format!("console '{command}': {e}"));
                stdin.write_all(bytes).map_err(fail)?;
                stdin.flush().map_err(fail)
            }
            Inner::Port(port) => {
                if self.closed {
                    return Err(Error::infra(format!("console '{command}' is closed")));
                }
                port.write(bytes)
            }
        }
    }

    /// Sends `text`, one character at a time with `delay` between them when it is not zero.
    pub fn send(&mut self, text: &str, delay: Duration) -> Result<()> {
        if delay.is_zero() {
            self.write(text.as_bytes())?;
        } else {
            for ch in text.chars() {
                let mut b = [0u8; 4];
                self.write(ch.encode_utf8(&mut b).as_bytes())?;
                thread::sleep(delay);
            }
        }
        Ok(())
    }

    /// Ends the connection command (its whole process group), or gives the port back.
    pub fn close(&mut self) {
        match &mut self.inner {
            Inner::Command { child, stdin, .. } => {
                *stdin = None;
                if let Ok(pid) = i32::try_from(child.id()) {
                    // SAFETY: kill(2) on the process group this connection created.
                    unsafe {
                        libc::kill(-pid, libc::SIGKILL);
                    }
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            Inner::Port(port) => port.close(),
        }
        self.closed = true;
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A port over a script of chunks; records what was written and how often it was closed.
    struct FakePort {
        chunks: Vec<Vec<u8>>,
        written: Arc<Mutex<Vec<u8>>>,
        closes: Arc<Mutex<u32>>,
    }

    impl ConsolePort for FakePort {
        fn describe(&self) -> String {
            "fake port".into()
        }
        fn read(&mut self, _until: Instant) -> Chunk {
            if self.chunks.is_empty() {
                Chunk::Closed
            } else {
                Chunk::Data(self.chunks.remove(0))
            }
        }
        fn write(&mut self, bytes: &[u8]) -> Result<()> {
            self.written.lock().unwrap().extend_from_slice(bytes);
            Ok(())
        }
        fn close(&mut self) {
            *self.closes.lock().unwrap() += 1;
        }
    }

    #[test]
    fn a_lent_port_reads_writes_and_closes() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let closes = Arc::new(Mutex::new(0));
        let mut c = Connection::from_port(Box::new(FakePort {
            chunks: vec![b"=> ".to_vec()],
            written: Arc::clone(&written),
            closes: Arc::clone(&closes),
        }));
        assert_eq!(c.command(), "fake port");
        let soon = Instant::now() + Duration::from_millis(10);
        assert!(matches!(c.read(soon), Chunk::Data(d) if d == b"=> "));
        c.send("ver\n", Duration::ZERO).unwrap();
        c.send("é!", Duration::from_millis(1)).unwrap();
        assert_eq!(&*written.lock().unwrap(), "ver\né!".as_bytes());
        assert!(matches!(c.read(soon), Chunk::Closed));
        assert!(matches!(c.read(soon), Chunk::Closed));
        assert!(
            c.send("x", Duration::ZERO).is_err(),
            "a closed port takes no input"
        );
        c.close();
        drop(c);
        assert_eq!(*closes.lock().unwrap(), 2, "close, then drop");
    }
}
