//! Operations on names: lookup, the creating calls, removal, rename, link,
//! readlink. Each works relative to the parent's `O_PATH` fd.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use fastfuse::{Caller, Entry, Errno, NodeId};

use crate::fs::{c_string, component, PassthroughFs};
use crate::procfd::FdName;
use crate::sys;

/// LOOKUP. "." is the parent itself; ".." of the root is the root (the
/// source's parent is never reachable); any other ".." is resolved
/// relative to the parent's fd, which stays inside the tree. (Only a
/// directory that someone moves out of the source behind the daemon's
/// back keeps a node whose ".." is elsewhere; no path-free design can
/// prevent that, and nothing the kernel sends can cause it.)
///
/// The kernel sends "." and ".." only for NFS export; ordinary path walks
/// resolve them itself. "." comes when the kernel decodes a file handle of
/// a node it no longer caches: the node may be a forgotten one, revived
/// here (see `inode`).
pub(super) fn lookup(
    fs: &PassthroughFs,
    _req: &Caller<'_>,
    parent: NodeId,
    name: &OsStr,
) -> Result<Entry, Errno> {
    match name.as_bytes() {
        b"." => same_node(fs, parent),
        b".." if parent == NodeId::ROOT => same_node(fs, NodeId::ROOT),
        // The kernel asks ".." only of a directory it holds, found by file
        // handle, to reconnect it to the tree.
        b".." => {
            let dir = fs.inode(parent)?;
            // Its ".." may be the root: `acquire` then finds the root's key
            // and answers with NodeId::ROOT, never a second entry.
            fs.lookup_child(&dir, c"..")
        }
        _ => {
            let dir = fs.inode(parent)?;
            fs.lookup_known_child(&dir, &component(name)?)
        }
    }
}

/// One more lookup of `node` itself, reviving it if the kernel forgot it.
fn same_node(fs: &PassthroughFs, node: NodeId) -> Result<Entry, Errno> {
    let inode = fs.inodes.acquire_or_revive(node)?;
    match sys::stat_fd(inode.fd.as_fd()) {
        Ok(st) => Ok(fs.entry(node, &st)),
        Err(e) => {
            fs.inodes.forget(node, 1);
            Err(e.into())
        }
    }
}

/// READLINK: the target of the symlink `node` (readlinkat with an empty
/// path on its `O_PATH|O_NOFOLLOW` fd).
pub(super) fn readlink(
    fs: &PassthroughFs,
    _req: &Caller<'_>,
    node: NodeId,
) -> Result<Vec<u8>, Errno> {
    let inode = fs.inode(node)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    let n = sys::readlinkat(inode.fd.as_fd(), c"", &mut buf)?;
    if n > libc::PATH_MAX as usize {
        return Err(Errno::ENAMETOOLONG);
    }
    buf.truncate(n);
    Ok(buf)
}

/// SYMLINK, as the caller.
pub(super) fn symlink(
    fs: &PassthroughFs,
    req: &Caller<'_>,
    parent: NodeId,
    name: &OsStr,
    target: &OsStr,
) -> Result<Entry, Errno> {
    let dir = fs.inode(parent)?;
    let name = component(name)?;
    let target = c_string(target)?;
    fs.create_as(req, 0, || {
        Ok(sys::symlinkat(&target, dir.fd.as_fd(), &name)?)
    })?;
    fs.names_changed(&dir, false);
    fs.lookup_child(&dir, &name)
}

/// MKNOD (regular files, fifos, sockets, devices), as the caller. `mode`
/// carries the type bits; `umask` applies as [`PassthroughFs::as_creator`]
/// says.
pub(super) fn mknod(
    fs: &PassthroughFs,
    req: &Caller<'_>,
    parent: NodeId,
    name: &OsStr,
    mode: u32,
    rdev: u32,
    umask: u32,
) -> Result<Entry, Errno> {
    let dir = fs.inode(parent)?;
    let name = component(name)?;
    // The kernel's 32-bit rdev encoding equals the C library's dev_t for
    // every device number that fits in it.
    fs.create_as(req, umask, || {
        Ok(sys::mknodat(
            dir.fd.as_fd(),
            &name,
            mode,
            libc::dev_t::from(rdev),
        )?)
    })?;
    fs.names_changed(&dir, false);
    fs.lookup_child(&dir, &name)
}

