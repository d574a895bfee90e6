//! The host's errors, and how the sync loop reads them: a dead connection
//! means reconnect and resync; a stale base means fetch the guest's manifest
//! again; anything else is reported for that volume and retried later.
use std::path::PathBuf;

use ferry_proto::{
    transport::TransportError,
    wire::{Code, code_of, message_of},
};

/// Errors of the host side.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("{what} failed: {}", message_of(.source))]
    Rpc { what: String, source: ttrpc::Error },
    #[error(transparent)]
    Scan(#[from] ferry_tree::ScanError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("agent speaks protocol {agent}, this ferry speaks {ours}: upgrade one side")]
    ProtocolMismatch { agent: u32, ours: u32 },
    #[error("{0}")]
    Protocol(String),
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error("volume {volume}: {path} changed while it was being sent")]
    SourceChanged { volume: String, path: String },
    #[error(
        "invalid volume spec {0:?}: expected NAME=DIR with NAME matching [a-z0-9][a-z0-9._-]{{0,252}}"
    )]
    VolumeSpec(String),
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, HostError>;

impl HostError {
    /// An RPC error, naming the call.
    pub fn rpc(what: impl Into<String>, source: ttrpc::Error) -> Self {
        HostError::Rpc {
            what: what.into(),
            source,
        }
    }

    /// The status code the agent sent, if it sent one.
    pub fn code(&self) -> Option<Code> {
        match self {
            HostError::Rpc { source, .. } => code_of(source),
            _ => None,
        }
    }

    /// True when the connection is gone (no status from the agent): the
    /// caller should reconnect and resync.
    pub fn is_disconnect(&self) -> bool {
        match self {
            HostError::Transport(_) => true,
            // A call that timed out leaves the connection in doubt: start over.
            HostError::Rpc { source, .. } => {
                matches!(code_of(source), None | Some(Code::DEADLINE_EXCEEDED))
            }
            _ => false,
        }
    }
}
