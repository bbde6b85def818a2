//! The state a successor process needs to go on serving a connection
//! without unmounting (`fastfuse upgrade`): [`SavedState`], taken by
//! [`PassthroughFs::save`] and put back by [`PassthroughFs::restore`].
//!
//! It holds every node id the kernel knows (live, with its lookup count,
//! and forgotten but remembered by the source's file handle), each inode
//! table shard's next id, every open file and directory under its fh, the
//! fh counter, the POSIX lock owners' descriptions, the kernel passthrough
//! backing ids and the mtimes kept under the writeback cache. It holds no
//! descriptor: those travel beside it (SCM_RIGHTS; [`SavedFds`] on the
//! way out, a `Vec<OwnedFd>` on the way in), and the state names them by
//! index.
//!
//! What carries over by itself, because it belongs to an open file
//! description or to the FUSE connection rather than to the process:
//! - POSIX locks (taken as OFD locks on a per-owner description) and
//!   flock(2) locks (on the handle's description): the successor's
//!   descriptors of the same descriptions hold them; they go only when the
//!   last descriptor of the description closes.
//! - Directory positions: a received descriptor shares the description's
//!   offset, and
//!   the entries read but not yet sent travel in the state.
//! - Kernel passthrough backing ids: registered on the connection, which
//!   the successor serves, so they keep their numbers.
//!
//! Saving is non-destructive: descriptors are held, not moved, and the
//! tables left as they are, so that the filesystem goes on serving if the
//! successor refuses.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::dir::DirStream;
use crate::error::PassthroughError;
use crate::fs::PassthroughFs;
use crate::handle::{self, OpenDir, OpenFile};
use crate::inode::{Backing, Inode, InodeKey, InodeTable};
use crate::journal::{Journal, NO_SLOT};
use crate::mtime::KeptMtime;
use crate::options::Options;
use crate::sys;

/// The version of the [`SavedState`] format this build writes.
///
/// 2: the kernel may be opening directories without OPENDIR (see
/// `Options::cache_dirs`) and sending READDIR without a handle, which a
/// build that writes 1 answers EBADF; such a build refuses the state
/// (equal versions only), so a downgrade is refused rather than breaking
/// every listing. The layout is that of 1, which this build reads too.
pub const STATE_VERSION: u32 = 2;

/// The oldest [`SavedState`] version this build reads.
pub const OLDEST_STATE_VERSION: u32 = 1;

/// Everything a successor needs to go on serving the kernel's node ids and
/// file handles (see [`PassthroughFs::save`]).
///
/// Descriptors are not in it: its fields refer to them by index into the
/// `Vec<OwnedFd>` that [`PassthroughFs::save`] returns beside it, which
/// must reach [`PassthroughFs::restore`] in the same order. With the
/// `serde` feature it can be serialised (any format serde has); the
/// fields other than the version are private to this crate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SavedState {
    /// The format's version, [`STATE_VERSION`] of the build that saved
    /// it; [`PassthroughFs::restore`] refuses any outside
    /// [`OLDEST_STATE_VERSION`]`..=`[`STATE_VERSION`].
    pub version: u32,
    pub(crate) table: SavedTable,
    /// Every inode an entry below refers to, each once.
    pub(crate) inodes: Vec<SavedInode>,
    /// The fh the next open of either table gets.
    pub(crate) next_fh: u64,
    pub(crate) files: Vec<SavedFile>,
    pub(crate) dirs: Vec<SavedDir>,
}

/// The inode table (see `inode`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct SavedTable {
    /// The source root's (st_dev, st_ino).
    pub(crate) root: SavedKey,
    /// The next forgotten node's sequence number.
    pub(crate) next_seq: u64,
    /// One per shard, in order.
    pub(crate) shards: Vec<SavedShard>,
}

/// (st_dev, st_ino) of a source inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct SavedKey {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

/// One shard of the inode table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct SavedShard {
    /// The next id it hands out, without the shard bits.
    pub(crate) next_id: u64,
    pub(crate) live: Vec<SavedNode>,
    pub(crate) forgotten: Vec<SavedForgotten>,
    /// Its key map: which node id each known key has.
    pub(crate) keys: Vec<(SavedKey, u64)>,
}

/// A node the kernel holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct SavedNode {
    pub(crate) id: u64,
    pub(crate) key: SavedKey,
    pub(crate) lookups: u64,
    /// Index into [`SavedState::inodes`].
    pub(crate) inode: usize,
}

/// A node the kernel forgot, remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct SavedForgotten {
    pub(crate) id: u64,
    pub(crate) key: SavedKey,
    pub(crate) seq: u64,
    pub(crate) kept: SavedKept,
}

/// What a forgotten node keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) enum SavedKept {
    /// The source's file handle.
    Handle { handle_type: i32, bytes: Vec<u8> },
    /// Still its inode (forgotten recently, it keeps its fd): index into
    /// [`SavedState::inodes`]; the successor keeps it so, within its own
    /// bound of such nodes.
    Open { inode: usize },
}

/// One inode: its `O_PATH` fd and what hangs on it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct SavedInode {
    /// Index of its `O_PATH` fd.
    pub(crate) fd: usize,
    /// `st_mode & S_IFMT`.
    pub(crate) kind: u32,
    /// The kernel passthrough backing id (on the connection) and its users.
    pub(crate) backing: Option<SavedBacking>,
    /// POSIX lock owners, by owner.
    pub(crate) posix_locks: Vec<SavedOwner>,
    pub(crate) mtime: SavedMtime,
}

