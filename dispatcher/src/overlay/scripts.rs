//! The board-side scripts, compiled into the dispatcher.
//!
//! They are POSIX sh (checked under dash and busybox sh) and live as `.sh` files next to this
//! one, so they can be read and linted as shell. Their `#!/bin/sh` line is replaced by the
//! overlay's shell when written, as LAVA fills in the test image's interpreter.

/// The scripts of `bin/`: name on the board, text.
pub const SCRIPTS: &[(&str, &str)] = &[
    (
        "lava-common-functions",
        include_str!("scripts/lava-common-functions.sh"),
    ),
    (
        "lava-test-runner",
        include_str!("scripts/lava-test-runner.sh"),
    ),
    ("lava-test-case", include_str!("scripts/lava-test-case.sh")),
    ("lava-test-set", include_str!("scripts/lava-test-set.sh")),
    (
        "lava-test-raise",
        include_str!("scripts/lava-test-raise.sh"),
    ),
    (
        "lava-test-reference",
        include_str!("scripts/lava-test-reference.sh"),
    ),
    (
        "lava-test-event",
        include_str!("scripts/lava-test-event.sh"),
    ),
    (
        "lava-install-packages",
        include_str!("scripts/lava-install-packages.sh"),
    ),
    (
        "lava-add-sources",
        include_str!("scripts/lava-add-sources.sh"),
    ),
    ("lava-add-keys", include_str!("scripts/lava-add-keys.sh")),
];

/// `text` with its first line (`#!/bin/sh`) replaced by `#!<shell>`.
pub fn with_shell(text: &str, shell: &str) -> String {
    let body = match text.strip_prefix("#!") {
        Some(rest) => rest.split_once('\n').map_or("", |(_, b)| b),
        None => text,
    };
    format!("#!{shell}\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_starts_with_sh() {
        for (name, text) in SCRIPTS {
            assert!(text.starts_with("#!/bin/sh\n"), "{name}");
            assert!(
                with_shell(text, "/bin/busybox sh").starts_with("#!/bin/busybox sh\n# "),
                "{name}"
            );
        }
        assert_eq!(with_shell("echo", "/bin/dash"), "#!/bin/dash\necho");
    }
}
