//! The job's top-level keys other than `actions`: name, device type, timeouts, visibility,
//! priority, context, metadata, protocols (LAVA's `job()` schema).

use std::collections::BTreeMap;

use super::model::JobTimeouts;
use super::schema::{At, Check, Unsupported};

/// Top-level keys labboot reads or accepts.
pub const JOB_KEYS: &[&str] = &[
    "job_name",
    "device_type",
    "device",
    "worker",
    "timeouts",
    "visibility",
    "context",
    "metadata",
    "priority",
    "tags",
    "protocols",
    "notify",
    "reboot_to_fastboot",
    "actions",
];

/// Top-level keys LAVA accepts that labboot refuses.
pub const JOB_UNSUPPORTED: &[Unsupported<'static>] = &[
    ("secrets", "no secrets are passed to the test shell"),
    ("environment", "no environment is passed to the test shell"),
];

/// The context variables LAVA accepts (its `CONTEXT_VARIABLES`).
const LAVA_CONTEXT: &[&str] = &[
    "arch",
    "boot_console",
    "boot_root",
    "cpu",
    "extra_options",
    "guestfs_driveid",
    "guestfs_interface",
    "guestfs_size",
    "machine",
    "memory",
    "model",
    "monitor",
    "netdevice",
    "no_kvm",
    "no_network",
    "serial",
    "vga",
    "booti_dtb_addr",
    "booti_kernel_addr",
    "booti_ramdisk_addr",
    "bootm_dtb_addr",
    "bootm_kernel_addr",
    "bootm_ramdisk_addr",
    "bootz_dtb_addr",
    "bootz_kernel_addr",
    "bootz_ramdisk_addr",
    "deploy_character_delay",
    "boot_character_delay",
    "boot_retry",
    "bootloader_prompt",
    "console_device",
    "custom_kernel_args",
    "extra_kernel_args",
    "extra_nfsroot_args",
    "failure_retry",
    "kernel_loglevel",
    "kernel_start_message",
    "lava_test_results_dir",
    "menu_interrupt_prompt",
    "mustang_menu_list",
    "test_character_delay",
    "tftp_mac_address",
    "uboot_extra_error_message",
    "uboot_needs_interrupt",
    "uboot_altbank",
];

/// labboot's own context variables (LAVA's `EXTRA_CONTEXT_VARIABLES` setting, in effect).
pub const LABBOOT_CONTEXT: &[&str] = &["labboot_boot"];

/// The values `labboot_boot` takes.
pub const BOOT_STYLES: &[&str] = &["serial", "network"];

/// `timeouts:` (job is required).
pub fn timeouts(at: &At<'_>) -> Check<JobTimeouts> {
    at.keys(
        &[
            "job",
            "action",
            "actions",
            "connection",
            "connections",
            "queue",
        ],
        &[],
    )?;
    let mut t = JobTimeouts {
        job: at.req("job")?.timeout()?,
        ..JobTimeouts::default()
    };
    if let Some(a) = at.opt("action") {
        t.action = Some(a.timeout()?);
    }
    if let Some(c) = at.opt("connection") {
        t.connection = Some(c.timeout()?);
    }
    if let Some(q) = at.opt("queue") {
        q.timeout()?;
    }
    t.actions = named_timeouts(at.opt("actions"))?;
    t.connections = named_timeouts(at.opt("connections"))?;
    Ok(t)
}

/// `{name: timeout}`.
fn named_timeouts(at: Option<At<'_>>) -> Check<BTreeMap<String, std::time::Duration>> {
    let mut map = BTreeMap::new();
    if let Some(at) = at {
        for (name, t) in at.map()? {
            map.insert(name, t.timeout()?);
        }
    }
    Ok(map)
}

/// `visibility:` public, personal or `{group: [names]}`.
pub fn visibility(at: &At<'_>) -> Check<serde_yaml_ng::Value> {
    if at.node.as_map().is_some() {
        at.keys(&["group"], &[])?;
        at.req("group")?.strings(false)?;
    } else {
        at.one_of(&["public", "personal"])
            .map_err(|_| at.fail("must be public, personal or {group: [names]}"))?;
    }
    Ok(at.node.to_serde())
}

/// `priority:` high, medium, low or 0–100, as written.
pub fn priority(at: &At<'_>) -> Check<String> {
    if at.node.as_i64().is_some() {
        return Ok(at.int(0, 100)?.to_string());
    }
    at.one_of(&["high", "medium", "low"])
        .map(str::to_string)
        .map_err(|_| {
            at.fail(format!(
                "must be high, medium, low or 0 to 100 (got {})",
                at.shown()
            ))
        })
}

/// `context:` only LAVA's context variables (and labboot's), each an integer, a string or a
/// list of them.
pub fn context(at: &At<'_>) -> Check<serde_yaml_ng::Mapping> {
    for (name, value) in at.map()? {
        if !LAVA_CONTEXT.contains(&name.as_str()) && !LABBOOT_CONTEXT.contains(&name.as_str()) {
            return Err(value.fail(
                "unknown context variable (LAVA's context variables and labboot_boot are accepted)",
            ));
        }
        if name == "labboot_boot" {
            value.one_of(BOOT_STYLES)?;
            continue;
        }
        let scalar_ok = |n: &crate::yaml::Node| {
            matches!(
                n.value,
                crate::yaml::Value::Int(_)
                    | crate::yaml::Value::Str(_)
                    | crate::yaml::Value::Bool(_)
            )
        };
        let ok = match value.node.as_seq() {
            Some(items) => items.iter().all(scalar_ok),
            None => scalar_ok(value.node),
        };
        if !ok {
            return Err(value.fail(format!(
                "must be an integer, a string or a list of them (got {})",
                value.node.kind()
            )));
        }
    }
    Ok(mapping(at))
}

/// `metadata:` string keys, any values.
pub fn metadata(at: &At<'_>) -> Check<serde_yaml_ng::Mapping> {
    at.map()?;
    Ok(mapping(at))
}

/// `protocols:` lava-xnbd is accepted; lava-multinode is not supported.
pub fn protocols(at: &At<'_>) -> Check<serde_yaml_ng::Mapping> {
    at.keys(
        &["lava-xnbd"],
        &[("lava-multinode", "a labboot job runs on one board")],
    )?;
    if let Some(x) = at.opt("lava-xnbd") {
        x.keys(&["port", "timeout"], &[])?;
        let port = x.req("port")?;
        if port.node.as_i64().is_none() {
            port.one_of(&["auto"])
                .map_err(|_| port.fail("must be auto or a port number"))?;
        }
        if let Some(t) = x.opt("timeout") {
            t.timeout()?;
        }
    }
    Ok(mapping(at))
}

/// `tags:` a list of strings.
pub fn tags(at: &At<'_>) -> Check<()> {
    at.strings(false).map(|_| ())
}

/// A mapping node as serde's mapping (callers have checked it is one).
fn mapping(at: &At<'_>) -> serde_yaml_ng::Mapping {
    match at.node.to_serde() {
        serde_yaml_ng::Value::Mapping(m) => m,
        _ => serde_yaml_ng::Mapping::new(),
    }
}
