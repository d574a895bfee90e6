//! ferry-agent as a VM guest's init: PID 1 and the agent it supervises.
//!
//! When the kernel starts `ferry-agent` as `/init` from the initramfs, the
//! binary finds itself PID 1 and [`takeover`] runs it as a tiny init:
//!
//! 1. mount `/proc`, `/sys` and devtmpfs on `/dev`;
//! 2. read the kernel command line ([`parse_cmdline`]): `ferry.port=`,
//!    `ferry.store_size=`, `ferry.log=`, `ferry.txn_timeout=`; a bad value
//!    falls back to its default and says so on the console;
//! 3. mount the store, a tmpfs of `ferry.store_size` at [`STORE_ROOT`]
//!    (`nosuid,nodev,noexec,mode=0700`);
//! 4. load the kernel modules the initramfs carries, in the order listed in
//!    [`MODULE_ORDER`] (virtio, virtio-pci, vsock, the virtio vsock
//!    transport), with `finit_module(2)`;
//! 5. start the agent as its child (the same binary, marked by
//!    [`CHILD_ENV`]) listening on `vsock://-1:PORT` with its root on the
//!    store, and start it again whenever it dies (the store is PID 1's
//!    mount, so it survives, and the restarted agent recovers from its state
//!    files); reap every child (orphans are reparented to PID 1);
//! 6. power off (or reboot) cleanly when the agent relays a `PowerOff` RPC:
//!    stop the agent with SIGTERM (open transactions are aborted), `sync`,
//!    unmount the store, `reboot(2)`.
//!
//! The agent stays an ordinary process so that a crash or a kill inside the
//! guest costs a restart, not a kernel panic (PID 1 must never exit). Both
//! processes log to the console the kernel gave PID 1 (`console=ttyS0`), so
//! the host's console log shows the agent.
use std::{
    ffi::CString,
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::OnceLock,
    time::{Duration, Instant},
};

use rustix::{
    mount::{MountFlags, UnmountFlags, mount, unmount},
    process::{Pid, Signal, WaitOptions, getpid, getppid, kill_process},
};

use crate::{
    agent::{AgentConfig, run},
    limits::{StoreLimits, parse_size},
    policy::Policy,
};

/// The vsock port the agent listens on unless `ferry.port=` says otherwise.
pub const DEFAULT_PORT: u32 = 1025;
/// Size of the store's tmpfs unless `ferry.store_size=` says otherwise.
pub const DEFAULT_STORE_SIZE: u64 = 64 << 20;
/// Log filter unless `ferry.log=` says otherwise.
pub const DEFAULT_LOG: &str = "info";
/// Transaction idle timeout unless `ferry.txn_timeout=` says otherwise.
pub const DEFAULT_TXN_TIMEOUT: Duration = Duration::from_secs(10);
/// Where PID 1 mounts the store; the agent's `--root`.
pub const STORE_ROOT: &str = "/run/ferry";
/// The initramfs file listing the modules to load, one `.ko` file name per
/// line, dependencies first (written by `ferry vm`).
pub const MODULE_ORDER: &str = "/lib/modules/ferry.order";
/// Set in the environment of the agent PID 1 starts; with a parent of PID 1
/// it marks the process as the supervised agent.
pub const CHILD_ENV: &str = "FERRY_INIT_CHILD";

/// What the kernel command line configures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitConfig {
    pub port: u32,
    pub store_size: u64,
    pub log: String,
    pub txn_timeout: Duration,
}

impl Default for InitConfig {
    fn default() -> Self {
        Self {
            port: DEFAULT_PORT,
            store_size: DEFAULT_STORE_SIZE,
            log: DEFAULT_LOG.into(),
            txn_timeout: DEFAULT_TXN_TIMEOUT,
        }
    }
}

impl InitConfig {
    /// The agent's configuration: vsock on any CID, root on the store (PID 1
    /// mounted it already), quotas no larger than the store.
    pub fn agent_config(&self) -> AgentConfig {
        let mut limits = StoreLimits::default();
        limits.max_store_bytes = limits.max_store_bytes.min(self.store_size);
        limits.max_volume_bytes = limits.max_volume_bytes.min(limits.max_store_bytes);
        AgentConfig {
            listen: ferry_proto::Address::Vsock {
                cid: ferry_proto::addr::VSOCK_CID_ANY,
                port: self.port,
            },
            root: PathBuf::from(STORE_ROOT),
            tmpfs: None,
            limits,
            txn_timeout: self.txn_timeout,
            policy: Policy::default(),
        }
    }
}

