//! The memory io_uring ring entries live in: one memfd, mapped shared at
//! the same address in every process that serves the connection, so that
//! a live upgrade can hand the entries themselves to the successor.
//!
//! Why the same address: the kernel keeps the user addresses an entry was
//! registered with (dev_uring.c, `ent->headers`, `ent->payload`) and
//! copies requests and replies through them in the address space of
//! whoever submits the entry's next command. A successor that maps this
//! memfd where the old daemon had it can commit the old daemon's entries
//! from a ring of its own (COMMIT_AND_FETCH finds the entry by the
//! request's unique, not by the ring that registered it), and they become
//! its entries. The address is chosen far from where the kernel places
//! libraries, heaps and stacks, so that it is free in a fresh process.
//!
//! Layout of the memfd: a header page ([`ArenaHeader`]), one
//! [`SlotRecord`] per slot (what a paused queue left in the slot), the
//! slots' 288-byte request headers, then one transfer buffer per slot.
//! The payload buffers themselves are private anonymous memory in
//! transparent huge pages, at a fixed address too: shared memory gets
//! huge pages only where the administrator enabled them for shmem
//! (`shmem_enabled`, "never" by default), and the kernel's 1 MiB copies
//! would then walk 256 small pages each. A drain copies what a kept
//! entry's payload holds (its request's, or its reply's) into the slot's
//! transfer buffer; a successor copies it back into its own payload
//! buffer at the same address and frees the transfer buffer's pages.
//! Slot `idx` of queue `qid` is number `qid * capacity + idx`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use fastfuse_abi as abi;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

const PAGE: usize = 4096;

/// A transparent huge page (x86-64 and arm64 with 4 KiB pages).
const HUGE_PAGE: usize = 2 << 20;

/// "ffrings\0", little-endian.
const MAGIC: u64 = u64::from_le_bytes(*b"ffrings\0");

/// The layout version: a successor refuses an arena of another version.
pub(crate) const ARENA_VERSION: u32 = 1;

/// Where the first arena is tried: 16 TiB, below a position-independent
/// executable and its heap (near 85 TiB, 0x5555_5555_0000, on x86-64) and
/// below the libraries and anonymous mappings the kernel places under the
/// stack (near 128 TiB), so that a successor finds the range free.
const FIRST_BASE: usize = 0x1000_0000_0000;

/// Further candidates are this far apart.
const BASE_STEP: usize = 1 << 36;

/// Candidates tried before the kernel is left to choose.
const TRIES: usize = 64;

/// Bytes per request header in the arena (288 used).
const HEADER_STRIDE: usize = 512;

/// The first page of the memfd.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct ArenaHeader {
    magic: u64,
    version: u32,
    queues: u32,
    capacity: u32,
    _pad: u32,
    payload: u64,
    base: u64,
    len: u64,
    payload_base: u64,
    payload_len: u64,
}

/// What a slot holds when its queue is not running. Written by the
/// queue's last thread to stop (after every other has), read by whoever
/// starts the queue next, in this process or another: the hand-over's
/// syscalls order the two.
#[repr(C)]
pub(crate) struct SlotRecord {
    state: AtomicU32,
    _pad: u32,
    commit_id: AtomicU64,
}

/// A [`SlotRecord`]'s meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// Never used.
    Unused,
    /// In use, but no kernel entry holds a request in it: register it.
    Register,
    /// The kernel put a request in it that nobody has served: serve it.
    Serve,
    /// Its reply is in place: commit it with this id.
    Commit(u64),
}

impl SlotRecord {
    pub(crate) fn get(&self) -> SlotState {
        match self.state.load(Ordering::Acquire) {
            1 => SlotState::Register,
            2 => SlotState::Serve,
            3 => SlotState::Commit(self.commit_id.load(Ordering::Relaxed)),
            _ => SlotState::Unused,
        }
    }

