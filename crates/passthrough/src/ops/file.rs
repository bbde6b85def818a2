//! Opening and closing files: open, create, tmpfile, flush, release,
//! fsync, syncfs; the open flags the source gets; kernel passthrough
//! backing files.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, PoisonError};

use fastfuse::abi::fopen::{
    FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE, FOPEN_PARALLEL_DIRECT_WRITES, FOPEN_PASSTHROUGH,
};
use fastfuse::{Caller, Entry, Errno, FileHandle, NodeId, OpenFlags, Opened};

use fastfuse::abi::release_flags::FUSE_RELEASE_FLUSH;

use super::attr::killed_suidgid;
use super::lock;
use crate::fs::{component, warn_once, PassthroughFs, SessionInfo};
use crate::handle::OpenFile;
use crate::inode::{Backing, Inode};
use crate::journal::NO_SLOT;
use crate::sys;

/// The flags to open the source file with, from the caller's.
///
/// - `O_CREAT`, `O_EXCL`, `O_NOCTTY`: the kernel has dealt with them (and
///   CREATE adds its own).
/// - `O_NOFOLLOW`: the reopen goes through a /proc magic link, which
///   `O_NOFOLLOW` would refuse with ELOOP; the node is never a symlink.
/// - `O_DIRECT`: the kernel keeps the caller's direct-I/O semantics (no
///   page cache) whatever the source does, and the daemon's buffers (WRITE
///   data sits after the request headers) cannot meet the source's
///   alignment rules, which would turn every such write into EINVAL.
/// - Writeback cache: the kernel reads pages to fill partial writes, also
///   on write-only opens, so `O_WRONLY` becomes `O_RDWR`; and it does
///   appends itself (the WRITE carries the offset of the end), so
///   `O_APPEND`, which would make pwrite ignore that offset, goes.
pub(crate) fn source_flags(flags: u32, writeback: bool) -> libc::c_int {
    let mut f = flags as libc::c_int
        & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_NOFOLLOW | libc::O_DIRECT);
    if writeback {
        if f & libc::O_ACCMODE == libc::O_WRONLY {
            f = (f & !libc::O_ACCMODE) | libc::O_RDWR;
        }
        f &= !libc::O_APPEND;
    }
    f
}

/// Whether `source_flags` upgraded a write-only open to read-write.
fn upgraded(requested: u32, flags: libc::c_int) -> bool {
    requested as libc::c_int & libc::O_ACCMODE == libc::O_WRONLY
        && flags & libc::O_ACCMODE == libc::O_RDWR
}

/// OPEN: reopens the node's `O_PATH` fd through /proc/self/fd.
pub(super) fn open(
    fs: &PassthroughFs,
    req: &Caller<'_>,
    node: NodeId,
    flags: OpenFlags,
) -> Result<Opened, Errno> {
    let inode = fs.inode(node)?;
    let mut wanted = source_flags(flags.flags, fs.writeback());
    let fd = match fs.proc.reopen(inode.fd.as_fd(), wanted) {
        // A write-only file the daemon may not read (a non-root daemon):
        // serve it write-only; partial-page writes then fail to fill.
        Err(e) if e.raw_os_error() == Some(libc::EACCES) && upgraded(flags.flags, wanted) => {
            wanted = (wanted & !libc::O_ACCMODE) | libc::O_WRONLY;
            fs.proc.reopen(inode.fd.as_fd(), wanted)?
        }
        other => other?,
    };
    let truncated = flags.flags as libc::c_int & libc::O_TRUNC != 0;
    if flags.kill_suidgid && truncated {
        kill_suidgid(&fd, req)?;
    }
    if truncated {
        // An OPEN counts as no change to the source (see `ops`), but this
        // one truncated the file.
        fs.source_changed();
    }
    Ok(finish_open(fs, node, inode, fd, wanted))
}

/// Clears set-user-ID/set-group-ID on an open file as a write or
/// truncate by `caller` would on the source (handle_killpriv_v2: the
/// daemon, often root, would keep them otherwise). Whether the mode
/// changed.
pub(crate) fn kill_suidgid(fd: &OwnedFd, caller: &Caller<'_>) -> Result<bool, Errno> {
    let st = sys::stat_fd(fd.as_fd())?;
    let mode = st.st_mode & 0o7777;
    let killed = killed_suidgid(&st, caller, false);
    if killed == mode {
        return Ok(false);
    }
    sys::fchmod(fd.as_fd(), killed)?;
    Ok(true)
}

