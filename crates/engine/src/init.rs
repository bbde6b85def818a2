//! INIT negotiation: what the kernel offers, what the configuration asks,
//! and what is agreed. A pure function, so that it can be tested without a
//! kernel.

use fastfuse_abi::{self as abi, init::*};
use thiserror::Error;

use crate::config::{Config, TransportKind};

/// Page size the kernel counts `max_pages` in.
pub const PAGE_SIZE: usize = 4096;

/// Why INIT could not be agreed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InitError {
    /// The kernel speaks a protocol older than this engine supports.
    #[error("kernel FUSE protocol {0}.{1} is older than 7.12, which this engine needs")]
    TooOld(u32, u32),
    /// The filesystem's [`Filesystem::init`](crate::Filesystem::init)
    /// refused the connection.
    #[error("the filesystem refused INIT: {0}")]
    Refused(crate::Errno),
}

/// What the kernel offers at INIT, as the filesystem sees it in
/// [`Filesystem::init`](crate::Filesystem::init).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The kernel's protocol major version (7).
    pub major: u32,
    /// The minor version both sides will speak: the lower of the kernel's
    /// and this engine's.
    pub minor: u32,
    /// Every `FUSE_*` INIT flag offered (`fastfuse::abi::init`), flags2 in
    /// the high half.
    pub flags: u64,
}

impl Capabilities {
    /// Whether the kernel offers `flag` (all of its bits).
    pub fn offers(&self, flag: u64) -> bool {
        self.flags & flag == flag
    }
}

/// The INIT flags a session asks the kernel for. It starts from what the
/// [`Config`] asks; [`Filesystem::init`](crate::Filesystem::init) adds
/// what only the filesystem can promise (locks, ACLs, ...) and drops what
/// it cannot serve. Flags the kernel does not offer are left out of the
/// reply whatever is asked. The engine still keeps the combinations the
/// kernel refuses apart (kernel passthrough excludes the writeback cache)
/// and asks for FUSE_OVER_IO_URING only when the configured transport
/// sets up rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitFlags(u64);

impl InitFlags {
    /// Asks for `flag` (`fastfuse::abi::init`).
    pub fn ask(&mut self, flag: u64) -> &mut Self {
        self.0 |= flag;
        self
    }

    /// Does not ask for `flag`.
    pub fn skip(&mut self, flag: u64) -> &mut Self {
        self.0 &= !flag;
        self
    }

    /// Whether all of `flag` is asked for.
    pub fn asks(&self, flag: u64) -> bool {
        self.0 & flag == flag
    }

    /// The flags asked for, flags2 in the high half.
    pub fn bits(&self) -> u64 {
        self.0
    }
}

/// What INIT agreed; the filesystem sees it through
/// [`Connection::negotiated`](crate::Connection::negotiated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Negotiated {
    /// Protocol major version (7).
    pub major: u32,
    /// Agreed minor version: the lower of the kernel's and ours (45).
    pub minor: u32,
    /// Every `FUSE_*` INIT flag the kernel offered, flags2 in the high half.
    pub offered: u64,
    /// The flags agreed (offered and asked for), flags2 in the high half.
    pub flags: u64,
    /// Largest WRITE payload the kernel will send.
    pub max_write: u32,
    /// Largest READ the kernel will ask for (pages * 4096).
    pub max_pages: u16,
    /// Readahead window.
    pub max_readahead: u32,
    /// Background requests in flight before the kernel queues (0: default).
    pub max_background: u16,
    /// Background requests before the bdi counts as congested (0: default).
    pub congestion_threshold: u16,
    /// Timestamp granularity in nanoseconds.
    pub time_gran: u32,
    /// Passthrough stacking depth, when passthrough was agreed.
    pub max_stack_depth: u32,
    /// Request timeout in seconds sent to the kernel (0: none, also when
    /// the kernel did not offer `FUSE_REQUEST_TIMEOUT`). The kernel applies
    /// its own floor and `fs.fuse.max_request_timeout` to it and does not
    /// say what it settled on.
    pub request_timeout: u16,
}

impl Negotiated {
    /// Whether `flag` (a `fastfuse_abi::init` constant) was agreed.
    pub fn has(&self, flag: u64) -> bool {
        self.flags & flag == flag
    }

    /// Whether the writeback cache is on.
    pub fn writeback_cache(&self) -> bool {
        self.has(FUSE_WRITEBACK_CACHE)
    }

    /// Whether the kernel enforces POSIX ACLs (`FUSE_POSIX_ACL`).
    pub fn posix_acl(&self) -> bool {
        self.has(FUSE_POSIX_ACL)
    }

    /// Whether new files' modes arrive without the umask applied
    /// (`FUSE_DONT_MASK`).
    pub fn dont_mask(&self) -> bool {
        self.has(FUSE_DONT_MASK)
    }

