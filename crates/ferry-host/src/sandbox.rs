//! `ferry sandbox`: one container of a pod, from its OCI bundle to a guest
//! that holds its API volumes and pod files, and a spec that mounts the
//! guest copies.
//!
//! 1. Read and sort out the bundle ([`crate::bundle`]); any bad mount is a
//!    precise error before anything is sent or written.
//! 2. Sync every selected mount once (tree volumes in kubelet's layout, file
//!    volumes in place). If that fails, no spec is written.
//! 3. Write the rewritten spec atomically (a temporary file renamed over
//!    `--spec-out`), so a reader sees no spec or the whole spec.
//! 4. With `--watch`, keep every volume current until SIGTERM; the
//!    termination log is not watched: after the first sync the container
//!    owns it, and only its contents travel back.
//! 5. With `--collect-termination-log`, when the sandbox stops (or at once
//!    in the one-shot form without `--spec-out`), read each container's
//!    termination log back from the guest and write it to the node file
//!    kubelet reads, refusing one over kubelet's 4096-byte cap.
use std::{
    future::Future,
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use ferry_proto::Address;
use ferry_tree::VolumeKind;

use crate::{
    bundle::{BundleError, Carried, Discovery, Selected},
    client::AgentClient,
    error::{HostError, Result},
    run::SyncConfig,
    sync::VolumeSpec,
    termlog::{KUBELET_MAX_BYTES, collect_termination_log},
};

/// Why `ferry sandbox` refused to go on.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("{0}")]
    Usage(String),
}

/// kubelet's cap on a termination message
/// (`MaxContainerTerminationMessageLength`).
pub const TERMINATION_LOG_CAP: u64 = KUBELET_MAX_BYTES;

/// What `ferry sandbox` was asked to do.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub bundle: PathBuf,
    pub addr: Address,
    /// Where the rewritten spec goes; `None` for the one-shot collection of
    /// termination logs.
    pub spec_out: Option<PathBuf>,
    pub watch: bool,
    pub kubelet_root: PathBuf,
    pub guest_root: PathBuf,
    pub collect_termination_log: bool,
    pub timeout: Duration,
    pub connect_wait: Duration,
    pub max_backoff: Duration,
}

/// What a sandbox run did.
#[derive(Debug, Clone, Default)]
pub struct SandboxSummary {
    pub selected: usize,
    pub left: usize,
    pub spec_written: bool,
    /// Termination logs copied back: (container, bytes).
    pub termination_logs: Vec<(String, u64)>,
}

fn sync_config(cfg: &SandboxConfig, volumes: Vec<VolumeSpec>, watch: bool) -> SyncConfig {
    SyncConfig {
        addr: cfg.addr.clone(),
        volumes,
        watch,
        timeout: cfg.timeout,
        connect_wait: cfg.connect_wait,
        max_backoff: cfg.max_backoff,
    }
}

/// The volume ferry syncs for a selected mount.
pub fn volume_spec(s: &Selected) -> VolumeSpec {
    match s.kind {
        VolumeKind::Tree => VolumeSpec::tree(&s.name, &s.host_path),
        VolumeKind::File => VolumeSpec::file(&s.name, &s.host_path),
    }
}

