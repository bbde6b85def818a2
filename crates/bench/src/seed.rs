//! `fastfuse bench --seed-method`: the seed's own measurement, as the LKML
//! thread of the FUSE writeback patch made it — fio's command line as is
//! (`fio --name=writeback --ioengine=sync --rw=write --bs=B --size=2G
//! --numjobs=2 --ramp_time=30 --group_reporting=1 --directory=MNT`, one
//! run per block size, and the reply's 32-writer row), ten runs a cell, the
//! cell being the mean of the runs left after dropping outliers
//! ([`tukey`]).
//!
//! The normal bench differs on purpose (time-based runs, medians of three):
//! this mode exists to put numbers next to the LKML table measured the way
//! that table was.

use std::fmt::Write as _;
use std::time::Duration;

use crate::report::cell;
use crate::schema::{BenchRun, SeedRow};
use crate::units::{figure, short_size, GIB, MIB};
use crate::workload::{DataSpec, Kind, Pattern, Workload};

/// fio's `--ramp_time` of the seed, seconds.
pub const RAMP: Duration = Duration::from_secs(30);
/// fio's `--size` of the seed (per job).
pub const SIZE: u64 = 2 * GIB;
/// Runs per cell.
pub const REPS: u32 = 10;
/// The configurations compared when `--configs` is not given.
pub const CONFIGS: [&str; 2] = ["fastfuse-seed", "libfuse-ll"];

/// The rows: workload name, `--bs`, `--numjobs`, and the LKML table's
/// MiB/s on the seed's machine with the patched kernel (none for the
/// reply's 32-job run, which gave no comparable figure).
pub const ROWS: [(&str, u64, u32, Option<f64>); 4] = [
    ("seq-write-1k", 1 << 10, 2, Some(341.0)),
    ("seq-write-4k", 4 << 10, 2, Some(2246.0)),
    ("seq-write-1M", MIB, 2, Some(2685.0)),
    ("seq-write-1M-32jobs", MIB, 32, None),
];

/// The outlier rule, as report.md prints it.
pub const OUTLIER_RULE: &str = "Tukey's fences: a run is an outlier when it lies outside \
[Q1 − 1.5·IQR, Q3 + 1.5·IQR] of its cell's runs (IQR = Q3 − Q1; quartiles by linear \
interpolation between order statistics, position (n − 1)·p from 0, as numpy's and R's \
default); the cell is the mean of the other runs";

/// The size per job of a row with `jobs` jobs: the seed's `size`, unless
/// the jobs' files would not fit, with room for a second copy in the
/// mount's page cache, in a tmpfs of half the memory (`mem_total`
/// bytes): then the largest power of two that does (32 jobs on 24 GiB:
/// 256M, where 2G × 32 = 64 GiB could never fit).
///
/// ```
/// use fastfuse_bench::seed::size_per_job;
/// let gib = 1u64 << 30;
/// assert_eq!(size_per_job(2 * gib, 2, 24 * gib), 2 * gib);
/// assert_eq!(size_per_job(2 * gib, 32, 24 * gib), 256 << 20);
/// assert_eq!(size_per_job(8 << 20, 32, 24 * gib), 8 << 20);
/// ```
pub fn size_per_job(size: u64, jobs: u32, mem_total: u64) -> u64 {
    let budget = mem_total / 2 / u64::from(jobs.max(1));
    if size <= budget || budget < MIB {
        return size;
    }
    1u64 << (u64::BITS - 1 - budget.leading_zeros())
}

/// The seed's rows named in `names` (all four if empty), in table order,
/// each job writing `size` (bounded by [`size_per_job`]) once.
pub fn workloads(size: u64, mem_total: u64, names: &[String]) -> Result<Vec<Workload>, String> {
    for n in names {
        if !ROWS.iter().any(|r| r.0 == n) {
            return Err(format!(
                "--seed-method runs the seed's rows only; {n:?} is not one of {}",
                ROWS.map(|r| r.0).join(", ")
            ));
        }
    }
    Ok(ROWS
        .iter()
        .filter(|r| names.is_empty() || names.iter().any(|n| n == r.0))
        .map(|&(name, bs, jobs, _)| Workload {
            name: name.to_string(),
            kind: Kind::Data(DataSpec {
                pattern: Pattern::SeqWrite,
                bs,
                jobs,
                file_size: (size_per_job(size, jobs, mem_total) / bs).max(1) * bs,
                // Not time based: each job writes its size once.
                runtime: Duration::ZERO,
                cold: false,
            }),
        })
        .collect())
}

