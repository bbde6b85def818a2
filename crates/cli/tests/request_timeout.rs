//! Request timeouts (`-o request_timeout=SECS`, FUSE_REQUEST_TIMEOUT): a
//! request the daemon leaves unanswered fails once the kernel's timeout
//! check finds it, instead of hanging its caller, and the kernel aborts
//! the whole connection. A blocking lock wait is such a request too.
//!
//! Linux 6.18 raises any timeout below 15 s to 15 s and checks every 15 s
//! (FUSE_TIMEOUT_TIMER_FREQ), so a request stuck from the start fails 15 to
//! 30 s later; the bounds below allow that plus scheduling slack.
//!
//! The daemons serve over /dev/fuse whatever `enable_uring` says: over
//! io_uring, 6.18 hands a request to a stopped daemon through task work of
//! the stopped thread, and neither the timeout nor an abort frees its
//! caller until the daemon runs again (see the README).

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno as E;
use support::*;

/// What the tests ask for; below the kernel's 15 s floor on purpose, so
/// that the floor shows in what is measured.
const ASKED: Duration = Duration::from_secs(5);
/// The latest a stuck request may fail: the 15 s floor, one 15 s check
/// period, and slack for a loaded 2-CPU machine.
const LATEST: Duration = Duration::from_secs(35);
/// How long a child may take before the test gives up on it (and kills it).
const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// The daemon's FUSE connection in /sys/fs/fuse/connections.
fn connection_dir(mnt: &Path) -> PathBuf {
    let (_, minor) = fastfuse::mount_device(mnt)
        .unwrap()
        .expect("nothing mounted");
    let dir = PathBuf::from(format!("/sys/fs/fuse/connections/{minor}"));
    assert!(dir.join("abort").exists(), "{} is missing", dir.display());
    dir
}

/// Aborts the daemon's connection when the test fails, so that nothing
/// stays waiting on a daemon that may be wedged.
struct AbortIfFailed(PathBuf);

impl Drop for AbortIfFailed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The connection may already be gone (aborted and unmounted).
            let _ = std::fs::write(self.0.join("abort"), "1");
        }
    }
}

/// The daemon stopped with SIGSTOP; resumed when dropped.
struct Stopped {
    pid: libc::pid_t,
    resumed: bool,
}

impl Stopped {
    fn new(pid: u32) -> Stopped {
        stop_child(pid);
        Stopped {
            pid: libc::pid_t::try_from(pid).unwrap(),
            resumed: false,
        }
    }