    /// Whether requests may come through io_uring.
    pub fn io_uring(&self) -> bool {
        self.has(FUSE_OVER_IO_URING)
    }

    /// Whether kernel passthrough is on.
    pub fn passthrough(&self) -> bool {
        self.has(FUSE_PASSTHROUGH)
    }

    /// The size a request buffer must have: the largest WRITE plus room for
    /// the headers (the kernel refuses reads into anything smaller).
    pub fn request_buffer_size(&self) -> usize {
        (self.max_write as usize + PAGE_SIZE).max(abi::FUSE_MIN_READ_BUFFER)
    }
}

/// The result of negotiation: the reply to send and what it agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitReply {
    /// The kernel's major is newer: answer with ours only, and the kernel
    /// sends a new INIT in our major.
    MajorOnly(abi::InitOut),
    /// Agreement: send `out` (its first `len` bytes, shorter for old
    /// kernels).
    Agreed {
        /// The reply struct.
        out: abi::InitOut,
        /// How many bytes of it the kernel's minor version expects.
        len: usize,
        /// What was agreed.
        negotiated: Negotiated,
    },
}

/// The flags this engine asks for whatever the configuration, because they
/// are how a modern server should talk to the kernel. Not the lock flags:
/// with them the kernel sends every fcntl and flock lock to the
/// filesystem, so only a filesystem that implements locks asks for them
/// (in [`Filesystem::init`](crate::Filesystem::init)); without them the
/// kernel keeps locks itself, local to this machine.
const ALWAYS: u64 = FUSE_BIG_WRITES
    | FUSE_ASYNC_DIO
    | FUSE_MAX_PAGES
    | FUSE_CACHE_SYMLINKS
    | FUSE_INIT_EXT
    | FUSE_SETXATTR_EXT
    | FUSE_NO_OPEN_SUPPORT
    | FUSE_NO_OPENDIR_SUPPORT
    | FUSE_ABORT_ERROR
    | FUSE_EXPORT_SUPPORT
    | FUSE_DIRECT_IO_ALLOW_MMAP;

/// Decides the INIT reply for `config` alone. `max_pages_limit` is the
/// kernel's `fs.fuse.max_pages_limit` sysctl (256 unless changed).
pub fn negotiate(
    kernel: &abi::InitIn,
    config: &Config,
    max_pages_limit: u32,
) -> Result<InitReply, InitError> {
    negotiate_with(kernel, config, max_pages_limit, |_, _| Ok(()))
}

