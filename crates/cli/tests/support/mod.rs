//! Shared by the reliability and security tests: acting as another user,
//! a snapshot of what lies outside a source, the daemon's descriptors,
//! seeded contents, and a watchdog that ends a hung test.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The user the permission tests act as.
pub const NOBODY: (u32, u32) = (65534, 65534);

/// An errno as a test result.
pub type Errno = rustix::io::Errno;

/// A path as a C string, made before any fork.
pub fn c(path: impl AsRef<Path>) -> CString {
    CString::new(path.as_ref().as_os_str().as_bytes()).unwrap()
}

/// Runs `f` in a forked child that has dropped to `uid`/`gid` with no
/// supplementary groups, and returns what it returned.
///
/// The child only makes system calls (rustix calls on prepared `&CStr`
/// paths allocate nothing), so forking a multi-threaded test process is
/// safe: no lock another thread held at the fork is ever taken.
pub fn as_user<F>((uid, gid): (u32, u32), f: F) -> Result<(), Errno>
where
    F: FnOnce() -> Result<(), Errno>,
{
    // SAFETY: fork(2) in a multi-threaded process; the child runs only
    // async-signal-safe system calls (setgroups, setresgid, setresuid, the
    // calls `f` makes through rustix on preallocated C strings) and ends
    // with _exit(2), never returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: raw system calls changing this (single-threaded) child's
        // credentials; setgroups(0, NULL) takes no pointer to read.
        let dropped = unsafe {
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) == 0
                && libc::syscall(libc::SYS_setresgid, gid, gid, gid) == 0
                && libc::syscall(libc::SYS_setresuid, uid, uid, uid) == 0
        };
        let code = if !dropped {
            255
        } else {
            match f() {
                Ok(()) => 0,
                Err(e) => e.raw_os_error(),
            }
        };
        // SAFETY: ends the child without running the parent's atexit
        // handlers or destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above; `status` is a valid
    // out-pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
    assert!(libc::WIFEXITED(status), "the child died: {status:#x}");
    match libc::WEXITSTATUS(status) {
        0 => Ok(()),
        255 => panic!("the child could not drop to uid {uid} gid {gid}"),
        e => Err(Errno::from_raw_os_error(e)),
    }
}

/// One entry of a [`Snapshot`]: everything an escape could change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub kind: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    /// File contents or symlink target.
    pub bytes: Vec<u8>,
    /// Extended attribute names (all namespaces root can list).
    pub xattrs: Vec<String>,
}

/// Everything under `root` except the subtree `skip`, by relative path:
/// what must stay untouched while a daemon serves `skip`.
pub type Snapshot = BTreeMap<PathBuf, Seen>;

/// Takes a [`Snapshot`] of `root` (the root itself included), leaving out
/// `skip` and everything below it.
pub fn snapshot(root: &Path, skip: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path == skip {
            continue;
        }
        let m = std::fs::symlink_metadata(&path).unwrap();
        let kind = m.mode() & libc::S_IFMT;
        let bytes = match kind {
            libc::S_IFREG => std::fs::read(&path).unwrap(),
            libc::S_IFLNK => std::fs::read_link(&path)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec(),
            _ => Vec::new(),
        };
        let xattrs = xattr_names(&path);
        if m.is_dir() {
            for e in std::fs::read_dir(&path).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        out.insert(
            rel,
            Seen {
                kind,
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                nlink: m.nlink(),
                size: m.size(),
                mtime: (m.mtime(), m.mtime_nsec()),
                ctime: (m.ctime(), m.ctime_nsec()),
                bytes,
                xattrs,
            },
        );
    }
    out
}

/// The names of `path`'s extended attributes (not following a symlink).
pub fn xattr_names(path: &Path) -> Vec<String> {
    let mut buf = vec![0u8; 64 * 1024];
    let n = rustix::fs::llistxattr(path, &mut buf).unwrap_or(0);
    let mut names: Vec<String> = buf[..n]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    names
}

