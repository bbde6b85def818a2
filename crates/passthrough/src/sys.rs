//! Safe wrappers over the system calls the passthrough filesystem makes.
//!
//! The only module of the crate allowed `unsafe` (the credential switch in
//! `creds` is safe code over the per-thread wrappers here). Every wrapper
//! takes borrowed descriptors and `&CStr` paths, so the only invariants a
//! `// SAFETY:` comment has to argue are the C call's own: pointers valid
//! for the lengths passed, and descriptors that stay open for the duration
//! of the call (guaranteed by the borrow).
//!
//! Each wrapper's doc starts with the call it makes; the man page of that
//! call is the reference. Errors are `io::Error::last_os_error()`.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Turns a `-1`-on-error return value into an `io::Result`.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Like [`check`] for calls that return `ssize_t`.
fn check_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Whether `err` is EINTR, after which a call that changed nothing is
/// simply repeated.
fn interrupted(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::EINTR)
}

/// `openat(dir, path, flags, mode)` — [openat(2)]. `O_CLOEXEC` is always
/// added: the daemon never wants these descriptors in a child.
///
/// [openat(2)]: https://man7.org/linux/man-pages/man2/openat.2.html
pub(crate) fn openat(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: `path` is NUL-terminated and outlives the call; `dir` is
        // open for the call (borrowed). openat(2) takes the mode as a
        // variadic `unsigned int`, which is what `mode_t` is on Linux.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                path.as_ptr(),
                flags | libc::O_CLOEXEC,
                libc::c_uint::from(mode),
            )
        };
        match check(fd) {
            // SAFETY: openat(2) returned a new descriptor that nothing else
            // owns.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(e) if interrupted(&e) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `open(path, flags)` — [open(2)] of an absolute path, with `O_CLOEXEC`.
/// Used once, for the source root and `/proc/self/fd`.
///
/// [open(2)]: https://man7.org/linux/man-pages/man2/open.2.html
pub(crate) fn open(path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: `path` is NUL-terminated; the returned descriptor is new and
    // owned by nobody else.
    let fd = check(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: as above: a fresh descriptor from open(2).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An all-zero `struct stat`, the out-parameter of the stat calls.
pub(crate) fn zeroed_stat() -> libc::stat {
    // SAFETY: `struct stat` is plain old data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// `fstatat(dir, path, &st, flags)` — [fstatat(2)]. With `path` empty and
/// `AT_EMPTY_PATH` it stats `dir` itself, which works on `O_PATH` fds.
///
/// [fstatat(2)]: https://man7.org/linux/man-pages/man2/fstatat.2.html
pub(crate) fn fstatat(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
) -> io::Result<libc::stat> {
    let mut st = zeroed_stat();
    // SAFETY: `path` is NUL-terminated, `st` is a valid out-pointer for one
    // `struct stat`, `dir` is open for the call.
    check(unsafe { libc::fstatat(dir.as_raw_fd(), path.as_ptr(), &mut st, flags) })?;
    Ok(st)
}

/// `fstatat(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)`: the attributes
/// of the inode `fd` refers to, `O_PATH` or not.
pub(crate) fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    fstatat(fd, c"", libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW)
}

/// `readlinkat(dir, path, buf)` — [readlinkat(2)]; an empty `path` reads
/// the symlink `dir` itself refers to (an `O_PATH|O_NOFOLLOW` fd).
///
/// [readlinkat(2)]: https://man7.org/linux/man-pages/man2/readlinkat.2.html
pub(crate) fn readlinkat(dir: BorrowedFd<'_>, path: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` writable bytes; `path` is
    // NUL-terminated; `dir` is open.
    check_size(unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            path.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })
}

/// `mknodat(dir, path, mode, dev)` — [mknodat(2)].
///
/// [mknodat(2)]: https://man7.org/linux/man-pages/man2/mknodat.2.html
pub(crate) fn mknodat(
    dir: BorrowedFd<'_>,
    path: &CStr,
    mode: libc::mode_t,
    dev: libc::dev_t,
) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated; `dir` is open.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), path.as_ptr(), mode, dev) }).map(drop)
}

/// `mkdirat(dir, path, mode)` — [mkdirat(2)].
///
/// [mkdirat(2)]: https://man7.org/linux/man-pages/man2/mkdirat.2.html
pub(crate) fn mkdirat(dir: BorrowedFd<'_>, path: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated; `dir` is open.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), path.as_ptr(), mode) }).map(drop)
}

/// `symlinkat(target, dir, path)` — [symlinkat(2)].
///
/// [symlinkat(2)]: https://man7.org/linux/man-pages/man2/symlinkat.2.html
pub(crate) fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, path: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated; `dir` is open.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), path.as_ptr()) }).map(drop)
}

