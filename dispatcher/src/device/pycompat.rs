//! What LAVA's device templates expect from Jinja2 (Python) that minijinja does differently.
//!
//! Device-type templates are written for Jinja2 and print Python values straight into YAML.
//! minijinja already prints `None`, `True` and `False` as Python does; the differences left,
//! and what this module does about them:
//! * Lists and dicts: Jinja2 prints Python's `repr` (`['b']`, `{'k': 1}`), minijinja prints JSON
//!   (`["b"]`). The two differ as YAML once a string holds a backslash or a quote, so
//!   [`formatter`] prints containers as Python does.
//! * Python methods on values (`connection_commands.get(x)`, `user_commands.items()`, `keys()`,
//!   `values()`, a few string methods): minijinja has none; [`unknown_method`] provides them.
//!   `dict.get` of a missing key gives `None`, which prints `None` as in LAVA's rendered files.
//! * LAVA's own filters `shlex_quote` and `yaml_quote` are added ([`shlex_quote`],
//!   [`yaml_quote`]).

use std::fmt::Write as _;

use minijinja::value::{Value, ValueKind};
use minijinja::{Error, ErrorKind, Output, State};

/// Prints a value as Jinja2 would: `str()` of the Python value.
pub fn formatter(out: &mut Output<'_>, state: &State<'_, '_>, value: &Value) -> Result<(), Error> {
    match value.kind() {
        ValueKind::Seq | ValueKind::Map => {
            let text = repr(value);
            out.write_str(&text).map_err(Error::from)
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// Python's `repr()` of a value.
pub fn repr(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => "None".to_string(),
        ValueKind::Bool => if value.is_true() { "True" } else { "False" }.to_string(),
        ValueKind::String => repr_str(value.as_str().unwrap_or_default()),
        ValueKind::Seq => {
            let items: Vec<String> = match value.try_iter() {
                Ok(iter) => iter.map(|v| repr(&v)).collect(),
                Err(_) => Vec::new(),
            };
            format!("[{}]", items.join(", "))
        }
        ValueKind::Map => {
            let mut parts = Vec::new();
            if let Ok(keys) = value.try_iter() {
                for key in keys {
                    let item = value.get_item(&key).unwrap_or(Value::from(()));
                    parts.push(format!("{}: {}", repr(&key), repr(&item)));
                }
            }
            format!("{{{}}}", parts.join(", "))
        }
        _ => value.to_string(),
    }
}

/// Python's `repr()` of a string: single quotes unless the text holds one and no double quote.
fn repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// The Python methods templates call on values.
pub fn unknown_method(
    _state: &State<'_, '_>,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    match (value.kind(), method, args) {
        (ValueKind::Map, "get", [key]) => Ok(lookup(value, key).unwrap_or(Value::from(()))),
        (ValueKind::Map, "get", [key, default]) => {
            Ok(lookup(value, key).unwrap_or_else(|| default.clone()))
        }
        (ValueKind::Map, "items", []) => {
            let pairs: Vec<Value> = value
                .try_iter()?
                .map(|k| {
                    let v = value.get_item(&k).unwrap_or(Value::from(()));
                    Value::from(vec![k, v])
                })
                .collect();
            Ok(Value::from(pairs))
        }
        (ValueKind::Map, "keys", []) => Ok(Value::from(value.try_iter()?.collect::<Vec<_>>())),
        (ValueKind::Map, "values", []) => Ok(Value::from(
            value
                .try_iter()?
                .map(|k| value.get_item(&k).unwrap_or(Value::from(())))
                .collect::<Vec<_>>(),
        )),
        (ValueKind::String, _, _) => {
            string_method(value.as_str().unwrap_or_default(), method, args)
        }
        _ => Err(Error::new(
            ErrorKind::UnknownMethod,
            format!("{} has no method named {method}", value.kind()),
        )),
    }
}

/// `dict[key]` if present and defined.
fn lookup(map: &Value, key: &Value) -> Option<Value> {
    map.get_item(key).ok().filter(|v| !v.is_undefined())
}

/// The few `str` methods device templates use.
fn string_method(s: &str, method: &str, args: &[Value]) -> Result<Value, Error> {
    let arg = |i: usize| -> Result<String, Error> {
        args.get(i)
            .and_then(|v| v.as_str().map(str::to_string))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    format!("str.{method} needs a string argument"),
                )
            })
    };
    Ok(match (method, args.len()) {
        ("upper", 0) => Value::from(s.to_uppercase()),
        ("lower", 0) => Value::from(s.to_lowercase()),
        ("strip", 0) => Value::from(s.trim()),
        ("lstrip", 0) => Value::from(s.trim_start()),
        ("rstrip", 0) => Value::from(s.trim_end()),
        ("startswith", 1) => Value::from(s.starts_with(arg(0)?.as_str())),
        ("endswith", 1) => Value::from(s.ends_with(arg(0)?.as_str())),
        ("replace", 2) => Value::from(s.replace(arg(0)?.as_str(), arg(1)?.as_str())),
        ("split", 0) => Value::from(s.split_whitespace().map(Value::from).collect::<Vec<_>>()),
        ("split", 1) => {
            let sep = arg(0)?;
            Value::from(s.split(sep.as_str()).map(Value::from).collect::<Vec<_>>())
        }
        _ => {
            return Err(Error::new(
                ErrorKind::UnknownMethod,
                format!("string has no method named {method}"),
            ))
        }
    })
}

