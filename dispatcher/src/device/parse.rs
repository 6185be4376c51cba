//! A rendered device YAML turned into [`Device`]: the keys LAVA's dispatcher reads for a U-Boot
//! board (console and power commands, constants, the u-boot method and its stanzas, load
//! addresses, timeouts) and labboot's own `labboot:` section.
//!
//! LAVA's device schema allows extra keys everywhere (device-type templates carry keys for many
//! boot methods), so unknown keys are ignored here; the sections LAVA requires (`constants`,
//! `parameters`, `actions.deploy.methods`, `actions.boot.methods`, `timeouts.actions`,
//! `timeouts.connections`) must be there, and the keys labboot reads must have the right type.
//! Constants a device leaves out take the defaults of LAVA's base template.

use std::collections::BTreeMap;
use std::time::Duration;

use super::model::{BootStyle, Constants, Device, LabbootDevice, LoadAddresses, UbootMethod};
use crate::job::schema::{At, Check};
use crate::timeout;
use crate::yaml::{self, Problem};

/// The `parameters` keys that give load addresses (boot commands and kernel types).
const ADDRESS_KEYS: &[&str] = &["bootz", "booti", "bootm", "zimage", "image", "uimage"];

/// Parses the rendered device YAML `text`. `file` names it in messages; `default_type` is the
/// device type to use when the YAML leaves it empty (the extended template's name).
pub fn check_device(file: &str, text: &str, default_type: &str) -> Check<Device> {
    let root = yaml::parse(text)?;
    let at = At::root(&root);
    if root.as_map().is_none() {
        return Err(Problem::new(
            root.line,
            "",
            format!("a device is a mapping, got {}", root.kind()),
        ));
    }
    let mut device = Device {
        file: file.to_string(),
        device_type: device_type(&at, default_type)?,
        hostname: opt_text(&at, "hostname")?.unwrap_or_default(),
        connection_command: None,
        power_on_command: None,
        power_off_command: None,
        hard_reset_command: None,
        boot_character_delay: Duration::ZERO,
        constants: constants(&at.req("constants")?)?,
        uboot: None,
        deploy_methods: Vec::new(),
        mkimage_arch: None,
        add_header: None,
        load_addresses: load_addresses(&at.req("parameters")?)?,
        action_timeouts: BTreeMap::new(),
        connection_timeouts: BTreeMap::new(),
        labboot: LabbootDevice::default(),
    };
    if let Some(c) = at.opt("commands").filter(|c| !c.node.is_null()) {
        commands(&c, &mut device)?;
    }
    if let Some(d) = at.opt("character_delays").filter(|d| !d.node.is_null()) {
        d.map()?;
        if let Some(boot) = d.opt("boot") {
            let ms = boot.int(0, i64::MAX)?;
            device.boot_character_delay = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        }
    }
    actions(&at.req("actions")?, &mut device)?;
    let timeouts = at.req("timeouts")?;
    device.action_timeouts = named_timeouts(&timeouts.req("actions")?)?;
    device.connection_timeouts = named_timeouts(&timeouts.req("connections")?)?;
    if let Some(l) = at.opt("labboot") {
        device.labboot = labboot(&l)?;
    }
    Ok(device)
}

/// `device_type`, else LAVA's `devicetype`, else `default_type`.
fn device_type(at: &At<'_>, default_type: &str) -> Check<String> {
    for key in ["device_type", "devicetype"] {
        if let Some(t) = opt_text(at, key)? {
            if !t.is_empty() {
                return Ok(t);
            }
        }
    }
    Ok(default_type.to_string())
}

/// An optional string (or null, read as absent).
fn opt_text(at: &At<'_>, key: &str) -> Check<Option<String>> {
    match at.opt(key) {
        Some(v) if v.node.is_null() => Ok(None),
        Some(v) => Ok(Some(v.str()?.to_string())),
        None => Ok(None),
    }
}

/// A string or list of commands as one shell command (a list runs in order, stopping at the
/// first that fails, as LAVA runs it).
fn command_line(at: &At<'_>) -> Check<String> {
    Ok(at.str_or_list(false)?.join(" && "))
}

