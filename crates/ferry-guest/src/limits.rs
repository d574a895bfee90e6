//! The guest's limits: how much one volume and the whole store may hold.
//! They are the guest's own, enforced before a byte is written, and told to
//! the host in `Hello` so it can refuse early with a clear message.
use ferry_proto::ferry as pb;

/// Quotas of the store. Counts are entries of every kind (each one is an
/// inode on the tmpfs), sizes are file content bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Content bytes one volume may hold.
    pub max_volume_bytes: u64,
    /// Entries (files, directories, symlinks) one volume may hold.
    pub max_volume_files: u64,
    /// Content bytes all volumes together may hold, counting what open
    /// transactions are about to publish.
    pub max_store_bytes: u64,
    /// Entries all volumes together may hold.
    pub max_store_files: u64,
    /// Longest relative path, in bytes.
    pub max_path_len: u32,
    /// Most components in a relative path.
    pub max_depth: u32,
    /// Most volumes in the store.
    pub max_volumes: u32,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_volume_bytes: 64 << 20,
            max_volume_files: 10_000,
            max_store_bytes: 256 << 20,
            max_store_files: 50_000,
            max_path_len: 4096,
            max_depth: 32,
            max_volumes: 256,
        }
    }
}

impl StoreLimits {
    /// The path limits handed to `ferry_tree`'s validation.
    pub fn tree_limits(&self) -> ferry_tree::Limits {
        ferry_tree::Limits {
            max_path_len: self.max_path_len as usize,
            max_depth: self.max_depth as usize,
            ..ferry_tree::Limits::default()
        }
    }

    /// The limits as the host sees them in `Hello` and `Status`.
    pub fn to_pb(&self) -> pb::Limits {
        let mut l = pb::Limits::new();
        l.max_volume_bytes = self.max_volume_bytes;
        l.max_volume_files = self.max_volume_files;
        l.max_store_bytes = self.max_store_bytes;
        l.max_store_files = self.max_store_files;
        l.max_path_len = self.max_path_len;
        l.max_depth = self.max_depth;
        l.max_chunk_bytes = ferry_proto::MAX_CHUNK_BYTES as u32;
        l.max_volumes = self.max_volumes;
        l
    }
}

/// Parses a size the way operators write them: a plain number of bytes, or
/// a number with a binary multiple suffix (`k`, `M`, `G`, `T`, each
/// optionally followed by `i`, e.g. `512k`, `64Mi`, `64M`, `1G`). `M` and
/// `Mi` both mean 2^20: tmpfs `size=` reads them that way, and a quota that
/// silently differs from the tmpfs size by 5% would be a trap.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (num, suffix) = t.split_at(digits);
    if num.is_empty() {
        return Err(format!(
            "invalid size {s:?}: expected a number with an optional k, M, G or T suffix"
        ));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: number too large"))?;
    let shift = match suffix.strip_suffix('i').unwrap_or(suffix) {
        "" if suffix.is_empty() => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        "t" | "T" => 40,
        _ => {
            return Err(format!(
                "invalid size {s:?}: unknown suffix {suffix:?} (use k, M, G or T, optionally with i)"
            ));
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let ok = [
            ("123", 123),
            ("0", 0),
            ("512k", 512 << 10),
            ("512Ki", 512 << 10),
            ("64Mi", 64 << 20),
            ("64M", 64 << 20),
            ("1G", 1 << 30),
            ("1Gi", 1 << 30),
            ("2T", 2 << 40),
            (" 7 ", 7),
        ];
        for (s, want) in ok {
            assert_eq!(parse_size(s), Ok(want), "{s:?}");
        }
        for bad in [
            "",
            "M",
            "1.5G",
            "12 M",
            "1X",
            "-1",
            "1i",
            "99999999999999999999",
            "20000000T",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn conversions_carry_every_limit() {
        let l = StoreLimits {
            max_path_len: 100,
            max_depth: 4,
            ..StoreLimits::default()
        };
        let t = l.tree_limits();
        assert_eq!((t.max_path_len, t.max_depth), (100, 4));
        let p = l.to_pb();
        assert_eq!(p.max_volume_bytes, 64 << 20);
        assert_eq!(p.max_volume_files, 10_000);
        assert_eq!(p.max_store_bytes, 256 << 20);
        assert_eq!(p.max_store_files, 50_000);
        assert_eq!(p.max_volumes, 256);
        assert_eq!(p.max_chunk_bytes, 1 << 20);
        assert_eq!((p.max_path_len, p.max_depth), (100, 4));
    }
}
