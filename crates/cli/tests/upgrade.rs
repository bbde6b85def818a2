//! Live upgrade (`fastfuse upgrade MNT`): the mount is handed to a new
//! daemon process without unmounting, under load. fio writes and verifies
//! (crc32c), tar extracts a tree, a shell works in a directory inside the
//! mount, and a probe times every request, while the daemon is upgraded
//! three times; a POSIX lock held across the upgrades stays held, open
//! descriptors keep working, and a binary that cannot read the state is
//! refused with the mount still served.
//!
//! The daemon changes pid at each upgrade: the test follows it through
//! `--pid-file`, and is made a child subreaper so that successors (whose
//! parent, the old daemon, exits) are reparented here and reaped by pid.

mod common;
mod support;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    assert_same_as_usr_include, fastfuse_bin, fio_verify, is_mounted, mountpoint, op_count,
    spawn_reporting, stats, tarball, unmount_or_detach, Tmpfs,
};
use rustix::process::{Pid, WaitOptions};
use support::{lock_seen_by_another, posix_lock, wait_for};

/// A daemon the test started, followed across upgrades by its pid file.
struct Daemon {
    _source: Tmpfs,
    src: PathBuf,
    mnt: tempfile::TempDir,
    state: tempfile::TempDir,
    first: Option<Child>,
}

impl Daemon {
    fn start(args: &[&str]) -> Daemon {
        Daemon::start_with_env(args, &[])
    }

