//! Loading and repairing the store after a restart (or a crash).
//!
//! The disk is the truth and `..data` is the commit point, so for each
//! `<root>/volumes/<name>`:
//!
//! - an invalid name is left alone (not ours) with a warning;
//! - no `..data` (a crash before the first commit) or a `..data` that is not
//!   one of our version directories: the directory is removed, the host will
//!   send the volume again;
//! - every other `..*` entry (orphaned staging, an old version a crash kept,
//!   a `..data_tmp`) is removed;
//! - the manifest comes from the state file if it describes the version
//!   `..data` points to, otherwise from a scan of that version (the logical
//!   modes and owners the host sent may then differ, so the host's next
//!   Begin gets a base mismatch and resyncs: safe, just not free);
//! - the visible links are repaired.
//!
//! State files of volumes that no longer exist are deleted
//! ([`remove_stale_state`], once file volumes are loaded too, see
//! [`crate::file_volume::load_files`]).
use std::path::Path;

use ferry_tree::{Manifest, path::validate_volume_name, scan_volume};
use rustix::fs::FileType;

use crate::{
    error::Result,
    fsops::Dir,
    layout,
    state::{self, Committed},
    version,
};

/// Loads every volume under `volumes_dir` (whose path is `volumes_path`),
/// repairing as described in the module documentation.
pub fn load_volumes(
    volumes_path: &Path,
    volumes_dir: &Dir,
    state_dir: &Dir,
) -> Result<Vec<(String, Committed)>> {
    let mut out = Vec::new();
    let mut names: Vec<_> = volumes_dir.entries()?;
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, ty) in names {
        let Some(name) = name.to_str().map(str::to_string) else {
            tracing::warn!(?name, "skipping a volume directory with a non-UTF-8 name");
            continue;
        };
        if validate_volume_name(&name).is_err() {
            tracing::warn!(volume = %name, "skipping an entry with an invalid volume name");
            continue;
        }
        if ty != FileType::Directory {
            tracing::warn!(volume = %name, "skipping a volume entry that is not a directory");
            continue;
        }
        match load_volume(volumes_path, volumes_dir, state_dir, &name)? {
            Some(c) => {
                tracing::info!(
                    volume = %name,
                    generation = c.generation,
                    version = %c.version,
                    entries = c.manifest.len(),
                    "restored volume"
                );
                out.push((name, c));
            }
            None => {
                volumes_dir.remove_tree(&name)?;
            }
        }
    }
    Ok(out)
}

/// Deletes the state files of volumes that are not `live` (and temp files
/// of interrupted saves).
pub fn remove_stale_state(state_dir: &Dir, live: &dyn Fn(&str) -> bool) -> Result<()> {
    for (file, _) in state_dir.entries()? {
        let Some(file) = file.to_str() else { continue };
        let keep = file.strip_suffix(".manifest").is_some_and(live);
        if !keep {
            tracing::info!(file, "removing a stale state file");
            state_dir.unlink(file)?;
        }
    }
    Ok(())
}

/// Loads one volume; `None` means it must be removed.
fn load_volume(
    volumes_path: &Path,
    volumes_dir: &Dir,
    state_dir: &Dir,
    name: &str,
) -> Result<Option<Committed>> {
    let vol = volumes_dir.open_dir(name)?;
    let target = match layout::data_target(&vol) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(
                volume = name,
                "unreadable ..data ({e}): removing the volume"
            );
            None
        }
    };
    let Some(target) = target else {
        tracing::warn!(
            volume = name,
            "no published version (crashed before its first commit): removing the volume"
        );
        return Ok(None);
    };
    let version = target.strip_prefix("..").unwrap_or_default().to_string();
    let is_version_dir = !version.is_empty()
        && !version.contains('/')
        && target != layout::DATA
        && target != layout::DATA_TMP
        && vol.kind(&target)? == Some(FileType::Directory);
    if !is_version_dir {
        tracing::warn!(volume = name, target = %target, "..data does not point to a version directory: removing the volume");
        return Ok(None);
    }
    for (entry, _) in vol.entries()? {
        let Some(entry) = entry.to_str() else {
            continue;
        };
        if entry.starts_with("..") && entry != layout::DATA && entry != target {
            tracing::info!(volume = name, entry, "removing a leftover");
            vol.remove_tree(entry)?;
        }
    }
    let from_state = match state::load(state_dir, name) {
        Ok(Some(c)) if c.version == version && c.kind == ferry_tree::VolumeKind::Tree => Some(c),
        Ok(Some(c)) => {
            tracing::warn!(volume = name, state = %c.version, published = %version, "the state file describes another version: rescanning");
            None
        }
        Ok(None) => {
            tracing::warn!(volume = name, "no state file: rescanning");
            None
        }
        Err(e) => {
            tracing::warn!(volume = name, "{e}: rescanning");
            None
        }
    };
    let committed = match from_state {
        Some(c) => c,
        None => {
            let scanned = match scan_volume(&volumes_path.join(name)) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(volume = name, "cannot rescan ({e}): removing the volume");
                    return Ok(None);
                }
            };
            for (path, why) in &scanned.skipped {
                tracing::warn!(volume = name, path = %path, "left out of the manifest: {why}");
            }
            let manifest: Manifest = scanned.manifest;
            Committed {
                kind: ferry_tree::VolumeKind::Tree,
                generation: version::generation_of(&version).unwrap_or(1),
                last_commit_ms: version::time_of(&version).unwrap_or(0),
                version,
                manifest,
            }
        }
    };
    layout::sync_visible_links(&vol, committed.manifest.top_level_names())?;
    Ok(Some(committed))
}
