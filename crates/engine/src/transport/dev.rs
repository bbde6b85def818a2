//! The /dev/fuse transport: each worker reads requests from its own fd
//! (cloned with FUSE_DEV_IOC_CLONE) into its own preallocated buffer and
//! answers on the same fd with one write. With polling on, the workers
//! read in turn as the relay says (see `relay`).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use fastfuse_abi as abi;
use zerocopy::{FromBytes, IntoBytes};

use super::relay::{Polled, Relay, Spinner, Turn};
use super::{Server, Transport};
use crate::deferred::ReplyTo;
use crate::filesystem::Filesystem;
use crate::gate::Reading;
use crate::init::PAGE_SIZE;
use crate::reply::{self, Outcome};
use crate::request::{self, Body};
use crate::splice::{Pipe, PipeData, MIN_SPLICED_WRITE};
use crate::stats::Shard;
use crate::sys;

const HEADER: usize = size_of::<abi::OutHeader>();

/// One /dev/fuse worker: an fd and two buffers, allocated before serving so
/// that the READ and WRITE paths never allocate; with splicing, a pipe too.
pub(crate) struct DevWorker {
    fd: Arc<OwnedFd>,
    request: Vec<u8>,
    reply: Vec<u8>,
    pipe: Option<Pipe>,
    /// How much large WRITEs dominate lately (see [`DevWorker::note`]).
    splice_score: u8,
    /// Whether it is in read(2), for a pause's signal.
    reading: Arc<Reading>,
    /// Polls for the next request before sleeping, if the session does.
    spinner: Option<Spinner>,
    /// With polling: when this worker may read (taken out by `serve`).
    relay: Option<Arc<Relay>>,
    /// It serves only what io_uring does not carry: after a FORGET it
    /// lets more gather before it reads again (see [`FORGET_GATHER`]).
    gathers_forgets: bool,
}

/// How long the /dev/fuse worker beside io_uring queues waits after a
/// FORGET before it reads again. The kernel sends FORGETs down /dev/fuse
/// whatever the transport, one per inode it drops, and reads them out as
/// one BATCH_FORGET when several are queued: an `rm -rf` over io_uring
/// woke this worker for each removed file. Nobody waits for a FORGET; an
/// INTERRUPT, the other request that comes this way, waits this long at
/// worst.
const FORGET_GATHER: std::time::Duration = std::time::Duration::from_millis(1);

/// Splicing costs every request a syscall and the kernel a page, and pays
/// only for large WRITEs, so a worker splices only while they dominate: a
/// large WRITE adds [`SCORE_WRITE`] to its score (up to [`SCORE_MAX`]),
/// anything else takes one off, and it splices from [`SCORE_ON`] up. Two
/// large WRITEs in a row turn splicing on; metadata work turns it off
/// within a dozen requests.
const SCORE_WRITE: u8 = 4;
const SCORE_MAX: u8 = 16;
const SCORE_ON: u8 = 8;

/// Allocates a buffer and faults its pages in, locking them when allowed:
/// a page fault while serving writeback could wait on that very writeback.
pub(crate) fn prepared_buffer(len: usize, lock: bool) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    if !(lock && sys::mlock(&buf).is_ok()) {
        // Touch every page so that it is resident now rather than later.
        // Volatile: the buffer is known to be zeroed (calloc), so plain
        // stores of zero may be dropped by the optimizer.
        sys::prefault(&mut buf);
        if lock {
            tracing::debug!(
                "mlock of a {len}-byte buffer refused (RLIMIT_MEMLOCK); pages prefaulted"
            );
        }
    }
    buf
}

