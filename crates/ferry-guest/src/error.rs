//! The guest's errors, and the one place they become ttRPC status codes.
//!
//! The host decides what to do from the code alone (see the host's sync
//! loop): INVALID_ARGUMENT means its plan or data is wrong and retrying the
//! same thing is pointless; FAILED_PRECONDITION means its view of the guest
//! is stale and it must fetch the manifest again; ABORTED means "try again
//! later"; RESOURCE_EXHAUSTED means the volume will never fit. So every
//! variant maps to its code on purpose, and only real surprises are INTERNAL.
use ferry_proto::{
    convert::ConvertError,
    transport::TransportError,
    wire::{self, Code},
};
use ferry_tree::{PathError, diff::ApplyError};

use crate::fsops::FsError;

/// `Result` with a [`GuestError`].
pub type Result<T, E = GuestError> = std::result::Result<T, E>;

/// Everything the guest store and agent can refuse or fail at. Messages are
/// lowercase and name the offending thing, because they travel to the host's
/// log verbatim.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// A volume name, path or symlink target that is not acceptable.
    #[error(transparent)]
    Path(#[from] PathError),
    /// A plan step inconsistent with the transaction's manifest.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// A wire entry of the wrong shape (kind, hash length).
    #[error(transparent)]
    Convert(#[from] ConvertError),
    /// An entry whose fields contradict each other or the policy.
    #[error("invalid entry {path:?}: {why}")]
    BadEntry { path: String, why: String },
    /// A digest on the wire that is not 32 bytes.
    #[error("invalid {what}: a digest is 32 bytes, got {len}")]
    DigestLen { what: &'static str, len: usize },
    /// A chunk that does not continue the file where it stands.
    #[error("chunk for {path:?} at offset {offset}, expected {expected}")]
    ChunkOffset {
        path: String,
        offset: u64,
        expected: u64,
    },
    /// A chunk over [`ferry_proto::MAX_CHUNK_BYTES`].
    #[error("chunk for {path:?} is {len} bytes, the largest chunk is {max}")]
    ChunkTooBig {
        path: String,
        len: usize,
        max: usize,
    },
    /// More (or less) content than the entry declared.
    #[error("size lies: {path:?} was declared {declared} bytes but {got}")]
    SizeLies {
        path: String,
        declared: u64,
        got: String,
    },
    /// Content whose blake3 is not the one declared.
    #[error("blake3 mismatch for {path:?}: declared {declared}, content has {actual}")]
    HashMismatch {
        path: String,
        declared: String,
        actual: String,
    },
    /// The host's digest of the new manifest differs from the guest's.
    #[error(
        "manifest digest mismatch on commit of volume {volume:?}: the host sent {host}, the entries received make {guest}"
    )]
    ManifestDigest {
        volume: String,
        host: String,
        guest: String,
    },
    /// A transaction id the guest does not know (never begun, committed,
    /// aborted or reaped).
    #[error("unknown transaction {0} (never begun, already committed, aborted or timed out)")]
    UnknownTxn(u64),
    /// A chunk for a path that awaits no content.
    #[error("no pending file {path:?} in transaction {txn}")]
    NotPending { txn: u64, path: String },
    /// SOURCE_BASE for content the base version does not have.
    #[error("{path:?}: no file with blake3 {hash} and size {size} in the base version")]
    NotInBase {
        path: String,
        hash: String,
        size: u64,
    },
    /// The host computed its plan against another version than the guest has.
    #[error(
        "base digest mismatch for volume {volume:?}: the guest holds generation {generation} with digest {guest}, the host's plan is based on {host}; fetch the manifest again"
    )]
    BaseMismatch {
        volume: String,
        generation: u64,
        guest: String,
        host: String,
    },
    /// Commit while content is still missing.
    #[error(
        "cannot commit transaction {txn}: {count} file(s) still wait for content, the first is {first:?}"
    )]
    PendingFiles {
        txn: u64,
        first: String,
        count: usize,
    },
    /// An entry in a file volume other than its one file at `content`.
    #[error(
        "file volume {volume:?} holds exactly one file entry, at path \"content\"; refusing entry {path:?}"
    )]
    NotFileEntry { volume: String, path: String },
    /// A file volume committed without its one file.
    #[error(
        "cannot commit file volume {volume:?}: it must hold exactly one file entry at \"content\", the transaction holds {entries} entries"
    )]
    FileVolumeShape { volume: String, entries: usize },
    /// A volume kind this agent does not know.
    #[error("volume {volume:?}: unknown volume kind {value}")]
    UnknownKind { volume: String, value: i32 },
    /// A Begin of one kind on a volume of the other kind.
    #[error(
        "volume {volume:?} is a {holds} volume, not a {asked} volume: remove it first to reuse the name"
    )]
    KindMismatch {
        volume: String,
        holds: ferry_tree::VolumeKind,
        asked: ferry_tree::VolumeKind,
    },
    /// A volume the store does not hold.
    #[error("no volume {0:?} in the store")]
    NoVolume(String),
    /// A path that is not in a volume's current version.
    #[error("no {path:?} in volume {volume:?}")]
    NoSuchPath { volume: String, path: String },
    /// A path that should name a regular file and does not.
    #[error("{path:?} in volume {volume:?} is not a regular file")]
    NotAFile { volume: String, path: String },
    /// A path given for a file volume, which has none.
    #[error("volume {volume:?} is a file volume: it has no path {path:?} (leave the path empty)")]
    PathOnFileVolume { volume: String, path: String },
    /// A read larger than the agent serves in one message.
    #[error("max_bytes {asked} is more than the largest read, {limit}")]
    ReadTooBig { asked: u64, limit: u64 },
    /// A mount request that cannot be carried out as asked.
    #[error("mount of volume {volume:?} at {target:?}: {why}")]
    BadMount {
        volume: String,
        target: String,
        why: String,
    },
    /// The kernel refused a bind mount (not root, no mount namespace
    /// rights).
    #[error("bind mount at {target:?}: {source}")]
    BindMount {
        target: String,
        #[source]
        source: std::io::Error,
    },
    /// A host speaking another protocol version.
    #[error("protocol version mismatch: the host speaks {host}, this agent speaks {guest}")]
    ProtocolVersion { host: u32, guest: u32 },
    /// Another transaction holds the volume.
    #[error("volume {volume:?} is busy: transaction {txn} in progress")]
    Busy { volume: String, txn: u64 },
    /// A per-volume or per-store quota would be exceeded.
    #[error("quota exceeded: {what} would be {wanted}, the limit is {limit} (at {path:?})")]
    Quota {
        what: String,
        wanted: u64,
        limit: u64,
        path: String,
    },
    /// No room for another volume.
    #[error(
        "quota exceeded: cannot create volume {volume:?}, the store already holds {limit} volumes"
    )]
    TooManyVolumes { volume: String, limit: u64 },
    /// The filesystem under the store is full.
    #[error("store full: {0}")]
    NoSpace(FsError),
    /// The kernel refused to resolve a path under its root (a symlink or a
    /// `..` on the way): something tried to leave the volume.
    #[error("confinement violation: {0}")]
    Confinement(FsError),
    /// Any other filesystem failure.
    #[error(transparent)]
    Fs(FsError),
    /// A volume that cannot be read back from disk.
    #[error(transparent)]
    Scan(#[from] ferry_tree::ScanError),
    /// A state file that cannot be read back.
    #[error("state file {path}: {why}")]
    State { path: String, why: String },
    /// A transaction was aborted because of `source`; the previous version
    /// is untouched.
    #[error(
        "{source}; transaction {txn} aborted, the current version of volume {volume:?} is untouched"
    )]
    TxnAborted {
        txn: u64,
        volume: String,
        #[source]
        source: Box<GuestError>,
    },
    /// Bad agent configuration (never on the wire).
    #[error("{0}")]
    Config(String),
    /// Mounting the store's tmpfs failed.
    #[error("mount tmpfs at {path}: {source}")]
    Mount {
        path: String,
        source: std::io::Error,
    },
    /// Listening on the agent's address failed.
    #[error(transparent)]
    Listen(#[from] TransportError),
    /// The ttRPC server failed.
    #[error("ttrpc server: {0}")]
    Server(String),
}

