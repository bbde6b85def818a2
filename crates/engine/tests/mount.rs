//! Integration tests that mount for real (they need root or fusermount3).
//! Every mount is undone by a guard, also when an assertion fails.

mod common;
#[allow(dead_code)]
#[path = "../examples/hello.rs"]
mod hello;
#[allow(dead_code)]
#[path = "../examples/memfs.rs"]
mod memfs;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Mounted;
use fastfuse::{Config, Filesystem, MountOptions, Session};

fn is_mounted(path: &Path) -> bool {
    fastfuse::mount_device(path).ok().flatten().is_some()
}

fn two_threads() -> Config {
    Config {
        threads: 2,
        ..Default::default()
    }
}

#[test]
fn mount_unmount_cycles() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..5 {
        let s = Session::mount(
            hello::Hello,
            dir.path(),
            &MountOptions::default(),
            two_threads(),
        )
        .unwrap()
        .spawn()
        .unwrap();
        assert!(is_mounted(dir.path()));
        s.unmount().unwrap();
        assert!(!is_mounted(dir.path()));
    }
}

#[test]
fn hello_file_reads_through_std_fs() {
    let m = Mounted::new(hello::Hello, two_threads());
    let text = std::fs::read_to_string(m.path().join("hello")).unwrap();
    assert_eq!(text, "Hello from fastfuse!\n");
    let names: Vec<_> = std::fs::read_dir(m.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["hello"]);
    let err = std::fs::metadata(m.path().join("nope")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    let err = std::fs::write(m.path().join("hello"), b"x").unwrap_err();
    assert!(
        matches!(err.raw_os_error(), Some(libc::EACCES | libc::EROFS)),
        "{err}"
    );
}

/// A filesystem that does not ask for the lock flags in `init` (neither
/// example does) gets the kernel's own, local locks: fcntl and flock
/// succeed and conflict between open files as on any local filesystem,
/// instead of failing with ENOSYS.
#[test]
fn examples_without_lock_methods_get_kernel_local_locks() {
    fn lock(file: &std::fs::File, cmd: libc::c_int, typ: libc::c_int) -> std::io::Result<()> {
        // SAFETY: `struct flock` is plain data, valid zeroed.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = typ as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        // SAFETY: `file` is an open descriptor; `fl` outlives the call.
        if unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    fn flock(file: &std::fs::File, op: libc::c_int) -> std::io::Result<()> {
        // SAFETY: `file` is an open descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    let hello = Mounted::new(hello::Hello, two_threads());
    let memfs = Mounted::new(memfs::MemFs::default(), two_threads());
    std::fs::write(memfs.path().join("f"), b"locks").unwrap();
    for (path, write) in [
        (hello.path().join("hello"), false),
        (memfs.path().join("f"), true),
    ] {
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(write)
                .open(&path)
                .unwrap()
        };
        let (a, b) = (open(), open());
        let typ = if write { libc::F_WRLCK } else { libc::F_RDLCK };
        lock(&a, libc::F_SETLK, typ).unwrap_or_else(|e| panic!("{path:?}: fcntl: {e}"));
        lock(&a, libc::F_SETLK, libc::F_UNLCK).unwrap();
        lock(&a, libc::F_OFD_SETLK, typ).unwrap_or_else(|e| panic!("{path:?}: OFD: {e}"));
        flock(&a, libc::LOCK_EX | libc::LOCK_NB).unwrap_or_else(|e| panic!("{path:?}: flock: {e}"));
        // The second open file conflicts with the first one's flock and
        // (where they are write locks) OFD lock: the kernel keeps them.
        let err = flock(&b, libc::LOCK_EX | libc::LOCK_NB).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EWOULDBLOCK), "{path:?}");
        if write {
            let err = lock(&b, libc::F_OFD_SETLK, libc::F_WRLCK).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EAGAIN), "{path:?}");
        }
        flock(&a, libc::LOCK_UN).unwrap();
        flock(&b, libc::LOCK_SH | libc::LOCK_NB).unwrap();
    }
}

