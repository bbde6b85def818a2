//! Kernel identifiers and the typed values a filesystem returns.

use std::time::Duration;

use fastfuse_abi as abi;

/// The kernel's name for an inode ("nodeid").
///
/// Lifetime: a node id is valid from the reply that hands it to the kernel
/// (LOOKUP, CREATE, MKNOD, MKDIR, SYMLINK, LINK, READDIRPLUS entries) until
/// FORGET/BATCH_FORGET has brought its lookup count back to zero. A
/// filesystem must not reuse a node id for another inode inside that window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

impl NodeId {
    /// The root directory's node id, fixed by the protocol.
    pub const ROOT: NodeId = NodeId(abi::FUSE_ROOT_ID);
}

/// A handle returned by OPEN/OPENDIR/CREATE and passed back on every I/O
/// request until RELEASE/RELEASEDIR. Its meaning is the filesystem's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FileHandle(pub u64);

/// The kernel's id of one request, unique among requests in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Unique(pub u64);

/// File attributes as the kernel wants them (`struct fuse_attr`).
pub type Attr = abi::Attr;

/// Builds [`Attr`] from a `stat` result.
pub fn attr_from_stat(st: &libc::stat) -> Attr {
    Attr {
        ino: st.st_ino,
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: st.st_atime as u64,
        mtime: st.st_mtime as u64,
        ctime: st.st_ctime as u64,
        atimensec: st.st_atime_nsec as u32,
        mtimensec: st.st_mtime_nsec as u32,
        ctimensec: st.st_ctime_nsec as u32,
        mode: st.st_mode,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

/// The answer to LOOKUP and to every request that creates a name.
///
/// Returning an `Entry` with a non-zero node id adds one to that node's
/// lookup count; the kernel later gives it back with FORGET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The node, or `NodeId(0)` for a negative entry (cache "does not
    /// exist" for `entry_timeout`; does not count as a lookup).
    pub node: NodeId,
    /// Generation number: (node, generation) must be unique over the
    /// filesystem's lifetime for NFS export.
    pub generation: u64,
    /// The node's attributes.
    pub attr: Attr,
    /// How long the kernel may cache the attributes.
    pub attr_timeout: Duration,
    /// How long the kernel may cache the name.
    pub entry_timeout: Duration,
}

/// The answer to GETATTR and SETATTR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttrReply {
    /// The attributes.
    pub attr: Attr,
    /// How long the kernel may cache them.
    pub timeout: Duration,
}

/// The answer to OPEN, OPENDIR and the open half of CREATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Opened {
    /// The handle passed back on later requests.
    pub fh: FileHandle,
    /// `FOPEN_*` flags (direct I/O, keep cache, passthrough, ...).
    pub open_flags: u32,
    /// With `FOPEN_PASSTHROUGH`: the id from `FUSE_DEV_IOC_BACKING_OPEN`.
    pub backing_id: i32,
}

/// The answer to STATFS (`struct fuse_kstatfs`).
pub type StatFs = abi::Kstatfs;

/// A POSIX record lock as GETLK/SETLK carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lock {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive); `u64::MAX`... `OFFSET_MAX` for "to the end".
    pub end: u64,
    /// `F_RDLCK`, `F_WRLCK` or `F_UNLCK`.
    pub typ: u32,
    /// The owning process, for GETLK answers.
    pub pid: u32,
}

impl From<abi::FileLock> for Lock {
    fn from(l: abi::FileLock) -> Lock {
        Lock {
            start: l.start,
            end: l.end,
            typ: l.r#type,
            pid: l.pid,
        }
    }
}

impl From<Lock> for abi::FileLock {
    fn from(l: Lock) -> abi::FileLock {
        abi::FileLock {
            start: l.start,
            end: l.end,
            r#type: l.typ,
            pid: l.pid,
        }
    }
}

/// The answer to GETXATTR and LISTXATTR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Xattr {
    /// The caller asked for the size only (size 0 in the request).
    Size(u32),
    /// The value, or the NUL-separated list of names.
    Data(Vec<u8>),
}

/// The changes a SETATTR asks for; `None` leaves a field as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetAttr {
    /// The handle, when the change comes through an open file (ftruncate).
    pub fh: Option<FileHandle>,
    /// New permission bits and type (only the permission bits change).
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (truncate).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<TimeOrNow>,
    /// New modification time.
    pub mtime: Option<TimeOrNow>,
    /// New change time (sent with the writeback cache).
    pub ctime: Option<Timestamp>,
    /// The kernel asks to clear suid/sgid (`FATTR_KILL_SUIDGID`, with
    /// handle_killpriv_v2).
    pub kill_suidgid: bool,
    /// The lock owner, for a truncate under POSIX locks.
    pub lock_owner: Option<u64>,
}

/// A point in time as the kernel sends it: seconds since the Unix epoch,
/// negative before 1970, and nanoseconds within the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Seconds since the epoch (the kernel's time64_t).
    pub secs: i64,
    /// Nanoseconds, 0..1_000_000_000.
    pub nsecs: u32,
}

impl Timestamp {
    /// The wire's fields (`u64` seconds, which the kernel reads as
    /// `time64_t`) as a timestamp; nanoseconds are clamped to the second.
    pub fn from_wire(secs: u64, nsecs: u32) -> Timestamp {
        Timestamp {
            secs: secs as i64,
            nsecs: nsecs.min(999_999_999),
        }
    }
}

/// A timestamp to set: a fixed time, or "now".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeOrNow {
    /// A fixed time, before or after the Unix epoch.
    At(Timestamp),
    /// The current time, as the server's clock says.
    Now,
}

/// Flags of a WRITE request, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteFlags {
    /// The write comes from the page cache (writeback): `fh` is any handle
    /// of the inode that was open for writing, not necessarily the writer's.
    pub cache: bool,
    /// Clear suid/sgid (handle_killpriv_v2).
    pub kill_suidgid: bool,
    /// The lock owner, when the kernel sent one.
    pub lock_owner: Option<u64>,
    /// The open flags of the file the write came through.
    pub open_flags: u32,
}
