//! Device dictionaries rendered with minijinja: labboot's fixtures with the shipped templates,
//! and (when `LAVA_REFERENCE_DIR` names LAVA's reference data) LAVA's dictionaries with LAVA's
//! templates, which must give the same YAML, value for value, as LAVA's own rendering.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use dispatcher::device::{load_device, render_dictionary, BootStyle};

fn crate_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

#[test]
fn fixture_dictionaries_load() {
    let templates = crate_dir().join("device-types");
    let dir = crate_dir().join("fixtures/devices");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("fixtures/devices exists") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_none_or(|e| e != "jinja2") {
            continue;
        }
        let device = load_device(&path, Some(&templates), &Default::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let uboot = device.uboot.as_ref().expect("u-boot method");
        for stanza in ["ramdisk", "nfs", "nbd"] {
            let commands = &uboot.stanzas[stanza];
            assert_eq!(
                commands.last().map(String::as_str),
                Some("{BOOTX}"),
                "{stanza}"
            );
            assert!(commands.iter().any(|c| c.starts_with("setenv bootargs '")));
        }
        assert!(device.connection_command.is_some());
        count += 1;
    }
    assert!(count >= 2, "expected the qemu and generic fixtures");
}

#[test]
fn shipped_templates_are_the_default() {
    let path = crate_dir().join("fixtures/devices/qemu-board.jinja2");
    let mut context = serde_yaml_ng::Mapping::new();
    context.insert("labboot_boot".into(), "network".into());
    let device = load_device(&path, None, &context).expect("renders with the shipped templates");
    assert_eq!(device.device_type, "labboot-qemu-arm64");
    assert_eq!(device.labboot.boot, BootStyle::Network);
}

/// Renders LAVA's dictionary `name` with LAVA's templates and compares with LAVA's rendering.
fn conformance(reference: &Path, name: &str) {
    let templates = reference.join("etc/dispatcher-config/device-types");
    let dictionary = reference.join(format!("tests/lava_scheduler_app/devices/{name}.jinja2"));
    let expected = reference.join(format!("rendered-devices/{name}.yaml"));
    let text = std::fs::read_to_string(&dictionary).expect("LAVA dictionary");
    let ours = render_dictionary(name, &text, &templates, &Default::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let ours: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&ours.text).unwrap_or_else(|e| panic!("{name}: ours: {e}"));
    let theirs: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&expected).expect("LAVA rendering"))
            .unwrap_or_else(|e| panic!("{name}: LAVA's: {e}"));
    if ours != theirs {
        let (serde_yaml_ng::Value::Mapping(a), serde_yaml_ng::Value::Mapping(b)) = (&ours, &theirs)
        else {
            panic!("{name}: not mappings");
        };
        let differing: Vec<String> = b
            .iter()
            .filter(|(k, v)| a.get(*k) != Some(*v))
            .map(|(k, _)| format!("{k:?}"))
            .collect();
        panic!("{name}: rendering differs from LAVA's in {differing:?}");
    }
    let device = load_device(&dictionary, Some(&templates), &Default::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(device
        .uboot
        .is_some_and(|u| u.stanzas.contains_key("ramdisk")));
}

#[test]
fn lava_dictionaries_render_as_lava_renders_them() {
    let Some(dir) = std::env::var_os("LAVA_REFERENCE_DIR") else {
        // Straight to stderr, past the test harness's capture, so it shows in every run.
        let _ = writeln!(
            std::io::stderr(),
            "\n*** LAVA_REFERENCE_DIR not set: conformance not run (device rendering) ***\n"
        );
        return;
    };
    let reference = Path::new(&dir);
    conformance(reference, "bbb-01");
    conformance(reference, "zcu102");
}