#[test]
fn memfs_serves_many_threads_at_once() {
    let m = Mounted::new(memfs::MemFs::default(), Config::default());
    let root = m.path().to_path_buf();
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let root = root.clone();
            std::thread::spawn(move || {
                let dir = root.join(format!("t{t}"));
                std::fs::create_dir(&dir).unwrap();
                for i in 0..40 {
                    let p = dir.join(format!("f{i}"));
                    let body = format!("thread {t} file {i}").repeat(i + 1);
                    std::fs::write(&p, &body).unwrap();
                    assert_eq!(std::fs::read_to_string(&p).unwrap(), body);
                    let q = dir.join(format!("g{i}"));
                    std::fs::rename(&p, &q).unwrap();
                    if i % 2 == 0 {
                        std::fs::remove_file(&q).unwrap();
                    }
                }
                let mut names: Vec<_> = std::fs::read_dir(&dir)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect();
                names.sort();
                let mut want: Vec<_> = (0..40)
                    .filter(|i| i % 2 == 1)
                    .map(|i| format!("g{i}"))
                    .collect();
                want.sort();
                assert_eq!(names, want);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 6);
}

#[test]
fn one_mib_write_arrives_as_one_write_request() {
    let m = Mounted::new(memfs::MemFs::default(), two_threads());
    let path = m.path().join("big");
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&data).unwrap();
    drop(f);
    let snap = m.session().stats().snapshot();
    assert_eq!(snap.writes_up_to(1 << 20), 1, "{:?}", snap.write_sizes);
    assert_eq!(snap.ops["WRITE"].count, 1, "{:?}", snap.ops["WRITE"]);
    // Read back through a second handle, from an offset.
    let mut f = std::fs::File::open(&path).unwrap();
    f.seek(SeekFrom::Start(12345)).unwrap();
    let mut back = Vec::new();
    f.read_to_end(&mut back).unwrap();
    assert_eq!(back, &data[12345..]);
    // The same numbers are readable from outside through the stats socket.
    #[cfg(feature = "stats")]
    {
        let remote = fastfuse::stats::query(m.path()).unwrap();
        assert_eq!(remote.writes_up_to(1 << 20), 1);
        assert_eq!(
            remote.requests_by_transport.keys().collect::<Vec<_>>(),
            ["dev"]
        );
    }
}

#[test]
fn lazy_umount_ends_a_running_session() {
    let fs = Arc::new(memfs::MemFs::default());
    let dir = tempfile::tempdir().unwrap();
    let s = Session::mount(fs, dir.path(), &MountOptions::default(), two_threads())
        .unwrap()
        .spawn()
        .unwrap();
    std::fs::write(dir.path().join("f"), b"data").unwrap();
    let status = Command::new("umount")
        .arg("-l")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        s.join();
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("session did not end after umount -l");
    assert!(!is_mounted(dir.path()));
}

/// A daemon process (an example binary) and its mountpoint; killed by pid
/// and unmounted on drop if the test did not get that far.
struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
}

fn example(name: &str) -> PathBuf {
    // Integration tests live in target/<profile>/deps; examples one up.
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name)
}

impl Daemon {
    fn start(name: &str) -> Daemon {
        Self::start_with(name, |cmd| cmd, |_| {}, &[])
    }

    /// Starts example `name` on a fresh mountpoint; `wrap` may put a command
    /// in front (e.g. to drop privileges), `prepare` may change the
    /// mountpoint first.
    fn start_with(
        name: &str,
        wrap: impl FnOnce(&mut Command) -> &mut Command,
        prepare: impl FnOnce(&Path),
        extra: &[&str],
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        let mut cmd = Command::new(example(name));
        let child = wrap(&mut cmd).arg(dir.path()).args(extra).spawn().unwrap();
        let d = Daemon { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_mounted(d.dir.path()) {
            assert!(Instant::now() < deadline, "{name} did not mount");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        #[allow(unsafe_code)]
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(r, 0);
    }

    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "daemon did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if is_mounted(self.dir.path()) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

#[test]
fn sigterm_leaves_no_mount_behind() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut d = Daemon::start("memfs");
        std::fs::write(d.dir.path().join("x"), b"before the signal").unwrap();
        d.signal(sig);
        let status = d.wait(Duration::from_secs(10));
        assert!(status.success(), "{status}");
        assert!(!is_mounted(d.dir.path()));
    }
}

#[test]
fn mounting_over_a_non_empty_directory_works() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hidden"), b"under the mount").unwrap();
    {
        let s = Session::mount(
            hello::Hello,
            dir.path(),
            &MountOptions::default(),
            two_threads(),
        )
        .unwrap()
        .spawn()
        .unwrap();
        assert!(!dir.path().join("hidden").exists());
        assert!(dir.path().join("hello").exists());
        s.unmount().unwrap();
    }
    assert_eq!(
        std::fs::read(dir.path().join("hidden")).unwrap(),
        b"under the mount"
    );
}

/// Runs a command as `nobody`, the way an unprivileged user mounts.
fn as_nobody(cmd: &mut Command) -> &mut Command {
    let program = cmd.get_program().to_owned();
    *cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(program)
}

fn chown_nobody(path: &Path) {
    std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
}