/// `unlinkat(dir, path, flags)` — [unlinkat(2)]; `AT_REMOVEDIR` for rmdir.
///
/// [unlinkat(2)]: https://man7.org/linux/man-pages/man2/unlinkat.2.html
pub(crate) fn unlinkat(dir: BorrowedFd<'_>, path: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated; `dir` is open.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), path.as_ptr(), flags) }).map(drop)
}

/// `renameat2(old_dir, old, new_dir, new, flags)` — [renameat2(2)], made
/// as the raw system call so that it does not depend on the C library's
/// version.
///
/// [renameat2(2)]: https://man7.org/linux/man-pages/man2/renameat2.2.html
pub(crate) fn renameat2(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
    flags: libc::c_uint,
) -> io::Result<()> {
    // SAFETY: both paths are NUL-terminated; both directory fds are open;
    // renameat2 takes (int, const char *, int, const char *, unsigned int).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            flags,
        )
    };
    check(ret as libc::c_int).map(drop)
}

/// `linkat(old_dir, old, new_dir, new, flags)` — [linkat(2)].
///
/// [linkat(2)]: https://man7.org/linux/man-pages/man2/linkat.2.html
pub(crate) fn linkat(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
    flags: libc::c_int,
) -> io::Result<()> {
    // SAFETY: both paths are NUL-terminated; both fds are open.
    check(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// `fchmodat(dir, path, mode, 0)` — [fchmodat(2)], following the last
/// component (used on `/proc/self/fd/N`, whose magic link leads to the
/// inode itself).
///
/// [fchmodat(2)]: https://man7.org/linux/man-pages/man2/fchmodat.2.html
pub(crate) fn fchmodat(dir: BorrowedFd<'_>, path: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated; `dir` is open.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), path.as_ptr(), mode, 0) }).map(drop)
}

/// Whether fchmodat2(2) (Linux 6.6) can be used: cleared at its first
/// ENOSYS, so that an older kernel pays for the probe once, or by
/// [`fchmodat2_refused`].
static FCHMODAT2: AtomicBool = AtomicBool::new(true);

/// Stops [`fchmod_empty`] from trying fchmodat2 again: a seccomp filter
/// that does not know the call (a container's default profile, older than
/// the call) answers EPERM, which the caller finds out when the magic link
/// then succeeds.
pub(crate) fn fchmodat2_refused() {
    FCHMODAT2.store(false, Ordering::Relaxed);
}

/// `fchmodat2(fd, "", mode, AT_EMPTY_PATH)` — [fchmodat2(2)] on the inode
/// `fd` refers to, `O_PATH` or not, with no path walked: half the cost of
/// reaching it through `/proc/self/fd/N`. `None` on a kernel without
/// fchmodat2, where the caller takes the magic link instead.
///
/// [fchmodat2(2)]: https://man7.org/linux/man-pages/man2/fchmodat.2.html
pub(crate) fn fchmod_empty(fd: BorrowedFd<'_>, mode: libc::mode_t) -> Option<io::Result<()>> {
    if !FCHMODAT2.load(Ordering::Relaxed) {
        return None;
    }
    // SAFETY: the empty path is NUL-terminated; `fd` is open; fchmodat2
    // takes (dirfd, path, mode, flags) and reads nothing else.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            fd.as_raw_fd(),
            c"".as_ptr(),
            mode,
            libc::AT_EMPTY_PATH,
        )
    };
    match check_size(r as isize) {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            FCHMODAT2.store(false, Ordering::Relaxed);
            None
        }
        r => Some(r.map(drop)),
    }
}