/// Splits a kernel command line into parameters the way the kernel does:
/// on whitespace, except inside double quotes; everything after a lone `--`
/// belongs to init's argv and is not a kernel parameter.
fn params(cmdline: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in cmdline.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    if let Some(end) = out.iter().position(|p| p == "--") {
        out.truncate(end);
    }
    out
}

const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Parses the `ferry.*` parameters of a kernel command line. Never fails: a
/// bad or unknown value yields the default and a message saying so (PID 1
/// prints them on the console), because a guest that refuses to come up over
/// a typo is worse than one that comes up on its defaults and says why.
pub fn parse_cmdline(cmdline: &str) -> (InitConfig, Vec<String>) {
    let mut cfg = InitConfig::default();
    let mut warnings = Vec::new();
    for p in params(cmdline) {
        let Some(rest) = p.strip_prefix("ferry.") else {
            continue;
        };
        let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
        let mut bad = |why: &str, default: &dyn std::fmt::Display| {
            warnings.push(format!(
                "kernel command line: ferry.{key}={value:?} {why}; using the default {default}"
            ));
        };
        match key {
            "port" => match value.parse::<u32>() {
                Ok(port) if port != 0 && port != u32::MAX => cfg.port = port,
                _ => bad("is not a vsock port (1 to 4294967294)", &DEFAULT_PORT),
            },
            "store_size" => match parse_size(value) {
                Ok(n) if n >= 1 << 20 => cfg.store_size = n,
                Ok(_) => bad("is too small for a store (at least 1Mi)", &"64Mi"),
                Err(e) => bad(&format!("is not a size ({e})"), &"64Mi"),
            },
            "log" => {
                let ok = !value.is_empty()
                    && value.split(',').all(|d| {
                        let level = d.rsplit_once('=').map_or(d, |(_, l)| l);
                        LOG_LEVELS.contains(&level)
                    });
                if ok {
                    cfg.log = value.to_string();
                } else {
                    bad(
                        "is not a log filter (off, error, warn, info, debug, trace, or target=level,...)",
                        &DEFAULT_LOG,
                    );
                }
            }
            "txn_timeout" => match value.parse::<u64>() {
                Ok(s) if (1..=3600).contains(&s) => cfg.txn_timeout = Duration::from_secs(s),
                _ => bad("is not a number of seconds (1 to 3600)", &"10"),
            },
            _ => warnings.push(format!(
                "kernel command line: unknown parameter ferry.{key} ignored (known: ferry.port, ferry.store_size, ferry.log, ferry.txn_timeout)"
            )),
        }
    }
    (cfg, warnings)
}

/// How a `PowerOff` RPC is carried out in this process, if at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerControl {
    /// This agent was started by ferry's PID 1: it asks PID 1 (SIGUSR1 to
    /// power off, SIGUSR2 to reboot), which stops the agent, syncs, unmounts
    /// and calls `reboot(2)`.
    AskInit,
}

static POWER: OnceLock<PowerControl> = OnceLock::new();

/// The power control of this process: set only when [`takeover`] made it the
/// agent of a VM's ferry init. Anything else (an agent on a node, in a test,
/// under another init) has none and refuses `PowerOff`.
pub fn power_control() -> Option<PowerControl> {
    POWER.get().copied()
}

/// Carries out a `PowerOff` after the reply has had time to leave: sync the
/// store, then hand over to PID 1.
pub fn schedule_power_off(ctl: PowerControl, reboot: bool) {
    let PowerControl::AskInit = ctl;
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        rustix::fs::sync();
        let sig = if reboot { Signal::USR2 } else { Signal::USR1 };
        if let Err(e) = kill_process(Pid::INIT, sig) {
            tracing::error!("asking PID 1 to power off: {e}");
        }
    });
}