#[test]
fn unprivileged_mount_goes_through_fusermount3() {
    let mut d = Daemon::start_with("hello", as_nobody, chown_nobody, &[]);
    let text = std::fs::read_to_string(d.dir.path().join("hello"));
    // Without allow_other even root is kept out of a user's mount.
    assert_eq!(text.unwrap_err().raw_os_error(), Some(libc::EACCES));
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.contains(d.dir.path().to_str().unwrap()))
        .unwrap();
    assert!(
        line.contains("fuse.hello") && line.contains("user_id=65534"),
        "{line}"
    );
    let status = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "fusermount3",
            "-u",
        ])
        .arg(d.dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(d.wait(Duration::from_secs(10)).success());
}

/// A filesystem whose READ is answered later, from another thread, by way
/// of [`fastfuse::Caller::defer`]: `read` hands the request to `pending`
/// and returns at once.
struct SlowRead {
    pending: std::sync::Mutex<std::sync::mpsc::Sender<fastfuse::Deferred>>,
}

const SLOW_FILE: fastfuse::NodeId = fastfuse::NodeId(2);
const SLOW_DATA: &[u8] = b"answered from another thread\n";

impl SlowRead {
    fn attr(node: fastfuse::NodeId) -> Result<fastfuse::Attr, fastfuse::Errno> {
        let (mode, size) = match node {
            fastfuse::NodeId::ROOT => (libc::S_IFDIR | 0o755, 0),
            SLOW_FILE => (libc::S_IFREG | 0o644, SLOW_DATA.len() as u64),
            _ => return Err(fastfuse::Errno::ENOENT),
        };
        Ok(fastfuse::Attr {
            ino: node.0,
            mode,
            size,
            nlink: 1,
            ..Default::default()
        })
    }
}

impl Filesystem for SlowRead {
    fn lookup(
        &self,
        _: &fastfuse::Caller,
        _: fastfuse::NodeId,
        name: &std::ffi::OsStr,
    ) -> Result<fastfuse::Entry, fastfuse::Errno> {
        if name != "slow" {
            return Err(fastfuse::Errno::ENOENT);
        }
        Ok(fastfuse::Entry {
            node: SLOW_FILE,
            generation: 0,
            attr: Self::attr(SLOW_FILE)?,
            attr_timeout: Duration::ZERO,
            entry_timeout: Duration::from_secs(60),
        })
    }

    fn getattr(
        &self,
        _: &fastfuse::Caller,
        node: fastfuse::NodeId,
        _: Option<fastfuse::FileHandle>,
    ) -> Result<fastfuse::AttrReply, fastfuse::Errno> {
        // Timeout 0: every stat(2) is a GETATTR.
        Ok(fastfuse::AttrReply {
            attr: Self::attr(node)?,
            timeout: Duration::ZERO,
        })
    }

    fn open(
        &self,
        _: &fastfuse::Caller,
        _: fastfuse::NodeId,
        _: fastfuse::OpenFlags,
    ) -> Result<fastfuse::Opened, fastfuse::Errno> {
        // Direct I/O: every read(2) is a READ, none served from the cache.
        Ok(fastfuse::Opened {
            open_flags: fastfuse::abi::fopen::FOPEN_DIRECT_IO,
            ..Default::default()
        })
    }

    fn read(
        &self,
        req: &fastfuse::Caller,
        _: fastfuse::NodeId,
        _: fastfuse::FileHandle,
        offset: u64,
        _: &mut [u8],
    ) -> Result<usize, fastfuse::Errno> {
        if offset >= SLOW_DATA.len() as u64 {
            return Ok(0); // end of file, at once
        }
        let later = req.defer().ok_or(fastfuse::Errno::EIO)?;
        self.pending
            .lock()
            .unwrap()
            .send(later)
            .map_err(|_| fastfuse::Errno::EIO)?;
        Ok(0) // not the reply: the deferred handle is
    }
}

