//! Transports: how requests arrive and replies leave. Each transport owns
//! its buffers and its I/O; decoding, dispatch and statistics are shared
//! through [`Server::serve_request`].

pub(crate) mod dev;
pub(crate) mod relay;
#[cfg(feature = "io-uring")]
pub(crate) mod uring;
#[cfg(not(feature = "io-uring"))]
#[path = "uring_off.rs"]
pub(crate) mod uring;
#[cfg(feature = "io-uring")]
pub(crate) mod uring_arena;
#[cfg(feature = "io-uring")]
pub(crate) mod uring_wake;

use std::time::Instant;

use fastfuse_abi::{self as abi, Opcode};

use crate::deferred::ReplyTo;
use crate::dispatch::Dispatcher;
use crate::errno::Errno;
use crate::filesystem::Filesystem;
use crate::reply::Outcome;
use crate::request::{self, Body, Layout};
use crate::splice::PipeData;
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
    /// Closed by [`BackgroundSession::pause`](crate::BackgroundSession::pause):
    /// /dev/fuse workers park on it before reading another request.
    pub(crate) gate: std::sync::Arc<crate::gate::Gate>,
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
    /// the transport's reply payload area, `to` where a deferred reply goes.
    pub(crate) fn serve_request(
        &self,
        shard: &Shard,
        header: &abi::InHeader,
        body: Body<'_>,
        out: &mut [u8],
        to: ReplyTo<'_>,
    ) -> Outcome {
        let start = Instant::now();
        shard.begin(start);
        let outcome = match request::decode(header, body, self.layout) {
            Ok(op) => {
                if let request::Operation::Write { data, .. } = &op {
                    shard.record_write(data.len());
                }
                let ext = request::extensions(header, body);
                self.dispatcher.handle(header, op, ext, out, to)
            }
            Err(e) => {
                tracing::warn!(unique = header.unique, "malformed request: {e}");
                // FORGET-like requests take no reply even when malformed.
                match Opcode::from_raw(header.opcode) {
                    Some(op) if !op.takes_reply() => Outcome::None,
                    _ => Outcome::Reply(Err(Errno::EIO)),
                }
            }
        };
        shard.end();
        let failed = matches!(outcome, Outcome::Reply(Err(_)));
        shard.record(header.opcode, start.elapsed(), failed);
        outcome
    }

    /// Serves a WRITE whose header and argument have been read and whose
    /// data is still in a pipe.
    pub(crate) fn serve_spliced_write(
        &self,
        shard: &Shard,
        header: &abi::InHeader,
        arg: &abi::WriteIn,
        data: &mut PipeData<'_>,
        out: &mut [u8],
        to: ReplyTo<'_>,
    ) -> Outcome {
        let start = Instant::now();
        shard.begin(start);
        shard.record_write(data.len());
        shard.record_spliced_write();
        let outcome = self
            .dispatcher
            .handle_spliced_write(header, arg, data, out, to);
        shard.end();
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
        fn unlink(&self, _: &Caller, _: NodeId, _: &OsStr) -> Result<(), Errno> {
            panic!("unlink is broken");
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
        fn fsync(&self, req: &Caller, _: NodeId, _: FileHandle, _: bool) -> Result<(), Errno> {
            // Answered later, from another thread.
            let later = req.defer().ok_or(Errno::EXDEV)?;
            assert!(req.defer().is_none(), "a request defers once");
            std::thread::spawn(move || later.ok());
            // Ignored: the request was deferred.
            Err(Errno::EBADF)
        }
        fn flush(&self, req: &Caller, _: NodeId, _: FileHandle, _: u64) -> Result<(), Errno> {
            // Deferred, then dropped unanswered: EIO.
            let _dropped = req.defer();
            Ok(())
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
            gate: Arc::default(),
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
        s.serve_request(shard, &h, Body::Contiguous(body), out, ReplyTo::Nowhere)
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
    fn a_panicking_filesystem_call_is_answered_eio_and_the_worker_goes_on() {
        let (s, shard) = server();
        let mut out = [0u8; 4096];
        assert_eq!(
            serve(&s, &shard, header(Opcode::Unlink, 1), b"name\0", &mut out),
            Outcome::Reply(Err(Errno::EIO))
        );
        let arg = abi::ReadIn {
            size: 10,
            ..Default::default()
        };
        let r = serve(
            &s,
            &shard,
            header(Opcode::Read, 2),
            zerocopy::IntoBytes::as_bytes(&arg),
            &mut out,
        );
        assert_eq!(r, Outcome::Reply(Ok(10)));
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
    fn deferred_requests_are_answered_later_on_the_fd_they_came_from() {
        use std::io::Read;
        let (s, shard) = server();
        let (mut rd, wr) = std::io::pipe().unwrap();
        let dev = Arc::new(std::os::fd::OwnedFd::from(wr));
        let mut out = [0u8; 64];
        let read_reply = |rd: &mut std::io::PipeReader| {
            let mut h = [0u8; 16];
            rd.read_exact(&mut h).unwrap();
            let len = u32::from_ne_bytes(h[0..4].try_into().unwrap());
            let error = i32::from_ne_bytes(h[4..8].try_into().unwrap());
            let unique = u64::from_ne_bytes(h[8..16].try_into().unwrap());
            (len, error, unique)
        };
        let fsync = abi::FsyncIn::default();
        let flush = abi::FlushIn::default();
        for (opcode, unique, body, error) in [
            // Answered from another thread.
            (Opcode::Fsync, 7, zerocopy::IntoBytes::as_bytes(&fsync), 0),
            // Dropped unanswered.
            (
                Opcode::Flush,
                8,
                zerocopy::IntoBytes::as_bytes(&flush),
                -libc::EIO,
            ),
        ] {
            let r = s.serve_request(
                &shard,
                &header(opcode, unique),
                Body::Contiguous(body),
                &mut out,
                ReplyTo::Dev(&dev),
            );
            assert_eq!(r, Outcome::Deferred);
            assert_eq!(read_reply(&mut rd), (16, error, unique));
        }
        // Without a transport to answer through, a request is not deferred:
        // the method's own answer goes.
        let r = serve(
            &s,
            &shard,
            header(Opcode::Fsync, 9),
            zerocopy::IntoBytes::as_bytes(&fsync),
            &mut out,
        );
        assert_eq!(r, Outcome::Reply(Err(Errno::EXDEV)));
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

#[cfg(test)]
mod fuzz {
    //! Random and mutated requests through decode and dispatch, bounded so
    //! that CI runs it in a few seconds.
    use std::ffi::OsStr;

    use proptest::prelude::*;
    use zerocopy::IntoBytes;

    use super::*;
    use crate::request::Caller;
    use crate::stats::Stats;
    use crate::types::{AttrReply, Entry, FileHandle, NodeId, Opened, WriteFlags};

    /// Succeeds at everything, so that decoded requests reach the encoders.
    struct Yes;

    impl Filesystem for Yes {
        fn lookup(&self, _: &Caller, n: NodeId, _: &OsStr) -> Result<Entry, Errno> {
            Ok(Entry {
                node: n,
                generation: 0,
                attr: Default::default(),
                attr_timeout: Default::default(),
                entry_timeout: Default::default(),
            })
        }
        fn getattr(
            &self,
            _: &Caller,
            _: NodeId,
            _: Option<FileHandle>,
        ) -> Result<AttrReply, Errno> {
            Ok(AttrReply {
                attr: Default::default(),
                timeout: Default::default(),
            })
        }
        fn open(&self, _: &Caller, _: NodeId, _: crate::OpenFlags) -> Result<Opened, Errno> {
            Ok(Opened::default())
        }
        fn read(
            &self,
            _: &Caller,
            _: NodeId,
            _: FileHandle,
            _: u64,
            buf: &mut [u8],
        ) -> Result<usize, Errno> {
            Ok(buf.len())
        }
        fn write(
            &self,
            _: &Caller,
            _: NodeId,
            _: FileHandle,
            _: u64,
            d: &[u8],
            _: WriteFlags,
        ) -> Result<u32, Errno> {
            Ok(d.len() as u32)
        }
        fn readdir(
            &self,
            _: &Caller,
            _: NodeId,
            _: FileHandle,
            _: u64,
            out: &mut crate::DirEntries<'_>,
        ) -> Result<(), Errno> {
            while out.push(1, 1, 0, b"name") {}
            Ok(())
        }
    }

    fn valid_bodies() -> Vec<(Opcode, Vec<u8>)> {
        let read = abi::ReadIn {
            size: 4096,
            ..Default::default()
        };
        let mut write = abi::WriteIn {
            size: 16,
            ..Default::default()
        }
        .as_bytes()
        .to_vec();
        write.extend_from_slice(&[7u8; 16]);
        let mut rename = abi::Rename2In {
            newdir: 1,
            flags: 0,
            padding: 0,
        }
        .as_bytes()
        .to_vec();
        rename.extend_from_slice(b"a\0b\0");
        let mut setx = abi::SetxattrIn {
            size: 3,
            ..Default::default()
        }
        .as_bytes()
        .to_vec();
        setx.extend_from_slice(b"user.x\0abc");
        let mut forget = abi::BatchForgetIn { count: 2, dummy: 0 }
            .as_bytes()
            .to_vec();
        forget.extend_from_slice(&[1u8; 32]);
        vec![
            (Opcode::Lookup, b"file\0".to_vec()),
            (Opcode::Read, read.as_bytes().to_vec()),
            (Opcode::Readdir, read.as_bytes().to_vec()),
            (Opcode::Write, write),
            (Opcode::Rename2, rename),
            (Opcode::Setxattr, setx),
            (Opcode::BatchForget, forget),
            (
                Opcode::Getattr,
                abi::GetattrIn::default().as_bytes().to_vec(),
            ),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// A valid request with bytes flipped and its tail cut: served
        /// without panic; if it no longer decodes it is answered EIO (or,
        /// for FORGET-like requests, dropped).
        #[test]
        fn mutated_requests_are_answered(
            which in 0usize..8,
            flips in proptest::collection::vec((0usize..256, any::<u8>()), 0..6),
            cut in 0usize..64,
            extlen in 0u16..3,
        ) {
            let stats = Stats::default();
            let shard = stats.shard("fuzz");
            let server = Server {
                dispatcher: Dispatcher::new(Yes),
                layout: Layout::default(),
                stats: std::sync::Arc::new(Stats::default()),
                request_buffer_size: 8192,
                reply_buffer_size: 8192,
            gate: std::sync::Arc::default(),
            };
            let (opcode, mut body) = valid_bodies().swap_remove(which);
            for (at, byte) in flips {
                let len = body.len().max(1);
                if let Some(b) = body.get_mut(at % len) {
                    *b ^= byte;
                }
            }
            body.truncate(body.len().saturating_sub(cut));
            let header = abi::InHeader {
                len: (40 + body.len()) as u32,
                opcode: opcode as u32,
                unique: 9,
                nodeid: 1,
                total_extlen: extlen,
                ..Default::default()
            };
            let decodes = request::decode(&header, Body::Contiguous(&body), Layout::default()).is_ok();
            let mut out = vec![0u8; 8192];
            let outcome = server.serve_request(&shard, &header, Body::Contiguous(&body), &mut out, ReplyTo::Nowhere);
            if !decodes {
                let silent = matches!(opcode, Opcode::BatchForget);
                prop_assert_eq!(outcome, if silent { Outcome::None } else { Outcome::Reply(Err(Errno::EIO)) });
            }
            if let Outcome::Reply(Ok(n)) = outcome {
                prop_assert!(n <= out.len());
            }
        }

        /// Any opcode (known, unknown, out of range) with any body: FORGET,
        /// BATCH_FORGET, INTERRUPT and NOTIFY_REPLY never get a reply (the
        /// kernel expects none; one would be a protocol error), everything
        /// else always does, decoded or not, with a payload that fits and a
        /// real errno.
        #[test]
        fn exactly_the_requests_that_take_a_reply_get_one(
            // The silent four often, the rest of the table, anything.
            opcode in prop_oneof![
                prop_oneof![Just(2u32), Just(36), Just(41), Just(42)],
                0u32..64,
                any::<u32>(),
            ],
            // Short bodies often: that is where decoding fails.
            body in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..24),
                proptest::collection::vec(any::<u8>(), 0..300),
            ],
            extlen in 0u16..4,
            nodeid in prop_oneof![Just(1u64), any::<u64>()],
            modern in any::<bool>(),
        ) {
            let stats = Stats::default();
            let shard = stats.shard("fuzz");
            let layout = if modern {
                Layout { minor: 45, setxattr_ext: true }
            } else {
                Layout::default()
            };
            let server = Server {
                dispatcher: Dispatcher::new(Yes),
                layout,
                stats: std::sync::Arc::new(Stats::default()),
                request_buffer_size: 8192,
                reply_buffer_size: 8192,
            gate: std::sync::Arc::default(),
            };
            let header = abi::InHeader {
                len: (40 + body.len()) as u32,
                opcode,
                unique: 11,
                nodeid,
                total_extlen: extlen,
                ..Default::default()
            };
            let mut out = vec![0u8; 8192];
            let outcome = server.serve_request(&shard, &header, Body::Contiguous(&body), &mut out, ReplyTo::Nowhere);
            let silent = matches!(
                Opcode::from_raw(opcode),
                Some(Opcode::Forget | Opcode::BatchForget | Opcode::Interrupt | Opcode::NotifyReply)
            );
            match outcome {
                Outcome::None => prop_assert!(silent, "opcode {} got no reply", opcode),
                Outcome::Reply(r) => {
                    prop_assert!(!silent, "opcode {} got a reply", opcode);
                    match r {
                        Ok(n) => prop_assert!(n <= out.len()),
                        Err(e) => prop_assert!((1..4096).contains(&e.raw()), "errno {}", e.raw()),
                    }
                }
                // `Yes` defers nothing, and nothing can defer without a
                // transport to answer through.
                Outcome::Deferred => prop_assert!(false, "opcode {} was deferred", opcode),
            }
        }
    }
}
