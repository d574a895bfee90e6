//! A pod's directory on a stand-in node, laid out as kubelet lays it out:
//!
//! ```text
//! <kubelet-root>/pods/<uid>/volumes/kubernetes.io~<plugin>/<volume>/   (AtomicWriter)
//! <kubelet-root>/pods/<uid>/etc-hosts                                  (0644)
//! <kubelet-root>/pods/<uid>/containers/<container>/<id>                (termination log, 0666)
//! ```
use std::{fs, io, os::unix::fs::PermissionsExt, path::PathBuf};

use super::atomic_writer::{AtomicWriter, Ownership};
use crate::bundle::ApiVolume;

/// One pod under a kubelet root.
#[derive(Debug, Clone)]
pub struct Pod {
    pub kubelet_root: PathBuf,
    pub uid: String,
}

impl Pod {
    /// Creates `<kubelet_root>/pods/<uid>/` (0750, as kubelet does).
    pub fn new(kubelet_root: impl Into<PathBuf>, uid: &str) -> io::Result<Self> {
        let pod = Self {
            kubelet_root: kubelet_root.into(),
            uid: uid.into(),
        };
        for d in ["volumes", "containers", "plugins"] {
            fs::create_dir_all(pod.dir().join(d))?;
        }
        fs::set_permissions(pod.dir(), fs::Permissions::from_mode(0o750))?;
        Ok(pod)
    }

    /// `<kubelet_root>/pods/<uid>`.
    pub fn dir(&self) -> PathBuf {
        self.kubelet_root.join("pods").join(&self.uid)
    }

    /// Where kubelet keeps the volume `name` of `plugin`.
    pub fn volume_dir(&self, plugin: ApiVolume, name: &str) -> PathBuf {
        self.dir()
            .join("volumes")
            .join(plugin.dir_name())
            .join(name)
    }

    /// An AtomicWriter for that volume, applying `owner` (fsGroup, fsUser).
    pub fn writer(
        &self,
        plugin: ApiVolume,
        name: &str,
        owner: Ownership,
    ) -> io::Result<AtomicWriter> {
        Ok(AtomicWriter::new(self.volume_dir(plugin, name))?.with_ownership(owner))
    }

    /// An emptyDir volume (a plain directory ferry leaves alone).
    pub fn empty_dir(&self, name: &str) -> io::Result<PathBuf> {
        let d = self
            .dir()
            .join("volumes/kubernetes.io~empty-dir")
            .join(name);
        fs::create_dir_all(&d)?;
        Ok(d)
    }

    /// Writes the pod's `etc-hosts` (0644), as kubelet does before the first
    /// container starts; a later write changes the same file.
    pub fn write_etc_hosts(&self, content: &[u8]) -> io::Result<PathBuf> {
        let p = self.dir().join("etc-hosts");
        fs::write(&p, content)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644))?;
        Ok(p)
    }

    /// Creates a container's empty termination-log file (0666), as kubelet
    /// does before starting it.
    pub fn termination_log(&self, container: &str, id: &str) -> io::Result<PathBuf> {
        let d = self.dir().join("containers").join(container);
        fs::create_dir_all(&d)?;
        let p = d.join(id);
        fs::write(&p, b"")?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o666))?;
        Ok(p)
    }
}

/// The hosts file kubelet writes for a pod (`managedHostsHeader` and the
/// pod's own address).
pub fn etc_hosts(pod_ip: &str, hostname: &str) -> Vec<u8> {
    format!(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n{pod_ip}\t{hostname}\n"
    )
    .into_bytes()
}
