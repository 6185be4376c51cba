//! Reading one server's section (`tftp:`, `nbd:`, `nfs:` …) of a labboot YAML config file.
//!
//! Every server command takes `--config FILE`; errors name the file and the section, and the
//! section's own serde type (with `deny_unknown_fields`) names the bad field.

use std::path::Path;

use anyhow::Context;
use serde::de::DeserializeOwned;

/// Deserializes section `name` of the YAML file at `path`.
pub fn read_section<T: DeserializeOwned>(path: &Path, name: &str) -> anyhow::Result<T> {
    optional_section(path, &read_doc(path)?, name)?
        .with_context(|| format!("{}: no `{name}:` section", path.display()))
}

/// The whole YAML file at `path`, for a command that reads several sections of it.
pub fn read_doc(path: &Path) -> anyhow::Result<serde_yaml_ng::Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read config file {}", path.display()))?;
    serde_yaml_ng::from_str(&text).with_context(|| format!("{}: not valid YAML", path.display()))
}

/// Section `name` of `doc` (read from `path`), deserialized, if the file has it.
pub fn optional_section<T: DeserializeOwned>(
    path: &Path,
    doc: &serde_yaml_ng::Value,
    name: &str,
) -> anyhow::Result<Option<T>> {
    doc.get(name)
        .map(|section| {
            serde_yaml_ng::from_value(section.clone())
                .with_context(|| format!("{}: in section `{name}`", path.display()))
        })
        .transpose()
}
