//! Conversions between wire entries and [`ferry_tree`] entries. Wire input is
//! checked for shape here (kind, hash length); paths and targets are checked
//! by the guest with `ferry_tree::diff::validate_entry`.
use ferry_tree::{Entry, Kind, VolumeKind};

use crate::ferry as pb;

/// Why a wire entry could not become a tree entry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("entry {0:?}: kind is unspecified")]
    NoKind(String),
    #[error("entry {path:?}: blake3 must be 32 bytes, got {len}")]
    HashLen { path: String, len: usize },
}

/// The wire kind of a tree kind.
pub fn kind_to_pb(k: Kind) -> pb::Kind {
    match k {
        Kind::File => pb::Kind::KIND_FILE,
        Kind::Dir => pb::Kind::KIND_DIR,
        Kind::Symlink => pb::Kind::KIND_SYMLINK,
    }
}

/// The wire kind of a volume kind.
pub fn volume_kind_to_pb(k: VolumeKind) -> pb::VolumeKind {
    match k {
        VolumeKind::Tree => pb::VolumeKind::VOLUME_KIND_TREE,
        VolumeKind::File => pb::VolumeKind::VOLUME_KIND_FILE,
    }
}

/// A volume kind from the wire; `None` for a value this build does not know.
pub fn volume_kind_from_pb(k: protobuf::EnumOrUnknown<pb::VolumeKind>) -> Option<VolumeKind> {
    match k.enum_value() {
        Ok(pb::VolumeKind::VOLUME_KIND_TREE) => Some(VolumeKind::Tree),
        Ok(pb::VolumeKind::VOLUME_KIND_FILE) => Some(VolumeKind::File),
        Err(_) => None,
    }
}

/// A wire entry (metadata only; `source` and `data` are left for the caller).
pub fn entry_to_pb(e: &Entry) -> pb::Entry {
    let mut p = pb::Entry::new();
    p.path = e.path.clone();
    p.kind = kind_to_pb(e.kind).into();
    p.mode = e.mode;
    p.uid = e.uid;
    p.gid = e.gid;
    p.size = e.size;
    if e.kind == Kind::File {
        p.blake3 = e.hash.to_vec();
    }
    p.target = e.target.clone();
    p
}

/// A tree entry from a wire entry.
pub fn entry_from_pb(p: &pb::Entry) -> Result<Entry, ConvertError> {
    let kind = match p.kind.enum_value() {
        Ok(pb::Kind::KIND_FILE) => Kind::File,
        Ok(pb::Kind::KIND_DIR) => Kind::Dir,
        Ok(pb::Kind::KIND_SYMLINK) => Kind::Symlink,
        _ => return Err(ConvertError::NoKind(p.path.clone())),
    };
    let mut hash = [0u8; 32];
    if kind == Kind::File {
        if p.blake3.len() != 32 {
            return Err(ConvertError::HashLen {
                path: p.path.clone(),
                len: p.blake3.len(),
            });
        }
        hash.copy_from_slice(&p.blake3);
    }
    Ok(Entry {
        path: p.path.clone(),
        kind,
        mode: p.mode,
        uid: p.uid,
        gid: p.gid,
        size: if kind == Kind::File { p.size } else { 0 },
        hash,
        target: if kind == Kind::Symlink {
            p.target.clone()
        } else {
            String::new()
        },
    })
}

/// A 32-byte digest from the wire; empty means "no volume yet" (the digest
/// of the empty manifest).
pub fn digest_from_pb(b: &[u8]) -> Option<ferry_tree::Digest> {
    if b.is_empty() {
        return Some(ferry_tree::manifest::empty_digest());
    }
    b.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        for e in [
            Entry::file("a/b", 0o640, 1, 2, b"xyz"),
            Entry::dir("a", 0o2775, 0, 2000),
            Entry::symlink("l", "a/b", 0, 0),
        ] {
            assert_eq!(entry_from_pb(&entry_to_pb(&e)).unwrap(), e);
        }
    }

    #[test]
    fn volume_kinds_round_trip_and_unknown_ones_are_refused() {
        for k in [VolumeKind::Tree, VolumeKind::File] {
            assert_eq!(volume_kind_from_pb(volume_kind_to_pb(k).into()), Some(k));
        }
        assert_eq!(
            volume_kind_from_pb(protobuf::EnumOrUnknown::from_i32(7)),
            None
        );
    }

    #[test]
    fn refuses_malformed_entries() {
        let mut p = entry_to_pb(&Entry::file("a", 0o644, 0, 0, b"x"));
        p.blake3.truncate(5);
        assert!(matches!(
            entry_from_pb(&p),
            Err(ConvertError::HashLen { len: 5, .. })
        ));
        p.kind = pb::Kind::KIND_UNSPECIFIED.into();
        assert!(matches!(entry_from_pb(&p), Err(ConvertError::NoKind(_))));
    }
}
