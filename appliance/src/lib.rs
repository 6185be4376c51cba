//! The labboot appliance: the `labboot` command line and the commands it bundles.
//!
//! [`cli`] parses the arguments and maps every failure to one line on stderr and a non-zero exit;
//! each subcommand lives in its own module under [`cmd`].

pub mod boardscript;
pub mod cli;
pub mod client;
pub mod cmd;
pub mod config_file;
pub mod fsutil;
pub mod lab;
pub mod runtime;
pub mod serve;
pub mod shutdown;
pub mod store;