    pub(crate) fn set(&self, state: SlotState) {
        let (code, id) = match state {
            SlotState::Unused => (0, 0),
            SlotState::Register => (1, 0),
            SlotState::Serve => (2, 0),
            SlotState::Commit(id) => (3, id),
        };
        self.commit_id.store(id, Ordering::Relaxed);
        self.state.store(code, Ordering::Release);
    }
}

/// The shared mapping of the ring entries' memory.
pub(crate) struct Arena {
    fd: OwnedFd,
    /// The memfd's mapping, of `o.len` bytes.
    base: NonNull<u8>,
    /// The payload buffers' anonymous mapping, of `o.payloads_len` bytes.
    payloads: NonNull<u8>,
    queues: usize,
    capacity: usize,
    payload: usize,
    /// Where things are, from the three above.
    o: Offsets,
    /// Mapped from another process's memfd: kept payloads are in the
    /// transfer buffers, not yet in this process's payload buffers.
    adopted: bool,
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("base", &self.base)
            .field("len", &self.o.len)
            .field("queues", &self.queues)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

// SAFETY: the mapping is shared memory owned by the Arena for as long as
// it lives; each slot is accessed through one ArenaSlot at a time (see
// ArenaSlot), and the records are atomics.
unsafe impl Send for Arena {}
// SAFETY: as above.
unsafe impl Sync for Arena {}

#[derive(Debug, Clone, Copy)]
struct Offsets {
    records: usize,
    headers: usize,
    /// Of the transfer buffers, in the memfd.
    transfers: usize,
    /// Between payload buffers (and transfer buffers).
    payload_stride: usize,
    /// Of the memfd.
    len: usize,
    /// Of the payload buffers' mapping.
    payloads_len: usize,
}

fn offsets(queues: usize, capacity: usize, payload: usize) -> Offsets {
    let slots = queues * capacity;
    let records = PAGE;
    let headers = (records + slots * size_of::<SlotRecord>()).next_multiple_of(PAGE);
    let transfers = (headers + slots * HEADER_STRIDE).next_multiple_of(PAGE);
    let payload_stride = payload.next_multiple_of(PAGE);
    Offsets {
        records,
        headers,
        transfers,
        payload_stride,
        len: transfers + slots * payload_stride,
        payloads_len: (slots * payload_stride).next_multiple_of(HUGE_PAGE),
    }
}

/// Maps `len` bytes of private anonymous memory at `addr` if that range
/// is free, or where the kernel likes, asking for transparent huge pages.
fn map_anonymous_at(addr: Option<usize>, len: usize) -> io::Result<NonNull<u8>> {
    let p = map_fixed(None, addr, len)?;
    // SAFETY: the range is the mapping just made.
    if unsafe { libc::madvise(p.as_ptr().cast(), len, libc::MADV_HUGEPAGE) } != 0 {
        tracing::debug!("MADV_HUGEPAGE refused: {}", io::Error::last_os_error());
    }
    Ok(p)
}

/// Where the payload buffers go, given where the memfd is mapped: the next
/// huge page boundary after it.
fn payloads_after(base: NonNull<u8>, len: usize) -> usize {
    (base.as_ptr() as usize + len).next_multiple_of(HUGE_PAGE)
}

/// Maps `len` bytes of `fd` shared at `addr` if that range is free
/// (MAP_FIXED_NOREPLACE), or, with `addr` None, where the kernel likes.
fn map_at(fd: BorrowedFd<'_>, addr: Option<usize>, len: usize) -> io::Result<NonNull<u8>> {
    map_fixed(Some(fd), addr, len)
}

/// Maps `len` bytes, of `fd` shared or (None) of private anonymous memory,
/// at `addr` if that range is free (MAP_FIXED_NOREPLACE; EEXIST if not),
/// or, with `addr` None, where the kernel likes.
fn map_fixed(
    fd: Option<BorrowedFd<'_>>,
    addr: Option<usize>,
    len: usize,
) -> io::Result<NonNull<u8>> {
    let (hint, fixed) = match addr {
        Some(a) => (a as *mut libc::c_void, libc::MAP_FIXED_NOREPLACE),
        None => (std::ptr::null_mut(), 0),
    };
    let (backing, raw) = match fd {
        Some(fd) => (libc::MAP_SHARED, fd.as_raw_fd()),
        // NORESERVE: the range is mostly address space kept for spare
        // entries, never touched unless they are made.
        None => (
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
        ),
    };
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping (it
    // fails with EEXIST instead), and without it the kernel picks a free
    // range: no memory in use is touched.
    let p = unsafe {
        libc::mmap(
            hint,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            backing | fixed,
            raw,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    if addr.is_some_and(|a| p as usize != a) {
        // A kernel older than 4.17 takes the flag as a hint.
        // SAFETY: p..p+len is the mapping just made.
        unsafe { libc::munmap(p, len) };
        return Err(io::Error::from_raw_os_error(libc::EEXIST));
    }
    NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))
}

impl Arena {
    /// A new arena for `queues` queues of up to `capacity` entries whose
    /// payload buffers hold `payload` bytes. The memfd is sparse: only
    /// the pages the kernel and the server touch take memory.
    pub(crate) fn create(queues: usize, capacity: usize, payload: usize) -> io::Result<Arc<Arena>> {
        let o = offsets(queues, capacity, payload);
        // SAFETY: the name is a NUL-terminated literal.
        let raw = unsafe { libc::memfd_create(c"fastfuse-rings".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: memfd_create returned a fresh descriptor owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ftruncate takes no pointers; fd is a live memfd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), o.len as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut placed = None;
        for i in 0..TRIES {
            let base = match map_at(fd.as_fd(), Some(FIRST_BASE + i * BASE_STEP), o.len) {
                Ok(p) => p,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST)) => continue,
                // ENOMEM: an address space too small for the candidates.
                Err(_) => break,
            };
            match map_anonymous_at(Some(payloads_after(base, o.len)), o.payloads_len) {
                Ok(payloads) => {
                    placed = Some((base, payloads));
                    break;
                }
                Err(_) => {
                    // SAFETY: the mapping just made, of o.len bytes.
                    unsafe { libc::munmap(base.as_ptr().cast(), o.len) };
                }
            }
        }
        let (base, payloads) = match placed {
            Some(p) => p,
            None => (
                map_at(fd.as_fd(), None, o.len)?,
                map_anonymous_at(None, o.payloads_len)?,
            ),
        };
        let arena = Arena {
            fd,
            base,
            payloads,
            queues,
            capacity,
            payload,
            o,
            adopted: false,
        };
        let header = ArenaHeader {
            magic: MAGIC,
            version: ARENA_VERSION,
            queues: queues as u32,
            capacity: capacity as u32,
            _pad: 0,
            payload: payload as u64,
            base: base.as_ptr() as u64,
            len: o.len as u64,
            payload_base: payloads.as_ptr() as u64,
            payload_len: o.payloads_len as u64,
        };
        // SAFETY: the first page of the mapping is ours and large enough.
        unsafe {
            std::ptr::copy_nonoverlapping(
                header.as_bytes().as_ptr(),
                arena.base.as_ptr(),
                size_of::<ArenaHeader>(),
            )
        };
        Ok(Arc::new(arena))
    }

    /// Maps an arena another process (or an earlier session) made, at
    /// the address it was made at. Fails if the memfd is not an arena of
    /// this version, if its layout does not match `queues` and
    /// `payload`, or if that address is taken here.
    pub(crate) fn adopt(fd: OwnedFd, queues: usize, payload: usize) -> io::Result<Arc<Arena>> {
        let mut raw = [0u8; size_of::<ArenaHeader>()];
        // SAFETY: raw is a writable buffer of raw.len() bytes.
        let n = unsafe { libc::pread(fd.as_raw_fd(), raw.as_mut_ptr().cast(), raw.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        let header = ArenaHeader::read_from_bytes(&raw[..n])
            .map_err(|_| io::Error::other("the ring memory is too short to be an arena"))?;
        if header.magic != MAGIC {
            return Err(io::Error::other(
                "the descriptor is not a fastfuse ring arena",
            ));
        }
        if header.version != ARENA_VERSION {
            return Err(io::Error::other(format!(
                "ring arena version {} (this binary reads version {ARENA_VERSION})",
                header.version
            )));
        }
        let (capacity, len) = (header.capacity as usize, header.len as usize);
        let o = offsets(header.queues as usize, capacity, header.payload as usize);
        if header.queues as usize != queues || header.payload as usize != payload || o.len != len {
            return Err(io::Error::other(format!(
                "the ring arena has {} queues of {}-byte payloads, this connection needs {queues} of {payload}",
                header.queues, header.payload
            )));
        }
        let cannot = |what: &str, at: u64, e: io::Error| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot map the ring {what} at {at:#x}, where the kernel expects them: {e}"
                ),
            )
        };
        if header.payload_len as usize != o.payloads_len {
            return Err(io::Error::other(
                "the ring arena's payload mapping has another size",
            ));
        }
        let base = map_at(fd.as_fd(), Some(header.base as usize), len)
            .map_err(|e| cannot("entries", header.base, e))?;
        let payloads = match map_anonymous_at(Some(header.payload_base as usize), o.payloads_len) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: the mapping just made, of len bytes.
                unsafe { libc::munmap(base.as_ptr().cast(), len) };
                return Err(cannot("payload buffers", header.payload_base, e));
            }
        };
        Ok(Arc::new(Arena {
            fd,
            base,
            payloads,
            queues,
            capacity,
            payload,
            o,
            adopted: true,
        }))
    }

    /// The memfd, to hand to a successor.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Entries a queue may have.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    fn number(&self, qid: u16, idx: usize) -> Option<usize> {
        (usize::from(qid) < self.queues && idx < self.capacity)
            .then(|| usize::from(qid) * self.capacity + idx)
    }

    /// Slot `idx` of queue `qid`'s record.
    pub(crate) fn record(&self, qid: u16, idx: usize) -> Option<&SlotRecord> {
        let n = self.number(qid, idx)?;
        let o = &self.o;
        // SAFETY: the record lies inside the mapping (offsets() sized it),
        // is aligned (page-aligned array of 16-byte records) and is only
        // accessed through atomics.
        Some(unsafe {
            &*self
                .base
                .as_ptr()
                .add(o.records)
                .cast::<SlotRecord>()
                .add(n)
        })
    }

    /// Slot `idx` of queue `qid`'s memory. The caller makes sure that one
    /// slot is in one [`ArenaSlot`] at a time (a queue hands each index
    /// to one entry).
    pub(crate) fn slot(self: &Arc<Self>, qid: u16, idx: usize) -> io::Result<ArenaSlot> {
        let n = self.number(qid, idx).ok_or_else(|| {
            io::Error::other(format!(
                "queue {qid} has no room for entry {idx} (it holds {})",
                self.capacity
            ))
        })?;
        let o = &self.o;
        // SAFETY: both offsets lie inside their mappings (offsets() sized
        // them).
        let (header, payload) = unsafe {
            (
                self.base.add(o.headers + n * HEADER_STRIDE).cast(),
                self.payloads.add(n * o.payload_stride),
            )
        };
        Ok(ArenaSlot {
            header,
            payload,
            len: self.payload,
            _arena: self.clone(),
        })
    }
}

