//! Boot flows: a small typed description of how a board boots, rendered to U-Boot commands.
//!
//! A flow is first expressed as a LAVA-style command template with `{KERNEL_ADDR}`-style
//! placeholders (the same stanzas LAVA device files carry) and then filled in with
//! [`crate::placeholders`], so a missing ramdisk or dtb drops its lines exactly as LAVA would.
//!
//! ```
//! use uboot_scripts::bootflow::{BootCommand, BootFlow, FileAt, Root};
//!
//! let flow = BootFlow {
//!     server_ip: Some("10.0.0.1".into()),
//!     kernel: FileAt::new("labboot/b1/Image", "0x40400000"),
//!     ramdisk: Some(FileAt::new("labboot/b1/initrd", "0x44000000")),
//!     dtb: None,
//!     command: BootCommand::Booti,
//!     cmdline: "console=ttyAMA0".into(),
//!     root: Root::Ramdisk,
//!     tftp_window: Some(16),
//! };
//! let commands = flow.render().unwrap();
//! assert!(commands.contains(&"tftp 0x44000000 labboot/b1/initrd".to_string()));
//! ```

use crate::placeholders::{bootx, Substitutions};

/// A file fetched over TFTP to a load address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAt {
    /// Path on the TFTP server.
    pub file: String,
    /// Load address, as U-Boot takes it (`0x40400000` or `${kernel_addr_r}`).
    pub addr: String,
}

impl FileAt {
    /// A file at an address.
    pub fn new(file: impl Into<String>, addr: impl Into<String>) -> Self {
        FileAt {
            file: file.into(),
            addr: addr.into(),
        }
    }
}

/// Where the device tree comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dtb {
    /// Fetched over TFTP.
    File(FileAt),
    /// Already in memory at this address (e.g. `${fdtcontroladdr}` on QEMU, which passes one).
    At(String),
}

/// The U-Boot command that starts the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootCommand {
    /// `bootz`: 32-bit ARM zImage.
    Bootz,
    /// `booti`: arm64 / RISC-V Image.
    Booti,
    /// `bootm`: legacy uImage or FIT.
    Bootm,
}

impl BootCommand {
    /// The command's name.
    pub fn as_str(self) -> &'static str {
        match self {
            BootCommand::Bootz => "bootz",
            BootCommand::Booti => "booti",
            BootCommand::Bootm => "bootm",
        }
    }
}

/// What the kernel mounts as its root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// The ramdisk itself (`root=/dev/ram0`).
    Ramdisk,
    /// An NFS export (`root=/dev/nfs nfsroot=SERVER:PATH`).
    Nfs {
        /// NFS server address.
        server: String,
        /// Exported path.
        path: String,
    },
    /// An NBD export, attached by labboot's initrd (`labboot.root=nbd:HOST:PORT/EXPORT`).
    Nbd {
        /// NBD server address.
        server: String,
        /// NBD server port.
        port: u16,
        /// Export name.
        export: String,
    },
}

/// A boot flow that cannot be rendered safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    /// A value would break out of the U-Boot command it is placed in.
    #[error("{field} contains {bad:?}, which cannot be placed in a U-Boot command")]
    Unsafe {
        /// Name of the field.
        field: &'static str,
        /// The offending character.
        bad: char,
    },
    /// A required value is empty.
    #[error("{field} is empty")]
    Empty {
        /// Name of the field.
        field: &'static str,
    },
}

/// A typed description of one boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFlow {
    /// TFTP server; `None` keeps the `serverip` that DHCP gave.
    pub server_ip: Option<String>,
    /// The kernel.
    pub kernel: FileAt,
    /// The ramdisk, if any.
    pub ramdisk: Option<FileAt>,
    /// The device tree, if any.
    pub dtb: Option<Dtb>,
    /// The boot command.
    pub command: BootCommand,
    /// Kernel command line, without the root arguments (added from `root`).
    pub cmdline: String,
    /// The root filesystem.
    pub root: Root,
    /// RFC 7440 window for U-Boot's TFTP client (`tftpwindowsize`), if set.
    pub tftp_window: Option<u16>,
}

