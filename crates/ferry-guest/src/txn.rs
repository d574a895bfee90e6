//! The transaction engine: one sync of one volume, built in a private
//! staging directory `..<version>` beside the published one.
//!
//! Begin clones the base version into staging (new inodes for every file, so
//! the published version is never touched). Every plan step is checked on
//! the working manifest with `ferry_tree::diff` and against the quotas
//! *before* anything is written; content is checked against its declared
//! size and blake3 as it arrives. Commit checks that nothing is missing and
//! that the working manifest has the digest the host computed, then makes
//! the staging directory final (directory modes, syncfs). Publishing it is
//! the store's job ([`crate::store`]).
//!
//! Nothing here touches anything but the staging directory, so dropping a
//! transaction at any point and removing staging leaves the published
//! version exactly as it was.
use std::{
    collections::{BTreeMap, HashSet},
    fs::File,
    io::Write,
    time::Instant,
};

use ferry_proto::{MAX_CHUNK_BYTES, convert, ferry as pb};
use ferry_tree::{
    Entry, Kind, Manifest,
    diff::{apply_remove, apply_upsert, validate_entry},
    manifest::hex,
};

use crate::{
    error::{GuestError, Result},
    fsops::{self, Dir, FsError},
    layout,
    limits::StoreLimits,
    policy::Policy,
    state::Committed,
};

/// Entries and content bytes of a manifest, kept up to date incrementally
/// (recounting 10,000 entries at every upsert would be quadratic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Entries of every kind.
    pub entries: u64,
    /// File content bytes.
    pub bytes: u64,
}

impl Usage {
    /// The usage of `m`.
    pub fn of(m: &Manifest) -> Usage {
        Usage {
            entries: m.len() as u64,
            bytes: m.total_bytes(),
        }
    }
}

/// Counters of one transaction, for the log.
#[derive(Debug, Clone, Copy, Default)]
pub struct TxnStats {
    pub removes: u64,
    pub upserts: u64,
    /// Files whose content came over the wire (inline or chunks).
    pub sent_files: u64,
    /// Files copied from the base version on the host's request.
    pub base_copies: u64,
    /// Content bytes received (inline and chunks).
    pub received_bytes: u64,
}

/// A file announced with SOURCE_CHUNKS whose content is still arriving.
pub(crate) struct Pending {
    pub entry: Entry,
    pub received: u64,
    pub hasher: blake3::Hasher,
    pub file: File,
}

impl Pending {
    /// Content for `entry` will arrive in chunks and go to `file`.
    pub fn new(entry: Entry, file: File) -> Pending {
        Pending {
            entry,
            received: 0,
            hasher: blake3::Hasher::new(),
            file,
        }
    }

    /// Appends a chunk at `offset` (which must be where the content stands),
    /// never past the declared size. Returns the bytes received so far; once
    /// the last byte is in, the content's blake3 must be the declared one.
    pub fn append(&mut self, offset: u64, data: &[u8]) -> Result<u64> {
        let path = self.entry.path.as_str();
        if data.len() > MAX_CHUNK_BYTES {
            return Err(GuestError::ChunkTooBig {
                path: path.to_string(),
                len: data.len(),
                max: MAX_CHUNK_BYTES,
            });
        }
        if offset != self.received {
            return Err(GuestError::ChunkOffset {
                path: path.to_string(),
                offset,
                expected: self.received,
            });
        }
        let end = self.received + data.len() as u64;
        if end > self.entry.size {
            return Err(GuestError::SizeLies {
                path: path.to_string(),
                declared: self.entry.size,
                got: format!(
                    "a chunk of {} bytes at offset {offset} goes past it",
                    data.len()
                ),
            });
        }
        self.file
            .write_all(data)
            .map_err(|e| FsError::new("write", path, e))?;
        self.hasher.update(data);
        self.received = end;
        if end == self.entry.size {
            let actual = self.hasher.finalize();
            if actual.as_bytes() != &self.entry.hash {
                return Err(GuestError::HashMismatch {
                    path: path.to_string(),
                    declared: hex(&self.entry.hash),
                    actual: hex(actual.as_bytes()),
                });
            }
        }
        Ok(end)
    }

