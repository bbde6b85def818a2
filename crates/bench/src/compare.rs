//! `fastfuse bench compare OLD.json NEW.json`: two runs in the seed's own
//! format — rows workload, columns Before, After, % diff — one table per
//! configuration present in both.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context};

use crate::report::cell;
use crate::schema::BenchRun;
use crate::units::figure;

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
            let b = cell(old, &c.name, &w.name, &old.engine).median;
            let a = cell(new, &c.name, &w.name, &new.engine).median;
            let show = |v: Option<f64>| v.map_or("-".to_string(), figure);
            let diff = match (b, a) {
                (Some(b), Some(a)) if b > 0.0 => format!("{:+.1}%", (a / b - 1.0) * 100.0),
                _ => "-".to_string(),
            };
            let _ = writeln!(
                rows,
                "| {} | {} | {} | {} | {diff} |",
                w.name,
                w.unit,
                show(b),
                show(a)
            );
        }
        if rows.is_empty() {
            continue;
        }
        any = true;
        let _ = writeln!(
            s,
            "\n### {}\n\n| workload | unit | Before | After | % diff |\n|---|---|---:|---:|---:|\n{rows}",
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
            out.contains("| seq-write-1k | MiB/s | 341 | 355 | +4.1% |"),
            "{out}"
        );
        assert!(
            out.contains("| seq-write-4k | MiB/s | 2246 | 2246 | +0.0% |"),
            "{out}"
        );
        assert!(
            out.contains("| seq-write-1M | MiB/s | 2685 | 2000 | -25.5% |"),
            "{out}"
        );
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
