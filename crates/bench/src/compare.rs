//! `fastfuse bench compare OLD.json NEW.json`: two runs in the seed's own
//! format — rows workload, columns Before, After, % diff — one table per
//! configuration present in both, with whether each row's difference is
//! outside the noise of the two runs ([`crate::signif`]).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context};

use crate::report::{cell, samples};
use crate::schema::{BenchRun, Sample, Status};
use crate::signif;

/// Reads a run's JSON, checking its schema.
pub fn load(path: &Path) -> anyhow::Result<BenchRun> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    match value.get("schema").and_then(|s| s.as_str()) {
        Some(crate::schema::SCHEMA) => {}
        Some(other) => bail!(
            "{}: schema {other:?}, this fastfuse reads {:?}",
            path.display(),
            crate::schema::SCHEMA
        ),
        None => bail!(
            "{}: not a fastfuse bench result (no \"schema\")",
            path.display()
        ),
    }
    serde_json::from_value(value).with_context(|| format!("reading {}", path.display()))
}

/// One row of a comparison, before its verdict.
struct Row {
    config: String,
    workload: String,
    unit: String,
    before: crate::report::Cell,
    after: crate::report::Cell,
    /// Each run's repetitions divided by the reference's median in that
    /// run (see [`to_limit`]), when there is a reference.
    to_limit: Option<(Vec<f64>, Vec<f64>)>,
    /// This row is the reference's own.
    is_limit: bool,
}

/// The change from `before` to `after` as "+1.2%", or "-" without both.
fn change(before: Option<f64>, after: Option<f64>) -> String {
    match (before, after) {
        (Some(b), Some(a)) if b > 0.0 => format!("{:+.1}%", (a / b - 1.0) * 100.0),
        _ => "-".to_string(),
    }
}

/// A configuration's repetitions of `workload` in `run`, each divided by
/// the median of the limit's (tmpfs, no FUSE server) in the same run: the
/// machine's speed during that run cancels out. On this shared VM that
/// speed drifts: two runs of one binary half an hour apart had every row of
/// tmpfs 13-32% faster in the second, and every FUSE server with it. The
/// limit's median, not its repetition of the same index, because its
/// metadata rows are short and noisy (stat: ±30% between repetitions);
/// the median of eight steadies the factor without importing that noise
/// into every repetition. Empty when the run has no limit sample there.
fn to_limit(run: &BenchRun, limit: &str, config: &str, workload: &str) -> Vec<f64> {
    let ok = |s: &&Sample| s.status == Status::Ok && s.value.is_some_and(|v| v > 0.0);
    let limits: Vec<f64> = samples(run, limit, workload, &run.engine)
        .into_iter()
        .filter(ok)
        .filter_map(|s| s.value)
        .collect();
    let Some(factor) = crate::report::median(&limits) else {
        return Vec::new();
    };
    samples(run, config, workload, &run.engine)
        .into_iter()
        .filter(ok)
        .filter_map(|s| Some(s.value? / factor))
        .collect()
}

/// The seed's own server's configuration name (see `config`).
const SEED_SERVER: &str = "libfuse-ll";

/// What [`compare_with`] tests rows relative to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// The seed's own server (libfuse-ll) when both runs have it, else the
    /// limit (tmpfs) when both have that, else raw values. A FUSE server
    /// drifts with the machine as the others do; the limit less so (two
    /// runs of one binary: tmpfs's 1M writes 23% faster in the second, the
    /// FUSE servers' 10%, so relative to tmpfs those rows moved -10%).
    Default,
    /// The limit (tmpfs) when both runs have it; raw values otherwise.
    Limit,
    /// This configuration, which both runs must have.
    Config(String),
    /// Raw values.
    None,
}

/// [`compare_with`] relative to [`Reference::Default`], as `bench
/// compare` does.
pub fn compare(old: &BenchRun, new: &BenchRun) -> String {
    compare_with(old, new, &Reference::Default).unwrap_or_else(|e| e.to_string())
}

