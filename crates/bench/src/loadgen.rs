//! The built-in load generator: one thread per job doing `pwrite`/`pread`
//! loops the way fio's sync engine does, so that the two engines measure
//! the same thing.
//!
//! What fio 3.33 does (read in its backend.c and filesetup.c, and seen with
//! strace) and what this module copies:
//! - before the clock starts, a write job's file is unlinked, created and
//!   `fallocate`d to the job's size; a read job's file must already hold
//!   that size (fio lays it out; here [`layout`] does, through the mount);
//! - each job opens its file (`O_RDWR|O_CREAT` for writes, `O_RDONLY` for
//!   reads), drops its cached pages (`POSIX_FADV_DONTNEED`, fio's default
//!   `invalidate=1`) and declares the pattern (`POSIX_FADV_SEQUENTIAL` or
//!   `_RANDOM`, fio's default `fadvise_hint=1`);
//! - the clock runs from the first I/O until the last one completes; with
//!   `time_based`, a job that reaches the end of its file starts again at
//!   offset 0, invalidating the file's cache first;
//! - `end_fsync` is off, and the files are closed after the run time is
//!   taken: a writeback flush at close is not in the throughput. This module
//!   times the close separately ([`Outcome::close_secs`]) so that the JSON
//!   shows what it cost;
//! - random jobs touch every block once per pass over the file (fio's
//!   random map), here through a full-period generator over the blocks;
//! - the aggregate bandwidth is all bytes over the longest job's time
//!   (`group_reporting`);
//! - jobs are processes (fio's default; `--thread` makes them threads),
//!   and each calls `setsid()` as fio's do, which with
//!   `kernel.sched_autogroup_enabled=1` gives each job its own scheduler
//!   group. This matters: on mergerfs 2.33, 1k writes from two fio jobs run
//!   at 92 MiB/s as processes and 31 MiB/s with `--thread`; two writers
//!   without `setsid` match the latter. A job process is this program
//!   started again as a worker ([`Jobs::Processes`], [`serve_job`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::io::{BufRead, BufReader, Write};
use std::num::NonZeroU64;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use rustix::fs::{Advice, FallocateFlags};
use serde::{Deserialize, Serialize};

use crate::workload::{DataSpec, Pattern};

/// What a run of a data workload measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outcome {
    /// Bytes read, all jobs.
    pub read_bytes: u64,
    /// Bytes written, all jobs.
    pub write_bytes: u64,
    /// The longest job's time from first to last I/O.
    pub secs: f64,
    /// The longest job's close.
    pub close_secs: f64,
}

