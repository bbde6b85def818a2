//! Directories: opendir, readdir, readdirplus, releasedir, fsyncdir, and
//! the statahead steps of workers waiting for requests.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use fastfuse::{
    Attr, Caller, DirEntries, DirEntriesPlus, Entry, Errno, FileHandle, NodeId, Opened,
};

use crate::dir::{DirEntry, DirStream, Taken};
use crate::fs::{c_string, PassthroughFs};
use crate::handle::OpenDir;
use crate::inode::Inode;
use crate::journal::NO_SLOT;
use crate::sys;

/// OPENDIR: ENOSYS when directories are cached ([`Options::cache_dirs`]),
/// after which the kernel sends no more; otherwise the directory reopened
/// for reading through /proc/self/fd.
///
/// [`Options::cache_dirs`]: crate::Options::cache_dirs
pub(super) fn opendir(
    fs: &PassthroughFs,
    _req: &Caller<'_>,
    node: NodeId,
    _flags: u32,
) -> Result<Opened, Errno> {
    if fs.options.cache_dirs && !fs.timeout().is_zero() {
        return Err(Errno::ENOSYS);
    }
    let inode = fs.inode(node)?;
    let fd = fs
        .proc
        .reopen(inode.fd.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY)?;
    let fh = fs.dirs.insert_with(|fh| {
        let slot = fs.journal.as_ref().map_or(NO_SLOT, |j| {
            j.record_open(true, fh, node, libc::O_RDONLY | libc::O_DIRECTORY, false)
        });
        OpenDir::new(DirStream::new(fd), slot)
    });
    Ok(Opened {
        fh,
        ..Default::default()
    })
}

/// READDIR: the source's entries with its own d_off cookies.
pub(super) fn readdir(
    fs: &PassthroughFs,
    _req: &Caller<'_>,
    node: NodeId,
    fh: FileHandle,
    offset: u64,
    out: &mut DirEntries<'_>,
) -> Result<(), Errno> {
    let dir = fs.inode(node)?;
    with_stream(fs, &dir, fh, |stream| {
        stream.read_from(offset, |e| {
            Ok(
                if out.push(e.ino, e.next_offset, u32::from(e.typ), e.name) {
                    Taken::Yes
                } else {
                    Taken::Full
                },
            )
        })
    })
}

/// Runs `read` on the stream a READDIR(PLUS) of directory `dir` reads:
/// that of handle `fh`, or, for fh 0 (the kernel opened the directory
/// without OPENDIR, see `opendir`), one opened for this request alone,
/// which `read_from` seeks to the request's cookie.
fn with_stream(
    fs: &PassthroughFs,
    dir: &Inode,
    fh: FileHandle,
    read: impl FnOnce(&mut DirStream) -> Result<(), Errno>,
) -> Result<(), Errno> {
    if fh.0 == 0 {
        return read(&mut DirStream::new(sys::open_dir(dir.fd.as_fd())?));
    }
    let open = fs.dirs.get(fh)?;
    let mut stream = open.lock();
    read(&mut stream)
}

/// An entry that carries a name and a type but no node: the kernel shows
/// the name and counts no lookup (node 0). Used for "." and "..", which
/// the kernel skips for lookups anyway (fs/fuse/readdir.c), and for names
/// that vanished between getdents64 and the lookup.
fn nameless(e: &DirEntry<'_>) -> Entry {
    Entry {
        node: NodeId(0),
        generation: 0,
        attr: Attr {
            ino: e.ino,
            mode: u32::from(e.typ) << 12,
            ..Default::default()
        },
        attr_timeout: Duration::ZERO,
        entry_timeout: Duration::ZERO,
    }
}

/// The lookup READDIRPLUS makes for one listed name: from `st` when its
/// stat was taken already (a listing read ahead), by a stat of the name
/// otherwise. The name is made a C string only when it must be opened or
/// stat'ed: a listing read ahead of inodes the table holds needs neither.
fn lookup_listed(
    fs: &PassthroughFs,
    dir: &Inode,
    e: &DirEntry<'_>,
    st: Option<&libc::stat>,
) -> Entry {
    let known = st.and_then(|st| Some((fs.inodes.acquire_known(st)?.0, st)));
    if let Some((node, st)) = known {
        return fs.entry(node, st);
    }
    let Ok(name) = c_string(OsStr::from_bytes(e.name)) else {
        return nameless(e);
    };
    let found = match st {
        Some(_) => fs.lookup_child(dir, &name),
        None => fs.lookup_known_child(dir, &name),
    };
    found.unwrap_or_else(|_| nameless(e))
}

