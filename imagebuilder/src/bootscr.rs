//! `boot.scr`: the U-Boot script that boots this master, as a legacy script image.
//!
//! The appliance serves the board a per-board script; this one is the recipe's default for
//! booting the master over TFTP and NBD: window-size TFTP for the kernel and initrd, then
//! `booti` (arm64) or `bootz` (armhf) with the labboot kernel arguments, `quiet` (on a serial
//! console the kernel's boot messages cost boot time; warnings and errors still print) and
//! `cryptomgr.notests` (the kernel's self-tests of every crypto algorithm it registers at boot
//! took 0.35 s of a 1.3 s kernel start on an emulated board; the master uses no kernel crypto a
//! failed self-test would guard). Values may use U-Boot
//! variables (`${serverip}`, `${board_id}` from the bootstrap script). The image header's time
//! is the build epoch, so the bytes are reproducible.

use uboot_scripts::image::{build_script, Arch as UbootArch, ScriptSpec};

use crate::error::{Error, Result};
use crate::recipe::{Arch, BootSpec};

/// The script text.
pub fn text(arch: Arch, boot: &BootSpec) -> Result<String> {
    let boot_cmd = match arch {
        Arch::Arm64 => "booti",
        Arch::Armhf => "bootz",
        other => {
            return Err(Error::step(
                "boot.scr",
                format!("no U-Boot boot flow for {}", other.debian()),
            ))
        }
    };
    let dir = &boot.tftp_dir;
    let mut args = format!(
        "console={} quiet cryptomgr.notests labboot.board=${{board_id}} labboot.root={}",
        boot.console, boot.root
    );
    if !boot.agent.is_empty() {
        args.push_str(&format!(" labboot.agent={}", boot.agent));
    }
    Ok(format!(
        "# labboot master boot: kernel and initrd over TFTP, root over the network, read-only.\n\
         setenv tftpwindowsize {window}\n\
         tftpboot ${{kernel_addr_r}} {dir}/vmlinuz\n\
         tftpboot ${{ramdisk_addr_r}} {dir}/initrd.cpio.gz\n\
         setenv bootargs \"{args}\"\n\
         {boot_cmd} ${{kernel_addr_r}} ${{ramdisk_addr_r}}:${{filesize}} ${{fdtcontroladdr}}\n",
        window = boot.tftp_window,
    ))
}

/// The script image (`mkimage -A ARCH -T script` bytes) with header time `epoch`.
pub fn image(arch: Arch, boot: &BootSpec, epoch: u32) -> Result<Vec<u8>> {
    let uarch = match arch {
        Arch::Arm64 => UbootArch::Arm64,
        Arch::Armhf => UbootArch::Arm,
        Arch::Amd64 => UbootArch::X86_64,
        Arch::Riscv64 => UbootArch::Riscv,
    };
    let spec = ScriptSpec {
        arch: uarch,
        name: "labboot master".to_string(),
        time: epoch,
    };
    build_script(&spec, text(arch, boot)?.as_bytes())
        .map_err(|e| Error::step("boot.scr", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn spec() -> BootSpec {
        BootSpec {
            tftp_dir: "labboot/master".into(),
            root: "nbd:${serverip}:10809/master".into(),
            agent: "http://${serverip}:8080/".into(),
            console: "ttyAMA0".into(),
            tftp_window: 16,
        }
    }

    #[test]
    fn dumpimage_lists_the_script_and_its_text_is_ours() {
        let img = image(Arch::Arm64, &spec(), 1_700_000_000).unwrap();
        assert_eq!(img, image(Arch::Arm64, &spec(), 1_700_000_000).unwrap());
        let listing = uboot_scripts::image::inspect(&img).unwrap();
        let text = String::from_utf8(listing.part(&img, 0).unwrap().to_vec()).unwrap();
        assert!(text.contains("setenv tftpwindowsize 16\n"), "{text}");
        assert!(
            text.contains("tftpboot ${kernel_addr_r} labboot/master/vmlinuz\n"),
            "{text}"
        );
        assert!(
            text.contains("labboot.board=${board_id} labboot.root=nbd:${serverip}:10809/master"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdtcontroladdr}\n"
            ),
            "{text}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boot.scr");
        std::fs::write(&path, &img).unwrap();
        let out = Command::new("dumpimage")
            .arg("-l")
            .arg(&path)
            .output()
            .expect("dumpimage is needed (scripts/setup.sh installs u-boot-tools)");
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(listing.contains("labboot master"), "{listing}");
        assert!(listing.contains("AArch64 Linux Script"), "{listing}");
    }

    #[test]
    fn armhf_uses_bootz_and_amd64_is_refused() {
        assert!(text(Arch::Armhf, &spec()).unwrap().contains("\nbootz "));
        assert!(text(Arch::Amd64, &spec()).is_err());
    }
}
