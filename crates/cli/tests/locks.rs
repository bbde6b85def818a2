//! Lock waits never wedge a mount: many processes blocked on one POSIX
//! lock or flock, over /dev/fuse and io_uring, with one and two workers.
//! The holder's unlock returns, every waiter gets the lock in turn and
//! alone, unrelated requests are served meanwhile, a waiter killed while
//! waiting leaves the others unharmed, and a holder that exits without
//! unlocking releases its lock.
//!
//! Waiters and holders are forked processes (POSIX locks belong to a
//! process) that make only raw system calls between fork and exit, and
//! report on a pipe. The daemon's statistics tell when every waiter's
//! request has reached it.

mod common;
mod support;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{RingEnabled, Served};
use support::Watchdog;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Posix,
    Flock,
}

/// What a child reports on its pipe, one byte each.
const LOCKED: u8 = b'L';
const UNLOCKED: u8 = b'U';
const OVERLAP: u8 = b'X';
const FAILED: u8 = b'F';

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// Takes (`lock`) or drops an exclusive lock on `fd`, blocking. Raw
/// syscalls only: runs in forked children.
fn lock_fd(fd: i32, kind: Kind, lock: bool) -> bool {
    match kind {
        Kind::Posix => {
            // SAFETY: struct flock is plain data, valid zeroed; fcntl reads it.
            let mut fl: libc::flock = unsafe { std::mem::zeroed() };
            fl.l_type = if lock { libc::F_WRLCK } else { libc::F_UNLCK } as libc::c_short;
            fl.l_whence = libc::SEEK_SET as libc::c_short;
            // SAFETY: fd is open in this process; fl is valid for the call.
            unsafe { libc::fcntl(fd, libc::F_SETLKW, &fl) == 0 }
        }
        Kind::Flock => {
            let op = if lock { libc::LOCK_EX } else { libc::LOCK_UN };
            // SAFETY: plain call on an open fd.
            unsafe { libc::flock(fd, op) == 0 }
        }
    }
}

/// A forked process, ended by pid when the test is done or fails.
struct Child {
    pid: libc::pid_t,
    /// Reports from the child.
    from: std::fs::File,
    /// Commands to the child (holders only).
    to: Option<std::fs::File>,
}

fn pipe() -> (std::fs::File, std::fs::File) {
    let (r, w) = std::io::pipe().unwrap();
    (
        std::fs::File::from(std::os::fd::OwnedFd::from(r)),
        std::fs::File::from(std::os::fd::OwnedFd::from(w)),
    )
}

/// Forks a child that runs `body` (raw syscalls only, given the write end
/// of its report pipe and the read end of its command pipe) and exits.
fn fork_child(body: impl FnOnce(i32, i32)) -> Child {
    use std::os::fd::AsRawFd;
    let (from, report) = pipe();
    let (commands, to) = pipe();
    // The child makes only async-signal-safe calls (open, fcntl, flock,
    // read, write, unlink, close) on memory prepared before the fork.
    let (report_fd, commands_fd) = (report.as_raw_fd(), commands.as_raw_fd());
    let pid = support::fork(move || {
        body(report_fd, commands_fd);
        0
    });
    drop(report);
    drop(commands);
    Child {
        pid,
        from,
        to: Some(to),
    }
}

fn say(fd: i32, what: u8) {
    // SAFETY: one byte from a live stack slot to an open fd.
    unsafe { libc::write(fd, (&what as *const u8).cast(), 1) };
}

fn hear(fd: i32) -> u8 {
    let mut b = 0u8;
    // SAFETY: one byte into a live stack slot from an open fd.
    if unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) } == 1 {
        b
    } else {
        0
    }
}

impl Child {
    /// The next report byte, or 0 when the child closed its pipe (exited).
    fn report(&mut self) -> u8 {
        use std::io::Read;
        let mut b = [0u8];
        match self.from.read(&mut b) {
            Ok(1) => b[0],
            _ => 0,
        }
    }

    fn command(&mut self, c: u8) {
        use std::io::Write;
        self.to.as_mut().unwrap().write_all(&[c]).unwrap();
    }

