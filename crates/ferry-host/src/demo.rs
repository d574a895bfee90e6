//! `ferry demo`: a real ferry-agent and a real `ferry sync --watch`, as two
//! processes over a unix socket, keeping a kubelet-style pod current while
//! the demo plays kubelet: a first sync, token rotations, a Secret update,
//! ConfigMap keys changed, added and removed. Each step prints what changed,
//! how long it took to appear in the guest (from the moment kubelet starts
//! writing the new version on the node to the agent's `..data` rename in the
//! guest, seen by inotify), the bytes that crossed the wire (a counting proxy sits on the
//! socket), and a check that the guest holds exactly the node's tree.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use ferry_proto::Address;
use ferry_tree::{Manifest, diff, manifest::hex, scan_volume};
use futures::StreamExt;
use inotify::{EventMask, Inotify, WatchMask};
use tokio::process::{Child, Command};

use crate::{
    cli::DemoArgs,
    client::AgentClient,
    error::{HostError, Result},
    human_bytes,
    kubelet::{AtomicWriter, Payload, payload},
    proxy::CountingProxy,
    status,
};

const POD_UID: &str = "5f1d6a3c-8e0b-4b8e-9a51-3c2f7d0e4a11";
const VOLUMES: [(&str, &str); 3] = [
    ("kube-api-access-x7k2p", "kubernetes.io~projected"),
    ("db-credentials", "kubernetes.io~secret"),
    ("app-config", "kubernetes.io~configmap"),
];
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> HostError + '_ {
    move |source| HostError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn token(n: u32) -> Vec<u8> {
    let h = blake3::hash(format!("token-{n}").as_bytes()).to_hex();
    format!("eyJhbGciOiJSUzI1NiIsImtpZCI6ImZlcnJ5In0.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDphcHAiLCJpYXQiOj{n}.{}", &h[..43]).into_bytes()
}

fn sa_payload(n: u32) -> Payload {
    let ca = b"-----BEGIN CERTIFICATE-----\nMIIC/jCCAeagAwIBAgIBADANBgkqhkiG9w0BAQsFADAVMRMwEQYDVQQDEwprdWJl\ncm5ldGVzMB4XDTI2MTIwMzEzMDAwMFoXDTM2MTIwMTEzMDAwMFowFTETMBEGA1UE\n-----END CERTIFICATE-----\n";
    let t = token(n);
    payload([
        ("token", &t[..], 0o644),
        ("ca.crt", &ca[..], 0o644),
        ("namespace", b"default", 0o644),
    ])
}

struct Demo {
    root: PathBuf,
    pod: PathBuf,
    guest: PathBuf,
    writers: HashMap<&'static str, AtomicWriter>,
    proxy: CountingProxy,
    /// The demo's own connection to the agent, for status.
    client: AgentClient,
    observer: Observer,
}

/// Sees the agent publish versions: inotify on the guest store, recording
/// when each volume's `..data` was last renamed.
struct Observer {
    stream: inotify::EventStream<Vec<u8>>,
    volumes_wd: inotify::WatchDescriptor,
    by_wd: HashMap<inotify::WatchDescriptor, String>,
    root: PathBuf,
    last: HashMap<String, Instant>,
}

impl Observer {
    fn new(volumes: &Path) -> Result<Self> {
        let ino = Inotify::init().map_err(io_err(volumes))?;
        let stream = ino
            .into_event_stream(vec![0u8; 16 << 10])
            .map_err(io_err(volumes))?;
        let volumes_wd = stream
            .watches()
            .add(volumes, WatchMask::CREATE | WatchMask::ONLYDIR)
            .map_err(io_err(volumes))?;
        let mut o = Self {
            stream,
            volumes_wd,
            by_wd: HashMap::new(),
            root: volumes.to_path_buf(),
            last: HashMap::new(),
        };
        for e in std::fs::read_dir(volumes).map_err(io_err(volumes))? {
            let e = e.map_err(io_err(volumes))?;
            o.watch(&e.file_name().to_string_lossy());
        }
        Ok(o)
    }

