//! Extended attributes, through the inode's /proc/self/fd magic link
//! (the path calls follow it to the inode; the `f*xattr` calls would need
//! a real open, which special files and symlinks cannot always give).

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use fastfuse::{Caller, Errno, NodeId, Xattr};

use super::attr::Target;
use crate::fs::{c_string, PassthroughFs};

/// The largest value (and name list) Linux has: XATTR_SIZE_MAX and
/// XATTR_LIST_MAX, 64 KiB. Bigger buffers are never needed, so a request
/// asking for more does not get more memory.
const XATTR_MAX: usize = 64 * 1024;

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
    let link = fs.proc.xattrs(inode.fd.as_fd());
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
    let link = fs.proc.xattrs(inode.fd.as_fd());
    if size == 0 {
        let n = link.list(&mut [])?;
        return Ok(Xattr::Size(n as u32));
    }
    let mut buf = vec![0u8; (size as usize).min(XATTR_MAX)];
    let n = link.list(&mut buf)?;
    buf.truncate(n);
    Ok(Xattr::Data(buf))
}

/// The xattr a file's access ACL is kept in; setting or removing it
/// changes the file's mode too.
const ACL_ACCESS: &[u8] = b"system.posix_acl_access";

/// After a change of `node`'s access ACL, whose group bits the source set
/// from the ACL's mask: without FUSE_POSIX_ACL the kernel marks only the
/// ctime stale (`fuse_update_ctime`; `fuse_set_acl` drops the attributes
/// only with FUSE_POSIX_ACL), and a writeback-cache mount keeps a regular
/// file's ctime itself, so stat would show the old mode until the
/// attribute timeout. Tell the kernel to drop them.
fn access_acl_changed(fs: &PassthroughFs, node: NodeId, name: &OsStr) {
    if name.as_bytes() != ACL_ACCESS {
        return;
    }
    if let Some(session) = fs.session.get().filter(|s| !s.posix_acl) {
        if let Err(e) = session.conn.inval_inode(node, -1, 0) {
            tracing::debug!(node = node.0, "attribute invalidation failed: {e}");
        }
    }
}

/// SETXATTR with setxattr(2)'s flags (XATTR_CREATE, XATTR_REPLACE). POSIX
/// ACLs are stored as any xattr: the source checks them and updates the
/// mode from the access ACL itself (see [`access_acl_changed`] for the
/// kernel's copy of the mode). With `acl_kill_sgid` the kernel says
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
    let link = fs.proc.xattrs(inode.fd.as_fd());
    let flags = libc::c_int::try_from(flags).map_err(|_| Errno::EINVAL)?;
    link.set(&c_string(name)?, value, flags)?;
    access_acl_changed(fs, node, name);
    if acl_kill_sgid {
        let target = Target::Path(&inode);
        let mode = target.stat()?.st_mode & 0o7777;
        if mode & libc::S_ISGID != 0 {
            target.chmod(fs, mode & !libc::S_ISGID)?;
        }
    }
    Ok(())
}

/// REMOVEXATTR. A removed access ACL drops the kernel's attributes as a
/// set one does ([`access_acl_changed`]): Linux filesystems leave the
/// mode as the ACL made it, but its ctime moved, and a source may differ.
pub(super) fn removexattr(
    fs: &PassthroughFs,
    _req: &Caller<'_>,
    node: NodeId,
    name: &OsStr,
) -> Result<(), Errno> {
    enabled(fs)?;
    let inode = fs.inode(node)?;
    let link = fs.proc.xattrs(inode.fd.as_fd());
    link.remove(&c_string(name)?)?;
    access_acl_changed(fs, node, name);
    Ok(())
}
