//! Reading one server's section (`tftp:`, `nbd:`, `nfs:` …) of a labboot YAML config file.
//!
//! Every server command takes `--config FILE`; errors name the file and the section, and the
//! section's own serde type (with `deny_unknown_fields`) names the bad field.

use std::path::Path;

use anyhow::Context;
use serde::de::DeserializeOwned;

/// Deserializes section `name` of the YAML file at `path`.
pub fn read_section<T: DeserializeOwned>(path: &Path, name: &str) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read config file {}", path.display()))?;
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{}: not valid YAML", path.display()))?;
    let section = doc
        .get(name)
        .with_context(|| format!("{}: no `{name}:` section", path.display()))?;
    serde_yaml_ng::from_value(section.clone())
        .with_context(|| format!("{}: in section `{name}`", path.display()))
}
