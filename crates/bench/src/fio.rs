//! fio as the load generator: the same job as [`crate::loadgen`], run by
//! fio 3.x with `--output-format=json`, bandwidth read from its JSON
//! (`.jobs[].read.bw_bytes + .jobs[].write.bw_bytes`, bytes/s; with
//! `--group_reporting` there is one aggregate job).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;

use crate::loadgen::fio_runtime;
use crate::units::short_size;
use crate::workload::{DataSpec, Pattern};

/// Why fio could not give a number.
#[derive(Debug, thiserror::Error)]
pub enum FioError {
    /// fio could not be started.
    #[error("cannot run fio: {0}")]
    Spawn(#[source] std::io::Error),
    /// fio exited with an error.
    #[error("fio failed ({status}): {stderr}")]
    Failed {
        /// Exit status.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// The JSON output could not be read.
    #[error("fio's JSON output: {0}")]
    Json(String),
    /// A job reported an error.
    #[error("fio job {job} reported error {error}")]
    Job {
        /// Job name.
        job: String,
        /// fio's error number.
        error: i64,
    },
    /// Stopped by the user.
    #[error("interrupted")]
    Interrupted,
}

/// What fio measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FioOutcome {
    /// Read bandwidth, bytes/s.
    pub read_bw_bytes: f64,
    /// Write bandwidth, bytes/s.
    pub write_bw_bytes: f64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// The longest runtime of a direction, seconds.
    pub secs: f64,
}

impl FioOutcome {
    /// Read plus write bandwidth, bytes/s.
    pub fn bytes_per_sec(&self) -> f64 {
        self.read_bw_bytes + self.write_bw_bytes
    }
}

/// Whether a working fio is on the PATH.
pub fn available() -> bool {
    Command::new("fio")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The fio command line for a workload in `dir`, writing JSON to `output`.
/// Files are `NAME.JOB.0` in `dir`, as [`crate::loadgen::job_file`] names
/// them, so a layout done by either engine serves both. `threads`: jobs as
/// threads (`--thread`), not processes.
pub fn command(dir: &Path, name: &str, spec: &DataSpec, threads: bool, output: &Path) -> Command {
    let mut c = Command::new("fio");
    c.arg(format!("--name={name}"))
        .arg(format!("--directory={}", dir.display()))
        .arg(format!("--rw={}", spec.pattern.fio_rw()))
        .arg("--ioengine=sync")
        .arg(format!("--bs={}", short_size(spec.bs)))
        .arg(format!("--numjobs={}", spec.jobs))
        .arg(format!("--size={}", spec.file_size))
        .arg("--time_based")
        .arg(format!("--runtime={}", fio_runtime(spec.runtime)))
        .arg("--group_reporting")
        .arg("--output-format=json")
        .arg(format!("--output={}", output.display()));
    if spec.pattern == Pattern::RandRw {
        c.arg("--rwmixread=50");
    }
    if threads {
        c.arg("--thread");
    }
    c
}

#[derive(Deserialize)]
struct FioJson {
    jobs: Vec<FioJob>,
}

#[derive(Deserialize)]
struct FioJob {
    jobname: String,
    #[serde(default)]
    error: i64,
    read: FioDir,
    write: FioDir,
}

#[derive(Deserialize)]
struct FioDir {
    bw_bytes: f64,
    io_bytes: u64,
    /// Milliseconds.
    runtime: u64,
}

/// Reads fio's JSON output. Text before the first `{` (fio sometimes
/// prints notes there) is skipped.
///
/// ```
/// let json = r#"{"jobs":[{"jobname":"j","error":0,
///   "read":{"bw_bytes":0,"io_bytes":0,"runtime":0},
///   "write":{"bw_bytes":2097152,"io_bytes":10485760,"runtime":5000}}]}"#;
/// let out = fastfuse_bench::fio::parse(json).unwrap();
/// assert_eq!(out.bytes_per_sec(), 2097152.0);
/// assert_eq!(out.secs, 5.0);
/// ```
pub fn parse(text: &str) -> Result<FioOutcome, FioError> {
    let start = text
        .find('{')
        .ok_or_else(|| FioError::Json("no JSON object".into()))?;
    let json: FioJson =
        serde_json::from_str(&text[start..]).map_err(|e| FioError::Json(e.to_string()))?;
    if json.jobs.is_empty() {
        return Err(FioError::Json("no jobs".into()));
    }
    let mut out = FioOutcome::default();
    for job in &json.jobs {
        if job.error != 0 {
            return Err(FioError::Job {
                job: job.jobname.clone(),
                error: job.error,
            });
        }
        out.read_bw_bytes += job.read.bw_bytes;
        out.write_bw_bytes += job.write.bw_bytes;
        out.read_bytes += job.read.io_bytes;
        out.write_bytes += job.write.io_bytes;
        out.secs = out
            .secs
            .max(job.read.runtime.max(job.write.runtime) as f64 / 1000.0);
    }
    Ok(out)
}

/// The seed's own fio command line, as the LKML measurements of the FUSE
/// writeback patch ran it, for the block size, jobs and size of `spec`
/// in `dir`: not time based, each job writes `--size` once.
///
/// What `--ramp_time` means here (fio 3.33, measured with `--size=8M
/// --ramp_time=2` and with `--size=1G --ramp_time=1` at 1k): fio leaves
/// the ramp only while jobs are still running. A job that has written its
/// whole size before the ramp ends never leaves it, and fio then reports
/// *everything* — io_bytes is the full size, runtime the whole run — so
/// the ramp discards nothing. Only a job still writing when the ramp ends
/// has the ramp's I/O and time taken out (1.43 of 2 GiB counted in that
/// 1k run). With the seed's 2G per job and 30 s that takes a rate below
/// 2 × 2 GiB / 30 s = 137 MiB/s (the 32-job row: 32 × its size / 30 s):
/// at the LKML table's rates (341 MiB/s and up) the ramp never ended, and
/// each figure is the whole 4 GiB over the whole run, file creation and
/// the first writes included.
///
/// ```
/// use std::path::Path;
/// use std::time::Duration;
/// let seed = &fastfuse_bench::workload::all(&fastfuse_bench::workload::Sizes::FULL)[0];
/// let mut spec = seed.data().unwrap().clone();
/// spec.file_size = 2 << 30;
/// let args = fastfuse_bench::fio::seed_args(Path::new("MNT"), &spec, Duration::from_secs(30));
/// assert_eq!(
///     args.join(" "),
///     "--name=writeback --ioengine=sync --rw=write --bs=1k --size=2G --numjobs=2 \
///      --ramp_time=30 --group_reporting=1 --directory=MNT"
/// );
/// ```
pub fn seed_args(dir: &Path, spec: &DataSpec, ramp: Duration) -> Vec<String> {
    let ramp = ramp_arg(ramp);
    vec![
        format!("--name={SEED_JOB}"),
        "--ioengine=sync".into(),
        format!("--rw={}", spec.pattern.fio_rw()),
        format!("--bs={}", short_size(spec.bs)),
        format!("--size={}", short_size(spec.file_size)),
        format!("--numjobs={}", spec.jobs),
        format!("--ramp_time={ramp}"),
        "--group_reporting=1".into(),
        format!("--directory={}", dir.display()),
    ]
}

/// A ramp time as fio's `--ramp_time` takes it: whole seconds as the seed
/// wrote them (`30`), else milliseconds (`200ms`).
pub fn ramp_arg(ramp: Duration) -> String {
    let ms = ramp.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The job name of the seed's command line (fio names its files
/// `writeback.JOB.0`).
pub const SEED_JOB: &str = "writeback";

/// Runs the seed's command line ([`seed_args`]) in `dir`, JSON output to
/// `scratch`; otherwise as [`run`].
pub fn run_seed(
    dir: &Path,
    spec: &DataSpec,
    ramp: Duration,
    scratch: &Path,
    stop: &AtomicBool,
) -> Result<FioOutcome, FioError> {
    let output = scratch.join("fio-seed.json");
    let mut c = Command::new("fio");
    c.args(seed_args(dir, spec, ramp))
        // Where the result goes changes nothing in what is measured.
        .arg("--output-format=json")
        .arg(format!("--output={}", output.display()));
    run_command(c, &output, stop)
}

/// Runs fio for a workload in `dir` and reads its result. `scratch` is a
/// directory outside the mount for the JSON file. When `stop` is set, fio
/// gets SIGINT (it then ends its jobs and reports) and the result is
/// [`FioError::Interrupted`].
pub fn run(
    dir: &Path,
    name: &str,
    spec: &DataSpec,
    threads: bool,
    scratch: &Path,
    stop: &AtomicBool,
) -> Result<FioOutcome, FioError> {
    let output = scratch.join(format!("fio-{name}.json"));
    run_command(command(dir, name, spec, threads, &output), &output, stop)
}

/// Runs a fio command that writes its JSON to `output`, and reads it.
fn run_command(
    mut command: Command,
    output: &Path,
    stop: &AtomicBool,
) -> Result<FioOutcome, FioError> {
    let _ = std::fs::remove_file(output);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(FioError::Spawn)?;
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    });
    let mut signalled = false;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(FioError::Spawn)? {
            break status;
        }
        if stop.load(Ordering::Relaxed) && !signalled {
            signalled = true;
            if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = reader.join().unwrap_or_default();
    if signalled {
        return Err(FioError::Interrupted);
    }
    if !status.success() {
        let tail: String = stderr
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" / ");
        return Err(FioError::Failed {
            status: status.to_string(),
            stderr: tail,
        });
    }
    let text = std::fs::read_to_string(output).map_err(|e| FioError::Json(e.to_string()))?;
    let _ = std::fs::remove_file(output);
    parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of fio 3.33's output with --group_reporting (trimmed).
    const GROUPED: &str = r#"note: both iodepth >= 1 and synchronous I/O engine are selected
{
  "fio version" : "fio-3.33",
  "timestamp" : 1795704522,
  "jobs" : [
    {
      "jobname" : "seqwrite-4k",
      "groupid" : 0,
      "error" : 0,
      "job_runtime" : 10000,
      "read" : { "io_bytes" : 0, "bw_bytes" : 0, "bw" : 0, "iops" : 0.0, "runtime" : 0 },
      "write" : { "io_bytes" : 19148152832, "io_kbytes" : 18699368,
                  "bw_bytes" : 3828864793, "bw" : 3739125, "iops" : 934781.0,
                  "runtime" : 5001 }
    }
  ]
}"#;

    #[test]
    fn reads_the_aggregate_write_bandwidth() {
        let out = parse(GROUPED).unwrap();
        assert_eq!(out.write_bw_bytes, 3828864793.0);
        assert_eq!(out.write_bytes, 19148152832);
        assert_eq!(out.read_bytes, 0);
        assert!((out.secs - 5.001).abs() < 1e-9);
    }

    #[test]
    fn sums_jobs_without_group_reporting() {
        let json = r#"{"jobs":[
          {"jobname":"a","error":0,"read":{"bw_bytes":0,"io_bytes":0,"runtime":0},
           "write":{"bw_bytes":1888777726,"io_bytes":1,"runtime":5000}},
          {"jobname":"a","error":0,"read":{"bw_bytes":0,"io_bytes":0,"runtime":0},
           "write":{"bw_bytes":1828058477,"io_bytes":1,"runtime":5000}}]}"#;
        assert_eq!(parse(json).unwrap().bytes_per_sec(), 3716836203.0);
    }

    #[test]
    fn errors_are_reported() {
        assert!(matches!(parse("fio: no"), Err(FioError::Json(_))));
        assert!(matches!(parse(r#"{"jobs":[]}"#), Err(FioError::Json(_))));
        let failed = r#"{"jobs":[{"jobname":"x","error":5,
            "read":{"bw_bytes":0,"io_bytes":0,"runtime":0},
            "write":{"bw_bytes":0,"io_bytes":0,"runtime":0}}]}"#;
        assert!(matches!(parse(failed), Err(FioError::Job { error: 5, .. })));
    }

    #[test]
    fn command_has_the_seed_options() {
        let spec = DataSpec {
            pattern: Pattern::SeqWrite,
            bs: 1 << 20,
            jobs: 2,
            file_size: 256 << 20,
            runtime: Duration::from_secs(5),
            cold: false,
        };
        let c = command(
            Path::new("/m"),
            "seq-write-1M",
            &spec,
            false,
            Path::new("/o.json"),
        );
        let args: Vec<_> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for want in [
            "--rw=write",
            "--ioengine=sync",
            "--bs=1M",
            "--numjobs=2",
            "--time_based",
            "--runtime=5000ms",
            "--group_reporting",
            "--directory=/m",
        ] {
            assert!(
                args.iter().any(|a| a == want),
                "{want} missing from {args:?}"
            );
        }
    }
}
