//! Attributes: getattr, setattr, access, statfs.

use std::os::fd::{AsFd, BorrowedFd};

use fastfuse::{AttrReply, Caller, Errno, FileHandle, NodeId, SetAttr, StatFs, TimeOrNow};

use crate::creds::in_group;
use crate::fs::PassthroughFs;
use crate::inode::Inode;
use crate::procfd::FdName;
use crate::sys;

/// GETATTR: fstat of the handle when the kernel names one, else fstatat
/// with AT_EMPTY_PATH on the inode's `O_PATH` fd.
pub(super) fn getattr(
    fs: &PassthroughFs,
    _req: &Caller<'_>,
    node: NodeId,
    fh: Option<FileHandle>,
) -> Result<AttrReply, Errno> {
    if let Some(file) = fh.and_then(|fh| fs.files.get(fh).ok()) {
        return Ok(fs.attr_reply(&sys::stat_fd(file.fd.as_fd())?));
    }
    let inode = fs.inode(node)?;
    Ok(fs.attr_reply(&sys::stat_fd(inode.fd.as_fd())?))
}

/// Where a SETATTR applies: an open file (when the kernel sent a handle,
/// as for ftruncate) or the inode through its `O_PATH` fd and /proc.
pub(super) enum Target<'a> {
    Open(BorrowedFd<'a>),
    Path(&'a Inode),
}

impl Target<'_> {
    pub(super) fn stat(&self) -> std::io::Result<libc::stat> {
        match self {
            Target::Open(fd) => sys::stat_fd(*fd),
            Target::Path(inode) => sys::stat_fd(inode.fd.as_fd()),
        }
    }

    pub(super) fn chmod(&self, fs: &PassthroughFs, mode: libc::mode_t) -> std::io::Result<()> {
        match self {
            Target::Open(fd) => sys::fchmod(*fd, mode),
            // fchmodat2 reaches the inode with no path at all. Before it
            // (Linux 6.6), and for a symlink (whose chmod the magic link
            // has always decided), the magic link reaches it with one
            // component walked. An EPERM may be a seccomp filter's, not
            // the source's: the magic link decides, and if it succeeds
            // fchmodat2 is not tried again.
            Target::Path(inode) => {
                let mut refused = false;
                if inode.kind != libc::S_IFLNK {
                    match sys::fchmod_empty(inode.fd.as_fd(), mode) {
                        Some(Err(e)) if e.raw_os_error() == Some(libc::EPERM) => refused = true,
                        Some(r) => return r,
                        None => {}
                    }
                }
                let linked =
                    sys::fchmodat(fs.proc.dir(), FdName::of(inode.fd.as_fd()).as_cstr(), mode);
                if refused && linked.is_ok() {
                    sys::fchmodat2_refused();
                }
                linked
            }
        }
    }

    fn chown(&self, uid: libc::uid_t, gid: libc::gid_t) -> std::io::Result<()> {
        match self {
            Target::Open(fd) => sys::fchown_empty(*fd, uid, gid),
            Target::Path(inode) => sys::fchown_empty(inode.fd.as_fd(), uid, gid),
        }
    }

    fn truncate(&self, size: i64) -> std::io::Result<()> {
        match self {
            Target::Open(fd) => sys::ftruncate(*fd, size),
            Target::Path(inode) => sys::truncate(FdName::path(inode.fd.as_fd()).as_cstr(), size),
        }
    }

    fn utimens(&self, fs: &PassthroughFs, times: &[libc::timespec; 2]) -> std::io::Result<()> {
        match self {
            Target::Open(fd) => sys::futimens(*fd, times),
            // As for chmod: no path when the kernel takes AT_EMPTY_PATH
            // (EINVAL when it does not, or when the times are bad, which
            // the magic link then reports itself).
            Target::Path(inode) => {
                if inode.kind != libc::S_IFLNK {
                    match sys::utimens_empty(inode.fd.as_fd(), times) {
                        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                        r => return r,
                    }
                }
                sys::utimensat(
                    fs.proc.dir(),
                    FdName::of(inode.fd.as_fd()).as_cstr(),
                    times,
                    0,
                )
            }
        }
    }
}

