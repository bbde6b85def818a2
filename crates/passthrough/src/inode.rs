//! The inode table: which source inode each node id the kernel holds
//! stands for, and how many lookups the kernel holds on it.
//!
//! One entry per source inode, keyed by (st_dev, st_ino), so that hard
//! links share one node id. An entry holds an `O_PATH|O_NOFOLLOW` fd,
//! which pins the inode: while we hold it, the source cannot free the
//! inode and reuse its number, so a key never silently changes meaning.
//!
//! When the kernel forgets a node, the entry does not vanish at once: the
//! node id is remembered, in a bounded table of forgotten nodes. A node
//! just forgotten keeps its fd for up to [`KEEP_OPEN`] (at most a quarter
//! of RLIMIT_NOFILE of them at once), so that a lookup soon after (a cold
//! `find` after the kernel dropped its caches) revives it with a stat of
//! the name and nothing else; a sweeper thread closes those that are due.
//! The others are remembered by the source's own file handle of the inode
//! (`name_to_handle_at`), their fd closed. An inode whose last name is
//! gone is not remembered: its fd closes at FORGET, so that its space is
//! freed as on the source. The kernel's file handles (NFS export,
//! `open_by_handle_at`) carry only a node id; when it decodes one whose
//! inode it no longer caches, it asks LOOKUP "." in that node id, and the
//! node is revived from the source handle under its old id. A later
//! lookup by name of the same inode reuses the old id too, so that old
//! kernel handles keep naming it. Node ids stay unique to one inode: a
//! remembered key is reused only when the source handles agree (an inode
//! number the source gave to a new file has a new handle).
//!
//! Locking: the table is split into [`SHARDS`] shards, each one `RwLock`
//! over the maps of the nodes that live in it. A node's shard follows from
//! its key (a hash of (st_dev, st_ino); the root's key is pinned to the
//! root's shard) and is written into the low bits of its node id, so every
//! operation on one node, by key or by id, takes exactly one shard lock,
//! and never two at once. Each shard hands out its own ids, so the rules
//! above (an id never names another inode, a key has at most one id, a
//! forgotten node comes back under its id) hold per shard, hence for the
//! table.
//!
//! Within a shard: resolving a node (getattr, open, every `*at` call on a
//! parent) and counting one more lookup of a live node (the common LOOKUP
//! reply) take the lock shared; the count is an atomic, incremented
//! `Relaxed`, which is enough because it is decremented, and the entry
//! removed at zero, only under the exclusive lock, which orders every
//! increment before it. Adding an entry, FORGET and reviving a forgotten
//! node take the lock exclusively, so that "is this inode known?" and
//! "insert it" are one step and two racing lookups of one inode cannot
//! create two entries.
//!
//! The bounds on forgotten nodes, and on those of them holding an fd, are
//! the table's, not a shard's: table-wide counts say when one is exceeded,
//! and the oldest forgotten node of all shards (by a table-wide sequence
//! number) goes first.

use std::collections::{BTreeMap, HashMap};
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{
    Arc, Condvar, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak,
};
use std::time::{Duration, Instant};

use crate::mtime::KeptMtime;

use fastfuse::{Errno, NodeId};

use crate::error::PassthroughError;
use crate::journal::{Journal, NO_SLOT, UNRECORDED};
use crate::saved::{
    invalid, SavedForgotten, SavedKept, SavedKey, SavedNode, SavedShard, SavedTable, Saver,
};
use crate::sys::{self, SourceHandle};

/// The table's maps. Their keys are node ids the table hands out and the
/// source's (device, inode) pairs, not names anyone picks, so the std
/// hasher's resistance to chosen keys buys nothing here, and its cost
/// showed: with FxHash, a READDIRPLUS of 100 names read ahead (a lookup
/// of each, under the shards' locks) took 29 µs instead of 37 (median of
/// 1,530 in 30 cold walks).
type Map<K, V> = HashMap<K, V, rustc_hash::FxBuildHasher>;

/// How long a forgotten node keeps its fd at most: long enough for the
/// walk that follows a dropping of the kernel's caches, short enough that
/// an inode deleted behind the daemon's back is not kept from the source
/// for long, nor fds from whoever needs them.
pub(crate) const KEEP_OPEN: Duration = Duration::from_secs(1);

/// What identifies a source inode: (st_dev, st_ino).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct InodeKey {
    dev: u64,
    ino: u64,
}

impl From<InodeKey> for SavedKey {
    fn from(key: InodeKey) -> SavedKey {
        SavedKey {
            dev: key.dev,
            ino: key.ino,
        }
    }
}

impl From<SavedKey> for InodeKey {
    fn from(key: SavedKey) -> InodeKey {
        InodeKey {
            dev: key.dev,
            ino: key.ino,
        }
    }
}

impl InodeKey {
    /// (st_dev, st_ino).
    pub(crate) fn parts(self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    /// The key (st_dev, st_ino).
    pub(crate) fn from_parts(dev: u64, ino: u64) -> InodeKey {
        InodeKey { dev, ino }
    }

    /// The key of the inode `st` describes.
    pub(crate) fn of(st: &libc::stat) -> InodeKey {
        InodeKey {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }

    /// The shard of this key (the root's excepted, see
    /// [`InodeTable::shard_of_key`]): the top bits of a multiplicative
    /// hash, which spreads the sequential inode numbers filesystems hand
    /// out evenly over the shards.
    fn shard(self) -> usize {
        let mixed = (self.ino ^ self.dev.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (mixed >> (u64::BITS - SHARD_BITS)) as usize
    }
}

/// How many shards the table has; a power of two, since a node id's low
/// [`SHARD_BITS`] bits name its shard.
pub(crate) const SHARDS: usize = 16;
const SHARD_BITS: u32 = SHARDS.trailing_zeros();

/// The shard a node id lives in.
const fn shard_of_id(node: NodeId) -> usize {
    (node.0 & (SHARDS as u64 - 1)) as usize
}

/// The root's shard, fixed by its id.
const ROOT_SHARD: usize = shard_of_id(NodeId::ROOT);

/// A node id's shard and its index within the shard (what the shard's
/// next id counts).
pub(crate) fn shard_and_index(node: NodeId) -> (usize, u64) {
    (shard_of_id(node), node.0 >> SHARD_BITS)
}

/// Whether `node` may stand for `key` in a table whose root is `root`:
/// the id is in the key's shard and is the root's exactly when the key is
/// (what [`InodeTable::restore`] insists on).
pub(crate) fn belongs(node: NodeId, key: InodeKey, root: InodeKey) -> bool {
    let shard = if key == root { ROOT_SHARD } else { key.shard() };
    node.0 >> SHARD_BITS != 0
        && shard_of_id(node) == shard
        && (key == root) == (node == NodeId::ROOT)
}

/// One source inode the kernel knows by a node id.
#[derive(Debug)]
pub(crate) struct Inode {
    /// `O_PATH|O_NOFOLLOW|O_CLOEXEC`: names the inode for `*at` calls and,
    /// through /proc/self/fd, for reopening it.
    pub(crate) fd: OwnedFd,
    /// The file type bits (`st_mode & S_IFMT`), which never change.
    pub(crate) kind: libc::mode_t,
    /// (st_dev, st_ino), which the fd pins.
    pub(crate) key: InodeKey,
    /// The kernel passthrough backing file shared by every open of this
    /// inode (the kernel refuses two different backing files for one
    /// inode, with EBUSY).
    pub(crate) backing: Mutex<Option<Backing>>,
    /// POSIX lock owner → the open file description that holds its locks
    /// on this inode, and the pid that last took one (see `ops::lock`).
    pub(crate) posix_locks: Mutex<HashMap<u64, (Arc<OwnedFd>, u32)>>,
    /// Under the writeback cache: the mtime cache WRITEs must not change
    /// (see `mtime`).
    pub(crate) kept_mtime: KeptMtime,
    /// Its node slot in the crash journal, when there is one (see
    /// `journal`): an index, `NO_SLOT` while not recorded.
    pub(crate) journal_slot: AtomicU32,
}

impl Inode {
    /// Whether this is a regular file.
    pub(crate) fn is_regular(&self) -> bool {
        self.kind == libc::S_IFREG
    }

    pub(crate) fn new(fd: OwnedFd, st: &libc::stat) -> Inode {
        Inode {
            fd,
            kind: st.st_mode & libc::S_IFMT,
            key: InodeKey::of(st),
            backing: Mutex::new(None),
            posix_locks: Mutex::new(HashMap::new()),
            kept_mtime: KeptMtime::default(),
            journal_slot: AtomicU32::new(NO_SLOT),
        }
    }
}

/// A registered kernel passthrough backing file and how many open handles
/// use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backing {
    /// The id `FUSE_DEV_IOC_BACKING_OPEN` returned.
    pub(crate) id: i32,
    /// Open handles using it; the id is closed when this drops to zero.
    pub(crate) users: u32,
}

/// One node id's entry.
#[derive(Debug)]
struct Slot {
    inode: Arc<Inode>,
    key: InodeKey,
    /// Lookups the kernel holds (every reply with this node id added one;
    /// FORGET subtracts). Incremented under the shard's shared lock,
    /// decremented only under its exclusive one (see the module doc). The
    /// root's count is not kept: it is never forgotten.
    lookups: AtomicU64,
    /// [`InodeTable::removals`] when the node became live (0 for an inode
    /// that had no name then, an O_TMPFILE): while the count is still
    /// that, no name has been removed through the mount since, so the
    /// node's FORGET can trust that it still has one.
    since: u64,
}

/// A node the kernel forgot, remembered so that its id can be revived.
#[derive(Debug)]
struct Forgotten {
    key: InodeKey,
    /// Its place in [`Nodes::age`], from the table-wide
    /// [`InodeTable::next_seq`].
    seq: u64,
    kept: Kept,
}

/// What a forgotten node keeps of its inode.
#[derive(Debug)]
enum Kept {
    /// Just forgotten: the thread that handled the FORGET is taking the
    /// source handle. The fd is still open (here), so the inode cannot
    /// have been freed and its key still means it.
    Taking(Arc<Inode>),
    /// The source's handle of the inode; nothing is held open.
    Handle(SourceHandle),
}

/// One shard: the nodes whose ids end in `shard`, and the keys that map
/// to them.
#[derive(Debug)]
struct Nodes {
    /// This shard's index, the low bits of every id it hands out.
    shard: u64,
    by_id: Map<NodeId, Slot>,
    /// The node id of every live and every forgotten entry, by key.
    by_key: Map<InodeKey, NodeId>,
    /// The next node id to hand out, without the shard bits. Ids are never
    /// reused for another inode, so a node id the kernel holds, or holds
    /// in a file handle, can never come to mean another inode.
    next_id: u64,
    /// Forgotten nodes (never also in `by_id`).
    forgotten: Map<NodeId, Forgotten>,
    /// Forgotten nodes, oldest first, for dropping the oldest beyond
    /// `max_forgotten`.
    age: BTreeMap<u64, NodeId>,
    /// The forgotten nodes that still hold their fd (`Kept::Taking`) and
    /// that nobody is taking the handle of yet, oldest first, with when
    /// they were forgotten: for closing the oldest beyond
    /// `max_open_forgotten`, and those kept [`KEEP_OPEN`].
    open_age: BTreeMap<u64, (NodeId, Instant)>,
}

/// The exclusive lock of one shard. It keeps
/// [`InodeTable::forgotten_total`] and [`InodeTable::open_total`] in step
/// with the shard's forgotten nodes: whatever the holder did to them is
/// added up when it lets go, still under the lock.
struct ShardWrite<'a> {
    nodes: RwLockWriteGuard<'a, Nodes>,
    forgotten_before: usize,
    open_before: usize,
    total: &'a AtomicUsize,
    open_total: &'a AtomicUsize,
}

impl Deref for ShardWrite<'_> {
    type Target = Nodes;

