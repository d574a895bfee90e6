//! Helpers for driving a [`Store`] with wire messages, as the host would.
#![allow(dead_code)]

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use ferry_guest::{GuestError, Policy, Store, StoreLimits};
use ferry_proto::{convert, ferry as pb};
use ferry_tree::{Manifest, scan_volume};
use tempfile::TempDir;

/// Owners the tests use: the current user's, so nothing depends on root.
pub fn uid() -> u32 {
    rustix::process::geteuid().as_raw()
}
pub fn gid() -> u32 {
    rustix::process::getegid().as_raw()
}

/// A store under a temp dir, with a sentinel directory beside it that must
/// never change.
pub struct Fx {
    pub tmp: TempDir,
    pub root: PathBuf,
    pub store: Option<Store>,
    pub limits: StoreLimits,
}

pub const SENTINEL: &str = "sentinel";

impl Fx {
    pub fn new(limits: StoreLimits) -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        fs::create_dir(tmp.path().join(SENTINEL)).unwrap();
        fs::write(tmp.path().join(SENTINEL).join("canary"), b"untouched").unwrap();
        let store = Store::open(root.clone(), limits, Policy::default()).unwrap();
        Fx {
            tmp,
            root,
            store: Some(store),
            limits,
        }
    }

    pub fn s(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    /// Drops the store and opens it again (an agent restart).
    pub fn reopen(&mut self) {
        self.store = None;
        self.store = Some(Store::open(self.root.clone(), self.limits, Policy::default()).unwrap());
    }

    pub fn vol(&self, name: &str) -> PathBuf {
        self.root.join("volumes").join(name)
    }

    /// The summary the store reports for `vol`.
    pub fn summary(&self, vol: &str) -> pb::VolumeSummary {
        let mut r = pb::GetManifestRequest::new();
        r.volume = vol.into();
        self.s().get_manifest(&r).unwrap().volume.unwrap()
    }

    pub fn digest(&self, vol: &str) -> Vec<u8> {
        self.summary(vol).digest
    }

    /// Begins a transaction on `vol` against its current digest.
    pub fn begin(&self, vol: &str) -> Result<pb::BeginResponse, GuestError> {
        self.begin_with(vol, self.digest(vol), 0)
    }

    pub fn begin_with(
        &self,
        vol: &str,
        base: Vec<u8>,
        client_id: u64,
    ) -> Result<pb::BeginResponse, GuestError> {
        let mut r = pb::BeginRequest::new();
        r.volume = vol.into();
        r.base_digest = base;
        r.client_id = client_id;
        self.s().begin(&r)
    }

    pub fn put(
        &self,
        txn: u64,
        removes: &[&str],
        upserts: Vec<pb::Entry>,
    ) -> Result<pb::PutEntriesResponse, GuestError> {
        let mut r = pb::PutEntriesRequest::new();
        r.txn_id = txn;
        r.removes = removes.iter().map(|s| s.to_string()).collect();
        r.upserts = upserts;
        self.s().put_entries(&r)
    }

    pub fn chunk(&self, txn: u64, path: &str, offset: u64, data: &[u8]) -> Result<u64, GuestError> {
        let mut r = pb::WriteChunkRequest::new();
        r.txn_id = txn;
        r.path = path.into();
        r.offset = offset;
        r.data = data.to_vec();
        self.s().write_chunk(&r).map(|r| r.received)
    }

    pub fn commit(&self, txn: u64, digest: &[u8]) -> Result<pb::CommitResponse, GuestError> {
        let mut r = pb::CommitRequest::new();
        r.txn_id = txn;
        r.manifest_digest = digest.to_vec();
        self.s().commit(&r).map(|o| o.response)
    }

    /// Publishes `entries` (all inline or dirs/links) as the first version
    /// of `vol`; returns the version name and the manifest.
    pub fn publish(&self, vol: &str, entries: Vec<pb::Entry>) -> (String, Manifest) {
        let m = manifest(&entries);
        let b = self.begin(vol).unwrap();
        self.put(b.txn_id, &[], entries).unwrap();
        self.commit(b.txn_id, &m.digest()).unwrap();
        (b.version, m)
    }

    /// Asserts that `vol` is exactly `want`, whole and readable: the
    /// published version scans to the same digest, every file reads the
    /// same through `..data` and through the visible links, no staging or
    /// old version is left, the store reports the same digest, and the
    /// sentinel beside the store is untouched.
    pub fn assert_intact(&self, vol: &str, want: &Manifest) {
        let dir = self.vol(vol);
        let scanned = scan_volume(&dir).unwrap();
        assert_eq!(
            scanned.manifest.digest(),
            want.digest(),
            "on-disk content of {vol}: {:#?}",
            scanned.manifest
        );
        for e in want.iter().filter(|e| e.kind == ferry_tree::Kind::File) {
            let data = fs::read(dir.join("..data").join(&e.path)).unwrap();
            assert_eq!(*blake3::hash(&data).as_bytes(), e.hash, "{}", e.path);
            let visible = fs::read(dir.join(&e.path)).unwrap();
            assert_eq!(visible, data, "{} through the visible link", e.path);
        }
        let target = fs::read_link(dir.join("..data")).unwrap();
        let mut layout: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|d| d.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".."))
            .collect();
        layout.sort();
        let mut expected = vec!["..data".to_string(), target.to_str().unwrap().to_string()];
        expected.sort();
        assert_eq!(layout, expected, "only ..data and its version in {vol}");
        let tops: Vec<&str> = want.top_level_names();
        let mut visible: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|d| d.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with(".."))
            .collect();
        visible.sort();
        assert_eq!(visible, tops, "visible names of {vol}");
        assert_eq!(self.digest(vol), want.digest().to_vec());
        self.assert_sentinel();
    }

    pub fn assert_sentinel(&self) {
        let s = self.tmp.path().join(SENTINEL);
        let names: Vec<_> = fs::read_dir(&s)
            .unwrap()
            .map(|d| d.unwrap().file_name())
            .collect();
        assert_eq!(names, ["canary"]);
        assert_eq!(fs::read(s.join("canary")).unwrap(), b"untouched");
        let top: Vec<_> = {
            let mut v: Vec<_> = fs::read_dir(self.tmp.path())
                .unwrap()
                .map(|d| d.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
        assert_eq!(top, ["sentinel", "store"]);
    }
}

/// The logical manifest of wire entries.
pub fn manifest(entries: &[pb::Entry]) -> Manifest {
    entries
        .iter()
        .map(|e| convert::entry_from_pb(e).unwrap())
        .collect()
}

fn base_entry(path: &str, kind: pb::Kind, mode: u32) -> pb::Entry {
    let mut e = pb::Entry::new();
    e.path = path.into();
    e.kind = kind.into();
    e.mode = mode;
    e.uid = uid();
    e.gid = gid();
    e
}

/// A file sent inline.
pub fn file(path: &str, mode: u32, content: &[u8]) -> pb::Entry {
    let mut e = base_entry(path, pb::Kind::KIND_FILE, mode);
    e.size = content.len() as u64;
    e.blake3 = blake3::hash(content).as_bytes().to_vec();
    e.source = pb::Source::SOURCE_INLINE.into();
    e.data = content.to_vec();
    e
}

/// A file whose content follows in chunks.
pub fn chunked(path: &str, mode: u32, content: &[u8]) -> pb::Entry {
    let mut e = file(path, mode, content);
    e.source = pb::Source::SOURCE_CHUNKS.into();
    e.data.clear();
    e
}

/// A file copied from the base version.
pub fn from_base(path: &str, mode: u32, content: &[u8]) -> pb::Entry {
    let mut e = chunked(path, mode, content);
    e.source = pb::Source::SOURCE_BASE.into();
    e
}

pub fn dir(path: &str, mode: u32) -> pb::Entry {
    base_entry(path, pb::Kind::KIND_DIR, mode)
}

pub fn symlink(path: &str, target: &str) -> pb::Entry {
    let mut e = base_entry(path, pb::Kind::KIND_SYMLINK, 0o777);
    e.target = target.into();
    e
}

/// The standard first version of the attack tests.
pub fn v1() -> Vec<pb::Entry> {
    vec![
        dir("d", 0o750),
        file("d/nested", 0o640, b"nested content"),
        file("k1", 0o644, b"value one"),
        file("k2", 0o600, b"two"),
        symlink("lnk", "k1"),
    ]
}

/// The mode bits of a path (not following a final link).
pub fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

pub fn ino_of(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().ino()
}
