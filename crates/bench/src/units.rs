//! Parsing and printing sizes and durations the way fio's command line
//! writes them (`4k`, `1M`, `256M`, `500ms`, `5`).

use std::time::Duration;

/// One KiB.
pub const KIB: u64 = 1 << 10;
/// One MiB.
pub const MIB: u64 = 1 << 20;
/// One GiB.
pub const GIB: u64 = 1 << 30;

/// Parses a size: a number with an optional binary suffix, `k`/`K`, `m`/`M`,
/// `g`/`G` (optionally followed by `i`/`iB`/`B`), as fio reads `--bs` and
/// `--size`.
///
/// ```
/// use fastfuse_bench::units::parse_size;
/// assert_eq!(parse_size("4k"), Ok(4096));
/// assert_eq!(parse_size("256M"), Ok(256 << 20));
/// assert!(parse_size("lots").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits);
    let num: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 4k, 256M, 1G)"))?;
    let unit = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "ki" | "kib" => KIB,
        "m" | "mb" | "mi" | "mib" => MIB,
        "g" | "gb" | "gi" | "gib" => GIB,
        _ => return Err(format!("{text:?}: unknown size suffix {suffix:?}")),
    };
    num.checked_mul(unit)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses a duration: seconds (`5`, `0.5`) or with a unit (`500ms`, `2s`,
/// `1m`).
///
/// ```
/// use fastfuse_bench::units::parse_duration;
/// use std::time::Duration;
/// assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
/// assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is not a duration (e.g. 5, 0.5, 500ms, 2s)");
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    if !v.is_finite() || v <= 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(v * scale))
}

/// Prints a size the short way fio does: `1k`, `4k`, `1M`, `256M`, or bytes.
///
/// ```
/// use fastfuse_bench::units::short_size;
/// assert_eq!(short_size(1024), "1k");
/// assert_eq!(short_size(1 << 20), "1M");
/// assert_eq!(short_size(1000), "1000");
/// ```
pub fn short_size(bytes: u64) -> String {
    if bytes >= GIB && bytes & (GIB - 1) == 0 {
        format!("{}G", bytes / GIB)
    } else if bytes >= MIB && bytes & (MIB - 1) == 0 {
        format!("{}M", bytes / MIB)
    } else if bytes >= KIB && bytes & (KIB - 1) == 0 {
        format!("{}k", bytes / KIB)
    } else {
        format!("{bytes}")
    }
}

/// A throughput figure with a sensible number of digits.
pub fn figure(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1"), Ok(1));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("3T").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn figures() {
        assert_eq!(figure(2246.4), "2246");
        assert_eq!(figure(12.34), "12.3");
        assert_eq!(figure(0.456), "0.46");
        assert_eq!(short_size(256 << 20), "256M");
    }
}
