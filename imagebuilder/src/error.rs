//! The crate's one error type.
//!
//! Every variant carries what a user needs to fix the input: the recipe field, the package, the
//! file or the step. The CLI prints it on one line, so messages never end with a newline.

use std::path::PathBuf;

/// Everything that can stop a build.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The recipe is not valid YAML or not a recipe (`file: message`).
    #[error("{file}: {message}")]
    RecipeSyntax {
        /// The recipe's file name.
        file: String,
        /// What serde reported, with line and column.
        message: String,
    },
    /// A recipe field has a bad value (`file: field: message`).
    #[error("{file}: {field}: {message}")]
    RecipeField {
        /// The recipe's file name.
        file: String,
        /// The field, e.g. `packages[2]`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// apt could not answer or fetch.
    #[error("apt: {0}")]
    Apt(String),
    /// A package is unusable (bad hash, bad archive, missing payload).
    #[error("package {package}: {message}")]
    Package {
        /// Package name.
        package: String,
        /// What is wrong.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A step of the build failed for a reason that is not an I/O error.
    #[error("{step}: {message}")]
    Step {
        /// The build step, e.g. `initrd` or `squashfs`.
        step: &'static str,
        /// What went wrong.
        message: String,
    },
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Step`].
    pub fn step(step: &'static str, message: impl Into<String>) -> Error {
        Error::Step {
            step,
            message: message.into(),
        }
    }

    /// An [`Error::Package`].
    pub fn package(package: &str, message: impl Into<String>) -> Error {
        Error::Package {
            package: package.to_string(),
            message: message.into(),
        }
    }
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
