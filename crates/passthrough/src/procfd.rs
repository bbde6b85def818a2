//! `/proc/self/fd`: how an `O_PATH` descriptor becomes a usable file.
//!
//! An `O_PATH` fd names an inode without opening it; reading, writing and
//! a few metadata calls (chmod, truncate, xattrs, access) need more. The
//! kernel's magic links in `/proc/self/fd` lead straight to the inode the
//! fd refers to, with no path lookup from the source root, so they are the
//! race-free way to get there. The directory is opened once and names are
//! formatted on the stack: no allocation per call.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sys;

/// The open `/proc/self/fd` directory.
///
/// `/proc/self` is resolved when this is opened, to this process's id:
/// create it in the process that serves (after any fork).
#[derive(Debug)]
pub(crate) struct ProcFd {
    dir: OwnedFd,
}

impl ProcFd {
    /// Opens `/proc/self/fd`.
    pub(crate) fn open() -> io::Result<ProcFd> {
        let dir = sys::open(c"/proc/self/fd", libc::O_PATH | libc::O_DIRECTORY)?;
        Ok(ProcFd { dir })
    }

    /// Opens the inode `fd` refers to anew with `flags` (never
    /// `O_NOFOLLOW`: the magic link itself must be followed).
    pub(crate) fn reopen(&self, fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<OwnedFd> {
        sys::openat(self.dir.as_fd(), FdName::of(fd).as_cstr(), flags, 0)
    }

    /// The directory, for `*at` calls together with [`FdName`].
    pub(crate) fn dir(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// The extended attributes of the inode `fd` refers to.
    pub(crate) fn xattrs<'a>(&'a self, fd: BorrowedFd<'a>) -> XattrLink<'a> {
        XattrLink { proc: self, fd }
    }
}

/// Whether the kernel has the `*xattrat` calls (Linux 6.13); cleared at the
/// first ENOSYS.
static XATTRAT: AtomicBool = AtomicBool::new(true);

/// An inode's magic link, for the xattr calls: relative to the open
/// /proc/self/fd where the kernel has the `*xattrat` calls, which leaves
/// one name to resolve, else by the whole /proc/self/fd/N path, whose
/// walk through /proc and /proc/self cost a GETXATTR (the kernel sends two
/// per file written, see `ops::xattr`) about half its time.
pub(crate) struct XattrLink<'a> {
    proc: &'a ProcFd,
    fd: BorrowedFd<'a>,
}

impl XattrLink<'_> {
    /// `at` (the `*xattrat` form, given the directory and the name in it)
    /// or, on kernels without it, `path` (given the whole path); each gets
    /// `buf`, the value or list buffer of the calls that fill one.
    fn call<T>(
        &self,
        buf: &mut [u8],
        at: impl FnOnce(BorrowedFd<'_>, &CStr, &mut [u8]) -> io::Result<T>,
        path: impl FnOnce(&CStr, &mut [u8]) -> io::Result<T>,
    ) -> io::Result<T> {
        if XATTRAT.load(Ordering::Relaxed) {
            match at(self.proc.dir(), FdName::of(self.fd).as_cstr(), buf) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    XATTRAT.store(false, Ordering::Relaxed);
                }
                r => return r,
            }
        }
        path(FdName::path(self.fd).as_cstr(), buf)
    }

    /// getxattr(2) of `name`; an empty `buf` asks for the size.
    pub(crate) fn get(&self, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
        self.call(
            buf,
            |dir, n, buf| sys::getxattrat(dir, n, name, buf),
            |p, buf| sys::getxattr(p, name, buf),
        )
    }

    /// listxattr(2); an empty `buf` asks for the size.
    pub(crate) fn list(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.call(buf, sys::listxattrat, sys::listxattr)
    }

    /// setxattr(2) with its flags.
    pub(crate) fn set(&self, name: &CStr, value: &[u8], flags: libc::c_int) -> io::Result<()> {
        self.call(
            &mut [],
            |dir, n, _| sys::setxattrat(dir, n, name, value, flags),
            |p, _| sys::setxattr(p, name, value, flags),
        )
    }

    /// removexattr(2).
    pub(crate) fn remove(&self, name: &CStr) -> io::Result<()> {
        self.call(
            &mut [],
            |dir, n, _| sys::removexattrat(dir, n, name),
            |p, _| sys::removexattr(p, name),
        )
    }
}

/// Room for "/proc/self/fd/" (14 bytes), ten digits and the NUL.
const NAME_CAPACITY: usize = 32;

/// A descriptor's number as a C string, optionally behind the
/// `/proc/self/fd/` prefix (for calls that have no `*at` form).
pub(crate) struct FdName {
    buf: [u8; NAME_CAPACITY],
    len: usize,
}

impl FdName {
    /// `"N"`, the name of `fd` inside `/proc/self/fd`.
    pub(crate) fn of(fd: BorrowedFd<'_>) -> FdName {
        Self::build(b"", fd)
    }

    /// `"/proc/self/fd/N"`, for truncate(2) and the xattr calls.
    pub(crate) fn path(fd: BorrowedFd<'_>) -> FdName {
        Self::build(b"/proc/self/fd/", fd)
    }

    fn build(prefix: &[u8], fd: BorrowedFd<'_>) -> FdName {
        let mut buf = [0u8; NAME_CAPACITY];
        buf[..prefix.len()].copy_from_slice(prefix);
        // A descriptor is never negative; `as u32` keeps the digits right.
        let mut n = fd.as_raw_fd() as u32;
        let mut digits = [0u8; 10];
        let mut count = 0;
        loop {
            digits[count] = b'0' + (n % 10) as u8;
            count += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for (i, d) in digits[..count].iter().rev().enumerate() {
            buf[prefix.len() + i] = *d;
        }
        // buf[len] stays 0: the terminating NUL.
        FdName {
            buf,
            len: prefix.len() + count,
        }
    }

    /// The name, NUL-terminated.
    pub(crate) fn as_cstr(&self) -> &CStr {
        // The buffer holds digits and a prefix without NULs, then a NUL at
        // `len`, so this cannot fail; fall back to "" rather than panic.
        CStr::from_bytes_with_nul(&self.buf[..=self.len]).unwrap_or(c"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        let f = std::fs::File::open("/").unwrap();
        let n = f.as_raw_fd();
        assert_eq!(
            FdName::of(f.as_fd()).as_cstr().to_str().unwrap(),
            n.to_string()
        );
        assert_eq!(
            FdName::path(f.as_fd()).as_cstr().to_str().unwrap(),
            format!("/proc/self/fd/{n}")
        );
    }

    #[test]
    fn reopen_reaches_the_same_inode() {
        let proc = ProcFd::open().unwrap();
        let dir = sys::open(c"/", libc::O_PATH | libc::O_DIRECTORY).unwrap();
        let again = proc
            .reopen(dir.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY)
            .unwrap();
        let a = sys::stat_fd(dir.as_fd()).unwrap();
        let b = sys::stat_fd(again.as_fd()).unwrap();
        assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino));
    }
}
