//! One module per `labboot` subcommand: its clap arguments and its `run`.

pub mod board;
pub mod completions;
pub mod dhcp;
pub mod dispatch;
pub mod image;
pub mod job;
pub mod nbd;
pub mod nfs;
pub mod sdcard;
pub mod serve;
pub mod tftp;
pub mod uboot;
