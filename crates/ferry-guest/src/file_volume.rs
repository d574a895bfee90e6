//! File volumes: one file at `<root>/files/<name>`, updated IN PLACE.
//!
//! kubelet bind-mounts some things as single files (etc-hosts, hostname,
//! resolv.conf, the termination log, a subPath). A file bind mount pins an
//! inode; it does not follow a rename. So unlike a tree volume, whose new
//! version is published by renaming `..data`, a file volume keeps one inode
//! for its whole life and a commit rewrites it in place, as kubelet itself
//! does for these files.
//!
//! A transaction stages the new content in a private file
//! `<root>/files/.staging-<name>` (volume names never start with a dot),
//! checks its size and blake3 as it arrives, and at commit checks that the
//! manifest is exactly one file entry at [`FILE_ENTRY`] with the digest the
//! host computed. Only then is the live file touched: owner and mode first,
//! then truncate, copy, fsync.
//!
//! The trade-off, the same as kubelet's: a reader that opens the file while
//! the copy runs can see it empty or partial. A failure in the middle of the
//! copy (the store's tmpfs full) leaves the live file partial and the commit
//! fails; the host's next sync, still planned against the old digest,
//! rewrites it whole. Everything before the copy leaves the live file as it
//! was.
use std::{
    io::{self, Read, Seek, Write},
    os::unix::fs::MetadataExt,
    time::Instant,
};

use ferry_proto::ferry as pb;
use ferry_tree::{
    Entry, FILE_ENTRY, Kind, Manifest, VolumeKind,
    diff::{apply_remove, apply_upsert},
    manifest::hex,
    path::validate_volume_name,
    volume::file_entry,
};
use rustix::fs::FileType;

use crate::{
    error::{GuestError, Result},
    fsops::{self, Dir, FsError},
    limits::StoreLimits,
    policy::Policy,
    state::{self, Committed},
    txn::{Pending, TxnStats, Usage, check_content, check_quota, checked_entry},
    version,
};

/// The directory of file volumes under the store root.
pub const FILES_DIR: &str = "files";

/// The private staging file of a file volume's transaction.
pub fn staging_name(volume: &str) -> String {
    format!(".staging-{volume}")
}

/// One open transaction on a file volume.
pub struct FileTxn {
    pub id: u64,
    pub client_id: u64,
    pub volume: String,
    /// The version name of this commit (file volumes keep no version
    /// directory; the name is for the summary and the log).
    pub version: String,
    pub base_generation: u64,
    files: Dir,
    base: Manifest,
    /// The manifest being built: zero or one entry until commit.
    pub working: Manifest,
    pub usage: Usage,
    /// Boxed: a hasher is large, and most transactions have none.
    pending: Option<Box<Pending>>,
    /// The working entry's content is in the staging file; false when it
    /// is the live file's own (SOURCE_BASE: only owner or mode change).
    staged: bool,
    pub stats: TxnStats,
    pub started: Instant,
    pub last_activity: Instant,
    limits: StoreLimits,
    policy: Policy,
}

/// The parameters of a new file transaction.
pub struct FileParams<'a> {
    pub id: u64,
    pub client_id: u64,
    pub volume: &'a str,
    pub version: String,
    /// `<root>/files`.
    pub files: Dir,
    pub base: Option<&'a Committed>,
    pub limits: StoreLimits,
    pub policy: Policy,
}

impl FileTxn {
    /// Opens a transaction; a staging file left by a crash is removed.
    pub fn begin(p: FileParams<'_>) -> Result<FileTxn> {
        p.files.unlink(&staging_name(p.volume))?;
        let base = p.base.map(|c| c.manifest.clone()).unwrap_or_default();
        let now = Instant::now();
        Ok(FileTxn {
            id: p.id,
            client_id: p.client_id,
            volume: p.volume.to_string(),
            version: p.version,
            base_generation: p.base.map_or(0, |c| c.generation),
            files: p.files,
            usage: Usage::of(&base),
            working: base.clone(),
            base,
            pending: None,
            staged: false,
            stats: TxnStats::default(),
            started: now,
            last_activity: now,
            limits: p.limits,
            policy: p.policy,
        })
    }

