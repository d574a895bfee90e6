//! Version directory names, as kubelet's AtomicWriter spells them:
//! `YYYY_MM_DD_HH_MM_SS.<n>` in UTC, the directory being `..<name>`. kubelet
//! puts a random suffix after the dot; we put the generation, which makes
//! names unique per volume and lets a restart recover the generation from the
//! `..data` target alone.
use std::time::{SystemTime, UNIX_EPOCH};

use ferry_tree::stamp::{days_from_civil, kubelet_stamp};

/// The version name (without the leading `..`) of `generation` published at
/// `unix_ms`.
pub fn version_name(unix_ms: i64, generation: u64) -> String {
    format!("{}.{generation}", kubelet_stamp(unix_ms.div_euclid(1000)))
}

/// The generation of a version name: the number after its last `.`.
pub fn generation_of(version: &str) -> Option<u64> {
    version.rsplit_once('.')?.1.parse().ok()
}

/// The publication time (unix ms, second precision) of a version name.
pub fn time_of(version: &str) -> Option<i64> {
    let stamp = version.split_once('.')?.0;
    let f: Vec<i64> = stamp
        .split('_')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [y, mo, d, h, mi, s] = f[..] else {
        return None;
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(y, mo as u32, d as u32);
    Some(((days * 86_400) + h * 3600 + mi * 60 + s) * 1000)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(version_name(0, 1), "1970_01_01_00_00_00.1");
        // 2000-02-29 12:34:56 UTC, a leap day in a century leap year.
        assert_eq!(version_name(951_827_696_000, 42), "2000_02_29_12_34_56.42");
        // 2026-12-31 23:59:59.999 UTC.
        assert_eq!(version_name(1_798_761_599_999, 7), "2026_12_31_23_59_59.7");
    }

    #[test]
    fn names_round_trip() {
        let t = 1_767_225_600_000; // 2026-01-01
        let v = version_name(t + 3_723_000, 9);
        assert_eq!(generation_of(&v), Some(9));
        assert_eq!(time_of(&v), Some(t + 3_723_000));
        assert_eq!(generation_of("nope"), None);
        assert_eq!(time_of("2026_13_01_00_00_00.1"), None);
    }
}
