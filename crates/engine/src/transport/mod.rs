//! Transports: how requests arrive and replies leave. Each transport owns
//! its buffers and its I/O; decoding, dispatch and statistics are shared
//! through [`Server::serve_request`].

pub(crate) mod dev;

use std::time::Instant;

use fastfuse_abi::{self as abi, Opcode};

use crate::dispatch::Dispatcher;
use crate::errno::Errno;
use crate::filesystem::Filesystem;
use crate::reply::Outcome;
use crate::request::{self, Body, Layout};
use crate::stats::Shard;

/// What every worker of a session shares.
pub(crate) struct Server<F> {
    pub(crate) dispatcher: Dispatcher<F>,
    pub(crate) layout: Layout,
    pub(crate) stats: std::sync::Arc<crate::stats::Stats>,
    /// Bytes a request buffer needs (largest WRITE plus headers).
    pub(crate) request_buffer_size: usize,
    /// Bytes a reply payload may need (largest READ plus the largest
    /// reply struct).
    pub(crate) reply_buffer_size: usize,
}

/// A way of receiving requests and sending replies. Workers of one session
/// may use different transports (io_uring queues plus a /dev/fuse reader for
/// FORGET and INTERRUPT).
pub(crate) trait Transport: Send + 'static {
    /// The name statistics report ("dev", "uring").
    fn name(&self) -> &'static str;

    /// Serves requests until the connection ends.
    fn serve<F: Filesystem>(self, server: &Server<F>) -> std::io::Result<()>;
}

impl<F: Filesystem> Server<F> {
    /// Decodes and serves one request whose header has been read; `out` is
    /// the transport's reply payload area.
    pub(crate) fn serve_request(
        &self,
        shard: &Shard,
        header: &abi::InHeader,
        body: Body<'_>,
        out: &mut [u8],
    ) -> Outcome {
        let start = Instant::now();
        let outcome = match request::decode(header, body, self.layout) {
            Ok(op) => {
                if let request::Operation::Write { data, .. } = &op {
                    shard.record_write(data.len());
                }
                self.dispatcher.handle(header, op, out)
            }
            Err(e) => {
                tracing::warn!(unique = header.unique, "malformed request: {e}");
                // FORGET-like requests take no reply even when malformed.
                match Opcode::from_raw(header.opcode) {
                    Some(Opcode::Forget | Opcode::BatchForget | Opcode::Interrupt) => Outcome::None,
                    _ => Outcome::Reply(Err(Errno::EIO)),
                }
            }
        };
        let failed = matches!(outcome, Outcome::Reply(Err(_)));
        shard.record(header.opcode, start.elapsed(), failed);
        outcome
    }
}
