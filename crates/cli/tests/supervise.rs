//! Crash survival (`--supervise`), end to end: the server is killed with
//! SIGKILL under load, and the mount must answer again, with the files
//! opened before the kill still readable and writable through their old
//! descriptors, and with exactly the losses the README lists (requests
//! the dead server had read fail with ECONNABORTED once; POSIX locks are
//! gone).
#![allow(unsafe_code)]

mod common;
mod support;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    assert_same_as_usr_include, fastfuse_bin, fio_verify, is_mounted, mountpoint, op_count,
    spawn_reporting, stats, tarball, unmount_or_detach, wait_exit, Tmpfs,
};
use support::{lock_seen_by_another, posix_lock, wait_for};

/// A supervised mount: the supervisor is this test's child; the server is
/// the supervisor's.
struct Supervised {
    _source: Tmpfs,
    src: PathBuf,
    mnt: tempfile::TempDir,
    state: tempfile::TempDir,
    supervisor: Option<Child>,
    /// Restarts the stats listed when last asked.
    restarts: usize,
}

impl Supervised {
    fn start(args: &[&str]) -> Supervised {
        let source = Tmpfs::new("3g");
        let src = source.path().to_path_buf();
        let mnt = mountpoint();
        let state = tempfile::tempdir().unwrap();
        let (child, ready) = spawn_reporting(
            Command::new(fastfuse_bin())
                .arg("--supervise")
                .args(args)
                .arg("--foreground")
                .arg("--pid-file")
                .arg(state.path().join("pid"))
                .arg(&src)
                .arg(mnt.path())
                .stdin(Stdio::null()),
        );
        let mut s = Supervised {
            _source: source,
            src,
            mnt,
            state,
            supervisor: Some(child),
            restarts: 0,
        };
        let report = ready.wait();
        if !report.as_deref().is_ok_and(|r| r.starts_with("ok")) {
            let status = s.supervisor.as_mut().unwrap().try_wait().unwrap();
            panic!("fastfuse --supervise did not mount (exit: {status:?}): {report:?}");
        }
        assert!(is_mounted(s.mnt()));
        assert_eq!(
            std::fs::read_to_string(s.state.path().join("pid"))
                .unwrap()
                .trim(),
            s.supervisor_pid().to_string(),
            "the pid file names the supervisor"
        );
        s
    }

    fn mnt(&self) -> &Path {
        self.mnt.path()
    }

    fn supervisor_pid(&self) -> u32 {
        self.supervisor.as_ref().unwrap().id()
    }

    /// The server serving now (the supervisor's one child), if any.
    fn server(&self) -> Option<u32> {
        server_of(self.supervisor_pid())
    }

    /// SIGKILLs the server; returns its pid and when.
    fn kill_server(&self) -> (u32, Instant) {
        let pid = self.server().expect("no server runs");
        let at = Instant::now();
        kill(pid, libc::SIGKILL);
        (pid, at)
    }

    /// Waits for a server other than `old` to serve: the stats list one
    /// restart more than before (a server killed before it served is
    /// replaced again, and does not count).
    fn next_server(&mut self, old: u32) -> u32 {
        let want = self.restarts + 1;
        let mut new = None;
        assert!(
            wait_for(Duration::from_secs(20), || {
                new = self.server().filter(|&p| p != old);
                new.is_some() && restarts(self.mnt()).len() >= want
            }),
            "no new server replaced {old}"
        );
        self.restarts = want;
        new.unwrap()
    }

