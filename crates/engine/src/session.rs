//! A session: a mount, its INIT handshake, and the workers serving it.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use fastfuse_abi as abi;
use thiserror::Error;
use zerocopy::IntoBytes;

use crate::background::{BackgroundSession, Serving, WorkerSet};
use crate::config::{Config, TransportKind};
use crate::connection::Connection;
use crate::dispatch::Dispatcher;
use crate::errno::Errno;
use crate::filesystem::Filesystem;
use crate::gate::{Gate, Reading};
use crate::init::{self, InitError, InitReply, Negotiated};
use crate::mount::{self, Mount, MountError, MountOptions};
use crate::reply;
use crate::request::{self, Body, Layout, Operation};
use crate::splice::{Pipe, MIN_SPLICED_WRITE};
#[cfg(feature = "stats")]
use crate::stats;
use crate::stats::{Stats, StatsSnapshot};
use crate::stoppable::StoppableThread;
use crate::sys;
use crate::transport::dev::DevWorker;
use crate::transport::relay::Relay;
use crate::transport::uring::{self, UringQueue};
use crate::transport::{Server, Transport};

/// Why a session could not start or stopped abnormally.
#[derive(Debug, Error)]
pub enum SessionError {
    /// Mounting failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// The kernel's INIT could not be agreed.
    #[error(transparent)]
    Init(#[from] InitError),
    /// The filesystem's `init` refused the connection.
    #[error("the filesystem refused INIT: {0}")]
    FsInit(Errno),
    /// The kernel sent something other than INIT first, or INIT was
    /// malformed.
    #[error("FUSE handshake failed: {0}")]
    Handshake(String),
    /// The transport asked for cannot be had.
    #[error("transport: {0}")]
    Transport(String),
    /// An I/O error, with what was being done.
    #[error("{0}: {1}")]
    Io(&'static str, #[source] io::Error),
}

/// What a session that agreed INIT hands to the one that goes on serving
/// its connection ([`Session::hand_over`], [`Session::resume`]). To hand
/// over to another process, pass `dev` with SCM_RIGHTS (or keep it open
/// across exec) and send the other fields along (`Negotiated` has serde
/// derives with the `serde` feature).
#[derive(Debug)]
pub struct Handover {
    /// The connection's /dev/fuse fd.
    pub dev: OwnedFd,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// The mount's unique id (`STATX_MNT_ID_UNIQUE`): the new session
    /// checks that the mount at `mountpoint` is still this one.
    pub mount_id: u64,
    /// What INIT agreed.
    pub negotiated: Negotiated,
    /// The statistics so far: the new session's counts, and its uptime
    /// (`uptime_secs`), go on from them.
    pub stats: StatsSnapshot,
    /// Over io_uring: the memfd the ring entries live in, drained (see
    /// [`BackgroundSession::pause`](crate::BackgroundSession::pause)). The
    /// new session maps it where the old one had it and serves the
    /// entries from its own rings. None over /dev/fuse.
    pub rings: Option<OwnedFd>,
}

impl Handover {
    /// The handover of the connection `dev` (a descriptor of its own)
    /// mounted as `mount`, which agreed `negotiated` and counted `stats`.
    pub(crate) fn of(
        dev: OwnedFd,
        mount: &Mount,
        negotiated: Negotiated,
        stats: &Stats,
        rings: Option<OwnedFd>,
    ) -> Handover {
        Handover {
            dev,
            mountpoint: mount.mountpoint().to_path_buf(),
            mount_id: mount.unique_id(),
            negotiated,
            stats: stats.snapshot(),
            rings,
        }
    }
}

/// A mounted filesystem that has agreed INIT and is ready to serve.
pub struct Session<F: Filesystem> {
    mount: Arc<Mount>,
    dev: Arc<OwnedFd>,
    server: Arc<Server<F>>,
    connection: Connection,
    config: Config,
    queues: Vec<Arc<UringQueue>>,
    /// The pipe size /dev/fuse workers splice requests through, if they do.
    splice_pipe: Option<usize>,
}

/// Decides the transport once INIT's flags are known, before the reply:
/// with FUSE_OVER_IO_URING agreed, the kernel holds every request until all
/// queues have registered, so the rings must exist before saying yes.
fn prepare_uring(
    out: &mut abi::InitOut,
    negotiated: &mut Negotiated,
    dev: &Arc<OwnedFd>,
    config: &Config,
) -> Result<Vec<Arc<UringQueue>>, SessionError> {
    let required = config.transport == TransportKind::Uring;
    if config.transport == TransportKind::Dev {
        return Ok(Vec::new());
    }
    let unavailable = if !cfg!(feature = "io-uring") {
        Some("this build of fastfuse has no io_uring transport (the io-uring feature)")
    } else if !negotiated.io_uring() {
        Some(
            "the kernel does not offer FUSE_OVER_IO_URING (needs Linux 6.14+ and \
             Y in /sys/module/fuse/parameters/enable_uring)",
        )
    } else {
        None
    };
    if let Some(why) = unavailable {
        if required {
            return Err(SessionError::Transport(why.into()));
        }
        tracing::info!("serving through /dev/fuse: {why}");
        return Ok(Vec::new());
    }
    let refuse = |out: &mut abi::InitOut, negotiated: &mut Negotiated| {
        negotiated.flags &= !abi::init::FUSE_OVER_IO_URING;
        out.flags2 = (negotiated.flags >> 32) as u32;
    };
    let payload = uring::payload_size(negotiated.max_write, negotiated.max_pages);
    // Per queue: `uring_queue_depth` entries, a thread pinned to the
    // queue's CPU for short requests and floating helpers, each with its
    // own ring, for long ones (see transport::uring).
    let depth = config.uring_queue_depth.max(1);
    let queues = UringQueue::new_set(
        depth,
        payload,
        dev,
        config.mlock_buffers,
        config.uring_local_wake,
    );
    match queues {
        Ok(q) => {
            tracing::info!(
                queues = uring::possible_cpus(),
                depth,
                "serving through io_uring"
            );
            Ok(q)
        }
        Err(e) if required => Err(SessionError::Transport(format!(
            "cannot set up io_uring queues: {e}"
        ))),
        Err(e) => {
            tracing::warn!("cannot set up io_uring queues ({e}); serving through /dev/fuse");
            refuse(out, negotiated);
            Ok(Vec::new())
        }
    }
}

/// Sizes the pipe /dev/fuse workers will splice requests through, before
/// the INIT reply: every WRITE must fit it (see `splice`), so max_write
/// comes down to what it holds. None: no splicing.
fn prepare_splice(out: &mut abi::InitOut, negotiated: &mut Negotiated) -> Option<usize> {
    let pipe = splice_pipe_for(negotiated.max_write)?;
    let max_write = pipe.max_write();
    if max_write < 2 * MIN_SPLICED_WRITE {
        tracing::warn!(
            pipe = pipe.size(),
            "the largest pipe allowed is too small to splice through; reading requests"
        );
        return None;
    }
    if max_write < negotiated.max_write as usize {
        tracing::info!(
            max_write,
            pipe = pipe.size(),
            "splicing: max_write held to what one pipe takes (raise \
             /proc/sys/fs/pipe-max-size, or run with CAP_SYS_RESOURCE, for more)"
        );
        negotiated.max_write = max_write as u32;
        out.max_write = max_write as u32;
    }
    Some(pipe.size())
}

/// The pipe size a resumed session splices WRITEs through: only if a pipe
/// takes the max_write agreed before (as it does when the old server
/// spliced, which held max_write to a pipe).
fn resumed_splice_pipe(negotiated: &Negotiated) -> Option<usize> {
    let pipe = splice_pipe_for(negotiated.max_write)?;
    if pipe.max_write() < negotiated.max_write as usize {
        tracing::info!("no pipe takes the agreed max_write; reading WRITEs, not splicing");
        return None;
    }
    Some(pipe.size())
}

/// A pipe as large as a WRITE of `max_write` spliced through it needs,
/// or as large as the system allows; none (logged) if it cannot be had.
fn splice_pipe_for(max_write: u32) -> Option<Pipe> {
    match Pipe::new(max_write as usize + 2 * init::PAGE_SIZE) {
        Ok(pipe) => Some(pipe),
        Err(e) => {
            tracing::warn!("cannot make a pipe to splice through ({e}); reading requests");
            None
        }
    }
}

/// What the handshake agreed and set up.
struct Handshake {
    negotiated: Negotiated,
    connection: Connection,
    queues: Vec<Arc<UringQueue>>,
    splice_pipe: Option<usize>,
}

/// Reads INIT, negotiates, lets the filesystem see the result, replies.
fn handshake<F: Filesystem>(
    fs: &F,
    dev: &Arc<OwnedFd>,
    config: &Config,
) -> Result<Handshake, SessionError> {
    let mut buf = vec![0u8; (1 << 20) + 2 * init::PAGE_SIZE];
    loop {
        let n = match sys::read(dev.as_fd(), &mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) => continue,
            Err(e) => return Err(SessionError::Io("reading INIT", e)),
        };
        let (header, body) = request::decode_header(&buf[..n])
            .map_err(|e| SessionError::Handshake(e.to_string()))?;
        let op = request::decode(&header, Body::Contiguous(body), Layout::default())
            .map_err(|e| SessionError::Handshake(e.to_string()))?;
        let Operation::Init(kernel) = op else {
            return Err(SessionError::Handshake(format!(
                "expected INIT, got opcode {}",
                header.opcode
            )));
        };
        let limit = init::max_pages_limit();
        let send = |payload: &[u8], result: Result<usize, Errno>| {
            let out = reply::out_header(header.unique, result);
            sys::writev(dev.as_fd(), &[out.as_bytes(), payload])
                .map_err(|e| SessionError::Io("replying to INIT", e))
        };
        match init::negotiate_with(&kernel, config, limit, |caps, ask| fs.init(caps, ask)) {
            Ok(InitReply::MajorOnly(out)) => {
                send(out.as_bytes(), Ok(size_of::<abi::InitOut>()))?;
                // The kernel answers with an INIT in our major version.
                continue;
            }
            Ok(InitReply::Agreed {
                mut out,
                len,
                mut negotiated,
            }) => {
                let queues = prepare_uring(&mut out, &mut negotiated, dev, config);
                let queues = match queues {
                    Ok(q) => q,
                    Err(e) => {
                        let _ = send(&[], Err(Errno::EIO));
                        return Err(e);
                    }
                };
                let splice_pipe = if config.splice_write && queues.is_empty() {
                    prepare_splice(&mut out, &mut negotiated)
                } else {
                    None
                };
                tracing::debug!(
                    kernel = format!("{}.{}", kernel.major, kernel.minor),
                    offered = format!("{:#x}", negotiated.offered),
                    asked = ?config,
                    agreed = format!("{:#x}", negotiated.flags),
                    max_write = negotiated.max_write,
                    max_pages = negotiated.max_pages,
                    "INIT negotiated"
                );
                let connection = Connection::new(negotiated, dev.clone());
                if let Err(e) = fs.ready(&connection) {
                    let _ = send(&[], Err(e));
                    return Err(SessionError::FsInit(e));
                }
                send(&out.as_bytes()[..len], Ok(len))?;
                return Ok(Handshake {
                    negotiated,
                    connection,
                    queues,
                    splice_pipe,
                });
            }
            Err(InitError::Refused(e)) => {
                let _ = send(&[], Err(e));
                return Err(SessionError::FsInit(e));
            }
            Err(e) => {
                let _ = send(&[], Err(Errno::EIO));
                return Err(e.into());
            }
        }
    }
}

impl<F: Filesystem> Session<F> {
    /// Mounts `fs` at `mountpoint` and completes the INIT handshake. The
    /// filesystem is visible (requests queue) once this returns; call
    /// [`run`](Session::run) or [`spawn`](Session::spawn) to serve them.
    pub fn mount(
        fs: F,
        mountpoint: impl AsRef<Path>,
        options: &MountOptions,
        config: Config,
    ) -> Result<Session<F>, SessionError> {
        let (mount, dev) = mount::mount(mountpoint.as_ref(), options)?;
        Session::serve_new(fs, Arc::new(mount), dev, config)
    }

