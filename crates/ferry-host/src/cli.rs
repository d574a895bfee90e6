//! Command-line arguments of `ferry`'s subcommands, kept in the library so
//! the binary stays a thin `main`.
use std::{path::PathBuf, time::Duration};

use clap::Args;
use ferry_proto::Address;

use crate::{
    error::HostError,
    run::SyncConfig,
    sync::{VolumeKind, VolumeSpec},
};

fn file_spec(s: &str) -> Result<VolumeSpec, HostError> {
    VolumeSpec::parse(s, VolumeKind::File)
}

/// `ferry sync`
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The agent's address: unix:///run/ferry.sock, vsock://CID:PORT or
    /// hvsock:///path/to/hybrid.sock:PORT.
    #[arg(long, short = 'c', value_name = "ADDR")]
    pub connect: Address,
    /// A volume to keep in sync: NAME=DIR. NAME is the volume's name in the
    /// guest ([a-z0-9][a-z0-9._-]*); DIR is a kubelet volume directory (read
    /// through its ..data version) or any directory. Repeat for more.
    #[arg(
        long = "volume",
        short = 'v',
        value_name = "NAME=DIR",
        required_unless_present = "files"
    )]
    pub volumes: Vec<VolumeSpec>,
    /// A single file to keep in sync: NAME=PATH, for what kubelet
    /// bind-mounts as one file (etc-hosts, hostname, resolv.conf,
    /// termination-log) or a subPath (PATH = <volume dir>/<key>, read
    /// through that volume's ..data). The guest keeps it at
    /// ROOT/files/NAME and updates it in place (same inode), so a bind mount
    /// of it sees every change. Names are shared with --volume. Repeat for
    /// more.
    #[arg(long = "file", short = 'f', value_name = "NAME=PATH", value_parser = file_spec)]
    pub files: Vec<VolumeSpec>,
    /// Keep running: sync on every change (inotify), reconnect and resync
    /// when the agent goes away. Stop with SIGTERM or Ctrl-C.
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// Timeout for connecting and for each call, in seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub timeout: u64,
    /// Without --watch: how long to keep trying to reach the agent, in
    /// seconds.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub connect_wait: u64,
    /// Longest pause between reconnect attempts, in seconds.
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    pub max_backoff: u64,
}

impl TryFrom<SyncArgs> for SyncConfig {
    type Error = HostError;
    fn try_from(a: SyncArgs) -> Result<Self, HostError> {
        let mut seen = std::collections::BTreeSet::new();
        let volumes: Vec<VolumeSpec> = a.volumes.into_iter().chain(a.files).collect();
        for v in &volumes {
            if !seen.insert(v.name.clone()) {
                return Err(HostError::Protocol(format!(
                    "volume {} is given twice",
                    v.name
                )));
            }
            let md = std::fs::metadata(&v.source).map_err(|e| HostError::Io {
                path: v.source.clone(),
                source: e,
            })?;
            let (ok, want) = match v.kind {
                VolumeKind::Tree => (md.is_dir(), "a directory"),
                VolumeKind::File => (md.is_file(), "a regular file"),
            };
            if !ok {
                return Err(HostError::Protocol(format!(
                    "volume {}: {} is not {want}",
                    v.name,
                    v.source.display()
                )));
            }
        }
        Ok(SyncConfig {
            addr: a.connect,
            volumes,
            watch: a.watch,
            timeout: Duration::from_secs(a.timeout.max(1)),
            connect_wait: Duration::from_secs(a.connect_wait),
            max_backoff: Duration::from_secs(a.max_backoff.max(1)),
        })
    }
}

/// `ferry termination-log`
#[derive(Debug, Args)]
pub struct TerminationLogArgs {
    /// The agent's address (see `ferry sync --help`).
    #[arg(long, short = 'c', value_name = "ADDR")]
    pub connect: Address,
    /// The guest volume holding the termination log: a file volume (synced
    /// with `ferry sync --file NAME=...` and mounted read-write), or a tree
    /// volume with --path.
    #[arg(long, value_name = "NAME")]
    pub volume: String,
    /// The file inside a tree volume (not for a file volume).
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// Where kubelet expects the termination message on this node. Written
    /// atomically (temp file, fsync, rename).
    #[arg(long, value_name = "NODE_PATH")]
    pub out: PathBuf,
    /// Keep at most the last N bytes of the message (kubelet keeps the last
    /// 4096).
    #[arg(long, default_value_t = crate::termlog::KUBELET_MAX_BYTES, value_name = "N")]
    pub max_bytes: u64,
    /// Timeout in seconds.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub timeout: u64,
}

