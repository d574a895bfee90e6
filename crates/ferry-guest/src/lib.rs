//! ferry-guest: the guest store and the ttRPC service of `ferry-agent`.
//!
//! The host names a volume and sends paths relative to it; the guest decides
//! every path on its disk, checks every byte, and publishes each new version
//! of a volume with one atomic rename in kubelet's AtomicWriter layout.
//!
//! - [`error`]: [`GuestError`], and the one place it becomes a ttRPC code.
//! - [`limits`]: the store's quotas ([`StoreLimits`]) and size parsing.
//! - [`policy`]: what the guest does to modes (no setuid files by default).
//! - [`fsops`]: confined filesystem operations (openat2 `RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS`), copying and removing trees without following
//!   links.
//! - [`layout`]: `..data -> ..<version>`, the atomic publish, visible links.
//! - [`version`]: kubelet-style version names (`YYYY_MM_DD_HH_MM_SS.<gen>`).
//! - [`state`]: a volume's committed state and its state file.
//! - [`txn`]: the transaction engine: staging, checks, quotas, chunks.
//! - [`file_volume`]: file volumes, one file updated in place (single-file
//!   bind mounts: etc-hosts, resolv.conf, termination-log, subPath).
//! - [`store`]: [`Store`], volumes with a lock each, begin/commit/abort.
//! - [`inspect`]: the read-only calls: GetManifest, Verify, ReadFile.
//! - [`mount`]: bind mounts of volumes into a container's rootfs, the
//!   target confined to it (`RESOLVE_IN_ROOT`), behind the [`Mounter`]
//!   trait (the real syscalls, or a recording fake).
//! - [`restore`]: loading and repairing the store after a restart.
//! - [`service`]: the thin ttRPC handlers ([`Service`]).
//! - [`agent`]: [`AgentArgs`], [`AgentConfig`] and [`run`] for the binary.
//! - [`init`]: a VM guest's PID 1: mounts, modules, the kernel command
//!   line, the supervised agent, power off.

pub mod agent;
pub mod error;
pub mod file_volume;
pub mod fsops;
pub mod init;
pub mod inspect;
pub mod layout;
pub mod limits;
pub mod mount;
pub mod policy;
pub mod restore;
pub mod service;
pub mod state;
pub mod store;
pub mod txn;
pub mod version;

pub use agent::{AgentArgs, AgentConfig, run};
pub use error::{GuestError, Result};
pub use limits::{StoreLimits, parse_size};
pub use mount::{Mounter, RecordingMounter, SysMounter};
pub use policy::Policy;
pub use service::Service;
pub use store::{Aborted, CommitOutcome, Store};
