//! kubelet's AtomicWriter (`pkg/volume/util/atomic_writer.go`), step by
//! step, so the demo and the tests see the exact layout and event sequence a
//! node produces.
//!
//! One [`AtomicWriter::write`]:
//!
//! 1. validate every payload path as kubelet does (relative, no `..`
//!    element, not starting with `..`, at most 4096 bytes, elements at most
//!    255) and clean it;
//! 2. read the old version from `..data`;
//! 3. compute the paths of the old version that the new payload no longer
//!    has (files and the directories above them);
//! 4. if no file's content differs and nothing is to be removed, only
//!    create missing visible links and stop (kubelet compares content only:
//!    a mode-only change is not written, as on a node);
//! 5. make a new `..YYYY_MM_DD_HH_MM_SS.<n>` directory, mode 0755;
//! 6. write every file (parents 0755), chmod it to its mode (umask
//!    notwithstanding), chown it to its `fsUser` if it has one;
//! 7. the `setPerms` hook: with an fsGroup, kubelet's `SetVolumeOwnership`
//!    makes every file and directory of the version group-owned by it, adds
//!    `0440` to files and `0550 | setgid` to directories (these volumes are
//!    read-only, so the read-only mask);
//! 8. point a new `..data_tmp` symlink at the version and rename it over
//!    `..data`: the one atomic step;
//! 9. create the missing visible links `<first element> -> ..data/<first>`;
//! 10. delete the visible links of removed top-level paths;
//! 11. delete the old version directory.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    os::unix::fs::{MetadataExt, PermissionsExt, symlink},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::SystemTime,
};

/// One file of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Relative path -> file: what one volume should contain.
pub type Payload = BTreeMap<String, FileProjection>;

/// Ownership kubelet applies on top of a payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    /// The pod's `securityContext.fsGroup`: group owner of everything in the
    /// version, `| 0440` on files, `| 0550` and setgid on directories.
    pub fs_group: Option<u32>,
    /// Per-file owner (kubelet's `FileProjection.FsUser`, set on a
    /// projected Service Account token when the pod runs as a fixed user).
    pub fs_user: BTreeMap<String, u32>,
}

/// kubelet's limits on payload paths.
pub const MAX_PATH_LENGTH: usize = 4096;
/// kubelet's limit on one element of a payload path.
pub const MAX_FILE_NAME_LENGTH: usize = 255;

/// kubelet's `SetVolumeOwnership` masks for read-only volumes.
const RO_MASK: u32 = 0o440;
const EXEC_MASK: u32 = 0o110;
const SETGID: u32 = 0o2000;

/// Writes one volume directory the way kubelet does.
pub struct AtomicWriter {
    dir: PathBuf,
    owner: Ownership,
}

static SEQ: AtomicU64 = AtomicU64::new(1);

/// kubelet's `validatePath`: the error it would give, or `Ok`.
pub fn validate_path(p: &str) -> io::Result<()> {
    let bad = |why: String| Err(io::Error::new(io::ErrorKind::InvalidInput, why));
    if p.is_empty() {
        return bad("invalid path: must not be empty".into());
    }
    if p.starts_with('/') {
        return bad(format!("invalid path {p:?}: must be relative path"));
    }
    if p.len() > MAX_PATH_LENGTH {
        return bad(format!(
            "invalid path {p:?}: must be less than or equal to {MAX_PATH_LENGTH} characters"
        ));
    }
    let items: Vec<&str> = p.split('/').collect();
    for item in &items {
        if *item == ".." {
            return bad(format!("invalid path {p:?}: must not contain '..'"));
        }
        if item.len() > MAX_FILE_NAME_LENGTH {
            return bad(format!(
                "invalid path {p:?}: filenames must be less than or equal to {MAX_FILE_NAME_LENGTH} characters"
            ));
        }
    }
    if items[0].starts_with("..") && items[0].len() > 2 {
        return bad(format!("invalid path {p:?}: must not start with '..'"));
    }
    Ok(())
}

