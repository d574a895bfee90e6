//! Reading a volume directory into a manifest.
//!
//! A kubelet volume (AtomicWriter layout: `..data -> ..<timestamp>`, plus
//! user-visible links `<key> -> ..data/<key>`) is read as its current
//! version: `..data` is resolved once and every file is read from that
//! version directory, which kubelet never changes after publishing it (it
//! only deletes it). Reading through `..data` file by file could mix two
//! versions. If the version vanishes mid-read, the scan starts again.
//!
//! Any other directory is read as it is. Sockets, FIFOs and devices are not
//! volume content; they are skipped and reported.
use std::{
    fs, io,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use crate::{
    manifest::{Entry, Kind, Manifest},
    path::{self, Limits},
};

/// How a scanned directory was laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// kubelet's AtomicWriter layout; `version` is the `..data` target
    /// (with its leading `..`).
    Kubelet { version: String },
    /// A plain directory.
    Plain,
    /// A single file (a file volume, see [`crate::volume`]): `path` is where
    /// its content was read, `version` the kubelet version it was read from
    /// when the source is a key of a kubelet volume.
    File {
        path: PathBuf,
        version: Option<String>,
    },
}

/// The result of a scan.
#[derive(Debug, Clone)]
pub struct Scanned {
    pub manifest: Manifest,
    pub layout: Layout,
    /// The directory the entries' paths are relative to: the version
    /// directory for a kubelet volume, the volume itself otherwise. Read
    /// content from here.
    pub content_root: PathBuf,
    /// Entries left out, with the reason.
    pub skipped: Vec<(String, &'static str)>,
}

impl Scanned {
    /// Where the content of the entry `rel` is read from.
    pub fn content_path(&self, rel: &str) -> PathBuf {
        match &self.layout {
            Layout::File { path, .. } => path.clone(),
            _ => self.content_root.join(rel),
        }
    }
}

/// Why a scan failed.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("volume directory {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("volume directory {0}: not a directory")]
    NotADir(PathBuf),
    #[error("file volume source {0}: not a regular file")]
    NotAFile(PathBuf),
    #[error("{path}: ..data points to {target:?}, which is not a version directory of this volume")]
    BadDataLink { path: PathBuf, target: String },
    #[error("{0}: the version kept changing while it was read (tried {1} times)")]
    Unstable(PathBuf, usize),
}

const MAX_ATTEMPTS: usize = 8;

/// Scans the volume at `dir`.
pub fn scan_volume(dir: &Path) -> Result<Scanned, ScanError> {
    let io_err = |source| ScanError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let meta = fs::metadata(dir).map_err(io_err)?;
    if !meta.is_dir() {
        return Err(ScanError::NotADir(dir.to_path_buf()));
    }
    for _ in 0..MAX_ATTEMPTS {
        let data = dir.join("..data");
        let target = match fs::read_link(&data) {
            Ok(t) => Some(t),
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.kind() == io::ErrorKind::InvalidInput =>
            {
                None
            }
            Err(e) => return Err(io_err(e)),
        };
        let Some(target) = target else {
            let mut s = Scanned {
                manifest: Manifest::new(),
                layout: Layout::Plain,
                content_root: dir.to_path_buf(),
                skipped: Vec::new(),
            };
            walk(dir, "", &mut s).map_err(|(p, source)| ScanError::Io { path: p, source })?;
            return Ok(s);
        };
        let t = target.to_string_lossy().into_owned();
        if !t.starts_with("..") || t.contains('/') || t == ".." || t == "..data" {
            return Err(ScanError::BadDataLink {
                path: dir.to_path_buf(),
                target: t,
            });
        }
        let root = dir.join(&t);
        let mut s = Scanned {
            manifest: Manifest::new(),
            layout: Layout::Kubelet { version: t },
            content_root: root.clone(),
            skipped: Vec::new(),
        };
        match walk(&root, "", &mut s) {
            Ok(()) => return Ok(s),
            // The version was deleted under us: kubelet published a newer
            // one. Read that instead.
            Err((_, e)) if e.kind() == io::ErrorKind::NotFound => continue,
            Err((p, source)) => return Err(ScanError::Io { path: p, source }),
        }
    }
    Err(ScanError::Unstable(dir.to_path_buf(), MAX_ATTEMPTS))
}