/// MKDIR, as the caller.
pub(super) fn mkdir(
    fs: &PassthroughFs,
    req: &Caller<'_>,
    parent: NodeId,
    name: &OsStr,
    mode: u32,
    umask: u32,
) -> Result<Entry, Errno> {
    let dir = fs.inode(parent)?;
    let name = component(name)?;
    fs.create_as(req, umask, || {
        Ok(sys::mkdirat(dir.fd.as_fd(), &name, mode)?)
    })?;
    fs.names_changed(&dir, false);
    fs.lookup_child(&dir, &name)
}

/// UNLINK.
pub(super) fn unlink(
    fs: &PassthroughFs,
    _req: &Caller<'_>,
    parent: NodeId,
    name: &OsStr,
) -> Result<(), Errno> {
    remove(fs, parent, name, 0)
}

/// RMDIR.
pub(super) fn rmdir(
    fs: &PassthroughFs,
    _req: &Caller<'_>,
    parent: NodeId,
    name: &OsStr,
) -> Result<(), Errno> {
    remove(fs, parent, name, libc::AT_REMOVEDIR)
}

/// FORGET: the kernel dropped `nlookup` lookups of `node`.
pub(super) fn forget(fs: &PassthroughFs, node: NodeId, nlookup: u64) {
    fs.inodes.forget(node, nlookup);
}

/// BATCH_FORGET: many FORGETs under one lock of the inode table.
pub(super) fn batch_forget(fs: &PassthroughFs, nodes: &mut dyn Iterator<Item = (NodeId, u64)>) {
    fs.inodes.forget_many(nodes);
}

/// UNLINK (`flags` 0) and RMDIR (`AT_REMOVEDIR`). The kernel forgets the
/// node when its dentry goes; the entry stays until then.
fn remove(
    fs: &PassthroughFs,
    parent: NodeId,
    name: &OsStr,
    flags: libc::c_int,
) -> Result<(), Errno> {
    let dir = fs.inode(parent)?;
    sys::unlinkat(dir.fd.as_fd(), &component(name)?, flags)?;
    // A directory has no other name whose link count it changes.
    fs.names_changed(&dir, flags == 0);
    fs.inodes.name_removed();
    Ok(())
}

/// RENAME and RENAME2: renameat2 with the flags as given
/// (RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT).
pub(super) fn rename(
    fs: &PassthroughFs,
    _req: &Caller<'_>,
    parent: NodeId,
    name: &OsStr,
    new_parent: NodeId,
    new_name: &OsStr,
    flags: u32,
) -> Result<(), Errno> {
    let old_dir = fs.inode(parent)?;
    let new_dir = fs.inode(new_parent)?;
    sys::renameat2(
        old_dir.fd.as_fd(),
        &component(name)?,
        new_dir.fd.as_fd(),
        &component(new_name)?,
        flags,
    )?;
    // Unless told not to, a rename replaces what the new name named.
    if flags & (libc::RENAME_EXCHANGE | libc::RENAME_NOREPLACE) == 0 {
        fs.inodes.name_removed();
    }
    Ok(())
}

/// LINK: a new name for `node`, made through its /proc/self/fd magic link
/// with AT_SYMLINK_FOLLOW (which needs no capability, unlike
/// AT_EMPTY_PATH). The result is the same node, with one more lookup.
pub(super) fn link(
    fs: &PassthroughFs,
    req: &Caller<'_>,
    node: NodeId,
    new_parent: NodeId,
    new_name: &OsStr,
) -> Result<Entry, Errno> {
    let inode = fs.inode(node)?;
    let dir = fs.inode(new_parent)?;
    let name = component(new_name)?;
    {
        let _as = fs.as_caller(req)?;
        sys::linkat(
            fs.proc.dir(),
            FdName::of(inode.fd.as_fd()).as_cstr(),
            dir.fd.as_fd(),
            &name,
            libc::AT_SYMLINK_FOLLOW,
        )?;
    }
    fs.names_changed(&dir, false);
    fs.inode_changed(&inode);
    let st = sys::stat_fd(inode.fd.as_fd())?;
    fs.inodes.acquire_existing(node)?;
    Ok(fs.entry(node, &st))
}