impl Arena {
    /// The slot's header, payload buffer and transfer buffer, and how many
    /// payload bytes its header announces (a request's or a reply's).
    fn payload_parts(&self, qid: u16, idx: usize) -> Option<(*mut u8, *mut u8, usize)> {
        let n = self.number(qid, idx)?;
        let o = &self.o;
        // SAFETY: all three offsets lie inside their mappings.
        let (header, payload, transfer) = unsafe {
            (
                self.base
                    .add(o.headers + n * HEADER_STRIDE)
                    .cast::<abi::UringReqHeader>(),
                self.payloads.add(n * o.payload_stride),
                self.base.add(o.transfers + n * o.payload_stride),
            )
        };
        // SAFETY: a live, aligned header (see ArenaSlot::header).
        let announced = unsafe { header.as_ref() }.ring_ent_in_out.payload_sz as usize;
        Some((
            payload.as_ptr(),
            transfer.as_ptr(),
            announced.min(self.payload),
        ))
    }

    /// Copies what slot `idx` of queue `qid` holds in its payload buffer
    /// (as many bytes as its header announces) into its transfer buffer,
    /// for a successor process. Only while no [`ArenaSlot`] of it exists
    /// (a drained queue's threads have stopped).
    pub(crate) fn save_payload(&self, qid: u16, idx: usize) {
        if let Some((payload, transfer, len)) = self.payload_parts(qid, idx) {
            // SAFETY: len bytes of each buffer lie in their mappings, and
            // no ArenaSlot of the slot exists (the caller's promise).
            unsafe { std::ptr::copy_nonoverlapping(payload, transfer, len) };
        }
    }

