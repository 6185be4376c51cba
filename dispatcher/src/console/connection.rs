//! The board's serial line, reached through the device's `connection_command` (telnet to a
//! ser2net port, `socat` to a socket, `cat` of a pipe pair, …) run under `sh -c`.
//!
//! A thread reads the command's stdout and hands the bytes over a channel, so waits can have
//! deadlines and be cancelled without blocking in `read`. Typing goes to the command's stdin,
//! one character at a time with the device's `boot_character_delay` when asked: slow U-Boot
//! consoles drop characters that arrive faster than they are read.

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
    /// The connection command ended.
    Closed,
}

/// A running connection command.
pub struct Connection {
    command: String,
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<Vec<u8>>,
    closed: bool,
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
            child,
            stdin,
            rx,
            closed: false,
        })
    }

    /// The command this connection runs.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The next bytes from the board, waiting at most until `until`.
    pub fn read(&mut self, until: Instant) -> Chunk {
        if self.closed {
            return Chunk::Closed;
        }
        let wait = until.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(wait) {
            Ok(data) => Chunk::Data(data),
            Err(RecvTimeoutError::Timeout) => Chunk::Idle,
            Err(RecvTimeoutError::Disconnected) => {
                self.closed = true;
                Chunk::Closed
            }
        }
    }

    /// Sends `text`, one character at a time with `delay` between them when it is not zero.
    pub fn send(&mut self, text: &str, delay: Duration) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| Error::infra(format!("console '{}' is closed", self.command)))?;
        let fail = |e: std::io::Error| Error::infra(format!("console '{}': {e}", self.command));
        if delay.is_zero() {
            stdin.write_all(text.as_bytes()).map_err(fail)?;
            stdin.flush().map_err(fail)?;
        } else {
            for ch in text.chars() {
                let mut b = [0u8; 4];
                stdin
                    .write_all(ch.encode_utf8(&mut b).as_bytes())
                    .map_err(fail)?;
                stdin.flush().map_err(fail)?;
                thread::sleep(delay);
            }
        }
        Ok(())
    }

    /// Ends the connection command.
    pub fn close(&mut self) {
        self.stdin = None;
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on the process group this connection created.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.closed = true;
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}
