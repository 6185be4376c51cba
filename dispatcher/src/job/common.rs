//! The keys every action block may carry (LAVA's `action()` schema): timeouts, retries,
//! namespaces, protocols.

use std::collections::BTreeMap;

use super::model::BlockCommon;
use super::schema::{At, Check, Unsupported};

/// The keys LAVA allows in every block that labboot reads or accepts.
pub const COMMON_KEYS: &[&str] = &[
    "namespace",
    "connection-namespace",
    "protocols",
    "role",
    "timeout",
    "timeouts",
    "failure_retry",
];

/// Block keys LAVA allows that labboot refuses.
pub const COMMON_UNSUPPORTED: &[Unsupported<'static>] = &[
    (
        "repeat",
        "a block runs once (use failure_retry to run it again when it fails)",
    ),
    (
        "failure_retry_interval",
        "retries start at once, there is no wait between them",
    ),
];

/// Namespace names LAVA keeps for itself.
const RESERVED_NAMESPACES: &[&str] = &["common", "docker-test-shell"];

/// Reads the common keys of the block at `at`, whose `- deploy:` line is `line`. The caller has
/// already checked the key names.
pub fn block_common(at: &At<'_>, line: usize) -> Check<BlockCommon> {
    let mut common = BlockCommon {
        line,
        ..BlockCommon::default()
    };
    if let Some(t) = at.opt("timeout") {
        common.timeout = Some(t.timeout()?);
    }
    if let Some(ts) = at.opt("timeouts") {
        let mut map = BTreeMap::new();
        for (name, t) in ts.map()? {
            map.insert(name, t.timeout()?);
        }
        common.timeouts = map;
    }
    if let Some(r) = at.opt("failure_retry") {
        let n = r.int(1, i64::from(u32::MAX))?;
        common.failure_retry = u32::try_from(n).ok();
    }
    if let Some(ns) = at.opt("namespace") {
        let name = ns.str()?;
        if RESERVED_NAMESPACES.contains(&name) {
            return Err(ns.fail(format!(
                "'{name}' is a reserved namespace name ({})",
                RESERVED_NAMESPACES.join(", ")
            )));
        }
        common.namespace = Some(name.to_string());
    }
    if let Some(ns) = at.opt("connection-namespace") {
        common.connection_namespace = Some(ns.str()?.to_string());
    }
    if let Some(p) = at.opt("protocols") {
        common.protocols = Some(p.node.to_serde());
    }
    if let Some(role) = at.opt("role") {
        role.strings(false)?;
    }
    Ok(common)
}

/// `allowed` plus the common keys.
pub fn with_common<'s>(allowed: &[&'s str]) -> Vec<&'s str> {
    let mut keys: Vec<&str> = COMMON_KEYS.to_vec();
    keys.extend_from_slice(allowed);
    keys
}

/// `unsupported` plus the common ones.
pub fn with_common_unsupported<'s>(unsupported: &[Unsupported<'s>]) -> Vec<Unsupported<'s>> {
    let mut keys: Vec<Unsupported<'s>> = COMMON_UNSUPPORTED.to_vec();
    keys.extend_from_slice(unsupported);
    keys
}
