//! The workloads: the seed's fio jobs and a metadata tree.
//!
//! Data workloads are fio jobs with the sync engine, buffered (no
//! O_DIRECT), one file per job named as fio names it (`NAME.JOB.0`),
//! time-based over files of a fixed size (fio's `--size`, wrapping around at
//! the end). Metadata workloads extract, stat and remove a generated tree.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::{short_size, MIB};

/// The access pattern of a data workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pattern {
    /// Sequential writes (`--rw=write`).
    SeqWrite,
    /// Sequential reads of files written beforehand (`--rw=read`).
    SeqRead,
    /// Random reads and writes, half each, on laid-out files
    /// (`--rw=randrw --rwmixread=50`).
    RandRw,
}

impl Pattern {
    /// fio's `--rw` value.
    pub fn fio_rw(self) -> &'static str {
        match self {
            Pattern::SeqWrite => "write",
            Pattern::SeqRead => "read",
            Pattern::RandRw => "randrw",
        }
    }

    /// Whether the files must exist, full size, before the timed part.
    pub fn needs_layout(self) -> bool {
        !matches!(self, Pattern::SeqWrite)
    }

    /// Whether the workload reads back data it stored (meaningless on a
    /// configuration that drops writes).
    pub fn reads(self) -> bool {
        !matches!(self, Pattern::SeqWrite)
    }
}

/// A data workload: fio's job options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSpec {
    /// Access pattern.
    pub pattern: Pattern,
    /// Block size (`--bs`).
    pub bs: u64,
    /// Jobs, each on its own file (`--numjobs`).
    pub jobs: u32,
    /// File size per job (`--size`).
    pub file_size: u64,
    /// Run time (`--time_based --runtime`).
    pub runtime: Duration,
    /// Drop the page cache (`echo 3 > /proc/sys/vm/drop_caches`) after the
    /// layout, so reads start cold.
    pub cold: bool,
}

impl DataSpec {
    /// The equivalent fio options, for the report.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "fio --rw={} --ioengine=sync --bs={} --numjobs={} --size={} --time_based --runtime={}ms",
            self.pattern.fio_rw(),
            short_size(self.bs),
            self.jobs,
            short_size(self.file_size),
            self.runtime.as_millis()
        );
        if self.pattern == Pattern::RandRw {
            s.push_str(" --rwmixread=50");
        }
        if self.cold {
            s = format!("drop_caches, then {s}");
        }
        s
    }
}

/// A metadata operation on the generated tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaOp {
    /// Extract the tarball into the mount (`tar -xf - -C MNT`).
    Untar,
    /// `lstat` every entry after dropping dentries and inodes
    /// (`echo 2 > /proc/sys/vm/drop_caches`).
    Stat,
    /// `rm -rf` the tree.
    Rm,
}

/// What a workload does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Throughput in MiB/s.
    Data(DataSpec),
    /// Files per second.
    Meta(MetaOp),
}

/// A named workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The name in the output.
    pub name: String,
    /// What it does.
    pub kind: Kind,
}

impl Workload {
    /// `MiB/s` or `files/s`.
    pub fn unit(&self) -> &'static str {
        match self.kind {
            Kind::Data(_) => "MiB/s",
            Kind::Meta(_) => "files/s",
        }
    }

    /// The data spec, if a data workload.
    pub fn data(&self) -> Option<&DataSpec> {
        match &self.kind {
            Kind::Data(d) => Some(d),
            Kind::Meta(_) => None,
        }
    }

    /// The metadata operation, if a metadata workload.
    pub fn meta(&self) -> Option<MetaOp> {
        match &self.kind {
            Kind::Data(_) => None,
            Kind::Meta(op) => Some(*op),
        }
    }

    /// Whether it is one of the seed's rows (sequential writes), where the
    /// two engines must agree and fastfuse must reach the best peer.
    pub fn is_seed_row(&self) -> bool {
        matches!(&self.kind, Kind::Data(d) if d.pattern == Pattern::SeqWrite)
    }

    /// What it does, in words.
    pub fn describe(&self, tree_entries: u64) -> String {
        match &self.kind {
            Kind::Data(d) => d.describe(),
            Kind::Meta(MetaOp::Untar) => {
                format!("tar -xf of a generated tree of {tree_entries} entries")
            }
            Kind::Meta(MetaOp::Stat) => {
                format!(
                    "lstat of {tree_entries} entries after drop_caches=2, {} times",
                    crate::meta::STAT_WALKS
                )
            }
            Kind::Meta(MetaOp::Rm) => format!("rm -rf of {tree_entries} entries"),
        }
    }
}

/// The workload names, in table order.
pub const NAMES: [&str; 9] = [
    "seq-write-1k",
    "seq-write-4k",
    "seq-write-1M",
    "seq-write-1M-32jobs",
    "seq-read-1M-cold",
    "rand-rw-4k",
    "untar",
    "stat",
    "rm",
];

