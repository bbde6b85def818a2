//! Mounting a `PassthroughFs` for a test, and the few system calls std
//! does not wrap.
//!
//! [`Mounted`] owns the session and both directories and drops them in the
//! right order (session first: it flushes and unmounts; then the
//! mountpoint; then the source), so a failing test leaves no mount behind.
#![allow(dead_code)] // each test binary uses a different part of this

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastfuse::stats::StatsSnapshot;
use fastfuse::{BackgroundSession, Config, MountOptions, Negotiated, Session};
use fastfuse_passthrough::{Options, PassthroughFs};
use tempfile::TempDir;

/// The fsname every test mount carries, to find leftovers in /proc/mounts.
pub const FSNAME: &str = "fastfuse-passthrough-test";

/// A mounted passthrough filesystem over a fresh source directory.
pub struct Mounted {
    // Field order is drop order: the session unmounts before the
    // directories go.
    session: Option<BackgroundSession>,
    /// The filesystem, shared with the session.
    pub fs: Arc<PassthroughFs>,
    /// What INIT agreed.
    pub negotiated: Negotiated,
    mnt: TempDir,
    src: TempDir,
}

/// A test configuration: two workers, writeback as asked.
pub fn config(writeback: bool) -> Config {
    Config {
        writeback_cache: writeback,
        threads: 2,
        ..Default::default()
    }
}

/// Mounts with the writeback cache on or off and default options.
pub fn mount(writeback: bool) -> Mounted {
    mount_with(
        config(writeback),
        Options::default(),
        MountOptions::default(),
    )
}

/// Mounts with everything chosen by the test (`mount.fsname` is set here).
pub fn mount_with(config: Config, options: Options, mount: MountOptions) -> Mounted {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let src = tempfile::Builder::new()
        .prefix("fastfuse-src")
        .tempdir()
        .unwrap();
    let mnt = tempfile::Builder::new()
        .prefix("fastfuse-mnt")
        .tempdir()
        .unwrap();
    let fs = Arc::new(PassthroughFs::new(src.path(), options).unwrap());
    let mount = MountOptions {
        fsname: FSNAME.into(),
        ..mount
    };
    let session = Session::mount(fs.clone(), mnt.path(), &mount, config).unwrap();
    let negotiated = *session.connection().negotiated();
    let session = session.spawn().unwrap();
    Mounted {
        session: Some(session),
        fs,
        negotiated,
        mnt,
        src,
    }
}

impl Mounted {
    /// The mountpoint.
    pub fn mnt(&self) -> &Path {
        self.mnt.path()
    }

    /// The source directory.
    pub fn src(&self) -> &Path {
        self.src.path()
    }

    /// `rel` under the mountpoint.
    pub fn at(&self, rel: &str) -> PathBuf {
        self.mnt.path().join(rel)
    }

    /// `rel` under the source.
    pub fn source(&self, rel: &str) -> PathBuf {
        self.src.path().join(rel)
    }

    /// The session's statistics.
    pub fn stats(&self) -> StatsSnapshot {
        self.session.as_ref().unwrap().stats().snapshot()
    }

    /// Requests of one opcode served so far.
    pub fn count(&self, op: &str) -> u64 {
        self.stats().ops.get(op).map_or(0, |s| s.count)
    }

    /// Unmounts now (the drop would too) and reports errors.
    pub fn unmount(mut self) {
        self.session.take().unwrap().unmount().unwrap();
    }

    /// Drops the kernel's dentry and inode caches and waits until the
    /// filesystem's inode table is back to the root alone (the kernel's
    /// FORGETs arrive asynchronously). Returns the last count seen.
    pub fn forget_all(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
            let n = self.fs.inode_count();
            if n == 1 || Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether some mount of this test suite is still at `mnt`.
pub fn mounted_at(mnt: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let mnt = mnt.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.starts_with(FSNAME) && l.split(' ').nth(1) == Some(&*mnt))
}

/// The errno of an io::Error (0 if it has none).
pub fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// `path` as a C string.
pub fn c(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

fn check(ret: i64) -> io::Result<i64> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// renameat2(AT_FDCWD, from, AT_FDCWD, to, flags).
pub fn renameat2(from: &Path, to: &Path, flags: u32) -> io::Result<()> {
    let (from, to) = (c(from), c(to));
    // SAFETY: both paths are NUL-terminated C strings alive for the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// setxattr(path, name, value, 0).
pub fn setxattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let (path, name) = (c(path), CString::new(name).unwrap());
    // SAFETY: NUL-terminated strings; `value` valid for its length.
    check(unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    } as i64)
    .map(drop)
}

/// getxattr(path, name, buf of `size`): the length and the bytes read.
pub fn getxattr(path: &Path, name: &str, size: usize) -> io::Result<(usize, Vec<u8>)> {
    let (path, name) = (c(path), CString::new(name).unwrap());
    let mut buf = vec![0u8; size];
    // SAFETY: NUL-terminated strings; `buf` valid for `size` bytes.
    let n =
        check(
            unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), size) }
                as i64,
        )? as usize;
    buf.truncate(n.min(size));
    Ok((n, buf))
}

