//! `fastfuse stats MNT`: a running mount's request statistics.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use fastfuse::stats::{OpStats, StatsSnapshot};

/// Arguments of `fastfuse stats`.
#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// The mountpoint of a running fastfuse filesystem.
    mountpoint: PathBuf,
    /// Print the raw snapshot as JSON.
    #[arg(long)]
    json: bool,
}

/// The upper bound, in ns, under which `q` of the requests completed.
fn quantile(op: &OpStats, q: f64) -> u64 {
    let total: u64 = op.latency_log2_ns.iter().sum();
    let target = (total as f64 * q).ceil() as u64;
    let mut seen = 0;
    for (i, n) in op.latency_log2_ns.iter().enumerate() {
        seen += n;
        if seen >= target {
            return 1u64 << (i + 1);
        }
    }
    0
}

fn human_ns(ns: u64) -> String {
    match ns {
        n if n >= 1_000_000_000 => format!("{:.1}s", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}ms", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}us", n as f64 / 1e3),
        n => format!("{n}ns"),
    }
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 20 => format!("{}MiB", b >> 20),
        b if b >= 1 << 10 => format!("{}KiB", b >> 10),
        b => format!("{b}B"),
    }
}

/// The snapshot as a table.
fn render(snap: &StatsSnapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "uptime {:.1}s", snap.uptime_secs);
    for (transport, n) in &snap.requests_by_transport {
        let _ = writeln!(out, "transport {transport}: {n} requests");
    }
    let _ = writeln!(
        out,
        "\n{:<16} {:>12} {:>8} {:>10} {:>10} {:>10}",
        "opcode", "count", "errors", "mean", "p50<", "p99<"
    );
    for (name, op) in &snap.ops {
        let mean = op.total_ns.checked_div(op.count).unwrap_or(0);
        let _ = writeln!(
            out,
            "{:<16} {:>12} {:>8} {:>10} {:>10} {:>10}",
            name,
            op.count,
            op.errors,
            human_ns(mean),
            human_ns(quantile(op, 0.5)),
            human_ns(quantile(op, 0.99)),
        );
    }
    if !snap.write_sizes.is_empty() {
        let _ = writeln!(out, "\n{:<16} {:>12}", "WRITE size <=", "count");
        for b in &snap.write_sizes {
            let _ = writeln!(out, "{:<16} {:>12}", human_bytes(b.up_to_bytes), b.count);
        }
    }
    if snap.spliced_writes > 0 {
        let _ = writeln!(
            out,
            "\nWRITEs spliced into the file: {}",
            snap.spliced_writes
        );
    }
    if snap.local_wake.idle_spells > 0 {
        let _ = writeln!(
            out,
            "\nio_uring threads under SCHED_IDLE (local wake-ups): {} times, {} back for a busy CPU",
            snap.local_wake.idle_spells, snap.local_wake.starved
        );
    }
    if !snap.handovers.is_empty() {
        let longest = snap
            .handovers
            .iter()
            .map(|h| h.pause_ms)
            .fold(0.0, f64::max);
        let _ = writeln!(
            out,
            "\nhand-overs: {} (longest pause {longest:.1} ms)",
            snap.handovers.len()
        );
        for h in &snap.handovers {
            let _ = writeln!(
                out,
                "  {:<8} at {:>9.1}s  paused {:>7.1} ms",
                h.kind, h.at_uptime_secs, h.pause_ms
            );
        }
    }
    out
}

/// Runs `fastfuse stats`.
pub fn run(args: StatsArgs) -> anyhow::Result<()> {
    let snap = fastfuse::stats::query(&args.mountpoint)
        .with_context(|| format!("reading statistics of {}", args.mountpoint.display()))?;
    let text = if args.json {
        serde_json::to_string_pretty(&snap)? + "\n"
    } else {
        render(&snap)
    };
    // A reader that stops early (`| head`) is not an error.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_histogram() {
        let op = OpStats {
            count: 100,
            errors: 0,
            total_ns: 0,
            // 90 requests in [1024, 2048) ns, 10 in [2^20, 2^21).
            latency_log2_ns: {
                let mut v = vec![0; 21];
                v[10] = 90;
                v[20] = 10;
                v
            },
        };
        assert_eq!(quantile(&op, 0.5), 2048);
        assert_eq!(quantile(&op, 0.99), 1 << 21);
        assert_eq!(human_bytes(1 << 20), "1MiB");
        assert_eq!(human_ns(1500), "1.5us");
    }
}
