//! Bind mounts for real: a real ferry-agent in a private mount namespace
//! (`unshare -m`, so nothing leaks to the test's namespace) mounts volumes
//! into a container rootfs, over the Mount RPC and with `ferry-agent mount`
//! (run in the agent's namespace with `nsenter`). Results are read through
//! /proc/<pid>/root and /proc/<pid>/mountinfo. Needs root; skips with the
//! reason otherwise.
mod common;

use std::{fs, io::Write, os::unix::fs::symlink, path::Path, process::Command};

use common::*;
use ferry_proto::{
    ferry as pb,
    wire::{Code, code_of},
};

fn sync(addr: &str, args: &[String]) {
    let o = Command::new(FERRY)
        .args(["sync", "--connect", addr])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn req(volume: &str, path: &str, rootfs: &Path, target: &str, rw: bool) -> pb::MountRequest {
    let mut r = pb::MountRequest::new();
    r.volume = volume.into();
    r.path = path.into();
    r.rootfs = rootfs.display().to_string();
    r.target = target.into();
    r.read_write = rw;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_are_bind_mounted_confined_to_the_rootfs() {
    if let Err(why) = private_mount_ns_available() {
        eprintln!("skipping the bind mount test: {why}");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let base = fs::canonicalize(t.path()).unwrap();
    let store = base.join("store");
    let rootfs = base.join("rootfs");
    let outside = base.join("outside");
    for d in [&store, &rootfs.join("etc"), &rootfs.join("run"), &outside] {
        fs::create_dir_all(d).unwrap();
    }
    symlink("/run", rootfs.join("varrun")).unwrap();
    symlink(&outside, rootfs.join("evil")).unwrap();
    let agent = NsAgent::start(&base, &store, &[]);
    let logs = || fs::read_to_string(&agent.log).unwrap_or_default();

    let hosts = base.join("etc-hosts");
    fs::write(&hosts, b"127.0.0.1 localhost\n").unwrap();
    let tl = base.join("termination-log");
    fs::write(&tl, b"").unwrap();
    let cm = base.join("cm");
    fs::create_dir(&cm).unwrap();
    fs::write(cm.join("key"), b"value").unwrap();
    let specs = [
        "--file".to_string(),
        format!("hosts={}", hosts.display()),
        "--file".into(),
        format!("tl={}", tl.display()),
        "--volume".into(),
        format!("cm={}", cm.display()),
    ];
    sync(&agent.addr(), &specs);
    let c = client(&agent.sock).await;

    // A file volume, read-only, on a mountpoint that is created.
    let r = c
        .mount(ctx(), &req("hosts", "", &rootfs, "/etc/hosts", false))
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", logs()));
    let target = rootfs.join("etc/hosts");
    assert_eq!(r.target, target.display().to_string());
    assert!(r.read_only && r.created);
    let opts = agent
        .mount_at(&target)
        .unwrap_or_else(|| panic!("no mount:\n{}", agent.mountinfo()));
    for o in ["ro", "nosuid", "nodev"] {
        assert!(opts.split(',').any(|x| x == o), "{o} missing: {opts}");
    }
    assert_eq!(
        fs::read(agent.inside(&target)).unwrap(),
        b"127.0.0.1 localhost\n"
    );
    let w = fs::OpenOptions::new()
        .write(true)
        .open(agent.inside(&target));
    assert_eq!(
        w.unwrap_err().raw_os_error(),
        Some(libc_erofs()),
        "read-only"
    );
    // Private to the agent: here the mountpoint is an empty file.
    assert_eq!(fs::read(&target).unwrap(), b"");
    // An update lands in place, so the mount sees it.
    fs::write(&hosts, b"127.0.0.1 localhost\n10.1.2.3 pod\n").unwrap();
    sync(&agent.addr(), &specs);
    assert_eq!(
        fs::read(agent.inside(&target)).unwrap(),
        b"127.0.0.1 localhost\n10.1.2.3 pod\n"
    );

    // A tree volume through the image's absolute /varrun -> /run link: it
    // lands in <rootfs>/run, directories created.
    let r = c
        .mount(ctx(), &req("cm", "", &rootfs, "/varrun/secrets/cm", false))
        .await
        .unwrap();
    let cm_target = rootfs.join("run/secrets/cm");
    assert_eq!(r.target, cm_target.display().to_string());
    assert_eq!(
        fs::read(agent.inside(&cm_target.join("key"))).unwrap(),
        b"value"
    );

    // The termination log, read-write: what the container writes comes back.
    c.mount(ctx(), &req("tl", "", &rootfs, "/dev/termination-log", true))
        .await
        .unwrap();
    let tl_target = rootfs.join("dev/termination-log");
    let opts = agent.mount_at(&tl_target).unwrap();
    assert!(opts.split(',').any(|x| x == "rw"), "{opts}");
    fs::OpenOptions::new()
        .write(true)
        .open(agent.inside(&tl_target))
        .unwrap()
        .write_all(b"oom at startup")
        .unwrap();
    let node = base.join("node-termination-log");
    let o = Command::new(FERRY)
        .args([
            "termination-log",
            "--connect",
            &agent.addr(),
            "--volume",
            "tl",
            "--out",
        ])
        .arg(&node)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fs::read(&node).unwrap(), b"oom at startup");

    // `ferry-agent mount` in the agent's namespace: one key (a subPath).
    let o = Command::new("nsenter")
        .args([
            "-t",
            &agent.pid().to_string(),
            "-m",
            AGENT,
            "mount",
            "--root",
        ])
        .arg(&store)
        .args(["--volume", "cm", "--path", "key", "--rootfs"])
        .arg(&rootfs)
        .args(["--target", "/app/key.conf"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let key_target = rootfs.join("app/key.conf");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("-> {} (ro)", key_target.display()))
    );
    assert!(agent.mount_at(&key_target).unwrap().starts_with("ro"));
    assert_eq!(fs::read(agent.inside(&key_target)).unwrap(), b"value");

    // Refusals: a precise error, and nothing mounted or created.
    let before = agent.mountinfo();
    let etc_before: Vec<_> = fs::read_dir(rootfs.join("etc")).unwrap().collect();
    for (case, r, code, msg) in [
        (
            "dot-dot",
            req("hosts", "", &rootfs, "../../etc/passwd", false),
            Code::INVALID_ARGUMENT,
            "\"..\" is not allowed in a mount target",
        ),
        (
            "outside link",
            req("hosts", "", &rootfs, "/evil/hosts", false),
            Code::INVALID_ARGUMENT,
            "\"evil\" does not exist inside the rootfs",
        ),
        (
            "file over a directory",
            req("hosts", "", &rootfs, "/etc", false),
            Code::INVALID_ARGUMENT,
            "the mountpoint is a directory, the source a file",
        ),
        (
            "the guest's root",
            req("hosts", "", Path::new("/"), "/etc/hosts", false),
            Code::INVALID_ARGUMENT,
            "is the guest's own root",
        ),
        (
            "unknown volume",
            req("nope", "", &rootfs, "/x", false),
            Code::NOT_FOUND,
            "no volume \"nope\"",
        ),
        (
            "path in a file volume",
            req("hosts", "a", &rootfs, "/x", false),
            Code::INVALID_ARGUMENT,
            "is a file volume",
        ),
    ] {
        let e = c.mount(ctx(), &r).await.expect_err(case);
        assert_eq!(code_of(&e), Some(code), "{case}: {e:?}");
        let text = match &e {
            ttrpc::Error::RpcStatus(s) => s.message().to_string(),
            other => other.to_string(),
        };
        assert!(text.contains(msg), "{case}: {text}");
        assert_eq!(agent.mountinfo(), before, "{case}: something was mounted");
    }
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "created outside the rootfs"
    );
    assert_eq!(
        fs::read_dir(rootfs.join("etc")).unwrap().count(),
        etc_before.len()
    );
    assert!(!rootfs.join("x").exists());
    let o = Command::new("nsenter")
        .args([
            "-t",
            &agent.pid().to_string(),
            "-m",
            AGENT,
            "mount",
            "--root",
        ])
        .arg(&store)
        .args(["--volume", "cm", "--rootfs"])
        .arg(&rootfs)
        .args(["--target", "/a/../../../etc"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("\"..\" is not allowed")
            && err.contains("INVALID_ARGUMENT"),
        "{err}"
    );
    assert_eq!(agent.mountinfo(), before);
}

/// EROFS, without a libc dependency.
fn libc_erofs() -> i32 {
    rustix::io::Errno::ROFS.raw_os_error()
}
