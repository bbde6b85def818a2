//! # fastfuse-passthrough — a source directory, mirrored through FUSE
//!
//! [`PassthroughFs`] implements [`fastfuse::Filesystem`] by forwarding
//! every operation to a source directory, with full POSIX semantics:
//! hard links share one node, renames take `renameat2` flags, xattrs,
//! locks, fallocate, SEEK_DATA/SEEK_HOLE and copy_file_range pass through.
//! It is built for the kernel's writeback-cache mode (the default of the
//! `fastfuse` binary) and carries the knobs of libfuse's passthrough_ll and
//! passthrough_hp that the benchmarks use: [`BypassRw`] test modes, kernel
//! passthrough, direct I/O, per-thread credential switching.
//!
//! ```
//! use fastfuse_passthrough::{BypassRw, Options, PassthroughFs};
//!
//! let source = tempfile::tempdir()?;
//! let fs = PassthroughFs::new(source.path(), Options::default())?;
//! assert_eq!(fs.inode_count(), 1); // only the root until the kernel looks things up
//! assert_eq!(BypassRw::try_from(2)?, BypassRw::NoIo);
//! assert!(BypassRw::try_from(3).is_err());
//! // Mount it with fastfuse::Session::mount(fs, mountpoint, &options, config).
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! How it works, one module each:
//! - the inode table (`inode`): one entry per source inode, keyed by
//!   (st_dev, st_ino), holding an `O_PATH` fd and the kernel's lookup
//!   count, in 16 shards (a LOOKUP of a known inode takes one shard's
//!   shared lock and counts atomically); node ids are never reused for another inode, and a node the
//!   kernel forgot is remembered by the source's file handle so that
//!   the kernel's file handles (NFS export) of it still resolve;
//! - open files and directories (`handle`, `dir`): an fh indexes a
//!   sharded table; directory streams read `getdents64` and resume from
//!   the source's own cookies;
//! - every path operation is an `*at` call relative to a parent's `O_PATH`
//!   fd, and files are reopened through `/proc/self/fd` (`procfd`): no
//!   path is ever resolved from the source root, so neither `..` nor a
//!   symlink can lead out of the source;
//! - acting as the caller (`creds`): per-thread fsuid/fsgid/groups;
//! - the source's mtime under the writeback cache (`mtime`): the kernel's,
//!   put back after cache WRITEs at FLUSH, FSYNC and RELEASE;
//! - the system calls (`sys`), the only `unsafe` code;
//! - the operations themselves (`ops`);
//! - handing the state to a successor process without unmounting
//!   (`saved`: [`PassthroughFs::save`], [`PassthroughFs::restore`]);
//! - a crash journal in shared memory, from which a new process goes on
//!   serving the connection of one that died (`journal`: [`Journal`],
//!   [`PassthroughFs::journaled`], [`PassthroughFs::recover`]).
#![deny(unsafe_code)]

mod creds;
mod dir;
mod error;
mod fs;
mod handle;
mod inode;
pub mod journal;
mod lock_wait;
mod mtime;
mod ops;
mod options;
mod procfd;
mod saved;
mod statahead;
#[allow(unsafe_code)]
mod sys;

pub use error::PassthroughError;
pub use fs::PassthroughFs;
pub use journal::{Journal, Recovery, JOURNAL_VERSION};
pub use options::{BypassRw, Options};
pub use saved::{SavedFds, SavedState, OLDEST_STATE_VERSION, STATE_VERSION};

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the new
/// soft limit. The filesystem holds one fd per inode the kernel knows and
/// per open file, so a large tree needs many. An unlimited hard limit is
/// taken as the kernel's `fs.nr_open` ceiling, the most a process can have.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let (soft, hard) = sys::nofile_limit()?;
    let target = if hard == libc::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20)
    } else {
        hard
    };
    if soft >= target {
        return Ok(soft);
    }
    sys::set_nofile_limit(target, hard)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    #[test]
    fn nofile_limit_reaches_the_hard_limit() {
        let n = super::raise_nofile_limit().unwrap();
        let (soft, _) = super::sys::nofile_limit().unwrap();
        assert_eq!(n, soft);
        assert!(n >= 1024);
    }
}

/// The crate README's examples, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