/// `fchmod(fd, mode)` — [fchmod(2)] on an open (non-`O_PATH`) file.
///
/// [fchmod(2)]: https://man7.org/linux/man-pages/man2/fchmod.2.html
pub(crate) fn fchmod(fd: BorrowedFd<'_>, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: plain call on an open descriptor.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

/// `fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)` —
/// [fchownat(2)] on the inode `fd` refers to (works on `O_PATH` fds).
/// `u32::MAX` (-1) leaves an id unchanged.
///
/// [fchownat(2)]: https://man7.org/linux/man-pages/man2/fchownat.2.html
pub(crate) fn fchown_empty(
    fd: BorrowedFd<'_>,
    uid: libc::uid_t,
    gid: libc::gid_t,
) -> io::Result<()> {
    // SAFETY: the empty path is NUL-terminated; `fd` is open.
    check(unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// `truncate(path, len)` — [truncate(2)]; `path` is a `/proc/self/fd/N`
/// magic link, because truncate has no `*at` form.
///
/// [truncate(2)]: https://man7.org/linux/man-pages/man2/truncate.2.html
pub(crate) fn truncate(path: &CStr, len: i64) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated.
    check(unsafe { libc::truncate(path.as_ptr(), len) }).map(drop)
}

/// `ftruncate(fd, len)` — [ftruncate(2)].
///
/// [ftruncate(2)]: https://man7.org/linux/man-pages/man2/ftruncate.2.html
pub(crate) fn ftruncate(fd: BorrowedFd<'_>, len: i64) -> io::Result<()> {
    // SAFETY: plain call on an open descriptor.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), len) }).map(drop)
}

/// `utimensat(dir, path, times, flags)` — [utimensat(2)]. `times` holds
/// atime then mtime; `UTIME_NOW`/`UTIME_OMIT` in `tv_nsec` as usual.
///
/// [utimensat(2)]: https://man7.org/linux/man-pages/man2/utimensat.2.html
pub(crate) fn utimensat(
    dir: BorrowedFd<'_>,
    path: &CStr,
    times: &[libc::timespec; 2],
    flags: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `times` points to two timespecs, as utimensat(2) reads;
    // `path` is NUL-terminated; `dir` is open.
    check(unsafe { libc::utimensat(dir.as_raw_fd(), path.as_ptr(), times.as_ptr(), flags) })
        .map(drop)
}

/// `utimensat(fd, "", times, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)` — the
/// times of the inode `fd` refers to, `O_PATH` or not, with no path
/// walked. A kernel that does not take AT_EMPTY_PATH here fails with
/// EINVAL, as it does for bad times: the caller then tries the magic link,
/// which gives the answer either way.
pub(crate) fn utimens_empty(fd: BorrowedFd<'_>, times: &[libc::timespec; 2]) -> io::Result<()> {
    utimensat(
        fd,
        c"",
        times,
        libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
    )
}

/// `futimens(fd, times)` — [futimens(3)].
///
/// [futimens(3)]: https://man7.org/linux/man-pages/man3/futimens.3.html
pub(crate) fn futimens(fd: BorrowedFd<'_>, times: &[libc::timespec; 2]) -> io::Result<()> {
    // SAFETY: `times` points to two timespecs; `fd` is open.
    check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) }).map(drop)
}

/// `pread(fd, buf, offset)` — [pread(2)], repeated on EINTR. May return
/// fewer bytes than asked (the caller loops).
///
/// [pread(2)]: https://man7.org/linux/man-pages/man2/pread.2.html
pub(crate) fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], offset: i64) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for `buf.len()` writable bytes; `fd` open.
        let r =
            unsafe { libc::pread64(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), offset) };
        match check_size(r) {
            Err(e) if interrupted(&e) => continue,
            other => return other,
        }
    }
}

/// `pwrite(fd, buf, offset)` — [pwrite(2)], repeated on EINTR. May write
/// fewer bytes than given (the caller loops).
///
/// [pwrite(2)]: https://man7.org/linux/man-pages/man2/pwrite.2.html
pub(crate) fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], offset: i64) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for `buf.len()` readable bytes; `fd` open.
        let r = unsafe { libc::pwrite64(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), offset) };
        match check_size(r) {
            Err(e) if interrupted(&e) => continue,
            other => return other,
        }
    }
}

/// `fsync(fd)` or, with `datasync`, `fdatasync(fd)` — [fsync(2)].
///
/// [fsync(2)]: https://man7.org/linux/man-pages/man2/fsync.2.html
pub(crate) fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> io::Result<()> {
    // SAFETY: plain calls on an open descriptor.
    let r = unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    };
    check(r).map(drop)
}

/// `syncfs(fd)` — [syncfs(2)]; `fd` must not be `O_PATH`.
///
/// [syncfs(2)]: https://man7.org/linux/man-pages/man2/syncfs.2.html
pub(crate) fn syncfs(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain call on an open descriptor.
    check(unsafe { libc::syncfs(fd.as_raw_fd()) }).map(drop)
}

/// `fstatvfs(fd)` — [fstatvfs(3)] (fstatfs(2) underneath, which accepts
/// `O_PATH` fds).
///
/// [fstatvfs(3)]: https://man7.org/linux/man-pages/man3/fstatvfs.3.html
pub(crate) fn fstatvfs(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs> {
    // SAFETY: `struct statvfs` is plain old data; all-zero is valid.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer; `fd` is open.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// `faccessat2(dir, path, mode, flags)` — [faccessat(2)], the raw system
/// call: the C library may emulate `AT_EACCESS` with the effective uid,
/// where the kernel checks the thread's fsuid, which is what a switched
/// worker needs.
///
/// [faccessat(2)]: https://man7.org/linux/man-pages/man2/faccessat.2.html
pub(crate) fn faccessat(
    dir: BorrowedFd<'_>,
    path: &CStr,
    mode: libc::c_int,
    flags: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated; `dir` is open; faccessat2 takes
    // (int, const char *, int, int).
    let r = unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            mode,
            flags,
        )
    };
    check(r as libc::c_int).map(drop)
}

