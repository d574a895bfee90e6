//! Command-line arguments of `ferry`'s subcommands, kept in the library so
//! the binary stays a thin `main`.
use std::{path::PathBuf, time::Duration};

use clap::Args;
use ferry_proto::Address;

use crate::{error::HostError, run::SyncConfig, sync::VolumeSpec};

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
    #[arg(long = "volume", short = 'v', value_name = "NAME=DIR", required = true)]
    pub volumes: Vec<VolumeSpec>,
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
        for v in &a.volumes {
            if !seen.insert(v.name.clone()) {
                return Err(HostError::Protocol(format!(
                    "volume {} is given twice",
                    v.name
                )));
            }
            let md = std::fs::metadata(&v.dir).map_err(|e| HostError::Io {
                path: v.dir.clone(),
                source: e,
            })?;
            if !md.is_dir() {
                return Err(HostError::Protocol(format!(
                    "volume {}: {} is not a directory",
                    v.name,
                    v.dir.display()
                )));
            }
        }
        Ok(SyncConfig {
            addr: a.connect,
            volumes: a.volumes,
            watch: a.watch,
            timeout: Duration::from_secs(a.timeout.max(1)),
            connect_wait: Duration::from_secs(a.connect_wait),
            max_backoff: Duration::from_secs(a.max_backoff.max(1)),
        })
    }
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
