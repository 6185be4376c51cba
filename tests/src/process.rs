//! A server process under test (usually `labboot dhcp` or `labboot tftp`, possibly inside a
//! namespace): started, awaited until it logs that it is ready, its stderr kept line by line,
//! and killed on drop. Fails fast, with everything it printed, when it exits early. And
//! [`run_ok`], for the commands a test runs to completion.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use regex::Regex;

/// Runs a command to completion and panics with everything it printed if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    closed: bool,
}

/// A running server process; killed (SIGKILL) when dropped.
pub struct ServerProcess {
    child: Child,
    name: String,
    log: Arc<(Mutex<Lines>, Condvar)>,
}

impl ServerProcess {
    /// Spawns `cmd` (its stderr captured) and waits until a line of stderr matches `ready`.
    pub fn start(
        name: &str,
        mut cmd: Command,
        ready: &str,
        timeout: Duration,
    ) -> anyhow::Result<ServerProcess> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {name}: {cmd:?}"))?;
        let stderr = child.stderr.take().context("stderr is piped")?;
        let log = Arc::new((Mutex::new(Lines::default()), Condvar::new()));
        let for_thread = Arc::clone(&log);
        std::thread::spawn(move || {
            let (lock, cond) = &*for_thread;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lock.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .lines
                    .push(line);
                cond.notify_all();
            }
            lock.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
            cond.notify_all();
        });
        let mut process = ServerProcess {
            child,
            name: name.to_string(),
            log,
        };
        process.wait_for_line(ready, timeout)?;
        Ok(process)
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a line of stderr (printed at any time so far or later) matches `pattern`.
    pub fn wait_for_line(&mut self, pattern: &str, timeout: Duration) -> anyhow::Result<String> {
        let re = Regex::new(pattern).with_context(|| format!("bad pattern {pattern:?}"))?;
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.log;
        let mut state = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(line) = state.lines.iter().find(|l| re.is_match(l)) {
                return Ok(line.clone());
            }
            let now = Instant::now();
            if state.closed || now >= deadline {
                let status = self.child.try_wait().ok().flatten();
                bail!(
                    "{} {} before printing /{pattern}/ (exit: {status:?}); its stderr:\n{}",
                    self.name,
                    if state.closed { "stopped" } else { "timed out" },
                    state.lines.join("\n")
                );
            }
            state = cond
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Every stderr line so far.
    pub fn lines(&self) -> Vec<String> {
        self.log
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lines
            .clone()
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit; its status, or `None`
    /// if it was still running (it is then killed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on the pid of a child this struct owns and has not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        None
    }

    /// Kills the process with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