    fn watch(&mut self, name: &str) {
        if let Ok(wd) = self
            .stream
            .watches()
            .add(self.root.join(name), WatchMask::MOVED_TO)
        {
            self.by_wd.insert(wd, name.to_string());
        }
    }

    /// Waits for the next `..data` rename (or a new volume) in the guest.
    async fn next(&mut self) -> Result<()> {
        let ev = self
            .stream
            .next()
            .await
            .ok_or_else(|| HostError::Protocol("inotify stream ended".into()))?
            .map_err(io_err(&self.root))?;
        let name = ev.name.as_ref().map(|n| n.to_string_lossy().into_owned());
        if ev.wd == self.volumes_wd && ev.mask.contains(EventMask::CREATE) {
            if let Some(n) = name {
                self.watch(&n);
            }
        } else if name.as_deref() == Some("..data")
            && let Some(vol) = self.by_wd.get(&ev.wd)
        {
            self.last.insert(vol.clone(), Instant::now());
        }
        Ok(())
    }
}

impl Demo {
    fn volume_dir(&self, vol: &str) -> PathBuf {
        let plugin = VOLUMES
            .iter()
            .find(|(v, _)| *v == vol)
            .map(|(_, p)| *p)
            .unwrap_or("");
        self.pod.join("volumes").join(plugin).join(vol)
    }

    /// Waits until the agent holds `vol` with exactly `want`'s digest and
    /// its `..data` rename after `since` has been seen; returns when that
    /// rename was seen by inotify.
    async fn wait_for(&mut self, vol: &str, want: &Manifest, since: Instant) -> Result<Instant> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        let digest = want.digest();
        loop {
            let st = self.client.status().await?;
            if let Some(s) = st.volumes.iter().find(|v| v.name == vol)
                && s.digest.as_slice() == digest.as_slice()
                && let Some(t) = self.observer.last.get(vol)
                && *t >= since
            {
                return Ok(*t);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero()
                || tokio::time::timeout(left, self.observer.next())
                    .await
                    .is_err()
            {
                return Err(HostError::Protocol(format!(
                    "volume {vol} did not reach digest {} in the guest within {STEP_TIMEOUT:?}; see the logs in {}",
                    &hex(&digest)[..16],
                    self.root.display()
                )));
            }
        }
    }

    /// Plays kubelet: writes `p` into `vol`, waits for the guest, prints the
    /// step.
    async fn step(&mut self, title: &str, vol: &'static str, p: &Payload) -> Result<Duration> {
        let dir = self.volume_dir(vol);
        let before = scan_volume(&dir).map(|s| s.manifest).unwrap_or_default();
        let wire0 = self.proxy.counters.sent();
        // From the moment kubelet starts writing: the guest can publish
        // before kubelet has finished its own clean-up after the rename.
        let t0 = Instant::now();
        self.writers[vol].write(p).map_err(io_err(&dir))?;
        let after = scan_volume(&dir)?.manifest;
        let seen = self.wait_for(vol, &after, t0).await?;
        let latency = seen.saturating_duration_since(t0);
        let wire = self.proxy.counters.sent() - wire0;
        let plan = diff(&before, &after);
        let changed: Vec<String> = plan
            .removes
            .iter()
            .map(|r| format!("-{r}"))
            .chain(plan.upserts.iter().map(|e| {
                if before.get(&e.path).is_some() {
                    format!("~{}", e.path)
                } else {
                    format!("+{}", e.path)
                }
            }))
            .collect();
        println!("  {title}");
        println!("      {vol}: {}", changed.join(" "));
        self.check_tree(vol, &after).await?;
        println!(
            "      in the guest after {:.1} ms, {} on the wire; guest re-read digest {} = node digest ✓",
            latency.as_secs_f64() * 1e3,
            human_bytes(wire),
            &hex(&after.digest())[..16],
        );
        Ok(latency)
    }