/// The system call numbers of the `*xattrat` calls (Linux 6.13), the same
/// on every architecture; the libc crate does not have them for all yet.
const SYS_SETXATTRAT: libc::c_long = 463;
const SYS_GETXATTRAT: libc::c_long = 464;
const SYS_LISTXATTRAT: libc::c_long = 465;
const SYS_REMOVEXATTRAT: libc::c_long = 466;

/// `struct xattr_args` of the `*xattrat` calls.
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// `getxattrat(dir, path, 0, name, {buf})` — getxattr(2) relative to `dir`
/// (Linux 6.13; ENOSYS before). An empty `buf` asks for the size.
pub(crate) fn getxattrat(
    dir: BorrowedFd<'_>,
    path: &CStr,
    name: &CStr,
    buf: &mut [u8],
) -> io::Result<usize> {
    let mut args = XattrArgs {
        value: buf.as_mut_ptr() as u64,
        size: u32::try_from(buf.len()).unwrap_or(u32::MAX),
        flags: 0,
    };
    // SAFETY: both strings are NUL-terminated; `args` names `buf`, valid
    // for `args.size` writable bytes, and its own size is passed with it.
    let r = unsafe {
        libc::syscall(
            SYS_GETXATTRAT,
            dir.as_raw_fd(),
            path.as_ptr(),
            0,
            name.as_ptr(),
            &mut args as *mut XattrArgs,
            size_of::<XattrArgs>(),
        )
    };
    check_size(r as isize)
}

