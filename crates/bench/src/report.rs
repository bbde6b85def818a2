//! What a run shows: the markdown table (medians, ratios to the limit, CPU
//! per unit of work, fastfuse's best mode against the best peer), the
//! WRITE sizes fastfuse saw, sanity checks, and an SVG chart.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use crate::schema::{BenchRun, Sample, Status};
use crate::units::{figure, short_size};

/// The median of some values (the mean of the middle two for an even
/// count).
///
/// ```
/// use fastfuse_bench::report::median;
/// assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
/// assert_eq!(median(&[1.0, 2.0]), Some(1.5));
/// assert_eq!(median(&[]), None);
/// ```
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// One cell of the table: a configuration on a workload, over repetitions.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Median throughput (None: no repetition succeeded).
    pub median: Option<f64>,
    /// The lowest and highest throughput over repetitions.
    pub min: Option<f64>,
    /// See `min`.
    pub max: Option<f64>,
    /// Every repetition's throughput, in run order.
    pub values: Vec<f64>,
    /// Successful repetitions.
    pub n: usize,
    /// All were skipped (not applicable).
    pub skipped: bool,
    /// Median server CPU per unit.
    pub server_cpu: Option<f64>,
    /// Median machine CPU per unit.
    pub machine_cpu: Option<f64>,
}

/// The samples of `engine` for a configuration and workload; when there
/// are none (metadata workloads always run built in), those of any engine.
pub(crate) fn samples<'a>(
    run: &'a BenchRun,
    config: &str,
    workload: &str,
    engine: &str,
) -> Vec<&'a Sample> {
    let of = |e: Option<&str>| -> Vec<&Sample> {
        run.results
            .iter()
            .filter(|s| s.config == config && s.workload == workload)
            .filter(|s| e.is_none_or(|e| s.engine == e))
            .collect()
    };
    let mine = of(Some(engine));
    if mine.is_empty() {
        of(None)
    } else {
        mine
    }
}

/// The cell of a configuration and workload, for `engine`'s samples.
pub fn cell(run: &BenchRun, config: &str, workload: &str, engine: &str) -> Cell {
    let all = samples(run, config, workload, engine);
    let ok: Vec<&Sample> = all
        .iter()
        .copied()
        .filter(|s| s.status == Status::Ok)
        .collect();
    let values: Vec<f64> = ok.iter().filter_map(|s| s.value).collect();
    let server: Vec<f64> = ok
        .iter()
        .filter_map(|s| s.cpu.as_ref()?.server_per_unit)
        .collect();
    let machine: Vec<f64> = ok
        .iter()
        .filter_map(|s| s.cpu.as_ref().map(|c| c.machine_per_unit))
        .collect();
    let finite = || values.iter().copied().filter(|v| v.is_finite());
    Cell {
        median: median(&values),
        min: finite().min_by(f64::total_cmp),
        max: finite().max_by(f64::total_cmp),
        n: values.len(),
        skipped: !all.is_empty() && all.iter().all(|s| s.status == Status::Skipped),
        server_cpu: median(&server),
        machine_cpu: median(&machine),
        values,
    }
}

impl Cell {
    /// The median with the spread over repetitions, `429 [410–440]`
    /// (min–max); the median alone for one repetition, `-` for none.
    pub fn spread_text(&self) -> String {
        match (self.median, self.min, self.max) {
            (Some(m), Some(lo), Some(hi)) if self.n > 1 => {
                format!("{} [{}–{}]", figure(m), figure(lo), figure(hi))
            }
            (Some(m), _, _) => figure(m),
            _ => "-".to_string(),
        }
    }
}

/// The median over repetitions of fio's throughput over the built-in
/// engine's, each pair measured back to back on the same mount (so that
/// drift and other load on the machine cancel better than in a ratio of
/// medians).
pub fn engine_ratio(run: &BenchRun, config: &str, workload: &str) -> Option<f64> {
    let value = |rep: u32, engine: &str| {
        run.results
            .iter()
            .find(|s| {
                s.rep == rep
                    && s.config == config
                    && s.workload == workload
                    && s.engine == engine
                    && s.status == Status::Ok
            })
            .and_then(|s| s.value)
    };
    let ratios: Vec<f64> = (1..=run.results.iter().map(|s| s.rep).max().unwrap_or(0))
        .filter_map(|rep| match (value(rep, "builtin"), value(rep, "fio")) {
            (Some(b), Some(f)) if b > 0.0 => Some(f / b),
            _ => None,
        })
        .collect();
    median(&ratios)
}