    fn staging(&self) -> String {
        staging_name(&self.volume)
    }

    /// Forgets any content staged so far.
    fn unstage(&mut self) -> Result<()> {
        self.pending = None;
        self.staged = false;
        self.files.unlink(&self.staging())?;
        Ok(())
    }

    /// Applies removes, then upserts. The only entry a file volume has is
    /// a file at [`FILE_ENTRY`]; anything else is refused.
    pub fn put_entries(
        &mut self,
        removes: &[String],
        upserts: &[pb::Entry],
        others: Usage,
    ) -> Result<u64> {
        for r in removes {
            for e in apply_remove(&mut self.working, r)? {
                self.usage.entries -= 1;
                if e.kind == Kind::File {
                    self.usage.bytes -= e.size;
                }
            }
            self.unstage()?;
            self.stats.removes += 1;
        }
        for p in upserts {
            self.upsert(p, others)?;
            self.stats.upserts += 1;
        }
        Ok(u64::from(self.pending.is_some()))
    }

    fn upsert(&mut self, p: &pb::Entry, others: Usage) -> Result<()> {
        let (e, source) = checked_entry(p, &self.limits)?;
        if e.path != FILE_ENTRY || e.kind != Kind::File {
            return Err(GuestError::NotFileEntry {
                volume: self.volume.clone(),
                path: e.path.clone(),
            });
        }
        let old = self.working.get(&e.path);
        check_quota(&self.volume, self.usage, old, &e, others, &self.limits)?;
        self.unstage()?;
        match source {
            pb::Source::SOURCE_BASE => {
                let same = self
                    .base
                    .get(FILE_ENTRY)
                    .is_some_and(|b| b.hash == e.hash && b.size == e.size);
                if !same {
                    return Err(GuestError::NotInBase {
                        path: e.path.clone(),
                        hash: hex(&e.hash),
                        size: e.size,
                    });
                }
                self.stats.base_copies += 1;
            }
            pb::Source::SOURCE_INLINE => {
                check_content(&e, &p.data)?;
                let mut f = self.files.create_file(&self.staging())?;
                f.write_all(&p.data)
                    .map_err(|err| FsError::new("write", self.staging(), err))?;
                self.staged = true;
                self.stats.sent_files += 1;
                self.stats.received_bytes += p.data.len() as u64;
            }
            pb::Source::SOURCE_CHUNKS => {
                let f = self.files.create_file(&self.staging())?;
                self.stats.sent_files += 1;
                if e.size == 0 {
                    check_content(&e, b"")?;
                    self.staged = true;
                } else {
                    self.pending = Some(Box::new(Pending::new(e.clone(), f)));
                }
            }
        }
        let old = apply_upsert(&mut self.working, e.clone(), &self.limits.tree_limits())?;
        self.usage.entries += u64::from(old.is_none());
        if let Some(o) = old.filter(|o| o.kind == Kind::File) {
            self.usage.bytes -= o.size;
        }
        self.usage.bytes += e.size;
        Ok(())
    }

    /// Appends a chunk of the file's content.
    pub fn write_chunk(&mut self, path: &str, offset: u64, data: &[u8]) -> Result<u64> {
        let p = self
            .pending
            .as_mut()
            .filter(|p| p.entry.path == path)
            .ok_or_else(|| GuestError::NotPending {
                txn: self.id,
                path: path.to_string(),
            })?;
        let end = p.append(offset, data)?;
        self.stats.received_bytes += data.len() as u64;
        if p.complete() {
            self.pending = None;
            self.staged = true;
        }
        Ok(end)
    }

    /// Checks that the content is complete, that the volume is exactly one
    /// file entry and that its digest is the host's. Returns the files
    /// reused (1 when the content did not change).
    pub fn prepare_commit(&self, manifest_digest: &[u8]) -> Result<u64> {
        if let Some(p) = &self.pending {
            return Err(GuestError::PendingFiles {
                txn: self.id,
                first: p.entry.path.clone(),
                count: 1,
            });
        }
        if file_entry(&self.working).is_none() {
            return Err(GuestError::FileVolumeShape {
                volume: self.volume.clone(),
                entries: self.working.len(),
            });
        }
        crate::txn::check_manifest_digest(&self.volume, &self.working, manifest_digest)?;
        Ok(u64::from(!self.staged))
    }