impl Outcome {
    /// Aggregate throughput in bytes per second.
    pub fn bytes_per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            (self.read_bytes + self.write_bytes) as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// The file of job `job` (from 0) of workload `name`, named as fio names it.
pub fn job_file(dir: &Path, name: &str, job: u32) -> PathBuf {
    dir.join(format!("{name}.{job}.0"))
}

/// Writes every job's file in full (1 MiB blocks) and closes it, so that
/// reads find data: fio's "laying out IO file". Untimed.
pub fn layout(dir: &Path, name: &str, spec: &DataSpec) -> io::Result<()> {
    let block = vec![0x5au8; (1 << 20).min(spec.file_size as usize).max(1)];
    for job in 0..spec.jobs {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(job_file(dir, name, job))?;
        let mut off = 0;
        while off < spec.file_size {
            let n = block.len().min((spec.file_size - off) as usize);
            f.write_all_at(&block[..n], off)?;
            off += n as u64;
        }
    }
    Ok(())
}

/// Removes the job files of a workload (missing ones are fine).
pub fn remove_files(dir: &Path, name: &str, jobs: u32) -> io::Result<()> {
    for job in 0..jobs {
        match std::fs::remove_file(job_file(dir, name, job)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Gets write jobs' files ready as fio does before its clock starts:
/// unlink, create, `fallocate` to the job size. A filesystem without
/// fallocate is fine (fio goes on too).
pub fn prepare(dir: &Path, name: &str, spec: &DataSpec) -> io::Result<()> {
    if spec.pattern != Pattern::SeqWrite {
        return Ok(());
    }
    for job in 0..spec.jobs {
        let path = job_file(dir, name, job);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)?;
        match rustix::fs::fallocate(&f, FallocateFlags::empty(), 0, spec.file_size) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A small, fast generator (splitmix64); fio's own is not needed, only a
/// spread of offsets and a fair coin.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Visits each of `n` blocks once per period, in a scrambled order: a
/// full-period linear congruential generator modulo the next power of two
/// (Hull–Dobell: odd increment, multiplier ≡ 1 mod 4), skipping values
/// past `n`. Plays the part of fio's random map.
struct BlockOrder {
    n: u64,
    mask: u64,
    state: u64,
    inc: u64,
    step: u64,
}

impl BlockOrder {
    fn new(n: u64, seed: u64) -> BlockOrder {
        let m = n.max(1).next_power_of_two();
        BlockOrder {
            n: n.max(1),
            mask: m - 1,
            state: seed & (m - 1),
            inc: (seed >> 17) | 1,
            step: 0,
        }
    }

    /// The next block, and whether a pass over all blocks just ended.
    fn next(&mut self) -> (u64, bool) {
        loop {
            self.state = self
                .state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(self.inc)
                & self.mask;
            if self.state < self.n {
                self.step += 1;
                let wrapped = self.step > self.n;
                if wrapped {
                    self.step = 1;
                }
                return (self.state, wrapped);
            }
        }
    }
}

fn advise(f: &File, advice: Advice, len: u64) {
    // Advice is a hint: a filesystem that refuses it changes nothing here.
    let _ = rustix::fs::fadvise(f, 0, NonZeroU64::new(len), advice);
}

/// What one job measured.
#[derive(Debug, Default, Serialize, Deserialize)]
struct JobResult {
    read: u64,
    written: u64,
    secs: f64,
    close_secs: f64,
}

/// Runs one job: opens its file, advises, waits for the start signal
/// (`wait_start`, called exactly once, also when opening failed), then
/// loops until the run time is over or `stop` is set.
fn run_job(
    path: &Path,
    spec: &DataSpec,
    seed: u64,
    wait_start: &mut dyn FnMut() -> io::Result<()>,
    stop: &AtomicBool,
) -> io::Result<JobResult> {
    let writes = spec.pattern != Pattern::SeqRead;
    let mut opts = OpenOptions::new();
    opts.read(true);
    if writes {
        opts.write(true).create(true).mode(0o600);
    }
    let opened = opts.open(path);
    let file = match opened {
        Ok(f) => f,
        Err(e) => {
            // Do not leave the others waiting at the barrier.
            let _ = wait_start();
            return Err(e);
        }
    };
    advise(&file, Advice::DontNeed, spec.file_size);
    let hint = match spec.pattern {
        Pattern::RandRw => Advice::Random,
        _ => Advice::Sequential,
    };
    advise(&file, hint, spec.file_size);

    let mut buf = vec![0u8; spec.bs as usize];
    let mut rng = SplitMix(seed);
    for chunk in buf.chunks_mut(8) {
        let r = rng.next().to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    let blocks = (spec.file_size / spec.bs).max(1);
    let mut order = BlockOrder::new(blocks, rng.next());
    let mut result = JobResult::default();
    let mut offset = 0u64;

    wait_start()?;
    let t0 = Instant::now();
    let deadline = t0 + spec.runtime;
    let mut failure = None;
    loop {
        if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
            break;
        }
        let (off, read) = match spec.pattern {
            Pattern::SeqWrite | Pattern::SeqRead => {
                if offset + spec.bs > blocks * spec.bs {
                    offset = 0;
                    advise(&file, Advice::DontNeed, spec.file_size);
                }
                let off = offset;
                offset += spec.bs;
                (off, spec.pattern == Pattern::SeqRead)
            }
            Pattern::RandRw => {
                let (block, wrapped) = order.next();
                if wrapped {
                    advise(&file, Advice::DontNeed, spec.file_size);
                }
                (block * spec.bs, rng.next() & 1 == 0)
            }
        };
        let r = if read {
            file.read_exact_at(&mut buf, off)
                .map(|()| result.read += spec.bs)
        } else {
            file.write_all_at(&buf, off)
                .map(|()| result.written += spec.bs)
        };
        if let Err(e) = r {
            failure = Some(e);
            break;
        }
    }
    result.secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    drop(file);
    result.close_secs = t1.elapsed().as_secs_f64();
    match failure {
        Some(e) => Err(io::Error::new(
            e.kind(),
            format!(
                "{} at {}: {e}",
                if writes { "I/O" } else { "read" },
                path.display()
            ),
        )),
        None => Ok(result),
    }
}

/// How jobs run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jobs {
    /// Threads of this process (fio's `--thread`).
    Threads,
    /// Processes, as fio runs them by default: `exe` with `args`, then
    /// `--job-worker REQUEST`, which must end in [`serve_job`].
    Processes {
        /// The program.
        exe: PathBuf,
        /// Arguments before `--job-worker`.
        args: Vec<String>,
    },
}

/// Runs a data workload in `dir`, one job per file, as threads or
/// processes. The files must be ready ([`prepare`] for writes, [`layout`]
/// for reads). Stops early when `stop` is set.
pub fn run(
    dir: &Path,
    name: &str,
    spec: &DataSpec,
    stop: &AtomicBool,
    jobs: &Jobs,
) -> io::Result<Outcome> {
    let results = match jobs {
        Jobs::Threads => run_threads(dir, name, spec, stop)?,
        Jobs::Processes { exe, args } => run_processes(dir, name, spec, exe, args, stop)?,
    };
    let mut out = Outcome::default();
    for r in results {
        let r = r?;
        out.read_bytes += r.read;
        out.write_bytes += r.written;
        out.secs = out.secs.max(r.secs);
        out.close_secs = out.close_secs.max(r.close_secs);
    }
    Ok(out)
}

fn seed(job: u32) -> u64 {
    0x5eed_0000 + u64::from(job)
}

fn run_threads(
    dir: &Path,
    name: &str,
    spec: &DataSpec,
    stop: &AtomicBool,
) -> io::Result<Vec<io::Result<JobResult>>> {
    let start = Barrier::new(spec.jobs as usize);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..spec.jobs)
            .map(|job| {
                let path = job_file(dir, name, job);
                let start = &start;
                std::thread::Builder::new()
                    .name(format!("bench-job-{job}"))
                    .spawn_scoped(s, move || {
                        let mut wait = || {
                            start.wait();
                            Ok(())
                        };
                        run_job(&path, spec, seed(job), &mut wait, stop)
                    })
            })
            .collect::<io::Result<_>>()?;
        Ok(handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("job panicked")))
            })
            .collect())
    })
}