/// If this process is a VM's init (PID 1) or the agent ferry's init started,
/// runs as that and returns its exit code; otherwise returns `None` and the
/// caller goes on as an ordinary `ferry-agent`. `init_tracing` sets up
/// logging with a default filter (the binary's, so the guest logs like the
/// agent does everywhere else).
pub fn takeover(init_tracing: fn(&str)) -> Option<ExitCode> {
    if getpid().is_init() {
        return Some(pid1(init_tracing));
    }
    if std::env::var_os(CHILD_ENV).is_some() && getppid().is_some_and(Pid::is_init) {
        return Some(agent_child(init_tracing));
    }
    None
}

/// Mounts `fstype` at `target`, creating it; a mount that is already there
/// (EBUSY) is fine.
fn mount_fs(source: &str, target: &str, fstype: &str, flags: MountFlags, data: &str) {
    let _ = fs::create_dir_all(target);
    let data = CString::new(data).expect("no NUL in mount data");
    match mount(source, target, fstype, flags, data.as_c_str()) {
        Ok(()) | Err(rustix::io::Errno::BUSY) => {}
        Err(e) => eprintln!("ferry-init: mount {fstype} on {target}: {e}"),
    }
}

/// Loads the modules listed in [`MODULE_ORDER`]; a module already present
/// (built in, or loaded) is fine. Returns how many were loaded.
fn load_modules() -> usize {
    let Ok(order) = fs::read_to_string(MODULE_ORDER) else {
        tracing::warn!("no {MODULE_ORDER}: loading no modules (vsock must be built in)");
        return 0;
    };
    let dir = Path::new(MODULE_ORDER).parent().expect("has a parent");
    let mut loaded = 0;
    for name in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = dir.join(name);
        let res = fs::File::open(&path)
            .map_err(|e| rustix::io::Errno::from_io_error(&e))
            .map(|f| rustix::system::finit_module(&f, c"", 0));
        match res {
            Ok(Ok(())) => loaded += 1,
            Ok(Err(rustix::io::Errno::EXIST)) => {}
            Ok(Err(e)) | Err(Some(e)) => {
                tracing::error!("loading module {}: {e}", path.display())
            }
            Err(None) => tracing::error!("loading module {}: cannot open it", path.display()),
        }
    }
    loaded
}

