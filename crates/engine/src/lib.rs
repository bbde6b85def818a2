//! # fastfuse — a FUSE server engine
//!
//! Speaks the Linux kernel's FUSE protocol (7.45), mounts, negotiates INIT,
//! and serves requests on several worker threads, each reading its own
//! cloned /dev/fuse fd into a preallocated buffer. WRITE data reaches the
//! filesystem as a slice of that buffer, and READ and READDIR replies are
//! written straight into the reply buffer: no copies, no allocation per
//! request on those paths.
//!
//! A filesystem implements [`Filesystem`]; [`Session`] mounts and serves it.
//!
//! ```no_run
//! use std::ffi::OsStr;
//! use std::time::Duration;
//! use fastfuse::{Attr, AttrReply, Caller, Config, Errno, Filesystem, FileHandle, MountOptions, NodeId, Session};
//!
//! /// An empty read-only directory.
//! struct Empty;
//!
//! impl Filesystem for Empty {
//!     fn getattr(&self, _: &Caller, node: NodeId, _: Option<FileHandle>) -> Result<AttrReply, Errno> {
//!         if node != NodeId::ROOT {
//!             return Err(Errno::ENOENT);
//!         }
//!         let attr = Attr { ino: 1, mode: libc::S_IFDIR | 0o755, nlink: 2, ..Default::default() };
//!         Ok(AttrReply { attr, timeout: Duration::from_secs(1) })
//!     }
//!     fn lookup(&self, _: &Caller, _: NodeId, _: &OsStr) -> Result<fastfuse::Entry, Errno> {
//!         Err(Errno::ENOENT)
//!     }
//! }
//!
//! let session = Session::mount(Empty, "/mnt/empty", &MountOptions::default(), Config::default())?;
//! session.run()?; // until unmounted
//! # Ok::<(), fastfuse::SessionError>(())
//! ```
//!
//! What INIT asks for is the filesystem's to choose, and the agreement can
//! be checked without a kernel: [`negotiate_with`] is what a session runs
//! with the filesystem's [`Filesystem::init`].
//!
//! ```
//! use fastfuse::abi::init::{FUSE_FLOCK_LOCKS, FUSE_POSIX_LOCKS};
//! use fastfuse::{abi, Capabilities, Config, Errno, Filesystem, InitFlags, InitReply};
//!
//! /// A filesystem that serves POSIX locks itself, and no flocks.
//! struct Locking;
//!
//! impl Filesystem for Locking {
//!     fn init(&self, kernel: &Capabilities, ask: &mut InitFlags) -> Result<(), Errno> {
//!         if !kernel.offers(FUSE_POSIX_LOCKS) {
//!             return Err(Errno::ENOSYS);
//!         }
//!         ask.ask(FUSE_POSIX_LOCKS);
//!         Ok(())
//!     }
//! }
//!
//! // A kernel that offers every flag.
//! let kernel = abi::InitIn { major: 7, minor: 45, flags: u32::MAX, flags2: u32::MAX, ..Default::default() };
//! let reply = fastfuse::negotiate_with(&kernel, &Config::default(), 256, |k, ask| Locking.init(k, ask));
//! let Ok(InitReply::Agreed { negotiated, .. }) = reply else { panic!("{reply:?}") };
//! assert!(negotiated.has(FUSE_POSIX_LOCKS));
//! // Not asked for: the kernel keeps flocks itself.
//! assert!(!negotiated.has(FUSE_FLOCK_LOCKS));
//! ```
//!
//! The pieces, one module each: [`mount`](crate::MountOptions) (mount(2) and
//! fusermount3), INIT negotiation ([`init`](crate::Negotiated)), request
//! decoding ([`request`]), reply encoding, dispatch, the /dev/fuse
//! transport, a session in the background and its pause for a live
//! upgrade ([`BackgroundSession`]), statistics ([`stats`]).
#![deny(unsafe_code)]

#[cfg(feature = "async")]
mod async_fs;
mod background;
mod config;
mod connection;
mod deferred;
mod dirent;
mod dispatch;
mod errno;
mod filesystem;
mod gate;
mod init;
mod interrupt;
mod mount;
mod reply;
pub mod request;
mod session;
mod splice;
pub mod stats;
mod stoppable;
mod sys;
mod transport;
mod types;

#[cfg(feature = "async")]
pub use async_fs::{Async, AsyncCaller, AsyncFilesystem, DirEntry, Spawn, Task, ThreadPoolSpawner};
pub use background::{BackgroundSession, PauseError};
pub use config::{Config, TransportKind};
pub use connection::Connection;
pub use deferred::Deferred;
pub use dirent::{DirEntries, DirEntriesPlus};
pub use errno::Errno;
pub use fastfuse_abi as abi;
pub use filesystem::{CopyRange, Filesystem, OpenFlags};
pub use init::{
    negotiate, negotiate_with, Capabilities, InitError, InitFlags, InitReply, Negotiated,
};
pub use mount::{mount_device, mount_id, MountError, MountOptions};
pub use request::Caller;
pub use session::{Handover, Session, SessionError};
pub use splice::PipeData;
pub use sys::{adopt_inherited_socket, install_wake_handler, WAKE_SIGNAL};
pub use types::{
    attr_from_stat, Attr, AttrReply, Entry, FileHandle, Lock, NodeId, Opened, SetAttr, StatFs,
    TimeOrNow, Timestamp, Unique, WriteFlags, Xattr,
};

/// The crate README's examples, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
