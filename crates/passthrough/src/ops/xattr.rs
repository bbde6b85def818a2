//! Extended attributes, through the inode's /proc/self/fd magic link
//! (the path calls follow it to the inode; the `f*xattr` calls would need
//! a real open, which special files and symlinks cannot always give).

use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use fastfuse::{Caller, Errno, NodeId, Xattr};

use super::attr::Target;
use crate::fs::{c_string, PassthroughFs};
use crate::procfd::FdName;
use crate::sys;

/// The largest value (and name list) Linux has: XATTR_SIZE_MAX and
/// XATTR_LIST_MAX, 64 KiB. Bigger buffers are never needed, so a request
/// asking for more does not get more memory.
const XATTR_MAX: usize = 64 * 1024;

/// Whether the kernel has the `*xattrat` calls (Linux 6.13); cleared at the
/// first ENOSYS.
static XATTRAT: AtomicBool = AtomicBool::new(true);

/// An inode's magic link, for the xattr calls: relative to the open
/// /proc/self/fd where the kernel has the `*xattrat` calls, which leaves
/// one name to resolve, else by the whole /proc/self/fd/N path, whose
/// walk through /proc and /proc/self cost a GETXATTR (the kernel sends two
/// per file written, see below) about half its time.
struct Link<'a> {
    fs: &'a PassthroughFs,
    fd: BorrowedFd<'a>,
}

impl Link<'_> {
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
            match at(self.fs.proc.dir(), FdName::of(self.fd).as_cstr(), buf) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    XATTRAT.store(false, Ordering::Relaxed);
                }
                r => return r,
            }
        }
        path(FdName::path(self.fd).as_cstr(), buf)
    }

    fn get(&self, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
        self.call(
            buf,
            |dir, n, buf| sys::getxattrat(dir, n, name, buf),
            |p, buf| sys::getxattr(p, name, buf),
        )
    }

    fn list(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.call(buf, sys::listxattrat, sys::listxattr)
    }

    fn set(&self, name: &CStr, value: &[u8], flags: libc::c_int) -> io::Result<()> {
        self.call(
            &mut [],
            |dir, n, _| sys::setxattrat(dir, n, name, value, flags),
            |p, _| sys::setxattr(p, name, value, flags),
        )
    }

    fn remove(&self, name: &CStr) -> io::Result<()> {
        self.call(
            &mut [],
            |dir, n, _| sys::removexattrat(dir, n, name),
            |p, _| sys::removexattr(p, name),
        )
    }
}

/// ENOSYS when the options turn xattrs off: the kernel then answers
/// EOPNOTSUPP itself and stops asking.
fn enabled(fs: &PassthroughFs) -> Result<(), Errno> {
    if fs.options.xattr {
        Ok(())
    } else {
        Err(Errno::ENOSYS)
    }
}

/// GETXATTR: size 0 asks for the size ([`Xattr::Size`]); a value larger
/// than `size` is ERANGE (the source says so). The kernel asks for
/// security.capability before every write(2) and chown(2) by anyone
/// (`security_inode_need_killpriv`): FUSE clears SB_NOSEC, so it never
/// learns that a file has none, and no INIT flag changes that.
pub(super) fn getxattr(
    fs: &PassthroughFs,
    _req: &Caller<'_>,
    node: NodeId,
    name: &OsStr,
    size: u32,
) -> Result<Xattr, Errno> {
    enabled(fs)?;
    let inode = fs.inode(node)?;
    let link = Link {
        fs,
        fd: inode.fd.as_fd(),
    };
    let name = c_string(name)?;
    if size == 0 {
        let n = link.get(&name, &mut [])?;
        return Ok(Xattr::Size(n as u32));
    }
    let mut buf = vec![0u8; (size as usize).min(XATTR_MAX)];
    let n = link.get(&name, &mut buf)?;
    buf.truncate(n);
    Ok(Xattr::Data(buf))
}

/// LISTXATTR: NUL-separated names; sizes as for [`get`].
pub(super) fn listxattr(
    fs: &PassthroughFs,
    _req: &Caller<'_>,
    node: NodeId,
    size: u32,
) -> Result<Xattr, Errno> {
    enabled(fs)?;
    let inode = fs.inode(node)?;
    let link = Link {
        fs,
        fd: inode.fd.as_fd(),
    };
    if size == 0 {
        let n = link.list(&mut [])?;
        return Ok(Xattr::Size(n as u32));
    }
    let mut buf = vec![0u8; (size as usize).min(XATTR_MAX)];
    let n = link.list(&mut buf)?;
    buf.truncate(n);
    Ok(Xattr::Data(buf))
}

/// SETXATTR with setxattr(2)'s flags (XATTR_CREATE, XATTR_REPLACE). POSIX
/// ACLs are stored as any xattr: the source checks them and updates the
/// mode from the access ACL itself. With `acl_kill_sgid` the kernel says
/// the caller would have lost the set-group-ID bit by setting the ACL
/// (the source keeps it for the daemon, which may keep it): clear it.
pub(super) fn setxattr(
    fs: &PassthroughFs,
    _req: &Caller<'_>,
    node: NodeId,
    name: &OsStr,
    value: &[u8],
    flags: u32,
    acl_kill_sgid: bool,
) -> Result<(), Errno> {
    enabled(fs)?;
    let inode = fs.inode(node)?;
    let link = Link {
        fs,
        fd: inode.fd.as_fd(),
    };
    let flags = libc::c_int::try_from(flags).map_err(|_| Errno::EINVAL)?;
    link.set(&c_string(name)?, value, flags)?;
    if acl_kill_sgid {
        let target = Target::Path(&inode);
        let mode = target.stat()?.st_mode & 0o7777;
        if mode & libc::S_ISGID != 0 {
            target.chmod(fs, mode & !libc::S_ISGID)?;
        }
    }
    Ok(())
}

/// REMOVEXATTR.
pub(super) fn removexattr(
    fs: &PassthroughFs,
    _req: &Caller<'_>,
    node: NodeId,
    name: &OsStr,
) -> Result<(), Errno> {
    enabled(fs)?;
    let inode = fs.inode(node)?;
    let link = Link {
        fs,
        fd: inode.fd.as_fd(),
    };
    link.remove(&c_string(name)?)?;
    Ok(())
}
