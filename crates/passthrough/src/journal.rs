//! A crash journal: what every node id and file handle (fh) the kernel
//! holds stands for, kept as the filesystem goes in memory that outlives
//! the process, so that a new server can go on serving the connection of
//! one that died (SIGKILL, OOM, panic) without its help.
//!
//! A supervisor holds the mount's /dev/fuse descriptor and a descriptor
//! of the journal's memfd; the kernel keeps the FUSE connection, and with
//! it the node ids and fhs the dead server gave out, as long as any
//! descriptor of it is open. [`PassthroughFs::journaled`] writes the
//! journal; [`PassthroughFs::recover`] reads it back in a new process
//! ([`Journal::from_fd`]) and builds the tables through the same code as
//! a planned hand-over's [`PassthroughFs::restore`].
//!
//! # What the journal holds, and when
//!
//! - Every node the kernel may hold (but the root): its id, the source
//!   inode's (st_dev, st_ino) and the source's file handle
//!   (`name_to_handle_at`). Written by the thread that hands the id out,
//!   before its reply leaves; cleared when the kernel's lookup count
//!   reaches zero (FORGET); written again when a forgotten node revives.
//! - Each inode table shard's next node id and the next fh (high-water
//!   marks), so that a recovered server never hands out an id or fh the
//!   kernel may still hold.
//! - Every open file (OPEN, CREATE, TMPFILE) with its node and the flags
//!   its source descriptor was opened with, and every open directory;
//!   written before the reply, cleared at RELEASE/RELEASEDIR.
//! - A node's kernel passthrough backing id while it has one, and which
//!   open files use it.
//!
//! Lookup counts are not journaled (it would cost a write per LOOKUP):
//! a recovered node gets a count so high that FORGET never drops it, so
//! the nodes live at the crash stay in the table until unmount.
//!
//! # What a crash keeps and what it loses
//!
//! After [`PassthroughFs::recover`], applications see:
//! - Node ids (paths looked up, cwds, open files, hard links sharing one
//!   node) resolve as before: each node is reopened by its source handle
//!   (`open_by_handle_at`, CAP_DAC_READ_SEARCH).
//! - Open files go on reading and writing: each is reopened with its
//!   recorded flags (without `O_TRUNC`, `O_CREAT`, `O_EXCL`), as the
//!   daemon, which the kernel authorised once. The file offset is the
//!   kernel's, so it is unaffected. Kernel passthrough files keep working
//!   throughout (the kernel does their I/O); the backing id is closed
//!   when the last of them is released.
//! - Open directories are reopened; a listing goes on from the offset the
//!   kernel passes (the source's own `d_off` cookie, which tmpfs and ext4
//!   keep stable), every name once.
//!
//! Lost, by design:
//! - POSIX (fcntl) and flock(2) locks: the dead server's open file
//!   descriptions held them and closed with it. The recovered server does
//!   not know them: the application believes it holds a lock that nobody
//!   holds, and another process may take it.
//! - Mtimes kept under the writeback cache (see `mtime`): a later cache
//!   write may leave the source's mtime at the time of the write-back.
//! - Forgotten nodes remembered by handle (NFS export): not journaled, so
//!   kernel file handles of nodes forgotten before the crash go stale.
//! - Nodes on another filesystem than the source root's (a mount inside
//!   the source): a handle opens only on the filesystem of the descriptor
//!   given, which is the root's. Also nodes of a source without file
//!   handles. Lost: the kernel gets ESTALE for them.
//! - Nodes whose inode is gone: deleted and closed meanwhile, or deleted
//!   while the dead server still held them (st_nlink 0; tmpfs frees such
//!   an inode with its last descriptor, which died with the server). An
//!   open file of such a node is lost too: requests on its fh get EBADF
//!   (the application's read/write fail with EBADF), requests on the node
//!   ESTALE.
//! - A request being served at the crash: its reply never left. If the
//!   server read it on a cloned /dev/fuse fd of its own (the engine's
//!   `Config::clone_every_fd`), the kernel ends it with ECONNABORTED when
//!   that fd closes with the process (`fuse_dev_release`); one read on an
//!   fd the supervisor also holds would wait until the connection is
//!   aborted.
//!
//! # Layout
//!
//! The memfd is one header page, then 24-word (192-byte) node slots,
//! then 4-word open slots, all 64-bit words used only
//! through atomics. A slot is written field by field, then published by
//! a Release store of its state word, and cleared by storing 0 in it: a
//! writer killed mid-write leaves an unpublished slot, which recovery
//! ignores (and the reply that slot was for never left). The header keeps
//! the highest slot ever used in each region, so recovery scans only that
//! far; free slots are kept in process (a list and a high-water mark) and
//! rebuilt from the journal by recovery. The capacity is fixed up front
//! (the memfd is sparse: only pages touched take memory); when a region
//! is full a warning is logged once and new entries go unrecorded (they
//! would not survive a crash); no request ever fails because of it.
//!
//! Header words: 0 magic, 1 version, 2 node capacity, 3 open capacity,
//! 4/5 the source root's st_dev/st_ino, 6 the next fh, 7/8 node/open
//! slots ever used, 16..32 each inode table shard's next id.
//!
//! Node slot words: 0 state (0 free, 1 live, 2 live but without a handle
//! that opens on the root's filesystem), 1 node id, 2 st_dev, 3 st_ino, 4
//! handle type (low 32 bits) and length (high 32), 5 backing id (bit 32
//! set when there is one), 6..22 the handle's bytes (up to 128,
//! MAX_HANDLE_SZ).
//!
//! Open slot words: 0 state (0 free, 1 file, 2 directory), 1 fh, 2 node
//! id, 3 the source open flags (low 32 bits), bit 32 set when the file
//! uses its node's backing id.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use fastfuse::NodeId;

use crate::error::PassthroughError;
use crate::fs::PassthroughFs;
use crate::inode::{self, Inode, InodeKey};
use crate::options::Options;
use crate::procfd::ProcFd;
use crate::saved::{
    SavedBacking, SavedDir, SavedFile, SavedInode, SavedKey, SavedMtime, SavedNode, SavedShard,
    SavedState, SavedTable, STATE_VERSION,
};
use crate::sys::{self, SharedWords, SourceHandle};

/// "FFJRNL01" as a little-endian word.
const MAGIC: u64 = u64::from_le_bytes(*b"FFJRNL01");
/// The layout's version; bump on any change of the layout, or of how node
/// ids map to inode table shards (recovery puts them back by id).
pub const JOURNAL_VERSION: u64 = 1;

/// The header, one page.
const HEADER_WORDS: usize = 512;
const H_MAGIC: usize = 0;
const H_VERSION: usize = 1;
const H_NODE_CAP: usize = 2;
const H_OPEN_CAP: usize = 3;
const H_ROOT_DEV: usize = 4;
const H_ROOT_INO: usize = 5;
const H_NEXT_FH: usize = 6;
const H_NODES_USED: usize = 7;
const H_OPENS_USED: usize = 8;
const H_NEXT_ID: usize = 16;

/// Words per node slot (192 bytes: a page holds a whole number of them).
const NODE_WORDS: usize = 24;
const N_STATE: usize = 0;
const N_ID: usize = 1;
const N_DEV: usize = 2;
const N_INO: usize = 3;
const N_HANDLE: usize = 4;
const N_BACKING: usize = 5;
const N_BYTES: usize = 6;
/// The handle's bytes: MAX_HANDLE_SZ (128) in 16 words.
const HANDLE_WORDS: usize = 16;

