//! `--profile`: where the time of a measurement goes, machine-wide. During
//! one measurement of each configuration and workload (the first
//! repetition, built-in engine), `perf record -a -g` samples every CPU
//! with the cpu-clock event (the one this VM has: no hardware counters),
//! and the samples become a flame graph SVG (inferno's collapse and
//! flamegraph, the Rust port of Brendan Gregg's scripts) that the report
//! links. Sampling at 999 Hz on every CPU costs a few per cent, so the
//! profiled repetition's numbers are a little lower than the others'.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

/// Whether `perf` can be run.
pub fn available() -> bool {
    Command::new("perf")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A `perf record -a -g` running until [`Recording::finish`].
pub struct Recording {
    child: Child,
    data: PathBuf,
}

impl Recording {
    /// Starts sampling every CPU into `data`.
    pub fn start(data: &Path) -> anyhow::Result<Recording> {
        let child = Command::new("perf")
            .args([
                "record",
                "-a",
                "-g",
                "-e",
                "cpu-clock",
                "-F",
                "999",
                "-q",
                "-o",
            ])
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf record")?;
        Ok(Recording {
            child,
            data: data.to_path_buf(),
        })
    }

    /// Stops sampling (SIGINT, which makes perf write its data out) and
    /// renders the flame graph to `svg`, titled `title`. The perf data
    /// file is removed afterwards: it is large, the SVG is what is kept.
    pub fn finish(mut self, svg: &Path, title: &str) -> anyhow::Result<()> {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::INT)
            .context("stopping perf record")?;
        let status = self.child.wait().context("waiting for perf record")?;
        // perf exits with the signal's status when interrupted; what
        // counts is that it wrote its file.
        if !self.data.exists() {
            bail!("perf record wrote nothing ({status})");
        }
        let script = Command::new("perf")
            .args(["script", "-i"])
            .arg(&self.data)
            .stderr(Stdio::null())
            .output()
            .context("running perf script")?;
        let _ = std::fs::remove_file(&self.data);
        if !script.status.success() {
            bail!("perf script failed ({})", script.status);
        }
        render(&script.stdout, svg, title)
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        // A recording abandoned half-way (an error in the measurement):
        // our own child, by its pid.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `perf script` output to a flame graph SVG.
fn render(script: &[u8], svg: &Path, title: &str) -> anyhow::Result<()> {
    use inferno::collapse::perf::{Folder, Options as CollapseOptions};
    use inferno::collapse::Collapse;
    use inferno::flamegraph::{self, Options};

    let mut folded = Vec::new();
    Folder::from(CollapseOptions::default())
        .collapse(script, &mut folded)
        .context("folding perf samples")?;
    if folded.is_empty() {
        bail!("perf recorded no samples");
    }
    let mut options = Options::default();
    options.title = title.to_string();
    options.subtitle = Some("perf record -a -g -e cpu-clock, all CPUs".to_string());
    let file = std::fs::File::create(svg).with_context(|| format!("creating {}", svg.display()))?;
    let lines = std::str::from_utf8(&folded).context("folded stacks are not UTF-8")?;
    flamegraph::from_lines(&mut options, lines.lines(), std::io::BufWriter::new(file))
        .context("drawing the flame graph")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two samples of `perf script`'s format become a flame graph that
    /// names both stacks' frames.
    #[test]
    fn perf_script_output_becomes_a_flame_graph() {
        let script = b"fio 123/123 [000] 1.000000: 1001001 cpu-clock:\n\
            \tffffffff81000001 copy_page+0x1 ([kernel.kallsyms])\n\
            \tffffffff81000002 fuse_write+0x2 ([kernel.kallsyms])\n\
            \t00005555 main+0x3 (/usr/bin/fio)\n\
            \n\
            fastfuse 124/125 [001] 1.001000: 1001001 cpu-clock:\n\
            \tffffffff81000003 pwrite64+0x4 ([kernel.kallsyms])\n\
            \t00006666 serve+0x5 (/usr/bin/fastfuse)\n\
            \n";
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("f.svg");
        render(script, &svg, "test").unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<?xml"), "{}", &text[..80.min(text.len())]);
        for frame in ["copy_page", "fuse_write", "pwrite64", "serve"] {
            assert!(text.contains(frame), "{frame} missing");
        }
    }
}
