//! Turning the file name a client sent into a path that cannot leave the served tree.
//!
//! Every request goes through [`RequestPath::parse`] before any resolver sees it, so a resolver
//! (static or virtual) only ever gets plain relative components. The rules:
//!
//! * one leading `/` is dropped, so `/pxelinux.0` means `pxelinux.0` under the root — the same as
//!   `tftpd-hpa -s` and dnsmasq, and what many PXE and U-Boot setups send. Anything that is still
//!   absolute after that (`//etc/passwd`) is refused;
//! * `..` components, NUL bytes, backslashes (a Windows separator some clients send to climb out)
//!   and control characters are refused;
//! * empty and `.` components are dropped (`a//./b` is `a/b`).
//!
//! Refusals are [`TftpError::access_violation`] (code 2). Symlinks are a property of the file system,
//! not of the name, so [`super::resolver::DirResolver`] checks them on the opened file.

use std::fmt;
use std::path::PathBuf;

use super::error::TftpError;

/// A confined, normalised relative path such as `labboot/b1/boot.scr`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestPath {
    normalized: String,
}

impl RequestPath {
    /// Confines a client-supplied name; see the module doc for the rules.
    pub fn parse(name: &str) -> Result<RequestPath, TftpError> {
        if name.contains('\0') {
            return Err(TftpError::access_violation("file name contains a NUL byte"));
        }
        if name.contains('\\') {
            return Err(TftpError::access_violation(
                "file name contains a backslash",
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(TftpError::access_violation(
                "file name contains a control character",
            ));
        }
        let rel = name.strip_prefix('/').unwrap_or(name);
        if rel.starts_with('/') {
            return Err(TftpError::access_violation("absolute paths are not served"));
        }
        let mut parts = Vec::new();
        for part in rel.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    return Err(TftpError::access_violation(
                        "file name contains a \"..\" component",
                    ))
                }
                p => parts.push(p),
            }
        }
        if parts.is_empty() {
            return Err(TftpError::not_found("file name names no file"));
        }
        Ok(RequestPath {
            normalized: parts.join("/"),
        })
    }

    /// The normalised path, components joined by `/`.
    pub fn as_str(&self) -> &str {
        &self.normalized
    }

    /// The path as messages and logs show it: cut after
    /// [`NAME_SHOWN_CHARS`](super::error::NAME_SHOWN_CHARS) characters, with "…".
    pub fn shown(&self) -> std::borrow::Cow<'_, str> {
        super::error::shown(&self.normalized)
    }

    /// The components, in order.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.normalized.split('/')
    }

    /// The path relative to a root directory.
    pub fn to_relative_path(&self) -> PathBuf {
        self.components().collect()
    }
}

impl fmt::Display for RequestPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.normalized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tftp::packet::ErrorCode;

    #[test]
    fn plain_and_leading_slash_names_are_relative() {
        assert_eq!(RequestPath::parse("a/b.bin").unwrap().as_str(), "a/b.bin");
        assert_eq!(
            RequestPath::parse("/pxelinux.0").unwrap().as_str(),
            "pxelinux.0"
        );
        assert_eq!(RequestPath::parse("a//./b").unwrap().as_str(), "a/b");
        let p = RequestPath::parse("labboot/b1/boot.scr").unwrap();
        assert_eq!(
            p.components().collect::<Vec<_>>(),
            ["labboot", "b1", "boot.scr"]
        );
        assert_eq!(p.to_relative_path(), PathBuf::from("labboot/b1/boot.scr"));
    }

    #[test]
    fn escapes_are_access_violations() {
        for bad in [
            "../etc/passwd",
            "a/../../etc/passwd",
            "a/..",
            "//etc/passwd",
            "..\\etc\\passwd",
            "a\\b",
            "a\0b",
            "a\nb",
        ] {
            let err = RequestPath::parse(bad).expect_err(bad);
            assert_eq!(err.code, ErrorCode::AccessViolation, "{bad:?}: {err}");
        }
    }

    #[test]
    fn names_without_a_file_are_not_found() {
        for bad in ["", "/", ".", "./"] {
            let err = RequestPath::parse(bad).expect_err(bad);
            assert_eq!(err.code, ErrorCode::FileNotFound, "{bad:?}");
        }
    }

    #[test]
    fn dots_inside_names_are_fine() {
        assert_eq!(RequestPath::parse("a..b/..c").unwrap().as_str(), "a..b/..c");
    }
}
