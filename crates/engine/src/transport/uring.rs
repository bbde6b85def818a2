//! FUSE over io_uring (Linux 6.14+, `enable_uring` module parameter): one
//! queue per possible CPU, each a thread pinned to its CPU with its own ring
//! and ring entries. An entry is a 288-byte header buffer and a payload
//! buffer registered with FUSE_IO_URING_CMD_REGISTER; the kernel fills them
//! with a request and completes the command; the reply is built in place and
//! COMMIT_AND_FETCH hands it back and waits for the next request.
//!
//! The kernel's fs/fuse/dev_uring.c is the authority for the rules followed
//! here: the ring must use 128-byte SQEs; REGISTER before the INIT reply gets
//! EAGAIN; requests go to the queue of the CPU the caller runs on, and the
//! ring only takes over from /dev/fuse once every queue has an entry
//! registered; FORGET and INTERRUPT still come through /dev/fuse.
//!
//! Submitting a command that names buffers is `unsafe` (the buffers must
//! outlive it), so this module is part of the syscall boundary.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use fastfuse_abi::{self as abi, Opcode};
use io_uring::{opcode, squeue, types, IoUring};
use zerocopy::{FromBytes, IntoBytes};

use super::{Server, Transport};
use crate::filesystem::Filesystem;
use crate::reply::{self, Outcome};
use crate::request::Body;
use crate::sys;
use crate::transport::dev::prepared_buffer;

/// One registered buffer pair.
struct RingEntry {
    header: Box<abi::UringReqHeader>,
    payload: Box<[u8]>,
    /// The iovecs REGISTER points at, as `struct iovec[2]` (base, len,
    /// base, len): header, payload. Kept as integers so the queue stays
    /// `Send`.
    iov: Box<[usize; 4]>,
}

/// One queue: a ring, its entries, and the thread that will serve them.
pub(crate) struct UringQueue {
    // Declared first so that it is dropped first: closing the ring cancels
    // the commands before the buffers they point to are freed.
    ring: IoUring<squeue::Entry128>,
    qid: u16,
    /// Pin this thread to the queue's CPU (the first thread of a queue).
    pin: bool,
    dev: Arc<OwnedFd>,
    entries: Vec<RingEntry>,
    /// Requests other than WRITE are decoded from a copy of their payload
    /// (names, small values), so that the reply can be written straight
    /// into the entry's payload buffer.
    scratch: Box<[u8]>,
    /// Completions taken from the ring in one pass: (entry, result).
    ready: Vec<(usize, i32)>,
}