    /// Starts a daemon with `env` set; its successors inherit it.
    fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        // Successors outlive their parent (the old daemon): they become
        // this process's children, so that they are reaped here.
        rustix::process::set_child_subreaper(Some(rustix::process::getpid())).unwrap();
        let source = Tmpfs::new("3g");
        let src = source.path().to_path_buf();
        let mnt = mountpoint();
        let state = tempfile::tempdir().unwrap();
        // Over /dev/fuse whatever enable_uring says, unless told.
        let transport: &[&str] = if args.contains(&"--transport") {
            &[]
        } else {
            &["--transport", "dev"]
        };
        let (child, ready) = spawn_reporting(
            Command::new(fastfuse_bin())
                .args(transport)
                .args(args)
                .arg("--foreground")
                .arg("--pid-file")
                .arg(state.path().join("pid"))
                .arg(&src)
                .arg(mnt.path())
                .envs(env.iter().copied())
                .stdin(Stdio::null()),
        );
        let mut d = Daemon {
            _source: source,
            src,
            mnt,
            state,
            first: Some(child),
        };
        let report = ready.wait();
        if !report.as_deref().is_ok_and(|r| r.starts_with("ok")) {
            let status = d.first.as_mut().unwrap().try_wait().unwrap();
            panic!("fastfuse did not mount (exit: {status:?}): {report:?}");
        }
        assert!(is_mounted(d.mnt()) && d.pid_file().is_some());
        d
    }

    fn mnt(&self) -> &Path {
        self.mnt.path()
    }

    fn pid_file(&self) -> Option<u32> {
        std::fs::read_to_string(self.state.path().join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Reads the pid file from another thread (the watchdog's).
    fn pid_reader(&self) -> impl Fn() -> Option<u32> + Send + 'static {
        let path = self.state.path().join("pid");
        move || std::fs::read_to_string(&path).ok()?.trim().parse().ok()
    }

    /// The pid serving now.
    fn pid(&self) -> u32 {
        self.pid_file().expect("no pid file")
    }

    /// `fastfuse upgrade MNT [--binary B]`: its exit status and output.
    fn upgrade(&mut self, binary: Option<&Path>) -> (bool, String) {
        let mut cmd = Command::new(fastfuse_bin());
        cmd.arg("upgrade").arg(self.mnt());
        if let Some(b) = binary {
            cmd.arg("--binary").arg(b);
        }
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The first daemon, our own child, exits once it has handed over.
        if out.status.success() {
            if let Some(mut c) = self.first.take() {
                let status = c.wait().unwrap();
                assert!(status.success(), "the old daemon exited {status}");
            }
        }
        (out.status.success(), text)
    }

    /// Reaps a successor that has exited (it is our child by subreaping).
    fn reap(pid: u32, limit: Duration) -> bool {
        let pid = Pid::from_raw(pid as i32).unwrap();
        wait_for(limit, || {
            matches!(
                rustix::process::waitpid(Some(pid), WaitOptions::NOHANG),
                Ok(Some(_)) | Err(_)
            )
        })
    }

    /// Unmounts and waits for the serving daemon to exit by itself.
    fn stop(&mut self) {
        let pid = self.pid();
        assert!(unmount_or_detach(self.mnt()), "umount failed");
        if let Some(mut c) = self.first.take() {
            assert!(c.wait().unwrap().success());
        } else {
            assert!(
                Daemon::reap(pid, Duration::from_secs(20)),
                "the daemon (pid {pid}) did not exit after unmount"
            );
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !is_mounted(self.mnt()) && self.first.is_none() {
            return;
        }
        let _ = Command::new("umount").arg("-l").arg(self.mnt()).status();
        if let Some(pid) = self.pid_file() {
            // SAFETY: kill(2) of the daemon this test started (its pid
            // file names it); SIGKILL aborts the connection if it wedged.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            Daemon::reap(pid, Duration::from_secs(5));
        }
        if let Some(mut c) = self.first.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A probe that took longer than this is kept, with when it began.
const SLOW: Duration = Duration::from_millis(1);

/// Times a request the daemon must answer (a LOOKUP of a name never
/// asked before) over and over until told to stop: how many were
/// answered, and when each slow one began and how long it took.
struct Probe {
    stop: Arc<AtomicBool>,
    slow: Arc<std::sync::Mutex<Vec<(Instant, Duration)>>>,
    answered: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Probe {
    fn start(dir: &Path) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let slow = Arc::new(std::sync::Mutex::new(Vec::new()));
        let answered = Arc::new(AtomicU64::new(0));
        let (s, l, a, dir) = (
            stop.clone(),
            slow.clone(),
            answered.clone(),
            dir.to_path_buf(),
        );
        let thread = std::thread::spawn(move || {
            let mut i = 0u64;
            while !s.load(Ordering::Acquire) {
                i += 1;
                let t = Instant::now();
                let r = std::fs::symlink_metadata(dir.join(format!("probe-{i}")));
                let took = t.elapsed();
                assert!(
                    matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::NotFound),
                    "probe {i}: {r:?}"
                );
                if took > SLOW {
                    l.lock().unwrap().push((t, took));
                }
                a.fetch_add(1, Ordering::Release);
            }
        });
        Probe {
            stop,
            slow,
            answered,
            thread: Some(thread),
        }
    }

    fn answered(&self) -> u64 {
        self.answered.load(Ordering::Acquire)
    }

    /// Stops; the longest wait (ms) of a probe that overlapped one of
    /// `windows`, and of one that did not.
    fn finish(mut self, windows: &[(Instant, Instant)]) -> (f64, f64) {
        self.stop.store(true, Ordering::Release);
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("the probe failed");
        let (mut during, mut outside) = (Duration::ZERO, Duration::ZERO);
        for &(t, took) in self.slow.lock().unwrap().iter() {
            let overlaps = windows.iter().any(|&(a, b)| t < b && t + took > a);
            let longest = if overlaps { &mut during } else { &mut outside };
            *longest = (*longest).max(took);
        }
        (during.as_secs_f64() * 1e3, outside.as_secs_f64() * 1e3)
    }
}

#[test]
fn three_upgrades_under_load_lose_nothing() {
    upgrades_under_load(&["-o", "writeback"]);
}

/// The same over io_uring: the ring entries themselves are handed over.
#[test]
fn three_upgrades_of_an_io_uring_mount_under_load_lose_nothing() {
    let _ring = common::RingEnabled::hold();
    upgrades_under_load(&["--transport", "uring", "-o", "writeback"]);
}

/// Three upgrades of a daemon started with `args` while fio, tar, a shell
/// and a probe use the mount.
fn upgrades_under_load(args: &[&str]) {
    let uring = args.contains(&"uring");
    let mut d = Daemon::start(args);
    let _dog = support::Watchdog::following(
        Duration::from_secs(240),
        "three_upgrades_under_load",
        d.pid_reader(),
        &[d.mnt()],
    );
    let work = tempfile::tempdir().unwrap();
    let tar = tarball(work.path());
    let mnt = d.mnt().to_path_buf();
    for dir in ["fio", "untar", "cwd", "probe"] {
        std::fs::create_dir(mnt.join(dir)).unwrap();
    }

    // Held across every upgrade; seen from another process after each.
    let locked = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(mnt.join("locked"))
        .unwrap();
    posix_lock(locked.as_raw_fd());
    let me = std::process::id();
    assert!(lock_seen_by_another(&mnt.join("locked"), me));
    // An open file written before and after each upgrade through one fd.
    let mut kept = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(mnt.join("kept"))
        .unwrap();

    let mut fio = fio_verify(&mnt.join("fio"), work.path(), true);
    // Twice over, one after the other, so that it outlasts the upgrades.
    let mut untar = Command::new("sh")
        .arg("-c")
        .arg("set -e; for n in 1 2; do mkdir \"$2/$n\"; tar -xf \"$1\" -C \"$2/$n\"; done")
        .arg("sh")
        .arg(&tar)
        .arg(mnt.join("untar"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let shell = Command::new("sh")
        .arg("-c")
        .arg(
            "i=0; while [ ! -e stop ]; do i=$((i+1)); echo $i > f; read x < f; \
             [ \"$x\" = \"$i\" ] || exit 3; done; echo $i",
        )
        .current_dir(mnt.join("cwd"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let probe = Probe::start(&mnt.join("probe"));

    let by_uring = |mnt: &Path| stats(mnt)["requests_by_transport"]["uring"].as_u64();
    let mut pauses = Vec::new();
    let mut windows = Vec::new();
    for round in 0..3u8 {
        // Each upgrade comes while the load is under way.
        let seen = probe.answered();
        assert!(
            wait_for(Duration::from_secs(20), || probe.answered() > seen + 50),
            "the probe made no progress before upgrade {round}"
        );
        assert!(
            fio.try_wait().unwrap().is_none() && untar.try_wait().unwrap().is_none(),
            "fio or tar ended before upgrade {round}: the load must outlast the upgrades"
        );
        std::io::Write::write_all(&mut kept, &[b'a' + round; 4096]).unwrap();
        let old = d.pid();
        let began = Instant::now();
        let (ok, text) = d.upgrade(Some(Path::new(fastfuse_bin())));
        windows.push((began, Instant::now()));
        assert!(ok, "upgrade {round} failed: {text}");
        let new = d.pid();
        assert_ne!(old, new, "the pid file names a new daemon: {text}");
        assert!(
            Daemon::reap(old, Duration::from_secs(20)) || round == 0,
            "the old daemon {old} did not exit"
        );
        let ms: f64 = text
            .split("paused ")
            .nth(1)
            .and_then(|t| t.split(' ').next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no pause in {text:?}"));
        pauses.push(ms);
        assert!(
            lock_seen_by_another(&mnt.join("locked"), me),
            "the POSIX lock went with upgrade {round}"
        );
        if uring {
            // The successor serves through the rings it took over.
            let before = by_uring(&mnt);
            std::fs::metadata(mnt.join("kept")).unwrap();
            std::fs::write(mnt.join("probe/ring"), b"x").unwrap();
            assert!(
                by_uring(&mnt) > before,
                "no request went through io_uring after upgrade {round}"
            );
        }
        std::io::Write::write_all(&mut kept, &[b'A' + round; 4096]).unwrap();
    }

    let fio_out = fio.wait_with_output().unwrap();
    assert!(
        fio_out.status.success(),
        "fio failed: {}\n{}",
        String::from_utf8_lossy(&fio_out.stdout),
        String::from_utf8_lossy(&fio_out.stderr)
    );
    let tar_out = untar.wait_with_output().unwrap();
    assert!(
        tar_out.status.success(),
        "tar failed: {}",
        String::from_utf8_lossy(&tar_out.stderr)
    );
    std::fs::write(mnt.join("cwd/stop"), b"").unwrap();
    let sh_out = shell.wait_with_output().unwrap();
    assert!(sh_out.status.success(), "the shell in the mount failed");
    let (during, outside) = probe.finish(&windows);

    // Each tree equals the source it was packed from.
    for n in ["1", "2"] {
        assert_same_as_usr_include(&mnt.join("untar").join(n).join("include"), n);
    }
    // What went through the kept descriptor, in order.
    let mut want = Vec::new();
    for round in 0..3u8 {
        want.extend([b'a' + round; 4096]);
        want.extend([b'A' + round; 4096]);
    }
    kept.sync_all().unwrap();
    drop(kept);
    assert_eq!(std::fs::read(mnt.join("kept")).unwrap(), want);
    assert_eq!(std::fs::read(d.src.join("kept")).unwrap(), want);

    // The statistics went on and counted the hand-overs.
    let snap = stats(&mnt);
    let handovers = snap["handovers"].as_array().unwrap();
    assert_eq!(handovers.len(), 3, "{snap}");
    assert!(snap["ops"]["WRITE"]["count"].as_u64().unwrap() > 0);

    println!(
        "{args:?}: upgrade pauses (ms, as the daemon measured them): {pauses:?}; longest LOOKUP \
         seen by the probe: {during:.1} ms during an upgrade, {outside:.1} ms outside"
    );
    drop(locked);
    d.stop();
}

#[test]
fn a_binary_that_cannot_read_the_state_is_refused_and_the_mount_serves_on() {
    let mut d = Daemon::start(&[]);
    let _dog = support::Watchdog::start(
        Duration::from_secs(60),
        "refused upgrade",
        d.pid(),
        &[d.mnt()],
    );
    let mnt = d.mnt().to_path_buf();
    std::fs::write(mnt.join("before"), b"1").unwrap();
    let mut open = std::fs::File::options()
        .append(true)
        .open(mnt.join("before"))
        .unwrap();
    // A "new binary" that reads another state version. Written by another
    // process: a child another test forks meanwhile would hold a copy of
    // this process's descriptor open for writing, and exec would then fail
    // with ETXTBSY.
    let bin = d.state.path().join("newer");
    let script = format!(
        "#!/bin/sh\nFASTFUSE_STATE_VERSION=999 exec {} \"$@\"\n",
        fastfuse_bin()
    );
    let status = Command::new("sh")
        .arg("-c")
        .arg("printf '%s' \"$1\" > \"$2\" && chmod 755 \"$2\"")
        .arg("sh")
        .arg(&script)
        .arg(&bin)
        .status()
        .unwrap();
    assert!(status.success());
    let old = d.pid();
    let (ok, text) = d.upgrade(Some(&bin));
    assert!(!ok, "the upgrade should be refused: {text}");
    assert!(
        text.contains("state version") && text.contains("999"),
        "the refusal names the versions: {text}"
    );
    assert_eq!(d.pid(), old, "the old daemon serves on");
    std::io::Write::write_all(&mut open, b"2").unwrap();
    std::fs::write(mnt.join("after"), b"3").unwrap();
    assert_eq!(std::fs::read(mnt.join("before")).unwrap(), b"12");
    assert_eq!(std::fs::read(mnt.join("after")).unwrap(), b"3");
    drop(open);
    d.stop();
}

/// How many `op` requests the daemon serving `mnt` has answered.
#[test]
fn an_upgrade_is_refused_while_a_lock_wait_is_pending_and_goes_through_after() {
    refused_while_a_lock_wait_is_pending(&[]);
}

#[test]
fn an_io_uring_upgrade_is_refused_while_a_lock_wait_is_pending_and_goes_through_after() {
    let _ring = common::RingEnabled::hold();
    refused_while_a_lock_wait_is_pending(&["--transport", "uring"]);
}

fn refused_while_a_lock_wait_is_pending(args: &[&str]) {
    let mut d = Daemon::start(args);
    let _dog = support::Watchdog::following(
        Duration::from_secs(60),
        "upgrade with a lock wait",
        d.pid_reader(),
        &[d.mnt()],
    );
    let path = d.mnt().join("contended");
    let held = std::fs::File::create(&path).unwrap();
    posix_lock(held.as_raw_fd());
    // Another process blocks for the lock: its SETLKW waits in the daemon,
    // off the workers, with a reply only this daemon can send.
    let waiter = support::fork_lock_waiter(&path);
    assert!(
        wait_for(Duration::from_secs(20), || op_count(d.mnt(), "SETLKW") >= 1),
        "the waiter's SETLKW never reached the daemon"
    );
    let old = d.pid();
    let (ok, text) = d.upgrade(Some(Path::new(fastfuse_bin())));
    assert!(
        !ok,
        "an upgrade with a lock wait pending went through: {text}"
    );
    assert!(text.contains("lock"), "the refusal says why: {text}");
    assert_eq!(d.pid(), old, "the old daemon serves on");
    // The wait is still this daemon's to answer: the unlock grants it.
    drop(held);
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    unsafe { libc::waitpid(waiter, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the waiter did not get the lock"
    );
    let (ok, text) = d.upgrade(Some(Path::new(fastfuse_bin())));
    assert!(ok, "the upgrade after the wait failed: {text}");
    assert_ne!(d.pid(), old);
    std::fs::write(d.mnt().join("after"), b"served").unwrap();
    assert_eq!(std::fs::read(d.mnt().join("after")).unwrap(), b"served");
    d.stop();
}

/// In each mode, what a program holds open carries over: a file written
/// through one descriptor (with kernel passthrough, its backing file), a
/// directory listing read half before the upgrades and half after (every
/// name once), and a shared memory map written before and after.
#[test]
fn open_files_and_half_read_listings_carry_over_in_every_mode() {
    let _ring = common::RingEnabled::hold();
    let uring: &[&str] = &["--transport", "uring", "-o", "writeback"];
    for args in support::MODES.into_iter().chain([uring]) {
        let mut d = Daemon::start(args);
        let _dog = support::Watchdog::following(
            Duration::from_secs(60),
            "upgrade modes",
            d.pid_reader(),
            &[d.mnt()],
        );
        let held = support::HeldOpen::open(d.mnt());
        for round in 0..2 {
            let (ok, text) = d.upgrade(Some(Path::new(fastfuse_bin())));
            assert!(ok, "{args:?}: upgrade {round} failed: {text}");
        }
        held.check(&d.src, &format!("{args:?}"));
        d.stop();
    }
}

/// A successor that fails once it has the state (here told to, by
/// `FASTFUSE_FAIL_TAKE_OVER`, which the old daemon passes on): the old
/// daemon serves again, over io_uring through the entries its drain kept,
/// and what was open carries on. Twice over each transport.
#[test]
fn a_failed_take_over_leaves_the_old_daemon_serving() {
    let _ring = common::RingEnabled::hold();
    for args in [
        &["-o", "writeback"][..],
        &["--transport", "uring", "-o", "writeback"],
    ] {
        let mut d = Daemon::start_with_env(args, &[("FASTFUSE_FAIL_TAKE_OVER", "1")]);
        let _dog = support::Watchdog::following(
            Duration::from_secs(60),
            "failed take-over",
            d.pid_reader(),
            &[d.mnt()],
        );
        let mnt = d.mnt().to_path_buf();
        let transport = if args.contains(&"uring") {
            "uring"
        } else {
            "dev"
        };
        let served = |mnt: &Path| stats(mnt)["requests_by_transport"][transport].as_u64();
        let mut open = std::fs::File::options()
            .create(true)
            .append(true)
            .open(mnt.join("kept"))
            .unwrap();
        let old = d.pid();
        for round in 0..2u8 {
            std::io::Write::write_all(&mut open, &[b'a' + round]).unwrap();
            let (ok, text) = d.upgrade(Some(Path::new(fastfuse_bin())));
            assert!(!ok, "{args:?}: the take-over should fail: {text}");
            assert!(text.contains("FASTFUSE_FAIL_TAKE_OVER"), "{args:?}: {text}");
            assert_eq!(d.pid(), old, "{args:?}: the old daemon serves on");
            let before = served(&mnt);
            std::io::Write::write_all(&mut open, &[b'A' + round]).unwrap();
            std::fs::write(mnt.join(format!("after{round}")), b"served").unwrap();
            assert_eq!(
                std::fs::read(mnt.join(format!("after{round}"))).unwrap(),
                b"served"
            );
            assert!(
                served(&mnt) > before,
                "{args:?}: no request went through {transport} after failed take-over {round}"
            );
        }
        open.sync_all().unwrap();
        assert_eq!(std::fs::read(mnt.join("kept")).unwrap(), b"aAbB");
        assert_eq!(std::fs::read(d.src.join("kept")).unwrap(), b"aAbB");
        drop(open);
        d.stop();
    }
}
