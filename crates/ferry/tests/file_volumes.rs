//! File volumes with the real binaries: one file kept at ROOT/files/NAME,
//! updated in place (the inode a bind mount pins never changes), watched,
//! restored after a crash; and every bad input against them (and ReadFile)
//! refused precisely with the live file left exactly as it was.
mod common;

use std::{
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt, symlink},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use common::*;
use ferry_proto::{
    convert::{entry_to_pb, volume_kind_to_pb},
    ferry as pb,
    ferry_ttrpc::FerryClient,
    wire::{Code, code_of},
};
use ferry_tree::{Entry, FILE_ENTRY, Manifest, VolumeKind};

/// `ferry sync` once with `--volume` and `--file` specs.
fn sync(addr: &str, trees: &[(&str, &Path)], files: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(FERRY);
    c.arg("sync").arg("--connect").arg(addr);
    for (n, d) in trees {
        c.arg("--volume").arg(format!("{n}={}", d.display()));
    }
    for (n, f) in files {
        c.arg("--file").arg(format!("{n}={}", f.display()));
    }
    c.env("RUST_LOG", "info").output().unwrap()
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    err
}

/// kubelet's AtomicWriter, by hand: a new `..<ts>` version, `..data`
/// swapped by rename, visible links, the old version deleted.
fn kubelet_publish(dir: &Path, generation: u32, files: &[(&str, &[u8])]) {
    let v = format!("..2026_01_01_00_00_00.{generation}");
    fs::create_dir_all(dir.join(&v)).unwrap();
    for (k, data) in files {
        fs::write(dir.join(&v).join(k), data).unwrap();
    }
    let old = fs::read_link(dir.join("..data")).ok();
    symlink(&v, dir.join("..data_tmp")).unwrap();
    fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for (k, _) in files {
        if fs::symlink_metadata(dir.join(k)).is_err() {
            symlink(format!("..data/{k}"), dir.join(k)).unwrap();
        }
    }
    if let Some(old) = old {
        fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

fn wait_for(what: &str, f: impl Fn() -> bool, logs: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: timed out\n{}", logs());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ino(p: &Path) -> u64 {
    fs::metadata(p).unwrap().ino()
}

#[test]
fn a_file_volume_is_updated_in_place_watched_and_restored() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("guest");
    let mut agent = Agent::start(t.path(), &root, &[]);
    let hosts = t.path().join("etc-hosts");
    fs::write(&hosts, b"127.0.0.1 localhost\n").unwrap();
    fs::set_permissions(&hosts, fs::Permissions::from_mode(0o640)).unwrap();
    ok(&sync(&agent.addr(), &[], &[("hosts", &hosts)]));
    let live = root.join("files/hosts");
    assert_eq!(fs::read(&live).unwrap(), b"127.0.0.1 localhost\n");
    assert_eq!(fs::metadata(&live).unwrap().mode() & 0o7777, 0o640);
    let inode = ino(&live);
    assert!(!root.join("volumes/hosts").exists());
    let st = Command::new(FERRY)
        .args(["status", "--json", "--connect", &agent.addr()])
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["volumes"][0]["kind"], "file", "{st}");
    assert_eq!(st["volumes"][0]["files"], 1, "{st}");

    // A new content and mode: the same inode, rewritten.
    fs::write(&hosts, b"127.0.0.1 localhost\n10.0.0.7 pod\n").unwrap();
    fs::set_permissions(&hosts, fs::Permissions::from_mode(0o644)).unwrap();
    ok(&sync(&agent.addr(), &[], &[("hosts", &hosts)]));
    assert_eq!(
        fs::read(&live).unwrap(),
        b"127.0.0.1 localhost\n10.0.0.7 pod\n"
    );
    assert_eq!(fs::metadata(&live).unwrap().mode() & 0o7777, 0o644);
    assert_eq!(ino(&live), inode, "rewritten in place");
    assert_eq!(
        fs::read_dir(root.join("files")).unwrap().count(),
        1,
        "no staging file left"
    );

    // Watching: an in-place edit, and a subPath key of a kubelet volume
    // (read through ..data) next to the tree volume it belongs to.
    let kvol = t.path().join("cm");
    fs::create_dir(&kvol).unwrap();
    kubelet_publish(&kvol, 1, &[("app.conf", b"v1"), ("other", b"o")]);
    let key = kvol.join("app.conf");
    let mut w = {
        let log = t.path().join("watch.log");
        let child = Command::new(FERRY)
            .args(["sync", "--watch", "--connect", &agent.addr()])
            .arg("--file")
            .arg(format!("hosts={}", hosts.display()))
            .arg("--file")
            .arg(format!("sub={}", key.display()))
            .arg("--volume")
            .arg(format!("cm={}", kvol.display()))
            .env("RUST_LOG", "info")
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Watch { child, log }
    };
    let wlog = w.log.clone();
    let logs = || {
        let wl = fs::read_to_string(&wlog).unwrap_or_default();
        format!("{wl}\n{}", agent.log_text())
    };
    let sub = root.join("files/sub");
    wait_for(
        "first sync of the subPath",
        || fs::read(&sub).ok().as_deref() == Some(b"v1"),
        &logs,
    );
    wait_mirrored(&kvol, &root.join("volumes/cm"), "tree", &logs);
    let sub_inode = ino(&sub);
    fs::write(&hosts, b"edited in place\n").unwrap();
    wait_for(
        "in-place edit",
        || fs::read(&live).unwrap() == b"edited in place\n",
        &logs,
    );
    kubelet_publish(&kvol, 2, &[("app.conf", b"v2, longer"), ("other", b"o")]);
    wait_for(
        "..data swap",
        || fs::read(&sub).unwrap() == b"v2, longer",
        &logs,
    );
    wait_mirrored(&kvol, &root.join("volumes/cm"), "tree after swap", &logs);
    assert_eq!(ino(&sub), sub_inode, "the subPath file keeps its inode");
    assert_eq!(ino(&live), inode, "the etc-hosts file keeps its inode");
    assert!(w.stop().success(), "{}", logs());

    // A crash, with an interrupted transaction's staging left behind: the
    // restarted agent restores both file volumes from their state files and
    // the host has nothing to send.
    agent.kill();
    fs::write(root.join("files/.staging-hosts"), b"half").unwrap();
    let agent = Agent::start(t.path(), &root, &[]);
    assert!(!root.join("files/.staging-hosts").exists());
    let err = ok(&sync(
        &agent.addr(),
        &[],
        &[("hosts", &hosts), ("sub", &key)],
    ));
    assert_eq!(err.matches("guest already up to date").count(), 2, "{err}");
    assert_eq!(ino(&live), inode);

    // A tree may not take a file volume's name, nor the other way round.
    let dir = t.path().join("d");
    fs::create_dir(&dir).unwrap();
    let o = sync(&agent.addr(), &[("hosts", &dir)], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("FAILED_PRECONDITION")
            && err.contains("volume \"hosts\" is a file volume, not a tree volume"),
        "{err}"
    );
    let o = sync(&agent.addr(), &[], &[("cm", &hosts)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is a tree volume, not a file volume"), "{err}");
    assert_eq!(fs::read(&live).unwrap(), b"edited in place\n");
    assert!(!root.join("volumes/hosts").exists() && !root.join("files/cm").exists());

    // The CLI checks what it is given.
    let o = sync(&agent.addr(), &[], &[("x", &dir)]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a regular file"));
}

struct Fx {
    c: FerryClient,
    live: PathBuf,
    content: Vec<u8>,
    inode: u64,
    root: PathBuf,
}

impl Fx {
    /// The live file, its inode and the store's files are as they were.
    fn assert_untouched(&self, case: &str) {
        assert_eq!(fs::read(&self.live).unwrap(), self.content, "{case}");
        assert_eq!(ino(&self.live), self.inode, "{case}");
        let names: Vec<_> = fs::read_dir(self.root.join("files"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["hosts"], "{case}: staging or a new file left");
    }
}

fn entry(path: &str, data: &[u8]) -> pb::Entry {
    let mut p = entry_to_pb(&Entry::file(path, 0o644, 0, 0, data));
    p.source = pb::Source::SOURCE_INLINE.into();
    p.data = data.to_vec();
    p
}

async fn begin(c: &FerryClient, v: &str, kind: VolumeKind, base: &[u8]) -> ttrpc::Result<u64> {
    let mut r = pb::BeginRequest::new();
    r.volume = v.into();
    r.base_digest = base.to_vec();
    r.kind = volume_kind_to_pb(kind).into();
    c.begin(ctx(), &r).await.map(|b| b.txn_id)
}

async fn put(c: &FerryClient, txn: u64, removes: &[&str], up: Vec<pb::Entry>) -> ttrpc::Result<()> {
    let mut r = pb::PutEntriesRequest::new();
    r.txn_id = txn;
    r.removes = removes.iter().map(|s| s.to_string()).collect();
    r.upserts = up;
    c.put_entries(ctx(), &r).await.map(drop)
}

async fn commit(c: &FerryClient, txn: u64, digest: &[u8]) -> ttrpc::Result<()> {
    let mut r = pb::CommitRequest::new();
    r.txn_id = txn;
    r.manifest_digest = digest.to_vec();
    c.commit(ctx(), &r).await.map(drop)
}

async fn read(
    c: &FerryClient,
    v: &str,
    path: &str,
    max: u64,
) -> ttrpc::Result<pb::ReadFileResponse> {
    let mut r = pb::ReadFileRequest::new();
    r.volume = v.into();
    r.path = path.into();
    r.max_bytes = max;
    c.read_file(ctx(), &r).await
}

fn expect(case: &str, r: ttrpc::Result<impl std::fmt::Debug>, code: Code, msg: &str) {
    let e = r.expect_err(case);
    assert_eq!(code_of(&e), Some(code), "{case}: {e:?}");
    let text = match &e {
        ttrpc::Error::RpcStatus(s) => s.message().to_string(),
        other => other.to_string(),
    };
    assert!(
        text.contains(msg),
        "{case}: {text:?} should contain {msg:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_to_file_volumes_and_reads_is_refused_and_changes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("guest");
    let agent = Agent::start(t.path(), &root, &["--max-volume-bytes", "1Ki"]);
    let hosts = t.path().join("etc-hosts");
    let content = b"127.0.0.1 localhost\n".to_vec();
    fs::write(&hosts, &content).unwrap();
    ok(&sync(&agent.addr(), &[], &[("hosts", &hosts)]));
    let tree = t.path().join("tree");
    fs::create_dir_all(tree.join("d")).unwrap();
    fs::write(tree.join("d/f"), b"in a dir").unwrap();
    symlink("d/f", tree.join("link")).unwrap();
    fs::write(tree.join("big"), vec![b'x'; 1000]).unwrap();
    ok(&sync(&agent.addr(), &[("tree", &tree)], &[]));
    let live = root.join("files/hosts");
    let fx = Fx {
        c: client(&agent.sock).await,
        inode: ino(&live),
        live,
        content: content.clone(),
        root: root.clone(),
    };
    let c = &fx.c;
    let base = ferry_tree::scan_file(&hosts).unwrap().manifest;
    let base = base.digest();
    let one = |data: &[u8]| Manifest::from_iter([Entry::file(FILE_ENTRY, 0o644, 0, 0, data)]);

    let cases: Vec<(&str, Code, &str)> = vec![
        (
            "another entry path",
            Code::INVALID_ARGUMENT,
            "holds exactly one file entry, at path \"content\"; refusing entry \"other\"",
        ),
        (
            "a directory entry",
            Code::INVALID_ARGUMENT,
            "refusing entry \"content\"",
        ),
        (
            "no entry at commit",
            Code::INVALID_ARGUMENT,
            "must hold exactly one file entry at \"content\", the transaction holds 0 entries",
        ),
        (
            "blake3 mismatch",
            Code::INVALID_ARGUMENT,
            "blake3 mismatch for \"content\"",
        ),
        (
            "manifest digest mismatch",
            Code::INVALID_ARGUMENT,
            "manifest digest mismatch",
        ),
        (
            "quota",
            Code::RESOURCE_EXHAUSTED,
            "quota exceeded: volume \"hosts\" bytes would be 2048",
        ),
        (
            "stale base",
            Code::FAILED_PRECONDITION,
            "base digest mismatch",
        ),
        (
            "unknown kind",
            Code::INVALID_ARGUMENT,
            "unknown volume kind 7",
        ),
        (
            "tree on a file volume",
            Code::FAILED_PRECONDITION,
            "is a file volume, not a tree volume",
        ),
        (
            "file on a tree volume",
            Code::FAILED_PRECONDITION,
            "is a tree volume, not a file volume",
        ),
    ];
    for (case, code, msg) in cases {
        let r: ttrpc::Result<()> = match case {
            "another entry path" => {
                async {
                    let txn = begin(c, "hosts", VolumeKind::File, &base).await?;
                    put(c, txn, &[], vec![entry("other", b"x")]).await
                }
                .await
            }
            "a directory entry" => {
                async {
                    let txn = begin(c, "hosts", VolumeKind::File, &base).await?;
                    let mut d = entry_to_pb(&Entry::dir(FILE_ENTRY, 0o755, 0, 0));
                    d.source = pb::Source::SOURCE_CHUNKS.into();
                    put(c, txn, &[FILE_ENTRY], vec![d]).await
                }
                .await
            }
            "no entry at commit" => {
                async {
                    let txn = begin(c, "hosts", VolumeKind::File, &base).await?;
                    put(c, txn, &[FILE_ENTRY], vec![]).await?;
                    commit(c, txn, &Manifest::new().digest()).await
                }
                .await
            }
            "blake3 mismatch" => {
                async {
                    let txn = begin(c, "hosts", VolumeKind::File, &base).await?;
                    let mut e = entry(FILE_ENTRY, b"new content");
                    e.data = b"NEW content".to_vec();
                    put(c, txn, &[], vec![e]).await
                }
                .await
            }
            "manifest digest mismatch" => {
                async {
                    let txn = begin(c, "hosts", VolumeKind::File, &base).await?;
                    put(c, txn, &[], vec![entry(FILE_ENTRY, b"new content")]).await?;
                    commit(c, txn, &one(b"something else").digest()).await
                }
                .await
            }
            "quota" => {
                async {
                    let txn = begin(c, "hosts", VolumeKind::File, &base).await?;
                    put(c, txn, &[], vec![entry(FILE_ENTRY, &[b'q'; 2048])]).await
                }
                .await
            }
            "stale base" => begin(c, "hosts", VolumeKind::File, &one(b"old").digest())
                .await
                .map(drop),
            "unknown kind" => {
                async {
                    let mut r = pb::BeginRequest::new();
                    r.volume = "hosts".into();
                    r.base_digest = base.to_vec();
                    r.kind = protobuf::EnumOrUnknown::from_i32(7);
                    c.begin(ctx(), &r).await.map(drop)
                }
                .await
            }
            "tree on a file volume" => begin(c, "hosts", VolumeKind::Tree, &base).await.map(drop),
            "file on a tree volume" => {
                let tree_digest = ferry_tree::scan_volume(&tree).unwrap().manifest.digest();
                begin(c, "tree", VolumeKind::File, &tree_digest)
                    .await
                    .map(drop)
            }
            other => unreachable!("{other}"),
        };
        expect(case, r, code, msg);
        fx.assert_untouched(case);
        assert!(
            agent.log_text().contains(msg),
            "{case}: not in the agent's log"
        );
    }

    // The live file can still be changed afterwards (no transaction stuck).
    let new = b"10.0.0.1 pod\n";
    let txn = begin(c, "hosts", VolumeKind::File, &base).await.unwrap();
    put(c, txn, &[], vec![entry(FILE_ENTRY, new)])
        .await
        .unwrap();
    commit(c, txn, &one(new).digest()).await.unwrap();
    assert_eq!(fs::read(&fx.live).unwrap(), new);
    assert_eq!(ino(&fx.live), fx.inode);

    // ReadFile: what it returns, and what it refuses.
    let r = read(c, "hosts", "", 0).await.unwrap();
    assert_eq!(
        (r.data.as_slice(), r.size, r.truncated),
        (&new[..], 13, false)
    );
    let r = read(c, "hosts", "", 4).await.unwrap();
    assert_eq!(
        (r.data.as_slice(), r.size, r.truncated),
        (&b"10.0"[..], 13, true)
    );
    let r = read(c, "tree", "d/f", 0).await.unwrap();
    assert_eq!(r.data, b"in a dir");
    let r = read(c, "tree", "big", 0).await.unwrap();
    assert_eq!((r.data.len(), r.size, r.truncated), (1000, 1000, false));
    for (case, v, path, max, code, msg) in [
        (
            "no such volume",
            "gone",
            "",
            0,
            Code::NOT_FOUND,
            "no volume \"gone\" in the store",
        ),
        (
            "path on a file volume",
            "hosts",
            "x",
            0,
            Code::INVALID_ARGUMENT,
            "is a file volume: it has no path \"x\"",
        ),
        (
            "no such file",
            "tree",
            "nope",
            0,
            Code::NOT_FOUND,
            "no \"nope\" in volume \"tree\"",
        ),
        (
            "a directory",
            "tree",
            "d",
            0,
            Code::INVALID_ARGUMENT,
            "\"d\" in volume \"tree\" is not a regular file",
        ),
        (
            "a symlink",
            "tree",
            "link",
            0,
            Code::PERMISSION_DENIED,
            "confinement violation",
        ),
        (
            "dot-dot",
            "tree",
            "../../etc/passwd",
            0,
            Code::INVALID_ARGUMENT,
            "..",
        ),
        (
            "absolute",
            "tree",
            "/etc/passwd",
            0,
            Code::INVALID_ARGUMENT,
            "absolute",
        ),
        (
            "no path in a tree",
            "tree",
            "",
            0,
            Code::INVALID_ARGUMENT,
            "empty",
        ),
        (
            "too much",
            "hosts",
            "",
            (1 << 20) + 1,
            Code::INVALID_ARGUMENT,
            "max_bytes 1048577 is more than the largest read, 1048576",
        ),
        (
            "bad name",
            "Bad",
            "",
            0,
            Code::INVALID_ARGUMENT,
            "invalid volume name",
        ),
    ] {
        expect(case, read(c, v, path, max).await, code, msg);
    }

    // RemoveVolume removes the file and its state.
    let mut r = pb::RemoveVolumeRequest::new();
    r.volume = "hosts".into();
    assert!(c.remove_volume(ctx(), &r).await.unwrap().existed);
    assert!(!fx.live.exists());
    assert!(!root.join("state/hosts.manifest").exists());
}
