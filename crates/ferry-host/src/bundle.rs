//! Discovery from an OCI bundle: which of a container's mounts carry pod data
//! ferry must copy into the guest, under which guest names, and the spec
//! with those mounts pointed at their guest copies.
//!
//! A mount is selected when it is a bind mount of
//!
//! - a kubelet API volume, `<kubelet-root>/pods/<uid>/volumes/kubernetes.io~{secret,configmap,projected,downward-api}/<vol>`
//!   (a *tree* volume, named `<plugin>-<vol>`);
//! - a file inside one of those (a subPath; a *file* volume named
//!   `<plugin>-<vol>-<path>`), or kubelet's own subPath bind mount
//!   `pods/<uid>/volume-subpaths/<vol>/<container>/<n>` of such a file
//!   (found by its inode in the volume's current version);
//! - the pod's `<kubelet-root>/pods/<uid>/etc-hosts` (`etc-hosts`);
//! - a container's termination log `<kubelet-root>/pods/<uid>/containers/<name>/<id>`
//!   (`termination-log-<name>`);
//! - a regular file mounted at `/etc/hostname` or `/etc/resolv.conf` (the
//!   runtime writes those for the pod, outside the kubelet root:
//!   `hostname`, `resolv.conf`).
//!
//! kubelet's root is resolved through symlinks (k0s, microk8s and others
//! move it), so is every selected source, and a source that resolves outside
//! the root is refused: a symlink planted in a pod directory must not make
//! ferry copy the node's files into a guest. Every other mount is left
//! exactly as it is, and those that a user might expect ferry to carry
//! (emptyDir, hostPath, devices, other volume plugins) are reported with the
//! reason.
//!
//! Nothing here writes: [`Discovery::load`] either returns the whole plan or
//! the first precise error.
use std::{
    collections::BTreeMap,
    fmt, fs, io,
    os::unix::fs::FileTypeExt,
    path::{Component, Path, PathBuf},
};

use ferry_tree::VolumeKind;
use serde_json::Value;

/// Why a bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle {path}: cannot read config.json: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not JSON: {source}")]
    NotJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path} is not an OCI runtime spec: {why}")]
    NotOciSpec { path: PathBuf, why: String },
    #[error("kubelet root {path}: {source}")]
    KubeletRoot { path: PathBuf, source: io::Error },
    #[error("mount {destination}: source {source_path} does not exist")]
    Missing {
        destination: String,
        source_path: PathBuf,
    },
    #[error("mount {destination}: source {source_path}: {source}")]
    Io {
        destination: String,
        source_path: PathBuf,
        source: io::Error,
    },
    #[error(
        "mount {destination}: source {source_path} resolves to {resolved}, outside the kubelet root {root}: refused"
    )]
    Escapes {
        destination: String,
        source_path: PathBuf,
        resolved: PathBuf,
        root: PathBuf,
    },
    #[error("mount {destination}: source {source_path} is {what}, expected {expected}")]
    WrongType {
        destination: String,
        source_path: PathBuf,
        what: &'static str,
        expected: &'static str,
    },
    #[error(
        "mounts {first} and {second} both carry {name} ({source_path}): mount each volume once"
    )]
    Duplicate {
        name: String,
        source_path: PathBuf,
        first: String,
        second: String,
    },
    #[error("mount {destination}: no valid guest volume name can be made from {source_path}")]
    BadName {
        destination: String,
        source_path: PathBuf,
    },
}

/// The kubelet volume plugins whose data ferry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApiVolume {
    Secret,
    ConfigMap,
    Projected,
    DownwardApi,
}

impl ApiVolume {
    /// Every plugin ferry carries.
    pub const ALL: [ApiVolume; 4] = [
        ApiVolume::Secret,
        ApiVolume::ConfigMap,
        ApiVolume::Projected,
        ApiVolume::DownwardApi,
    ];

