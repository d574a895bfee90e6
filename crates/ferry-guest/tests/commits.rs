//! Successful syncs: the kubelet layout, incremental versions, copies from
//! the base, restart recovery, the reaper, paging, removal.
mod common;

use std::{fs, path::Path, thread, time::Duration};

use common::*;
use ferry_guest::{Policy, Store, StoreLimits};
use ferry_proto::{convert, ferry as pb, wire::Code};
use ferry_tree::manifest::empty_digest;

#[test]
fn first_commit_creates_the_kubelet_layout_exactly() {
    let fx = Fx::new(StoreLimits::default());
    let entries = vec![
        dir("conf", 0o2750),
        dir("conf/sub", 0o700),
        file("conf/sub/deep", 0o600, b"deep"),
        file("token", 0o644, b"eyJhbGciOi"),
        file("run", 0o4755, b"#!/bin/sh"),
        symlink("alias", "token"),
    ];
    let m = manifest(&entries);
    let b = fx.begin("kube-api-access-x7k2p").unwrap();
    assert_eq!(b.version.rsplit_once('.').unwrap().1, "1");
    assert_eq!(b.version.len(), "2026_01_01_00_00_00.1".len());
    let p = fx.put(b.txn_id, &[], entries).unwrap();
    assert_eq!(p.pending_files, 0);
    let c = fx.commit(b.txn_id, &m.digest()).unwrap();
    let s = c.volume.unwrap();
    assert_eq!(s.generation, 1);
    assert_eq!(s.version, b.version);
    assert_eq!(s.digest, m.digest().to_vec());
    assert_eq!((s.files, s.bytes, s.entries), (3, 23, 6));
    assert!(s.last_commit_unix_ms > 0);
    assert_eq!(c.reused_files, 0);

    let v = fx.vol("kube-api-access-x7k2p");
    let link = |n: &str| fs::read_link(v.join(n)).unwrap();
    assert_eq!(link("..data"), Path::new(&format!("..{}", b.version)));
    for top in ["alias", "conf", "run", "token"] {
        assert_eq!(link(top), Path::new("..data").join(top));
    }
    let ver = v.join(format!("..{}", b.version));
    assert_eq!(mode_of(&v), 0o755);
    assert_eq!(mode_of(&ver), 0o755);
    assert_eq!(mode_of(&ver.join("conf")), 0o2750);
    assert_eq!(mode_of(&ver.join("conf/sub")), 0o700);
    assert_eq!(mode_of(&ver.join("conf/sub/deep")), 0o600);
    assert_eq!(mode_of(&ver.join("token")), 0o644);
    // setuid stripped on disk, the logical manifest keeps it (digests agree).
    assert_eq!(mode_of(&ver.join("run")), 0o755);
    assert_eq!(
        fx.s()
            .get_manifest(&{
                let mut r = pb::GetManifestRequest::new();
                r.volume = "kube-api-access-x7k2p".into();
                r
            })
            .unwrap()
            .entries
            .iter()
            .find(|e| e.path == "run")
            .unwrap()
            .mode,
        0o4755
    );
    assert_eq!(
        fs::read_link(ver.join("alias")).unwrap(),
        Path::new("token")
    );
    assert_eq!(fs::read(v.join("conf/sub/deep")).unwrap(), b"deep");
    assert_eq!(fs::read(v.join("alias")).unwrap(), b"eyJhbGciOi");
    assert!(
        fx.root
            .join("state/kube-api-access-x7k2p.manifest")
            .is_file()
    );
    assert_eq!(mode_of(&fx.root.join("volumes")), 0o700);
    assert_eq!(mode_of(&fx.root.join("state")), 0o700);
    fx.assert_sentinel();
}