    /// In an arena adopted from another process: copies slot `idx` of
    /// queue `qid`'s saved payload back into its payload buffer, and frees
    /// the transfer buffer's pages. Does nothing in the process that made
    /// the arena, whose payload buffers still hold it. Only while no
    /// [`ArenaSlot`] of it exists.
    pub(crate) fn load_payload(&self, qid: u16, idx: usize) {
        if !self.adopted {
            return;
        }
        let Some((payload, transfer, len)) = self.payload_parts(qid, idx) else {
            return;
        };
        // SAFETY: as in save_payload.
        unsafe { std::ptr::copy_nonoverlapping(transfer, payload, len) };
        let o = &self.o;
        let offset = transfer as usize - self.base.as_ptr() as usize;
        // SAFETY: fallocate takes no pointers; the range is the slot's
        // transfer buffer, inside the memfd.
        let r = unsafe {
            libc::fallocate(
                self.fd.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                o.payload_stride as libc::off_t,
            )
        };
        if r != 0 {
            tracing::debug!(
                "freeing a ring transfer buffer: {}",
                io::Error::last_os_error()
            );
        }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: the mappings are this arena's; every ArenaSlot holds an
        // Arc of it, so none is left.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.o.len);
            libc::munmap(self.payloads.as_ptr().cast(), self.o.payloads_len);
        }
    }
}

