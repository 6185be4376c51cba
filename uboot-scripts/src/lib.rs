//! U-Boot side of labboot: script images, boot flows, LAVA placeholders and the SD card.
//!
//! * [`image`]: legacy uImage script images, byte-identical to `mkimage -T script`, and their
//!   verification and listing like `dumpimage -l`.
//! * [`bootflow`]: a typed boot description (kernel, ramdisk, dtb, boot command, root kind)
//!   rendered to a U-Boot command list.
//! * [`placeholders`]: LAVA's `{KERNEL_ADDR}`-style substitution over a command list.
//! * [`bootstrap`]: the generic bootstrap script every card carries, and the identity file.
//! * [`sdcard`]: the tiny SD-card image (MBR + one FAT partition).

#![forbid(unsafe_code)]

pub mod bootflow;
pub mod bootstrap;
pub mod image;
pub mod placeholders;
pub mod sdcard;