    /// Waits for the child to exit; its status.
    fn reap(&mut self) -> i32 {
        let mut status = 0;
        // SAFETY: waitpid on our own child, into a live int.
        let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        assert_eq!(r, self.pid, "waitpid: {}", std::io::Error::last_os_error());
        self.pid = 0;
        status
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.pid > 0 {
            // SAFETY: kill and reap our own child by pid.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// A holder: locks, says LOCKED, then on 'u' unlocks and says UNLOCKED
/// (and waits for the pipe to close), on 'x' exits holding the lock.
fn holder(file: &CString, kind: Kind) -> Child {
    let file = file.clone();
    fork_child(move |report, commands| {
        // SAFETY: a NUL-terminated path prepared before the fork.
        let fd = unsafe { libc::open(file.as_ptr(), libc::O_RDWR) };
        if fd < 0 || !lock_fd(fd, kind, true) {
            return say(report, FAILED);
        }
        say(report, LOCKED);
        if hear(commands) == b'u' {
            let ok = lock_fd(fd, kind, false);
            say(report, if ok { UNLOCKED } else { FAILED });
            hear(commands);
        }
    })
}

/// A waiter: blocks for the lock; once it has it, checks that nobody else
/// has (an O_EXCL marker outside the mount), says LOCKED, and lets go.
fn waiter(file: &CString, marker: &CString, kind: Kind) -> Child {
    let (file, marker) = (file.clone(), marker.clone());
    fork_child(move |report, _| {
        // SAFETY: NUL-terminated paths prepared before the fork.
        let fd = unsafe { libc::open(file.as_ptr(), libc::O_RDWR) };
        if fd < 0 || !lock_fd(fd, kind, true) {
            return say(report, FAILED);
        }
        // SAFETY: as above.
        let m = unsafe {
            libc::open(
                marker.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                0o600,
            )
        };
        if m < 0 {
            return say(report, OVERLAP);
        }
        // SAFETY: as above; the marker goes before the lock does.
        unsafe {
            libc::close(m);
            libc::unlink(marker.as_ptr());
        }
        let ok = lock_fd(fd, kind, false);
        say(report, if ok { LOCKED } else { FAILED });
    })
}

/// Requests of `op` the daemon has answered (or deferred) so far.
fn served(mnt: &Path, op: &str) -> u64 {
    fastfuse::stats::query(mnt)
        .unwrap()
        .ops
        .get(op)
        .map_or(0, |o| o.count)
}

/// Polls until the daemon has taken `n` more SETLKW requests than `before`
/// (polled: the statistics have no event to wait for).
fn wait_for_waiters(mnt: &Path, before: u64, n: u64) {
    let ok = support::wait_for(Duration::from_secs(30), || {
        served(mnt, "SETLKW") >= before + n
    });
    assert!(
        ok,
        "only {} of {n} waiters reached the daemon",
        served(mnt, "SETLKW") - before
    );
}

/// A stat and a read of a file the kernel has not seen, through the
/// mount, while the waiters wait: how long the slower one took.
fn unrelated_requests(served: &Served, tag: &str, round: usize) -> Duration {
    let name = format!("unrelated-{tag}-{round}");
    std::fs::write(served.src().join(&name), b"served meanwhile").unwrap();
    let started = Instant::now();
    std::fs::metadata(served.mnt().join(&name)).unwrap();
    let stat = started.elapsed();
    let started = Instant::now();
    assert_eq!(
        std::fs::read(served.mnt().join(&name)).unwrap(),
        b"served meanwhile"
    );
    stat.max(started.elapsed())
}

/// A file of the mount locked by a holder, and `n` waiters blocked on it
/// (their requests have reached the daemon). The markers directory must
/// outlive the waiters.
fn locked_with_waiters(
    served: &Served,
    kind: Kind,
    tag: &str,
    n: usize,
) -> (Child, Vec<Child>, tempfile::TempDir) {
    let file = served.mnt().join(format!("lock-{tag}"));
    std::fs::write(&file, b"locked").unwrap();
    let file = cstr(&file);
    let markers = tempfile::tempdir().unwrap();
    let marker = cstr(&markers.path().join("holding"));
    let mut h = holder(&file, kind);
    assert_eq!(h.report(), LOCKED, "{tag}: the holder could not lock");
    let before = served_count(served);
    // Forked on one CPU (they inherit this thread's affinity): over
    // io_uring, every lock wait then parks an entry of one queue, which
    // makes a spare entry for each.
    let waiters: Vec<Child> =
        on_cpu_zero(|| (0..n).map(|_| waiter(&file, &marker, kind)).collect());
    wait_for_waiters(served.mnt(), before, n as u64);
    (h, waiters, markers)
}

/// Runs `f` with this thread on CPU 0 only, then restores its affinity.
fn on_cpu_zero<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: cpu_set_t is plain data; sched_{get,set}affinity write and
    // read the sets given for this thread only.
    let before = unsafe {
        let mut before: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut before),
            0
        );
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut one);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &one),
            0
        );
        before
    };
    let out = f();
    // SAFETY: as above.
    unsafe {
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &before),
            0
        );
    }
    out
}