/// Stores an open file as a handle and picks its FOPEN flags:
///
/// - kernel passthrough, when agreed and the file is regular: the kernel
///   reads and writes the backing file itself;
/// - otherwise `FOPEN_DIRECT_IO` (with parallel direct writes, which our
///   positional writes allow) when the options ask for it;
/// - otherwise, under the writeback cache, `FOPEN_KEEP_CACHE`: every change
///   goes through the kernel's cache, so what it holds is current and
///   dropping it at each open would only cost re-reads. Without the
///   writeback cache, the cache is dropped at open, so that changes made
///   to the source directly show after a reopen (close-to-open).
///
/// When journaled, the handle goes into the journal with `node` and
/// `flags` (those `fd` was opened with) before the reply.
pub(crate) fn finish_open(
    fs: &PassthroughFs,
    node: NodeId,
    inode: Arc<Inode>,
    fd: OwnedFd,
    flags: libc::c_int,
) -> Opened {
    let mut opened = Opened::default();
    let mut passthrough = false;
    if let Some(session) = fs.session.get().filter(|s| s.passthrough) {
        if inode.is_regular() {
            match acquire_backing(fs, session, &inode) {
                Ok(id) => {
                    passthrough = true;
                    opened.backing_id = id;
                    opened.open_flags |= FOPEN_PASSTHROUGH;
                }
                Err(e) => warn_once(
                    &fs.passthrough_warned,
                    format_args!("kernel passthrough unavailable ({e}); the daemon serves I/O for such files"),
                ),
            }
        }
    }
    if !passthrough {
        if fs.options.direct_io {
            opened.open_flags |= FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES;
        } else if fs.writeback() {
            opened.open_flags |= FOPEN_KEEP_CACHE;
        }
    }
    opened.fh = fs.files.insert_with(|fh| {
        let slot = fs.journal.as_ref().map_or(NO_SLOT, |j| {
            j.record_open(false, fh, node, flags, passthrough)
        });
        OpenFile::new(fd, inode, passthrough, slot)
    });
    opened
}

/// The inode's backing id, registering one on first use. All opens of an
/// inode share it, because the kernel refuses (EBUSY) a second backing
/// file for an inode that has one. The backing file is opened read-write
/// whenever possible, since later opens of the inode may write through it.
fn acquire_backing(
    fs: &PassthroughFs,
    session: &SessionInfo,
    inode: &Inode,
) -> std::io::Result<i32> {
    let mut backing = inode.backing.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(b) = backing.as_mut() {
        b.users += 1;
        return Ok(b.id);
    }
    let file = match fs.proc.reopen(inode.fd.as_fd(), libc::O_RDWR) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EACCES | libc::EROFS | libc::ETXTBSY)
            ) =>
        {
            fs.proc.reopen(inode.fd.as_fd(), libc::O_RDONLY)?
        }
        other => other?,
    };
    // The kernel takes its own reference to the file; ours closes here.
    let id = session.conn.backing_open(file.as_fd())?;
    *backing = Some(Backing { id, users: 1 });
    if let Some(journal) = &fs.journal {
        journal.set_backing(inode, Some(id));
    }
    Ok(id)
}

/// Gives back one handle's use of the inode's backing id, closing the id
/// with the last one.
fn release_backing(fs: &PassthroughFs, inode: &Inode) {
    let mut backing = inode.backing.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(b) = backing.as_mut() else { return };
    b.users = b.users.saturating_sub(1);
    if b.users == 0 {
        let id = b.id;
        *backing = None;
        if let Some(journal) = &fs.journal {
            journal.set_backing(inode, None);
        }
        if let Some(session) = fs.session.get() {
            if let Err(e) = session.conn.backing_close(id) {
                tracing::debug!("backing_close({id}): {e}");
            }
        }
    }
}

/// The open-file half of CREATE and TMPFILE: after the source file exists
/// and is open, count the lookup of its inode (found from the open fd, not
/// the name, which another process may already have replaced) and store
/// the handle.
fn created(fs: &PassthroughFs, fd: OwnedFd, flags: libc::c_int) -> Result<(Entry, Opened), Errno> {
    let (entry, inode) = fs.lookup_open_file(fd.as_fd())?;
    let opened = finish_open(fs, entry.node, inode, fd, flags);
    Ok((entry, opened))
}

/// CREATE, as the caller: `openat(parent, name, flags | O_CREAT |
/// O_NOFOLLOW, mode)`, `O_EXCL` and `O_TRUNC` as the caller asked; never
/// through a symlink.
pub(super) fn create(
    fs: &PassthroughFs,
    req: &Caller<'_>,
    parent: NodeId,
    name: &OsStr,
    mode: u32,
    umask: u32,
    flags: OpenFlags,
) -> Result<(Entry, Opened), Errno> {
    let dir = fs.inode(parent)?;
    let name = component(name)?;
    let excl = flags.flags as libc::c_int & libc::O_EXCL;
    let wanted =
        source_flags(flags.flags, fs.writeback()) | libc::O_CREAT | libc::O_NOFOLLOW | excl;
    let fd = fs.create_as(req, umask, || {
        Ok(sys::openat(dir.fd.as_fd(), &name, wanted, mode)?)
    })?;
    created(fs, fd, wanted)
}

