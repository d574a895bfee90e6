//! What crosses the wire, measured by a byte-counting proxy between the real
//! `ferry sync` and the real `ferry-agent`: only what changed, also after a
//! restart of either side.
mod common;

use std::path::Path;

use common::*;
use ferry_host::{
    kubelet::{AtomicWriter, Payload},
    proxy::CountingProxy,
};

const KEYS: usize = 100;
const KEY_BYTES: usize = (1 << 20) / KEYS; // 100 keys, 1 MiB in all

/// Incompressible, distinct content per key and generation.
fn content(key: usize, generation: u32) -> Vec<u8> {
    let mut out = vec![0u8; KEY_BYTES];
    let mut h = blake3::Hasher::new();
    h.update(format!("{key}/{generation}").as_bytes());
    h.finalize_xof().fill(&mut out);
    out
}

fn big_payload() -> Payload {
    (0..KEYS)
        .map(|k| {
            (
                format!("key-{k:03}"),
                ferry_host::kubelet::FileProjection {
                    data: content(k, 0),
                    mode: 0o644,
                },
            )
        })
        .collect()
}

struct Rig {
    _rt: tokio::runtime::Runtime,
    proxy: CountingProxy,
}

impl Rig {
    fn new(dir: &Path, upstream: &Path) -> Rig {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let proxy = {
            let _g = rt.enter();
            CountingProxy::start(&dir.join("proxy.sock"), upstream).unwrap()
        };
        Rig { _rt: rt, proxy }
    }
    fn addr(&self) -> String {
        format!("unix://{}", self.proxy.path.display())
    }
    fn sent(&self) -> u64 {
        self.proxy.counters.sent()
    }
}

#[test]
fn a_one_byte_change_in_a_100_key_1mib_volume_sends_about_one_key() {
    let t = tempfile::tempdir().unwrap();
    let agent = Agent::start(t.path(), &t.path().join("guest"), &[]);
    let rig = Rig::new(t.path(), &agent.sock);
    let vol = t.path().join("vol");
    let w = AtomicWriter::new(&vol).unwrap();
    let mut p = big_payload();
    w.write(&p).unwrap();
    let watch = Watch::start(t.path(), &rig.addr(), &[("big", &vol)]);
    let guest = agent.volume("big");
    let logs = || format!("{}\n{}", agent.log_text(), watch.log_text());
    wait_mirrored(&vol, &guest, "initial", &logs);
    let cold = rig.sent();
    assert!(
        cold >= (KEYS * KEY_BYTES) as u64,
        "cold sync sent only {cold} bytes"
    );

    let before = rig.sent();
    p.get_mut("key-042").unwrap().data[7] ^= 1;
    w.write(&p).unwrap();
    wait_mirrored(&vol, &guest, "one-byte change", &logs);
    let sent = rig.sent() - before;
    println!(
        "one-byte change: {sent} bytes host->guest (key {KEY_BYTES} B, volume {} B, cold sync {cold} B)",
        KEYS * KEY_BYTES
    );
    assert!(
        sent <= (KEY_BYTES + 2048) as u64,
        "sent {sent} bytes for a one-byte change of one {KEY_BYTES}-byte key"
    );
    assert_clean_layout(&guest);
}

#[test]
fn after_an_agent_restart_the_resync_sends_only_what_differs() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("guest");
    let mut agent = Agent::start(t.path(), &root, &[]);
    let rig = Rig::new(t.path(), &agent.sock);
    let vol = t.path().join("vol");
    let w = AtomicWriter::new(&vol).unwrap();
    let mut p = big_payload();
    w.write(&p).unwrap();
    let watch = Watch::start(t.path(), &rig.addr(), &[("big", &vol)]);
    let guest = root.join("volumes/big");
    wait_mirrored(&vol, &guest, "initial", &|| watch.log_text());

    // The guest dies hard; the node changes one key meanwhile.
    agent.kill();
    let before = rig.sent();
    p.get_mut("key-007").unwrap().data = content(7, 1);
    w.write(&p).unwrap();
    let agent = Agent::start(t.path(), &root, &[]);
    let logs = || format!("{}\n{}", agent.log_text(), watch.log_text());
    wait_mirrored(&vol, &guest, "after agent restart", &logs);
    let sent = rig.sent() - before;
    println!("resync after agent restart: {sent} bytes host->guest");
    assert!(
        sent <= (KEY_BYTES + 2048) as u64,
        "resync after agent restart sent {sent} bytes:\n{}",
        logs()
    );
    assert_clean_layout(&guest);
}

#[test]
fn after_a_host_restart_the_resync_sends_only_what_differs() {
    let t = tempfile::tempdir().unwrap();
    let agent = Agent::start(t.path(), &t.path().join("guest"), &[]);
    let rig = Rig::new(t.path(), &agent.sock);
    let vol = t.path().join("vol");
    let w = AtomicWriter::new(&vol).unwrap();
    let mut p = big_payload();
    w.write(&p).unwrap();
    let out = sync_once(&rig.addr(), &[("big", &vol)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A new host process knows nothing: it reads the guest's manifest and
    // sends the difference (a changed key and a removed one).
    p.get_mut("key-099").unwrap().data = content(99, 1);
    p.remove("key-000");
    w.write(&p).unwrap();
    let before = rig.sent();
    let out = sync_once(&rig.addr(), &[("big", &vol)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent = rig.sent() - before;
    println!("resync by a new host process: {sent} bytes host->guest");
    assert!(sent <= (KEY_BYTES + 2048) as u64, "sent {sent} bytes");
    let guest = agent.volume("big");
    assert_eq!(manifest_of(&guest), manifest_of(&vol));
    assert_clean_layout(&guest);
}

#[test]
fn a_guest_that_lost_its_store_gets_everything_again() {
    let t = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(t.path(), &t.path().join("guest-1"), &[]);
    let rig = Rig::new(t.path(), &agent.sock);
    let vol = t.path().join("vol");
    let w = AtomicWriter::new(&vol).unwrap();
    w.write(&big_payload()).unwrap();
    let watch = Watch::start(t.path(), &rig.addr(), &[("big", &vol)]);
    wait_mirrored(&vol, &agent.volume("big"), "initial", &|| watch.log_text());
    // The VM rebooted: same address, empty store.
    agent.kill();
    let before = rig.sent();
    let agent = Agent::start(t.path(), &t.path().join("guest-2"), &[]);
    let logs = || format!("{}\n{}", agent.log_text(), watch.log_text());
    wait_mirrored(
        &vol,
        &agent.volume("big"),
        "after the guest lost its store",
        &logs,
    );
    let sent = rig.sent() - before;
    assert!(
        sent >= (KEYS * KEY_BYTES) as u64,
        "only {sent} bytes resent to an empty guest"
    );
    assert_clean_layout(&agent.volume("big"));
}
