//! Why a call failed, before it is given its context, and PostgreSQL's errors as one line.

use std::error::Error as _;

use super::super::StoreError;

/// Why a call failed, before [`Fail::context`] says what was being done.
#[derive(Debug)]
pub(crate) enum Fail {
    /// PostgreSQL's (or the client's) error.
    Sql(::postgres::Error),
    /// The call was refused (the state did not allow it).
    Refused(String),
    /// A row that does not map to the store's types.
    BadRow(String),
    /// No connection could be made.
    Connect(String),
    /// The connection (or its thread) went away at a moment that leaves the outcome unknown.
    Lost(String),
}

impl From<::postgres::Error> for Fail {
    fn from(e: ::postgres::Error) -> Fail {
        Fail::Sql(e)
    }
}

impl Fail {
    /// The store error of a call that was doing `what` on the database `url` (password removed).
    pub(crate) fn context(self, what: &str, url: &str) -> StoreError {
        match self {
            Fail::Sql(e) => StoreError(format!("{what}: {}", error_text(&e))),
            Fail::Refused(message) | Fail::Lost(message) => {
                StoreError(format!("{what}: {message}"))
            }
            Fail::BadRow(message) => StoreError(format!("{what}: bad row: {message}")),
            Fail::Connect(message) => {
                StoreError(format!("{what}: cannot connect to {url}: {message}"))
            }
        }
    }

    /// PostgreSQL's SQLSTATE, if the server answered with an error.
    pub(crate) fn code(&self) -> Option<&::postgres::error::SqlState> {
        match self {
            Fail::Sql(e) => e.code(),
            _ => None,
        }
    }
}

/// A PostgreSQL error on one line: the server's message with its detail and SQLSTATE, or the
/// client's error with its causes.
pub(crate) fn error_text(e: &::postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = db.message().to_string();
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({})", one_line(detail)));
        }
        text.push_str(&format!(" [SQLSTATE {}]", db.code().code()));
        return text;
    }
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {}", one_line(&cause.to_string())));
        source = cause.source();
    }
    text
}

/// `text` with its line breaks made spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
