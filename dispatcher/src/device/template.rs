//! Rendering a device dictionary with its device-type templates, as LAVA's server does.
//!
//! LAVA renders `{% extends 'x.jinja2' %}` dictionaries with Jinja2 (autoescape off,
//! trim_blocks on, lstrip_blocks and keep_trailing_newline off) and passes the job's `context`
//! as template variables, so a dictionary's `{% set %}` wins over the job and a template's
//! `x|default(…)` lets the job choose. The same is done here with minijinja; where minijinja
//! and Jinja2 differ, [`super::pycompat`] bridges the gap. Templates are looked up by name in
//! one directory; names that would leave it (`..`, absolute paths) are refused.

use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use regex::Regex;

use super::pycompat;
use crate::{Error, Result};

/// The environment variable that overrides where the shipped device-type templates are.
pub const TEMPLATES_ENV: &str = "LABBOOT_DEVICE_TYPES";

/// The device-type templates labboot ships: `$LABBOOT_DEVICE_TYPES` if set, otherwise the
/// crate's `device-types/` directory when the binary runs from the source tree, else the
/// packaged [`INSTALLED_TEMPLATES`].
pub fn shipped_templates_dir() -> PathBuf {
    match std::env::var_os(TEMPLATES_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            // The source tree's, when the binary runs from it; else where the package puts them.
            let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("device-types");
            if built.is_dir() {
                built
            } else {
                PathBuf::from(INSTALLED_TEMPLATES)
            }
        }
    }
}

/// Where the Debian package installs the device types.
pub const INSTALLED_TEMPLATES: &str = "/usr/share/labboot/device-types";

/// A rendered device dictionary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The device YAML.
    pub text: String,
    /// The template the dictionary extends (`beaglebone-black.jinja2`), if it names one.
    pub extends: Option<String>,
}

/// The template a dictionary extends, if it says so.
pub fn extends_name(text: &str) -> Option<String> {
    static EXTENDS: OnceLock<Option<Regex>> = OnceLock::new();
    let re = EXTENDS
        .get_or_init(|| Regex::new(r#"\{%-?\s*extends\s+["']([^"']+)["']\s*-?%\}"#).ok())
        .as_ref()?;
    re.captures(text)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str().to_string())
}

/// Renders the dictionary `text` (called `name` in messages) with the templates in
/// `templates` and the job's `context` as variables.
pub fn render_dictionary(
    name: &str,
    text: &str,
    templates: &Path,
    context: &serde_yaml_ng::Mapping,
) -> Result<Rendered> {
    let env = environment(templates);
    let template = env
        .template_from_named_str(name, text)
        .map_err(template_error)?;
    let rendered = template
        .render(minijinja::Value::from_serialize(context))
        .map_err(template_error)?;
    Ok(Rendered {
        text: rendered,
        extends: extends_name(text),
    })
}

/// A minijinja environment set up as LAVA's Jinja2 one.
fn environment<'s>(templates: &Path) -> Environment<'s> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(false);
    env.set_keep_trailing_newline(false);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_formatter(pycompat::formatter);
    env.set_unknown_method_callback(pycompat::unknown_method);
    env.add_filter("shlex_quote", pycompat::shlex_quote);
    env.add_filter("yaml_quote", pycompat::yaml_quote);
    let dir = templates.to_path_buf();
    env.set_loader(move |name| load_template(&dir, name));
    env
}

/// Reads template `name` from `dir`; None if there is no such file.
fn load_template(dir: &Path, name: &str) -> std::result::Result<Option<String>, minijinja::Error> {
    let relative = Path::new(name);
    let inside = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    if !inside {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("template name '{name}' leaves the templates directory"),
        ));
    }
    let path = dir.join(relative);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

/// A template error as one line naming the template and line.
fn template_error(e: minijinja::Error) -> Error {
    let place = match (e.name(), e.line()) {
        (Some(name), Some(line)) => format!("{name}:{line}"),
        (Some(name), None) => name.to_string(),
        _ => "device template".to_string(),
    };
    let mut message = format!("{place}: template error: {}", e.kind());
    if let Some(detail) = e.detail() {
        message.push_str(&format!(": {detail}"));
    }
    Error::config(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extends() {
        assert_eq!(
            extends_name("{# x #}\n{% extends 'bbb.jinja2' %}\n{% set a = 1 %}"),
            Some("bbb.jinja2".to_string())
        );
        assert_eq!(
            extends_name("{%- extends \"a.jinja2\" -%}"),
            Some("a.jinja2".to_string())
        );
        assert_eq!(extends_name("a: 1\n"), None);
    }

    #[test]
    fn context_and_sets() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("t.jinja2"),
            "a: {{ a|default('A') }}\nb: {{ b|default('B') }}\n{% if flag %}f: {{ flag }}\n{% endif %}",
        )
        .expect("write");
        let mut ctx = serde_yaml_ng::Mapping::new();
        ctx.insert("a".into(), "from-job".into());
        ctx.insert("b".into(), "from-job".into());
        let r = render_dictionary(
            "d.jinja2",
            "{% extends 't.jinja2' %}\n{% set b = 'from-dict' %}\n{% set flag = True %}\n",
            dir.path(),
            &ctx,
        )
        .expect("renders");
        assert_eq!(r.text, "a: from-job\nb: from-dict\nf: True\n");
        assert_eq!(r.extends.as_deref(), Some("t.jinja2"));
    }

    #[test]
    fn errors_name_template_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("t.jinja2"), "a: 1\n{{ 1 + }}\n").expect("write");
        let err = render_dictionary(
            "d.jinja2",
            "{% extends 't.jinja2' %}",
            dir.path(),
            &Default::default(),
        )
        .expect_err("syntax error");
        assert!(
            err.message.starts_with("t.jinja2:2: template error"),
            "{}",
            err.message
        );
        let err = render_dictionary(
            "d.jinja2",
            "\n{% extends 'nope.jinja2' %}",
            dir.path(),
            &Default::default(),
        )
        .expect_err("missing");
        assert!(
            err.message.starts_with("d.jinja2:2: template error"),
            "{}",
            err.message
        );
        let err = render_dictionary(
            "d.jinja2",
            "{% extends '../t.jinja2' %}",
            dir.path(),
            &Default::default(),
        )
        .expect_err("escape");
        assert!(
            err.message.contains("leaves the templates directory"),
            "{}",
            err.message
        );
    }
}
