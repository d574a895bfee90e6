//! `ferry`: the host side. See `ferry --help`.
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferry::{init_tracing, runtime, shutdown_signal};
use ferry_host::{
    cli::{DemoArgs, SandboxArgs, StatusArgs, SyncArgs, TerminationLogArgs},
    client::AgentClient,
    run::SyncConfig,
};

/// Carries a pod's Secrets, ConfigMaps and Service Account tokens into a VM
/// sandbox without a shared filesystem, and keeps them current: only what
/// changed crosses the wire, and each change lands in the guest as one
/// atomic version in kubelet's own layout.
#[derive(Parser)]
#[command(name = "ferry", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Push volume directories into a ferry-agent, once or (--watch) for as
    /// long as it runs.
    Sync(SyncArgs),
    /// Carry a container's pod volumes (API volumes, etc-hosts, hostname,
    /// resolv.conf, subPaths, termination log) from its OCI bundle into the
    /// guest, write the spec that mounts the guest copies, keep them current
    /// (--watch), and copy the termination log back.
    Sandbox(SandboxArgs),
    /// Show what a ferry-agent holds: volumes, versions, files, bytes.
    Status(StatusArgs),
    /// Read a container's termination log back from the guest and write it
    /// where kubelet looks on this node: its last 4096 bytes at most (as
    /// kubelet keeps them), atomically (temp file, rename).
    TerminationLog(TerminationLogArgs),
    /// Run a real agent and a real `ferry sync --watch` against a
    /// kubelet-style pod in a temporary directory, and show what happens.
    Demo(DemoArgs),
    /// Run the guest agent in this process (the same code as `ferry-agent`;
    /// the demo uses it when no ferry-agent binary is built).
    #[command(hide = true)]
    Agent(ferry_guest::agent::AgentArgs),
    /// ferry across a real VM boundary: boot a QEMU guest with ferry-agent
    /// as its init and reach it over vsock (`ferry vm demo`).
    Vm(ferry_vm::cli::VmArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.cmd {
        Cmd::Status(_) | Cmd::Demo(_) | Cmd::Vm(_) | Cmd::TerminationLog(_) => "warn",
        _ => "info",
    };
    init_tracing(default_log);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Sync(args) => {
            let cfg = SyncConfig::try_from(args)?;
            ferry_host::run::run(cfg, shutdown_signal()).await?;
        }
        Cmd::Status(args) => {
            let client = AgentClient::connect(
                &args.connect,
                "ferry status",
                0,
                std::time::Duration::from_secs(args.timeout.max(1)),
            )
            .await?;
            let st = client.status().await?;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&ferry_host::status::to_json(&st))?
                );
            } else {
                print!("{}", ferry_host::status::to_table(&st));
            }
        }
        Cmd::Sandbox(args) => {
            let cfg = ferry_host::sandbox::SandboxConfig::try_from(args)?;
            ferry_host::sandbox::run(cfg, shutdown_signal()).await?;
        }
        Cmd::TerminationLog(a) => {
            let c = ferry_host::termlog::run(
                &a.connect,
                &a.volume,
                a.path.as_deref(),
                &a.out,
                a.max_bytes,
                std::time::Duration::from_secs(a.timeout.max(1)),
            )
            .await?;
            if c.truncated {
                println!(
                    "wrote {} of {} bytes of volume {} to {} (kept the last {} bytes, as kubelet does)",
                    c.written,
                    c.size,
                    a.volume,
                    c.out.display(),
                    a.max_bytes
                );
            } else {
                println!(
                    "wrote {} bytes of volume {} to {}",
                    c.written,
                    a.volume,
                    c.out.display()
                );
            }
        }
        Cmd::Demo(args) => ferry_host::demo::run(args).await?,
        Cmd::Agent(args) => {
            let cfg = ferry_guest::agent::AgentConfig::try_from(args)?;
            ferry_guest::agent::run(cfg, shutdown_signal()).await?;
        }
        Cmd::Vm(args) => ferry_vm::cli::run(args, shutdown_signal()).await?,
    }
    Ok(())
}