    /// Checks the guest copy twice: the agent re-reads it from its disk
    /// (Verify, which works across a VM boundary too), and the demo reads it
    /// the way a container would (through the visible links and `..data`).
    async fn check_tree(&self, vol: &str, want: &Manifest) -> Result<()> {
        let v = self.client.verify(vol).await?;
        if !v.matches || v.disk_digest.as_slice() != want.digest().as_slice() {
            return Err(HostError::Protocol(format!(
                "the agent re-read {vol} and found {} (problems: {:?})",
                hex(&v.disk_digest),
                v.problems
            )));
        }
        let got = scan_volume(&self.guest.join("volumes").join(vol))?.manifest;
        if got != *want {
            return Err(HostError::Protocol(format!(
                "the guest's copy of {vol} differs from the node's: {:?}",
                diff(want, &got)
            )));
        }
        for top in want.top_level_names() {
            let link = self.guest.join("volumes").join(vol).join(top);
            let target = std::fs::read_link(&link).map_err(io_err(&link))?;
            if target != Path::new("..data").join(top) {
                return Err(HostError::Protocol(format!(
                    "{} points to {}",
                    link.display(),
                    target.display()
                )));
            }
        }
        Ok(())
    }
}

fn agent_command(args: &DemoArgs) -> Result<(PathBuf, Vec<String>)> {
    let me = std::env::current_exe().map_err(io_err(Path::new("current exe")))?;
    if let Some(p) = &args.agent_bin {
        return Ok((p.clone(), vec![]));
    }
    let sibling = me.with_file_name("ferry-agent");
    if sibling.is_file() {
        return Ok((sibling, vec![]));
    }
    Ok((me, vec!["agent".into()]))
}

fn spawn(bin: &Path, args: &[String], log: &Path) -> Result<Child> {
    let f = std::fs::File::create(log).map_err(io_err(log))?;
    Command::new(bin)
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(f))
        .kill_on_drop(true)
        .spawn()
        .map_err(io_err(bin))
}

