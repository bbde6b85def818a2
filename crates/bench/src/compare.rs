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

/// The comparison as text: one markdown table per configuration in both
/// runs, rows the workloads of both (medians of each run's table engine).
pub fn compare(old: &BenchRun, new: &BenchRun) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Before: {} (kernel {}, {})\nAfter:  {} (kernel {}, {})",
        old.started, old.kernel, old.engine, new.started, new.kernel, new.engine
    );
    let _ = writeln!(
        s,
        "\nBefore and After: median [min–max] over each run's repetitions. vs noise: a two-sided \
         Mann–Whitney U test of the two runs' repetitions; changed when p < 0.05, or, when the \
         repetitions are too few for that (3 against 3: the smallest p is 0.1), when p is at its \
         smallest, every repetition of one run beyond every one of the other; too few reps when \
         even 0.1 is out of reach (2 against 2, one repetition)."
    );
    let mut any = false;
    for c in old
        .configs
        .iter()
        .filter(|c| new.configs.iter().any(|n| n.name == c.name))
    {
        let mut rows = String::new();
        for w in old
            .workloads
            .iter()
            .filter(|w| new.workloads.iter().any(|n| n.name == w.name))
        {
            let before = cell(old, &c.name, &w.name, &old.engine);
            let after = cell(new, &c.name, &w.name, &new.engine);
            let diff = match (before.median, after.median) {
                (Some(b), Some(a)) if b > 0.0 => format!("{:+.1}%", (a / b - 1.0) * 100.0),
                _ => "-".to_string(),
            };
            let noise = if before.values.is_empty() || after.values.is_empty() {
                "-".to_string()
            } else {
                signif::verdict(&before.values, &after.values).text()
            };
            let _ = writeln!(
                rows,
                "| {} | {} | {} | {} | {diff} | {noise} |",
                w.name,
                w.unit,
                before.spread_text(),
                after.spread_text(),
            );
        }
        if rows.is_empty() {
            continue;
        }
        any = true;
        let _ = writeln!(
            s,
            "\n### {}\n\n| workload | unit | Before | After | % diff | vs noise |\n|---|---|---:|---:|---:|---|\n{rows}",
            c.name
        );
    }
    if !any {
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
            &[&[350.0, 345.0], &[2300.0, 2250.0], &[2700.0, 2650.0]],
        );
        let new = with_reps(
            fake_run(
                &[("fastfuse-seed", "fastfuse")],
                &rows,
                &[&[400.0, 2260.0, 2400.0]],
            ),
            // 1k: all above; 4k: interleaved; untar: all below.
            &[&[410.0, 405.0], &[2210.0, 2290.0], &[2500.0, 2450.0]],
        );
        let out = compare(&old, &new);
        assert!(
            out.contains(
                "| seq-write-1k | MiB/s | 345 [340–350] | 405 [400–410] | +17.4% | changed (p=0.100) |"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "| seq-write-4k | MiB/s | 2250 [2200–2300] | 2260 [2210–2290] | +0.4% | within noise (p=1.00) |"
            ),
            "{out}"
        );
        assert!(out.contains("| untar | MiB/s | 2650 [2600–2700] | 2450 [2400–2500] | -7.5% | changed (p=0.100) |"), "{out}");
        assert!(out.contains("Mann–Whitney"), "{out}");
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
