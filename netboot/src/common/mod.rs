//! What the four servers share rather than each writing its own: which client addresses an
//! export admits ([`ClientNet`]), sizes written by people ([`parse_size`]), the errors of
//! their configurations ([`ConfigError`]) and the end of a run ([`drain`] with grace).

mod clients;
mod config_error;
mod drain;
mod size;

pub use clients::ClientNet;
pub use config_error::ConfigError;
pub use drain::{drain, SHUTDOWN_GRACE};
pub use size::parse_size;
