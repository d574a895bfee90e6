//! ferry-agent: arguments, configuration and the run loop. The binary is
//! thin: it parses [`AgentArgs`], builds an [`AgentConfig`], sets up logging
//! and calls [`run`] with a shutdown future (Ctrl-C or SIGTERM).
use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use ferry_proto::{Address, ferry_ttrpc, transport};

use crate::{
    error::{GuestError, Result},
    limits::{StoreLimits, parse_size},
    policy::Policy,
    service::Service,
    store::Store,
};

/// Connections served at once. A host needs one (plus one for `ferry
/// status`); the cap keeps a misbehaving peer from exhausting the guest.
pub const MAX_CONNECTIONS: usize = 16;

fn size_arg(s: &str) -> std::result::Result<u64, String> {
    parse_size(s)
}

/// Command-line arguments of ferry-agent, the guest side of ferry.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Address to serve the ferry ttRPC service on: unix:///run/ferry.sock,
    /// or vsock://-1:1025 inside a VM (any CID, port 1025).
    #[arg(long, value_name = "ADDR")]
    pub listen: Address,

    /// The store: volumes appear under ROOT/volumes/<name> in kubelet's
    /// layout, ready to be bind-mounted into containers.
    #[arg(long, value_name = "DIR", default_value = "/run/ferry")]
    pub root: PathBuf,

    /// Mount a fresh tmpfs of this size at --root first (nosuid, nodev,
    /// noexec, mode 0700), so the store never touches a disk and cannot
    /// fill the guest's memory beyond SIZE. Needs root. Sizes accept
    /// suffixes: 512k, 64Mi, 1G.
    #[arg(long, value_name = "SIZE", value_parser = size_arg)]
    pub tmpfs: Option<u64>,

    /// Content bytes one volume may hold.
    #[arg(long, value_name = "SIZE", value_parser = size_arg, default_value = "64Mi")]
    pub max_volume_bytes: u64,

    /// Entries (files, directories, symlinks) one volume may hold.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_volume_files: u64,

    /// Content bytes all volumes together may hold (open transactions
    /// included).
    #[arg(long, value_name = "SIZE", value_parser = size_arg, default_value = "256Mi")]
    pub max_store_bytes: u64,

    /// Entries all volumes together may hold.
    #[arg(long, value_name = "N", default_value_t = 50_000)]
    pub max_store_files: u64,

    /// Longest path inside a volume, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    pub max_path_len: u32,

    /// Most path components inside a volume.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub max_depth: u32,

    /// Most volumes in the store.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_volumes: u32,

    /// Seconds a transaction may stay idle before it is aborted (its staging
    /// removed) and the volume is free for another sync.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub txn_timeout: u64,

    /// Keep setuid/setgid bits on files. By default they are stripped (and
    /// the strip is logged); setgid on directories (fsGroup) is always kept.
    #[arg(long)]
    pub allow_setuid: bool,
}

/// A checked configuration of ferry-agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub listen: Address,
    pub root: PathBuf,
    /// Size of the tmpfs to mount at `root`, if any.
    pub tmpfs: Option<u64>,
    pub limits: StoreLimits,
    pub txn_timeout: Duration,
    pub policy: Policy,
}

impl TryFrom<AgentArgs> for AgentConfig {
    type Error = GuestError;

    fn try_from(a: AgentArgs) -> Result<Self> {
        let bad = |m: String| Err(GuestError::Config(m));
        if !a.root.is_absolute() {
            return bad(format!(
                "--root {}: must be an absolute path",
                a.root.display()
            ));
        }
        if a.txn_timeout == 0 {
            return bad("--txn-timeout must be at least 1 second".into());
        }
        if a.max_depth == 0 || a.max_path_len == 0 || a.max_volumes == 0 {
            return bad("--max-depth, --max-path-len and --max-volumes must be at least 1".into());
        }
        if a.tmpfs == Some(0) {
            return bad("--tmpfs size must not be 0 (tmpfs would read it as unlimited)".into());
        }
        if a.max_volume_bytes > a.max_store_bytes || a.max_volume_files > a.max_store_files {
            return bad(format!(
                "a volume may not hold more than the store: --max-volume-bytes {} / --max-store-bytes {}, --max-volume-files {} / --max-store-files {}",
                a.max_volume_bytes, a.max_store_bytes, a.max_volume_files, a.max_store_files
            ));
        }
        Ok(AgentConfig {
            listen: a.listen,
            root: a.root,
            tmpfs: a.tmpfs,
            limits: StoreLimits {
                max_volume_bytes: a.max_volume_bytes,
                max_volume_files: a.max_volume_files,
                max_store_bytes: a.max_store_bytes,
                max_store_files: a.max_store_files,
                max_path_len: a.max_path_len,
                max_depth: a.max_depth,
                max_volumes: a.max_volumes,
            },
            txn_timeout: Duration::from_secs(a.txn_timeout),
            policy: Policy {
                allow_setuid: a.allow_setuid,
            },
        })
    }
}

