//! Bad input, one independent case each: every case starts from a store with
//! a published first version, does one wrong thing, and checks the precise
//! refusal (code and message) AND that the published version is still whole
//! and readable, that no staging is left, and that nothing outside the
//! store changed.
mod common;

use common::*;
use ferry_guest::{GuestError, StoreLimits};
use ferry_proto::{ferry as pb, wire::Code};

type Attack = fn(&Fx) -> GuestError;

/// Begins a transaction on "vol" against its current version.
fn txn(fx: &Fx) -> u64 {
    fx.begin("vol").unwrap().txn_id
}

fn put_one(fx: &Fx, e: pb::Entry) -> GuestError {
    let t = txn(fx);
    let err = fx.put(t, &[], vec![e]).unwrap_err();
    // The transaction is gone with its staging.
    let again = fx.put(t, &[], vec![]).unwrap_err();
    assert_eq!(again.code(), Code::NOT_FOUND, "{again}");
    err
}

fn cases() -> Vec<(&'static str, StoreLimits, Attack, Code, &'static str)> {
    let d = StoreLimits::default();
    vec![
        (
            "invalid volume name",
            d,
            |fx| fx.begin_with("Bad/Name", vec![], 0).unwrap_err(),
            Code::INVALID_ARGUMENT,
            "invalid volume name \"Bad/Name\"",
        ),
        (
            "volume name with dot-dot",
            d,
            |fx| fx.begin_with("..", vec![], 0).unwrap_err(),
            Code::INVALID_ARGUMENT,
            "invalid volume name",
        ),
        (
            "absolute path",
            d,
            |fx| put_one(fx, file("/etc/passwd", 0o644, b"root::0:0")),
            Code::INVALID_ARGUMENT,
            "\"/etc/passwd\": absolute paths are not allowed",
        ),
        (
            "dot-dot component",
            d,
            |fx| put_one(fx, file("d/../../escape", 0o644, b"x")),
            Code::INVALID_ARGUMENT,
            "'..' components are not allowed",
        ),
        (
            "reserved top-level name",
            d,
            |fx| put_one(fx, symlink("..data", "k1")),
            Code::INVALID_ARGUMENT,
            "reserved for the kubelet layout",
        ),
        (
            "symlink target leaving the volume",
            d,
            |fx| put_one(fx, symlink("d/evil", "../../../etc/shadow")),
            Code::INVALID_ARGUMENT,
            "\"d/evil\" -> \"../../../etc/shadow\" is refused: target leaves the volume",
        ),
        (
            "absolute symlink target",
            d,
            |fx| put_one(fx, symlink("evil", "/etc/shadow")),
            Code::INVALID_ARGUMENT,
            "absolute targets are not allowed",
        ),
        (
            "writing through a symlink",
            d,
            |fx| put_one(fx, file("lnk/x", 0o644, b"x")),
            Code::INVALID_ARGUMENT,
            "parent \"lnk\" is not a directory",
        ),
        (
            "setuid is no mode for a dir kind change",
            d,
            |fx| put_one(fx, dir("k1", 0o755)),
            Code::INVALID_ARGUMENT,
            "remove it first",
        ),
        (
            "file type bits in mode",
            d,
            |fx| put_one(fx, file("m", 0o100644, b"x")),
            Code::INVALID_ARGUMENT,
            "invalid mode 0o100644",
        ),
        (
            "unspecified kind",
            d,
            |fx| {
                let mut e = file("k", 0o644, b"x");
                e.kind = pb::Kind::KIND_UNSPECIFIED.into();
                put_one(fx, e)
            },
            Code::INVALID_ARGUMENT,
            "kind is unspecified",
        ),
        (
            "data on a chunked file",
            d,
            |fx| {
                let mut e = chunked("k", 0o644, b"x");
                e.data = b"x".to_vec();
                put_one(fx, e)
            },
            Code::INVALID_ARGUMENT,
            "only files with SOURCE_INLINE carry data",
        ),
        (
            "remove of a missing path",
            d,
            |fx| {
                let t = txn(fx);
                fx.put(t, &["nope"], vec![]).unwrap_err()
            },
            Code::INVALID_ARGUMENT,
            "cannot remove \"nope\": no such entry",
        ),
        (
            "chunk for an unknown transaction",
            d,
            |fx| fx.chunk(0xdead_beef, "k1", 0, b"x").unwrap_err(),
            Code::NOT_FOUND,
            "unknown transaction 3735928559",
        ),
        (
            "chunk for a path that is not pending",
            d,
            |fx| {
                let t = txn(fx);
                fx.chunk(t, "k1", 0, b"x").unwrap_err()
            },
            Code::NOT_FOUND,
            "no pending file \"k1\"",
        ),
        (
            "chunk at the wrong offset",
            d,
            |fx| {
                let t = txn(fx);
                fx.put(t, &[], vec![chunked("big", 0o644, b"0123456789")])
                    .unwrap();
                fx.chunk(t, "big", 0, b"01234").unwrap();
                fx.chunk(t, "big", 7, b"789").unwrap_err()
            },
            Code::INVALID_ARGUMENT,
            "chunk for \"big\" at offset 7, expected 5",
        ),
        (
            "chunk too big",
            d,
            |fx| {
                let t = txn(fx);
                let data = vec![7u8; (1 << 20) + 1];
                fx.put(t, &[], vec![chunked("big", 0o644, &data)]).unwrap();
                fx.chunk(t, "big", 0, &data).unwrap_err()
            },
            Code::INVALID_ARGUMENT,
            "the largest chunk is 1048576",
        ),
        (
            "size that lies: too much data in chunks",
            d,
            |fx| {
                let t = txn(fx);
                fx.put(t, &[], vec![chunked("f", 0o644, b"abc")]).unwrap();
                fx.chunk(t, "f", 0, b"abcdefghij").unwrap_err()
            },
            Code::INVALID_ARGUMENT,
            "size lies: \"f\" was declared 3 bytes",
        ),
        (
            "size that lies: inline data longer than declared",
            d,
            |fx| {
                let mut e = file("f", 0o644, b"abc");
                e.data = b"abcdef".to_vec();
                put_one(fx, e)
            },
            Code::INVALID_ARGUMENT,
            "size lies: \"f\" was declared 3 bytes but 6 bytes were sent",
        ),
        (
            "size that lies: too little data, then commit",
            d,
            |fx| {
                let t = txn(fx);
                let e = chunked("f", 0o644, b"0123456789");
                let mut m = manifest(&v1());
                m.insert(ferry_proto::convert::entry_from_pb(&e).unwrap());
                fx.put(t, &[], vec![e]).unwrap();
                fx.chunk(t, "f", 0, b"01234").unwrap();
                fx.commit(t, &m.digest()).unwrap_err()
            },
            Code::FAILED_PRECONDITION,
            "1 file(s) still wait for content, the first is \"f\"",
        ),
        (
            "blake3 mismatch in chunks",
            d,
            |fx| {
                let t = txn(fx);
                let mut e = chunked("f", 0o644, b"expected");
                e.blake3 = blake3::hash(b"other").as_bytes().to_vec();
                fx.put(t, &[], vec![e]).unwrap();
                fx.chunk(t, "f", 0, b"expected").unwrap_err()
            },
            Code::INVALID_ARGUMENT,
            "blake3 mismatch for \"f\"",
        ),
        (
            "blake3 mismatch inline",
            d,
            |fx| {
                let mut e = file("f", 0o644, b"expected");
                e.data = b"tampered".to_vec();
                put_one(fx, e)
            },
            Code::INVALID_ARGUMENT,
            "blake3 mismatch for \"f\"",
        ),
        (
            "blake3 of the wrong length",
            d,
            |fx| {
                let mut e = file("f", 0o644, b"x");
                e.blake3.truncate(31);
                put_one(fx, e)
            },
            Code::INVALID_ARGUMENT,
            "blake3 must be 32 bytes, got 31",
        ),
        (
            "manifest digest mismatch",
            d,
            |fx| {
                let t = txn(fx);
                fx.put(t, &[], vec![file("k3", 0o644, b"3")]).unwrap();
                // The digest of the base, not of the new manifest.
                fx.commit(t, &manifest(&v1()).digest()).unwrap_err()
            },
            Code::INVALID_ARGUMENT,
            "manifest digest mismatch on commit of volume \"vol\"",
        ),
        (
            "source base not in the base version",
            d,
            |fx| put_one(fx, from_base("copy", 0o644, b"never sent")),
            Code::NOT_FOUND,
            "no file with blake3",
        ),
        (
            "quota: volume bytes",
            StoreLimits {
                max_volume_bytes: 1024,
                ..StoreLimits::default()
            },
            |fx| put_one(fx, file("big", 0o644, &[1u8; 1024])),
            Code::RESOURCE_EXHAUSTED,
            "quota exceeded: volume \"vol\" bytes would be 1050, the limit is 1024 (at \"big\")",
        ),
        (
            "quota: volume bytes of a chunked file is checked before any chunk",
            StoreLimits {
                max_volume_bytes: 1024,
                ..StoreLimits::default()
            },
            |fx| put_one(fx, chunked("big", 0o644, &[1u8; 4096])),
            Code::RESOURCE_EXHAUSTED,
            "volume \"vol\" bytes would be 4122",
        ),
        (
            "quota: volume files",
            StoreLimits {
                max_volume_files: 6,
                ..StoreLimits::default()
            },
            |fx| {
                let t = txn(fx);
                fx.put(t, &[], vec![file("a", 0o644, b""), file("b", 0o644, b"")])
                    .unwrap_err()
            },
            Code::RESOURCE_EXHAUSTED,
            "volume \"vol\" entries would be 7, the limit is 6 (at \"b\")",
        ),
        (
            "quota: store bytes",
            StoreLimits {
                max_store_bytes: 100,
                max_volume_bytes: 100,
                ..StoreLimits::default()
            },
            |fx| {
                // "vol" holds 26 bytes; another volume may not take 80.
                let b = fx.begin("other").unwrap();
                let err = fx
                    .put(b.txn_id, &[], vec![file("x", 0o644, &[0u8; 80])])
                    .unwrap_err();
                assert!(!fx.vol("other").exists(), "the new volume is gone again");
                err
            },
            Code::RESOURCE_EXHAUSTED,
            "store bytes would be 106, the limit is 100",
        ),
        (
            "quota: path length",
            StoreLimits {
                max_path_len: 8,
                ..StoreLimits::default()
            },
            |fx| put_one(fx, file("d/123456789", 0o644, b"")),
            Code::INVALID_ARGUMENT,
            "path too long",
        ),
        (
            "quota: number of volumes",
            StoreLimits {
                max_volumes: 1,
                ..StoreLimits::default()
            },
            |fx| fx.begin("second").unwrap_err(),
            Code::RESOURCE_EXHAUSTED,
            "cannot create volume \"second\", the store already holds 1 volumes",
        ),
        (
            "commit without begin",
            d,
            |fx| fx.commit(42, &manifest(&v1()).digest()).unwrap_err(),
            Code::NOT_FOUND,
            "unknown transaction 42",
        ),
        (
            "second concurrent transaction on one volume",
            d,
            |fx| {
                let first = fx.begin_with("vol", fx.digest("vol"), 1).unwrap();
                let err = fx.begin_with("vol", fx.digest("vol"), 2).unwrap_err();
                assert!(
                    err.to_string()
                        .contains(&format!("transaction {} in progress", first.txn_id)),
                    "{err}"
                );
                // The first one is still alive; drop it to check the rest.
                let mut a = pb::AbortRequest::new();
                a.txn_id = first.txn_id;
                fx.s().abort(&a).unwrap();
                err
            },
            Code::ABORTED,
            "volume \"vol\" is busy",
        ),
        (
            "base digest mismatch",
            d,
            |fx| fx.begin_with("vol", vec![7u8; 32], 0).unwrap_err(),
            Code::FAILED_PRECONDITION,
            "the guest holds generation 1 with digest",
        ),
        (
            "base digest of the wrong length",
            d,
            |fx| fx.begin_with("vol", vec![7u8; 5], 0).unwrap_err(),
            Code::INVALID_ARGUMENT,
            "a digest is 32 bytes, got 5",
        ),
        (
            "abort of an unknown transaction",
            d,
            |fx| {
                let mut a = pb::AbortRequest::new();
                a.txn_id = 99;
                fx.s().abort(&a).unwrap_err()
            },
            Code::NOT_FOUND,
            "unknown transaction 99",
        ),
    ]
}

