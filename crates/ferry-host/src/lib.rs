//! ferry-host: the node side of ferry.
//!
//! - [`bundle`]: discovery from an OCI bundle: which mounts carry pod data,
//!   their guest names, and the spec rewritten to the guest copies.
//! - [`client`]: a connected ferry-agent (handshake, paged manifest reads),
//!   with every byte on the wire counted.
//! - [`sync`]: one volume, one transaction: scan, diff against what the
//!   guest holds, send only the difference, commit by digest.
//! - [`watch`]: inotify on the volume directories, no polling: a kubelet
//!   volume is synced on its `..data` rename, a plain directory once its
//!   events drain.
//! - [`run`]: `ferry sync`: the loop that ties them together, with reconnect,
//!   backoff and resync from the guest's manifest.
//! - [`sandbox`]: `ferry sandbox`: a container's bundle in, its volumes
//!   synced, the rewritten spec out, the termination log back.
//! - [`status`]: `ferry status`.
//! - [`termlog`]: `ferry termination-log`: the guest's termination log read
//!   back and written where kubelet looks, capped and atomically.
//! - [`kubelet`]: a kubelet stand-in (AtomicWriter to the letter, volume
//!   payloads, Service Account token rotation, a pod's files) for the demo
//!   and the tests.
//! - [`proxy`]: a byte-counting unix socket proxy (demo and tests measure the
//!   wire with it).
//! - [`demo`]: `ferry demo`.

pub mod bundle;
pub mod cli;
pub mod client;
pub mod demo;
pub mod error;
pub mod kubelet;
pub mod proxy;
pub mod run;
pub mod sandbox;
pub mod status;
pub mod sync;
pub mod termlog;
pub mod watch;

pub use error::{HostError, Result};

/// Human-readable byte counts ("1.5 KiB").
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