fn walk(dir: &Path, rel: &str, s: &mut Scanned) -> Result<(), (PathBuf, io::Error)> {
    let limits = Limits::default();
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(|e| (dir.to_path_buf(), e))?
        .map(|r| r.map(|d| d.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| (dir.to_path_buf(), e))?;
    names.sort();
    for name in names {
        let full = dir.join(&name);
        let Some(name) = name.to_str() else {
            s.skipped.push((
                full.to_string_lossy().into_owned(),
                "file name is not UTF-8",
            ));
            continue;
        };
        let relp = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        if rel.is_empty() && name.starts_with("..") {
            // kubelet's own names (..data, ..<ts>, ..data_tmp) or reserved.
            continue;
        }
        if path::validate_rel_path(&relp, &limits).is_err() {
            s.skipped.push((relp, "path refused by validation"));
            continue;
        }
        let md = fs::symlink_metadata(&full).map_err(|e| (full.clone(), e))?;
        let ft = md.file_type();
        let mode = md.permissions().mode() & 0o7777;
        if ft.is_dir() {
            s.manifest
                .insert(Entry::dir(&relp, mode, md.uid(), md.gid()));
            walk(&full, &relp, s)?;
        } else if ft.is_file() {
            let (hash, size) = hash_file(&full).map_err(|e| (full.clone(), e))?;
            s.manifest.insert(Entry {
                path: relp,
                kind: Kind::File,
                mode,
                uid: md.uid(),
                gid: md.gid(),
                size,
                hash,
                target: String::new(),
            });
        } else if ft.is_symlink() {
            let t = fs::read_link(&full).map_err(|e| (full.clone(), e))?;
            let Some(t) = t.to_str() else {
                s.skipped.push((relp, "symlink target is not UTF-8"));
                continue;
            };
            if path::validate_symlink_target(&relp, t, &limits).is_err() {
                s.skipped.push((relp, "symlink target leaves the volume"));
                continue;
            }
            s.manifest
                .insert(Entry::symlink(&relp, t, md.uid(), md.gid()));
        } else {
            s.skipped.push((relp, "not a file, directory or symlink"));
        }
    }
    Ok(())
}

/// blake3 and length of a file's content, read in one pass.
pub fn hash_file(p: &Path) -> io::Result<([u8; 32], u64)> {
    let mut f = fs::File::open(p)?;
    let mut h = blake3::Hasher::new();
    let n = io::copy(&mut f, &mut h)?;
    Ok((*h.finalize().as_bytes(), n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn plain_directory_as_it_is() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("sub")).unwrap();
        fs::write(d.path().join("sub/a"), b"hello").unwrap();
        fs::set_permissions(d.path().join("sub/a"), fs::Permissions::from_mode(0o640)).unwrap();
        symlink("sub/a", d.path().join("l")).unwrap();
        symlink("../../etc/passwd", d.path().join("evil")).unwrap();
        let s = scan_volume(d.path()).unwrap();
        assert_eq!(s.layout, Layout::Plain);
        let paths: Vec<_> = s.manifest.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["l", "sub", "sub/a"]);
        let a = s.manifest.get("sub/a").unwrap();
        assert_eq!((a.kind, a.mode, a.size), (Kind::File, 0o640, 5));
        assert_eq!(a.hash, *blake3::hash(b"hello").as_bytes());
        assert_eq!(
            s.skipped,
            [("evil".to_string(), "symlink target leaves the volume")]
        );
    }

    #[test]
    fn kubelet_volume_reads_the_current_version_only() {
        let d = tempfile::tempdir().unwrap();
        let v1 = d.path().join("..2026_01_01_00_00_00.1");
        let v2 = d.path().join("..2026_01_01_00_00_01.2");
        fs::create_dir(&v1).unwrap();
        fs::create_dir(&v2).unwrap();
        fs::write(v1.join("token"), b"old").unwrap();
        fs::write(v2.join("token"), b"new").unwrap();
        fs::write(v2.join("ca.crt"), b"ca").unwrap();
        symlink("..2026_01_01_00_00_01.2", d.path().join("..data")).unwrap();
        symlink("..data/token", d.path().join("token")).unwrap();
        symlink("..data/ca.crt", d.path().join("ca.crt")).unwrap();
        let s = scan_volume(d.path()).unwrap();
        assert_eq!(
            s.layout,
            Layout::Kubelet {
                version: "..2026_01_01_00_00_01.2".into()
            }
        );
        assert_eq!(s.content_root, v2);
        let paths: Vec<_> = s.manifest.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["ca.crt", "token"]);
        assert_eq!(
            s.manifest.get("token").unwrap().hash,
            *blake3::hash(b"new").as_bytes()
        );
    }

    #[test]
    fn a_data_link_out_of_the_volume_is_refused() {
        let d = tempfile::tempdir().unwrap();
        symlink("/etc", d.path().join("..data")).unwrap();
        assert!(matches!(
            scan_volume(d.path()),
            Err(ScanError::BadDataLink { .. })
        ));
    }
}
