//! LAVA's placeholder substitution over a U-Boot command list.
//!
//! Device files written for LAVA carry commands like `tftp {KERNEL_ADDR} {KERNEL}`. The rules,
//! kept exactly so those files work unchanged:
//! * a placeholder with a known value is replaced everywhere in the line;
//! * a placeholder whose value is known but empty drops the whole line (no ramdisk → the
//!   `tftp {RAMDISK_ADDR} {RAMDISK}` line goes);
//! * a placeholder that is not known stays as written.
//!
//! Values are applied in the order they were set, each over the result of the previous one.

/// The placeholders labboot fills in for U-Boot boot commands.
pub const KNOWN: [&str; 13] = [
    "{SERVER_IP}",
    "{KERNEL}",
    "{RAMDISK}",
    "{DTB}",
    "{KERNEL_ADDR}",
    "{RAMDISK_ADDR}",
    "{DTB_ADDR}",
    "{BOOTX}",
    "{NFSROOTFS}",
    "{NFS_SERVER_IP}",
    "{NBDSERVERIP}",
    "{NBDSERVERPORT}",
    "{LAVA_MAC}",
];

/// An ordered set of placeholder values; a key maps to its value, possibly empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Substitutions {
    values: Vec<(String, String)>,
}

impl Substitutions {
    /// No known placeholder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` (with its braces, e.g. `{KERNEL}`) to `value`; an empty value marks the key
    /// known-but-empty, which drops every line that uses it.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        let key = key.into();
        let value = value.into();
        match self.values.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.values.push((key, value)),
        }
        self
    }

    /// Marks `key` known-but-empty.
    pub fn set_empty(&mut self, key: impl Into<String>) -> &mut Self {
        self.set(key, "")
    }

    /// The value of `key`, if known.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Applies the values to every line of `commands`, dropping lines as the rules say.
    pub fn apply<S: AsRef<str>>(&self, commands: &[S]) -> Vec<String> {
        commands
            .iter()
            .filter_map(|line| self.apply_line(line.as_ref()))
            .collect()
    }

    fn apply_line(&self, line: &str) -> Option<String> {
        let mut line = line.to_string();
        for (key, value) in &self.values {
            if line.contains(key.as_str()) {
                if value.is_empty() {
                    return None;
                }
                line = line.replace(key.as_str(), value);
            }
        }
        Some(line)
    }
}

/// The value of `{BOOTX}`: `<cmd> <kernel_addr> <ramdisk_addr|-> <dtb_addr>`, where a ramdisk
/// address becomes `<addr>:${initrd_size}` so U-Boot is told the ramdisk's size.
pub fn bootx(
    command: &str,
    kernel_addr: &str,
    ramdisk_addr: Option<&str>,
    dtb_addr: &str,
) -> String {
    let ramdisk = match ramdisk_addr {
        Some(addr) => format!("{addr}:${{initrd_size}}"),
        None => "-".to_string(),
    };
    format!("{command} {kernel_addr} {ramdisk} {dtb_addr}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_empty_drops_unknown_stays() {
        let mut subs = Substitutions::new();
        subs.set("{KERNEL_ADDR}", "0x82000000")
            .set("{KERNEL}", "job/zImage")
            .set_empty("{RAMDISK}")
            .set("{RAMDISK_ADDR}", "0x83000000");
        let out = subs.apply(&[
            "tftp {KERNEL_ADDR} {KERNEL}",
            "tftp {RAMDISK_ADDR} {RAMDISK}",
            "tftp {TEE_ADDR} {TEE}",
            "setenv initrd_size ${filesize}",
        ]);
        assert_eq!(
            out,
            [
                "tftp 0x82000000 job/zImage",
                "tftp {TEE_ADDR} {TEE}",
                "setenv initrd_size ${filesize}"
            ]
        );
    }

    #[test]
    fn bootx_with_and_without_ramdisk() {
        assert_eq!(
            bootx("bootz", "0x82000000", Some("0x83000000"), "0x88000000"),
            "bootz 0x82000000 0x83000000:${initrd_size} 0x88000000"
        );
        assert_eq!(
            bootx("booti", "0x80000000", None, "0x81000000"),
            "booti 0x80000000 - 0x81000000"
        );
    }

    #[test]
    fn later_value_replaces_earlier() {
        let mut subs = Substitutions::new();
        subs.set("{SERVER_IP}", "10.0.0.1")
            .set("{SERVER_IP}", "10.0.0.2");
        assert_eq!(
            subs.apply(&["setenv serverip {SERVER_IP}"]),
            ["setenv serverip 10.0.0.2"]
        );
        assert_eq!(subs.get("{SERVER_IP}"), Some("10.0.0.2"));
    }
}