/// Words per open slot.
const OPEN_WORDS: usize = 4;
const O_STATE: usize = 0;
/// The state word's place in a slot of either region.
const SLOT_STATE: usize = 0;
const _: () = assert!(N_STATE == SLOT_STATE && O_STATE == SLOT_STATE);
const O_FH: usize = 1;
const O_NODE: usize = 2;
const O_FLAGS: usize = 3;

/// Node slot states.
const NODE_LIVE: u64 = 1;
const NODE_NO_HANDLE: u64 = 2;
/// Open slot states.
const OPEN_FILE: u64 = 1;
const OPEN_DIR: u64 = 2;
/// In an open slot's flags word: the file uses its node's backing id.
const USES_BACKING: u64 = 1 << 32;
/// In a node slot's backing word: there is a backing id (the low bits).
const HAS_BACKING: u64 = 1 << 32;

/// The default capacities: 1M nodes (192 MiB) and 1M opens (32 MiB),
/// sparse.
const NODE_CAPACITY: u32 = 1 << 20;
const OPEN_CAPACITY: u32 = 1 << 20;
/// The most either capacity may be in a journal [`Journal::from_fd`]
/// accepts.
const MAX_CAPACITY: u64 = 1 << 26;

/// A node's or open's slot, as its `journal_slot` field holds it: an
/// index, or one of these.
pub(crate) const NO_SLOT: u32 = u32::MAX;
/// Being written by another thread; its reply waits for it.
const BUSY: u32 = u32::MAX - 1;
/// Not recorded and not to be (the journal was full, or the root, which
/// recovery opens from the source path).
pub(crate) const UNRECORDED: u32 = u32::MAX - 2;

/// The lookup count a recovered node gets: the real one died with the
/// server, and this many FORGETs never come.
const RECOVERED_LOOKUPS: u64 = 1 << 62;

/// Flags that must not be repeated when a recovered file is reopened.
const NOT_AGAIN: libc::c_int = libc::O_CREAT
    | libc::O_EXCL
    | libc::O_TRUNC
    | libc::O_NOCTTY
    | libc::O_NOFOLLOW
    | libc::O_TMPFILE;

/// Free slots of one region, in process: freed ones and the high-water
/// mark (slots above it were never used).
#[derive(Debug)]
struct Slots {
    free: Mutex<Vec<u32>>,
    used: AtomicU32,
    capacity: u32,
    /// The "full" warning was logged.
    warned: AtomicBool,
}

impl Slots {
    fn new(capacity: u32) -> Slots {
        Slots {
            free: Mutex::new(Vec::new()),
            used: AtomicU32::new(0),
            capacity,
            warned: AtomicBool::new(false),
        }
    }

    /// The slots of a region whose first `used` (at most `capacity`) were
    /// handed out: those in `keep` stay taken, every other one is cleared
    /// (`clear`) and free.
    fn rebuilt(capacity: u32, used: u32, keep: &HashSet<u32>, clear: impl Fn(u32)) -> Slots {
        let used = used.min(capacity);
        let free = (0..used)
            .rev()
            .filter(|slot| !keep.contains(slot))
            .inspect(|&slot| clear(slot))
            .collect();
        Slots {
            free: Mutex::new(free),
            used: AtomicU32::new(used),
            capacity,
            warned: AtomicBool::new(false),
        }
    }

    /// A free slot, or `None` when the region is full.
    fn take(&self) -> Option<u32> {
        if let Some(i) = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
        {
            return Some(i);
        }
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                (u < self.capacity).then_some(u + 1)
            })
            .ok()
    }

    fn give_back(&self, slot: u32) {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(slot);
    }
}

/// A crash journal in a memfd, mapped shared (see the module doc).
///
/// Make one with [`Journal::create`] and give it to
/// [`PassthroughFs::journaled`]; hand a duplicate of [`Journal::fd`] to
/// the process that outlives the server. A new server maps it with
/// [`Journal::from_fd`] and goes on with [`PassthroughFs::recover`].
pub struct Journal {
    fd: OwnedFd,
    map: SharedWords,
    nodes: Slots,
    opens: Slots,
    /// The mount id (`name_to_handle_at`) of the source root: a handle
    /// reached through another mount would not open on the root's
    /// filesystem. `None`: the source has no handles.
    mount_id: Option<libc::c_int>,
    /// Backing ids of the dead server that no recovered file uses, for
    /// `ready` to close on the connection.
    orphan_backing: Mutex<Vec<i32>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("nodes", &self.nodes.capacity)
            .field("opens", &self.opens.capacity)
            .finish_non_exhaustive()
    }
}

/// The bytes a journal of these capacities takes.
fn journal_bytes(nodes: u64, opens: u64) -> u64 {
    (HEADER_WORDS as u64 + nodes * NODE_WORDS as u64 + opens * OPEN_WORDS as u64) * 8
}

fn journal_err(what: &'static str) -> impl FnOnce(std::io::Error) -> PassthroughError {
    move |source| PassthroughError::Journal { what, source }
}

/// A node slot as recovery reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JournalNode {
    pub(crate) slot: u32,
    pub(crate) id: u64,
    pub(crate) key: InodeKey,
    /// `None`: no handle that opens on the root's filesystem.
    pub(crate) handle: Option<SourceHandle>,
    pub(crate) backing: Option<i32>,
}

/// An open slot as recovery reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JournalOpen {
    pub(crate) slot: u32,
    pub(crate) dir: bool,
    pub(crate) fh: u64,
    pub(crate) node: u64,
    pub(crate) flags: libc::c_int,
    pub(crate) uses_backing: bool,
}

impl Journal {
    /// A new, empty journal: a memfd (`MFD_CLOEXEC`) of its full capacity
    /// (1M nodes and 1M open files and directories, about 224 MiB, sparse:
    /// only the pages written take memory), mapped shared.
    pub fn create() -> Result<Journal, PassthroughError> {
        Journal::with_capacity(NODE_CAPACITY, OPEN_CAPACITY)
    }

    /// [`Journal::create`] with room for `nodes` nodes and `opens` opens.
    pub(crate) fn with_capacity(nodes: u32, opens: u32) -> Result<Journal, PassthroughError> {
        let fd = sys::memfd_create(c"fastfuse-journal").map_err(journal_err("memfd_create"))?;
        let len = journal_bytes(u64::from(nodes), u64::from(opens));
        sys::ftruncate(fd.as_fd(), len as i64).map_err(journal_err("ftruncate"))?;
        let map = SharedWords::map(fd.as_fd(), len as usize).map_err(journal_err("mmap"))?;
        let words = map.words();
        words[H_VERSION].store(JOURNAL_VERSION, Ordering::Relaxed);
        words[H_NODE_CAP].store(u64::from(nodes), Ordering::Relaxed);
        words[H_OPEN_CAP].store(u64::from(opens), Ordering::Relaxed);
        // The magic last: a journal is one once it is all there.
        words[H_MAGIC].store(MAGIC, Ordering::Release);
        Ok(Journal {
            fd,
            map,
            nodes: Slots::new(nodes),
            opens: Slots::new(opens),
            mount_id: None,
            orphan_backing: Mutex::new(Vec::new()),
        })
    }

