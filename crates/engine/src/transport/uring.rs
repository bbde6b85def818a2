//! FUSE over io_uring (Linux 6.14+, `enable_uring` module parameter): one
//! queue per possible CPU. A ring entry is a 288-byte header buffer and a
//! payload buffer registered with FUSE_IO_URING_CMD_REGISTER; the kernel
//! fills them with a request and completes the command; the reply is built
//! in place and COMMIT_AND_FETCH hands it back and waits for the next
//! request.
//!
//! The kernel's fs/fuse/dev_uring.c is the authority for the rules followed
//! here: the ring must use 128-byte SQEs; REGISTER before the INIT reply gets
//! EAGAIN; requests go to the queue of the CPU the caller runs on, to the
//! queue's most recently freed entry, and the ring only takes over from
//! /dev/fuse once every queue has an entry registered; FORGET and INTERRUPT
//! still come through /dev/fuse.
//!
//! # Where requests are served
//!
//! A queue's entries are registered by a thread pinned to the queue's CPU.
//! A caller waiting for a short request (LOOKUP, UNLINK, GETATTR) sleeps
//! on that CPU, so serving it there costs no migration: that is where
//! io_uring beats /dev/fuse. Long requests ([`placement`]: large READs and
//! WRITEs, every WRITE of the writeback cache, fsync) are handed to the
//! queue's helper threads, which float.
//!
//! The kernel copies a request into an entry's buffers in the context of
//! the task that submitted the entry's last command. A helper therefore
//! commits the entries it served on a ring of its own: the next request in
//! that entry (the writeback flusher's next 1 MiB WRITE, typically) is
//! copied and served on whatever CPU the helper runs, not queued behind the
//! flusher on the pinned CPU. When a helper's entry then brings a short
//! request, the helper serves it and gives the entry back to the pinned
//! thread to commit. SETLKW, which may wait for another process's unlock
//! for as long as that process pleases, gets a thread of its own, so that
//! it never holds up the unlock.
//!
//! Entries move between the queue's threads through inboxes, each an
//! eventfd the owner's ring reads. A thread holds an entry exactly while
//! the entry's command is in its ring or it is serving the entry's request.
//!
//! # Handing the queues over
//!
//! Entries live in an [`Arena`], a memfd mapped at the same address in
//! every process that serves the connection. A pause drains the queues
//! ([`UringQueue::drain`]): every entry comes back from the kernel and is
//! kept with its request unserved or its reply uncommitted, and each
//! slot's record says which. Whoever runs the queues next (the successor
//! of a live upgrade, which maps the same memfd, or this process if the
//! upgrade fails) serves or commits each entry from its own rings; the
//! kernel finds an entry by its request's unique, not by the ring that
//! registered it, so the entries become the new rings'.
//!
//! Submitting a command that names buffers is `unsafe` (the buffers must
//! outlive it), so this module is part of the syscall boundary.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fastfuse_abi::{self as abi, Opcode};
use io_uring::{opcode, squeue, types, IoUring};
use zerocopy::{FromBytes, IntoBytes};

use super::uring_arena::{Arena, ArenaSlot, SlotState};
use super::uring_wake::{leave_sched_idle, LocalWake, Member};
use super::Server;
use crate::deferred::ReplyTo;
use crate::filesystem::Filesystem;
use crate::reply::{self, Outcome};
use crate::request::Body;
use crate::stats::Shard;
use crate::sys;

/// READs and WRITEs at least this large are long requests: copying them
/// takes longer than handing them over (see [`placement`]).
const LONG_MIN_BYTES: usize = 64 * 1024;

/// Helper threads per queue.
const HELPERS_PER_QUEUE: usize = 2;

/// The completion tag of the eventfd read that wakes a ring when its inbox
/// has entries.
const WAKE: u64 = u64::MAX;

/// One registered buffer pair, a slot of the queue's [`Arena`]. The
/// kernel keeps its addresses; the struct itself may move from thread to
/// thread while they stay put.
struct RingEntry {
    /// The request header (the kernel writes a request's header and
    /// arguments there, the reply header goes in its place) and the payload
    /// buffer: the kernel copies every request's payload into it and a
    /// WRITE's data is copied out of it.
    slot: ArenaSlot,
    /// The iovecs REGISTER points at, as `struct iovec[2]` (base, len,
    /// base, len): header, payload. Kept as integers so the entry stays
    /// `Send`.
    iov: Box<[usize; 4]>,
}

impl RingEntry {
    /// Entry `idx` of queue `qid`, in its slot of `arena` (whose contents
    /// it keeps: an adopted slot may hold a request).
    fn new(arena: &Arc<Arena>, qid: u16, idx: usize, lock: bool) -> io::Result<RingEntry> {
        let mut slot = arena.slot(qid, idx)?;
        slot.prepare(lock);
        let (header, header_len) = slot.header_iov();
        let (payload, payload_len) = slot.payload_iov();
        Ok(RingEntry {
            slot,
            iov: Box::new([header, header_len, payload, payload_len]),
        })
    }

    fn header(&self) -> &abi::UringReqHeader {
        self.slot.header()
    }

    fn opcode(&self) -> u32 {
        self.in_header().opcode
    }

    /// The header of the request the kernel put in the entry (until the
    /// reply overwrites it).
    fn in_header(&self) -> abi::InHeader {
        abi::InHeader::read_from_prefix(&self.header().in_out)
            .map(|(h, _)| h)
            .unwrap_or_default()
    }

    fn commit_id(&self) -> u64 {
        self.header().ring_ent_in_out.commit_id
    }

    /// Puts a reply in place: its header where the request's was, its
    /// payload at the start of the payload buffer (EIO if it does not fit,
    /// which would be an engine bug: the buffer holds max_write bytes).
    fn set_reply(&mut self, out: &abi::OutHeader, payload: &[u8]) {
        let buffer = self.slot.payload_mut();
        let (out, payload) = if payload.len() <= buffer.len() {
            (*out, payload)
        } else {
            (
                reply::out_header(out.unique, Err(crate::Errno::EIO)),
                &[][..],
            )
        };
        buffer[..payload.len()].copy_from_slice(payload);
        self.put_reply_header(&out);
    }

    /// Puts the reply header in place of the request's, and the payload
    /// size it announces, for a payload already in the payload buffer.
    fn put_reply_header(&mut self, out: &abi::OutHeader) {
        let header = self.slot.header_mut();
        header.in_out[..size_of::<abi::OutHeader>()].copy_from_slice(out.as_bytes());
        header.ring_ent_in_out.payload_sz = out.len - size_of::<abi::OutHeader>() as u32;
    }

    fn placement(&self) -> Placement {
        let header = self.header();
        placement(
            self.opcode(),
            &header.op_in,
            header.ring_ent_in_out.payload_sz as usize,
        )
    }
}

/// Where a request is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Short: on the pinned thread of the caller's CPU.
    Pinned,
    /// Long: on a floating helper.
    Helper,
    /// On a thread of its own: it may wait for as long as another process
    /// pleases (SETLKW), so it must not occupy a thread that serves others.
    OwnThread,
}

