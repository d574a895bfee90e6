//! kubelet's AtomicWriter layout of one volume directory:
//!
//! ```text
//! <vol>/..data            -> ..<version>     (swapped by rename: the publish)
//! <vol>/..<version>/...                      (one immutable version)
//! <vol>/<top-level name>  -> ..data/<name>   (user-visible links)
//! ```
//!
//! Readers resolve through `..data` and see one whole version; the `rename`
//! of `..data_tmp` over `..data` is the single atomic step, and it fires
//! `IN_MOVED_TO` for `..data`, which is what inotify-based reloaders wait
//! for. Names starting with `..` belong to this layout and never to content.
use std::collections::BTreeSet;

use rustix::{fs::FileType, io::Errno};

use crate::fsops::{Dir, FsError};

/// The symlink naming the current version.
pub const DATA: &str = "..data";
/// The new `..data` before it is renamed into place.
pub const DATA_TMP: &str = "..data_tmp";
/// A visible link being replaced.
const LINK_TMP: &str = "..link_tmp";

/// The version directory name (`..<version>`) for a version name.
pub fn version_dir(version: &str) -> String {
    format!("..{version}")
}

/// The target of `..data` (`..<version>`), or `None` when the volume has not
/// been published yet.
pub fn data_target(vol: &Dir) -> Result<Option<String>, FsError> {
    match vol.read_link(DATA) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Makes `..data` point at `version_dir` with one atomic rename. A stale
/// `..data_tmp` (a crash between the two steps) is replaced.
pub fn publish(vol: &Dir, version_dir: &str) -> Result<(), FsError> {
    vol.unlink(DATA_TMP)?;
    vol.symlink(version_dir, DATA_TMP)?;
    vol.rename(DATA_TMP, DATA)?;
    // Make the swap itself durable (a no-op on tmpfs).
    vol.fsync()
}

/// Makes the visible links exactly `<name> -> ..data/<name>` for `names`:
/// creates missing ones, replaces wrong ones atomically, and removes links
/// into `..data/` whose name is no longer top-level. Names starting with
/// `..` are never touched, nor anything that is not one of our links.
pub fn sync_visible_links<'a>(
    vol: &Dir,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), FsError> {
    let wanted: BTreeSet<&str> = names.into_iter().collect();
    for &name in &wanted {
        let target = format!("{DATA}/{name}");
        match vol.read_link(name) {
            Ok(t) if t == target => continue,
            Ok(_) => {
                vol.unlink(LINK_TMP)?;
                vol.symlink(&target, LINK_TMP)?;
                vol.rename(LINK_TMP, name)?;
            }
            Err(e) if e.is_not_found() => vol.symlink(&target, name)?,
            Err(e) if e.errno() == Some(Errno::INVAL) => {
                // Something that is not a link sits where the link belongs
                // (nothing of ours ever puts it there): replace it.
                tracing::warn!(name, "replacing a non-link at a visible name");
                vol.remove_tree(name)?;
                vol.symlink(&target, name)?;
            }
            Err(e) => return Err(e),
        }
    }
    for (name, ty) in vol.entries()? {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("..") || wanted.contains(name) {
            continue;
        }
        if ty == FileType::Symlink && vol.read_link(name)?.starts_with("..data/") {
            vol.unlink(name)?;
        } else {
            tracing::warn!(name, "leaving a foreign entry in a volume directory alone");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{fs, path::Path};

    #[test]
    fn publish_and_links() {
        let t = tempfile::tempdir().unwrap();
        let vol = Dir::open_root(t.path()).unwrap();
        vol.mkdir("..v1", 0o755).unwrap();
        publish(&vol, "..v1").unwrap();
        assert_eq!(data_target(&vol).unwrap().as_deref(), Some("..v1"));
        vol.symlink("..data/gone", "gone").unwrap();
        vol.symlink("..data/wrong", "k").unwrap();
        vol.symlink("..v1", DATA_TMP).unwrap();
        fs::write(t.path().join("foreign"), b"").unwrap();
        sync_visible_links(&vol, ["k", "new"]).unwrap();
        let link = |n: &str| fs::read_link(t.path().join(n)).unwrap();
        assert_eq!(link("k"), Path::new("..data/k"));
        assert_eq!(link("new"), Path::new("..data/new"));
        assert!(fs::symlink_metadata(t.path().join("gone")).is_err());
        assert!(t.path().join("foreign").exists());
        publish(&vol, "..v2").unwrap();
        assert_eq!(link(DATA), Path::new("..v2"));
        assert!(fs::symlink_metadata(t.path().join(DATA_TMP)).is_err());
    }
}
