//! Black-box test support: the real `ferry-agent` and `ferry` binaries on
//! unix sockets in temporary directories.
#![allow(dead_code)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use ferry_proto::{Address, ferry_ttrpc::FerryClient, transport};
use ferry_tree::{Manifest, scan_volume};

pub const AGENT: &str = env!("CARGO_BIN_EXE_ferry-agent");
pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// A running ferry-agent; killed when dropped.
pub struct Agent {
    pub child: Child,
    pub sock: PathBuf,
    pub root: PathBuf,
    pub log: PathBuf,
}

impl Agent {
    /// Starts an agent on `<dir>/agent.sock` with its store at `root`.
    pub fn start(dir: &Path, root: &Path, extra: &[&str]) -> Agent {
        let sock = dir.join("agent.sock");
        let log = dir.join(format!("agent-{}.log", unique()));
        let child = Command::new(AGENT)
            .arg("--listen")
            .arg(format!("unix://{}", sock.display()))
            .arg("--root")
            .arg(root)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("start ferry-agent");
        let a = Agent {
            child,
            sock,
            root: root.to_path_buf(),
            log,
        };
        a.wait_listening();
        a
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.sock).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "ferry-agent did not listen in 20 s; log:\n{}",
            self.log_text()
        );
    }

    pub fn addr(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn volume(&self, name: &str) -> PathBuf {
        self.root.join("volumes").join(name)
    }

    /// SIGKILL: no chance to clean up, as a crashed guest.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        terminate(&self.child);
        self.child.wait().unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

pub fn terminate(child: &Child) {
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
}

/// `ferry sync` once.
pub fn sync_once(addr: &str, volumes: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(FERRY);
    c.arg("sync").arg("--connect").arg(addr);
    for (n, d) in volumes {
        c.arg("--volume").arg(format!("{n}={}", d.display()));
    }
    c.env("RUST_LOG", "info").output().unwrap()
}

/// A `ferry sync --watch`; killed when dropped.
pub struct Watch {
    pub child: Child,
    pub log: PathBuf,
}

impl Watch {
    pub fn start(dir: &Path, addr: &str, volumes: &[(&str, &Path)]) -> Watch {
        let log = dir.join(format!("sync-{}.log", unique()));
        let mut c = Command::new(FERRY);
        c.arg("sync").arg("--watch").arg("--connect").arg(addr);
        for (n, d) in volumes {
            c.arg("--volume").arg(format!("{n}={}", d.display()));
        }
        let child = c
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Watch { child, log }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stop(&mut self) -> std::process::ExitStatus {
        terminate(&self.child);
        self.child.wait().unwrap()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The manifest of a volume as a reader sees it.
pub fn manifest_of(dir: &Path) -> Manifest {
    scan_volume(dir).map(|s| s.manifest).unwrap_or_default()
}

/// Waits until the guest volume holds exactly the host directory's tree.
pub fn wait_mirrored(host: &Path, guest: &Path, what: &str, logs: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let want = manifest_of(host);
        if guest.join("..data").exists() && manifest_of(guest) == want {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: guest {} never mirrored host {}:\nwant {:#?}\ngot {:#?}\nlogs:\n{}",
                guest.display(),
                host.display(),
                want,
                manifest_of(guest),
                logs()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Asserts the guest volume is exactly kubelet's layout for its manifest:
/// `..data` -> the only version dir, one visible link per top-level name,
/// nothing else (no stale versions, links or staging). The old version is
/// deleted right after the `..data` rename that readers already see, so
/// this waits briefly for the commit to finish before judging.
pub fn assert_clean_layout(guest: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::panic::catch_unwind(|| check_clean_layout(guest)) {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => std::panic::resume_unwind(e),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn check_clean_layout(guest: &Path) {
    let data = fs::read_link(guest.join("..data")).expect("..data link");
    let data = data.to_str().unwrap().to_string();
    assert!(data.starts_with(".."), "..data -> {data}");
    let m = manifest_of(guest);
    let tops: Vec<String> = m.top_level_names().iter().map(|s| s.to_string()).collect();
    let mut names: Vec<String> = fs::read_dir(guest)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut want: Vec<String> = tops.clone();
    want.push("..data".into());
    want.push(data.clone());
    want.sort();
    assert_eq!(
        names,
        want,
        "guest volume {} holds stale entries",
        guest.display()
    );
    for t in tops {
        assert_eq!(
            fs::read_link(guest.join(&t)).unwrap(),
            Path::new("..data").join(&t),
            "visible link {t}"
        );
    }
}

/// A ttRPC call context with a generous timeout, for raw-protocol tests.
pub fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(10_000_000_000)
}

/// A raw protocol client on the agent's unix socket, to send what
/// `ferry sync` never would.
pub async fn client(sock: &Path) -> FerryClient {
    let s = transport::connect(
        &Address::Unix(sock.into()),
        Duration::from_secs(5),
        std::sync::Arc::default(),
    )
    .await
    .unwrap();
    FerryClient::new(ttrpc::asynchronous::Client::new(s))
}

/// Whether tests that mount can run here: root, with `unshare -m` and
/// `nsenter`. The error says why not, for the skip message.
pub fn private_mount_ns_available() -> Result<(), &'static str> {
    if !rustix::process::geteuid().is_root() {
        return Err("mounting needs root (CI runs as root)");
    }
    for tool in [
        &["unshare", "-m", "true"][..],
        &["nsenter", "--version"][..],
    ] {
        let ok = Command::new(tool[0])
            .args(&tool[1..])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err("`unshare -m` or `nsenter` is not available here");
        }
    }
    Ok(())
}

/// A ferry-agent in a private mount namespace (`unshare -m`), so whatever it
/// mounts never leaks into the test's namespace; killed when dropped.
pub struct NsAgent {
    pub child: Child,
    pub sock: PathBuf,
    pub log: PathBuf,
}

impl Drop for NsAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NsAgent {
    /// Starts the agent on `<dir>/agent.sock` with its store at `store`.
    pub fn start(dir: &Path, store: &Path, extra: &[&str]) -> NsAgent {
        let sock = dir.join("agent.sock");
        let log = dir.join("agent.log");
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", AGENT, "--listen"])
            .arg(format!("unix://{}", sock.display()))
            .arg("--root")
            .arg(store)
            .args(extra)
            .stdin(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(
                Instant::now() < deadline,
                "agent did not start:\n{}",
                fs::read_to_string(&log).unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        NsAgent { child, sock, log }
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn addr(&self) -> String {
        format!("unix://{}", self.sock.display())
    }
    /// `path` (absolute) as the agent's namespace sees it.
    pub fn inside(&self, path: &Path) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{}", self.pid(), path.display()))
    }
    pub fn mountinfo(&self) -> String {
        fs::read_to_string(format!("/proc/{}/mountinfo", self.pid())).unwrap()
    }
    /// The mount options of the mount at `target`, if there is one.
    pub fn mount_at(&self, target: &Path) -> Option<String> {
        let t = target.to_str().unwrap();
        self.mountinfo()
            .lines()
            .rfind(|l| l.split(' ').nth(4) == Some(t))
            .map(|l| l.split(' ').nth(5).unwrap().to_string())
    }
}
