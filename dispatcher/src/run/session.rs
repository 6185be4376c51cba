//! The console as the boot and test actions use it: waits with deadlines for prompts and
//! messages, typed commands, every line logged as `target`, milestones tracked on the way.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use regex::Regex;

use super::milestone::Milestone;
use crate::console::connection::{Chunk, Connection};
use crate::console::matcher::{Matcher, Pattern};
use crate::logs::LogWriter;

/// Why a wait ended without a match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitError {
    /// The deadline passed.
    Timeout,
    /// The connection command ended.
    Closed,
    /// The job was canceled.
    Canceled,
}

/// A match of one of the patterns a wait was given.
#[derive(Debug, Clone)]
pub struct Hit {
    /// Index of the pattern in the list given to the wait.
    pub index: usize,
    /// The matched text.
    pub text: String,
}

/// The markers that move the milestone.
#[derive(Debug, Clone)]
pub struct Markers {
    /// U-Boot's final message ("Starting kernel").
    pub final_message: String,
    /// The kernel's start message (a regex, "Linux version [0-9]").
    pub kernel_start: Option<Regex>,
    /// U-Boot's interrupt prompt, which starts a new boot ("Hit any key to stop autoboot").
    pub interrupt_prompt: String,
}

/// An open console.
pub struct Session {
    conn: Connection,
    log: LogWriter,
    cancel: Arc<AtomicBool>,
    partial: Vec<u8>,
    lines: VecDeque<String>,
    collect_lines: bool,
    markers: Markers,
    /// One matcher for the whole session, as pexpect keeps one buffer: what arrived after a
    /// match (in the same read) is where the next wait starts looking.
    matcher: Matcher,
    /// How far the board got since the last power-on.
    pub milestone: Milestone,
}

const POLL: Duration = Duration::from_millis(100);

impl Session {
    /// A session over an open connection.
    pub fn new(
        conn: Connection,
        log: LogWriter,
        cancel: Arc<AtomicBool>,
        markers: Markers,
    ) -> Session {
        Session {
            conn,
            log,
            cancel,
            partial: Vec::new(),
            lines: VecDeque::new(),
            collect_lines: false,
            markers,
            matcher: Matcher::new(Vec::new()),
            milestone: Milestone::PoweredOn,
        }
    }

    /// The connection command.
    pub fn command(&self) -> &str {
        self.conn.command()
    }

    /// Moves the milestone forward (never back, except through [`Session::power_cycled`]).
    pub fn reach(&mut self, m: Milestone) {
        if m > self.milestone {
            self.milestone = m;
            self.log.debug(&format!("milestone: {m}"));
        }
    }

    /// The board was powered on again: milestones start over and queued lines are dropped.
    pub fn power_cycled(&mut self) {
        self.milestone = Milestone::PoweredOn;
        self.lines.clear();
        self.matcher.clear();
    }

    /// Keeps complete lines for [`Session::next_line`] (the test shell) while on.
    pub fn collect_lines(&mut self, on: bool) {
        self.collect_lines = on;
        if !on {
            self.lines.clear();
            self.matcher.clear();
        }
    }

    /// Types `text` followed by a newline, with `delay` between characters.
    pub fn sendline(&mut self, text: &str, delay: Duration) -> crate::Result<()> {
        self.log.input(text);
        self.conn.send(&format!("{text}\n"), delay)
    }

    /// Types `text` as it is.
    pub fn send(&mut self, text: &str, delay: Duration) -> crate::Result<()> {
        self.conn.send(text, delay)
    }

    fn check_cancel(&self) -> Result<(), WaitError> {
        if self.cancel.load(Ordering::SeqCst) {
            Err(WaitError::Canceled)
        } else {
            Ok(())
        }
    }

    fn take(&mut self, until: Instant) -> Result<Option<Vec<u8>>, WaitError> {
        self.check_cancel()?;
        let step = (Instant::now() + POLL).min(until);
        match self.conn.read(step) {
            Chunk::Data(d) => {
                self.absorb(&d);
                Ok(Some(d))
            }
            Chunk::Idle => {
                if Instant::now() >= until {
                    Err(WaitError::Timeout)
                } else {
                    Ok(None)
                }
            }
            Chunk::Closed => {
                self.flush_partial();
                Err(WaitError::Closed)
            }
        }
    }

    /// Logs complete lines and moves milestones.
    fn absorb(&mut self, data: &[u8]) {
        for &b in data {
            if b == b'\n' {
                let line = std::mem::take(&mut self.partial);
                self.line_done(line);
            } else {
                self.partial.push(b);
                if self.partial.len() > 64 * 1024 {
                    let line = std::mem::take(&mut self.partial);
                    self.line_done(line);
                }
            }
        }
    }

    fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line_done(line);
        }
    }

    fn line_done(&mut self, raw: Vec<u8>) {
        let text = String::from_utf8_lossy(&raw);
        let line = text.trim_end_matches('\r').to_string();
        self.log.target(&line);
        if !self.markers.interrupt_prompt.is_empty()
            && line.contains(&self.markers.interrupt_prompt)
            && self.milestone > Milestone::CommandsSent
        {
            // A new U-Boot banner after the kernel started: the board reset.
            self.log
                .warning("the board restarted: U-Boot's autoboot prompt appeared again");
            self.milestone = Milestone::PoweredOn;
        }
        if !self.markers.final_message.is_empty() && line.contains(&self.markers.final_message) {
            self.reach(Milestone::StartingKernel);
        }
        if let Some(re) = &self.markers.kernel_start {
            if re.is_match(&line) {
                self.reach(Milestone::LinuxVersion);
            }
        }
        if self.collect_lines {
            self.lines.push_back(line);
        }
    }

    /// Waits for the first of `patterns`, until `until`.
    pub fn wait(&mut self, patterns: &[Pattern], until: Instant) -> Result<Hit, WaitError> {
        self.matcher.set_patterns(patterns.to_vec());
        let mut found = self.matcher.poll();
        while found.is_none() {
            if let Some(d) = self.take(until)? {
                found = self.matcher.feed(&d);
            }
        }
        let found = found.ok_or(WaitError::Closed)?;
        Ok(Hit {
            index: found.index,
            text: found.text,
        })
    }

    /// The next complete line (with [`Session::collect_lines`] on), until `until`.
    pub fn next_line(&mut self, until: Instant) -> Result<String, WaitError> {
        loop {
            if let Some(l) = self.lines.pop_front() {
                return Ok(l);
            }
            self.take(until)?;
        }
    }

    /// Reads until nothing has arrived for `quiet` (or `until` passes): stale prompts are
    /// consumed, so the next wait sees only what answers the next command.
    pub fn settle(&mut self, quiet: Duration, until: Instant) -> Result<(), WaitError> {
        loop {
            let step = (Instant::now() + quiet).min(until);
            self.check_cancel()?;
            match self.conn.read(step) {
                Chunk::Data(d) => self.absorb(&d),
                Chunk::Idle => {
                    self.matcher.clear();
                    return Ok(());
                }
                Chunk::Closed => {
                    self.flush_partial();
                    return Err(WaitError::Closed);
                }
            }
            if Instant::now() >= until {
                self.matcher.clear();
                return Ok(());
            }
        }
    }

    /// Reads and logs whatever arrives for `quiet` (used before closing, to keep the tail).
    pub fn drain(&mut self, quiet: Duration) {
        let until = Instant::now() + quiet;
        while self.take(until).is_ok() {}
        self.flush_partial();
    }

    /// Closes the connection command.
    pub fn close(&mut self) {
        self.flush_partial();
        self.conn.close();
    }
}