/// A kernel passthrough backing id and the handles using it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct SavedBacking {
    pub(crate) id: i32,
    pub(crate) users: u32,
}

/// A POSIX lock owner's description of an inode (its OFD locks stay on
/// it) and the pid that last took one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct SavedOwner {
    pub(crate) owner: u64,
    /// Index of the description's fd.
    pub(crate) fd: usize,
    pub(crate) pid: u32,
}

/// The mtime kept under the writeback cache (see `mtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct SavedMtime {
    pub(crate) writes: u32,
    pub(crate) owed: Option<(i64, i64)>,
    pub(crate) disturbed: bool,
}

/// An open file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct SavedFile {
    pub(crate) fh: u64,
    /// Index into [`SavedState::inodes`].
    pub(crate) inode: usize,
    /// Index of the open file's fd (flock locks stay on it).
    pub(crate) fd: usize,
    /// Whether it holds a use of its inode's backing id.
    pub(crate) passthrough: bool,
    pub(crate) lock_owners: Vec<u64>,
}

/// An open directory stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct SavedDir {
    pub(crate) fh: u64,
    /// Index of the directory's fd, whose position goes on after `unsent`.
    pub(crate) fd: usize,
    /// The cookie right before the first unsent entry.
    pub(crate) position: u64,
    /// getdents64 records read but not yet sent.
    pub(crate) unsent: Vec<u8>,
}

/// A saved state that does not fit this filesystem.
pub(crate) fn invalid(what: String) -> PassthroughError {
    PassthroughError::InvalidState(what)
}

/// The descriptors of a saved state, in the order its indices name them.
///
/// They are held, not duplicated: an inode's, an open file's or a lock
/// owner's descriptor stays the filesystem's own, kept open by a
/// reference here. Duplicating thousands of descriptors in a process
/// whose threads share a descriptor table costs the pause a grace period
/// (`synchronize_rcu`) at each doubling of the table; sending them with
/// SCM_RIGHTS needs no descriptor number of its own.
pub struct SavedFds(Vec<Held>);

/// One descriptor of a [`SavedFds`], and what keeps it open.
enum Held {
    Inode(Arc<Inode>),
    Shared(Arc<OwnedFd>),
    File(Arc<OpenFile>),
    /// A directory's: its stream sits behind a lock, so it is duplicated.
    Dup(OwnedFd),
}

impl Held {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Held::Inode(inode) => inode.fd.as_fd(),
            Held::Shared(fd) => fd.as_fd(),
            Held::File(file) => file.fd.as_fd(),
            Held::Dup(fd) => fd.as_fd(),
        }
    }
}

impl SavedFds {
    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each, in order: what to send (SCM_RIGHTS) beside the state.
    pub fn borrow(&self) -> Vec<BorrowedFd<'_>> {
        self.0.iter().map(Held::as_fd).collect()
    }

    /// Duplicates of each, in order, for a successor in this process.
    pub fn duplicate(&self) -> std::io::Result<Vec<OwnedFd>> {
        self.0.iter().map(|h| sys::dup(h.as_fd())).collect()
    }
}

impl std::fmt::Debug for SavedFds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SavedFds").field(&self.0.len()).finish()
    }
}

/// Collects descriptors (held) and inodes (each once, however many
/// entries share it) while a state is saved.
#[derive(Default)]
pub(crate) struct Saver {
    fds: Vec<Held>,
    inodes: Vec<SavedInode>,
    /// Inode (by address) → its index in `inodes`; `keep` holds each alive
    /// so that no address is reused meanwhile.
    seen: HashMap<*const Inode, usize>,
    keep: Vec<Arc<Inode>>,
}

impl Saver {
    /// Holds `fd`; its index.
    fn fd(&mut self, fd: Held) -> usize {
        self.fds.push(fd);
        self.fds.len() - 1
    }

    /// The index of `inode`, saved on first sight: its fd, kind, backing
    /// id, lock owners' descriptions and kept mtime.
    pub(crate) fn inode(&mut self, inode: &Arc<Inode>) -> Result<usize, PassthroughError> {
        if let Some(&index) = self.seen.get(&Arc::as_ptr(inode)) {
            return Ok(index);
        }
        let fd = self.fd(Held::Inode(inode.clone()));
        let backing = inode
            .backing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|b| SavedBacking {
                id: b.id,
                users: b.users,
            });
        // By owner, so that saving the same tables twice gives the same
        // state, descriptor indices included.
        let mut owners: Vec<(u64, Arc<OwnedFd>, u32)> = inode
            .posix_locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(&owner, (fd, pid))| (owner, fd.clone(), *pid))
            .collect();
        owners.sort_unstable_by_key(|&(owner, _, _)| owner);
        let mut posix_locks = Vec::with_capacity(owners.len());
        for (owner, fd, pid) in owners {
            posix_locks.push(SavedOwner {
                owner,
                fd: self.fd(Held::Shared(fd)),
                pid,
            });
        }
        self.inodes.push(SavedInode {
            fd,
            kind: inode.kind,
            backing,
            posix_locks,
            mtime: inode.kept_mtime.save(),
        });
        let index = self.inodes.len() - 1;
        self.seen.insert(Arc::as_ptr(inode), index);
        self.keep.push(inode.clone());
        Ok(index)
    }
}

