//! Image recipes: `imagebuilder::recipe::Recipe::parse` on recipe YAML (what `labboot image
//! build` reads), every check after the YAML too.
//!
//! A recipe may name files to read (`files[].source`, `base`) relative to its directory; the
//! target's directory is a scratch copy of `imagebuilder/recipes/`. Inputs whose `source` or
//! `base` strings are absolute or contain `..` are skipped, so the fuzzer cannot make the
//! parser read `/dev/zero` or the host's files (a recipe is the admin's own file; reading what
//! it names is its purpose, not a bug).

#![no_main]

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use imagebuilder::recipe::Recipe;
use libfuzzer_sys::fuzz_target;
use serde_yaml_ng::Value;

fn recipes_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = common::scratch_dir("recipe");
        let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../imagebuilder/recipes");
        for entry in std::fs::read_dir(shipped).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        dir
    })
}

/// Whether every string under a `source` or `base` key stays inside the recipe's directory.
fn confined(v: &Value, under_file_key: bool) -> bool {
    match v {
        Value::String(s) => !under_file_key || (!s.starts_with('/') && !s.contains("..")),
        Value::Sequence(items) => items.iter().all(|i| confined(i, under_file_key)),
        Value::Mapping(m) => m.iter().all(|(k, v)| {
            let key_is_file = matches!(k, Value::String(k) if k == "source" || k == "base");
            confined(k, under_file_key) && confined(v, under_file_key || key_is_file)
        }),
        Value::Tagged(t) => confined(&t.value, under_file_key),
        _ => true,
    }
}

fuzz_target!(|text: &[u8]| {
    let Ok(value) = serde_yaml_ng::from_slice::<Value>(text) else {
        return;
    };
    if !confined(&value, false) {
        return;
    }
    if let Ok(recipe) = Recipe::parse("fuzz.yaml", recipes_dir(), text) {
        let _ = format!("{recipe:?}");
    }
});
