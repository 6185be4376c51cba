//! The job's exchanges with the agent: queue a work item, wait for its report, give up on time
//! or cancel.

use super::*;

/// The job's exchanges with the agent.
pub(super) struct Session<'a> {
    pub(super) link: &'a dyn AgentLink,
    pub(super) cancel: &'a AtomicBool,
    pub(super) log: &'a LogWriter,
    /// A step was given up before its report: its work must not run later.
    pub(super) abandoned: bool,
}

impl Session<'_> {
    /// Queues `kind` and waits for its report until `deadline` or the job's cancel.
    pub(super) fn step(
        &mut self,
        what: &str,
        kind: WorkKind,
        deadline: Instant,
    ) -> dispatcher::Result<Work> {
        self.wait_for(what, kind, deadline, true)
    }

    pub(super) fn wait_for(
        &mut self,
        what: &str,
        kind: WorkKind,
        deadline: Instant,
        cancelable: bool,
    ) -> dispatcher::Result<Work> {
        let board = self.link.board().to_string();
        if cancelable && self.cancel.load(Ordering::SeqCst) {
            return Err(Error::canceled(format!(
                "the job was canceled before {what}"
            )));
        }
        let queued = Instant::now();
        let id = self.link.queue(&kind).map_err(|e| {
            Error::infra(format!("{what}: cannot queue work for board {board}: {e}"))
        })?;
        self.log.debug(&format!(
            "{what}: work {id} queued for board {board}'s agent"
        ));
        loop {
            match self.link.work(id) {
                Ok(Some(w)) if w.done.is_some() => return Ok(w),
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(Error::infra(format!(
                        "{what}: work {id} of board {board} was dropped before its report (did the board restart?)"
                    )))
                }
                Err(e) => {
                    self.abandoned = true;
                    return Err(Error::infra(format!("{what}: work {id}: {e}")));
                }
            }
            if cancelable && self.cancel.load(Ordering::SeqCst) {
                self.abandoned = true;
                return Err(Error::canceled(format!(
                    "the job was canceled while board {board}'s agent ran {what} (work {id})"
                )));
            }
            let now = Instant::now();
            if now >= deadline {
                self.abandoned = true;
                let taken = match self.link.work(id) {
                    Ok(Some(w)) if w.taken.is_some() => "it took the work and is still running it",
                    _ => "it never took the work",
                };
                return Err(Error::infra(format!(
                    "{what}: board {board}'s agent did not report work {id} within {} s ({taken})",
                    ceil_secs(deadline.saturating_duration_since(queued))
                )));
            }
            self.link
                .wait(POLL_SLICE.min(deadline.saturating_duration_since(now)));
        }
    }

    /// Removes the overlay and the tarball from the board (best effort, short deadline).
    pub(super) fn cleanup(&mut self, job: JobId) {
        if self.abandoned {
            // Steps given up on must not run when the agent comes back.
            self.link.drop_pending();
        }
        let command = format!("rm -rf /lava-{job} {}", board_tarball(job));
        let deadline = after(Instant::now(), CLEANUP_TIMEOUT);
        match self.wait_for(
            "cleaning up",
            WorkKind::Run {
                command: command.clone(),
            },
            deadline,
            false,
        ) {
            Ok(w) if w.exit == Some(0) => self
                .log
                .info(&format!("board {}: '{command}' done", self.link.board())),
            Ok(w) => self.log.warning(&format!(
                "board {}: '{command}' failed (exit {}): {}",
                self.link.board(),
                exit_text(w.exit),
                output_text(w.stderr.as_deref())
            )),
            Err(e) => self.log.warning(&format!("{} (left queued)", e.message)),
        }
    }
}