/// The descriptors that came with a state, each taken once by index.
struct Fds(Vec<Option<OwnedFd>>);

impl Fds {
    fn take(&mut self, index: usize, what: &str) -> Result<OwnedFd, PassthroughError> {
        let count = self.0.len();
        match self.0.get_mut(index) {
            Some(fd) => fd
                .take()
                .ok_or_else(|| invalid(format!("descriptor {index} ({what}) is named twice"))),
            None => Err(invalid(format!(
                "descriptor {index} ({what}) is out of range: {count} came with the state"
            ))),
        }
    }
}

/// How a saved descriptor must have been opened.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Opened {
    /// `O_PATH`: an inode's own fd, which names it and holds no file open.
    Path,
    /// Opened for I/O: a file handle's, a lock owner's or a directory
    /// stream's fd, which reads, writes, or carries locks.
    Io,
}

/// Checks that `fd` was opened as `opened` says. Two descriptors of one
/// inode swapped (an inode's `O_PATH` fd and its lock owner's) have the
/// same key: only how they were opened tells them apart, and a successor
/// that took one for the other could neither lock nor leave the file
/// unopened.
fn check_opened(fd: BorrowedFd<'_>, what: &str, opened: Opened) -> Result<(), PassthroughError> {
    let flags = sys::status_flags(fd).map_err(|e| invalid(format!("cannot query {what}: {e}")))?;
    let is = if flags & libc::O_PATH != 0 {
        Opened::Path
    } else {
        Opened::Io
    };
    if is != opened {
        return Err(invalid(format!(
            "{what}'s descriptor is {}, not {}",
            opened_name(is),
            opened_name(opened)
        )));
    }
    Ok(())
}

/// The key of the inode `fd` refers to, once `fd` is checked to be
/// opened as `opened` says ([`check_opened`]).
fn key_of(
    fd: BorrowedFd<'_>,
    what: &str,
    opened: Opened,
) -> Result<(InodeKey, libc::stat), PassthroughError> {
    check_opened(fd, what, opened)?;
    let st = sys::stat_fd(fd).map_err(|e| invalid(format!("cannot stat {what}: {e}")))?;
    Ok((InodeKey::of(&st), st))
}

/// How an error names `opened`.
fn opened_name(opened: Opened) -> &'static str {
    match opened {
        Opened::Path => "O_PATH",
        Opened::Io => "open for I/O",
    }
}

/// A saved inode with its descriptors taken from `fds`, and the key its
/// fd has (checked against its kind).
fn restore_inode(
    index: usize,
    saved: &SavedInode,
    fds: &mut Fds,
) -> Result<(Arc<Inode>, InodeKey), PassthroughError> {
    let what = format!("inode {index}");
    let fd = fds.take(saved.fd, &what)?;
    let (key, st) = key_of(fd.as_fd(), &what, Opened::Path)?;
    if st.st_mode & libc::S_IFMT != saved.kind {
        return Err(invalid(format!(
            "inode {index}'s descriptor is of type {:o}, not {:o}",
            st.st_mode & libc::S_IFMT,
            saved.kind
        )));
    }
    let mut posix_locks = HashMap::new();
    for o in &saved.posix_locks {
        let what = format!("lock owner {:#x} of inode {index}", o.owner);
        let lock_fd = fds.take(o.fd, &what)?;
        if key_of(lock_fd.as_fd(), &what, Opened::Io)?.0 != key {
            return Err(invalid(format!("{what} is another inode")));
        }
        if posix_locks
            .insert(o.owner, (Arc::new(lock_fd), o.pid))
            .is_some()
        {
            return Err(invalid(format!("{what} twice")));
        }
    }
    let inode = Inode {
        fd,
        kind: saved.kind,
        key,
        backing: Mutex::new(saved.backing.map(|b| Backing {
            id: b.id,
            users: b.users,
        })),
        posix_locks: Mutex::new(posix_locks),
        kept_mtime: KeptMtime::restore(&saved.mtime),
        journal_slot: AtomicU32::new(NO_SLOT),
    };
    Ok((Arc::new(inode), key))
}