/// Mounts a tmpfs of `size` bytes at `root` (created if missing):
/// nosuid, nodev, noexec, mode 0700.
fn mount_tmpfs(root: &std::path::Path, size: u64) -> Result<()> {
    use rustix::mount::{MountFlags, mount};
    let shown = root.display().to_string();
    if !rustix::process::geteuid().is_root() {
        return Err(GuestError::Config(format!(
            "--tmpfs needs root to mount a tmpfs at {shown}: run ferry-agent as root, or drop --tmpfs and give --root a directory that is already private"
        )));
    }
    std::fs::create_dir_all(root).map_err(|source| GuestError::Mount {
        path: shown.clone(),
        source,
    })?;
    let data = std::ffi::CString::new(format!("mode=0700,size={size}")).expect("no NUL");
    mount(
        "tmpfs",
        root,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        data.as_c_str(),
    )
    .map_err(|e| GuestError::Mount {
        path: shown,
        source: e.into(),
    })
}

/// Runs ferry-agent until `shutdown` completes: mounts the tmpfs if asked,
/// opens the store, serves the ferry service on the configured address,
/// aborts transactions idle for longer than the timeout. On shutdown the
/// server stops, open transactions are aborted (their staging removed) and
/// published volumes stay in place for the containers using them.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    if let Some(size) = config.tmpfs {
        mount_tmpfs(&config.root, size)?;
        tracing::info!(root = %config.root.display(), size, "mounted tmpfs");
    }
    let (root, limits, policy, timeout) = (
        config.root.clone(),
        config.limits,
        config.policy,
        config.txn_timeout,
    );
    let store = tokio::task::spawn_blocking(move || {
        Store::open(root, limits, policy).map(|s| s.with_txn_timeout(timeout))
    })
    .await
    .map_err(|e| GuestError::Server(format!("opening the store: {e}")))??;
    let store = Arc::new(store);
    let listener = transport::listen(&config.listen, MAX_CONNECTIONS).await?;
    let service = Service::new(store.clone());
    let mut server = ttrpc::asynchronous::Server::new()
        .add_listener(listener)
        .register_service(ferry_ttrpc::create_ferry(Arc::new(service)));
    server
        .start()
        .await
        .map_err(|e| GuestError::Server(e.to_string()))?;
    let l = &config.limits;
    tracing::info!(
        "ferry-agent listening on {} (root {}, store limits: {} bytes and {} entries per volume, {} bytes and {} entries in all, {} volumes, paths up to {} bytes and {} deep; transactions time out after {:?}; setuid {})",
        config.listen,
        config.root.display(),
        l.max_volume_bytes,
        l.max_volume_files,
        l.max_store_bytes,
        l.max_store_files,
        l.max_volumes,
        l.max_path_len,
        l.max_depth,
        config.txn_timeout,
        if config.policy.allow_setuid {
            "allowed"
        } else {
            "stripped"
        },
    );
    let reaper = Reaper(tokio::spawn(reap(store.clone(), config.txn_timeout)));
    shutdown.await;
    tracing::info!("shutting down");
    drop(reaper);
    if let Err(e) = server.shutdown().await {
        tracing::warn!("stopping the server: {e}");
    }
    let aborted = tokio::task::spawn_blocking(move || store.abort_all())
        .await
        .map_err(|e| GuestError::Server(format!("aborting transactions: {e}")))?;
    for a in aborted {
        tracing::info!(volume = %a.volume, txn = a.txn, "aborted by shutdown");
    }
    Ok(())
}

/// Stops the reaper task when dropped, whichever way `run` returns.
struct Reaper(tokio::task::JoinHandle<()>);

