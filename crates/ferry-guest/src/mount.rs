//! Bind mounts of volumes into a container's root filesystem.
//!
//! The source is a volume of the store (a tree volume's directory, one entry
//! of its current version, or a file volume's one file), opened `O_PATH`
//! through the store's confined resolver. The target is a path inside the
//! container's rootfs, resolved the way the container will see it:
//! `openat2(RESOLVE_IN_ROOT)` on an `O_PATH` handle of the rootfs, so
//! symlinks in the image are followed *inside* the rootfs (an absolute link
//! such as Debian's `/var/run -> /run` means `<rootfs>/run`) and nothing can
//! lead out of it. A `..` in the target is refused outright (kubelet never
//! sends one). Missing directories and the mountpoint itself (a directory or
//! an empty file, to match the source) are created one component at a time
//! under handles that were resolved the same way.
//!
//! Nothing is then resolved by path again: the source is cloned as a
//! detached bind mount (`open_tree(OPEN_TREE_CLONE)`) and attached on the
//! target's handle (`move_mount` from fd to fd), so a symlink swapped in
//! meanwhile redirects nothing. The new mount is then made `nosuid,nodev`
//! and, unless read-write was asked, read-only, with `MS_REMOUNT | MS_BIND`
//! on `/proc/self/fd/<mount>` (the handle of the new mount itself). If that
//! fails the mount is detached again: no half-configured mount stays.
//!
//! The syscalls sit behind [`Mounter`]: [`SysMounter`] is the real one;
//! [`RecordingMounter`] records what would be mounted, for unit tests that
//! run without root.
use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
    sync::Mutex,
};

use ferry_proto::ferry as pb;
use ferry_tree::{
    VolumeKind,
    path::{validate_rel_path, validate_volume_name},
};
use rustix::{
    fs::{self as rfs, FileType, Mode, OFlags, ResolveFlags},
    io::Errno,
    mount::{self as rmount, MountFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags},
};

use crate::{
    error::{GuestError, Result},
    file_volume::FILES_DIR,
    fsops::{Dir, FsError},
    layout,
    store::Store,
};

