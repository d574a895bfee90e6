//! `ferry vm demo`: the host demo's job done across a real VM boundary.
//!
//! A QEMU guest boots a stock Debian cloud kernel with ferry-agent as its
//! init (see `ferry_guest::init`); the host reaches it only through
//! vhost-user vsock (`hvsock://<dir>/vsock.sock:1025`). The demo plays
//! kubelet on a pod directory on the host, runs the real sync loop
//! (`ferry_host::run::run`, what `ferry sync --watch` runs) in this process
//! against the guest, and after every version it writes asks the agent to
//! re-read the volume from the guest's own disk (`Verify`) and compares the
//! digest with the host's manifest digest of that version. It prints boot
//! time, cold-sync time and each update's propagation latency with p50/p99,
//! fails on any mismatch, and powers the guest off with `PowerOff`.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use ferry_host::{
    client::AgentClient,
    kubelet::{AtomicWriter, Payload, payload},
    run::{RunSummary, SyncConfig},
    sync::VolumeSpec,
};
use ferry_proto::ferry as pb;
use ferry_tree::{manifest::hex, scan_volume};

use crate::{
    cli::{BootArgs, BootOnlyArgs, DemoArgs},
    error::{Result, VmError, io_err},
    setup::{Prepared, Workdir, prepare},
    stats::{ms, percentile},
    vm::Vm,
};

const POD_UID: &str = "0c9a4e1d-7b52-4f1e-8d3a-6e2b9f4c1a70";
/// The pod's volumes: name, kubelet plugin directory.
pub const VOLUMES: [(&str, &str); 3] = [
    ("kube-api-access-q8m4z", "kubernetes.io~projected"),
    ("db-credentials", "kubernetes.io~secret"),
    ("app-config", "kubernetes.io~configmap"),
];
const SA: &str = VOLUMES[0].0;
const CONFIG: &str = VOLUMES[2].0;
/// How long one version may take to reach the guest before the demo fails.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two Status polls while waiting for a version.
const POLL: Duration = Duration::from_millis(2);

fn token(n: u32) -> Vec<u8> {
    let h = blake3::hash(format!("vm-token-{n}").as_bytes()).to_hex();
    format!(
        "eyJhbGciOiJSUzI1NiIsImtpZCI6ImZlcnJ5LXZtIn0.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDphcHAiLCJpYXQiOj{n}.{}",
        &h[..43]
    )
    .into_bytes()
}

/// The projected Service Account volume with token number `n`.
pub fn sa_payload(n: u32) -> Payload {
    let ca = b"-----BEGIN CERTIFICATE-----\nMIIC/jCCAeagAwIBAgIBADANBgkqhkiG9w0BAQsFADAVMRMwEQYDVQQDEwprdWJl\n-----END CERTIFICATE-----\n";
    let t = token(n);
    payload([
        ("token", &t[..], 0o644),
        ("ca.crt", &ca[..], 0o644),
        ("namespace", b"default", 0o644),
    ])
}

/// The ConfigMap at revision `n`: one key edited every time, a key added or
/// removed every other revision, a nested key.
pub fn config_payload(n: u32) -> Payload {
    let app = format!("listen: 0.0.0.0:8080\nreplicas: 3\nrevision: {n}\n");
    let level = if n.is_multiple_of(3) { "debug" } else { "info" };
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("app.yaml".into(), app.into_bytes()),
        ("log-level".into(), level.as_bytes().to_vec()),
        (
            "features/flags.json".into(),
            format!("{{\"rev\": {n}}}").into_bytes(),
        ),
    ];
    if n % 4 >= 2 {
        files.push((
            format!("extra-{}.properties", n / 4),
            b"mode=compat\n".to_vec(),
        ));
    }
    files
        .into_iter()
        .map(|(p, d)| {
            (
                p,
                ferry_host::kubelet::FileProjection {
                    data: d,
                    mode: 0o644,
                },
            )
        })
        .collect()
}

