//! The guest store: volumes under `<root>/volumes/<name>` in kubelet's
//! layout, their committed manifests, and the transactions that replace them.
//!
//! Locking: each volume has its own mutex (a sync of one volume never waits
//! for another); the map of volumes and the map of open transactions are
//! only held for a lookup, never while waiting for a volume. The one order
//! ever taken is "volume, then a map". The store is synchronous: the service
//! calls it from `spawn_blocking`, and no lock is ever held across an
//! `.await`.
//!
//! What a failure leaves behind: any error inside a transaction aborts it and
//! removes its staging directory; the published version (`..data` and the
//! version it points to) is only ever replaced by the single rename in
//! [`layout::publish`]. A crash at any point is repaired by [`Store::open`]
//! (see [`crate::restore`]).
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use ferry_proto::{convert, ferry as pb};
use ferry_tree::{
    VolumeKind,
    manifest::{empty_digest, hex},
    path::validate_volume_name,
};

use crate::{
    error::{GuestError, Result},
    file_volume::{self, FILES_DIR, FileParams, FileTxn},
    fsops::Dir,
    layout,
    limits::StoreLimits,
    policy::Policy,
    restore,
    state::{self, Committed},
    txn::{Params, Txn, Usage, Work},
    version,
};

/// The agent's name and version, as sent in `Hello` and `Status`.
pub const AGENT: &str = concat!("ferry-agent ", env!("CARGO_PKG_VERSION"));

/// The default idle time after which a transaction may be taken over.
pub const DEFAULT_TXN_TIMEOUT: Duration = Duration::from_secs(10);

/// One volume: its published state and its open transaction, if any.
pub(crate) struct Volume {
    pub(crate) name: String,
    state: Mutex<VolState>,
    /// What this volume holds in the store, for the store quotas of other
    /// volumes: the larger of its committed and its working usage. Read
    /// without the volume's lock.
    reserved_entries: AtomicU64,
    reserved_bytes: AtomicU64,
    /// Counted against `max_volumes`: published or being created.
    live: AtomicBool,
}

#[derive(Default)]
pub(crate) struct VolState {
    pub(crate) committed: Option<Committed>,
    usage: Usage,
    txn: Option<Work>,
}