    /// Unmounts and waits for the supervisor to exit by itself.
    fn stop(&mut self) -> std::process::ExitStatus {
        assert!(unmount_or_detach(self.mnt()), "umount failed");
        let mut child = self.supervisor.take().unwrap();
        if let Some(status) = wait_exit(&mut child, Duration::from_secs(20)) {
            return status;
        }
        if let Some(server) = server_of(child.id()) {
            kill(server, libc::SIGKILL);
        }
        let _ = child.kill();
        panic!("the supervisor did not exit after unmount");
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Some(mut child) = self.supervisor.take() {
            // The supervisor first, so that it starts no other server.
            let server = server_of(child.id());
            let _ = child.kill();
            let _ = child.wait();
            if let Some(server) = server {
                kill(server, libc::SIGKILL);
            }
        }
        // Also when a test took the supervisor to stop it and failed
        // before seeing the mount go: its daemons are gone by then, and
        // the mount would outlive the test.
        if is_mounted(self.mnt()) {
            let _ = Command::new("umount").arg("-l").arg(self.mnt()).status();
        }
    }
}

/// The one child of `pid` (its main thread's), from /proc.
fn server_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn kill(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) of a process this test started (the supervisor) or
    // its child (the server), by pid.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

fn restarts(mnt: &Path) -> Vec<f64> {
    stats(mnt)["handovers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|h| h["kind"] == "restart")
                .filter_map(|h| h["pause_ms"].as_f64())
                .collect()
        })
        .unwrap_or_default()
}

/// When each probe ended, and its errno if it failed.
type ProbeLog = Vec<(Instant, Option<i32>)>;

