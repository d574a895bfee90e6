//! The read-only side of the store: a volume's manifest (GetManifest), a
//! re-read of its disk (Verify), and one file read back to the host
//! (ReadFile, for the termination log). Each holds the volume's lock while it
//! reads, so no commit changes what it looks at half-way.
use std::io::{Read, Seek};

use ferry_proto::{convert, ferry as pb};
use ferry_tree::{
    Layout, Manifest, VolumeKind,
    path::{validate_rel_path, validate_volume_name},
};
use protobuf::Message;

use crate::{
    error::{GuestError, Result},
    file_volume, layout, state,
    store::Store,
};

/// What ReadFile returns when the host asks for 0 bytes: kubelet's cap on a
/// termination message.
pub const DEFAULT_READ_BYTES: u64 = 4096;

/// The most ReadFile returns in one message.
pub const MAX_READ_BYTES: u64 = ferry_proto::MAX_CHUNK_BYTES as u64;

impl Store {
    /// One page of the committed manifest of a volume. A volume that does
    /// not exist is empty, with generation 0 and the empty digest.
    pub fn get_manifest(&self, req: &pb::GetManifestRequest) -> Result<pb::GetManifestResponse> {
        validate_volume_name(&req.volume)?;
        let mut r = pb::GetManifestResponse::new();
        let v = self.volume(&req.volume);
        let st = v.as_ref().map(|v| v.lock());
        let committed = st.as_ref().and_then(|s| s.committed.as_ref());
        r.volume = Some(state::summary(&req.volume, committed)).into();
        if let Some(c) = committed {
            let mut budget = ferry_proto::MAX_BATCH_BYTES;
            for e in c.manifest.iter_after(&req.start_after) {
                let p = convert::entry_to_pb(e);
                // Field tag, length prefix and the entry itself.
                let size = p.compute_size() as usize + 8;
                if size > budget && !r.entries.is_empty() {
                    r.more = true;
                    break;
                }
                budget = budget.saturating_sub(size);
                r.entries.push(p);
            }
        }
        Ok(r)
    }

    /// Reads a volume back from disk the way a container sees it (a tree
    /// through `..data`, a file volume as its one file) and compares it with
    /// the committed manifest. The volume lock is held so no commit swaps
    /// versions mid-read.
    pub fn verify(&self, req: &pb::VerifyRequest) -> Result<pb::VerifyResponse> {
        validate_volume_name(&req.volume)?;
        let v = self.volume(&req.volume);
        let st = v.as_ref().map(|v| v.lock());
        let committed = st.as_ref().and_then(|s| s.committed.as_ref());
        let mut r = pb::VerifyResponse::new();
        r.volume = Some(state::summary(&req.volume, committed)).into();
        let (disk, version) = match committed.map(|c| c.kind) {
            Some(VolumeKind::File) => {
                let e = file_volume::disk_entry(&self.files_dir, &req.volume)?;
                (Manifest::from_iter([e]), String::new())
            }
            _ => {
                let dir = self.root().join("volumes").join(&req.volume);
                if dir.exists() {
                    let s = ferry_tree::scan_volume(&dir)?;
                    let version = match s.layout {
                        Layout::Kubelet { version } => version.trim_start_matches("..").to_string(),
                        Layout::Plain | Layout::File { .. } => String::new(),
                    };
                    (s.manifest, version)
                } else {
                    (Manifest::new(), String::new())
                }
            }
        };
        let empty = Manifest::new();
        let want = committed.map(|c| &c.manifest).unwrap_or(&empty);
        r.disk_digest = disk.digest().to_vec();
        r.disk_entries = disk.len() as u64;
        // A file volume is rewritten in place: it has no version on disk.
        r.matches = disk.digest() == want.digest()
            && committed.is_none_or(|c| c.kind == VolumeKind::File || c.version == version);
        r.disk_version = version;
        if !r.matches {
            let plan = ferry_tree::diff(want, &disk);
            r.problems = plan
                .removes
                .iter()
                .map(|p| format!("-{p}"))
                .chain(plan.upserts.iter().map(|e| {
                    let sign = if want.get(&e.path).is_some() {
                        '~'
                    } else {
                        '+'
                    };
                    format!("{sign}{}", e.path)
                }))
                .take(16)
                .collect();
        }
        Ok(r)
    }

    /// Reads the start of one file of a volume: a file volume's one file
    /// (`path` empty), or the regular file `path` of a tree volume's current
    /// version, resolved confined to that version without following any
    /// symlink. Returns at most `max_bytes` (0 = [`DEFAULT_READ_BYTES`]),
    /// the file's full size, and whether that was all of it.
    pub fn read_file(&self, req: &pb::ReadFileRequest) -> Result<pb::ReadFileResponse> {
        validate_volume_name(&req.volume)?;
        let name = req.volume.as_str();
        let max = match req.max_bytes {
            0 => DEFAULT_READ_BYTES,
            n if n > MAX_READ_BYTES => {
                return Err(GuestError::ReadTooBig {
                    asked: n,
                    limit: MAX_READ_BYTES,
                });
            }
            n => n,
        };
        let v = self
            .volume(name)
            .ok_or_else(|| GuestError::NoVolume(name.to_string()))?;
        let st = v.lock();
        let c = st
            .committed
            .as_ref()
            .ok_or_else(|| GuestError::NoVolume(name.to_string()))?;
        let not_found = |e: crate::fsops::FsError| -> GuestError {
            if e.is_not_found() {
                GuestError::NoSuchPath {
                    volume: name.to_string(),
                    path: req.path.clone(),
                }
            } else {
                e.into()
            }
        };
        let file = match c.kind {
            VolumeKind::File => {
                if !req.path.is_empty() {
                    return Err(GuestError::PathOnFileVolume {
                        volume: name.to_string(),
                        path: req.path.clone(),
                    });
                }
                self.files_dir.open_file(name).map_err(not_found)?
            }
            VolumeKind::Tree => {
                validate_rel_path(&req.path, &self.limits().tree_limits())?;
                let vol = self.volumes_dir.open_dir(name)?;
                let version = vol.open_dir(&layout::version_dir(&c.version))?;
                version.open_file(&req.path).map_err(not_found)?
            }
        };
        let md = file
            .metadata()
            .map_err(|e| crate::fsops::FsError::new("stat", req.path.clone(), e))?;
        if !md.is_file() {
            return Err(GuestError::NotAFile {
                volume: name.to_string(),
                path: req.path.clone(),
            });
        }
        let mut file = file;
        if req.tail && md.len() > max {
            file.seek(std::io::SeekFrom::Start(md.len() - max))
                .map_err(|e| crate::fsops::FsError::new("seek", req.path.clone(), e))?;
        }
        let mut data = Vec::new();
        file.take(max)
            .read_to_end(&mut data)
            .map_err(|e| crate::fsops::FsError::new("read", req.path.clone(), e))?;
        drop(st);
        let mut r = pb::ReadFileResponse::new();
        r.size = md.len().max(data.len() as u64);
        r.truncated = r.size > data.len() as u64;
        r.data = data;
        Ok(r)
    }
}
