//! Deferred replies: a request a filesystem answers later, from any thread,
//! so that a method that must wait (for a lock, the network, a disk) does
//! not hold the worker that called it.
//!
//! A method calls [`Caller::defer`](crate::Caller::defer), keeps the
//! [`Deferred`] it gets, and returns; whatever it returns is then ignored.
//! The worker goes on to the next request. The reply leaves when the
//! handle is answered: over /dev/fuse as one write on the fd the request
//! came from, over io_uring by committing the ring entry that carried it
//! (the queue registers a spare entry meanwhile, so that a deferred
//! request never takes an entry from the others).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use zerocopy::{Immutable, IntoBytes};

use crate::errno::Errno;
use crate::interrupt::Interrupts;
use crate::reply;
use crate::sys;
use crate::transport::uring::Parking;
use crate::types::{AttrReply, Entry, Unique};

/// Where the reply of a request goes, as the transport that read it knows.
#[derive(Clone, Copy)]
// Without the io-uring feature the Uring variants hold uninhabited types
// and are never made.
#[cfg_attr(not(feature = "io-uring"), allow(dead_code))]
pub(crate) enum ReplyTo<'a> {
    /// Nowhere: the request cannot be deferred (a detached [`Caller`]).
    ///
    /// [`Caller`]: crate::Caller
    Nowhere,
    /// The /dev/fuse fd the request was read from (each cloned fd has its
    /// own list of requests being processed).
    Dev(&'a Arc<OwnedFd>),
    /// The io_uring queue whose entry `.1` carried the request.
    Uring(&'a Arc<Parking>, usize),
}

#[derive(Debug)]
enum Sink {
    Dev(Arc<OwnedFd>),
    Uring(Arc<Parking>, usize),
}

/// A request that will be answered later. `Send`: answer it from any
/// thread. Dropping it unanswered answers EIO (and logs it), so the caller
/// never waits forever.
#[derive(Debug)]
#[must_use = "a deferred request is answered EIO when dropped"]
pub struct Deferred {
    unique: u64,
    opcode: u32,
    interrupts: Arc<Interrupts>,
    /// None once answered.
    sink: Option<Sink>,
}

impl Deferred {
    pub(crate) fn new(
        unique: u64,
        opcode: u32,
        interrupts: Arc<Interrupts>,
        to: ReplyTo<'_>,
    ) -> Option<Deferred> {
        let sink = match to {
            ReplyTo::Nowhere => return None,
            ReplyTo::Dev(fd) => Sink::Dev(fd.clone()),
            ReplyTo::Uring(parking, idx) => Sink::Uring(parking.clone(), idx),
        };
        interrupts.start_deferred();
        Some(Deferred {
            unique,
            opcode,
            interrupts,
            sink: Some(sink),
        })
    }

    /// The request's id.
    pub fn unique(&self) -> Unique {
        Unique(self.unique)
    }

    /// Whether the kernel has interrupted the request (the caller got a
    /// signal) or the connection has ended: a wait should give up (EINTR).
    pub fn is_interrupted(&self) -> bool {
        self.interrupts.contains(self.unique)
    }

    /// Runs `wake` once, on the thread that learns it, when the request is
    /// interrupted or the connection ends; at once if that has happened
    /// already. It should only nudge whoever waits (set a flag, signal a
    /// thread), never block. Not called once the request is answered.
    pub fn on_interrupt(&self, wake: impl FnOnce() + Send + 'static) {
        self.interrupts.on_interrupt(self.unique, Box::new(wake));
    }

    /// Answers with success and no payload (SETLK, UNLINK, FSYNC, ...).
    pub fn ok(self) {
        self.reply(Ok(&[]));
    }

    /// Answers with an error.
    pub fn error(self, e: Errno) {
        self.reply(Err(e));
    }

    /// Answers with `attr` (GETATTR, SETATTR).
    pub fn attr(self, attr: &AttrReply) {
        self.reply_struct(&reply::attr_out(attr));
    }

    /// Answers with `entry` (LOOKUP, MKDIR, ...).
    pub fn entry(self, entry: &Entry) {
        self.reply_struct(&reply::entry_out(entry));
    }

    /// Answers with the bytes of a wire struct.
    pub fn reply_struct<T: IntoBytes + Immutable>(self, value: &T) {
        self.reply(Ok(value.as_bytes()));
    }

    /// Answers with raw payload bytes (READ data, READLINK's target, ...)
    /// or an error.
    pub fn reply(mut self, result: Result<&[u8], Errno>) {
        self.send(result);
    }

    fn send(&mut self, result: Result<&[u8], Errno>) {
        let Some(sink) = self.sink.take() else {
            return;
        };
        let payload = result.unwrap_or(&[]);
        let header = reply::out_header(self.unique, result.map(<[u8]>::len));
        match sink {
            Sink::Dev(fd) => {
                match sys::writev(fd.as_fd(), &[header.as_bytes(), payload]) {
                    Ok(_) => {}
                    // ENOENT: the kernel gave up on the request (it was
                    // interrupted and answered, or aborted); ENODEV: the
                    // connection is gone. Nobody waits for this answer.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENODEV)) => {}
                    Err(e) => tracing::error!(
                        unique = self.unique,
                        opcode = self.opcode,
                        "cannot send a deferred reply: {e}"
                    ),
                }
            }
            Sink::Uring(parking, idx) => parking.answer(idx, &header, payload),
        }
        self.interrupts.finish_deferred(self.unique);
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        if self.sink.is_some() {
            tracing::error!(
                unique = self.unique,
                opcode = self.opcode,
                "a deferred request was dropped unanswered; answering EIO"
            );
            self.send(Err(Errno::EIO));
        }
    }
}