/// LAVA's `shlex_quote` filter: Python's `shlex.quote`.
pub fn shlex_quote(value: Value) -> String {
    let s = match value.as_str() {
        Some(s) => s.to_string(),
        None => value.to_string(),
    };
    if s.is_empty() {
        return "''".to_string();
    }
    let safe = s
        .chars()
        .all(|c| c.is_alphanumeric() || c == '_' || "@%+=:,./-".contains(c));
    if safe {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\"'\"'"))
    }
}

/// LAVA's `yaml_quote` filter: the value as one-line YAML with every scalar double-quoted.
pub fn yaml_quote(value: Value) -> String {
    match value.kind() {
        ValueKind::String => quoted(value.as_str().unwrap_or_default()),
        ValueKind::Undefined | ValueKind::None => "!!null \"null\"".to_string(),
        ValueKind::Bool => format!("!!bool \"{}\"", value.is_true()),
        ValueKind::Number => {
            let tag = if value.as_i64().is_some() {
                "int"
            } else {
                "float"
            };
            format!("!!{tag} \"{value}\"")
        }
        ValueKind::Seq => {
            let items: Vec<String> = match value.try_iter() {
                Ok(iter) => iter.map(yaml_quote).collect(),
                Err(_) => Vec::new(),
            };
            format!("[{}]", items.join(", "))
        }
        ValueKind::Map => {
            let mut parts = Vec::new();
            if let Ok(keys) = value.try_iter() {
                for key in keys {
                    let item = value.get_item(&key).unwrap_or(Value::from(()));
                    parts.push(format!("{}: {}", yaml_quote(key), yaml_quote(item)));
                }
            }
            format!("{{{}}}", parts.join(", "))
        }
        _ => quoted(&value.to_string()),
    }
}

/// A YAML double-quoted scalar.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> minijinja::Environment<'static> {
        let mut env = minijinja::Environment::new();
        env.set_formatter(formatter);
        env.set_unknown_method_callback(unknown_method);
        env.add_filter("shlex_quote", shlex_quote);
        env.add_filter("yaml_quote", yaml_quote);
        env
    }

    fn render(template: &str) -> String {
        env()
            .render_str(template, minijinja::context! {})
            .unwrap_or_else(|e| format!("ERROR {e}"))
    }

    #[test]
    fn containers_print_as_python() {
        assert_eq!(render("{{ ['b', 1, none, true] }}"), "['b', 1, None, True]");
        assert_eq!(render("{{ {'k': 'it\\'s'} }}"), "{'k': \"it's\"}");
        assert_eq!(render("{{ ['a\\\\b'] }}"), "['a\\\\b']");
        assert_eq!(render("{{ none }} {{ true }} {{ x }}"), "None True ");
    }

    #[test]
    fn python_methods() {
        assert_eq!(
            render("{{ {'a': 1}.get('a') }} {{ {'a': 1}.get('b') }}"),
            "1 None"
        );
        assert_eq!(render("{{ {'a': 1}.get('b', 2) }}"), "2");
        assert_eq!(
            render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}"),
            "a=1;b=2;"
        );
        assert_eq!(
            render("{{ 'Ab'.upper() }} {{ 'a b'.split() }}"),
            "AB ['a', 'b']"
        );
    }

    #[test]
    fn lava_filters() {
        assert_eq!(render("{{ 'a b'|shlex_quote }}"), "'a b'");
        assert_eq!(render("{{ 'ab'|shlex_quote }}"), "ab");
        assert_eq!(render("{{ \"it's\"|shlex_quote }}"), "'it'\"'\"'s'");
        assert_eq!(render("{{ 'a: \"b\"'|yaml_quote }}"), "\"a: \\\"b\\\"\"");
        assert_eq!(render("{{ 5|yaml_quote }}"), "!!int \"5\"");
    }
}