/// The best configuration of a family on a workload, with its median.
pub fn best_of(run: &BenchRun, workload: &str, fam: &str) -> Option<(String, f64)> {
    run.configs
        .iter()
        .filter(|c| c.family == fam)
        .filter_map(|c| {
            Some((
                c.name.clone(),
                cell(run, &c.name, workload, &run.engine).median?,
            ))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// The name of the limit configuration (the raw source), if it ran.
fn limit(run: &BenchRun) -> Option<&str> {
    run.configs
        .iter()
        .find(|c| c.family == "limit")
        .map(|c| c.name.as_str())
}

fn cell_text(run: &BenchRun, config: &str, workload: &str, limit_median: Option<f64>) -> String {
    let c = cell(run, config, workload, &run.engine);
    let Some(m) = c.median else {
        return if c.skipped {
            "n/a".into()
        } else {
            "FAILED".into()
        };
    };
    let ratio = limit_median.map_or(String::new(), |l| format!(" ({:.2})", m / l));
    let cpu = format!(
        " · {}/{}",
        c.server_cpu.map_or("-".into(), figure),
        c.machine_cpu.map_or("-".into(), figure)
    );
    format!("{}{ratio}{cpu}", c.spread_text())
}

/// The seed's rows: the LKML table's 1k/4k/1M writes and the reply's
/// 32-job run.
pub const SEED_ROWS: [&str; 4] = [
    "seq-write-1k",
    "seq-write-4k",
    "seq-write-1M",
    "seq-write-1M-32jobs",
];

/// The seed's own comparison: fastfuse in the seed's configuration
/// against libfuse's passthrough_ll in the same one, on the seed's rows.
/// Empty when either did not run.
pub fn headline(run: &BenchRun) -> String {
    let (ours, theirs) = ("fastfuse-seed", "libfuse-ll");
    let has = |c: &str| run.configs.iter().any(|x| x.name == c);
    if !has(ours) {
        return String::new();
    }
    if !has(theirs) {
        return format!(
            "\n## Headline: {ours} vs {theirs}\n\n{theirs} (libfuse's passthrough_ll, the seed's server) is not in this run (the default run leaves it out, with a warning, when scripts/setup.sh has not built it): no headline comparison.\n"
        );
    }
    let mut rows = String::new();
    for w in run
        .workloads
        .iter()
        .filter(|w| SEED_ROWS.contains(&w.name.as_str()))
    {
        let a = cell(run, ours, &w.name, &run.engine);
        let b = cell(run, theirs, &w.name, &run.engine);
        let ratio = match (a.median, b.median) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        let _ = writeln!(
            rows,
            "| {} | {} | {} | {} | {ratio} |",
            w.name,
            w.unit,
            a.spread_text(),
            b.spread_text()
        );
    }
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "\n## Headline: {ours} vs {theirs}\n\nThe seed's rows on fastfuse and on libfuse's own passthrough_ll, both in the seed's configuration (`-o writeback -o max_threads=4`; libfuse 3.14's passthrough_ll parses max_threads but does not apply it, so it runs up to libfuse's default of 10 worker threads): median [min–max]; the ratio is of the medians.\n\n| workload | unit | {ours} | {theirs} | {ours} / {theirs} |\n|---|---|---:|---:|---:|\n{rows}"
    )
}

/// fastfuse against libfuse's passthrough_hp on the matching transport:
/// the default mounts side by side (both kernel passthrough, as root), and
/// fastfuse with the writeback cache where it ran.
/// Empty when neither libfuse-hp configuration ran.
fn against_passthrough_hp(run: &BenchRun) -> String {
    let e = run.engine.as_str();
    let has = |c: &str| run.configs.iter().any(|x| x.name == c);
    let pairs: Vec<(&str, &str)> = [
        ("fastfuse", "libfuse-hp"),
        ("fastfuse-wb", "libfuse-hp"),
        ("fastfuse-uring", "libfuse-hp-uring"),
        ("fastfuse-wb-uring", "libfuse-hp-uring"),
    ]
    .into_iter()
    .filter(|(ours, theirs)| has(ours) && has(theirs))
    .collect();
    if pairs.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\n## Against libfuse's passthrough_hp\n\nlibfuse 3.18.3's passthrough_hp as it comes (kernel passthrough, so no writeback cache; timeouts of a day), over /dev/fuse (libfuse-hp) and io_uring (libfuse-hp-uring), against fastfuse on the same transport: its default mount (kernel passthrough as root, hp's own mode) and, where it ran, its writeback cache (`-o writeback`). Medians; floor on untar, stat and rm: 1.30.\n\n| workload |",
    );
    for (ours, theirs) in &pairs {
        let _ = write!(s, " {ours} / {theirs} |");
    }
    s += "\n|---|";
    s += &"---:|".repeat(pairs.len());
    s += "\n";
    for w in &run.workloads {
        let mut row = format!("| {} |", w.name);
        let mut any = false;
        for (ours, theirs) in &pairs {
            let a = cell(run, ours, &w.name, e).median;
            let b = cell(run, theirs, &w.name, e).median;
            match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => {
                    any = true;
                    let _ = write!(row, " {} / {} = {:.2} |", figure(a), figure(b), a / b);
                }
                _ => row += " - |",
            }
        }
        if any {
            let _ = writeln!(s, "{row}");
        }
    }
    s
}

/// Which CPU counters the run's samples came from, in words.
fn cpu_clocks(run: &BenchRun) -> String {
    let cpus: Vec<_> = run.results.iter().filter_map(|x| x.cpu.as_ref()).collect();
    if cpus.iter().all(|c| c.machine_clock.is_none()) {
        return "CPU from /proc/PID/stat and /proc/stat ticks (a run from before ns accounting)"
            .to_string();
    }
    let mut machine: Vec<&str> = cpus
        .iter()
        .map(|c| c.machine_clock.as_deref().unwrap_or("stat-ticks"))
        .collect();
    machine.sort_unstable();
    machine.dedup();
    let servers: Vec<_> = cpus.iter().filter(|c| c.server_secs.is_some()).collect();
    let ticks = servers
        .iter()
        .filter(|c| c.server_clock.as_deref().unwrap_or("stat-ticks") == "stat-ticks")
        .count();
    format!(
        "the server's from its threads' schedstat ns ({ticks} of {} samples from /proc/PID/stat ticks instead, a thread having ended), the machine's from {}",
        servers.len(),
        machine.join(", ")
    )
}

