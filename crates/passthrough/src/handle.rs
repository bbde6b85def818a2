//! Open files and directories: what a `fh` stands for.
//!
//! A handle is an index into a table, not the raw fd number that libfuse's
//! passthrough_ll hands out. The table costs a shared lock and an `Arc`
//! clone per READ/WRITE (no allocation), and buys three things: per-handle
//! state (the directory stream and its mutex, the passthrough backing
//! reference, the inode), safety against a RELEASE racing an I/O request
//! on the same fh (the `Arc` keeps the fd open until the request is done,
//! where a raw fd could be closed and reused under it), and an EBADF rather
//! than I/O on some unrelated descriptor for an fh we never gave out.
//!
//! The table is split in shards by fh so that workers doing I/O on
//! different files do not contend on one lock's cache line. Files and
//! directories have a table each, drawing fhs from one counter: the kernel
//! passes a directory's fh with some requests meant for files (SETATTR
//! from fchmod on a directory), and it must then find no file.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use fastfuse::{Errno, FileHandle};

use crate::dir::DirStream;
use crate::inode::Inode;

/// An open regular file (or other non-directory).
#[derive(Debug)]
pub(crate) struct OpenFile {
    /// The source file, opened through /proc/self/fd with the (adjusted)
    /// flags of the OPEN or CREATE.
    pub(crate) fd: OwnedFd,
    /// The inode, kept for the passthrough backing reference and alive as
    /// long as the handle.
    pub(crate) inode: Arc<Inode>,
    /// Whether this handle holds a reference on `inode.backing`.
    pub(crate) passthrough: bool,
    /// The POSIX lock owners that took locks through this handle; their
    /// lock descriptions go when the handle is released (see `ops::lock`).
    pub(crate) lock_owners: Mutex<Vec<u64>>,
    /// Its open slot in the crash journal, if any (see `journal`).
    pub(crate) journal_slot: AtomicU32,
}

impl OpenFile {
    /// A handle for `fd`, an open file of `inode`, journaled in
    /// `journal_slot` (`NO_SLOT`: not).
    pub(crate) fn new(
        fd: OwnedFd,
        inode: Arc<Inode>,
        passthrough: bool,
        journal_slot: u32,
    ) -> OpenFile {
        OpenFile {
            fd,
            inode,
            passthrough,
            lock_owners: Mutex::new(Vec::new()),
            journal_slot: AtomicU32::new(journal_slot),
        }
    }
}

/// An open directory.
#[derive(Debug)]
pub(crate) struct OpenDir {
    /// The stream; a mutex because the directory fd's position is shared
    /// by every READDIR on this handle.
    pub(crate) stream: Mutex<DirStream>,
    /// Its open slot in the crash journal, if any (see `journal`).
    pub(crate) journal_slot: AtomicU32,
}

impl OpenDir {
    /// A handle for `stream`, journaled in `journal_slot` (`NO_SLOT`:
    /// not).
    pub(crate) fn new(stream: DirStream, journal_slot: u32) -> OpenDir {
        OpenDir {
            stream: Mutex::new(stream),
            journal_slot: AtomicU32::new(journal_slot),
        }
    }
}

