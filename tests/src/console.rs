//! An expect-style serial console: wait for a regex with a deadline, send a line.
//!
//! A reader thread appends everything the board prints to a buffer (and to a log file, which
//! a failing test names so the whole console can be read). [`Console::expect`] searches the
//! part of the buffer after the previous match, so each expectation consumes output in order.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use regex::Regex;

#[derive(Default)]
struct Shared {
    text: Vec<u8>,
    closed: bool,
}

/// A board's serial console.
pub struct Console {
    shared: Arc<(Mutex<Shared>, Condvar)>,
    writer: UnixStream,
    cursor: usize,
    log: PathBuf,
}

impl Console {
    /// Connects to the console socket QEMU serves, retrying until `timeout` (QEMU creates
    /// it shortly after it starts). Everything read is also appended to `log`.
    pub fn connect(socket: &Path, log: &Path, timeout: Duration) -> anyhow::Result<Console> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot connect to console {}", socket.display()))
                }
            }
        };
        let mut reader = stream.try_clone().context("clone console socket")?;
        let mut log_file =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let for_thread = Arc::clone(&shared);
        thread::Builder::new()
            .name("console-reader".into())
            .spawn(move || {
                let (lock, cond) = &*for_thread;
                let mut buf = [0u8; 4096];
                loop {
                    let n = match reader.read(&mut buf) {
                        Ok(0) | Err(_) => 0,
                        Ok(n) => n,
                    };
                    let mut state = lock.lock().unwrap_or_else(|p| p.into_inner());
                    if n == 0 {
                        state.closed = true;
                        cond.notify_all();
                        return;
                    }
                    let _ = log_file.write_all(&buf[..n]);
                    state.text.extend_from_slice(&buf[..n]);
                    cond.notify_all();
                }
            })
            .context("spawn console reader")?;
        Ok(Console {
            shared,
            writer: stream,
            cursor: 0,
            log: log.to_path_buf(),
        })
    }

    /// Waits until `pattern` matches output not yet consumed, and returns the matched text.
    ///
    /// Fails with the last lines of the console when the deadline passes or the board goes away.
    pub fn expect(&mut self, pattern: &str, timeout: Duration) -> anyhow::Result<String> {
        self.expect_captures(pattern, timeout)
            .map(|mut c| c.swap_remove(0))
    }

    /// Like [`Console::expect`], returning the whole match and then each capture group
    /// (empty for a group that did not take part).
    pub fn expect_captures(
        &mut self,
        pattern: &str,
        timeout: Duration,
    ) -> anyhow::Result<Vec<String>> {
        let re = Regex::new(pattern).with_context(|| format!("bad pattern {pattern:?}"))?;
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.shared;
        let mut state = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let text = String::from_utf8_lossy(&state.text[self.cursor..]).into_owned();
            if let Some(caps) = re.captures(&text) {
                let end = caps.get(0).map_or(0, |m| m.end());
                // Map the end back to bytes: the lossy text has the same length unless the
                // board printed invalid UTF-8 before the match, so search the prefix bytes.
                self.cursor += byte_offset(&state.text[self.cursor..], &text, end);
                return Ok(caps
                    .iter()
                    .map(|m| m.map_or(String::new(), |m| m.as_str().to_string()))
                    .collect());
            }
            let now = Instant::now();
            if state.closed || now >= deadline {
                let why = if state.closed {
                    "the console closed"
                } else {
                    "timed out"
                };
                let tail = tail_lines(&text, 25);
                bail!(
                    "{why} after {:?} waiting for /{pattern}/ on the console (full log: {}); last output:\n{tail}",
                    timeout,
                    self.log.display()
                );
            }
            state = cond
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Sends `line` followed by a carriage return, as a person at the console would.
    pub fn send_line(&mut self, line: &str) -> anyhow::Result<()> {
        self.writer
            .write_all(format!("{line}\r").as_bytes())
            .context("write to the console")
    }

    /// Everything the board printed so far.
    pub fn output(&self) -> String {
        let (lock, _) = &*self.shared;
        let state = lock.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&state.text).into_owned()
    }

    /// The console log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

/// Byte length of the first `chars_end` bytes of `lossy` in the original `bytes`.
fn byte_offset(bytes: &[u8], lossy: &str, end: usize) -> usize {
    if bytes.len() == lossy.len() {
        return end;
    }
    // Slow path: find the shortest prefix of `bytes` whose lossy form is the matched prefix.
    let prefix = &lossy[..end];
    (0..=bytes.len())
        .find(|&n| String::from_utf8_lossy(&bytes[..n]).len() >= prefix.len())
        .unwrap_or(bytes.len())
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