/// A timestamp for utimensat: UTIME_OMIT when unchanged.
fn timespec(t: Option<TimeOrNow>) -> libc::timespec {
    let (tv_sec, tv_nsec) = match t {
        None => (0, libc::UTIME_OMIT),
        Some(TimeOrNow::Now) => (0, libc::UTIME_NOW),
        Some(TimeOrNow::At(t)) => (t.secs, i64::from(t.nsecs)),
    };
    libc::timespec { tv_sec, tv_nsec }
}

/// The mode after a write, truncate or chown by `caller` drops
/// privileges, as the kernel's `setattr_should_drop_suidgid` decides for a
/// caller without CAP_FSETID (the only kind the kernel asks the daemon to
/// act for on a write or truncate): set-user-ID always goes; set-group-ID
/// goes when group-execute is set, and also without it (where it only
/// marks mandatory locking) unless the caller is in the file's group.
/// `capable`: the caller may keep a set-group-ID bit regardless (a chown
/// by root, which the kernel sends with the kill flag too).
pub(crate) fn killed_suidgid(st: &libc::stat, caller: &Caller<'_>, capable: bool) -> libc::mode_t {
    let mode = st.st_mode & 0o7777;
    let mut m = mode & !libc::S_ISUID;
    if m & libc::S_ISGID != 0
        && (m & libc::S_IXGRP != 0 || (!capable && !in_group(caller, st.st_gid)))
    {
        m &= !libc::S_ISGID;
    }
    m
}

/// SETATTR: mode, owner, size, times, in that order (as libfuse's
/// passthrough does), then the new attributes. ctime is not set: the
/// source updates it with every change.
pub(super) fn setattr(
    fs: &PassthroughFs,
    req: &Caller<'_>,
    node: NodeId,
    changes: &SetAttr,
) -> Result<AttrReply, Errno> {
    let inode = fs.inode(node)?;
    let file = changes.fh.and_then(|fh| fs.files.get(fh).ok());
    let target = match &file {
        Some(f) => Target::Open(f.fd.as_fd()),
        None => Target::Path(&inode),
    };
    if let Some(st) = unlinked_and_unchanged(&target, changes)? {
        return Ok(fs.attr_reply(&st));
    }
    let done = apply_setattr(fs, req, &inode, &target, changes);
    // After the change, whether it went through whole or not.
    fs.inode_changed(&inode);
    done
}

/// What SETATTR asks of `target` (the node `inode`, or a file open on it),
/// in the order the source needs: the mode, the owner, the size, the
/// times, then the set-id bits a write or chown must lose.
fn apply_setattr(
    fs: &PassthroughFs,
    req: &Caller<'_>,
    inode: &Inode,
    target: &Target<'_>,
    changes: &SetAttr,
) -> Result<AttrReply, Errno> {
    if let Some(mode) = changes.mode {
        target.chmod(fs, mode & 0o7777)?;
    }
    let changes_nothing = changes.mode.is_none()
        && changes.uid.is_none()
        && changes.gid.is_none()
        && changes.size.is_none()
        && changes.atime.is_none()
        && changes.mtime.is_none()
        && !changes.kill_suidgid;
    if changes.uid.is_some() || changes.gid.is_some() || changes_nothing {
        // -1 leaves an id as it is. A SETATTR that changes nothing is a
        // chown(-1, -1) (the kernel drops ids that do not change): on the
        // source too it updates ctime and, on a regular file, drops
        // set-user-ID and set-group-ID, as any chown does (chown_common).
        target.chown(
            changes.uid.unwrap_or(u32::MAX),
            changes.gid.unwrap_or(u32::MAX),
        )?;
    }
    if let Some(size) = changes.size {
        target.truncate(i64::try_from(size).map_err(|_| Errno::EFBIG)?)?;
    }
    if changes.atime.is_some() || changes.mtime.is_some() {
        // What cache WRITEs must not change from now on (see `mtime`).
        inode.kept_mtime.set_times(
            || target.utimens(fs, &[timespec(changes.atime), timespec(changes.mtime)]),
            || target.stat(),
        )?;
    }
    if (changes.kill_suidgid || changes_nothing) && changes.mode.is_none() {
        // The kernel asks (handle_killpriv_v2) because a write, truncate or
        // chown by someone else must drop privileges; the daemon, often
        // root, keeps them when it does the change itself. An empty
        // SETATTR is a chown that changes nothing, or the kernel's
        // file_remove_privs before a buffered write, fallocate or the
        // like by a caller without CAP_FSETID: the source's chown above
        // dropped what it drops for root, and the caller may lose more.
        // Root keeps a set-group-ID bit on chown; on write and truncate
        // the kernel sends the flag only for callers that may not.
        let st = target.stat()?;
        let mode = st.st_mode & 0o7777;
        let chown = changes.uid.is_some() || changes.gid.is_some() || changes_nothing;
        let killed = killed_suidgid(&st, req, chown && req.uid == 0);
        if killed != mode {
            target.chmod(fs, killed)?;
        }
    }
    Ok(fs.attr_reply(&target.stat()?))
}