impl PassthroughFs {
    /// Copies out the state for a successor process that is to go on
    /// serving this filesystem's connection (see [`SavedState`]), and the
    /// descriptors it refers to ([`SavedFds`]), to pass beside it
    /// (SCM_RIGHTS). Every live node (id, source inode, lookup
    /// count, `O_PATH` fd, kernel passthrough backing id and users, POSIX
    /// lock owners' descriptions and pids, kept mtime), every forgotten
    /// node remembered by its source handle, each inode table shard's next
    /// id, the next forgotten-node sequence number, every open file (fh,
    /// inode, fd, passthrough use, lock owners) and directory (fh, fd,
    /// position, entries read but not sent), the fh counter and the
    /// source root's (st_dev, st_ino).
    ///
    /// Non-destructive: the tables are left as they are, so that if the
    /// successor refuses, this filesystem goes on serving; after it, a
    /// second [`Filesystem::ready`](fastfuse::Filesystem::ready) (the
    /// engine resuming this session) is accepted.
    ///
    /// Call it only while no request is being served (the engine stops
    /// the workers first): the tables are read one shard at a time, and a
    /// request served meanwhile could leave the copy inconsistent.
    ///
    /// Fails with [`PassthroughError::LockWaitPending`] while a blocking
    /// lock request (SETLKW, flock without LOCK_NB) waits on a thread of
    /// its own: its deferred reply cannot move to another process. Fails
    /// with [`PassthroughError::SaveDescriptor`] when an open directory's
    /// descriptor cannot be duplicated (out of descriptors).
    pub fn save(&self) -> Result<(SavedState, SavedFds), PassthroughError> {
        if self.journal.is_some() {
            return Err(PassthroughError::Journaled);
        }
        let waiting = self.lock_waits.pending();
        if waiting > 0 {
            return Err(PassthroughError::LockWaitPending(waiting));
        }
        let mut saver = Saver::default();
        let table = self.inodes.save(&mut saver)?;
        let mut files = Vec::new();
        for (fh, file) in self.files.entries() {
            let inode = saver.inode(&file.inode)?;
            files.push(SavedFile {
                fh,
                inode,
                fd: saver.fd(Held::File(file.clone())),
                passthrough: file.passthrough,
                lock_owners: file
                    .lock_owners
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
            });
        }
        let mut dirs = Vec::new();
        for (fh, dir) in self.dirs.entries() {
            let stream = dir.lock();
            let (fd, position, unsent) = stream.save();
            dirs.push(SavedDir {
                fh,
                fd: saver.fd(Held::Dup(
                    sys::dup(fd).map_err(PassthroughError::SaveDescriptor)?,
                )),
                position,
                unsent: unsent.to_vec(),
            });
        }
        let state = SavedState {
            version: STATE_VERSION,
            table,
            inodes: saver.inodes,
            next_fh: self.files.next_fh(),
            files,
            dirs,
        };
        // Release: pairs with the acquire in `ready`.
        self.saved.store(true, Ordering::Release);
        Ok((state, SavedFds(saver.fds)))
    }

    /// A filesystem that goes on from `state` (see
    /// [`PassthroughFs::save`]) and `fds`, the descriptors that came
    /// beside it, for `source` with `options` (the successor's own). The
    /// engine then calls [`Filesystem::ready`](fastfuse::Filesystem::ready)
    /// with the connection the state was saved from, whose kernel node
    /// ids, file handles and passthrough backing ids it goes on serving.
    ///
    /// Refused with [`PassthroughError::StateVersion`] when `state` is of
    /// another format version; with [`PassthroughError::StateRoot`] when
    /// `source` is not the root the state was saved from; with
    /// [`PassthroughError::InvalidState`] when the state does not fit
    /// together (a descriptor index out of range or named twice, a
    /// descriptor that is not the inode its entry says, a node id in the
    /// wrong shard or at its shard's next id, an fh twice). A refused
    /// state leaves the predecessor's filesystem as it was; the
    /// descriptors given here are closed (as are any that no entry of an
    /// accepted state names).
    ///
    /// Nodes, counts, key maps, each shard's next id, fhs and the fh
    /// counter come back exactly. Forgotten nodes are remembered as far
    /// as `options` allow: none with
    /// [`Options::remembered_handles`] 0 or without source file handles
    /// here, the oldest beyond the bound.
    pub fn restore(
        source: &Path,
        options: Options,
        state: SavedState,
        fds: Vec<OwnedFd>,
    ) -> Result<PassthroughFs, PassthroughError> {
        PassthroughFs::restore_with(source, options, state, fds, None)
    }

    /// [`PassthroughFs::restore`], journaling into `journal` if given
    /// (a recovery, see `journal`).
    pub(crate) fn restore_with(
        source: &Path,
        options: Options,
        state: SavedState,
        fds: Vec<OwnedFd>,
        journal: Option<Arc<Journal>>,
    ) -> Result<PassthroughFs, PassthroughError> {
        if !(OLDEST_STATE_VERSION..=STATE_VERSION).contains(&state.version) {
            return Err(PassthroughError::StateVersion {
                found: state.version,
                oldest: OLDEST_STATE_VERSION,
                newest: STATE_VERSION,
            });
        }
        let (root, st) = crate::fs::open_root(source)?;
        drop(root);
        let found = InodeKey::of(&st);
        let saved_root = InodeKey::from(state.table.root);
        if found != saved_root {
            let (found, saved) = (SavedKey::from(found), state.table.root);
            return Err(PassthroughError::StateRoot {
                path: source.to_owned(),
                saved: (saved.dev, saved.ino),
                found: (found.dev, found.ino),
            });
        }
        let mut fds = Fds(fds.into_iter().map(Some).collect());
        let inodes = state
            .inodes
            .iter()
            .enumerate()
            .map(|(index, saved)| restore_inode(index, saved, &mut fds))
            .collect::<Result<Vec<_>, _>>()?;
        let table = InodeTable::restore(state.table, &inodes, options.remembered_handles)?;
        let taken = |fh: u64| {
            if fh == 0 || fh >= state.next_fh {
                return Err(invalid(format!(
                    "fh {fh} is not below the next fh, {}",
                    state.next_fh
                )));
            }
            Ok(())
        };
        let (files, dirs) = handle::tables_from(state.next_fh);
        for f in state.files {
            taken(f.fh)?;
            let what = format!("file fh {}", f.fh);
            let (inode, key) = inodes.get(f.inode).ok_or_else(|| {
                invalid(format!(
                    "{what} names inode {} of {}",
                    f.inode,
                    inodes.len()
                ))
            })?;
            let fd = fds.take(f.fd, &what)?;
            if key_of(fd.as_fd(), &what, Opened::Io)?.0 != *key {
                return Err(invalid(format!("{what} is another inode")));
            }
            let file = OpenFile {
                fd,
                inode: inode.clone(),
                passthrough: f.passthrough,
                lock_owners: Mutex::new(f.lock_owners),
                journal_slot: AtomicU32::new(NO_SLOT),
            };
            if !files.insert_at(f.fh, file) {
                return Err(invalid(format!("{what} twice")));
            }
        }
        for d in state.dirs {
            taken(d.fh)?;
            let what = format!("directory fh {}", d.fh);
            let fd = fds.take(d.fd, &what)?;
            check_opened(fd.as_fd(), &what, Opened::Io)?;
            let stream = DirStream::restore(fd, d.position, &d.unsent)
                .ok_or_else(|| invalid(format!("{what} has more unsent entries than fit")))?;
            let dir = OpenDir {
                stream: Mutex::new(stream),
                journal_slot: AtomicU32::new(NO_SLOT),
            };
            if files.get(fastfuse::FileHandle(d.fh)).is_ok() || !dirs.insert_at(d.fh, dir) {
                return Err(invalid(format!("{what} twice")));
            }
        }
        PassthroughFs::assemble(source, options, table, files, dirs, journal)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    /// A saved state with descriptors of its own, as a successor in
    /// another process would receive them.
    fn owned((state, fds): (SavedState, SavedFds)) -> (SavedState, Vec<OwnedFd>) {
        (state, fds.duplicate().unwrap())
    }

    use super::*;
    use std::collections::HashSet;
    use std::ffi::OsStr;
    use std::fs::{File, OpenOptions};

    use fastfuse::{Caller, FileHandle, Filesystem, Lock, NodeId, OpenFlags};

    use crate::dir::Taken;

    #[test]
    fn a_descriptor_is_taken_once_and_only_in_range() {
        let mut fds = Fds(vec![Some(sys::open(c"/", libc::O_PATH).unwrap())]);
        assert!(fds.take(0, "root").is_ok());
        let twice = fds.take(0, "root").unwrap_err();
        assert!(twice.to_string().contains("twice"), "{twice}");
        let beyond = fds.take(1, "x").unwrap_err();
        assert!(beyond.to_string().contains("out of range"), "{beyond}");
    }

    fn req() -> Caller<'static> {
        Caller::detached(0, 0, 1)
    }