    /// Serves a FUSE connection someone else mounted (a parent process, a
    /// container runtime, systemd's fd store): `dev` is its /dev/fuse fd,
    /// whose INIT nobody has answered yet, and `mountpoint` where it is
    /// mounted. The session answers INIT, as [`Session::mount`] does, and
    /// from then on treats the mount as its own: unmounted when it ends,
    /// if it is still the top mount at `mountpoint`.
    pub fn from_fd(
        fs: F,
        dev: OwnedFd,
        mountpoint: impl AsRef<Path>,
        config: Config,
    ) -> Result<Session<F>, SessionError> {
        let dev = Arc::new(dev);
        let mount = mount::adopt(mountpoint.as_ref(), dev.clone(), None)?;
        Session::serve_new(fs, Arc::new(mount), dev, config)
    }

    /// Takes over a connection whose INIT another session already agreed
    /// (see [`Session::hand_over`]), in this process or, with the fd
    /// passed along and `Handover`'s fields sent too, in another. The
    /// kernel's node ids, open handles and queued requests carry over; the
    /// filesystem must recognise them (the engine only serves). INIT is
    /// not sent again: [`Filesystem::ready`] gets the agreed values.
    ///
    /// Served through io_uring if the old session was (`rings` carries its
    /// ring entries: see [`Handover::rings`]), through /dev/fuse otherwise.
    /// Over /dev/fuse, WRITE data is spliced (with [`Config::splice_write`])
    /// only if a pipe takes the max_write the old server agreed: it cannot
    /// be lowered any more.
    pub fn resume(fs: F, handover: Handover, config: Config) -> Result<Session<F>, SessionError> {
        let Handover {
            dev,
            mountpoint,
            mount_id,
            negotiated,
            stats,
            rings,
        } = handover;
        let dev = Arc::new(dev);
        let queues = match rings {
            Some(fd) => {
                if !cfg!(feature = "io-uring") {
                    return Err(SessionError::Transport(
                        "the mount is served over io_uring, and this build has no io_uring transport"
                            .into(),
                    ));
                }
                let payload = uring::payload_size(negotiated.max_write, negotiated.max_pages);
                UringQueue::adopt_set(
                    fd,
                    config.uring_queue_depth.max(1),
                    payload,
                    &dev,
                    config.mlock_buffers,
                    config.uring_local_wake,
                )
                .map_err(|e| SessionError::Io("taking over the io_uring queues", e))?
            }
            None if config.transport == TransportKind::Uring => {
                return Err(SessionError::Transport(
                    "the mount is served through /dev/fuse; a resumed session cannot change that"
                        .into(),
                ));
            }
            None => Vec::new(),
        };
        let mount = mount::adopt(&mountpoint, dev.clone(), Some(mount_id))?;
        let connection = Connection::new(negotiated, dev.clone());
        fs.ready(&connection).map_err(SessionError::FsInit)?;
        let splice_pipe = if config.splice_write && queues.is_empty() {
            resumed_splice_pipe(&negotiated)
        } else {
            None
        };
        let config = Config {
            splice_write: splice_pipe.is_some(),
            transport: if queues.is_empty() {
                TransportKind::Dev
            } else {
                TransportKind::Uring
            },
            ..config
        };
        let session = Session::assemble(
            fs,
            Arc::new(mount),
            dev,
            config,
            Handshake {
                negotiated,
                connection,
                queues,
                splice_pipe,
            },
        );
        session.server.stats.carry_on(stats);
        Ok(session)
    }

