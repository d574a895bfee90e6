//! Bad input over the wire to the real `ferry-agent`: each case gets a precise
//! error (code and message) on the wire and in the agent's log, nothing is
//! written outside the volume, and the previous version stays whole and
//! readable.
mod common;

use std::{fs, time::Duration};

use common::*;
use ferry_proto::{
    PROTOCOL_VERSION,
    convert::entry_to_pb,
    ferry as pb,
    ferry_ttrpc::FerryClient,
    wire::{Code, code_of},
};
use ferry_tree::{Entry, Manifest};

async fn begin(
    c: &FerryClient,
    volume: &str,
    base: &Manifest,
    client_id: u64,
) -> ttrpc::Result<u64> {
    let mut r = pb::BeginRequest::new();
    r.volume = volume.into();
    r.base_digest = base.digest().to_vec();
    r.client_id = client_id;
    c.begin(ctx(), &r).await.map(|b| b.txn_id)
}

async fn put(
    c: &FerryClient,
    txn: u64,
    removes: &[&str],
    upserts: Vec<pb::Entry>,
) -> ttrpc::Result<pb::PutEntriesResponse> {
    let mut r = pb::PutEntriesRequest::new();
    r.txn_id = txn;
    r.removes = removes.iter().map(|s| s.to_string()).collect();
    r.upserts = upserts;
    c.put_entries(ctx(), &r).await
}

async fn chunk(
    c: &FerryClient,
    txn: u64,
    path: &str,
    offset: u64,
    data: &[u8],
) -> ttrpc::Result<pb::WriteChunkResponse> {
    let mut r = pb::WriteChunkRequest::new();
    r.txn_id = txn;
    r.path = path.into();
    r.offset = offset;
    r.data = data.to_vec();
    c.write_chunk(ctx(), &r).await
}

async fn commit(c: &FerryClient, txn: u64, digest: &[u8]) -> ttrpc::Result<pb::CommitResponse> {
    let mut r = pb::CommitRequest::new();
    r.txn_id = txn;
    r.manifest_digest = digest.to_vec();
    c.commit(ctx(), &r).await
}

fn inline(e: &Entry, data: &[u8]) -> pb::Entry {
    let mut p = entry_to_pb(e);
    p.source = pb::Source::SOURCE_INLINE.into();
    p.data = data.to_vec();
    p
}

fn chunked(e: &Entry) -> pb::Entry {
    let mut p = entry_to_pb(e);
    p.source = pb::Source::SOURCE_CHUNKS.into();
    p
}