/// The rows of a plan's workloads, for the JSON.
pub fn rows(workloads: &[Workload]) -> Vec<SeedRow> {
    workloads
        .iter()
        .filter_map(|w| {
            let d = w.data()?;
            Some(SeedRow {
                workload: w.name.clone(),
                bs: d.bs,
                jobs: d.jobs,
                size_per_job: d.file_size,
            })
        })
        .collect()
}

/// The command line of a row, for the report.
pub fn describe(spec: &DataSpec, ramp: Duration) -> String {
    format!(
        "fio {}",
        crate::fio::seed_args(std::path::Path::new("MNT"), spec, ramp).join(" ")
    )
}

/// The first and third quartiles of `values`, by linear interpolation
/// between order statistics (position (n − 1)·p from 0).
///
/// ```
/// use fastfuse_bench::seed::quartiles;
/// assert_eq!(quartiles(&[4.0, 1.0, 3.0, 2.0, 5.0]), Some((2.0, 4.0)));
/// assert_eq!(quartiles(&[1.0, 2.0]), Some((1.25, 1.75)));
/// assert_eq!(quartiles(&[]), None);
/// ```
pub fn quartiles(values: &[f64]) -> Option<(f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let at = |p: f64| {
        let h = (v.len() - 1) as f64 * p;
        let lo = h.floor() as usize;
        let hi = (lo + 1).min(v.len() - 1);
        v[lo] + (h - lo as f64) * (v[hi] - v[lo])
    };
    Some((at(0.25), at(0.75)))
}

/// A cell after dropping outliers.
#[derive(Debug, Clone, PartialEq)]
pub struct Trimmed {
    /// The mean of the runs inside the fences.
    pub mean: f64,
    /// Runs inside the fences.
    pub kept: usize,
    /// Runs outside.
    pub dropped: usize,
    /// The lower fence, Q1 − 1.5·IQR.
    pub low_fence: f64,
    /// The upper fence, Q3 + 1.5·IQR.
    pub high_fence: f64,
    /// The lowest run, outliers included.
    pub min: f64,
    /// The highest run, outliers included.
    pub max: f64,
}

/// The mean of `values` without the outliers of [`OUTLIER_RULE`]; `None`
/// without a finite value.
///
/// ```
/// use fastfuse_bench::seed::tukey;
/// let t = tukey(&[100.0, 101.0, 99.0, 100.0, 100.0, 102.0, 98.0, 100.0, 101.0, 60.0]).unwrap();
/// assert_eq!((t.kept, t.dropped), (9, 1));
/// assert!((t.mean - 100.111).abs() < 1e-3);
/// assert_eq!((t.min, t.max), (60.0, 102.0));
/// ```
pub fn tukey(values: &[f64]) -> Option<Trimmed> {
    let (q1, q3) = quartiles(values)?;
    let iqr = q3 - q1;
    let (low_fence, high_fence) = (q1 - 1.5 * iqr, q3 + 1.5 * iqr);
    let finite = || values.iter().copied().filter(|x| x.is_finite());
    let kept: Vec<f64> = finite()
        .filter(|&v| v >= low_fence && v <= high_fence)
        .collect();
    Some(Trimmed {
        mean: kept.iter().sum::<f64>() / kept.len() as f64,
        kept: kept.len(),
        dropped: finite().count() - kept.len(),
        low_fence,
        high_fence,
        min: finite().fold(f64::INFINITY, f64::min),
        max: finite().fold(f64::NEG_INFINITY, f64::max),
    })
}

/// The cell of a configuration and row: the trimmed mean of its runs.
pub fn trimmed(run: &BenchRun, config: &str, workload: &str) -> Option<Trimmed> {
    tukey(&cell(run, config, workload, &run.engine).values)
}

fn cell_text(t: Option<&Trimmed>) -> String {
    match t {
        Some(t) => format!(
            "{} [{}–{}] ({} dropped)",
            figure(t.mean),
            figure(t.min),
            figure(t.max),
            t.dropped
        ),
        None => "-".into(),
    }
}