/// One worker, and a READ that the filesystem answers 10 ms or more later
/// from another thread: meanwhile the worker goes on serving GETATTRs
/// (each stat(2) below returns while the READ is still unanswered), and
/// the session's statistics show every GETATTR served in well under the
/// READ's 10 ms.
#[test]
fn a_deferred_read_leaves_the_only_worker_free() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;

    let (to_answerer, deferred) = mpsc::channel::<fastfuse::Deferred>();
    let m = Mounted::new(
        SlowRead {
            pending: std::sync::Mutex::new(to_answerer),
        },
        Config {
            threads: 1,
            ..Default::default()
        },
    );
    let file = m.path().join("slow");
    std::fs::metadata(&file).unwrap();

    let answered = Arc::new(AtomicBool::new(false));
    let (said_deferred, deferral_seen) = mpsc::channel::<()>();
    let (getattrs_done, may_answer) = mpsc::channel::<()>();
    let answerer = {
        let answered = answered.clone();
        std::thread::spawn(move || {
            let d = deferred
                .recv_timeout(Duration::from_secs(30))
                .expect("no READ arrived");
            let at = Instant::now();
            said_deferred.send(()).unwrap();
            // At least 10 ms, and not before the GETATTRs are through (a
            // loaded machine must not make the test racy).
            let _ = may_answer.recv_timeout(Duration::from_secs(30));
            if let Some(left) = Duration::from_millis(10).checked_sub(at.elapsed()) {
                std::thread::sleep(left);
            }
            answered.store(true, Ordering::SeqCst);
            d.reply(Ok(SLOW_DATA));
        })
    };
    let reader = {
        let file = file.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            let data = std::fs::read(&file).unwrap();
            (data, t.elapsed())
        })
    };
    deferral_seen
        .recv_timeout(Duration::from_secs(30))
        .expect("the READ was never deferred");
    for i in 0..5 {
        std::fs::metadata(&file).unwrap();
        assert!(
            !answered.load(Ordering::SeqCst),
            "stat {i} waited for the READ: the worker was held"
        );
    }
    getattrs_done.send(()).unwrap();
    let (data, took) = reader.join().unwrap();
    answerer.join().unwrap();
    assert_eq!(data, SLOW_DATA);
    assert!(took >= Duration::from_millis(10), "READ took {took:?}");

    let stats = m.session().stats().snapshot();
    let getattr = &stats.ops["GETATTR"];
    assert!(getattr.count >= 5, "{getattr:?}");
    // Bucket i holds services in [2^i, 2^(i+1)) ns; 2^23 ns is 8.4 ms.
    let slowest = getattr
        .latency_log2_ns
        .iter()
        .rposition(|&n| n > 0)
        .unwrap();
    assert!(
        slowest < 23,
        "a GETATTR took 2^{slowest} ns or more: {getattr:?}"
    );
    assert!(stats.ops["READ"].count >= 1, "{:?}", stats.ops);
}