impl Drop for Reaper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Aborts transactions idle longer than `timeout`, checking often enough
/// that none lives much past it.
async fn reap(store: Arc<Store>, timeout: Duration) {
    let period = (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let s = store.clone();
        let Ok(reaped) = tokio::task::spawn_blocking(move || s.reap_idle(timeout)).await else {
            continue;
        };
        for a in reaped {
            tracing::warn!(
                volume = %a.volume,
                txn = a.txn,
                idle = ?a.idle,
                "aborted transaction {} of volume {:?}: idle for more than {timeout:?}",
                a.txn,
                a.volume
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    fn parse(args: &[&str]) -> std::result::Result<AgentConfig, String> {
        let cli = Cli::try_parse_from(std::iter::once("ferry-agent").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        AgentConfig::try_from(cli.agent).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_sizes() {
        let c = parse(&["--listen", "unix:///tmp/f.sock"]).unwrap();
        assert_eq!(c.root, PathBuf::from("/run/ferry"));
        assert_eq!(c.limits, StoreLimits::default());
        assert_eq!(c.txn_timeout, Duration::from_secs(10));
        assert!(!c.policy.allow_setuid);
        assert_eq!(c.tmpfs, None);
        let c = parse(&[
            "--listen",
            "vsock://-1:1025",
            "--tmpfs",
            "128Mi",
            "--max-volume-bytes",
            "1M",
            "--max-store-bytes",
            "1G",
            "--allow-setuid",
        ])
        .unwrap();
        assert_eq!(c.tmpfs, Some(128 << 20));
        assert_eq!(c.limits.max_volume_bytes, 1 << 20);
        assert_eq!(c.limits.max_store_bytes, 1 << 30);
        assert!(c.policy.allow_setuid);
    }

    #[test]
    fn refuses_bad_configurations() {
        for (args, want) in [
            (&["--root", "/r"][..], "--listen"),
            (&["--listen", "nope"][..], "no scheme"),
            (&["--listen", "unix:///s", "--root", "rel"][..], "absolute"),
            (
                &["--listen", "unix:///s", "--txn-timeout", "0"][..],
                "txn-timeout",
            ),
            (
                &["--listen", "unix:///s", "--tmpfs", "0"][..],
                "must not be 0",
            ),
            (
                &["--listen", "unix:///s", "--tmpfs", "12Q"][..],
                "unknown suffix",
            ),
            (
                &["--listen", "unix:///s", "--max-volume-bytes", "1G"][..],
                "more than the store",
            ),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }

    #[tokio::test]
    async fn serves_until_shutdown_then_aborts_open_transactions() {
        use ferry_proto::{ferry as pb, ferry_ttrpc::FerryClient, transport::WireCounters};
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let root = dir.path().join("store");
        let config = AgentConfig {
            listen: format!("unix://{}", sock.display()).parse().unwrap(),
            root: root.clone(),
            tmpfs: None,
            limits: StoreLimits::default(),
            txn_timeout: Duration::from_secs(10),
            policy: Policy::default(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let agent = tokio::spawn(run(config.clone(), async {
            let _ = stopped.await;
        }));
        let mut socket = None;
        for _ in 0..100 {
            match transport::connect(
                &config.listen,
                Duration::from_secs(1),
                Arc::new(WireCounters::default()),
            )
            .await
            {
                Ok(s) => {
                    socket = Some(s);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let client = FerryClient::new(ttrpc::asynchronous::Client::new(socket.expect("agent up")));
        let ctx = || ttrpc::context::with_timeout(5_000_000_000);
        let mut hello = pb::HelloRequest::new();
        hello.protocol_version = ferry_proto::PROTOCOL_VERSION;
        let r = client.hello(ctx(), &hello).await.unwrap();
        assert_eq!(r.agent, crate::store::AGENT);
        hello.protocol_version = 99;
        let e = client.hello(ctx(), &hello).await.unwrap_err();
        assert_eq!(
            ferry_proto::wire::code_of(&e),
            Some(ttrpc::Code::FAILED_PRECONDITION)
        );
        let mut begin = pb::BeginRequest::new();
        begin.volume = "vol".into();
        let b = client.begin(ctx(), &begin).await.unwrap();
        assert!(
            root.join("volumes/vol")
                .join(format!("..{}", b.version))
                .is_dir()
        );
        stop.send(()).unwrap();
        agent.await.unwrap().unwrap();
        assert!(
            !root.join("volumes/vol").exists(),
            "staging removed on shutdown"
        );
    }
}