/// The source's stat, when `changes` only sets the mtime of a file that
/// has no name left to what the source already has: the SETATTR the
/// kernel sends after every UNLINK under the writeback cache
/// (`fuse_update_ctime` writes the unlinked inode's times back at once).
/// Setting them would change only the ctime, which the unlink set on the
/// source just before, as it does on any filesystem; skipping it spares
/// `rm -rf` a system call per file. `None`: anything else, served as
/// asked.
fn unlinked_and_unchanged(
    target: &Target<'_>,
    changes: &SetAttr,
) -> Result<Option<libc::stat>, Errno> {
    let Some(TimeOrNow::At(mtime)) = changes.mtime else {
        return Ok(None);
    };
    let only_mtime = changes.mode.is_none()
        && changes.uid.is_none()
        && changes.gid.is_none()
        && changes.size.is_none()
        && changes.atime.is_none()
        && !changes.kill_suidgid;
    if !only_mtime {
        return Ok(None);
    }
    let st = target.stat()?;
    let same = st.st_mtime == mtime.secs && st.st_mtime_nsec == i64::from(mtime.nsecs);
    Ok((st.st_nlink == 0 && same).then_some(st))
}

/// ACCESS: faccessat2 with AT_EACCESS on the /proc magic link, as the
/// caller when credentials are switched (the kernel then checks the
/// worker's fsuid, which is the caller's).
pub(super) fn access(
    fs: &PassthroughFs,
    req: &Caller<'_>,
    node: NodeId,
    mask: u32,
) -> Result<(), Errno> {
    let inode = fs.inode(node)?;
    let _as = fs.as_caller(req)?;
    sys::faccessat(
        fs.proc.dir(),
        FdName::of(inode.fd.as_fd()).as_cstr(),
        mask as libc::c_int,
        libc::AT_EACCESS,
    )?;
    Ok(())
}