#[test]
fn second_commit_changes_removes_and_adds() {
    let fx = Fx::new(StoreLimits::default());
    let (v1_version, _) = fx.publish("vol", v1());
    let old_nested = ino_of(&fx.vol("vol").join("..data/d/nested"));
    let big: Vec<u8> = (0..3 * (1 << 20) / 2).map(|i| (i % 251) as u8).collect();
    let b = fx.begin("vol").unwrap();
    assert!(b.version.ends_with(".2"));
    let upserts = vec![
        file("k1", 0o644, b"value one, changed"),
        dir("new", 0o755),
        dir("new/deeper", 0o755),
        chunked("new/deeper/big", 0o640, &big),
        chunked("new/empty", 0o644, b""),
    ];
    let mut want = manifest(&v1());
    ferry_tree::diff::apply_remove(&mut want, "k2").unwrap();
    for e in &upserts {
        want.insert(convert::entry_from_pb(e).unwrap());
    }
    let p = fx.put(b.txn_id, &["k2"], upserts).unwrap();
    assert_eq!(
        p.pending_files, 1,
        "the empty chunked file is complete at once"
    );
    // The published version is untouched while the transaction runs.
    assert_eq!(fs::read(fx.vol("vol").join("k1")).unwrap(), b"value one");
    assert_eq!(
        fx.chunk(b.txn_id, "new/deeper/big", 0, &big[..1 << 20])
            .unwrap(),
        1 << 20
    );
    assert_eq!(
        fx.chunk(b.txn_id, "new/deeper/big", 1 << 20, &big[1 << 20..])
            .unwrap(),
        big.len() as u64
    );
    let c = fx.commit(b.txn_id, &want.digest()).unwrap();
    assert_eq!(c.reused_files, 1, "d/nested was cloned and left alone");
    assert_eq!(c.volume.unwrap().generation, 2);
    fx.assert_intact("vol", &want);
    let v = fx.vol("vol");
    assert!(
        !v.join(format!("..{v1_version}")).exists(),
        "old version removed"
    );
    assert!(
        fs::symlink_metadata(v.join("k2")).is_err(),
        "k2's visible link is gone"
    );
    assert_eq!(
        fs::read_link(v.join("new")).unwrap(),
        Path::new("..data/new")
    );
    assert_eq!(fs::read(v.join("new/deeper/big")).unwrap(), big);
    assert_eq!(mode_of(&v.join("..data/new/deeper/big")), 0o640);
    assert_ne!(
        ino_of(&v.join("..data/d/nested")),
        old_nested,
        "every version has new inodes"
    );
    assert_eq!(fs::read(v.join("d/nested")).unwrap(), b"nested content");
}

#[test]
fn source_base_copies_inside_the_guest() {
    let fx = Fx::new(StoreLimits::default());
    fx.publish("vol", v1());
    let b = fx.begin("vol").unwrap();
    let upserts = vec![
        from_base("copy-of-k1", 0o600, b"value one"),
        // A metadata change of an unchanged file, as the host sends it.
        from_base("k2", 0o644, b"two"),
    ];
    let mut want = manifest(&v1());
    for e in &upserts {
        want.insert(convert::entry_from_pb(e).unwrap());
    }
    fx.put(b.txn_id, &[], upserts).unwrap();
    let c = fx.commit(b.txn_id, &want.digest()).unwrap();
    assert_eq!(c.reused_files, 4, "two copies, plus d/nested and k1 cloned");
    fx.assert_intact("vol", &want);
    let v = fx.vol("vol");
    assert_eq!(fs::read(v.join("copy-of-k1")).unwrap(), b"value one");
    assert_eq!(mode_of(&v.join("..data/copy-of-k1")), 0o600);
    assert_eq!(mode_of(&v.join("..data/k2")), 0o644);
    assert_ne!(
        ino_of(&v.join("..data/copy-of-k1")),
        ino_of(&v.join("..data/k1"))
    );
}