/// The markdown report.
pub fn markdown(run: &BenchRun) -> String {
    let mut s = String::new();
    let lim = limit(run);
    let _ = writeln!(s, "# fastfuse bench\n");
    let _ = writeln!(s, "- command: `{}`", run.command.join(" "));
    let _ = writeln!(s, "- started {}, finished {}", run.started, run.finished);
    let _ = writeln!(
        s,
        "- machine: {}, {} CPUs ({}), {:.1} GiB; kernel {}",
        run.machine.hostname,
        run.machine.cpus,
        run.machine.cpu_model,
        run.machine.mem_total_bytes as f64 / (1u64 << 30) as f64,
        run.kernel
    );
    if let Some(seed) = &run.seed_method {
        let _ = writeln!(
            s,
            "- source: {}; --seed-method: fio with the seed's own command lines (--ramp_time={}, --size={}, not time based); {} run(s) a cell, each on a fresh mount{}",
            run.source,
            crate::fio::ramp_arg(std::time::Duration::from_secs_f64(seed.ramp_secs)),
            short_size(seed.size_per_job),
            run.options.reps,
            if run.interrupted { "; **INTERRUPTED, partial**" } else { "" },
        );
    } else {
        let _ = writeln!(
        s,
        "- source: {}; engine: {}{}; {} repetition(s); {} per job, {} s per data workload; tree of {} entries{}",
        run.source,
        run.engine,
        if run.both_engines { " (fio also run, see below)" } else { "" },
        run.options.reps,
        short_size(run.options.size_per_job),
        run.options.runtime_secs,
        run.options.tree_entries,
        if run.interrupted { "; **INTERRUPTED, partial**" } else { "" },
    );
    }
    if run.seed_method.is_some() {
        s.push_str(&crate::seed::markdown(run));
    } else {
        s.push_str(&headline(run));
    }
    let _ = writeln!(
        s,
        "\nEach cell: median [min–max over the repetitions]{} · CPU of the server / of the whole machine, in s per GiB moved (MiB/s rows) or ms per 1000 files (files/s rows); {}. n/a: not applicable to the mode.\n",
        lim.map_or(String::new(), |l| format!(" (ratio of the median to {l}, the limit)")),
        cpu_clocks(run)
    );

    // The table.
    let mut header = String::from("| workload | unit |");
    let mut rule = String::from("|---|---|");
    for c in &run.configs {
        let _ = write!(header, " {} |", c.name);
        rule.push_str("---:|");
    }
    header.push_str(" fastfuse best / peer best |");
    rule.push_str("---|");
    let _ = writeln!(s, "{header}\n{rule}");
    for w in &run.workloads {
        let limit_median = lim.and_then(|l| cell(run, l, &w.name, &run.engine).median);
        let _ = write!(s, "| {} | {} |", w.name, w.unit);
        for c in &run.configs {
            let _ = write!(s, " {} |", cell_text(run, &c.name, &w.name, limit_median));
        }
        let best = match (
            best_of(run, &w.name, "fastfuse"),
            best_of(run, &w.name, "peer"),
        ) {
            (Some((f, fv)), Some((p, pv))) if pv > 0.0 => {
                format!("{:.2} ({f} / {p})", fv / pv)
            }
            _ => "-".into(),
        };
        let _ = writeln!(s, " {best} |");
    }

    // WRITE sizes.
    let mut rows = String::new();
    for c in run
        .configs
        .iter()
        .filter(|c| c.family.starts_with("fastfuse"))
    {
        for w in &run.workloads {
            let sizes: Vec<_> = samples(run, &c.name, &w.name, &run.engine)
                .into_iter()
                .filter_map(|x| x.write_sizes.as_ref())
                .collect();
            if sizes.is_empty() {
                continue;
            }
            let writes: u64 = sizes.iter().map(|z| z.writes).sum();
            let share =
                median(&sizes.iter().map(|z| z.share_1m_bytes).collect::<Vec<_>>()).unwrap_or(0.0);
            let largest = sizes
                .iter()
                .flat_map(|z| z.buckets.iter().map(|b| b.up_to_bytes))
                .max()
                .unwrap_or(0);
            let _ = writeln!(
                rows,
                "| {} | {} | {} | {:.1}% | {} |",
                c.name,
                w.name,
                writes,
                share * 100.0,
                short_size(largest)
            );
        }
    }
    if !rows.is_empty() {
        let _ = writeln!(
            s,
            "\n## WRITE sizes seen by fastfuse\n\nShare of WRITE bytes that came in 1 MiB requests (the (512k, 1M] bucket), median over repetitions; WRITEs summed.\n\n| config | workload | WRITEs | bytes in 1 MiB WRITEs | largest bucket |\n|---|---|---:|---:|---:|\n{rows}"
        );
    }

    s.push_str(&requests_per_file(run));

    // The transports side by side: the same writeback mode and thread
    // count over io_uring and over /dev/fuse.
    let e = run.engine.as_str();
    let has = |c: &str| run.configs.iter().any(|x| x.name == c);
    if has("fastfuse-uring") && has("fastfuse") {
        let one = has("fastfuse-uring1");
        let _ = writeln!(
            s,
            "\n## io_uring against /dev/fuse\n\nfastfuse-uring / fastfuse (same mode, medians){}. Floors: metadata rows >= 1.30, seed rows >= 0.95.\n\n| workload | /dev/fuse | io_uring | io_uring / dev |{}\n|---|---:|---:|---:|{}",
            if one { "; fastfuse-uring1 has one ring entry per queue" } else { "" },
            if one { " io_uring, 1 entry/queue | its / dev |" } else { "" },
            if one { "---:|---:|" } else { "" },
        );
        for w in &run.workloads {
            let d = cell(run, "fastfuse", &w.name, e).median;
            let u = cell(run, "fastfuse-uring", &w.name, e).median;
            if let (Some(d), Some(u)) = (d, u) {
                let mut row = format!(
                    "| {} | {} | {} | {:.2} |",
                    w.name,
                    figure(d),
                    figure(u),
                    u / d
                );
                if one {
                    match cell(run, "fastfuse-uring1", &w.name, e).median {
                        Some(u1) => row += &format!(" {} | {:.2} |", figure(u1), u1 / d),
                        None => row += " - | - |",
                    }
                }
                let _ = writeln!(s, "{row}");
            }
        }
    }

    s += &against_passthrough_hp(run);

    // The engines side by side.
    if run.both_engines {
        let _ = writeln!(
            s,
            "\n## Engines\n\nMedians, and the median over repetitions of fio / builtin measured back to back.\n\n| config | workload | builtin | fio | fio / builtin |\n|---|---|---:|---:|---:|"
        );
        for c in &run.configs {
            for w in run.workloads.iter().filter(|w| w.unit == "MiB/s") {
                let b = cell(run, &c.name, &w.name, "builtin").median;
                let f = cell(run, &c.name, &w.name, "fio").median;
                let r = engine_ratio(run, &c.name, &w.name);
                if let (Some(b), Some(f), Some(r)) = (b, f, r) {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {} | {:.2} |",
                        c.name,
                        w.name,
                        figure(b),
                        figure(f),
                        r
                    );
                }
            }
        }
    }

    let _ = writeln!(s, "\n## Configurations\n");
    for c in &run.configs {
        let cmd = if c.command.is_empty() {
            "the source itself".to_string()
        } else {
            format!("`{}`", c.command)
        };
        let _ = writeln!(s, "- {} ({}): {cmd}", c.name, c.family);
    }
    let _ = writeln!(s, "\n## Workloads\n");
    for w in &run.workloads {
        let _ = writeln!(s, "- {}: {}", w.name, w.description);
    }

    let profiled: Vec<&Sample> = run.results.iter().filter(|s| s.profile.is_some()).collect();
    if !profiled.is_empty() {
        let _ = writeln!(
            s,
            "\n## Flame graphs\n\nOne per configuration and workload, recorded during the first \
             repetition (`--profile`: perf record -a -g, cpu-clock, every CPU; that repetition \
             ran a few per cent slower for it).\n"
        );
        for p in profiled {
            let svg = p.profile.as_deref().unwrap_or_default();
            let _ = writeln!(
                s,
                "- {} / {} ({}): [{svg}]({svg})",
                p.config, p.workload, p.engine
            );
        }
    }

    let agreement = crate::check::engines_agree(run);
    if !agreement.is_empty() {
        let _ = writeln!(s, "\n{}", crate::check::markdown(&agreement));
    }

    let checks = sanity(run);
    if !checks.is_empty() || !run.warnings.is_empty() {
        let _ = writeln!(s, "\n## Warnings\n");
        for w in checks.iter().chain(&run.warnings) {
            let _ = writeln!(s, "- warning: {w}");
        }
    }
    s
}

