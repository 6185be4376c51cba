//! The board's serial console: [`connection`] runs the device's connection command and moves
//! bytes; [`matcher`] is the pure, I/O-free matcher the waits feed those bytes to.

pub mod connection;
pub mod matcher;
