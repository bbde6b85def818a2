//! Why a passthrough filesystem could not be set up.
//!
//! Only construction can fail with these; once serving, every failure is
//! an [`Errno`](fastfuse::Errno) answer to one request.

use std::io;
use std::path::PathBuf;

/// Why [`PassthroughFs::new`](crate::PassthroughFs::new) (or an option's
/// parsing) failed.
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
    /// The daemon's own credentials could not be read (for
    /// [`Options::switch_credentials`](crate::Options::switch_credentials)).
    #[error("cannot read the daemon's supplementary groups: {0}")]
    Credentials(#[source] io::Error),
    /// A `--bypass-rw` level other than 0, 1 or 2.
    #[error("bypass-rw level {0} is not one of 0 (off), 1 (copy only), 2 (no I/O)")]
    InvalidBypassRw(u8),
}