/// Requests per file of one configuration on a metadata workload, over
/// its repetitions: every opcode's count summed over the repetitions,
/// over the files summed the same way; and the median server CPU per file.
#[derive(Debug, Clone, PartialEq)]
pub struct PerFile {
    /// Requests per file, by opcode.
    pub requests: std::collections::BTreeMap<String, f64>,
    /// Server µs per file (the CPU columns' ms per 1000 files).
    pub server_us: Option<f64>,
}

/// The requests per file of a configuration on a workload; `None` when no
/// repetition has both counts and files (not fastfuse, an older run).
pub fn per_file(run: &BenchRun, config: &str, workload: &str) -> Option<PerFile> {
    let ok: Vec<&Sample> = samples(run, config, workload, &run.engine)
        .into_iter()
        .filter(|s| s.status == Status::Ok && s.requests.is_some() && s.files.is_some())
        .collect();
    let files: u64 = ok.iter().filter_map(|s| s.files).sum();
    if files == 0 {
        return None;
    }
    let mut requests = std::collections::BTreeMap::new();
    for s in &ok {
        for (op, n) in s.requests.iter().flatten() {
            *requests.entry(op.clone()).or_insert(0.0) += *n as f64;
        }
    }
    for v in requests.values_mut() {
        *v /= files as f64;
    }
    let cpu: Vec<f64> = ok
        .iter()
        .filter_map(|s| s.cpu.as_ref()?.server_per_unit)
        .collect();
    Some(PerFile {
        requests,
        server_us: median(&cpu),
    })
}

