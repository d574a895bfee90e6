//! `ferry sandbox` with the real binaries against a pod written by the
//! kubelet stand-in: the rewritten spec (a snapshot), the volumes kept
//! current under `--watch`, the termination log copied back, and bad input.
mod common;

use std::{
    fs,
    os::unix::fs::{MetadataExt, symlink},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::*;
use ferry_host::{
    bundle::ApiVolume,
    kubelet::{
        AtomicWriter, KeyToPath, KeyedData, Ownership, Pod, ServiceAccount, etc_hosts, key_payload,
        keyed,
    },
};

const UID: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
const CONTAINER_ID: &str = "4f3c2b1a";
/// The guest root written into the spec (the agent's own --root in a VM).
const GUEST_ROOT: &str = "/run/ferry";

/// A pod on a stand-in node whose kubelet root is reached through a
/// symlink, as on k0s, and the bundle of its `app` container.
struct Fixture {
    t: tempfile::TempDir,
    /// `<t>/kubelet`, a symlink to `<t>/data/kubelet`.
    kubelet_root: PathBuf,
    pod: Pod,
    sa: ServiceAccount,
    sa_w: AtomicWriter,
    secret: KeyedData,
    secret_w: AtomicWriter,
    config: KeyedData,
    config_w: AtomicWriter,
    nginx_w: AtomicWriter,
    etc_hosts: PathBuf,
    termination_log: PathBuf,
    hostname: PathBuf,
    resolv: PathBuf,
    bundle: PathBuf,
}

fn config_items(with_features: bool) -> Vec<KeyToPath> {
    let mut v = vec![
        KeyToPath::new("app.yaml", "conf/app.yaml"),
        KeyToPath::new("log-level", "conf/logging/level").mode(0o600),
    ];
    if with_features {
        v.push(KeyToPath::new("features.json", "features.json"));
    }
    v
}

impl Fixture {
    fn new() -> Fixture {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("data/kubelet")).unwrap();
        let kubelet_root = t.path().join("kubelet");
        symlink(t.path().join("data/kubelet"), &kubelet_root).unwrap();
        let pod = Pod::new(&kubelet_root, UID).unwrap();
        let sa = ServiceAccount::new("shop", "checkout");
        let sa_w = pod
            .writer(
                ApiVolume::Projected,
                "kube-api-access-x7k2p",
                Ownership::default(),
            )
            .unwrap();
        sa_w.write(&sa.payload()).unwrap();
        let secret = keyed([("username", &b"checkout"[..]), ("password", b"s3cr3t-1")]);
        let secret_w = pod
            .writer(
                ApiVolume::Secret,
                "db-credentials",
                Ownership {
                    fs_group: Some(2000),
                    ..Default::default()
                },
            )
            .unwrap();
        secret_w
            .write(&key_payload("secret", &secret, &[], Some(0o400), false).unwrap())
            .unwrap();
        let config = keyed([
            ("app.yaml", &b"listen: 0.0.0.0:8080\n"[..]),
            ("log-level", b"info"),
            ("features.json", b"{}"),
        ]);
        let config_w = pod
            .writer(ApiVolume::ConfigMap, "app-config", Ownership::default())
            .unwrap();
        config_w
            .write(&key_payload("configmap", &config, &config_items(true), None, false).unwrap())
            .unwrap();
        let nginx_w = pod
            .writer(ApiVolume::ConfigMap, "nginx-conf", Ownership::default())
            .unwrap();
        nginx_w
            .write(
                &key_payload(
                    "configmap",
                    &keyed([("nginx.conf", &b"worker_processes 1;\n"[..])]),
                    &[],
                    None,
                    false,
                )
                .unwrap(),
            )
            .unwrap();
        let etc_hosts = pod
            .write_etc_hosts(&etc_hosts("10.244.1.17", "checkout-5d8f"))
            .unwrap();
        let termination_log = pod.termination_log("app", CONTAINER_ID).unwrap();
        let sandbox = t.path().join("containerd/sandboxes/9a8b7c");
        fs::create_dir_all(&sandbox).unwrap();
        let hostname = sandbox.join("hostname");
        fs::write(&hostname, "checkout-5d8f\n").unwrap();
        let resolv = sandbox.join("resolv.conf");
        fs::write(
            &resolv,
            "search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n",
        )
        .unwrap();
        let scratch = pod.empty_dir("scratch").unwrap();
        let host_logs = t.path().join("var/log/checkout");
        fs::create_dir_all(&host_logs).unwrap();
        let bundle = t.path().join("bundle");
        fs::create_dir_all(bundle.join("rootfs")).unwrap();
        let f = Fixture {
            kubelet_root,
            pod,
            sa,
            sa_w,
            secret,
            secret_w,
            config,
            config_w,
            nginx_w,
            etc_hosts,
            termination_log,
            hostname,
            resolv,
            bundle,
            t,
        };
        let spec = f.spec(&scratch, &host_logs);
        fs::write(
            f.bundle.join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
        f
    }

    fn vol(&self, plugin: ApiVolume, name: &str) -> String {
        self.pod.volume_dir(plugin, name).display().to_string()
    }

    /// A config.json as containerd's CRI plugin writes it for this pod.
    fn spec(&self, scratch: &Path, host_logs: &Path) -> serde_json::Value {
        let bind = |dst: &str, src: String, opts: &[&str]| serde_json::json!({"destination": dst, "type": "bind", "source": src, "options": opts});
        serde_json::json!({
            "ociVersion": "1.1.0",
            "process": {
                "user": {"uid": 1000, "gid": 1000, "additionalGids": [2000]},
                "args": ["/checkout", "--config", "/etc/app/conf/app.yaml"],
                "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=checkout-5d8f"],
                "cwd": "/",
                "capabilities": {"bounding": ["CAP_NET_BIND_SERVICE"]},
                "noNewPrivileges": true,
                "oomScoreAdj": 1000
            },
            "root": {"path": "rootfs"},
            "hostname": "checkout-5d8f",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
                bind("/etc/hosts", self.etc_hosts.display().to_string(), &["rbind", "rprivate", "rw"]),
                bind("/dev/termination-log", self.termination_log.display().to_string(), &["rbind", "rprivate", "rw"]),
                bind("/etc/hostname", self.hostname.display().to_string(), &["rbind", "rprivate", "rw"]),
                bind("/etc/resolv.conf", self.resolv.display().to_string(), &["rbind", "rprivate", "rw"]),
                bind("/var/run/secrets/kubernetes.io/serviceaccount", self.vol(ApiVolume::Projected, "kube-api-access-x7k2p"), &["rbind", "rprivate", "ro"]),
                bind("/etc/db", self.vol(ApiVolume::Secret, "db-credentials"), &["rbind", "rprivate", "rw"]),
                bind("/etc/app", self.vol(ApiVolume::ConfigMap, "app-config"), &["rbind", "rprivate"]),
                bind("/etc/nginx/nginx.conf", format!("{}/nginx.conf", self.vol(ApiVolume::ConfigMap, "nginx-conf")), &["rbind", "rprivate", "ro"]),
                bind("/scratch", scratch.display().to_string(), &["rbind", "rprivate", "rw"]),
                bind("/var/log/app", host_logs.display().to_string(), &["rbind", "rprivate", "rw"]),
                bind("/dev/fuse", "/dev/null".to_string(), &["rbind", "rprivate", "rw"]),
                {"destination": "/dev/shm", "type": "bind", "source": "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/9a8b7c/shm", "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}
            ],
            "annotations": {
                "io.kubernetes.cri.container-name": "app",
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.sandbox-id": "9a8b7c",
                "io.kubernetes.cri.sandbox-uid": UID
            },
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network", "path": "/proc/4242/ns/net"}],
                "maskedPaths": ["/proc/kcore"],
                "readonlyPaths": ["/proc/sys"]
            }
        })
    }

    fn secret_payload(&self) -> ferry_host::kubelet::Payload {
        key_payload("secret", &self.secret, &[], Some(0o400), false).unwrap()
    }

    fn config_payload(&self, with_features: bool) -> ferry_host::kubelet::Payload {
        key_payload(
            "configmap",
            &self.config,
            &config_items(with_features),
            None,
            false,
        )
        .unwrap()
    }

    fn sandbox_cmd(&self, addr: &str, extra: &[&str]) -> Command {
        let mut c = Command::new(FERRY);
        c.arg("sandbox")
            .arg("--bundle")
            .arg(&self.bundle)
            .arg("--connect")
            .arg(addr)
            .arg("--kubelet-root")
            .arg(&self.kubelet_root)
            .args(extra)
            .env("RUST_LOG", "info");
        c
    }

    fn spec_out(&self) -> PathBuf {
        self.t.path().join("out/config.json")
    }
}