    fn deref(&self) -> &Nodes {
        &self.nodes
    }
}

impl DerefMut for ShardWrite<'_> {
    fn deref_mut(&mut self) -> &mut Nodes {
        &mut self.nodes
    }
}

impl Drop for ShardWrite<'_> {
    fn drop(&mut self) {
        // Relaxed: the totals only decide when to drop or close the oldest
        // forgotten nodes; each shard's maps, under its lock, are the truth.
        fn follow(total: &AtomicUsize, before: usize, now: usize) {
            if now > before {
                total.fetch_add(now - before, Ordering::Relaxed);
            } else if now < before {
                total.fetch_sub(before - now, Ordering::Relaxed);
            }
        }
        follow(
            self.total,
            self.forgotten_before,
            self.nodes.forgotten.len(),
        );
        follow(self.open_total, self.open_before, self.nodes.open_age.len());
    }
}

/// Every shard, empty.
fn empty_shards() -> [RwLock<Nodes>; SHARDS] {
    std::array::from_fn(|shard| {
        RwLock::new(Nodes {
            shard: shard as u64,
            by_id: Map::default(),
            by_key: Map::default(),
            // From 1, so that no id is 0 nor the root's (0 << SHARD_BITS | 1).
            next_id: 1,
            forgotten: Map::default(),
            age: BTreeMap::new(),
            open_age: BTreeMap::new(),
        })
    })
}

/// The table. Cheap to share by reference between worker threads.
#[derive(Debug)]
pub(crate) struct InodeTable {
    shards: [RwLock<Nodes>; SHARDS],
    /// The root's key, which lives in [`ROOT_SHARD`] whatever its hash
    /// (LOOKUP ".." up to the root must find `NodeId::ROOT`).
    root_key: InodeKey,
    /// Forgotten nodes in all shards (see [`ShardWrite`]).
    forgotten_total: AtomicUsize,
    /// Forgotten nodes in all shards' `open_age` (see [`ShardWrite`]).
    open_total: AtomicUsize,
    /// The next [`Forgotten::seq`]: table-wide, so that the oldest
    /// forgotten node of all shards is the one to drop.
    next_seq: AtomicU64,
    /// When the source has file handles that the daemon may open: the
    /// source root and the id of the mount it is on. Only inodes on that
    /// mount are remembered: a handle means nothing on another filesystem.
    /// `None`: forgotten nodes are not remembered.
    handles: Option<HandleMount>,
    /// The most forgotten nodes remembered, over all shards; the oldest go
    /// first.
    max_forgotten: usize,
    /// The most forgotten nodes that keep their fd; the oldest beyond are
    /// remembered by handle instead.
    max_open_forgotten: usize,
    /// How long one keeps it ([`KEEP_OPEN`]).
    keep_open: Duration,
    /// Wakes the thread that closes the fds kept too long (see
    /// [`InodeTable::start_sweeper`]).
    sweep: Arc<Sweep>,
    /// The crash journal, which every node handed out goes into (see
    /// `journal`).
    journal: Option<Arc<Journal>>,
    /// Names removed through the mount (UNLINK, RMDIR, RENAME), counted
    /// from 1 (see [`Slot::since`]).
    removals: AtomicU64,
}

impl InodeTable {
    /// A table holding only the root, `NodeId::ROOT`, for `root_fd`,
    /// remembering up to `max_forgotten` forgotten nodes (0: none).
    pub(crate) fn new(root_fd: OwnedFd, root: &libc::stat, max_forgotten: usize) -> InodeTable {
        let key = InodeKey::of(root);
        let inode = Arc::new(Inode::new(root_fd, root));
        let handles = if max_forgotten == 0 {
            None
        } else {
            HandleMount::of(&inode)
        };
        let shards = empty_shards();
        let table = InodeTable {
            shards,
            root_key: key,
            forgotten_total: AtomicUsize::new(0),
            open_total: AtomicUsize::new(0),
            next_seq: AtomicU64::new(0),
            handles,
            max_forgotten,
            max_open_forgotten: open_bound(max_forgotten),
            keep_open: KEEP_OPEN,
            sweep: Arc::default(),
            journal: None,
            removals: AtomicU64::new(1),
        };
        let since = table.live_since(root);
        table
            .write(ROOT_SHARD)
            .insert_live(NodeId::ROOT, key, inode, since);
        table
    }

    /// Journals every node this table hands out from now on into
    /// `journal` (the root excepted, which recovery opens from the source
    /// path).
    pub(crate) fn set_journal(&mut self, journal: Arc<Journal>) {
        if let Ok(root) = self.get(NodeId::ROOT) {
            root.journal_slot.store(UNRECORDED, Ordering::Relaxed);
        }
        self.journal = Some(journal);
    }

    /// The shard `key`'s node lives in.
    fn shard_of_key(&self, key: InodeKey) -> usize {
        if key == self.root_key {
            ROOT_SHARD
        } else {
            key.shard()
        }
    }