/// Requests per file: two decimals, three under 0.1 (one OPENDIR per
/// directory of ~50 files is 0.02), and `<0.001` rather than a zero for a
/// request that did occur.
fn per_file_text(v: f64) -> String {
    if v >= 0.095 {
        format!("{v:.2}")
    } else if v >= 0.0005 {
        format!("{v:.3}")
    } else {
        "<0.001".into()
    }
}

/// Per files/s workload, a table of the fastfuse configurations' requests
/// per file by opcode (those that occur, most frequent first), their
/// total, and the server's µs per file: where each file's round trips
/// went and what they cost.
fn requests_per_file(run: &BenchRun) -> String {
    let mut s = String::new();
    for w in run.workloads.iter().filter(|w| w.unit == "files/s") {
        let cells: Vec<(&str, PerFile)> = run
            .configs
            .iter()
            .filter(|c| c.family.starts_with("fastfuse"))
            .filter_map(|c| Some((c.name.as_str(), per_file(run, &c.name, &w.name)?)))
            .collect();
        if cells.is_empty() {
            continue;
        }
        let mut ops: Vec<(String, f64)> = Vec::new();
        for (_, c) in &cells {
            for (op, v) in &c.requests {
                match ops.iter_mut().find(|(o, _)| o == op) {
                    Some((_, total)) => *total += v,
                    None => ops.push((op.clone(), *v)),
                }
            }
        }
        ops.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        if s.is_empty() {
            let _ = writeln!(
                s,
                "\n## Requests per file\n\nThe fastfuse server's requests during each metadata workload, by opcode, per entry of the tree (stat: per entry and walk), summed over the repetitions; server CPU per file is the median of the CPU column (µs per file = ms per 1000 files)."
            );
        }
        let _ = write!(s, "\n### {}\n\n| config |", w.name);
        for (op, _) in &ops {
            let _ = write!(s, " {op} |");
        }
        let _ = writeln!(
            s,
            " total | server µs/file |\n|---|{}---:|---:|",
            "---:|".repeat(ops.len())
        );
        for (name, c) in &cells {
            let _ = write!(s, "| {name} |");
            for (op, _) in &ops {
                let _ = write!(
                    s,
                    " {} |",
                    c.requests.get(op).map_or("-".into(), |&v| per_file_text(v))
                );
            }
            let _ = writeln!(
                s,
                " {:.2} | {} |",
                c.requests.values().sum::<f64>(),
                c.server_us.map_or("-".into(), figure)
            );
        }
    }
    s
}