/// Asserts that two snapshots are equal, naming the paths that differ.
pub fn assert_untouched(before: &Snapshot, after: &Snapshot) {
    let mut diffs = Vec::new();
    for (path, seen) in after {
        match before.get(path) {
            None => diffs.push(format!("appeared: {}", path.display())),
            Some(was) if was != seen => {
                diffs.push(format!("changed: {}: {was:?} -> {seen:?}", path.display()))
            }
            Some(_) => {}
        }
    }
    for path in before.keys() {
        if !after.contains_key(path) {
            diffs.push(format!("vanished: {}", path.display()));
        }
    }
    assert!(
        diffs.is_empty(),
        "outside the source:\n{}",
        diffs.join("\n")
    );
}

/// The daemon's open descriptors: fd number → what it refers to.
pub fn daemon_fds(pid: u32) -> BTreeMap<u32, String> {
    let dir = format!("/proc/{pid}/fd");
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let Ok(n) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // An fd may close between readdir and readlink.
        if let Ok(target) = std::fs::read_link(e.path()) {
            out.insert(n, target.to_string_lossy().into_owned());
        }
    }
    out
}

/// The daemon's descriptors that lead into `src`: with no file or
/// directory open through the mount, one `O_PATH` fd per entry of
/// PassthroughFs's inode table, the root included.
pub fn fds_into(pid: u32, src: &Path) -> Vec<String> {
    let src = src.to_string_lossy().into_owned();
    daemon_fds(pid)
        .into_values()
        .filter(|t| *t == src || t.starts_with(&format!("{src}/")))
        .collect()
}

/// Asks the kernel to drop unused dentries and inodes
/// (`echo 2 > /proc/sys/vm/drop_caches`); FUSE then sends FORGETs.
pub fn drop_caches() {
    std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
}

/// A small deterministic generator (splitmix64): tests replay from a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `len` bytes derived from `seed`: what a writer wrote can be recomputed.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Fails a test that runs too long, even one hung inside a system call on
/// a mount: after `limit` it ends the daemon `pid` with SIGKILL (which
/// aborts its FUSE connection, so blocked calls return), detaches
/// `mounts` (the mountpoint first, then the source) and exits the test
/// process with a failure. Cleanup normally done by destructors cannot run
/// then, so it is done here, and what the other tests of the process
/// started (their daemons, their loads) goes too: every child of the
/// process gets SIGKILL. Before any of that it prints the threads of the
/// daemon and of the test process, with their kernel stacks, so that a
/// hang says where it was.
pub struct Watchdog {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Starts watching.
    pub fn start(limit: Duration, what: &'static str, pid: u32, mounts: &[&Path]) -> Watchdog {
        Watchdog::following(limit, what, move || Some(pid), mounts)
    }

    /// [`start`](Watchdog::start) for a daemon whose pid changes (a live
    /// upgrade): `pid` names the one serving when the limit passes.
    pub fn following(
        limit: Duration,
        what: &'static str,
        pid: impl Fn() -> Option<u32> + Send + 'static,
        mounts: &[&Path],
    ) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let mounts: Vec<PathBuf> = mounts.iter().map(|p| p.to_path_buf()).collect();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline {
                if flag.load(Ordering::Acquire) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let daemon = pid();
            // Straight to fd 2: the test harness captures what `eprintln!`
            // prints and would drop it at the exit below.
            let mut report = format!("watchdog: {what} still running after {limit:?}; ending it\n");
            if let Some(pid) = daemon {
                report += &threads_report("the daemon", pid);
            }
            report += &threads_report("this test process", std::process::id());
            let _ = std::io::Write::write_all(&mut std::io::stderr(), report.as_bytes());
            if let Some(pid) = daemon {
                // SAFETY: kill(2) on the daemon's pid, which this test started.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            for m in &mounts {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
            // The exit ends every test of this process, but not what they
            // started: their daemons and loads would keep serving and
            // using mounts nobody unmounts.
            for child in own_children() {
                // SAFETY: kill(2) of a child of this process, by its pid.
                unsafe { libc::kill(child, libc::SIGKILL) };
            }
            std::process::exit(101);
        });
        Watchdog {
            done,
            thread: Some(thread),
        }
    }
}

