//! Statahead: the listings of the directories a tree walk is about to
//! read, each name with its stat, read ahead by a thread of their own on a
//! CPU nobody else wants.
//!
//! Why: a cold walk (`find`, `du`, `ls -lR`) is serial. The walker lists
//! a directory, the daemon reads it and stats every name for the
//! READDIRPLUS reply, and the walker waits; then the walker stats every
//! name itself, and the daemon waits. On this project's 2-vCPU VM, over
//! io_uring, those two halves were all of a walk's time (11.9 and 9.9 ms
//! of a 21.4 ms walk of 5,000 entries), the other CPU idle. The daemon's
//! half is mostly the source's own work (getdents64 and a stat by name),
//! which can be done before the READDIRPLUS comes: when a READDIRPLUS from
//! the start of a directory lists subdirectories, each of them is read
//! ahead, and a READDIRPLUS from the start of one that was answers from
//! that reading, taking only the lookups (the inode table) itself.
//!
//! What a listing read ahead may say: what the source held when it was
//! read, so a reply made from it can be older than one read at once. Two
//! rules bound that:
//! - any request that may change the source (everything but lookups,
//!   reads, listings and the like, see `ops`) makes every listing read
//!   before it unusable, so a change through the mount is never missed;
//! - a listing older than a quarter of the attribute timeout is not used,
//!   so a change behind the mount's back shows as late as that, on top of
//!   the timeout the kernel caches attributes for anyway.
//!
//! What it costs: the thread runs under SCHED_IDLE, so it takes only CPU
//! time no other thread wants, and a walk that never comes leaves the
//! work undone rather than anyone waiting; at most [`MAX_QUEUED`]
//! directories wait to be read and [`MAX_READY`] entries are kept, and a
//! directory of more than [`MAX_ENTRIES`] names is not read ahead.

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use fastfuse::NodeId;

use crate::dir::{DirStream, Taken};
use crate::inode::Inode;
use crate::sys;

/// Directories waiting to be read ahead, at most.
const MAX_QUEUED: usize = 4096;

/// Entries of listings read ahead and not yet used, at most.
const MAX_READY: usize = 1 << 16;

/// A directory with more entries than this is left to be read when asked.
const MAX_ENTRIES: usize = 1024;

/// One name of a listing read ahead.
#[derive(Debug)]
pub(crate) struct Ahead {
    /// The name, as getdents64 gave it.
    pub(crate) name: Box<[u8]>,
    /// `d_ino`.
    pub(crate) ino: u64,
    /// The cookie after it.
    pub(crate) next_offset: u64,
    /// `DT_*`.
    pub(crate) typ: u8,
    /// The name's stat; `None` for "." and "..", and for a name gone
    /// between getdents64 and the stat.
    pub(crate) st: Option<libc::stat>,
}

/// A directory's listing read ahead.
#[derive(Debug)]
pub(crate) struct Listing {
    /// [`Statahead::changes`] before it was read.
    changes: u64,
    /// When its reading began.
    at: Instant,
    /// Every entry, from the start to the end of the directory.
    pub(crate) entries: Vec<Ahead>,
}

#[derive(Debug, Default)]
struct State {
    /// Directories to read, oldest first.
    queue: VecDeque<(NodeId, Arc<Inode>)>,
    /// Listings read and not yet used.
    ready: HashMap<NodeId, Listing>,
    /// Entries in `ready`.
    ready_entries: usize,
    /// The reader is asleep, waiting for work.
    idle: bool,
    /// The filesystem is gone: the reader returns.
    ended: bool,
}

/// The read-ahead listings of one filesystem, and its reader's work.
#[derive(Debug)]
pub(crate) struct Statahead {
    /// Requests that may have changed the source, counted (see the module
    /// doc).
    changes: AtomicU64,
    /// How old a listing may be when used.
    max_age: Duration,
    state: Mutex<State>,
    /// The reader waits here for work.
    work: Condvar,
}