/// Go's `path.Clean` for the relative paths `validate_path` lets through.
fn clean(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    parts.join("/")
}

impl AtomicWriter {
    /// A writer for the volume at `dir` (created if missing, mode 0755).
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            owner: Ownership::default(),
        })
    }

    /// The same writer, applying `owner` on every write (fsGroup, fsUser).
    pub fn with_ownership(mut self, owner: Ownership) -> Self {
        self.owner = owner;
        self
    }

    /// The volume directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current version directory's name (`..<timestamp>.<n>`), if any.
    pub fn current_version(&self) -> Option<String> {
        fs::read_link(self.dir.join("..data"))
            .ok()
            .map(|t| t.to_string_lossy().into_owned())
    }

    /// Publishes `payload` as the new version; returns false if kubelet
    /// would have written nothing (no content changed, nothing removed).
    pub fn write(&self, payload: &Payload) -> io::Result<bool> {
        // (1) validate and clean.
        let mut clean_payload: BTreeMap<String, &FileProjection> = BTreeMap::new();
        for (p, f) in payload {
            validate_path(p)?;
            let c = clean(p);
            if c.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("invalid path {p:?}: names the volume itself"),
                ));
            }
            clean_payload.insert(c, f);
        }
        // (2) the old version.
        let data = self.dir.join("..data");
        let old = match fs::read_link(&data) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let old_path = old.as_ref().map(|o| self.dir.join(o));
        // (3) paths to remove.
        let to_remove = match &old_path {
            Some(o) => paths_to_remove(o, &clean_payload)?,
            None => BTreeSet::new(),
        };
        // (4) anything to write?
        let should_write = match &old_path {
            None => true,
            Some(o) => should_write_payload(o, &clean_payload)?,
        };
        if !should_write && to_remove.is_empty() {
            self.create_user_visible_files(&clean_payload)?;
            return Ok(false);
        }
        // (5) the new version directory.
        let name = format!(
            "..{}.{}",
            timestamp(SystemTime::now()),
            SEQ.fetch_add(1, Ordering::Relaxed) + u64::from(std::process::id()) * 1_000_000
        );
        let ts = self.dir.join(&name);
        fs::create_dir(&ts)?;
        fs::set_permissions(&ts, fs::Permissions::from_mode(0o755))?;
        // (6) files.
        for (p, f) in &clean_payload {
            let full = ts.join(p);
            if let Some(parent) = full.parent() {
                mkdir_all(&ts, parent)?;
            }
            fs::write(&full, &f.data)?;
            fs::set_permissions(&full, fs::Permissions::from_mode(f.mode))?;
            if let Some(uid) = self.owner.fs_user.get(p) {
                rustix::fs::chown(&full, Some(rustix::fs::Uid::from_raw(*uid)), None)
                    .map_err(io::Error::from)?;
            }
        }
        // (7) fsGroup.
        if let Some(gid) = self.owner.fs_group {
            set_volume_ownership(&ts, gid)?;
        }
        // (8) publish.
        let tmp = self.dir.join("..data_tmp");
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        symlink(&name, &tmp)?;
        fs::rename(&tmp, &data)?;
        // (9) visible links.
        self.create_user_visible_files(&clean_payload)?;
        // (10) links of removed top-level paths.
        for p in &to_remove {
            if p.contains('/') {
                continue;
            }
            match fs::remove_file(self.dir.join(p)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        // (11) the old version.
        if let Some(o) = old_path {
            fs::remove_dir_all(o)?;
        }
        Ok(true)
    }

    fn create_user_visible_files(
        &self,
        payload: &BTreeMap<String, &FileProjection>,
    ) -> io::Result<()> {
        for p in payload.keys() {
            let top = p.split('/').next().unwrap_or(p);
            let link = self.dir.join(top);
            if fs::symlink_metadata(&link).is_err() {
                symlink(format!("..data/{top}"), &link)?;
            }
        }
        Ok(())
    }
}

