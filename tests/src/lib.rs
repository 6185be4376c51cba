//! The virtual-lab harness shared by labboot's end-to-end tests.
//!
//! * [`binary`] finds (and if needed builds) the `labboot` binary under test.
//! * [`netns`] creates private network namespaces with veth pairs and tap devices, removed on drop.
//! * [`master`] builds the shipped master image and starts the master labs' DHCP server.
//! * [`qemu`] starts an arm64 QEMU board running real U-Boot from a disk image and a tap NIC.
//! * [`dispatch`] is a private lab for `labboot dispatch` jobs on a [`lab_board`] board.
//! * [`lab_board`] wires a QEMU board like a lab board: power and console commands.
//! * [`console`] reads a serial console with an expect-style API.
//! * [`process`] runs a server under test until it logs readiness, and kills it on drop.
//! * [`require`] makes tests that need root, KVM or a peer tool say so loudly instead of skipping.
//! * [`webdriver`] drives headless Chromium through `chromedriver` (W3C WebDriver), in a namespace.
//!
//! Every resource a test creates is released in `Drop`, so a failing or panicking test cleans up.

pub mod appliance;
pub mod binary;
pub mod console;
pub mod demo;
pub mod dispatch;
pub mod lab_board;
pub mod master;
pub mod netns;
pub mod process;
pub mod qemu;
pub mod require;
pub mod webdriver;