    fn resume(&mut self) {
        if !self.resumed {
            // SAFETY: kill(2) of the daemon this test started, by its pid.
            unsafe { libc::kill(self.pid, libc::SIGCONT) };
            self.resumed = true;
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.resume();
    }
}

/// Runs `call` in a child and returns its result and how long it took;
/// fails the test if the child was still running after [`CHILD_LIMIT`],
/// after aborting `connection` and resuming `daemon`, either of which the
/// child may be waiting on.
fn timed(
    what: &str,
    connection: &Path,
    daemon: u32,
    call: impl FnOnce() -> Result<(), E>,
) -> (Result<(), E>, Duration) {
    let start = Instant::now();
    let abort = || {
        let _ = std::fs::write(connection.join("abort"), "1");
        // SAFETY: kill(2) of the daemon this test started, by its pid.
        unsafe { libc::kill(libc::pid_t::try_from(daemon).unwrap(), libc::SIGCONT) };
    };
    let r = in_child(CHILD_LIMIT, abort, call)
        .unwrap_or_else(|| panic!("{what} still hung after {CHILD_LIMIT:?}; the child was killed"));
    let took = start.elapsed();
    eprintln!("{what}: {r:?} after {took:.2?}");
    (r, took)
}

/// A daemon over /dev/fuse with `request_timeout=5`, serving a source that
/// holds `files` (one byte each), and its connection. The guards, which
/// go before the daemon, abort the connection if the test fails and end
/// the daemon (by pid) if it hangs past 150 s.
fn start_timed(what: &'static str, files: &[&str]) -> (Served, PathBuf, (Watchdog, AbortIfFailed)) {
    let served = Served::start(&["--transport", "dev", "-o", "request_timeout=5"]);
    for name in files {
        std::fs::write(served.src().join(name), b"x").unwrap();
    }
    let connection = connection_dir(served.mnt());
    let abort = AbortIfFailed(connection.clone());
    let watchdog = Watchdog::start(
        Duration::from_secs(150),
        what,
        served.pid(),
        &[served.mnt(), served.source.path()],
    );
    (served, connection, (watchdog, abort))
}

/// A stat through the mount of a stopped daemon fails with ECONNABORTED
/// within the kernel's timeout granularity; the connection is then
/// aborted (the next call fails at once with ENOTCONN although the daemon
/// was not resumed), and the daemon, once resumed, ends by itself.
#[test]
fn a_stuck_daemon_fails_requests_and_loses_its_connection() {
    let (mut served, connection, _guards) =
        start_timed("request_timeout test", &["never-looked-up", "other"]);
    let mnt = served.mnt().to_path_buf();
    // The mount answers before it is stopped.
    std::fs::metadata(mnt.join("other")).unwrap();

    let mut stopped = Stopped::new(served.pid());
    // A name never looked up, so the kernel cannot answer from its cache.
    let path = c(mnt.join("never-looked-up"));
    let (r, took) = timed(
        "stat through the stopped daemon",
        &connection,
        served.pid(),
        || rustix::fs::stat(path.as_c_str()).map(drop),
    );
    assert_eq!(r, Err(E::CONNABORTED), "the stuck LOOKUP must fail");
    assert!(
        took >= ASKED,
        "failed after {took:?}, before the {ASKED:?} asked for"
    );
    assert!(took <= LATEST, "failed only after {took:?}");

    // The daemon is still stopped: an immediate ENOTCONN shows that the
    // connection is gone, not that another request timed out.
    let path = c(mnt.join("other-name"));
    let (r, took) = timed("stat after the timeout", &connection, served.pid(), || {
        rustix::fs::stat(path.as_c_str()).map(drop)
    });
    assert_eq!(r, Err(E::NOTCONN));
    assert!(
        took < ASKED,
        "took {took:?}: the connection was not aborted"
    );

    // Resumed, the daemon finds its connection aborted and ends; stop()
    // fails the test if it does not exit once unmounted.
    stopped.resume();
    let status = served.stop();
    eprintln!("daemon after the abort: {status}");
    assert!(!is_mounted(&mnt));
}

/// A blocking lock wait that outlasts the timeout counts as a stuck
/// request: the kernel fails the waiter with ECONNABORTED and aborts the
/// connection for every other caller too.
#[test]
fn a_lock_wait_longer_than_the_timeout_aborts_the_connection() {
    let (mut served, connection, _guards) =
        start_timed("request_timeout lock test", &["locked", "other"]);
    let mnt = served.mnt().to_path_buf();
    // Taken on the source, behind the daemon's back, so that the daemon's
    // flock(2) for the caller below blocks. Declared after `served` so
    // that it is released first, also on failure: the daemon's lock
    // waiter thread waits in flock(2) until then.
    let holder = std::fs::File::open(served.src().join("locked")).unwrap();
    rustix::fs::flock(&holder, FlockOperation::LockExclusive).unwrap();

    let path = c(mnt.join("locked"));
    let (r, took) = timed("flock through the mount", &connection, served.pid(), || {
        let fd = rustix::fs::open(path.as_c_str(), OFlags::RDONLY, Mode::empty())?;
        rustix::fs::flock(&fd, FlockOperation::LockExclusive)
    });
    assert_eq!(r, Err(E::CONNABORTED), "the lock wait must be aborted");
    assert!(took >= ASKED, "aborted after {took:?}");
    assert!(took <= LATEST, "aborted only after {took:?}");

    // Not only the lock: the whole mount is gone.
    let other = c(mnt.join("other"));
    let (r, _) = timed("stat after the abort", &connection, served.pid(), || {
        rustix::fs::stat(other.as_c_str()).map(drop)
    });
    assert_eq!(r, Err(E::NOTCONN));

    drop(holder);
    let status = served.stop();
    eprintln!("daemon after the abort: {status}");
}