/// `commands:` console and power control.
fn commands(at: &At<'_>, device: &mut Device) -> Check<()> {
    at.map()?;
    if let Some(c) = at.opt("connect") {
        device.connection_command = Some(c.str()?.to_string());
    } else if let Some(list) = at.opt("connections") {
        let mut first = None;
        let mut primary = None;
        for (_, conn) in list.map()? {
            let command = conn.req("connect")?.str()?.to_string();
            let tags = match conn.opt("tags") {
                Some(t) => t.strings(false)?,
                None => Vec::new(),
            };
            if primary.is_none() && tags.iter().any(|t| t == "primary") {
                primary = Some(command.clone());
            }
            first.get_or_insert(command);
        }
        device.connection_command = primary.or(first);
    }
    let power = [
        ("power_on", &mut device.power_on_command),
        ("power_off", &mut device.power_off_command),
        ("hard_reset", &mut device.hard_reset_command),
    ];
    for (key, slot) in power {
        if let Some(c) = at.opt(key) {
            *slot = Some(command_line(&c)?);
        }
    }
    Ok(())
}

/// `constants:` (defaults: LAVA's base template).
fn constants(at: &At<'_>) -> Check<Constants> {
    at.map()?;
    let text = |at: &At<'_>, key: &str, default: &str| -> Check<String> {
        Ok(opt_text(at, key)?.unwrap_or_else(|| default.to_string()))
    };
    let mut c = Constants {
        kernel_start_message: text(at, "kernel-start-message", "Linux version [0-9]")?,
        default_shell_prompt: text(at, "default-shell-prompt", "lava-test: # ")?,
        shutdown_message: text(
            at,
            "shutdown-message",
            "The system is going down for reboot NOW",
        )?,
        failure_retry: 1,
        ..Constants::default()
    };
    if let Some(r) = at.opt("failure_retry") {
        c.failure_retry = u32::try_from(r.int(0, i64::from(u32::MAX))?).unwrap_or(1);
    }
    match at.opt("posix") {
        Some(posix) => {
            posix.map()?;
            c.lava_test_results_dir = text(&posix, "lava_test_results_dir", "/lava-%s")?;
            c.lava_test_sh_cmd = text(&posix, "lava_test_sh_cmd", "/bin/sh")?;
        }
        None => {
            c.lava_test_results_dir = "/lava-%s".to_string();
            c.lava_test_sh_cmd = "/bin/sh".to_string();
        }
    }
    let uboot = at.opt("u-boot");
    let get = |key: &str| uboot.as_ref().and_then(|u| u.opt(key));
    if let Some(u) = &uboot {
        u.map()?;
    }
    c.interrupt_prompt = match get("interrupt-prompt") {
        Some(v) => v.str()?.to_string(),
        None => "Hit any key to stop autoboot".to_string(),
    };
    c.interrupt_character = match get("interrupt-character") {
        Some(v) => v.str()?.to_string(),
        None => " ".to_string(),
    };
    c.interrupt_newline = match get("interrupt-newline") {
        Some(v) => v.bool()?,
        None => true,
    };
    c.final_message = match get("final-message") {
        Some(v) => v.str()?.to_string(),
        None => "Starting kernel".to_string(),
    };
    if let Some(v) = get("interrupt_ctrl_list") {
        c.interrupt_ctrl_list = v.strings(false)?;
    }
    if let Some(v) = get("error-messages") {
        c.error_messages = v.strings(false)?;
    }
    Ok(c)
}

/// `parameters:` load addresses by boot command and kernel type.
fn load_addresses(at: &At<'_>) -> Check<BTreeMap<String, LoadAddresses>> {
    let mut out = BTreeMap::new();
    if at.node.is_null() {
        return Ok(out);
    }
    at.map()?;
    for key in ADDRESS_KEYS {
        let Some(a) = at.opt(key) else { continue };
        a.map()?;
        let address = |name: &str| -> Check<String> {
            let v = a.req(name)?;
            v.str().map(str::to_string).map_err(|_| {
                v.fail(format!(
                    "must be a quoted string such as '0x82000000' (got {})",
                    v.node.kind()
                ))
            })
        };
        out.insert(
            (*key).to_string(),
            LoadAddresses {
                kernel: address("kernel")?,
                ramdisk: address("ramdisk")?,
                dtb: address("dtb")?,
            },
        );
    }
    Ok(out)
}

