//! The manifest of one volume version: every entry below the volume root,
//! keyed by relative path, and a canonical digest over all of it.
//!
//! The digest is what both sides agree on: the host sends the digest of the
//! manifest it wants, the guest computes the digest of the manifest it built
//! from the base plus the plan, and commits only when they match.
use std::collections::BTreeMap;

/// A blake3 digest.
pub type Digest = [u8; 32];

/// The digest of the empty manifest (a volume that does not exist yet).
pub fn empty_digest() -> Digest {
    Manifest::default().digest()
}

/// The kind of an entry. The file type bits of a mode live here, not in `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

impl Kind {
    fn tag(self) -> u8 {
        match self {
            Kind::File => 1,
            Kind::Dir => 2,
            Kind::Symlink => 3,
        }
    }
}

/// One entry of a volume tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the volume root, validated by [`crate::path`].
    pub path: String,
    pub kind: Kind,
    /// Permission bits, `mode & 0o7777`. Symlinks carry 0o777.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Content length of a file; 0 for directories and symlinks.
    pub size: u64,
    /// blake3 of a file's content; zero for other kinds.
    pub hash: Digest,
    /// A symlink's target; empty for other kinds.
    pub target: String,
}

impl Entry {
    /// A file entry.
    pub fn file(path: &str, mode: u32, uid: u32, gid: u32, content: &[u8]) -> Self {
        Self {
            path: path.to_string(),
            kind: Kind::File,
            mode: mode & 0o7777,
            uid,
            gid,
            size: content.len() as u64,
            hash: *blake3::hash(content).as_bytes(),
            target: String::new(),
        }
    }
    /// A directory entry.
    pub fn dir(path: &str, mode: u32, uid: u32, gid: u32) -> Self {
        Self {
            path: path.to_string(),
            kind: Kind::Dir,
            mode: mode & 0o7777,
            uid,
            gid,
            size: 0,
            hash: [0; 32],
            target: String::new(),
        }
    }
    /// A symlink entry.
    pub fn symlink(path: &str, target: &str, uid: u32, gid: u32) -> Self {
        Self {
            path: path.to_string(),
            kind: Kind::Symlink,
            mode: 0o777,
            uid,
            gid,
            size: 0,
            hash: [0; 32],
            target: target.to_string(),
        }
    }

    /// Feeds the canonical encoding of this entry to `h`: length-prefixed
    /// path, kind tag, mode, uid, gid, size (little endian), hash,
    /// length-prefixed target. Unambiguous, so equal encodings mean equal
    /// entries.
    fn hash_into(&self, h: &mut blake3::Hasher) {
        h.update(&(self.path.len() as u64).to_le_bytes());
        h.update(self.path.as_bytes());
        h.update(&[self.kind.tag()]);
        h.update(&self.mode.to_le_bytes());
        h.update(&self.uid.to_le_bytes());
        h.update(&self.gid.to_le_bytes());
        h.update(&self.size.to_le_bytes());
        h.update(&self.hash);
        h.update(&(self.target.len() as u64).to_le_bytes());
        h.update(self.target.as_bytes());
    }
}

/// All entries of one version, sorted by path (a parent sorts before its
/// children, since it is their prefix).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    entries: BTreeMap<String, Entry>,
}

impl Manifest {
    /// An empty manifest.
    pub fn new() -> Self {
        Self::default()
    }

    /// The canonical digest: blake3 over a domain tag, the entry count and
    /// every entry's canonical encoding in path order.
    pub fn digest(&self) -> Digest {
        let mut h = blake3::Hasher::new();
        h.update(b"ferry.manifest.v1\0");
        h.update(&(self.entries.len() as u64).to_le_bytes());
        for e in self.entries.values() {
            e.hash_into(&mut h);
        }
        *h.finalize().as_bytes()
    }

    /// Inserts or replaces the entry at `e.path`. No checks: see
    /// [`crate::diff::apply`] for the checked way.
    pub fn insert(&mut self, e: Entry) -> Option<Entry> {
        self.entries.insert(e.path.clone(), e)
    }