    fn rdwr() -> OpenFlags {
        OpenFlags {
            flags: libc::O_RDWR as u32,
            kill_suidgid: false,
        }
    }

    fn lookup(fs: &PassthroughFs, parent: NodeId, name: &str) -> NodeId {
        fs.lookup(&req(), parent, OsStr::new(name)).unwrap().node
    }

    fn dev_ino(fd: BorrowedFd<'_>) -> (u64, u64) {
        let st = sys::stat_fd(fd).unwrap();
        (st.st_dev, st.st_ino)
    }

    fn write_lock(start: u64, end: u64, pid: u32) -> Lock {
        Lock {
            start,
            end,
            typ: libc::F_WRLCK as u32,
            pid,
        }
    }

    /// F_OFD_GETLK of a write lock over `start..start+len` on `file`: the
    /// type of the lock in the way (F_UNLCK: none).
    fn conflict(file: &File, start: i64, len: i64) -> libc::c_short {
        let mut fl = sys::flock_struct(libc::F_WRLCK as libc::c_short, start, len);
        sys::fcntl_lock(file.as_fd(), libc::F_OFD_GETLK, &mut fl).unwrap();
        fl.l_type
    }

    /// Reads up to `count` entries of `fh` from `offset`: their names and
    /// the cookie after the last.
    pub(crate) fn list(
        fs: &PassthroughFs,
        fh: FileHandle,
        offset: u64,
        count: usize,
    ) -> (Vec<Vec<u8>>, u64) {
        let dir = fs.dirs.get(fh).unwrap();
        let mut stream = dir.lock();
        let (mut names, mut next) = (Vec::new(), offset);
        stream
            .read_from(offset, |e| {
                if names.len() == count {
                    return Ok(Taken::Full);
                }
                names.push(e.name.to_vec());
                next = e.next_offset;
                Ok(Taken::Yes)
            })
            .unwrap();
        (names, next)
    }

    /// A filesystem with something of everything a state holds, and what
    /// the test needs to know of it.
    struct Busy {
        src: tempfile::TempDir,
        fs: PassthroughFs,
        a: NodeId,
        b: NodeId,
        gone: NodeId,
        fa: FileHandle,
        fb: FileHandle,
        fd: FileHandle,
        /// Names listed from `fd` so far, and the cookie after them.
        listed: (Vec<Vec<u8>>, u64),
        /// Every node id handed out.
        ids: HashSet<NodeId>,
    }

