//! Boot milestones: the last one reached names the culprit of a timeout.
//!
//! A kernel that hangs after U-Boot printed "Starting kernel" is the kernel's fault, not the
//! bootloader commands'; a board that never reaches "Hit any key" is the lab's. The console
//! session moves the milestone forward as it sees the markers, whichever action is waiting.

use std::fmt;

/// How far the board got, in boot order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Milestone {
    /// Nothing seen yet since the last power-on.
    PoweredOn,
    /// U-Boot's autoboot was interrupted.
    Interrupted,
    /// The bootloader commands were sent (or, network-driven, U-Boot fetched its script).
    CommandsSent,
    /// U-Boot printed its final message ("Starting kernel").
    StartingKernel,
    /// The kernel printed its banner ("Linux version").
    LinuxVersion,
    /// A login prompt appeared.
    LoginPrompt,
    /// The shell prompt appeared.
    ShellPrompt,
    /// The test runner printed its first signal.
    TestRunnerStarted,
}

impl Milestone {
    /// The words logs and errors use.
    pub fn as_str(self) -> &'static str {
        match self {
            Milestone::PoweredOn => "power on",
            Milestone::Interrupted => "U-Boot interrupted",
            Milestone::CommandsSent => "bootloader commands sent",
            Milestone::StartingKernel => "Starting kernel",
            Milestone::LinuxVersion => "Linux version",
            Milestone::LoginPrompt => "login prompt",
            Milestone::ShellPrompt => "shell prompt",
            Milestone::TestRunnerStarted => "test runner started",
        }
    }
}

impl fmt::Display for Milestone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
