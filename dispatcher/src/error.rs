//! The job error classes, as LAVA names them, and the one error type every action returns.
//!
//! A job ends *complete* or *incomplete*; an incomplete job carries exactly one of these
//! classes, which tells a lab admin where to look: the lab (InfrastructureError), the job
//! file or its artefacts (JobError), the software under test (TestError), the device or lab
//! configuration (ConfigurationError), labboot itself (LAVABug) or a person (Canceled).

use std::fmt;

/// LAVA's error classes (`error_type` in LAVA's results).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ErrorKind {
    /// The lab failed: a server, the console, power control, a download host.
    InfrastructureError,
    /// The job is wrong: bad YAML, an artefact that does not exist or fails its checksum.
    JobError,
    /// The software under test failed: U-Boot errors, a kernel that never starts, a test timeout.
    TestError,
    /// The device or lab configuration is wrong.
    ConfigurationError,
    /// A defect in labboot.
    LAVABug,
    /// SIGINT or SIGTERM ended the job.
    Canceled,
}

impl ErrorKind {
    /// The class name as LAVA writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InfrastructureError => "InfrastructureError",
            ErrorKind::JobError => "JobError",
            ErrorKind::TestError => "TestError",
            ErrorKind::ConfigurationError => "ConfigurationError",
            ErrorKind::LAVABug => "LAVABug",
            ErrorKind::Canceled => "Canceled",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure of a job or of one of its actions: its class and a one-line message that names
/// the file, key, action or URL concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The class.
    pub kind: ErrorKind,
    /// One line saying what failed and where.
    pub message: String,
}

impl Error {
    /// An error of class `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }
    /// An InfrastructureError.
    pub fn infra(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InfrastructureError, message)
    }
    /// A JobError.
    pub fn job(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::JobError, message)
    }
    /// A TestError.
    pub fn test(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::TestError, message)
    }
    /// A ConfigurationError.
    pub fn config(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::ConfigurationError, message)
    }
    /// A LAVABug: labboot's own defect.
    pub fn bug(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::LAVABug, message)
    }
    /// Canceled by a signal.
    pub fn canceled(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Canceled, message)
    }
    /// The same error with `context: ` put in front of its message.
    pub fn context(self, context: impl fmt::Display) -> Error {
        Error {
            kind: self.kind,
            message: format!("{context}: {}", self.message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {}

/// The dispatcher's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
