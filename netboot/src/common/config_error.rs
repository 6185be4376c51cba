//! The one error type of the servers' configurations: the section and field it is about, as
//! spelled in YAML, and what is wrong (`nfs.exports[1].dir: /srv/x: No such file or directory`).

/// A configuration value that is wrong; the message names the section and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{section}.{field}: {problem}")]
pub struct ConfigError {
    /// The server's section: `dhcp`, `tftp`, `nbd` or `nfs`.
    pub section: &'static str,
    /// The field, with its list indexes (`exports[2].path`).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    /// The error of `field` in `section`.
    pub fn new(
        section: &'static str,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            section,
            field: field.into(),
            problem: problem.into(),
        }
    }
}