fn terminate(child: &Child) {
    if let Some(pid) = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

/// Runs the demo, printing as it goes. The workspace is removed at the end
/// unless `--keep`, `--dir` or a failure asks to keep it.
pub async fn run(args: DemoArgs) -> Result<()> {
    let (root, tmp) = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(io_err(d))?;
            (d.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("ferry-demo-")
                .tempdir()
                .map_err(io_err(&std::env::temp_dir()))?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let result = run_in(&args, &root).await;
    let keep = args.keep || result.is_err();
    if let Some(t) = tmp
        && keep
    {
        let _ = t.keep();
    }
    if keep || args.dir.is_some() {
        println!("\nlogs and trees kept in {}", root.display());
    }
    result
}

async fn run_in(args: &DemoArgs, root: &Path) -> Result<()> {
    let pod = root.join("node/var/lib/kubelet/pods").join(POD_UID);
    let guest = root.join("guest");
    let agent_sock = root.join("agent.sock");
    let proxy_sock = root.join("sync.sock");
    let agent_addr = Address::Unix(agent_sock.clone());
    let (agent_bin, mut agent_args) = agent_command(args)?;
    agent_args.extend([
        "--listen".into(),
        agent_addr.to_string(),
        "--root".into(),
        guest.display().to_string(),
    ]);

    println!(
        "ferry demo: a kubelet-style pod on the \"node\", a ferry-agent as the \"guest\", ferry sync in between"
    );
    println!("  workspace   {}", root.display());
    println!(
        "  agent       {} {}",
        agent_bin.display(),
        agent_args.join(" ")
    );
    let t_agent = Instant::now();
    let mut agent = spawn(&agent_bin, &agent_args, &root.join("agent.log"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if AgentClient::connect(&agent_addr, "ferry demo", 1, Duration::from_secs(2))
            .await
            .is_ok()
        {
            break;
        }
        if let Ok(Some(st)) = agent.try_wait() {
            return Err(HostError::Protocol(format!(
                "ferry-agent exited with {st}; see {}",
                root.join("agent.log").display()
            )));
        }
        if Instant::now() > deadline {
            return Err(HostError::Protocol(
                "ferry-agent did not start listening within 10 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "  agent ready in {:.0} ms, store at {}",
        t_agent.elapsed().as_secs_f64() * 1e3,
        guest.display()
    );
    let proxy = CountingProxy::start(&proxy_sock, &agent_sock).map_err(io_err(&proxy_sock))?;

    let mut writers = HashMap::new();
    for (vol, plugin) in VOLUMES {
        writers.insert(
            vol,
            AtomicWriter::new(pod.join("volumes").join(plugin).join(vol)).map_err(io_err(&pod))?,
        );
    }
    let mut config = payload([
        (
            "app.yaml",
            &b"listen: 0.0.0.0:8080\nreplicas: 3\n"[..],
            0o644,
        ),
        ("log-level", b"info", 0o644),
        ("legacy.properties", b"mode=compat\n", 0o644),
    ]);
    let secret = payload([
        ("username", &b"app"[..], 0o400),
        ("password", b"s3cr3t-v1", 0o400),
    ]);
    // kubelet writes the pod's volumes before the container starts.
    writers["kube-api-access-x7k2p"]
        .write(&sa_payload(1))
        .map_err(io_err(&pod))?;
    writers["db-credentials"]
        .write(&secret)
        .map_err(io_err(&pod))?;
    writers["app-config"].write(&config).map_err(io_err(&pod))?;

    let observer = Observer::new(&guest.join("volumes"))?;
    let client = AgentClient::connect(&agent_addr, "ferry demo", 1, Duration::from_secs(5)).await?;
    let mut demo = Demo {
        root: root.to_path_buf(),
        pod: pod.clone(),
        guest: guest.clone(),
        writers,
        proxy,
        client,
        observer,
    };

    let me = std::env::current_exe().map_err(io_err(Path::new("current exe")))?;
    let mut sync_args = vec![
        "sync".to_string(),
        "--watch".into(),
        "--connect".into(),
        format!("unix://{}", proxy_sock.display()),
    ];
    for (vol, _) in VOLUMES {
        sync_args.push("--volume".into());
        sync_args.push(format!("{vol}={}", demo.volume_dir(vol).display()));
    }
    println!("  sync        {} {}", me.display(), sync_args.join(" "));
    println!(
        "              (through a byte-counting proxy at {})",
        proxy_sock.display()
    );
    println!();
    println!("[1] first sync of the pod's three volumes");
    let t0 = Instant::now();
    let mut sync = spawn(&me, &sync_args, &root.join("sync.log"))?;
    let mut wants = Vec::new();
    for (vol, _) in VOLUMES {
        let m = scan_volume(&demo.volume_dir(vol))?.manifest;
        demo.wait_for(vol, &m, t0).await?;
        wants.push((vol, m));
    }
    let cold = t0.elapsed();
    for (vol, m) in &wants {
        demo.check_tree(vol, m).await?;
        println!(
            "      {vol}: {} files, {} ✓",
            m.file_count(),
            human_bytes(m.total_bytes())
        );
    }
    println!(
        "      all three in the guest {:.1} ms after ferry sync started (process start included), {} on the wire",
        cold.as_secs_f64() * 1e3,
        human_bytes(demo.proxy.counters.sent())
    );

    println!("\n[2] kubelet rotates the service account token");
    demo.step("token rotated", "kube-api-access-x7k2p", &sa_payload(2))
        .await?;

    println!("\n[3] the Secret's password changes");
    let secret2 = payload([
        ("username", &b"app"[..], 0o400),
        ("password", b"s3cr3t-v2-rotated", 0o400),
    ]);
    demo.step("password updated", "db-credentials", &secret2)
        .await?;

    println!("\n[4] the ConfigMap changes: one key edited, one removed, a nested key added");
    config.get_mut("log-level").expect("key").data = b"debug".to_vec();
    config.remove("legacy.properties");
    config.insert(
        "features/flags.json".into(),
        crate::kubelet::FileProjection {
            data: br#"{"new-ui": true}"#.to_vec(),
            mode: 0o644,
        },
    );
    demo.step("ConfigMap updated", "app-config", &config)
        .await?;

    println!("\n[5] ten token rotations in a row");
    let mut lat = Vec::new();
    for n in 3..13 {
        let t = demo
            .step(
                &format!("rotation {}", n - 2),
                "kube-api-access-x7k2p",
                &sa_payload(n),
            )
            .await?;
        lat.push(t);
    }
    lat.sort();
    println!(
        "      propagation over 10 rotations: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        lat[0].as_secs_f64() * 1e3,
        lat[lat.len() / 2].as_secs_f64() * 1e3,
        lat[lat.len() - 1].as_secs_f64() * 1e3
    );

    println!(
        "\n[6] the guest's store, as a container would see it (mounted from {}/volumes/<name>)",
        guest.display()
    );
    print_tree(&guest.join("volumes"))?;

    println!("\n[7] ferry status");
    let st = demo.client.status().await?;
    for line in status::to_table(&st).lines() {
        println!("  {line}");
    }

    println!("\n[8] ferry sandbox: a container's OCI spec goes in, the rewritten mounts come out");
    sandbox_step(root, &me, &agent_addr).await?;

    terminate(&sync);
    let code = tokio::time::timeout(Duration::from_secs(10), sync.wait()).await;
    match code {
        Ok(Ok(s)) if s.success() => println!("\nferry sync stopped cleanly on SIGTERM"),
        other => {
            return Err(HostError::Protocol(format!(
                "ferry sync did not stop cleanly on SIGTERM: {other:?}"
            )));
        }
    }
    terminate(&agent);
    let _ = tokio::time::timeout(Duration::from_secs(10), agent.wait()).await;
    println!("done: every version arrived whole; nothing was left behind in the guest");
    Ok(())
}

/// Writes a bundle for the pod's `app` container (its three volumes, its
/// etc-hosts and termination log, an emptyDir and a hostPath), runs a real
/// one-shot `ferry sandbox` on it, and prints each bind mount's source
/// before and after.
async fn sandbox_step(root: &Path, me: &Path, agent_addr: &Address) -> Result<()> {
    let kubelet_root = root.join("node/var/lib/kubelet");
    let pod = crate::kubelet::Pod::new(&kubelet_root, POD_UID).map_err(io_err(root))?;
    let hosts = pod
        .write_etc_hosts(&crate::kubelet::etc_hosts("10.244.1.17", "app-5d8f"))
        .map_err(io_err(root))?;
    let term = pod
        .termination_log("app", "4f3c2b1a")
        .map_err(io_err(root))?;
    let scratch = pod.empty_dir("scratch").map_err(io_err(root))?;
    let bundle = root.join("bundle");
    std::fs::create_dir_all(bundle.join("rootfs")).map_err(io_err(&bundle))?;
    let bind = |dst: &str, src: &Path, opts: &[&str]| serde_json::json!({"destination": dst, "type": "bind", "source": src, "options": opts});
    let vol = |plugin: &str, name: &str| pod.dir().join("volumes").join(plugin).join(name);
    let spec = serde_json::json!({
        "ociVersion": "1.1.0",
        "process": {"args": ["/app"], "cwd": "/", "user": {"uid": 1000, "gid": 1000}},
        "root": {"path": "rootfs"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            bind("/etc/hosts", &hosts, &["rbind", "rprivate", "rw"]),
            bind("/dev/termination-log", &term, &["rbind", "rprivate", "rw"]),
            bind("/var/run/secrets/kubernetes.io/serviceaccount", &vol(VOLUMES[0].1, VOLUMES[0].0), &["rbind", "rprivate", "ro"]),
            bind("/etc/db", &vol(VOLUMES[1].1, VOLUMES[1].0), &["rbind", "rprivate", "rw"]),
            bind("/etc/app/app.yaml", &vol(VOLUMES[2].1, VOLUMES[2].0).join("app.yaml"), &["rbind", "rprivate"]),
            bind("/scratch", &scratch, &["rbind", "rprivate", "rw"]),
            bind("/var/log/app", Path::new("/var/log"), &["rbind", "rprivate", "rw"]),
        ],
    });
    let config = bundle.join("config.json");
    std::fs::write(&config, crate::sandbox::render(&spec)).map_err(io_err(&config))?;
    let out = bundle.join("config.ferry.json");
    let args: Vec<String> = vec![
        "sandbox".into(),
        "--bundle".into(),
        bundle.display().to_string(),
        "--connect".into(),
        agent_addr.to_string(),
        "--kubelet-root".into(),
        kubelet_root.display().to_string(),
        "--spec-out".into(),
        out.display().to_string(),
    ];
    println!("      {} {}", me.display(), args.join(" "));
    let mut child = spawn(me, &args, &root.join("sandbox.log"))?;
    let st = tokio::time::timeout(STEP_TIMEOUT, child.wait())
        .await
        .map_err(|_| HostError::Protocol("ferry sandbox did not finish in 20 s".into()))?
        .map_err(io_err(me))?;
    if !st.success() {
        return Err(HostError::Protocol(format!(
            "ferry sandbox exited with {st}; see {}",
            root.join("sandbox.log").display()
        )));
    }
    let d = crate::bundle::Discovery::load(
        &bundle,
        &kubelet_root,
        Path::new(crate::bundle::DEFAULT_GUEST_ROOT),
    )
    .map_err(crate::sandbox::SandboxError::from)?;
    let text = std::fs::read(&out).map_err(io_err(&out))?;
    let rewritten: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| HostError::Protocol(format!("{}: {e}", out.display())))?;
    let node_root = pod.dir();
    let short = |s: &str| {
        s.strip_prefix(&node_root.display().to_string())
            .map_or_else(|| s.to_string(), |r| format!("<pod>{r}"))
    };
    let mounts = spec["mounts"].as_array().into_iter().flatten();
    let after = rewritten["mounts"].as_array().cloned().unwrap_or_default();
    for (i, m) in mounts.enumerate() {
        if m["type"] != "bind" {
            continue;
        }
        let src = m["source"].as_str().unwrap_or_default();
        println!("      {}", m["destination"].as_str().unwrap_or_default());
        println!("          in   {}", short(src));
        match d.left.iter().find(|l| l.index == i) {
            Some(l) => println!("          left {}", l.reason),
            None => println!(
                "          out  {} {}",
                after[i]["source"].as_str().unwrap_or_default(),
                after[i]["options"]
            ),
        }
    }
    println!(
        "      (<pod> = {}; everything else in the spec is unchanged: {})",
        node_root.display(),
        out.display()
    );
    Ok(())
}

fn print_tree(volumes: &Path) -> Result<()> {
    fn walk(dir: &Path, depth: usize) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let mut names: Vec<_> = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let md = std::fs::symlink_metadata(&p)?;
            let pad = "    ".repeat(depth + 1);
            let name = n.to_string_lossy();
            if md.file_type().is_symlink() {
                println!("  {pad}{name} -> {}", std::fs::read_link(&p)?.display());
            } else if md.is_dir() {
                println!("  {pad}{name}/  ({:o})", md.permissions().mode() & 0o7777);
                walk(&p, depth + 1)?;
            } else {
                println!(
                    "  {pad}{name}  ({:o}, {} B)",
                    md.permissions().mode() & 0o7777,
                    md.len()
                );
            }
        }
        Ok(())
    }
    walk(volumes, 0).map_err(io_err(volumes))
}
