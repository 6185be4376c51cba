//! What the four servers share rather than each writing its own: which client addresses an
//! export admits ([`ClientNet`]), sizes written by people ([`parse_size`]) and the errors of
//! their configurations ([`ConfigError`]).

mod clients;
mod config_error;
mod size;

pub use clients::ClientNet;
pub use config_error::ConfigError;
pub use size::parse_size;
