//! Transports: how requests arrive and replies leave. Each transport owns
//! its buffers and its I/O; decoding, dispatch and statistics are shared
//! through [`Server::serve_request`].

pub(crate) mod dev;
pub(crate) mod uring;

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

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::sync::Arc;

    use super::*;
    use crate::request::Caller;
    use crate::stats::Stats;
    use crate::types::{Entry, FileHandle, NodeId, Opened, Xattr};
    use crate::OpenFlags;

    /// Answers a few operations with fixed values.
    struct Fixed;

    impl Filesystem for Fixed {
        fn read(
            &self,
            _: &Caller,
            _: NodeId,
            _: FileHandle,
            offset: u64,
            buf: &mut [u8],
        ) -> Result<usize, Errno> {
            buf.fill(offset as u8);
            Ok(buf.len())
        }
        fn getxattr(&self, _: &Caller, _: NodeId, _: &OsStr, _: u32) -> Result<Xattr, Errno> {
            Ok(Xattr::Data(b"value".to_vec()))
        }
        fn create(
            &self,
            _: &Caller,
            _: NodeId,
            _: &OsStr,
            mode: u32,
            _: u32,
            _: OpenFlags,
        ) -> Result<(Entry, Opened), Errno> {
            let entry = Entry {
                node: NodeId(77),
                generation: 1,
                attr: abi::Attr {
                    ino: 77,
                    mode,
                    ..Default::default()
                },
                attr_timeout: Default::default(),
                entry_timeout: Default::default(),
            };
            Ok((
                entry,
                Opened {
                    fh: FileHandle(5),
                    open_flags: 0,
                    backing_id: 0,
                },
            ))
        }
        fn setlk(
            &self,
            req: &Caller,
            _: NodeId,
            _: FileHandle,
            _: u64,
            _: crate::Lock,
            _: bool,
            _: bool,
        ) -> Result<(), Errno> {
            if req.is_interrupted() {
                Err(Errno::EINTR)
            } else {
                Ok(())
            }
        }
    }

    fn server() -> (Server<Fixed>, Arc<Shard>) {
        let stats = Arc::new(Stats::default());
        let shard = stats.shard("test");
        let server = Server {
            dispatcher: Dispatcher::new(Fixed),
            layout: Layout::default(),
            stats,
            request_buffer_size: 8192,
            reply_buffer_size: 8192,
        };
        (server, shard)
    }

    fn header(opcode: Opcode, unique: u64) -> abi::InHeader {
        abi::InHeader {
            opcode: opcode as u32,
            unique,
            nodeid: 1,
            ..Default::default()
        }
    }

    fn serve(
        s: &Server<Fixed>,
        shard: &Shard,
        h: abi::InHeader,
        body: &[u8],
        out: &mut [u8],
    ) -> Outcome {
        s.serve_request(shard, &h, Body::Contiguous(body), out)
    }

    #[test]
    fn read_fills_the_reply_buffer_up_to_the_requested_size() {
        let (s, shard) = server();
        let arg = abi::ReadIn {
            offset: 3,
            size: 100,
            ..Default::default()
        };
        let mut out = [0u8; 4096];
        let r = serve(
            &s,
            &shard,
            header(Opcode::Read, 1),
            zerocopy::IntoBytes::as_bytes(&arg),
            &mut out,
        );
        assert_eq!(r, Outcome::Reply(Ok(100)));
        assert!(out[..100].iter().all(|&b| b == 3));
        assert_eq!(out[100], 0);
    }

    #[test]
    fn getxattr_probes_size_and_reports_erange() {
        let (s, shard) = server();
        let body = |size: u32| {
            let mut v =
                zerocopy::IntoBytes::as_bytes(&abi::GetxattrIn { size, padding: 0 }).to_vec();
            v.extend_from_slice(b"user.x\0");
            v
        };
        let mut out = [0u8; 64];
        // size 0: a fuse_getxattr_out with the length.
        assert_eq!(
            serve(&s, &shard, header(Opcode::Getxattr, 1), &body(0), &mut out),
            Outcome::Reply(Ok(8))
        );
        assert_eq!(&out[0..4], &5u32.to_ne_bytes());
        // Too small: ERANGE.
        assert_eq!(
            serve(&s, &shard, header(Opcode::Getxattr, 2), &body(3), &mut out),
            Outcome::Reply(Err(Errno::ERANGE))
        );
        // Large enough: the bytes.
        assert_eq!(
            serve(&s, &shard, header(Opcode::Getxattr, 3), &body(64), &mut out),
            Outcome::Reply(Ok(5))
        );
        assert_eq!(&out[..5], b"value");
    }

    #[test]
    fn create_reply_is_entry_out_then_open_out() {
        let (s, shard) = server();
        let mut body = zerocopy::IntoBytes::as_bytes(&abi::CreateIn {
            flags: 0,
            mode: 0o100644,
            umask: 0,
            open_flags: 0,
        })
        .to_vec();
        body.extend_from_slice(b"new\0");
        let mut out = [0u8; 256];
        assert_eq!(
            serve(&s, &shard, header(Opcode::Create, 1), &body, &mut out),
            Outcome::Reply(Ok(144))
        );
        assert_eq!(&out[0..8], &77u64.to_ne_bytes()); // entry_out.nodeid
        assert_eq!(&out[128..136], &5u64.to_ne_bytes()); // open_out.fh
    }

    #[test]
    fn unimplemented_unknown_and_malformed_requests_are_answered() {
        let (s, shard) = server();
        let mut out = [0u8; 64];
        // The default method: ENOSYS.
        assert_eq!(
            serve(&s, &shard, header(Opcode::Lookup, 1), b"x\0", &mut out),
            Outcome::Reply(Err(Errno::ENOSYS))
        );
        let mut unknown = header(Opcode::Lookup, 2);
        unknown.opcode = 4000;
        assert_eq!(
            serve(&s, &shard, unknown, b"", &mut out),
            Outcome::Reply(Err(Errno::ENOSYS))
        );
        // Truncated: EIO, not a panic.
        assert_eq!(
            serve(&s, &shard, header(Opcode::Read, 3), &[0u8; 7], &mut out),
            Outcome::Reply(Err(Errno::EIO))
        );
        assert_eq!(
            serve(&s, &shard, header(Opcode::Lookup, 4), b"no-nul", &mut out),
            Outcome::Reply(Err(Errno::EIO))
        );
        // FORGET takes no reply, even malformed.
        assert_eq!(
            serve(&s, &shard, header(Opcode::Forget, 5), &[0u8; 8], &mut out),
            Outcome::None
        );
        assert_eq!(
            serve(&s, &shard, header(Opcode::Forget, 6), &[0u8; 3], &mut out),
            Outcome::None
        );
    }

    #[test]
    fn interrupt_reaches_the_request_it_names() {
        let (s, shard) = server();
        let mut out = [0u8; 64];
        let irq = abi::InterruptIn { unique: 42 };
        assert_eq!(
            serve(
                &s,
                &shard,
                header(Opcode::Interrupt, 43),
                zerocopy::IntoBytes::as_bytes(&irq),
                &mut out
            ),
            Outcome::None
        );
        let lk = abi::LkIn::default();
        let lk = zerocopy::IntoBytes::as_bytes(&lk);
        assert_eq!(
            serve(&s, &shard, header(Opcode::Setlkw, 42), lk, &mut out),
            Outcome::Reply(Err(Errno::EINTR))
        );
        // Answered requests leave the interrupt set.
        assert_eq!(
            serve(&s, &shard, header(Opcode::Setlkw, 42), lk, &mut out),
            Outcome::Reply(Ok(0))
        );
    }
}