impl Volume {
    fn new(name: &str) -> Volume {
        Volume {
            name: name.to_string(),
            state: Mutex::default(),
            reserved_entries: AtomicU64::new(0),
            reserved_bytes: AtomicU64::new(0),
            live: AtomicBool::new(false),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, VolState> {
        lock(&self.state)
    }

    fn update_reserved(&self, st: &VolState) {
        let w = st.txn.as_ref().map(Work::usage).unwrap_or_default();
        self.reserved_entries
            .store(st.usage.entries.max(w.entries), Ordering::Relaxed);
        self.reserved_bytes
            .store(st.usage.bytes.max(w.bytes), Ordering::Relaxed);
        self.live.store(
            st.committed.is_some() || st.txn.is_some(),
            Ordering::Relaxed,
        );
    }
}

/// A poisoned lock means a panic in the middle of an operation; the state
/// it protects is still the best we have (and the disk is the truth, which
/// every operation re-checks through the kernel), so keep serving.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The result of a commit, with what the log wants to know.
#[derive(Debug)]
pub struct CommitOutcome {
    pub response: pb::CommitResponse,
    pub volume: String,
    pub txn: u64,
    pub removes: u64,
    pub upserts: u64,
    pub sent_files: u64,
    pub received_bytes: u64,
    /// Since Begin.
    pub elapsed: Duration,
}

/// A transaction that was dropped (Abort, preemption, timeout, shutdown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aborted {
    pub volume: String,
    pub txn: u64,
    /// Since its last request.
    pub idle: Duration,
    /// Since Begin.
    pub age: Duration,
}

/// The guest store. Cheap to share behind an `Arc`; every method is
/// blocking and safe to call from many threads.
pub struct Store {
    root: PathBuf,
    pub(crate) volumes_dir: Dir,
    pub(crate) files_dir: Dir,
    state_dir: Dir,
    limits: StoreLimits,
    policy: Policy,
    txn_timeout: Duration,
    volumes: Mutex<BTreeMap<String, Arc<Volume>>>,
    txns: Mutex<HashMap<u64, Arc<Volume>>>,
    txn_seq: AtomicU64,
    txn_key: [u8; 32],
    started: Instant,
}

impl Store {
    /// Opens (creating if needed) the store at `root`: `<root>/volumes` (tree
    /// volumes), `<root>/files` (file volumes) and `<root>/state`, mode 0700.
    /// Volumes left by a previous run are loaded and repaired (see
    /// [`crate::restore`] and [`file_volume::load_files`]).
    pub fn open(root: PathBuf, limits: StoreLimits, policy: Policy) -> Result<Store> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let mkdir = |p: &Path| -> Result<()> {
            if !p.is_dir() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(p)
                    .map_err(|e| crate::fsops::FsError::new("mkdir", p.display().to_string(), e))?;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| crate::fsops::FsError::new("chmod", p.display().to_string(), e))?;
            }
            Ok(())
        };
        mkdir(&root)?;
        let root_dir = Dir::open_root(&root)?;
        for sub in ["volumes", FILES_DIR, "state"] {
            if root_dir.kind(sub)?.is_none() {
                root_dir.mkdir(sub, 0o700)?;
                root_dir.chmod(sub, 0o700)?;
            }
        }
        let volumes_dir = root_dir.open_dir("volumes")?;
        let files_dir = root_dir.open_dir(FILES_DIR)?;
        let state_dir = root_dir.open_dir("state")?;
        let mut loaded = restore::load_volumes(&root.join("volumes"), &volumes_dir, &state_dir)?;
        for (name, c) in file_volume::load_files(&files_dir, &state_dir)? {
            if loaded.iter().any(|(n, _)| *n == name) {
                // Never made by us (a Begin refuses the other kind): the
                // tree, which has its own version history, wins.
                tracing::warn!(volume = %name, "a tree and a file volume share this name: removing the file");
                files_dir.unlink(&name)?;
                continue;
            }
            loaded.push((name, c));
        }
        restore::remove_stale_state(&state_dir, &|n| loaded.iter().any(|(v, _)| v == n))?;
        let mut volumes = BTreeMap::new();
        for (name, committed) in loaded {
            let v = Volume::new(&name);
            {
                let mut st = v.lock();
                st.usage = Usage::of(&committed.manifest);
                st.committed = Some(committed);
                v.update_reserved(&st);
            }
            volumes.insert(name, Arc::new(v));
        }
        let mut key = blake3::Hasher::new();
        key.update(b"ferry.txn-id.v1\0");
        key.update(&version::now_unix_ms().to_le_bytes());
        key.update(&std::process::id().to_le_bytes());
        key.update(format!("{:?}", Instant::now()).as_bytes());
        key.update(root.as_os_str().as_encoded_bytes());
        Ok(Store {
            root,
            volumes_dir,
            files_dir,
            state_dir,
            limits,
            policy,
            txn_timeout: DEFAULT_TXN_TIMEOUT,
            volumes: Mutex::new(volumes),
            txns: Mutex::default(),
            txn_seq: AtomicU64::new(0),
            txn_key: *key.finalize().as_bytes(),
            started: Instant::now(),
        })
    }

    /// Sets how long a transaction may stay idle before another Begin (or
    /// the reaper) may abort it.
    pub fn with_txn_timeout(mut self, timeout: Duration) -> Store {
        self.txn_timeout = timeout;
        self
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The store's quotas.
    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    /// The idle timeout of transactions.
    pub fn txn_timeout(&self) -> Duration {
        self.txn_timeout
    }

    /// A fresh transaction id: nonzero, never reused by this process (a
    /// counter in the high half), hard to guess (a keyed hash in the low
    /// half), so a stray or malicious client cannot hit someone's live
    /// transaction by counting.
    fn next_txn_id(&self) -> u64 {
        let n = self.txn_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let h = blake3::keyed_hash(&self.txn_key, &n.to_le_bytes());
        let low = u32::from_le_bytes(h.as_bytes()[..4].try_into().expect("4 bytes"));
        (n << 32) | u64::from(low)
    }

    pub(crate) fn volume(&self, name: &str) -> Option<Arc<Volume>> {
        lock(&self.volumes).get(name).cloned()
    }

    fn all_volumes(&self) -> Vec<Arc<Volume>> {
        lock(&self.volumes).values().cloned().collect()
    }

    /// What every volume but `except` holds or is about to hold.
    fn others_usage(&self, except: &str) -> Usage {
        let map = lock(&self.volumes);
        let mut u = Usage::default();
        for v in map.values().filter(|v| v.name != except) {
            u.entries += v.reserved_entries.load(Ordering::Relaxed);
            u.bytes += v.reserved_bytes.load(Ordering::Relaxed);
        }
        u
    }

    /// Forgets the handle of a volume that holds nothing, if nobody is using
    /// it right now (it is recreated on demand).
    fn prune(&self, name: &str) {
        let mut map = lock(&self.volumes);
        let empty = map.get(name).is_some_and(|v| {
            Arc::strong_count(v) == 1
                && v.state
                    .try_lock()
                    .is_ok_and(|st| st.committed.is_none() && st.txn.is_none())
        });
        if empty {
            map.remove(name);
        }
    }

    /// The summaries of every published volume, by name.
    pub fn summaries(&self) -> Vec<pb::VolumeSummary> {
        self.all_volumes()
            .iter()
            .filter_map(|v| {
                let st = v.lock();
                st.committed
                    .as_ref()
                    .map(|c| state::summary(&v.name, Some(c)))
            })
            .collect()
    }

    /// The handshake: refuses another protocol version, and tells the host
    /// our limits and what we already hold.
    pub fn hello(&self, req: &pb::HelloRequest) -> Result<pb::HelloResponse> {
        if req.protocol_version != ferry_proto::PROTOCOL_VERSION {
            return Err(GuestError::ProtocolVersion {
                host: req.protocol_version,
                guest: ferry_proto::PROTOCOL_VERSION,
            });
        }
        let mut r = pb::HelloResponse::new();
        r.protocol_version = ferry_proto::PROTOCOL_VERSION;
        r.agent = AGENT.to_string();
        r.limits = Some(self.limits.to_pb()).into();
        r.volumes = self.summaries();
        Ok(r)
    }

    /// Opens a transaction on a volume whose current digest is
    /// `base_digest`, cloning the current version into a staging directory.
    pub fn begin(&self, req: &pb::BeginRequest) -> Result<pb::BeginResponse> {
        validate_volume_name(&req.volume)?;
        let name = req.volume.as_str();
        let kind = convert::volume_kind_from_pb(req.kind).ok_or(GuestError::UnknownKind {
            volume: name.to_string(),
            value: req.kind.value(),
        })?;
        let host_base = if req.base_digest.iter().all(|b| *b == 0) {
            empty_digest()
        } else {
            convert::digest_from_pb(&req.base_digest).ok_or(GuestError::DigestLen {
                what: "base digest",
                len: req.base_digest.len(),
            })?
        };
        let v = {
            let mut map = lock(&self.volumes);
            if !map.contains_key(name) && map.len() >= self.limits.max_volumes as usize {
                // Cheap early refusal; the exact count is taken below.
                let live = map
                    .values()
                    .filter(|v| v.live.load(Ordering::Relaxed))
                    .count();
                if live >= self.limits.max_volumes as usize {
                    return Err(GuestError::TooManyVolumes {
                        volume: name.to_string(),
                        limit: u64::from(self.limits.max_volumes),
                    });
                }
            }
            map.entry(name.to_string())
                .or_insert_with(|| Arc::new(Volume::new(name)))
                .clone()
        };
        let r = self.begin_locked(&v, req, kind, host_base);
        drop(v);
        if r.is_err() {
            self.prune(name);
        }
        r
    }

    fn begin_locked(
        &self,
        v: &Arc<Volume>,
        req: &pb::BeginRequest,
        kind: VolumeKind,
        host_base: ferry_tree::Digest,
    ) -> Result<pb::BeginResponse> {
        let name = v.name.as_str();
        let mut st = v.lock();
        if let Some(t) = &st.txn {
            let (id, idle) = (t.id(), t.last_activity().elapsed());
            if req.client_id != 0 && t.client_id() == req.client_id {
                tracing::warn!(
                    volume = name,
                    txn = id,
                    "preempting stale transaction {id} of the same client"
                );
            } else if idle > self.txn_timeout {
                tracing::warn!(
                    volume = name,
                    txn = id,
                    "aborting transaction {id} idle for {idle:?} (timeout {:?})",
                    self.txn_timeout
                );
            } else {
                return Err(GuestError::Busy {
                    volume: name.to_string(),
                    txn: id,
                });
            }
            self.drop_txn(v, &mut st)?;
        }
        if let Some(c) = st.committed.as_ref().filter(|c| c.kind != kind) {
            return Err(GuestError::KindMismatch {
                volume: name.to_string(),
                holds: c.kind,
                asked: kind,
            });
        }
        let (generation, guest_digest) = match &st.committed {
            Some(c) => (c.generation, c.manifest.digest()),
            None => (0, empty_digest()),
        };
        if guest_digest != host_base {
            return Err(GuestError::BaseMismatch {
                volume: name.to_string(),
                generation,
                guest: hex(&guest_digest),
                host: hex(&host_base),
            });
        }
        let creating = st.committed.is_none();
        if creating {
            let map = lock(&self.volumes);
            let live = map
                .values()
                .filter(|o| o.name != name && o.live.load(Ordering::Relaxed))
                .count();
            if live >= self.limits.max_volumes as usize {
                return Err(GuestError::TooManyVolumes {
                    volume: name.to_string(),
                    limit: u64::from(self.limits.max_volumes),
                });
            }
            v.live.store(true, Ordering::Relaxed);
        }
        let version = version::version_name(version::now_unix_ms(), generation + 1);
        let id = self.next_txn_id();
        let txn = (|| -> Result<Work> {
            if kind == VolumeKind::File {
                return Ok(Work::File(FileTxn::begin(FileParams {
                    id,
                    client_id: req.client_id,
                    volume: name,
                    version: version.clone(),
                    files: self.files_dir.try_clone()?,
                    base: st.committed.as_ref(),
                    limits: self.limits,
                    policy: self.policy,
                })?));
            }
            if creating {
                match self.volumes_dir.mkdir(name, 0o755) {
                    Err(e) if e.errno() == Some(rustix::io::Errno::EXIST) => {}
                    r => r?,
                }
                self.volumes_dir.chmod(name, 0o755)?;
            }
            let vol_dir = self.volumes_dir.open_dir(name)?;
            Txn::begin(Params {
                id,
                client_id: req.client_id,
                volume: name,
                version: version.clone(),
                vol_dir,
                base: st.committed.as_ref(),
                limits: self.limits,
                policy: self.policy,
            })
            .map(Work::Tree)
        })();
        let txn = match txn {
            Ok(t) => t,
            Err(e) => {
                if creating && kind == VolumeKind::Tree {
                    self.remove_volume_dir(name);
                }
                v.update_reserved(&st);
                return Err(e);
            }
        };
        st.txn = Some(txn);
        v.update_reserved(&st);
        lock(&self.txns).insert(id, v.clone());
        let mut r = pb::BeginResponse::new();
        r.txn_id = id;
        r.version = version;
        Ok(r)
    }

    /// Drops the open transaction of `v`: its staging is removed, and a
    /// volume that was being created disappears again.
    fn drop_txn(&self, v: &Volume, st: &mut VolState) -> Result<Option<Aborted>> {
        let Some(t) = st.txn.take() else {
            return Ok(None);
        };
        lock(&self.txns).remove(&t.id());
        let info = Aborted {
            volume: v.name.clone(),
            txn: t.id(),
            idle: t.last_activity().elapsed(),
            age: t.started().elapsed(),
        };
        let tree = t.kind() == VolumeKind::Tree;
        let r = t.discard();
        if st.committed.is_none() && tree {
            self.remove_volume_dir(&v.name);
        }
        v.update_reserved(st);
        r.map(|()| Some(info))
    }

    fn remove_volume_dir(&self, name: &str) {
        if let Err(e) = self.volumes_dir.remove_tree(name) {
            tracing::error!(volume = name, "removing the volume directory: {e}");
        }
    }

    /// The volume holding the open transaction `id`.
    fn txn_volume(&self, id: u64) -> Result<Arc<Volume>> {
        lock(&self.txns)
            .get(&id)
            .cloned()
            .ok_or(GuestError::UnknownTxn(id))
    }

    /// Aborts the transaction of `v` because of `e`, and says so.
    fn fail_txn(&self, v: &Volume, st: &mut VolState, id: u64, e: GuestError) -> GuestError {
        if let Err(rm) = self.drop_txn(v, st) {
            tracing::error!(volume = %v.name, txn = id, "removing staging: {rm}");
        }
        GuestError::TxnAborted {
            txn: id,
            volume: v.name.clone(),
            source: Box::new(e),
        }
    }

    /// Runs `f` on the open transaction `id`. Any error aborts the
    /// transaction (staging removed) and says so.
    fn with_txn<T>(&self, id: u64, f: impl FnOnce(&mut Work, &Store) -> Result<T>) -> Result<T> {
        let v = self.txn_volume(id)?;
        let mut st = v.lock();
        let txn = match st.txn.as_mut() {
            Some(t) if t.id() == id => t,
            _ => return Err(GuestError::UnknownTxn(id)),
        };
        txn.touch();
        match f(txn, self) {
            Ok(x) => {
                if let Some(t) = st.txn.as_mut() {
                    t.touch();
                }
                v.update_reserved(&st);
                Ok(x)
            }
            Err(e) => Err(self.fail_txn(&v, &mut st, id, e)),
        }
    }

    /// Applies removes and upserts to a transaction.
    pub fn put_entries(&self, req: &pb::PutEntriesRequest) -> Result<pb::PutEntriesResponse> {
        self.with_txn(req.txn_id, |t, s| {
            let others = s.others_usage(t.volume());
            let pending = t.put_entries(&req.removes, &req.upserts, others)?;
            let mut r = pb::PutEntriesResponse::new();
            r.pending_files = pending;
            Ok(r)
        })
    }

    /// Appends content to a file announced with SOURCE_CHUNKS.
    pub fn write_chunk(&self, req: &pb::WriteChunkRequest) -> Result<pb::WriteChunkResponse> {
        self.with_txn(req.txn_id, |t, _| {
            let mut r = pb::WriteChunkResponse::new();
            r.received = t.write_chunk(&req.path, req.offset, &req.data)?;
            Ok(r)
        })
    }

    /// Verifies and publishes a transaction: after this returns Ok, `..data`
    /// points at the new version. The volume stays locked from the checks to
    /// the end, so nothing (a preempting Begin, the reaper) can come between
    /// the publish and the bookkeeping.
    pub fn commit(&self, req: &pb::CommitRequest) -> Result<CommitOutcome> {
        let id = req.txn_id;
        let v = self.txn_volume(id)?;
        let mut st = v.lock();
        let t = match st.txn.as_mut() {
            Some(t) if t.id() == id => t,
            _ => return Err(GuestError::UnknownTxn(id)),
        };
        t.touch();
        let published = match t {
            Work::Tree(t) => t.prepare_commit(&req.manifest_digest).and_then(|reused| {
                layout::publish(&t.vol_dir, &layout::version_dir(&t.version))?;
                Ok(reused)
            }),
            Work::File(t) => t.prepare_commit(&req.manifest_digest).and_then(|reused| {
                t.publish()?;
                Ok(reused)
            }),
        };
        let reused = match published {
            Ok(r) => r,
            Err(e) => return Err(self.fail_txn(&v, &mut st, id, e)),
        };
        // Published. Nothing can undo it now: the remaining steps are
        // repairs that a restart would also make, so their failures are
        // logged, not returned.
        let work = st.txn.take().expect("transaction checked above");
        lock(&self.txns).remove(&id);
        let name = v.name.as_str();
        let old_version = st.committed.as_ref().map(|c| c.version.clone());
        let (manifest, version, generation, usage, stats, started, kind) = match work {
            Work::Tree(t) => {
                if let Err(e) = layout::sync_visible_links(&t.vol_dir, t.working.top_level_names())
                {
                    tracing::error!(volume = name, "updating the visible links: {e}");
                }
                if let Some(old) = old_version
                    && let Err(e) = t.vol_dir.remove_tree(&layout::version_dir(&old))
                {
                    tracing::error!(volume = name, version = %old, "removing the old version: {e}");
                }
                let g = t.base_generation + 1;
                (
                    t.working,
                    t.version,
                    g,
                    t.usage,
                    t.stats,
                    t.started,
                    VolumeKind::Tree,
                )
            }
            Work::File(t) => {
                let g = t.base_generation + 1;
                (
                    t.working,
                    t.version,
                    g,
                    t.usage,
                    t.stats,
                    t.started,
                    VolumeKind::File,
                )
            }
        };
        let committed = Committed {
            manifest,
            version,
            generation,
            last_commit_ms: version::now_unix_ms(),
            kind,
        };
        if let Err(e) = state::save(&self.state_dir, name, &committed) {
            tracing::error!(volume = name, "saving the state file: {e}");
        }
        let mut response = pb::CommitResponse::new();
        response.volume = Some(state::summary(name, Some(&committed))).into();
        response.reused_files = reused;
        st.usage = usage;
        st.committed = Some(committed);
        v.update_reserved(&st);
        Ok(CommitOutcome {
            response,
            volume: v.name.clone(),
            txn: id,
            removes: stats.removes,
            upserts: stats.upserts,
            sent_files: stats.sent_files,
            received_bytes: stats.received_bytes,
            elapsed: started.elapsed(),
        })
    }

    /// Drops a transaction; the published version is untouched.
    pub fn abort(&self, req: &pb::AbortRequest) -> Result<Aborted> {
        let id = req.txn_id;
        let v = lock(&self.txns)
            .get(&id)
            .cloned()
            .ok_or(GuestError::UnknownTxn(id))?;
        let aborted = {
            let mut st = v.lock();
            if st.txn.as_ref().is_none_or(|t| t.id() != id) {
                return Err(GuestError::UnknownTxn(id));
            }
            self.drop_txn(&v, &mut st)?
        };
        let name = v.name.clone();
        drop(v);
        self.prune(&name);
        aborted.ok_or(GuestError::UnknownTxn(id))
    }

    /// Deletes a volume: its transaction, every version, its state file.
    pub fn remove_volume(&self, req: &pb::RemoveVolumeRequest) -> Result<pb::RemoveVolumeResponse> {
        validate_volume_name(&req.volume)?;
        let name = req.volume.as_str();
        let mut r = pb::RemoveVolumeResponse::new();
        let Some(v) = self.volume(name) else {
            return Ok(r);
        };
        {
            let mut st = v.lock();
            r.existed = st.committed.is_some() || st.txn.is_some();
            if let Some(a) = self.drop_txn(&v, &mut st)? {
                tracing::info!(
                    volume = name,
                    txn = a.txn,
                    "aborted by the volume's removal"
                );
            }
            if let Some(c) = &st.committed {
                match c.kind {
                    VolumeKind::Tree => self.volumes_dir.remove_tree(name)?,
                    VolumeKind::File => self.files_dir.unlink(name)?,
                };
                self.state_dir.unlink(&state::file_name(name))?;
                st.committed = None;
                st.usage = Usage::default();
            }
            v.update_reserved(&st);
        }
        drop(v);
        self.prune(name);
        Ok(r)
    }

    /// Everything the store holds, for `ferry status`.
    pub fn status(&self) -> pb::StatusResponse {
        let mut r = pb::StatusResponse::new();
        r.agent = AGENT.to_string();
        r.protocol_version = ferry_proto::PROTOCOL_VERSION;
        r.limits = Some(self.limits.to_pb()).into();
        r.volumes = self.summaries();
        r.store_bytes = r.volumes.iter().map(|s| s.bytes).sum();
        r.store_files = r.volumes.iter().map(|s| s.entries).sum();
        r.open_transactions = lock(&self.txns).len() as u64;
        r.uptime_ms = self.started.elapsed().as_millis() as u64;
        r.root = self.root.display().to_string();
        r
    }

    /// Aborts transactions idle for longer than `idle`. A volume busy with a
    /// request right now is not idle and is skipped without waiting.
    pub fn reap_idle(&self, idle: Duration) -> Vec<Aborted> {
        let mut out = Vec::new();
        for v in self.all_volumes() {
            let Ok(mut st) = v.state.try_lock() else {
                continue;
            };
            if st
                .txn
                .as_ref()
                .is_some_and(|t| t.last_activity().elapsed() > idle)
            {
                match self.drop_txn(&v, &mut st) {
                    Ok(Some(a)) => out.push(a),
                    Ok(None) => {}
                    Err(e) => tracing::error!(volume = %v.name, "reaping a transaction: {e}"),
                }
            }
            drop(st);
            let name = v.name.clone();
            drop(v);
            self.prune(&name);
        }
        out
    }

    /// Aborts every open transaction (shutdown), waiting for requests in
    /// flight to finish first.
    pub fn abort_all(&self) -> Vec<Aborted> {
        let mut out = Vec::new();
        for v in self.all_volumes() {
            let mut st = v.lock();
            match self.drop_txn(&v, &mut st) {
                Ok(Some(a)) => out.push(a),
                Ok(None) => {}
                Err(e) => tracing::error!(volume = %v.name, "aborting a transaction: {e}"),
            }
        }
        out
    }
}