/// PID 1: set up the machine, supervise the agent, power off on request.
/// Never returns unless the runtime cannot start (the kernel then panics,
/// which with `panic=-1` ends the VM: the host sees it at once).
fn pid1(init_tracing: fn(&str)) -> ExitCode {
    let t0 = Instant::now();
    let nosuid = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    mount_fs("proc", "/proc", "proc", nosuid, "");
    mount_fs("sysfs", "/sys", "sysfs", nosuid, "");
    mount_fs(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MountFlags::NOSUID,
        "mode=0755",
    );
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let (cfg, warnings) = parse_cmdline(&cmdline);
    init_tracing(&cfg.log);
    tracing::info!(
        "ferry-init: PID 1, port {}, store {} bytes at {STORE_ROOT}, log {:?}, transaction timeout {:?}",
        cfg.port,
        cfg.store_size,
        cfg.log,
        cfg.txn_timeout
    );
    for w in &warnings {
        tracing::warn!("ferry-init: {w}");
    }
    mount_fs(
        "tmpfs",
        STORE_ROOT,
        "tmpfs",
        nosuid,
        &format!("mode=0700,size={}", cfg.store_size),
    );
    let loaded = load_modules();
    tracing::info!(
        "ferry-init: {loaded} modules loaded, machine ready in {:.0} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry-init: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let reboot = rt.block_on(supervise());
    power_down(reboot)
}

/// Starts the agent: this binary again, marked as the child.
fn spawn_agent() -> Option<Pid> {
    let exe = fs::read_link("/proc/self/exe").unwrap_or_else(|_| PathBuf::from("/init"));
    match std::process::Command::new(exe)
        .env(CHILD_ENV, "1")
        .stdin(std::process::Stdio::null())
        .spawn()
    {
        Ok(child) => {
            let pid = Pid::from_raw(child.id() as i32);
            tracing::info!("ferry-init: agent started (pid {})", child.id());
            // Reaped by `reap` with waitpid(-1), like every other child.
            drop(child);
            pid
        }
        Err(e) => {
            tracing::error!("ferry-init: cannot start the agent: {e}");
            None
        }
    }
}

/// Reaps every child that has exited; reports whether `agent` was one.
fn reap(agent: Option<Pid>) -> bool {
    let mut agent_gone = false;
    while let Ok(Some((pid, status))) = rustix::process::wait(WaitOptions::NOHANG) {
        if Some(pid) == agent {
            agent_gone = true;
            match (status.exit_status(), status.terminating_signal()) {
                (Some(code), _) => tracing::warn!("ferry-init: the agent exited with code {code}"),
                (_, Some(sig)) => {
                    tracing::warn!("ferry-init: the agent was killed by signal {sig}")
                }
                _ => tracing::warn!("ferry-init: the agent is gone ({status:?})"),
            }
        } else {
            tracing::debug!("ferry-init: reaped pid {}", pid.as_raw_nonzero());
        }
    }
    agent_gone
}

const RESTART_MIN: Duration = Duration::from_millis(100);
const RESTART_MAX: Duration = Duration::from_secs(5);

/// Keeps the agent running until a power request; returns true for reboot.
async fn supervise() -> bool {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut chld), Ok(mut usr1), Ok(mut usr2)) = (
        signal(SignalKind::child()),
        signal(SignalKind::user_defined1()),
        signal(SignalKind::user_defined2()),
    ) else {
        tracing::error!("ferry-init: cannot install signal handlers; powering off");
        return false;
    };
    let mut agent = spawn_agent();
    let mut started = Instant::now();
    let mut backoff = RESTART_MIN;
    let mut restart_at: Option<tokio::time::Instant> = None;
    let reboot = loop {
        let restart = async {
            match restart_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = chld.recv() => {
                if reap(agent) {
                    agent = None;
                    backoff = if started.elapsed() > Duration::from_secs(10) {
                        RESTART_MIN
                    } else {
                        (backoff * 2).min(RESTART_MAX)
                    };
                    tracing::warn!("ferry-init: restarting the agent in {backoff:?}");
                    restart_at = Some(tokio::time::Instant::now() + backoff);
                }
            }
            () = restart => {
                restart_at = None;
                agent = spawn_agent();
                started = Instant::now();
            }
            _ = usr1.recv() => break false,
            _ = usr2.recv() => break true,
        }
    };
    tracing::info!(
        "ferry-init: {} requested; stopping the agent",
        if reboot { "reboot" } else { "power off" }
    );
    if let Some(pid) = agent {
        let _ = kill_process(pid, Signal::TERM);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if reap(Some(pid)) {
                break;
            }
            if tokio::time::timeout_at(deadline, chld.recv())
                .await
                .is_err()
            {
                tracing::warn!("ferry-init: the agent did not stop in 5 s; killing it");
                let _ = kill_process(pid, Signal::KILL);
                break;
            }
        }
    }
    reboot
}