    /// True when every byte has arrived (and matched its blake3).
    pub fn complete(&self) -> bool {
        self.received == self.entry.size
    }
}

/// Checks the shape of a wire entry that is about to be applied: kind and
/// hash, source, data only where it belongs, real owners, a valid path and
/// target. Returns the entry and where its content comes from.
pub(crate) fn checked_entry(p: &pb::Entry, limits: &StoreLimits) -> Result<(Entry, pb::Source)> {
    let e = convert::entry_from_pb(p)?;
    let bad = |why: String| GuestError::BadEntry {
        path: e.path.clone(),
        why,
    };
    let source = p
        .source
        .enum_value()
        .map_err(|n| bad(format!("unknown source {n}")))?;
    let inline = e.kind == Kind::File && source == pb::Source::SOURCE_INLINE;
    if !inline && !p.data.is_empty() {
        return Err(bad("only files with SOURCE_INLINE carry data".into()));
    }
    if e.uid == u32::MAX || e.gid == u32::MAX {
        return Err(bad("uid and gid 4294967295 (-1) are not owners".into()));
    }
    validate_entry(&e, &limits.tree_limits())?;
    Ok((e, source))
}

/// Refuses `e` if putting it in place of `old` in a volume using `usage`
/// would break a volume or store quota (`others`: the rest of the store).
pub(crate) fn check_quota(
    volume: &str,
    usage: Usage,
    old: Option<&Entry>,
    e: &Entry,
    others: Usage,
    l: &StoreLimits,
) -> Result<()> {
    let entries = usage.entries + u64::from(old.is_none());
    let old_bytes = old.filter(|o| o.kind == Kind::File).map_or(0, |o| o.size);
    let new_bytes = if e.kind == Kind::File { e.size } else { 0 };
    let bytes = (usage.bytes - old_bytes).saturating_add(new_bytes);
    let checks = [
        (
            format!("volume {volume:?} entries"),
            entries,
            l.max_volume_files,
        ),
        (
            format!("volume {volume:?} bytes"),
            bytes,
            l.max_volume_bytes,
        ),
        (
            "store entries".to_string(),
            others.entries.saturating_add(entries),
            l.max_store_files,
        ),
        (
            "store bytes".to_string(),
            others.bytes.saturating_add(bytes),
            l.max_store_bytes,
        ),
    ];
    for (what, wanted, limit) in checks {
        if wanted > limit {
            return Err(GuestError::Quota {
                what,
                wanted,
                limit,
                path: e.path.clone(),
            });
        }
    }
    Ok(())
}

/// One open transaction.
pub struct Txn {
    pub id: u64,
    pub client_id: u64,
    pub volume: String,
    /// The version this transaction will publish (without `..`).
    pub version: String,
    pub base_generation: u64,
    /// The volume directory (`<root>/volumes/<name>`).
    pub vol_dir: Dir,
    staging: Dir,
    base_manifest: Manifest,
    base_dir: Option<Dir>,
    /// The manifest of the version being built.
    pub working: Manifest,
    /// The usage of `working`.
    pub usage: Usage,
    pending: BTreeMap<String, Pending>,
    /// File paths whose content was (re)written in this transaction.
    rewritten: HashSet<String>,
    pub stats: TxnStats,
    pub started: Instant,
    pub last_activity: Instant,
    limits: StoreLimits,
    policy: Policy,
}

/// The parameters of a new transaction.
pub struct Params<'a> {
    pub id: u64,
    pub client_id: u64,
    pub volume: &'a str,
    pub version: String,
    pub vol_dir: Dir,
    pub base: Option<&'a Committed>,
    pub limits: StoreLimits,
    pub policy: Policy,
}