impl BootFlow {
    /// The LAVA-style command template of this flow's root kind.
    pub fn template(&self) -> Vec<String> {
        let root_args = match &self.root {
            Root::Ramdisk => "root=/dev/ram0",
            Root::Nfs { .. } => {
                "root=/dev/nfs rw nfsroot={NFS_SERVER_IP}:{NFSROOTFS},tcp,hard,v3 ip=dhcp"
            }
            Root::Nbd { .. } => {
                "labboot.root=nbd:{NBDSERVERIP}:{NBDSERVERPORT}/{NBDEXPORT} ip=dhcp"
            }
        };
        let mut lines = vec![
            "setenv autoload no".to_string(),
            "setenv initrd_high 0xffffffff".to_string(),
            "setenv fdt_high 0xffffffff".to_string(),
            "setenv serverip {SERVER_IP}".to_string(),
        ];
        if let Some(window) = self.tftp_window {
            lines.push(format!("setenv tftpwindowsize {window}"));
        }
        lines.extend(
            [
                "tftp {KERNEL_ADDR} {KERNEL}",
                "tftp {RAMDISK_ADDR} {RAMDISK}",
                "setenv initrd_size ${filesize}",
                "tftp {DTB_ADDR} {DTB}",
            ]
            .map(String::from),
        );
        let cmdline = if self.cmdline.is_empty() {
            root_args.to_string()
        } else {
            format!("{} {root_args}", self.cmdline)
        };
        lines.push(format!("setenv bootargs '{cmdline}'"));
        lines.push("{BOOTX}".to_string());
        lines
    }

    /// The placeholder values of this flow.
    pub fn substitutions(&self) -> Substitutions {
        let mut s = Substitutions::new();
        match &self.server_ip {
            Some(ip) => s.set("{SERVER_IP}", ip.as_str()),
            None => s.set_empty("{SERVER_IP}"),
        };
        s.set("{KERNEL}", self.kernel.file.as_str());
        s.set("{KERNEL_ADDR}", self.kernel.addr.as_str());
        match &self.ramdisk {
            Some(r) => s
                .set("{RAMDISK}", r.file.as_str())
                .set("{RAMDISK_ADDR}", r.addr.as_str()),
            None => s.set_empty("{RAMDISK}").set_empty("{RAMDISK_ADDR}"),
        };
        let dtb_addr = match &self.dtb {
            Some(Dtb::File(f)) => {
                s.set("{DTB}", f.file.as_str())
                    .set("{DTB_ADDR}", f.addr.as_str());
                f.addr.as_str()
            }
            Some(Dtb::At(addr)) => {
                s.set_empty("{DTB}");
                addr.as_str()
            }
            None => {
                s.set_empty("{DTB}");
                ""
            }
        };
        if let Root::Nfs { server, path } = &self.root {
            s.set("{NFS_SERVER_IP}", server.as_str())
                .set("{NFSROOTFS}", path.as_str());
        }
        if let Root::Nbd {
            server,
            port,
            export,
        } = &self.root
        {
            s.set("{NBDSERVERIP}", server.as_str())
                .set("{NBDSERVERPORT}", port.to_string())
                .set("{NBDEXPORT}", export.as_str());
        }
        let ramdisk_addr = self.ramdisk.as_ref().map(|r| r.addr.as_str());
        let boot = bootx(
            self.command.as_str(),
            &self.kernel.addr,
            ramdisk_addr,
            dtb_addr,
        );
        s.set("{BOOTX}", boot.trim_end());
        s
    }

    /// Renders the flow to U-Boot commands, one per line.
    pub fn render(&self) -> Result<Vec<String>, FlowError> {
        self.check()?;
        Ok(self.substitutions().apply(&self.template()))
    }

    /// Renders the flow as the text of a U-Boot script (one command per line).
    pub fn script(&self) -> Result<String, FlowError> {
        let mut text = String::from("# labboot boot flow\n");
        for line in self.render()? {
            text.push_str(&line);
            text.push('\n');
        }
        Ok(text)
    }

