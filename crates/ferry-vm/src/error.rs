//! Errors of `ferry vm`, one enum for the crate: each names what was wrong
//! and, for a guest that misbehaved, carries the end of its console log.
use std::{io, path::Path};

/// What went wrong building, booting or checking a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    /// A host tool is missing or failed (apt-get, dpkg, cargo, QEMU).
    #[error("{0}")]
    Command(String),
    #[error("kernel: {0}")]
    Kernel(String),
    /// The guest did not answer, or died; the console log says why.
    #[error("{why}\n---- guest console ({log}), last lines ----\n{tail}\n---- end of console ----")]
    Guest {
        why: String,
        log: String,
        tail: String,
    },
    /// The guest answered, but not what the host expected.
    #[error("check failed: {0}")]
    Check(String),
    #[error(transparent)]
    Host(#[from] ferry_host::HostError),
    #[error(transparent)]
    Transport(#[from] ferry_proto::transport::TransportError),
}

/// `Result` of this crate.
pub type Result<T, E = VmError> = std::result::Result<T, E>;

/// Maps an I/O error on `path`.
pub fn io_err(path: &Path) -> impl FnOnce(io::Error) -> VmError + '_ {
    move |source| VmError::Io {
        path: path.display().to_string(),
        source,
    }
}
