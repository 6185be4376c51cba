//! The labboot dispatcher: runs LAVA V2 test jobs on boards.
//!
//! A job file and a device (a rendered device YAML, or a device dictionary rendered from
//! device-type templates) become a [`pipeline::Pipeline`]: a tree of actions with LAVA's levels,
//! timeouts and retries, built once and validated before anything touches a board. Running it
//! downloads and prepares the artefacts, publishes them through [`services::LabServices`] (the
//! one seam to labboot's TFTP, NFS, NBD and DHCP servers: the dispatcher knows nothing of
//! sockets), boots the board through U-Boot, runs the test shell and writes LAVA's
//! `logs.yaml`, `results.yaml` and `description.yaml`.
//!
//! Module map:
//! * [`job`], [`device`], [`timeout`], [`yaml`]: the inputs, checked with line numbers.
//! * [`pipeline`]: the action tree, levels, timeout precedence, `description.yaml`.
//! * [`artifacts`]: downloads with checksums and decompression; ramdisk, rootfs, uImage.
//! * [`testdef`], [`overlay`]: test definitions and the board-side test scripts.
//! * [`console`], [`signals`]: the serial line, a pure matcher over its bytes, LAVA's signals.
//! * [`actions`], [`run`]: what each action does, and the runner with deadlines and retries.
//! * [`results`], [`logs`]: the job's outputs.

pub mod actions;
pub mod artifacts;
pub mod console;
pub mod device;
pub mod error;
pub mod job;
pub mod logs;
pub mod overlay;
pub mod pipeline;
pub mod results;
pub mod run;
pub mod services;
pub mod signals;
pub mod testdef;
pub mod timeout;
pub mod yaml;

pub use error::{Error, ErrorKind, Result};
