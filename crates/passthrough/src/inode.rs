//! The inode table: which source inode each node id the kernel holds
//! stands for, and how many lookups the kernel holds on it.
//!
//! One entry per source inode, keyed by (st_dev, st_ino), so that hard
//! links share one node id. An entry holds an `O_PATH|O_NOFOLLOW` fd,
//! which pins the inode: while we hold it, the source cannot free the
//! inode and reuse its number, so a key never silently changes meaning.
//!
//! Locking: one `RwLock` over both maps and the id counter. Operations
//! that only resolve a node (getattr, open, every `*at` call on a parent)
//! take it shared and clone an `Arc`; lookups, forgets and anything that
//! changes a count take it exclusively, so that "is this inode known?" and
//! "insert it" are one step and two racing lookups of one inode cannot
//! create two entries. Lookup counts and the next node id live inside the
//! lock as plain integers: there are no atomics in this module, hence no
//! memory orderings to argue.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use fastfuse::{Errno, NodeId};

/// What identifies a source inode: (st_dev, st_ino).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct InodeKey {
    dev: u64,
    ino: u64,
}

impl InodeKey {
    /// The key of the inode `st` describes.
    pub(crate) fn of(st: &libc::stat) -> InodeKey {
        InodeKey {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

/// One source inode the kernel knows by a node id.
#[derive(Debug)]
pub(crate) struct Inode {
    /// `O_PATH|O_NOFOLLOW|O_CLOEXEC`: names the inode for `*at` calls and,
    /// through /proc/self/fd, for reopening it.
    pub(crate) fd: OwnedFd,
    /// The file type bits (`st_mode & S_IFMT`), which never change.
    pub(crate) kind: libc::mode_t,
    /// The kernel passthrough backing file shared by every open of this
    /// inode (the kernel refuses two different backing files for one
    /// inode, with EBUSY).
    pub(crate) backing: Mutex<Option<Backing>>,
    /// POSIX lock owner → the open file description that holds its locks
    /// on this inode, and the pid that last took one (see `ops::lock`).
    pub(crate) posix_locks: Mutex<HashMap<u64, (Arc<OwnedFd>, u32)>>,
    /// Under the writeback cache: the cache WRITEs in flight and the source
    /// mtime they put back (see `ops::io::KeepMtime`).
    pub(crate) kept_mtime: Mutex<KeptMtime>,
}

/// The mtime cache WRITEs put back on the source.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KeptMtime {
    /// Cache WRITEs in flight on the inode.
    pub(crate) writes: u32,
    /// (seconds, nanoseconds): the source's mtime when the first of them
    /// began, or what a SETATTR set since.
    pub(crate) mtime: (i64, i64),
}

impl Inode {
    /// Whether this is a regular file.
    pub(crate) fn is_regular(&self) -> bool {
        self.kind == libc::S_IFREG
    }

    fn new(fd: OwnedFd, st: &libc::stat) -> Inode {
        Inode {
            fd,
            kind: st.st_mode & libc::S_IFMT,
            backing: Mutex::new(None),
            posix_locks: Mutex::new(HashMap::new()),
            kept_mtime: Mutex::new(KeptMtime::default()),
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
    /// FORGET subtracts). The root's count is not kept: it is never
    /// forgotten.
    lookups: u64,
}

#[derive(Debug)]
struct Nodes {
    by_id: HashMap<NodeId, Slot>,
    by_key: HashMap<InodeKey, NodeId>,
    /// The next node id to hand out. Ids are never reused, so a node id the
    /// kernel still holds can never come to mean another inode.
    next_id: u64,
}

/// The table. Cheap to share by reference between worker threads.
#[derive(Debug)]
pub(crate) struct InodeTable {
    nodes: RwLock<Nodes>,
}

impl InodeTable {
    /// A table holding only the root, `NodeId::ROOT`, for `root_fd`.
    pub(crate) fn new(root_fd: OwnedFd, root: &libc::stat) -> InodeTable {
        let key = InodeKey::of(root);
        let inode = Arc::new(Inode::new(root_fd, root));
        let mut by_id = HashMap::new();
        by_id.insert(
            NodeId::ROOT,
            Slot {
                inode,
                key,
                lookups: 1,
            },
        );
        InodeTable {
            nodes: RwLock::new(Nodes {
                by_id,
                by_key: HashMap::from([(key, NodeId::ROOT)]),
                next_id: NodeId::ROOT.0 + 1,
            }),
        }
    }

    // A panic while holding the lock cannot leave the maps half-updated
    // (every update is a few infallible map operations), so a poisoned lock
    // is still good to use; the filesystem must keep serving.
    fn read(&self) -> RwLockReadGuard<'_, Nodes> {
        self.nodes.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Nodes> {
        self.nodes.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The inode of `node`, without changing its count. ESTALE for a node
    /// the table does not know (the kernel never sends one; a confused or
    /// malicious sender gets an error, not a panic).
    pub(crate) fn get(&self, node: NodeId) -> Result<Arc<Inode>, Errno> {
        match self.read().by_id.get(&node) {
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
    /// (after the lock is released) and the entry's own fd kept.
    pub(crate) fn acquire(&self, fd: OwnedFd, st: &libc::stat) -> (NodeId, Arc<Inode>) {
        let key = InodeKey::of(st);
        let mut nodes = self.write();
        if let Some(&node) = nodes.by_key.get(&key) {
            if let Some(slot) = nodes.by_id.get_mut(&node) {
                slot.lookups += 1;
                let inode = slot.inode.clone();
                drop(nodes);
                drop(fd);
                return (node, inode);
            }
            // A key without its id would be a bug of this module; heal the
            // map by inserting afresh below rather than failing the lookup.
            tracing::error!(node = node.0, "inode table out of step; re-adding");
        }
        let node = NodeId(nodes.next_id);
        nodes.next_id += 1;
        let inode = Arc::new(Inode::new(fd, st));
        nodes.by_id.insert(
            node,
            Slot {
                inode: inode.clone(),
                key,
                lookups: 1,
            },
        );
        nodes.by_key.insert(key, node);
        (node, inode)
    }

    /// Counts one more lookup of a node the kernel already holds (LINK
    /// returns the linked node again). ESTALE if it is unknown.
    pub(crate) fn acquire_existing(&self, node: NodeId) -> Result<Arc<Inode>, Errno> {
        let mut nodes = self.write();
        match nodes.by_id.get_mut(&node) {
            Some(slot) => {
                slot.lookups += 1;
                Ok(slot.inode.clone())
            }
            None => Err(Errno::ESTALE),
        }
    }

    /// Subtracts `nlookup` from `node`'s count and drops the entry at zero.
    /// Unknown nodes and the root are logged and ignored.
    pub(crate) fn forget(&self, node: NodeId, nlookup: u64) {
        let released = {
            let mut nodes = self.write();
            forget_locked(&mut nodes, node, nlookup)
        };
        // Closing the fd happens here, outside the lock.
        drop(released);
    }

    /// [`forget`](Self::forget) for many nodes under one lock.
    pub(crate) fn forget_many(&self, forgets: &mut dyn Iterator<Item = (NodeId, u64)>) {
        let mut released = Vec::new();
        {
            let mut nodes = self.write();
            for (node, nlookup) in forgets {
                if let Some(inode) = forget_locked(&mut nodes, node, nlookup) {
                    released.push(inode);
                }
            }
        }
        drop(released);
    }

    /// Entries in the table, the root included.
    pub(crate) fn len(&self) -> usize {
        self.read().by_id.len()
    }

    /// Drops every entry but the root (the session ended: the kernel holds
    /// no node ids any more).
    pub(crate) fn clear(&self) {
        let released: Vec<Slot> = {
            let mut nodes = self.write();
            let root = nodes.by_id.remove(&NodeId::ROOT);
            let rest = nodes.by_id.drain().map(|(_, s)| s).collect();
            nodes.by_key.clear();
            if let Some(root) = root {
                nodes.by_key.insert(root.key, NodeId::ROOT);
                nodes.by_id.insert(NodeId::ROOT, root);
            }
            rest
        };
        drop(released);
    }
}

/// The body of FORGET; returns the inode to close when the entry went.
fn forget_locked(nodes: &mut Nodes, node: NodeId, nlookup: u64) -> Option<Arc<Inode>> {
    if node == NodeId::ROOT {
        // The root lives as long as the filesystem; its count is not kept.
        return None;
    }
    let Some(slot) = nodes.by_id.get_mut(&node) else {
        tracing::warn!(
            node = node.0,
            nlookup,
            "FORGET for an unknown node; ignored"
        );
        return None;
    };
    if nlookup > slot.lookups {
        tracing::warn!(
            node = node.0,
            nlookup,
            held = slot.lookups,
            "FORGET of more lookups than given; dropping the node"
        );
    }
    slot.lookups = slot.lookups.saturating_sub(nlookup);
    if slot.lookups > 0 {
        return None;
    }
    let slot = nodes.by_id.remove(&node)?;
    // Only drop the key if it still points at this node.
    if nodes.by_key.get(&slot.key) == Some(&node) {
        nodes.by_key.remove(&slot.key);
    }
    Some(slot.inode)
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
        InodeTable::new(fd, &st)
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
        let t = table();
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
}
