//! Artefacts of a deploy: fetched with their checksums checked, decompressed where LAVA
//! decompresses them, and turned into what the board boots (a rebuilt ramdisk, an unpacked
//! NFS root, a uImage).
//!
//! Each file does one job: [`download`] fetches (http, https, file, local paths) with
//! [`checksum`] and [`progress`]; [`decompress`] streams the four compressions; [`cpio`],
//! [`ramdisk`] and [`uimage`] extend a ramdisk and wrap images as mkimage does; [`rootfs`] and
//! [`modules`] unpack tarballs into a root tree without ever writing outside it ([`inroot`]).

pub mod checksum;
pub mod cpio;
pub mod decompress;
pub mod download;
pub mod inroot;
pub mod modules;
pub mod progress;
pub mod ramdisk;
pub mod rootfs;
pub mod uimage;

pub use download::{decompressed_on_fetch, fetch, fetch_with, FetchOptions, Fetched};
pub use modules::{install_modules, unpack_modules};
pub use progress::Progress;
pub use ramdisk::{rebuild_ramdisk, RamdiskSpec};
pub use rootfs::{copy_tree, unpack_rootfs};
pub use uimage::{wrap, ImageKind};