fn report(d: &Discovery) {
    for l in &d.left {
        tracing::info!(
            mount = %l.destination,
            source = %l.source.display(),
            "left as it is: {}",
            l.reason
        );
    }
    for s in &d.selected {
        tracing::info!(
            mount = %s.destination,
            volume = %s.name,
            kind = %s.kind,
            guest = %s.guest_path.display(),
            read_only = s.read_only,
            "carrying {}",
            s.carried
        );
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, synced,
/// renamed over it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| HostError::Io { path: p, source }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".ferry-spec-")
        .tempfile_in(dir)
        .map_err(io(dir))?;
    tmp.write_all(bytes).map_err(io(tmp.path()))?;
    tmp.as_file().sync_all().map_err(io(tmp.path()))?;
    tmp.persist(path).map_err(|e| HostError::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// The rewritten spec as written: pretty JSON and a final newline.
pub fn render(spec: &serde_json::Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(spec).expect("a JSON value serialises");
    out.push(b'\n');
    out
}

/// Runs `ferry sandbox` until done, or (with `--watch`) until `shutdown`.
pub async fn run(cfg: SandboxConfig, shutdown: impl Future<Output = ()>) -> Result<SandboxSummary> {
    tokio::pin!(shutdown);
    let d = Discovery::load(&cfg.bundle, &cfg.kubelet_root, &cfg.guest_root)
        .map_err(SandboxError::from)?;
    report(&d);
    let mut summary = SandboxSummary {
        selected: d.selected.len(),
        left: d.left.len(),
        ..Default::default()
    };
    let Some(spec_out) = &cfg.spec_out else {
        // The one-shot collection: the container has stopped.
        summary.termination_logs = collect_termination_logs(&cfg, &d).await?;
        return Ok(summary);
    };
    let all: Vec<VolumeSpec> = d.selected.iter().map(volume_spec).collect();
    if !all.is_empty() {
        let once = sync_config(&cfg, all, false);
        tokio::select! {
            // Not `shutdown`: a one-shot run returns at once when its
            // shutdown is ready; this one must finish or fail.
            r = crate::run::run(once, std::future::pending()) => { r?; }
            () = &mut shutdown => return Ok(summary),
        }
    }
    write_atomic(spec_out, &render(&d.rewritten()))?;
    summary.spec_written = true;
    tracing::info!(
        spec = %spec_out.display(),
        carried = d.selected.len(),
        left = d.left.len(),
        "spec written"
    );
    if !cfg.watch {
        return Ok(summary);
    }
    let watched: Vec<VolumeSpec> = d
        .selected
        .iter()
        .filter(|s| !matches!(s.carried, Carried::TerminationLog { .. }))
        .map(volume_spec)
        .collect();
    if watched.is_empty() {
        shutdown.await;
    } else {
        crate::run::run(sync_config(&cfg, watched, true), shutdown).await?;
    }
    if cfg.collect_termination_log {
        summary.termination_logs = collect_termination_logs(&cfg, &d).await?;
    }
    Ok(summary)
}

/// Reads each container's termination log back from the guest and writes
/// it to the node file kubelet reads (atomically, through
/// [`crate::termlog`]). A log over kubelet's cap keeps its last 4096 bytes,
/// as kubelet does with one on the node, and the cut is logged with both
/// sizes.
async fn collect_termination_logs(
    cfg: &SandboxConfig,
    d: &Discovery,
) -> Result<Vec<(String, u64)>> {
    let logs: Vec<&Selected> = d
        .selected
        .iter()
        .filter(|s| matches!(s.carried, Carried::TerminationLog { .. }))
        .collect();
    if logs.is_empty() {
        tracing::info!("the bundle mounts no termination log: nothing to collect");
        return Ok(Vec::new());
    }
    let client = AgentClient::connect(&cfg.addr, "ferry sandbox", 0, cfg.timeout).await?;
    let mut out = Vec::new();
    for s in logs {
        let Carried::TerminationLog { container } = &s.carried else {
            continue;
        };
        let c = collect_termination_log(&client, &s.name, None, &s.host_path, TERMINATION_LOG_CAP)
            .await?;
        if c.truncated {
            tracing::warn!(
                container = %container,
                size = c.size,
                kept = c.written,
                "termination log of container {container} is {} bytes, over kubelet's cap of {TERMINATION_LOG_CAP} bytes: kept its last {} bytes, as kubelet does",
                c.size,
                c.written
            );
        }
        tracing::info!(
            container = %container,
            bytes = c.written,
            node = %s.host_path.display(),
            "termination log collected"
        );
        out.push((container.clone(), c.written));
    }
    Ok(out)
}