    /// Stops being this connection's server without unmounting, before it
    /// has served anything: what another session needs to go on with it
    /// ([`Session::resume`]). Refused, giving the session back, when it
    /// serves through io_uring (the rings belong to this process), when an
    /// auto_unmount fusermount3 would unmount once this process ends, or
    /// when the fd cannot be duplicated.
    #[allow(clippy::result_large_err)]
    pub fn hand_over(self) -> Result<Handover, Session<F>> {
        if !self.queues.is_empty()
            || Arc::strong_count(&self.mount) != 1
            || self.mount.watched_by_fusermount()
        {
            return Err(self);
        }
        // The filesystem may keep the connection (and so the fd) from
        // `ready`; the handover gets its own descriptor of the same open
        // /dev/fuse file.
        let dev = match self.dev.try_clone() {
            Ok(dev) => dev,
            Err(e) => {
                tracing::warn!("cannot hand /dev/fuse over: {e}");
                return Err(self);
            }
        };
        self.mount.release();
        Ok(Handover::of(
            dev,
            &self.mount,
            *self.connection.negotiated(),
            &self.server.stats,
            None,
        ))
    }

    fn serve_new(
        fs: F,
        mount: Arc<Mount>,
        dev: Arc<OwnedFd>,
        config: Config,
    ) -> Result<Session<F>, SessionError> {
        // On failure the Mount's drop detaches it; no server was running, so
        // nothing could be waiting on it.
        let handshake = handshake(&fs, &dev, &config)?;
        Ok(Session::assemble(fs, mount, dev, config, handshake))
    }

