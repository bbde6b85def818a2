//! `fastfuse bench`: the seed's fio table in one command.
//!
//! Mounts configurations — the raw tmpfs source (the physical limit),
//! fastfuse in its modes, and other FUSE servers (mergerfs, bindfs, any
//! `--peer`) — each on a fresh tmpfs source, runs the seed's workloads on
//! them with a built-in load generator or fio, and reports a markdown
//! table (medians, ratios to the limit, CPU per GiB), JSON with every
//! repetition, and an SVG chart.
//!
//! The modules follow the run:
//! - [`workload`]: the workloads and their sizes;
//! - [`config`], [`mounts`]: the configurations, and mounting and taking
//!   them down (guards; also on failure and Ctrl-C);
//! - [`loadgen`], [`fio`], [`meta`]: the engines that generate load;
//! - [`cpu`], [`stats`]: CPU accounting and fastfuse's WRITE sizes;
//! - [`runner`]: repetitions, interleaving, progress;
//! - [`schema`], [`report`], [`compare`], [`signif`]: the JSON, the table
//!   and chart, before/after and whether a difference is noise;
//! - [`cli`]: the command line (`fastfuse bench` is glue over it).
//!
//! The numbers of a workload are the ones fio would print:
//!
//! ```
//! use fastfuse_bench::workload::{self, Sizes};
//! let seed = &workload::all(&Sizes::FULL)[0];
//! assert_eq!(seed.name, "seq-write-1k");
//! assert!(seed.describe(0).starts_with("fio --rw=write --ioengine=sync --bs=1k --numjobs=2"));
//! ```

#![deny(unsafe_code)]

pub mod check;
pub mod cli;
pub mod compare;
pub mod config;
pub mod cpu;
pub mod fio;
pub mod loadgen;
pub mod meta;
pub mod mounts;
pub mod profile;
pub mod report;
pub mod runner;
pub mod schema;
pub mod seed;
pub mod signif;
pub mod stats;
pub mod units;
pub mod workload;

pub use cli::{BenchArgs, RunArgs};
pub use schema::{BenchRun, Sample, SCHEMA};