/// The guest path in the spec, under the test agent's real root.
fn in_agent(agent: &Agent, guest_path: &str) -> PathBuf {
    agent.root.join(
        guest_path
            .strip_prefix(GUEST_ROOT)
            .unwrap()
            .trim_start_matches('/'),
    )
}

fn normalise(text: &str, t: &Path) -> String {
    text.replace(&t.display().to_string(), "$TMP")
}

fn check_snapshot(name: &str, got: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, got).unwrap();
        return;
    }
    let want = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "snapshot {}: {e} (create it with UPDATE_SNAPSHOTS=1)",
            path.display()
        )
    });
    // Compared as text: the rewritten spec keeps config.json's key order,
    // so a runtime diffing the two sees only the rewritten sources.
    assert!(
        want == got,
        "the rewritten spec differs from {} (UPDATE_SNAPSHOTS=1 rewrites it):\n--- want\n{want}\n--- got\n{got}",
        path.display()
    );
}

fn wait_for_file(p: &Path, child: &mut std::process::Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !p.exists() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "ferry sandbox exited ({st}) before writing {}:\n{}",
                p.display(),
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no spec after 30 s:\n{}",
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until the guest file holds `want` (a file volume, rewritten in
/// place).
fn wait_file(guest: &Path, want: &[u8], what: &str, logs: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if fs::read(guest).is_ok_and(|d| d == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: guest {} never held {:?}; has {:?}\n{}",
            guest.display(),
            String::from_utf8_lossy(want),
            fs::read(guest).map(|d| String::from_utf8_lossy(&d).into_owned()),
            logs()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn sandbox_rewrites_a_realistic_pod_and_keeps_it_current_through_50_updates() {
    let mut f = Fixture::new();
    let agent = Agent::start(f.t.path(), &f.t.path().join("guest"), &[]);
    fs::create_dir_all(f.spec_out().parent().unwrap()).unwrap();
    let log = f.t.path().join("sandbox.log");
    let spec_out = f.spec_out();
    let mut child = f
        .sandbox_cmd(
            &agent.addr(),
            &[
                "--spec-out",
                spec_out.to_str().unwrap(),
                "--watch",
                "--collect-termination-log",
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let logs = || {
        format!(
            "agent:\n{}\nsandbox:\n{}",
            agent.log_text(),
            fs::read_to_string(&log).unwrap_or_default()
        )
    };
    wait_for_file(&spec_out, &mut child, &log);

    // The spec: a snapshot with the temporary directory normalised.
    let text = fs::read_to_string(&spec_out).unwrap();
    check_snapshot("sandbox_spec.json", &normalise(&text, f.t.path()));
    let spec: serde_json::Value = serde_json::from_str(&text).unwrap();
    let original: serde_json::Value =
        serde_json::from_slice(&fs::read(f.bundle.join("config.json")).unwrap()).unwrap();
    for key in [
        "process",
        "root",
        "hostname",
        "annotations",
        "linux",
        "ociVersion",
    ] {
        assert_eq!(spec[key], original[key], "{key} changed");
    }
    let source = |dst: &str| -> String {
        spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == dst)
            .unwrap_or_else(|| panic!("no mount at {dst}"))["source"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // The deliberate leaves are explained.
    let text_log = fs::read_to_string(&log).unwrap();
    for why in ["emptyDir", "hostPath", "device"] {
        assert!(
            text_log.contains(why),
            "no message about {why}:\n{text_log}"
        );
    }

    // Every carried mount is in the guest, where the spec says.
    let trees = [
        (
            "/var/run/secrets/kubernetes.io/serviceaccount",
            f.sa_w.dir().to_path_buf(),
        ),
        ("/etc/db", f.secret_w.dir().to_path_buf()),
        ("/etc/app", f.config_w.dir().to_path_buf()),
    ];
    let files = [
        ("/etc/hosts", f.etc_hosts.clone()),
        ("/etc/hostname", f.hostname.clone()),
        ("/etc/resolv.conf", f.resolv.clone()),
        ("/etc/nginx/nginx.conf", f.nginx_w.dir().join("nginx.conf")),
        ("/dev/termination-log", f.termination_log.clone()),
    ];
    let check_all = |what: &str| {
        for (dst, node) in &trees {
            let g = in_agent(&agent, &source(dst));
            wait_mirrored(node, &g, &format!("{what}: {dst}"), &logs);
            assert_clean_layout(&g);
        }
        for (dst, node) in &files {
            let g = in_agent(&agent, &source(dst));
            wait_file(
                &g,
                &fs::read(node).unwrap(),
                &format!("{what}: {dst}"),
                &logs,
            );
            let (gm, nm) = (fs::metadata(&g).unwrap(), fs::metadata(node).unwrap());
            assert_eq!(
                (gm.mode() & 0o7777, gm.uid(), gm.gid()),
                (nm.mode() & 0o7777, nm.uid(), nm.gid()),
                "{what}: {dst} mode and owner"
            );
        }
    };
    check_all("first sync");
    let guest_sa = in_agent(
        &agent,
        &source("/var/run/secrets/kubernetes.io/serviceaccount"),
    );
    let guest_hosts = in_agent(&agent, &source("/etc/hosts"));
    let guest_nginx = in_agent(&agent, &source("/etc/nginx/nginx.conf"));
    let inode = |p: &Path| fs::metadata(p).unwrap().ino();
    let (hosts_ino, nginx_ino) = (inode(&guest_hosts), inode(&guest_nginx));

    // 50 kubelet updates: a token rotation every other one, and the Secret,
    // the ConfigMap (values, an item added and removed), the subPath's
    // ConfigMap and etc-hosts in turn.
    let mut rotations = 0;
    for i in 0..50u32 {
        if i % 2 == 0 {
            f.sa.rotate();
            assert!(f.sa_w.write(&f.sa.payload()).unwrap());
            rotations += 1;
        }
        match i % 4 {
            0 => {
                f.secret
                    .insert("password".into(), format!("s3cr3t-{i}").into_bytes());
                assert!(f.secret_w.write(&f.secret_payload()).unwrap());
            }
            1 => {
                f.config.insert(
                    "app.yaml".into(),
                    format!("listen: :{}\n", 8000 + i).into_bytes(),
                );
                // The top-level item features.json goes away and comes back.
                let with_features = i % 8 != 1;
                assert!(f.config_w.write(&f.config_payload(with_features)).unwrap());
            }
            2 => {
                let p = key_payload(
                    "configmap",
                    &keyed([("nginx.conf", format!("worker_processes {i};\n").as_bytes())]),
                    &[],
                    None,
                    false,
                )
                .unwrap();
                assert!(f.nginx_w.write(&p).unwrap());
            }
            _ => {
                f.pod
                    .write_etc_hosts(&etc_hosts(&format!("10.244.1.{i}"), "checkout-5d8f"))
                    .unwrap();
            }
        }
        check_all(&format!("update {i}"));
    }
    assert_eq!(rotations, 25);
    assert_eq!(
        fs::read(guest_sa.join("token")).unwrap(),
        f.sa.token(),
        "the last token"
    );
    assert_eq!(
        (inode(&guest_hosts), inode(&guest_nginx)),
        (hosts_ino, nginx_ino),
        "single-file mounts are updated in place (their bind mounts hold the inode)"
    );

    // The container writes its termination message in the guest and stops;
    // the sandbox, stopped with SIGTERM, copies it back.
    let guest_log = in_agent(&agent, &source("/dev/termination-log"));
    fs::write(&guest_log, b"panic: card declined\n").unwrap();
    terminate(&child);
    let st = child.wait().unwrap();
    assert!(st.success(), "ferry sandbox exit: {st}\n{}", logs());
    assert_eq!(
        fs::read(&f.termination_log).unwrap(),
        b"panic: card declined\n",
        "{}",
        logs()
    );
}

fn run_sandbox(f: &Fixture, addr: &str, extra: &[&str]) -> Output {
    f.sandbox_cmd(addr, extra).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs a one-shot sandbox that must fail before it writes anything, and
/// returns its stderr.
fn must_fail(f: &Fixture) -> String {
    let out_dir = f.t.path().join("out");
    fs::create_dir_all(&out_dir).unwrap();
    let spec_out = f.spec_out();
    let addr = format!("unix://{}", f.t.path().join("no-agent.sock").display());
    let o = run_sandbox(
        f,
        &addr,
        &[
            "--spec-out",
            spec_out.to_str().unwrap(),
            "--connect-wait",
            "0",
        ],
    );
    assert!(!o.status.success(), "ferry sandbox succeeded on bad input");
    assert!(!spec_out.exists(), "a spec was written on failure");
    assert_eq!(
        fs::read_dir(&out_dir).unwrap().count(),
        0,
        "temporary files left"
    );
    stderr(&o)
}

fn edit_spec(f: &Fixture, edit: impl FnOnce(&mut serde_json::Value)) {
    let p = f.bundle.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    edit(&mut v);
    fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
}

fn add_bind(f: &Fixture, dst: &str, src: &Path) {
    edit_spec(f, |v| {
        v["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": dst, "type": "bind", "source": src, "options": ["rbind", "ro"]
        }));
    });
}

#[test]
fn bad_bundles_fail_precisely_and_write_nothing() {
    // Not JSON.
    let f = Fixture::new();
    fs::write(f.bundle.join("config.json"), b"{\"ociVersion\": \"1.1.0\",").unwrap();
    let e = must_fail(&f);
    assert!(e.contains("config.json is not JSON"), "{e}");

    // JSON, not an OCI spec.
    for (doc, why) in [
        (&b"[1, 2]"[..], "not a JSON object"),
        (
            b"{\"ociVersion\": \"1.1.0\", \"mounts\": \"all\"}",
            "mounts",
        ),
        (b"{\"mounts\": []}", "ociVersion"),
    ] {
        fs::write(f.bundle.join("config.json"), doc).unwrap();
        let e = must_fail(&f);
        assert!(
            e.contains("is not an OCI runtime spec") && e.contains(why),
            "{why}: {e}"
        );
    }

    // No bundle.
    fs::remove_file(f.bundle.join("config.json")).unwrap();
    let e = must_fail(&f);
    assert!(e.contains("cannot read config.json"), "{e}");
}

#[test]
fn bad_mounts_fail_precisely_and_write_nothing() {
    // A source that is missing.
    let f = Fixture::new();
    let missing = f.pod.volume_dir(ApiVolume::Secret, "gone");
    add_bind(&f, "/etc/gone", &missing);
    let e = must_fail(&f);
    assert!(
        e.contains("mount /etc/gone") && e.contains("does not exist"),
        "{e}"
    );

    // A volume that resolves outside the kubelet root through a symlink.
    let f = Fixture::new();
    let evil = f.pod.volume_dir(ApiVolume::Secret, "evil");
    fs::create_dir_all(evil.parent().unwrap()).unwrap();
    symlink("/etc", &evil).unwrap();
    add_bind(&f, "/etc/evil", &evil);
    let e = must_fail(&f);
    assert!(
        e.contains("resolves to /etc, outside the kubelet root"),
        "{e}"
    );

    // A subPath whose key links outside.
    let f = Fixture::new();
    let key = f
        .pod
        .volume_dir(ApiVolume::ConfigMap, "app-config")
        .join("shadow");
    symlink("/etc/shadow", &key).unwrap();
    add_bind(&f, "/etc/app.conf", &key);
    let e = must_fail(&f);
    assert!(e.contains("outside the kubelet root"), "{e}");

    // A socket as a subPath.
    let f = Fixture::new();
    let sock = f
        .pod
        .volume_dir(ApiVolume::ConfigMap, "app-config")
        .join("s.sock");
    // Bound at a short path (sun_path is 108 bytes), then moved in place.
    let short = f.t.path().join("s.sock");
    let _l = std::os::unix::net::UnixListener::bind(&short).unwrap();
    fs::rename(&short, &sock).unwrap();
    add_bind(&f, "/run/app.sock", &sock);
    let e = must_fail(&f);
    assert!(e.contains("is a socket, expected a regular file"), "{e}");

    // A device as the termination log.
    let f = Fixture::new();
    fs::remove_file(&f.termination_log).unwrap();
    let st = Command::new("mknod")
        .arg(&f.termination_log)
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(st.success(), "mknod (needs root)");
    let e = must_fail(&f);
    assert!(
        e.contains("mount /dev/termination-log") && e.contains("is a character device"),
        "{e}"
    );

    // A file where a volume directory belongs.
    let f = Fixture::new();
    let file_vol = f.pod.volume_dir(ApiVolume::DownwardApi, "podinfo");
    fs::create_dir_all(file_vol.parent().unwrap()).unwrap();
    fs::write(&file_vol, b"x").unwrap();
    add_bind(&f, "/etc/podinfo", &file_vol);
    let e = must_fail(&f);
    assert!(e.contains("is a regular file, expected a directory"), "{e}");

    // Two mounts of one volume.
    let f = Fixture::new();
    add_bind(&f, "/etc/db-again", f.secret_w.dir());
    let e = must_fail(&f);
    assert!(
        e.contains("mounts /etc/db and /etc/db-again both carry secret-db-credentials"),
        "{e}"
    );

    // A kubelet root that does not exist.
    let f = Fixture::new();
    let o = Command::new(FERRY)
        .arg("sandbox")
        .arg("--bundle")
        .arg(&f.bundle)
        .args(["--connect", "unix:///nonexistent.sock"])
        .arg("--kubelet-root")
        .arg(f.t.path().join("no-kubelet"))
        .arg("--spec-out")
        .arg(f.spec_out())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no-kubelet"), "{}", stderr(&o));
    assert!(!f.spec_out().exists());
}

#[test]
fn a_failed_first_sync_writes_no_spec() {
    let f = Fixture::new();
    let e = must_fail(&f);
    assert!(e.contains("no-agent.sock"), "{e}");
}

#[test]
fn one_shot_sandbox_then_termination_log_collection() {
    let f = Fixture::new();
    let agent = Agent::start(f.t.path(), &f.t.path().join("guest"), &[]);
    let spec_out = f.spec_out();
    fs::create_dir_all(spec_out.parent().unwrap()).unwrap();
    let o = run_sandbox(
        &f,
        &agent.addr(),
        &["--spec-out", spec_out.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let spec: serde_json::Value = serde_json::from_slice(&fs::read(&spec_out).unwrap()).unwrap();
    let log_src = spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/dev/termination-log")
        .unwrap()["source"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(log_src, "/run/ferry/files/termination-log-app");
    let guest_log = in_agent(&agent, &log_src);
    assert_eq!(fs::read(&guest_log).unwrap(), b"");

    // Over kubelet's cap: the last 4096 bytes are kept, as kubelet keeps
    // them on a node, and the cut is said.
    let long: Vec<u8> = (0..4097u32).map(|i| b'A' + (i % 26) as u8).collect();
    fs::write(&guest_log, &long).unwrap();
    let o = run_sandbox(&f, &agent.addr(), &["--collect-termination-log"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "termination log of container app is 4097 bytes, over kubelet's cap of 4096 bytes: kept its last 4096 bytes"
        ),
        "{}",
        stderr(&o)
    );
    assert_eq!(fs::read(&f.termination_log).unwrap(), &long[1..]);

    // Exactly the cap: copied whole.
    let msg: Vec<u8> = (0..4096u32).map(|i| b'a' + (i % 26) as u8).collect();
    fs::write(&guest_log, &msg).unwrap();
    let o = run_sandbox(&f, &agent.addr(), &["--collect-termination-log"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(&f.termination_log).unwrap(), msg);
    assert!(
        stderr(&o).contains("termination log collected"),
        "{}",
        stderr(&o)
    );

    // --collect-termination-log with --spec-out needs --watch.
    let o = run_sandbox(
        &f,
        &agent.addr(),
        &[
            "--collect-termination-log",
            "--spec-out",
            spec_out.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("needs --watch"), "{}", stderr(&o));
}

/// A subPath as kubelet really hands it to a runtime: a bind mount under
/// `volume-subpaths/` of the file in the volume's version (a hard link
/// stands in for the bind mount: the same inode). ferry finds the key by
/// its inode and carries it as a file volume that follows updates.
#[test]
fn a_subpath_kubelet_mounted_is_carried_as_its_volume_key() {
    let f = Fixture::new();
    let version = f.nginx_w.dir().join(f.nginx_w.current_version().unwrap());
    let sub = f.pod.dir().join("volume-subpaths/nginx-conf/app/0");
    fs::create_dir_all(sub.parent().unwrap()).unwrap();
    fs::hard_link(version.join("nginx.conf"), &sub).unwrap();
    edit_spec(&f, |v| {
        for m in v["mounts"].as_array_mut().unwrap() {
            if m["destination"] == "/etc/nginx/nginx.conf" {
                m["source"] = serde_json::json!(sub);
            }
        }
    });
    // A kubelet subPath of a directory is left, with the reason.
    let dir_sub = f.pod.dir().join("volume-subpaths/app-config/app/1");
    fs::create_dir_all(&dir_sub).unwrap();
    add_bind(&f, "/etc/app-conf", &dir_sub);
    let agent = Agent::start(f.t.path(), &f.t.path().join("guest"), &[]);
    let spec_out = f.spec_out();
    fs::create_dir_all(spec_out.parent().unwrap()).unwrap();
    let o = run_sandbox(
        &f,
        &agent.addr(),
        &["--spec-out", spec_out.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("a subPath of a directory"),
        "{}",
        stderr(&o)
    );
    let spec: serde_json::Value = serde_json::from_slice(&fs::read(&spec_out).unwrap()).unwrap();
    let m = spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/etc/nginx/nginx.conf")
        .unwrap();
    assert_eq!(
        m["source"],
        "/run/ferry/files/configmap-nginx-conf-nginx.conf"
    );
    assert_eq!(
        fs::read(in_agent(&agent, m["source"].as_str().unwrap())).unwrap(),
        b"worker_processes 1;\n"
    );
}
