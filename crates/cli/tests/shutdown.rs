//! Shutdown without loss: writers are busy (dirty writeback pages in the
//! kernel's cache) when the daemon is told to stop; every byte of every
//! file a writer closed successfully must then be on the source, and no
//! write or close may report success for data that did not get there.
//!
//! Each writer writes files whose contents derive from a seed, so what a
//! file must hold is recomputed from the writer's log, not trusted from
//! the mount.

mod common;
mod support;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use rustix::fs::{Mode, OFlags};
use support::*;

/// The mount the writers write through: the writeback cache, whose dirty
/// pages only the daemon can bring to the source (in the default mount,
/// kernel passthrough, the kernel writes the source itself).
const WRITEBACK: &[&str] = &["-o", "writeback"];

/// A file a writer closed without error.
#[derive(Debug)]
struct Closed {
    path: PathBuf,
    seed: u64,
    len: usize,
    /// Whether the stop (signal or unmount) had been issued when the file
    /// was opened, and when close returned.
    opened_after_stop: bool,
    after_stop: bool,
}

/// What one writer did.
#[derive(Debug, Default)]
struct Log {
    closed: Vec<Closed>,
    /// Failed calls: (what, errno), in order.
    errors: Vec<(String, rustix::io::Errno)>,
}

/// Where writers open their files.
#[derive(Clone)]
enum Base {
    /// Relative to a descriptor of the mount's root, opened before the
    /// stop: keeps working on a lazily detached mount.
    Fd(Arc<OwnedFd>),
    /// By path through the mountpoint: stops reaching the mount once it is
    /// unmounted.
    Path(PathBuf),
}

impl Base {
    fn open(&self, rel: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
        let mode = Mode::from_raw_mode(0o644);
        match self {
            Base::Fd(dir) => rustix::fs::openat(&**dir, rel, flags, mode),
            Base::Path(root) => rustix::fs::open(root.join(rel), flags, mode),
        }
    }
}

struct Writers {
    stop_issued: Arc<AtomicBool>,
    finish: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Log>>,
}

/// How fast writers go. A fast machine fills the source's tmpfs within the
/// test's seconds, so each writer goes at full speed only for its first
/// `BUDGET` bytes and then slows down to the paces given here.
#[derive(Clone, Copy)]
struct Pace {
    /// Pause between files at full speed.
    gap: Duration,
    /// Once over budget: pause before every 64 KiB write.
    slow_chunk: Duration,
    /// Once over budget: pause between files.
    slow_gap: Duration,
}

/// Bytes a writer writes at full speed; 4 writers stay far below the
/// source's 2 GiB.
const BUDGET: usize = 128 << 20;

/// Starts `n` writers in `mnt/wN/`. Writer `t` writes files of 64 KiB to
/// 1 MiB in 64 KiB writes and closes them; odd writers also pause halfway
/// through each file, so that some files hold dirty pages across the stop.
/// Each writer keeps to `pace` and stops at its first error.
fn start_writers(mnt: &Path, base: Base, n: u64, pace: Pace) -> Writers {
    let stop_issued = Arc::new(AtomicBool::new(false));
    let finish = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..n {
        std::fs::create_dir(mnt.join(format!("w{t}"))).unwrap();
        let (base, stop_issued, finish) = (base.clone(), stop_issued.clone(), finish.clone());
        threads.push(std::thread::spawn(move || {
            let mut log = Log::default();
            let mut rng = Rng::new(0x5107 + t);
            let mut i = 0u64;
            let mut written = 0usize;
            'files: while !finish.load(Ordering::Acquire) {
                let path = PathBuf::from(format!("w{t}/f{i}"));
                let seed = (t << 32) | i;
                let len = (1 + rng.below(16) as usize) * 65536;
                let data = content(seed, len);
                let opened_after_stop = stop_issued.load(Ordering::Acquire);
                let mut fail = |what: &str, e| {
                    log.errors.push((format!("{what} {}", path.display()), e));
                };
                let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC;
                let f = match base.open(&path, flags) {
                    Ok(f) => f,
                    Err(e) => {
                        fail("open", e);
                        break;
                    }
                };
                for (k, chunk) in data.chunks(65536).enumerate() {
                    if written > BUDGET {
                        std::thread::sleep(pace.slow_chunk);
                    }
                    written += chunk.len();
                    if t % 2 == 1 && k == len / 65536 / 2 {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    match rustix::io::write(&f, chunk) {
                        Ok(n) if n == chunk.len() => {}
                        Ok(n) => {
                            fail(
                                &format!("short write {n} of {}", chunk.len()),
                                rustix::io::Errno::IO,
                            );
                            break 'files;
                        }
                        Err(e) => {
                            fail("write", e);
                            break 'files;
                        }
                    }
                }
                // close(2) through rustix reports nothing; a dup closed
                // explicitly does (the FUSE FLUSH answer).
                let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
                // SAFETY: close(2) of the descriptor just released from
                // its OwnedFd; nothing else refers to it.
                let closed = unsafe { libc::close(fd) };
                if closed != 0 {
                    let e = std::io::Error::last_os_error();
                    fail("close", rustix::io::Errno::from_io_error(&e).unwrap());
                    break;
                }
                log.closed.push(Closed {
                    path,
                    seed,
                    len,
                    opened_after_stop,
                    after_stop: stop_issued.load(Ordering::Acquire),
                });
                i += 1;
                std::thread::sleep(if written > BUDGET {
                    pace.slow_gap
                } else {
                    pace.gap
                });
            }
            log
        }));
    }
    Writers {
        stop_issued,
        finish,
        threads,
    }
}

