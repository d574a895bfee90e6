//! ferry-tree: pure logic, no I/O beyond reading a tree.
//!
//! - [`path`]: validation of volume names, relative paths and symlink targets
//!   (everything that comes from the other side goes through here).
//! - [`manifest`]: the manifest of one volume version (path, kind, mode, uid,
//!   gid, size, blake3, link target) and its canonical digest.
//! - [`diff`]: the plan that turns one manifest into another, and applying a
//!   plan to a manifest (the guest's check of what the host sends).
//! - [`scan`]: reading a volume directory into a manifest, kubelet layout aware.
//! - [`volume`]: tree and file volumes; reading a single-file volume's source
//!   (a kubelet key through `..data`, once).
//! - [`stamp`]: kubelet's `YYYY_MM_DD_HH_MM_SS` version stamp, shared by the
//!   guest's version names and the kubelet stand-in.

pub mod diff;
pub mod manifest;
pub mod path;
pub mod scan;
pub mod stamp;
pub mod volume;

pub use diff::{Plan, apply, diff};
pub use manifest::{Digest, Entry, Kind, Manifest};
pub use path::{Limits, PathError};
pub use scan::{Layout, ScanError, Scanned, scan_volume};
pub use volume::{FILE_ENTRY, VolumeKind, scan_file};
