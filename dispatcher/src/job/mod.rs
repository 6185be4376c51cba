//! The job file: LAVA V2 job YAML, checked against LAVA's schema rules with line numbers.

pub mod model;

pub use model::*;