/// One holder and `n` waiters on one file: see the module's doc.
fn waiters_on_one_lock(served: &Served, kind: Kind, n: usize) {
    let tag = format!("{kind:?}-{n}");
    let (mut h, mut waiters, _markers) = locked_with_waiters(served, kind, &tag, n);

    // Everything else is served while they wait.
    let fastest = (0..3)
        .map(|round| unrelated_requests(served, &tag, round))
        .inspect(|t| {
            assert!(
                *t < Duration::from_secs(2),
                "{tag}: a stat or read took {t:?}"
            )
        })
        .min()
        .unwrap();
    eprintln!("{tag}: stat and read while {n} wait: {fastest:?}");
    assert!(fastest < Duration::from_millis(100), "{tag}: {fastest:?}");

    // A waiter killed while it waits goes; the others stay.
    let mut killed = waiters.remove(0);
    // SAFETY: kill our own child by pid.
    unsafe { libc::kill(killed.pid, libc::SIGKILL) };
    let status = killed.reap();
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "{tag}: killed waiter status {status:#x}"
    );

    // The unlock returns, and every waiter gets the lock in turn, alone.
    h.command(b'u');
    assert_eq!(h.report(), UNLOCKED, "{tag}: the holder's unlock failed");
    for (i, w) in waiters.iter_mut().enumerate() {
        let r = w.report();
        assert_eq!(r, LOCKED, "{tag}: waiter {i} reported {:?}", r as char);
        let status = w.reap();
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{tag}: waiter {i} status {status:#x}"
        );
    }
    drop(h);
}

/// SETLKW requests the daemon has taken so far.
fn served_count(served: &Served) -> u64 {
    self::served(served.mnt(), "SETLKW")
}

/// A holder that exits without unlocking releases its lock to the waiters.
fn holder_exits_holding(served: &Served, kind: Kind) {
    let tag = format!("{kind:?}-exit");
    let (mut h, mut waiters, _markers) = locked_with_waiters(served, kind, &tag, 3);
    h.command(b'x');
    assert_eq!(h.reap(), 0, "{tag}: holder status");
    for (i, w) in waiters.iter_mut().enumerate() {
        let r = w.report();
        assert_eq!(r, LOCKED, "{tag}: waiter {i} reported {:?}", r as char);
        w.reap();
    }
}

fn all_scenarios(args: &[&str]) {
    let served = Served::start(args);
    let _watchdog = Watchdog::start(
        Duration::from_secs(240),
        "lock waiters",
        served.pid(),
        &[served.mnt(), served.source.path()],
    );
    for kind in [Kind::Posix, Kind::Flock] {
        for n in [3, 100] {
            waiters_on_one_lock(&served, kind, n);
        }
        holder_exits_holding(&served, kind);
    }
    // Nothing was left waiting: the mount unmounts and the daemon ends.
    drop(served);
}

#[test]
fn lock_waiters_over_dev_fuse_one_worker() {
    all_scenarios(&["--transport", "dev", "--num-threads", "1"]);
}

#[test]
fn lock_waiters_over_dev_fuse_two_workers() {
    all_scenarios(&["--transport", "dev", "--num-threads", "2"]);
}

#[test]
fn lock_waiters_over_io_uring_depth_one() {
    let _ring = RingEnabled::hold();
    all_scenarios(&["--transport", "uring", "--queue-depth", "1"]);
}

#[test]
fn lock_waiters_over_io_uring_depth_two() {
    let _ring = RingEnabled::hold();
    all_scenarios(&["--transport", "uring", "--queue-depth", "2"]);
}