    /// Maps a journal another process made (a descriptor of its memfd).
    /// Refused with [`PassthroughError::InvalidJournal`] when `fd` has not
    /// the magic of a journal, is of another format version, or is not
    /// the size its header says.
    pub fn from_fd(fd: OwnedFd) -> Result<Journal, PassthroughError> {
        let invalid = |what: String| PassthroughError::InvalidJournal(what);
        let size = sys::file_size(fd.as_fd()).map_err(journal_err("fstat"))?;
        let header = HEADER_WORDS as u64 * 8;
        if size < header {
            return Err(invalid(format!(
                "{size} bytes, less than a journal's header ({header})"
            )));
        }
        let map = SharedWords::map(fd.as_fd(), size as usize).map_err(journal_err("mmap"))?;
        let words = map.words();
        let magic = words[H_MAGIC].load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(invalid(format!("magic {magic:#018x}, not {MAGIC:#018x}")));
        }
        let version = words[H_VERSION].load(Ordering::Relaxed);
        if version != JOURNAL_VERSION {
            return Err(invalid(format!(
                "format version {version}, this build reads {JOURNAL_VERSION}"
            )));
        }
        let nodes = words[H_NODE_CAP].load(Ordering::Relaxed);
        let opens = words[H_OPEN_CAP].load(Ordering::Relaxed);
        if nodes > MAX_CAPACITY || opens > MAX_CAPACITY {
            return Err(invalid(format!(
                "capacities of {nodes} nodes and {opens} opens, beyond {MAX_CAPACITY}"
            )));
        }
        let expected = journal_bytes(nodes, opens);
        if size != expected {
            return Err(invalid(format!(
                "{size} bytes, where {nodes} nodes and {opens} opens take {expected}"
            )));
        }
        let (nodes, opens) = (nodes as u32, opens as u32);
        let journal = Journal {
            fd,
            map,
            nodes: Slots::new(nodes),
            opens: Slots::new(opens),
            mount_id: None,
            orphan_backing: Mutex::new(Vec::new()),
        };
        for (region, used) in [(H_NODES_USED, nodes), (H_OPENS_USED, opens)] {
            let have = journal.header(region).load(Ordering::Relaxed);
            if have > u64::from(used) {
                return Err(invalid(format!("{have} slots used of a region of {used}")));
            }
        }
        Ok(journal)
    }

    /// The journal's memfd, to duplicate for the process that keeps it
    /// across a crash.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn words(&self) -> &[AtomicU64] {
        self.map.words()
    }

    fn header(&self, word: usize) -> &AtomicU64 {
        &self.words()[word]
    }

    fn node(&self, slot: u32) -> &[AtomicU64] {
        let start = HEADER_WORDS + slot as usize * NODE_WORDS;
        &self.words()[start..start + NODE_WORDS]
    }

    fn open(&self, slot: u32) -> &[AtomicU64] {
        let start = HEADER_WORDS + self.nodes.capacity as usize * NODE_WORDS;
        let start = start + slot as usize * OPEN_WORDS;
        &self.words()[start..start + OPEN_WORDS]
    }

    /// Starts the journal afresh for a new filesystem over the root `key`
    /// on the mount `mount_id`: every slot free, every mark 0.
    pub(crate) fn start(&mut self, key: InodeKey, mount_id: Option<libc::c_int>) {
        let used = self.header(H_NODES_USED).load(Ordering::Relaxed) as u32;
        for slot in 0..used {
            self.node(slot)[N_STATE].store(0, Ordering::Release);
        }
        let used = self.header(H_OPENS_USED).load(Ordering::Relaxed) as u32;
        for slot in 0..used {
            self.open(slot)[O_STATE].store(0, Ordering::Release);
        }
        for word in [H_NEXT_FH, H_NODES_USED, H_OPENS_USED] {
            self.header(word).store(0, Ordering::Relaxed);
        }
        for shard in 0..inode::SHARDS {
            self.header(H_NEXT_ID + shard).store(0, Ordering::Relaxed);
        }
        let (dev, ino) = key.parts();
        self.header(H_ROOT_DEV).store(dev, Ordering::Relaxed);
        self.header(H_ROOT_INO).store(ino, Ordering::Release);
        self.mount_id = mount_id;
        self.nodes = Slots::new(self.nodes.capacity);
        self.opens = Slots::new(self.opens.capacity);
    }

    /// The source root the journal was kept for; `None` for one no
    /// filesystem has used.
    pub(crate) fn root(&self) -> Option<InodeKey> {
        let ino = self.header(H_ROOT_INO).load(Ordering::Acquire);
        let dev = self.header(H_ROOT_DEV).load(Ordering::Relaxed);
        (ino != 0).then(|| InodeKey::from_parts(dev, ino))
    }

    /// Records `node` (its `inode`, whose key is `key`, or is read from
    /// its fd when `None`) unless it is recorded already, before the reply
    /// that hands it to the kernel. A thread that finds another recording
    /// the node waits for it: its reply, too, must find the node in the
    /// journal. The table must call this for every node it hands out.
    #[inline]
    pub(crate) fn record_node(&self, node: NodeId, key: Option<InodeKey>, inode: &Inode) {
        let state = inode.journal_slot.load(Ordering::Acquire);
        if state != NO_SLOT && state != BUSY {
            return;
        }
        self.record_node_slow(node, key, inode);
    }

    #[cold]
    fn record_node_slow(&self, node: NodeId, key: Option<InodeKey>, inode: &Inode) {
        loop {
            match inode.journal_slot.compare_exchange(
                NO_SLOT,
                BUSY,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                // A few µs at most: one name_to_handle_at and some stores.
                Err(BUSY) => std::thread::yield_now(),
                Err(_) => return,
            }
        }
        let slot = self.write_node(node, key, inode);
        // The node may have been forgotten meanwhile (only a FORGET of
        // more lookups than the kernel had can do that: this thread's
        // lookup is not yet in the kernel's count); its slot goes then.
        if inode
            .journal_slot
            .compare_exchange(BUSY, slot, Ordering::Release, Ordering::Relaxed)
            .is_err()
            && slot != UNRECORDED
        {
            self.clear_node(slot);
        }
    }

    /// Writes `node`'s slot; its index, or [`UNRECORDED`] when full.
    fn write_node(&self, node: NodeId, key: Option<InodeKey>, inode: &Inode) -> u32 {
        let (shard, index) = inode::shard_and_index(node);
        self.header(H_NEXT_ID + shard)
            .fetch_max(index + 1, Ordering::Relaxed);
        let key = match key {
            Some(key) => key,
            None => match sys::stat_fd(inode.fd.as_fd()) {
                Ok(st) => InodeKey::of(&st),
                Err(e) => {
                    tracing::debug!(node = node.0, "cannot journal a node: {e}");
                    return UNRECORDED;
                }
            },
        };
        let handle = match (sys::name_to_handle(inode.fd.as_fd()), self.mount_id) {
            (Ok((handle, mount)), Some(root)) if mount == root => Some(handle),
            _ => None,
        };
        let Some(slot) = self.nodes.take() else {
            if !self.nodes.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    capacity = self.nodes.capacity,
                    "the crash journal has no room for more nodes; those looked up from now on \
                     are lost if the server dies"
                );
            }
            return UNRECORDED;
        };
        let w = self.node(slot);
        let (dev, ino) = key.parts();
        w[N_ID].store(node.0, Ordering::Relaxed);
        w[N_DEV].store(dev, Ordering::Relaxed);
        w[N_INO].store(ino, Ordering::Relaxed);
        w[N_BACKING].store(0, Ordering::Relaxed);
        let state = match &handle {
            Some(h) => {
                let bytes = h.bytes();
                w[N_HANDLE].store(
                    u64::from(h.handle_type() as u32) | (bytes.len() as u64) << 32,
                    Ordering::Relaxed,
                );
                let mut padded = [0u8; HANDLE_WORDS * 8];
                padded[..bytes.len()].copy_from_slice(bytes);
                for (i, chunk) in padded.chunks_exact(8).enumerate() {
                    let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
                    w[N_BYTES + i].store(word, Ordering::Relaxed);
                }
                NODE_LIVE
            }
            None => NODE_NO_HANDLE,
        };
        self.header(H_NODES_USED)
            .fetch_max(u64::from(slot) + 1, Ordering::Relaxed);
        // Release: whoever sees the state sees the fields.
        w[N_STATE].store(state, Ordering::Release);
        slot
    }

    /// The node `inode` left the live set (its lookup count reached zero,
    /// or the session ended): its slot is cleared. Called under the
    /// node's shard lock, so that no revival of it can come in between.
    pub(crate) fn forget_node(&self, inode: &Inode) {
        let slot = inode.journal_slot.swap(NO_SLOT, Ordering::AcqRel);
        if slot < UNRECORDED {
            self.clear_node(slot);
        }
    }

    fn clear_node(&self, slot: u32) {
        self.node(slot)[N_STATE].store(0, Ordering::Release);
        self.nodes.give_back(slot);
    }

    /// Notes `inode`'s kernel passthrough backing id (`None`: closed).
    pub(crate) fn set_backing(&self, inode: &Inode, id: Option<i32>) {
        let slot = inode.journal_slot.load(Ordering::Acquire);
        if slot < UNRECORDED {
            let word = id.map_or(0, |id| HAS_BACKING | u64::from(id as u32));
            self.node(slot)[N_BACKING].store(word, Ordering::Release);
        }
    }

    /// Records an open file (`dir` false) or directory of `node` under
    /// `fh`, opened with `flags`, before the reply; its slot, or
    /// [`UNRECORDED`] when full.
    pub(crate) fn record_open(
        &self,
        dir: bool,
        fh: u64,
        node: NodeId,
        flags: libc::c_int,
        uses_backing: bool,
    ) -> u32 {
        self.header(H_NEXT_FH).fetch_max(fh + 1, Ordering::Relaxed);
        let Some(slot) = self.opens.take() else {
            if !self.opens.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    capacity = self.opens.capacity,
                    "the crash journal has no room for more open files; those opened from now \
                     on are lost if the server dies"
                );
            }
            return UNRECORDED;
        };
        let w = self.open(slot);
        w[O_FH].store(fh, Ordering::Relaxed);
        w[O_NODE].store(node.0, Ordering::Relaxed);
        let backing = if uses_backing { USES_BACKING } else { 0 };
        w[O_FLAGS].store(u64::from(flags as u32) | backing, Ordering::Relaxed);
        self.header(H_OPENS_USED)
            .fetch_max(u64::from(slot) + 1, Ordering::Relaxed);
        let state = if dir { OPEN_DIR } else { OPEN_FILE };
        w[O_STATE].store(state, Ordering::Release);
        slot
    }

    /// The open with this slot was released.
    pub(crate) fn release_open(&self, slot: &AtomicU32) {
        let slot = slot.swap(NO_SLOT, Ordering::AcqRel);
        if slot < UNRECORDED {
            self.open(slot)[O_STATE].store(0, Ordering::Release);
            self.opens.give_back(slot);
        }
    }

    /// The slots of a region below its high-water mark (header word
    /// `used_word`, at most `capacity`) whose state word, read with
    /// Acquire, is one of `states`: the published ones, with their state
    /// and words. A slot its writer did not publish is skipped.
    fn published<'a>(
        &'a self,
        used_word: usize,
        capacity: u32,
        states: &'a [u64],
        words: impl Fn(u32) -> &'a [AtomicU64] + 'a,
    ) -> impl Iterator<Item = (u32, u64, &'a [AtomicU64])> + 'a {
        let used = (self.header(used_word).load(Ordering::Acquire) as u32).min(capacity);
        (0..used).filter_map(move |slot| {
            let w = words(slot);
            let state = w[SLOT_STATE].load(Ordering::Acquire);
            states.contains(&state).then_some((slot, state, w))
        })
    }

    /// Every published node slot.
    pub(crate) fn nodes(&self) -> Vec<JournalNode> {
        let mut all = Vec::new();
        let published = self.published(
            H_NODES_USED,
            self.nodes.capacity,
            &[NODE_LIVE, NODE_NO_HANDLE],
            |slot| self.node(slot),
        );
        for (slot, state, w) in published {
            let handle = (state == NODE_LIVE)
                .then(|| {
                    let word = w[N_HANDLE].load(Ordering::Relaxed);
                    let len = (word >> 32) as usize;
                    let mut bytes = Vec::with_capacity(HANDLE_WORDS * 8);
                    for i in 0..HANDLE_WORDS {
                        bytes.extend_from_slice(
                            &w[N_BYTES + i].load(Ordering::Relaxed).to_le_bytes(),
                        );
                    }
                    bytes.truncate(len);
                    SourceHandle::from_parts(word as u32 as libc::c_int, &bytes)
                })
                .flatten();
            let backing = w[N_BACKING].load(Ordering::Relaxed);
            all.push(JournalNode {
                slot,
                id: w[N_ID].load(Ordering::Relaxed),
                key: InodeKey::from_parts(
                    w[N_DEV].load(Ordering::Relaxed),
                    w[N_INO].load(Ordering::Relaxed),
                ),
                handle,
                backing: (backing & HAS_BACKING != 0).then_some(backing as u32 as i32),
            });
        }
        all
    }

    /// Every published open slot.
    pub(crate) fn opens(&self) -> Vec<JournalOpen> {
        let mut all = Vec::new();
        let published = self.published(
            H_OPENS_USED,
            self.opens.capacity,
            &[OPEN_FILE, OPEN_DIR],
            |slot| self.open(slot),
        );
        for (slot, state, w) in published {
            let flags = w[O_FLAGS].load(Ordering::Relaxed);
            all.push(JournalOpen {
                slot,
                dir: state == OPEN_DIR,
                fh: w[O_FH].load(Ordering::Relaxed),
                node: w[O_NODE].load(Ordering::Relaxed),
                flags: flags as u32 as libc::c_int,
                uses_backing: flags & USES_BACKING != 0,
            });
        }
        all
    }

    /// Each shard's next id and the next fh, as the header has them.
    fn marks(&self) -> ([u64; inode::SHARDS], u64) {
        let ids = std::array::from_fn(|s| self.header(H_NEXT_ID + s).load(Ordering::Relaxed));
        (ids, self.header(H_NEXT_FH).load(Ordering::Relaxed))
    }

    /// Rebuilds the in-process free lists from the slots: every slot
    /// below the high-water marks that is not published is free (those a
    /// dead writer left half-written too). `keep_nodes` and `keep_opens`
    /// are the published ones still in use; any other published slot is
    /// cleared.
    fn rebuild(&mut self, keep_nodes: &HashSet<u32>, keep_opens: &HashSet<u32>) {
        let used = self.header(H_NODES_USED).load(Ordering::Relaxed) as u32;
        self.nodes = Slots::rebuilt(self.nodes.capacity, used, keep_nodes, |slot| {
            self.node(slot)[N_STATE].store(0, Ordering::Release)
        });
        let used = self.header(H_OPENS_USED).load(Ordering::Relaxed) as u32;
        self.opens = Slots::rebuilt(self.opens.capacity, used, keep_opens, |slot| {
            self.open(slot)[O_STATE].store(0, Ordering::Release)
        });
    }

    /// The dead server's backing ids that no recovered file uses, once.
    pub(crate) fn take_orphan_backing(&self) -> Vec<i32> {
        std::mem::take(
            &mut *self
                .orphan_backing
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }
}

/// What [`PassthroughFs::recover`] brought back from a journal, for the
/// log and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Nodes serving again under their ids (the root not counted).
    pub nodes: usize,
    /// Nodes the journal named that could not come back: the kernel gets
    /// ESTALE for them.
    pub nodes_lost: usize,
    /// Open files serving again under their fhs.
    pub files: usize,
    /// Open files that could not be reopened (or whose node was lost):
    /// requests on their fhs get EBADF.
    pub files_lost: usize,
    /// Open directories serving again under their fhs.
    pub dirs: usize,
    /// Open directories that could not be reopened.
    pub dirs_lost: usize,
    /// Kernel passthrough backing ids still in use by recovered files.
    pub backing_ids: usize,
    /// Why entries were lost: a short reason → how many.
    pub lost: BTreeMap<&'static str, usize>,
}