    // A panic while holding a lock cannot leave the maps half-updated
    // (every update is a few infallible map operations), so a poisoned lock
    // is still good to use; the filesystem must keep serving.
    fn read(&self, shard: usize) -> RwLockReadGuard<'_, Nodes> {
        self.shards[shard]
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, shard: usize) -> ShardWrite<'_> {
        let nodes = self.shards[shard]
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        ShardWrite {
            forgotten_before: nodes.forgotten.len(),
            open_before: nodes.open_age.len(),
            nodes,
            total: &self.forgotten_total,
            open_total: &self.open_total,
        }
    }

    /// The inode of `node`, without changing its count. ESTALE for a node
    /// the table does not know (the kernel never sends one; a confused or
    /// malicious sender gets an error, not a panic).
    pub(crate) fn get(&self, node: NodeId) -> Result<Arc<Inode>, Errno> {
        match self.read(shard_of_id(node)).by_id.get(&node) {
            Some(slot) => Ok(slot.inode.clone()),
            None => {
                tracing::debug!(node = node.0, "request for an unknown node");
                Err(Errno::ESTALE)
            }
        }
    }

    /// Counts one more lookup of the inode `fd` refers to (`st` is its
    /// stat), adding an entry for it if it has none. Returns the node id
    /// and its inode. When the inode was already known, `fd` is closed
    /// (after the lock is released) and the entry's own fd kept. An inode
    /// the kernel forgot gets its old node id back.
    pub(crate) fn acquire(&self, fd: OwnedFd, st: &libc::stat) -> (NodeId, Arc<Inode>) {
        let (node, inode) = self.acquire_unjournaled(fd, st);
        if let Some(journal) = &self.journal {
            journal.record_node(node, Some(InodeKey::of(st)), &inode);
        }
        (node, inode)
    }

    /// [`acquire`](Self::acquire) but for the journal.
    fn acquire_unjournaled(&self, fd: OwnedFd, st: &libc::stat) -> (NodeId, Arc<Inode>) {
        let key = InodeKey::of(st);
        let shard = self.shard_of_key(key);
        // A live inode, the common case, needs only the shared lock.
        let live = self.read(shard).acquire_key(key);
        if let Some(found) = live {
            drop(fd);
            return found;
        }
        // The source handle of `fd`, taken (without the lock) only when the
        // key is that of a forgotten node: `None` until then, `Some(None)`
        // when the source gave none.
        let mut handle: Option<Option<SourceHandle>> = None;
        let since = self.live_since(st);
        loop {
            let mut nodes = self.write(shard);
            let Some(&node) = nodes.by_key.get(&key) else {
                return nodes.insert_new(key, fd, st, since);
            };
            if let Some(slot) = nodes.by_id.get_mut(&node) {
                // Made live by another thread since the shared look.
                *slot.lookups.get_mut() += 1;
                let inode = slot.inode.clone();
                drop(nodes);
                drop(fd);
                return (node, inode);
            }
            let same = match nodes.forgotten.get(&node).map(|f| &f.kept) {
                // Its fd is still open, so the key still means that inode.
                Some(Kept::Taking(_)) => true,
                Some(Kept::Handle(old)) => match &handle {
                    None => {
                        drop(nodes);
                        handle = Some(sys::name_to_handle(fd.as_fd()).ok().map(|(h, _)| h));
                        // The table may change meanwhile: look again.
                        continue;
                    }
                    // Different handles: the source gave the inode number
                    // of the forgotten file (which is gone) to a new one.
                    Some(new) => new.as_ref() == Some(old),
                },
                None => {
                    // A key without its id would be a bug of this module;
                    // heal the map by inserting afresh rather than failing
                    // the lookup.
                    tracing::error!(node = node.0, "inode table out of step; re-adding");
                    false
                }
            };
            if !same {
                let gone = nodes.drop_forgotten(node);
                let found = nodes.insert_new(key, fd, st, since);
                drop(nodes);
                drop(gone);
                return found;
            }
            let inode = match nodes.take_forgotten(node).map(|f| f.kept) {
                Some(Kept::Taking(inode)) => inode,
                _ => Arc::new(Inode::new(fd, st)),
            };
            nodes.insert_live(node, key, inode.clone(), since);
            return (node, inode);
        }
    }

    /// One more lookup of the inode `st` describes, if the table holds it
    /// open: live, or forgotten so recently that its fd is still held
    /// (revived under its old id). `None`: the caller must open it.
    pub(crate) fn acquire_known(&self, st: &libc::stat) -> Option<(NodeId, Arc<Inode>)> {
        let key = InodeKey::of(st);
        let (node, inode) = self.acquire_known_unjournaled(key)?;
        if let Some(journal) = &self.journal {
            // As `acquire`: a node made live by another thread is recorded
            // before this reply names it.
            journal.record_node(node, Some(key), &inode);
        }
        Some((node, inode))
    }

    /// [`acquire_known`](Self::acquire_known) but for the journal.
    fn acquire_known_unjournaled(&self, key: InodeKey) -> Option<(NodeId, Arc<Inode>)> {
        let shard = self.shard_of_key(key);
        if let Some(found) = self.read(shard).acquire_key(key) {
            return Some(found);
        }
        // The caller found the inode by a name, so it had one.
        let since = self.removals_now();
        let mut nodes = self.write(shard);
        let &node = nodes.by_key.get(&key)?;
        if let Some(slot) = nodes.by_id.get_mut(&node) {
            *slot.lookups.get_mut() += 1;
            return Some((node, slot.inode.clone()));
        }
        if !matches!(nodes.forgotten.get(&node)?.kept, Kept::Taking(_)) {
            return None;
        }
        let Some(Kept::Taking(inode)) = nodes.take_forgotten(node).map(|f| f.kept) else {
            return None;
        };
        nodes.insert_live(node, key, inode.clone(), since);
        Some((node, inode))
    }

    /// One more lookup of `node` itself (LOOKUP "."): of a live node, or of
    /// a forgotten one, revived from its source handle under its old id.
    /// ESTALE when the node is unknown or its inode no longer exists.
    pub(crate) fn acquire_or_revive(&self, node: NodeId) -> Result<Arc<Inode>, Errno> {
        let inode = self.acquire_or_revive_unjournaled(node)?;
        if let Some(journal) = &self.journal {
            journal.record_node(node, None, &inode);
        }
        Ok(inode)
    }

    /// [`acquire_or_revive`](Self::acquire_or_revive) but for the journal.
    fn acquire_or_revive_unjournaled(&self, node: NodeId) -> Result<Arc<Inode>, Errno> {
        let shard = shard_of_id(node);
        let live = self.read(shard).acquire_id(node);
        if let Some(inode) = live {
            return Ok(inode);
        }
        let (key, handle) = {
            let mut nodes = self.write(shard);
            if let Some(slot) = nodes.by_id.get_mut(&node) {
                *slot.lookups.get_mut() += 1;
                return Ok(slot.inode.clone());
            }
            let Some(forgotten) = nodes.forgotten.get(&node) else {
                tracing::debug!(node = node.0, "LOOKUP \".\" of an unknown node");
                return Err(Errno::ESTALE);
            };
            let key = forgotten.key;
            match &forgotten.kept {
                Kept::Handle(h) => (key, h.clone()),
                Kept::Taking(inode) => {
                    let (inode, seq) = (inode.clone(), forgotten.seq);
                    drop(nodes);
                    return self.revive_open(node, seq, inode);
                }
            }
        };
        let gone = || {
            tracing::debug!(node = node.0, "a forgotten node is gone from the source");
            let dropped = self.write(shard).drop_forgotten_if(node, &handle);
            drop(dropped);
            Err(Errno::ESTALE)
        };
        let Some(mount) = &self.handles else {
            unreachable!("nodes are remembered only with source handles");
        };
        let fd = match mount.open(&handle) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESTALE) => return gone(),
            Err(e) => {
                tracing::debug!(node = node.0, "cannot reopen a forgotten node: {e}");
                return Err(e.into());
            }
        };
        let st = sys::stat_fd(fd.as_fd())?;
        // A file deleted but still open somewhere can still be opened by
        // handle; through the mount it is gone all the same.
        if InodeKey::of(&st) != key || st.st_nlink == 0 {
            return gone();
        }
        let since = self.live_since(&st);
        let mut nodes = self.write(shard);
        if let Some(slot) = nodes.by_id.get_mut(&node) {
            // Revived by another thread meanwhile.
            *slot.lookups.get_mut() += 1;
            return Ok(slot.inode.clone());
        }
        // The key lives in the node's shard: its id was handed out there.
        match nodes.by_key.get(&key) {
            // Still forgotten, or dropped meanwhile (the bound) with its key
            // free: the inode was verified above either way.
            Some(&n) if n == node => {}
            None => {}
            // Another node has the key now: this id no longer means it.
            Some(_) => return Err(Errno::ESTALE),
        }
        let stale = nodes.take_forgotten(node);
        let inode = Arc::new(Inode::new(fd, &st));
        nodes.insert_live(node, key, inode.clone(), since);
        drop(nodes);
        drop(stale);
        Ok(inode)
    }

    /// [`acquire_or_revive`](Self::acquire_or_revive) of a forgotten node
    /// that still holds its fd (`inode`, forgotten as `seq`): revived
    /// unless its inode lost its last name since, which, as on the source
    /// (whose handles of deleted files are stale), makes it ESTALE.
    fn revive_open(&self, node: NodeId, seq: u64, inode: Arc<Inode>) -> Result<Arc<Inode>, Errno> {
        let since = self.removals_now();
        let named = has_name(&inode);
        let mut nodes = self.write(shard_of_id(node));
        if let Some(slot) = nodes.by_id.get_mut(&node) {
            // Revived by another thread meanwhile.
            *slot.lookups.get_mut() += 1;
            return Ok(slot.inode.clone());
        }
        let same = nodes
            .forgotten
            .get(&node)
            .is_some_and(|f| f.seq == seq && matches!(f.kept, Kept::Taking(_)));
        if !same {
            // Dropped, or its handle taken, meanwhile: look again.
            drop(nodes);
            return self.acquire_or_revive_unjournaled(node);
        }
        if !named {
            tracing::debug!(node = node.0, "a forgotten node is gone from the source");
            let gone = nodes.drop_forgotten(node);
            drop(nodes);
            drop(gone);
            return Err(Errno::ESTALE);
        }
        let Some(Forgotten { key, .. }) = nodes.take_forgotten(node) else {
            return Err(Errno::ESTALE);
        };
        nodes.insert_live(node, key, inode.clone(), since);
        Ok(inode)
    }

    /// Counts one more lookup of a node the kernel already holds (LINK
    /// returns the linked node again). ESTALE if it is unknown.
    pub(crate) fn acquire_existing(&self, node: NodeId) -> Result<Arc<Inode>, Errno> {
        let inode = self
            .read(shard_of_id(node))
            .acquire_id(node)
            .ok_or(Errno::ESTALE)?;
        if let Some(journal) = &self.journal {
            // Live, so recorded already, or being recorded by the thread
            // that made it live: this waits for that.
            journal.record_node(node, None, &inode);
        }
        Ok(inode)
    }

    /// Counts a name removed through the mount (UNLINK, RMDIR, a RENAME
    /// that may have replaced one), after the source removed it and before
    /// the reply: the FORGET the kernel then sends of the inode that lost
    /// it asks the source whether the inode has a name left.
    pub(crate) fn name_removed(&self) {
        self.removals.fetch_add(1, Ordering::AcqRel);
    }

    /// The count of [`name_removed`](Self::name_removed) now.
    fn removals_now(&self) -> u64 {
        self.removals.load(Ordering::Acquire)
    }

    /// What [`Slot::since`] is for a node made live now whose inode `st`
    /// describes.
    fn live_since(&self, st: &libc::stat) -> u64 {
        if st.st_nlink == 0 {
            0
        } else {
            self.removals_now()
        }
    }

    /// Subtracts `nlookup` from `node`'s count; at zero the entry becomes a
    /// forgotten one (or goes). Unknown nodes and the root are logged and
    /// ignored.
    pub(crate) fn forget(&self, node: NodeId, nlookup: u64) {
        self.forget_many(&mut std::iter::once((node, nlookup)));
    }

    /// [`forget`](Self::forget) for many nodes, under one lock of each
    /// shard they live in.
    pub(crate) fn forget_many(&self, forgets: &mut dyn Iterator<Item = (NodeId, u64)>) {
        let mut forgets: Vec<(NodeId, u64)> = forgets.collect();
        forgets.sort_by_key(|&(node, _)| shard_of_id(node));
        let remember = self.handles.is_some();
        let mut released = Vec::new();
        let mut closed = Vec::new();
        for group in forgets.chunk_by(|a, b| shard_of_id(a.0) == shard_of_id(b.0)) {
            let mut nodes = self.write(shard_of_id(group[0].0));
            for &(node, nlookup) in group {
                let Some((inode, seq, since)) =
                    nodes.forget(node, nlookup, remember, &self.next_seq)
                else {
                    continue;
                };
                if let Some(journal) = &self.journal {
                    // Under the lock: a revival cannot come between.
                    journal.forget_node(&inode);
                }
                match seq {
                    Some(seq) => released.push((node, seq, inode, since)),
                    None => closed.push(inode),
                }
            }
        }
        // The fds of nodes not remembered close here, outside the locks.
        drop(closed);
        if let Some(mount) = &self.handles {
            self.settle(mount.id, released);
        }
    }

    /// Second half of FORGET, without the locks: a node whose inode lost
    /// its last name through the mount is dropped, so that its fd closes
    /// and the source frees it as it would without us; the others keep
    /// their fd, and the oldest beyond the open bound are remembered by
    /// handle instead. Only nodes that may have lost a name since they
    /// became live ([`Slot::since`]) are asked: a `drop_caches` forgets
    /// thousands of nodes at once, and the `fstat` of each was half of
    /// what their FORGETs cost. One deleted behind the mount's back keeps
    /// its fd until the sweeper takes its handle (at most
    /// [`KEEP_OPEN`]), which finds it nameless and drops it then.
    /// `released` comes grouped by shard.
    fn settle(&self, mount: libc::c_int, released: Vec<(NodeId, u64, Arc<Inode>, u64)>) {
        let now = self.removals_now();
        let deleted: Vec<(NodeId, u64, Option<SourceHandle>)> = released
            .iter()
            .filter(|(_, _, inode, since)| *since < now && !has_name(inode))
            .map(|&(node, seq, _, _)| (node, seq, None))
            .collect();
        self.keep_handles(deleted);
        drop(released);
        if self.open_total.load(Ordering::Relaxed) > self.max_open_forgotten {
            self.close_oldest_open(mount);
        }
        self.sweep.kick();
    }

    /// Remembers the oldest forgotten nodes that still hold their fd by
    /// their source handle, closing the fd, while more than
    /// `max_open_forgotten` hold one or the oldest has held it
    /// `keep_open`. Each round takes a few of the oldest shard's under its
    /// lock (out of `open_age`, still `Taking`), takes their handles
    /// without the lock, and stores them. Returns when the oldest left
    /// will have held its fd `keep_open`, if any is left.
    fn close_oldest_open(&self, mount: libc::c_int) -> Option<Instant> {
        /// Nodes a round takes from one shard.
        const BATCH: usize = 16;
        loop {
            let over = self
                .open_total
                .load(Ordering::Relaxed)
                .saturating_sub(self.max_open_forgotten);
            let ((_, since), shard) = self.oldest(|nodes| {
                let (&seq, &(_, since)) = nodes.open_age.first_key_value()?;
                Some((seq, since))
            })?;
            let expired = |since: Instant| since.elapsed() >= self.keep_open;
            if over == 0 && !expired(since) {
                return Some(since + self.keep_open);
            }
            let mut picked = Vec::new();
            {
                let mut nodes = self.write(shard);
                while picked.len() < BATCH {
                    let Some((&seq, &(node, since))) = nodes.open_age.first_key_value() else {
                        break;
                    };
                    if picked.len() >= over && !expired(since) {
                        break;
                    }
                    nodes.open_age.remove(&seq);
                    if let Some(Forgotten {
                        kept: Kept::Taking(inode),
                        ..
                    }) = nodes.forgotten.get(&node)
                    {
                        picked.push((node, seq, inode.clone()));
                    }
                }
            }
            let handles = picked
                .iter()
                .map(|(node, seq, inode)| (*node, *seq, source_handle(inode, mount)))
                .collect();
            self.keep_handles(handles);
            // The fds close here, outside the locks.
            drop(picked);
        }
    }

    /// Starts the thread that remembers forgotten nodes by handle once they
    /// have kept their fd [`KEEP_OPEN`] (nothing to do without source
    /// handles). It sleeps while no forgotten node holds an fd, and returns
    /// once the table is dropped.
    pub(crate) fn start_sweeper(self: &Arc<Self>) -> std::io::Result<()> {
        let Some(mount) = self.handles.as_ref().map(|h| h.id) else {
            return Ok(());
        };
        let (table, sweep) = (Arc::downgrade(self), self.sweep.clone());
        std::thread::Builder::new()
            .name("fastfuse-sweep".into())
            .spawn(move || {
                // It may be started before the session blocks SIGTERM in
                // its threads (see `sys::block_all_signals`).
                if let Err(e) = sys::block_all_signals() {
                    tracing::error!("the sweeper cannot block signals ({e}); not sweeping");
                    return;
                }
                sweeper(&table, &sweep, mount)
            })
            .map(drop)
    }

    /// Under each shard's lock, every forgotten node of `handles` that is
    /// still the same forgotten node (`seq`) and still holds its fd is
    /// remembered by its handle from now on, or dropped when it has none
    /// (no handle, another mount, no name left). Then the oldest forgotten
    /// nodes beyond the bound go. `handles` comes grouped by shard.
    fn keep_handles(&self, handles: Vec<(NodeId, u64, Option<SourceHandle>)>) {
        let mut dropped = Vec::new();
        for group in handles.chunk_by(|a, b| shard_of_id(a.0) == shard_of_id(b.0)) {
            let mut nodes = self.write(shard_of_id(group[0].0));
            for (node, seq, handle) in group {
                let Some(forgotten) = nodes.forgotten.get_mut(node) else {
                    // Revived (or dropped) meanwhile.
                    continue;
                };
                if forgotten.seq != *seq || !matches!(forgotten.kept, Kept::Taking(_)) {
                    // Revived and forgotten again since.
                    continue;
                }
                match handle {
                    Some(h) => {
                        forgotten.kept = Kept::Handle(h.clone());
                        nodes.open_age.remove(seq);
                    }
                    None => dropped.extend(nodes.drop_forgotten(*node)),
                }
            }
        }
        self.drop_beyond_bound(&mut dropped);
        // The fds close here, outside the locks.
        drop(dropped);
    }

    /// Drops the oldest forgotten nodes of all shards while there are more
    /// than `max_forgotten`, into `dropped` (for the caller to close
    /// outside the locks). Finding the oldest looks at each shard's under
    /// its shared lock, one after another; a node that another thread
    /// revives or drops meanwhile merely makes the next oldest of that
    /// shard go instead.
    fn drop_beyond_bound(&self, dropped: &mut Vec<Forgotten>) {
        while self.forgotten_total.load(Ordering::Relaxed) > self.max_forgotten {
            let Some((_, shard)) = self.oldest(|nodes| Some(*nodes.age.first_key_value()?.0))
            else {
                break;
            };
            let mut nodes = self.write(shard);
            if let Some((_, &node)) = nodes.age.first_key_value() {
                dropped.extend(nodes.drop_forgotten(node));
            }
        }
    }

    /// The least of `first` over the shards (each one's oldest of some
    /// kind, by sequence number first), and the shard it is in. Each shard
    /// is looked at under its shared lock, one after another: what another
    /// thread changes meanwhile merely makes the caller find the next
    /// oldest.
    fn oldest<T: Ord>(&self, first: impl Fn(&Nodes) -> Option<T>) -> Option<(T, usize)> {
        (0..SHARDS)
            .filter_map(|shard| Some((first(&self.read(shard))?, shard)))
            .min()
    }

    /// Entries in the table, the root included: the live ones, not the
    /// forgotten.
    pub(crate) fn len(&self) -> usize {
        (0..SHARDS).map(|shard| self.read(shard).by_id.len()).sum()
    }

    /// Forgotten nodes remembered.
    pub(crate) fn forgotten_len(&self) -> usize {
        (0..SHARDS)
            .map(|shard| self.read(shard).forgotten.len())
            .sum()
    }

    /// Copies the table out for a successor (see `saved`): every live and
    /// forgotten node with its id, count and key, each shard's next id and
    /// key map, the table's next sequence number. Inodes (their fds
    /// duplicated) go into `saver`, which the entries name them by. One
    /// shard at a time under its shared lock: consistent only when no
    /// request is being served.
    pub(crate) fn save(&self, saver: &mut Saver) -> Result<SavedTable, PassthroughError> {
        let mut shards = Vec::with_capacity(SHARDS);
        for shard in 0..SHARDS {
            let nodes = self.read(shard);
            // By id, so that saving the same table twice gives the same
            // state, the saver's indices included.
            let mut slots: Vec<(&NodeId, &Slot)> = nodes.by_id.iter().collect();
            slots.sort_unstable_by_key(|(id, _)| id.0);
            let mut live = Vec::with_capacity(slots.len());
            for (&id, slot) in slots {
                live.push(SavedNode {
                    id: id.0,
                    key: slot.key.into(),
                    lookups: slot.lookups.load(Ordering::Relaxed),
                    inode: saver.inode(&slot.inode)?,
                });
            }
            let mut entries: Vec<(&NodeId, &Forgotten)> = nodes.forgotten.iter().collect();
            entries.sort_unstable_by_key(|(id, _)| id.0);
            let mut forgotten = Vec::with_capacity(entries.len());
            for (&id, f) in entries {
                let kept = match &f.kept {
                    Kept::Handle(h) => SavedKept::Handle {
                        handle_type: h.handle_type(),
                        bytes: h.bytes().to_vec(),
                    },
                    // Forgotten recently, it keeps its fd: so does the
                    // successor.
                    Kept::Taking(inode) => SavedKept::Open {
                        inode: saver.inode(inode)?,
                    },
                };
                forgotten.push(SavedForgotten {
                    id: id.0,
                    key: f.key.into(),
                    seq: f.seq,
                    kept,
                });
            }
            let mut keys: Vec<(SavedKey, u64)> = nodes
                .by_key
                .iter()
                .map(|(&key, &id)| (key.into(), id.0))
                .collect();
            keys.sort_unstable_by_key(|&(_, id)| id);
            shards.push(SavedShard {
                next_id: nodes.next_id,
                live,
                forgotten,
                keys,
            });
        }
        Ok(SavedTable {
            root: self.root_key.into(),
            next_seq: self.next_seq.load(Ordering::Relaxed),
            shards,
        })
    }

    /// The table [`InodeTable::save`] copied out, over `inodes` (the saved
    /// inodes, each with the key its fd has now), remembering up to
    /// `max_forgotten` forgotten nodes. Every node goes back under its id
    /// into its shard; the state is refused when it breaks a rule of the
    /// table (an id in the wrong shard, as a build with another key hash
    /// would put it; an id at or beyond its shard's next one; a node whose
    /// fd is another inode; a key twice). Forgotten nodes are dropped when
    /// this table remembers none (no source handles, or a bound of 0),
    /// and the oldest beyond the bound.
    pub(crate) fn restore(
        saved: SavedTable,
        inodes: &[(Arc<Inode>, InodeKey)],
        max_forgotten: usize,
    ) -> Result<InodeTable, PassthroughError> {
        if saved.shards.len() != SHARDS {
            return Err(invalid(format!(
                "{} inode table shards, this build has {SHARDS}",
                saved.shards.len()
            )));
        }
        let root_key = InodeKey::from(saved.root);
        let inode = |index: usize, id: u64, key: InodeKey| {
            let (inode, has) = inodes.get(index).ok_or_else(|| {
                invalid(format!("node {id} names inode {index} of {}", inodes.len()))
            })?;
            if *has != key {
                return Err(invalid(format!(
                    "node {id}'s descriptor is inode {}:{}, not {}:{}",
                    has.dev, has.ino, key.dev, key.ino
                )));
            }
            Ok(inode.clone())
        };
        let root = saved.shards[ROOT_SHARD]
            .live
            .iter()
            .find(|n| n.id == NodeId::ROOT.0)
            .ok_or_else(|| invalid("no root node".into()))?;
        let root = inode(root.inode, root.id, root_key)?;
        let handles = if max_forgotten == 0 {
            None
        } else {
            HandleMount::of(&root)
        };
        let table = InodeTable {
            shards: empty_shards(),
            root_key,
            forgotten_total: AtomicUsize::new(0),
            open_total: AtomicUsize::new(0),
            next_seq: AtomicU64::new(saved.next_seq),
            handles,
            max_forgotten,
            max_open_forgotten: open_bound(max_forgotten),
            keep_open: KEEP_OPEN,
            sweep: Arc::default(),
            journal: None,
            removals: AtomicU64::new(1),
        };
        for (shard, s) in saved.shards.into_iter().enumerate() {
            let mut nodes = table.write(shard);
            nodes.next_id = s.next_id;
            let placed = |id: u64, key: InodeKey| {
                let node = NodeId(id);
                if id == 0
                    || shard_of_id(node) != shard
                    || table.shard_of_key(key) != shard
                    || id >> SHARD_BITS >= s.next_id
                    || (key == root_key) != (node == NodeId::ROOT)
                {
                    return Err(invalid(format!(
                        "node {id} (inode {}:{}) does not belong in shard {shard} below id {}",
                        key.dev, key.ino, s.next_id
                    )));
                }
                Ok(node)
            };
            for n in s.live {
                let key = InodeKey::from(n.key);
                let node = placed(n.id, key)?;
                let slot = Slot {
                    inode: inode(n.inode, n.id, key)?,
                    key,
                    lookups: AtomicU64::new(n.lookups),
                    // Names may have gone while no daemon counted: each
                    // restored node asks at its FORGET.
                    since: 0,
                };
                if nodes.by_id.insert(node, slot).is_some() {
                    return Err(invalid(format!("node {} twice", n.id)));
                }
            }
            for f in s.forgotten {
                let key = InodeKey::from(f.key);
                let node = placed(f.id, key)?;
                if f.seq >= saved.next_seq {
                    return Err(invalid(format!(
                        "forgotten node {} has sequence {} at or beyond {}",
                        f.id, f.seq, saved.next_seq
                    )));
                }
                let kept = match f.kept {
                    SavedKept::Handle { handle_type, bytes } => {
                        let handle =
                            SourceHandle::from_parts(handle_type, &bytes).ok_or_else(|| {
                                invalid(format!("forgotten node {}'s handle is too long", f.id))
                            })?;
                        Kept::Handle(handle)
                    }
                    SavedKept::Open { inode: index } => Kept::Taking(inode(index, f.id, key)?),
                };
                if table.handles.is_none() {
                    // Nothing to revive it with here: as if dropped.
                    continue;
                }
                if matches!(kept, Kept::Taking(_)) {
                    nodes.open_age.insert(f.seq, (node, Instant::now()));
                }
                if nodes.by_id.contains_key(&node)
                    || nodes.forgotten.contains_key(&node)
                    || nodes.age.insert(f.seq, node).is_some()
                {
                    return Err(invalid(format!(
                        "forgotten node {} (sequence {}) twice",
                        f.id, f.seq
                    )));
                }
                nodes.forgotten.insert(
                    node,
                    Forgotten {
                        key,
                        seq: f.seq,
                        kept,
                    },
                );
            }
            for (key, id) in s.keys {
                let key = InodeKey::from(key);
                let node = placed(id, key)?;
                if !nodes.by_id.contains_key(&node) && !nodes.forgotten.contains_key(&node) {
                    if table.handles.is_none() {
                        // A forgotten node's, dropped above.
                        continue;
                    }
                    return Err(invalid(format!(
                        "a key maps to node {id}, which is not there"
                    )));
                }
                if nodes.by_key.insert(key, node).is_some() {
                    return Err(invalid(format!(
                        "inode {}:{} has two node ids",
                        key.dev, key.ino
                    )));
                }
            }
        }
        if !table.read(ROOT_SHARD).by_id.contains_key(&NodeId::ROOT) {
            return Err(invalid("no root node".into()));
        }
        // The bounds, which may be lower here; the sweeper, which the
        // caller starts, closes the rest in time.
        if let Some(mount) = &table.handles {
            table.close_oldest_open(mount.id);
        }
        let mut dropped = Vec::new();
        table.drop_beyond_bound(&mut dropped);
        drop(dropped);
        Ok(table)
    }

    /// Drops every entry but the root (the session ended: the kernel holds
    /// no node ids any more, nor can it decode its file handles). Ids are
    /// not handed out again even so.
    pub(crate) fn clear(&self) {
        for shard in 0..SHARDS {
            let mut nodes = self.write(shard);
            let released = nodes.clear_but_root();
            if let Some(journal) = &self.journal {
                for slot in &released.0 {
                    journal.forget_node(&slot.inode);
                }
            }
            drop(nodes);
            drop(released);
        }
    }
}

