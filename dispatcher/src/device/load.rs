//! Loading a device file: a rendered device YAML as is, or a device dictionary rendered with
//! the device-type templates and the job's context first; and choosing how the board boots.

use std::path::Path;

use super::model::{BootStyle, Device};
use super::parse::check_device;
use super::template::{extends_name, render_dictionary, shipped_templates_dir};
use crate::{Error, Result};

/// Loads the device at `path`. A device dictionary (a `.jinja2` file, or one that
/// `{% extends %}` a template) is rendered with the templates in `templates` (default:
/// [`shipped_templates_dir`]) and the job's `context`, as LAVA renders it; a YAML file is read
/// as it is.
pub fn load_device(
    path: &Path,
    templates: Option<&Path>,
    context: &serde_yaml_ng::Mapping,
) -> Result<Device> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::config(format!("{file}: cannot read the device file: {e}")))?;
    let extends = extends_name(&text);
    let is_dictionary = extends.is_some() || path.extension().is_some_and(|e| e == "jinja2");
    if !is_dictionary {
        return parse_device(&file, &text);
    }
    let device_type = extends
        .as_deref()
        .map(|t| t.strip_suffix(".jinja2").unwrap_or(t).to_string())
        .unwrap_or_default();
    let hostname = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .map(|n| n.strip_suffix(".jinja2").map(str::to_string).unwrap_or(n))
        .unwrap_or_default();
    // LAVA's server sets these two over whatever the job's context says.
    let mut render_ctx = context.clone();
    render_ctx.insert("scheduled_device_name".into(), hostname.into());
    render_ctx.insert("scheduled_device_type".into(), device_type.clone().into());
    let default_dir;
    let templates = match templates {
        Some(dir) => dir,
        None => {
            default_dir = shipped_templates_dir();
            &default_dir
        }
    };
    let rendered = render_dictionary(&file, &text, templates, &render_ctx)?;
    // Lines of a rendered dictionary are lines of the rendering, so the message says so.
    let label = format!("{file} (rendered)");
    check_device(&file, &rendered.text, &device_type).map_err(|p| Error::config(p.render(&label)))
}

/// Parses a rendered device YAML held in memory; `file` names it in messages.
pub fn parse_device(file: &str, text: &str) -> Result<Device> {
    check_device(file, text, "").map_err(|p| Error::config(p.render(file)))
}

/// How the board is booted: the job context's `labboot_boot` (`serial` or `network`) if
/// given, otherwise the device's `labboot.boot`.
pub fn boot_style(device: &Device, job_context: &serde_yaml_ng::Mapping) -> Result<BootStyle> {
    let Some(value) = job_context.get("labboot_boot") else {
        return Ok(device.labboot.boot);
    };
    match value.as_str() {
        Some("serial") => Ok(BootStyle::Serial),
        Some("network") => Ok(BootStyle::Network),
        _ => Err(Error::job(format!(
            "job context: labboot_boot: must be serial or network (got {})",
            serde_yaml_ng::to_string(value).unwrap_or_default().trim()
        ))),
    }
}