impl Txn {
    /// Creates the staging directory and clones the base version into it.
    /// On error, whatever was created is removed again.
    pub fn begin(p: Params<'_>) -> Result<Txn> {
        let staging_name = layout::version_dir(&p.version);
        // A leftover of an aborted transaction whose removal failed: never
        // the published version, whose generation is lower.
        p.vol_dir.remove_tree(&staging_name)?;
        p.vol_dir.mkdir(&staging_name, 0o700)?;
        let built = (|| -> Result<(Dir, Option<Dir>)> {
            let staging = p.vol_dir.open_dir(&staging_name)?;
            let base_dir = match p.base {
                None => None,
                Some(c) => {
                    let base = p.vol_dir.open_dir(&layout::version_dir(&c.version))?;
                    fsops::copy_tree(&base, &staging)?;
                    // Directories stay owner-writable while the transaction
                    // fills them; their final modes are set at commit.
                    for e in c.manifest.iter().filter(|e| e.kind == Kind::Dir) {
                        if e.mode & 0o700 != 0o700 {
                            staging.chmod(&e.path, e.mode | 0o700)?;
                        }
                    }
                    Some(base)
                }
            };
            p.vol_dir.chmod(&staging_name, 0o755)?;
            Ok((staging, base_dir))
        })();
        let (staging, base_dir) = match built {
            Ok(b) => b,
            Err(e) => {
                if let Err(rm) = p.vol_dir.remove_tree(&staging_name) {
                    tracing::error!(
                        volume = p.volume,
                        "removing staging after a failed begin: {rm}"
                    );
                }
                return Err(e);
            }
        };
        let base_manifest = p.base.map(|c| c.manifest.clone()).unwrap_or_default();
        let now = Instant::now();
        Ok(Txn {
            id: p.id,
            client_id: p.client_id,
            volume: p.volume.to_string(),
            version: p.version,
            base_generation: p.base.map_or(0, |c| c.generation),
            vol_dir: p.vol_dir,
            staging,
            usage: Usage::of(&base_manifest),
            working: base_manifest.clone(),
            base_manifest,
            base_dir,
            pending: BTreeMap::new(),
            rewritten: HashSet::new(),
            stats: TxnStats::default(),
            started: now,
            last_activity: now,
            limits: p.limits,
            policy: p.policy,
        })
    }

    /// How many files still wait for content.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Applies removes, then upserts, in order. `others` is what the rest of
    /// the store holds (for the store quotas). Stops at the first error; the
    /// caller then aborts the whole transaction.
    pub fn put_entries(
        &mut self,
        removes: &[String],
        upserts: &[pb::Entry],
        others: Usage,
    ) -> Result<u64> {
        for r in removes {
            let removed = apply_remove(&mut self.working, r)?;
            for e in &removed {
                self.usage.entries -= 1;
                if e.kind == Kind::File {
                    self.usage.bytes -= e.size;
                }
            }
            let below = format!("{r}/");
            self.pending.retain(|p, _| p != r && !p.starts_with(&below));
            self.staging.remove_tree(r)?;
            self.stats.removes += 1;
        }
        for p in upserts {
            self.upsert(p, others)?;
            self.stats.upserts += 1;
        }
        Ok(self.pending.len() as u64)
    }