/// The sanity rules: at 1M, `--bypass-rw 2` ≥ `--bypass-rw 1` ≥ normal
/// mode (skipping work cannot be slower); fio and the built-in engine
/// within 15% on the seed's rows; fastfuse in writeback mode at or above
/// mergerfs with writeback on the seed's rows. Each violation is a line.
pub fn sanity(run: &BenchRun) -> Vec<String> {
    let mut out = Vec::new();
    let med = |c: &str, w: &str, e: &str| {
        run.configs
            .iter()
            .any(|x| x.name == c)
            .then(|| cell(run, c, w, e).median)
            .flatten()
    };
    let e = run.engine.as_str();
    for w in run
        .workloads
        .iter()
        .filter(|w| w.name.starts_with("seq-write-1M"))
    {
        let b2 = med("fastfuse-bypass2", &w.name, e);
        let b1 = med("fastfuse-bypass1", &w.name, e);
        // The bypass levels are the writeback cache without the I/O.
        let normal = med("fastfuse-wb", &w.name, e);
        if let (Some(b2), Some(b1)) = (b2, b1) {
            if b2 < b1 {
                out.push(format!(
                    "{}: bypass2 {} < bypass1 {} MiB/s ({:+.1}%); skipping the copy cannot be slower",
                    w.name,
                    figure(b2),
                    figure(b1),
                    (b2 / b1 - 1.0) * 100.0
                ));
            }
        }
        if let (Some(b1), Some(n)) = (b1, normal) {
            if b1 < n {
                out.push(format!(
                    "{}: bypass1 {} < fastfuse-wb {} MiB/s ({:+.1}%); skipping the I/O cannot be slower",
                    w.name,
                    figure(b1),
                    figure(n),
                    (b1 / n - 1.0) * 100.0
                ));
            }
        }
    }
    let seed_rows: Vec<&str> = run
        .workloads
        .iter()
        .filter(|w| w.name.starts_with("seq-write-"))
        .map(|w| w.name.as_str())
        .collect();
    if run.both_engines {
        for c in &run.configs {
            for w in &seed_rows {
                if let Some(r) = engine_ratio(run, &c.name, w) {
                    let diff = r - 1.0;
                    if diff.abs() > 0.15 {
                        out.push(format!(
                            "{} {w}: fio and builtin differ by {:+.1}% (> 15%; fio {} vs builtin {} MiB/s)",
                            c.name,
                            diff * 100.0,
                            med(&c.name, w, "fio").map_or("-".into(), figure),
                            med(&c.name, w, "builtin").map_or("-".into(), figure),
                        ));
                    }
                }
            }
        }
    }
    for w in &run.workloads {
        let (Some(d), Some(u)) = (
            med("fastfuse", &w.name, e),
            med("fastfuse-uring", &w.name, e),
        ) else {
            continue;
        };
        let floor = if w.unit == "MiB/s" { 0.95 } else { 1.30 };
        if u / d < floor {
            out.push(format!(
                "{}: io_uring {} vs /dev/fuse {} ({:.2}x) is below the {floor:.2}x floor",
                w.name,
                figure(u),
                figure(d),
                u / d
            ));
        }
    }
    for w in &seed_rows {
        let ff = ["fastfuse-seed", "fastfuse-nosplice", "fastfuse-wb"]
            .iter()
            .filter_map(|c| med(c, w, e).map(|v| (*c, v)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let (Some((c, v)), Some(m)) = (ff, med("mergerfs-wb", w, e)) {
            if v < m {
                out.push(format!(
                    "{w}: fastfuse's best writeback mode ({c}, {}) is below mergerfs-wb ({}) MiB/s",
                    figure(v),
                    figure(m)
                ));
            }
        }
    }
    out
}

/// Colors for the bars, one per configuration.
const COLORS: [RGBColor; 12] = [
    RGBColor(0, 0, 128),
    RGBColor(90, 90, 90),
    RGBColor(60, 60, 160),
    RGBColor(31, 119, 180),
    RGBColor(23, 190, 207),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(188, 189, 34),
    RGBColor(227, 119, 194),
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
    RGBColor(140, 86, 75),
];

/// Draws grouped bars, one group per workload, one bar per configuration:
/// throughput relative to the limit (or, without it, to the workload's
/// best configuration), so MiB/s and files/s rows share one axis.
pub fn svg(run: &BenchRun, path: &Path) -> anyhow::Result<()> {
    let lim = limit(run);
    let nw = run.workloads.len().max(1);
    let nc = run.configs.len().max(1);
    let mut bars: Vec<(usize, usize, f64)> = Vec::new();
    for (wi, w) in run.workloads.iter().enumerate() {
        let base = match lim.and_then(|l| cell(run, l, &w.name, &run.engine).median) {
            Some(b) => Some(b),
            None => run
                .configs
                .iter()
                .filter_map(|c| cell(run, &c.name, &w.name, &run.engine).median)
                .max_by(f64::total_cmp),
        };
        for (ci, c) in run.configs.iter().enumerate() {
            if let (Some(m), Some(b)) = (cell(run, &c.name, &w.name, &run.engine).median, base) {
                if b > 0.0 {
                    bars.push((wi, ci, m / b));
                }
            }
        }
    }
    // Headroom above the bars for the legend (one line per configuration).
    let top = bars.iter().map(|b| b.2).fold(1.0f64, f64::max) * (1.15 + 0.045 * nc as f64);
    let y_desc = match lim {
        Some(l) => format!("throughput / {l}"),
        None => "throughput / best configuration".to_string(),
    };
    let width = (140 * nw as u32 + 220).max(800);
    let root = SVGBackend::new(path, (width, 520)).into_drawing_area();
    root.fill(&WHITE).context("drawing the chart")?;
    let names: Vec<String> = run.workloads.iter().map(|w| w.name.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("fastfuse bench — kernel {}, {}", run.kernel, run.started),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..nw as f64 - 0.5, 0f64..top)
        .context("building the chart")?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        // Groups are centred on integers, where the labels fall.
        .x_labels(nw + 1)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() > 1e-6 || i < 0.0 {
                return String::new();
            }
            names.get(i as usize).cloned().unwrap_or_default()
        })
        .x_label_style(("sans-serif", 12))
        .y_desc(y_desc)
        .draw()
        .context("drawing the axes")?;
    let slot = 0.8 / nc as f64;
    for (ci, c) in run.configs.iter().enumerate() {
        let color = COLORS[ci % COLORS.len()];
        let mine: Vec<_> = bars.iter().filter(|b| b.1 == ci).collect();
        chart
            .draw_series(mine.into_iter().map(|&(wi, _, v)| {
                let x0 = wi as f64 - 0.4 + ci as f64 * slot;
                Rectangle::new([(x0, 0.0), (x0 + slot * 0.9, v)], color.filled())
            }))
            .context("drawing bars")?
            .label(c.name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .context("drawing the legend")?;
    root.present().context("writing the chart")?;
    Ok(())
}

/// Writes `results.json`, `report.md` and `chart.svg` into `dir`; returns
/// the markdown.
pub fn write_all(run: &BenchRun, dir: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = serde_json::to_string_pretty(run)?;
    std::fs::write(dir.join("results.json"), json + "\n")
        .with_context(|| format!("writing {}", dir.join("results.json").display()))?;
    let md = markdown(run);
    std::fs::write(dir.join("report.md"), &md)?;
    if let Err(e) = svg(run, &dir.join("chart.svg")) {
        tracing::warn!("no chart: {e:#}");
    }
    Ok(md)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::schema::{ConfigInfo, CpuUse, Machine, RunOptions, WorkloadInfo, SCHEMA};

    /// A small run: `values[c][w]` per configuration and workload, one
    /// repetition.
    pub(crate) fn fake_run(
        configs: &[(&str, &str)],
        workloads: &[&str],
        values: &[&[f64]],
    ) -> BenchRun {
        let mut results = Vec::new();
        for (ci, (c, _)) in configs.iter().enumerate() {
            for (wi, w) in workloads.iter().enumerate() {
                let v = values[ci][wi];
                results.push(Sample {
                    rep: 1,
                    config: c.to_string(),
                    workload: w.to_string(),
                    engine: "builtin".into(),
                    status: if v > 0.0 { Status::Ok } else { Status::Skipped },
                    note: None,
                    value: (v > 0.0).then_some(v),
                    unit: "MiB/s".into(),
                    secs: 1.0,
                    close_secs: Some(0.0),
                    bytes: Some((v * 1048576.0) as u64),
                    files: None,
                    cpu: Some(CpuUse {
                        server_secs: Some(0.1),
                        machine_secs: 0.5,
                        server_clock: Some("schedstat".into()),
                        machine_clock: Some("cpuacct".into()),
                        server_per_unit: Some(0.25),
                        machine_per_unit: 1.5,
                        per: "s/GiB".into(),
                    }),
                    write_sizes: None,
                    profile: None,
                    requests: None,
                });
            }
        }
        BenchRun {
            schema: SCHEMA.into(),
            started: "2026-11-26T00:00:00Z".into(),
            finished: "2026-11-26T00:01:00Z".into(),
            machine: Machine::default(),
            kernel: "6.18.0".into(),
            command: vec!["fastfuse".into(), "bench".into()],
            engine: "builtin".into(),
            both_engines: false,
            source: "tmpfs".into(),
            options: RunOptions::default(),
            configs: configs
                .iter()
                .map(|(n, f)| ConfigInfo {
                    name: n.to_string(),
                    family: f.to_string(),
                    command: String::new(),
                })
                .collect(),
            workloads: workloads
                .iter()
                .map(|w| WorkloadInfo {
                    name: w.to_string(),
                    unit: "MiB/s".into(),
                    description: String::new(),
                })
                .collect(),
            results,
            warnings: vec![],
            interrupted: false,
            seed_method: None,
        }
    }

    #[test]
    fn table_has_ratios_and_the_best_against_peer_column() {
        let run = fake_run(
            &[
                ("tmpfs", "limit"),
                ("fastfuse", "fastfuse"),
                ("mergerfs-wb", "peer"),
            ],
            &["seq-write-1M", "seq-read-1M-cold"],
            &[&[4000.0, 8000.0], &[2000.0, 0.0], &[1000.0, 500.0]],
        );
        let md = markdown(&run);
        assert!(md.contains("| seq-write-1M | MiB/s | 4000 (1.00) · 0.25/1.50 | 2000 (0.50) · 0.25/1.50 | 1000 (0.25) · 0.25/1.50 | 2.00 (fastfuse / mergerfs-wb) |"), "{md}");
        assert!(md.contains("| n/a |"), "{md}");
        // fastfuse is above mergerfs-wb: no floor warning.
        assert!(!md.contains("below mergerfs-wb"), "{md}");
    }

    #[test]
    fn passthrough_hp_is_set_against_fastfuse_on_the_same_transport() {
        let run = fake_run(
            &[
                ("fastfuse", "fastfuse"),
                ("fastfuse-uring", "fastfuse"),
                ("libfuse-hp", "peer"),
                ("libfuse-hp-uring", "peer"),
            ],
            &["untar", "rm"],
            &[
                &[3000.0, 20000.0],
                &[4000.0, 30000.0],
                &[1500.0, 10000.0],
                &[4000.0, 20000.0],
            ],
        );
        let md = markdown(&run);
        assert!(md.contains("## Against libfuse's passthrough_hp"), "{md}");
        assert!(
            md.contains("| workload | fastfuse / libfuse-hp | fastfuse-uring / libfuse-hp-uring |"),
            "{md}"
        );
        assert!(
            md.contains("| untar | 3000 / 1500 = 2.00 | 4000 / 4000 = 1.00 |"),
            "{md}"
        );
        assert!(
            md.contains("| rm | 20000 / 10000 = 2.00 | 30000 / 20000 = 1.50 |"),
            "{md}"
        );
        let without = fake_run(&[("fastfuse", "fastfuse")], &["rm"], &[&[1.0]]);
        assert!(!markdown(&without).contains("passthrough_hp"));
    }

    #[test]
    fn the_headline_is_the_seed_configuration_against_libfuse_ll() {
        let mut run = fake_run(
            &[("fastfuse-seed", "fastfuse"), ("libfuse-ll", "peer")],
            &["seq-write-1k", "seq-write-1M", "untar"],
            &[&[400.0, 1500.0, 5000.0], &[200.0, 1000.0, 4000.0]],
        );
        // Two more repetitions of fastfuse-seed's 1k row.
        for v in [380.0, 450.0] {
            let mut x = run.results[0].clone();
            x.rep += 1;
            x.value = Some(v);
            run.results.push(x);
        }
        let md = markdown(&run);
        assert!(
            md.contains("## Headline: fastfuse-seed vs libfuse-ll"),
            "{md}"
        );
        assert!(
            md.contains("| seq-write-1k | MiB/s | 400 [380–450] | 200 | 2.00 |"),
            "{md}"
        );
        assert!(
            md.contains("| seq-write-1M | MiB/s | 1500 | 1000 | 1.50 |"),
            "{md}"
        );
        // Not a seed row.
        assert!(!md.contains("| untar | MiB/s | 5000 | 4000 |"), "{md}");
        // The spread reaches the main table too.
        assert!(md.contains("| 400 [380–450] · 0.25/1.50 |"), "{md}");
        let alone = fake_run(
            &[("fastfuse-seed", "fastfuse")],
            &["seq-write-1k"],
            &[&[400.0]],
        );
        assert!(markdown(&alone).contains(
            "libfuse-ll (libfuse's passthrough_ll, the seed's server) is not in this run"
        ));
    }

    #[test]
    fn requests_per_file_by_opcode_with_the_server_cpu() {
        let mut run = fake_run(
            &[
                ("tmpfs", "limit"),
                ("fastfuse-seed", "fastfuse"),
                ("fastfuse", "fastfuse"),
            ],
            &["untar"],
            &[&[50000.0], &[3000.0], &[2800.0]],
        );
        run.workloads[0].unit = "files/s".into();
        let ops = |pairs: &[(&str, u64)]| {
            Some(
                pairs
                    .iter()
                    .map(|&(o, n)| (o.to_string(), n))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            )
        };
        for s in &mut run.results {
            s.unit = "files/s".into();
            s.files = Some(1000);
            if let Some(c) = &mut s.cpu {
                c.per = "ms/kfile".into();
                c.server_per_unit = Some(if s.config == "fastfuse" { 40.0 } else { 30.0 });
            }
        }
        run.results[1].requests = ops(&[("LOOKUP", 1000), ("CREATE", 800), ("WRITE", 800)]);
        run.results[2].requests = ops(&[("LOOKUP", 1000), ("CREATE", 800), ("SETATTR", 500)]);
        // A second repetition of fastfuse-seed: counts and files summed.
        let mut again = run.results[1].clone();
        again.rep = 2;
        again.requests = ops(&[("LOOKUP", 3000), ("CREATE", 800), ("WRITE", 800)]);
        again.cpu.as_mut().unwrap().server_per_unit = Some(50.0);
        run.results.push(again);
        let md = markdown(&run);
        assert!(md.contains("## Requests per file"), "{md}");
        assert!(
            md.contains("| config | LOOKUP | CREATE | WRITE | SETATTR | total | server µs/file |"),
            "{md}"
        );
        assert!(
            md.contains("| fastfuse-seed | 2.00 | 0.80 | 0.80 | - | 3.60 | 40.0 |"),
            "{md}"
        );
        assert!(
            md.contains("| fastfuse | 1.00 | 0.80 | - | 0.50 | 2.30 | 40.0 |"),
            "{md}"
        );
        assert_eq!(
            [0.5, 0.02, 0.0004].map(per_file_text),
            ["0.50", "0.020", "<0.001"]
        );
        // The raw source has no server to count.
        assert!(!md.contains("| tmpfs | 1"), "{md}");
    }

    #[test]
    fn sanity_flags_a_slower_bypass_and_a_missed_floor() {
        let run = fake_run(
            &[
                ("fastfuse-wb", "fastfuse"),
                ("fastfuse-bypass1", "fastfuse-bypass"),
                ("fastfuse-bypass2", "fastfuse-bypass"),
                ("mergerfs-wb", "peer"),
            ],
            &["seq-write-1M"],
            &[&[3000.0], &[2500.0], &[2000.0], &[3500.0]],
        );
        let w = sanity(&run);
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].contains("bypass2 2000 < bypass1 2500"));
        assert!(w[1].contains("bypass1 2500 < fastfuse-wb 3000"));
        assert!(w[2].contains("below mergerfs-wb"));
    }

    #[test]
    fn engines_that_disagree_are_flagged() {
        let mut run = fake_run(&[("tmpfs", "limit")], &["seq-write-4k"], &[&[1000.0]]);
        run.both_engines = true;
        let mut fio = run.results[0].clone();
        fio.engine = "fio".into();
        fio.value = Some(1300.0);
        run.results.push(fio);
        let w = sanity(&run);
        assert!(w.iter().any(|l| l.contains("+30.0%")), "{w:?}");
        run.results[1].value = Some(1100.0);
        assert!(sanity(&run).is_empty());
    }

    #[test]
    fn chart_is_an_svg_made_by_plotters() {
        let run = fake_run(
            &[("tmpfs", "limit"), ("fastfuse", "fastfuse")],
            &["seq-write-1k", "untar"],
            &[&[100.0, 10.0], &[50.0, 5.0]],
        );
        let dir = tempfile::tempdir().unwrap();
        let md = write_all(&run, dir.path()).unwrap();
        assert!(md.starts_with("# fastfuse bench"));
        let svg = std::fs::read_to_string(dir.path().join("chart.svg")).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("seq-write-1k") && svg.contains("fastfuse"));
        let back: BenchRun = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("results.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(back, run);
    }
}