impl Recovery {
    fn lose(&mut self, why: &'static str) {
        *self.lost.entry(why).or_default() += 1;
    }
}

/// `source`'s root and the mount id of its file handles.
fn root_mount_id(root: BorrowedFd<'_>) -> Option<libc::c_int> {
    match sys::name_to_handle(root) {
        Ok((_, mount)) => Some(mount),
        Err(e) => {
            tracing::warn!(
                "the source has no file handles ({e}): the crash journal cannot bring nodes back"
            );
            None
        }
    }
}

impl PassthroughFs {
    /// As [`PassthroughFs::new`], keeping `journal` (started afresh) as it
    /// goes: every node id and fh handed to the kernel, so that
    /// [`PassthroughFs::recover`] in a new process can go on serving the
    /// connection if this one dies (see the `journal` module doc).
    /// The source root's (st_dev, st_ino) goes into the journal's header.
    ///
    /// [`PassthroughFs::save`] of a journaled filesystem is refused.
    pub fn journaled(
        source: &Path,
        options: Options,
        mut journal: Journal,
    ) -> Result<PassthroughFs, PassthroughError> {
        let (root, st) = crate::fs::open_root(source)?;
        journal.start(InodeKey::of(&st), root_mount_id(root.as_fd()));
        PassthroughFs::new_with(source, options, root, &st, Some(Arc::new(journal)))
    }