/// `setxattrat(dir, path, 0, name, {value, flags})` — setxattr(2)
/// relative to `dir` (Linux 6.13; ENOSYS before).
pub(crate) fn setxattrat(
    dir: BorrowedFd<'_>,
    path: &CStr,
    name: &CStr,
    value: &[u8],
    flags: libc::c_int,
) -> io::Result<()> {
    let mut args = XattrArgs {
        value: value.as_ptr() as u64,
        size: u32::try_from(value.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
        flags: flags as u32,
    };
    // SAFETY: both strings are NUL-terminated; `args` names `value`,
    // valid for `args.size` readable bytes, and its own size is passed.
    let r = unsafe {
        libc::syscall(
            SYS_SETXATTRAT,
            dir.as_raw_fd(),
            path.as_ptr(),
            0,
            name.as_ptr(),
            &mut args as *mut XattrArgs,
            size_of::<XattrArgs>(),
        )
    };
    check(r as libc::c_int).map(drop)
}

/// `listxattrat(dir, path, 0, buf)` — listxattr(2) relative to `dir`
/// (Linux 6.13; ENOSYS before). An empty `buf` asks for the size.
pub(crate) fn listxattrat(dir: BorrowedFd<'_>, path: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `path` is NUL-terminated; `buf` is valid for `buf.len()`
    // writable bytes.
    let r = unsafe {
        libc::syscall(
            SYS_LISTXATTRAT,
            dir.as_raw_fd(),
            path.as_ptr(),
            0,
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    check_size(r as isize)
}

/// `removexattrat(dir, path, 0, name)` — removexattr(2) relative to `dir`
/// (Linux 6.13; ENOSYS before).
pub(crate) fn removexattrat(dir: BorrowedFd<'_>, path: &CStr, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated.
    let r = unsafe {
        libc::syscall(
            SYS_REMOVEXATTRAT,
            dir.as_raw_fd(),
            path.as_ptr(),
            0,
            name.as_ptr(),
        )
    };
    check(r as libc::c_int).map(drop)
}

/// `getxattr(path, name, buf)` — [getxattr(2)]; an empty `buf` asks for
/// the value's size.
///
/// [getxattr(2)]: https://man7.org/linux/man-pages/man2/getxattr.2.html
pub(crate) fn getxattr(path: &CStr, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: both strings are NUL-terminated; `buf` is valid for
    // `buf.len()` writable bytes (the kernel writes nothing when it is 0).
    check_size(unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })
}

/// `setxattr(path, name, value, flags)` — [setxattr(2)].
///
/// [setxattr(2)]: https://man7.org/linux/man-pages/man2/setxattr.2.html
pub(crate) fn setxattr(
    path: &CStr,
    name: &CStr,
    value: &[u8],
    flags: libc::c_int,
) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated; `value` is valid for
    // `value.len()` readable bytes.
    check(unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

/// `listxattr(path, buf)` — [listxattr(2)]; an empty `buf` asks for the
/// list's size.
///
/// [listxattr(2)]: https://man7.org/linux/man-pages/man2/listxattr.2.html
pub(crate) fn listxattr(path: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `path` is NUL-terminated; `buf` is valid for `buf.len()`
    // writable bytes.
    check_size(unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// `removexattr(path, name)` — [removexattr(2)].
///
/// [removexattr(2)]: https://man7.org/linux/man-pages/man2/removexattr.2.html
pub(crate) fn removexattr(path: &CStr, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated.
    check(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) }).map(drop)
}

/// A `struct flock` describing `[start, start+len)` (`len` 0: to the end).
pub(crate) fn flock_struct(typ: libc::c_short, start: i64, len: i64) -> libc::flock {
    // SAFETY: `struct flock` is plain old data; all-zero is valid (and
    // `l_pid` must be 0 for the OFD commands).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = len;
    fl
}

/// `fcntl(fd, cmd, &fl)` for the lock commands (`F_OFD_GETLK`,
/// `F_OFD_SETLK`) — [fcntl(2)]. GETLK writes the answer into `fl`.
///
/// [fcntl(2)]: https://man7.org/linux/man-pages/man2/fcntl.2.html
pub(crate) fn fcntl_lock(
    fd: BorrowedFd<'_>,
    cmd: libc::c_int,
    fl: &mut libc::flock,
) -> io::Result<()> {
    // SAFETY: the lock commands take a pointer to one `struct flock`,
    // valid for reads and writes here; `fd` is open.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), cmd, fl as *mut libc::flock) }).map(drop)
}

/// `flock(fd, op)` — [flock(2)].
///
/// [flock(2)]: https://man7.org/linux/man-pages/man2/flock.2.html
pub(crate) fn flock(fd: BorrowedFd<'_>, op: libc::c_int) -> io::Result<()> {
    // SAFETY: plain call on an open descriptor.
    check(unsafe { libc::flock(fd.as_raw_fd(), op) }).map(drop)
}

/// `fallocate(fd, mode, offset, len)` — [fallocate(2)].
///
/// [fallocate(2)]: https://man7.org/linux/man-pages/man2/fallocate.2.html
pub(crate) fn fallocate(
    fd: BorrowedFd<'_>,
    mode: libc::c_int,
    offset: i64,
    len: i64,
) -> io::Result<()> {
    // SAFETY: plain call on an open descriptor.
    check(unsafe { libc::fallocate64(fd.as_raw_fd(), mode, offset, len) }).map(drop)
}

/// `lseek(fd, offset, whence)` — [lseek(2)]; returns the new offset.
///
/// [lseek(2)]: https://man7.org/linux/man-pages/man2/lseek.2.html
pub(crate) fn lseek(fd: BorrowedFd<'_>, offset: i64, whence: libc::c_int) -> io::Result<u64> {
    // SAFETY: plain call on an open descriptor.
    let r = unsafe { libc::lseek64(fd.as_raw_fd(), offset, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

/// `fcntl(fd, F_GETFL)` — [fcntl(2)]: the open file description's access
/// mode and status flags (`O_PATH` included).
///
/// [fcntl(2)]: https://man7.org/linux/man-pages/man2/fcntl.2.html
pub(crate) fn status_flags(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: F_GETFL takes no argument and only reads the open descriptor.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })
}

/// `copy_file_range(fd_in, &off_in, fd_out, &off_out, len, flags)` —
/// [copy_file_range(2)]; returns bytes copied.
///
/// [copy_file_range(2)]: https://man7.org/linux/man-pages/man2/copy_file_range.2.html
pub(crate) fn copy_file_range(
    fd_in: BorrowedFd<'_>,
    off_in: i64,
    fd_out: BorrowedFd<'_>,
    off_out: i64,
    len: usize,
    flags: libc::c_uint,
) -> io::Result<usize> {
    let mut off_in = off_in;
    let mut off_out = off_out;
    // SAFETY: the offsets are valid in/out pointers to `loff_t`; both fds
    // are open.
    check_size(unsafe {
        libc::copy_file_range(
            fd_in.as_raw_fd(),
            &mut off_in,
            fd_out.as_raw_fd(),
            &mut off_out,
            len,
            flags,
        )
    })
}

/// `getdents64(fd, buf)` — [getdents64(2)]: reads `linux_dirent64` records
/// into `buf` from the directory's current position; 0 at the end.
///
/// [getdents64(2)]: https://man7.org/linux/man-pages/man2/getdents64.2.html
pub(crate) fn getdents64(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for `buf.len()` writable bytes; the kernel
        // writes whole records only. `fd` is open.
        let r = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        match check_size(r as libc::ssize_t) {
            Err(e) if interrupted(&e) => continue,
            other => return other,
        }
    }
}

/// The most bytes a file handle takes (`MAX_HANDLE_SZ` of the kernel).
const MAX_HANDLE_SZ: usize = 128;

/// `struct file_handle` with room for the largest handle: the header the
/// C library declares, followed by the flexible array's bytes.
#[repr(C)]
struct HandleBuf {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    f_handle: [u8; MAX_HANDLE_SZ],
}

impl HandleBuf {
    fn as_mut_ptr(&mut self) -> *mut libc::file_handle {
        std::ptr::from_mut(self).cast()
    }
}

/// A source filesystem's own handle of one of its inodes, from
/// [`name_to_handle`]: it names the inode (and, on filesystems that reuse
/// inode numbers, its generation) without holding it open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceHandle {
    handle_type: libc::c_int,
    bytes: Box<[u8]>,
}

impl SourceHandle {
    /// The handle's type (`handle_type` of `struct file_handle`).
    pub(crate) fn handle_type(&self) -> libc::c_int {
        self.handle_type
    }

    /// The handle's bytes (`f_handle`).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// A handle from its type and bytes, as [`name_to_handle`] once gave
    /// them (a saved state carries them to a successor). `None` when the
    /// bytes are more than any handle holds, which [`open_by_handle`]
    /// could not pass to the kernel.
    pub(crate) fn from_parts(handle_type: libc::c_int, bytes: &[u8]) -> Option<SourceHandle> {
        (bytes.len() <= MAX_HANDLE_SZ).then(|| SourceHandle {
            handle_type,
            bytes: bytes.into(),
        })
    }
}

/// `name_to_handle_at(fd, "", &handle, &mount_id, AT_EMPTY_PATH)` —
/// [name_to_handle_at(2)]: the handle of the inode `fd` refers to (an
/// `O_PATH` fd will do) and the id of the mount it was reached through.
/// EOPNOTSUPP when the source filesystem has no file handles.
///
/// [name_to_handle_at(2)]: https://man7.org/linux/man-pages/man2/name_to_handle_at.2.html
pub(crate) fn name_to_handle(fd: BorrowedFd<'_>) -> io::Result<(SourceHandle, libc::c_int)> {
    let mut buf = HandleBuf {
        handle_bytes: MAX_HANDLE_SZ as libc::c_uint,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `buf` is a `struct file_handle` whose header announces the
    // MAX_HANDLE_SZ bytes that follow it, the most the kernel writes; the
    // path is an empty NUL-terminated string; `mount_id` is a valid
    // out-pointer; `fd` is open for the call.
    check(unsafe {
        libc::name_to_handle_at(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    })?;
    let len = (buf.handle_bytes as usize).min(MAX_HANDLE_SZ);
    Ok((
        SourceHandle {
            handle_type: buf.handle_type,
            bytes: buf.f_handle[..len].into(),
        },
        mount_id,
    ))
}

/// `open_by_handle_at(mount, &handle, flags)` — [open_by_handle_at(2)],
/// with `O_CLOEXEC`: opens the inode `handle` names on the filesystem
/// `mount` is on. ESTALE when that inode no longer exists. Needs
/// CAP_DAC_READ_SEARCH.
///
/// [open_by_handle_at(2)]: https://man7.org/linux/man-pages/man2/open_by_handle_at.2.html
pub(crate) fn open_by_handle(
    mount: BorrowedFd<'_>,
    handle: &SourceHandle,
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    let mut buf = HandleBuf {
        handle_bytes: handle.bytes.len() as libc::c_uint,
        handle_type: handle.handle_type,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    // A SourceHandle comes from name_to_handle or from_parts, which both
    // keep it within MAX_HANDLE_SZ, so it fits.
    buf.f_handle[..handle.bytes.len()].copy_from_slice(&handle.bytes);
    // SAFETY: `buf` is a `struct file_handle` whose header gives the
    // length of the bytes that follow it (at most MAX_HANDLE_SZ, all
    // inside `buf`); the kernel only reads it. `mount` is open for the
    // call; a non-negative result is a new descriptor nobody else owns.
    let fd = check(unsafe {
        libc::open_by_handle_at(mount.as_raw_fd(), buf.as_mut_ptr(), flags | libc::O_CLOEXEC)
    })?;
    // SAFETY: as above: a fresh descriptor from open_by_handle_at(2).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fcntl(fd, F_DUPFD_CLOEXEC, 0)` — a second descriptor for the same open
/// file, see [dup(2)].
///
/// [dup(2)]: https://man7.org/linux/man-pages/man2/dup.2.html
pub(crate) fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes an int and returns a new descriptor.
    let new = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// `close(fd)` — [close(2)], reporting its error (which `OwnedFd`'s drop
/// throws away). The descriptor is gone whatever the result: Linux frees
/// it even when close fails, so it is never retried.
///
/// [close(2)]: https://man7.org/linux/man-pages/man2/close.2.html
pub(crate) fn close(fd: OwnedFd) -> io::Result<()> {
    let raw: RawFd = fd.into_raw_fd();
    // SAFETY: we own `raw` (taken out of the OwnedFd) and close it once.
    check(unsafe { libc::close(raw) }).map(drop)
}

/// `setfsuid(uid)` — [setfsuid(2)], the raw system call: it changes only
/// the calling thread's filesystem uid (glibc's wrapper does the same; the
/// raw call makes that explicit). Returns the previous fsuid.
///
/// [setfsuid(2)]: https://man7.org/linux/man-pages/man2/setfsuid.2.html
pub(crate) fn setfsuid(uid: libc::uid_t) -> libc::uid_t {
    // SAFETY: setfsuid takes a uid and cannot fail in a way that harms
    // memory; it always returns the previous fsuid.
    unsafe { libc::syscall(libc::SYS_setfsuid, uid) as libc::uid_t }
}

/// `setfsgid(gid)` — [setfsgid(2)], per thread; returns the previous fsgid.
///
/// [setfsgid(2)]: https://man7.org/linux/man-pages/man2/setfsgid.2.html
pub(crate) fn setfsgid(gid: libc::gid_t) -> libc::gid_t {
    // SAFETY: as for setfsuid.
    unsafe { libc::syscall(libc::SYS_setfsgid, gid) as libc::gid_t }
}

/// The raw `setgroups(2)` system call, which changes the supplementary
/// groups of the calling *thread* only. (glibc's `setgroups` broadcasts
/// the change to every thread of the process, which is what must not
/// happen here.)
pub(crate) fn set_thread_groups(groups: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: `groups` is valid for `groups.len()` reads of gid_t.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    check(r as libc::c_int).map(drop)
}

/// `getgroups()` — [getgroups(2)]: the calling thread's supplementary
/// groups.
///
/// [getgroups(2)]: https://man7.org/linux/man-pages/man2/getgroups.2.html
pub(crate) fn getgroups() -> io::Result<Vec<libc::gid_t>> {
    // SAFETY: size 0 asks for the count only; the pointer is not used.
    let n = check(unsafe { libc::getgroups(0, std::ptr::null_mut()) })?;
    let mut groups = vec![0; n as usize];
    // SAFETY: `groups` has room for `n` gids.
    let n = check(unsafe { libc::getgroups(n, groups.as_mut_ptr()) })?;
    groups.truncate(n as usize);
    Ok(groups)
}

/// `geteuid()` and `getegid()` — the daemon's effective ids.
pub(crate) fn effective_ids() -> (libc::uid_t, libc::gid_t) {
    // SAFETY: both calls always succeed and touch no memory.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// `unshare(CLONE_FS)` then `umask(mask)`: gives the calling thread its own
/// umask (and cwd/root), so that setting it leaves the rest of the process
/// alone.
pub(crate) fn private_umask(mask: libc::mode_t) -> io::Result<()> {
    // SAFETY: unshare(CLONE_FS) only detaches this thread's fs_struct.
    check(unsafe { libc::unshare(libc::CLONE_FS) })?;
    set_umask(mask);
    Ok(())
}

/// `umask(mask)` for the calling thread's fs_struct.
pub(crate) fn set_umask(mask: libc::mode_t) {
    // SAFETY: umask always succeeds and touches no memory.
    unsafe { libc::umask(mask) };
}

/// `RLIMIT_NOFILE` as (soft, hard).
pub(crate) fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid out-pointer.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) })?;
    Ok((rl.rlim_cur, rl.rlim_max))
}

/// Sets `RLIMIT_NOFILE` to (soft, hard).
pub(crate) fn set_nofile_limit(soft: u64, hard: u64) -> io::Result<()> {
    let rl = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `rl` is a valid in-pointer.
    check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) }).map(drop)
}