impl Writers {
    /// Lets the writers run on for `after` once the stop was issued, then
    /// ends them and returns their logs.
    fn finish(self, after: Duration) -> Vec<Log> {
        std::thread::sleep(after);
        self.finish.store(true, Ordering::Release);
        self.threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect()
    }
}

/// Every closed file is on the source, whole; returns how many files were
/// closed before the stop, open across it, and opened after it.
fn assert_closed_files_on_source(src: &Path, logs: &[Log]) -> (usize, usize, usize) {
    let mut counts = (0, 0, 0);
    for c in logs.iter().flat_map(|l| &l.closed) {
        let on_source = std::fs::read(src.join(&c.path)).unwrap_or_else(|e| {
            panic!(
                "{} was closed but is not on the source: {e}",
                c.path.display()
            )
        });
        assert!(
            on_source == content(c.seed, c.len),
            "{} was closed with {} bytes; the source has {} bytes, not the same",
            c.path.display(),
            c.len,
            on_source.len()
        );
        match (c.opened_after_stop, c.after_stop) {
            (false, false) => counts.0 += 1,
            (false, true) => counts.1 += 1,
            _ => counts.2 += 1,
        }
    }
    counts
}

/// SIGTERM while writers hold files open: the daemon syncs, finds the
/// mount busy, detaches it and serves the open files until they close, so
/// writers see no error at all, even those that keep writing through a
/// descriptor of the detached mount.
#[test]
fn sigterm_with_dirty_pages_loses_nothing() {
    let mut served = Served::start_on(Tmpfs::new("2g"), WRITEBACK);
    let mnt = served.mnt().to_path_buf();
    let _watchdog = Watchdog::start(
        Duration::from_secs(60),
        "the SIGTERM test",
        served.pid(),
        &[&mnt, served.source.path()],
    );
    let root = rustix::fs::open(
        &mnt,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    // Over budget, every writer keeps a file open and dirty all the time,
    // so some are open across the signal.
    let pace = Pace {
        gap: Duration::ZERO,
        slow_chunk: Duration::from_millis(10),
        slow_gap: Duration::ZERO,
    };
    let writers = start_writers(&mnt, Base::Fd(Arc::new(root)), 4, pace);
    std::thread::sleep(Duration::from_millis(1500));
    writers.stop_issued.store(true, Ordering::Release);
    // SAFETY: kill(2) on the daemon's pid, which this test started.
    assert_eq!(unsafe { libc::kill(served.pid() as i32, libc::SIGTERM) }, 0);
    assert!(
        wait_for(Duration::from_secs(10), || !is_mounted(&mnt)),
        "the mount is still attached after SIGTERM"
    );
    let logs = writers.finish(Duration::from_millis(500));
    let status = served.stop();
    let errors: Vec<_> = logs.iter().flat_map(|l| &l.errors).collect();
    assert!(errors.is_empty(), "writers saw errors: {errors:?}");
    assert!(status.success(), "the daemon exited with {status}");
    let (before, across, after) = assert_closed_files_on_source(served.src(), &logs);
    eprintln!(
        "files closed before SIGTERM {before}, open across it {across}, opened after it {after}"
    );
    assert!(
        before > 10 && across > 0 && after > 0,
        "too little was written: {before}, {across}, {after}"
    );
}

/// `umount MNT` (or `fusermount3 -u MNT`) refuses a busy mount, so it can
/// only land between files: it is retried while the writers run until it
/// does. Every file closed before is on the source; once the mount is
/// gone, the writers' next open fails (the path no longer reaches it),
/// never a silent success.
fn unmount_while_writing_loses_nothing(unmount: &[&str]) {
    let mut served = Served::start_on(Tmpfs::new("2g"), WRITEBACK);
    let mnt = served.mnt().to_path_buf();
    let _watchdog = Watchdog::start(
        Duration::from_secs(60),
        "the unmount test",
        served.pid(),
        &[&mnt, served.source.path()],
    );
    // Over budget, writers leave the mount idle between files, so the
    // unmount can land.
    let pace = Pace {
        gap: Duration::from_millis(3),
        slow_chunk: Duration::ZERO,
        slow_gap: Duration::from_millis(50),
    };
    let writers = start_writers(&mnt, Base::Path(mnt.clone()), 3, pace);
    std::thread::sleep(Duration::from_millis(1500));
    writers.stop_issued.store(true, Ordering::Release);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut attempts = 0;
    while is_mounted(&mnt) {
        assert!(
            Instant::now() < deadline,
            "{unmount:?} never got the mount idle"
        );
        let _ = Command::new(unmount[0])
            .args(&unmount[1..])
            .arg(&mnt)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        attempts += 1;
    }
    let logs = writers.finish(Duration::from_millis(200));
    let status = served.stop();
    assert!(status.success(), "the daemon exited with {status}");
    for log in &logs {
        // At most the one open that found the mount gone.
        match log.errors.as_slice() {
            [] => {}
            [(what, e)] if what.starts_with("open") && *e == rustix::io::Errno::NOENT => {}
            other => panic!("a writer saw {other:?}"),
        }
    }
    let (before, across, after) = assert_closed_files_on_source(served.src(), &logs);
    eprintln!(
        "{unmount:?} landed after {attempts} attempts; files closed: {} before, {after} while retrying",
        before + across
    );
    assert!(before > 10, "too little was written: {before}");
    // Nothing was written to the bare mountpoint after the unmount.
    assert_eq!(std::fs::read_dir(&mnt).unwrap().count(), 0);
}

#[test]
fn umount_while_writing_loses_nothing() {
    unmount_while_writing_loses_nothing(&["umount"]);
}

#[test]
fn fusermount3_u_while_writing_loses_nothing() {
    unmount_while_writing_loses_nothing(&["fusermount3", "-u"]);
}
