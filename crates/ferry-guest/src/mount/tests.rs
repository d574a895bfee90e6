//! The mount logic against a [`RecordingMounter`], without root: what is
//! resolved, created and (would be) mounted, and every refusal.
use std::{fs, os::unix::fs::symlink};

use ferry_proto::{convert, ferry as pb};
use ferry_tree::{Entry, FILE_ENTRY, Manifest, VolumeKind};

use super::*;
use crate::{Policy, StoreLimits};

struct Fx {
    tmp: tempfile::TempDir,
    store: Store,
}

fn uid() -> (u32, u32) {
    (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    )
}

fn publish(s: &Store, name: &str, kind: VolumeKind, entries: &[Entry]) {
    let mut b = pb::BeginRequest::new();
    b.volume = name.into();
    b.kind = convert::volume_kind_to_pb(kind).into();
    let txn = s.begin(&b).unwrap().txn_id;
    let mut p = pb::PutEntriesRequest::new();
    p.txn_id = txn;
    for e in entries {
        let mut w = convert::entry_to_pb(e);
        w.source = pb::Source::SOURCE_INLINE.into();
        if e.kind == ferry_tree::Kind::File {
            w.data = format!("content of {}", e.path).into_bytes();
        }
        p.upserts.push(w);
    }
    s.put_entries(&p).unwrap();
    let mut c = pb::CommitRequest::new();
    c.txn_id = txn;
    c.manifest_digest = Manifest::from_iter(entries.iter().cloned())
        .digest()
        .to_vec();
    s.commit(&c).unwrap();
}

fn file(path: &str) -> Entry {
    let (u, g) = uid();
    Entry::file(path, 0o644, u, g, format!("content of {path}").as_bytes())
}

fn fx() -> Fx {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(
        tmp.path().join("store"),
        StoreLimits::default(),
        Policy::default(),
    )
    .unwrap();
    let (u, g) = uid();
    publish(
        &store,
        "cm",
        VolumeKind::Tree,
        &[Entry::dir("d", 0o755, u, g), file("d/key"), file("key")],
    );
    publish(&store, "hosts", VolumeKind::File, &[file(FILE_ENTRY)]);
    fs::create_dir_all(tmp.path().join("rootfs/etc")).unwrap();
    Fx { tmp, store }
}

impl Fx {
    fn rootfs(&self) -> PathBuf {
        self.tmp.path().join("rootfs")
    }
    fn req(&self, volume: &str, path: &str, target: &str) -> pb::MountRequest {
        let mut r = pb::MountRequest::new();
        r.volume = volume.into();
        r.path = path.into();
        r.rootfs = self.rootfs().display().to_string();
        r.target = target.into();
        r
    }
    fn store_path(&self, rel: &str) -> PathBuf {
        fs::canonicalize(self.tmp.path().join("store"))
            .unwrap()
            .join(rel)
    }
    fn rootfs_real(&self) -> PathBuf {
        fs::canonicalize(self.rootfs()).unwrap()
    }
}

#[test]
fn a_file_volume_is_mounted_read_only_on_a_created_file() {
    let f = fx();
    let m = RecordingMounter::default();
    let r = f
        .store
        .mount(&f.req("hosts", "", "/etc/hosts"), &m)
        .unwrap();
    let target = f.rootfs_real().join("etc/hosts");
    assert!(r.created && r.read_only);
    assert_eq!(r.target, target.display().to_string());
    assert!(
        fs::metadata(&target).unwrap().is_file(),
        "an empty mountpoint file"
    );
    let src = f.store_path("files/hosts");
    assert_eq!(
        m.calls(),
        vec![
            MountCall::Clone {
                source: src.clone()
            },
            MountCall::Attach {
                source: src.clone(),
                target
            },
            MountCall::Restrict {
                source: src,
                read_only: true
            },
        ]
    );
}

#[test]
fn a_tree_volume_or_one_entry_of_it_goes_where_asked_creating_directories() {
    let f = fx();
    let m = RecordingMounter::default();
    let mut req = f.req("cm", "", "var/run/secrets/cm");
    req.read_write = true;
    let r = f.store.mount(&req, &m).unwrap();
    assert!(!r.read_only && r.created);
    assert!(f.rootfs().join("var/run/secrets/cm").is_dir());
    assert_eq!(
        m.calls()[2],
        MountCall::Restrict {
            source: f.store_path("volumes/cm"),
            read_only: false
        }
    );
    // A subPath-like entry of the current version: the version's own file.
    let m = RecordingMounter::default();
    let r = f
        .store
        .mount(&f.req("cm", "d/key", "/app/key.conf"), &m)
        .unwrap();
    let MountCall::Clone { source } = &m.calls()[0] else {
        panic!()
    };
    assert!(source.starts_with(f.store_path("volumes/cm")), "{source:?}");
    assert!(source.ends_with("d/key"), "{source:?}");
    assert!(r.source.contains("/..20"), "{}", r.source);
}

#[test]
fn symlinks_in_the_image_are_followed_inside_the_rootfs_only() {
    let f = fx();
    let outside = f.tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    // Debian's /var/run -> /run, absolute: it means <rootfs>/run.
    fs::create_dir(f.rootfs().join("run")).unwrap();
    symlink("/run", f.rootfs().join("varrun")).unwrap();
    let m = RecordingMounter::default();
    let r = f
        .store
        .mount(&f.req("hosts", "", "/varrun/hosts"), &m)
        .unwrap();
    assert_eq!(
        r.target,
        f.rootfs_real().join("run/hosts").display().to_string()
    );
    // A link at the real outside directory is taken inside the rootfs too,
    // where it does not exist: refused, nothing created outside.
    symlink(&outside, f.rootfs().join("evil")).unwrap();
    let m = RecordingMounter::default();
    let e = f
        .store
        .mount(&f.req("hosts", "", "/evil/hosts"), &m)
        .unwrap_err();
    assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT, "{e}");
    assert!(
        e.to_string()
            .contains("\"evil\" does not exist inside the rootfs"),
        "{e}"
    );
    assert!(m.calls().is_empty());
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