    /// The plugin's directory under `pods/<uid>/volumes/`.
    pub fn dir_name(self) -> &'static str {
        match self {
            ApiVolume::Secret => "kubernetes.io~secret",
            ApiVolume::ConfigMap => "kubernetes.io~configmap",
            ApiVolume::Projected => "kubernetes.io~projected",
            ApiVolume::DownwardApi => "kubernetes.io~downward-api",
        }
    }

    /// The prefix of its guest volume names.
    pub fn short(self) -> &'static str {
        match self {
            ApiVolume::Secret => "secret",
            ApiVolume::ConfigMap => "configmap",
            ApiVolume::Projected => "projected",
            ApiVolume::DownwardApi => "downward-api",
        }
    }

    fn from_dir_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.dir_name() == s)
    }
}

/// What a selected mount carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Carried {
    /// A whole API volume.
    Volume {
        plugin: ApiVolume,
        volume: String,
    },
    /// One file of an API volume (a subPath mount).
    SubPath {
        plugin: ApiVolume,
        volume: String,
        path: String,
    },
    EtcHosts,
    Hostname,
    ResolvConf,
    /// A container's termination log: read back from the guest when the
    /// container stops.
    TerminationLog {
        container: String,
    },
}

impl fmt::Display for Carried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Carried::Volume { plugin, volume } => write!(f, "{} volume {volume}", plugin.short()),
            Carried::SubPath {
                plugin,
                volume,
                path,
            } => write!(f, "{path} of {} volume {volume} (subPath)", plugin.short()),
            Carried::EtcHosts => f.write_str("the pod's /etc/hosts"),
            Carried::Hostname => f.write_str("the pod's hostname"),
            Carried::ResolvConf => f.write_str("the pod's resolv.conf"),
            Carried::TerminationLog { container } => {
                write!(f, "the termination log of container {container}")
            }
        }
    }
}

/// A mount ferry carries into the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// Its index in the spec's `mounts`.
    pub index: usize,
    pub destination: String,
    /// The source as the spec gives it.
    pub source: PathBuf,
    /// What ferry syncs: the volume directory (resolved), or the file as
    /// readers on the node see it (a subPath goes through the volume's
    /// visible link, so each sync reads the current version).
    pub host_path: PathBuf,
    pub carried: Carried,
    /// Its name in the guest.
    pub name: String,
    pub kind: VolumeKind,
    /// Where it is in the guest: the new mount source.
    pub guest_path: PathBuf,
    /// kubelet mounts API volumes read-only: `ro` is added.
    pub read_only: bool,
}

/// A bind mount ferry leaves as it is, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    pub index: usize,
    pub destination: String,
    pub source: PathBuf,
    pub reason: String,
}

/// A bundle read and its mounts sorted out.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// The spec as read (every field kept, including ones this ferry does
    /// not know).
    spec: Value,
    pub selected: Vec<Selected>,
    pub left: Vec<Left>,
    /// The kubelet root, resolved.
    pub kubelet_root: PathBuf,
}

/// Where kubelet keeps its state unless told otherwise.
pub const DEFAULT_KUBELET_ROOT: &str = "/var/lib/kubelet";
/// ferry-agent's default store.
pub const DEFAULT_GUEST_ROOT: &str = "/run/ferry";