/// `ferry status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The agent's address (see `ferry sync --help`).
    #[arg(long, short = 'c', value_name = "ADDR")]
    pub connect: Address,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Timeout in seconds.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub timeout: u64,
}

/// `ferry demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's directory (agent store, pod volumes, logs) instead of
    /// removing it at the end.
    #[arg(long)]
    pub keep: bool,
    /// Put the demo's directory here instead of a new temporary directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The ferry-agent binary to start. Default: `ferry-agent` next to this
    /// binary if it exists, else this binary's own `agent` subcommand (the
    /// same code).
    #[arg(long, value_name = "PATH")]
    pub agent_bin: Option<PathBuf>,
}

/// `ferry sandbox`
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// The container's OCI bundle: DIR/config.json is read, never changed.
    #[arg(long, value_name = "DIR")]
    pub bundle: PathBuf,
    /// The agent's address (see `ferry sync --help`).
    #[arg(long, short = 'c', value_name = "ADDR")]
    pub connect: Address,
    /// Where to write the spec with the carried mounts pointed at their
    /// guest copies (written only once every volume is in the guest).
    /// Without it, only --collect-termination-log is done.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "collect_termination_log"
    )]
    pub spec_out: Option<PathBuf>,
    /// Keep running: keep every volume current, until SIGTERM or Ctrl-C.
    #[arg(long, short = 'w', requires = "spec_out")]
    pub watch: bool,
    /// kubelet's root directory (symlinks in it are resolved).
    #[arg(long, value_name = "DIR", default_value = crate::bundle::DEFAULT_KUBELET_ROOT)]
    pub kubelet_root: PathBuf,
    /// The agent's store in the guest (its --root): guest paths in the spec
    /// are under it.
    #[arg(long, value_name = "DIR", default_value = crate::bundle::DEFAULT_GUEST_ROOT)]
    pub guest_root: PathBuf,
    /// Copy each container's termination log back from the guest to the
    /// node file kubelet reads: when the sandbox stops (with --watch), or
    /// at once (without --spec-out, when the container has stopped).
    #[arg(long)]
    pub collect_termination_log: bool,
    /// Timeout for connecting and for each call, in seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub timeout: u64,
    /// How long the first sync keeps trying to reach the agent, in seconds.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub connect_wait: u64,
    /// Longest pause between reconnect attempts, in seconds.
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    pub max_backoff: u64,
}

impl TryFrom<SandboxArgs> for crate::sandbox::SandboxConfig {
    type Error = HostError;
    fn try_from(a: SandboxArgs) -> Result<Self, HostError> {
        if a.spec_out.is_some() && !a.watch && a.collect_termination_log {
            return Err(crate::sandbox::SandboxError::Usage(
                "--collect-termination-log with --spec-out needs --watch (collect when the sandbox stops); without --spec-out it collects at once".into(),
            )
            .into());
        }
        if !a.guest_root.is_absolute() {
            return Err(crate::sandbox::SandboxError::Usage(format!(
                "--guest-root {} must be an absolute guest path",
                a.guest_root.display()
            ))
            .into());
        }
        Ok(crate::sandbox::SandboxConfig {
            bundle: a.bundle,
            addr: a.connect,
            spec_out: a.spec_out,
            watch: a.watch,
            kubelet_root: a.kubelet_root,
            guest_root: a.guest_root,
            collect_termination_log: a.collect_termination_log,
            timeout: Duration::from_secs(a.timeout.max(1)),
            connect_wait: Duration::from_secs(a.connect_wait),
            max_backoff: Duration::from_secs(a.max_backoff.max(1)),
        })
    }
}
