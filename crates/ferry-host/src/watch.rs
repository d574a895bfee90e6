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
use std::{
    collections::{BTreeSet, HashMap},
    ffi::OsStr,
    path::Path,
};

use futures::{FutureExt, StreamExt};
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use crate::error::{HostError, Result};

/// What a watch on a directory is for.
#[derive(Debug, Clone, Copy)]
struct WatchOf {
    volume: usize,
    top: bool,
}

/// Watches every volume directory; yields the set of volumes that changed.
pub struct Watcher {
    stream: inotify::EventStream<Vec<u8>>,
    by_wd: HashMap<WatchDescriptor, WatchOf>,
    /// Per volume: read as a kubelet volume last time (then only `..data`
    /// counts).
    kubelet: Vec<bool>,
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
    /// Watches the top directory of each volume in `dirs`.
    pub fn new<P: AsRef<Path>>(dirs: &[P]) -> Result<Self> {
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
            kubelet: vec![false; dirs.len()],
        };
        for (i, d) in dirs.iter().enumerate() {
            w.add(i, d.as_ref(), true)?;
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
        Ok(self.by_wd.insert(wd, WatchOf { volume, top }).is_none())
    }

    /// After a sync: record how the volume was read, and for a plain
    /// directory watch every subdirectory too (`subdirs` relative to `dir`).
    /// Returns true when a new directory is now watched: whatever was written
    /// into it between the scan and now has no event, so the caller syncs the
    /// volume once more. A directory that vanished meanwhile is skipped: its
    /// parent's event brings another sync.
    pub fn update(&mut self, volume: usize, dir: &Path, kubelet: bool, subdirs: &[String]) -> bool {
        self.kubelet[volume] = kubelet;
        if kubelet {
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
        let Some(of) = self.by_wd.get(&ev.wd).copied() else {
            return Ok(());
        };
        if ev.mask.contains(EventMask::IGNORED) {
            self.by_wd.remove(&ev.wd);
            if of.top {
                tracing::warn!(
                    volume = of.volume,
                    "volume directory is gone; it is no longer watched"
                );
            }
            return Ok(());
        }
        let is_data = ev.name.as_deref() == Some(OsStr::new("..data"));
        let relevant = if of.top && is_data {
            true
        } else if self.kubelet[of.volume] {
            false
        } else {
            // A plain directory: any change, but not kubelet's hidden names
            // at the top (they are not content).
            !(of.top
                && ev
                    .name
                    .as_deref()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("..")))
        };
        if relevant {
            dirty.insert(of.volume);
        }
        Ok(())
    }
}