/// listxattr(path, buf of `size`).
pub fn listxattr(path: &Path, size: usize) -> io::Result<(usize, Vec<u8>)> {
    let path = c(path);
    let mut buf = vec![0u8; size];
    // SAFETY: NUL-terminated path; `buf` valid for `size` bytes.
    let n = check(unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), size) } as i64)?
        as usize;
    buf.truncate(n.min(size));
    Ok((n, buf))
}

/// removexattr(path, name).
pub fn removexattr(path: &Path, name: &str) -> io::Result<()> {
    let (path, name) = (c(path), CString::new(name).unwrap());
    // SAFETY: NUL-terminated strings.
    check(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) } as i64).map(drop)
}

/// lseek(file, offset, whence).
pub fn lseek(file: &File, offset: i64, whence: i32) -> io::Result<i64> {
    // SAFETY: plain call on an open descriptor.
    check(unsafe { libc::lseek(file.as_raw_fd(), offset, whence) })
}

/// fallocate(file, mode, offset, len).
pub fn fallocate(file: &File, mode: i32, offset: i64, len: i64) -> io::Result<()> {
    // SAFETY: plain call on an open descriptor.
    check(unsafe { libc::fallocate(file.as_raw_fd(), mode, offset, len) } as i64).map(drop)
}

/// fcntl(file, cmd, &flock{typ, start, len}); returns the flock after.
pub fn fcntl_lock(
    file: &File,
    cmd: i32,
    typ: i32,
    start: i64,
    len: i64,
) -> io::Result<libc::flock> {
    // SAFETY: `struct flock` is plain old data; all-zero is valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = len;
    // SAFETY: the lock commands take a pointer to one valid `struct flock`.
    check(unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl as *mut libc::flock) } as i64)?;
    Ok(fl)
}

/// flock(file, op).
pub fn flock(file: &File, op: i32) -> io::Result<()> {
    // SAFETY: plain call on an open descriptor.
    check(unsafe { libc::flock(file.as_raw_fd(), op) } as i64).map(drop)
}

/// utimensat(AT_FDCWD, path, [atime, mtime], 0); `tv_nsec` may be
/// UTIME_NOW or UTIME_OMIT.
pub fn utimensat(path: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let path = c(path);
    let times = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    // SAFETY: NUL-terminated path; `times` holds the two timespecs read.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), 0) } as i64)
        .map(drop)
}

/// truncate(path, len): a SETATTR without a file handle.
pub fn truncate(path: &Path, len: i64) -> io::Result<()> {
    let path = c(path);
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::truncate(path.as_ptr(), len) } as i64).map(drop)
}

/// mknod(path, mode, dev).
pub fn mknod(path: &Path, mode: u32, dev: u64) -> io::Result<()> {
    let path = c(path);
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::mknod(path.as_ptr(), mode, dev) } as i64).map(drop)
}

/// access(path, mode).
pub fn access(path: &Path, mode: i32) -> io::Result<()> {
    let path = c(path);
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::access(path.as_ptr(), mode) } as i64).map(drop)
}

/// copy_file_range between two files at the given offsets.
pub fn copy_file_range(
    from: &File,
    off_in: i64,
    to: &File,
    off_out: i64,
    len: usize,
) -> io::Result<usize> {
    let (mut off_in, mut off_out) = (off_in, off_out);
    // SAFETY: the offsets are valid in/out pointers; both fds are open.
    check(unsafe {
        libc::copy_file_range(
            from.as_raw_fd(),
            &mut off_in,
            to.as_raw_fd(),
            &mut off_out,
            len,
            0,
        )
    } as i64)
    .map(|n| n as usize)
}

/// linkat(AT_FDCWD, "/proc/self/fd/N", AT_FDCWD, to, AT_SYMLINK_FOLLOW):
/// gives an O_TMPFILE file a name.
pub fn link_open_file(file: &File, to: &Path) -> io::Result<()> {
    let from = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap();
    let to = c(to);
    // SAFETY: NUL-terminated paths.
    check(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    } as i64)
    .map(drop)
}

/// statvfs(path).
pub fn statvfs(path: &Path) -> io::Result<libc::statvfs> {
    let path = c(path);
    // SAFETY: `struct statvfs` is plain old data.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: NUL-terminated path; `st` is a valid out-pointer.
    check(unsafe { libc::statvfs(path.as_ptr(), &mut st) } as i64)?;
    Ok(st)
}

/// A deterministic, non-repeating-looking byte pattern.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}