/// As [`negotiate`], with `adjust` (the filesystem's
/// [`init`](crate::Filesystem::init)) changing the flags asked for once
/// it has seen what the kernel offers. An error from it refuses INIT.
pub fn negotiate_with(
    kernel: &abi::InitIn,
    config: &Config,
    max_pages_limit: u32,
    adjust: impl FnOnce(&Capabilities, &mut InitFlags) -> Result<(), crate::Errno>,
) -> Result<InitReply, InitError> {
    let ours = abi::FUSE_KERNEL_VERSION;
    if kernel.major > ours {
        return Ok(InitReply::MajorOnly(abi::InitOut {
            major: ours,
            minor: abi::FUSE_KERNEL_MINOR_VERSION,
            ..Default::default()
        }));
    }
    if kernel.major < ours || kernel.minor < 12 {
        return Err(InitError::TooOld(kernel.major, kernel.minor));
    }
    let minor = kernel.minor.min(abi::FUSE_KERNEL_MINOR_VERSION);
    let mut offered = u64::from(kernel.flags);
    if offered & FUSE_INIT_EXT != 0 {
        offered |= u64::from(kernel.flags2) << 32;
    }

    let mut wanted = ALWAYS;
    for (on, flag) in [
        (config.async_read, FUSE_ASYNC_READ),
        (config.writeback_cache, FUSE_WRITEBACK_CACHE),
        (config.parallel_dirops, FUSE_PARALLEL_DIROPS),
        (config.handle_killpriv_v2, FUSE_HANDLE_KILLPRIV_V2),
        (
            config.readdirplus,
            FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO,
        ),
        (config.passthrough, FUSE_PASSTHROUGH),
        (
            config.transport != TransportKind::Dev && cfg!(feature = "io-uring"),
            FUSE_OVER_IO_URING,
        ),
        (config.request_timeout != 0, FUSE_REQUEST_TIMEOUT),
        // Without the writeback cache, let the kernel drop cached pages
        // when mtime or size change behind its back.
        (!config.writeback_cache, FUSE_AUTO_INVAL_DATA),
    ] {
        if on {
            wanted |= flag;
        }
    }
    let caps = Capabilities {
        major: kernel.major,
        minor,
        flags: offered,
    };
    let mut asked = InitFlags(wanted);
    adjust(&caps, &mut asked).map_err(InitError::Refused)?;
    wanted = asked.bits();
    // Rings are set up only for a transport that uses them, in a build
    // that has them.
    if config.transport == TransportKind::Dev || !cfg!(feature = "io-uring") {
        wanted &= !FUSE_OVER_IO_URING;
    }
    // The kernel refuses passthrough together with the writeback cache.
    if wanted & offered & FUSE_PASSTHROUGH != 0 {
        wanted &= !FUSE_WRITEBACK_CACHE;
    }
    // O_TRUNC in OPEN, but not with the writeback cache. With
    // FUSE_ATOMIC_O_TRUNC the server truncates when it answers OPEN, while
    // the kernel drops its own cache and size only later in open(2)
    // (handle_truncate), without the writeback fence and without telling
    // the server: a write that another process completes in between
    // reaches the source but vanishes from the kernel's view, whose size
    // the writeback cache then trusts over the source's (verified on
    // 6.18; found by the cli stress test). Without the flag the kernel
    // truncates with a SETATTR under its fence, and both agree.
    if wanted & offered & FUSE_WRITEBACK_CACHE == 0 {
        wanted |= FUSE_ATOMIC_O_TRUNC;
    }
    let flags = wanted & offered;

    let max_pages = if flags & FUSE_MAX_PAGES != 0 {
        config
            .max_pages
            .clamp(1, max_pages_limit.clamp(1, u16::MAX as u32))
    } else {
        // Without FUSE_MAX_PAGES the kernel caps requests at 32 pages.
        32
    };
    let page_bytes = max_pages * PAGE_SIZE as u32;
    let max_write = match config.max_write {
        0 => page_bytes,
        n => n.clamp(PAGE_SIZE as u32, page_bytes),
    };
    let max_stack_depth = if flags & FUSE_PASSTHROUGH != 0 {
        config.max_stack_depth.max(1)
    } else {
        0
    };
    // A kernel without the flag would ignore the field; zero it so that
    // `Negotiated` says what is really in force.
    let request_timeout = if flags & FUSE_REQUEST_TIMEOUT != 0 {
        config.request_timeout
    } else {
        0
    };
    let out = abi::InitOut {
        major: ours,
        minor,
        max_readahead: kernel.max_readahead,
        flags: flags as u32,
        max_background: config.max_background,
        congestion_threshold: config.congestion_threshold,
        max_write,
        time_gran: 1,
        max_pages: max_pages as u16,
        flags2: (flags >> 32) as u32,
        max_stack_depth,
        request_timeout,
        ..Default::default()
    };
    let len = if minor < 5 {
        abi::FUSE_COMPAT_INIT_OUT_SIZE
    } else if minor < 23 {
        abi::FUSE_COMPAT_22_INIT_OUT_SIZE
    } else {
        size_of::<abi::InitOut>()
    };
    Ok(InitReply::Agreed {
        out,
        len,
        negotiated: Negotiated {
            major: ours,
            minor,
            offered,
            flags,
            max_write,
            max_pages: max_pages as u16,
            max_readahead: kernel.max_readahead,
            max_background: config.max_background,
            congestion_threshold: config.congestion_threshold,
            time_gran: 1,
            max_stack_depth,
            request_timeout,
        },
    })
}

