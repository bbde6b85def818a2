//! Shared by the end-to-end tests: a tmpfs source, a fastfuse daemon serving
//! it, and cleanup that runs even when a test fails.
#![allow(dead_code)]

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The fastfuse binary under test.
pub fn fastfuse_bin() -> &'static str {
    env!("CARGO_BIN_EXE_fastfuse")
}

/// Whether something is mounted exactly at `path`.
pub fn is_mounted(path: &Path) -> bool {
    fastfuse::mount_device(path).ok().flatten().is_some()
}

/// Runs a command, panicking with its output if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tmpfs mounted on a temporary directory, or (from [`Tmpfs::on_disk`])
/// a plain temporary directory; unmounted if mounted, and removed, on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// A tmpfs of `size` (e.g. "512m").
    pub fn new(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("fastfuse-src")
            .tempdir()
            .unwrap();
        run(Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "fastfuse-test",
            ])
            .arg(dir.path()));
        Tmpfs { dir }
    }

    /// Not a tmpfs: a temporary directory under `parent`, for a source
    /// whose page cache reclaim can write back to disk (tmpfs pages can
    /// only go to swap, and there is none).
    pub fn on_disk(parent: &Path) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("fastfuse-src")
            .tempdir_in(parent)
            .unwrap();
        Tmpfs { dir }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if is_mounted(self.dir.path()) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// An empty temporary directory to mount on; removed when dropped (after
/// the mount on it is gone).
pub fn mountpoint() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fastfuse-mnt")
        .tempdir()
        .unwrap()
}

/// The readiness report of a daemon started by [`spawn_reporting`].
pub struct Ready(UnixStream);

impl Ready {
    /// Waits (up to 20 s) for the report: `ok` once the daemon serves, with
    /// its statistics and control sockets bound, or why it failed; empty
    /// if it exited first.
    pub fn wait(mut self) -> std::io::Result<String> {
        self.0.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut report = String::new();
        self.0.read_to_string(&mut report)?;
        Ok(report)
    }
}

/// Spawns a `fastfuse --foreground` command with the readiness channel a
/// daemonizing `fastfuse` gives its child, so that a test waits for the
/// daemon's word rather than polling the mount.
pub fn spawn_reporting(cmd: &mut Command) -> (Child, Ready) {
    let (ready, theirs) = UnixStream::pair().unwrap();
    let theirs_fd = theirs.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and makes
    // only fcntl calls, which are async-signal-safe; `theirs` stays open in
    // this process until the child has been spawned.
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(theirs_fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(theirs_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .env("FASTFUSE_READY_FD", theirs_fd.to_string())
        .spawn()
        .unwrap();
    drop(theirs);
    (child, Ready(ready))
}

/// A fastfuse daemon in the foreground (so its pid is ours to end) serving
/// a fresh tmpfs source on a temporary mountpoint.
pub struct Served {
    pub source: Tmpfs,
    /// The directory served: the tmpfs root, or a directory inside it.
    src: PathBuf,
    mnt: tempfile::TempDir,
    child: Option<Child>,
}

/// How [`Served::launch`] starts the daemon, beyond its arguments.
#[derive(Debug, Default, Clone, Copy)]
pub struct Launch<'a> {
    /// Serve this directory of the tmpfs (created if missing) rather than
    /// its root, so that the source has siblings on the same filesystem.
    pub subdir: Option<&'a str>,
    /// Start fastfuse through this command, which must exec it in its own
    /// process (e.g. `["prlimit", "--nofile=64:64", "--"]`), so that the
    /// pid stays the daemon's.
    pub wrapper: &'a [&'a str],
}

impl Served {
    /// Mounts with extra command-line arguments (before SRC MNT).
    pub fn start(args: &[&str]) -> Served {
        Self::start_on(Tmpfs::new("1g"), args)
    }

    /// Mounts an existing source.
    pub fn start_on(source: Tmpfs, args: &[&str]) -> Served {
        Self::launch(source, Launch::default(), args)
    }

    /// Mounts an existing source the way `launch` says.
    pub fn launch(source: Tmpfs, launch: Launch<'_>, args: &[&str]) -> Served {
        let src = match launch.subdir {
            Some(dir) => {
                let src = source.path().join(dir);
                std::fs::create_dir_all(&src).unwrap();
                src
            }
            None => source.path().to_path_buf(),
        };
        let mnt = mountpoint();
        let mut s = Served {
            source,
            src,
            mnt,
            child: None,
        };
        s.spawn(launch.wrapper, args);
        s
    }

