//! `fastfuse bench check`: does the built-in load generator measure what
//! fio measures? On a run made with `--engine both`, the median over
//! repetitions of fio's throughput over the built-in engine's (each pair
//! measured back to back on the same mount) must lie in a band per row.
//!
//! This is a property of a benchmark run on a quiet machine, so it is
//! checked here, on a run whose report records it, and not as a timed
//! test in `cargo test` (where a loaded CI machine moves the ratio).
//!
//! The bands, and why:
//! - Where a write costs a few microseconds, fio's own bookkeeping per
//!   write (about a microsecond: on tmpfs its JSON reports usr_cpu near
//!   30% against 10% for the built-in engine) shows, and fio comes out
//!   slower. That is raw tmpfs at 1k and 4k and the writeback cache at 1k
//!   and 4k, where a write is one copy into the page cache and costs about
//!   the same 5 µs at either size. On such rows (a write under 20 µs per
//!   job, as the built-in engine measured it) fio may be up to 40% slower
//!   and at most 15% faster.
//! - Above that (the 1M rows through FUSE, about 1 ms a write) the two
//!   must agree within 15%.
//! - Raw tmpfs at 1M is memory bandwidth shared by the jobs; there the
//!   two engines' ratio ranged over 0.71-0.90 (2 jobs) and 0.83-1.37 (32
//!   jobs) between runs on a 2-core VM, so raw tmpfs is held only to
//!   0.6-1.5 there (0.4-1.5 at 1k and 4k): wide enough for the machine,
//!   narrow enough to catch an engine that stopped writing.

use crate::report::{cell, engine_ratio};
use crate::schema::BenchRun;
use crate::units::MIB;
use crate::workload::{self, Sizes, Workload};

/// One row of the check.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The configuration.
    pub config: String,
    /// The workload (a seed row).
    pub workload: String,
    /// fio over built-in, median of per-repetition ratios.
    pub ratio: f64,
    /// What one write took per job, by the built-in engine's median, µs.
    pub write_micros: f64,
    /// The band the ratio must lie in.
    pub band: (f64, f64),
}

impl Row {
    /// Whether the ratio lies in the band.
    pub fn ok(&self) -> bool {
        (self.band.0..=self.band.1).contains(&self.ratio)
    }
}

/// Where one write costs less than this per job, fio's bookkeeping shows.
const CHEAP_WRITE_MICROS: f64 = 20.0;

/// The check's rows: every seed row of every configuration that both
/// engines measured. Empty when the run was not made with `--engine both`.
pub fn engines_agree(run: &BenchRun) -> Vec<Row> {
    // Block size and jobs do not depend on the sizes a run chose.
    let seed_rows: Vec<(String, f64, f64)> = workload::all(&Sizes::FULL)
        .into_iter()
        .filter(Workload::is_seed_row)
        .filter_map(|w| {
            let d = w.data()?;
            Some((w.name.clone(), d.bs as f64, f64::from(d.jobs)))
        })
        .collect();
    let mut rows = Vec::new();
    for config in &run.configs {
        for (workload, block, jobs) in &seed_rows {
            let (workload, block, jobs) = (workload.as_str(), *block, *jobs);
            let Some(ratio) = engine_ratio(run, &config.name, workload) else {
                continue;
            };
            let Some(mib_per_s) = cell(run, &config.name, workload, "builtin").median else {
                continue;
            };
            let write_micros = if mib_per_s > 0.0 {
                block / (mib_per_s * MIB as f64 / jobs) * 1e6
            } else {
                f64::INFINITY
            };
            let raw = config.family == crate::config::Family::Limit.as_str();
            let band = if raw {
                if block <= 4096.0 {
                    (0.4, 1.5)
                } else {
                    (0.6, 1.5)
                }
            } else if write_micros < CHEAP_WRITE_MICROS {
                (0.6, 1.15)
            } else {
                (0.85, 1.15)
            };
            rows.push(Row {
                config: config.name.clone(),
                workload: workload.to_string(),
                ratio,
                write_micros,
                band,
            });
        }
    }
    rows
}

