//! `ferry-agent`: the guest side. See `ferry-agent --help`.
use std::process::ExitCode;

use clap::Parser;
use ferry::{init_tracing, runtime, shutdown_signal};

/// The guest side of ferry: serves the ferry ttRPC service and keeps each
/// volume under ROOT/volumes/<name>/ in kubelet's AtomicWriter layout
/// (..data -> ..<version>, visible links), applying every change as one
/// verified, confined, atomic transaction.
#[derive(Parser)]
#[command(name = "ferry-agent", version)]
struct Cli {
    #[command(flatten)]
    agent: ferry_guest::agent::AgentArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing("info");
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(async {
        let cfg = ferry_guest::agent::AgentConfig::try_from(cli.agent)?;
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
