//! `ferry sync` against a real `ferry-agent`, both as processes over a unix
//! socket: once and watching, plain trees and kubelet volumes.
mod common;

use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use common::*;
use ferry_host::kubelet::{AtomicWriter, FileProjection, Payload, payload};

fn write(p: &Path, data: &[u8], mode: u32) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn once_sync_mirrors_a_nested_tree_with_modes() {
    let t = tempfile::tempdir().unwrap();
    let agent = Agent::start(t.path(), &t.path().join("guest"), &[]);
    let src = t.path().join("src");
    write(&src.join("top"), b"top level", 0o644);
    write(&src.join("a/b/c/deep"), b"deep file", 0o600);
    write(&src.join("a/exec.sh"), b"#!/bin/sh\n", 0o755);
    write(&src.join("a/b/ro"), b"read only", 0o444);
    write(&src.join("empty"), b"", 0o640);
    fs::set_permissions(src.join("a/b"), fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("a/b/c/deep", src.join("link")).unwrap();
    let out = sync_once(&agent.addr(), &[("tree", &src)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let guest = agent.volume("tree");
    assert_eq!(manifest_of(&guest), manifest_of(&src));
    assert_clean_layout(&guest);
    // Read as a container would: through the visible links.
    assert_eq!(fs::read(guest.join("a/b/c/deep")).unwrap(), b"deep file");
    assert_eq!(fs::read(guest.join("link")).unwrap(), b"deep file");
    let mode = fs::metadata(guest.join("a/b/ro"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o444);
    // A second run finds nothing to do.
    let out = sync_once(&agent.addr(), &[("tree", &src)]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already up to date"));
}

#[test]
fn once_sync_fails_clearly_when_no_agent_listens() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let out = std::process::Command::new(FERRY)
        .args(["sync", "--connect-wait", "0", "--connect"])
        .arg(format!("unix://{}", t.path().join("nobody.sock").display()))
        .arg("--volume")
        .arg(format!("v={}", src.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nobody.sock"), "{err}");
}

/// 30 kubelet-style updates: keys changed, added, removed, nested. After each,
/// the guest holds exactly the node's version, seen through `..data` and the
/// visible links, and nothing stale.
#[test]
fn watch_mirrors_thirty_kubelet_updates() {
    let t = tempfile::tempdir().unwrap();
    let agent = Agent::start(t.path(), &t.path().join("guest"), &[]);
    let vol = t
        .path()
        .join("pods/uid/volumes/kubernetes.io~configmap/cfg");
    let w = AtomicWriter::new(&vol).unwrap();
    let mut p: Payload = payload([("a", &b"1"[..], 0o644), ("nested/x/y", b"y0", 0o600)]);
    w.write(&p).unwrap();
    let mut watch = Watch::start(t.path(), &agent.addr(), &[("cfg", &vol)]);
    let guest = agent.volume("cfg");
    let logs = || format!("{}\n{}", agent.log_text(), watch.log_text());
    wait_mirrored(&vol, &guest, "initial", &logs);
    for i in 0..30u32 {
        match i % 5 {
            0 => p.get_mut("a").unwrap().data = format!("a{i}").into_bytes(),
            1 => {
                p.insert(
                    format!("k{i}"),
                    FileProjection {
                        data: vec![b'k'; i as usize * 100],
                        mode: 0o640,
                    },
                );
            }
            2 => {
                let victim = p.keys().find(|k| k.starts_with('k')).cloned();
                if let Some(v) = victim {
                    p.remove(&v);
                }
                p.insert(
                    format!("nested/d{i}/f"),
                    FileProjection {
                        data: b"n".to_vec(),
                        mode: 0o644,
                    },
                );
            }
            3 => {
                p.retain(|k, _| !k.starts_with("nested/d"));
                p.get_mut("nested/x/y").unwrap().mode = if i % 2 == 0 { 0o600 } else { 0o644 };
            }
            _ => {
                p.insert(
                    format!("top{i}"),
                    FileProjection {
                        data: vec![i as u8; 70_000],
                        mode: 0o644,
                    },
                );
                p.get_mut("a").unwrap().data = Vec::new();
            }
        }
        assert!(w.write(&p).unwrap(), "update {i} changed nothing");
        wait_mirrored(&vol, &guest, &format!("update {i}"), &logs);
        assert_clean_layout(&guest);
        for (path, f) in &p {
            assert_eq!(
                fs::read(guest.join(path)).unwrap(),
                f.data,
                "update {i}: {path}"
            );
        }
    }
    // The guest shows a commit before ferry sync has read the reply and
    // logged it: let the last line land before stopping it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while watch.log_text().matches("committed").count() < 31 && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(watch.stop().success(), "ferry sync must exit 0 on SIGTERM");
    let log = watch.log_text();
    assert_eq!(
        log.matches("committed").count(),
        31,
        "one commit per kubelet version:\n{log}"
    );
}

#[test]
fn watch_follows_a_plain_directory_with_new_subdirectories() {
    let t = tempfile::tempdir().unwrap();
    let agent = Agent::start(t.path(), &t.path().join("guest"), &[]);
    let src = t.path().join("plain");
    write(&src.join("one"), b"1", 0o644);
    let _watch = Watch::start(t.path(), &agent.addr(), &[("plain", &src)]);
    let guest = agent.volume("plain");
    let logs = || agent.log_text();
    wait_mirrored(&src, &guest, "initial", &logs);
    write(&src.join("sub/dir/file"), b"new", 0o600);
    wait_mirrored(&src, &guest, "new subdir", &logs);
    write(
        &src.join("sub/dir/second"),
        b"written into a watched subdir",
        0o644,
    );
    wait_mirrored(&src, &guest, "write in subdir", &logs);
    fs::remove_dir_all(src.join("sub")).unwrap();
    fs::remove_file(src.join("one")).unwrap();
    wait_mirrored(&src, &guest, "removals", &logs);
    assert_clean_layout(&guest);
}

#[test]
fn status_reports_what_the_guest_holds() {
    let t = tempfile::tempdir().unwrap();
    let agent = Agent::start(t.path(), &t.path().join("guest"), &[]);
    let src = t.path().join("src");
    write(&src.join("k1"), b"one", 0o644);
    write(&src.join("d/k2"), b"two!", 0o600);
    assert!(
        sync_once(&agent.addr(), &[("vol-a", &src)])
            .status
            .success()
    );
    let out = std::process::Command::new(FERRY)
        .args(["status", "--json", "--connect", &agent.addr()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vol = &v["volumes"][0];
    assert_eq!(vol["name"], "vol-a");
    assert_eq!(vol["generation"], 1);
    assert_eq!(vol["files"], 2);
    assert_eq!(vol["bytes"], 7);
    assert_eq!(
        vol["digest"],
        ferry_tree::manifest::hex(&manifest_of(&src).digest())
    );
    assert_eq!(v["open_transactions"], 0);
    let table = std::process::Command::new(FERRY)
        .args(["status", "--connect", &agent.addr()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("vol-a") && table.contains("VERSION"),
        "{table}"
    );
}

#[test]
fn verify_rereads_the_guest_disk_and_finds_tampering() {
    let t = tempfile::tempdir().unwrap();
    let agent = Agent::start(t.path(), &t.path().join("guest"), &[]);
    let src = t.path().join("src");
    write(&src.join("a"), b"alpha", 0o644);
    assert!(sync_once(&agent.addr(), &[("v", &src)]).status.success());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let verify = || {
        rt.block_on(async {
            let c = ferry_host::client::AgentClient::connect(
                &agent.addr().parse().unwrap(),
                "test",
                9,
                std::time::Duration::from_secs(5),
            )
            .await
            .unwrap();
            c.verify("v").await.unwrap()
        })
    };
    let ok = verify();
    assert!(ok.matches, "{:?}", ok.problems);
    assert_eq!(ok.disk_digest, manifest_of(&src).digest().to_vec());
    // Something in the guest changes a file behind the agent's back.
    fs::write(agent.volume("v").join("..data/a"), b"tampered").unwrap();
    let bad = verify();
    assert!(!bad.matches);
    assert_eq!(bad.problems, ["~a"]);
}
