//! `ferry sync`: keep a set of volumes current in one agent.
//!
//! Once: connect (retrying briefly while the agent starts), sync every
//! volume, exit. Watching: sync every volume, then sync a volume whenever
//! its directory changes. When the connection drops (the counters see EOF
//! the moment it happens, so an idle host notices too), reconnect with
//! exponential backoff and resync every volume against the guest's own
//! manifest, which sends only what differs.
use std::{
    collections::BTreeSet,
    future::Future,
    time::{Duration, Instant},
};

use ferry_proto::{Address, ferry as pb};

use crate::{
    client::{AgentClient, new_client_id},
    error::{HostError, Result},
    human_bytes,
    sync::{SyncReport, Syncer, VolumeSpec},
    watch::Watcher,
};

/// What `ferry sync` was asked to do.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub addr: Address,
    pub volumes: Vec<VolumeSpec>,
    pub watch: bool,
    /// Bound on connecting and on each call.
    pub timeout: Duration,
    /// How long a one-shot sync keeps trying to reach the agent.
    pub connect_wait: Duration,
    /// Longest pause between reconnect attempts.
    pub max_backoff: Duration,
}

/// Totals over a run.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub syncs: u64,
    pub commits: u64,
    pub failures: u64,
    pub reconnects: u64,
}

const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// A volume whose sync failed for a reason other than the connection is
/// tried again after this long even without an event.
const RETRY_FAILED: Duration = Duration::from_secs(5);

fn log_report(r: &SyncReport) {
    for (p, why) in &r.skipped {
        tracing::warn!(volume = %r.volume, path = %p, "skipped: {why}");
    }
    if r.committed {
        tracing::info!(
            volume = %r.volume,
            generation = r.generation,
            version = %r.version,
            removed = r.removed.len(),
            upserted = r.upserted.len(),
            files_sent = r.files_sent,
            files_reused = r.files_reused,
            content = %human_bytes(r.content_bytes),
            wire = %human_bytes(r.wire_bytes),
            wire_bytes = r.wire_bytes,
            ms = format!("{:.1}", r.elapsed.as_secs_f64() * 1e3),
            "committed"
        );
    } else {
        tracing::info!(volume = %r.volume, entries = r.entries, wire_bytes = r.wire_bytes, "guest already up to date");
    }
}

async fn connect_with_backoff(
    cfg: &SyncConfig,
    client_id: u64,
    deadline: Option<Instant>,
) -> Result<AgentClient> {
    let mut backoff = MIN_BACKOFF;
    let name = format!(
        "ferry {} sync pid {}",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );
    loop {
        match AgentClient::connect(&cfg.addr, &name, client_id, cfg.timeout).await {
            Ok(c) => {
                tracing::info!(
                    addr = %cfg.addr,
                    agent = %c.hello.agent,
                    volumes = c.hello.volumes.len(),
                    "connected"
                );
                return Ok(c);
            }
            Err(e @ HostError::ProtocolMismatch { .. }) => return Err(e),
            Err(e) => {
                if deadline.is_some_and(|d| Instant::now() + backoff > d) {
                    return Err(e);
                }
                tracing::warn!(addr = %cfg.addr, retry_in_ms = backoff.as_millis() as u64, "agent not reachable: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(cfg.max_backoff);
            }
        }
    }
}

/// Runs `ferry sync` until done (once) or until `shutdown` resolves (watch).
pub async fn run(cfg: SyncConfig, shutdown: impl Future<Output = ()>) -> Result<RunSummary> {
    tokio::pin!(shutdown);
    let client_id = new_client_id();
    let mut syncer = Syncer::new();
    let mut summary = RunSummary::default();

    if !cfg.watch {
        let deadline = Some(Instant::now() + cfg.connect_wait);
        let client = tokio::select! {
            c = connect_with_backoff(&cfg, client_id, deadline) => c?,
            () = &mut shutdown => return Ok(summary),
        };
        let mut first_err = None;
        for v in &cfg.volumes {
            summary.syncs += 1;
            match syncer.sync_volume(&client, v).await {
                Ok(r) => {
                    summary.commits += u64::from(r.committed);
                    log_report(&r);
                }
                Err(e) => {
                    tracing::error!(volume = %v.name, source = %v.source.display(), "sync failed: {e}");
                    summary.failures += 1;
                    first_err.get_or_insert(e);
                }
            }
        }
        return match first_err {
            Some(e) => Err(e),
            None => Ok(summary),
        };
    }

    let mut watcher = Watcher::new(&cfg.volumes)?;
    let mut dirty: BTreeSet<usize> = (0..cfg.volumes.len()).collect();
    let mut failed: BTreeSet<usize> = BTreeSet::new();
    let mut client: Option<AgentClient> = None;

    loop {
        if client.is_none() {
            let c = tokio::select! {
                c = connect_with_backoff(&cfg, client_id, None) => c?,
                () = &mut shutdown => break,
            };
            if summary.syncs > 0 {
                summary.reconnects += 1;
            }
            syncer.reconcile(&c);
            // The guest may have lost or kept anything: check every volume.
            dirty.extend(0..cfg.volumes.len());
            client = Some(c);
        }
        let c = client.as_ref().expect("connected above");
        let mut lost = false;
        while let Some(i) = dirty.pop_first() {
            let v = &cfg.volumes[i];
            summary.syncs += 1;
            let res = tokio::select! {
                r = syncer.sync_volume(c, v) => r,
                () = &mut shutdown => {
                    abort_in_flight(&syncer, c).await;
                    return Ok(summary);
                }
            };
            match res {
                Ok(r) => {
                    failed.remove(&i);
                    summary.commits += u64::from(r.committed);
                    log_report(&r);
                    if watcher.update(i, &v.source, r.kubelet_layout, &r.dirs) {
                        dirty.insert(i);
                    }
                }
                Err(e) if e.is_disconnect() => {
                    tracing::warn!(volume = %v.name, "connection to the agent lost: {e}");
                    dirty.insert(i);
                    lost = true;
                    break;
                }
                Err(e) => {
                    summary.failures += 1;
                    tracing::error!(volume = %v.name, source = %v.source.display(), retry_in_s = RETRY_FAILED.as_secs(), "sync failed: {e}");
                    failed.insert(i);
                }
            }
        }
        if lost {
            client = None;
            continue;
        }
        let retry = async {
            if failed.is_empty() {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep(RETRY_FAILED).await
            }
        };
        let closed = tokio::select! {
            batch = watcher.next_batch() => {
                dirty.extend(batch?);
                false
            }
            () = c.counters().closed() => true,
            () = retry => {
                dirty.append(&mut failed);
                false
            }
            () = &mut shutdown => break,
        };
        if closed {
            tracing::warn!(addr = %cfg.addr, "the agent closed the connection; reconnecting");
            client = None;
        }
    }
    tracing::info!(
        syncs = summary.syncs,
        commits = summary.commits,
        failures = summary.failures,
        reconnects = summary.reconnects,
        "stopping"
    );
    Ok(summary)
}

async fn abort_in_flight(syncer: &Syncer, c: &AgentClient) {
    let txn = syncer.in_flight.lock().expect("txn slot").take();
    if let Some(txn_id) = txn {
        let mut a = pb::AbortRequest::new();
        a.txn_id = txn_id;
        a.reason = "ferry sync is shutting down".into();
        let _ = c.rpc().abort(c.ctx(), &a).await;
        tracing::info!(txn = txn_id, "aborted the transaction in flight");
    }
}