#[test]
fn restart_restores_state_and_cleans_up() {
    let mut fx = Fx::new(StoreLimits::default());
    let (version, m) = fx.publish("vol", v1());
    let before = fx.summary("vol");
    // A sync in flight when the agent dies, and other debris of a crash.
    let b = fx.begin("vol").unwrap();
    fx.put(b.txn_id, &[], vec![file("half", 0o644, b"h")])
        .unwrap();
    let half = fx.begin("half-born").unwrap();
    let v = fx.vol("vol");
    std::os::unix::fs::symlink(format!("..{version}"), v.join("..data_tmp")).unwrap();
    fs::create_dir(v.join("..2020_01_01_00_00_00.9")).unwrap();
    fs::write(fx.root.join("state/gone.manifest"), b"x").unwrap();
    fs::remove_file(v.join("k1")).unwrap();
    fx.reopen();
    assert!(
        !v.join(format!("..{}", b.version)).exists(),
        "orphaned staging removed"
    );
    assert!(
        !fx.vol("half-born").exists(),
        "a volume never committed is removed"
    );
    assert!(!fx.root.join("state/gone.manifest").exists());
    let after = fx.summary("vol");
    assert_eq!(after.digest, before.digest);
    assert_eq!(after.generation, 1);
    assert_eq!(after.version, version);
    assert_eq!(after.last_commit_unix_ms, before.last_commit_unix_ms);
    fx.assert_intact("vol", &m);
    let _ = half;
    // The old transaction ids mean nothing to the new process.
    assert_eq!(
        fx.put(b.txn_id, &[], vec![]).unwrap_err().code(),
        Code::NOT_FOUND
    );
    // Without a state file the volume is rescanned; owners and modes here
    // are what the host sent, so the digest still agrees.
    fs::remove_file(fx.root.join("state/vol.manifest")).unwrap();
    fx.reopen();
    assert_eq!(fx.summary("vol").digest, before.digest);
    assert_eq!(fx.summary("vol").generation, 1);
    // And it keeps syncing from there.
    let b = fx.begin("vol").unwrap();
    assert!(b.version.ends_with(".2"));
    let mut m2 = m.clone();
    m2.insert(convert::entry_from_pb(&file("k3", 0o644, b"3")).unwrap());
    fx.put(b.txn_id, &[], vec![file("k3", 0o644, b"3")])
        .unwrap();
    fx.commit(b.txn_id, &m2.digest()).unwrap();
    fx.assert_intact("vol", &m2);
}

#[test]
fn reaper_aborts_idle_transactions() {
    let fx = Fx::new(StoreLimits::default());
    let (_, m) = fx.publish("vol", v1());
    let b = fx.begin("vol").unwrap();
    fx.put(b.txn_id, &[], vec![file("x", 0o644, b"x")]).unwrap();
    assert!(fx.s().reap_idle(Duration::from_secs(60)).is_empty());
    thread::sleep(Duration::from_millis(30));
    let reaped = fx.s().reap_idle(Duration::from_millis(10));
    assert_eq!(reaped.len(), 1);
    assert_eq!(
        (reaped[0].volume.as_str(), reaped[0].txn),
        ("vol", b.txn_id)
    );
    assert!(reaped[0].idle >= Duration::from_millis(10));
    assert_eq!(
        fx.put(b.txn_id, &[], vec![]).unwrap_err().code(),
        Code::NOT_FOUND
    );
    fx.assert_intact("vol", &m);
}

#[test]
fn an_idle_transaction_of_another_client_is_taken_over_after_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(
        tmp.path().join("s"),
        StoreLimits::default(),
        Policy::default(),
    )
    .unwrap()
    .with_txn_timeout(Duration::from_millis(20));
    let mut r = pb::BeginRequest::new();
    r.volume = "vol".into();
    r.client_id = 1;
    let first = store.begin(&r).unwrap();
    r.client_id = 2;
    assert_eq!(store.begin(&r).unwrap_err().code(), Code::ABORTED);
    thread::sleep(Duration::from_millis(40));
    let second = store.begin(&r).unwrap();
    assert_ne!(first.txn_id, second.txn_id);
    assert_eq!(store.status().open_transactions, 1);
}

#[test]
fn get_manifest_pages_and_reports_missing_volumes_as_empty() {
    let fx = Fx::new(StoreLimits::default());
    let mut r = pb::GetManifestRequest::new();
    r.volume = "nothing-here".into();
    let empty = fx.s().get_manifest(&r).unwrap();
    let s = empty.volume.unwrap();
    assert_eq!((s.generation, s.digest), (0, empty_digest().to_vec()));
    assert!(empty.entries.is_empty() && !empty.more);
    r.volume = "No".into();
    assert_eq!(
        fx.s().get_manifest(&r).unwrap_err().code(),
        Code::INVALID_ARGUMENT
    );

    // Enough entries for more than one 1 MiB page.
    let long = "x".repeat(200);
    let mut entries = vec![dir("d", 0o755)];
    for i in 0..5000 {
        entries.push(file(&format!("d/{long}{i:05}"), 0o644, b""));
    }
    let (_, m) = fx.publish("many", entries);
    r.volume = "many".into();
    let mut got = Vec::new();
    let mut pages = 0;
    loop {
        let page = fx.s().get_manifest(&r).unwrap();
        pages += 1;
        got.extend(
            page.entries
                .iter()
                .map(|e| convert::entry_from_pb(e).unwrap()),
        );
        if !page.more {
            break;
        }
        r.start_after = got.last().unwrap().path.clone();
    }
    assert!(pages >= 2, "{pages} pages");
    assert_eq!(got.into_iter().collect::<ferry_tree::Manifest>(), m);
}