impl DevWorker {
    /// A worker on `fd`; `splice_pipe` is the pipe size to splice requests
    /// through, if any (the worker reads them if the pipe cannot be had).
    pub(crate) fn new(
        fd: Arc<OwnedFd>,
        request_size: usize,
        reply_size: usize,
        lock: bool,
        splice_pipe: Option<usize>,
        reading: Arc<Reading>,
        relay: Option<(Arc<Relay>, std::time::Duration)>,
    ) -> Self {
        let pipe = splice_pipe.and_then(|want| match Pipe::new(want) {
            Ok(pipe) if pipe.max_write() + PAGE_SIZE >= request_size => Some(pipe),
            Ok(_) => {
                tracing::warn!("the splice pipe came out smaller than max_write; reading");
                None
            }
            Err(e) => {
                tracing::warn!("no pipe to splice through ({e}); reading");
                None
            }
        });
        DevWorker {
            fd,
            request: prepared_buffer(request_size, lock),
            reply: prepared_buffer(reply_size + HEADER, lock),
            pipe,
            splice_score: 0,
            reading,
            spinner: relay.as_ref().map(|(_, budget)| Spinner::new(*budget)),
            relay: relay.map(|(relay, _)| relay),
            gathers_forgets: false,
        }
    }

    /// This worker serves beside io_uring queues: it lets FORGETs gather
    /// (see [`FORGET_GATHER`]).
    pub(crate) fn gathering_forgets(mut self) -> Self {
        self.gathers_forgets = true;
        self
    }

    /// Reads one request into the request buffer; its length.
    fn receive(&mut self) -> io::Result<usize> {
        let (fd, request) = (&self.fd, &mut self.request);
        sleeping(&self.reading, &mut self.spinner, || {
            sys::read(fd.as_fd(), request)
        })
    }

    /// Counts a request of `n` bytes toward the splicing decision.
    fn note(&mut self, header: &abi::InHeader, n: usize) {
        let large_write =
            header.opcode == abi::Opcode::Write as u32 && n >= WRITE_HEAD + MIN_SPLICED_WRITE;
        self.splice_score = if large_write {
            (self.splice_score + SCORE_WRITE).min(SCORE_MAX)
        } else {
            self.splice_score.saturating_sub(1)
        };
    }

    /// Serves one request read into the request buffer.
    fn serve_read<F: Filesystem>(&mut self, server: &Server<F>, shard: &Shard, n: usize) -> Next {
        let start = self.spinner.is_some().then(std::time::Instant::now);
        let buf = &self.request[..n];
        let (header, body) = match request::decode_header(buf) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("malformed request header: {e}");
                // Answer it if at least the unique id can be read, so that
                // the caller does not hang.
                return match buf.get(8..16).and_then(|b| b.try_into().ok()) {
                    Some(unique) => {
                        let unique = u64::from_ne_bytes(unique);
                        send(&self.fd, &mut self.reply, unique, Err(crate::Errno::EIO))
                    }
                    None => Next::Retry,
                };
            }
        };
        let outcome = server.serve_request(
            shard,
            &header,
            Body::Contiguous(body),
            payload(&mut self.reply),
            ReplyTo::Dev(&self.fd),
        );
        self.note(&header, n);
        let next = match outcome {
            Outcome::Reply(result) => send(&self.fd, &mut self.reply, header.unique, result),
            Outcome::None | Outcome::Deferred => Next::Retry,
        };
        let forget =
            [abi::Opcode::Forget as u32, abi::Opcode::BatchForget as u32].contains(&header.opcode);
        if forget && self.gathers_forgets {
            std::thread::sleep(FORGET_GATHER);
        }
        if let (Some(s), Some(start)) = (&mut self.spinner, start) {
            let listing = [abi::Opcode::Readdir as u32, abi::Opcode::Readdirplus as u32]
                .contains(&header.opcode);
            let sent = match outcome {
                Outcome::Reply(Ok(n)) => n,
                _ => 0,
            };
            s.served(listing.then(|| (start.elapsed(), sent)));
        }
        next
    }

    /// Serves one request that is in the pipe (`n` bytes): a large WRITE
    /// leaves its data there for [`Filesystem::write_spliced`]; anything
    /// else is read into the request buffer and served as if read.
    fn serve_spliced<F: Filesystem>(
        &mut self,
        server: &Server<F>,
        shard: &Shard,
        n: usize,
    ) -> Next {
        let Some(pipe) = &self.pipe else {
            return Next::Stop;
        };
        let head = n.min(WRITE_HEAD);
        if let Err(e) = pipe.read_exact(&mut self.request[..head]) {
            return self.pipe_failed(e, None);
        }
        let Some((header, arg)) = spliceable(&self.request[..head], n) else {
            if let Err(e) = pipe.read_exact(&mut self.request[head..n]) {
                let unique = abi::InHeader::read_from_prefix(&self.request[..head]);
                return self.pipe_failed(e, unique.ok().map(|(h, _)| h.unique));
            }
            return self.serve_read(server, shard, n);
        };
        let (_, scratch) = self.request.split_at_mut(WRITE_HEAD);
        let mut data = PipeData::new(pipe.read_end(), n - WRITE_HEAD, scratch);
        let outcome = server.serve_spliced_write(
            shard,
            &header,
            &arg,
            &mut data,
            payload(&mut self.reply),
            ReplyTo::Dev(&self.fd),
        );
        // Whatever the filesystem left must go before the next request.
        let drained = pipe.discard(data.remaining());
        if let Some(s) = &mut self.spinner {
            s.served(None);
        }
        self.note(&header, n);
        let next = match outcome {
            Outcome::Reply(result) => send(&self.fd, &mut self.reply, header.unique, result),
            Outcome::None | Outcome::Deferred => Next::Retry,
        };
        if let Err(e) = drained {
            self.pipe_failed(e, None);
        }
        next
    }

    /// The pipe holds an unknown remainder: stop using it, and answer the
    /// request it was carrying, if known, with EIO.
    fn pipe_failed(&mut self, e: io::Error, unique: Option<u64>) -> Next {
        tracing::error!("the splice pipe failed ({e}); reading requests from now on");
        self.pipe = None;
        match unique {
            Some(unique) => send(&self.fd, &mut self.reply, unique, Err(crate::Errno::EIO)),
            None => Next::Retry,
        }
    }
}

