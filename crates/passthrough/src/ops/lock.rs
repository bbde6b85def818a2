//! File locks: POSIX record locks kept as open-file-description (OFD)
//! locks, and BSD flock(2) locks.
//!
//! POSIX locks belong to a lock owner (the kernel's `lock_owner`: one per
//! process, or per open file for the caller's own OFD locks); all locks an
//! owner holds on one file merge and never conflict with each other, and
//! closing any of the owner's descriptors of the file drops them all. The
//! daemon holds a dedicated open file description of the inode per
//! (inode, owner) and takes the owner's locks on it with `F_OFD_*`: locks
//! of one owner then share one description (they merge, as POSIX wants,
//! even across different FUSE handles), locks of different owners
//! conflict, and FLUSH, which the kernel sends with the owner on every
//! close(2), closes the owner's description and so drops its locks.
//! (Classic `F_SETLK` would make every lock the daemon's, and nothing
//! would ever conflict.)
//!
//! flock(2) locks belong to the open file, which is the FUSE handle: they
//! are taken on the handle's own fd.
//!
//! A lock that is free is taken at once, on the worker. A blocking one
//! (SETLKW, flock without LOCK_NB) that is not is waited for off the
//! workers (`lock_wait`): the request is deferred and a thread of its own
//! blocks in `F_OFD_SETLKW` or `flock(2)` until the lock is granted or the
//! kernel interrupts the request.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, PoisonError};

use fastfuse::{Caller, Errno, FileHandle, Lock, NodeId};

use crate::fs::PassthroughFs;
use crate::handle::OpenFile;
use crate::inode::Inode;
use crate::lock_wait::wait_for_lock;
use crate::sys;
/// The kernel's "to the end of the file" (OFFSET_MAX).
const OFFSET_MAX: u64 = i64::MAX as u64;

/// A FUSE lock range as a `struct flock` (start and length, 0 = to end).
fn to_flock(lock: &Lock) -> Result<libc::flock, Errno> {
    let start = i64::try_from(lock.start).map_err(|_| Errno::EINVAL)?;
    let len = if lock.end >= OFFSET_MAX {
        0
    } else if lock.end < lock.start {
        return Err(Errno::EINVAL);
    } else {
        (lock.end - lock.start + 1) as i64
    };
    let typ = libc::c_short::try_from(lock.typ).map_err(|_| Errno::EINVAL)?;
    Ok(sys::flock_struct(typ, start, len))
}

/// A `struct flock` answer as a FUSE lock. OFD locks have no owning
/// process (l_pid -1), which the kernel takes as pid 0.
fn from_flock(fl: &libc::flock) -> Lock {
    let start = fl.l_start.max(0) as u64;
    let end = if fl.l_len == 0 {
        OFFSET_MAX
    } else {
        start.saturating_add(fl.l_len as u64 - 1)
    };
    Lock {
        start,
        end,
        typ: fl.l_type as u32,
        pid: if fl.l_pid > 0 { fl.l_pid as u32 } else { 0 },
    }
}

/// The description holding `owner`'s POSIX locks on `inode`, if it has
/// one.
fn owner_fd(inode: &Inode, owner: u64) -> Option<Arc<OwnedFd>> {
    let locks = inode
        .posix_locks
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    locks.get(&owner).map(|(fd, _)| fd.clone())
}

/// The description holding `owner`'s POSIX locks on `inode`, opened on
/// first use: read-write when allowed, since the owner may take read and
/// write locks (the kernel has checked the caller's own fd's mode).
/// `pid` (the caller's, as the kernel sent it) is what GETLK will name as
/// the holder of the owner's locks.
fn owner_fd_or_open(
    fs: &PassthroughFs,
    inode: &Inode,
    owner: u64,
    pid: u32,
) -> Result<Arc<OwnedFd>, Errno> {
    let mut locks = inode
        .posix_locks
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some((fd, holder)) = locks.get_mut(&owner) {
        *holder = pid;
        return Ok(fd.clone());
    }
    let fd = match fs.proc.reopen(inode.fd.as_fd(), libc::O_RDWR) {
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
    let fd = Arc::new(fd);
    locks.insert(owner, (fd.clone(), pid));
    Ok(fd)
}

/// Drops every POSIX lock `owner` holds on `inode` (at FLUSH: the owner
/// closed a descriptor of the file). The description closes when the last
/// request using it is done.
pub(super) fn release_owner(inode: &Inode, owner: u64) {
    let released = inode
        .posix_locks
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&owner);
    drop(released);
}