/// The comparison as text: one markdown table per configuration in both
/// runs, rows the workloads of both (medians of each run's table engine),
/// each row's verdict from [`signif::verdicts`] over all the rows of the
/// comparison, tested relative to `reference`. Fails when a named
/// reference is not in both runs.
pub fn compare_with(
    old: &BenchRun,
    new: &BenchRun,
    reference: &Reference,
) -> anyhow::Result<String> {
    let in_both = |name: &str| {
        old.configs.iter().any(|c| c.name == name) && new.configs.iter().any(|c| c.name == name)
    };
    let limit_of = || {
        old.configs
            .iter()
            .find(|c| c.family == "limit" && in_both(&c.name))
            .map(|c| c.name.clone())
    };
    let limit = match reference {
        Reference::Default if in_both(SEED_SERVER) => Some(SEED_SERVER.to_string()),
        Reference::Default => limit_of(),
        Reference::Limit => old
            .configs
            .iter()
            .find(|c| c.family == "limit" && in_both(&c.name))
            .map(|c| c.name.clone()),
        Reference::Config(name) if in_both(name) => Some(name.clone()),
        Reference::Config(name) => bail!("the reference {name:?} is not in both runs"),
        Reference::None => None,
    };
    let mut rows = Vec::new();
    for c in old
        .configs
        .iter()
        .filter(|c| new.configs.iter().any(|n| n.name == c.name))
    {
        for w in old
            .workloads
            .iter()
            .filter(|w| new.workloads.iter().any(|n| n.name == w.name))
        {
            rows.push(Row {
                config: c.name.clone(),
                workload: w.name.clone(),
                unit: w.unit.clone(),
                before: cell(old, &c.name, &w.name, &old.engine),
                after: cell(new, &c.name, &w.name, &new.engine),
                to_limit: limit
                    .as_deref()
                    .filter(|l| *l != c.name)
                    .map(|l| {
                        (
                            to_limit(old, l, &c.name, &w.name),
                            to_limit(new, l, &c.name, &w.name),
                        )
                    })
                    .filter(|(b, a)| !b.is_empty() && !a.is_empty()),
                is_limit: limit.as_deref() == Some(c.name.as_str()),
            });
        }
    }
    // With a reference, rows are tested on their ratios to it and the
    // reference's own rows, which say how far the machine moved, are left
    // out of the family; without one, on the raw values.
    let empty: &[f64] = &[];
    let pairs: Vec<(&[f64], &[f64])> = rows
        .iter()
        .map(|r| match (&r.to_limit, r.is_limit) {
            (_, true) => (empty, empty),
            (Some((b, a)), false) => (b.as_slice(), a.as_slice()),
            (None, false) => (r.before.values.as_slice(), r.after.values.as_slice()),
        })
        .collect();
    let verdicts = signif::verdicts(&pairs);
    let tested = verdicts
        .iter()
        .filter(|v| !matches!(v, signif::Verdict::TooFew))
        .count();
    let family = verdicts
        .iter()
        .filter(|v| {
            matches!(
                v,
                signif::Verdict::Changed { .. } | signif::Verdict::WithinNoise { .. }
            )
        })
        .count();
    let changed = verdicts.iter().filter(|v| v.changed()).count();

    let mut s = String::new();
    let _ = writeln!(
        s,
        "Before: {} (kernel {}, {})\nAfter:  {} (kernel {}, {})",
        old.started, old.kernel, old.engine, new.started, new.kernel, new.engine
    );
    let _ = writeln!(
        s,
        "\nBefore and After: median [min–max] over each run's repetitions. vs noise: a two-sided \
         exact Mann–Whitney U test of the two runs' repetitions per row, and Holm's step-down \
         procedure over the rows, so that two runs of the same binary have at most a {:.0}% \
         chance of showing any row as changed (tested one by one at 5%, a comparison of ~100 \
         rows would show ~5 by chance). changed: the row's Holm-adjusted p ≤ {}. A row whose \
         repetitions could not reach {} even alone (3 vs 3: the smallest p is 0.1) is within \
         noise as far as they can tell, and left out of the family. too few reps: a run with \
         fewer than two.",
        signif::ALPHA * 100.0,
        signif::ALPHA,
        signif::ALPHA,
    );
    if let Some(l) = &limit {
        let _ = writeln!(
            s,
            "\nTested relative to {l}: each repetition of a row is divided by the median of {l}'s \
             repetitions of the same workload in the same run, so that the machine's own drift \
             between the two runs cancels out (on a shared VM it moves every row together, {l} \
             too); \"to {l}\" is the change of the median ratio. {l}'s rows show that drift and \
             are not tested (`--reference none`: raw values)."
        );
    }
    if old.kernel != new.kernel || old.machine.cpu_model != new.machine.cpu_model {
        let _ = writeln!(
            s,
            "\nThe runs' machines differ (kernel {} vs {}, CPU {:?} vs {:?}): a row can move with \
             the machine, not the binary; the limit's rows (no FUSE server) show how much.",
            old.kernel, new.kernel, old.machine.cpu_model, new.machine.cpu_model
        );
    }
    if tested > 0 {
        let _ = writeln!(
            s,
            "\n{changed} of {tested} rows changed; Holm's family: {family} rows. To show a change \
             in one row among {tested}, each run needs at least {} repetitions (`--reps {}`: \
             complete separation of n against n gives p = 2/C(2n, n), which must be ≤ {} / \
             {tested}).",
            signif::reps_needed(tested),
            signif::reps_needed(tested),
            signif::ALPHA,
        );
    }
    let mut current: Option<&str> = None;
    let mut table = String::new();
    // The "to REFERENCE" column only when there is a reference.
    let (to_head, to_rule) = match &limit {
        Some(l) => (format!(" to {l} |"), "---:|"),
        None => (String::new(), ""),
    };
    let flush = |s: &mut String, config: Option<&str>, table: &mut String| {
        if let Some(c) = config {
            let _ = writeln!(
                s,
                "\n### {c}\n\n| workload | unit | Before | After | % diff |{to_head} vs noise |\n|---|---|---:|---:|---:|{to_rule}---|\n{table}"
            );
        }
        table.clear();
    };
    for (r, v) in rows.iter().zip(&verdicts) {
        if current != Some(r.config.as_str()) {
            flush(&mut s, current, &mut table);
            current = Some(r.config.as_str());
        }
        let diff = change(r.before.median, r.after.median);
        let noise = if r.before.values.is_empty() || r.after.values.is_empty() {
            "-".to_string()
        } else if r.is_limit {
            "the reference (not tested)".to_string()
        } else {
            v.text()
        };
        let to_limit = match (&r.to_limit, &limit) {
            (_, None) => String::new(),
            (Some((b, a)), Some(_)) => {
                let (b, a) = (crate::report::median(b), crate::report::median(a));
                format!(" {} |", change(b, a))
            }
            (None, Some(_)) => " - |".to_string(),
        };
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {diff} |{to_limit} {noise} |",
            r.workload,
            r.unit,
            r.before.spread_text(),
            r.after.spread_text(),
        );
    }
    flush(&mut s, current, &mut table);
    if rows.is_empty() {
        let _ = writeln!(s, "\nNo configuration and workload in common.");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::fake_run;

    #[test]
    fn before_after_and_percent() {
        let old = fake_run(
            &[("fastfuse-seed", "fastfuse"), ("bindfs", "peer")],
            &["seq-write-1k", "seq-write-4k", "seq-write-1M"],
            &[&[341.0, 2246.0, 2685.0], &[21.0, 89.0, 136.0]],
        );
        let new = fake_run(
            &[("fastfuse-seed", "fastfuse")],
            &["seq-write-1k", "seq-write-4k", "seq-write-1M"],
            &[&[355.0, 2246.0, 2000.0]],
        );
        let out = compare(&old, &new);
        assert!(out.contains("### fastfuse-seed"), "{out}");
        assert!(!out.contains("### bindfs"), "{out}");
        assert!(
            out.contains("| seq-write-1k | MiB/s | 341 | 355 | +4.1% | too few reps |"),
            "{out}"
        );
        assert!(
            out.contains("| seq-write-4k | MiB/s | 2246 | 2246 | +0.0% | too few reps |"),
            "{out}"
        );
        assert!(
            out.contains("| seq-write-1M | MiB/s | 2685 | 2000 | -25.5% | too few reps |"),
            "{out}"
        );
    }

    /// `run` with repetitions 2.. added: `extra[w]` are the further values
    /// of workload `w` (of its only configuration).
    fn with_reps(mut run: crate::schema::BenchRun, extra: &[&[f64]]) -> crate::schema::BenchRun {
        let firsts = run.results.clone();
        for (w, values) in extra.iter().enumerate() {
            for (i, v) in values.iter().enumerate() {
                let mut s = firsts[w].clone();
                s.rep = i as u32 + 2;
                s.value = Some(*v);
                run.results.push(s);
            }
        }
        run
    }

    #[test]
    fn rows_say_whether_the_change_is_outside_the_noise() {
        let rows = ["seq-write-1k", "seq-write-4k", "untar"];
        let old = with_reps(
            fake_run(
                &[("fastfuse-seed", "fastfuse")],
                &rows,
                &[&[340.0, 2200.0, 2600.0]],
            ),
            &[
                &[350.0, 345.0, 342.0, 348.0],
                &[2300.0, 2250.0, 2230.0, 2270.0],
                &[2700.0, 2650.0, 2620.0, 2680.0],
            ],
        );
        let new = with_reps(
            fake_run(
                &[("fastfuse-seed", "fastfuse")],
                &rows,
                &[&[400.0, 2260.0, 2400.0]],
            ),
            // 1k: all above; 4k: interleaved; untar: all below.
            &[
                &[410.0, 405.0, 402.0, 408.0],
                &[2210.0, 2290.0, 2240.0, 2280.0],
                &[2500.0, 2450.0, 2420.0, 2480.0],
            ],
        );
        let out = compare(&old, &new);
        // 5 against 5, separated: p = 2/252; Holm over 3 rows: 3p.
        assert!(
            out.contains(
                "| seq-write-1k | MiB/s | 345 [340–350] | 405 [400–410] | +17.4% | changed (p=7.94e-3, Holm 0.024) |"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "| seq-write-4k | MiB/s | 2250 [2200–2300] | 2260 [2210–2290] | +0.4% | within noise (p=0.841, Holm 0.84) |"
            ),
            "{out}"
        );
        assert!(out.contains("| untar | MiB/s | 2650 [2600–2700] | 2450 [2400–2500] | -7.5% | changed (p=7.94e-3, Holm 0.024) |"), "{out}");
        assert!(out.contains("Mann–Whitney"), "{out}");
        assert!(out.contains("Holm"), "{out}");
        assert!(out.contains("2 of 3 rows changed"), "{out}");

        // The same with the first three repetitions only: 3 against 3 can
        // never reach 5%, even separated.
        let first3 = |mut r: crate::schema::BenchRun| {
            r.results.retain(|s| s.rep <= 3);
            r
        };
        let out = compare(&first3(old), &first3(new));
        assert!(
            out.contains("| +17.4% | within noise (p=0.10; 3 vs 3 reps cannot show a change) |"),
            "{out}"
        );
        assert!(out.contains("0 of 3 rows changed"), "{out}");
        assert!(out.contains("at least 5 repetitions (`--reps 5`"), "{out}");
    }

    /// A run of tmpfs (the limit) and fastfuse-seed on one workload,
    /// repetition i of each taking `limit[i]` and `server[i]`.
    fn limit_run(limit: &[f64], server: &[f64]) -> crate::schema::BenchRun {
        let mut run = fake_run(
            &[("tmpfs", "limit"), ("fastfuse-seed", "fastfuse")],
            &["seq-write-1k"],
            &[&[limit[0]], &[server[0]]],
        );
        let firsts = run.results.clone();
        for i in 1..limit.len() {
            for (s, v) in firsts.iter().zip([limit[i], server[i]]) {
                let mut s = s.clone();
                s.rep = i as u32 + 1;
                s.value = Some(v);
                run.results.push(s);
            }
        }
        run
    }

    #[test]
    fn the_machine_moving_every_row_is_not_a_change() {
        let limit = [1000.0, 1010.0, 990.0, 1005.0, 995.0];
        let server = [500.0, 508.0, 493.0, 505.0, 497.0];
        let old = limit_run(&limit, &server);
        // The machine 20% faster for everyone: raw, every rep of the new
        // run is above every one of the old.
        let faster = limit_run(&limit.map(|v| v * 1.2), &server.map(|v| v * 1.2));
        let out = compare(&old, &faster);
        assert!(out.contains("Tested relative to tmpfs"), "{out}");
        assert!(out.contains("| +20.0% | +0.0% | within noise"), "{out}");
        assert!(out.contains("the reference (not tested)"), "{out}");
        // The server 30% faster on an unchanged machine is a change.
        let better = limit_run(&limit, &server.map(|v| v * 1.3));
        let out = compare(&old, &better);
        assert!(out.contains("| +30.0% | +30.0% | changed"), "{out}");
    }

    #[test]
    fn other_schemas_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        std::fs::write(&p, r#"{"schema":"fastfuse-bench/9"}"#).unwrap();
        assert!(load(&p)
            .unwrap_err()
            .to_string()
            .contains("fastfuse-bench/9"));
        std::fs::write(&p, r#"{"jobs":[]}"#).unwrap();
        assert!(load(&p).is_err());
    }
}