    fn check(&self) -> Result<(), FlowError> {
        if self.kernel.file.is_empty() {
            return Err(FlowError::Empty { field: "kernel" });
        }
        let mut fields: Vec<(&'static str, &str)> = vec![
            ("kernel", &self.kernel.file),
            ("kernel address", &self.kernel.addr),
            ("cmdline", &self.cmdline),
        ];
        if let Some(ip) = &self.server_ip {
            fields.push(("server_ip", ip));
        }
        if let Some(r) = &self.ramdisk {
            fields.push(("ramdisk", &r.file));
            fields.push(("ramdisk address", &r.addr));
        }
        match &self.dtb {
            Some(Dtb::File(f)) => {
                fields.push(("dtb", &f.file));
                fields.push(("dtb address", &f.addr));
            }
            Some(Dtb::At(addr)) => fields.push(("dtb address", addr)),
            None => {}
        }
        match &self.root {
            Root::Ramdisk => {}
            Root::Nfs { server, path } => {
                fields.push(("nfs server", server));
                fields.push(("nfs path", path));
            }
            Root::Nbd { server, export, .. } => {
                fields.push(("nbd server", server));
                fields.push(("nbd export", export));
            }
        }
        for (field, value) in fields {
            if let Some(bad) = value
                .chars()
                .find(|c| matches!(c, '\'' | '\n' | '\r' | ';' | '\0'))
            {
                return Err(FlowError::Unsafe { field, bad });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(root: Root) -> BootFlow {
        BootFlow {
            server_ip: Some("10.0.0.1".into()),
            kernel: FileAt::new("k/zImage", "0x82000000"),
            ramdisk: Some(FileAt::new("k/initrd", "0x83000000")),
            dtb: Some(Dtb::File(FileAt::new("k/board.dtb", "0x88000000"))),
            command: BootCommand::Bootz,
            cmdline: "console=ttyO0,115200n8".into(),
            root,
            tftp_window: None,
        }
    }

    #[test]
    fn ramdisk_flow_matches_lava_stanza() {
        let commands = flow(Root::Ramdisk).render().unwrap();
        assert_eq!(
            commands,
            [
                "setenv autoload no",
                "setenv initrd_high 0xffffffff",
                "setenv fdt_high 0xffffffff",
                "setenv serverip 10.0.0.1",
                "tftp 0x82000000 k/zImage",
                "tftp 0x83000000 k/initrd",
                "setenv initrd_size ${filesize}",
                "tftp 0x88000000 k/board.dtb",
                "setenv bootargs 'console=ttyO0,115200n8 root=/dev/ram0'",
                "bootz 0x82000000 0x83000000:${initrd_size} 0x88000000",
            ]
        );
    }

    #[test]
    fn nfs_without_ramdisk_drops_its_lines() {
        let mut f = flow(Root::Nfs {
            server: "10.0.0.1".into(),
            path: "/jobs/42".into(),
        });
        f.ramdisk = None;
        f.server_ip = None;
        let commands = f.render().unwrap();
        assert!(!commands.iter().any(|c| c.contains("serverip")));
        assert!(
            !commands.iter().any(|c| c.contains("{RAMDISK")),
            "{commands:?}"
        );
        assert_eq!(
            commands.iter().filter(|c| c.starts_with("tftp ")).count(),
            2
        );
        assert!(commands.contains(&"bootz 0x82000000 - 0x88000000".to_string()));
        assert!(commands
            .iter()
            .any(|c| c.contains("nfsroot=10.0.0.1:/jobs/42,tcp,hard,v3")));
    }

    #[test]
    fn nbd_flow_and_dtb_in_memory() {
        let mut f = flow(Root::Nbd {
            server: "10.0.0.1".into(),
            port: 10809,
            export: "master".into(),
        });
        f.command = BootCommand::Booti;
        f.dtb = Some(Dtb::At("${fdtcontroladdr}".into()));
        f.tftp_window = Some(16);
        let commands = f.render().unwrap();
        assert!(commands.contains(&"setenv tftpwindowsize 16".to_string()));
        assert!(!commands
            .iter()
            .any(|c| c.starts_with("tftp ${fdtcontroladdr}")));
        assert!(commands
            .contains(&"booti 0x82000000 0x83000000:${initrd_size} ${fdtcontroladdr}".to_string()));
        assert!(commands
            .iter()
            .any(|c| c.contains("labboot.root=nbd:10.0.0.1:10809/master")));
    }

    #[test]
    fn unsafe_values_are_refused() {
        let mut f = flow(Root::Ramdisk);
        f.cmdline = "quiet'; reset".into();
        assert_eq!(
            f.render(),
            Err(FlowError::Unsafe {
                field: "cmdline",
                bad: '\''
            })
        );
    }
}