    /// The entry at `path`.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// Removes `path` and everything below it; returns the removed entries.
    pub fn remove_subtree(&mut self, path: &str) -> Vec<Entry> {
        let mut out = Vec::new();
        if let Some(e) = self.entries.remove(path) {
            out.push(e);
        }
        let prefix = format!("{path}/");
        let below: Vec<String> = self
            .entries
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in below {
            if let Some(e) = self.entries.remove(&k) {
                out.push(e);
            }
        }
        out
    }

    /// Entries in path order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Entries whose path sorts strictly after `path`, in order (paging).
    pub fn iter_after<'a>(&'a self, path: &str) -> impl Iterator<Item = &'a Entry> + 'a {
        use std::ops::Bound;
        self.entries
            .range::<str, _>((Bound::Excluded(path), Bound::Unbounded))
            .map(|(_, e)| e)
    }

    /// Number of entries of every kind.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of regular files.
    pub fn file_count(&self) -> u64 {
        self.iter().filter(|e| e.kind == Kind::File).count() as u64
    }

    /// Sum of file sizes.
    pub fn total_bytes(&self) -> u64 {
        self.iter()
            .filter(|e| e.kind == Kind::File)
            .map(|e| e.size)
            .sum()
    }

    /// The distinct first components, in order: the names kubelet exposes as
    /// user-visible links `<name> -> ..data/<name>`.
    pub fn top_level_names(&self) -> Vec<&str> {
        self.iter()
            .filter(|e| !e.path.contains('/'))
            .map(|e| e.path.as_str())
            .collect()
    }

    /// Some file with this content, if any (the guest copies it instead of
    /// receiving it again).
    pub fn find_by_hash(&self, hash: &Digest, size: u64) -> Option<&Entry> {
        self.iter()
            .find(|e| e.kind == Kind::File && e.size == size && &e.hash == hash)
    }
}

impl FromIterator<Entry> for Manifest {
    fn from_iter<I: IntoIterator<Item = Entry>>(iter: I) -> Self {
        let mut m = Manifest::new();
        for e in iter {
            m.insert(e);
        }
        m
    }
}

/// Lower-case hex of a digest, for logs and JSON.
pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_changes_with_every_field() {
        let base = Manifest::from_iter([Entry::file("a", 0o644, 0, 0, b"x")]);
        let d = base.digest();
        let variants = [
            Entry::file("b", 0o644, 0, 0, b"x"),
            Entry::file("a", 0o600, 0, 0, b"x"),
            Entry::file("a", 0o644, 1, 0, b"x"),
            Entry::file("a", 0o644, 0, 1, b"x"),
            Entry::file("a", 0o644, 0, 0, b"y"),
            Entry::symlink("a", "x", 0, 0),
        ];
        for v in variants {
            assert_ne!(Manifest::from_iter([v.clone()]).digest(), d, "{v:?}");
        }
        assert_ne!(Manifest::new().digest(), d);
        assert_eq!(empty_digest(), Manifest::new().digest());
    }

    #[test]
    fn remove_subtree_removes_only_below() {
        let mut m = Manifest::from_iter([
            Entry::dir("a", 0o755, 0, 0),
            Entry::file("a/x", 0o644, 0, 0, b""),
            Entry::dir("a/b", 0o755, 0, 0),
            Entry::file("a/b/y", 0o644, 0, 0, b""),
            Entry::file("a.txt", 0o644, 0, 0, b""),
            Entry::file("ab", 0o644, 0, 0, b""),
        ]);
        assert_eq!(m.remove_subtree("a").len(), 4);
        let left: Vec<_> = m.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(left, ["a.txt", "ab"]);
    }

    #[test]
    fn paging_and_top_level() {
        let m = Manifest::from_iter([
            Entry::dir("d", 0o755, 0, 0),
            Entry::file("d/x", 0o644, 0, 0, b""),
            Entry::file("k", 0o644, 0, 0, b"1"),
        ]);
        assert_eq!(m.top_level_names(), ["d", "k"]);
        let after: Vec<_> = m.iter_after("d").map(|e| e.path.as_str()).collect();
        assert_eq!(after, ["d/x", "k"]);
        assert_eq!(m.file_count(), 2);
        assert_eq!(m.total_bytes(), 1);
    }
}
