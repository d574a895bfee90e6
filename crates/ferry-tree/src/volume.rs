//! The two kinds of volume, and reading a single-file volume's source.
//!
//! A *tree* volume is a directory (kubelet's AtomicWriter layout or a plain
//! one). A *file* volume is one file, for the single files kubelet
//! bind-mounts (etc-hosts, hostname, resolv.conf, termination-log, a
//! subPath): the guest updates it in place, because a file bind mount does
//! not follow a rename. Its manifest is exactly one file entry at
//! [`FILE_ENTRY`], carrying the file's mode, owner, size and blake3.
use std::{
    fs, io,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use crate::{
    manifest::{Entry, Kind, Manifest},
    scan::{Layout, ScanError, Scanned},
};

/// The path of the one entry in a file volume's manifest. Fixed (not the
/// volume's name), so a file's digest does not depend on what it is called.
pub const FILE_ENTRY: &str = "content";

/// What a volume is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum VolumeKind {
    /// A directory tree, each version published by renaming `..data`.
    #[default]
    Tree,
    /// One file, updated in place (same inode).
    File,
}

impl std::fmt::Display for VolumeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VolumeKind::Tree => "tree",
            VolumeKind::File => "file",
        })
    }
}

/// The entry of a file volume, if `m` is a well-formed one: exactly one
/// entry, a file at [`FILE_ENTRY`].
pub fn file_entry(m: &Manifest) -> Option<&Entry> {
    let mut it = m.iter();
    match (it.next(), it.next()) {
        (Some(e), None) if e.path == FILE_ENTRY && e.kind == Kind::File => Some(e),
        _ => None,
    }
}

const MAX_ATTEMPTS: usize = 8;

/// Where `source` really is, read consistently. A key of a kubelet volume
/// (`<vol>/<key> -> ..data/<key>`, what a subPath names) is resolved through
/// `..data` *once*, to the file inside the published `..<timestamp>`
/// version, which kubelet never changes; anything else is used as it is.
fn resolve(source: &Path) -> io::Result<(PathBuf, Option<String>)> {
    let md = fs::symlink_metadata(source)?;
    if md.file_type().is_symlink()
        && let (Some(parent), Ok(link)) = (source.parent(), fs::read_link(source))
        && let Some(rest) = link.to_str().and_then(|l| l.strip_prefix("..data/"))
        && let Ok(version) = fs::read_link(parent.join("..data"))
        && let Some(version) = version.to_str()
        && version.starts_with("..")
        && !version.contains('/')
    {
        return Ok((parent.join(version).join(rest), Some(version.to_string())));
    }
    Ok((source.to_path_buf(), None))
}

/// Reads the file `source` into a file volume's manifest (one entry at
/// [`FILE_ENTRY`]); content is read from [`Scanned::content_path`]. A
/// kubelet key is read from the version `..data` names (if that version is
/// deleted mid-read, kubelet published a newer one: read again).
pub fn scan_file(source: &Path) -> Result<Scanned, ScanError> {
    let io_err = |path: &Path, source| ScanError::Io {
        path: path.to_path_buf(),
        source,
    };
    for _ in 0..MAX_ATTEMPTS {
        let (path, version) = resolve(source).map_err(|e| io_err(source, e))?;
        let f = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound && version.is_some() => continue,
            Err(e) => return Err(io_err(&path, e)),
        };
        let md = f.metadata().map_err(|e| io_err(&path, e))?;
        if !md.is_file() {
            return Err(ScanError::NotAFile(source.to_path_buf()));
        }
        let mut h = blake3::Hasher::new();
        let size = io::copy(&mut &f, &mut h).map_err(|e| io_err(&path, e))?;
        let mut manifest = Manifest::new();
        manifest.insert(Entry {
            path: FILE_ENTRY.to_string(),
            kind: Kind::File,
            mode: md.permissions().mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size,
            hash: *h.finalize().as_bytes(),
            target: String::new(),
        });
        return Ok(Scanned {
            manifest,
            layout: Layout::File {
                path: path.clone(),
                version,
            },
            content_root: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            skipped: Vec::new(),
        });
    }
    Err(ScanError::Unstable(source.to_path_buf(), MAX_ATTEMPTS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_plain_file_is_one_entry() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("hosts");
        fs::write(&p, b"127.0.0.1 localhost\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let s = scan_file(&p).unwrap();
        let e = file_entry(&s.manifest).expect("one file entry");
        assert_eq!(e.mode, 0o640);
        assert_eq!(e.size, 20);
        assert_eq!(e.hash, *blake3::hash(b"127.0.0.1 localhost\n").as_bytes());
        assert_eq!(s.content_path(FILE_ENTRY), p);
        assert!(matches!(scan_file(t.path()), Err(ScanError::NotAFile(_))));
        assert!(scan_file(&t.path().join("missing")).is_err());
    }

    #[test]
    fn a_kubelet_key_is_read_from_the_version_data_names() {
        let t = tempfile::tempdir().unwrap();
        let v = t.path();
        fs::create_dir(v.join("..2026_01_01_00_00_00.1")).unwrap();
        fs::write(v.join("..2026_01_01_00_00_00.1/key"), b"one").unwrap();
        symlink("..2026_01_01_00_00_00.1", v.join("..data")).unwrap();
        symlink("..data/key", v.join("key")).unwrap();
        let s = scan_file(&v.join("key")).unwrap();
        assert_eq!(
            s.content_path(FILE_ENTRY),
            v.join("..2026_01_01_00_00_00.1/key")
        );
        assert_eq!(file_entry(&s.manifest).unwrap().size, 3);
        assert!(matches!(
            s.layout,
            Layout::File { version: Some(ref x), .. } if x == "..2026_01_01_00_00_00.1"
        ));
    }

    #[test]
    fn only_one_file_at_the_fixed_path_is_a_file_volume() {
        let ok = Manifest::from_iter([Entry::file(FILE_ENTRY, 0o644, 0, 0, b"x")]);
        assert!(file_entry(&ok).is_some());
        for bad in [
            Manifest::new(),
            Manifest::from_iter([Entry::file("other", 0o644, 0, 0, b"x")]),
            Manifest::from_iter([Entry::dir(FILE_ENTRY, 0o755, 0, 0)]),
            Manifest::from_iter([
                Entry::file(FILE_ENTRY, 0o644, 0, 0, b"x"),
                Entry::file("more", 0o644, 0, 0, b"y"),
            ]),
        ] {
            assert!(file_entry(&bad).is_none(), "{bad:?}");
        }
    }
}