    /// Writes the verified entry into the live file, in place (the same
    /// inode; created on the first commit): owner, mode, then the content
    /// (truncate, copy, fsync). Call after [`FileTxn::prepare_commit`].
    pub fn publish(&self) -> Result<()> {
        let e = file_entry(&self.working).ok_or_else(|| GuestError::FileVolumeShape {
            volume: self.volume.clone(),
            entries: self.working.len(),
        })?;
        let name = self.volume.as_str();
        let mut live = match self.files.open_file_rw(name) {
            Ok(f) => f,
            Err(err) if err.is_not_found() => self.files.create_file(name)?,
            Err(err) => return Err(err.into()),
        };
        let md = live
            .metadata()
            .map_err(|err| FsError::new("stat", name, err))?;
        if !md.is_file() {
            return Err(
                FsError::new("open for writing", name, rustix::io::Errno::ISDIR.into()).into(),
            );
        }
        fsops::set_file_owner(&live, name, e.uid, e.gid)?;
        fsops::set_file_mode(&live, name, self.policy.disk_mode(name, e))?;
        if self.staged {
            let mut staged = self.files.open_file(&self.staging())?;
            let written = (|| -> io::Result<u64> {
                live.set_len(0)?;
                live.rewind()?;
                let n = io::copy(&mut staged, &mut live)?;
                live.sync_all()?;
                Ok(n)
            })()
            .map_err(|err| FsError::new("write in place", name, err))?;
            if written != e.size {
                return Err(GuestError::SizeLies {
                    path: format!("{}/{}", FILE_ENTRY, self.staging()),
                    declared: e.size,
                    got: format!("{written} bytes were staged"),
                });
            }
        } else {
            live.sync_all()
                .map_err(|err| FsError::new("fsync", name, err))?;
        }
        self.files.unlink(&self.staging())?;
        Ok(())
    }

    /// Removes the staging file. The live file is untouched.
    pub fn discard(self) -> Result<()> {
        let staging = self.staging();
        let FileTxn { files, pending, .. } = self;
        drop(pending);
        files.unlink(&staging)?;
        Ok(())
    }
}

/// The live file of a file volume as it is on disk now, as a manifest
/// entry at [`FILE_ENTRY`] (mode, owner, size, blake3 of the content).
pub fn disk_entry(files: &Dir, name: &str) -> Result<Entry> {
    let mut f = files.open_file(name)?;
    let md = f.metadata().map_err(|e| FsError::new("stat", name, e))?;
    if !md.is_file() {
        return Err(GuestError::NotAFile {
            volume: name.to_string(),
            path: String::new(),
        });
    }
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| FsError::new("read", name, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Entry {
        path: FILE_ENTRY.to_string(),
        kind: Kind::File,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size,
        hash: *h.finalize().as_bytes(),
        target: String::new(),
    })
}

