//! What both of ferry's binaries share: logging set-up and the shutdown
//! signal. Everything else lives in the libraries (`ferry-host`,
//! `ferry-guest`); the binaries parse arguments, build a config and call
//! `run(config, shutdown)`.

/// Logs to stderr; `RUST_LOG` overrides `default` (e.g. `RUST_LOG=debug`).
pub fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C): the injected shutdown of both
/// binaries.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
    }
}

/// A multi-threaded runtime sized for a small sandbox or a busy node.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}
