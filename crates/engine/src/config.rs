//! Session configuration: what the engine asks the kernel for and how it
//! serves.

/// How a session serves requests and what it asks for at INIT. Fields left
/// at their defaults give a sensible multi-threaded server without the
/// writeback cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Worker threads (0: one per CPU).
    pub threads: usize,
    /// Give each worker its own /dev/fuse fd (`FUSE_DEV_IOC_CLONE`), so that
    /// replies go back on the fd the request came from. Falls back to the
    /// shared fd when the ioctl fails.
    pub clone_fd: bool,
    /// Every worker, the first too, reads on a clone of its own, and none on
    /// the mount's fd itself (with `clone_fd`). For a mount whose fd another
    /// process also holds (a supervisor, see
    /// [`BackgroundSession::standby`](crate::BackgroundSession::standby)):
    /// when this process dies, the kernel releases its clones and ends
    /// every request they had read with ECONNABORTED (`fuse_dev_release`),
    /// where a request read on the shared fd would wait for an answer
    /// forever; the connection itself lives on in the other holder's fd.
    pub clone_every_fd: bool,
    /// Pages per request to ask for; capped by `fs.fuse.max_pages_limit`.
    pub max_pages: u32,
    /// Largest WRITE to accept (0: max_pages * 4096).
    pub max_write: u32,
    /// Background requests in flight (0: the kernel's default).
    pub max_background: u16,
    /// Congestion threshold (0: the kernel's default).
    pub congestion_threshold: u16,
    /// Ask for the writeback cache.
    pub writeback_cache: bool,
    /// Ask for kernel passthrough (`FUSE_PASSTHROUGH`); excludes the
    /// writeback cache.
    pub passthrough: bool,
    /// Passthrough stacking depth to announce.
    pub max_stack_depth: u32,
    /// How requests travel: /dev/fuse, io_uring, or io_uring when the
    /// kernel offers it.
    pub transport: TransportKind,
    /// Ring entries per io_uring queue: requests of one CPU in flight at
    /// once. Each holds a max_write buffer.
    pub uring_queue_depth: usize,
    /// Run each io_uring queue's pinned thread SCHED_IDLE while a guard
    /// sees it get the CPU, so that the kernel wakes a caller on the CPU
    /// it slept on instead of sending an IPI to another; off where the
    /// process may not leave SCHED_IDLE again (no CAP_SYS_NICE). A thread
    /// a request handler starts inherits SCHED_IDLE from a pinned thread
    /// until the guard puts it back (within 100 ms); while this is on, no
    /// thread of the process stays SCHED_IDLE. See the README's "Local
    /// wake-ups".
    pub uring_local_wake: bool,
    /// Let the kernel send several READs of one file at once.
    pub async_read: bool,
    /// Let the kernel run lookups and readdirs of one directory in parallel.
    pub parallel_dirops: bool,
    /// The filesystem clears suid/sgid itself on write, truncate and chown
    /// (`FUSE_HANDLE_KILLPRIV_V2`).
    pub handle_killpriv_v2: bool,
    /// Ask for READDIRPLUS (adaptive).
    pub readdirplus: bool,
    /// On the /dev/fuse transport, splice requests into a pipe so that
    /// large WRITEs reach [`Filesystem::write_spliced`] with their data
    /// still in the kernel. Holds max_write to what the pipe takes: 1016
    /// KiB without CAP_SYS_RESOURCE (see `/proc/sys/fs/pipe-max-size`).
    ///
    /// [`Filesystem::write_spliced`]: crate::Filesystem::write_spliced
    pub splice_write: bool,
    /// Lock the request buffers in memory where RLIMIT_MEMLOCK allows.
    pub mlock_buffers: bool,
    /// Call `prctl(PR_SET_IO_FLUSHER)` before workers start.
    pub io_flusher: bool,
    /// Unmount on SIGINT, SIGTERM and SIGHUP while [`Session::run`] serves.
    ///
    /// [`Session::run`]: crate::Session::run
    pub handle_signals: bool,
    /// Seconds the kernel lets a request go unanswered before it aborts
    /// the whole connection (`FUSE_REQUEST_TIMEOUT`, Linux 6.15+); 0: no
    /// timeout. Asked for only when the kernel offers it. The kernel checks
    /// every 15 s, raises the value to at least 15 and caps it at
    /// `fs.fuse.max_request_timeout`; a blocking lock wait counts as an
    /// unanswered request too.
    pub request_timeout: u16,
    /// On the /dev/fuse transport, how long a worker polls for the next
    /// request before it sleeps in read(2); zero: never. Polling spares a
    /// caller the wake-up of a sleeping worker, which on a VM's halted
    /// vCPU costs more than most metadata requests. It costs CPU, bounded:
    /// one worker polls at a time, only while requests come closer
    /// together than this and from one caller at a time, yielding the CPU
    /// at every turn (see the README's "Polling for the next request").
    pub spin_wait: std::time::Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            threads: 0,
            clone_fd: true,
            clone_every_fd: false,
            max_pages: 256,
            max_write: 0,
            max_background: 0,
            congestion_threshold: 0,
            writeback_cache: false,
            passthrough: false,
            max_stack_depth: 1,
            transport: TransportKind::Dev,
            uring_queue_depth: 4,
            uring_local_wake: true,
            async_read: true,
            parallel_dirops: true,
            handle_killpriv_v2: false,
            readdirplus: false,
            splice_write: false,
            mlock_buffers: true,
            io_flusher: true,
            handle_signals: false,
            request_timeout: 0,
            spin_wait: std::time::Duration::ZERO,
        }
    }
}

/// The transport a session serves requests through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransportKind {
    /// Reads and writes on /dev/fuse fds.
    #[default]
    Dev,
    /// FUSE over io_uring; the mount fails if the kernel does not offer it
    /// or the rings cannot be set up.
    Uring,
    /// io_uring when the kernel offers it (the `enable_uring` module
    /// parameter), /dev/fuse otherwise.
    Auto,
}

impl std::str::FromStr for TransportKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dev" => Ok(TransportKind::Dev),
            "uring" | "io_uring" => Ok(TransportKind::Uring),
            "auto" => Ok(TransportKind::Auto),
            other => Err(format!("unknown transport {other:?} (dev, uring or auto)")),
        }
    }
}

impl Config {
    /// The worker count, resolving 0 to the number of CPUs.
    pub fn worker_count(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}