/// Loads the file volumes under `<root>/files` after a restart. Staging
/// files are removed. A file whose state file describes its content
/// (same size and blake3) keeps that state; otherwise (a crash during an
/// in-place write, a lost state file) its manifest is read from the disk,
/// and the host's next Begin, planned against another digest, resyncs it.
pub fn load_files(files: &Dir, state_dir: &Dir) -> Result<Vec<(String, Committed)>> {
    let mut out = Vec::new();
    let mut names = files.entries()?;
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, ty) in names {
        let Some(name) = name.to_str().map(str::to_string) else {
            tracing::warn!(?name, "skipping a file volume with a non-UTF-8 name");
            continue;
        };
        if name.starts_with(".staging-") {
            tracing::info!(file = %name, "removing an interrupted transaction's staging file");
            files.unlink(&name)?;
            continue;
        }
        if validate_volume_name(&name).is_err() || ty != FileType::RegularFile {
            tracing::warn!(volume = %name, "skipping an entry that is not a file volume");
            continue;
        }
        let disk = disk_entry(files, &name)?;
        let state = match state::load(state_dir, &name) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(volume = %name, "{e}: reading the file instead");
                None
            }
        };
        let committed = match state {
            Some(c)
                if c.kind == VolumeKind::File
                    && file_entry(&c.manifest)
                        .is_some_and(|e| e.hash == disk.hash && e.size == disk.size) =>
            {
                c
            }
            other => {
                tracing::warn!(volume = %name, "the state file does not describe the file: reading the file");
                let generation = other.as_ref().map_or(1, |c| c.generation);
                Committed {
                    manifest: Manifest::from_iter([disk]),
                    version: version::version_name(version::now_unix_ms(), generation),
                    generation,
                    last_commit_ms: other.map_or(0, |c| c.last_commit_ms),
                    kind: VolumeKind::File,
                }
            }
        };
        tracing::info!(volume = %name, generation = committed.generation, "restored file volume");
        out.push((name, committed));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Store, StoreLimits};
    use ferry_proto::convert;

    fn commit_file(s: &Store, base: &[u8], data: &[u8]) -> Manifest {
        let (u, g) = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        let e = Entry::file(FILE_ENTRY, 0o644, u, g, data);
        let mut b = pb::BeginRequest::new();
        b.volume = "hosts".into();
        b.base_digest = base.to_vec();
        b.kind = convert::volume_kind_to_pb(VolumeKind::File).into();
        let txn = s.begin(&b).unwrap().txn_id;
        let mut p = pb::PutEntriesRequest::new();
        p.txn_id = txn;
        let mut w = convert::entry_to_pb(&e);
        w.source = pb::Source::SOURCE_INLINE.into();
        w.data = data.to_vec();
        p.upserts.push(w);
        s.put_entries(&p).unwrap();
        let m = Manifest::from_iter([e]);
        let mut c = pb::CommitRequest::new();
        c.txn_id = txn;
        c.manifest_digest = m.digest().to_vec();
        s.commit(&c).unwrap();
        m
    }

    fn summary(s: &Store) -> pb::VolumeSummary {
        let mut r = pb::GetManifestRequest::new();
        r.volume = "hosts".into();
        s.get_manifest(&r).unwrap().volume.unwrap()
    }

    #[test]
    fn a_restart_trusts_the_state_file_only_if_it_describes_the_file() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("store");
        let open = || Store::open(root.clone(), StoreLimits::default(), Policy::default()).unwrap();
        let s = open();
        let m = commit_file(&s, &[], b"one");
        let m2 = commit_file(&s, &m.digest(), b"two, longer");
        let before = summary(&s);
        assert_eq!(before.generation, 2);
        drop(s);
        // A clean restart: the state file describes the file.
        std::fs::write(root.join("files/.staging-hosts"), b"half").unwrap();
        let s = open();
        assert!(!root.join("files/.staging-hosts").exists());
        assert_eq!(summary(&s), before);
        drop(s);
        // A crash in the middle of an in-place write: the file is read
        // from disk; the host's plan against the old digest is then refused
        // as stale and it resyncs.
        std::fs::write(root.join("files/hosts"), b"two, lo").unwrap();
        let s = open();
        let after = summary(&s);
        assert_eq!(after.generation, 2);
        assert_eq!(
            after.kind.enum_value(),
            Ok(pb::VolumeKind::VOLUME_KIND_FILE)
        );
        assert_ne!(after.digest, m2.digest().to_vec());
        assert_eq!(after.bytes, 7);
        let mut b = pb::BeginRequest::new();
        b.volume = "hosts".into();
        b.base_digest = m2.digest().to_vec();
        b.kind = convert::volume_kind_to_pb(VolumeKind::File).into();
        let e = s.begin(&b).expect_err("stale base");
        assert_eq!(e.code(), ttrpc::Code::FAILED_PRECONDITION, "{e}");
        commit_file(&s, &after.digest, b"two, longer");
        assert_eq!(
            std::fs::read(root.join("files/hosts")).unwrap(),
            b"two, longer"
        );
    }
}
