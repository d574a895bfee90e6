//! Watching volume directories with inotify, without polling and without a
//! fixed debounce delay.
//!
//! A kubelet volume changes in one step, the rename of `..data`: only that
//! event (IN_MOVED_TO or IN_CREATE of `..data` in the volume directory)
//! marks it dirty. Everything kubelet does around it (writing the new
//! version directory, `..data_tmp`, the visible links, deleting the old
//! version) is ignored. A plain directory is watched recursively and marked
//! dirty by any change; the caller syncs once the events that are already
//! queued have been drained, so a burst of writes is one sync, not many.
//!
//! A file volume is watched through its parent directory (a watch on the
//! file itself would follow the old inode after a rename): events naming
//! the file, and the `..data` rename when the parent is a kubelet volume (a
//! subPath key, `<vol>/<key> -> ..data/<key>`), mark it dirty.
use std::{
    collections::{BTreeSet, HashMap},
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
};

use futures::{FutureExt, StreamExt};
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use crate::{
    error::{HostError, Result},
    sync::{VolumeKind, VolumeSpec},
};

/// What a watch on a directory is for.
#[derive(Debug, Clone, Copy)]
struct WatchOf {
    volume: usize,
    top: bool,
}

/// Watches every volume directory; yields the set of volumes that changed.
pub struct Watcher {
    stream: inotify::EventStream<Vec<u8>>,
    /// Several volumes can share a directory (a tree and subPath files of
    /// the same kubelet volume).
    by_wd: HashMap<WatchDescriptor, Vec<WatchOf>>,
    /// Per volume: read as a kubelet volume last time (then only `..data`
    /// counts).
    kubelet: Vec<bool>,
    /// Per volume: the file's name in the watched directory, for a file
    /// volume.
    file: Vec<Option<OsString>>,
}

fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MODIFY
        | WatchMask::CLOSE_WRITE
        | WatchMask::ATTRIB
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
}

impl Watcher {
    /// Watches the directory of each tree volume in `volumes`, and the
    /// parent directory of each file volume.
    pub fn new(volumes: &[VolumeSpec]) -> Result<Self> {
        let inotify = Inotify::init().map_err(|e| HostError::Io {
            path: "inotify".into(),
            source: e,
        })?;
        let stream = inotify
            .into_event_stream(vec![0u8; 64 << 10])
            .map_err(|e| HostError::Io {
                path: "inotify".into(),
                source: e,
            })?;
        let mut w = Self {
            stream,
            by_wd: HashMap::new(),
            kubelet: vec![false; volumes.len()],
            file: vec![None; volumes.len()],
        };
        for (i, v) in volumes.iter().enumerate() {
            let dir = match v.kind {
                VolumeKind::Tree => v.source.clone(),
                VolumeKind::File => {
                    let (dir, name) = split_file(&v.source)?;
                    w.file[i] = Some(name);
                    dir
                }
            };
            w.add(i, &dir, true)?;
        }
        Ok(w)
    }

    /// Adds a watch; true when it is new.
    fn add(&mut self, volume: usize, dir: &Path, top: bool) -> Result<bool> {
        let wd = self
            .stream
            .watches()
            .add(dir, mask())
            .map_err(|e| HostError::Io {
                path: dir.to_path_buf(),
                source: e,
            })?;
        let of = self.by_wd.entry(wd).or_default();
        if of.iter().any(|o| o.volume == volume) {
            return Ok(false);
        }
        of.push(WatchOf { volume, top });
        Ok(true)
    }

    /// After a sync: record how the volume was read, and for a plain
    /// directory watch every subdirectory too (`subdirs` relative to `dir`).
    /// Returns true when a new directory is now watched: whatever was written
    /// into it between the scan and now has no event, so the caller syncs the
    /// volume once more. A directory that vanished meanwhile is skipped: its
    /// parent's event brings another sync.
    pub fn update(&mut self, volume: usize, dir: &Path, kubelet: bool, subdirs: &[String]) -> bool {
        self.kubelet[volume] = kubelet;
        if kubelet || self.file[volume].is_some() {
            return false;
        }
        let mut added = false;
        for s in subdirs {
            added |= self.add(volume, &dir.join(s), false).unwrap_or(false);
        }
        added
    }

    /// Waits for the next change, then drains every event already queued
    /// and returns the volumes that changed.
    pub async fn next_batch(&mut self) -> Result<BTreeSet<usize>> {
        let mut dirty = BTreeSet::new();
        loop {
            let Some(ev) = self.stream.next().await else {
                return Err(HostError::Protocol("inotify stream ended".into()));
            };
            self.note(ev, &mut dirty)?;
            while let Some(Some(ev)) = self.stream.next().now_or_never() {
                self.note(ev, &mut dirty)?;
            }
            if !dirty.is_empty() {
                return Ok(dirty);
            }
        }
    }

    fn note(
        &mut self,
        ev: std::io::Result<inotify::Event<std::ffi::OsString>>,
        dirty: &mut BTreeSet<usize>,
    ) -> Result<()> {
        let ev = ev.map_err(|e| HostError::Io {
            path: "inotify".into(),
            source: e,
        })?;
        if ev.mask.contains(EventMask::Q_OVERFLOW) {
            // Events were lost: everything may have changed.
            tracing::warn!("inotify queue overflowed; resyncing every volume");
            dirty.extend(0..self.kubelet.len());
            return Ok(());
        }
        let Some(ofs) = self.by_wd.get(&ev.wd).cloned() else {
            return Ok(());
        };
        if ev.mask.contains(EventMask::IGNORED) {
            self.by_wd.remove(&ev.wd);
            for of in ofs.iter().filter(|o| o.top) {
                tracing::warn!(
                    volume = of.volume,
                    "volume directory is gone; it is no longer watched"
                );
            }
            return Ok(());
        }
        for of in ofs {
            if self.relevant(of, ev.name.as_deref()) {
                dirty.insert(of.volume);
            }
        }
        Ok(())
    }

    /// Whether an event naming `name` in a directory watched for `of`
    /// changes that volume.
    fn relevant(&self, of: WatchOf, name: Option<&OsStr>) -> bool {
        let is_data = name == Some(OsStr::new("..data"));
        if let Some(file) = &self.file[of.volume] {
            return is_data || name == Some(file.as_os_str());
        }
        if of.top && is_data {
            true
        } else if self.kubelet[of.volume] {
            false
        } else {
            // A plain directory: any change, but not kubelet's hidden names
            // at the top (they are not content).
            !(of.top
                && name
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("..")))
        }
    }
}

/// The directory to watch for a file volume, and the file's name in it.
fn split_file(source: &Path) -> Result<(PathBuf, OsString)> {
    let name = source.file_name().ok_or_else(|| {
        HostError::Protocol(format!("{}: not a path to a file", source.display()))
    })?;
    let dir = match source.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name.to_os_string()))
}
