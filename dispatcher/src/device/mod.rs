//! The device: a rendered device YAML, or a device dictionary rendered from templates.

pub mod model;

pub use model::*;