impl Discovery {
    /// Reads `<bundle>/config.json` and sorts its mounts out.
    pub fn load(
        bundle: &Path,
        kubelet_root: &Path,
        guest_root: &Path,
    ) -> Result<Self, BundleError> {
        let path = bundle.join("config.json");
        let text = fs::read(&path).map_err(|source| BundleError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(&path, &text, kubelet_root, guest_root)
    }

    /// [`Discovery::load`] on the bytes of a config.json (`path` names it in
    /// errors).
    pub fn parse(
        path: &Path,
        text: &[u8],
        kubelet_root: &Path,
        guest_root: &Path,
    ) -> Result<Self, BundleError> {
        let spec: Value = serde_json::from_slice(text).map_err(|source| BundleError::NotJson {
            path: path.to_path_buf(),
            source,
        })?;
        let not_oci = |why: String| BundleError::NotOciSpec {
            path: path.to_path_buf(),
            why,
        };
        if !spec.is_object() {
            return Err(not_oci("the document is not a JSON object".into()));
        }
        let oci: oci_spec::runtime::Spec = serde_json::from_value(spec.clone())
            .map_err(|e| not_oci(field_error(&spec).unwrap_or_else(|| e.to_string())))?;
        if !oci.version().starts_with("1.") {
            return Err(not_oci(format!(
                "ociVersion is {:?}, expected 1.x",
                oci.version()
            )));
        }
        let root_given = kubelet_root.to_path_buf();
        let root = fs::canonicalize(kubelet_root).map_err(|source| BundleError::KubeletRoot {
            path: root_given.clone(),
            source,
        })?;
        let mut d = Discovery {
            spec,
            selected: Vec::new(),
            left: Vec::new(),
            kubelet_root: root.clone(),
        };
        let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
        for (index, m) in oci.mounts().iter().flatten().enumerate() {
            let destination = m.destination().display().to_string();
            let opts = m.options().clone().unwrap_or_default();
            let is_bind = m.typ().as_deref() == Some("bind")
                || opts.iter().any(|o| o == "bind" || o == "rbind");
            let Some(source) = m.source().clone() else {
                continue;
            };
            if !is_bind {
                // proc, tmpfs, sysfs, mqueue...: the guest's own.
                continue;
            }
            let leave = |reason: String| Left {
                index,
                destination: destination.clone(),
                source: source.clone(),
                reason,
            };
            let rel = strip_root(&source, &root_given).or_else(|| strip_root(&source, &root));
            // What ferry reads: the source itself, except for a subPath
            // kubelet bind-mounted, read from the volume file it is.
            let mut effective = source.clone();
            let carried = match rel.as_deref() {
                Some(rel) => match kubelet_subpath(&root, rel, &source) {
                    Some(Ok((c, file))) => {
                        effective = file;
                        c
                    }
                    Some(Err(reason)) => {
                        d.left.push(leave(reason));
                        continue;
                    }
                    None => match classify(rel) {
                        Ok(c) => c,
                        Err(reason) => {
                            d.left.push(leave(reason));
                            continue;
                        }
                    },
                },
                None if destination == "/etc/hostname" => Carried::Hostname,
                None if destination == "/etc/resolv.conf" => Carried::ResolvConf,
                None => {
                    d.left.push(leave(outside_reason(&source)));
                    continue;
                }
            };
            let sel = select(
                index,
                &destination,
                (&source, &effective),
                carried,
                &root,
                guest_root,
            )?;
            if let Some(&first) = by_name.get(&sel.name) {
                return Err(BundleError::Duplicate {
                    name: sel.name,
                    source_path: source,
                    first: d.selected[first].destination.clone(),
                    second: destination,
                });
            }
            by_name.insert(sel.name.clone(), d.selected.len());
            d.selected.push(sel);
        }
        Ok(d)
    }

    /// The spec as read.
    pub fn spec(&self) -> &Value {
        &self.spec
    }

    /// The spec with each selected mount's source replaced by its guest
    /// path (and `ro` for read-only ones); everything else as it was.
    pub fn rewritten(&self) -> Value {
        let mut spec = self.spec.clone();
        let Some(mounts) = spec.get_mut("mounts").and_then(Value::as_array_mut) else {
            return spec;
        };
        for s in &self.selected {
            let Some(m) = mounts.get_mut(s.index).and_then(Value::as_object_mut) else {
                continue;
            };
            m.insert(
                "source".into(),
                Value::String(s.guest_path.display().to_string()),
            );
            if s.read_only {
                let mut opts: Vec<Value> = m
                    .get("options")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                opts.retain(|o| o.as_str() != Some("rw"));
                if !opts.iter().any(|o| o.as_str() == Some("ro")) {
                    opts.push(Value::String("ro".into()));
                }
                m.insert("options".into(), Value::Array(opts));
            }
        }
        spec
    }
}

/// Which top-level field of `spec` makes it fail to parse, and why (serde
/// alone does not say where): each field is tried on its own.
fn field_error(spec: &Value) -> Option<String> {
    let obj = spec.as_object()?;
    obj.iter().find_map(|(k, v)| {
        let one = serde_json::json!({ k.clone(): v.clone() });
        serde_json::from_value::<oci_spec::runtime::Spec>(one)
            .err()
            .map(|e| format!("field {k:?}: {e}"))
    })
}

/// `p` relative to `root` if it is lexically under it (".." refused).
fn strip_root(p: &Path, root: &Path) -> Option<PathBuf> {
    let rel = p.strip_prefix(root).ok()?;
    if rel.components().all(|c| matches!(c, Component::Normal(_))) {
        Some(rel.to_path_buf())
    } else {
        None
    }
}

/// What a source under the kubelet root is, or why ferry leaves it.
fn classify(rel: &Path) -> Result<Carried, String> {
    let parts: Vec<&str> = rel
        .iter()
        .map(|c| c.to_str().unwrap_or("\u{fffd}"))
        .collect();
    match parts.as_slice() {
        ["pods", _uid, "etc-hosts"] => Ok(Carried::EtcHosts),
        ["pods", _uid, "containers", container, _id] => Ok(Carried::TerminationLog {
            container: container.to_string(),
        }),
        ["pods", _uid, "volumes", plugin, volume, rest @ ..] => {
            match ApiVolume::from_dir_name(plugin) {
                Some(plugin) if rest.is_empty() => Ok(Carried::Volume {
                    plugin,
                    volume: volume.to_string(),
                }),
                Some(plugin) => Ok(Carried::SubPath {
                    plugin,
                    volume: volume.to_string(),
                    path: rest.join("/"),
                }),
                None if *plugin == "kubernetes.io~empty-dir" => Err(
                    "an emptyDir is scratch space of the sandbox itself, not node data: give the guest its own (ferry leaves it)".into(),
                ),
                None => Err(format!(
                    "a {} volume is storage the runtime attaches, not API data ferry copies (ferry leaves it)",
                    plugin.trim_start_matches("kubernetes.io~")
                )),
            }
        }
        _ => Err("a kubelet file that is not pod API data (ferry leaves it)".into()),
    }
}

/// A subPath as kubelet mounts it for a runtime:
/// `pods/<uid>/volume-subpaths/<vol>/<container>/<index>`, a bind mount of
/// the file it named in the volume's version at the time. The file is found
/// by its inode in the current version of the API volume `<vol>`; ferry
/// then reads that key through the volume, so the guest copy follows every
/// update. `None` when `rel` is not such a path; `Err` with the reason to
/// leave it.
fn kubelet_subpath(
    root: &Path,
    rel: &Path,
    source: &Path,
) -> Option<std::result::Result<(Carried, PathBuf), String>> {
    use std::os::unix::fs::MetadataExt;
    let parts: Vec<&str> = rel.iter().map(|c| c.to_str().unwrap_or("")).collect();
    let ["pods", uid, "volume-subpaths", vol, _container, _index] = parts.as_slice() else {
        return None;
    };
    let md = match fs::metadata(source) {
        Ok(m) if m.is_file() => m,
        Ok(_) => {
            return Some(Err(
                "a subPath of a directory: ferry carries single-file subPaths (ferry leaves it)"
                    .into(),
            ));
        }
        Err(e) => {
            return Some(Err(format!(
                "a subPath kubelet mounted, which cannot be read ({e}) (ferry leaves it)"
            )));
        }
    };
    for plugin in ApiVolume::ALL {
        let vdir = root
            .join("pods")
            .join(uid)
            .join("volumes")
            .join(plugin.dir_name())
            .join(vol);
        let Ok(version) = fs::read_link(vdir.join("..data")) else {
            continue;
        };
        if let Some(path) = find_inode(&vdir.join(version), "", (md.dev(), md.ino()), 0) {
            let file = vdir.join(&path);
            let c = Carried::SubPath {
                plugin,
                volume: vol.to_string(),
                path,
            };
            return Some(Ok((c, file)));
        }
    }
    Some(Err(format!(
        "a subPath kubelet mounted from volume {vol}, but no file of that volume's current version is it (kubelet does not update such a mount either; ferry leaves it)"
    )))
}

/// The path under `dir` of the regular file with this (dev, inode).
fn find_inode(dir: &Path, rel: &str, id: (u64, u64), depth: usize) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if depth > 32 {
        return None;
    }
    for e in fs::read_dir(dir).ok()?.flatten() {
        let name = e.file_name().into_string().ok()?;
        let r = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let md = fs::symlink_metadata(e.path()).ok()?;
        if md.is_file() && (md.dev(), md.ino()) == id {
            return Some(r);
        }
        if md.is_dir()
            && let Some(found) = find_inode(&e.path(), &r, id, depth + 1)
        {
            return Some(found);
        }
    }
    None
}