    fn assemble(
        fs: F,
        mount: Arc<Mount>,
        dev: Arc<OwnedFd>,
        config: Config,
        handshake: Handshake,
    ) -> Session<F> {
        let Handshake {
            negotiated,
            connection,
            queues,
            splice_pipe,
        } = handshake;
        let request_buffer_size = negotiated.request_buffer_size();
        let server = Server {
            dispatcher: Dispatcher::new(fs),
            layout: Layout {
                minor: negotiated.minor,
                setxattr_ext: negotiated.has(abi::init::FUSE_SETXATTR_EXT),
            },
            stats: Arc::new(Stats::default()),
            request_buffer_size,
            reply_buffer_size: negotiated.max_pages as usize * init::PAGE_SIZE + init::PAGE_SIZE,
            gate: Arc::default(),
        };
        Session {
            mount,
            dev,
            server: Arc::new(server),
            connection,
            config,
            queues,
            splice_pipe,
        }
    }

    /// The connection: negotiated values, passthrough, notifications.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Where the filesystem is mounted.
    pub fn mountpoint(&self) -> &Path {
        self.mount.mountpoint()
    }

    /// The session's statistics.
    pub fn stats(&self) -> Arc<Stats> {
        self.server.stats.clone()
    }

    /// Serves until the filesystem is unmounted (and, with
    /// [`Config::handle_signals`], until SIGINT/SIGTERM/SIGHUP, which
    /// unmount it after flushing dirty pages). Returns after every worker
    /// has stopped and the filesystem's `destroy` ran.
    pub fn run(self) -> Result<(), SessionError> {
        let bg = self.spawn()?;
        bg.join();
        Ok(())
    }

