//! Version directory names, as kubelet's AtomicWriter spells them:
//! `YYYY_MM_DD_HH_MM_SS.<n>` in UTC, the directory being `..<name>`. kubelet
//! puts a random suffix after the dot; we put the generation, which makes
//! names unique per volume and lets a restart recover the generation from the
//! `..data` target alone.
use std::time::{SystemTime, UNIX_EPOCH};

/// The version name (without the leading `..`) of `generation` published at
/// `unix_ms`.
pub fn version_name(unix_ms: i64, generation: u64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}_{m:02}_{d:02}_{:02}_{:02}_{:02}.{generation}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
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

/// (year, month, day) of a day count since 1970-01-01 in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The day count since 1970-01-01 of a (year, month, day); the inverse of
/// [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn round_trips_every_day_for_centuries() {
        for days in -200_000..200_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        let t = 1_767_225_600_000; // 2026-01-01
        let v = version_name(t + 3_723_000, 9);
        assert_eq!(generation_of(&v), Some(9));
        assert_eq!(time_of(&v), Some(t + 3_723_000));
        assert_eq!(generation_of("nope"), None);
        assert_eq!(time_of("2026_13_01_00_00_00.1"), None);
    }
}
