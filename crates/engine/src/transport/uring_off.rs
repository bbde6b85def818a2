//! The io_uring transport in a build without the `io-uring` feature: the
//! same names, but no queue can be made, so none exists. INIT never asks
//! for FUSE_OVER_IO_URING in such a build, and a session configured for
//! io_uring only fails to start (`SessionError::Transport`).

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use fastfuse_abi as abi;

use super::Server;
use crate::filesystem::Filesystem;

/// An io_uring queue: none can exist.
#[derive(Debug)]
pub(crate) enum UringQueue {}

/// Where deferred io_uring requests wait: none can exist.
#[derive(Debug)]
pub(crate) enum Parking {}

impl Parking {
    /// Never called: there is no parked entry to answer.
    pub(crate) fn answer(&self, _: usize, _: &abi::OutHeader, _: &[u8]) {
        match *self {}
    }
}

/// No queues.
pub(crate) fn possible_cpus() -> usize {
    0
}

/// No ring entries to size.
pub(crate) fn payload_size(_max_write: u32, _max_pages: u16) -> usize {
    0
}

impl UringQueue {
    /// Always fails: the build has no io_uring.
    pub(crate) fn new_set(
        _depth: usize,
        _payload: usize,
        _dev: &Arc<OwnedFd>,
        _lock: bool,
        _local_wake: bool,
    ) -> io::Result<Vec<Arc<UringQueue>>> {
        Err(unsupported())
    }

    /// Always fails: the build has no io_uring.
    pub(crate) fn adopt_set(
        _fd: OwnedFd,
        _depth: usize,
        _payload: usize,
        _dev: &Arc<OwnedFd>,
        _lock: bool,
        _local_wake: bool,
    ) -> io::Result<Vec<Arc<UringQueue>>> {
        Err(unsupported())
    }

    /// Never called.
    pub(crate) fn set_mountpoint(&self, _: PathBuf, _: u64) {
        match *self {}
    }

    /// Never called.
    pub(crate) fn thread_name(&self) -> String {
        match *self {}
    }

    /// Never called.
    pub(crate) fn serve<F: Filesystem>(&self, _: &Server<F>) -> io::Result<()> {
        match *self {}
    }

    /// No queues, no arena.
    pub(crate) fn arena_fd(_: &[Arc<UringQueue>]) -> Option<BorrowedFd<'_>> {
        None
    }

    /// No queues to refuse.
    pub(crate) fn undrainable(_: &[Arc<UringQueue>]) -> Option<String> {
        None
    }

    /// No queues to drain.
    pub(crate) fn drain(_: &[Arc<UringQueue>]) -> io::Result<()> {
        Ok(())
    }

    /// Never called.
    pub(crate) fn finish_drain(&self) {
        match *self {}
    }

    /// Never called.
    pub(crate) fn restart(&self) -> io::Result<()> {
        match *self {}
    }
}

fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "built without the io-uring feature",
    )
}