/// What a job process is asked to do (one JSON argument).
#[derive(Debug, Serialize, Deserialize)]
struct JobRequest {
    path: PathBuf,
    spec: DataSpec,
    seed: u64,
}

/// A job process's last line.
#[derive(Debug, Serialize, Deserialize)]
enum JobReport {
    Done(JobResult),
    Error(String),
}

struct Worker {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Worker {
    fn line(&mut self) -> io::Result<String> {
        let mut s = String::new();
        self.stdout.read_line(&mut s)?;
        Ok(s.trim_end().to_string())
    }
}

fn run_processes(
    dir: &Path,
    name: &str,
    spec: &DataSpec,
    exe: &Path,
    args: &[String],
    stop: &AtomicBool,
) -> io::Result<Vec<io::Result<JobResult>>> {
    let mut workers = Vec::new();
    let pids = std::sync::Mutex::new(Vec::new());
    let done = AtomicBool::new(false);
    // The jobs are in sessions of their own (setsid), out of reach of a
    // Ctrl-C at the terminal: pass a stop on to them.
    let forward = || {
        while !done.load(Ordering::Relaxed) {
            if stop.load(Ordering::Relaxed) {
                for &pid in pids.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
                    }
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let result = std::thread::scope(|s| {
        s.spawn(forward);
        let r = (|| {
            for job in 0..spec.jobs {
                let request = JobRequest {
                    path: job_file(dir, name, job),
                    spec: spec.clone(),
                    seed: seed(job),
                };
                let mut child = Command::new(exe)
                    .args(args)
                    .arg("--job-worker")
                    .arg(serde_json::to_string(&request).map_err(io::Error::other)?)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()?;
                pids.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(child.id() as i32);
                let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
                workers.push(Worker { child, stdout });
            }
            // Every job has opened its file: start them all, as fio does.
            for w in &mut workers {
                let line = w.line()?;
                if line != "ready" {
                    return Err(report_error(&line));
                }
            }
            for w in &mut workers {
                let stdin = w.child.stdin.as_mut().expect("piped stdin");
                stdin.write_all(b"go\n")?;
                stdin.flush()?;
            }
            let mut results = Vec::new();
            for w in &mut workers {
                let line = w.line()?;
                results.push(match serde_json::from_str::<JobReport>(&line) {
                    Ok(JobReport::Done(r)) => Ok(r),
                    _ => Err(report_error(&line)),
                });
            }
            Ok(results)
        })();
        done.store(true, Ordering::Relaxed);
        r
    });
    // Whatever happened: close their stdin (a waiting worker then gives
    // up) and reap them.
    for w in &mut workers {
        drop(w.child.stdin.take());
        let _ = w.child.wait();
    }
    result
}

fn report_error(line: &str) -> io::Error {
    match serde_json::from_str::<JobReport>(line) {
        Ok(JobReport::Error(e)) => io::Error::other(e),
        _ if line.is_empty() => io::Error::other("a job process exited early"),
        _ => io::Error::other(format!("a job process said {line:?}")),
    }
}

/// The job process's side: runs the job described by `request` (from
/// `--job-worker`), talking to the parent over stdin and stdout: `ready`
/// once the file is open, then waits for a line, then one JSON line with
/// the result. SIGINT or SIGTERM end the job early.
pub fn serve_job(request: &str) -> io::Result<()> {
    // As fio's job processes do (and so in a scheduler autogroup of its
    // own). Fails only for a process group leader, which a spawned child
    // is not; then the job just runs in the bench's session.
    let _ = rustix::process::setsid();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let mut out = io::stdout().lock();
    let result = match serde_json::from_str::<JobRequest>(request) {
        Ok(req) => {
            let mut wait = || {
                writeln!(out, "ready")?;
                out.flush()?;
                let mut go = String::new();
                if io::stdin().read_line(&mut go)? == 0 {
                    return Err(io::Error::other("the bench went away"));
                }
                Ok(())
            };
            run_job(&req.path, &req.spec, req.seed, &mut wait, &stop)
        }
        Err(e) => Err(io::Error::other(format!("bad job request: {e}"))),
    };
    let report = match result {
        Ok(r) => JobReport::Done(r),
        Err(e) => JobReport::Error(e.to_string()),
    };
    writeln!(
        out,
        "{}",
        serde_json::to_string(&report).map_err(io::Error::other)?
    )?;
    out.flush()
}

/// A `Duration` as fio's `--runtime` takes it.
pub fn fio_runtime(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn block_order_visits_every_block_once_per_pass() {
        for n in [1u64, 2, 3, 7, 64, 1000] {
            let mut order = BlockOrder::new(n, 12345);
            let mut seen = HashSet::new();
            for i in 0..n {
                let (b, wrapped) = order.next();
                assert!(b < n);
                assert!(!wrapped || i == 0 && n == 1, "n={n} i={i}");
                seen.insert(b);
            }
            assert_eq!(seen.len() as u64, n);
            assert!(order.next().1 || n == 1, "a second pass begins");
        }
    }

    #[test]
    fn runs_each_pattern_in_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let stop = AtomicBool::new(false);
        for pattern in [Pattern::SeqWrite, Pattern::SeqRead, Pattern::RandRw] {
            let spec = DataSpec {
                pattern,
                bs: 4096,
                jobs: 2,
                file_size: 1 << 20,
                runtime: Duration::from_millis(50),
                cold: false,
            };
            if pattern.needs_layout() {
                layout(dir.path(), "t", &spec).unwrap();
            } else {
                prepare(dir.path(), "t", &spec).unwrap();
            }
            let out = run(dir.path(), "t", &spec, &stop, &Jobs::Threads).unwrap();
            assert!(out.secs >= 0.05, "{out:?}");
            assert!(out.bytes_per_sec() > 0.0);
            match pattern {
                Pattern::SeqWrite => assert_eq!(out.read_bytes, 0),
                Pattern::SeqRead => assert_eq!(out.write_bytes, 0),
                Pattern::RandRw => assert!(out.read_bytes > 0 && out.write_bytes > 0),
            }
            remove_files(dir.path(), "t", 2).unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_stop_request_ends_the_run_early() {
        let dir = tempfile::tempdir().unwrap();
        let spec = DataSpec {
            pattern: Pattern::SeqWrite,
            bs: 4096,
            jobs: 1,
            file_size: 1 << 20,
            runtime: Duration::from_secs(60),
            cold: false,
        };
        prepare(dir.path(), "s", &spec).unwrap();
        let stop = AtomicBool::new(true);
        let t = Instant::now();
        run(dir.path(), "s", &spec, &stop, &Jobs::Threads).unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