    fn busy() -> Busy {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("a"), b"alpha").unwrap();
        std::fs::write(src.path().join("b"), b"beta").unwrap();
        std::fs::hard_link(src.path().join("b"), src.path().join("b2")).unwrap();
        std::fs::write(src.path().join("gone"), b"").unwrap();
        std::fs::create_dir(src.path().join("d")).unwrap();
        for i in 0..100 {
            std::fs::write(src.path().join(format!("d/f{i}")), b"").unwrap();
        }
        // Directory handles, which a successor takes over.
        let options = Options {
            cache_dirs: false,
            ..Options::default()
        };
        let fs = PassthroughFs::new(src.path(), options).unwrap();
        let root = NodeId::ROOT;
        let a = lookup(&fs, root, "a");
        assert_eq!(lookup(&fs, root, "a"), a);
        let b = lookup(&fs, root, "b");
        assert_eq!(lookup(&fs, root, "b2"), b, "hard links share a node");
        let d = lookup(&fs, root, "d");
        let f7 = lookup(&fs, d, "f7");
        let gone = lookup(&fs, root, "gone");
        fs.forget(gone, 1);
        assert_eq!(fs.remembered_count(), 1);
        let fa = fs.open(&req(), a, rdwr()).unwrap().fh;
        let fb = fs.open(&req(), b, rdwr()).unwrap().fh;
        // A POSIX lock (owner 7, as pid 4242) and a flock.
        fs.setlk(&req(), a, fa, 7, write_lock(0, 9, 4242), false, false)
            .unwrap();
        fs.setlk(&req(), b, fb, 0, write_lock(0, u64::MAX, 0), false, true)
            .unwrap();
        // A cache WRITE noted a's mtime, and a backing id is in use.
        let inode = fs.inode(a).unwrap();
        drop(inode.kept_mtime.write(inode.fd.as_fd()));
        *inode.backing.lock().unwrap() = Some(Backing { id: 5, users: 1 });
        let fd = fs.opendir(&req(), d, 0).unwrap().fh;
        let listed = list(&fs, fd, 0, 10);
        assert_eq!(listed.0.len(), 10);
        let ids = [root, a, b, d, f7, gone].into_iter().collect();
        Busy {
            src,
            fs,
            a,
            b,
            gone,
            fa,
            fb,
            fd,
            listed,
            ids,
        }
    }

    #[test]
    fn a_restored_filesystem_is_the_saved_one() {
        let w = busy();
        let (state, fds) = w.fs.save().map(owned).unwrap();
        assert_eq!(state.version, STATE_VERSION);
        assert_eq!(state.table.shards.len(), 16);
        let fs =
            PassthroughFs::restore(w.src.path(), Options::default(), state.clone(), fds).unwrap();
        assert_eq!(fs.inode_count(), w.fs.inode_count());
        assert_eq!(fs.inode_count(), 5, "root, a, b, d, d/f7");
        assert_eq!(fs.remembered_count(), w.fs.remembered_count());
        // Saved again, the successor gives the same state, down to the
        // counts, keys, next ids, mtimes, backing ids and the order of
        // the descriptors, and each descriptor is the same inode.
        let (again, fds_old) = w.fs.save().map(owned).unwrap();
        assert_eq!(again, state, "saving twice gives one state");
        let (restored, fds_new) = fs.save().map(owned).unwrap();
        assert_eq!(restored, state);
        assert_eq!(fds_new.len(), fds_old.len());
        for (old, new) in fds_old.iter().zip(&fds_new) {
            assert_eq!(dev_ino(old.as_fd()), dev_ino(new.as_fd()));
        }
        drop((fds_old, fds_new));
        for &id in &w.ids {
            if id == w.gone {
                continue;
            }
            let (old, new) = (w.fs.inode(id).unwrap(), fs.inode(id).unwrap());
            assert_eq!(dev_ino(old.fd.as_fd()), dev_ino(new.fd.as_fd()), "{id:?}");
        }
        // Handles are the same open file descriptions: they share the offset.
        let (old, new) = (w.fs.files.get(w.fa).unwrap(), fs.files.get(w.fa).unwrap());
        assert!(Arc::ptr_eq(&new.inode, &fs.inode(w.a).unwrap()));
        sys::lseek(old.fd.as_fd(), 3, libc::SEEK_SET).unwrap();
        assert_eq!(sys::lseek(new.fd.as_fd(), 0, libc::SEEK_CUR).unwrap(), 3);
        let mut buf = [0u8; 16];
        let n = fs.read(&req(), w.a, w.fa, 0, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"alpha");
        assert_eq!(fs.dirs.get(w.fa).unwrap_err(), fastfuse::Errno::EBADF);
        assert_eq!(fs.files.get(w.fd).unwrap_err(), fastfuse::Errno::EBADF);
        // The forgotten node comes back under its id (LOOKUP ".").
        let revived = fs.lookup(&req(), w.gone, OsStr::new(".")).unwrap();
        assert_eq!(revived.node, w.gone);
        let ino = std::fs::metadata(w.src.path().join("gone")).unwrap();
        assert_eq!(revived.attr.ino, std::os::unix::fs::MetadataExt::ino(&ino));
        // New ids go on from each shard's saved next id: never one handed
        // out before.
        let mut handed = [0u64; 16];
        for i in 0..64 {
            let name = format!("new{i}");
            std::fs::write(w.src.path().join(&name), b"").unwrap();
            let id = lookup(&fs, NodeId::ROOT, &name);
            assert!(!w.ids.contains(&id), "{id:?} handed out twice");
            let shard = (id.0 & 15) as usize;
            assert_eq!(
                id.0 >> 4,
                state.table.shards[shard].next_id + handed[shard],
                "{id:?}"
            );
            handed[shard] += 1;
        }
        let fh = fs.open(&req(), w.a, rdwr()).unwrap().fh;
        assert_eq!(fh.0, state.next_fh);
        assert!(![w.fa, w.fb, w.fd].contains(&fh));
        // The listing goes on after the entries already sent.
        let (rest, _) = list(&fs, w.fd, w.listed.1, usize::MAX);
        let mut all: Vec<Vec<u8>> = w.listed.0.iter().cloned().chain(rest).collect();
        let count = all.len();
        all.sort();
        all.dedup();
        assert_eq!((count, all.len()), (102, 102), "100 files, . and ..");
    }

    fn open_source(src: &Path, name: &str) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(src.join(name))
            .unwrap()
    }

    #[test]
    fn locks_stay_held_by_the_successor_alone() {
        let Busy {
            src,
            fs: old,
            a,
            b,
            fa,
            fb,
            ..
        } = busy();
        let (state, fds) = old.save().map(owned).unwrap();
        let fs = PassthroughFs::restore(src.path(), Options::default(), state, fds).unwrap();
        // The predecessor goes, closing all its descriptors.
        drop(old);
        let other = open_source(src.path(), "a");
        assert_eq!(conflict(&other, 0, 10), libc::F_WRLCK as libc::c_short);
        assert_eq!(conflict(&other, 10, 10), libc::F_UNLCK as libc::c_short);
        let flocked = open_source(src.path(), "b");
        assert_eq!(
            sys::flock(flocked.as_fd(), libc::LOCK_EX | libc::LOCK_NB)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EWOULDBLOCK)
        );
        // Another owner asking through the successor sees the lock and the
        // pid that took it.
        let seen = fs.getlk(&req(), a, fa, 8, write_lock(0, 9, 1)).unwrap();
        assert_eq!((seen.typ, seen.pid), (libc::F_WRLCK as u32, 4242));
        // The successor's unlock and release let go.
        let unlock = Lock {
            typ: libc::F_UNLCK as u32,
            ..write_lock(0, 9, 4242)
        };
        fs.setlk(&req(), a, fa, 7, unlock, false, false).unwrap();
        assert_eq!(conflict(&other, 0, 10), libc::F_UNLCK as libc::c_short);
        fs.release(&req(), b, fb, 0, 0, 0).unwrap();
        sys::flock(flocked.as_fd(), libc::LOCK_EX | libc::LOCK_NB).unwrap();
    }

    #[test]
    fn a_state_of_the_previous_version_is_read() {
        let w = busy();
        let (mut state, fds) = w.fs.save().map(owned).unwrap();
        state.version = OLDEST_STATE_VERSION;
        let fs = PassthroughFs::restore(w.src.path(), Options::default(), state, fds).unwrap();
        // Its directory handle serves on: the listing goes on after the
        // entries already sent.
        let (rest, _) = list(&fs, w.fd, w.listed.1, usize::MAX);
        assert_eq!(w.listed.0.len() + rest.len(), 102, "100 files, . and ..");
    }

    /// Restores `state` with `fds` over `w`'s source: the error.
    fn refused(src: &Path, state: SavedState, fds: Vec<OwnedFd>) -> PassthroughError {
        PassthroughFs::restore(src, Options::default(), state, fds).unwrap_err()
    }

    #[test]
    fn a_state_that_does_not_fit_is_refused_and_the_predecessor_serves_on() {
        let w = busy();
        let src = w.src.path();

        let (mut state, fds) = w.fs.save().map(owned).unwrap();
        state.version = STATE_VERSION + 1;
        let err = refused(src, state, fds);
        assert!(
            matches!(
                err,
                PassthroughError::StateVersion {
                    found: 3,
                    oldest: 1,
                    newest: 2
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "saved state version 3, this build reads 1 to 2"
        );

        let elsewhere = tempfile::tempdir().unwrap();
        let (state, fds) = w.fs.save().map(owned).unwrap();
        let err = refused(elsewhere.path(), state, fds);
        assert!(matches!(err, PassthroughError::StateRoot { .. }), "{err}");
        assert!(
            err.to_string()
                .contains(&*elsewhere.path().to_string_lossy()),
            "{err}"
        );
        let (state, fds) = w.fs.save().map(owned).unwrap();
        let err = refused(&src.join("a"), state, fds);
        assert!(
            matches!(err, PassthroughError::NotADirectory { .. }),
            "{err}"
        );

        let (state, mut fds) = w.fs.save().map(owned).unwrap();
        fds.pop();
        let err = refused(src, state, fds);
        assert!(matches!(err, PassthroughError::InvalidState(_)), "{err}");
        assert!(err.to_string().contains("out of range"), "{err}");

        // Descriptors out of order: an entry's descriptor is another inode
        // (or another type of file), or the same inode opened otherwise.
        // Each case names the descriptors it swaps, so that it does not
        // depend on the shards the temp dir's inode numbers pick.
        let (state, _) = w.fs.save().map(owned).unwrap();
        let inode_of = |node: NodeId| {
            let n = state
                .table
                .shards
                .iter()
                .flat_map(|s| &s.live)
                .find(|n| n.id == node.0)
                .unwrap();
            &state.inodes[n.inode]
        };
        let (a, b) = (inode_of(w.a), inode_of(w.b));
        let a_lock = a.posix_locks[0].fd;
        // Whichever of a and b is restored first finds the mismatch: a's
        // lock owner against a's fd, or the table against b's node.
        let other_inode: &[&str] = &["is another inode", "'s descriptor is inode"];
        let opened_otherwise: &[&str] = &["'s descriptor is open for I/O, not O_PATH"];
        for (i, j, says) in [(a.fd, b.fd, other_inode), (a.fd, a_lock, opened_otherwise)] {
            let (state, mut fds) = w.fs.save().map(owned).unwrap();
            fds.swap(i, j);
            let err = refused(src, state, fds);
            assert!(matches!(err, PassthroughError::InvalidState(_)), "{err}");
            let err = err.to_string();
            assert!(says.iter().any(|s| err.contains(s)), "{says:?}: {err}");
        }
        let (state, mut fds) = w.fs.save().map(owned).unwrap();
        fds.swap(0, 1);
        let err = refused(src, state, fds);
        assert!(matches!(err, PassthroughError::InvalidState(_)), "{err}");
        assert!(err.to_string().contains("descriptor is"), "{err}");

        // A node moved to another shard (as a build hashing keys otherwise
        // would find it): refused, or a key could get two ids.
        let (mut state, fds) = w.fs.save().map(owned).unwrap();
        let (from, node) = state
            .table
            .shards
            .iter_mut()
            .enumerate()
            .find_map(|(i, s)| (i != 1 && !s.live.is_empty()).then(|| (i, s.live.pop().unwrap())))
            .unwrap();
        let keys = &mut state.table.shards[from].keys;
        let key = keys.remove(keys.iter().position(|&(_, id)| id == node.id).unwrap());
        let to = &mut state.table.shards[(from + 1) % 16];
        to.live.push(node);
        to.keys.push(key);
        let err = refused(src, state, fds);
        assert!(
            err.to_string().contains("does not belong in shard"),
            "{err}"
        );

        // An id the shard's next id would hand out again.
        let (mut state, fds) = w.fs.save().map(owned).unwrap();
        let shard = state
            .table
            .shards
            .iter_mut()
            .find(|s| !s.live.is_empty())
            .unwrap();
        let last = shard.live.iter().map(|n| n.id >> 4).max().unwrap();
        shard.next_id = last;
        let err = refused(src, state, fds);
        assert!(
            err.to_string().contains(&format!("below id {last}")),
            "{err}"
        );

        // An fh the counter would hand out again.
        let (mut state, fds) = w.fs.save().map(owned).unwrap();
        state.next_fh = w.fd.0;
        let err = refused(src, state, fds);
        assert!(err.to_string().contains("not below the next fh"), "{err}");

        // The predecessor still serves, its handles and locks intact.
        let mut buf = [0u8; 8];
        let n = w.fs.read(&req(), w.a, w.fa, 0, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"alpha");
        let other = open_source(src, "a");
        assert_eq!(conflict(&other, 0, 10), libc::F_WRLCK as libc::c_short);
        assert_eq!(w.fs.inode_count(), 5);
        assert_eq!(w.fs.remembered_count(), 1);
    }

    #[test]
    fn forgotten_nodes_are_kept_as_far_as_the_successor_remembers() {
        let w = busy();
        let (state, fds) = w.fs.save().map(owned).unwrap();
        let options = Options {
            remembered_handles: 0,
            ..Options::default()
        };
        let fs = PassthroughFs::restore(w.src.path(), options, state, fds).unwrap();
        assert_eq!((fs.inode_count(), fs.remembered_count()), (5, 0));
        assert_eq!(
            fs.lookup(&req(), w.gone, OsStr::new(".")).unwrap_err(),
            fastfuse::Errno::ESTALE
        );
        // By name it gets a new id, never the old one.
        let again = lookup(&fs, NodeId::ROOT, "gone");
        assert_ne!(again, w.gone);
        assert!(!w.ids.contains(&again));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn a_state_survives_serialisation() {
        let w = busy();
        let (state, fds) = w.fs.save().map(owned).unwrap();
        let json = serde_json::to_string(&state).unwrap();
        let back: SavedState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state);
        let fs = PassthroughFs::restore(w.src.path(), Options::default(), back, fds).unwrap();
        assert_eq!(fs.inode_count(), w.fs.inode_count());
        assert_eq!(fs.remembered_count(), 1);
    }

    /// A node remembered by its handle in the predecessor but saved with
    /// its descriptor (as a recently forgotten one is) comes back holding
    /// the descriptor, and revives under its id.
    #[test]
    fn a_node_saved_open_stays_open_in_the_successor_and_revives() {
        let w = busy();
        let (mut state, mut fds) = w.fs.save().map(owned).unwrap();
        let gone = w.src.path().join("gone");
        let path = std::ffi::CString::new(gone.as_os_str().as_encoded_bytes()).unwrap();
        fds.push(sys::open(&path, libc::O_PATH | libc::O_NOFOLLOW).unwrap());
        state.inodes.push(SavedInode {
            fd: fds.len() - 1,
            kind: libc::S_IFREG,
            backing: None,
            posix_locks: Vec::new(),
            mtime: SavedMtime::default(),
        });
        let index = state.inodes.len() - 1;
        let forgotten = state
            .table
            .shards
            .iter_mut()
            .flat_map(|s| s.forgotten.iter_mut())
            .find(|f| f.id == w.gone.0)
            .unwrap();
        forgotten.kept = SavedKept::Open { inode: index };
        let fs = PassthroughFs::restore(w.src.path(), Options::default(), state, fds).unwrap();
        assert_eq!(fs.remembered_count(), 1);
        let (again, _) = fs.save().map(owned).unwrap();
        let kept = again
            .table
            .shards
            .iter()
            .flat_map(|s| &s.forgotten)
            .find(|f| f.id == w.gone.0)
            .map(|f| f.kept.clone());
        assert!(matches!(kept, Some(SavedKept::Open { .. })), "{kept:?}");
        let revived = fs.lookup(&req(), w.gone, OsStr::new(".")).unwrap();
        assert_eq!(revived.node, w.gone);
    }
}