/// Runs `read`, one blocking read(2) or splice(2) of a request, where a
/// pause may signal it, and tells the spinner how long it slept.
fn sleeping<T>(reading: &Reading, spinner: &mut Option<Spinner>, read: impl FnOnce() -> T) -> T {
    let start = spinner.is_some().then(std::time::Instant::now);
    reading.enter();
    let r = read();
    reading.leave();
    if let (Some(s), Some(start)) = (spinner, start) {
        s.slept(start.elapsed());
    }
    r
}

/// A BATCH_FORGET of more nodes than this takes a worker long enough
/// (tens of microseconds and up) for the relay to hand the reader's role
/// on at once (see [`Relay::long_to_serve`]); a smaller one is served
/// quicker than a standby wakes.
const LONG_FORGET: u32 = 64;

/// Whether the request of `header` (and `body`, what follows it) is a
/// BATCH_FORGET of more than [`LONG_FORGET`] nodes.
fn long_forget(header: &abi::InHeader, body: &[u8]) -> bool {
    header.opcode == abi::Opcode::BatchForget as u32
        && abi::BatchForgetIn::read_from_prefix(body).is_ok_and(|(arg, _)| arg.count > LONG_FORGET)
}

/// Bytes of a WRITE before its data: the header and `fuse_write_in`.
const WRITE_HEAD: usize = size_of::<abi::InHeader>() + size_of::<abi::WriteIn>();

/// The header and argument of a request of `n` bytes whose first bytes are
/// `head`, if it is a WRITE large enough to leave its data in the pipe.
/// Anything odd is left to the decoder, which answers it.
fn spliceable(head: &[u8], n: usize) -> Option<(abi::InHeader, abi::WriteIn)> {
    let (header, rest) = abi::InHeader::read_from_prefix(head).ok()?;
    let arg = abi::WriteIn::read_from_bytes(rest).ok()?;
    let ok = header.opcode == abi::Opcode::Write as u32
        && header.len as usize == n
        && header.total_extlen == 0
        && arg.size as usize == n - WRITE_HEAD
        && arg.size as usize >= MIN_SPLICED_WRITE;
    ok.then_some((header, arg))
}

/// The reply buffer past its header.
fn payload(reply: &mut [u8]) -> &mut [u8] {
    &mut reply[HEADER..]
}