/// Each thread of process `pid`: its name, state, where it sleeps in the
/// kernel (`wchan`) and its kernel stack, as far as /proc tells.
fn threads_report(whose: &str, pid: u32) -> String {
    let mut out = format!("watchdog: threads of {whose} (pid {pid}):\n");
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out + "  (gone)\n";
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        let stat = read("stat");
        // The state is the field after the parenthesised name.
        let state = stat
            .rsplit(") ")
            .next()
            .and_then(|rest| rest.split(' ').next());
        out += &format!(
            "  {} {} {} {}\n",
            task.file_name().to_string_lossy(),
            read("comm").trim(),
            state.unwrap_or("?"),
            read("wchan").trim()
        );
        for frame in read("stack").lines().take(8) {
            out += &format!("      {frame}\n");
        }
    }
    out
}

/// The pids of this process's children: those of each of its threads,
/// as /proc lists them (`task/TID/children`).
fn own_children() -> Vec<libc::pid_t> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Polls `cond` every 50 ms until it holds or `limit` passes; returns
/// whether it held.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// truncate(2), which rustix lacks (safe to call in an [`as_user`] child).
pub fn truncate(path: &std::ffi::CStr, len: i64) -> Result<(), Errno> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    if unsafe { libc::truncate(path.as_ptr(), len) } == 0 {
        Ok(())
    } else {
        Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO))
    }
}