fn secret_payload() -> Payload {
    payload([
        ("username", &b"app"[..], 0o400),
        ("password", b"s3cr3t-vm", 0o400),
    ])
}

/// A kubelet-style pod on the host: one AtomicWriter per volume.
pub struct HostPod {
    pub dirs: BTreeMap<&'static str, PathBuf>,
    writers: BTreeMap<&'static str, AtomicWriter>,
}

impl HostPod {
    /// Creates the pod under `root` (`node/var/lib/kubelet/pods/<uid>/...`).
    pub fn new(root: &Path) -> Result<HostPod> {
        let pod = root
            .join("node/var/lib/kubelet/pods")
            .join(POD_UID)
            .join("volumes");
        let (mut dirs, mut writers) = (BTreeMap::new(), BTreeMap::new());
        for (vol, plugin) in VOLUMES {
            let d = pod.join(plugin).join(vol);
            writers.insert(vol, AtomicWriter::new(&d).map_err(io_err(&d))?);
            dirs.insert(vol, d);
        }
        Ok(HostPod { dirs, writers })
    }

    /// Writes `p` into `vol` as kubelet does; returns the host's manifest
    /// digest of the version written.
    pub fn write(&self, vol: &str, p: &Payload) -> Result<Vec<u8>> {
        let d = &self.dirs[vol];
        self.writers[vol].write(p).map_err(io_err(d))?;
        self.digest(vol)
    }

    /// The host's manifest digest of `vol` as it is now.
    pub fn digest(&self, vol: &str) -> Result<Vec<u8>> {
        let d = &self.dirs[vol];
        let s =
            scan_volume(d).map_err(|e| VmError::Check(format!("scanning {}: {e}", d.display())))?;
        Ok(s.manifest.digest().to_vec())
    }

    /// The `ferry sync --watch` configuration for this pod and `vm`.
    pub fn sync_config(&self, vm: &Vm) -> SyncConfig {
        SyncConfig {
            addr: vm.addr.clone(),
            volumes: VOLUMES
                .iter()
                .map(|(v, _)| VolumeSpec::tree(*v, self.dirs[v].clone()))
                .collect(),
            watch: true,
            timeout: Duration::from_secs(30),
            connect_wait: Duration::from_secs(30),
            max_backoff: Duration::from_millis(500),
        }
    }
}

/// The host's sync loop running in this process, stopped on drop.
pub struct SyncLoop {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<ferry_host::Result<RunSummary>>,
}

impl SyncLoop {
    /// Starts `ferry_host::run::run` (watching) with `cfg`.
    pub fn start(cfg: SyncConfig) -> SyncLoop {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(ferry_host::run::run(cfg, async {
            let _ = stopped.await;
        }));
        SyncLoop {
            stop: Some(stop),
            task,
        }
    }

    /// Fails if the loop has already ended (it should run until stopped).
    pub fn check_alive(&self) -> Result<()> {
        if self.task.is_finished() {
            return Err(VmError::Check("the sync loop ended on its own".into()));
        }
        Ok(())
    }

    /// Stops the loop and returns its totals.
    pub async fn stop(mut self) -> Result<RunSummary> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match (&mut self.task).await {
            Ok(r) => Ok(r?),
            Err(e) => Err(VmError::Check(format!("the sync loop panicked: {e}"))),
        }
    }
}

