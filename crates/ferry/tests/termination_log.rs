//! `ferry termination-log` with the real binaries: the guest's copy (a file
//! volume the container wrote to) read back and written where kubelet looks,
//! capped at kubelet's 4096 bytes, atomically; a missing volume is an error
//! that leaves the node path alone.
mod common;

use std::{fs, path::Path, process::Command};

use common::*;

fn collect(addr: &str, volume: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(FERRY)
        .args([
            "termination-log",
            "--connect",
            addr,
            "--volume",
            volume,
            "--out",
        ])
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn the_termination_log_comes_back_capped_and_whole() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("guest");
    let agent = Agent::start(t.path(), &root, &[]);
    let src = t.path().join("termination-log");
    fs::write(&src, b"").unwrap();
    let o = Command::new(FERRY)
        .args(["sync", "--connect", &agent.addr(), "--file"])
        .arg(format!("tl={}", src.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let guest = root.join("files/tl");
    let node = t.path().join("node/termination-log");
    fs::create_dir_all(node.parent().unwrap()).unwrap();

    // The container writes its message into its (read-write) mount of the
    // guest file.
    fs::write(&guest, b"exit: config missing\n").unwrap();
    let o = collect(&agent.addr(), "tl", &node, &[]);
    let say = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fs::read(&node).unwrap(), b"exit: config missing\n");
    assert!(say.contains("wrote 21 bytes of volume tl"), "{say}");
    assert!(!say.contains("truncated"), "{say}");

    let long: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    fs::write(&guest, &long).unwrap();
    let o = collect(&agent.addr(), "tl", &node, &[]);
    let say = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    // The end of the message, as kubelet keeps it.
    assert_eq!(fs::read(&node).unwrap(), &long[10_000 - 4096..]);
    assert!(
        say.contains("wrote 4096 of 10000 bytes") && say.contains("kept the last 4096 bytes"),
        "{say}"
    );
    let o = collect(&agent.addr(), "tl", &node, &["--max-bytes", "10"]);
    assert!(o.status.success());
    assert_eq!(fs::read(&node).unwrap(), &long[10_000 - 10..]);

    // Refusals leave the node file as it was, and no temp file behind.
    for (volume, extra, want) in [
        (
            "gone",
            &[][..],
            "NOT_FOUND: no volume \"gone\" in the store",
        ),
        ("tl", &["--path", "x"][..], "INVALID_ARGUMENT"),
        (
            "tl",
            &["--max-bytes", "0"][..],
            "max bytes 0: must be between 1",
        ),
    ] {
        let o = collect(&agent.addr(), volume, &node, extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{volume} {extra:?}");
        assert!(err.contains(want), "{volume} {extra:?}: {err}");
        assert_eq!(fs::read(&node).unwrap(), &long[10_000 - 10..]);
        assert_eq!(fs::read_dir(node.parent().unwrap()).unwrap().count(), 1);
    }
}