    /// Starts a daemon on this source and mountpoint (nothing may be
    /// mounted there) and waits until the mount is live.
    fn spawn(&mut self, wrapper: &[&str], args: &[&str]) {
        assert!(self.child.is_none(), "a daemon is already running");
        assert!(!is_mounted(self.mnt.path()), "something is mounted there");
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(fastfuse_bin());
                cmd
            }
            None => Command::new(fastfuse_bin()),
        };
        let (child, ready) = spawn_reporting(
            cmd.args(args)
                .arg("--foreground")
                .arg(&self.src)
                .arg(self.mnt.path())
                .stdin(Stdio::null()),
        );
        self.child = Some(child);
        let report = ready.wait();
        if report.as_deref().is_ok_and(|r| r.starts_with("ok")) {
            assert!(is_mounted(self.mnt.path()), "ready but not mounted");
            return;
        }
        // Failed, exited or silent: Drop ends and reaps it.
        let status = self.child.as_mut().unwrap().try_wait().unwrap();
        panic!("fastfuse did not mount (exit: {status:?}): {report:?}");
    }

    /// Starts a new daemon on the same source and mountpoint, after the
    /// last one ended and its mount went.
    pub fn respawn(&mut self, args: &[&str]) {
        self.spawn(&[], args);
    }

    /// Ends the daemon with SIGKILL (by its pid) and reaps it, leaving its
    /// mount behind (the kernel then answers ENOTCONN there).
    pub fn kill(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("no daemon running");
        child.kill().unwrap();
        child.wait().unwrap()
    }

    /// The directory served.
    pub fn src(&self) -> &Path {
        &self.src
    }

    /// The mountpoint.
    pub fn mnt(&self) -> &Path {
        self.mnt.path()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Unmounts and waits for the daemon to exit by itself; returns its
    /// exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        if is_mounted(self.mnt.path()) {
            let _ = Command::new("umount").arg(self.mnt.path()).status();
            if is_mounted(self.mnt.path()) {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(self.mnt.path())
                    .status();
            }
        }
        let mut child = self.child.take().unwrap();
        if let Some(status) = wait_exit(&mut child, Duration::from_secs(20)) {
            return status;
        }
        let _ = child.kill();
        let status = child.wait().unwrap();
        panic!(
            "fastfuse (pid {}) did not exit after unmount: {status}",
            child.id()
        );
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.child.is_some() {
            if std::thread::panicking() {
                // Unmount and end by pid, without asserting again.
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(self.mnt.path())
                    .status();
                if let Some(mut c) = self.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            } else {
                self.stop();
            }
        } else if is_mounted(self.mnt.path()) {
            // The daemon was killed and its mount left behind.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.mnt.path())
                .status();
        }
    }
}

/// Recursively lists files under `root` with their contents' sizes and
/// modes, for comparing two trees.
pub fn tree(root: &Path) -> Vec<(PathBuf, u64, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            out.push((
                e.path().strip_prefix(root).unwrap().to_path_buf(),
                m.len(),
                m.mode(),
            ));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// How many tests hold `enable_uring` at Y, and its value before the first.
static HOLDERS: Mutex<(usize, String)> = Mutex::new((0, String::new()));

/// `enable_uring` at Y (the kernel offers FUSE over io_uring only then)
/// for as long as any test of this binary holds one; the last to go puts
/// back the value the first found, also when a test fails. Tests that want
/// Y share it and still run in parallel; tests in other binaries never run
/// meanwhile (cargo runs test binaries one at a time).
pub struct RingEnabled;

impl RingEnabled {
    /// Sets `enable_uring` to Y unless another test holds it already.
    pub fn hold() -> RingEnabled {
        // A test that panicked while holding the lock poisons it; the count
        // is still right (it only changes after the write succeeded).
        let mut holders = HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        if holders.0 == 0 {
            let before = std::fs::read_to_string(ENABLE_URING)
                .expect("the fuse module has no enable_uring parameter (needs Linux 6.14+)");
            std::fs::write(ENABLE_URING, "Y").unwrap();
            holders.1 = before.trim().to_string();
        }
        holders.0 += 1;
        RingEnabled
    }
}

impl Drop for RingEnabled {
    fn drop(&mut self) {
        let mut holders = HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        holders.0 -= 1;
        if holders.0 == 0 {
            let _ = std::fs::write(ENABLE_URING, &holders.1);
        }
    }
}

/// `fastfuse stats --json MNT` (null if it cannot be had).
pub fn stats(mnt: &Path) -> serde_json::Value {
    let out = Command::new(fastfuse_bin())
        .args(["stats", "--json"])
        .arg(mnt)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// A tarball of /usr/include (the bench's untar tree), outside the mount.
pub fn tarball(dir: &Path) -> PathBuf {
    let tar = dir.join("include.tar");
    let status = Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg("/usr")
        .arg("include")
        .status()
        .unwrap();
    assert!(status.success(), "tar -c /usr/include failed");
    tar
}

/// fio writing 2 jobs × 384 MiB in 64k writes into `dir` and verifying
/// them (crc32c), fsync at close; its verify state files go to `work`.
/// With `fatal`, the first bad block ends it.
pub fn fio_verify(dir: &Path, work: &Path, fatal: bool) -> Child {
    let mut cmd = Command::new("fio");
    cmd.args([
        "--name=verify",
        "--ioengine=psync",
        "--rw=write",
        "--bs=64k",
        "--size=384M",
        "--numjobs=2",
        "--verify=crc32c",
        "--do_verify=1",
        "--fsync_on_close=1",
    ]);
    if fatal {
        cmd.arg("--verify_fatal=1");
    }
    cmd.arg(format!("--directory={}", dir.display()))
        .current_dir(work)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Asserts that `tree` (an untarred copy, through the mount) equals
/// /usr/include, symlinks as symlinks; `what` names it in the failure.
pub fn assert_same_as_usr_include(tree: &Path, what: &str) {
    let diff = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg("/usr/include")
        .arg(tree)
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "extracted tree {what} differs: {}",
        String::from_utf8_lossy(&diff.stdout)
    );
}

/// Waits up to `limit` for `child` to exit: its status, or `None` if it
/// still runs.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `umount MNT`, lazily (`-l`) if the mount is busy: a child another test
/// forked meanwhile may hold a copy of a descriptor on it for a moment.
/// Whether one of them succeeded.
pub fn unmount_or_detach(mnt: &Path) -> bool {
    Command::new("umount").arg(mnt).status().unwrap().success()
        || Command::new("umount")
            .arg("-l")
            .arg(mnt)
            .status()
            .unwrap()
            .success()
}

/// How many requests of opcode `op` the daemon serving `mnt` has counted.
pub fn op_count(mnt: &Path, op: &str) -> u64 {
    stats(mnt)["ops"][op]["count"].as_u64().unwrap_or(0)
}