/// TMPFILE (O_TMPFILE), as the caller: an unnamed file in `parent`.
pub(super) fn tmpfile(
    fs: &PassthroughFs,
    req: &Caller<'_>,
    parent: NodeId,
    mode: u32,
    umask: u32,
    flags: OpenFlags,
) -> Result<(Entry, Opened), Errno> {
    let dir = fs.inode(parent)?;
    let excl = flags.flags as libc::c_int & libc::O_EXCL;
    let wanted =
        (source_flags(flags.flags, fs.writeback()) & !libc::O_TMPFILE) | libc::O_TMPFILE | excl;
    let fd = fs.create_as(req, umask, || {
        Ok(sys::openat(dir.fd.as_fd(), c".", wanted, mode)?)
    })?;
    created(fs, fd, wanted)
}

/// FLUSH (every close(2) of a descriptor of the file): drops the POSIX
/// locks `lock_owner` holds on the file, as close(2) does, then
/// `close(dup(fd))`, as libfuse's passthrough_ll does, so that an error the
/// source reports at close (NFS, quotas) reaches the caller's close(2).
pub(super) fn flush(
    fs: &PassthroughFs,
    _req: &Caller<'_>,
    _node: NodeId,
    fh: FileHandle,
    lock_owner: u64,
) -> Result<(), Errno> {
    let file = fs.files.get(fh)?;
    lock::release_owner(&file.inode, lock_owner);
    file.inode.kept_mtime.settle(file.fd.as_fd());
    sys::close(sys::dup(file.fd.as_fd())?)?;
    Ok(())
}

/// RELEASE: forgets the handle; its fd closes when no request uses it any
/// more. With FUSE_RELEASE_FLUSH (a flush folded into the release) the
/// owner's POSIX locks go too.
pub(super) fn release(
    fs: &PassthroughFs,
    _req: &Caller<'_>,
    _node: NodeId,
    fh: FileHandle,
    _flags: u32,
    release_flags: u32,
    lock_owner: u64,
) -> Result<(), Errno> {
    let Some(file) = fs.files.remove(fh) else {
        tracing::debug!(fh = fh.0, "RELEASE of an unknown handle");
        return Ok(());
    };
    if let Some(journal) = &fs.journal {
        journal.release_open(&file.journal_slot);
    }
    if release_flags & FUSE_RELEASE_FLUSH != 0 {
        lock::release_owner(&file.inode, lock_owner);
    }
    file.inode.kept_mtime.settle(file.fd.as_fd());
    lock::release_handle_owners(&file);
    if file.passthrough {
        release_backing(fs, &file.inode);
    }
    Ok(())
}

/// Every handle at once (the session ended).
pub(super) fn release_all(fs: &PassthroughFs) {
    for file in fs.files.drain() {
        if let Some(journal) = &fs.journal {
            journal.release_open(&file.journal_slot);
        }
        file.inode.kept_mtime.settle(file.fd.as_fd());
        lock::release_handle_owners(&file);
        if file.passthrough {
            release_backing(fs, &file.inode);
        }
    }
}

/// FSYNC: fsync or fdatasync on the handle.
pub(super) fn fsync(
    fs: &PassthroughFs,
    _req: &Caller<'_>,
    _node: NodeId,
    fh: FileHandle,
    datasync: bool,
) -> Result<(), Errno> {
    let file = fs.files.get(fh)?;
    file.inode.kept_mtime.settle(file.fd.as_fd());
    sys::fsync(file.fd.as_fd(), datasync)?;
    Ok(())
}

/// SYNCFS: syncfs(2) on the source root's filesystem (syncfs refuses
/// `O_PATH` fds, so the root is opened for it).
pub(super) fn syncfs(fs: &PassthroughFs, _req: &Caller<'_>, _node: NodeId) -> Result<(), Errno> {
    let root = fs.inode(NodeId::ROOT)?;
    let dir = fs
        .proc
        .reopen(root.fd.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY)?;
    sys::syncfs(dir.as_fd())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WO: u32 = libc::O_WRONLY as u32;
    const APPEND: u32 = libc::O_APPEND as u32;

    #[test]
    fn writeback_reads_what_it_writes_and_appends_itself() {
        let f = source_flags(WO | APPEND, true);
        assert_eq!(f & libc::O_ACCMODE, libc::O_RDWR);
        assert_eq!(f & libc::O_APPEND, 0);
        assert!(upgraded(WO, f));
    }

    #[test]
    fn without_writeback_flags_stay() {
        let f = source_flags(WO | APPEND | libc::O_TRUNC as u32, false);
        assert_eq!(f & libc::O_ACCMODE, libc::O_WRONLY);
        assert_ne!(f & libc::O_APPEND, 0);
        assert_ne!(f & libc::O_TRUNC, 0);
        assert!(!upgraded(WO, f));
    }

    #[test]
    fn kernel_handled_flags_are_dropped() {
        let all =
            (libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_NOFOLLOW | libc::O_DIRECT)
                as u32;
        assert_eq!(source_flags(all, false), 0);
        assert_eq!(source_flags(libc::O_RDONLY as u32, true), libc::O_RDONLY);
    }
}