#[test]
fn bad_requests_are_refused_and_nothing_is_mounted() {
    let f = fx();
    fs::write(f.rootfs().join("etc/file"), b"").unwrap();
    fs::create_dir(f.rootfs().join("etc/dir")).unwrap();
    let outside_root = f.tmp.path().display().to_string();
    let cases: Vec<(&str, pb::MountRequest, ttrpc::Code, &str)> = vec![
        (
            "dotdot",
            f.req("hosts", "", "../../etc/hosts"),
            ttrpc::Code::INVALID_ARGUMENT,
            "\"..\" is not allowed",
        ),
        (
            "inner dotdot",
            f.req("hosts", "", "/etc/../../x"),
            ttrpc::Code::INVALID_ARGUMENT,
            "\"..\" is not allowed",
        ),
        (
            "the rootfs itself",
            f.req("cm", "", "/"),
            ttrpc::Code::INVALID_ARGUMENT,
            "the rootfs itself",
        ),
        (
            "file on a dir",
            f.req("hosts", "", "/etc/dir"),
            ttrpc::Code::INVALID_ARGUMENT,
            "the mountpoint is a directory, the source a file",
        ),
        (
            "dir on a file",
            f.req("cm", "", "/etc/file"),
            ttrpc::Code::INVALID_ARGUMENT,
            "the mountpoint is a file, the source a directory",
        ),
        (
            "through a file",
            f.req("hosts", "", "/etc/file/x"),
            ttrpc::Code::INVALID_ARGUMENT,
            "not a directory",
        ),
        (
            "path on a file volume",
            f.req("hosts", "x", "/etc/hosts"),
            ttrpc::Code::INVALID_ARGUMENT,
            "is a file volume",
        ),
        (
            "missing entry",
            f.req("cm", "nope", "/etc/nope"),
            ttrpc::Code::NOT_FOUND,
            "no \"nope\" in volume \"cm\"",
        ),
        (
            "bad entry path",
            f.req("cm", "../x", "/etc/x"),
            ttrpc::Code::INVALID_ARGUMENT,
            "..",
        ),
        (
            "no such volume",
            f.req("gone", "", "/etc/gone"),
            ttrpc::Code::NOT_FOUND,
            "no volume \"gone\"",
        ),
        (
            "bad volume name",
            f.req("Bad", "", "/etc/x"),
            ttrpc::Code::INVALID_ARGUMENT,
            "Bad",
        ),
        (
            "relative rootfs",
            pb::MountRequest {
                rootfs: "rootfs".into(),
                ..f.req("hosts", "", "/etc/hosts")
            },
            ttrpc::Code::INVALID_ARGUMENT,
            "not an absolute path",
        ),
        (
            "the guest's root",
            pb::MountRequest {
                rootfs: "/".into(),
                ..f.req("hosts", "", "/etc/hosts")
            },
            ttrpc::Code::INVALID_ARGUMENT,
            "the guest's own root",
        ),
        (
            "the store",
            pb::MountRequest {
                rootfs: outside_root,
                ..f.req("hosts", "", "/x")
            },
            ttrpc::Code::INVALID_ARGUMENT,
            "overlaps the ferry store",
        ),
    ];
    for (case, req, code, msg) in cases {
        let m = RecordingMounter::default();
        let e = f.store.mount(&req, &m).expect_err(case);
        assert_eq!(e.code(), code, "{case}: {e}");
        assert!(e.to_string().contains(msg), "{case}: {e}");
        assert!(m.calls().is_empty(), "{case}: {:?}", m.calls());
    }
    assert!(!f.rootfs().join("etc/hosts").exists());
    assert!(!f.rootfs().join("x").exists());
}

#[test]
fn a_mount_that_cannot_be_restricted_is_detached_again() {
    let f = fx();
    let m = RecordingMounter {
        fail_restrict: Some(Errno::PERM),
        ..Default::default()
    };
    let e = f
        .store
        .mount(&f.req("hosts", "", "/etc/hosts"), &m)
        .unwrap_err();
    assert_eq!(e.code(), ttrpc::Code::PERMISSION_DENIED, "{e}");
    let calls = m.calls();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert!(matches!(calls[3], MountCall::Detach { .. }));
}

#[test]
fn mounting_from_the_store_on_disk_finds_the_kind_by_itself() {
    let f = fx();
    let root = f.tmp.path().join("store");
    let spec = |volume: &str, path: &str, target: &str| MountSpec {
        volume: volume.into(),
        path: path.into(),
        rootfs: f.rootfs(),
        target: target.into(),
        read_only: true,
    };
    let m = RecordingMounter::default();
    let r = mount_from_root(&root, &spec("hosts", "", "/etc/hosts"), &m).unwrap();
    assert!(r.source.ends_with("files/hosts"), "{}", r.source);
    let r = mount_from_root(&root, &spec("cm", "key", "/k"), &m).unwrap();
    assert!(
        r.source.ends_with("/key") && r.source.contains("/..20"),
        "{}",
        r.source
    );
    let e = mount_from_root(&root, &spec("gone", "", "/g"), &m).unwrap_err();
    assert_eq!(e.code(), ttrpc::Code::NOT_FOUND, "{e}");
}
