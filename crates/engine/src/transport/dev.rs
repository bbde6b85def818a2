//! The /dev/fuse transport: each worker reads requests from its own fd
//! (cloned with FUSE_DEV_IOC_CLONE) into its own preallocated buffer and
//! answers on the same fd with one write.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use fastfuse_abi as abi;
use zerocopy::IntoBytes;

use super::{Server, Transport};
use crate::filesystem::Filesystem;
use crate::reply::{self, Outcome};
use crate::request::{self, Body};
use crate::sys;

const HEADER: usize = size_of::<abi::OutHeader>();

/// One /dev/fuse worker: an fd and two buffers, allocated before serving so
/// that the READ and WRITE paths never allocate.
pub(crate) struct DevWorker {
    fd: Arc<OwnedFd>,
    request: Vec<u8>,
    reply: Vec<u8>,
}

/// Allocates a buffer and faults its pages in, locking them when allowed:
/// a page fault while serving writeback could wait on that very writeback.
pub(crate) fn prepared_buffer(len: usize, lock: bool) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    if !(lock && sys::mlock(&buf).is_ok()) {
        // Touch every page so that it is resident now rather than later.
        for page in buf.chunks_mut(4096) {
            page[0] = 1;
            page[0] = 0;
        }
        if lock {
            tracing::debug!(
                "mlock of a {len}-byte buffer refused (RLIMIT_MEMLOCK); pages prefaulted"
            );
        }
    }
    buf
}

impl DevWorker {
    pub(crate) fn new(
        fd: Arc<OwnedFd>,
        request_size: usize,
        reply_size: usize,
        lock: bool,
    ) -> Self {
        DevWorker {
            fd,
            request: prepared_buffer(request_size, lock),
            reply: prepared_buffer(reply_size + HEADER, lock),
        }
    }
}

/// What to do after a failed read or write on /dev/fuse.
enum Next {
    Retry,
    Stop,
}

fn classify(e: &io::Error, what: &str) -> Next {
    match e.raw_os_error() {
        // The request was interrupted or aborted before we got to it
        // (ENOENT), or a signal arrived: carry on.
        Some(libc::ENOENT | libc::EINTR | libc::EAGAIN) => Next::Retry,
        // The filesystem was unmounted or the connection aborted.
        Some(libc::ENODEV) => Next::Stop,
        _ => {
            tracing::error!("{what} on /dev/fuse failed: {e}");
            Next::Stop
        }
    }
}

impl Transport for DevWorker {
    fn name(&self) -> &'static str {
        "dev"
    }

    fn serve<F: Filesystem>(mut self, server: &Server<F>) -> io::Result<()> {
        let shard = server.stats.shard(self.name());
        loop {
            let n = match sys::read(self.fd.as_fd(), &mut self.request) {
                Ok(n) => n,
                Err(e) => match classify(&e, "read") {
                    Next::Retry => continue,
                    Next::Stop => return Ok(()),
                },
            };
            let buf = &self.request[..n];
            let (header, body) = match request::decode_header(buf) {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!("malformed request header: {e}");
                    // Answer it if at least the unique id can be read, so
                    // that the caller does not hang.
                    match buf.get(8..16).and_then(|b| b.try_into().ok()) {
                        Some(unique) => (
                            abi::InHeader {
                                unique: u64::from_ne_bytes(unique),
                                opcode: 0,
                                ..Default::default()
                            },
                            &[][..],
                        ),
                        None => continue,
                    }
                }
            };
            let (head, payload) = self.reply.split_at_mut(HEADER);
            let outcome = if header.opcode == 0 {
                Outcome::Reply(Err(crate::Errno::EIO))
            } else {
                server.serve_request(&shard, &header, Body::Contiguous(body), payload)
            };
            let Outcome::Reply(result) = outcome else {
                continue;
            };
            let out = reply::out_header(header.unique, result);
            head.copy_from_slice(out.as_bytes());
            let len = out.len as usize;
            if let Err(e) = sys::writev(self.fd.as_fd(), &[&self.reply[..len]]) {
                if let Next::Stop = classify(&e, "reply") {
                    return Ok(());
                }
            }
        }
    }
}