/// Why a bind mount from outside the kubelet root is left.
fn outside_reason(source: &Path) -> String {
    let dev = source.starts_with("/dev")
        || fs::metadata(source)
            .is_ok_and(|m| m.file_type().is_block_device() || m.file_type().is_char_device());
    if dev {
        "a device: the runtime passes devices through, ferry copies no devices (ferry leaves it)"
            .into()
    } else {
        "a hostPath or runtime file outside the kubelet root: ferry carries only pod API data (ferry leaves it)".into()
    }
}

fn file_type_name(ft: fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_file() {
        "a regular file"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else {
        "a special file"
    }
}

/// Checks one mount ferry carries: `source` as the spec names it, read
/// from `effective` (the same, but for a subPath kubelet mounted).
fn select(
    index: usize,
    destination: &str,
    (source, effective): (&Path, &Path),
    carried: Carried,
    root: &Path,
    guest_root: &Path,
) -> Result<Selected, BundleError> {
    let resolved = fs::canonicalize(effective).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            BundleError::Missing {
                destination: destination.into(),
                source_path: source.into(),
            }
        } else {
            BundleError::Io {
                destination: destination.into(),
                source_path: source.into(),
                source: e,
            }
        }
    })?;
    let under_root = !matches!(carried, Carried::Hostname | Carried::ResolvConf);
    if under_root && !resolved.starts_with(root) {
        return Err(BundleError::Escapes {
            destination: destination.into(),
            source_path: source.into(),
            resolved,
            root: root.into(),
        });
    }
    let md = fs::metadata(&resolved).map_err(|e| BundleError::Io {
        destination: destination.into(),
        source_path: source.into(),
        source: e,
    })?;
    let kind = match carried {
        Carried::Volume { .. } => VolumeKind::Tree,
        _ => VolumeKind::File,
    };
    let (ok, expected) = match kind {
        VolumeKind::Tree => (md.is_dir(), "a directory (a kubelet volume)"),
        VolumeKind::File => (md.is_file(), "a regular file"),
    };
    if !ok {
        return Err(BundleError::WrongType {
            destination: destination.into(),
            source_path: source.into(),
            what: file_type_name(md.file_type()),
            expected,
        });
    }
    let name = volume_name(&carried).ok_or_else(|| BundleError::BadName {
        destination: destination.into(),
        source_path: source.into(),
    })?;
    let host_path = match &carried {
        Carried::Volume { .. } => resolved,
        // Through the visible link, resolved at each sync.
        Carried::SubPath { path, .. } => {
            let vol_len = effective.components().count() - path.split('/').count();
            let vol: PathBuf = effective.components().take(vol_len).collect();
            fs::canonicalize(&vol)
                .map(|v| v.join(path))
                .unwrap_or_else(|_| effective.to_path_buf())
        }
        _ => resolved,
    };
    let guest_path = match kind {
        VolumeKind::Tree => guest_root.join("volumes").join(&name),
        VolumeKind::File => guest_root.join("files").join(&name),
    };
    let read_only = matches!(carried, Carried::Volume { .. } | Carried::SubPath { .. });
    Ok(Selected {
        index,
        destination: destination.into(),
        source: source.into(),
        host_path,
        carried,
        name,
        kind,
        guest_path,
        read_only,
    })
}

