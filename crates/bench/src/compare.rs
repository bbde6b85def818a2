//! `fastfuse bench compare OLD.json NEW.json`: two runs in the seed's own
//! format — rows workload, columns Before, After, % diff — one table per
//! configuration present in both, with whether each row's difference is
//! outside the noise of the two runs ([`crate::signif`]).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context};

use crate::report::cell;
use crate::schema::BenchRun;
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
}

/// The comparison as text: one markdown table per configuration in both
/// runs, rows the workloads of both (medians of each run's table engine),
/// each row's verdict from [`signif::verdicts`] over all the rows of the
/// comparison.
pub fn compare(old: &BenchRun, new: &BenchRun) -> String {
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
            });
        }
    }
    let pairs: Vec<(&[f64], &[f64])> = rows
        .iter()
        .map(|r| (r.before.values.as_slice(), r.after.values.as_slice()))
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
    let flush = |s: &mut String, config: Option<&str>, table: &mut String| {
        if let Some(c) = config {
            let _ = writeln!(
                s,
                "\n### {c}\n\n| workload | unit | Before | After | % diff | vs noise |\n|---|---|---:|---:|---:|---|\n{table}"
            );
        }
        table.clear();
    };
    for (r, v) in rows.iter().zip(&verdicts) {
        if current != Some(r.config.as_str()) {
            flush(&mut s, current, &mut table);
            current = Some(r.config.as_str());
        }
        let diff = match (r.before.median, r.after.median) {
            (Some(b), Some(a)) if b > 0.0 => format!("{:+.1}%", (a / b - 1.0) * 100.0),
            _ => "-".to_string(),
        };
        let noise = if r.before.values.is_empty() || r.after.values.is_empty() {
            "-".to_string()
        } else {
            v.text()
        };
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {diff} | {noise} |",
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
    s
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