/// Sends the reply whose payload is in `reply` past the header.
fn send(fd: &OwnedFd, reply: &mut [u8], unique: u64, result: Result<usize, crate::Errno>) -> Next {
    let out = reply::out_header(unique, result);
    reply[..HEADER].copy_from_slice(out.as_bytes());
    match sys::writev(fd.as_fd(), &[&reply[..out.len as usize]]) {
        Ok(_) => Next::Retry,
        Err(e) => classify(&e, "reply"),
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
        let relay = self.relay.take();
        loop {
            let next = match &relay {
                Some(relay) => self.relayed(relay, server, &shard),
                None => self.next(server, &shard, None),
            };
            if matches!(next, Next::Stop) {
                if let Some(relay) = &relay {
                    relay.end();
                }
                return Ok(());
            }
            // Checked between requests, so that a pause never leaves one
            // half served: a worker blocked in read(2) is woken by a signal
            // (EINTR, no request taken) and lands here, a polling or
            // standing-by one is told to look.
            if server.gate.is_closed() && !server.gate.wait() {
                return Ok(());
            }
        }
    }
}

impl DevWorker {
    /// Serves the next request as the relay has it: takes the reader's
    /// role and polls (or, with every worker reading, just reads), frees
    /// the role saying whose request it read, then serves.
    fn relayed<F: Filesystem>(&mut self, relay: &Relay, server: &Server<F>, shard: &Shard) -> Next {
        let pausing = || server.gate.is_closed();
        match relay.take(pausing) {
            Turn::Poll => {}
            Turn::Read => return self.next(server, shard, Some(relay)),
            Turn::Pause => return Next::Retry,
            Turn::Ended => return Next::Stop,
        }
        if let Some(spinner) = &mut self.spinner {
            match spinner.wait(self.fd.as_fd(), pausing, || server.dispatcher.fs.idle()) {
                Polled::Ready => {}
                Polled::Sleep => relay.sleeping(),
                Polled::Stopped => {
                    relay.give_up();
                    return Next::Retry;
                }
            }
        }
        self.next(server, shard, Some(relay))
    }

    /// Reads (or splices) the next request and serves it; in between, the
    /// relay, if any, is told whose request it was (its pid field; 0 when
    /// nothing was read, `None` when the header is still in the pipe).
    fn next<F: Filesystem>(
        &mut self,
        server: &Server<F>,
        shard: &Shard,
        relay: Option<&Relay>,
    ) -> Next {
        match &self.pipe {
            Some(pipe) if self.splice_score >= SCORE_ON => {
                let (fd, len) = (&self.fd, self.request.len());
                let r = sleeping(&self.reading, &mut self.spinner, || {
                    sys::splice(fd.as_fd(), None, pipe.write_end(), None, len, 0)
                });
                if let Some(relay) = relay {
                    relay.took(if r.is_ok() { None } else { Some(0) });
                }
                match r {
                    Ok(n) => self.serve_spliced(server, shard, n),
                    Err(e) => classify(&e, "splice"),
                }
            }
            _ => {
                let r = self.receive();
                if let Some(relay) = relay {
                    let header = r
                        .as_ref()
                        .ok()
                        .and_then(|&n| abi::InHeader::read_from_prefix(&self.request[..n]).ok());
                    relay.took(Some(header.as_ref().map_or(0, |(h, _)| h.pid)));
                    if header.is_some_and(|(h, body)| long_forget(&h, body)) {
                        relay.long_to_serve();
                    }
                }
                match r {
                    Ok(n) => self.serve_read(server, shard, n),
                    Err(e) => classify(&e, "read"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(opcode: abi::Opcode) -> abi::InHeader {
        abi::InHeader {
            opcode: opcode as u32,
            ..Default::default()
        }
    }

    #[test]
    fn only_a_large_batch_forget_is_long_to_serve() {
        let batch = |count: u32| abi::BatchForgetIn { count, dummy: 0 };
        let forget = header(abi::Opcode::BatchForget);
        assert!(long_forget(&forget, batch(LONG_FORGET + 1).as_bytes()));
        assert!(!long_forget(&forget, batch(LONG_FORGET).as_bytes()));
        assert!(!long_forget(&forget, &[0; 3]), "a truncated body");
        let lookup = header(abi::Opcode::Lookup);
        assert!(!long_forget(&lookup, batch(u32::MAX).as_bytes()));
    }
}
