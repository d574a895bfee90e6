//! `ferry-agent`: the guest side. See `ferry-agent --help`.
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use ferry::{init_tracing, runtime, shutdown_signal};

/// The guest side of ferry: serves the ferry ttRPC service and keeps each
/// volume under ROOT/volumes/<name>/ in kubelet's AtomicWriter layout
/// (..data -> ..<version>, visible links), applying every change as one
/// verified, confined, atomic transaction.
///
/// `ferry-agent --listen ADDR ...` serves; `ferry-agent mount ...` bind-mounts
/// one volume of the store into a container's rootfs and exits.
#[derive(Parser)]
#[command(name = "ferry-agent", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    agent: Option<ferry_guest::agent::AgentArgs>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Bind-mount a volume of the store into a container's rootfs (for
    /// runtimes that drive the guest themselves), print where, and exit.
    /// Needs root (CAP_SYS_ADMIN in this mount namespace).
    Mount(ferry_guest::mount::MountArgs),
}

/// `ferry-agent mount`: prints `SOURCE -> TARGET (ro|rw)` on success.
fn mount(args: ferry_guest::mount::MountArgs) -> ExitCode {
    let root = args.root.clone();
    let spec = ferry_guest::mount::MountSpec::from(args);
    match ferry_guest::mount::mount_from_root(&root, &spec, &ferry_guest::SysMounter) {
        Ok(r) => {
            println!(
                "{} -> {} ({})",
                r.source,
                r.target,
                if r.read_only { "ro" } else { "rw" }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferry-agent: mount: {e} ({:?})", e.code());
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    // Inside a VM's initramfs: PID 1 (mounts, modules, kernel command line,
    // the supervised agent) or the agent it started.
    if let Some(code) = ferry_guest::init::takeover(init_tracing) {
        return code;
    }
    let cli = Cli::parse();
    init_tracing("info");
    let agent = match (cli.cmd, cli.agent) {
        (Some(Cmd::Mount(args)), _) => return mount(args),
        (None, Some(agent)) => agent,
        (None, None) => Cli::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--listen ADDR is required (or a subcommand: mount)",
            )
            .exit(),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(async {
        let cfg = ferry_guest::agent::AgentConfig::try_from(agent)?;
        ferry_guest::agent::run(cfg, shutdown_signal()).await?;
        anyhow::Ok(())
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