/// The source handle to remember `inode` by: `None` when the source has
/// none for it, when it is on a mount other than the root's (a handle is
/// opened on the root's filesystem) or when it has no name left.
fn source_handle(inode: &Inode, mount: libc::c_int) -> Option<SourceHandle> {
    if !has_name(inode) {
        return None;
    }
    match sys::name_to_handle(inode.fd.as_fd()) {
        Ok((handle, m)) if m == mount => Some(handle),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!("no source file handle for a forgotten node: {e}");
            None
        }
    }
}

/// What the sweeper thread waits on.
#[derive(Debug, Default)]
struct Sweep {
    state: Mutex<SweepState>,
    kicked: Condvar,
}

#[derive(Debug, Default)]
struct SweepState {
    /// Set when the table goes: the sweeper returns.
    ended: bool,
    /// The sweeper sleeps without a timeout: no forgotten node kept an fd
    /// when it last looked.
    idle: bool,
    /// A forgotten node may have come to keep an fd since it last looked.
    kicked: bool,
}

impl Sweep {
    fn lock(&self) -> std::sync::MutexGuard<'_, SweepState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgotten nodes may keep fds now: an idle sweeper looks when they
    /// are due (a busy one already will: they are due after the others).
    fn kick(&self) {
        let mut state = self.lock();
        state.kicked = true;
        if state.idle {
            drop(state);
            self.kicked.notify_one();
        }
    }
}