/// Creates, writes, reads back and removes small files in `dir` over and
/// over, recording when each failure happened and with what errno, and
/// when each success did.
struct Prober {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<ProbeLog>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    fn start(dir: &Path) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s, l, dir) = (stop.clone(), log.clone(), dir.to_path_buf());
        let thread = std::thread::spawn(move || {
            let mut i = 0u64;
            while !s.load(Ordering::Acquire) {
                i += 1;
                let path = dir.join(format!("p{i}"));
                let body = format!("probe {i}");
                let r = std::fs::write(&path, &body)
                    .and_then(|()| std::fs::read_to_string(&path))
                    .and_then(|got| {
                        assert_eq!(got, body, "probe {i} read back something else");
                        std::fs::remove_file(&path)
                    });
                let at = Instant::now();
                l.lock()
                    .unwrap()
                    .push((at, r.err().map(|e| e.raw_os_error().unwrap_or(-1))));
            }
        });
        Prober {
            stop,
            log,
            thread: Some(thread),
        }
    }

    fn successes(&self) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| e.is_none())
            .count()
    }

    /// The first success after `t`.
    fn first_success_after(&self, t: Instant) -> Option<Instant> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .find(|(at, e)| *at > t && e.is_none())
            .map(|(at, _)| *at)
    }

    fn finish(mut self) -> ProbeLog {
        self.stop.store(true, Ordering::Release);
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("the prober failed");
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

#[test]
fn a_killed_server_is_replaced_and_open_files_carry_on() {
    let mut s = Supervised::start(&[]);
    let _dog = support::Watchdog::start(
        Duration::from_secs(240),
        "a_killed_server_is_replaced",
        s.supervisor_pid(),
        &[s.mnt()],
    );
    let work = tempfile::tempdir().unwrap();
    let tar = tarball(work.path());
    let mnt = s.mnt().to_path_buf();
    for dir in ["fio", "untar", "cwd", "probe", "deep/a/b/c"] {
        std::fs::create_dir_all(mnt.join(dir)).unwrap();
    }
    std::fs::write(mnt.join("deep/a/b/c/leaf"), b"leaf").unwrap();

    // Open before the kills; used after each.
    let mut kept = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(mnt.join("kept"))
        .unwrap();
    kept.write_all(&[b'a'; 4096]).unwrap();
    kept.sync_all().unwrap();
    let reader = std::fs::File::open(mnt.join("deep/a/b/c/leaf")).unwrap();
    let locked = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(mnt.join("locked"))
        .unwrap();
    posix_lock(locked.as_raw_fd());
    let me = std::process::id();
    assert!(lock_seen_by_another(&mnt.join("locked"), me));

    // The load: fio writing and verifying, two untars one after the other
    // (each node holds an O_PATH fd in the server: a third tree would pass
    // this machine's RLIMIT_NOFILE of 20,000), a shell with its cwd
    // inside, and the prober.
    let mut fio = fio_verify(&mnt.join("fio"), work.path(), false);
    let mut untar = Command::new("sh")
        .arg("-c")
        .arg("for n in 1 2; do mkdir \"$2/$n\" && tar -xf \"$1\" -C \"$2/$n\" || echo \"tar $n failed\" >&2; done")
        .arg("sh")
        .arg(&tar)
        .arg(mnt.join("untar"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let shell = Command::new("sh")
        .arg("-c")
        .arg(
            "i=0; bad=0; while [ ! -e stop ]; do i=$((i+1)); echo $i > f 2>/dev/null; \
             read x < f 2>/dev/null; [ \"$x\" = \"$i\" ] || bad=$((bad+1)); done; \
             echo last > f && read x < f && [ \"$x\" = last ] || exit 3; echo $i $bad",
        )
        .current_dir(mnt.join("cwd"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let prober = Prober::start(&mnt.join("probe"));

    let mut answered_after = Vec::new();
    let mut kills = Vec::new();
    for round in 0..2u8 {
        let seen = prober.successes();
        assert!(
            wait_for(Duration::from_secs(20), || prober.successes() > seen + 300),
            "the prober made no progress before kill {round}"
        );
        assert!(
            untar.try_wait().unwrap().is_none(),
            "the untars ended before kill {round}: the load must outlast the kills"
        );
        if round == 0 {
            assert!(
                fio.try_wait().unwrap().is_none(),
                "fio ended before the first kill: the load must be under way"
            );
        }
        let (old, at) = s.kill_server();
        kills.push(at);
        let new = s.next_server(old);
        assert_ne!(new, old);
        // The mount answers again: the prober's next success.
        assert!(
            wait_for(Duration::from_secs(20), || prober
                .first_success_after(at)
                .is_some()),
            "the mount did not answer again after kill {round}"
        );
        let back = prober.first_success_after(at).unwrap() - at;
        answered_after.push(back.as_secs_f64() * 1e3);
        assert!(
            back < Duration::from_secs(5),
            "the mount took {back:?} to answer after kill {round}"
        );

        // Files opened before the kill: read and written through their
        // old descriptors.
        let mut got = vec![0u8; 4096];
        kept.read_exact_at(&mut got, 0).unwrap();
        assert_eq!(got, [b'a'; 4096], "kept file after kill {round}");
        kept.seek(SeekFrom::End(0)).unwrap();
        kept.write_all(&[b'b' + round; 4096]).unwrap();
        kept.sync_all().unwrap();
        let mut leaf = String::new();
        (&reader).seek(SeekFrom::Start(0)).unwrap();
        (&reader).read_to_string(&mut leaf).unwrap();
        assert_eq!(leaf, "leaf");
        assert_eq!(
            std::fs::read(mnt.join("deep/a/b/c/leaf")).unwrap(),
            b"leaf",
            "a deep path looked up before the kill"
        );
        // What the README says a crash loses: the POSIX lock is gone (its
        // open file description died with the server), and it can be
        // taken again.
        assert!(
            !lock_seen_by_another(&mnt.join("locked"), me),
            "a POSIX lock survived kill {round}: the README says it does not"
        );
        posix_lock(locked.as_raw_fd());
        assert!(lock_seen_by_another(&mnt.join("locked"), me));
    }

    let fio_out = fio.wait_with_output().unwrap();
    let untar_out = untar.wait_with_output().unwrap();
    std::fs::write(mnt.join("cwd/stop"), b"").unwrap();
    let shell_out = shell.wait_with_output().unwrap();
    let log = prober.finish();

    // Every failure the load saw is one the README lists, and came between
    // a kill and the mount's next answer.
    let failures: Vec<_> = log.iter().filter(|(_, e)| e.is_some()).collect();
    for (at, e) in &failures {
        assert_eq!(
            *e,
            Some(libc::ECONNABORTED),
            "a probe failed with errno {e:?}, not ECONNABORTED"
        );
        let near_a_kill = kills
            .iter()
            .zip(&answered_after)
            .any(|(&k, &ms)| *at >= k && *at <= k + Duration::from_secs_f64(ms / 1e3 + 0.001));
        assert!(near_a_kill, "a probe failed away from any kill");
    }
    // tar: a request in flight fails with ECONNABORTED; a `utimensat`
    // whose writeback of the file's pages was in flight fails with EIO
    // (the kernel keeps a writeback error as EIO), as the README says.
    let tar_err = String::from_utf8_lossy(&untar_out.stderr);
    for line in tar_err.lines() {
        assert!(
            line.contains("connection abort")
                || line.contains("Cannot utime: Input/output error")
                || line.contains("Exiting with failure status due to previous errors")
                || line.starts_with("tar ") && line.ends_with(" failed"),
            "tar saw another error than the README lists: {line}"
        );
    }
    assert!(shell_out.status.success(), "the shell in the mount failed");
    // fio: verified, or failed only by an aborted request (ECONNABORTED,
    // or EIO from a writeback WRITE the dead server had read), never by
    // data that reads back wrong.
    let fio_said = format!(
        "{}{}",
        String::from_utf8_lossy(&fio_out.stdout),
        String::from_utf8_lossy(&fio_out.stderr)
    );
    for bad in ["verify failed", "bad magic", "bad header", "verify: bad"] {
        assert!(
            !fio_said.contains(bad),
            "fio read back wrong data:\n{fio_said}"
        );
    }
    if !fio_out.status.success() {
        assert!(
            fio_said.contains("Software caused connection abort")
                || fio_said.contains("Input/output error"),
            "fio failed otherwise than by an aborted request:\n{fio_said}"
        );
    }
    let shell_said = String::from_utf8_lossy(&shell_out.stdout);
    println!(
        "answered again after {answered_after:?} ms; probe failures {}; fio {}; shell (iterations, misses) {}; tar: {}",
        failures.len(),
        if fio_out.status.success() { "verified" } else { "failed by an aborted request" },
        shell_said.trim(),
        if tar_err.is_empty() { "no error" } else { tar_err.trim() }
    );

    // Every tree tar finished equals the source.
    for n in ["1", "2"] {
        if tar_err.contains(&format!("tar {n} failed")) {
            continue;
        }
        assert_same_as_usr_include(&mnt.join("untar").join(n).join("include"), n);
    }
    // The kept file holds what went through its descriptor, on the source
    // too.
    let mut want = vec![b'a'; 4096];
    want.extend([b'b'; 4096]);
    want.extend([b'c'; 4096]);
    assert_eq!(std::fs::read(mnt.join("kept")).unwrap(), want);
    assert_eq!(std::fs::read(s.src.join("kept")).unwrap(), want);
    // The stats list both restarts with their pauses.
    let pauses = restarts(&mnt);
    assert_eq!(pauses.len(), 2, "restarts in the stats: {pauses:?}");
    println!("restart pauses (server death to new server serving): {pauses:?} ms");

    drop((kept, reader, locked));
    let status = s.stop();
    assert!(status.success(), "the supervisor exited {status}");
}

/// A request the dead server had read, and not answered, fails once with
/// ECONNABORTED: here a blocking lock wait, which a server holds for as
/// long as the lock is taken. The waiter then waits again and gets it.
#[test]
fn a_request_in_flight_when_the_server_dies_fails_with_econnaborted() {
    let mut s = Supervised::start(&[]);
    let _dog = support::Watchdog::start(
        Duration::from_secs(60),
        "a_request_in_flight",
        s.supervisor_pid(),
        &[s.mnt()],
    );
    let path = s.mnt().join("contended");
    let held = std::fs::File::create(&path).unwrap();
    posix_lock(held.as_raw_fd());
    let waiter = support::fork_lock_waiter(&path);
    assert!(
        wait_for(Duration::from_secs(20), || {
            op_count(s.mnt(), "SETLKW") >= 1
        }),
        "the waiter's SETLKW never reached the server"
    );
    let (old, _) = s.kill_server();
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    unsafe { libc::waitpid(waiter, &mut status, 0) };
    assert!(libc::WIFEXITED(status));
    assert_eq!(
        libc::WEXITSTATUS(status),
        libc::ECONNABORTED,
        "the lock wait the dead server held ended otherwise"
    );
    s.next_server(old);
    // The mount serves; the lock the test held went with the server.
    std::fs::write(s.mnt().join("after"), b"served").unwrap();
    assert_eq!(std::fs::read(s.mnt().join("after")).unwrap(), b"served");
    assert!(!lock_seen_by_another(&path, std::process::id()));
    drop(held);
    let status = s.stop();
    assert!(status.success(), "the supervisor exited {status}");
}

/// SIGTERM to the supervisor ends the mount as SIGTERM to a plain daemon
/// does (flush, unmount, exit 0); an upgrade is refused with a message.
#[test]
fn a_supervised_mount_refuses_upgrades_and_stops_on_sigterm() {
    let mut s = Supervised::start(&[]);
    let _dog = support::Watchdog::start(
        Duration::from_secs(60),
        "a_supervised_mount_stops",
        s.supervisor_pid(),
        &[s.mnt()],
    );
    let out = Command::new(fastfuse_bin())
        .arg("upgrade")
        .arg(s.mnt())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an upgrade of a supervised mount went through"
    );
    assert!(text.contains("--supervise"), "the refusal says why: {text}");
    let mut f = std::fs::File::create(s.mnt().join("dirty")).unwrap();
    f.write_all(&[7u8; 1 << 20]).unwrap();
    drop(f);
    let server = s.server().unwrap();
    kill(s.supervisor_pid(), libc::SIGTERM);
    let mut child = s.supervisor.take().unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the supervisor exited {status} on SIGTERM"
    );
    assert!(!is_mounted(s.mnt()), "SIGTERM left the mount");
    assert!(
        !Path::new(&format!("/proc/{server}")).exists(),
        "the server outlived its supervisor"
    );
    assert_eq!(
        std::fs::read(s.src.join("dirty")).unwrap(),
        vec![7u8; 1 << 20]
    );
}

#[test]
fn supervise_refuses_io_uring_with_a_reason() {
    let out = Command::new(fastfuse_bin())
        .args([
            "--supervise",
            "--transport",
            "uring",
            "--foreground",
            "/tmp",
            "/mnt",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("io_uring"), "{text}");
}

/// The fstab path: what mount(8) runs for a `fuse.fastfuse` line with
/// `supervise` among its options (mount.fuse3, which runs `fastfuse SRC
/// MNT -o OPTIONS` from PATH) mounts supervised: the mount outlives its
/// server.
#[test]
fn mount_fuse3_with_o_supervise_survives_its_server() {
    // The daemonized supervisor becomes this process's child, to be
    // found and reaped here.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).unwrap();
    let source = Tmpfs::new("64m");
    let mnt = mountpoint();
    let bin = Path::new(fastfuse_bin()).parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    /// Ends the supervisor and its server by pid, and the mount.
    struct Cleanup(Option<u32>, PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Some(sup) = self.0 {
                let server = server_of(sup);
                kill(sup, libc::SIGKILL);
                if let Some(server) = server {
                    kill(server, libc::SIGKILL);
                }
                reap(sup);
            }
            let _ = Command::new("umount").arg("-l").arg(&self.1).status();
        }
    }
    let mut cleanup = Cleanup(None, mnt.path().to_path_buf());
    let status = Command::new("mount.fuse3")
        .arg(format!("fastfuse#{}", source.path().display()))
        .arg(mnt.path())
        .args(["-o", "supervise"])
        .env("PATH", path)
        .status()
        .unwrap();
    assert!(status.success(), "mount.fuse3 failed: {status}");
    assert!(is_mounted(mnt.path()));
    // Ours, and the one serving this mountpoint (several tests run at
    // once): told apart by its command line, then known by pid.
    let me = std::process::id();
    let sup = std::fs::read_dir(format!("/proc/{me}/task"))
        .unwrap()
        .map(|t| {
            let t = t.unwrap().path();
            std::fs::read_to_string(t.join("children")).unwrap_or_default()
        })
        .collect::<Vec<String>>()
        .join(" ")
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c).into_owned();
                c.contains(&*mnt.path().to_string_lossy()) && c.contains("supervise")
            })
        })
        .expect("the supervisor is not this test's child");
    cleanup.0 = Some(sup);
    let _dog = support::Watchdog::start(
        Duration::from_secs(60),
        "mount_fuse3_with_o_supervise",
        sup,
        &[mnt.path()],
    );
    let kept = mnt.path().join("kept");
    std::fs::write(&kept, b"before").unwrap();
    let mut open = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&kept)
        .unwrap();
    let old = server_of(sup).expect("no server runs");
    kill(old, libc::SIGKILL);
    assert!(
        wait_for(Duration::from_secs(20), || server_of(sup)
            .is_some_and(|p| p != old)),
        "no new server"
    );
    let mut got = String::new();
    open.read_to_string(&mut got).unwrap();
    assert_eq!(got, "before");
    open.write_all(b", after").unwrap();
    drop(open);
    assert_eq!(std::fs::read(&kept).unwrap(), b"before, after");
    assert_eq!(
        std::fs::read(source.path().join("kept")).unwrap(),
        b"before, after"
    );
    assert!(Command::new("umount")
        .arg(mnt.path())
        .status()
        .unwrap()
        .success());
    let status = reap(sup);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the supervisor exited {status:#x}"
    );
    cleanup.0 = None;
}