/// At RELEASE: drops the lock descriptions of every owner that took locks
/// through this handle. The kernel names no owner when the caller's own
/// OFD locks (owner: its open file) end with the file, so this is where
/// they go; a process's POSIX locks went at the FLUSH of the same close.
pub(super) fn release_handle_owners(file: &OpenFile) {
    let owners = std::mem::take(
        &mut *file
            .lock_owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    for owner in owners {
        release_owner(&file.inode, owner);
    }
}

/// GETLK: F_OFD_GETLK on the owner's description (so that its own locks do
/// not show as conflicts), or on the handle's fd when it holds none.
pub(super) fn getlk(
    fs: &PassthroughFs,
    _req: &Caller<'_>,
    _node: NodeId,
    fh: FileHandle,
    owner: u64,
    lock: Lock,
) -> Result<Lock, Errno> {
    let file = fs.files.get(fh)?;
    let mut fl = to_flock(&lock)?;
    match owner_fd(&file.inode, owner) {
        Some(fd) => sys::fcntl_lock(fd.as_fd(), libc::F_OFD_GETLK, &mut fl)?,
        None => sys::fcntl_lock(file.fd.as_fd(), libc::F_OFD_GETLK, &mut fl)?,
    }
    if fl.l_type == libc::F_UNLCK as libc::c_short {
        return Ok(Lock {
            typ: libc::F_UNLCK as u32,
            pid: 0,
            ..lock
        });
    }
    Ok(Lock {
        pid: holder_pid(&file.inode, owner, &fl).unwrap_or(0),
        ..from_flock(&fl)
    })
}

/// The pid of the process holding `conflict` (an `F_OFD_GETLK` answer,
/// which names no process), when it was taken through this mount: the
/// owner, other than `requester`, whose description holds a lock of
/// exactly that type and range, as /proc/self/fdinfo lists it. A local
/// filesystem's F_GETLK names the holder; without this, every answer would
/// say pid 0.
fn holder_pid(inode: &Inode, requester: u64, conflict: &libc::flock) -> Option<u32> {
    let start = conflict.l_start;
    let end = (conflict.l_len != 0).then(|| start + conflict.l_len - 1);
    let typ = if conflict.l_type == libc::F_WRLCK as libc::c_short {
        "WRITE"
    } else {
        "READ"
    };
    let locks = inode
        .posix_locks
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    locks
        .iter()
        .filter(|(owner, _)| **owner != requester)
        .find(|(_, (fd, _))| {
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
                .unwrap_or_default();
            info.lines()
                .filter_map(|l| l.strip_prefix("lock:"))
                .any(|l| fdinfo_lock_is(l, typ, start, end))
        })
        .map(|(_, (_, pid))| *pid)
}

/// Whether a `lock:` line of /proc/self/fdinfo (after the prefix), e.g.
/// `1: OFDLCK ADVISORY  WRITE -1 fe:00:123 10 99` (end `EOF`: to the end of
/// the file), is a lock of type `typ` over `start..=end` (`None`: EOF).
fn fdinfo_lock_is(line: &str, typ: &str, start: i64, end: Option<i64>) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some(at) = words.iter().position(|w| *w == "READ" || *w == "WRITE") else {
        return false;
    };
    let (Some(first), Some(last)) = (words.get(at + 3), words.get(at + 4)) else {
        return false;
    };
    let last_matches = match end {
        None => *last == "EOF",
        Some(e) => last.parse::<i64>() == Ok(e),
    };
    words[at] == typ && first.parse::<i64>() == Ok(start) && last_matches
}

