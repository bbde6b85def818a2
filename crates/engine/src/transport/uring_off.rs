//! The io_uring transport in a build without the `io-uring` feature: the
//! same names, but no queue can be made, so none exists. INIT never asks
//! for FUSE_OVER_IO_URING in such a build, and a session configured for
//! io_uring only fails to start (`SessionError::Transport`).

use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use fastfuse_abi as abi;

use super::{Server, Transport};
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
    pub(crate) fn new(
        _qid: u16,
        _depth: usize,
        _payload: usize,
        _dev: Arc<OwnedFd>,
        _lock: bool,
    ) -> io::Result<UringQueue> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "built without the io-uring feature",
        ))
    }

    /// Never called.
    pub(crate) fn set_mountpoint(&mut self, _: PathBuf) {
        match *self {}
    }

    /// Never called.
    pub(crate) fn thread_name(&self) -> String {
        match *self {}
    }
}

impl Transport for UringQueue {
    fn name(&self) -> &'static str {
        match *self {}
    }

    fn serve<F: Filesystem>(self, _: &Server<F>) -> io::Result<()> {
        match self {}
    }
}
