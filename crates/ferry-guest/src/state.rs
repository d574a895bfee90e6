//! The committed state of a volume, and its state file.
//!
//! The manifest of a version keeps the host's *logical* entries (modes before
//! clamping, owners even when an unprivileged agent could not apply them), so
//! it cannot be rebuilt exactly from the disk. It is saved at every commit in
//! `<root>/state/<name>.manifest` (a protobuf `GetManifestResponse`: summary
//! plus every entry), written to a temp name, fsynced and renamed. After a
//! restart it is trusted only if its version is the one `..data` points to
//! and its digest matches its entries; otherwise the volume is rescanned.
use std::io::{Read, Write};

use ferry_proto::{convert, ferry as pb};
use ferry_tree::{Manifest, VolumeKind, manifest::empty_digest};
use protobuf::Message;

use crate::{
    error::{GuestError, Result},
    fsops::Dir,
};

/// A published version of a volume.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The logical manifest, as the host sent it.
    pub manifest: Manifest,
    /// The version name, without the leading `..`.
    pub version: String,
    /// 1 for the first commit, +1 for each one after.
    pub generation: u64,
    /// When it was published (unix ms).
    pub last_commit_ms: i64,
    /// A tree (`<root>/volumes/<name>`) or a file (`<root>/files/<name>`).
    pub kind: VolumeKind,
}

/// The summary of a volume; `None` is a volume that does not exist (yet),
/// which has generation 0 and the empty manifest's digest.
pub fn summary(name: &str, c: Option<&Committed>) -> pb::VolumeSummary {
    let mut s = pb::VolumeSummary::new();
    s.name = name.to_string();
    match c {
        None => s.digest = empty_digest().to_vec(),
        Some(c) => {
            s.generation = c.generation;
            s.version = c.version.clone();
            s.digest = c.manifest.digest().to_vec();
            s.files = c.manifest.file_count();
            s.bytes = c.manifest.total_bytes();
            s.entries = c.manifest.len() as u64;
            s.last_commit_unix_ms = c.last_commit_ms;
            s.kind = convert::volume_kind_to_pb(c.kind).into();
        }
    }
    s
}

/// The state file name of a volume.
pub fn file_name(volume: &str) -> String {
    format!("{volume}.manifest")
}

/// Saves `c` as the state of `volume`, atomically.
pub fn save(state_dir: &Dir, volume: &str, c: &Committed) -> Result<()> {
    let mut msg = pb::GetManifestResponse::new();
    msg.volume = Some(summary(volume, Some(c))).into();
    msg.entries = c.manifest.iter().map(convert::entry_to_pb).collect();
    let bytes = msg.write_to_bytes().map_err(|e| GuestError::State {
        path: file_name(volume),
        why: format!("encode: {e}"),
    })?;
    let name = file_name(volume);
    let tmp = format!("{name}.tmp");
    state_dir.unlink(&tmp)?;
    let mut f = state_dir.create_file(&tmp)?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| crate::fsops::FsError::new("write", tmp.clone(), e))?;
    drop(f);
    state_dir.rename(&tmp, &name)?;
    state_dir.fsync()?;
    Ok(())
}

/// Loads the state of `volume`; `None` when there is no state file.
/// A file that cannot be decoded, or whose entries do not make its digest,
/// is an error (the caller rescans).
pub fn load(state_dir: &Dir, volume: &str) -> Result<Option<Committed>> {
    let name = file_name(volume);
    let mut f = match state_dir.open_file(&name) {
        Ok(f) => f,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let bad = |why: String| GuestError::State {
        path: name.clone(),
        why,
    };
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)
        .map_err(|e| bad(format!("read: {e}")))?;
    let msg = pb::GetManifestResponse::parse_from_bytes(&bytes)
        .map_err(|e| bad(format!("decode: {e}")))?;
    let s = msg
        .volume
        .into_option()
        .ok_or_else(|| bad("no summary".into()))?;
    if s.name != volume {
        return Err(bad(format!("holds volume {:?}", s.name)));
    }
    let manifest: Manifest = msg
        .entries
        .iter()
        .map(convert::entry_from_pb)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if manifest.digest().as_slice() != s.digest.as_slice() {
        return Err(bad("entries do not match the recorded digest".into()));
    }
    let kind = convert::volume_kind_from_pb(s.kind)
        .ok_or_else(|| bad(format!("unknown volume kind {}", s.kind.value())))?;
    Ok(Some(Committed {
        kind,
        manifest,
        version: s.version,
        generation: s.generation,
        last_commit_ms: s.last_commit_unix_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_tree::Entry;

    #[test]
    fn round_trip_and_corruption() {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::open_root(t.path()).unwrap();
        assert!(load(&d, "v").unwrap().is_none());
        let c = Committed {
            manifest: Manifest::from_iter([
                Entry::dir("d", 0o2775, 0, 2000),
                Entry::file("d/k", 0o4755, 1, 2, b"x"),
            ]),
            version: "2026_01_01_00_00_00.3".into(),
            generation: 3,
            last_commit_ms: 5,
            kind: VolumeKind::Tree,
        };
        save(&d, "v", &c).unwrap();
        save(&d, "v", &c).unwrap();
        let got = load(&d, "v").unwrap().unwrap();
        assert_eq!(got.manifest, c.manifest);
        assert_eq!(
            (got.version.as_str(), got.generation),
            (c.version.as_str(), 3)
        );
        assert_eq!(got.kind, VolumeKind::Tree);
        let f = Committed {
            manifest: Manifest::from_iter([Entry::file(ferry_tree::FILE_ENTRY, 0o644, 0, 0, b"h")]),
            kind: VolumeKind::File,
            ..c.clone()
        };
        save(&d, "f", &f).unwrap();
        assert_eq!(load(&d, "f").unwrap().unwrap().kind, VolumeKind::File);
        assert!(load(&d, "w").unwrap().is_none());
        std::fs::write(t.path().join("v.manifest"), b"\xff\xff garbage").unwrap();
        assert!(load(&d, "v").is_err());
    }
}
