//! `ferry vm`: its arguments (clap), kept in the library so `ferry`'s
//! `main` only dispatches.
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use crate::vm::Machine;

/// `ferry vm`: ferry across a real VM boundary (QEMU, a stock Debian cloud
/// kernel, ferry-agent as the guest's init, vhost-user vsock).
#[derive(Debug, Args)]
pub struct VmArgs {
    #[command(subcommand)]
    pub cmd: VmCmd,
}

/// The subcommands of `ferry vm`.
#[derive(Debug, Subcommand)]
pub enum VmCmd {
    /// Boot a guest, keep a kubelet-style pod current in it with ferry sync
    /// --watch, prove every update from inside the guest (Verify), print
    /// boot time, cold sync and update latency, power the guest off.
    Demo(DemoArgs),
    /// Boot guests that misbehave on purpose and check that each fault is
    /// reported or survived: no boot, refused handshake, killed agent, bad
    /// kernel command line.
    Faults(FaultsArgs),
    /// Boot a guest and keep it running until Ctrl-C (or --seconds), printing
    /// the address to point `ferry sync` and `ferry status` at.
    Boot(BootOnlyArgs),
    /// Write the initramfs (static ferry-agent as /init, the vsock modules)
    /// and print where it is.
    BuildInitramfs(BootArgs),
}

/// The accelerator to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccelChoice {
    /// KVM only where it really works (hardware virtualisation, not PVM),
    /// else TCG.
    Auto,
    Tcg,
    Kvm,
}

/// How to build and boot the guest.
#[derive(Debug, Clone, Args)]
pub struct BootArgs {
    /// A statically linked ferry-agent to use as /init. Default: build it
    /// (RUSTFLAGS='-C target-feature=+crt-static -C strip=debuginfo' cargo
    /// build --release --target x86_64-unknown-linux-gnu --bin ferry-agent).
    #[arg(long, value_name = "PATH")]
    pub agent: Option<PathBuf>,
    /// Where the Debian cloud kernel is downloaded and unpacked. Default:
    /// $XDG_CACHE_HOME/ferry-vm or ~/.cache/ferry-vm.
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "q35")]
    pub machine: Machine,
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelChoice,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    pub memory: u32,
    /// Guest vCPUs.
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    /// The agent's vsock port in the guest (ferry.port=).
    #[arg(long, default_value_t = 1025)]
    pub port: u32,
    /// Size of the guest's tmpfs store (ferry.store_size=).
    #[arg(long, default_value = "64Mi", value_name = "SIZE")]
    pub store_size: String,
    /// More kernel command line (e.g. "ferry.log=debug loglevel=7").
    #[arg(long, default_value = "", value_name = "ARGS")]
    pub cmdline: String,
    /// Seconds to wait for the agent's first answer after QEMU starts.
    #[arg(long, default_value_t = 90, value_name = "SECS")]
    pub boot_timeout: u64,
    /// Put sockets, logs and the pod directory here instead of a new
    /// directory under /tmp (kept).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Keep the working directory (console log, QEMU command, pod) at the end.
    #[arg(long)]
    pub keep: bool,
}

/// `ferry vm demo`
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub boot: BootArgs,
    /// Updates to measure after the first sync (token rotations and
    /// ConfigMap edits, alternating); at least 20.
    #[arg(long, default_value_t = 24, value_name = "N")]
    pub updates: u32,
}

/// `ferry vm faults`
#[derive(Debug, Clone, Args)]
pub struct FaultsArgs {
    #[command(flatten)]
    pub boot: BootArgs,
}

/// `ferry vm boot`
#[derive(Debug, Clone, Args)]
pub struct BootOnlyArgs {
    #[command(flatten)]
    pub boot: BootArgs,
    /// Power the guest off after this many seconds instead of at Ctrl-C.
    #[arg(long, value_name = "SECS")]
    pub seconds: Option<u64>,
}

/// Runs `ferry vm`.
pub async fn run(
    args: VmArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> crate::Result<()> {
    match args.cmd {
        VmCmd::Demo(a) => crate::demo::run(a).await,
        VmCmd::Faults(a) => crate::faults::run(a).await,
        VmCmd::Boot(a) => crate::demo::boot_only(a, shutdown).await,
        VmCmd::BuildInitramfs(a) => {
            crate::setup::prepare(&a)?;
            Ok(())
        }
    }
}
