//! `- boot:` blocks: LAVA's `boot.u-boot` and `boot.minimal` schemas (commands, prompts,
//! auto_login, transfer_overlay, parameters, soft_reboot). Other LAVA boot methods get a clear
//! "not supported by labboot".

use super::common::{block_common, with_common, with_common_unsupported};
use super::model::{AutoLogin, Boot, BootCommands};
use super::schema::{At, Check, Unsupported};

/// Boot methods LAVA knows that labboot does not do.
const LAVA_METHODS: &[&str] = &[
    "avh",
    "barebox",
    "bootloader",
    "cmsis-dap",
    "depthcharge",
    "dfu",
    "docker",
    "fastboot",
    "fvp",
    "gdb",
    "grub",
    "grub-efi",
    "ipxe",
    "jlink",
    "kexec",
    "monitor",
    "musca",
    "new-connection",
    "nodebooter",
    "openocd",
    "pyocd",
    "qdl",
    "qemu",
    "qemu-iso",
    "qemu-nfs",
    "recovery",
    "schroot",
    "ssh",
    "uefi",
    "uefi-menu",
    "uuu",
];

/// Keys of every boot block (LAVA's `boot.schema()`), plus those both methods share.
const BOOT_KEYS: &[&str] = &[
    "method",
    "parameters",
    "soft_reboot",
    "ignore_kernel_messages",
    "prompts",
    "auto_login",
    "reset",
    "transfer_overlay",
];

/// `parameters:` keys.
const PARAMETER_KEYS: &[&str] = &[
    "bootloader-final-message",
    "kernel-start-message",
    "shutdown-message",
];

/// Reads the boot block at `at` (a mapping) whose `- boot:` line is `line`.
pub fn boot(at: &At<'_>, line: usize) -> Check<Boot> {
    let method_at = at.req("method")?;
    let method = method(&method_at)?;
    let mut allowed = BOOT_KEYS.to_vec();
    let unsupported: Vec<Unsupported<'static>> = Vec::new();
    if method == "u-boot" {
        allowed.extend(["commands", "use_bootscript"]);
    } else {
        if let Some(c) = at.opt("commands") {
            return Err(c.fail("boot method minimal takes no commands (it powers on and waits)"));
        }
        allowed.extend(["pre_power_command", "pre_os_command"]);
    }
    at.keys(
        &with_common(&allowed),
        &with_common_unsupported(&unsupported),
    )?;
    let mut boot = Boot {
        common: block_common(at, line)?,
        method: method.to_string(),
        commands: None,
        prompts: Vec::new(),
        auto_login: None,
        parameters: serde_yaml_ng::Mapping::new(),
        transfer_overlay: None,
        soft_reboot: None,
    };
    if method == "u-boot" {
        let commands = at.req("commands")?;
        boot.commands = Some(match commands.node.as_str() {
            Some(name) => BootCommands::Named(name.to_string()),
            None => BootCommands::Inline(commands.str_or_list(false)?),
        });
        if let Some(b) = at.opt("use_bootscript") {
            b.default_only(
                false,
                "commands are typed or served as labboot's boot script",
            )?;
        }
    } else {
        for key in ["pre_power_command", "pre_os_command"] {
            if let Some(b) = at.opt(key) {
                b.default_only(false, "no pre-power or pre-OS commands are run")?;
            }
        }
    }
    if let Some(p) = at.opt("prompts") {
        boot.prompts = p.str_or_list(true)?;
    }
    if let Some(a) = at.opt("auto_login") {
        boot.auto_login = Some(auto_login(&a)?);
    }
    if let Some(r) = at.opt("reset") {
        r.default_only(true, "the board is always reset before it boots")?;
    }
    if let Some(i) = at.opt("ignore_kernel_messages") {
        i.default_only(false, "kernel messages are always watched")?;
    }
    if let Some(p) = at.opt("parameters") {
        p.keys(PARAMETER_KEYS, &[])?;
        for (_, value) in p.map()? {
            value.str()?;
        }
        if let serde_yaml_ng::Value::Mapping(m) = p.node.to_serde() {
            boot.parameters = m;
        }
    }
    if let Some(s) = at.opt("soft_reboot") {
        s.str_or_list(false)?;
        boot.soft_reboot = Some(s.node.to_serde());
    }
    if let Some(t) = at.opt("transfer_overlay") {
        transfer_overlay(&t)?;
        if let serde_yaml_ng::Value::Mapping(m) = t.node.to_serde() {
            boot.transfer_overlay = Some(m);
        }
    }
    Ok(boot)
}

/// `method:`
fn method<'a>(at: &At<'a>) -> Check<&'a str> {
    let method = at.str()?;
    match method {
        "u-boot" | "minimal" => Ok(method),
        _ if LAVA_METHODS.contains(&method.replace('_', "-").as_str()) => Err(at.fail(format!(
            "boot method '{method}' is not supported by labboot (u-boot, minimal)"
        ))),
        _ => Err(at.fail(format!(
            "unknown boot method '{method}' (labboot boots with u-boot or minimal)"
        ))),
    }
}

/// `auto_login:` LAVA's two forms: with or without a password (both keys or neither).
fn auto_login(at: &At<'_>) -> Check<AutoLogin> {
    at.keys(
        &[
            "login_prompt",
            "username",
            "password_prompt",
            "password",
            "login_commands",
        ],
        &[],
    )?;
    let mut login = AutoLogin {
        login_prompt: at.req("login_prompt")?.nonempty_str()?.to_string(),
        username: at.req("username")?.str()?.to_string(),
        ..AutoLogin::default()
    };
    match (at.opt("password_prompt"), at.opt("password")) {
        (Some(prompt), Some(password)) => {
            login.password_prompt = Some(prompt.str()?.to_string());
            login.password = Some(password.str()?.to_string());
        }
        (Some(_), None) => return Err(at.missing("password")),
        (None, Some(_)) => return Err(at.missing("password_prompt")),
        (None, None) => {}
    }
    if let Some(c) = at.opt("login_commands") {
        // Without a password LAVA also wants each command non-empty.
        login.login_commands = c.strings(login.password.is_none())?;
    }
    Ok(login)
}

/// `transfer_overlay:` download + unpack commands (LAVA's zmodem form is refused).
fn transfer_overlay(at: &At<'_>) -> Check<()> {
    at.keys(
        &["download_command", "unpack_command", "transfer_method"],
        &[],
    )?;
    if let Some(m) = at.opt("transfer_method") {
        if m.node.as_str() == Some("zmodem") {
            return Err(
                m.fail("not supported by labboot: the overlay is downloaded, not sent by zmodem")
            );
        }
        m.str()?;
    }
    at.req("download_command")?.str()?;
    at.req("unpack_command")?.str()?;
    Ok(())
}