#[test]
fn every_attack_is_refused_precisely_and_changes_nothing() {
    for (name, limits, attack, code, want) in cases() {
        let fx = Fx::new(limits);
        let (_, m) = fx.publish("vol", v1());
        fx.assert_intact("vol", &m);
        let err = attack(&fx);
        let msg = err.to_string();
        assert_eq!(err.code(), code, "{name}: {msg}");
        assert!(
            msg.contains(want),
            "{name}: {msg:?} should contain {want:?}"
        );
        fx.assert_intact("vol", &m);
        assert_eq!(fx.summary("vol").generation, 1, "{name}");
        assert_eq!(
            fx.s().status().open_transactions,
            0,
            "{name}: no transaction left open"
        );
        // And the volume still takes a normal sync.
        let (_, m2) = {
            let b = fx.begin("vol").unwrap();
            let mut entries = v1();
            entries.push(file("after", 0o644, b"fine"));
            let m2 = manifest(&entries);
            fx.put(b.txn_id, &[], vec![file("after", 0o644, b"fine")])
                .unwrap();
            fx.commit(b.txn_id, &m2.digest()).unwrap();
            ((), m2)
        };
        fx.assert_intact("vol", &m2);
    }
}

#[test]
fn errors_inside_a_transaction_say_it_was_aborted() {
    let fx = Fx::new(StoreLimits::default());
    fx.publish("vol", v1());
    let t = fx.begin("vol").unwrap().txn_id;
    let msg = fx
        .put(t, &[], vec![file("/abs", 0o644, b"")])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&format!(
            "transaction {t} aborted, the current version of volume \"vol\" is untouched"
        )),
        "{msg}"
    );
}