impl Statahead {
    /// Read-ahead listings usable for `max_age` after they were read.
    pub(crate) fn new(max_age: Duration) -> Statahead {
        Statahead {
            changes: AtomicU64::new(0),
            max_age,
            state: Mutex::default(),
            work: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request that may have changed the source was served: every
    /// listing read before now is stale. Called after the change, so that
    /// a listing read from then on sees it.
    pub(crate) fn changed(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// Asks for `dirs` to be read ahead (those not queued or read yet,
    /// within the bounds).
    pub(crate) fn want(&self, dirs: Vec<(NodeId, Arc<Inode>)>) {
        if dirs.is_empty() {
            return;
        }
        let mut s = self.lock();
        if s.ended {
            return;
        }
        if s.ready_entries >= MAX_READY {
            self.purge(&mut s);
        }
        for (node, inode) in dirs {
            if s.queue.len() >= MAX_QUEUED || s.ready_entries >= MAX_READY {
                break;
            }
            if !s.ready.contains_key(&node) {
                s.queue.push_back((node, inode));
            }
        }
        if s.idle && !s.queue.is_empty() {
            s.idle = false;
            drop(s);
            self.work.notify_one();
        }
    }

    /// The listing of `node` read ahead, if there is one still fresh: no
    /// change since it was read, and younger than the bound. Taken: a
    /// listing answers one READDIRPLUS.
    pub(crate) fn take(&self, node: NodeId) -> Option<Listing> {
        let mut s = self.lock();
        let listing = s.ready.remove(&node)?;
        s.ready_entries -= listing.entries.len();
        drop(s);
        self.fresh(&listing).then_some(listing)
    }

    /// Starts the reader thread; it returns once the filesystem (which
    /// holds the last strong reference) is dropped.
    pub(crate) fn start(self: &Arc<Self>) -> std::io::Result<()> {
        let ahead = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("fastfuse-ahead".into())
            .spawn(move || {
                if let Err(e) = sys::block_all_signals() {
                    tracing::error!("the statahead reader cannot block signals ({e}); not reading");
                    return;
                }
                // Only CPU time nobody else wants: the work is a guess.
                if let Err(e) = sys::sched_idle() {
                    tracing::debug!("the statahead reader is not SCHED_IDLE: {e}");
                }
                reader(&ahead);
            })
            .map(drop)
    }

    /// Wakes the reader to return (the filesystem is going).
    pub(crate) fn end(&self) {
        let mut s = self.lock();
        s.ended = true;
        s.queue.clear();
        drop(s);
        self.work.notify_one();
    }

    /// The next directory to read, waiting for one; `None` once ended.
    fn next(&self) -> Option<(NodeId, Arc<Inode>)> {
        let mut s = self.lock();
        loop {
            if s.ended {
                return None;
            }
            if let Some(dir) = s.queue.pop_front() {
                return Some(dir);
            }
            s.idle = true;
            s = self.work.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Whether `listing` may still answer a READDIRPLUS.
    fn fresh(&self, listing: &Listing) -> bool {
        listing.changes == self.changes.load(Ordering::Acquire)
            && listing.at.elapsed() <= self.max_age
    }

    /// Drops the listings that can no longer be used (a walk that went
    /// elsewhere, or a change), to make room.
    fn purge(&self, s: &mut State) {
        s.ready.retain(|_, listing| self.fresh(listing));
        s.ready_entries = s.ready.values().map(|l| l.entries.len()).sum();
    }

    /// Keeps `listing` of `node` for a READDIRPLUS to take.
    fn keep(&self, node: NodeId, listing: Listing) {
        let mut s = self.lock();
        if s.ready_entries + listing.entries.len() > MAX_READY {
            self.purge(&mut s);
        }
        if s.ended || s.ready_entries + listing.entries.len() > MAX_READY {
            return;
        }
        s.ready_entries += listing.entries.len();
        if let Some(old) = s.ready.insert(node, listing) {
            s.ready_entries -= old.entries.len();
        }
    }

    /// Reads directory `dir` from the start: every entry with its stat,
    /// or `None` when it cannot be read or is too large.
    fn read(&self, dir: &Inode) -> Option<Listing> {
        let changes = self.changes.load(Ordering::Acquire);
        let at = Instant::now();
        let fd = sys::open_dir(dir.fd.as_fd()).ok()?;
        let mut stream = DirStream::new(fd);
        let mut entries = Vec::new();
        let mut too_many = false;
        stream
            .read_from(0, |e| {
                if entries.len() == MAX_ENTRIES {
                    too_many = true;
                    return Ok(Taken::Full);
                }
                let st = if e.is_dot_or_dotdot() {
                    None
                } else {
                    CString::new(e.name).ok().and_then(|name| {
                        sys::fstatat(dir.fd.as_fd(), &name, libc::AT_SYMLINK_NOFOLLOW).ok()
                    })
                };
                entries.push(Ahead {
                    name: e.name.into(),
                    ino: e.ino,
                    next_offset: e.next_offset,
                    typ: e.typ,
                    st,
                });
                Ok(Taken::Yes)
            })
            .ok()?;
        (!too_many).then_some(Listing {
            changes,
            at,
            entries,
        })
    }
}

/// The reader's loop: reads the queued directories, one at a time, until
/// the filesystem is gone.
fn reader(ahead: &Weak<Statahead>) {
    loop {
        let Some(statahead) = ahead.upgrade() else {
            return;
        };
        let Some((node, dir)) = statahead.next() else {
            return;
        };
        if let Some(listing) = statahead.read(&dir) {
            statahead.keep(node, listing);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_inode(path: &std::path::Path) -> Arc<Inode> {
        let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let fd = sys::open(&c, libc::O_PATH | libc::O_DIRECTORY).unwrap();
        let st = sys::stat_fd(fd.as_fd()).unwrap();
        Arc::new(Inode::new(fd, &st))
    }

    #[test]
    fn a_listing_is_whole_and_used_once_while_nothing_changed() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..10 {
            std::fs::write(dir.path().join(format!("f{i}")), b"x").unwrap();
        }
        let s = Statahead::new(Duration::from_secs(60));
        let inode = dir_inode(dir.path());
        let listing = s.read(&inode).unwrap();
        assert_eq!(listing.entries.len(), 12, "ten files, . and ..");
        let stated = listing.entries.iter().filter(|a| a.st.is_some()).count();
        assert_eq!(stated, 10);
        let node = NodeId(7);
        s.keep(node, listing);
        assert!(s.take(node).is_some());
        assert!(s.take(node).is_none(), "taken once");

        // A change after the reading makes it stale.
        s.keep(node, s.read(&inode).unwrap());
        s.changed();
        assert!(s.take(node).is_none(), "read before a change");
        assert_eq!(s.lock().ready_entries, 0);
    }

    #[test]
    fn listings_no_longer_usable_make_room_for_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let s = Statahead::new(Duration::from_secs(60));
        let inode = dir_inode(dir.path());
        // Full of listings read before a change.
        let per = s.read(&inode).unwrap().entries.len();
        for n in 0..MAX_READY / per {
            s.keep(NodeId(n as u64 + 10), s.read(&inode).unwrap());
        }
        assert!(s.lock().ready_entries + per > MAX_READY);
        s.changed();
        s.keep(NodeId(1), s.read(&inode).unwrap());
        assert_eq!(s.lock().ready_entries, per, "the stale ones went");
        assert!(s.take(NodeId(1)).is_some());
    }

    #[test]
    fn an_old_listing_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let s = Statahead::new(Duration::ZERO);
        let inode = dir_inode(dir.path());
        s.keep(NodeId(7), s.read(&inode).unwrap());
        std::thread::sleep(Duration::from_millis(1));
        assert!(s.take(NodeId(7)).is_none());
    }

    #[test]
    fn a_directory_too_large_is_not_read_ahead() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..MAX_ENTRIES {
            std::fs::write(dir.path().join(format!("f{i}")), b"").unwrap();
        }
        let s = Statahead::new(Duration::from_secs(60));
        assert!(s.read(&dir_inode(dir.path())).is_none());
    }

    #[test]
    fn the_reader_reads_what_is_wanted_and_ends_with_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a"), b"x").unwrap();
        let s = Arc::new(Statahead::new(Duration::from_secs(60)));
        s.start().unwrap();
        s.want(vec![(NodeId(9), dir_inode(&dir.path().join("sub")))]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !s.lock().ready.contains_key(&NodeId(9)) {
            assert!(Instant::now() < deadline, "never read");
            std::thread::sleep(Duration::from_millis(1));
        }
        let listing = s.take(NodeId(9)).unwrap();
        let names: Vec<&[u8]> = listing.entries.iter().map(|a| &*a.name).collect();
        assert!(names.contains(&&b"a"[..]));
        s.end();
        assert!(s.lock().ended);
    }
}