/// Waits for our child `pid` and returns its wait status.
fn reap(pid: u32) -> i32 {
    let mut status = 0;
    // SAFETY: waits for a child of this process, by pid; `status` is a
    // valid out-pointer.
    unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
    status
}

/// In each mode, what a program holds open survives two crashes of the
/// server: a file written and read through one descriptor (with kernel
/// passthrough, its backing file), a 2,000-entry listing read 700 entries
/// before and the rest after (every name once), and a shared mapping
/// written before and after, then msync'd.
#[test]
fn open_files_listings_and_mappings_survive_crashes_in_every_mode() {
    for args in support::MODES {
        let mut s = Supervised::start(args);
        let _dog = support::Watchdog::start(
            Duration::from_secs(60),
            "supervised modes",
            s.supervisor_pid(),
            &[s.mnt()],
        );
        let held = support::HeldOpen::open(s.mnt());
        for round in 0..2 {
            let (old, _) = s.kill_server();
            let new = s.next_server(old);
            assert_ne!(new, old, "{args:?}: round {round}");
        }
        held.check(&s.src, &format!("{args:?}"));
        assert_eq!(
            restarts(s.mnt()).len(),
            2,
            "{args:?}: restarts in the stats"
        );
        let status = s.stop();
        assert!(status.success(), "{args:?}: the supervisor exited {status}");
    }
}

/// A server that keeps dying is not restarted forever: a death after 5
/// restarts within a minute makes the supervisor give up, detach its own
/// mount and exit with an error.
#[test]
fn a_crash_loop_ends_with_the_mount_detached() {
    let mut s = Supervised::start(&[]);
    let _dog = support::Watchdog::start(
        Duration::from_secs(60),
        "a_crash_loop",
        s.supervisor_pid(),
        &[s.mnt()],
    );
    // Five restarts are made and served.
    for _ in 0..5 {
        let (old, _) = s.kill_server();
        s.next_server(old);
    }
    assert_eq!(restarts(s.mnt()).len(), 5);
    s.kill_server();
    let mut child = s.supervisor.take().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the supervisor gave up with {status}");
    assert!(!is_mounted(s.mnt()), "the given-up mount was left behind");
}
