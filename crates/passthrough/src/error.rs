//! Why a passthrough filesystem could not be set up.
//!
//! Only construction (new, or restored from a saved state) and saving the
//! state can fail with these; once serving, every failure is an
//! [`Errno`](fastfuse::Errno) answer to one request.

use std::io;
use std::path::PathBuf;

/// Why [`PassthroughFs::new`](crate::PassthroughFs::new),
/// [`restore`](crate::PassthroughFs::restore) or
/// [`save`](crate::PassthroughFs::save) (or an option's parsing) failed.
#[derive(thiserror::Error, Debug)]
pub enum PassthroughError {
    /// The source directory could not be opened (missing, no permission).
    #[error("cannot open the source directory {}: {source}", path.display())]
    OpenSource {
        /// The path given.
        path: PathBuf,
        /// What open(2) or stat(2) said.
        #[source]
        source: io::Error,
    },
    /// The source exists but is not a directory.
    #[error("the source {} is not a directory", path.display())]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// `/proc/self/fd` could not be opened: the filesystem needs /proc.
    #[error("cannot open /proc/self/fd (is /proc mounted?): {0}")]
    Proc(#[source] io::Error),
    /// The thread that closes forgotten nodes' fds could not be started.
    #[error("cannot start the inode table's sweeper thread: {0}")]
    Sweeper(#[source] io::Error),
    /// The thread that reads listings ahead could not be started.
    #[error("cannot start the statahead thread: {0}")]
    Statahead(#[source] io::Error),
    /// The daemon's own credentials could not be read (for
    /// [`Options::switch_credentials`](crate::Options::switch_credentials)).
    #[error("cannot read the daemon's supplementary groups: {0}")]
    Credentials(#[source] io::Error),
    /// [`PassthroughFs::save`](crate::PassthroughFs::save) was called
    /// while blocking lock requests wait: each holds a deferred reply
    /// that only this process can send.
    #[error(
        "cannot hand the filesystem over while {0} blocking lock request(s) wait: \
         their replies cannot move to another process; try again once they are granted"
    )]
    LockWaitPending(usize),
    /// A descriptor could not be duplicated for the successor (the
    /// descriptor limit, most likely: saving needs as many again).
    #[error("cannot duplicate a descriptor for the successor: {0}")]
    SaveDescriptor(#[source] io::Error),
    /// A saved state of a format version this build does not read.
    #[error("saved state version {found}, this build reads {oldest} to {newest}")]
    StateVersion {
        /// The state's version.
        found: u32,
        /// [`OLDEST_STATE_VERSION`](crate::OLDEST_STATE_VERSION).
        oldest: u32,
        /// [`STATE_VERSION`](crate::STATE_VERSION).
        newest: u32,
    },
    /// The source given to
    /// [`PassthroughFs::restore`](crate::PassthroughFs::restore) is not
    /// the directory the state was saved from.
    #[error(
        "the source {} (device {}, inode {}) is not the root the state was saved from \
         (device {}, inode {})",
        path.display(), found.0, found.1, saved.0, saved.1
    )]
    StateRoot {
        /// The path given.
        path: PathBuf,
        /// The saved root's (st_dev, st_ino).
        saved: (u64, u64),
        /// The given source's (st_dev, st_ino).
        found: (u64, u64),
    },
    /// The saved state does not fit together, or not with the
    /// descriptors that came with it.
    #[error("the saved state does not fit: {0}")]
    InvalidState(String),
    /// A crash journal could not be made or mapped.
    #[error("crash journal: {what} failed: {source}")]
    Journal {
        /// The call that failed.
        what: &'static str,
        /// What it said.
        #[source]
        source: io::Error,
    },
    /// A descriptor given to
    /// [`Journal::from_fd`](crate::Journal::from_fd) is not a journal
    /// this build reads.
    #[error("not a crash journal this build reads: {0}")]
    InvalidJournal(String),
    /// The source given to
    /// [`PassthroughFs::recover`](crate::PassthroughFs::recover) is not
    /// the root the journal was kept for.
    #[error(
        "the source {} (device {}, inode {}) is not the root the crash journal was kept for \
         (device {}, inode {})",
        path.display(), found.0, found.1, journaled.0, journaled.1
    )]
    JournalRoot {
        /// The path given.
        path: PathBuf,
        /// The journal's root (st_dev, st_ino); (0, 0) when no filesystem
        /// used the journal.
        journaled: (u64, u64),
        /// The given source's (st_dev, st_ino).
        found: (u64, u64),
    },
    /// [`PassthroughFs::save`](crate::PassthroughFs::save) of a journaled
    /// filesystem (a supervised mount), which is not supported.
    #[error("a journaled (supervised) filesystem cannot hand its state over")]
    Journaled,
    /// A `--bypass-rw` level other than 0, 1 or 2.
    #[error("bypass-rw level {0} is not one of 0 (off), 1 (copy only), 2 (no I/O)")]
    InvalidBypassRw(u8),
}
