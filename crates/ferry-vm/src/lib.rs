//! ferry-vm: ferry across a real VM boundary. `ferry vm demo` boots a QEMU
//! guest whose init is a statically linked ferry-agent, reaches it over
//! vhost-user vsock with no shared filesystem, keeps a kubelet-style pod
//! current in it and proves every version from inside the guest.
//!
//! - [`cpio`]: the initramfs format (newc, uncompressed), written by hand.
//! - [`kernel`]: the Debian cloud kernel (`apt-get download`, `dpkg -x`) and
//!   the vsock modules in dependency order.
//! - [`host`]: QEMU, `vhost-device-vsock` (installed if missing), the static
//!   agent build, KVM-or-TCG.
//! - [`setup`]: all of the above gathered into a bootable [`setup::Prepared`],
//!   the initramfs writer, working directories.
//! - [`vm`]: one running guest: launch, console log, readiness, power off.
//! - [`demo`]: `ferry vm demo` (and `ferry vm boot`).
//! - [`faults`]: `ferry vm faults`: a guest that never comes up, a refused
//!   handshake, the agent killed in the guest, a bad kernel command line.
//! - [`stats`]: latency percentiles.
//! - [`cli`]: the `ferry vm` arguments.
//!
//! The guest side lives in `ferry_guest::init`.

pub mod cli;
pub mod cpio;
pub mod demo;
pub mod error;
pub mod faults;
pub mod host;
pub mod kernel;
pub mod setup;
pub mod stats;
pub mod vm;

pub use error::{Result, VmError};
