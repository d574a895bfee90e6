//! What software in the container is promised, checked with the real
//! `ferry-agent` and `ferry sync --watch` against the kubelet stand-in:
//!
//! - a reader never sees files of two versions at once (over 1000 updates);
//! - every update fires IN_MOVED_TO for `..data` in the guest volume, as on
//!   the node, and `..data` is never removed or created anew;
//! - every version has fresh inodes (unchanged files too), and the old
//!   version is deleted: a watch on a file gets IN_DELETE_SELF, as on the
//!   node;
//! - removed keys disappear, nothing stale remains, and modes, uid and gid
//!   (fsGroup, fsUser) match the node.
mod common;

use std::{
    collections::BTreeSet,
    ffi::OsString,
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::*;
use ferry_host::{
    bundle::ApiVolume,
    kubelet::{
        FileProjection, KeyToPath, Ownership, Payload, Pod, ServiceAccount, key_payload, keyed,
    },
};
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

const UID: &str = "0b6f2f7e-4a8c-4d8e-8f43-6f1a2b3c4d5e";

/// A pod on the stand-in node, an agent, and `ferry sync --watch` on one
/// volume of it, already mirrored once.
struct Rig {
    _t: tempfile::TempDir,
    agent: Agent,
    watch: Watch,
    node: PathBuf,
    guest: PathBuf,
}

impl Rig {
    fn start(
        plugin: ApiVolume,
        name: &str,
        owner: Ownership,
        first: &Payload,
    ) -> (Rig, ferry_host::kubelet::AtomicWriter) {
        let t = tempfile::tempdir().unwrap();
        let pod = Pod::new(t.path().join("kubelet"), UID).unwrap();
        let w = pod.writer(plugin, name, owner).unwrap();
        assert!(w.write(first).unwrap());
        let agent = Agent::start(t.path(), &t.path().join("guest"), &[]);
        let node = w.dir().to_path_buf();
        let watch = Watch::start(t.path(), &agent.addr(), &[("vol", &node)]);
        let guest = agent.volume("vol");
        let rig = Rig {
            _t: t,
            agent,
            watch,
            node,
            guest,
        };
        rig.wait_mirrored("initial sync");
        assert_clean_layout(&rig.guest);
        (rig, w)
    }

    fn logs(&self) -> String {
        format!(
            "agent:\n{}\nsync:\n{}",
            self.agent.log_text(),
            self.watch.log_text()
        )
    }

    fn wait_mirrored(&self, what: &str) {
        wait_mirrored(&self.node, &self.guest, what, &|| self.logs());
    }
}

/// Every event queued on `ino` now (non-blocking).
fn drain(ino: &mut Inotify) -> Vec<(WatchDescriptor, EventMask, Option<OsString>)> {
    let mut buf = vec![0u8; 64 << 10];
    let mut out = Vec::new();
    loop {
        match ino.read_events(&mut buf) {
            Ok(evs) => {
                let before = out.len();
                out.extend(evs.map(|e| (e.wd, e.mask, e.name.map(|n| n.to_os_string()))));
                if out.len() == before {
                    return out;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return out,
            Err(e) => panic!("inotify: {e}"),
        }
    }
}

/// The payload of version `n` of the torn-read volume: every file names its
/// version, and the key set changes with `n` too.
fn versioned(n: u32) -> Payload {
    let mut p = Payload::new();
    let mut keys = vec![
        "a".to_string(),
        "b".to_string(),
        "nested/c".to_string(),
        "nested/deeper/d".to_string(),
    ];
    keys.push(format!("extra-{}", n % 3));
    if n.is_multiple_of(2) {
        keys.push("even".into());
    }
    for k in keys {
        let data = format!("{n}:{k}:{}", "x".repeat((n as usize * 7) % 300)).into_bytes();
        p.insert(k, FileProjection { data, mode: 0o644 });
    }
    p
}

fn version_of(data: &[u8]) -> Option<u32> {
    std::str::from_utf8(data)
        .ok()?
        .split(':')
        .next()?
        .parse()
        .ok()
}

/// Lists every file under `dir` (relative paths).
fn files_under(dir: &Path, rel: &str, out: &mut Vec<String>) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().into_string().unwrap();
        let r = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if e.file_type()?.is_dir() {
            files_under(&e.path(), &r, out)?;
        } else {
            out.push(r);
        }
    }
    Ok(())
}

/// What a reader in the container does to read a volume consistently:
/// resolve `..data` once, read every file of that version, and check that
/// `..data` still names it. A published version never changes, and once
/// `..data` has moved on it never comes back, so if it still names the
/// version after the reads, the version was whole and current throughout.
/// `None` when it moved on meanwhile (the old version is deleted right
/// after, on a node as in the guest, so the reader may have seen it half
/// deleted): read again.
/// A version's files: (relative path, content), sorted.
type Files = Vec<(String, Vec<u8>)>;

fn read_version(vol: &Path) -> Option<(String, Files)> {
    let version = fs::read_link(vol.join("..data")).ok()?;
    let dir = vol.join(&version);
    let mut files = Vec::new();
    match files_under(&dir, "", &mut files) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => panic!("reading {}: {e}", dir.display()),
    }
    if files.is_empty() {
        return None;
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        match fs::read(dir.join(&f)) {
            Ok(d) => out.push((f, d)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => panic!("reading {f}: {e}"),
        }
    }
    if fs::read_link(vol.join("..data")).ok()? != version {
        return None;
    }
    Some((version.to_string_lossy().into_owned(), out))
}

#[test]
fn a_reader_never_sees_two_versions_at_once_over_1000_updates() {
    const UPDATES: u32 = 1000;
    let (rig, w) = Rig::start(
        ApiVolume::ConfigMap,
        "torn",
        Ownership::default(),
        &versioned(0),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let guest = rig.guest.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut reads, mut retries, mut last) = (0u64, 0u64, 0u32);
            let mut seen = BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let Some((dir, files)) = read_version(&guest) else {
                    retries += 1;
                    continue;
                };
                let n = version_of(&files[0].1)
                    .unwrap_or_else(|| panic!("{dir}: unreadable content {:?}", files[0]));
                let got: Files = files;
                let want: Files = versioned(n).into_iter().map(|(k, f)| (k, f.data)).collect();
                assert_eq!(
                    got, want,
                    "torn read in {dir}: the files are not exactly version {n}"
                );
                assert!(n >= last, "went back from version {last} to {n} ({dir})");
                last = n;
                seen.insert(n);
                reads += 1;
            }
            (reads, retries, seen.len())
        })
    };
    for n in 1..=UPDATES {
        assert!(w.write(&versioned(n)).unwrap());
        // Let the guest publish each version, so the reader races 1000
        // commits, not a few coalesced ones.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(d) = fs::read(rig.guest.join("a"))
                && version_of(&d) == Some(n)
            {
                break;
            }
            if reader.is_finished() || Instant::now() > deadline {
                stop.store(true, Ordering::Relaxed);
                let r = reader.join();
                panic!(
                    "version {n} never reached the guest (reader: {:?})\n{}",
                    r.map_err(|e| e.downcast_ref::<String>().cloned()),
                    rig.logs()
                );
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (reads, retries, distinct) = reader.join().expect("the reader found a torn read");
    eprintln!("{reads} consistent reads, {retries} retries, {distinct} versions seen");
    assert!(
        reads >= 1000,
        "the reader read only {reads} times: the test proved little"
    );
    assert!(
        distinct >= 20,
        "the reader saw only {distinct} versions: the test proved little"
    );
    rig.wait_mirrored("final");
    assert_clean_layout(&rig.guest);
    let commits = rig.watch.log_text().matches("committed").count();
    assert!(
        commits >= UPDATES as usize,
        "only {commits} commits for {UPDATES} updates"
    );
}

#[test]
fn every_update_fires_in_moved_to_for_data_in_the_guest_as_on_the_node() {
    const UPDATES: u32 = 100;
    let (rig, w) = Rig::start(
        ApiVolume::Projected,
        "kube-api-access-abcde",
        Ownership::default(),
        &ServiceAccount::new("default", "app").payload(),
    );
    let mut sa = ServiceAccount::new("default", "app");
    let mut ino = Inotify::init().unwrap();
    let mask = WatchMask::MOVED_TO | WatchMask::CREATE | WatchMask::DELETE | WatchMask::MOVED_FROM;
    let guest_wd = ino.watches().add(&rig.guest, mask).unwrap();
    let node_wd = ino.watches().add(&rig.node, mask).unwrap();
    let data = Some(OsString::from("..data"));
    for n in 1..=UPDATES {
        sa.rotate();
        assert!(w.write(&sa.payload()).unwrap());
        rig.wait_mirrored(&format!("rotation {n}"));
        // The rename is queued by the time the new target is visible.
        let evs = drain(&mut ino);
        for (wd, who) in [(&guest_wd, "guest"), (&node_wd, "node")] {
            let on_data: Vec<EventMask> = evs
                .iter()
                .filter(|(w, _, name)| w == wd && *name == data)
                .map(|(_, m, _)| *m)
                .collect();
            assert_eq!(
                on_data,
                vec![EventMask::MOVED_TO],
                "rotation {n}: {who} events on ..data\n{}",
                rig.logs()
            );
        }
        assert_clean_layout(&rig.guest);
    }
    assert_eq!(fs::read(rig.guest.join("token")).unwrap(), sa.token());
}

/// Adds an IN_DELETE_SELF watch on what `p` resolves to.
fn watch_delete(ino: &mut Inotify, p: &Path) -> WatchDescriptor {
    ino.watches()
        .add(p, WatchMask::DELETE_SELF)
        .unwrap_or_else(|e| panic!("watch {}: {e}", p.display()))
}

#[test]
fn each_version_has_fresh_inodes_and_the_old_one_is_deleted() {
    const UPDATES: u32 = 50;
    let p = |n: u32| {
        let mut p = Payload::new();
        p.insert(
            "changed".into(),
            FileProjection {
                data: format!("v{n}").into_bytes(),
                mode: 0o644,
            },
        );
        p.insert(
            "same".into(),
            FileProjection {
                data: b"never changes".to_vec(),
                mode: 0o644,
            },
        );
        p.insert(
            "dir/same-too".into(),
            FileProjection {
                data: b"nor this".to_vec(),
                mode: 0o600,
            },
        );
        p
    };
    let (rig, w) = Rig::start(ApiVolume::Secret, "creds", Ownership::default(), &p(0));
    let mut ino = Inotify::init().unwrap();
    for n in 1..=UPDATES {
        let mut wds = Vec::new();
        let mut inodes = Vec::new();
        for (side, root) in [("guest", &rig.guest), ("node", &rig.node)] {
            for f in ["changed", "same", "dir/same-too", "..data"] {
                let path = root.join(f);
                wds.push((watch_delete(&mut ino, &path), format!("{side} {f}")));
                inodes.push((path.clone(), fs::metadata(&path).unwrap().ino()));
            }
        }
        assert!(w.write(&p(n)).unwrap());
        rig.wait_mirrored(&format!("update {n}"));
        for (path, old) in &inodes {
            let new = fs::metadata(path).unwrap().ino();
            assert_ne!(new, *old, "update {n}: {} kept its inode", path.display());
        }
        // The old version is deleted right after the rename: wait for it.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut pending: BTreeSet<String> = wds.iter().map(|(_, s)| s.clone()).collect();
        while !pending.is_empty() {
            for (wd, m, _) in drain(&mut ino) {
                if m.contains(EventMask::DELETE_SELF)
                    && let Some((_, s)) = wds.iter().find(|(w, _)| *w == wd)
                {
                    pending.remove(s);
                }
            }
            assert!(
                Instant::now() < deadline,
                "update {n}: no IN_DELETE_SELF for {pending:?}\n{}",
                rig.logs()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_clean_layout(&rig.guest);
    }
}

#[test]
fn removed_keys_disappear_and_modes_uid_gid_match_the_node_with_fs_group() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test chowns files as kubelet does: run it as root"
    );
    let data = keyed([
        ("username", &b"app"[..]),
        ("password", b"s3cr3t"),
        ("tls.crt", b"CERT"),
        ("tls.key", b"KEY"),
    ]);
    let items = |with_tls: bool| {
        let mut v = vec![
            KeyToPath::new("username", "username"),
            KeyToPath::new("password", "password").mode(0o400),
        ];
        if with_tls {
            v.push(KeyToPath::new("tls.crt", "tls/server.crt"));
            v.push(KeyToPath::new("tls.key", "tls/private/server.key").mode(0o600));
        }
        v
    };
    let owner = Ownership {
        fs_group: Some(2000),
        fs_user: [("password".to_string(), 1000)].into(),
    };
    let first = key_payload("secret", &data, &items(true), Some(0o640), false).unwrap();
    let (rig, w) = Rig::start(ApiVolume::Secret, "db", owner, &first);
    let check = |what: &str| {
        rig.wait_mirrored(what);
        assert_clean_layout(&rig.guest);
        let v = fs::read_link(rig.guest.join("..data")).unwrap();
        let md = fs::metadata(rig.guest.join(&v).join("password")).unwrap();
        assert_eq!(
            (md.uid(), md.gid(), md.mode() & 0o7777),
            (1000, 2000, 0o440),
            "{what}: password owner and mode in the guest"
        );
    };
    check("first");
    let v = fs::read_link(rig.guest.join("..data")).unwrap();
    let tls = fs::metadata(rig.guest.join(&v).join("tls/private")).unwrap();
    assert_eq!(
        (tls.gid(), tls.mode() & 0o7777),
        (2000, 0o2755),
        "fsGroup dirs are setgid"
    );
    // Remove the tls keys (a top-level directory and its nested file).
    assert!(
        w.write(&key_payload("secret", &data, &items(false), Some(0o640), false).unwrap())
            .unwrap()
    );
    check("tls removed");
    for gone in ["tls", "tls/server.crt"] {
        assert!(
            fs::symlink_metadata(rig.guest.join(gone)).is_err(),
            "{gone} still in the guest"
        );
    }
    // And back, with a changed password.
    let mut data2 = data.clone();
    data2.insert("password".into(), b"rotated".to_vec());
    assert!(
        w.write(&key_payload("secret", &data2, &items(true), Some(0o640), false).unwrap())
            .unwrap()
    );
    check("tls back");
    assert_eq!(fs::read(rig.guest.join("password")).unwrap(), b"rotated");
}