impl From<FsError> for GuestError {
    /// Sorts filesystem errors: confinement refusals from openat2 (`EXDEV`
    /// for an escape, `ELOOP` for a symlink on the way) and a full store are
    /// the caller's business; everything else is ours.
    fn from(e: FsError) -> Self {
        use rustix::io::Errno;
        match e.errno() {
            Some(Errno::XDEV | Errno::LOOP) => GuestError::Confinement(e),
            Some(Errno::NOSPC | Errno::DQUOT) => GuestError::NoSpace(e),
            _ => GuestError::Fs(e),
        }
    }
}

impl GuestError {
    /// The ttRPC status code of this error: the contract with the host.
    pub fn code(&self) -> Code {
        use GuestError::*;
        match self {
            Path(_)
            | Apply(_)
            | Convert(_)
            | BadEntry { .. }
            | DigestLen { .. }
            | ChunkOffset { .. }
            | ChunkTooBig { .. }
            | SizeLies { .. }
            | HashMismatch { .. }
            | ManifestDigest { .. }
            | NotFileEntry { .. }
            | FileVolumeShape { .. }
            | UnknownKind { .. }
            | NotAFile { .. }
            | PathOnFileVolume { .. }
            | ReadTooBig { .. }
            | BadMount { .. } => Code::INVALID_ARGUMENT,
            UnknownTxn(_)
            | NotPending { .. }
            | NotInBase { .. }
            | NoVolume(_)
            | NoSuchPath { .. } => Code::NOT_FOUND,
            BaseMismatch { .. }
            | PendingFiles { .. }
            | ProtocolVersion { .. }
            | KindMismatch { .. } => Code::FAILED_PRECONDITION,
            BindMount { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
                Code::PERMISSION_DENIED
            }
            Busy { .. } => Code::ABORTED,
            Quota { .. } | TooManyVolumes { .. } | NoSpace(_) => Code::RESOURCE_EXHAUSTED,
            Confinement(_) => Code::PERMISSION_DENIED,
            TxnAborted { source, .. } => source.code(),
            Fs(_)
            | Scan(_)
            | State { .. }
            | Config(_)
            | Mount { .. }
            | BindMount { .. }
            | Listen(_)
            | Server(_) => Code::INTERNAL,
        }
    }