    /// A filesystem that serves the node ids and fhs `journal` names (a
    /// dead server's, see [`Journal::from_fd`]) over `source`, and goes on
    /// journaling into the same journal. The engine then calls
    /// [`Filesystem::ready`](fastfuse::Filesystem::ready) with the
    /// connection the dead server served ([`fastfuse::Session::resume`]).
    ///
    /// Each node is reopened by its source handle (which needs
    /// CAP_DAC_READ_SEARCH) and kept only if it is still the same inode
    /// and has a name; it gets a lookup count that FORGET never exhausts
    /// (the real count was not journaled), so recovered nodes stay until
    /// unmount. Open files are reopened through their node with the flags
    /// they had, less `O_TRUNC`, `O_CREAT` and `O_EXCL`; directories are
    /// reopened and resume from the kernel's offsets. Locks and kept
    /// mtimes are not recovered. What did not come back is dropped from
    /// the journal and counted in the [`Recovery`].
    ///
    /// Refused with [`PassthroughError::JournalRoot`] when `source` is not
    /// the root the journal was kept for (or no filesystem ever used it).
    pub fn recover(
        source: &Path,
        options: Options,
        mut journal: Journal,
    ) -> Result<(PassthroughFs, Recovery), PassthroughError> {
        let (root, st) = crate::fs::open_root(source)?;
        let root_key = InodeKey::of(&st);
        if journal.root() != Some(root_key) {
            let kept = journal.root().map_or((0, 0), InodeKey::parts);
            return Err(PassthroughError::JournalRoot {
                path: source.to_owned(),
                journaled: kept,
                found: root_key.parts(),
            });
        }
        journal.mount_id = root_mount_id(root.as_fd());
        // open_by_handle_at needs a descriptor on the filesystem that is
        // not O_PATH.
        let mount = sys::open_dir(root.as_fd()).map_err(|e| PassthroughError::OpenSource {
            path: source.to_owned(),
            source: e,
        })?;
        let mount = journal.mount_id.map(|_| mount);
        drop(root);
        let mut recovery = Recovery::default();
        let mut fds: Vec<OwnedFd> = Vec::new();
        let mut inodes: Vec<SavedInode> = Vec::new();
        // node id → (index into `inodes`, slot, key, backing id)
        let mut by_id: HashMap<u64, (usize, u32, InodeKey, Option<i32>)> = HashMap::new();
        let mut keys: HashSet<InodeKey> = HashSet::new();
        let mut keep_nodes = HashSet::new();
        let mut shards: Vec<SavedShard> = (0..inode::SHARDS)
            .map(|_| SavedShard {
                next_id: 1,
                live: Vec::new(),
                forgotten: Vec::new(),
                keys: Vec::new(),
            })
            .collect();
        for n in journal.nodes() {
            let reopened = match (&n.handle, &mount) {
                (None, _) | (_, None) => Err("on another filesystem or without a file handle"),
                (Some(handle), Some(mount)) => {
                    reopen_node(mount.as_fd(), handle, n.key, n.id, root_key)
                }
            };
            let (fd, st) = match reopened {
                Ok(found) if keys.insert(n.key) && !by_id.contains_key(&n.id) => found,
                Ok(_) => {
                    recovery.nodes_lost += 1;
                    recovery.lose("a node id or inode twice");
                    continue;
                }
                Err(why) => {
                    recovery.nodes_lost += 1;
                    recovery.lose(why);
                    continue;
                }
            };
            let (shard, index) = inode::shard_and_index(NodeId(n.id));
            let s = &mut shards[shard];
            s.next_id = s.next_id.max(index + 1);
            fds.push(fd);
            inodes.push(SavedInode {
                fd: fds.len() - 1,
                kind: st.st_mode & libc::S_IFMT,
                backing: None,
                posix_locks: Vec::new(),
                mtime: SavedMtime::default(),
            });
            let at = inodes.len() - 1;
            s.live.push(SavedNode {
                id: n.id,
                key: n.key.into(),
                lookups: RECOVERED_LOOKUPS,
                inode: at,
            });
            s.keys.push((n.key.into(), n.id));
            by_id.insert(n.id, (at, n.slot, n.key, n.backing));
            keep_nodes.insert(n.slot);
            recovery.nodes += 1;
        }
        let (marks, next_fh) = journal.marks();
        for (s, mark) in shards.iter_mut().zip(marks) {
            s.next_id = s.next_id.max(mark);
        }
        // The root, as the table wants it: from the source path.
        let (root, _) = crate::fs::open_root(source)?;
        fds.push(root);
        inodes.push(SavedInode {
            fd: fds.len() - 1,
            kind: libc::S_IFDIR,
            backing: None,
            posix_locks: Vec::new(),
            mtime: SavedMtime::default(),
        });
        let root_shard = inode::shard_and_index(NodeId::ROOT).0;
        shards[root_shard].live.push(SavedNode {
            id: NodeId::ROOT.0,
            key: root_key.into(),
            lookups: 1,
            inode: inodes.len() - 1,
        });
        shards[root_shard]
            .keys
            .push((root_key.into(), NodeId::ROOT.0));

        let proc = ProcFd::open().map_err(PassthroughError::Proc)?;
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        let mut fhs = HashSet::new();
        let mut keep_opens = HashSet::new();
        let mut open_slots = Vec::new();
        let mut backing_users: HashMap<u64, u32> = HashMap::new();
        let mut max_fh = 0;
        for o in journal.opens() {
            let lose = |recovery: &mut Recovery, why| {
                if o.dir {
                    recovery.dirs_lost += 1;
                } else {
                    recovery.files_lost += 1;
                }
                recovery.lose(why);
            };
            let Some(&(at, _, _, backing)) = by_id.get(&o.node) else {
                lose(&mut recovery, "opened on a node that was lost");
                continue;
            };
            if o.fh == 0 || !fhs.insert(o.fh) {
                lose(&mut recovery, "an fh twice");
                continue;
            }
            let node_fd = fds[inodes[at].fd].as_fd();
            let flags = if o.dir {
                libc::O_RDONLY | libc::O_DIRECTORY
            } else {
                o.flags & !NOT_AGAIN
            };
            let fd = match proc.reopen(node_fd, flags) {
                Ok(fd) => fd,
                Err(e) => {
                    tracing::debug!(fh = o.fh, "cannot reopen a journaled open: {e}");
                    lose(&mut recovery, "cannot be reopened");
                    continue;
                }
            };
            fds.push(fd);
            max_fh = max_fh.max(o.fh);
            keep_opens.insert(o.slot);
            open_slots.push((o.dir, o.fh, o.slot));
            if o.dir {
                dirs.push(SavedDir {
                    fh: o.fh,
                    fd: fds.len() - 1,
                    position: 0,
                    unsent: Vec::new(),
                });
                recovery.dirs += 1;
            } else {
                let passthrough = o.uses_backing && backing.is_some();
                if passthrough {
                    *backing_users.entry(o.node).or_default() += 1;
                }
                files.push(SavedFile {
                    fh: o.fh,
                    inode: at,
                    fd: fds.len() - 1,
                    passthrough,
                    lock_owners: Vec::new(),
                });
                recovery.files += 1;
            }
        }
        let mut orphans = Vec::new();
        for (&id, &(at, _, _, backing)) in &by_id {
            let Some(backing) = backing else { continue };
            match backing_users.get(&id) {
                Some(&users) => {
                    inodes[at].backing = Some(SavedBacking { id: backing, users });
                    recovery.backing_ids += 1;
                }
                None => orphans.push(backing),
            }
        }
        *journal
            .orphan_backing
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) = orphans;
        journal.rebuild(&keep_nodes, &keep_opens);
        let state = SavedState {
            version: STATE_VERSION,
            table: SavedTable {
                root: SavedKey::from(root_key),
                next_seq: 0,
                shards,
            },
            inodes,
            next_fh: next_fh.max(max_fh + 1),
            files,
            dirs,
        };
        let journal = Arc::new(journal);
        let fs = PassthroughFs::restore_with(source, options, state, fds, Some(journal))?;
        for (id, (_, slot, _, _)) in by_id {
            if let Ok(inode) = fs.inodes.get(NodeId(id)) {
                inode.journal_slot.store(slot, Ordering::Release);
            }
        }
        for (dir, fh, slot) in open_slots {
            let fh = fastfuse::FileHandle(fh);
            if dir {
                if let Ok(d) = fs.dirs.get(fh) {
                    d.journal_slot.store(slot, Ordering::Release);
                }
            } else if let Ok(f) = fs.files.get(fh) {
                f.journal_slot.store(slot, Ordering::Release);
            }
        }
        tracing::info!(?recovery, "recovered from the crash journal");
        Ok((fs, recovery))
    }
}

