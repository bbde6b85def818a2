//! The JSON a run writes (`results.json`), schema `fastfuse-bench/1`.
//!
//! One [`BenchRun`] holds every repetition of every configuration ×
//! workload as a [`Sample`]; medians and ratios are computed from them by
//! [`crate::report`] and [`crate::compare`], never stored as the only copy.
//! Readers accept any `fastfuse-bench/1` document; a change that breaks
//! readers bumps the number. Fields added since are optional
//! (`seed_method`, a sample's `requests`), so runs written before them
//! still load.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The schema tag of this version.
pub const SCHEMA: &str = "fastfuse-bench/1";

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BenchRun {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// When the run started (RFC 3339, UTC).
    pub started: String,
    /// When it ended.
    pub finished: String,
    /// The machine it ran on.
    pub machine: Machine,
    /// `uname -r`.
    pub kernel: String,
    /// The command line (argv).
    pub command: Vec<String>,
    /// The load generator of the table: `builtin` or `fio`.
    pub engine: String,
    /// Whether data workloads also ran with the other engine (to check
    /// that the two agree).
    pub both_engines: bool,
    /// What the sources were: `tmpfs` (as root) or `tempdir`.
    pub source: String,
    /// Sizes and counts the workloads used.
    pub options: RunOptions,
    /// The configurations, in table order.
    pub configs: Vec<ConfigInfo>,
    /// The workloads, in table order.
    pub workloads: Vec<WorkloadInfo>,
    /// Every measurement.
    pub results: Vec<Sample>,
    /// Problems noticed during the run (failed mounts, skipped steps).
    pub warnings: Vec<String>,
    /// Whether the run was cut short (Ctrl-C).
    pub interrupted: bool,
    /// Set when the run was `--seed-method`: the seed's own fio command
    /// lines, ten runs a cell, outliers dropped (see [`crate::seed`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_method: Option<SeedMethodInfo>,
}

/// How a `--seed-method` run measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeedMethodInfo {
    /// fio's `--ramp_time`, seconds (the seed's: 30).
    pub ramp_secs: f64,
    /// The size per job asked for (the seed's: 2G); a row whose jobs'
    /// files would not fit in memory writes less (its `size_per_job`).
    pub size_per_job: u64,
    /// The rows, with the size per job each used.
    pub rows: Vec<SeedRow>,
    /// The outlier rule the cells' means follow, in words.
    pub outliers: String,
}

/// One row of a `--seed-method` run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeedRow {
    /// The workload name (`seq-write-1k`, ..., `seq-write-1M-32jobs`).
    pub workload: String,
    /// fio's `--bs`, bytes.
    pub bs: u64,
    /// fio's `--numjobs`.
    pub jobs: u32,
    /// fio's `--size` (per job), bytes.
    pub size_per_job: u64,
}

/// The machine.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    /// Host name.
    pub hostname: String,
    /// CPUs this process may run on.
    pub cpus: usize,
    /// `MemTotal` from /proc/meminfo, in bytes.
    pub mem_total_bytes: u64,
    /// The first `model name` of /proc/cpuinfo.
    pub cpu_model: String,
}

/// Sizes and counts of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunOptions {
    /// Repetitions.
    pub reps: u32,
    /// File size per job of the data workloads (fio's `--size`), bytes.
    pub size_per_job: u64,
    /// Run time of each data workload, seconds.
    pub runtime_secs: f64,
    /// Entries (files and directories) of the metadata tree.
    pub tree_entries: u64,
    /// Whether `--quick` chose the sizes.
    pub quick: bool,
}

/// One configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConfigInfo {
    /// Name in the table (`tmpfs`, `fastfuse-seed`, `mergerfs-wb`, ...).
    pub name: String,
    /// `limit`, `fastfuse`, `fastfuse-bypass` or `peer`.
    pub family: String,
    /// The mount command (with `{src}` and `{mnt}`), empty for the limit.
    pub command: String,
}

/// One workload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkloadInfo {
    /// Name (`seq-write-1k`, ..., `untar`, `stat`, `rm`).
    pub name: String,
    /// `MiB/s` or `files/s`.
    pub unit: String,
    /// What it does, in words (for the data workloads, fio's options).
    pub description: String,
}

/// How a measurement ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Measured.
    Ok,
    /// Not applicable to this configuration (e.g. reads on a bypass mode).
    Skipped,
    /// Tried and failed; `note` says why.
    Failed,
}

/// One measurement: a workload on a configuration in one repetition with
/// one engine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    /// Repetition, from 1.
    pub rep: u32,
    /// Configuration name.
    pub config: String,
    /// Workload name.
    pub workload: String,
    /// `builtin` or `fio`.
    pub engine: String,
    /// Outcome.
    pub status: Status,
    /// Why it was skipped or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Throughput in `unit`, when measured.
    pub value: Option<f64>,
    /// `MiB/s` or `files/s`.
    pub unit: String,
    /// Measured seconds (for data workloads: first I/O to last I/O, as fio
    /// measures; closing the files is not in it).
    pub secs: f64,
    /// Seconds spent closing the files after the last I/O (flushes of the
    /// writeback cache), not in `secs`; built-in engine only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_secs: Option<f64>,
    /// Bytes read plus written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Entries handled (metadata workloads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    /// CPU time over the measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuUse>,
    /// The fastfuse server's WRITE sizes during the measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_sizes: Option<WriteSizes>,
    /// With `--profile`: the flame graph of this measurement, relative to
    /// the run's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The fastfuse server's requests during the measurement, by opcode
    /// (the kernel's names: `LOOKUP`, `CREATE`, ...), only those that
    /// occurred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<BTreeMap<String, u64>>,
}

/// CPU time spent during a measurement (from the start of the load to the
/// last close). See [`crate::cpu`] for the counters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CpuUse {
    /// Seconds of the server process, all its threads; none for the raw
    /// source.
    pub server_secs: Option<f64>,
    /// Busy seconds of the whole machine, all CPUs summed.
    pub machine_secs: f64,
    /// Which counter gave `server_secs`: `schedstat` (its threads' ns) or
    /// `stat-ticks` (/proc/PID/stat, when a thread ended during the
    /// measurement). Absent in runs before ns accounting: ticks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_clock: Option<String>,
    /// Which counter gave `machine_secs`: `cpuacct`, `proc-schedstat` or
    /// `stat-ticks`. Absent in runs before ns accounting: /proc/stat ticks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_clock: Option<String>,
    /// Server CPU seconds per GiB moved (data) or ms per 1000 files
    /// (metadata).
    pub server_per_unit: Option<f64>,
    /// Machine CPU seconds per GiB moved or ms per 1000 files.
    pub machine_per_unit: f64,
    /// `s/GiB` or `ms/kfile`.
    pub per: String,
}

/// One bucket of a WRITE-size histogram.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SizeBucket {
    /// WRITEs larger than half of this and at most this many bytes.
    pub up_to_bytes: u64,
    /// How many.
    pub count: u64,
}

/// The WRITE-size histogram of one measurement (after minus before).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WriteSizes {
    /// Non-empty buckets.
    pub buckets: Vec<SizeBucket>,
    /// WRITE requests in all.
    pub writes: u64,
    /// Share of WRITE bytes carried by requests in the 1 MiB bucket
    /// (each bucket's bytes estimated at its upper bound).
    pub share_1m_bytes: f64,
}
