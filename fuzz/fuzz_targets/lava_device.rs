//! LAVA devices: a rendered device YAML through the dispatcher's parser and checks
//! (`device::parse_device`), and device dictionaries (`{% extends %}` + `{% set %}` lines)
//! rendered with the device-type templates and checked (`device::load_device`), as `labboot
//! dispatch` and `labboot serve` load a board's device file.
//!
//! Input: byte 0 bit 0 picks the kind. A device YAML is the rest of the input as is. A
//! dictionary is built from the rest: the first line names the template it extends, each further
//! `key=value` line becomes `{% set key = value %}`, the value written as a Jinja literal (a
//! number, `true`/`false`, a `[a,b]` list of strings, else a string). Template *code* is not
//! fuzzed: a dictionary is the admin's file, and Jinja loops or string products in it can run as
//! long or grow as large as its author asks.

#![no_main]

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use dispatcher::device::{boot_style, load_device, parse_device};
use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| common::scratch_dir("device"))
}

fn literal(v: &str) -> String {
    let v = v.trim();
    if v.parse::<i64>().is_ok() || v == "true" || v == "false" {
        return v.to_string();
    }
    let quote = |s: &str| {
        let mut q = String::from("\"");
        for c in s.chars() {
            match c {
                '\\' => q.push_str("\\\\"),
                '"' => q.push_str("\\\""),
                c if c.is_control() => q.push(' '),
                c => q.push(c),
            }
        }
        q.push('"');
        q
    };
    if let Some(items) = v.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
        let items: Vec<String> = items.split(',').map(|i| quote(i.trim())).collect();
        return format!("[{}]", items.join(", "));
    }
    quote(v)
}

fn dictionary(text: &str) -> Option<String> {
    let mut lines = text.lines();
    let template = lines.next()?.trim();
    if template.contains(['\'', '"', '{', '}', '%']) {
        return None;
    }
    let mut out = format!("{{% extends '{template}' %}}\n");
    for line in lines {
        let (key, value) = line.split_once('=')?;
        let key = key.trim();
        let ident = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident {
            return None;
        }
        out.push_str(&format!("{{% set {key} = {} %}}\n", literal(value)));
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let device = if kind & 1 == 0 {
        parse_device("device.yaml", text)
    } else {
        let Some(dict) = dictionary(text) else { return };
        let path = scratch().join("board.jinja2");
        std::fs::write(&path, dict).unwrap();
        load_device(&path, None, &Default::default())
    };
    if let Ok(device) = device {
        let _ = boot_style(&device, &Default::default());
        let _ = format!("{device:?}");
    }
});