    /// Serves on background threads. The returned handle unmounts (after
    /// flushing) when dropped.
    pub fn spawn(mut self) -> Result<BackgroundSession, SessionError> {
        let signals = if self.config.handle_signals {
            // Blocked before workers start, so that they inherit the mask
            // and only the signal thread takes these signals.
            sys::block_shutdown_signals().map_err(|e| SessionError::Io("blocking signals", e))?;
            let signals = watch_signals(self.mount.clone())
                .map_err(|e| SessionError::Io("watching for shutdown signals", e))?;
            Some(signals)
        } else {
            None
        };
        #[cfg(feature = "stats")]
        let make_stats_server: Box<dyn Fn() -> Option<StoppableThread> + Send> = {
            let stats = self.server.stats.clone();
            let id = self.mount.id();
            Box::new(move || match stats::serve(stats.clone(), id) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("statistics socket unavailable: {e}");
                    None
                }
            })
        };
        #[cfg(not(feature = "stats"))]
        let make_stats_server: Box<dyn Fn() -> Option<StoppableThread> + Send> = Box::new(|| None);
        if self.config.io_flusher {
            if let Err(e) = sys::set_io_flusher() {
                tracing::info!("PR_SET_IO_FLUSHER not set ({e}); needs CAP_SYS_RESOURCE");
            }
        }
        // Bound before any worker serves: whoever sees the mount answer
        // (a script polling it, a test) finds its statistics too.
        let stats_server = make_stats_server();
        let set = WorkerSet::new().map_err(|e| SessionError::Io("creating an eventfd", e))?;
        // Over io_uring the one /dev/fuse worker carries FORGETs, which
        // nobody waits for: no polling for them.
        let relay = if self.queues.is_empty() {
            Relay::new(self.config.spin_wait)
        } else {
            None
        };
        let serving = DevWorkers {
            server: self.server.clone(),
            relay,
            dev: self.dev.clone(),
            config: self.config.clone(),
            splice_pipe: self.splice_pipe,
            negotiated: *self.connection.negotiated(),
            queues: std::mem::take(&mut self.queues),
            queue_threads: std::sync::Mutex::new(Vec::new()),
            set: set.clone(),
        };
        let (workers, readers) = serving.start(&set)?;
        for queue in &serving.queues {
            queue.set_mountpoint(
                self.mount.mountpoint().to_path_buf(),
                self.mount.unique_id(),
            );
        }
        serving
            .start_queues()
            .map_err(|e| SessionError::Io("spawning a queue thread", e))?;
        tracing::info!(
            workers = workers.len(),
            cloned_fds = self.config.clone_fd,
            mountpoint = %self.mount.mountpoint().display(),
            "serving"
        );
        Ok(BackgroundSession::new(
            self.mount,
            self.server.stats.clone(),
            workers,
            readers,
            set,
            Box::new(serving),
            signals,
            stats_server,
            make_stats_server,
        ))
    }
}