/// A journaled node reopened by its handle on the root's filesystem
/// (`mount`), if it is still the inode the journal says and has a name.
fn reopen_node(
    mount: BorrowedFd<'_>,
    handle: &SourceHandle,
    key: InodeKey,
    id: u64,
    root: InodeKey,
) -> Result<(OwnedFd, libc::stat), &'static str> {
    if !inode::belongs(NodeId(id), key, root) {
        return Err("an id that does not fit the inode table");
    }
    let fd = match sys::open_by_handle(mount, handle, libc::O_PATH | libc::O_NOFOLLOW) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESTALE) => return Err("gone from the source"),
        Err(e) => {
            tracing::debug!(node = id, "cannot open a journaled node by handle: {e}");
            return Err("cannot be opened by handle");
        }
    };
    let st = sys::stat_fd(fd.as_fd()).map_err(|_| "cannot be opened by handle")?;
    if InodeKey::of(&st) != key {
        return Err("its handle opens another inode");
    }
    if st.st_nlink == 0 {
        return Err("deleted");
    }
    Ok((fd, st))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saved::tests::list;
    use std::ffi::OsStr;

    use fastfuse::{Caller, Filesystem, OpenFlags};

    fn c_path(path: &Path) -> std::ffi::CString {
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap()
    }

    /// An inode of `path` and its key.
    fn inode_of(path: &Path) -> (Inode, InodeKey) {
        let fd = sys::open(&c_path(path), libc::O_PATH | libc::O_NOFOLLOW).unwrap();
        let st = sys::stat_fd(fd.as_fd()).unwrap();
        (Inode::new(fd, &st), InodeKey::of(&st))
    }

    /// A journal of these capacities, started over a fresh directory
    /// holding `files`.
    fn journal(nodes: u32, opens: u32, files: usize) -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..files {
            std::fs::write(dir.path().join(format!("f{i}")), b"").unwrap();
        }
        let mut j = Journal::with_capacity(nodes, opens).unwrap();
        let (root, key) = inode_of(dir.path());
        j.start(key, root_mount_id(root.fd.as_fd()));
        (dir, j)
    }

    fn file(dir: &tempfile::TempDir, i: usize) -> (Inode, InodeKey) {
        inode_of(&dir.path().join(format!("f{i}")))
    }

    fn slot(inode: &Inode) -> u32 {
        inode.journal_slot.load(Ordering::Relaxed)
    }

    #[test]
    fn nodes_and_opens_are_published_and_cleared() {
        let (dir, j) = journal(8, 8, 1);
        let (inode, key) = file(&dir, 0);
        let node = NodeId((5 << 4) | 3);
        j.record_node(node, Some(key), &inode);
        assert_eq!(slot(&inode), 0);
        let (handle, _) = sys::name_to_handle(inode.fd.as_fd()).unwrap();
        let expected = JournalNode {
            slot: 0,
            id: node.0,
            key,
            handle: Some(handle),
            backing: None,
        };
        assert_eq!(j.nodes(), vec![expected.clone()]);
        // The key read from the fd when not given: the same slot content.
        let (again, _) = file(&dir, 0);
        j.record_node(node, None, &again);
        assert_eq!(j.nodes()[1].key, key);
        j.forget_node(&again);
        // Recorded once: a second call changes nothing.
        j.record_node(node, Some(key), &inode);
        assert_eq!(j.nodes(), vec![expected]);
        j.set_backing(&inode, Some(7));
        assert_eq!(j.nodes()[0].backing, Some(7));
        j.set_backing(&inode, None);
        assert_eq!(j.nodes()[0].backing, None);
        // The shard's next id is past the node's.
        assert_eq!(j.marks().0[3], 6);
        j.forget_node(&inode);
        assert_eq!(slot(&inode), NO_SLOT);
        assert!(j.nodes().is_empty());
        // A forgotten node revived is recorded again.
        j.record_node(node, Some(key), &inode);
        assert_eq!(j.nodes().len(), 1);

        let open = j.record_open(false, 41, node, libc::O_RDWR | libc::O_APPEND, true);
        let dir_open = j.record_open(true, 42, node, libc::O_RDONLY, false);
        assert_eq!(
            j.opens(),
            vec![
                JournalOpen {
                    slot: open,
                    dir: false,
                    fh: 41,
                    node: node.0,
                    flags: libc::O_RDWR | libc::O_APPEND,
                    uses_backing: true,
                },
                JournalOpen {
                    slot: dir_open,
                    dir: true,
                    fh: 42,
                    node: node.0,
                    flags: libc::O_RDONLY,
                    uses_backing: false,
                },
            ]
        );
        assert_eq!(j.marks().1, 43);
        j.release_open(&AtomicU32::new(open));
        assert_eq!(j.opens().len(), 1);
        assert!(j.opens()[0].dir);
    }

    #[test]
    fn free_slots_are_reused() {
        let (dir, j) = journal(8, 8, 3);
        let inodes: Vec<_> = (0..3).map(|i| file(&dir, i)).collect();
        for (i, (inode, key)) in inodes[..2].iter().enumerate() {
            j.record_node(NodeId(((i as u64 + 1) << 4) | 1), Some(*key), inode);
        }
        assert_eq!((slot(&inodes[0].0), slot(&inodes[1].0)), (0, 1));
        j.forget_node(&inodes[0].0);
        j.record_node(NodeId((9 << 4) | 1), Some(inodes[2].1), &inodes[2].0);
        assert_eq!(slot(&inodes[2].0), 0, "the freed slot, not a new one");
        assert_eq!(j.header(H_NODES_USED).load(Ordering::Relaxed), 2);
        let a = j.record_open(false, 1, NodeId(17), 0, false);
        j.release_open(&AtomicU32::new(a));
        assert_eq!(j.record_open(false, 2, NodeId(17), 0, false), a);
    }

    #[test]
    fn a_full_journal_stops_recording_and_fails_nothing() {
        let (dir, j) = journal(2, 1, 4);
        let inodes: Vec<_> = (0..4).map(|i| file(&dir, i)).collect();
        for (i, (inode, key)) in inodes[..3].iter().enumerate() {
            j.record_node(NodeId(((i as u64 + 1) << 4) | 2), Some(*key), inode);
        }
        assert_eq!(slot(&inodes[2].0), UNRECORDED);
        assert_eq!(j.nodes().len(), 2);
        // Its id still counts for the shard's next id.
        assert_eq!(j.marks().0[2], 4);
        // Not tried again while it lives.
        j.record_node(NodeId((3 << 4) | 2), Some(inodes[2].1), &inodes[2].0);
        assert_eq!(slot(&inodes[2].0), UNRECORDED);
        j.forget_node(&inodes[2].0);
        assert_eq!(slot(&inodes[2].0), NO_SLOT);
        // Room again once one goes.
        j.forget_node(&inodes[0].0);
        j.record_node(NodeId((4 << 4) | 2), Some(inodes[3].1), &inodes[3].0);
        assert_eq!(slot(&inodes[3].0), 0);
        assert_eq!(j.record_open(false, 5, NodeId(18), 0, false), 0);
        assert_eq!(j.record_open(false, 9, NodeId(18), 0, false), UNRECORDED);
        assert_eq!(j.opens().len(), 1);
        assert_eq!(j.marks().1, 10, "fhs beyond the capacity still count");
    }

    /// A memfd with the bytes of `j` but for what `change` does to them.
    fn altered(j: &Journal, change: impl FnOnce(&Journal, &OwnedFd)) -> PassthroughError {
        let fd = sys::dup(j.fd()).unwrap();
        change(j, &fd);
        Journal::from_fd(fd).unwrap_err()
    }

    #[test]
    fn from_fd_refuses_what_is_not_a_journal_of_this_build() {
        let (dir, j) = journal(4, 4, 1);
        let (inode, key) = file(&dir, 0);
        j.record_node(NodeId(0x15), Some(key), &inode);
        // Another mapping of the same memory sees what was written.
        let other = Journal::from_fd(sys::dup(j.fd()).unwrap()).unwrap();
        assert_eq!(other.nodes(), j.nodes());
        assert_eq!(other.root(), j.root());

        let empty = sys::memfd_create(c"x").unwrap();
        let err = Journal::from_fd(empty).unwrap_err();
        assert!(
            err.to_string().contains("less than a journal's header"),
            "{err}"
        );
        let blank = sys::memfd_create(c"x").unwrap();
        sys::ftruncate(blank.as_fd(), 1 << 20).unwrap();
        let err = Journal::from_fd(blank).unwrap_err();
        assert!(
            matches!(&err, PassthroughError::InvalidJournal(m) if m.contains("magic")),
            "{err}"
        );

        let err = altered(&j, |j, _| j.header(H_VERSION).store(99, Ordering::Relaxed));
        assert!(err.to_string().contains("format version 99"), "{err}");
        j.header(H_VERSION)
            .store(JOURNAL_VERSION, Ordering::Relaxed);
        let err = altered(&j, |_, fd| {
            let size = sys::file_size(fd.as_fd()).unwrap();
            sys::ftruncate(fd.as_fd(), size as i64 + 4096).unwrap();
        });
        assert!(
            err.to_string().contains("4 nodes and 4 opens take"),
            "{err}"
        );
    }

    #[test]
    fn an_unpublished_slot_is_ignored_and_free() {
        let (dir, mut j) = journal(4, 4, 1);
        let (inode, key) = file(&dir, 0);
        j.record_node(NodeId(0x15), Some(key), &inode);
        // What a writer killed before publishing leaves: the fields and the
        // high-water mark, no state.
        let w = j.node(1);
        w[N_ID].store(0x25, Ordering::Relaxed);
        w[N_DEV].store(1, Ordering::Relaxed);
        j.header(H_NODES_USED).store(2, Ordering::Relaxed);
        j.open(0)[O_FH].store(3, Ordering::Relaxed);
        j.header(H_OPENS_USED).store(1, Ordering::Relaxed);
        let from = Journal::from_fd(sys::dup(j.fd()).unwrap()).unwrap();
        assert_eq!(from.nodes().len(), 1);
        assert_eq!(from.nodes()[0].id, 0x15);
        assert!(from.opens().is_empty());
        j.rebuild(&[0].into_iter().collect(), &HashSet::new());
        assert_eq!(j.nodes.take(), Some(1), "the half-written slot is free");
        assert_eq!(j.opens.take(), Some(0));
        assert_eq!(j.nodes.take(), Some(2));
    }

    fn req() -> Caller<'static> {
        Caller::detached(0, 0, 1)
    }

    fn lookup(fs: &PassthroughFs, parent: NodeId, name: &str) -> NodeId {
        fs.lookup(&req(), parent, OsStr::new(name)).unwrap().node
    }

    fn rdwr() -> OpenFlags {
        OpenFlags {
            flags: libc::O_RDWR as u32,
            kill_suidgid: false,
        }
    }

    fn recover(src: &Path, fs: PassthroughFs) -> (PassthroughFs, Recovery) {
        let fd = sys::dup(fs.journal.as_ref().unwrap().fd()).unwrap();
        // The dead server's descriptors go with it.
        drop(fs);
        PassthroughFs::recover(src, Options::default(), Journal::from_fd(fd).unwrap()).unwrap()
    }

    #[test]
    fn a_recovered_filesystem_serves_the_journaled_ids_and_handles() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("a"), b"alpha").unwrap();
        std::fs::write(src.path().join("gone"), b"").unwrap();
        std::fs::hard_link(src.path().join("a"), src.path().join("a2")).unwrap();
        std::fs::create_dir(src.path().join("d")).unwrap();
        for i in 0..100 {
            std::fs::write(src.path().join(format!("d/f{i}")), b"").unwrap();
        }
        let journal = Journal::create().unwrap();
        // Directory handles, which the journal records.
        let options = Options {
            cache_dirs: false,
            ..Options::default()
        };
        let fs = PassthroughFs::journaled(src.path(), options, journal).unwrap();
        assert!(matches!(fs.save(), Err(PassthroughError::Journaled)));
        let root = NodeId::ROOT;
        let a = lookup(&fs, root, "a");
        assert_eq!(lookup(&fs, root, "a2"), a);
        let d = lookup(&fs, root, "d");
        let f7 = lookup(&fs, d, "f7");
        let forgotten = lookup(&fs, d, "f8");
        fs.forget(forgotten, 1);
        let gone = lookup(&fs, root, "gone");
        let fa = fs.open(&req(), a, rdwr()).unwrap().fh;
        let fgone = fs.open(&req(), gone, rdwr()).unwrap().fh;
        std::fs::remove_file(src.path().join("gone")).unwrap();
        let fd = fs.opendir(&req(), d, 0).unwrap().fh;
        let (first, cookie) = list(&fs, fd, 0, 40);
        let closed = fs.open(&req(), a, rdwr()).unwrap().fh;
        fs.release(&req(), a, closed, 0, 0, 0).unwrap();
        assert_eq!(fs.journal.as_ref().unwrap().nodes().len(), 4);
        assert_eq!(fs.journal.as_ref().unwrap().opens().len(), 3);

        let (fs, got) = recover(src.path(), fs);
        assert_eq!(
            (
                got.nodes,
                got.nodes_lost,
                got.files,
                got.files_lost,
                got.dirs
            ),
            (3, 1, 1, 1, 1),
            "{got:?}"
        );
        // Its inode went with the dead server's last descriptor of it.
        assert_eq!(got.lost.get("gone from the source"), Some(&1), "{got:?}");
        assert_eq!(got.lost.get("opened on a node that was lost"), Some(&1));
        assert_eq!(fs.inode_count(), 4, "root, a, d, d/f7");
        for (node, name) in [(a, "a"), (a, "a2"), (d, "d")] {
            assert_eq!(lookup(&fs, root, name), node, "{name}");
        }
        assert_eq!(lookup(&fs, d, "f7"), f7);
        assert_eq!(
            fs.getattr(&req(), gone, None).unwrap_err(),
            fastfuse::Errno::ESTALE
        );
        let mut buf = [0u8; 8];
        let n = fs.read(&req(), a, fa, 0, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"alpha");
        assert_eq!(
            fs.read(&req(), gone, fgone, 0, &mut buf).unwrap_err(),
            fastfuse::Errno::EBADF
        );
        let (rest, _) = list(&fs, fd, cookie, usize::MAX);
        let mut all: Vec<Vec<u8>> = first.into_iter().chain(rest).collect();
        let count = all.len();
        all.sort();
        all.dedup();
        assert_eq!((count, all.len()), (102, 102), "100 files, . and ..");
        // New ids and fhs go on past every one handed out before.
        let f8 = lookup(&fs, d, "f8");
        assert!(![a, d, f7, gone, forgotten].contains(&f8));
        let fh = fs.open(&req(), f7, rdwr()).unwrap().fh;
        assert!(fh.0 > closed.0);
        // FORGET of a recovered node leaves it: its real count is unknown.
        fs.forget(f7, 1000);
        assert_eq!(lookup(&fs, d, "f7"), f7);

        // A second crash: what came back and what is new.
        let (fs, got) = recover(src.path(), fs);
        assert_eq!(
            (got.nodes, got.files, got.dirs, got.nodes_lost),
            (4, 2, 1, 0),
            "{got:?}"
        );
        let n = fs.read(&req(), a, fa, 0, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"alpha");
        assert_eq!(lookup(&fs, d, "f8"), f8);
    }

    #[test]
    fn a_journal_of_another_root_is_refused() {
        let src = tempfile::tempdir().unwrap();
        let fs =
            PassthroughFs::journaled(src.path(), Options::default(), Journal::create().unwrap())
                .unwrap();
        let other = tempfile::tempdir().unwrap();
        let fd = sys::dup(fs.journal.as_ref().unwrap().fd()).unwrap();
        let err = PassthroughFs::recover(
            other.path(),
            Options::default(),
            Journal::from_fd(fd).unwrap(),
        )
        .unwrap_err();
        assert!(matches!(err, PassthroughError::JournalRoot { .. }), "{err}");
        assert!(
            err.to_string().contains(&*other.path().to_string_lossy()),
            "{err}"
        );
        // Nor one that no filesystem used.
        let err =
            PassthroughFs::recover(src.path(), Options::default(), Journal::create().unwrap())
                .unwrap_err();
        assert!(err.to_string().contains("(device 0, inode 0)"), "{err}");
    }

    /// What journaling costs per new node and per create + release: run
    /// with `--ignored --nocapture`; printed, not asserted.
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn journaling_cost() {
        const N: usize = 4_000;
        crate::raise_nofile_limit().unwrap();
        // The first round warms the caches up.
        for journaled in [false, false, true, false, true, false, true] {
            let src = tempfile::tempdir().unwrap();
            for i in 0..N {
                std::fs::write(src.path().join(format!("f{i}")), b"").unwrap();
            }
            let fs = if journaled {
                PassthroughFs::journaled(src.path(), Options::default(), Journal::create().unwrap())
            } else {
                PassthroughFs::new(src.path(), Options::default())
            }
            .unwrap();
            let start = std::time::Instant::now();
            for i in 0..N {
                lookup(&fs, NodeId::ROOT, &format!("f{i}"));
            }
            let lookups = start.elapsed();
            let start = std::time::Instant::now();
            for i in 0..N {
                let name = format!("c{i}");
                let flags = OpenFlags {
                    flags: (libc::O_RDWR | libc::O_CREAT) as u32,
                    kill_suidgid: false,
                };
                let (entry, opened) = fs
                    .create(&req(), NodeId::ROOT, OsStr::new(&name), 0o644, 0, flags)
                    .unwrap();
                fs.release(&req(), entry.node, opened.fh, 0, 0, 0).unwrap();
            }
            let creates = start.elapsed();
            println!(
                "journaled {journaled:5}: LOOKUP of a new node {:6.2} µs, CREATE+RELEASE {:6.2} µs",
                lookups.as_secs_f64() * 1e6 / N as f64,
                creates.as_secs_f64() * 1e6 / N as f64,
            );
        }
    }
}