/// Forks a child that runs `body` and exits with the code it returns;
/// the child's pid. `body` must follow the rules of [`as_user`]: system
/// calls on buffers prepared before the fork, nothing that allocates or
/// takes a lock (another thread of the test may hold it forever).
pub fn fork(body: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: fork(2) in a multi-threaded process; the child runs only
    // `body` (async-signal-safe system calls, by this function's
    // contract) and ends with _exit(2), never returning into the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = body();
        // SAFETY: ends the child without running the parent's atexit
        // handlers or destructors.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Runs `f` in a forked child and waits for it at most `limit`: `Some`
/// with what `f` returned, or `None` if the child was still running then.
/// A late child is ended with SIGKILL and reaped, after `unstick` ran: a
/// FUSE request the daemon has already read is waited out even by a
/// killed caller, so `unstick` must end it (abort the connection). `f`
/// must follow the rules of [`as_user`]: system calls on buffers prepared
/// before the fork, nothing that allocates or takes a lock.
pub fn in_child<F>(limit: Duration, unstick: impl FnOnce(), f: F) -> Option<Result<(), Errno>>
where
    F: FnOnce() -> Result<(), Errno>,
{
    let pid = fork(|| match f() {
        Ok(()) => 0,
        Err(e) => e.raw_os_error(),
    });
    let child = rustix::process::Pid::from_raw(pid).unwrap();
    let pidfd = rustix::process::pidfd_open(child, rustix::process::PidfdFlags::empty())
        .expect("pidfd_open of the child");
    let mut fds = [libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&pidfd),
        events: libc::POLLIN,
        revents: 0,
    }];
    // A pidfd becomes readable when its process exits.
    let deadline = Instant::now() + limit;
    let ready = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout_ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fds` is a valid array of one pollfd for the call's
        // duration.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, timeout_ms) };
        if n >= 0 {
            break n > 0;
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "poll: {e}");
    };
    if !ready {
        unstick();
        // SAFETY: kill(2) of the child forked above, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above; `status` is a valid
    // out-pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
    if !ready {
        return None;
    }
    assert!(
        libc::WIFEXITED(status),
        "the child died: wait status {status:#x}, signal {}",
        libc::WTERMSIG(status)
    );
    match libc::WEXITSTATUS(status) {
        0 => Some(Ok(())),
        e => Some(Err(Errno::from_raw_os_error(e))),
    }
}

/// Stops the child `pid` (one this test spawned) with SIGSTOP and returns
/// once every one of its threads has stopped, so that none can still take
/// a request off /dev/fuse.
pub fn stop_child(pid: u32) {
    let pid = libc::pid_t::try_from(pid).unwrap();
    // SAFETY: kill(2) of a child this test started, by its pid.
    let r = unsafe { libc::kill(pid, libc::SIGSTOP) };
    assert_eq!(r, 0, "SIGSTOP: {}", std::io::Error::last_os_error());
    // SAFETY: siginfo_t is plain data, valid all-zero; waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // The group stop is reported once all threads stopped. WNOWAIT
        // leaves the report (and the child's exit status, later) in place
        // for std's Child.
        // SAFETY: waitid(2) on our own child with a valid siginfo pointer.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WSTOPPED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "waitid: {e}");
    }
    let code = info.si_code;
    assert_eq!(code, libc::CLD_STOPPED, "the daemon did not stop: {code}");
}

/// `MAX_HANDLE_SZ`: the most bytes a file handle takes.
const MAX_HANDLE_SZ: usize = 128;

/// A file handle from `name_to_handle_at(2)`, as an NFS server keeps one:
/// `struct file_handle` with room for the largest handle.
#[derive(Debug, Clone, PartialEq, Eq)]
#[repr(C)]
pub struct FileHandle {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    f_handle: [u8; MAX_HANDLE_SZ],
}

impl FileHandle {
    /// The handle of `path` (a final symlink not followed).
    pub fn of(path: &Path) -> Result<FileHandle, Errno> {
        let mut handle = FileHandle {
            handle_bytes: MAX_HANDLE_SZ as libc::c_uint,
            handle_type: 0,
            f_handle: [0; MAX_HANDLE_SZ],
        };
        let path = c(path);
        let mut mount_id = 0;
        // SAFETY: `handle` is a `struct file_handle` whose header announces
        // the MAX_HANDLE_SZ bytes that follow it; `path` is NUL-terminated;
        // `mount_id` is a valid out-pointer.
        let r = unsafe {
            libc::name_to_handle_at(
                libc::AT_FDCWD,
                path.as_ptr(),
                std::ptr::from_mut(&mut handle).cast(),
                &mut mount_id,
                0,
            )
        };
        if r == 0 {
            Ok(handle)
        } else {
            Err(last_errno())
        }
    }

    /// `open_by_handle_at(2)` of this handle on the filesystem `mount` (an
    /// fd opened on it, not `O_PATH`) is on, with `flags` and `O_CLOEXEC`.
    pub fn open(
        &self,
        mount: &impl std::os::fd::AsFd,
        flags: libc::c_int,
    ) -> Result<std::os::fd::OwnedFd, Errno> {
        use std::os::fd::{AsRawFd, FromRawFd};
        let mut handle = self.clone();
        // SAFETY: `handle` is a `struct file_handle` name_to_handle_at
        // filled in, valid for the length its header gives;
        // open_by_handle_at only reads it. `mount` is open for the call.
        let fd = unsafe {
            libc::open_by_handle_at(
                mount.as_fd().as_raw_fd(),
                std::ptr::from_mut(&mut handle).cast(),
                flags | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(last_errno());
        }
        // SAFETY: a new descriptor that nothing else owns.
        Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
    }
}

/// A directory fd on the filesystem at `path`, as
/// [`FileHandle::open`] wants one (`open_by_handle_at` refuses `O_PATH`).
pub fn mount_fd(path: &Path) -> std::os::fd::OwnedFd {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap()
}

/// The errno of the last failed libc call.
fn last_errno() -> Errno {
    Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO)
}

/// The modes a mount is tested in when what a program holds open must
/// carry over: writeback cache, writethrough, kernel passthrough, and
/// `allow_other` (credentials switched).
pub const MODES: [&[&str]; 4] = [
    &["-o", "writeback"],
    &["-o", "no_writeback"],
    &["--passthrough"],
    &["-o", "allow_other"],
];

/// A write lock on all of a file, as fcntl takes it (no allocation, so it
/// may be made in a forked child).
pub fn write_lock_all() -> libc::flock {
    // SAFETY: flock is plain data, valid all-zero.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl
}

/// Takes a write lock on all of `fd` (F_SETLK, this process).
pub fn posix_lock(fd: i32) {
    let fl = write_lock_all();
    // SAFETY: `fl` is a live flock; fcntl only reads it.
    let r = unsafe { libc::fcntl(fd, libc::F_SETLK, &fl) };
    assert_eq!(r, 0, "F_SETLK: {}", std::io::Error::last_os_error());
}

/// From another process: whether F_GETLK on `path` sees a write lock
/// held by `holder`.
pub fn lock_seen_by_another(path: &Path, holder: u32) -> bool {
    let path = c(path);
    let pid = fork(|| {
        // SAFETY: raw system calls on a path prepared before the fork.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_RDWR);
            if fd < 0 {
                return 2;
            }
            let mut fl = write_lock_all();
            if libc::fcntl(fd, libc::F_GETLK, &mut fl) != 0 {
                return 3;
            }
            if fl.l_type == libc::F_WRLCK as i16 && fl.l_pid == holder as i32 {
                0
            } else {
                1
            }
        }
    });
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status), "the F_GETLK child died");
    match libc::WEXITSTATUS(status) {
        0 => true,
        1 => false,
        e => panic!("the F_GETLK child failed ({e})"),
    }
}

/// What a program holds open on a mount, to check across a hand-over or a
/// crash of its server: a file written and read through one descriptor, a
/// 2,000-entry directory listing read 700 entries before and the rest
/// after (every name exactly once), and a shared mapping written before
/// and after, then msync'd.
pub struct HeldOpen {
    names: Vec<String>,
    listing: std::fs::ReadDir,
    seen: Vec<String>,
    file: std::fs::File,
    mapped: std::fs::File,
    map: *mut libc::c_void,
}

impl HeldOpen {
    /// Opens all of it on the mount at `mnt` and writes the first halves.
    pub fn open(mnt: &Path) -> HeldOpen {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let dir = mnt.join("dir");
        std::fs::create_dir(&dir).unwrap();
        let names: Vec<String> = (0..2000).map(|i| format!("entry-{i:04}")).collect();
        for n in &names {
            std::fs::write(dir.join(n), b"").unwrap();
        }
        let mut listing = std::fs::read_dir(&dir).unwrap();
        let seen = (&mut listing)
            .take(700)
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let rw = |name: &str| {
            std::fs::File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(mnt.join(name))
                .unwrap()
        };
        let mut file = rw("file");
        file.write_all(b"before ").unwrap();
        let mapped = rw("mapped");
        mapped.set_len(4096).unwrap();
        // SAFETY: a shared mapping of 4096 bytes of a file of that size,
        // unmapped in `check` before the file is closed.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                mapped.as_raw_fd(),
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        // SAFETY: within the mapping made above.
        unsafe { std::ptr::write_bytes(map.cast::<u8>(), b'm', 100) };
        HeldOpen {
            names,
            listing,
            seen,
            file,
            mapped,
            map,
        }
    }

    /// Writes the second halves, reads everything back through the old
    /// descriptors, and checks the source `src` holds it; `what` names the
    /// case in failures.
    pub fn check(mut self, src: &Path, what: &str) {
        use std::io::{Read, Seek, Write};
        self.file.write_all(b"after").unwrap();
        self.file.sync_all().unwrap();
        let mut back = String::new();
        self.file.seek(std::io::SeekFrom::Start(0)).unwrap();
        self.file.read_to_string(&mut back).unwrap();
        assert_eq!(back, "before after", "{what}: through the old descriptor");
        // SAFETY: within the mapping; msync and munmap of exactly it.
        unsafe {
            std::ptr::write_bytes(self.map.cast::<u8>().add(100), b'M', 100);
            assert_eq!(libc::msync(self.map, 4096, libc::MS_SYNC), 0);
            libc::munmap(self.map, 4096);
        }
        drop(self.mapped);
        let on_source = std::fs::read(src.join("mapped")).unwrap();
        assert_eq!(&on_source[..100], &[b'm'; 100][..], "{what}: mapped before");
        assert_eq!(
            &on_source[100..200],
            &[b'M'; 100][..],
            "{what}: mapped after"
        );
        assert_eq!(
            std::fs::read_to_string(src.join("file")).unwrap(),
            "before after",
            "{what}: on the source"
        );
        self.seen.extend(
            self.listing
                .map(|e| e.unwrap().file_name().into_string().unwrap()),
        );
        self.seen.sort();
        assert_eq!(
            self.seen, self.names,
            "{what}: the listing went on where it was"
        );
    }
}

/// Forks a process that opens `path` and waits for a write lock on all of
/// it (F_SETLKW); it exits 0 once it has it, or with the errno that ended
/// the wait (100: the open failed). Its pid.
pub fn fork_lock_waiter(path: &Path) -> libc::pid_t {
    let p = c(path);
    fork(|| {
        // SAFETY: raw system calls on a path prepared before the fork.
        unsafe {
            let fd = libc::open(p.as_ptr(), libc::O_RDWR);
            if fd < 0 {
                return 100;
            }
            let fl = write_lock_all();
            if libc::fcntl(fd, libc::F_SETLKW, &fl) == 0 {
                return 0;
            }
            *libc::__errno_location()
        }
    })
}
