//! Legacy U-Boot images of type script: build them like `mkimage -T script`, check and list them
//! like `dumpimage -l`.
//!
//! ```
//! use uboot_scripts::image::{build_script, inspect, Arch, ScriptSpec};
//!
//! let spec = ScriptSpec { arch: Arch::Arm64, name: "boot".into(), time: 0 };
//! let image = build_script(&spec, b"echo hello\n").unwrap();
//! let listing = inspect(&image).unwrap();
//! assert_eq!(listing.part(&image, 0), Some(&b"echo hello\n"[..]));
//! ```

mod arch;
pub mod header;
mod inspect;
mod names;
mod script;
pub mod timestamp;

pub use arch::{Arch, UnknownArch};
pub use header::Header;
pub use inspect::{inspect, InspectError, Listing, Part};
pub use script::{build_multi_script, build_script, BuildError, ScriptSpec};
