//! A fastfuse mount's WRITE-size histogram and request counts, read with
//! `fastfuse stats --json MNT` before and after a workload, so the report
//! can say whether the kernel sent 1 MiB WRITEs and where each file's
//! round trips went.
//!
//! The bench reads it through the binary it mounts with rather than the
//! engine library, so that it measures any fastfuse build (an older one,
//! for a before/after comparison) and needs only that build's output.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::Deserialize;

use crate::schema::{SizeBucket, WriteSizes};

/// The part of `fastfuse stats --json` the bench reads.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Snapshot {
    /// Non-empty buckets: WRITEs of `(up_to_bytes / 2, up_to_bytes]`.
    #[serde(default)]
    pub write_sizes: Vec<SizeBucket>,
    /// Requests by opcode name (an older build without them reads as
    /// none).
    #[serde(default)]
    pub ops: BTreeMap<String, OpCount>,
}

/// The part of an opcode's counters the bench reads.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub struct OpCount {
    /// Requests of the opcode served so far.
    pub count: u64,
}

/// The requests between two snapshots, by opcode, only those that
/// occurred.
///
/// ```
/// use fastfuse_bench::stats::{requests, OpCount, Snapshot};
/// let snap = |pairs: &[(&str, u64)]| Snapshot {
///     ops: pairs.iter().map(|&(n, count)| (n.to_string(), OpCount { count })).collect(),
///     ..Snapshot::default()
/// };
/// let d = requests(&snap(&[("LOOKUP", 5), ("GETATTR", 2)]), &snap(&[("LOOKUP", 9), ("GETATTR", 2), ("CREATE", 1)]));
/// assert_eq!(d.into_iter().collect::<Vec<_>>(), [("CREATE".to_string(), 1), ("LOOKUP".to_string(), 4)]);
/// ```
pub fn requests(before: &Snapshot, after: &Snapshot) -> BTreeMap<String, u64> {
    after
        .ops
        .iter()
        .map(|(name, op)| {
            let was = before.ops.get(name).map_or(0, |b| b.count);
            (name.clone(), op.count.saturating_sub(was))
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Reads a mount's statistics with `BIN stats --json MNT`.
pub fn query(bin: &Path, mountpoint: &Path) -> Result<Snapshot, String> {
    let out = Command::new(bin)
        .arg("stats")
        .arg("--json")
        .arg(mountpoint)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {} stats: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} stats failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("fastfuse stats JSON: {e}"))
}

/// The WRITEs between two snapshots.
///
/// ```
/// use fastfuse_bench::stats::{delta, Snapshot};
/// use fastfuse_bench::schema::SizeBucket;
/// let b = |up_to_bytes, count| SizeBucket { up_to_bytes, count };
/// let before = Snapshot { write_sizes: vec![b(4096, 10)], ..Snapshot::default() };
/// let after = Snapshot { write_sizes: vec![b(4096, 10), b(1 << 20, 3)], ..Snapshot::default() };
/// let d = delta(&before, &after);
/// assert_eq!(d.writes, 3);
/// assert_eq!(d.share_1m_bytes, 1.0);
/// ```
pub fn delta(before: &Snapshot, after: &Snapshot) -> WriteSizes {
    let count_before = |up: u64| {
        before
            .write_sizes
            .iter()
            .find(|b| b.up_to_bytes == up)
            .map_or(0, |b| b.count)
    };
    let buckets: Vec<SizeBucket> = after
        .write_sizes
        .iter()
        .map(|b| SizeBucket {
            up_to_bytes: b.up_to_bytes,
            count: b.count.saturating_sub(count_before(b.up_to_bytes)),
        })
        .filter(|b| b.count > 0)
        .collect();
    let writes = buckets.iter().map(|b| b.count).sum();
    // fold from +0.0: an empty f64 sum is -0.0, which prints as "-0.0%".
    let bytes = buckets
        .iter()
        .map(|b| b.count as f64 * b.up_to_bytes as f64)
        .fold(0.0, |a, b| a + b);
    let mib = buckets
        .iter()
        .filter(|b| b.up_to_bytes == 1 << 20)
        .map(|b| b.count as f64 * b.up_to_bytes as f64)
        .fold(0.0, |a, b| a + b);
    WriteSizes {
        buckets,
        writes,
        share_1m_bytes: if bytes > 0.0 { mib / bytes } else { 0.0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_of_bytes_in_1m_writes() {
        let b = |up_to_bytes, count| SizeBucket { up_to_bytes, count };
        let before = Snapshot::default();
        let after = Snapshot {
            write_sizes: vec![b(4096, 256), b(1 << 20, 1)],
            ..Snapshot::default()
        };
        let d = delta(&before, &after);
        assert_eq!(d.writes, 257);
        assert!((d.share_1m_bytes - 0.5).abs() < 1e-12);
        // Nothing written: no share.
        assert_eq!(delta(&after, &after).share_1m_bytes, 0.0);
        assert!(delta(&after, &after).buckets.is_empty());
    }

    #[test]
    fn reads_the_stats_json_of_the_engine() {
        let json = r#"{"uptime_secs":1.5,"requests_by_transport":{"dev":3},
            "ops":{"WRITE":{"count":3,"errors":0,"total_ns":9,"latency_log2_ns":[1]}},
            "write_sizes":[{"up_to_bytes":1048576,"count":3}]}"#;
        let s: Snapshot = serde_json::from_str(json).unwrap();
        assert_eq!(s.write_sizes[0].count, 3);
        assert_eq!(s.ops["WRITE"].count, 3);
    }
}
