//! imagebuilder: a recipe in, a reproducible master root filesystem, initrd and kernel out.
//!
//! Built for a board's architecture on an x86 host with no chroot, no qemu-user and no root:
//! packages of the target arch come from the host's apt ([`apt`]), are unpacked from their
//! `data.tar.*` without running maintainer scripts ([`deb`]) into an in-memory [`tree::Tree`]
//! that keeps modes and owners, get the recipe's configuration, and are written as squashfs
//! ([`squashfs`]), cpio newc ([`cpio`]) and a manifest ([`manifest`]). The initrd's nbd-client
//! closure is found by reading ELF headers ([`elf`]), its modules' dependencies from `.modinfo`
//! ([`modules`]). Same recipe, same packages, same epoch → the same bytes.
//!
//! ```no_run
//! use imagebuilder::{build, recipe::Recipe};
//! let recipe = Recipe::load("imagebuilder/recipes/master-arm64.yaml".as_ref())?;
//! let opts = build::Options::new("out".into(), "cache".into());
//! let manifest = build::build(&recipe, &opts, &mut build::Progress::plain())?;
//! println!("{} outputs", manifest.outputs.len());
//! # Ok::<(), imagebuilder::Error>(())
//! ```
//! A recipe's `base` tarball or directory goes under the packages ([`base`]); `rootfs.ext4` is
//! made with e2fsprogs ([`ext4`]); the kernel package's dtbs can be copied out. The appliance
//! VM's amd64 recipe adds its own `.deb` files, a nested master recipe, and the `disk` output: a
//! UEFI disk ([`disk`]) of a GPT ([`gpt`]), an EFI system partition ([`esp`]) and the ext4 root.

#![forbid(unsafe_code)]

pub mod apt;
pub mod base;
pub mod bootscr;
pub mod build;
pub mod cpio;
pub mod deb;
pub mod disk;
pub mod elf;
mod error;
pub mod esp;
pub mod ext4;
pub mod gpt;
pub mod initrd;
pub mod manifest;
pub mod modules;
pub mod recipe;
pub mod rootfs;
pub mod squashfs;
pub mod tarball;
pub mod tree;

pub use error::{Error, Result};