/// One entry's memory in the arena: its request header and its payload
/// buffer. Holds the arena mapped.
pub(crate) struct ArenaSlot {
    header: NonNull<abi::UringReqHeader>,
    payload: NonNull<u8>,
    len: usize,
    _arena: Arc<Arena>,
}

// SAFETY: an ArenaSlot is the only way to its slot's memory in this
// process (see Arena::slot), like a Box.
unsafe impl Send for ArenaSlot {}

impl ArenaSlot {
    /// The request header's address and size, for REGISTER.
    pub(crate) fn header_iov(&self) -> (usize, usize) {
        (
            self.header.as_ptr() as usize,
            size_of::<abi::UringReqHeader>(),
        )
    }

    /// The payload buffer's address and size, for REGISTER.
    pub(crate) fn payload_iov(&self) -> (usize, usize) {
        (self.payload.as_ptr() as usize, self.len)
    }

    /// The request header.
    pub(crate) fn header(&self) -> &abi::UringReqHeader {
        // SAFETY: a live, aligned (512-byte stride in a page-aligned
        // mapping) header owned by this slot; the kernel writes it only
        // while the entry's command is in flight, when the server does not
        // look at it.
        unsafe { self.header.as_ref() }
    }

    /// The request header, to put a reply in.
    pub(crate) fn header_mut(&mut self) -> &mut abi::UringReqHeader {
        // SAFETY: as in header(), and &mut self makes the access exclusive.
        unsafe { self.header.as_mut() }
    }

