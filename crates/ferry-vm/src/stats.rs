//! Latency percentiles, nearest-rank: the p-th percentile of n samples is
//! the ceil(p/100 * n)-th smallest, always one of the samples (with 24
//! samples, p99 is the largest).
use std::time::Duration;

/// The nearest-rank `p`-th percentile of `samples` (need not be sorted).
pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort();
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    Some(s[rank.min(s.len()) - 1])
}

/// Milliseconds with one decimal.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let s: Vec<Duration> = (1..=24).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&s, 50.0), Some(Duration::from_millis(12)));
        assert_eq!(percentile(&s, 99.0), Some(Duration::from_millis(24)));
        assert_eq!(percentile(&s, 0.0), Some(Duration::from_millis(1)));
        let h: Vec<Duration> = (1..=200).map(Duration::from_millis).collect();
        assert_eq!(percentile(&h, 99.0), Some(Duration::from_millis(198)));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