/// How many queues the kernel expects: one per possible CPU.
pub(crate) fn possible_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| parse_cpu_list(s.trim()))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The highest CPU number in a list like "0-3,8" plus one.
fn parse_cpu_list(list: &str) -> Option<usize> {
    list.split(',')
        .map(|part| part.rsplit('-').next()?.parse::<usize>().ok())
        .try_fold(0, |max, cpu| Some(max.max(cpu? + 1)))
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

impl UringQueue {
    /// Creates the ring and the entries' buffers. Called before INIT is
    /// answered, so that a machine that cannot set up rings falls back to
    /// /dev/fuse instead of leaving the kernel waiting for a ring.
    pub(crate) fn new(
        qid: u16,
        pin: bool,
        depth: usize,
        payload: usize,
        dev: Arc<OwnedFd>,
        lock: bool,
    ) -> io::Result<UringQueue> {
        // Not SINGLE_ISSUER: the ring is created here, before INIT is
        // answered, and used by the queue's own thread.
        let ring = IoUring::<squeue::Entry128>::builder()
            .build((depth as u32).next_power_of_two().max(2))?;
        let entries = (0..depth)
            .map(|_| {
                let mut header = Box::<abi::UringReqHeader>::default();
                let mut payload = prepared_buffer(payload, lock).into_boxed_slice();
                let iov = Box::new([
                    &mut *header as *mut abi::UringReqHeader as usize,
                    size_of::<abi::UringReqHeader>(),
                    payload.as_mut_ptr() as usize,
                    payload.len(),
                ]);
                RingEntry {
                    header,
                    payload,
                    iov,
                }
            })
            .collect();
        Ok(UringQueue {
            ring,
            qid,
            pin,
            dev,
            entries,
            scratch: vec![0u8; payload].into_boxed_slice(),
            ready: Vec::with_capacity(depth),
        })
    }

    fn push_register(&mut self, idx: usize) -> io::Result<()> {
        let e = &self.entries[idx];
        let sqe = opcode::UringCmd80::new(
            types::Fd(self.dev.as_raw_fd()),
            abi::FUSE_IO_URING_CMD_REGISTER,
        )
        .cmd(cmd_bytes(self.qid, 0))
        .addr(Some(e.iov.as_ptr() as u64))
        .build()
        .user_data(idx as u64);
        let sqe = sys::uring_cmd_with_len(sqe, 2);
        // SAFETY: the iovecs and the buffers they name live in
        // self.entries, which outlives the ring (dropped after it).
        unsafe { sys::uring_push(&mut self.ring, &sqe) }
    }

    fn push_commit(&mut self, idx: usize, commit_id: u64) -> io::Result<()> {
        let sqe = opcode::UringCmd80::new(
            types::Fd(self.dev.as_raw_fd()),
            abi::FUSE_IO_URING_CMD_COMMIT_AND_FETCH,
        )
        .cmd(cmd_bytes(self.qid, commit_id))
        .build()
        .user_data(idx as u64);
        // SAFETY: the command names no buffer; the entry's registered
        // buffers live as long as the ring (see push_register).
        unsafe { sys::uring_push(&mut self.ring, &sqe) }
    }

    /// Serves the request the kernel put in entry `idx` and builds the
    /// reply in place. Returns the commit id.
    fn serve_entry<F: Filesystem>(
        &mut self,
        server: &Server<F>,
        shard: &crate::stats::Shard,
        idx: usize,
    ) -> u64 {
        let e = &mut self.entries[idx];
        let commit_id = e.header.ring_ent_in_out.commit_id;
        let size = (e.header.ring_ent_in_out.payload_sz as usize).min(e.payload.len());
        let header = abi::InHeader::read_from_prefix(&e.header.in_out)
            .map(|(h, _)| h)
            .unwrap_or_default();
        let outcome = if header.opcode == Opcode::Write as u32 {
            // WRITE data is taken straight from the payload buffer; the
            // 8-byte reply goes through a small buffer and is copied after.
            let mut small = [0u8; 64];
            let body = Body::Split {
                op: &e.header.op_in,
                payload: &e.payload[..size],
            };
            let outcome = server.serve_request(shard, &header, body, &mut small);
            if let Outcome::Reply(Ok(n)) = outcome {
                e.payload[..n].copy_from_slice(&small[..n]);
            }
            outcome
        } else {
            self.scratch[..size].copy_from_slice(&e.payload[..size]);
            let body = Body::Split {
                op: &e.header.op_in,
                payload: &self.scratch[..size],
            };
            // READ data lands directly in the payload buffer.
            server.serve_request(shard, &header, body, &mut e.payload)
        };
        let result = match outcome {
            Outcome::Reply(r) => r,
            // Nothing that takes no reply should come through the ring; the
            // entry must be committed all the same to get the next request.
            Outcome::None => Ok(0),
        };
        let out = reply::out_header(header.unique, result);
        e.header.in_out[..size_of::<abi::OutHeader>()].copy_from_slice(out.as_bytes());
        e.header.ring_ent_in_out.payload_sz = out.len - size_of::<abi::OutHeader>() as u32;
        commit_id
    }
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

impl Transport for UringQueue {
    fn name(&self) -> &'static str {
        "uring"
    }

    fn serve<F: Filesystem>(self, server: &Server<F>) -> io::Result<()> {
        let dev = self.dev.clone();
        let qid = self.qid;
        let result = self.run(server);
        if let Err(e) = &result {
            tracing::error!(qid, "io_uring queue failed: {e}");
            abandon_ring(&dev, qid);
        }
        result
    }
}

impl UringQueue {
    fn run<F: Filesystem>(mut self, server: &Server<F>) -> io::Result<()> {
        if !self.pin {
        } else if let Err(e) = sys::pin_to_cpu(self.qid as usize) {
            tracing::debug!(qid = self.qid, "cannot pin queue thread: {e}");
        }
        let shard = server.stats.shard(self.name());
        let mut live = self.entries.len();
        for idx in 0..live {
            self.push_register(idx)?;
        }
        while live > 0 {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            let mut ready = std::mem::take(&mut self.ready);
            ready.extend(
                self.ring
                    .completion()
                    .map(|cqe| (cqe.user_data() as usize, cqe.result())),
            );
            for &(idx, res) in &ready {
                if res == 0 {
                    let commit_id = self.serve_entry(server, &shard, idx);
                    self.push_commit(idx, commit_id)?;
                } else if res == -libc::EAGAIN {
                    // REGISTER raced the INIT reply: try again shortly.
                    std::thread::sleep(Duration::from_millis(1));
                    self.push_register(idx)?;
                } else {
                    // ENOTCONN/ECONNABORTED at unmount, or a refused
                    // REGISTER (the kernel then falls back to /dev/fuse).
                    if !matches!(-res, libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED) {
                        tracing::warn!(
                            qid = self.qid,
                            "io_uring entry ended: {}",
                            io::Error::from_raw_os_error(-res)
                        );
                    }
                    live -= 1;
                }
            }
            ready.clear();
            self.ready = ready;
        }
        tracing::debug!(qid = self.qid, "io_uring queue stopped");
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
}