#[test]
fn remove_volume_removes_everything_and_hello_reports_volumes() {
    let fx = Fx::new(StoreLimits::default());
    fx.publish("a", v1());
    fx.publish("b", vec![file("k", 0o644, b"1")]);
    let mut h = pb::HelloRequest::new();
    h.protocol_version = ferry_proto::PROTOCOL_VERSION;
    h.client = "test".into();
    let hello = fx.s().hello(&h).unwrap();
    let names: Vec<_> = hello.volumes.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(!hello.volumes[0].version.starts_with(".."));
    assert_eq!(hello.limits.unwrap().max_volumes, 256);
    let st = fx.s().status();
    assert_eq!((st.store_bytes, st.store_files), (27, 6));

    let open = fx.begin("a").unwrap();
    let mut r = pb::RemoveVolumeRequest::new();
    r.volume = "a".into();
    assert!(fx.s().remove_volume(&r).unwrap().existed);
    assert!(!fx.vol("a").exists());
    assert!(!fx.root.join("state/a.manifest").exists());
    assert_eq!(
        fx.put(open.txn_id, &[], vec![]).unwrap_err().code(),
        Code::NOT_FOUND
    );
    assert!(!fx.s().remove_volume(&r).unwrap().existed);
    assert_eq!(fx.summary("a").generation, 0);
    assert_eq!(fx.s().status().volumes.len(), 1);
    // It can come back, from generation 1.
    let (v, _) = fx.publish("a", vec![file("k", 0o644, b"2")]);
    assert!(v.ends_with(".1"));
    fx.assert_sentinel();
}

#[test]
fn volumes_sync_concurrently() {
    let fx = Fx::new(StoreLimits::default());
    thread::scope(|s| {
        for i in 0..4 {
            let fx = &fx;
            s.spawn(move || {
                let name = format!("vol{i}");
                for round in 0..5 {
                    let entries = vec![file("k", 0o644, format!("{i}-{round}").as_bytes())];
                    let m = manifest(&entries);
                    let b = fx.begin(&name).unwrap();
                    fx.put(b.txn_id, if round == 0 { &[] } else { &["k"] }, entries)
                        .unwrap();
                    fx.commit(b.txn_id, &m.digest()).unwrap();
                    fx.assert_intact(&name, &m);
                }
            });
        }
    });
    assert_eq!(fx.s().status().volumes.len(), 4);
}

#[test]
fn owners_are_applied_when_privileged_and_the_logical_manifest_survives_a_restart() {
    use std::os::unix::fs::MetadataExt;
    let mut fx = Fx::new(StoreLimits::default());
    let mut f = file("owned", 0o640, b"secret");
    (f.uid, f.gid) = (12345, 23456);
    let mut d = dir("grp", 0o2775);
    (d.uid, d.gid) = (0, 23456);
    let entries = vec![d, f];
    let m = manifest(&entries);
    let b = fx.begin("vol").unwrap();
    fx.put(b.txn_id, &[], entries).unwrap();
    fx.commit(b.txn_id, &m.digest()).unwrap();
    let md = fs::metadata(fx.vol("vol").join("..data/owned")).unwrap();
    if rustix::process::geteuid().is_root() {
        assert_eq!((md.uid(), md.gid()), (12345, 23456));
    } else {
        // Unprivileged: ownership is not applied, and that is not an error.
        assert_eq!(md.uid(), uid());
    }
    assert_eq!(fx.digest("vol"), m.digest().to_vec());
    fx.reopen();
    assert_eq!(fx.digest("vol"), m.digest().to_vec());
}