    /// The payload buffer.
    #[cfg(test)]
    pub(crate) fn payload(&self) -> &[u8] {
        // SAFETY: len bytes at payload lie in the mapping, owned by this slot.
        unsafe { std::slice::from_raw_parts(self.payload.as_ptr(), self.len) }
    }

    /// The payload buffer, to put a reply in.
    pub(crate) fn payload_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in payload(), and &mut self makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.payload.as_ptr(), self.len) }
    }

    /// The request header to read and the payload buffer to write, at
    /// once (a READ's reply goes into the payload while the request's
    /// arguments are read from the header).
    pub(crate) fn split(&mut self) -> (&abi::UringReqHeader, &mut [u8]) {
        // SAFETY: header and payload are disjoint ranges of this slot (the
        // header region precedes the payload region), each valid as in
        // header() and payload_mut(); &mut self makes both exclusive.
        unsafe {
            (
                self.header.as_ref(),
                std::slice::from_raw_parts_mut(self.payload.as_ptr(), self.len),
            )
        }
    }

    /// Makes the payload's pages resident now, keeping their contents
    /// (an adopted slot may hold a request), locked with `lock` if
    /// RLIMIT_MEMLOCK allows. Locked in whole huge pages: locking part of
    /// one would split it.
    pub(crate) fn prepare(&mut self, lock: bool) {
        let (addr, len) = self.payload_iov();
        let start = addr / HUGE_PAGE * HUGE_PAGE;
        let end = (addr + len).next_multiple_of(HUGE_PAGE);
        // SAFETY: the range is inside the payload mapping, which is made of
        // whole huge pages; locking changes no contents.
        let locked = lock && unsafe { libc::mlock(start as *const libc::c_void, end - start) } == 0;
        if !locked {
            // SAFETY: the range is this slot's payload, inside the mapping;
            // MADV_POPULATE_WRITE (Linux 5.14) faults the pages in writable
            // without changing what they hold.
            let r =
                unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE) };
            if r != 0 {
                tracing::debug!("MADV_POPULATE_WRITE: {}", io::Error::last_os_error());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_mapping_lands_where_the_first_is_and_sees_its_bytes() {
        let a = Arena::create(2, 3, 8192).unwrap();
        let mut s = a.slot(1, 2).unwrap();
        s.payload_mut()[..5].copy_from_slice(b"hello");
        s.header_mut().in_out[0] = 7;
        s.header_mut().ring_ent_in_out.payload_sz = 5;
        a.record(1, 2).unwrap().set(SlotState::Commit(42));
        let fd = a.fd().try_clone_to_owned().unwrap();
        // The same address is taken in this process: adopting here fails,
        // as it must rather than map elsewhere.
        let err = Arena::adopt(fd.try_clone().unwrap(), 2, 8192).unwrap_err();
        assert!(err.to_string().contains("cannot map"), "{err}");
        // The payload buffers are private: only the saved copy crosses.
        let (addr, _) = s.payload_iov();
        drop(s);
        a.save_payload(1, 2);
        drop(a);
        let b = Arena::adopt(fd, 2, 8192).unwrap();
        b.load_payload(1, 2);
        let t = b.slot(1, 2).unwrap();
        assert_eq!(t.payload_iov().0, addr);
        assert_eq!(&t.payload()[..5], b"hello");
        assert_eq!(t.header().in_out[0], 7);
        assert_eq!(b.record(1, 2).unwrap().get(), SlotState::Commit(42));
        assert_eq!(b.record(0, 0).unwrap().get(), SlotState::Unused);
        assert!(b.slot(2, 0).is_err() && b.slot(0, 3).is_err());
    }

    #[test]
    fn a_mismatched_layout_is_refused() {
        let a = Arena::create(2, 3, 8192).unwrap();
        let fd = a.fd().try_clone_to_owned().unwrap();
        drop(a);
        let err = Arena::adopt(fd, 4, 8192).unwrap_err();
        assert!(err.to_string().contains("queues"), "{err}");
    }
}
