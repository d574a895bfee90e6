//! The agent's store on its own tmpfs, as in a real guest: mounted by
//! `ferry-agent --tmpfs` with `nosuid,nodev,noexec,mode=0700,size=`, in a
//! private mount namespace (`unshare -m`) so the test leaves no mount behind.
//! Needs root; skips with the reason otherwise.
mod common;

use std::fs;

use common::*;

#[test]
fn the_store_is_a_confined_tmpfs_and_a_full_store_loses_nothing() {
    if let Err(why) = private_mount_ns_available() {
        eprintln!("skipping the tmpfs test: {why}");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    fs::create_dir(&store).unwrap();
    let agent = NsAgent::start(t.path(), &store, &["--tmpfs", "4Mi"]);
    let pid = agent.pid();
    let mountinfo = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let line = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(store.to_str().unwrap()))
        .unwrap_or_else(|| {
            panic!(
                "no mount at {} in the agent's namespace:\n{mountinfo}",
                store.display()
            )
        });
    let fields: Vec<&str> = line.split(' ').collect();
    let opts = fields[5];
    for want in ["nosuid", "nodev", "noexec"] {
        assert!(opts.split(',').any(|o| o == want), "{want} missing: {line}");
    }
    let sep = fields.iter().position(|f| *f == "-").unwrap();
    assert_eq!(fields[sep + 1], "tmpfs", "{line}");
    let sopts = fields[sep + 3];
    assert!(sopts.contains("size=4096k"), "{line}");
    assert!(sopts.contains("mode=700"), "{line}");
    // The mount is the agent's alone: the test's namespace sees an empty dir.
    assert_eq!(fs::read_dir(&store).unwrap().count(), 0);

    let addr = agent.addr();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("small"), b"fits").unwrap();
    let out = sync_once(&addr, &[("v", &src)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let guest = format!("/proc/{pid}/root{}/volumes/v", store.display());
    assert_eq!(fs::read(format!("{guest}/small")).unwrap(), b"fits");

    // More than the tmpfs holds: refused as a full store, old version whole.
    fs::write(src.join("big"), vec![7u8; 6 << 20]).unwrap();
    let out = sync_once(&addr, &[("v", &src)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("RESOURCE_EXHAUSTED") && err.contains("store full"),
        "{err}"
    );
    assert_eq!(fs::read(format!("{guest}/small")).unwrap(), b"fits");
    assert!(fs::symlink_metadata(format!("{guest}/big")).is_err());
    let names: Vec<_> = fs::read_dir(&guest)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 3, "staging left behind: {names:?}");

    let mut agent = agent;
    terminate(&agent.child);
    assert!(
        agent.child.wait().unwrap().success(),
        "{}",
        fs::read_to_string(&agent.log).unwrap()
    );
}
