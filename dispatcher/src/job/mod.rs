//! The job file: LAVA V2 job YAML, checked against LAVA's schema rules with line numbers.
//!
//! [`parse_job`] and [`load_job`] turn a job file into [`model::Job`]; every rule LAVA's
//! schema states for the keys labboot supports gives one JobError line
//! `FILE:LINE: key.path: what is wrong`. Keys LAVA accepts but labboot cannot honour are
//! refused with "not supported by labboot" rather than silently ignored.

mod artifact;
mod boot;
mod common;
mod deploy;
mod header;
pub mod model;
mod parse;
pub(crate) mod schema;
mod test;
mod testdef;

pub use model::*;
pub use parse::{load_job, parse_job};

#[cfg(test)]
mod tests;