impl Drop for InodeTable {
    fn drop(&mut self) {
        self.sweep.lock().ended = true;
        self.sweep.kicked.notify_one();
    }
}

/// The sweeper's loop (see [`InodeTable::start_sweeper`]): closes the
/// kept fds that are due, then sleeps until the next is (without a timeout
/// while none is kept, until kicked), until the table is dropped.
fn sweeper(table: &Weak<InodeTable>, sweep: &Sweep, mount: libc::c_int) {
    // Look once at the start: fds may be kept already (a restored table).
    let mut due = Some(Instant::now());
    loop {
        let mut state = sweep.lock();
        loop {
            if state.ended {
                return;
            }
            match due {
                None if state.kicked => break,
                None => {
                    state.idle = true;
                    state = sweep
                        .kicked
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                Some(at) => {
                    let now = Instant::now();
                    if now >= at {
                        break;
                    }
                    state = sweep
                        .kicked
                        .wait_timeout(state, at - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
        (state.kicked, state.idle) = (false, false);
        drop(state);
        let Some(table) = table.upgrade() else {
            return;
        };
        due = table.close_oldest_open(mount);
    }
}

/// Whether `inode` still has a name on the source (a link count above 0;
/// an inode that cannot be stat'ed is taken for gone).
fn has_name(inode: &Inode) -> bool {
    sys::stat_fd(inode.fd.as_fd()).is_ok_and(|st| st.st_nlink > 0)
}

/// The most forgotten nodes that keep their fd, of `max_forgotten`: a
/// quarter of the fds RLIMIT_NOFILE allows, so that live nodes keep the
/// rest.
fn open_bound(max_forgotten: usize) -> usize {
    let soft = sys::nofile_limit().map_or(1024, |(soft, _)| soft);
    max_forgotten.min(usize::try_from(soft / 4).unwrap_or(usize::MAX))
}

/// The source root, for `open_by_handle_at`.
#[derive(Debug)]
struct HandleMount {
    /// The root's entry.
    root: Arc<Inode>,
    /// The id of the mount it is on, as `name_to_handle_at` gives it.
    id: libc::c_int,
}

impl HandleMount {
    /// The source root's, when the source has file handles the daemon can
    /// open again (which needs CAP_DAC_READ_SEARCH): tried once, on the
    /// root itself. `None` (logged at debug) otherwise.
    fn of(root: &Arc<Inode>) -> Option<HandleMount> {
        let tried = sys::name_to_handle(root.fd.as_fd()).and_then(|(handle, id)| {
            let mount = HandleMount {
                root: root.clone(),
                id,
            };
            mount.open(&handle)?;
            Ok(mount)
        });
        match tried {
            Ok(mount) => Some(mount),
            Err(e) => {
                tracing::debug!(
                    "source file handles unavailable ({e}); nodes the kernel forgets are not \
                     remembered, and kernel file handles of them go stale"
                );
                None
            }
        }
    }

    /// `open_by_handle_at` of `handle` on the source, `O_PATH`. The mount
    /// fd it needs may not be `O_PATH`: the root is opened for the call
    /// (rather than kept open, which would be a descriptor per filesystem
    /// besides the table's one per node).
    fn open(&self, handle: &SourceHandle) -> std::io::Result<OwnedFd> {
        let mount = sys::open_dir(self.root.fd.as_fd())?;
        sys::open_by_handle(mount.as_fd(), handle, libc::O_PATH)
    }
}

impl Nodes {
    /// One more lookup of `key`'s node, if it is live. Under the shared
    /// lock (see [`Slot::lookups`]).
    fn acquire_key(&self, key: InodeKey) -> Option<(NodeId, Arc<Inode>)> {
        let &node = self.by_key.get(&key)?;
        Some((node, self.acquire_id(node)?))
    }

    /// One more lookup of `node`, if it is live. Under the shared lock:
    /// `Relaxed` suffices because the count is decremented only under the
    /// exclusive lock, which every increment made under the shared one
    /// happens before.
    fn acquire_id(&self, node: NodeId) -> Option<Arc<Inode>> {
        let slot = self.by_id.get(&node)?;
        slot.lookups.fetch_add(1, Ordering::Relaxed);
        Some(slot.inode.clone())
    }

    /// A new node id for the inode `fd` refers to, with one lookup.
    fn insert_new(
        &mut self,
        key: InodeKey,
        fd: OwnedFd,
        st: &libc::stat,
        since: u64,
    ) -> (NodeId, Arc<Inode>) {
        let node = NodeId((self.next_id << SHARD_BITS) | self.shard);
        self.next_id += 1;
        let inode = Arc::new(Inode::new(fd, st));
        self.insert_live(node, key, inode.clone(), since);
        (node, inode)
    }

    /// `node` live, with one lookup, made live at `since` (see
    /// [`Slot::since`]).
    fn insert_live(&mut self, node: NodeId, key: InodeKey, inode: Arc<Inode>, since: u64) {
        debug_assert_eq!(shard_of_id(node) as u64, self.shard);
        self.by_id.insert(
            node,
            Slot {
                inode,
                key,
                lookups: AtomicU64::new(1),
                since,
            },
        );
        self.by_key.insert(key, node);
    }

    /// Takes `node` out of the forgotten nodes, leaving its key in
    /// `by_key` (for the caller to make live).
    fn take_forgotten(&mut self, node: NodeId) -> Option<Forgotten> {
        let forgotten = self.forgotten.remove(&node)?;
        self.age.remove(&forgotten.seq);
        self.open_age.remove(&forgotten.seq);
        Some(forgotten)
    }

    /// Forgets a forgotten node for good: its id will not be revived. The
    /// caller drops what is returned after releasing the lock.
    fn drop_forgotten(&mut self, node: NodeId) -> Option<Forgotten> {
        let forgotten = self.take_forgotten(node)?;
        if self.by_key.get(&forgotten.key) == Some(&node) {
            self.by_key.remove(&forgotten.key);
        }
        Some(forgotten)
    }

    /// [`drop_forgotten`](Self::drop_forgotten), if `node` still has
    /// `handle` (and was not revived or replaced meanwhile).
    fn drop_forgotten_if(&mut self, node: NodeId, handle: &SourceHandle) -> Option<Forgotten> {
        match self.forgotten.get(&node) {
            Some(Forgotten {
                kept: Kept::Handle(h),
                ..
            }) if h == handle => self.drop_forgotten(node),
            _ => None,
        }
    }

    /// The body of FORGET. At zero lookups the entry leaves `by_id`; with
    /// `remember` it becomes a forgotten node that keeps its fd (`Taking`,
    /// aged by `next_seq` in `age` and `open_age`), and its inode,
    /// sequence number and [`Slot::since`] are returned for the caller to
    /// settle; otherwise the inode is returned to be closed.
    fn forget(
        &mut self,
        node: NodeId,
        nlookup: u64,
        remember: bool,
        next_seq: &AtomicU64,
    ) -> Option<(Arc<Inode>, Option<u64>, u64)> {
        if node == NodeId::ROOT {
            // The root lives as long as the filesystem; its count is not kept.
            return None;
        }
        let Some(slot) = self.by_id.get_mut(&node) else {
            tracing::warn!(
                node = node.0,
                nlookup,
                "FORGET for an unknown node; ignored"
            );
            return None;
        };
        let lookups = slot.lookups.get_mut();
        if nlookup > *lookups {
            tracing::warn!(
                node = node.0,
                nlookup,
                held = *lookups,
                "FORGET of more lookups than given; dropping the node"
            );
        }
        *lookups = lookups.saturating_sub(nlookup);
        if *lookups > 0 {
            return None;
        }
        let slot = self.by_id.remove(&node)?;
        // Only the node the key points at is remembered (or unmapped).
        if self.by_key.get(&slot.key) != Some(&node) {
            return Some((slot.inode, None, slot.since));
        }
        if !remember {
            self.by_key.remove(&slot.key);
            return Some((slot.inode, None, slot.since));
        }
        // Relaxed: only the order of the numbers matters, not what else
        // other threads see.
        let seq = next_seq.fetch_add(1, Ordering::Relaxed);
        self.age.insert(seq, node);
        self.open_age.insert(seq, (node, Instant::now()));
        self.forgotten.insert(
            node,
            Forgotten {
                key: slot.key,
                seq,
                kept: Kept::Taking(slot.inode.clone()),
            },
        );
        Some((slot.inode, Some(seq), slot.since))
    }

    /// Empties the shard but for the root, returning what it held for the
    /// caller to close outside the lock.
    fn clear_but_root(&mut self) -> (Vec<Slot>, Map<NodeId, Forgotten>) {
        let root = self.by_id.remove(&NodeId::ROOT);
        let rest = self.by_id.drain().map(|(_, s)| s).collect();
        self.by_key.clear();
        self.age.clear();
        self.open_age.clear();
        let forgotten = std::mem::take(&mut self.forgotten);
        if let Some(root) = root {
            self.by_key.insert(root.key, NodeId::ROOT);
            self.by_id.insert(NodeId::ROOT, root);
        }
        (rest, forgotten)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys;
    use std::os::fd::AsFd;

    fn open_path(path: &std::ffi::CStr) -> (OwnedFd, libc::stat) {
        let fd = sys::open(path, libc::O_PATH | libc::O_NOFOLLOW).unwrap();
        let st = sys::stat_fd(fd.as_fd()).unwrap();
        (fd, st)
    }

    fn table() -> InodeTable {
        let (fd, st) = open_path(c"/");
        InodeTable::new(fd, &st, 1 << 20)
    }

    #[test]
    fn one_entry_per_inode_and_release_at_zero() {
        let t = table();
        let (fd, st) = open_path(c"/proc");
        let a = t.acquire(fd, &st).0;
        let (fd, st) = open_path(c"/proc");
        let b = t.acquire(fd, &st).0;
        assert_eq!(a, b);
        assert_ne!(a, NodeId::ROOT);
        assert_eq!(t.len(), 2);
        t.forget(a, 1);
        assert_eq!(t.len(), 2);
        t.forget(a, 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(a).unwrap_err(), Errno::ESTALE);
    }

    #[test]
    fn ids_are_not_reused() {
        // Remembering nothing, so that the forgotten node goes for good.
        let (fd, st) = open_path(c"/");
        let t = InodeTable::new(fd, &st, 0);
        let (fd, st) = open_path(c"/proc");
        let a = t.acquire(fd, &st).0;
        t.forget(a, 1);
        let (fd, st) = open_path(c"/proc");
        let b = t.acquire(fd, &st).0;
        assert!(b.0 > a.0);
    }

    #[test]
    fn odd_forgets_are_ignored() {
        let t = table();
        t.forget(NodeId(999), 1);
        t.forget(NodeId::ROOT, 100);
        assert_eq!(t.len(), 1);
        assert!(t.get(NodeId::ROOT).is_ok());
        let (fd, st) = open_path(c"/proc");
        let a = t.acquire(fd, &st).0;
        // More than held: the node goes, nothing underflows.
        t.forget_many(&mut [(a, 5), (NodeId(12345), 1)].into_iter());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn racing_lookups_make_one_entry() {
        let t = Arc::new(table());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    (0..200)
                        .map(|_| {
                            let (fd, st) = open_path(c"/proc");
                            t.acquire(fd, &st).0
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let ids: Vec<NodeId> = threads
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert!(ids.iter().all(|&id| id == ids[0]));
        assert_eq!(t.len(), 2);
        t.forget(ids[0], ids.len() as u64);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn clear_keeps_the_root() {
        let t = table();
        let (fd, st) = open_path(c"/proc");
        t.acquire(fd, &st);
        t.clear();
        assert_eq!(t.len(), 1);
        let (fd, st) = open_path(c"/");
        assert_eq!(t.acquire(fd, &st).0, NodeId::ROOT);
    }

    /// A table over a fresh directory holding `names` (files), remembering
    /// up to `max` forgotten nodes.
    fn dir_table(names: &[&str], max: usize) -> (tempfile::TempDir, InodeTable) {
        let dir = tempfile::tempdir().unwrap();
        for name in names {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        let (fd, st) = open_path(&c_path(dir.path()));
        (dir, InodeTable::new(fd, &st, max))
    }

    fn c_path(path: &std::path::Path) -> std::ffi::CString {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap()
    }

    fn look(t: &InodeTable, path: &std::path::Path) -> (NodeId, libc::ino_t) {
        let (fd, st) = open_path(&c_path(path));
        (t.acquire(fd, &st).0, st.st_ino)
    }

    /// Whether forgotten `node` still holds its fd (`None`: not
    /// forgotten), as the table says at this instant.
    fn holds_fd(t: &InodeTable, node: NodeId) -> Option<bool> {
        let nodes = t.read(shard_of_id(node));
        Some(matches!(nodes.forgotten.get(&node)?.kept, Kept::Taking(_)))
    }

    /// [`holds_fd`], with `open_age` checked to be in step: only where no
    /// sweeper can be between taking a node out of it and storing its
    /// handle.
    fn kept_open(t: &InodeTable, node: NodeId) -> Option<bool> {
        let nodes = t.read(shard_of_id(node));
        let f = nodes.forgotten.get(&node)?;
        let open = matches!(f.kept, Kept::Taking(_));
        assert_eq!(
            open,
            nodes.open_age.get(&f.seq).map(|e| e.0) == Some(node),
            "open_age in step"
        );
        Some(open)
    }

    #[test]
    fn recent_forgotten_nodes_keep_their_fd_and_older_ones_their_handle() {
        let (dir, mut t) = dir_table(&["a", "b", "c"], 16);
        t.max_open_forgotten = 2;
        let path = |n: &str| dir.path().join(n);
        let ids: Vec<NodeId> = ["a", "b", "c"]
            .iter()
            .map(|n| look(&t, &path(n)).0)
            .collect();
        for &id in &ids {
            t.forget(id, 1);
        }
        assert_eq!(t.forgotten_len(), 3);
        assert_eq!(t.open_total.load(Ordering::Relaxed), 2);
        let open: Vec<Option<bool>> = ids.iter().map(|&id| kept_open(&t, id)).collect();
        assert_eq!(
            open,
            [Some(false), Some(true), Some(true)],
            "the oldest went by handle"
        );
        // A stat of the name finds b without opening it, under its id.
        let stat = |n: &str| {
            sys::fstatat(
                t.get(NodeId::ROOT).unwrap().fd.as_fd(),
                &c_path(std::path::Path::new(n)),
                libc::AT_SYMLINK_NOFOLLOW,
            )
            .unwrap()
        };
        assert_eq!(t.acquire_known(&stat("b")).map(|(n, _)| n), Some(ids[1]));
        assert_eq!(t.open_total.load(Ordering::Relaxed), 1);
        // a holds no fd: the caller must open it, and it revives too.
        assert!(t.acquire_known(&stat("a")).is_none());
        assert_eq!(look(&t, &path("a")).0, ids[0]);
        assert_eq!((t.len(), t.forgotten_len()), (3, 1));
        // c is revived by its id (LOOKUP "."), from its fd.
        assert!(t.acquire_or_revive(ids[2]).is_ok());
        assert_eq!(
            (
                t.len(),
                t.forgotten_len(),
                t.open_total.load(Ordering::Relaxed)
            ),
            (4, 0, 0)
        );
    }

    #[test]
    fn the_sweeper_closes_kept_fds_once_they_are_due_and_ends_with_the_table() {
        let (dir, mut t) = dir_table(&["a", "b"], 16);
        t.keep_open = Duration::from_millis(20);
        let t = Arc::new(t);
        t.start_sweeper().unwrap();
        let ids: Vec<NodeId> = ["a", "b"]
            .iter()
            .map(|n| look(&t, &dir.path().join(n)).0)
            .collect();
        for &id in &ids {
            t.forget(id, 1);
        }
        // The sweeper takes due nodes out of `open_age` (and the count)
        // first and stores their handles after, without the lock between:
        // done is when neither still holds its fd.
        let deadline = Instant::now() + Duration::from_secs(10);
        while t.open_total.load(Ordering::Relaxed) > 0
            || ids.iter().any(|&id| holds_fd(&t, id) == Some(true))
        {
            assert!(Instant::now() < deadline, "the kept fds were not closed");
            std::thread::yield_now();
        }
        // Remembered by handle now, and revived from it.
        assert_eq!(
            ids.iter().map(|&id| kept_open(&t, id)).collect::<Vec<_>>(),
            [Some(false); 2]
        );
        assert_eq!(look(&t, &dir.path().join("a")).0, ids[0]);
        let sweep = t.sweep.clone();
        drop(t);
        assert!(sweep.lock().ended, "the table's end tells the sweeper");
    }

    #[test]
    fn a_file_deleted_after_its_forget_is_stale_though_its_fd_is_kept() {
        let (dir, t) = dir_table(&["a"], 16);
        let (a, _) = look(&t, &dir.path().join("a"));
        t.forget(a, 1);
        assert_eq!(kept_open(&t, a), Some(true));
        std::fs::remove_file(dir.path().join("a")).unwrap();
        assert_eq!(t.acquire_or_revive(a).unwrap_err(), Errno::ESTALE);
        assert_eq!((t.len(), t.forgotten_len()), (1, 0));
        assert_eq!(t.open_total.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_forgotten_node_revives_under_its_id() {
        let (dir, t) = dir_table(&["a", "b"], 16);
        let (a, ino) = look(&t, &dir.path().join("a"));
        t.forget(a, 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.forgotten_len(), 1);
        // LOOKUP ".": reopened by its source handle, the same inode.
        let inode = t.acquire_or_revive(a).unwrap();
        assert_eq!(sys::stat_fd(inode.fd.as_fd()).unwrap().st_ino, ino);
        assert_eq!((t.len(), t.forgotten_len()), (2, 0));
        t.forget(a, 1);
        // By name, too, the inode gets its old id back.
        assert_eq!(look(&t, &dir.path().join("a")).0, a);
        assert_eq!(t.forgotten_len(), 0);
        // Another inode never gets it.
        assert_ne!(look(&t, &dir.path().join("b")).0, a);
    }

    #[test]
    fn a_deleted_node_is_stale() {
        let (dir, t) = dir_table(&["a", "b"], 16);
        // Deleted through the mount while the kernel held it (UNLINK
        // counts the removal): not remembered at all.
        let (a, _) = look(&t, &dir.path().join("a"));
        std::fs::remove_file(dir.path().join("a")).unwrap();
        t.name_removed();
        t.forget(a, 1);
        assert_eq!(t.forgotten_len(), 0);
        assert_eq!(t.acquire_or_revive(a).unwrap_err(), Errno::ESTALE);
        // Deleted after it was forgotten: the source says ESTALE, and the
        // entry goes.
        let (b, _) = look(&t, &dir.path().join("b"));
        t.forget(b, 1);
        assert_eq!(t.forgotten_len(), 1);
        std::fs::remove_file(dir.path().join("b")).unwrap();
        assert_eq!(t.acquire_or_revive(b).unwrap_err(), Errno::ESTALE);
        assert_eq!((t.len(), t.forgotten_len()), (1, 0));
    }

    #[test]
    fn a_node_deleted_behind_the_mounts_back_keeps_its_fd_until_the_sweep() {
        let (dir, mut t) = dir_table(&["a", "b"], 16);
        t.keep_open = Duration::ZERO;
        let mount = t.handles.as_ref().expect("source handles").id;
        let (a, _) = look(&t, &dir.path().join("a"));
        let (b, _) = look(&t, &dir.path().join("b"));
        // No name went through the mount: its FORGET does not ask.
        std::fs::remove_file(dir.path().join("a")).unwrap();
        t.forget(a, 1);
        assert_eq!(kept_open(&t, a), Some(true));
        // A removal through the mount after b became live: b is asked,
        // and still has its name.
        t.name_removed();
        t.forget(b, 1);
        assert_eq!(kept_open(&t, b), Some(true));
        // The sweep finds a nameless and drops it; b is kept by handle.
        assert_eq!(t.close_oldest_open(mount), None);
        assert_eq!((kept_open(&t, a), kept_open(&t, b)), (None, Some(false)));
        assert_eq!(t.acquire_or_revive(a).unwrap_err(), Errno::ESTALE);
        assert!(t.acquire_or_revive(b).is_ok());
    }

    #[test]
    fn a_node_without_a_name_from_the_start_goes_at_its_forget() {
        let (dir, t) = dir_table(&[], 16);
        let tmp = sys::openat(
            t.get(NodeId::ROOT).unwrap().fd.as_fd(),
            c".",
            libc::O_TMPFILE | libc::O_RDWR,
            0o600,
        )
        .unwrap();
        // Its own O_PATH fd, as CREATE's reopen through /proc gives one.
        let link = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&tmp));
        let fd = sys::open(&std::ffi::CString::new(link).unwrap(), libc::O_PATH).unwrap();
        let st = sys::stat_fd(fd.as_fd()).unwrap();
        assert_eq!(st.st_nlink, 0);
        let (node, _) = t.acquire(fd, &st);
        drop(tmp);
        t.forget(node, 1);
        assert_eq!(t.forgotten_len(), 0, "an O_TMPFILE inode is not kept");
        drop(dir);
    }

    #[test]
    fn the_oldest_forgotten_nodes_go_beyond_the_bound() {
        let (dir, t) = dir_table(&["a", "b", "c"], 2);
        let ids: Vec<NodeId> = ["a", "b", "c"]
            .iter()
            .map(|n| look(&t, &dir.path().join(n)).0)
            .collect();
        for &id in &ids {
            t.forget(id, 1);
        }
        assert_eq!(t.forgotten_len(), 2);
        assert_eq!(t.acquire_or_revive(ids[0]).unwrap_err(), Errno::ESTALE);
        assert!(t.acquire_or_revive(ids[1]).is_ok());
        assert!(t.acquire_or_revive(ids[2]).is_ok());
        // Beyond the bound a name still finds its inode, under a new id:
        // in a's shard (its key's), after every id that shard handed out.
        // Ids of different shards have no order between them, so a's is
        // compared with its own shard's alone.
        let again = look(&t, &dir.path().join("a")).0;
        assert_eq!(shard_of_id(again), shard_of_id(ids[0]));
        for id in ids
            .iter()
            .filter(|id| shard_of_id(**id) == shard_of_id(again))
        {
            assert!(again.0 > id.0, "{again:?} after {id:?}");
        }
    }

    #[test]
    fn a_bound_of_zero_remembers_nothing() {
        let (dir, t) = dir_table(&["a"], 0);
        let (a, _) = look(&t, &dir.path().join("a"));
        t.forget(a, 1);
        assert_eq!(t.forgotten_len(), 0);
        assert_eq!(t.acquire_or_revive(a).unwrap_err(), Errno::ESTALE);
        assert!(look(&t, &dir.path().join("a")).0 .0 > a.0);
    }

    #[test]
    fn a_reused_inode_number_is_another_file() {
        let (dir, t) = dir_table(&["a", "b"], 16);
        let (a, _) = look(&t, &dir.path().join("a"));
        t.forget(a, 1);
        // What the source does when it gives a freed inode number to a new
        // file: same key, another handle (here: b's).
        let (b_fd, _) = open_path(&c_path(&dir.path().join("b")));
        let (other, _) = sys::name_to_handle(b_fd.as_fd()).unwrap();
        t.write(shard_of_id(a)).forgotten.get_mut(&a).unwrap().kept = Kept::Handle(other);
        let again = look(&t, &dir.path().join("a")).0;
        assert!(again.0 > a.0, "a new file must not take the old node id");
        assert_eq!(t.forgotten_len(), 0);
        assert_eq!(t.acquire_or_revive(a).unwrap_err(), Errno::ESTALE);
    }

    /// The lookups `node` holds, if it is live.
    fn lookups(t: &InodeTable, node: NodeId) -> Option<u64> {
        let nodes = t.read(shard_of_id(node));
        nodes
            .by_id
            .get(&node)
            .map(|s| s.lookups.load(Ordering::Relaxed))
    }

    /// `count` file names.
    fn names(count: usize) -> Vec<String> {
        (0..count).map(|i| format!("f{i}")).collect()
    }

    fn key_of(path: &std::path::Path) -> InodeKey {
        InodeKey::of(&open_path(&c_path(path)).1)
    }

    #[test]
    fn ids_spread_over_shards_and_are_never_handed_out_twice() {
        let names = names(256);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        // Nothing remembered: an inode forgotten and looked up again gets a
        // new id.
        let (dir, t) = dir_table(&refs, 0);
        let mut seen = std::collections::HashSet::new();
        let mut shards = std::collections::HashSet::new();
        for name in &names {
            let path = dir.path().join(name);
            let id = look(&t, &path).0;
            assert_ne!(id.0, 0);
            assert_ne!(id, NodeId::ROOT);
            assert_eq!(shard_of_id(id), key_of(&path).shard(), "{name}");
            assert!(seen.insert(id), "{id:?} given to two inodes");
            shards.insert(shard_of_id(id));
        }
        assert_eq!(shards.len(), SHARDS, "256 inodes reach every shard");
        for &id in &seen.clone() {
            t.forget(id, 1);
        }
        assert_eq!(t.len(), 1);
        for name in &names {
            let id = look(&t, &dir.path().join(name)).0;
            assert!(seen.insert(id), "{id:?} handed out again");
        }
    }

    #[test]
    fn the_roots_key_is_the_root_whatever_its_hash() {
        // A root whose key does not hash to the root's shard, so that only
        // the table's pinning of the root key can find NodeId::ROOT.
        // All kept until one is found: a directory dropped at once would
        // give its inode number to the next (ext4 reuses freed ones), and
        // every try would then hash alike.
        let dirs: Vec<_> = (0..64).map(|_| tempfile::tempdir().unwrap()).collect();
        let dir = dirs
            .iter()
            .find(|d| key_of(d.path()).shard() != ROOT_SHARD)
            .expect("some directory's key hashes elsewhere");
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let (fd, st) = open_path(&c_path(dir.path()));
        let t = InodeTable::new(fd, &st, 16);
        let d = look(&t, &dir.path().join("d")).0;
        assert_ne!(d, NodeId::ROOT);
        // LOOKUP "..", as the kernel sends it reconnecting a directory.
        assert_eq!(look(&t, &dir.path().join("d/..")).0, NodeId::ROOT);
        assert_eq!(t.len(), 2);
        t.forget(d, 1);
        t.clear();
        assert_eq!(look(&t, &dir.path().join("d/..")).0, NodeId::ROOT);
        assert_eq!((t.len(), t.forgotten_len()), (1, 0));
    }

    #[test]
    fn racing_acquires_and_forgets_keep_counts_exact() {
        let (dir, t) = dir_table(&["a", "b", "c"], 1 << 20);
        let paths: Vec<std::ffi::CString> = ["a", "b", "c"]
            .iter()
            .map(|n| c_path(&dir.path().join(n)))
            .collect();
        let ids: Vec<NodeId> = paths
            .iter()
            .map(|p| {
                let (fd, st) = open_path(p);
                t.acquire(fd, &st).0
            })
            .collect();
        // "a" stays held here throughout; "b" and "c" drop to zero and are
        // revived by name, under their ids, over and over.
        t.forget(ids[1], 1);
        t.forget(ids[2], 1);
        let t = Arc::new(t);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (t, paths, ids) = (t.clone(), paths.clone(), ids.clone());
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..10_000 {
                        let k = i % 3;
                        let (fd, st) = open_path(&paths[k]);
                        let id = t.acquire(fd, &st).0;
                        assert_eq!(id, ids[k]);
                        assert!(t.get(id).is_ok(), "a node held here is gone");
                        held.push((id, 1));
                        if held.len() == 7 {
                            t.forget_many(&mut held.drain(..));
                        }
                    }
                    t.forget_many(&mut held.drain(..));
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(lookups(&t, ids[0]), Some(1), "only this thread's lookup");
        assert_eq!((lookups(&t, ids[1]), lookups(&t, ids[2])), (None, None));
        assert_eq!((t.len(), t.forgotten_len()), (2, 2));
        assert_eq!(t.forgotten_total.load(Ordering::Relaxed), 2);
        t.forget(ids[0], 1);
        assert_eq!((t.len(), t.forgotten_len()), (1, 3));
        assert_eq!(t.forgotten_total.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn the_bound_is_the_tables_and_the_oldest_of_all_shards_go() {
        let names = names(64);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let (dir, t) = dir_table(&refs, 3);
        let mut by_shard: Vec<Vec<&std::path::Path>> = vec![Vec::new(); SHARDS];
        let paths: Vec<std::path::PathBuf> = names.iter().map(|n| dir.path().join(n)).collect();
        for path in &paths {
            by_shard[key_of(path).shard()].push(path);
        }
        let mut shards: Vec<&Vec<&std::path::Path>> =
            by_shard.iter().filter(|s| !s.is_empty()).collect();
        shards.sort_by_key(|s| std::cmp::Reverse(s.len()));
        assert!(shards.len() >= 3 && shards[0].len() >= 2, "{by_shard:?}");
        // x1 and x2 share a shard; y and z have their own.
        let order = [shards[0][0], shards[1][0], shards[0][1], shards[2][0]];
        let ids: Vec<NodeId> = order.iter().map(|p| look(&t, p).0).collect();
        for &id in &ids {
            t.forget(id, 1);
        }
        // x1 went, the oldest, though its shard was no fuller than y's
        // after x2 came: the bound counts all shards.
        assert_eq!(t.forgotten_len(), 3);
        assert_eq!(t.forgotten_total.load(Ordering::Relaxed), 3);
        let w = paths
            .iter()
            .find(|p| !order.contains(&p.as_path()))
            .unwrap();
        let w = look(&t, w).0;
        t.forget(w, 1);
        // Then y, alone in its shard, before x2 and z.
        assert_eq!(t.forgotten_len(), 3);
        assert_eq!(t.acquire_or_revive(ids[0]).unwrap_err(), Errno::ESTALE);
        assert_eq!(t.acquire_or_revive(ids[1]).unwrap_err(), Errno::ESTALE);
        for id in [ids[2], ids[3], w] {
            assert!(t.acquire_or_revive(id).is_ok());
        }
        assert_eq!((t.len(), t.forgotten_len()), (4, 0));
        assert_eq!(t.forgotten_total.load(Ordering::Relaxed), 0);
    }
}