#[cfg(feature = "stats")]
/// The statistics socket answers root and the daemon's user only: a thread
/// of this (root) process that becomes nobody can reach the mount
/// (allow_other) but gets no statistics, while root gets them.
#[test]
fn statistics_are_refused_to_other_users() {
    let opts = MountOptions {
        fsname: "fastfuse-test".into(),
        allow_other: true,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let session = Session::mount(hello::Hello, dir.path(), &opts, two_threads())
        .unwrap()
        .spawn()
        .unwrap();
    let mnt = dir.path().to_path_buf();
    assert!(fastfuse::stats::query(&mnt).is_ok(), "root is refused");
    let as_nobody = std::thread::spawn(move || {
        // The raw system call changes this thread's credentials alone (the
        // C library's setresuid would change every thread's). The thread
        // ends with them.
        // SAFETY: setresuid takes three ids and touches no memory.
        let r = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
        assert_eq!(r, 0, "setresuid: {}", std::io::Error::last_os_error());
        let seen = std::fs::metadata(mnt.join("hello")).map(|m| m.len());
        (seen.ok(), fastfuse::stats::query(&mnt).err())
    });
    let (seen, refused) = as_nobody.join().unwrap();
    assert!(
        seen.is_some(),
        "nobody cannot reach the mount, so the test shows nothing"
    );
    assert!(refused.is_some(), "nobody read the statistics");
    drop(session);
}

/// Detaches whatever is still mounted on a test's own temporary directory
/// when the test ends, also when it fails between mounting and serving.
struct DetachOnDrop(PathBuf);

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let path = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a NUL-terminated path that outlives the call.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// A connection someone else mounted (here: this test, with mount(2) and
/// a /dev/fuse fd of its own, as a container runtime would) is served by
/// `Session::from_fd`, which answers INIT and unmounts it at the end.
#[test]
fn from_fd_serves_a_mount_made_elsewhere() {
    use std::ffi::CString;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;

    let dir = tempfile::tempdir().unwrap();
    let _detach = DetachOnDrop(dir.path().to_path_buf());
    // SAFETY: a NUL-terminated path; the fd returned is ours.
    let raw = unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    assert!(raw >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: `raw` was just opened and is owned by nothing else.
    let dev = unsafe { OwnedFd::from_raw_fd(raw) };
    let target = CString::new(dir.path().as_os_str().as_bytes()).unwrap();
    let data = CString::new(format!("fd={raw},rootmode=40000,user_id=0,group_id=0")).unwrap();
    // SAFETY: every pointer is a NUL-terminated string that outlives the
    // call.
    let r = unsafe {
        libc::mount(
            c"elsewhere".as_ptr(),
            target.as_ptr(),
            c"fuse.elsewhere".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    assert_eq!(r, 0, "mount: {}", std::io::Error::last_os_error());
    let session = Session::from_fd(hello::Hello, dev, dir.path(), two_threads())
        .unwrap()
        .spawn()
        .unwrap();
    let text = std::fs::read_to_string(dir.path().join("hello")).unwrap();
    assert_eq!(text, "Hello from fastfuse!\n");
    session.unmount().unwrap();
    assert!(!is_mounted(dir.path()));
}

/// A session that agreed INIT hands its connection over without
/// unmounting, and another session (here in the same process, with a new
/// filesystem) goes on serving it: INIT is not sent again.
#[test]
fn a_handed_over_connection_is_served_by_the_next_session() {
    let dir = tempfile::tempdir().unwrap();
    let _detach = DetachOnDrop(dir.path().to_path_buf());
    let opts = MountOptions {
        fsname: "fastfuse-test".into(),
        ..Default::default()
    };
    let first = Session::mount(memfs::MemFs::default(), dir.path(), &opts, two_threads()).unwrap();
    let agreed = *first.connection().negotiated();
    let Ok(mut handover) = first.hand_over() else {
        panic!("hand_over refused");
    };
    assert!(is_mounted(dir.path()), "handing over unmounted");
    assert_eq!(handover.negotiated, agreed);
    // As if the first session had served for an hour: the next one's
    // uptime goes on from there.
    handover.stats.uptime_secs += 3600.0;
    let next = Session::resume(memfs::MemFs::default(), handover, two_threads())
        .unwrap()
        .spawn()
        .unwrap();
    assert!(next.stats().uptime() >= std::time::Duration::from_secs(3600));
    let file = dir.path().join("after");
    std::fs::write(&file, b"served by the next session").unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"served by the next session");
    next.unmount().unwrap();
    assert!(!is_mounted(dir.path()));
}

/// A running session pauses (its workers finish and stop; a request made
/// meanwhile waits in the kernel), resumes, pauses again and hands its
/// connection to a new session in the same process, which answers the
/// request that waited and goes on with the counts of the first.
#[test]
fn a_running_session_pauses_resumes_and_hands_over() {
    let dir = tempfile::tempdir().unwrap();
    let _detach = DetachOnDrop(dir.path().to_path_buf());
    let opts = MountOptions {
        fsname: "fastfuse-test".into(),
        ..Default::default()
    };
    let mut first = Session::mount(memfs::MemFs::default(), dir.path(), &opts, two_threads())
        .unwrap()
        .spawn()
        .unwrap();
    let file = dir.path().join("one");
    std::fs::write(&file, b"1").unwrap();
    // Taken while served: a stat of the mount waits while it is paused.
    let waiting_file = {
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(dir.path()).unwrap().dev();
        format!("/sys/fs/fuse/connections/{}/waiting", libc::minor(dev))
    };
    first.pause().unwrap();
    assert!(first.is_paused());
    // Made while nobody serves: answered after resume.
    let waiting = {
        let path = dir.path().join("made-while-paused");
        std::thread::spawn(move || std::fs::write(path, b"2"))
    };
    // The request reaches the kernel's queue (the connection counts it as
    // waiting) and no worker: nothing answers it while paused.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(&waiting_file).unwrap().trim() == "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "the request never came"
        );
        std::thread::yield_now();
    }
    assert!(!waiting.is_finished(), "a request was served while paused");
    first.resume();
    waiting.join().unwrap().unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("made-while-paused")).unwrap(),
        b"2"
    );

    first.pause().unwrap();
    let waiting = {
        let path = dir.path().join("across");
        std::thread::spawn(move || std::fs::write(path, b"3"))
    };
    let handover = first.handover().unwrap();
    let writes_before = handover.stats.ops["WRITE"].count;
    // MemFs keeps its files in memory: the next one starts empty, but the
    // kernel's queue and node ids carry over.
    first.leave();
    assert!(is_mounted(dir.path()), "leaving unmounted");
    let next = Session::resume(memfs::MemFs::default(), handover, two_threads())
        .unwrap()
        .spawn()
        .unwrap();
    waiting.join().unwrap().unwrap();
    let writes_after = next.stats().snapshot().ops["WRITE"].count;
    assert!(writes_after > writes_before, "counts carry on");
    next.unmount().unwrap();
    assert!(!is_mounted(dir.path()));
}
