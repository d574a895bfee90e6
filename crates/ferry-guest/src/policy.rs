//! What the guest does to the modes the host sends. Modes, uid and gid come
//! from the source (fsGroup semantics preserved), but the guest has the last
//! word: by default no file ever gets a setuid or setgid bit, whatever the
//! host says. Directories keep setgid: that is how fsGroup makes new files
//! inherit the group. The manifests keep the host's *logical* entries, so
//! digests still agree after clamping.
use ferry_tree::{Entry, Kind};

/// The guest's clamping policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep setuid/setgid bits on files (off by default).
    pub allow_setuid: bool,
}

impl Policy {
    /// The permission bits actually applied on disk for `e`. Logs a strip.
    pub fn disk_mode(&self, volume: &str, e: &Entry) -> u32 {
        let mode = e.mode & 0o7777;
        if e.kind == Kind::File && !self.allow_setuid && mode & 0o6000 != 0 {
            let clamped = mode & !0o6000;
            tracing::warn!(
                volume,
                path = %e.path,
                "stripped setuid/setgid bits: mode {mode:#o} -> {clamped:#o} (pass --allow-setuid to keep them)"
            );
            return clamped;
        }
        mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_lose_setuid_and_setgid_dirs_keep_setgid() {
        let p = Policy::default();
        assert_eq!(
            p.disk_mode("v", &Entry::file("f", 0o6755, 0, 0, b"")),
            0o755
        );
        assert_eq!(
            p.disk_mode("v", &Entry::file("f", 0o1644, 0, 0, b"")),
            0o1644
        );
        assert_eq!(p.disk_mode("v", &Entry::dir("d", 0o2775, 0, 0)), 0o2775);
        let allow = Policy { allow_setuid: true };
        assert_eq!(
            allow.disk_mode("v", &Entry::file("f", 0o4755, 0, 0, b"")),
            0o4755
        );
    }
}
