//! One sync of one volume: scan, diff against what the guest holds, send only
//! the difference, commit by digest.
//!
//! The base is the guest's committed manifest: cached from our last commit,
//! or read from the guest (after a reconnect, a restart of either side, or a
//! stale-base refusal). Files the guest already holds anywhere in the base
//! are never sent (SOURCE_BASE); small files travel inline; the rest in
//! chunks of at most 1 MiB. Everything read from the source is hashed again
//! as it is sent: a file that changed since the scan aborts the transaction
//! and the volume is scanned again, so the guest never commits a mix.
use std::{
    collections::HashMap,
    io::Read,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ferry_proto::{
    MAX_BATCH_BYTES, MAX_CHUNK_BYTES, MAX_INLINE_BYTES,
    convert::{entry_to_pb, volume_kind_to_pb},
    ferry as pb,
    wire::Code,
};
pub use ferry_tree::VolumeKind;
use ferry_tree::{Entry, Kind, Layout, Manifest, Plan, Scanned, diff, scan_file, scan_volume};
use protobuf::Message;

use crate::{
    client::AgentClient,
    error::{HostError, Result},
};

/// A volume to keep in sync: its name in the guest, what kind it is, and
/// where it comes from here.
///
/// - [`VolumeKind::Tree`]: `source` is a directory (a kubelet volume, read
///   through its `..data` version, or any directory). The guest keeps it at
///   `<root>/volumes/<name>` in kubelet's layout, each version swapped in
///   atomically.
/// - [`VolumeKind::File`]: `source` is one regular file, for what kubelet
///   bind-mounts as a single file: etc-hosts, hostname, resolv.conf, the
///   termination log, or a subPath (`<volume dir>/<key>`, read through that
///   volume's `..data` version). The guest keeps it at `<root>/files/<name>`
///   and rewrites it IN PLACE (same inode), so a bind mount of it sees every
///   update (a reader may briefly see it partial, as under kubelet).
///
/// Build one with [`VolumeSpec::tree`] or [`VolumeSpec::file`], or parse
/// `NAME=PATH` (a tree; set `kind` afterwards for a file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    /// The volume's name in the guest: `[a-z0-9][a-z0-9._-]{0,252}`, unique
    /// across both kinds.
    pub name: String,
    pub kind: VolumeKind,
    /// The directory (tree) or file (file) it is read from.
    pub source: PathBuf,
}

impl VolumeSpec {
    /// A directory volume.
    pub fn tree(name: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            kind: VolumeKind::Tree,
            source: dir.into(),
        }
    }

    /// A single-file volume, updated in place in the guest.
    pub fn file(name: impl Into<String>, file: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            kind: VolumeKind::File,
            source: file.into(),
        }
    }

    /// Parses `NAME=PATH` into a volume of `kind`.
    pub fn parse(s: &str, kind: VolumeKind) -> Result<Self> {
        let (name, path) = s
            .split_once('=')
            .ok_or_else(|| HostError::VolumeSpec(s.to_string()))?;
        ferry_tree::path::validate_volume_name(name)
            .map_err(|_| HostError::VolumeSpec(s.to_string()))?;
        if path.is_empty() {
            return Err(HostError::VolumeSpec(s.to_string()));
        }
        Ok(Self {
            name: name.to_string(),
            kind,
            source: PathBuf::from(path),
        })
    }

    /// Reads the source as it is now (see [`ferry_tree::scan_volume`] and
    /// [`ferry_tree::scan_file`]).
    pub fn scan(&self) -> std::result::Result<Scanned, ferry_tree::ScanError> {
        match self.kind {
            VolumeKind::Tree => scan_volume(&self.source),
            VolumeKind::File => scan_file(&self.source),
        }
    }
}

impl std::str::FromStr for VolumeSpec {
    type Err = HostError;
    /// `NAME=DIR`, a tree volume.
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s, VolumeKind::Tree)
    }
}

/// What one sync did.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    pub volume: String,
    /// False when the guest already held exactly this tree.
    pub committed: bool,
    pub generation: u64,
    pub version: String,
    pub kubelet_layout: bool,
    pub entries: usize,
    pub removed: Vec<String>,
    pub upserted: Vec<String>,
    /// Files whose content crossed the wire (inline or chunked).
    pub files_sent: u64,
    pub content_bytes: u64,
    /// Files the guest copied from its base version instead.
    pub files_reused: u64,
    /// Bytes written to the connection by this sync, framing included.
    pub wire_bytes: u64,
    pub elapsed: Duration,
    /// Whether the base had to be read from the guest.
    pub fetched_base: bool,
    pub digest: [u8; 32],
    pub skipped: Vec<(String, &'static str)>,
    /// Directories of a plain volume (the watcher watches each).
    pub dirs: Vec<String>,
}

/// The transaction in flight, so a shutdown can abort it.
pub type TxnSlot = Arc<Mutex<Option<u64>>>;

/// Keeps, per volume, the manifest the guest is known to hold.
#[derive(Default)]
pub struct Syncer {
    known: HashMap<String, Manifest>,
    /// The transaction in flight, if any.
    pub in_flight: TxnSlot,
}