impl Drop for SyncLoop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until the guest holds `digest` in `vol`, polling Status; returns
/// when it saw it and the guest's summary.
pub async fn wait_for(
    client: &AgentClient,
    vol: &str,
    digest: &[u8],
    timeout: Duration,
) -> Result<(Instant, pb::VolumeSummary)> {
    let deadline = Instant::now() + timeout;
    loop {
        let st = client.status().await?;
        if let Some(v) = st.volumes.iter().find(|v| v.name == vol)
            && v.digest == digest
        {
            return Ok((Instant::now(), v.clone()));
        }
        if Instant::now() > deadline {
            return Err(VmError::Check(format!(
                "volume {vol} did not reach digest {} in the guest within {timeout:?}",
                &hex(digest)[..16]
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Asks the agent to re-read `vol` from the guest's disk and checks that
/// what it committed, what its disk holds and the host's digest agree.
pub async fn verify(client: &AgentClient, vol: &str, want: &[u8]) -> Result<pb::VerifyResponse> {
    let v = client.verify(vol).await?;
    if !v.matches || v.disk_digest != want || v.volume.digest != want {
        return Err(VmError::Check(format!(
            "{vol}: the guest re-read digest {} (committed {}, matches {}), the host wrote {}; problems: {:?}",
            hex(&v.disk_digest),
            hex(&v.volume.digest),
            v.matches,
            hex(want),
            v.problems
        )));
    }
    Ok(v)
}

/// Boots a guest from `prep` in `dir` and waits for its agent.
pub async fn boot(
    prep: &Prepared,
    a: &BootArgs,
    dir: &Path,
    extra_cmdline: &str,
) -> Result<(Vm, AgentClient, Duration)> {
    let cfg = prep.vm_config(a, dir, extra_cmdline);
    let mut vm = Vm::start(&cfg).await?;
    let (client, took) = vm.wait_ready(Duration::from_secs(a.boot_timeout)).await?;
    Ok((vm, client, took))
}

/// Runs `ferry vm demo`.
pub async fn run(args: DemoArgs) -> Result<()> {
    if args.updates < 20 {
        return Err(VmError::Check(format!(
            "--updates {}: the demo measures at least 20 updates for a meaningful p99",
            args.updates
        )));
    }
    println!(
        "ferry vm demo: ferry-agent as the init of a QEMU guest, ferry sync on the host, nothing shared but a vsock"
    );
    let prep = prepare(&args.boot)?;
    let mut work = Workdir::new(args.boot.dir.as_deref())?;
    println!("  workdir     {}", work.path.display());
    let res = demo_in(&args, &prep, &work.path).await;
    if res.is_err() || args.boot.keep {
        work.keep();
        println!(
            "\nconsole log, QEMU command line and the pod kept in {}",
            work.path.display()
        );
    }
    res
}

async fn demo_in(args: &DemoArgs, prep: &Prepared, dir: &Path) -> Result<()> {
    let a = &args.boot;
    println!(
        "\n[1] boot: {:?} machine, {}, {} MiB, {} vCPU, kernel {}",
        a.machine,
        prep.accel.qemu_name().to_uppercase(),
        a.memory,
        a.cpus,
        prep.kernel.release
    );
    let (mut vm, client, boot_time) = boot(prep, a, dir, "").await?;
    println!("      kernel command line: {}", vm.cmdline);
    println!(
        "      {} answered Hello on {} {} after QEMU started",
        client.hello.agent,
        vm.addr,
        ms(boot_time)
    );
    let mut rtts = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        client.status().await?;
        rtts.push(t.elapsed());
    }
    let rtt = percentile(&rtts, 50.0).unwrap_or_default();
    println!(
        "      a Status round trip across the boundary takes {} (median of 20)",
        ms(rtt)
    );

    let pod = HostPod::new(dir)?;
    let mut sa_n = 1;
    let mut cfg_n = 1;
    let mut digests = BTreeMap::new();
    digests.insert(SA, pod.write(SA, &sa_payload(sa_n))?);
    digests.insert(VOLUMES[1].0, pod.write(VOLUMES[1].0, &secret_payload())?);
    digests.insert(CONFIG, pod.write(CONFIG, &config_payload(cfg_n))?);

    println!(
        "\n[2] cold sync: the sync loop (what `ferry sync --watch` runs) starts against {}",
        vm.addr
    );
    let t0 = Instant::now();
    let sync = SyncLoop::start(pod.sync_config(&vm));
    let mut last_gen = BTreeMap::new();
    for (vol, _) in VOLUMES {
        let (_, s) = wait_for(&client, vol, &digests[vol], ARRIVAL_TIMEOUT).await?;
        last_gen.insert(vol, s.generation);
    }
    let cold = t0.elapsed();
    for (vol, _) in VOLUMES {
        let v = verify(&client, vol, &digests[vol]).await?;
        println!(
            "      {vol:<24} {} files, {} B, version ..{}, guest re-read {} = host ✓",
            v.volume.files,
            v.volume.bytes,
            v.disk_version,
            &hex(&v.disk_digest)[..16]
        );
    }
    println!(
        "      all three volumes in the guest {} after the sync loop started",
        ms(cold)
    );

    println!(
        "\n[3] {} updates, one at a time; each proven from inside the guest (Verify re-reads the volume from the guest's disk)",
        args.updates
    );
    let mut lat = Vec::new();
    for i in 1..=args.updates {
        sync.check_alive()?;
        let (vol, what, p) = if i % 2 == 1 {
            sa_n += 1;
            (SA, format!("token rotated (#{sa_n})"), sa_payload(sa_n))
        } else {
            cfg_n += 1;
            (
                CONFIG,
                format!("ConfigMap revision {cfg_n}"),
                config_payload(cfg_n),
            )
        };
        let t = Instant::now();
        let want = pod.write(vol, &p)?;
        let (seen, s) = wait_for(&client, vol, &want, ARRIVAL_TIMEOUT).await?;
        let latency = seen.saturating_duration_since(t);
        let prev = last_gen.insert(vol, s.generation).unwrap_or(0);
        if s.generation != prev + 1 {
            return Err(VmError::Check(format!(
                "{vol}: generation went from {prev} to {}: one version per update expected",
                s.generation
            )));
        }
        let v = verify(&client, vol, &want).await?;
        println!(
            "      {i:>3}  {what:<24} {vol:<22} gen {:>3}  {:>9}   guest re-read {} = host ✓",
            s.generation,
            ms(latency),
            &hex(&v.disk_digest)[..16]
        );
        lat.push(latency);
    }
    let (p50, p99) = (
        percentile(&lat, 50.0).unwrap_or_default(),
        percentile(&lat, 99.0).unwrap_or_default(),
    );
    println!(
        "      propagation over {} updates (start of kubelet's write on the host -> the guest holds the new digest): p50 {}, p99 {}, min {}, max {}",
        lat.len(),
        ms(p50),
        ms(p99),
        ms(*lat.iter().min().expect("≥ 20")),
        ms(*lat.iter().max().expect("≥ 20")),
    );
    println!(
        "      (the guest is polled with Status every {} ms; one round trip is {}, the resolution of these figures)",
        POLL.as_millis(),
        ms(rtt)
    );

    println!("\n[4] stop the sync loop, power the guest off");
    let summary = sync.stop().await?;
    println!(
        "      sync loop: {} syncs, {} commits, {} failures, {} reconnects",
        summary.syncs, summary.commits, summary.failures, summary.reconnects
    );
    let off = vm.power_off(&client).await?;
    println!(
        "      PowerOff answered; QEMU exited cleanly {} later",
        ms(off)
    );
    println!(
        "\nboot-to-ready {} | cold sync {} | update latency p50 {} p99 {} over {} updates | every version verified inside the guest",
        ms(boot_time),
        ms(cold),
        ms(p50),
        ms(p99),
        lat.len()
    );
    Ok(())
}

/// Runs `ferry vm boot`: a guest to play with.
pub async fn boot_only(
    args: BootOnlyArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let prep = prepare(&args.boot)?;
    let mut work = Workdir::new(args.boot.dir.as_deref())?;
    work.keep();
    let (mut vm, client, took) = boot(&prep, &args.boot, &work.path, "").await?;
    println!("guest up in {}: {}", ms(took), client.hello.agent);
    println!("  ferry status --connect {}", vm.addr);
    println!(
        "  ferry sync --watch --connect {} --volume NAME=DIR",
        vm.addr
    );
    println!("  console log: {}", vm.console.display());
    match args.seconds {
        Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
        None => shutdown.await,
    }
    let off = vm.power_off(&client).await?;
    println!("powered off in {}", ms(off));
    Ok(())
}