/// `os.MkdirAll(dir, 0777)` under kubelet's usual umask 022: 0755.
fn mkdir_all(root: &Path, dir: &Path) -> io::Result<()> {
    if dir == root || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        mkdir_all(root, parent)?;
    }
    fs::create_dir(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
}

/// Every path of the old version (files and directories) that is neither a
/// new payload path nor a directory above one.
fn paths_to_remove(
    old: &Path,
    payload: &BTreeMap<String, &FileProjection>,
) -> io::Result<BTreeSet<String>> {
    let mut paths = BTreeSet::new();
    walk(old, "", &mut |rel, _| {
        paths.insert(rel.to_string());
        Ok(())
    })?;
    let mut keep = BTreeSet::new();
    for p in payload.keys() {
        let mut s = p.as_str();
        loop {
            keep.insert(s.to_string());
            match s.rfind('/') {
                Some(i) => s = &s[..i],
                None => break,
            }
        }
    }
    Ok(paths.difference(&keep).cloned().collect())
}

fn should_write_payload(
    old: &Path,
    payload: &BTreeMap<String, &FileProjection>,
) -> io::Result<bool> {
    for (p, f) in payload {
        match fs::read(old.join(p)) {
            Ok(d) if d == f.data => {}
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// kubelet's `SetVolumeOwnership` with a read-only volume, over one version.
fn set_volume_ownership(ts: &Path, gid: u32) -> io::Result<()> {
    let apply = |p: &Path, md: &fs::Metadata| -> io::Result<()> {
        rustix::fs::chown(p, None, Some(rustix::fs::Gid::from_raw(gid)))
            .map_err(io::Error::from)?;
        let mut mask = RO_MASK;
        if md.is_dir() {
            mask |= SETGID | EXEC_MASK;
        }
        fs::set_permissions(p, fs::Permissions::from_mode((md.mode() & 0o7777) | mask))
    };
    apply(ts, &fs::metadata(ts)?)?;
    walk(ts, "", &mut |_, full| {
        apply(full, &fs::symlink_metadata(full)?)
    })
}

/// Visits every entry under `dir` (parents first) with its relative path.
fn walk(dir: &Path, rel: &str, f: &mut dyn FnMut(&str, &Path) -> io::Result<()>) -> io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for n in names {
        let name = n.to_string_lossy();
        let r = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let full = dir.join(&n);
        f(&r, &full)?;
        if fs::symlink_metadata(&full)?.is_dir() {
            walk(&full, &r, f)?;
        }
    }
    Ok(())
}

/// `YYYY_MM_DD_HH_MM_SS` in UTC, as kubelet names versions.
pub fn timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    ferry_tree::stamp::kubelet_stamp(secs)
}

/// A payload from `(path, content, mode)` triples.
pub fn payload<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8], u32)>) -> Payload {
    files
        .into_iter()
        .map(|(p, d, m)| {
            (
                p.to_string(),
                FileProjection {
                    data: d.to_vec(),
                    mode: m,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_305_230);
        assert_eq!(timestamp(t), "2026_12_03_13_40_30");
        assert_eq!(timestamp(SystemTime::UNIX_EPOCH), "1970_01_01_00_00_00");
        let leap = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(timestamp(leap), "2000_02_29_00_00_00");
    }

    #[test]
    fn writes_the_kubelet_layout_and_cleans_up() {
        let d = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(d.path().join("vol")).unwrap();
        assert!(
            w.write(&payload([("a", &b"1"[..], 0o644), ("d/b", b"2", 0o600)]))
                .unwrap()
        );
        let v1 = fs::read_link(w.dir().join("..data")).unwrap();
        let v1s = v1.to_str().unwrap();
        assert!(v1s.starts_with(".."), "{v1s}");
        assert_eq!(mode(&w.dir().join(v1s)), 0o755);
        assert_eq!(mode(&w.dir().join(v1s).join("d")), 0o755);
        assert_eq!(mode(&w.dir().join("d/b")), 0o600);
        assert_eq!(
            fs::read_link(w.dir().join("a")).unwrap(),
            Path::new("..data/a")
        );
        assert_eq!(fs::read(w.dir().join("d/b")).unwrap(), b"2");
        assert!(
            !w.write(&payload([("a", &b"1"[..], 0o644), ("d/b", b"2", 0o600)]))
                .unwrap()
        );
        assert!(w.write(&payload([("a", &b"3"[..], 0o644)])).unwrap());
        assert!(!w.dir().join(&v1).exists(), "old version removed");
        assert!(
            fs::symlink_metadata(w.dir().join("d")).is_err(),
            "link of removed key removed"
        );
        assert_eq!(names(w.dir()).len(), 3, "{:?}", names(w.dir()));
        assert!(!w.dir().join("..data_tmp").exists());
    }

    #[test]
    fn a_mode_only_change_is_not_written_like_kubelet() {
        let d = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(d.path().join("vol")).unwrap();
        assert!(w.write(&payload([("a", &b"1"[..], 0o644)])).unwrap());
        assert!(!w.write(&payload([("a", &b"1"[..], 0o600)])).unwrap());
        assert_eq!(mode(&w.dir().join("a")), 0o644);
    }

    #[test]
    fn removing_a_nested_key_keeps_the_top_link_while_siblings_remain() {
        let d = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(d.path().join("vol")).unwrap();
        w.write(&payload([("d/x", &b"1"[..], 0o644), ("d/y", b"2", 0o644)]))
            .unwrap();
        assert!(w.write(&payload([("d/x", &b"1"[..], 0o644)])).unwrap());
        assert!(fs::symlink_metadata(w.dir().join("d")).is_ok());
        assert!(!w.dir().join("d/y").exists());
        assert!(w.write(&payload([("e", &b"1"[..], 0o644)])).unwrap());
        assert!(fs::symlink_metadata(w.dir().join("d")).is_err());
    }

    #[test]
    fn kubelet_path_validation() {
        for bad in [
            "",
            "/abs",
            "a/../b",
            "..",
            "..data",
            "..a/b",
            &"x".repeat(256),
            &format!("{}/", "a/".repeat(2049)),
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "a/b", "a..b", "a/..b", ".a", "a/./b"] {
            validate_path(good).unwrap();
        }
        let d = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(d.path().join("vol")).unwrap();
        let e = w
            .write(&payload([("ok", &b"1"[..], 0o644), ("../x", b"2", 0o644)]))
            .unwrap_err();
        assert!(e.to_string().contains("must not contain '..'"), "{e}");
        assert!(
            fs::read_dir(w.dir()).unwrap().next().is_none(),
            "nothing written"
        );
    }

    #[test]
    fn fs_group_sets_group_modes_and_setgid_dirs() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(d.path().join("vol"))
            .unwrap()
            .with_ownership(Ownership {
                fs_group: Some(4242),
                fs_user: [("tok".to_string(), 1001)].into(),
            });
        w.write(&payload([
            ("s", &b"1"[..], 0o400),
            ("n/t", b"2", 0o600),
            ("tok", b"3", 0o600),
        ]))
        .unwrap();
        let v = w.dir().join(w.current_version().unwrap());
        let md = fs::metadata(v.join("s")).unwrap();
        assert_eq!((md.gid(), md.mode() & 0o7777), (4242, 0o440));
        assert_eq!(mode(&v.join("n/t")), 0o640);
        assert_eq!(mode(&v.join("n")), 0o2755);
        assert_eq!(mode(&v), 0o2755);
        let md = fs::metadata(v.join("tok")).unwrap();
        assert_eq!(
            (md.uid(), md.gid(), md.mode() & 0o7777),
            (1001, 4242, 0o640)
        );
    }
}