/// Blocks every signal in the calling thread: for a helper thread that
/// needs none, so that a process-directed signal (SIGTERM, which a session
/// takes through its signalfd only while every thread blocks it) is never
/// delivered to it, whenever it was started.
/// The directory `dir` names (an `O_PATH` fd will do), opened for reading:
/// `openat(dir, ".", O_RDONLY | O_DIRECTORY)`, which getdents64, fsync and
/// `open_by_handle_at` take where an `O_PATH` fd is refused.
pub(crate) fn open_dir(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    openat(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

/// Puts the calling thread under SCHED_IDLE: it runs only when no other
/// thread wants its CPU.
pub(crate) fn sched_idle() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the call; pid 0 is the
    // calling thread, whose policy alone changes.
    check(unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) }).map(drop)
}

pub(crate) fn block_all_signals() -> io::Result<()> {
    // SAFETY: a sigset_t is plain data initialised by sigfillset;
    // pthread_sigmask reads it, and the old-set pointer may be null.
    let r = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

pub(crate) use fastfuse::{install_wake_handler, WAKE_SIGNAL};

/// A running thread that can be sent the wake signal.
#[derive(Clone, Copy)]
pub(crate) struct WakeableThread(libc::pthread_t);

impl WakeableThread {
    /// The calling thread, with the wake signal unblocked (a thread
    /// inherits its creator's mask).
    pub(crate) fn current() -> io::Result<WakeableThread> {
        // SAFETY: a sigset_t is plain data initialised by sigemptyset;
        // pthread_sigmask reads it and pthread_self cannot fail.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, WAKE_SIGNAL);
            let r = libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            if r != 0 {
                return Err(io::Error::from_raw_os_error(r));
            }
            Ok(WakeableThread(libc::pthread_self()))
        }
    }

    /// `pthread_kill(thread, SIGURG)`. The caller must know the thread has
    /// not exited (`lock_wait` holds a lock the thread takes before it
    /// ends): signalling a thread that is gone is undefined behaviour.
    pub(crate) fn wake(self) {
        // SAFETY: the thread is alive, as the caller guarantees above.
        let r = unsafe { libc::pthread_kill(self.0, WAKE_SIGNAL) };
        if r != 0 {
            tracing::error!(
                "cannot wake a lock waiter: {}",
                io::Error::from_raw_os_error(r)
            );
        }
    }
}

