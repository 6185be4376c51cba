//! The network-boot servers of labboot.
//!
//! * [`dhcp`] hands out leases and boot options, and tells boards apart by identity rather than MAC.
//! * [`tftp`] serves boot files, including per-board *virtual* files rendered at request time.
//!
//! The servers know nothing of jobs: callers hand them content through small traits.

pub mod dhcp;
pub mod nbd;
pub mod nfs;
pub mod tftp;