impl OpenDir {
    /// Locks the stream. A panic in an earlier holder leaves at worst a
    /// stale buffer, which the next seek discards, so poison is ignored.
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, DirStream> {
        self.stream.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Shards of the table; a power of two, so `fh % SHARDS` is a mask.
const SHARDS: usize = 16;

/// fh → handle, for one kind of handle.
#[derive(Debug)]
pub(crate) struct HandleTable<T> {
    shards: [RwLock<HashMap<u64, Arc<T>>>; SHARDS],
    /// The next fh, shared with the other table. `Relaxed` suffices:
    /// `fetch_add` is atomic whatever the ordering, so every fh is handed
    /// out once, and no other memory is published through this counter
    /// (the handle itself is published by the shard's lock, and reaches
    /// other threads only through the kernel after our reply).
    next: Arc<AtomicU64>,
}

/// A file table and a directory table that never hand out the same fh.
pub(crate) fn tables() -> (HandleTable<OpenFile>, HandleTable<OpenDir>) {
    // fh 0 is never given out, so that it can never be mistaken for "no
    // handle".
    tables_from(1)
}

/// As [`tables`], handing out fhs from `next` on (a successor's tables,
/// see `saved`).
pub(crate) fn tables_from(next: u64) -> (HandleTable<OpenFile>, HandleTable<OpenDir>) {
    let next = Arc::new(AtomicU64::new(next));
    (HandleTable::new(next.clone()), HandleTable::new(next))
}

impl<T> HandleTable<T> {
    fn new(next: Arc<AtomicU64>) -> Self {
        HandleTable {
            shards: std::array::from_fn(|_| RwLock::new(HashMap::new())),
            next,
        }
    }

    fn shard(&self, fh: u64) -> &RwLock<HashMap<u64, Arc<T>>> {
        &self.shards[fh as usize % SHARDS]
    }

    /// Stores `handle` and returns its new fh.
    #[cfg(test)]
    pub(crate) fn insert(&self, handle: T) -> FileHandle {
        self.insert_with(|_| handle)
    }

    /// Stores the handle `make` builds for its new fh, and returns the fh.
    pub(crate) fn insert_with(&self, make: impl FnOnce(u64) -> T) -> FileHandle {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        let handle = Arc::new(make(fh));
        self.shard(fh)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(fh, handle);
        FileHandle(fh)
    }

    /// The handle `fh` names, or EBADF.
    pub(crate) fn get(&self, fh: FileHandle) -> Result<Arc<T>, Errno> {
        self.shard(fh.0)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&fh.0)
            .cloned()
            .ok_or(Errno::EBADF)
    }

    /// Removes `fh` and returns its handle (in-flight requests may still
    /// hold clones; the fd closes when the last one goes).
    pub(crate) fn remove(&self, fh: FileHandle) -> Option<Arc<T>> {
        self.shard(fh.0)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&fh.0)
    }

    /// Every handle with its fh, by fh.
    pub(crate) fn entries(&self) -> Vec<(u64, Arc<T>)> {
        let mut all = Vec::new();
        for shard in &self.shards {
            all.extend(
                shard
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .map(|(&fh, h)| (fh, h.clone())),
            );
        }
        all.sort_unstable_by_key(|&(fh, _)| fh);
        all
    }

    /// The fh the next [`insert`](Self::insert) of either table gets.
    pub(crate) fn next_fh(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    /// Stores `handle` under `fh`, which a predecessor gave out (see
    /// `saved`); false, storing nothing, when `fh` is taken already.
    pub(crate) fn insert_at(&self, fh: u64, handle: T) -> bool {
        let mut shard = self
            .shard(fh)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.contains_key(&fh) {
            return false;
        }
        shard.insert(fh, Arc::new(handle));
        true
    }

    /// Removes every handle.
    pub(crate) fn drain(&self) -> Vec<Arc<T>> {
        let mut all = Vec::new();
        for shard in &self.shards {
            all.extend(
                shard
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .drain()
                    .map(|(_, h)| h),
            );
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_directories_never_share_an_fh() {
        let (files, dirs) = tables();
        let a = files.next.fetch_add(0, Ordering::Relaxed);
        let d = dirs.next.fetch_add(1, Ordering::Relaxed);
        assert_eq!(a, d);
        assert_eq!(files.next.load(Ordering::Relaxed), d + 1);
    }

    #[test]
    fn insert_get_remove() {
        let t: HandleTable<u32> = HandleTable::new(Arc::new(AtomicU64::new(1)));
        let a = t.insert(7);
        let b = t.insert(8);
        assert_ne!(a, b);
        assert_ne!(a.0, 0);
        assert_eq!(*t.get(a).unwrap(), 7);
        assert_eq!(*t.remove(a).unwrap(), 7);
        assert_eq!(t.get(a).unwrap_err(), Errno::EBADF);
        assert!(t.remove(a).is_none());
        assert_eq!(t.get(FileHandle(u64::MAX)).unwrap_err(), Errno::EBADF);
        assert_eq!(t.drain().len(), 1);
        assert_eq!(t.get(b).unwrap_err(), Errno::EBADF);
    }
}