/// READDIRPLUS: READDIR plus a lookup of each entry. The lookup reference
/// is taken only once the entry is known to fit, because an entry that is
/// not sent must not count. From the start of a directory, a listing the
/// statahead read is used if it is still fresh, and the subdirectories
/// listed are handed to it to read next (see `statahead`).
pub(super) fn readdirplus(
    fs: &PassthroughFs,
    _req: &Caller<'_>,
    node: NodeId,
    fh: FileHandle,
    offset: u64,
    out: &mut DirEntriesPlus<'_>,
) -> Result<(), Errno> {
    let parent = fs.inode(node)?;
    let statahead = fs.statahead.as_deref().filter(|_| offset == 0);
    let mut subdirs = statahead.map(|_| Vec::new());
    // One listed entry into the reply, its stat given if taken already.
    let mut offer = |e: &DirEntry<'_>, st: Option<&libc::stat>| {
        if !out.fits(e.name.len()) {
            return Taken::Full;
        }
        let entry = if e.is_dot_or_dotdot() {
            nameless(e)
        } else {
            lookup_listed(fs, &parent, e, st)
        };
        send_plus(fs, out, &entry, e, subdirs.as_mut())
    };
    match statahead.and_then(|s| s.take(node)) {
        Some(listing) => {
            for a in &listing.entries {
                let e = DirEntry {
                    ino: a.ino,
                    next_offset: a.next_offset,
                    typ: a.typ,
                    name: &a.name,
                };
                if offer(&e, a.st.as_ref()) == Taken::Full {
                    break;
                }
            }
        }
        None => with_stream(fs, &parent, fh, |stream| {
            stream.read_from(offset, |e| Ok(offer(e, None)))
        })?,
    }
    if let (Some(s), Some(subdirs)) = (statahead, subdirs) {
        s.want(subdirs);
    }
    Ok(())
}

/// Puts `entry` (of listed `e`) into the reply; a directory goes into
/// `subdirs` too, if given.
fn send_plus(
    fs: &PassthroughFs,
    out: &mut DirEntriesPlus<'_>,
    entry: &Entry,
    e: &DirEntry<'_>,
    subdirs: Option<&mut Vec<(NodeId, std::sync::Arc<Inode>)>>,
) -> Taken {
    if !out.push(entry, e.next_offset, u32::from(e.typ), e.name) {
        // `fits` said yes, so this does not happen; if it ever did, the
        // kernel never saw the entry and its lookup must be given back.
        if entry.node.0 != 0 {
            fs.inodes.forget(entry.node, 1);
        }
        return Taken::Full;
    }
    let is_dir = entry.attr.mode & libc::S_IFMT == libc::S_IFDIR;
    if let (Some(subdirs), true) = (subdirs, is_dir && entry.node.0 != 0) {
        if let Ok(inode) = fs.inodes.get(entry.node) {
            subdirs.push((entry.node, inode));
        }
    }
    Taken::Yes
}

/// RELEASEDIR: the directory handle goes, and its stream with it.
pub(super) fn releasedir(
    fs: &PassthroughFs,
    _req: &Caller<'_>,
    _node: NodeId,
    fh: FileHandle,
    _flags: u32,
) -> Result<(), Errno> {
    let dir = fs.dirs.remove(fh);
    if let (Some(dir), Some(journal)) = (dir, &fs.journal) {
        journal.release_open(&dir.journal_slot);
    }
    Ok(())
}

/// FSYNCDIR: fsync or fdatasync on the directory handle, or, without one
/// (fh 0, see `opendir`), on the directory opened for it.
pub(super) fn fsyncdir(
    fs: &PassthroughFs,
    _req: &Caller<'_>,
    node: NodeId,
    fh: FileHandle,
    datasync: bool,
) -> Result<(), Errno> {
    if fh.0 == 0 {
        let inode = fs.inode(node)?;
        let fd = sys::open_dir(inode.fd.as_fd())?;
        sys::fsync(fd.as_fd(), datasync)?;
        return Ok(());
    }
    let dir = fs.dirs.get(fh)?;
    let stream = dir.lock();
    sys::fsync(stream.fd(), datasync)?;
    Ok(())
}

/// A waiting worker's turn: a step of reading ahead (see `statahead`).
pub(super) fn idle(fs: &PassthroughFs) -> bool {
    fs.statahead.as_ref().is_some_and(|s| s.step())
}