    fn upsert(&mut self, p: &pb::Entry, others: Usage) -> Result<()> {
        let (e, source) = checked_entry(p, &self.limits)?;
        let inline = e.kind == Kind::File && source == pb::Source::SOURCE_INLINE;
        check_quota(
            &self.volume,
            self.usage,
            self.working.get(&e.path),
            &e,
            others,
            &self.limits,
        )?;
        let base_src = match (e.kind, source) {
            (Kind::File, pb::Source::SOURCE_INLINE) => {
                check_content(&e, &p.data)?;
                None
            }
            (Kind::File, pb::Source::SOURCE_BASE) => Some(
                self.base_manifest
                    .find_by_hash(&e.hash, e.size)
                    .map(|b| b.path.clone())
                    .ok_or_else(|| GuestError::NotInBase {
                        path: e.path.clone(),
                        hash: hex(&e.hash),
                        size: e.size,
                    })?,
            ),
            _ => None,
        };
        let old = apply_upsert(&mut self.working, e.clone(), &self.limits.tree_limits())?;
        self.usage.entries += u64::from(old.is_none());
        if let Some(o) = old.as_ref().filter(|o| o.kind == Kind::File) {
            self.usage.bytes -= o.size;
        }
        if e.kind == Kind::File {
            self.usage.bytes += e.size;
        }
        let path = e.path.as_str();
        match e.kind {
            Kind::Dir => {
                if old.is_none() {
                    self.staging.mkdir(path, 0o700)?;
                }
                self.staging.chown(path, e.uid, e.gid)?;
            }
            Kind::Symlink => {
                if old.is_some() {
                    self.staging.unlink(path)?;
                }
                self.staging.symlink(&e.target, path)?;
                self.staging.chown(path, e.uid, e.gid)?;
            }
            Kind::File => {
                if old.is_some() {
                    self.pending.remove(path);
                    self.staging.unlink(path)?;
                }
                self.rewritten.insert(e.path.clone());
                match base_src {
                    Some(from) => {
                        let base = self
                            .base_dir
                            .as_ref()
                            .ok_or_else(|| GuestError::NotInBase {
                                path: e.path.clone(),
                                hash: hex(&e.hash),
                                size: e.size,
                            })?;
                        let f = fsops::copy_file(base, &from, &self.staging, path)?;
                        self.finish_file(&f, &e)?;
                        self.stats.base_copies += 1;
                    }
                    None if inline => {
                        let mut f = self.staging.create_file(path)?;
                        f.write_all(&p.data)
                            .map_err(|err| FsError::new("write", path, err))?;
                        self.finish_file(&f, &e)?;
                        self.stats.sent_files += 1;
                        self.stats.received_bytes += p.data.len() as u64;
                    }
                    None => {
                        let f = self.staging.create_file(path)?;
                        self.stats.sent_files += 1;
                        if e.size == 0 {
                            check_content(&e, b"")?;
                            self.finish_file(&f, &e)?;
                        } else {
                            self.pending
                                .insert(e.path.clone(), Pending::new(e.clone(), f));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Sets owner, then mode (a chown clears setuid bits) of complete content.
    fn finish_file(&self, f: &File, e: &Entry) -> Result<()> {
        fsops::set_file_owner(f, &e.path, e.uid, e.gid)?;
        fsops::set_file_mode(f, &e.path, self.policy.disk_mode(&self.volume, e))?;
        Ok(())
    }

    /// Appends a chunk to a pending file; returns the bytes received so far.
    /// When the file is complete its blake3 is checked and its owner and mode
    /// are set.
    pub fn write_chunk(&mut self, path: &str, offset: u64, data: &[u8]) -> Result<u64> {
        let p = self
            .pending
            .get_mut(path)
            .ok_or_else(|| GuestError::NotPending {
                txn: self.id,
                path: path.to_string(),
            })?;
        let end = p.append(offset, data)?;
        self.stats.received_bytes += data.len() as u64;
        if p.complete() {
            let p = self.pending.remove(path).expect("pending entry just seen");
            self.finish_file(&p.file, &p.entry)?;
        }
        Ok(end)
    }

    /// Checks that the transaction is complete and is what the host meant,
    /// then makes staging final: directory modes (children first) and a
    /// syncfs. Returns the number of files reused from the base version.
    pub fn prepare_commit(&mut self, manifest_digest: &[u8]) -> Result<u64> {
        if let Some((first, _)) = self.pending.iter().next() {
            return Err(GuestError::PendingFiles {
                txn: self.id,
                first: first.clone(),
                count: self.pending.len(),
            });
        }
        check_manifest_digest(&self.volume, &self.working, manifest_digest)?;
        let dirs: Vec<&Entry> = self
            .working
            .iter()
            .filter(|e| e.kind == Kind::Dir)
            .collect();
        for e in dirs.into_iter().rev() {
            self.staging
                .chmod(&e.path, self.policy.disk_mode(&self.volume, e))?;
        }
        self.staging.syncfs()?;
        let cloned_untouched = self
            .working
            .iter()
            .filter(|e| {
                e.kind == Kind::File
                    && !self.rewritten.contains(&e.path)
                    && self
                        .base_manifest
                        .get(&e.path)
                        .is_some_and(|b| b.kind == Kind::File)
            })
            .count() as u64;
        Ok(self.stats.base_copies + cloned_untouched)
    }

    /// Removes the staging directory. The published version is untouched.
    pub fn discard(self) -> Result<()> {
        let Txn {
            vol_dir,
            version,
            pending,
            staging,
            ..
        } = self;
        drop(pending);
        drop(staging);
        vol_dir.remove_tree(&layout::version_dir(&version))?;
        Ok(())
    }
}

/// Checks inline (or empty) content against the entry's size and blake3.
pub(crate) fn check_content(e: &Entry, data: &[u8]) -> Result<()> {
    if data.len() as u64 != e.size {
        return Err(GuestError::SizeLies {
            path: e.path.clone(),
            declared: e.size,
            got: format!("{} bytes were sent", data.len()),
        });
    }
    let actual = blake3::hash(data);
    if actual.as_bytes() != &e.hash {
        return Err(GuestError::HashMismatch {
            path: e.path.clone(),
            declared: hex(&e.hash),
            actual: hex(actual.as_bytes()),
        });
    }
    Ok(())
}

/// The open transaction of a volume, of either kind. The store drives both
/// through this; only commit differs (a rename of `..data` for a tree, an
/// in-place write for a file).
pub enum Work {
    Tree(Txn),
    File(crate::file_volume::FileTxn),
}

/// Runs the same expression on the transaction of either kind: both carry
/// the same bookkeeping fields and methods, only their storage differs.
macro_rules! either {
    ($work:expr, $t:ident => $e:expr) => {
        match $work {
            Work::Tree($t) => $e,
            Work::File($t) => $e,
        }
    };
}

impl Work {
    pub fn id(&self) -> u64 {
        either!(self, t => t.id)
    }

    pub fn client_id(&self) -> u64 {
        either!(self, t => t.client_id)
    }

    pub fn volume(&self) -> &str {
        either!(self, t => &t.volume)
    }

    pub fn kind(&self) -> ferry_tree::VolumeKind {
        match self {
            Work::Tree(_) => ferry_tree::VolumeKind::Tree,
            Work::File(_) => ferry_tree::VolumeKind::File,
        }
    }

    pub fn usage(&self) -> Usage {
        either!(self, t => t.usage)
    }

    pub fn started(&self) -> Instant {
        either!(self, t => t.started)
    }

    pub fn last_activity(&self) -> Instant {
        either!(self, t => t.last_activity)
    }

    /// Records activity now (the idle timeout starts again).
    pub fn touch(&mut self) {
        let now = Instant::now();
        either!(self, t => t.last_activity = now)
    }

    pub fn put_entries(
        &mut self,
        removes: &[String],
        upserts: &[pb::Entry],
        others: Usage,
    ) -> Result<u64> {
        either!(self, t => t.put_entries(removes, upserts, others))
    }

    pub fn write_chunk(&mut self, path: &str, offset: u64, data: &[u8]) -> Result<u64> {
        either!(self, t => t.write_chunk(path, offset, data))
    }

    /// Removes the staging; the published content is untouched.
    pub fn discard(self) -> Result<()> {
        either!(self, t => t.discard())
    }
}

/// The commit check shared by tree and file volumes: the digest the host
/// sent must be 32 bytes and equal the digest of the manifest the guest
/// built from the base and the entries it received.
pub(crate) fn check_manifest_digest(
    volume: &str,
    working: &Manifest,
    manifest_digest: &[u8],
) -> Result<()> {
    let host: [u8; 32] = manifest_digest
        .try_into()
        .map_err(|_| GuestError::DigestLen {
            what: "manifest digest",
            len: manifest_digest.len(),
        })?;
    let guest = working.digest();
    if host != guest {
        return Err(GuestError::ManifestDigest {
            volume: volume.to_string(),
            host: hex(&host),
            guest: hex(&guest),
        });
    }
    Ok(())
}