/// Reads `fs.fuse.max_pages_limit`, or the kernel's default when the sysctl
/// is missing (older kernels).
pub fn max_pages_limit() -> u32 {
    std::fs::read_to_string("/proc/sys/fs/fuse/max_pages_limit")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(256)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel_618() -> abi::InitIn {
        let all: u64 = u64::MAX;
        abi::InitIn {
            major: 7,
            minor: 45,
            max_readahead: 128 * 1024,
            flags: all as u32,
            flags2: (all >> 32) as u32,
            ..Default::default()
        }
    }

    fn agreed(r: InitReply) -> (abi::InitOut, usize, Negotiated) {
        match r {
            InitReply::Agreed {
                out,
                len,
                negotiated,
            } => (out, len, negotiated),
            other => panic!("not agreed: {other:?}"),
        }
    }

    #[test]
    fn writeback_and_max_pages_follow_config_and_sysctl() {
        let cfg = Config {
            writeback_cache: true,
            max_pages: 1024,
            ..Config::default()
        };
        let (out, len, n) = agreed(negotiate(&kernel_618(), &cfg, 256).unwrap());
        assert_eq!(len, 64);
        assert_eq!((out.major, out.minor), (7, 45));
        assert_eq!(out.max_pages, 256);
        assert_eq!(out.max_write, 1 << 20);
        assert!(n.writeback_cache());
        assert!(!n.has(FUSE_PASSTHROUGH));
        assert_eq!(n.request_buffer_size(), (1 << 20) + 4096);
        assert!(n.has(FUSE_INIT_EXT));
        assert_eq!(out.flags2, (n.flags >> 32) as u32);
    }

    #[test]
    fn o_trunc_goes_in_open_only_without_the_writeback_cache() {
        for (writeback, passthrough, atomic) in [
            (true, false, false),
            (false, false, true),
            (true, true, true),
        ] {
            let cfg = Config {
                writeback_cache: writeback,
                passthrough,
                ..Config::default()
            };
            let (_, _, n) = agreed(negotiate(&kernel_618(), &cfg, 256).unwrap());
            assert_eq!(n.has(FUSE_ATOMIC_O_TRUNC), atomic, "{cfg:?}");
        }
    }

    #[test]
    fn passthrough_turns_writeback_off() {
        let cfg = Config {
            writeback_cache: true,
            passthrough: true,
            ..Config::default()
        };
        let (out, _, n) = agreed(negotiate(&kernel_618(), &cfg, 256).unwrap());
        assert!(n.passthrough());
        assert!(!n.writeback_cache());
        assert!(out.max_stack_depth >= 1);
    }

    #[test]
    fn nothing_the_kernel_did_not_offer_is_agreed() {
        let mut k = kernel_618();
        k.flags = FUSE_ASYNC_READ as u32; // no INIT_EXT, no MAX_PAGES
        k.flags2 = u32::MAX;
        let cfg = Config {
            writeback_cache: true,
            ..Config::default()
        };
        let (out, _, n) = agreed(negotiate(&k, &cfg, 256).unwrap());
        assert_eq!(n.flags, FUSE_ASYNC_READ);
        assert_eq!(out.flags2, 0);
        assert_eq!(out.max_write, 32 * 4096);
    }

    #[test]
    fn request_timeout_only_when_asked_and_offered() {
        let cfg = Config {
            request_timeout: 5,
            ..Config::default()
        };
        let (out, _, n) = agreed(negotiate(&kernel_618(), &cfg, 256).unwrap());
        assert!(n.has(FUSE_REQUEST_TIMEOUT));
        assert_eq!((out.request_timeout, n.request_timeout), (5, 5));
        assert_eq!(out.flags2 & (FUSE_REQUEST_TIMEOUT >> 32) as u32, 1 << 10);

        let mut older = kernel_618();
        older.flags2 &= !((FUSE_REQUEST_TIMEOUT >> 32) as u32);
        let (out, _, n) = agreed(negotiate(&older, &cfg, 256).unwrap());
        assert!(!n.has(FUSE_REQUEST_TIMEOUT));
        assert_eq!((out.request_timeout, n.request_timeout), (0, 0));

        let (out, _, n) = agreed(negotiate(&kernel_618(), &Config::default(), 256).unwrap());
        assert!(!n.has(FUSE_REQUEST_TIMEOUT));
        assert_eq!((out.request_timeout, n.request_timeout), (0, 0));
    }

    #[test]
    fn versions() {
        let mut k = kernel_618();
        k.major = 8;
        assert!(matches!(
            negotiate(&k, &Config::default(), 256).unwrap(),
            InitReply::MajorOnly(out) if out.major == 7
        ));
        k.major = 7;
        k.minor = 11;
        assert_eq!(
            negotiate(&k, &Config::default(), 256),
            Err(InitError::TooOld(7, 11))
        );
        k.minor = 22;
        let (out, len, _) = agreed(negotiate(&k, &Config::default(), 256).unwrap());
        assert_eq!((out.minor, len), (22, 24));
    }

    #[test]
    fn the_filesystem_adds_and_drops_flags() {
        let (_, _, n) = agreed(negotiate(&kernel_618(), &Config::default(), 256).unwrap());
        assert!(!n.has(FUSE_POSIX_LOCKS) && !n.has(FUSE_FLOCK_LOCKS));
        let r = negotiate_with(&kernel_618(), &Config::default(), 256, |caps, ask| {
            assert!(caps.offers(FUSE_POSIX_ACL));
            assert!(ask.asks(FUSE_ASYNC_READ));
            ask.ask(FUSE_POSIX_LOCKS | FUSE_OVER_IO_URING)
                .skip(FUSE_ASYNC_READ);
            Ok(())
        });
        let (out, _, n) = agreed(r.unwrap());
        assert!(n.has(FUSE_POSIX_LOCKS) && !n.has(FUSE_ASYNC_READ));
        assert_eq!(u64::from(out.flags) & FUSE_POSIX_LOCKS, FUSE_POSIX_LOCKS);
        // Rings only for a transport that sets them up.
        assert!(!n.has(FUSE_OVER_IO_URING));
        let refused = negotiate_with(&kernel_618(), &Config::default(), 256, |_, _| {
            Err(crate::Errno::EPERM)
        });
        assert_eq!(
            refused.unwrap_err(),
            InitError::Refused(crate::Errno::EPERM)
        );
    }
}
