//! The termination log, read back from the guest.
//!
//! A container writes its termination message into the file kubelet
//! bind-mounts at `terminationMessagePath`; in a VM sandbox that file is the
//! guest's copy (a file volume mounted read-write). When the container
//! stops, the host reads it with `ReadFile` and writes it where kubelet
//! looks on the node, capped as kubelet caps it (its last 4096 bytes, as
//! kubelet's `tail.ReadAtMost` keeps the end of a long message), atomically
//! (temp file, fsync, rename, fsync of the directory), so kubelet never
//! reads half a message.
use std::{
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use ferry_proto::Address;

use crate::{
    client::AgentClient,
    error::{HostError, Result},
};

/// kubelet's cap on a termination message, in bytes.
pub const KUBELET_MAX_BYTES: u64 = 4096;

/// The most one read may ask for (the agent's own cap).
pub const MAX_BYTES: u64 = ferry_proto::MAX_CHUNK_BYTES as u64;

/// What [`collect_termination_log`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    /// Where the message was written.
    pub out: PathBuf,
    /// Bytes written there.
    pub written: u64,
    /// The guest file's full size.
    pub size: u64,
    /// True when the guest file was longer than what was written.
    pub truncated: bool,
}

/// Reads the termination log of `volume` (a file volume, `path` `None`; or
/// the file `path` of a tree volume) from the agent behind `client`, keeps
/// its last `max_bytes` at most (1..=[`MAX_BYTES`]; kubelet uses
/// [`KUBELET_MAX_BYTES`]: the end of a message says why the container
/// stopped) and writes them to `out` on this node atomically.
/// A guest that has no such volume or file is an error (`NOT_FOUND` from
/// the agent), and `out` is left as it was.
pub async fn collect_termination_log(
    client: &AgentClient,
    volume: &str,
    path: Option<&str>,
    out: &Path,
    max_bytes: u64,
) -> Result<Collected> {
    if max_bytes == 0 || max_bytes > MAX_BYTES {
        return Err(HostError::Protocol(format!(
            "max bytes {max_bytes}: must be between 1 and {MAX_BYTES}"
        )));
    }
    let r = client
        .read_file(volume, path.unwrap_or(""), max_bytes, true)
        .await?;
    let (out_path, data) = (out.to_path_buf(), r.data);
    let written = data.len() as u64;
    tokio::task::spawn_blocking(move || write_atomically(&out_path, &data))
        .await
        .map_err(|e| HostError::Protocol(format!("writing task failed: {e}")))??;
    Ok(Collected {
        out: out.to_path_buf(),
        written,
        size: r.size,
        truncated: r.truncated,
    })
}

/// `ferry termination-log`: connect, collect, report.
pub async fn run(
    addr: &Address,
    volume: &str,
    path: Option<&str>,
    out: &Path,
    max_bytes: u64,
    timeout: Duration,
) -> Result<Collected> {
    let client = AgentClient::connect(addr, "ferry termination-log", 0, timeout).await?;
    collect_termination_log(&client, volume, path, out, max_bytes).await
}

/// Writes `data` to `out` through a temp file in the same directory: the
/// reader sees the old file or the whole new one. An existing file's mode is
/// kept; a new one is 0644.
fn write_atomically(out: &Path, data: &[u8]) -> Result<()> {
    let io = |path: &Path, source| HostError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mode = std::fs::metadata(out).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    let mut tmp = tempfile::Builder::new()
        .prefix(".termination-log.")
        .tempfile_in(dir)
        .map_err(|e| io(dir, e))?;
    tmp.write_all(data)
        .and_then(|()| {
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(mode))
        })
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| io(tmp.path(), e))?;
    tmp.persist(out).map_err(|e| io(out, e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_whole_and_keeps_its_mode() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("termination-log");
        write_atomically(&out, b"first").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"first");
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o7777,
            0o644
        );
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_atomically(&out, b"second").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"second");
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file left behind");
        assert!(write_atomically(&t.path().join("no/such/dir/x"), b"x").is_err());
    }
}