/// Sizes the workloads are built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// File size per job of the 2-job workloads (fio's `--size`).
    pub file_size: u64,
    /// Run time of each data workload.
    pub runtime: Duration,
    /// Regular files in the metadata tree.
    pub tree_files: u32,
}

impl Sizes {
    /// The full run's sizes: the seed's 256M per job; 3 s per workload so
    /// that three repetitions of every configuration fit in 15 minutes.
    pub const FULL: Sizes = Sizes {
        file_size: 256 * MIB,
        runtime: Duration::from_secs(3),
        tree_files: 5000,
    };

    /// `--quick`: small files, short runs.
    pub const QUICK: Sizes = Sizes {
        file_size: 32 * MIB,
        runtime: Duration::from_millis(700),
        tree_files: 1000,
    };
}

/// The file size per job of a workload with `jobs` jobs of block size `bs`:
/// `size` for 2 jobs; many jobs share `2 × size` so that every workload
/// touches the same amount of data (32 × 256M would not fit twice in
/// memory: once in tmpfs, once in the FUSE mount's page cache), but never
/// fewer than 4 blocks (a file of one block would wrap, and so invalidate
/// its cache, after every write).
pub fn file_size_for(size: u64, jobs: u32, bs: u64) -> u64 {
    if jobs <= 2 {
        return (size / bs).max(1) * bs;
    }
    (size * 2 / u64::from(jobs) / bs).max(4) * bs
}

fn data(name: &str, pattern: Pattern, bs: u64, jobs: u32, sizes: &Sizes, cold: bool) -> Workload {
    Workload {
        name: name.to_string(),
        kind: Kind::Data(DataSpec {
            pattern,
            bs,
            jobs,
            file_size: file_size_for(sizes.file_size, jobs, bs),
            runtime: sizes.runtime,
            cold,
        }),
    }
}

/// Every workload, in table order.
pub fn all(sizes: &Sizes) -> Vec<Workload> {
    let meta = |name: &str, op| Workload {
        name: name.to_string(),
        kind: Kind::Meta(op),
    };
    vec![
        data("seq-write-1k", Pattern::SeqWrite, 1 << 10, 2, sizes, false),
        data("seq-write-4k", Pattern::SeqWrite, 4 << 10, 2, sizes, false),
        data("seq-write-1M", Pattern::SeqWrite, MIB, 2, sizes, false),
        data(
            "seq-write-1M-32jobs",
            Pattern::SeqWrite,
            MIB,
            32,
            sizes,
            false,
        ),
        data("seq-read-1M-cold", Pattern::SeqRead, MIB, 2, sizes, true),
        data("rand-rw-4k", Pattern::RandRw, 4 << 10, 2, sizes, false),
        meta("untar", MetaOp::Untar),
        meta("stat", MetaOp::Stat),
        meta("rm", MetaOp::Rm),
    ]
}

/// The workloads named in `names` (all if empty), in table order.
pub fn select(sizes: &Sizes, names: &[String]) -> Result<Vec<Workload>, String> {
    for n in names {
        if !NAMES.contains(&n.as_str()) {
            return Err(format!(
                "unknown workload {n:?}; known: {}",
                NAMES.join(", ")
            ));
        }
    }
    Ok(all(sizes)
        .into_iter()
        .filter(|w| names.is_empty() || names.contains(&w.name))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_table() {
        let names: Vec<String> = all(&Sizes::FULL).into_iter().map(|w| w.name).collect();
        assert_eq!(names, NAMES);
    }

    #[test]
    fn many_jobs_share_the_data_set() {
        assert_eq!(file_size_for(256 * MIB, 2, MIB), 256 * MIB);
        assert_eq!(file_size_for(256 * MIB, 32, MIB), 16 * MIB);
        // Never below four blocks when shared.
        assert_eq!(file_size_for(8 * MIB, 32, MIB), 4 * MIB);
        assert_eq!(file_size_for(8 * MIB, 2, MIB), 8 * MIB);
    }

    #[test]
    fn selection_keeps_table_order_and_rejects_unknown_names() {
        let w = select(&Sizes::QUICK, &["rm".into(), "seq-write-1k".into()]).unwrap();
        assert_eq!(w[0].name, "seq-write-1k");
        assert_eq!(w[1].name, "rm");
        assert!(select(&Sizes::QUICK, &["seq-write-2k".into()]).is_err());
    }

    #[test]
    fn description_reads_like_fio() {
        let w = &all(&Sizes::FULL)[0];
        assert_eq!(
            w.describe(0),
            "fio --rw=write --ioengine=sync --bs=1k --numjobs=2 --size=256M --time_based --runtime=3000ms"
        );
    }
}