/// Decides where a request is served from its opcode, its argument and the
/// size of its payload.
fn placement(opcode: u32, op_in: &[u8], payload: usize) -> Placement {
    match Opcode::from_raw(opcode) {
        Some(Opcode::Setlkw) => Placement::OwnThread,
        // Long WRITEs go to helpers, those of the writeback cache too, but
        // not the short ones: the flusher that sends a stream of them
        // waits for none (measured: random 4k read/write 0.79x of
        // /dev/fuse with them all pinned, 0.94x with helpers), while a
        // short one is most often a close, fsync or utimes writing a small
        // file back, whose caller waits for it on this CPU; a helper there
        // costs it two cross-CPU wake-ups (untar of 8,792 entries, tar on
        // one CPU: 6,400-7,400 files/s through helpers, 8,500-11,200 here).
        Some(Opcode::Write) if payload >= LONG_MIN_BYTES => Placement::Helper,
        Some(Opcode::Write) => Placement::Pinned,
        Some(Opcode::Read) => match abi::ReadIn::read_from_prefix(op_in) {
            Ok((arg, _)) if arg.size as usize >= LONG_MIN_BYTES => Placement::Helper,
            _ => Placement::Pinned,
        },
        // They wait for the disk under the source filesystem.
        Some(
            Opcode::Fsync
            | Opcode::Fsyncdir
            | Opcode::Fallocate
            | Opcode::CopyFileRange
            | Opcode::CopyFileRange64,
        ) => Placement::Helper,
        _ => Placement::Pinned,
    }
}

/// An entry handed from one of the queue's threads to another.
struct Handoff {
    idx: usize,
    entry: RingEntry,
    then: Then,
}

/// What the receiver of a [`Handoff`] does with it.
#[derive(Debug, Clone, Copy)]
enum Then {
    /// Serve the request in it.
    Serve,
    /// The reply is in place: commit it.
    Commit(u64),
    /// A new entry: register it (it stands in for one whose request was
    /// deferred).
    Register,
}

impl Then {
    /// What a slot's record says of an entry kept with this to do.
    fn kept(self) -> SlotState {
        match self {
            Then::Serve => SlotState::Serve,
            Then::Commit(id) => SlotState::Commit(id),
            Then::Register => SlotState::Register,
        }
    }

    /// What to do with an entry whose slot's record says `state` (None:
    /// the slot is unused).
    fn from_kept(state: SlotState) -> Option<Then> {
        match state {
            SlotState::Unused => None,
            SlotState::Register => Some(Then::Register),
            SlotState::Serve => Some(Then::Serve),
            SlotState::Commit(id) => Some(Then::Commit(id)),
        }
    }
}

/// Entries handed to one thread, and the eventfd that wakes its ring.
struct Inbox {
    items: Mutex<Vec<Handoff>>,
    wake: OwnedFd,
}

impl Inbox {
    fn new() -> io::Result<Inbox> {
        Ok(Inbox {
            items: Mutex::new(Vec::new()),
            wake: sys::eventfd()?,
        })
    }