/// SETLK/SETLKW (`sleep`) for `owner`, or flock(2) on the handle when
/// `flock`.
// The trait method's arguments, after the filesystem (see `ops`).
#[allow(clippy::too_many_arguments)]
pub(super) fn setlk(
    fs: &PassthroughFs,
    req: &Caller<'_>,
    _node: NodeId,
    fh: FileHandle,
    owner: u64,
    lock: Lock,
    sleep: bool,
    flock: bool,
) -> Result<(), Errno> {
    let file = fs.files.get(fh)?;
    if flock {
        let op = match lock.typ as libc::c_int {
            libc::F_RDLCK => libc::LOCK_SH,
            libc::F_WRLCK => libc::LOCK_EX,
            libc::F_UNLCK => libc::LOCK_UN,
            _ => return Err(Errno::EINVAL),
        };
        return match sys::flock(file.fd.as_fd(), op | libc::LOCK_NB) {
            Err(e) if sleep && is_conflict(&e) => wait_for_lock(
                req,
                &fs.lock_waits,
                move || sys::flock(file.fd.as_fd(), op),
                || {},
            ),
            r => r.map_err(Errno::from),
        };
    }
    let fl = to_flock(&lock)?;
    let fd = if lock.typ == libc::F_UNLCK as u32 {
        match owner_fd(&file.inode, owner) {
            Some(fd) => fd,
            // An owner without a description holds no locks here.
            None => return Ok(()),
        }
    } else {
        let mut owners = file
            .lock_owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !owners.contains(&owner) {
            owners.push(owner);
        }
        drop(owners);
        owner_fd_or_open(fs, &file.inode, owner, lock.pid)?
    };
    let mut attempt = fl;
    match sys::fcntl_lock(fd.as_fd(), libc::F_OFD_SETLK, &mut attempt) {
        Err(e) if sleep && is_conflict(&e) => {
            let waiting = fd.clone();
            let inode = file.inode.clone();
            wait_for_lock(
                req,
                &fs.lock_waits,
                move || {
                    let mut attempt = fl;
                    sys::fcntl_lock(waiting.as_fd(), libc::F_OFD_SETLKW, &mut attempt)
                },
                move || reinstate_owner(&inode, owner, fd, lock.pid),
            )
        }
        r => r.map_err(Errno::from),
    }
}

/// Whether a non-blocking lock attempt failed only because another holder
/// has a conflicting lock.
fn is_conflict(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES))
}

/// After a wait: if the owner closed the file meanwhile (a FLUSH dropped
/// its description from the table), the description that now holds the
/// granted lock goes back into the table, so that the owner's next unlock
/// or close finds it. Otherwise the table holds it already.
fn reinstate_owner(inode: &Inode, owner: u64, fd: Arc<OwnedFd>, pid: u32) {
    inode
        .posix_locks
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(owner)
        .or_insert((fd, pid));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_round_trip() {
        let l = Lock {
            start: 10,
            end: 19,
            typ: libc::F_WRLCK as u32,
            pid: 0,
        };
        let fl = to_flock(&l).unwrap();
        assert_eq!((fl.l_start, fl.l_len), (10, 10));
        assert_eq!(from_flock(&fl), l);
        let to_end = Lock {
            end: OFFSET_MAX,
            ..l
        };
        let fl = to_flock(&to_end).unwrap();
        assert_eq!(fl.l_len, 0);
        assert_eq!(from_flock(&fl).end, OFFSET_MAX);
    }

    #[test]
    fn fdinfo_lock_lines() {
        let w = " 1: OFDLCK ADVISORY  WRITE -1 fe:00:123 10 99";
        assert!(fdinfo_lock_is(w, "WRITE", 10, Some(99)));
        assert!(!fdinfo_lock_is(w, "READ", 10, Some(99)));
        assert!(!fdinfo_lock_is(w, "WRITE", 10, Some(98)));
        assert!(!fdinfo_lock_is(w, "WRITE", 10, None));
        let r = " 2: OFDLCK ADVISORY  READ -1 fe:00:123 200 EOF";
        assert!(fdinfo_lock_is(r, "READ", 200, None));
        assert!(!fdinfo_lock_is(r, "READ", 201, None));
        assert!(!fdinfo_lock_is(" 3: FLOCK ADVISORY", "READ", 0, None));
    }

    #[test]
    fn odd_ranges_are_refused() {
        let backwards = Lock {
            start: 10,
            end: 5,
            typ: libc::F_RDLCK as u32,
            pid: 0,
        };
        assert_eq!(to_flock(&backwards).unwrap_err(), Errno::EINVAL);
        let huge = Lock {
            start: u64::MAX,
            ..backwards
        };
        assert_eq!(to_flock(&huge).unwrap_err(), Errno::EINVAL);
    }
}