fn expect_err<T: std::fmt::Debug>(
    case: &str,
    r: ttrpc::Result<T>,
    code: Code,
    msg: &str,
) -> String {
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
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_refused_precisely_and_loses_nothing() {
    let t = tempfile::tempdir().unwrap();
    let agent = Agent::start(
        t.path(),
        &t.path().join("guest"),
        &["--max-volume-bytes", "64Ki"],
    );
    let sentinel = t.path().join("outside");
    fs::create_dir(&sentinel).unwrap();

    // The version every case must leave whole.
    let src = t.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("a"), b"alpha").unwrap();
    fs::write(src.join("d/b"), b"beta").unwrap();
    let out = sync_once(&agent.addr(), &[("v", &src)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let guest = agent.volume("v");
    let base = manifest_of(&guest);
    assert_eq!(base, manifest_of(&src));

    let c = client(&agent.sock).await;
    let file = |p: &str, data: &[u8]| Entry::file(p, 0o644, 0, 0, data);

    // Each case: (name, expected code, expected message part, the calls).
    let mut checked = 0;
    macro_rules! case {
        ($name:expr, $code:expr, $msg:expr, $body:expr) => {{
            let r = $body.await;
            let text = expect_err($name, r, $code, $msg);
            assert_eq!(
                manifest_of(&guest),
                base,
                "{}: previous version changed",
                $name
            );
            assert_eq!(fs::read(guest.join("a")).unwrap(), b"alpha", "{}", $name);
            assert_eq!(fs::read(guest.join("d/b")).unwrap(), b"beta", "{}", $name);
            assert_clean_layout(&guest);
            assert_eq!(
                fs::read_dir(&sentinel).unwrap().count(),
                0,
                "{}: wrote outside",
                $name
            );
            // The agent logs the same message.
            let first_line = text.lines().next().unwrap_or_default();
            let needle: String = first_line.chars().take(60).collect();
            let mut logged = false;
            for _ in 0..100 {
                if agent.log_text().contains(&needle) {
                    logged = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(
                logged,
                "{}: agent log lacks {needle:?}:\n{}",
                $name,
                agent.log_text()
            );
            checked += 1;
        }};
    }

    case!(
        "invalid volume name",
        Code::INVALID_ARGUMENT,
        "invalid volume name",
        begin(&c, "Bad/Name", &Manifest::new(), 1)
    );
    case!("absolute path", Code::INVALID_ARGUMENT, "absolute", async {
        let txn = begin(&c, "v", &base, 1).await.unwrap();
        put(&c, txn, &[], vec![inline(&file("/etc/passwd", b"x"), b"x")]).await
    });
    case!("dot-dot component", Code::INVALID_ARGUMENT, "'..'", async {
        let txn = begin(&c, "v", &base, 1).await.unwrap();
        put(
            &c,
            txn,
            &[],
            vec![inline(&file("d/../../outside/x", b"x"), b"x")],
        )
        .await
    });
    case!(
        "symlink leaving the volume",
        Code::INVALID_ARGUMENT,
        "leaves the volume",
        async {
            let txn = begin(&c, "v", &base, 1).await.unwrap();
            put(
                &c,
                txn,
                &[],
                vec![entry_to_pb(&Entry::symlink(
                    "d/l",
                    "../../../outside",
                    0,
                    0,
                ))],
            )
            .await
        }
    );
    case!(
        "remove of a path that leaves the volume",
        Code::INVALID_ARGUMENT,
        "'..'",
        async {
            let txn = begin(&c, "v", &base, 1).await.unwrap();
            put(&c, txn, &["../outside"], vec![]).await
        }
    );
    case!(
        "chunk for an unknown transaction",
        Code::NOT_FOUND,
        "unknown transaction",
        chunk(&c, 0xdead_beef, "a", 0, b"x")
    );
    case!(
        "chunk at a wrong offset",
        Code::INVALID_ARGUMENT,
        "at offset 5, expected 0",
        async {
            let txn = begin(&c, "v", &base, 1).await.unwrap();
            put(&c, txn, &[], vec![chunked(&file("big", b"0123456789"))])
                .await
                .unwrap();
            chunk(&c, txn, "big", 5, b"56789").await
        }
    );
    case!(
        "chunk with more data than declared",
        Code::INVALID_ARGUMENT,
        "size lies",
        async {
            let txn = begin(&c, "v", &base, 1).await.unwrap();
            put(&c, txn, &[], vec![chunked(&file("big", b"0123"))])
                .await
                .unwrap();
            chunk(&c, txn, "big", 0, b"0123456789").await
        }
    );
    case!(
        "inline data of another size than declared",
        Code::INVALID_ARGUMENT,
        "size lies",
        async {
            let txn = begin(&c, "v", &base, 1).await.unwrap();
            put(&c, txn, &[], vec![inline(&file("a", b"0123"), b"01234567")]).await
        }
    );
    case!(
        "commit with content missing",
        Code::FAILED_PRECONDITION,
        "still wait for content",
        async {
            let txn = begin(&c, "v", &base, 1).await.unwrap();
            let e = file("big", b"0123456789");
            put(&c, txn, &[], vec![chunked(&e)]).await.unwrap();
            chunk(&c, txn, "big", 0, b"01234").await.unwrap();
            let mut m = base.clone();
            m.insert(e);
            commit(&c, txn, &m.digest()).await
        }
    );
    case!(
        "blake3 mismatch",
        Code::INVALID_ARGUMENT,
        "blake3 mismatch",
        async {
            let txn = begin(&c, "v", &base, 1).await.unwrap();
            put(
                &c,
                txn,
                &[],
                vec![inline(
                    &file("a", b"what the host claims"),
                    b"what the host sends!",
                )],
            )
            .await
        }
    );
    case!(
        "manifest digest mismatch",
        Code::INVALID_ARGUMENT,
        "manifest digest mismatch",
        async {
            let txn = begin(&c, "v", &base, 1).await.unwrap();
            put(&c, txn, &[], vec![inline(&file("a", b"new"), b"new")])
                .await
                .unwrap();
            commit(&c, txn, &[7u8; 32]).await
        }
    );
    case!(
        "volume quota exceeded",
        Code::RESOURCE_EXHAUSTED,
        "quota exceeded",
        async {
            let txn = begin(&c, "v", &base, 1).await.unwrap();
            put(
                &c,
                txn,
                &[],
                vec![chunked(&file("huge", &vec![1u8; 100 << 10]))],
            )
            .await
        }
    );
    case!(
        "commit without begin",
        Code::NOT_FOUND,
        "unknown transaction",
        commit(&c, 424_242, &base.digest())
    );
    case!(
        "second concurrent transaction on one volume",
        Code::ABORTED,
        "busy",
        async {
            let txn = begin(&c, "v", &base, 1).await.unwrap();
            let r = begin(&c, "v", &base, 2).await;
            let mut a = pb::AbortRequest::new();
            a.txn_id = txn;
            c.abort(ctx(), &a).await.unwrap();
            r
        }
    );
    case!(
        "stale base digest",
        Code::FAILED_PRECONDITION,
        "base digest mismatch",
        begin(&c, "v", &Manifest::from_iter([file("zz", b"")]), 1)
    );
    case!(
        "protocol version mismatch",
        Code::FAILED_PRECONDITION,
        "protocol version mismatch",
        async {
            let mut h = pb::HelloRequest::new();
            h.protocol_version = PROTOCOL_VERSION + 1;
            c.hello(ctx(), &h).await
        }
    );
    assert_eq!(checked, 17);

    // And the volume still takes a good update afterwards.
    fs::write(src.join("a"), b"alpha 2").unwrap();
    let out = sync_once(&agent.addr(), &[("v", &src)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(guest.join("a")).unwrap(), b"alpha 2");
    assert_clean_layout(&guest);
}