/// STATFS: fstatvfs on the node's `O_PATH` fd (the filesystem it is on).
pub(super) fn statfs(fs: &PassthroughFs, _req: &Caller<'_>, node: NodeId) -> Result<StatFs, Errno> {
    let inode = fs.inode(node)?;
    let st = sys::fstatvfs(inode.fd.as_fd())?;
    Ok(StatFs {
        blocks: st.f_blocks,
        bfree: st.f_bfree,
        bavail: st.f_bavail,
        files: st.f_files,
        ffree: st.f_ffree,
        bsize: st.f_bsize as u32,
        namelen: st.f_namemax as u32,
        frsize: st.f_frsize as u32,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastfuse::Timestamp;

    fn stat_of(mode: libc::mode_t, gid: libc::gid_t) -> libc::stat {
        let mut st = sys::zeroed_stat();
        st.st_mode = libc::S_IFREG | mode;
        st.st_gid = gid;
        st
    }

    #[test]
    fn kill_suidgid_follows_the_kernel() {
        // A caller in the file's group (its fsgid); pid 0 reads no groups.
        let member = Caller::detached(1000, 1000, 0);
        let outsider = Caller::detached(1000, 2000, 0);
        assert_eq!(
            killed_suidgid(&stat_of(0o6755, 1000), &member, false),
            0o0755
        );
        // Without group-exec, S_ISGID marks mandatory locking: it stays for
        // a member of the file's group, or a capable caller, and goes for
        // anyone else.
        assert_eq!(
            killed_suidgid(&stat_of(0o6745, 1000), &member, false),
            0o2745
        );
        assert_eq!(
            killed_suidgid(&stat_of(0o6745, 1000), &outsider, false),
            0o0745
        );
        assert_eq!(
            killed_suidgid(&stat_of(0o6745, 1000), &outsider, true),
            0o2745
        );
        assert_eq!(
            killed_suidgid(&stat_of(0o0644, 1000), &outsider, false),
            0o0644
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(timespec(None).tv_nsec, libc::UTIME_OMIT);
        assert_eq!(timespec(Some(TimeOrNow::Now)).tv_nsec, libc::UTIME_NOW);
        let t = timespec(Some(TimeOrNow::At(Timestamp { secs: 5, nsecs: 7 })));
        assert_eq!((t.tv_sec, t.tv_nsec), (5, 7));
        // Before 1970: the kernel's time64_t, sent as u64, comes back
        // negative.
        let before = Timestamp::from_wire(-315_619_200i64 as u64, 0);
        let t = timespec(Some(TimeOrNow::At(before)));
        assert_eq!(t.tv_sec, -315_619_200);
    }

    /// A SETATTR of mode and times on a node the kernel names without a
    /// handle: reached through the inode's `O_PATH` fd (fchmodat2 and
    /// AT_EMPTY_PATH where the kernel has them), it changes the source
    /// file itself; a symlink's times go through the magic link as before.
    #[test]
    fn mode_and_times_reach_the_source_through_the_path_fd() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};

        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("f", src.path().join("l")).unwrap();
        let fs = PassthroughFs::new(src.path(), crate::Options::default()).unwrap();
        let req = Caller::detached(0, 0, 1);
        let node = |name: &str| {
            fastfuse::Filesystem::lookup(&fs, &req, NodeId::ROOT, std::ffi::OsStr::new(name))
                .unwrap()
                .node
        };
        let at = |secs| Some(TimeOrNow::At(Timestamp { secs, nsecs: 7 }));
        let changes = SetAttr {
            mode: Some(libc::S_IFREG | 0o640),
            atime: at(1_000_000),
            mtime: at(2_000_000),
            ..SetAttr::default()
        };
        let reply = setattr(&fs, &req, node("f"), &changes).unwrap();
        let meta = std::fs::metadata(src.path().join("f")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        assert_eq!((meta.atime(), meta.atime_nsec()), (1_000_000, 7));
        assert_eq!((meta.mtime(), meta.mtime_nsec()), (2_000_000, 7));
        assert_eq!(reply.attr.mode & 0o7777, 0o640);
        assert_eq!(reply.attr.mtime, 2_000_000);

        let times = SetAttr {
            mtime: at(3_000_000),
            ..SetAttr::default()
        };
        setattr(&fs, &req, node("l"), &times).unwrap();
        let link = std::fs::symlink_metadata(src.path().join("l")).unwrap();
        assert_eq!(link.mtime(), 3_000_000, "the symlink's own mtime");
        let target = std::fs::metadata(src.path().join("f")).unwrap();
        assert_eq!(target.mtime(), 2_000_000, "not its target's");

        // Bad times are the source's EINVAL, whichever way they went.
        let bad = SetAttr {
            mtime: Some(TimeOrNow::At(Timestamp {
                secs: 0,
                nsecs: 2_000_000_000,
            })),
            ..SetAttr::default()
        };
        assert_eq!(
            setattr(&fs, &req, node("f"), &bad).unwrap_err(),
            Errno::EINVAL
        );
    }
}