    /// The ttRPC error sent to the host.
    pub fn to_status(&self) -> ttrpc::Error {
        wire::status(self.code(), self)
    }
}

impl From<GuestError> for ttrpc::Error {
    fn from(e: GuestError) -> Self {
        e.to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aborted_transactions_keep_the_code_of_their_cause() {
        let e = GuestError::TxnAborted {
            txn: 7,
            volume: "v".into(),
            source: Box::new(GuestError::ChunkOffset {
                path: "a".into(),
                offset: 3,
                expected: 0,
            }),
        };
        assert_eq!(e.code(), Code::INVALID_ARGUMENT);
        let msg = e.to_string();
        assert!(
            msg.contains("chunk for \"a\" at offset 3, expected 0"),
            "{msg}"
        );
        assert!(msg.contains("transaction 7 aborted"), "{msg}");
    }

    #[test]
    fn confinement_and_space_errors_are_sorted_by_errno() {
        use rustix::io::Errno;
        let fs = |errno: Errno| FsError::new("open", "a/b", errno.into());
        assert_eq!(
            GuestError::from(fs(Errno::XDEV)).code(),
            Code::PERMISSION_DENIED
        );
        assert_eq!(
            GuestError::from(fs(Errno::LOOP)).code(),
            Code::PERMISSION_DENIED
        );
        assert_eq!(
            GuestError::from(fs(Errno::NOSPC)).code(),
            Code::RESOURCE_EXHAUSTED
        );
        assert_eq!(GuestError::from(fs(Errno::IO)).code(), Code::INTERNAL);
    }
}