/// What `--ramp_time` did in this run, from the bytes fio counted: a run
/// whose ramp ended while it wrote counts less than its jobs' sizes.
fn ramp_ended(run: &BenchRun, config: &str, row: &SeedRow) -> (usize, usize) {
    let all = row.size_per_job * u64::from(row.jobs);
    let ok: Vec<_> = run
        .results
        .iter()
        .filter(|s| s.config == config && s.workload == row.workload && s.value.is_some())
        .collect();
    let ended = ok
        .iter()
        .filter(|s| s.bytes.is_some_and(|b| b < all))
        .count();
    (ended, ok.len())
}

/// The seed-method section of report.md: the headline table (rows the
/// seed's, columns the configurations, fastfuse-seed / libfuse-ll, and
/// the LKML figures), the outlier rule, what the ramp did, and every
/// cell's detail. Empty for a run that was not `--seed-method`.
pub fn markdown(run: &BenchRun) -> String {
    let Some(info) = &run.seed_method else {
        return String::new();
    };
    let mut s = String::new();
    let (ours, theirs) = (CONFIGS[0], CONFIGS[1]);
    let has = |c: &str| run.configs.iter().any(|x| x.name == c);
    let ratio = has(ours) && has(theirs);
    let _ = writeln!(
        s,
        "\n## Seed method: the LKML table's fio runs\n\n\
         Each row ran the seed's own fio command line (below), {} runs a cell on a fresh mount \
         each over a fresh tmpfs source. A cell: the mean of its runs after dropping outliers \
         [min–max of all its runs] (outliers dropped). {OUTLIER_RULE}.\n",
        run.options.reps
    );
    let mut header = String::from("| row |");
    let mut rule = String::from("|---|");
    for c in &run.configs {
        let _ = write!(header, " {} MiB/s |", c.name);
        rule.push_str("---:|");
    }
    if ratio {
        let _ = write!(header, " {ours} / {theirs} |");
        rule.push_str("---:|");
    }
    header.push_str(" LKML table, seed's machine (patched kernel) |");
    rule.push_str("---:|");
    let _ = writeln!(s, "{header}\n{rule}");
    for row in &info.rows {
        let label = format!(
            "{} ({} jobs × {})",
            short_size(row.bs),
            row.jobs,
            short_size(row.size_per_job)
        );
        let _ = write!(s, "| {label} |");
        for c in &run.configs {
            let _ = write!(
                s,
                " {} |",
                cell_text(trimmed(run, &c.name, &row.workload).as_ref())
            );
        }
        if ratio {
            let r = match (
                trimmed(run, ours, &row.workload),
                trimmed(run, theirs, &row.workload),
            ) {
                (Some(a), Some(b)) if b.mean > 0.0 => format!("{:.2}", a.mean / b.mean),
                _ => "-".into(),
            };
            let _ = write!(s, " {r} |");
        }
        let lkml = ROWS
            .iter()
            .find(|r| r.0 == row.workload)
            .and_then(|r| r.3)
            .map_or("—".to_string(), figure);
        let _ = writeln!(s, " {lkml} |");
    }
    let _ = writeln!(
        s,
        "\nThe LKML column is not a measurement of this run: it is the table posted with the \
         patch, measured on the seed's machine (another CPU, memory and source filesystem, \
         bare metal), with the patched kernel; only the ratios of this run's columns compare \
         like with like."
    );
    for row in info
        .rows
        .iter()
        .filter(|r| r.size_per_job < info.size_per_job)
    {
        let _ = writeln!(
            s,
            "\n{} writes {} per job, not {}: {} jobs × {} would not fit in a tmpfs of half \
             the memory ({:.1} GiB here) with a second copy in the mount's page cache, so it is \
             the largest power of two that does.",
            row.workload,
            short_size(row.size_per_job),
            short_size(info.size_per_job),
            row.jobs,
            short_size(info.size_per_job),
            run.machine.mem_total_bytes as f64 / 2.0 / GIB as f64,
        );
    }
    let _ = writeln!(
        s,
        "\n`--ramp_time={}` with `--size` and no `--time_based` (fio 3.33): fio leaves the ramp \
         only while a job is still writing. A job that wrote its whole size before the ramp \
         ended never leaves it, and fio then counts everything — all bytes over the whole run, \
         file creation and first writes included — so the ramp discards nothing; only a run \
         still writing when the ramp ends has the ramp's bytes and time taken out. That takes \
         a rate below jobs × size / ramp_time (the seed's 2 × 2G in 30 s: 137 MiB/s). Runs \
         whose ramp ended (fio counted less than jobs × size):\n",
        crate::fio::ramp_arg(Duration::from_secs_f64(info.ramp_secs))
    );
    let _ = writeln!(
        s,
        "| config | row | runs | ramp ended | kept | fences | mean of kept |\n|---|---|---:|---:|---:|---|---:|"
    );
    for c in &run.configs {
        for row in &info.rows {
            let (ended, n) = ramp_ended(run, &c.name, row);
            let t = trimmed(run, &c.name, &row.workload);
            let _ = writeln!(
                s,
                "| {} | {} | {n} | {ended} | {} | {} | {} |",
                c.name,
                row.workload,
                t.as_ref().map_or("-".into(), |t| t.kept.to_string()),
                t.as_ref().map_or("-".into(), |t| format!(
                    "[{}, {}]",
                    figure(t.low_fence),
                    figure(t.high_fence)
                )),
                t.as_ref().map_or("-".into(), |t| figure(t.mean)),
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartiles_interpolate_between_order_statistics() {
        // numpy.percentile([1..10], [25, 75]) = 3.25, 7.75.
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quartiles(&v), Some((3.25, 7.75)));
        assert_eq!(quartiles(&[7.0]), Some((7.0, 7.0)));
    }

    #[test]
    fn tukey_drops_runs_outside_the_fences_only() {
        // Ten runs: Q1 = 100.25, Q3 = 104.75 (IQR 4.5), fences
        // [93.5, 111.5]: 93.5 itself stays, 93 and 112 go.
        let v = [
            93.0, 112.0, 100.0, 101.0, 102.0, 103.0, 104.0, 105.0, 106.0, 93.5,
        ];
        let (q1, q3) = quartiles(&v).unwrap();
        assert_eq!((q1, q3), (100.25, 104.75));
        let t = tukey(&v).unwrap();
        assert_eq!((t.low_fence, t.high_fence), (93.5, 111.5));
        assert_eq!((t.kept, t.dropped), (8, 2));
        let kept = [100.0, 101.0, 102.0, 103.0, 104.0, 105.0, 106.0, 93.5];
        assert!((t.mean - kept.iter().sum::<f64>() / 8.0).abs() < 1e-12);
        assert_eq!((t.min, t.max), (93.0, 112.0));
        // No outlier: the plain mean.
        let t = tukey(&[10.0, 11.0, 12.0]).unwrap();
        assert_eq!((t.kept, t.dropped, t.mean), (3, 0, 11.0));
        // Equal runs: IQR 0, nothing dropped.
        assert_eq!(tukey(&[5.0; 10]).unwrap().dropped, 0);
        assert!(tukey(&[]).is_none());
    }

    #[test]
    fn rows_are_the_seed_rows_and_sizes_fit() {
        let w = workloads(SIZE, 24 * GIB, &[]).unwrap();
        let names: Vec<_> = w.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ROWS.map(|r| r.0));
        let sizes: Vec<_> = w.iter().map(|w| w.data().unwrap().file_size).collect();
        assert_eq!(sizes, [SIZE, SIZE, SIZE, 256 * MIB]);
        assert_eq!(
            describe(w[3].data().unwrap(), RAMP),
            "fio --name=writeback --ioengine=sync --rw=write --bs=1M --size=256M --numjobs=32 \
             --ramp_time=30 --group_reporting=1 --directory=MNT"
        );
        assert_eq!(
            describe(w[0].data().unwrap(), Duration::from_millis(200)),
            "fio --name=writeback --ioengine=sync --rw=write --bs=1k --size=2G --numjobs=2 \
             --ramp_time=200ms --group_reporting=1 --directory=MNT"
        );
        let picked = workloads(SIZE, 24 * GIB, &["seq-write-1M".into()]).unwrap();
        assert_eq!(picked.len(), 1);
        assert!(workloads(SIZE, 24 * GIB, &["untar".into()]).is_err());
    }
}