/// Syncs, unmounts the store and powers off (or reboots). Only returns if
/// the kernel refuses.
fn power_down(reboot: bool) -> ExitCode {
    use rustix::system::{RebootCommand, reboot as sys_reboot};
    rustix::fs::sync();
    if let Err(e) = unmount(STORE_ROOT, UnmountFlags::DETACH) {
        tracing::warn!("ferry-init: unmounting {STORE_ROOT}: {e}");
    }
    tracing::info!("ferry-init: store synced and unmounted; goodbye");
    let cmd = if reboot {
        RebootCommand::Restart
    } else {
        RebootCommand::PowerOff
    };
    let e = sys_reboot(cmd);
    eprintln!("ferry-init: reboot(2) failed: {e:?}");
    // PID 1 must not exit: wait for the end.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The agent started by ferry's PID 1: configured from the kernel command
/// line (PID 1 already reported bad values), allowed to relay `PowerOff`.
fn agent_child(init_tracing: fn(&str)) -> ExitCode {
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let (cfg, _) = parse_cmdline(&cmdline);
    init_tracing(&cfg.log);
    let _ = POWER.set(PowerControl::AskInit);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(async {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        run(cfg.agent_config(), term).await
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("ferry-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_ferry_parameters() {
        let (c, w) = parse_cmdline("console=ttyS0 panic=-1 quiet\n");
        assert_eq!(c, InitConfig::default());
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn reads_every_parameter() {
        let (c, w) = parse_cmdline(
            "console=ttyS0 ferry.port=2048 ferry.store_size=128Mi ferry.log=debug ferry.txn_timeout=3",
        );
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.port, 2048);
        assert_eq!(c.store_size, 128 << 20);
        assert_eq!(c.log, "debug");
        assert_eq!(c.txn_timeout, Duration::from_secs(3));
        let a = c.agent_config();
        assert_eq!(a.listen.to_string(), "vsock://-1:2048");
        assert_eq!(a.root, Path::new(STORE_ROOT));
        assert_eq!(a.limits.max_store_bytes, 128 << 20);
        assert!(a.limits.max_volume_bytes <= a.limits.max_store_bytes);
    }

    #[test]
    fn bad_values_fall_back_to_defaults_and_say_so() {
        for (param, want) in [
            ("ferry.port=abc", "not a vsock port"),
            ("ferry.port=0", "not a vsock port"),
            ("ferry.port=4294967295", "not a vsock port"),
            ("ferry.port=", "not a vsock port"),
            ("ferry.store_size=12Q", "not a size"),
            ("ferry.store_size=4k", "too small"),
            ("ferry.log=loud", "not a log filter"),
            ("ferry.log=ferry=shout", "not a log filter"),
            ("ferry.txn_timeout=0", "seconds"),
            ("ferry.txn_timeout=-1", "seconds"),
            ("ferry.bogus=1", "unknown parameter ferry.bogus"),
        ] {
            let (c, w) = parse_cmdline(&format!("console=ttyS0 {param} quiet"));
            assert_eq!(c, InitConfig::default(), "{param}");
            assert_eq!(w.len(), 1, "{param}: {w:?}");
            assert!(w[0].contains(want), "{param}: {}", w[0]);
            if !param.starts_with("ferry.bogus") {
                assert!(w[0].contains("using the default"), "{}", w[0]);
            }
        }
    }

    #[test]
    fn bad_values_do_not_spoil_good_ones() {
        let (c, w) =
            parse_cmdline("ferry.port=x ferry.store_size=32Mi ferry.log=warn,ferry_guest=debug");
        assert_eq!(c.port, DEFAULT_PORT);
        assert_eq!(c.store_size, 32 << 20);
        assert_eq!(c.log, "warn,ferry_guest=debug");
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn quotes_last_value_wins_and_init_arguments() {
        let (c, _) =
            parse_cmdline("ferry.port=1 ferry.port=7 x=\"a b ferry.port=9\" -- ferry.port=5");
        assert_eq!(c.port, 7);
        assert_eq!(params("a \"b c\"  d"), ["a", "b c", "d"]);
    }

    #[tokio::test]
    async fn an_ordinary_agent_refuses_power_off() {
        use ferry_proto::{ferry as pb, ferry_ttrpc::FerryClient, transport};
        assert_eq!(power_control(), None);
        let dir = tempfile::tempdir().unwrap();
        let mut config = InitConfig::default().agent_config();
        config.listen = ferry_proto::Address::Unix(dir.path().join("a.sock"));
        config.root = dir.path().join("store");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let agent = tokio::spawn(run(config.clone(), async {
            let _ = stopped.await;
        }));
        let mut socket = None;
        for _ in 0..200 {
            match transport::connect(&config.listen, Duration::from_secs(1), Default::default())
                .await
            {
                Ok(s) => {
                    socket = Some(s);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        let client = FerryClient::new(ttrpc::asynchronous::Client::new(socket.expect("agent up")));
        let e = client
            .power_off(
                ttrpc::context::with_timeout(5_000_000_000),
                &pb::PowerOffRequest::new(),
            )
            .await
            .unwrap_err();
        assert_eq!(
            ferry_proto::wire::code_of(&e),
            Some(ttrpc::Code::FAILED_PRECONDITION),
            "{e}"
        );
        stop.send(()).unwrap();
        agent.await.unwrap().unwrap();
    }
}