/// `memfd_create(name, MFD_CLOEXEC)` — [memfd_create(2)]: an anonymous
/// file in memory, alive while any descriptor or mapping of it is.
///
/// [memfd_create(2)]: https://man7.org/linux/man-pages/man2/memfd_create.2.html
pub(crate) fn memfd_create(name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    let fd = check(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) })?;
    // SAFETY: a fresh descriptor from memfd_create(2) that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A whole file mapped `MAP_SHARED` read-write, seen as 64-bit atomic
/// words: memory that other processes mapping the same file see too, and
/// that outlives this process when another holds a descriptor of the file.
#[derive(Debug)]
pub(crate) struct SharedWords {
    ptr: std::ptr::NonNull<std::sync::atomic::AtomicU64>,
    words: usize,
}

// SAFETY: the mapping is plain memory accessed only through atomics, so
// any thread may use it; it is unmapped only on drop, by its one owner.
unsafe impl Send for SharedWords {}
// SAFETY: as above: every access through `words()` is atomic.
unsafe impl Sync for SharedWords {}

impl SharedWords {
    /// `mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_SHARED, fd, 0)` —
    /// [mmap(2)] of the first `len` bytes of `fd` (a multiple of 8 and of
    /// the page size, which the caller checked against the file's size).
    ///
    /// [mmap(2)]: https://man7.org/linux/man-pages/man2/mmap.2.html
    pub(crate) fn map(fd: BorrowedFd<'_>, len: usize) -> io::Result<SharedWords> {
        if len == 0 || !len.is_multiple_of(8) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: a new mapping at an address of the kernel's choosing,
        // which cannot overlap any Rust object; `fd` is open for the call
        // (the mapping keeps the file alive by itself after it).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(ptr.cast())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(SharedWords {
            ptr,
            words: len / 8,
        })
    }

    /// The mapping's words.
    pub(crate) fn words(&self) -> &[std::sync::atomic::AtomicU64] {
        // SAFETY: `ptr` is the start of a live mapping of `words * 8`
        // bytes, page-aligned (so aligned for AtomicU64), unmapped only
        // when `self` drops, so it lives as long as the borrow; AtomicU64
        // has the layout of u64, every bit pattern is valid, and other
        // threads and processes touch this memory only through atomics.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.words) }
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no borrow of
        // `words()` outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.words * 8) };
    }
}

/// `fstat(fd).st_size` — the size of the file `fd` refers to.
pub(crate) fn file_size(fd: BorrowedFd<'_>) -> io::Result<u64> {
    Ok(stat_fd(fd)?.st_size as u64)
}