const MAX_ATTEMPTS: usize = 4;

impl Syncer {
    /// A syncer that knows nothing of the guest yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// After a (re)connect: keep only cached manifests whose digest the agent
    /// confirms; the rest are read from the guest when next needed.
    pub fn reconcile(&mut self, client: &AgentClient) {
        self.known.retain(|name, m| {
            client
                .summary(name)
                .is_some_and(|s| s.digest.as_slice() == m.digest().as_slice())
                || (m.is_empty() && client.summary(name).is_none())
        });
    }

    /// Brings `spec` in the guest up to date with its directory here.
    pub async fn sync_volume(
        &mut self,
        client: &AgentClient,
        spec: &VolumeSpec,
    ) -> Result<SyncReport> {
        let start = Instant::now();
        let sent_before = client.counters().sent();
        let mut fetched = false;
        let mut last_err = None;
        for _ in 0..MAX_ATTEMPTS {
            let to_scan = spec.clone();
            let scanned = tokio::task::spawn_blocking(move || to_scan.scan())
                .await
                .map_err(|e| HostError::Protocol(format!("scan task failed: {e}")))??;
            let base = match self.known.get(&spec.name) {
                Some(m) => m.clone(),
                None => {
                    let (_, m) = client.manifest(&spec.name).await?;
                    fetched = true;
                    self.known.insert(spec.name.clone(), m.clone());
                    m
                }
            };
            let plan = diff(&base, &scanned.manifest);
            let mut report = SyncReport {
                volume: spec.name.clone(),
                kubelet_layout: matches!(scanned.layout, Layout::Kubelet { .. }),
                entries: scanned.manifest.len(),
                digest: scanned.manifest.digest(),
                fetched_base: fetched,
                skipped: scanned.skipped.clone(),
                dirs: match scanned.layout {
                    Layout::Plain => scanned
                        .manifest
                        .iter()
                        .filter(|e| e.kind == Kind::Dir)
                        .map(|e| e.path.clone())
                        .collect(),
                    Layout::Kubelet { .. } | Layout::File { .. } => Vec::new(),
                },
                ..Default::default()
            };
            if plan.is_empty() {
                report.elapsed = start.elapsed();
                report.wire_bytes = client.counters().sent() - sent_before;
                return Ok(report);
            }
            match self
                .push(client, spec, &base, &scanned, &plan, &mut report)
                .await
            {
                Ok(()) => {
                    self.known.insert(spec.name.clone(), scanned.manifest);
                    report.committed = true;
                    report.elapsed = start.elapsed();
                    report.wire_bytes = client.counters().sent() - sent_before;
                    return Ok(report);
                }
                Err(e) if e.code() == Some(Code::FAILED_PRECONDITION) && !fetched => {
                    tracing::info!(volume = %spec.name, "guest holds another version than we thought ({e}); reading its manifest");
                    self.known.remove(&spec.name);
                    last_err = Some(e);
                }
                Err(e @ HostError::SourceChanged { .. }) => {
                    tracing::debug!(volume = %spec.name, "{e}; scanning again");
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| HostError::Protocol("sync gave up".into())))
    }

    async fn push(
        &self,
        client: &AgentClient,
        spec: &VolumeSpec,
        base: &Manifest,
        scanned: &Scanned,
        plan: &Plan,
        report: &mut SyncReport,
    ) -> Result<()> {
        let rpc = client.rpc();
        let mut begin = pb::BeginRequest::new();
        begin.volume = spec.name.clone();
        begin.base_digest = base.digest().to_vec();
        begin.client_id = client.client_id;
        begin.kind = volume_kind_to_pb(spec.kind).into();
        let txn = rpc
            .begin(client.ctx(), &begin)
            .await
            .map_err(|e| HostError::rpc(format!("begin on {}", spec.name), e))?;
        let txn_id = txn.txn_id;
        *self.in_flight.lock().expect("txn slot") = Some(txn_id);
        let res = send_plan(client, spec, txn_id, base, scanned, plan, report).await;
        let res = match res {
            Ok(()) => {
                let mut c = pb::CommitRequest::new();
                c.txn_id = txn_id;
                c.manifest_digest = scanned.manifest.digest().to_vec();
                rpc.commit(client.ctx(), &c)
                    .await
                    .map(|r| {
                        let v = r.volume.into_option().unwrap_or_default();
                        report.generation = v.generation;
                        report.version = v.version;
                        report.files_reused = r.reused_files;
                    })
                    .map_err(|e| HostError::rpc(format!("commit of {}", spec.name), e))
            }
            Err(e) => {
                if !e.is_disconnect() {
                    let mut a = pb::AbortRequest::new();
                    a.txn_id = txn_id;
                    a.reason = e.to_string();
                    // The guest drops a transaction itself after any error it
                    // reports; this covers errors found on our side.
                    let _ = rpc.abort(client.ctx(), &a).await;
                }
                Err(e)
            }
        };
        *self.in_flight.lock().expect("txn slot") = None;
        res
    }
}

/// How the content of one upserted file travels.
enum Content {
    Base,
    Inline(Vec<u8>),
    Chunks,
}

async fn send_plan(
    client: &AgentClient,
    spec: &VolumeSpec,
    txn_id: u64,
    base: &Manifest,
    scanned: &Scanned,
    plan: &Plan,
    report: &mut SyncReport,
) -> Result<()> {
    let mut batch = pb::PutEntriesRequest::new();
    batch.txn_id = txn_id;
    batch.removes = plan.removes.clone();
    report.removed = plan.removes.clone();
    let mut batch_bytes = batch.compute_size() as usize;
    let mut chunked: Vec<&Entry> = Vec::new();
    for e in &plan.upserts {
        report.upserted.push(e.path.clone());
        let mut p = entry_to_pb(e);
        if e.kind == Kind::File {
            match content_for(spec, scanned, base, e).await? {
                Content::Base => {
                    p.source = pb::Source::SOURCE_BASE.into();
                    report.files_reused += 1;
                }
                Content::Inline(data) => {
                    p.source = pb::Source::SOURCE_INLINE.into();
                    report.files_sent += 1;
                    report.content_bytes += data.len() as u64;
                    p.data = data;
                }
                Content::Chunks => {
                    p.source = pb::Source::SOURCE_CHUNKS.into();
                    chunked.push(e);
                }
            }
        }
        let size = p.compute_size() as usize + 8;
        if batch_bytes + size > MAX_BATCH_BYTES && !batch.upserts.is_empty() {
            flush(client, &spec.name, &mut batch).await?;
            batch_bytes = batch.compute_size() as usize;
        }
        batch_bytes += size;
        batch.upserts.push(p);
    }
    if !batch.removes.is_empty() || !batch.upserts.is_empty() {
        flush(client, &spec.name, &mut batch).await?;
    }
    for e in chunked {
        send_chunks(client, spec, txn_id, scanned, e).await?;
        report.files_sent += 1;
        report.content_bytes += e.size;
    }
    Ok(())
}

async fn flush(
    client: &AgentClient,
    volume: &str,
    batch: &mut pb::PutEntriesRequest,
) -> Result<()> {
    client
        .rpc()
        .put_entries(client.ctx(), batch)
        .await
        .map_err(|e| HostError::rpc(format!("put entries of {volume}"), e))?;
    batch.removes.clear();
    batch.upserts.clear();
    Ok(())
}

/// Decides how `e` travels, reading it when it goes inline.
async fn content_for(
    spec: &VolumeSpec,
    scanned: &Scanned,
    base: &Manifest,
    e: &Entry,
) -> Result<Content> {
    if base.find_by_hash(&e.hash, e.size).is_some() {
        return Ok(Content::Base);
    }
    if e.size > MAX_INLINE_BYTES {
        return Ok(Content::Chunks);
    }
    let path = scanned.content_path(&e.path);
    let data = tokio::fs::read(&path)
        .await
        .map_err(|_| HostError::SourceChanged {
            volume: spec.name.clone(),
            path: e.path.clone(),
        })?;
    if data.len() as u64 != e.size || blake3::hash(&data).as_bytes() != &e.hash {
        return Err(HostError::SourceChanged {
            volume: spec.name.clone(),
            path: e.path.clone(),
        });
    }
    Ok(Content::Inline(data))
}

async fn send_chunks(
    client: &AgentClient,
    spec: &VolumeSpec,
    txn_id: u64,
    scanned: &Scanned,
    e: &Entry,
) -> Result<()> {
    let changed = || HostError::SourceChanged {
        volume: spec.name.clone(),
        path: e.path.clone(),
    };
    let path = scanned.content_path(&e.path);
    let mut file = std::fs::File::open(&path).map_err(|_| changed())?;
    let mut hasher = blake3::Hasher::new();
    let mut offset = 0u64;
    let mut buf = vec![0u8; MAX_CHUNK_BYTES];
    loop {
        let want = ((e.size - offset) as usize).min(MAX_CHUNK_BYTES);
        if want == 0 {
            break;
        }
        // A blocking read of at most 1 MiB from a local file; kept inline to
        // avoid a copy per chunk.
        let n = read_full(&mut file, &mut buf[..want]).map_err(|_| changed())?;
        if n == 0 {
            return Err(changed());
        }
        hasher.update(&buf[..n]);
        let mut c = pb::WriteChunkRequest::new();
        c.txn_id = txn_id;
        c.path = e.path.clone();
        c.offset = offset;
        c.data = buf[..n].to_vec();
        client
            .rpc()
            .write_chunk(client.ctx(), &c)
            .await
            .map_err(|err| {
                HostError::rpc(
                    format!("write chunk of {}/{} at {offset}", spec.name, e.path),
                    err,
                )
            })?;
        offset += n as u64;
    }
    let mut extra = [0u8; 1];
    if hasher.finalize().as_bytes() != &e.hash || file.read(&mut extra).unwrap_or(0) != 0 {
        return Err(changed());
    }
    Ok(())
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