/// What starts a session's /dev/fuse workers and, kept by its
/// [`BackgroundSession`] as [`Serving`], pauses and hands them over.
struct DevWorkers<F> {
    server: Arc<Server<F>>,
    dev: Arc<OwnedFd>,
    config: Config,
    splice_pipe: Option<usize>,
    negotiated: Negotiated,
    /// The io_uring queues (none over /dev/fuse only).
    queues: Vec<Arc<UringQueue>>,
    /// The threads serving them, until a pause's drain stops them.
    queue_threads: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// The reader's role the workers pass around when they poll.
    relay: Option<Arc<Relay>>,
    /// Counts every worker and queue thread.
    set: Arc<WorkerSet>,
}

impl<F: Filesystem> DevWorkers<F> {
    /// Starts the workers; their handles and, in the same order, where
    /// each is for a pause's signal.
    #[allow(clippy::type_complexity)]
    fn start(
        &self,
        set: &Arc<WorkerSet>,
    ) -> Result<(Vec<JoinHandle<()>>, Vec<Arc<Reading>>), SessionError> {
        // With io_uring, one /dev/fuse worker remains for FORGET, INTERRUPT
        // and whatever arrives before every queue has registered.
        let count = if !self.queues.is_empty() {
            1
        } else {
            self.config.worker_count()
        };
        let mut workers = Vec::with_capacity(count);
        let mut readers = Vec::with_capacity(count);
        for i in 0..count {
            let fd = if (i == 0 && !self.config.clone_every_fd) || !self.config.clone_fd {
                self.dev.clone()
            } else {
                match sys::clone_dev_fd(self.dev.as_fd()) {
                    Ok(fd) => Arc::new(fd),
                    Err(e) => {
                        tracing::warn!("FUSE_DEV_IOC_CLONE failed ({e}); sharing one fd");
                        self.dev.clone()
                    }
                }
            };
            let reading = Arc::new(Reading::default());
            let worker = DevWorker::new(
                fd,
                self.server.request_buffer_size,
                self.server.reply_buffer_size,
                self.config.mlock_buffers,
                self.splice_pipe,
                reading.clone(),
                self.relay.clone().map(|r| (r, self.config.spin_wait)),
            );
            let worker = if self.queues.is_empty() {
                worker
            } else {
                worker.gathering_forgets()
            };
            let server = self.server.clone();
            let io_flusher = self.config.io_flusher;
            let theirs = set.clone();
            set.enter();
            let handle = std::thread::Builder::new()
                .name(format!("fastfuse-{i}"))
                .spawn(move || {
                    if io_flusher {
                        let _ = sys::set_io_flusher();
                    }
                    if let Err(e) = worker.serve(&server) {
                        tracing::error!("worker {i} stopped: {e}");
                    }
                    theirs.exit();
                })
                .map_err(|e| {
                    set.exit();
                    SessionError::Io("spawning a worker", e)
                })?;
            workers.push(handle);
            readers.push(reading);
        }
        Ok((workers, readers))
    }
}