    fn send(&self, handoff: Handoff) {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handoff);
        self.signal();
    }

    fn signal(&self) {
        if let Err(e) = sys::eventfd_signal(self.wake.as_fd()) {
            tracing::error!("cannot wake an io_uring thread: {e}");
        }
    }

    fn take(&self) -> Vec<Handoff> {
        std::mem::take(&mut *self.items.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The entries of one queue whose request the filesystem deferred, shared
/// with the [`Deferred`](crate::Deferred) handles that will answer them.
///
/// A deferred request keeps its entry (the reply must be committed on it)
/// for as long as the filesystem pleases, so the queue registers a spare
/// entry in its place: the queue always has its depth of entries serving,
/// and grows by the largest number of requests deferred at once.
pub(crate) struct Parking {
    qid: u16,
    depth: usize,
    /// By entry index: a parked entry, or an answer that arrived before
    /// the serving thread had parked its entry.
    parked: Mutex<HashMap<usize, Parked>>,
    /// Entries in circulation: registered and not ended, being served, or
    /// being handed over. Parked entries are not: the queue stops at zero
    /// even while the filesystem still holds deferred requests.
    live: AtomicUsize,
    /// Set once `live` reached zero: the queue's threads stop, and stay
    /// stopped even if a late answer puts an entry back.
    stopped: AtomicBool,
    /// Entries the queue has (parked or not), and how many are parked.
    total: AtomicUsize,
    parked_now: AtomicUsize,
    /// The next index for a spare entry.
    next_idx: AtomicUsize,
    /// Where spare entries live, and whether their buffers are locked.
    arena: Arc<Arena>,
    lock: bool,
    /// The pinned thread's inbox: answered entries are committed there.
    pinned: Arc<Inbox>,
}

enum Parked {
    Entry(RingEntry),
    /// (unique, reply header, payload).
    Answer(u64, abi::OutHeader, Vec<u8>),
}

impl std::fmt::Debug for Parking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parking")
            .field("qid", &self.qid)
            .field("parked", &self.parked_now.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Parking {
    /// Answers the request deferred in entry `idx`: the entry goes to the
    /// pinned thread to be committed, or, if it is not parked yet, the
    /// answer waits for it.
    pub(crate) fn answer(&self, idx: usize, out: &abi::OutHeader, payload: &[u8]) {
        let mut parked = lock(&self.parked);
        match parked.remove(&idx) {
            Some(Parked::Entry(mut entry)) if entry.in_header().unique == out.unique => {
                drop(parked);
                let commit_id = entry.commit_id();
                entry.set_reply(out, payload);
                self.parked_now.fetch_sub(1, Ordering::AcqRel);
                self.live.fetch_add(1, Ordering::AcqRel);
                self.pinned.send(Handoff {
                    idx,
                    entry,
                    then: Then::Commit(commit_id),
                });
            }
            Some(other) => {
                // Another request's entry (this answer is stale: its
                // request was answered already, after a panic): keep it.
                parked.insert(idx, other);
                tracing::warn!(
                    qid = self.qid,
                    unique = out.unique,
                    "a deferred answer for a request no longer parked; dropped"
                );
            }
            None => {
                parked.insert(idx, Parked::Answer(out.unique, *out, payload.to_vec()));
            }
        }
    }

    /// Parks entry `idx`, whose request was deferred and counted by
    /// [`spare`](Parking::spare). Returns it with its reply in place, and
    /// its commit id, when the answer came first; and whether no entry is
    /// left in circulation (the queue may stop).
    fn park(&self, idx: usize, mut entry: RingEntry) -> (Option<(RingEntry, u64)>, bool) {
        let unique = entry.in_header().unique;
        let mut parked = lock(&self.parked);
        match parked.remove(&idx) {
            Some(Parked::Answer(u, out, payload)) if u == unique => {
                drop(parked);
                self.parked_now.fetch_sub(1, Ordering::AcqRel);
                let commit_id = entry.commit_id();
                entry.set_reply(&out, &payload);
                (Some((entry, commit_id)), false)
            }
            _ => {
                parked.insert(idx, Parked::Entry(entry));
                (None, self.leave_circulation())
            }
        }
    }

    /// Takes one entry out of circulation; true when it was the last one,
    /// which stops the queue.
    fn leave_circulation(&self) -> bool {
        let last = self.live.fetch_sub(1, Ordering::AcqRel) == 1;
        if last {
            self.stopped.store(true, Ordering::Release);
        }
        last
    }

    /// Counts one more parked entry (before it is parked, so that entries
    /// deferred at once on several threads each see the others) and makes
    /// a spare if fewer than the queue's depth are left serving. A spare
    /// too many is harmless; one too few could leave requests waiting.
    fn spare(&self) -> io::Result<Option<(usize, RingEntry)>> {
        let parked = self.parked_now.fetch_add(1, Ordering::AcqRel) + 1;
        let serving = self.total.load(Ordering::Acquire).saturating_sub(parked);
        if serving >= self.depth {
            return Ok(None);
        }
        let idx = self.next_idx.fetch_add(1, Ordering::Relaxed);
        let entry = RingEntry::new(&self.arena, self.qid, idx, self.lock)?;
        self.total.fetch_add(1, Ordering::AcqRel);
        self.live.fetch_add(1, Ordering::AcqRel);
        Ok(Some((idx, entry)))
    }
}

/// Makes the kernel send queue `qid` a request, after spares were
/// registered or an entry was parked.
///
/// A REGISTER only puts its entry on the queue's free list (dev_uring.c,
/// fuse_uring_do_register): requests that queued while no entry was free
/// wait for the next commit on the queue, which may never come while the
/// other entries are parked. A new request takes a free entry at once, and
/// committing it fetches the next waiting one. So a thread pinned to the
/// queue's CPU (the kernel picks the queue by the caller's CPU) stats the
/// mount's root with `AT_STATX_FORCE_SYNC`, one GETATTR. Each kick is a
/// thread of its own: a kick whose GETATTR has to wait in the queue must
/// not hold up the next one, which may find a free entry. It cannot be the
/// queue's pinned thread, which serves that GETATTR.
fn kick(mountpoint: Option<&PathBuf>, qid: u16) {
    let Some(mountpoint) = mountpoint.cloned() else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name(format!("ff-uring{qid}k"))
        .stack_size(64 * 1024)
        .spawn(move || {
            leave_sched_idle(0);
            if let Err(e) = sys::CpuSet::one(qid as usize).apply() {
                tracing::debug!(qid, "cannot pin a queue kick: {e}");
            }
            if let Err(e) = sys::statx_force_sync(&mountpoint) {
                tracing::debug!(qid, "kicking the queue: {e}");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(qid, "no thread to kick the queue with: {e}");
    }
}

/// A pause's drain of one queue ([`UringQueue::drain`]). Every entry
/// comes back from the kernel and stays in userspace, its request not
/// served or its reply not committed, so that whoever runs the queue next
/// (a successor process, or this one if the upgrade fails) carries on
/// with it. No entry may stay in the kernel: a ring that closes with an
/// entry waiting there may be handed a request in between, which the
/// kernel then ends without copying (dev_uring.c, `IO_URING_F_TASK_DEAD`)
/// and leaves waiting for a commit no one can make.
struct Drain {
    /// Set while a pause drains: threads keep entries instead of serving
    /// or committing them.
    on: AtomicBool,
    /// Entries whose command is in the kernel (shared with the queue's
    /// rings, which count them).
    armed: Arc<AtomicUsize>,
    /// Kept entries: index and what the next run does with it.
    held: Mutex<Vec<(usize, SlotState)>>,
    /// Set once every entry is held or parked: the threads stop.
    done: AtomicBool,
    /// Signalled at each held entry, for the pause that waits.
    progress: OwnedFd,
}

impl Drain {
    fn new() -> io::Result<Drain> {
        Ok(Drain {
            on: AtomicBool::new(false),
            armed: Arc::new(AtomicUsize::new(0)),
            held: Mutex::new(Vec::new()),
            done: AtomicBool::new(false),
            progress: sys::eventfd()?,
        })
    }

    fn draining(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// Keeps entry `idx` for the next run; true when that made the drain
    /// complete.
    fn hold(&self, idx: usize, state: SlotState, parking: &Parking) -> bool {
        let mut held = lock(&self.held);
        held.push((idx, state));
        let accounted = held.len() + parking.parked_now.load(Ordering::Acquire);
        drop(held);
        let _ = sys::eventfd_signal(self.progress.as_fd());
        if accounted >= parking.total.load(Ordering::Acquire) {
            self.done.store(true, Ordering::Release);
            return true;
        }
        false
    }
}

/// What the threads of one queue share.
struct QueueShared<'s, F> {
    qid: u16,
    dev: &'s OwnedFd,
    /// The drain a pause may start.
    drain: &'s Drain,
    server: &'s Server<F>,
    shard: Arc<Shard>,
    /// Deferred requests' entries, and the count of entries in circulation.
    parking: Arc<Parking>,
    /// Set when a thread of the queue failed: the others stop too.
    failed: AtomicBool,
    /// One per thread: the pinned thread's first, then the helpers'.
    inboxes: Vec<Arc<Inbox>>,
    /// Round-robin choice of helper.
    next_helper: AtomicUsize,
    /// The CPUs helpers may run on (all those of the process).
    floating: Option<sys::CpuSet>,
    /// Where the filesystem is mounted, for [`kick`].
    mountpoint: Option<PathBuf>,
    /// The pinned thread's place under the local-wake guard.
    wake: Option<Member>,
}

impl<F> QueueShared<'_, F> {
    fn wake_all(&self) {
        for inbox in &self.inboxes {
            inbox.signal();
        }
    }

    /// Marks the queue failed and wakes its threads, which then stop.
    fn fail(&self) {
        self.failed.store(true, Ordering::Release);
        self.wake_all();
    }

    fn stopping(&self) -> bool {
        self.parking.stopped.load(Ordering::Acquire)
            || self.failed.load(Ordering::Acquire)
            || self.drain.done.load(Ordering::Acquire)
    }

    /// Keeps `entry` for the next run (see [`Drain`]), and stops the
    /// queue's threads once every entry is kept.
    fn hold(&self, idx: usize, entry: RingEntry, state: SlotState) {
        // The entry is a view of its slot; the slot's contents stay.
        drop(entry);
        if self.drain.hold(idx, state, &self.parking) {
            self.wake_all();
        }
    }

    /// Parks entry `idx`, whose request was deferred, and has a spare
    /// registered in its place. The entry comes back, to be committed, if
    /// its answer is already there.
    fn park(&self, idx: usize, entry: RingEntry) -> Option<(RingEntry, u64)> {
        // The spare first: `live` counts it before the parked entry leaves
        // circulation, so that it never touches zero in between (a thread
        // that saw zero would stop serving).
        // The pinned thread kicks the queue (see `kick`) once it has
        // registered the spare; without one, the kick is made now.
        match self.parking.spare() {
            Ok(Some((spare, entry))) => self.inboxes[0].send(Handoff {
                idx: spare,
                entry,
                then: Then::Register,
            }),
            no_spare => {
                if let Err(e) = no_spare {
                    tracing::warn!(
                        qid = self.qid,
                        "no spare io_uring entry for a deferred request ({e}); the queue has one fewer"
                    );
                }
                kick(self.mountpoint.as_ref(), self.qid);
            }
        }
        let (back, idle) = self.parking.park(idx, entry);
        if idle {
            self.wake_all();
        }
        back
    }

    /// Lets the calling thread, spawned by the pinned one, float, and
    /// run SCHED_OTHER whatever the pinned thread runs.
    fn float(&self) {
        if let Some(Err(e)) = self.floating.as_ref().map(sys::CpuSet::apply) {
            tracing::debug!(qid = self.qid, "helper stays on the queue's CPU: {e}");
        }
        leave_sched_idle(0);
    }

    fn pick_helper(&self) -> usize {
        1 + self.next_helper.fetch_add(1, Ordering::Relaxed) % (self.inboxes.len() - 1)
    }
}

/// A ring and what the thread serving it holds.
struct RingThread {
    // Declared first so that it is dropped first: closing the ring cancels
    // the commands before the buffers they point to are freed.
    ring: IoUring<squeue::Entry128>,
    /// The entries whose command is in this ring or whose request this
    /// thread serves, by index in the queue.
    slots: Vec<Option<RingEntry>>,
    /// Where the ring reads the inbox eventfd's counter into.
    wake_buf: Box<[u8; 8]>,
    /// Requests other than WRITE are decoded from a copy of their payload
    /// (names, small values), so that the reply can be written straight
    /// into the entry's payload buffer.
    scratch: Vec<u8>,
    /// Completions taken from the ring in one pass: (tag, result).
    ready: Vec<(u64, i32)>,
    /// By entry index: whether the entry's command is in the kernel, which
    /// may then write a request into its buffers.
    in_kernel: Vec<bool>,
    /// The queue's count of entries in the kernel ([`Drain::armed`]).
    armed: Arc<AtomicUsize>,
}

impl RingThread {
    /// Makes room for entry `idx` (spare entries get new indices).
    fn slot(&mut self, idx: usize) -> &mut Option<RingEntry> {
        if idx >= self.slots.len() {
            self.slots.resize_with(idx + 1, || None);
            self.in_kernel.resize(idx + 1, false);
        }
        &mut self.slots[idx]
    }
}

impl Drop for RingThread {
    fn drop(&mut self) {
        // An entry whose command is still in the kernel may yet be written
        // into: closing the ring cancels its command only asynchronously.
        // Such entries are leaked, and with them the arena's mapping (only
        // a queue that failed has any; a queue that stopped cleanly or
        // drained saw every command end).
        let mut leaked = 0;
        for (slot, &live) in self.slots.iter_mut().zip(&self.in_kernel) {
            if live {
                if let Some(entry) = slot.take() {
                    std::mem::forget(entry);
                    leaked += 1;
                }
            }
        }
        if leaked > 0 {
            tracing::warn!(
                leaked,
                "io_uring entries whose command may still be in the kernel are left mapped"
            );
        }
    }
}

/// One queue: what outlives a run of its threads. A pause's drain ends a
/// run; a failed upgrade, or a successor process that adopted the arena,
/// starts the next from what the drain left in the slots' records.
pub(crate) struct UringQueue {
    qid: u16,
    dev: Arc<OwnedFd>,
    /// Where the queue's entries live.
    arena: Arc<Arena>,
    /// Whether entry buffers are locked in memory.
    lock: bool,
    /// Deferred requests' entries, and the count of entries in circulation.
    parking: Arc<Parking>,
    /// One per thread: the pinned thread's first, then the helpers'.
    inboxes: Vec<Arc<Inbox>>,
    drain: Drain,
    /// What the next run starts with.
    next: Mutex<Option<NextRun>>,
    /// Where the filesystem is mounted and the mount's unique id, for
    /// [`kick`] (a path, not a descriptor: one would keep the mount busy).
    mountpoint: Mutex<Option<(PathBuf, u64)>>,
    /// The guard of the connection's pinned threads, shared by its
    /// queues, when they run SCHED_IDLE (see [`super::uring_wake`]).
    local_wake: Option<Arc<LocalWake>>,
}

/// What the next run of a queue starts from.
struct NextRun {
    /// The pinned thread's ring first, holding the entries of `start`, then
    /// the helpers'.
    rings: Vec<RingThread>,
    /// What the pinned thread does first, by entry.
    start: Vec<(usize, Then)>,
    /// Whether to kick the queue once started (an adopted queue, whose
    /// requests may have queued while no entry was free).
    kick: bool,
}

/// Entries a queue may have beyond its depth: spares for deferred
/// requests (lock waits), one per request deferred at once. A queue with
/// more makes no more spares and serves with fewer entries (see
/// [`Parking::spare`]). The arena reserves address space for all of them
/// (4 GiB a queue with 1 MiB payloads) but only spares made take memory.
const SPARES_PER_QUEUE: usize = 4096;

/// How long a drain waits for its kicks' requests before kicking again.
const REFEED: Duration = Duration::from_millis(5);

/// How many queues the kernel expects: one per possible CPU.
pub(crate) fn possible_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| parse_cpu_list(s.trim()))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The highest CPU number in a list like "0-3,8" plus one.
fn parse_cpu_list(list: &str) -> Option<usize> {
    Some(parse_cpu_set(list)?.into_iter().max()? + 1)
}

/// The payload buffer size the kernel requires (dev_uring.c's
/// `max_payload_sz`).
pub(crate) fn payload_size(max_write: u32, max_pages: u16) -> usize {
    (abi::FUSE_MIN_READ_BUFFER)
        .max(max_write as usize)
        .max(max_pages as usize * crate::init::PAGE_SIZE)
}

fn cmd_bytes(qid: u16, commit_id: u64) -> [u8; 80] {
    let req = abi::UringCmdReq {
        flags: 0,
        commit_id,
        qid,
        padding: [0; 6],
    };
    let mut cmd = [0u8; 80];
    cmd[..size_of::<abi::UringCmdReq>()].copy_from_slice(req.as_bytes());
    cmd
}

/// Serves the request the kernel put in `e` and builds the reply in place.
/// `scratch` receives a copy of the payload of requests other than WRITE;
/// `to` is where a deferred reply goes. Returns the commit id, or None when
/// the filesystem deferred the request.
fn serve_entry<F: Filesystem>(
    server: &Server<F>,
    shard: &Shard,
    e: &mut RingEntry,
    scratch: &mut Vec<u8>,
    to: ReplyTo<'_>,
) -> Option<u64> {
    let commit_id = e.commit_id();
    let header = e.in_header();
    let (ring_header, payload) = e.slot.split();
    let size = (ring_header.ring_ent_in_out.payload_sz as usize).min(payload.len());
    let outcome = if header.opcode == Opcode::Write as u32 {
        // WRITE data is taken straight from the payload buffer; the
        // 8-byte reply goes through a small buffer and is copied after.
        let mut small = [0u8; 64];
        let body = Body::Split {
            op: &ring_header.op_in,
            payload: &payload[..size],
        };
        let outcome = server.serve_request(shard, &header, body, &mut small, to);
        if let Outcome::Reply(Ok(n)) = outcome {
            payload[..n].copy_from_slice(&small[..n]);
        }
        outcome
    } else {
        if scratch.len() < size {
            scratch.resize(size, 0);
        }
        scratch[..size].copy_from_slice(&payload[..size]);
        let body = Body::Split {
            op: &ring_header.op_in,
            payload: &scratch[..size],
        };
        // READ data lands directly in the payload buffer.
        server.serve_request(shard, &header, body, payload, to)
    };
    let result = match outcome {
        Outcome::Reply(r) => r,
        Outcome::Deferred => return None,
        // Nothing that takes no reply should come through the ring; the
        // entry must be committed all the same to get the next request.
        Outcome::None => Ok(0),
    };
    e.put_reply_header(&reply::out_header(header.unique, result));
    Some(commit_id)
}

impl RingThread {
    fn new(entries: usize, armed: Arc<AtomicUsize>) -> io::Result<RingThread> {
        // Not SINGLE_ISSUER: rings are created here, before INIT is
        // answered, and used by the threads that serve them. One slot more
        // than the entries, for the inbox read.
        let ring = IoUring::<squeue::Entry128>::builder()
            .build((entries as u32 + 1).next_power_of_two().max(2))?;
        Ok(RingThread {
            ring,
            slots: (0..entries).map(|_| None).collect(),
            wake_buf: Box::new([0; 8]),
            scratch: Vec::new(),
            ready: Vec::with_capacity(entries + 1),
            in_kernel: vec![false; entries],
            armed,
        })
    }

    fn push_register(&mut self, dev: &OwnedFd, qid: u16, idx: usize) -> io::Result<()> {
        let Some(e) = &self.slots[idx] else {
            return Err(io::Error::other(
                "registering an entry this thread does not hold",
            ));
        };
        let sqe =
            opcode::UringCmd80::new(types::Fd(dev.as_raw_fd()), abi::FUSE_IO_URING_CMD_REGISTER)
                .cmd(cmd_bytes(qid, 0))
                .addr(Some(e.iov.as_ptr() as u64))
                .build()
                .user_data(idx as u64);
        let sqe = sys::uring_cmd_with_len(sqe, 2);
        // SAFETY: the iovecs are a heap allocation of an entry in
        // self.slots, and the buffers they name its arena slot, mapped for
        // as long as the entry (which holds the arena) lives; self.slots
        // holds it until its command has ended (in_kernel is set below,
        // and an entry whose command may still be in the kernel is never
        // dropped: see Drop).
        unsafe { sys::uring_push(&mut self.ring, &sqe) }?;
        self.in_kernel[idx] = true;
        self.armed.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    fn push_commit(
        &mut self,
        dev: &OwnedFd,
        qid: u16,
        idx: usize,
        commit_id: u64,
    ) -> io::Result<()> {
        let sqe = opcode::UringCmd80::new(
            types::Fd(dev.as_raw_fd()),
            abi::FUSE_IO_URING_CMD_COMMIT_AND_FETCH,
        )
        .cmd(cmd_bytes(qid, commit_id))
        .build()
        .user_data(idx as u64);
        // SAFETY: the command names no buffer; the kernel writes the next
        // request into the buffers registered for the entry, which this
        // thread holds in self.slots until the command ends (see
        // push_register).
        unsafe { sys::uring_push(&mut self.ring, &sqe) }?;
        self.in_kernel[idx] = true;
        self.armed.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    fn push_wake_read(&mut self, inbox: &Inbox) -> io::Result<()> {
        let sqe = opcode::Read::new(
            types::Fd(inbox.wake.as_raw_fd()),
            self.wake_buf.as_mut_ptr(),
            8,
        )
        .build()
        .user_data(WAKE)
        .into();
        // SAFETY: wake_buf is a heap allocation dropped after the ring.
        unsafe { sys::uring_push(&mut self.ring, &sqe) }
    }

    /// Serves thread `me` of a queue (0: the pinned one) until every entry
    /// of the queue has ended, a thread of it failed or a drain is done.
    /// `start`: what to do first with entries this thread holds; `kick`:
    /// wake the queue once they are submitted (an adopted queue whose
    /// requests queued while no entry was free).
    fn run<'s, 'e, F: Filesystem>(
        &mut self,
        q: &'e QueueShared<'e, F>,
        me: usize,
        s: ThreadScope<'s, 'e>,
        start: Vec<(usize, Then)>,
        kick_after: bool,
    ) -> io::Result<()> {
        (|| {
            for (idx, then) in start {
                self.act(q, me, idx, then, s)?;
            }
            if kick_after {
                self.ring.submit()?;
                kick(q.mountpoint.as_ref(), q.qid);
            }
            self.serve(q, me, s)
        })()
        .inspect_err(|_| q.fail())
    }

    /// Does `then` with entry `idx`, which this thread holds; while a
    /// drain is on, keeps the entry for the next run instead. True when
    /// it registered the entry.
    fn act<'s, 'e, F: Filesystem>(
        &mut self,
        q: &'e QueueShared<'e, F>,
        me: usize,
        idx: usize,
        then: Then,
        s: ThreadScope<'s, 'e>,
    ) -> io::Result<bool> {
        if q.drain.draining() {
            let Some(entry) = self.slots.get_mut(idx).and_then(Option::take) else {
                return Err(io::Error::other(
                    "keeping an entry this thread does not hold",
                ));
            };
            q.hold(idx, entry, then.kept());
            return Ok(false);
        }
        match then {
            Then::Serve => self.handle(q, me, idx, s)?,
            Then::Commit(id) => self.push_commit(q.dev, q.qid, idx, id)?,
            Then::Register => {
                self.push_register(q.dev, q.qid, idx)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn serve<'s, 'e, F: Filesystem>(
        &mut self,
        q: &'e QueueShared<'e, F>,
        me: usize,
        s: ThreadScope<'s, 'e>,
    ) -> io::Result<()> {
        self.push_wake_read(&q.inboxes[me])?;
        let wake = q.wake.as_ref().filter(|_| me == 0);
        while !q.stopping() {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            if let Some(w) = wake {
                w.woke();
            }
            let mut ready = std::mem::take(&mut self.ready);
            ready.extend(
                self.ring
                    .completion()
                    .map(|cqe| (cqe.user_data(), cqe.result())),
            );
            for &(tag, res) in &ready {
                if tag == WAKE {
                    if res < 0 && res != -libc::EINTR {
                        return Err(io::Error::from_raw_os_error(-res));
                    }
                    let mut spares = 0;
                    for h in q.inboxes[me].take() {
                        *self.slot(h.idx) = Some(h.entry);
                        if self.act(q, me, h.idx, h.then, s)? {
                            spares += 1;
                        }
                    }
                    self.push_wake_read(&q.inboxes[me])?;
                    if spares > 0 {
                        // Registered now, then the queue is woken up.
                        self.ring.submit()?;
                        for _ in 0..spares {
                            kick(q.mountpoint.as_ref(), q.qid);
                        }
                    }
                } else {
                    // The entry's command has ended, one way or the other.
                    let idx = tag as usize;
                    self.in_kernel[idx] = false;
                    self.armed.fetch_sub(1, Ordering::AcqRel);
                    if res == 0 {
                        self.act(q, me, idx, Then::Serve, s)?;
                    } else if res == -libc::EAGAIN {
                        // REGISTER raced the INIT reply: try again shortly.
                        std::thread::sleep(Duration::from_millis(1));
                        self.act(q, me, idx, Then::Register, s)?;
                    } else {
                        // ENOTCONN/ECONNABORTED at unmount, or a refused
                        // REGISTER (the kernel then falls back to /dev/fuse).
                        if !matches!(-res, libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED) {
                            tracing::warn!(
                                qid = q.qid,
                                "io_uring entry ended: {}",
                                io::Error::from_raw_os_error(-res)
                            );
                        }
                        // The kernel is done with the entry's buffers.
                        self.slots[idx] = None;
                        if q.parking.leave_circulation() {
                            q.wake_all();
                        }
                    }
                }
            }
            ready.clear();
            self.ready = ready;
        }
        Ok(())
    }

    /// Serves the request in entry `idx` here, or hands the entry to the
    /// thread where it belongs.
    fn handle<'s, 'e, F: Filesystem>(
        &mut self,
        q: &'e QueueShared<'e, F>,
        me: usize,
        idx: usize,
        s: ThreadScope<'s, 'e>,
    ) -> io::Result<()> {
        let Some(entry) = self.slots[idx].as_mut() else {
            return Err(io::Error::other(
                "a request arrived in an entry this thread does not hold",
            ));
        };
        let pinned = me == 0;
        match entry.placement() {
            Placement::Helper if pinned => {
                let entry = self.slots[idx].take().expect("checked above");
                q.inboxes[q.pick_helper()].send(Handoff {
                    idx,
                    entry,
                    then: Then::Serve,
                });
                Ok(())
            }
            Placement::OwnThread => {
                let mut entry = self.slots[idx].take().expect("checked above");
                std::thread::Builder::new()
                    .name(format!("ff-uring{}lk", q.qid))
                    .spawn_scoped(s, move || {
                        q.float();
                        let to = ReplyTo::Uring(&q.parking, idx);
                        let served =
                            serve_entry(q.server, &q.shard, &mut entry, &mut Vec::new(), to);
                        let commit = match served {
                            Some(commit_id) => Some((entry, commit_id)),
                            None => q.park(idx, entry),
                        };
                        if let Some((entry, commit_id)) = commit {
                            q.inboxes[0].send(Handoff {
                                idx,
                                entry,
                                then: Then::Commit(commit_id),
                            });
                        }
                    })?;
                Ok(())
            }
            placement => {
                let to = ReplyTo::Uring(&q.parking, idx);
                let Some(commit_id) = serve_entry(q.server, &q.shard, entry, &mut self.scratch, to)
                else {
                    let entry = self.slots[idx].take().expect("checked above");
                    return match q.park(idx, entry) {
                        Some((entry, commit_id)) => {
                            *self.slot(idx) = Some(entry);
                            self.act(q, me, idx, Then::Commit(commit_id), s).map(drop)
                        }
                        None => Ok(()),
                    };
                };
                if pinned || placement == Placement::Helper {
                    self.act(q, me, idx, Then::Commit(commit_id), s).map(drop)
                } else {
                    // A short request reached a helper's entry: the entry
                    // goes back to the pinned thread, where the next short
                    // one is best served.
                    let entry = self.slots[idx].take().expect("checked above");
                    q.inboxes[0].send(Handoff {
                        idx,
                        entry,
                        then: Then::Commit(commit_id),
                    });
                    Ok(())
                }
            }
        }
    }
}

/// The scope helper threads and SETLKW threads are spawned in.
type ThreadScope<'s, 'e> = &'s std::thread::Scope<'s, 'e>;

impl UringQueue {
    /// The queues of a new connection, one per possible CPU, with `depth`
    /// entries each whose payload buffers hold `payload` bytes, in a new
    /// arena. Called before INIT is answered, so that a machine that cannot
    /// set up rings falls back to /dev/fuse instead of leaving the kernel
    /// waiting for a ring.
    pub(crate) fn new_set(
        depth: usize,
        payload: usize,
        dev: &Arc<OwnedFd>,
        lock_buffers: bool,
        local_wake: bool,
    ) -> io::Result<Vec<Arc<UringQueue>>> {
        let arena = Arena::create(possible_cpus(), depth + SPARES_PER_QUEUE, payload)?;
        let wake = local_wake.then(LocalWake::start).flatten().map(Arc::new);
        (0..possible_cpus())
            .map(|qid| {
                let q = UringQueue::bare(
                    qid as u16,
                    depth,
                    arena.clone(),
                    dev.clone(),
                    lock_buffers,
                    wake.clone(),
                )?;
                for idx in 0..depth {
                    if let Some(record) = arena.record(q.qid, idx) {
                        record.set(SlotState::Register);
                    }
                }
                // No kick: nothing has queued before the first REGISTER.
                q.plan_from_records(false)?;
                Ok(Arc::new(q))
            })
            .collect()
    }

    /// The queues of a connection another process served, from the arena
    /// it handed over (`fd`): each entry carries on from what that
    /// process's drain left in it.
    pub(crate) fn adopt_set(
        fd: OwnedFd,
        depth: usize,
        payload: usize,
        dev: &Arc<OwnedFd>,
        lock_buffers: bool,
        local_wake: bool,
    ) -> io::Result<Vec<Arc<UringQueue>>> {
        let arena = Arena::adopt(fd, possible_cpus(), payload)?;
        let wake = local_wake.then(LocalWake::start).flatten().map(Arc::new);
        (0..possible_cpus())
            .map(|qid| {
                let q = UringQueue::bare(
                    qid as u16,
                    depth,
                    arena.clone(),
                    dev.clone(),
                    lock_buffers,
                    wake.clone(),
                )?;
                q.plan_from_records(true)?;
                Ok(Arc::new(q))
            })
            .collect()
    }

    /// A queue with no entries yet; its pinned thread joins `local_wake`,
    /// the connection's guard, if there is one.
    fn bare(
        qid: u16,
        depth: usize,
        arena: Arc<Arena>,
        dev: Arc<OwnedFd>,
        lock: bool,
        local_wake: Option<Arc<LocalWake>>,
    ) -> io::Result<UringQueue> {
        let inboxes: Vec<Arc<Inbox>> = (0..1 + HELPERS_PER_QUEUE)
            .map(|_| Inbox::new().map(Arc::new))
            .collect::<io::Result<_>>()?;
        let parking = Arc::new(Parking {
            qid,
            depth,
            parked: Mutex::new(HashMap::new()),
            live: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
            total: AtomicUsize::new(0),
            parked_now: AtomicUsize::new(0),
            next_idx: AtomicUsize::new(0),
            arena: arena.clone(),
            lock,
            pinned: inboxes[0].clone(),
        });
        Ok(UringQueue {
            qid,
            dev,
            arena,
            lock,
            parking,
            inboxes,
            drain: Drain::new()?,
            next: Mutex::new(None),
            mountpoint: Mutex::new(None),
            local_wake,
        })
    }

    fn make_rings(&self, entries: usize) -> io::Result<Vec<RingThread>> {
        (0..1 + HELPERS_PER_QUEUE)
            .map(|_| RingThread::new(entries, self.drain.armed.clone()))
            .collect()
    }

    /// Plans the next run from the slots' records: each entry in use is
    /// served, committed or registered, as the last drain (or `new_set`)
    /// left it; `kick`: wake the queue once they are submitted.
    fn plan_from_records(&self, kick: bool) -> io::Result<()> {
        let mut rings = self.make_rings(self.parking.depth)?;
        let mut start = Vec::new();
        let mut top = 0;
        for idx in 0..self.arena.capacity() {
            let Some(record) = self.arena.record(self.qid, idx) else {
                break;
            };
            let Some(then) = Then::from_kept(record.get()) else {
                continue;
            };
            if !matches!(then, Then::Register) {
                self.arena.load_payload(self.qid, idx);
            }
            *rings[0].slot(idx) = Some(RingEntry::new(&self.arena, self.qid, idx, self.lock)?);
            start.push((idx, then));
            top = idx + 1;
        }
        let parked = self.parking.parked_now.load(Ordering::Acquire);
        self.parking.live.store(start.len(), Ordering::Release);
        self.parking
            .total
            .store(start.len() + parked, Ordering::Release);
        self.parking.next_idx.fetch_max(top, Ordering::AcqRel);
        self.parking.stopped.store(false, Ordering::Release);
        self.drain.armed.store(0, Ordering::Release);
        lock(&self.drain.held).clear();
        self.drain.done.store(false, Ordering::Release);
        self.drain.on.store(false, Ordering::Release);
        *lock(&self.next) = Some(NextRun { rings, start, kick });
        Ok(())
    }

    /// Tells the queue where the filesystem is mounted (and the mount's
    /// unique id), which its kicks stat: without it a queue whose requests
    /// wait behind deferred ones waits for other traffic, and a drain
    /// cannot feed it.
    pub(crate) fn set_mountpoint(&self, mountpoint: PathBuf, mount_id: u64) {
        *lock(&self.mountpoint) = Some((mountpoint, mount_id));
    }

    fn mountpoint(&self) -> Option<PathBuf> {
        lock(&self.mountpoint).as_ref().map(|(p, _)| p.clone())
    }

    /// The thread name of the queue's pinned thread; its helpers are
    /// `ff-uring<qid>h<n>`, lock waiters `ff-uring<qid>lk` (the kernel keeps
    /// 15 bytes of a thread name).
    pub(crate) fn thread_name(&self) -> String {
        format!("ff-uring{}", self.qid)
    }

    /// The memfd the queues' entries live in, for a successor.
    pub(crate) fn arena_fd(queues: &[Arc<UringQueue>]) -> Option<BorrowedFd<'_>> {
        queues.first().map(|q| q.arena.fd())
    }

    /// Why these queues cannot be drained, if they cannot: a drain fills
    /// each queue's free entries with requests made on its CPU, so every
    /// queue's CPU must be online and open to this process.
    pub(crate) fn undrainable(queues: &[Arc<UringQueue>]) -> Option<String> {
        let mine = sys::CpuSet::current().ok();
        let online = std::fs::read_to_string("/sys/devices/system/cpu/online").ok();
        let online = online.as_deref().map(str::trim).and_then(parse_cpu_set);
        for q in queues {
            // The kicks stat the mountpoint: it must be this mount's root,
            // not another mount on top of it.
            let here = lock(&q.mountpoint).clone();
            let Some((path, id)) = here else {
                return Some("the queues do not know where the mount is".into());
            };
            if sys::statx_mount(&path).map(|m| m.mount_id).ok() != Some(id) {
                return Some(format!(
                    "{} is not this mount's root (another mount is on top of it?): \
                     its io_uring queues cannot be drained",
                    path.display()
                ));
            }
            let cpu = usize::from(q.qid);
            if online.as_ref().is_some_and(|set| !set.contains(&cpu)) {
                return Some(format!(
                    "CPU {cpu} is offline: its io_uring queue cannot be drained"
                ));
            }
            if mine.as_ref().is_some_and(|set| !set.contains(cpu)) {
                return Some(format!(
                    "this process may not run on CPU {cpu}: its io_uring queue cannot be drained"
                ));
            }
        }
        None
    }

    /// Drains every queue (see [`Drain`]): from now on their threads keep
    /// what comes back from the kernel, and each queue's entries still in
    /// the kernel are handed requests (a GETATTR of the mount's root made
    /// on its CPU, which the next run serves). Returns once every entry
    /// of every queue is kept or parked, when their threads stop; then
    /// join the threads and call [`finish_drain`](UringQueue::finish_drain).
    /// Waits out requests being served, however long they take.
    pub(crate) fn drain(queues: &[Arc<UringQueue>]) -> io::Result<()> {
        for q in queues {
            q.drain.on.store(true, Ordering::SeqCst);
        }
        let mut fed: Vec<Option<std::time::Instant>> = vec![None; queues.len()];
        loop {
            if queues.iter().all(|q| q.drain.done.load(Ordering::Acquire)) {
                return Ok(());
            }
            if queues
                .iter()
                .any(|q| q.parking.stopped.load(Ordering::Acquire))
            {
                return Err(io::Error::from_raw_os_error(libc::ENOTCONN));
            }
            for (q, fed) in queues.iter().zip(&mut fed) {
                let armed = q.drain.armed.load(Ordering::Acquire);
                if armed > 0 && fed.is_none_or(|t| t.elapsed() >= REFEED) {
                    let mountpoint = q.mountpoint();
                    for _ in 0..armed {
                        kick(mountpoint.as_ref(), q.qid);
                    }
                    *fed = Some(std::time::Instant::now());
                }
            }
            let fds: Vec<BorrowedFd<'_>> =
                queues.iter().map(|q| q.drain.progress.as_fd()).collect();
            let ready = sys::poll_readable(&fds, Some(REFEED))?;
            for (q, &r) in queues.iter().zip(&ready) {
                if r != 0 {
                    let _ = sys::eventfd_read(q.drain.progress.as_fd());
                }
            }
        }
    }

    /// After a drain, once the queue's threads have returned: writes what
    /// each entry holds into its slot's record, for the next run (entries
    /// handed between threads as the last ones stopped included).
    pub(crate) fn finish_drain(&self) {
        let mut held = std::mem::take(&mut *lock(&self.drain.held));
        for inbox in &self.inboxes {
            held.extend(inbox.take().into_iter().map(|h| (h.idx, h.then.kept())));
        }
        for idx in 0..self.arena.capacity() {
            if let Some(r) = self.arena.record(self.qid, idx) {
                r.set(SlotState::Unused);
            }
        }
        for (idx, state) in held {
            if let Some(r) = self.arena.record(self.qid, idx) {
                r.set(state);
            }
            if matches!(state, SlotState::Serve | SlotState::Commit(_)) {
                // For a successor: the payload buffers are this process's.
                self.arena.save_payload(self.qid, idx);
            }
        }
    }

    /// Plans a run that carries on after a drain in this process (the
    /// upgrade failed): call [`serve`](UringQueue::serve) again.
    pub(crate) fn restart(&self) -> io::Result<()> {
        self.plan_from_records(true)
    }
}

/// The CPUs in a list like "0-3,8".
fn parse_cpu_set(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
        cpus.extend(a..=b);
    }
    Some(cpus)
}

/// Makes the kernel give up on io_uring for this connection: any failed
/// REGISTER clears `fc->io_uring` and wakes the requests waiting for the
/// ring (dev_uring.c), which then go through /dev/fuse. Used when a queue
/// cannot register all its entries, because the ring would otherwise never
/// become ready and every request would wait forever.
fn abandon_ring(dev: &OwnedFd, qid: u16) {
    let result = IoUring::<squeue::Entry128>::builder()
        .build(2)
        .and_then(|mut ring| {
            let sqe = opcode::UringCmd80::new(
                types::Fd(dev.as_raw_fd()),
                abi::FUSE_IO_URING_CMD_REGISTER,
            )
            .cmd(cmd_bytes(qid, 0))
            .build();
            // An iovec count of 0 is refused with EINVAL before any buffer
            // is looked at.
            let sqe = sys::uring_cmd_with_len(sqe, 0);
            // SAFETY: the entry names no buffer.
            unsafe { sys::uring_push(&mut ring, &sqe) }?;
            ring.submit_and_wait(1)?;
            Ok(())
        });
    match result {
        Ok(()) => tracing::warn!(qid, "io_uring abandoned: serving through /dev/fuse"),
        Err(e) => tracing::error!(qid, "could not abandon io_uring ({e}); requests may hang"),
    }
}

impl UringQueue {
    /// Serves the queue's next run (planned by [`new_set`], [`adopt_set`]
    /// or [`restart`]) until the connection ends, a thread fails or a
    /// drain is done. A failure makes the kernel fall back to /dev/fuse.
    ///
    /// [`new_set`]: UringQueue::new_set
    /// [`adopt_set`]: UringQueue::adopt_set
    /// [`restart`]: UringQueue::restart
    pub(crate) fn serve<F: Filesystem>(&self, server: &Server<F>) -> io::Result<()> {
        let result = self.run(server);
        if let Err(e) = &result {
            tracing::error!(qid = self.qid, "io_uring queue failed: {e}");
            abandon_ring(&self.dev, self.qid);
        }
        result
    }

    /// Runs the pinned thread here and the helpers beside it; returns once
    /// all have stopped.
    fn run<F: Filesystem>(&self, server: &Server<F>) -> io::Result<()> {
        let Some(NextRun { rings, start, kick }) = lock(&self.next).take() else {
            return Err(io::Error::other("no run of the io_uring queue was planned"));
        };
        // Helpers float over the CPUs the process may use; they are
        // spawned by the pinned thread and would inherit its single CPU.
        let floating = sys::CpuSet::current()
            .inspect_err(|e| tracing::debug!("cannot read the CPU affinity: {e}"))
            .ok();
        // Only a pinned thread shares its CPU with the callers it serves.
        let wake = match sys::CpuSet::one(self.qid as usize).apply() {
            Ok(()) => self.local_wake.as_ref().and_then(|w| w.join(&server.stats)),
            Err(e) => {
                tracing::debug!(qid = self.qid, "cannot pin queue thread: {e}");
                None
            }
        };
        let qid = self.qid;
        let mut rings = rings.into_iter();
        let mut pinned = rings.next().expect("a queue has a pinned ring");
        let q = QueueShared {
            qid,
            dev: &self.dev,
            drain: &self.drain,
            server,
            shard: server.stats.shard("uring"),
            parking: self.parking.clone(),
            failed: AtomicBool::new(false),
            inboxes: self.inboxes.clone(),
            next_helper: AtomicUsize::new(0),
            floating,
            mountpoint: self.mountpoint(),
            wake,
        };
        let q = &q;
        std::thread::scope(|s| {
            for (h, mut ring) in rings.enumerate() {
                std::thread::Builder::new()
                    .name(format!("ff-uring{qid}h{h}"))
                    .spawn_scoped(s, move || {
                        q.float();
                        if let Err(e) = ring.run(q, h + 1, s, Vec::new(), false) {
                            tracing::error!(qid, "io_uring helper failed: {e}");
                        }
                    })?;
            }
            let result = pinned.run(q, 0, s, start, kick);
            tracing::debug!(qid, "io_uring queue stopped");
            result
        })?;
        if q.failed.load(Ordering::Acquire) {
            return Err(io::Error::other("a thread of the queue failed"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1"), Some(2));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-3,8-9"), Some(10));
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn payload_follows_the_kernel_rule() {
        assert_eq!(payload_size(4096, 1), 8192);
        assert_eq!(payload_size(1 << 20, 256), 1 << 20);
    }

    #[test]
    fn command_area_holds_fuse_uring_cmd_req() {
        let cmd = cmd_bytes(3, 0x1122);
        assert_eq!(&cmd[0..8], &0u64.to_ne_bytes()); // flags
        assert_eq!(&cmd[8..16], &0x1122u64.to_ne_bytes()); // commit_id
        assert_eq!(&cmd[16..18], &3u16.to_ne_bytes()); // qid
    }

    #[test]
    fn long_requests_leave_the_pinned_thread() {
        let read = |size: u32| {
            abi::ReadIn {
                size,
                ..Default::default()
            }
            .as_bytes()
            .to_vec()
        };
        let none: &[u8] = &[];
        assert_eq!(
            placement(Opcode::Setlkw as u32, none, 0),
            Placement::OwnThread
        );
        assert_eq!(placement(Opcode::Setlk as u32, none, 0), Placement::Pinned);
        let write = |write_flags: u32| {
            abi::WriteIn {
                write_flags,
                ..Default::default()
            }
            .as_bytes()
            .to_vec()
        };
        let cached = write(abi::write_flags::FUSE_WRITE_CACHE);
        assert_eq!(
            placement(Opcode::Write as u32, &write(0), 4096),
            Placement::Pinned
        );
        assert_eq!(
            placement(Opcode::Write as u32, &write(0), 1 << 20),
            Placement::Helper
        );
        // A short WRITE of the writeback cache is most often waited for
        // by its caller on this CPU; a long one is the flusher's.
        assert_eq!(
            placement(Opcode::Write as u32, &cached, 4096),
            Placement::Pinned
        );
        assert_eq!(
            placement(Opcode::Write as u32, &cached, 1 << 20),
            Placement::Helper
        );
        assert_eq!(
            placement(Opcode::Write as u32, none, 1 << 20),
            Placement::Helper
        );
        assert_eq!(
            placement(Opcode::Read as u32, &read(4096), 0),
            Placement::Pinned
        );
        assert_eq!(
            placement(Opcode::Read as u32, &read(1 << 20), 0),
            Placement::Helper
        );
        assert_eq!(placement(Opcode::Fsync as u32, none, 0), Placement::Helper);
        assert_eq!(placement(Opcode::Lookup as u32, none, 0), Placement::Pinned);
        assert_eq!(placement(9999, none, 0), Placement::Pinned);
    }
}