/// `actions:` deploy methods and parameters, the u-boot boot method.
fn actions(at: &At<'_>, device: &mut Device) -> Check<()> {
    let deploy = at.req("deploy")?;
    let methods = deploy.req("methods")?;
    if !methods.node.is_null() {
        device.deploy_methods = methods.map()?.into_iter().map(|(name, _)| name).collect();
    }
    if let Some(p) = deploy.opt("parameters") {
        if !p.node.is_null() {
            p.map()?;
            device.mkimage_arch = opt_text(&p, "mkimage_arch")?;
            device.add_header = opt_text(&p, "add_header")?;
        }
    }
    let boot = at.req("boot")?;
    boot.req("connections")?;
    let methods = boot.req("methods")?;
    if methods.node.is_null() {
        return Ok(());
    }
    methods.map()?;
    if let Some(u) = methods.opt("u-boot") {
        device.uboot = Some(uboot(&u)?);
    }
    Ok(())
}

/// `actions.boot.methods.u-boot`: parameters and the command stanzas.
fn uboot(at: &At<'_>) -> Check<UbootMethod> {
    let params = at.req("parameters")?;
    params.map()?;
    let mut method = UbootMethod {
        bootloader_prompt: params.req("bootloader_prompt")?.nonempty_str()?.to_string(),
        interrupt_prompt: opt_text(&params, "interrupt_prompt")?,
        interrupt_char: opt_text(&params, "interrupt_char")?,
        needs_interrupt: true,
        stanzas: BTreeMap::new(),
    };
    if let Some(n) = params.opt("needs_interrupt") {
        method.needs_interrupt = n.bool()?;
    }
    for (name, stanza) in at.map()? {
        if name == "parameters" {
            continue;
        }
        let Some(commands) = stanza.opt("commands") else {
            continue;
        };
        let mut lines = Vec::new();
        for item in commands.items()? {
            match item.node.scalar_text() {
                Some(text) if !item.node.is_null() => lines.push(text),
                _ => return Err(item.fail("a stanza command must be a string")),
            }
        }
        method.stanzas.insert(name, lines);
    }
    Ok(method)
}

/// `timeouts.actions` / `timeouts.connections`: `{name: {unit: N}}`.
fn named_timeouts(at: &At<'_>) -> Check<BTreeMap<String, Duration>> {
    let mut out = BTreeMap::new();
    for (name, t) in at.map()? {
        out.insert(name, timeout::parse_node(t.node, &t.path, t.line, 0)?);
    }
    Ok(out)
}

/// labboot's own section: `board_id`, `boot`, `check_exit_codes`.
fn labboot(at: &At<'_>) -> Check<LabbootDevice> {
    at.keys(&["board_id", "boot", "check_exit_codes"], &[])?;
    let mut l = LabbootDevice::default();
    if let Some(b) = at.opt("board_id") {
        let id = match &b.node.value {
            yaml::Value::Null => String::new(),
            yaml::Value::Str(s) => s.clone(),
            yaml::Value::Int(i) => i.to_string(),
            _ => return Err(b.fail(format!("must be a string (got {})", b.node.kind()))),
        };
        l.board_id = Some(id).filter(|s| !s.is_empty());
    }
    if let Some(b) = at.opt("boot") {
        if !b.node.is_null() {
            l.boot = parse_boot_style(&b)?;
        }
    }
    if let Some(c) = at.opt("check_exit_codes") {
        if !c.node.is_null() {
            l.check_exit_codes = c.bool()?;
        }
    }
    Ok(l)
}

/// `serial` or `network`.
fn parse_boot_style(at: &At<'_>) -> Check<BootStyle> {
    Ok(match at.one_of(&["serial", "network"])? {
        "network" => BootStyle::Network,
        _ => BootStyle::Serial,
    })
}