impl<F: Filesystem> DevWorkers<F> {
    /// Starts a thread per io_uring queue, serving its planned run.
    fn start_queues(&self) -> std::io::Result<()> {
        let mut threads = self.queue_threads.lock().unwrap_or_else(|e| e.into_inner());
        for queue in &self.queues {
            let (queue, server, set) = (queue.clone(), self.server.clone(), self.set.clone());
            self.set.enter();
            let handle = std::thread::Builder::new()
                .name(queue.thread_name())
                .spawn(move || {
                    if let Err(e) = queue.serve(&server) {
                        tracing::error!("io_uring queue stopped: {e}");
                    }
                    set.exit();
                })
                .inspect_err(|_| self.set.exit())?;
            threads.push(handle);
        }
        Ok(())
    }
}

impl<F: Filesystem> Serving for DevWorkers<F> {
    fn deferred_outstanding(&self) -> usize {
        self.server.dispatcher.interrupts.deferred_outstanding()
    }

    fn negotiated(&self) -> Negotiated {
        self.negotiated
    }

    fn dev(&self) -> &Arc<OwnedFd> {
        &self.dev
    }

    fn uring(&self) -> bool {
        !self.queues.is_empty()
    }

    fn drain_queues(&self) -> Result<(), String> {
        if let Some(why) = UringQueue::undrainable(&self.queues) {
            return Err(why);
        }
        UringQueue::drain(&self.queues)
            .map_err(|e| format!("draining the io_uring queues: {e}"))?;
        self.join_queues();
        for queue in &self.queues {
            queue.finish_drain();
        }
        Ok(())
    }

    fn restart_queues(&self) -> std::io::Result<()> {
        for queue in &self.queues {
            queue.restart()?;
        }
        self.start_queues()
    }

    fn join_queues(&self) {
        let threads =
            std::mem::take(&mut *self.queue_threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }

    fn rings(&self) -> Option<BorrowedFd<'_>> {
        UringQueue::arena_fd(&self.queues)
    }

    fn gate(&self) -> &Gate {
        &self.server.gate
    }

    fn wake_standby(&self) {
        if let Some(relay) = &self.relay {
            relay.wake_all();
        }
    }

    fn destroy(&self) {
        self.server.dispatcher.connection_ended();
        self.server.dispatcher.destroy_once();
    }
}

/// A thread that waits for shutdown signals and unmounts when one comes,
/// until dropped. It sleeps in poll(2) on a signalfd and its stop eventfd.
fn watch_signals(mount: Arc<Mount>) -> io::Result<StoppableThread> {
    let signals = sys::shutdown_signalfd()?;
    let thread = StoppableThread::spawn("fastfuse-signals", move |stop| loop {
        let ready = match sys::poll_readable(&[signals.as_fd(), stop.as_fd()], None) {
            Ok(ready) => ready,
            Err(e) => {
                tracing::error!("waiting for signals failed: {e}");
                return;
            }
        };
        if ready[1] != 0 {
            return;
        }
        if ready[0] != 0 {
            match sys::read_signalfd(signals.as_fd()) {
                Ok(sig) => {
                    tracing::info!("signal {sig}: unmounting {}", mount.mountpoint().display());
                    if let Err(e) = mount.unmount(true) {
                        tracing::error!("unmount failed: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    tracing::error!("reading a signal failed: {e}");
                    return;
                }
            }
        }
    })?;
    Ok(thread)
}