/// The check as a markdown section, for the report and for
/// `fastfuse bench check`.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "## Engine agreement (`fastfuse bench check`)\n\n\
         fio's throughput over the built-in engine's, median over repetitions; \
         each row must lie in its band (see `crates/bench/src/check.rs` for why the bands are what they are).\n\n\
         | config | workload | µs per write per job | fio / builtin | band | |\n|---|---|---:|---:|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.3} | {:.2}-{:.2} | {} |\n",
            r.config,
            r.workload,
            r.write_micros,
            r.ratio,
            r.band.0,
            r.band.1,
            if r.ok() { "ok" } else { "OUT OF BAND" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(samples: &[(&str, &str, &str, f64)]) -> BenchRun {
        let results: Vec<serde_json::Value> = samples
            .iter()
            .map(|(config, workload, engine, v)| {
                serde_json::json!({
                    "rep": 1, "config": config, "workload": workload, "engine": engine,
                    "status": "ok", "value": v, "unit": "MiB/s", "secs": 1.0
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "schema": crate::SCHEMA,
            "started": "2026-12-01T00:00:00Z", "finished": "2026-12-01T00:00:00Z",
            "machine": {"hostname": "h", "cpus": 2, "mem_total_bytes": 1, "cpu_model": "x"},
            "kernel": "6.18.0", "command": ["fastfuse", "bench"], "engine": "builtin",
            "both_engines": true, "source": "tmpfs",
            "options": {"reps": 1, "size_per_job": 1, "runtime_secs": 1.0, "tree_entries": 0, "quick": false},
            "configs": [
                {"name": "tmpfs", "family": "limit", "command": ""},
                {"name": "fastfuse-seed", "family": "fastfuse", "command": ""}
            ],
            "workloads": [
                {"name": "seq-write-4k", "unit": "MiB/s", "description": ""},
                {"name": "seq-write-1M", "unit": "MiB/s", "description": ""}
            ],
            "results": results, "warnings": [], "interrupted": false
        }))
        .unwrap()
    }

    #[test]
    fn bands_follow_the_cost_of_a_write() {
        let r = run(&[
            // 1528 MiB/s of 4k writes over 2 jobs: 5.1 µs a write.
            ("fastfuse-seed", "seq-write-4k", "builtin", 1528.0),
            ("fastfuse-seed", "seq-write-4k", "fio", 1299.0),
            // 1 ms a write: must agree within 15%.
            ("fastfuse-seed", "seq-write-1M", "builtin", 1658.0),
            ("fastfuse-seed", "seq-write-1M", "fio", 1300.0),
            ("tmpfs", "seq-write-1M", "builtin", 14964.0),
            ("tmpfs", "seq-write-1M", "fio", 9980.0),
        ]);
        let rows = engines_agree(&r);
        let row = |c: &str, w: &str| {
            rows.iter()
                .find(|r| r.config == c && r.workload == w)
                .unwrap()
                .clone()
        };
        let cheap = row("fastfuse-seed", "seq-write-4k");
        assert!((cheap.write_micros - 5.1).abs() < 0.1, "{cheap:?}");
        assert_eq!(cheap.band, (0.6, 1.15));
        assert!(cheap.ok());
        let dear = row("fastfuse-seed", "seq-write-1M");
        assert_eq!(dear.band, (0.85, 1.15));
        assert!(!dear.ok(), "0.78 is out of band: {dear:?}");
        let raw = row("tmpfs", "seq-write-1M");
        assert_eq!(raw.band, (0.6, 1.5));
        assert!(raw.ok());
        // Rows one engine did not measure are not checked.
        assert_eq!(rows.len(), 3);
        let md = markdown(&rows);
        assert!(
            md.contains("OUT OF BAND") && md.contains("| fastfuse-seed | seq-write-4k | 5.1 |")
        );
    }
}