/// The guest name of what a mount carries: stable (derived from the kubelet
/// path alone), readable, `[a-z0-9][a-z0-9._-]{0,252}`.
pub fn volume_name(c: &Carried) -> Option<String> {
    let name = match c {
        Carried::Volume { plugin, volume } => format!("{}-{}", plugin.short(), sanitize(volume)),
        Carried::SubPath {
            plugin,
            volume,
            path,
        } => format!("{}-{}-{}", plugin.short(), sanitize(volume), sanitize(path)),
        Carried::EtcHosts => "etc-hosts".into(),
        Carried::Hostname => "hostname".into(),
        Carried::ResolvConf => "resolv.conf".into(),
        Carried::TerminationLog { container } => {
            format!("termination-log-{}", sanitize(container))
        }
    };
    let name = if name.len() > 253 {
        let h = blake3::hash(name.as_bytes()).to_hex();
        format!("{}-{}", &name[..244], &h[..8])
    } else {
        name
    };
    ferry_tree::path::validate_volume_name(&name)
        .ok()
        .map(|()| name)
}

/// Lowercase, `/` and anything outside `[a-z0-9._-]` as `-`; when that
/// loses information (upper case, other characters), a short hash of the
/// original keeps distinct names distinct.
fn sanitize(s: &str) -> String {
    let mut lossy = false;
    let mut out: String = s
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '.' | '_' | '-' => c,
            '/' => '-',
            'A'..='Z' => {
                lossy = true;
                c.to_ascii_lowercase()
            }
            _ => {
                lossy = true;
                '-'
            }
        })
        .collect();
    if lossy {
        let h = blake3::hash(s.as_bytes()).to_hex();
        out.push('-');
        out.push_str(&h[..8]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_kubelet_paths() {
        let c = |s: &str| classify(Path::new(s));
        assert_eq!(
            c("pods/u/volumes/kubernetes.io~secret/db").unwrap(),
            Carried::Volume {
                plugin: ApiVolume::Secret,
                volume: "db".into()
            }
        );
        assert_eq!(
            c("pods/u/volumes/kubernetes.io~configmap/cfg/a/b.conf").unwrap(),
            Carried::SubPath {
                plugin: ApiVolume::ConfigMap,
                volume: "cfg".into(),
                path: "a/b.conf".into()
            }
        );
        assert_eq!(c("pods/u/etc-hosts").unwrap(), Carried::EtcHosts);
        assert_eq!(
            c("pods/u/containers/app/1a2b").unwrap(),
            Carried::TerminationLog {
                container: "app".into()
            }
        );
        assert!(
            c("pods/u/volumes/kubernetes.io~empty-dir/x")
                .unwrap_err()
                .contains("emptyDir")
        );
        assert!(
            c("pods/u/volumes/kubernetes.io~csi/x")
                .unwrap_err()
                .contains("csi")
        );
        assert!(c("plugins/x").is_err());
    }

    #[test]
    fn names_are_valid_stable_and_distinct() {
        let sub = |p: &str| Carried::SubPath {
            plugin: ApiVolume::ConfigMap,
            volume: "cfg".into(),
            path: p.into(),
        };
        assert_eq!(
            volume_name(&sub("app.yaml")).unwrap(),
            "configmap-cfg-app.yaml"
        );
        assert_eq!(volume_name(&sub("a/b")).unwrap(), "configmap-cfg-a-b");
        let upper = volume_name(&sub("App.yaml")).unwrap();
        assert!(upper.starts_with("configmap-cfg-app.yaml-"), "{upper}");
        assert_ne!(upper, volume_name(&sub("app.yaml")).unwrap());
        let long = volume_name(&sub(&"x".repeat(400))).unwrap();
        assert_eq!(long.len(), 253);
        ferry_tree::path::validate_volume_name(&long).unwrap();
        assert_eq!(
            volume_name(&Carried::TerminationLog {
                container: "app".into()
            })
            .unwrap(),
            "termination-log-app"
        );
    }
}
