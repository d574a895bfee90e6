//! Confined filesystem operations on an open directory.
//!
//! Every relative path is resolved by the kernel with `openat2(2)` and
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`: no `..`
//! above the directory, no absolute path, and no symlink followed on the way
//! (the parents are real directories we created, so a symlink where a parent
//! should be is an attack or a bug, and the kernel refuses it with `ELOOP` or
//! `EXDEV`). The last component is then handled with an `*at` call on the
//! resolved parent, never following a link (`AT_SYMLINK_NOFOLLOW`,
//! `O_NOFOLLOW`, `O_EXCL`). Validation in `ferry_tree::path` comes first; this
//! is the second wall, the one that does not depend on our own bookkeeping.
use std::{
    ffi::OsString,
    fs::File,
    io,
    os::{
        fd::{AsFd, BorrowedFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
};

use rustix::{
    fs::{self as rfs, AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Stat, Uid},
    io::Errno,
};

/// A failed filesystem operation: what, where (relative to the directory it
/// was resolved under) and why.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path:?}: {source}")]
pub struct FsError {
    pub op: &'static str,
    pub path: String,
    #[source]
    pub source: io::Error,
}

impl FsError {
    /// An error of `op` on `path`.
    pub fn new(op: &'static str, path: impl Into<String>, source: io::Error) -> Self {
        Self {
            op,
            path: path.into(),
            source,
        }
    }

    /// The errno, when the kernel gave one.
    pub fn errno(&self) -> Option<Errno> {
        Errno::from_io_error(&self.source)
    }

    /// True for `ENOENT`.
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(Errno::NOENT)
    }
}

type FsResult<T> = Result<T, FsError>;

/// The kernel's confinement for every resolution.
const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW);

/// Splits `rel` into its parent (`None` for a single component) and its last
/// component, refusing shapes that would let the last component escape.
fn split(rel: &str) -> io::Result<(Option<&str>, &str)> {
    let (parent, name) = match rel.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, rel),
    };
    if name.is_empty() || name == "." || name == ".." || rel.starts_with('/') || rel.contains('\0')
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a relative path to a named entry",
        ));
    }
    Ok((parent, name))
}

/// Whether this process may give files away (is root). Checked once.
fn privileged() -> bool {
    rustix::process::geteuid().is_root()
}

static UNPRIVILEGED_WARNED: AtomicBool = AtomicBool::new(false);

/// Tolerates `EPERM` from a chown when running unprivileged: tests and
/// rootless setups still work, with one warning in the log.
fn tolerate_unprivileged(r: rustix::io::Result<()>) -> rustix::io::Result<()> {
    match r {
        Err(Errno::PERM) if !privileged() => {
            if !UNPRIVILEGED_WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!("running unprivileged: ownership not applied");
            }
            Ok(())
        }
        other => other,
    }
}

fn ids(uid: u32, gid: u32) -> (Option<Uid>, Option<Gid>) {
    (
        Some(Uid::from_raw_unchecked(uid)),
        Some(Gid::from_raw_unchecked(gid)),
    )
}

/// An open directory; every operation stays beneath it.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Dir {
    /// Opens a trusted directory (the store root, from our own
    /// configuration). This is the only path resolved without confinement.
    pub fn open_root(path: &Path) -> FsResult<Dir> {
        let fd = rfs::open(path, DIR_FLAGS, Mode::empty())
            .map_err(|e| FsError::new("open directory", path.display().to_string(), e.into()))?;
        Ok(Dir { fd })
    }

    /// Resolves `rel`'s parent beneath this directory and runs `f` on the
    /// parent's fd and the last component.
    fn at<T>(
        &self,
        op: &'static str,
        rel: &str,
        f: impl FnOnce(BorrowedFd<'_>, &str) -> rustix::io::Result<T>,
    ) -> FsResult<T> {
        let err = |e: io::Error| FsError::new(op, rel, e);
        let (parent, name) = split(rel).map_err(err)?;
        match parent {
            None => f(self.fd.as_fd(), name).map_err(|e| err(e.into())),
            Some(p) => {
                let pfd = rfs::openat2(&self.fd, p, DIR_FLAGS, Mode::empty(), RESOLVE)
                    .map_err(|e| err(e.into()))?;
                f(pfd.as_fd(), name).map_err(|e| err(e.into()))
            }
        }
    }

    /// Opens the directory `rel` beneath this one.
    pub fn open_dir(&self, rel: &str) -> FsResult<Dir> {
        split(rel).map_err(|e| FsError::new("open directory", rel, e))?;
        let fd = rfs::openat2(&self.fd, rel, DIR_FLAGS, Mode::empty(), RESOLVE)
            .map_err(|e| FsError::new("open directory", rel, e.into()))?;
        Ok(Dir { fd })
    }

    /// Another handle on the same directory.
    pub fn try_clone(&self) -> FsResult<Dir> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| FsError::new("dup directory", ".", e))?;
        Ok(Dir { fd })
    }

    /// Creates the directory `rel` with `mode` (before the umask).
    pub fn mkdir(&self, rel: &str, mode: u32) -> FsResult<()> {
        self.at("mkdir", rel, |p, n| {
            rfs::mkdirat(p, n, Mode::from_raw_mode(mode))
        })
    }

    /// Creates a new regular file `rel`, mode 0600, refusing to reuse or
    /// follow anything already there.
    pub fn create_file(&self, rel: &str) -> FsResult<File> {
        let flags =
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        let fd = self.at("create", rel, |p, n| {
            rfs::openat2(p, n, flags, Mode::from_raw_mode(0o600), RESOLVE)
        })?;
        Ok(File::from(fd))
    }

    /// Opens the regular file `rel` for reading.
    pub fn open_file(&self, rel: &str) -> FsResult<File> {
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY;
        let fd = rfs::openat2(&self.fd, rel, flags, Mode::empty(), RESOLVE)
            .map_err(|e| FsError::new("open", rel, e.into()))?;
        Ok(File::from(fd))
    }

    /// Opens the existing regular file `rel` for writing in place (never
    /// following a link, never creating).
    pub fn open_file_rw(&self, rel: &str) -> FsResult<File> {
        let flags = OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY;
        let fd = rfs::openat2(&self.fd, rel, flags, Mode::empty(), RESOLVE)
            .map_err(|e| FsError::new("open for writing", rel, e.into()))?;
        Ok(File::from(fd))
    }

    /// An `O_PATH` handle on `rel` (a file or a directory, never a symlink):
    /// something to bind-mount through `/proc/self/fd` without a path that
    /// could be swapped in between.
    pub fn open_path(&self, rel: &str) -> FsResult<OwnedFd> {
        let flags = OFlags::PATH | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        let fd = rfs::openat2(&self.fd, rel, flags, Mode::empty(), RESOLVE)
            .map_err(|e| FsError::new("open", rel, e.into()))?;
        let st = rfs::fstat(&fd).map_err(|e| FsError::new("stat", rel, e.into()))?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
            return Err(FsError::new("open", rel, Errno::LOOP.into()));
        }
        Ok(fd)
    }

    /// Creates the symlink `rel` -> `target`. The target is stored, never
    /// resolved here.
    pub fn symlink(&self, target: &str, rel: &str) -> FsResult<()> {
        self.at("symlink", rel, |p, n| rfs::symlinkat(target, p, n))
    }

    /// The target of the symlink `rel` (lossy for non-UTF-8 targets, which
    /// we never create).
    pub fn read_link(&self, rel: &str) -> FsResult<String> {
        let t = self.at("readlink", rel, |p, n| rfs::readlinkat(p, n, Vec::new()))?;
        Ok(String::from_utf8_lossy(t.as_bytes()).into_owned())
    }

    /// `lstat` of `rel`; `None` when it does not exist.
    pub fn stat(&self, rel: &str) -> FsResult<Option<Stat>> {
        match self.at("stat", rel, |p, n| {
            rfs::statat(p, n, AtFlags::SYMLINK_NOFOLLOW)
        }) {
            Ok(st) => Ok(Some(st)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The file type of `rel` without following it; `None` when missing.
    pub fn kind(&self, rel: &str) -> FsResult<Option<FileType>> {
        Ok(self
            .stat(rel)?
            .map(|st| FileType::from_raw_mode(st.st_mode)))
    }

    /// Sets the permission bits of the file or directory `rel`. Refuses a
    /// symlink (`fchmodat` would follow it).
    pub fn chmod(&self, rel: &str, mode: u32) -> FsResult<()> {
        self.at("chmod", rel, |p, n| {
            let st = rfs::statat(p, n, AtFlags::SYMLINK_NOFOLLOW)?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                return Err(Errno::LOOP);
            }
            rfs::chmodat(p, n, Mode::from_raw_mode(mode & 0o7777), AtFlags::empty())
        })
    }

    /// Sets the owner of `rel` without following a symlink. `EPERM` is
    /// tolerated when unprivileged (one warning).
    pub fn chown(&self, rel: &str, uid: u32, gid: u32) -> FsResult<()> {
        self.at("chown", rel, |p, n| {
            let (u, g) = ids(uid, gid);
            tolerate_unprivileged(rfs::chownat(p, n, u, g, AtFlags::SYMLINK_NOFOLLOW))
        })
    }

    /// Removes the file or symlink `rel`; false when it did not exist.
    pub fn unlink(&self, rel: &str) -> FsResult<bool> {
        match self.at("unlink", rel, |p, n| rfs::unlinkat(p, n, AtFlags::empty())) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes `rel` and everything below it, never following a symlink;
    /// false when it did not exist.
    pub fn remove_tree(&self, rel: &str) -> FsResult<bool> {
        let Some(st) = self.stat(rel)? else {
            return Ok(false);
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return self.unlink(rel);
        }
        self.at("remove", rel, |p, n| {
            remove_dir_at(p, n.as_ref()).map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))
        })?;
        Ok(true)
    }

    /// Renames `from` to `to`, both beneath this directory, replacing `to`
    /// atomically if it exists (`rename(2)` semantics).
    pub fn rename(&self, from: &str, to: &str) -> FsResult<()> {
        let err = |e: io::Error| FsError::new("rename", format!("{from} -> {to}"), e);
        let (fp, fname) = split(from).map_err(err)?;
        let (tp, tname) = split(to).map_err(err)?;
        let fdir = fp.map(|p| self.open_dir(p)).transpose()?;
        let tdir = tp.map(|p| self.open_dir(p)).transpose()?;
        let f = fdir.as_ref().map_or(self.fd.as_fd(), |d| d.fd.as_fd());
        let t = tdir.as_ref().map_or(self.fd.as_fd(), |d| d.fd.as_fd());
        rfs::renameat(f, fname, t, tname).map_err(|e| err(e.into()))
    }

    /// The names in this directory (without `.` and `..`) and their types.
    pub fn entries(&self) -> FsResult<Vec<(OsString, FileType)>> {
        read_entries(self.fd.as_fd()).map_err(|e| FsError::new("read directory", ".", e))
    }

    /// Flushes the whole filesystem this directory is on: one call for a
    /// whole new version instead of an fsync per file.
    pub fn syncfs(&self) -> FsResult<()> {
        rfs::syncfs(&self.fd).map_err(|e| FsError::new("syncfs", ".", e.into()))
    }

    /// Flushes this directory's own entries (after a rename into it).
    pub fn fsync(&self) -> FsResult<()> {
        rfs::fsync(&self.fd).map_err(|e| FsError::new("fsync", ".", e.into()))
    }
}

/// Sets the owner of an open file (`EPERM` tolerated when unprivileged).
/// Call before [`set_file_mode`]: a chown clears setuid bits.
pub fn set_file_owner(f: &File, rel: &str, uid: u32, gid: u32) -> FsResult<()> {
    let (u, g) = ids(uid, gid);
    tolerate_unprivileged(rfs::fchown(f, u, g)).map_err(|e| FsError::new("chown", rel, e.into()))
}

/// Sets the permission bits of an open file.
pub fn set_file_mode(f: &File, rel: &str, mode: u32) -> FsResult<()> {
    rfs::fchmod(f, Mode::from_raw_mode(mode & 0o7777))
        .map_err(|e| FsError::new("chmod", rel, e.into()))
}

/// Copies the content of the regular file `src_rel` beneath `src` to a new
/// file `dst_rel` beneath `dst` (mode 0600; the caller sets owner and mode on
/// the returned file). The copy is a new inode.
pub fn copy_file(src: &Dir, src_rel: &str, dst: &Dir, dst_rel: &str) -> FsResult<File> {
    let mut from = src.open_file(src_rel)?;
    let mut to = dst.create_file(dst_rel)?;
    io::copy(&mut from, &mut to).map_err(|e| FsError::new("copy", dst_rel, e))?;
    Ok(to)
}

/// What [`copy_tree`] copied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyStats {
    pub dirs: u64,
    pub files: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

/// Copies everything beneath `src` into the (existing, empty) `dst`:
/// directories, files with their content, symlinks, modes and owners, every
/// one a new inode. Nothing is followed. Sockets, FIFOs and devices are not
/// volume content and are skipped. Directory modes are set after their
/// content, so a read-only directory can still be filled.
pub fn copy_tree(src: &Dir, dst: &Dir) -> FsResult<CopyStats> {
    let mut stats = CopyStats::default();
    copy_into(src, dst, "", &mut stats)?;
    Ok(stats)
}

fn copy_into(src: &Dir, dst: &Dir, at: &str, stats: &mut CopyStats) -> FsResult<()> {
    for (name, _) in src.entries()? {
        let Some(name) = name.to_str() else {
            tracing::warn!(dir = at, name = ?name, "skipping a non-UTF-8 name while copying");
            continue;
        };
        let shown = if at.is_empty() {
            name.to_string()
        } else {
            format!("{at}/{name}")
        };
        let Some(st) = src.stat(name)? else { continue };
        let mode = st.st_mode & 0o7777;
        let ctx = |op, e: FsError| FsError::new(op, shown.clone(), e.source);
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                dst.mkdir(name, 0o700).map_err(|e| ctx("mkdir", e))?;
                dst.chown(name, st.st_uid, st.st_gid)
                    .map_err(|e| ctx("chown", e))?;
                let (s, d) = (src.open_dir(name)?, dst.open_dir(name)?);
                copy_into(&s, &d, &shown, stats)?;
                rfs::fchmod(&d, Mode::from_raw_mode(mode))
                    .map_err(|e| FsError::new("chmod", shown.clone(), e.into()))?;
                stats.dirs += 1;
            }
            FileType::RegularFile => {
                let f = copy_file(src, name, dst, name).map_err(|e| ctx("copy", e))?;
                set_file_owner(&f, &shown, st.st_uid, st.st_gid)?;
                set_file_mode(&f, &shown, mode)?;
                stats.files += 1;
                stats.bytes += st.st_size as u64;
            }
            FileType::Symlink => {
                let target = src.read_link(name)?;
                dst.symlink(&target, name).map_err(|e| ctx("symlink", e))?;
                dst.chown(name, st.st_uid, st.st_gid)
                    .map_err(|e| ctx("chown", e))?;
                stats.symlinks += 1;
            }
            other => {
                tracing::warn!(path = %shown, kind = ?other, "skipping a special file while copying");
            }
        }
    }
    Ok(())
}

fn read_entries(fd: BorrowedFd<'_>) -> io::Result<Vec<(OsString, FileType)>> {
    let mut out = Vec::new();
    for ent in rfs::Dir::read_from(fd)? {
        let ent = ent?;
        let name = ent.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push((
            std::ffi::OsStr::from_bytes(name).to_os_string(),
            ent.file_type(),
        ));
    }
    Ok(out)
}

/// Removes the directory `name` in `parent` with its content. A directory
/// without owner write/search permission is opened up first (the unprivileged
/// case; root needs no permission), since it is being deleted anyway.
fn remove_dir_at(parent: BorrowedFd<'_>, name: &std::ffi::OsStr) -> io::Result<()> {
    let open = || rfs::openat2(parent, name, DIR_FLAGS, Mode::empty(), RESOLVE);
    let dir = match open() {
        Err(Errno::ACCESS) => {
            rfs::chmodat(parent, name, Mode::from_raw_mode(0o700), AtFlags::empty())?;
            open()?
        }
        r => r?,
    };
    let st = rfs::fstat(&dir)?;
    if st.st_mode & 0o700 != 0o700 {
        rfs::fchmod(&dir, Mode::from_raw_mode((st.st_mode | 0o700) & 0o7777))?;
    }
    for (child, ty) in read_entries(dir.as_fd())? {
        let ty = if ty == FileType::Unknown {
            let st = rfs::statat(&dir, child.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)?;
            FileType::from_raw_mode(st.st_mode)
        } else {
            ty
        };
        if ty == FileType::Directory {
            remove_dir_at(dir.as_fd(), &child)?;
        } else {
            rfs::unlinkat(&dir, child.as_os_str(), AtFlags::empty())?;
        }
    }
    rfs::unlinkat(parent, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        fs,
        io::Write,
        os::unix::fs::{MetadataExt, PermissionsExt, symlink},
    };

    fn root() -> (tempfile::TempDir, Dir) {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::open_root(t.path()).unwrap();
        (t, d)
    }

    #[test]
    fn resolution_never_follows_a_symlink_or_leaves() {
        let (t, d) = root();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), t.path().join("evil")).unwrap();
        fs::create_dir(t.path().join("sub")).unwrap();
        for (what, r) in [
            ("through link", d.create_file("evil/x").map(drop)),
            ("dotdot", d.create_file("sub/../../x").map(drop)),
            ("mkdir through link", d.mkdir("evil/x", 0o755)),
            ("symlink through link", d.symlink("a", "evil/x")),
            ("open link as dir", d.open_dir("evil").map(drop)),
            ("open link as file", d.open_file("evil").map(drop)),
            ("chmod a link", d.chmod("evil", 0o777)),
        ] {
            let e = r.expect_err(what);
            assert!(
                matches!(e.errno(), Some(Errno::XDEV | Errno::LOOP | Errno::NOTDIR)),
                "{what}: {e}"
            );
        }
        for bad in ["..", "sub/..", "/etc/passwd", "a/", ""] {
            assert!(d.create_file(bad).is_err(), "{bad:?}");
        }
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn remove_tree_removes_links_not_their_targets() {
        let (t, d) = root();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("keep"), b"k").unwrap();
        fs::create_dir_all(t.path().join("a/b")).unwrap();
        fs::write(t.path().join("a/b/f"), b"x").unwrap();
        symlink(outside.path(), t.path().join("a/out")).unwrap();
        fs::set_permissions(t.path().join("a/b"), fs::Permissions::from_mode(0o500)).unwrap();
        assert!(d.remove_tree("a").unwrap());
        assert!(!t.path().join("a").exists());
        assert!(outside.path().join("keep").exists());
        assert!(!d.remove_tree("a").unwrap());
    }

    #[test]
    fn copy_tree_copies_everything_into_new_inodes() {
        let (t, d) = root();
        d.mkdir("src", 0o755).unwrap();
        d.mkdir("dst", 0o755).unwrap();
        let src = d.open_dir("src").unwrap();
        src.mkdir("ro", 0o755).unwrap();
        let mut f = src.create_file("ro/f").unwrap();
        f.write_all(b"hello").unwrap();
        set_file_mode(&f, "ro/f", 0o640).unwrap();
        src.chmod("ro", 0o555).unwrap();
        src.symlink("ro/f", "l").unwrap();
        let dst = d.open_dir("dst").unwrap();
        let stats = copy_tree(&src, &dst).unwrap();
        assert_eq!(
            stats,
            CopyStats {
                dirs: 1,
                files: 1,
                symlinks: 1,
                bytes: 5
            }
        );
        let (a, b) = (t.path().join("src/ro/f"), t.path().join("dst/ro/f"));
        assert_eq!(fs::read(&b).unwrap(), b"hello");
        let (ma, mb) = (fs::metadata(&a).unwrap(), fs::metadata(&b).unwrap());
        assert_ne!(ma.ino(), mb.ino());
        assert_eq!(mb.mode() & 0o7777, 0o640);
        assert_eq!(
            fs::metadata(t.path().join("dst/ro")).unwrap().mode() & 0o7777,
            0o555
        );
        assert_eq!(dst.read_link("l").unwrap(), "ro/f");
        d.remove_tree("dst").unwrap();
        d.remove_tree("src").unwrap();
    }

    #[test]
    fn rename_replaces_atomically() {
        let (t, d) = root();
        d.symlink("one", "a").unwrap();
        d.symlink("two", "tmp").unwrap();
        d.rename("tmp", "a").unwrap();
        assert_eq!(fs::read_link(t.path().join("a")).unwrap(), Path::new("two"));
        assert!(d.kind("tmp").unwrap().is_none());
    }
}