#[test]
fn a_failed_first_transaction_leaves_no_volume() {
    let fx = Fx::new(StoreLimits::default());
    let b = fx.begin("fresh").unwrap();
    assert!(fx.vol("fresh").join(format!("..{}", b.version)).is_dir());
    fx.put(b.txn_id, &[], vec![file("../x", 0o644, b"")])
        .unwrap_err();
    assert!(!fx.vol("fresh").exists());
    assert_eq!(fx.summary("fresh").generation, 0);
    fx.assert_sentinel();
}

#[test]
fn same_client_preempts_its_own_stale_transaction() {
    let fx = Fx::new(StoreLimits::default());
    let (_, m) = fx.publish("vol", v1());
    let old = fx.begin_with("vol", fx.digest("vol"), 7).unwrap();
    fx.put(old.txn_id, &[], vec![file("half", 0o644, b"h")])
        .unwrap();
    let new = fx.begin_with("vol", fx.digest("vol"), 7).unwrap();
    assert_ne!(old.txn_id, new.txn_id);
    let err = fx.put(old.txn_id, &[], vec![]).unwrap_err();
    assert_eq!(err.code(), Code::NOT_FOUND, "{err}");
    fx.commit(new.txn_id, &m.digest()).unwrap();
    fx.assert_intact("vol", &m);
    assert_eq!(fx.summary("vol").generation, 2);
}
