//! kubelet's AtomicWriter, as kubelet writes Secret, ConfigMap, projected and
//! downward API volumes on a node. The demo plays kubelet with it, and the
//! tests check ferry against the exact layout and event sequence a node
//! produces.
//!
//! One write: validate the payload; skip it if nothing changed; make a new
//! `..YYYY_MM_DD_HH_MM_SS.<n>` directory (0755); write every file and chmod
//! it to its mode; point a new `..data_tmp` symlink at it and rename it over
//! `..data` (the one atomic step); create missing visible links
//! `<top> -> ..data/<top>`; delete the links of removed top-level keys;
//! delete the old version directory.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    os::unix::fs::{PermissionsExt, symlink},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::SystemTime,
};

/// One file of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Relative path -> file: what one volume should contain.
pub type Payload = BTreeMap<String, FileProjection>;

/// Writes one volume directory the way kubelet does.
pub struct AtomicWriter {
    dir: PathBuf,
}

static SEQ: AtomicU64 = AtomicU64::new(1);

impl AtomicWriter {
    /// A writer for the volume at `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// The volume directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Publishes `payload` as the new version; returns false if the current
    /// version already holds exactly this payload (kubelet writes nothing).
    pub fn write(&self, payload: &Payload) -> io::Result<bool> {
        for p in payload.keys() {
            ferry_tree::path::validate_rel_path(p, &ferry_tree::Limits::default())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        }
        let data = self.dir.join("..data");
        let old = fs::read_link(&data).ok();
        if let Some(old) = &old
            && self.holds(&self.dir.join(old), payload)?
        {
            return Ok(false);
        }
        let name = format!(
            "..{}.{}",
            timestamp(SystemTime::now()),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let ts = self.dir.join(&name);
        fs::create_dir(&ts)?;
        fs::set_permissions(&ts, fs::Permissions::from_mode(0o755))?;
        for (p, f) in payload {
            let full = ts.join(p);
            if let Some(parent) = full.parent()
                && parent != ts
            {
                fs::create_dir_all(parent)?;
            }
            fs::write(&full, &f.data)?;
            fs::set_permissions(&full, fs::Permissions::from_mode(f.mode))?;
        }
        let tmp = self.dir.join("..data_tmp");
        let _ = fs::remove_file(&tmp);
        symlink(&name, &tmp)?;
        fs::rename(&tmp, &data)?;
        let new_top: BTreeSet<&str> = payload
            .keys()
            .map(|p| ferry_tree::path::top_level(p))
            .collect();
        for top in &new_top {
            let link = self.dir.join(top);
            if fs::symlink_metadata(&link).is_err() {
                symlink(format!("..data/{top}"), &link)?;
            }
        }
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let n = entry.file_name();
            let Some(n) = n.to_str() else { continue };
            if n.starts_with("..") || new_top.contains(n) {
                continue;
            }
            if entry.file_type()?.is_symlink() {
                fs::remove_file(entry.path())?;
            }
        }
        if let Some(old) = old {
            fs::remove_dir_all(self.dir.join(old))?;
        }
        Ok(true)
    }

    fn holds(&self, version: &Path, payload: &Payload) -> io::Result<bool> {
        for (p, f) in payload {
            match fs::read(version.join(p)) {
                Ok(d) if d == f.data => {}
                Ok(_) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
            }
            let mode = fs::metadata(version.join(p))?.permissions().mode() & 0o7777;
            if mode != f.mode {
                return Ok(false);
            }
        }
        let s = ferry_tree::scan_volume(&self.dir).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(s.manifest.file_count() == payload.len() as u64)
    }
}

/// `YYYY_MM_DD_HH_MM_SS` in UTC, as kubelet names versions.
pub fn timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}_{m:02}_{d:02}_{:02}_{:02}_{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A payload from `(path, content, mode)` triples.
pub fn payload<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8], u32)>) -> Payload {
    files
        .into_iter()
        .map(|(p, d, m)| {
            (
                p.to_string(),
                FileProjection {
                    data: d.to_vec(),
                    mode: m,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_305_230);
        assert_eq!(timestamp(t), "2026_12_03_13_40_30");
        assert_eq!(timestamp(SystemTime::UNIX_EPOCH), "1970_01_01_00_00_00");
        let leap = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(timestamp(leap), "2000_02_29_00_00_00");
    }

    #[test]
    fn writes_the_kubelet_layout_and_cleans_up() {
        let d = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(d.path().join("vol")).unwrap();
        assert!(
            w.write(&payload([("a", &b"1"[..], 0o644), ("d/b", b"2", 0o600)]))
                .unwrap()
        );
        let v1 = fs::read_link(w.dir().join("..data")).unwrap();
        assert_eq!(
            fs::read_link(w.dir().join("a")).unwrap(),
            Path::new("..data/a")
        );
        assert_eq!(fs::read(w.dir().join("d/b")).unwrap(), b"2");
        assert!(
            !w.write(&payload([("a", &b"1"[..], 0o644), ("d/b", b"2", 0o600)]))
                .unwrap()
        );
        assert!(w.write(&payload([("a", &b"3"[..], 0o644)])).unwrap());
        assert!(!w.dir().join(&v1).exists(), "old version removed");
        assert!(
            fs::symlink_metadata(w.dir().join("d")).is_err(),
            "link of removed key removed"
        );
        let names: Vec<_> = fs::read_dir(w.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }
}