/// The mount syscalls ferry-agent makes, behind a seam (CONVENTIONS #4).
pub trait Mounter: Send + Sync {
    /// A detached bind mount of `source` (`open_tree(OPEN_TREE_CLONE)`).
    fn clone_tree(&self, source: BorrowedFd<'_>) -> io::Result<OwnedFd>;
    /// Attaches the detached mount `tree` on `target` (`move_mount`, fd to
    /// fd: no path is resolved).
    fn attach(&self, tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()>;
    /// Makes the attached mount `tree` nosuid, nodev and, if `read_only`,
    /// read-only (`MS_REMOUNT | MS_BIND` on `/proc/self/fd/<tree>`).
    fn restrict(&self, tree: BorrowedFd<'_>, read_only: bool) -> io::Result<()>;
    /// Detaches the attached mount `tree` (`umount2(MNT_DETACH)`).
    fn detach(&self, tree: BorrowedFd<'_>) -> io::Result<()>;
}

fn proc_fd(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// The real mount syscalls (rustix). Needs `CAP_SYS_ADMIN` in the mount
/// namespace.
#[derive(Debug, Default, Clone, Copy)]
pub struct SysMounter;

impl Mounter for SysMounter {
    fn clone_tree(&self, source: BorrowedFd<'_>) -> io::Result<OwnedFd> {
        let flags = OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH;
        Ok(rmount::open_tree(source, "", flags)?)
    }

    fn attach(&self, tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
        let flags =
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH;
        Ok(rmount::move_mount(tree, "", target, "", flags)?)
    }

    fn restrict(&self, tree: BorrowedFd<'_>, read_only: bool) -> io::Result<()> {
        let mut flags = MountFlags::BIND | MountFlags::NOSUID | MountFlags::NODEV;
        if read_only {
            flags |= MountFlags::RDONLY;
        }
        Ok(rmount::mount_remount(proc_fd(tree), flags, "")?)
    }

    fn detach(&self, tree: BorrowedFd<'_>) -> io::Result<()> {
        Ok(rmount::unmount(proc_fd(tree), UnmountFlags::DETACH)?)
    }
}

/// One call a [`RecordingMounter`] saw, with the real paths of its handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountCall {
    Clone { source: PathBuf },
    Attach { source: PathBuf, target: PathBuf },
    Restrict { source: PathBuf, read_only: bool },
    Detach { source: PathBuf },
}

/// A [`Mounter`] that mounts nothing and records every call, for tests
/// without root. Its "detached mount" is a duplicate of the source handle,
/// so the recorded paths say what would have been mounted where.
#[derive(Debug, Default)]
pub struct RecordingMounter {
    pub calls: Mutex<Vec<MountCall>>,
    /// Fail `restrict` with this errno, to exercise the undo.
    pub fail_restrict: Option<Errno>,
}

fn real_path(fd: BorrowedFd<'_>) -> PathBuf {
    std::fs::read_link(proc_fd(fd)).unwrap_or_default()
}

impl RecordingMounter {
    fn record(&self, c: MountCall) {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(c);
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<MountCall> {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Mounter for RecordingMounter {
    fn clone_tree(&self, source: BorrowedFd<'_>) -> io::Result<OwnedFd> {
        self.record(MountCall::Clone {
            source: real_path(source),
        });
        source.try_clone_to_owned()
    }

    fn attach(&self, tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
        self.record(MountCall::Attach {
            source: real_path(tree),
            target: real_path(target),
        });
        Ok(())
    }

    fn restrict(&self, tree: BorrowedFd<'_>, read_only: bool) -> io::Result<()> {
        self.record(MountCall::Restrict {
            source: real_path(tree),
            read_only,
        });
        match self.fail_restrict {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    fn detach(&self, tree: BorrowedFd<'_>) -> io::Result<()> {
        self.record(MountCall::Detach {
            source: real_path(tree),
        });
        Ok(())
    }
}

/// What to mount where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub volume: String,
    /// One entry of a tree volume's current version; empty for the whole
    /// volume (and always for a file volume).
    pub path: String,
    /// The container's root filesystem (absolute).
    pub rootfs: PathBuf,
    /// The mountpoint inside the rootfs.
    pub target: String,
    pub read_only: bool,
}

impl From<&pb::MountRequest> for MountSpec {
    fn from(r: &pb::MountRequest) -> Self {
        MountSpec {
            volume: r.volume.clone(),
            path: r.path.clone(),
            rootfs: PathBuf::from(&r.rootfs),
            target: r.target.clone(),
            read_only: !r.read_write,
        }
    }
}

/// An opened mount source.
pub struct Source {
    fd: OwnedFd,
    is_dir: bool,
    /// Its guest path, for the reply and the log.
    shown: PathBuf,
}

/// Opens the source of `spec` in a store at `root` holding `volume` as a
/// `kind` volume whose current tree version is `version`.
fn open_source(
    root: &Path,
    volumes: &Dir,
    files: &Dir,
    kind: VolumeKind,
    version: Option<&str>,
    spec: &MountSpec,
) -> Result<Source> {
    let name = spec.volume.as_str();
    let not_found = |e: FsError| -> GuestError {
        if e.is_not_found() {
            GuestError::NoSuchPath {
                volume: name.to_string(),
                path: spec.path.clone(),
            }
        } else {
            e.into()
        }
    };
    let (fd, shown) = match kind {
        VolumeKind::File => {
            if !spec.path.is_empty() {
                return Err(GuestError::PathOnFileVolume {
                    volume: name.to_string(),
                    path: spec.path.clone(),
                });
            }
            let fd = files.open_path(name).map_err(not_found)?;
            (fd, root.join(FILES_DIR).join(name))
        }
        VolumeKind::Tree if spec.path.is_empty() => {
            let fd = volumes.open_path(name).map_err(not_found)?;
            (fd, root.join("volumes").join(name))
        }
        VolumeKind::Tree => {
            validate_rel_path(&spec.path, &ferry_tree::Limits::default())?;
            let version = version.ok_or_else(|| GuestError::NoVolume(name.to_string()))?;
            let vdir = layout::version_dir(version);
            let fd = volumes
                .open_dir(name)?
                .open_dir(&vdir)?
                .open_path(&spec.path)
                .map_err(not_found)?;
            (
                fd,
                root.join("volumes").join(name).join(vdir).join(&spec.path),
            )
        }
    };
    let st =
        rfs::fstat(&fd).map_err(|e| FsError::new("stat", shown.display().to_string(), e.into()))?;
    let ty = FileType::from_raw_mode(st.st_mode);
    if ty != FileType::Directory && ty != FileType::RegularFile {
        return Err(GuestError::NotAFile {
            volume: name.to_string(),
            path: spec.path.clone(),
        });
    }
    Ok(Source {
        fd,
        is_dir: ty == FileType::Directory,
        shown,
    })
}

/// The kernel's confinement for targets: inside the rootfs, as the
/// container sees it.
const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// A resolved mountpoint.
struct Target {
    fd: OwnedFd,
    shown: PathBuf,
    created: bool,
}

/// Resolves (creating what is missing) the mountpoint `target` inside
/// `rootfs`, a directory if `dir`, else a file.
fn resolve_target(spec: &MountSpec, dir: bool) -> Result<Target> {
    let bad = |why: String| GuestError::BadMount {
        volume: spec.volume.clone(),
        target: spec.target.clone(),
        why,
    };
    if !spec.rootfs.is_absolute() {
        return Err(bad(format!(
            "the rootfs {} is not an absolute path",
            spec.rootfs.display()
        )));
    }
    if spec.target.contains('\0') {
        return Err(bad("the target contains a NUL byte".into()));
    }
    let comps: Vec<&str> = spec
        .target
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if comps.contains(&"..") {
        return Err(bad(
            "\"..\" is not allowed in a mount target (it would point above the rootfs)".into(),
        ));
    }
    let Some((last, parents)) = comps.split_last() else {
        return Err(bad("the target is the rootfs itself".into()));
    };
    let at = |op: &'static str, p: &str, e: Errno| -> GuestError {
        match e {
            Errno::NOTDIR => bad(format!("{p:?}: a component on the way is not a directory")),
            Errno::NOENT => bad(format!(
                "{p:?} does not exist inside the rootfs and cannot be created there (a symlink on the way points at nothing inside it)"
            )),
            e => FsError::new(op, format!("{}/{p}", spec.rootfs.display()), e.into()).into(),
        }
    };
    let rootfs = rfs::open(
        &spec.rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| bad(format!("the rootfs {}: {e}", spec.rootfs.display())))?;
    let open = |p: &str, flags: OFlags| {
        rfs::openat2(
            &rootfs,
            p,
            flags | OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            IN_ROOT,
        )
    };
    let mut parent = rootfs.try_clone().map_err(|e| bad(e.to_string()))?;
    for i in 0..parents.len() {
        let prefix = parents[..=i].join("/");
        parent = match open(&prefix, OFlags::DIRECTORY) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                match rfs::mkdirat(&parent, parents[i], Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(at("mkdir", &prefix, e)),
                }
                open(&prefix, OFlags::DIRECTORY).map_err(|e| at("open", &prefix, e))?
            }
            Err(e) => return Err(at("open", &prefix, e)),
        };
    }
    let full = comps.join("/");
    let (fd, created) = match open(&full, OFlags::empty()) {
        Ok(fd) => (fd, false),
        Err(Errno::NOENT) => {
            let made = if dir {
                rfs::mkdirat(&parent, *last, Mode::from_raw_mode(0o755))
            } else {
                rfs::openat(
                    &parent,
                    *last,
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::WRONLY
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )
                .map(drop)
            };
            made.map_err(|e| at("create the mountpoint", &full, e))?;
            (
                open(&full, OFlags::empty()).map_err(|e| at("open", &full, e))?,
                true,
            )
        }
        Err(e) => return Err(at("open", &full, e)),
    };
    let st = rfs::fstat(&fd).map_err(|e| at("stat", &full, e))?;
    let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
    if is_dir != dir {
        return Err(bad(format!(
            "the mountpoint is a {}, the source a {}",
            if is_dir { "directory" } else { "file" },
            if dir { "directory" } else { "file" }
        )));
    }
    let shown = real_path(fd.as_fd());
    let root_real = real_path(rootfs.as_fd());
    if !shown.starts_with(&root_real) {
        // IN_ROOT makes this impossible; kept as the last wall.
        return Err(bad(format!(
            "resolves to {}, outside the rootfs",
            shown.display()
        )));
    }
    Ok(Target { fd, shown, created })
}

/// Bind-mounts `source` at `spec.target` inside `spec.rootfs` (see the
/// module documentation).
fn mount_source(m: &dyn Mounter, source: &Source, spec: &MountSpec) -> Result<pb::MountResponse> {
    let target = resolve_target(spec, source.is_dir)?;
    let failed = |e: io::Error| GuestError::BindMount {
        target: target.shown.display().to_string(),
        source: e,
    };
    let tree = m.clone_tree(source.fd.as_fd()).map_err(failed)?;
    m.attach(tree.as_fd(), target.fd.as_fd()).map_err(failed)?;
    if let Err(e) = m.restrict(tree.as_fd(), spec.read_only) {
        if let Err(undo) = m.detach(tree.as_fd()) {
            tracing::error!(target = %target.shown.display(), "detaching a mount that could not be restricted: {undo}");
        }
        return Err(failed(e));
    }
    let mut r = pb::MountResponse::new();
    r.source = source.shown.display().to_string();
    r.target = target.shown.display().to_string();
    r.read_only = spec.read_only;
    r.created = target.created;
    Ok(r)
}

/// Refuses rootfs paths that are plainly not a container's: the guest's own
/// root, or anything in the store.
fn check_rootfs(store_root: &Path, spec: &MountSpec) -> Result<()> {
    let bad = |why: &str| GuestError::BadMount {
        volume: spec.volume.clone(),
        target: spec.target.clone(),
        why: format!("the rootfs {} {why}", spec.rootfs.display()),
    };
    let real = std::fs::canonicalize(&spec.rootfs).unwrap_or_else(|_| spec.rootfs.clone());
    if real == Path::new("/") {
        return Err(bad("is the guest's own root"));
    }
    let store = std::fs::canonicalize(store_root).unwrap_or_else(|_| store_root.to_path_buf());
    if real.starts_with(&store) || store.starts_with(&real) {
        return Err(bad("overlaps the ferry store"));
    }
    Ok(())
}

impl Store {
    /// The Mount RPC: bind-mounts a volume of this store into a container's
    /// rootfs. The volume's lock is held, so no commit swaps or removes the
    /// version being mounted.
    pub fn mount(&self, req: &pb::MountRequest, m: &dyn Mounter) -> Result<pb::MountResponse> {
        validate_volume_name(&req.volume)?;
        let spec = MountSpec::from(req);
        check_rootfs(self.root(), &spec)?;
        let v = self
            .volume(&spec.volume)
            .ok_or_else(|| GuestError::NoVolume(spec.volume.clone()))?;
        let st = v.lock();
        let c = st
            .committed
            .as_ref()
            .ok_or_else(|| GuestError::NoVolume(spec.volume.clone()))?;
        let source = open_source(
            self.root(),
            &self.volumes_dir,
            &self.files_dir,
            c.kind,
            Some(&c.version),
            &spec,
        )?;
        mount_source(m, &source, &spec)
    }
}

/// `ferry-agent mount`: the same mount, for a runtime that drives the guest
/// itself, from the store at `root` as it is on disk. Nothing in the store
/// is changed or repaired (an agent may be serving it right now).
pub fn mount_from_root(
    root: &Path,
    spec: &MountSpec,
    m: &dyn Mounter,
) -> Result<pb::MountResponse> {
    validate_volume_name(&spec.volume)?;
    check_rootfs(root, spec)?;
    let root_dir = Dir::open_root(root)?;
    let volumes = root_dir.open_dir("volumes")?;
    let files = root_dir.open_dir(FILES_DIR)?;
    let is_tree = volumes.kind(&spec.volume)? == Some(FileType::Directory);
    let is_file = files.kind(&spec.volume)? == Some(FileType::RegularFile);
    let (kind, version) = match (is_tree, is_file) {
        (true, false) => {
            let vol = volumes.open_dir(&spec.volume)?;
            let target = layout::data_target(&vol)?
                .ok_or_else(|| GuestError::NoVolume(spec.volume.clone()))?;
            (
                VolumeKind::Tree,
                Some(target.trim_start_matches("..").to_string()),
            )
        }
        (false, true) => (VolumeKind::File, None),
        (true, true) => {
            return Err(GuestError::BadMount {
                volume: spec.volume.clone(),
                target: spec.target.clone(),
                why: "the store holds both a tree and a file volume of that name".into(),
            });
        }
        (false, false) => return Err(GuestError::NoVolume(spec.volume.clone())),
    };
    let source = open_source(root, &volumes, &files, kind, version.as_deref(), spec)?;
    mount_source(m, &source, spec)
}

/// `ferry-agent mount`: bind-mount one volume of the store into a
/// container's rootfs, then exit.
#[derive(Debug, Clone, clap::Args)]
pub struct MountArgs {
    /// The store (ferry-agent's --root).
    #[arg(long, value_name = "DIR", default_value = "/run/ferry")]
    pub root: PathBuf,
    /// The volume to mount.
    #[arg(long, value_name = "NAME")]
    pub volume: String,
    /// One file or directory of a tree volume's current version (a
    /// subPath; it does not follow later versions). Without it the whole
    /// volume is mounted (and follows every version); a file volume is
    /// always mounted whole and sees every in-place update.
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// The container's root filesystem (an absolute guest path).
    #[arg(long, value_name = "DIR")]
    pub rootfs: PathBuf,
    /// Where inside the rootfs, e.g. /etc/hosts (resolved inside the
    /// rootfs; created if missing).
    #[arg(long, value_name = "PATH")]
    pub target: String,
    /// Mount read-write (the termination log). Default: read-only. Always
    /// nosuid,nodev.
    #[arg(long)]
    pub rw: bool,
}

impl From<MountArgs> for MountSpec {
    fn from(a: MountArgs) -> Self {
        MountSpec {
            volume: a.volume,
            path: a.path.unwrap_or_default(),
            rootfs: a.rootfs,
            target: a.target,
            read_only: !a.rw,
        }
    }
}

#[cfg(test)]
mod tests;
