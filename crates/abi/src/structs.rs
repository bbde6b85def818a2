//! Every struct of `include/uapi/linux/fuse.h` (Linux 6.18, protocol 7.45).
//!
//! Each struct is `#[repr(C)]`, field-for-field the kernel's, with the kernel's
//! explicit padding fields, so the zerocopy `IntoBytes` derive proves there is
//! no implicit padding.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::{FUSE_URING_IN_OUT_HEADER_SZ, FUSE_URING_OP_IN_OUT_SZ};

/// File attributes, embedded in `EntryOut` and `AttrOut`.
///
/// `struct fuse_attr`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Number of 512-byte blocks allocated.
    pub blocks: u64,
    /// Last access time, seconds.
    pub atime: u64,
    /// Last modification time, seconds.
    pub mtime: u64,
    /// Last status change time, seconds.
    pub ctime: u64,
    /// Nanoseconds part of `atime`.
    pub atimensec: u32,
    /// Nanoseconds part of `mtime`.
    pub mtimensec: u32,
    /// Nanoseconds part of `ctime`.
    pub ctimensec: u32,
    /// File type and permissions.
    pub mode: u32,
    /// Number of hard links.
    pub nlink: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Device number for device nodes.
    pub rdev: u32,
    /// Preferred I/O block size.
    pub blksize: u32,
    /// `FUSE_ATTR_*` flags (see `attr_flags`).
    pub flags: u32,
}

/// A timestamp in `Statx` (bit-compatible with `struct statx_timestamp`).
///
/// `struct fuse_sx_time`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SxTime {
    /// Seconds since the epoch.
    pub tv_sec: i64,
    /// Nanoseconds.
    pub tv_nsec: u32,
    /// Reserved.
    pub __reserved: i32,
}

/// Extended attributes for `STATX` (bit-compatible with `struct statx`).
///
/// `struct fuse_statx`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Statx {
    /// `STATX_*` mask of valid fields.
    pub mask: u32,
    /// Preferred I/O block size.
    pub blksize: u32,
    /// `STATX_ATTR_*` attributes.
    pub attributes: u64,
    /// Number of hard links.
    pub nlink: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// File type and permissions.
    pub mode: u16,
    /// Spare.
    pub __spare0: [u16; 1],
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Number of 512-byte blocks allocated.
    pub blocks: u64,
    /// Which `attributes` bits are supported.
    pub attributes_mask: u64,
    /// Last access time.
    pub atime: SxTime,
    /// Creation time.
    pub btime: SxTime,
    /// Last status change time.
    pub ctime: SxTime,
    /// Last modification time.
    pub mtime: SxTime,
    /// Device major for device nodes.
    pub rdev_major: u32,
    /// Device minor for device nodes.
    pub rdev_minor: u32,
    /// Major of the containing device.
    pub dev_major: u32,
    /// Minor of the containing device.
    pub dev_minor: u32,
    /// Spare.
    pub __spare2: [u64; 14],
}

/// Filesystem statistics, in `StatfsOut`.
///
/// `struct fuse_kstatfs`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Kstatfs {
    /// Total data blocks.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Free blocks available to unprivileged users.
    pub bavail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Block size.
    pub bsize: u32,
    /// Maximum name length.
    pub namelen: u32,
    /// Fragment size.
    pub frsize: u32,
    /// Padding.
    pub padding: u32,
    /// Spare.
    pub spare: [u32; 6],
}

/// A POSIX/BSD lock description, in `LkIn` and `LkOut`.
///
/// `struct fuse_file_lock`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct FileLock {
    /// First byte of the locked range.
    pub start: u64,
    /// Last byte of the locked range (inclusive).
    pub end: u64,
    /// Lock type (`F_RDLCK`, `F_WRLCK`, `F_UNLCK`).
    pub r#type: u32,
    /// Process (tgid) holding the lock.
    pub pid: u32,
}

/// Reply to `LOOKUP`, `MKNOD`, `MKDIR`, `SYMLINK`, `LINK` (and first part of `CREATE`).
///
/// `struct fuse_entry_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct EntryOut {
    /// Inode ID.
    pub nodeid: u64,
    /// Inode generation: `nodeid:generation` must be unique for the fs's lifetime.
    pub generation: u64,
    /// Cache timeout for the name, seconds.
    pub entry_valid: u64,
    /// Cache timeout for the attributes, seconds.
    pub attr_valid: u64,
    /// Nanoseconds part of `entry_valid`.
    pub entry_valid_nsec: u32,
    /// Nanoseconds part of `attr_valid`.
    pub attr_valid_nsec: u32,
    /// The entry's attributes.
    pub attr: Attr,
}

/// Request body of `FORGET`.
///
/// `struct fuse_forget_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct ForgetIn {
    /// Number of lookups to forget.
    pub nlookup: u64,
}

/// One entry of a `BATCH_FORGET` request.
///
/// `struct fuse_forget_one`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct ForgetOne {
    /// Inode ID.
    pub nodeid: u64,
    /// Number of lookups to forget.
    pub nlookup: u64,
}

/// Request body of `BATCH_FORGET`; followed by `count` `ForgetOne`s.
///
/// `struct fuse_batch_forget_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct BatchForgetIn {
    /// Number of `ForgetOne` entries that follow.
    pub count: u32,
    /// Padding.
    pub dummy: u32,
}

/// Request body of `GETATTR`.
///
/// `struct fuse_getattr_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct GetattrIn {
    /// `FUSE_GETATTR_*` flags (see `getattr_flags`).
    pub getattr_flags: u32,
    /// Padding.
    pub dummy: u32,
    /// File handle, valid with `FUSE_GETATTR_FH`.
    pub fh: u64,
}

/// Reply to `GETATTR` and `SETATTR`.
///
/// `struct fuse_attr_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct AttrOut {
    /// Cache timeout for the attributes, seconds.
    pub attr_valid: u64,
    /// Nanoseconds part of `attr_valid`.
    pub attr_valid_nsec: u32,
    /// Padding.
    pub dummy: u32,
    /// The attributes.
    pub attr: Attr,
}

/// Request body of `STATX`.
///
/// `struct fuse_statx_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct StatxIn {
    /// `FUSE_GETATTR_*` flags.
    pub getattr_flags: u32,
    /// Reserved.
    pub reserved: u32,
    /// File handle, valid with `FUSE_GETATTR_FH`.
    pub fh: u64,
    /// `AT_STATX_*` sync flags.
    pub sx_flags: u32,
    /// Requested `STATX_*` mask.
    pub sx_mask: u32,
}

/// Reply to `STATX`.
///
/// `struct fuse_statx_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct StatxOut {
    /// Cache timeout for the attributes, seconds.
    pub attr_valid: u64,
    /// Nanoseconds part of `attr_valid`.
    pub attr_valid_nsec: u32,
    /// Flags.
    pub flags: u32,
    /// Spare.
    pub spare: [u64; 2],
    /// The attributes.
    pub stat: Statx,
}

/// Request body of `MKNOD`; followed by the name.
///
/// `struct fuse_mknod_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MknodIn {
    /// File type and permissions.
    pub mode: u32,
    /// Device number.
    pub rdev: u32,
    /// The caller's umask.
    pub umask: u32,
    /// Padding.
    pub padding: u32,
}

/// Request body of `MKDIR`; followed by the name.
///
/// `struct fuse_mkdir_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MkdirIn {
    /// Permissions.
    pub mode: u32,
    /// The caller's umask.
    pub umask: u32,
}

/// Request body of `RENAME`; followed by the old and new names.
///
/// `struct fuse_rename_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct RenameIn {
    /// Node ID of the new parent directory.
    pub newdir: u64,
}

/// Request body of `RENAME2`; followed by the old and new names.
///
/// `struct fuse_rename2_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Rename2In {
    /// Node ID of the new parent directory.
    pub newdir: u64,
    /// `RENAME_*` flags.
    pub flags: u32,
    /// Padding.
    pub padding: u32,
}

/// Request body of `LINK`; followed by the new name.
///
/// `struct fuse_link_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct LinkIn {
    /// Node ID of the existing inode.
    pub oldnodeid: u64,
}

/// Request body of `SETATTR`.
///
/// `struct fuse_setattr_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SetattrIn {
    /// `FATTR_*` mask of valid fields (see `fattr`).
    pub valid: u32,
    /// Padding.
    pub padding: u32,
    /// File handle, valid with `FATTR_FH`.
    pub fh: u64,
    /// New size.
    pub size: u64,
    /// Lock owner, valid with `FATTR_LOCKOWNER`.
    pub lock_owner: u64,
    /// New access time, seconds.
    pub atime: u64,
    /// New modification time, seconds.
    pub mtime: u64,
    /// New status change time, seconds.
    pub ctime: u64,
    /// Nanoseconds part of `atime`.
    pub atimensec: u32,
    /// Nanoseconds part of `mtime`.
    pub mtimensec: u32,
    /// Nanoseconds part of `ctime`.
    pub ctimensec: u32,
    /// New mode.
    pub mode: u32,
    /// Unused.
    pub unused4: u32,
    /// New owner user id.
    pub uid: u32,
    /// New owner group id.
    pub gid: u32,
    /// Unused.
    pub unused5: u32,
}

/// Request body of `OPEN` and `OPENDIR`.
///
/// `struct fuse_open_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct OpenIn {
    /// `open(2)` flags.
    pub flags: u32,
    /// `FUSE_OPEN_*` flags (see `open_flags`).
    pub open_flags: u32,
}

/// Request body of `CREATE` (and `TMPFILE`); followed by the name.
///
/// `struct fuse_create_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct CreateIn {
    /// `open(2)` flags.
    pub flags: u32,
    /// File type and permissions.
    pub mode: u32,
    /// The caller's umask.
    pub umask: u32,
    /// `FUSE_OPEN_*` flags (see `open_flags`).
    pub open_flags: u32,
}

/// Reply to `OPEN`, `OPENDIR` (and second part of `CREATE`).
///
/// `struct fuse_open_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct OpenOut {
    /// File handle chosen by the server.
    pub fh: u64,
    /// `FOPEN_*` flags (see `fopen`).
    pub open_flags: u32,
    /// Passthrough backing id, with `FOPEN_PASSTHROUGH`.
    pub backing_id: i32,
}

/// Request body of `RELEASE` and `RELEASEDIR`.
///
/// `struct fuse_release_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct ReleaseIn {
    /// File handle.
    pub fh: u64,
    /// `open(2)` flags.
    pub flags: u32,
    /// `FUSE_RELEASE_*` flags (see `release_flags`).
    pub release_flags: u32,
    /// Lock owner.
    pub lock_owner: u64,
}

/// Request body of `FLUSH`.
///
/// `struct fuse_flush_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct FlushIn {
    /// File handle.
    pub fh: u64,
    /// Unused.
    pub unused: u32,
    /// Padding.
    pub padding: u32,
    /// Lock owner.
    pub lock_owner: u64,
}

/// Request body of `READ`, `READDIR` and `READDIRPLUS`.
///
/// `struct fuse_read_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct ReadIn {
    /// File handle.
    pub fh: u64,
    /// Offset to read from.
    pub offset: u64,
    /// Number of bytes to read.
    pub size: u32,
    /// `FUSE_READ_*` flags (see `read_flags`).
    pub read_flags: u32,
    /// Lock owner, valid with `FUSE_READ_LOCKOWNER`.
    pub lock_owner: u64,
    /// `open(2)` flags.
    pub flags: u32,
    /// Padding.
    pub padding: u32,
}

/// Request body of `WRITE`; followed by the data.
///
/// `struct fuse_write_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct WriteIn {
    /// File handle.
    pub fh: u64,
    /// Offset to write at.
    pub offset: u64,
    /// Number of bytes to write.
    pub size: u32,
    /// `FUSE_WRITE_*` flags (see `write_flags`).
    pub write_flags: u32,
    /// Lock owner, valid with `FUSE_WRITE_LOCKOWNER`.
    pub lock_owner: u64,
    /// `open(2)` flags.
    pub flags: u32,
    /// Padding.
    pub padding: u32,
}

/// Reply to `WRITE`.
///
/// `struct fuse_write_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct WriteOut {
    /// Number of bytes written.
    pub size: u32,
    /// Padding.
    pub padding: u32,
}

/// Reply to `STATFS`.
///
/// `struct fuse_statfs_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct StatfsOut {
    /// The statistics.
    pub st: Kstatfs,
}

/// Request body of `FSYNC` and `FSYNCDIR`.
///
/// `struct fuse_fsync_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct FsyncIn {
    /// File handle.
    pub fh: u64,
    /// `FUSE_FSYNC_*` flags (see `fsync_flags`).
    pub fsync_flags: u32,
    /// Padding.
    pub padding: u32,
}

/// Request body of `SETXATTR` (extended form, `FUSE_SETXATTR_EXT`); followed by name and value.
///
/// `struct fuse_setxattr_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SetxattrIn {
    /// Size of the value.
    pub size: u32,
    /// `XATTR_*` flags.
    pub flags: u32,
    /// `FUSE_SETXATTR_*` flags (see `setxattr_flags`).
    pub setxattr_flags: u32,
    /// Padding.
    pub padding: u32,
}

/// Request body of `GETXATTR` and `LISTXATTR`.
///
/// `struct fuse_getxattr_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct GetxattrIn {
    /// Size of the caller's buffer (0 to query the size).
    pub size: u32,
    /// Padding.
    pub padding: u32,
}

/// Reply to `GETXATTR`/`LISTXATTR` when the request's size was 0.
///
/// `struct fuse_getxattr_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct GetxattrOut {
    /// Size of the value or list.
    pub size: u32,
    /// Padding.
    pub padding: u32,
}

/// Request body of `GETLK`, `SETLK` and `SETLKW`.
///
/// `struct fuse_lk_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct LkIn {
    /// File handle.
    pub fh: u64,
    /// Lock owner.
    pub owner: u64,
    /// The lock.
    pub lk: FileLock,
    /// `FUSE_LK_*` flags (see `lk_flags`).
    pub lk_flags: u32,
    /// Padding.
    pub padding: u32,
}

/// Reply to `GETLK`.
///
/// `struct fuse_lk_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct LkOut {
    /// The conflicting lock, or `F_UNLCK`.
    pub lk: FileLock,
}

/// Request body of `ACCESS`.
///
/// `struct fuse_access_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct AccessIn {
    /// `access(2)` mode mask.
    pub mask: u32,
    /// Padding.
    pub padding: u32,
}

/// Request body of `INIT`.
///
/// `struct fuse_init_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct InitIn {
    /// Kernel's major protocol version.
    pub major: u32,
    /// Kernel's minor protocol version.
    pub minor: u32,
    /// Maximum readahead.
    pub max_readahead: u32,
    /// Bits 0..31 of the `init` flags the kernel supports.
    pub flags: u32,
    /// Bits 32..63 of the `init` flags the kernel supports.
    pub flags2: u32,
    /// Unused.
    pub unused: [u32; 11],
}

/// Reply to `INIT`.
///
/// `struct fuse_init_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct InitOut {
    /// Server's major protocol version.
    pub major: u32,
    /// Server's minor protocol version.
    pub minor: u32,
    /// Maximum readahead.
    pub max_readahead: u32,
    /// Bits 0..31 of the `init` flags the server enables.
    pub flags: u32,
    /// Maximum number of pending background requests.
    pub max_background: u16,
    /// Background requests before congestion.
    pub congestion_threshold: u16,
    /// Maximum size of a write.
    pub max_write: u32,
    /// Timestamp granularity in nanoseconds.
    pub time_gran: u32,
    /// Maximum pages per request, with `FUSE_MAX_PAGES`.
    pub max_pages: u16,
    /// log2 of DAX mapping alignment, with `FUSE_MAP_ALIGNMENT`.
    pub map_alignment: u16,
    /// Bits 32..63 of the `init` flags the server enables.
    pub flags2: u32,
    /// Maximum filesystem stacking depth, with `FUSE_PASSTHROUGH`.
    pub max_stack_depth: u32,
    /// Request timeout in seconds, with `FUSE_REQUEST_TIMEOUT`.
    pub request_timeout: u16,
    /// Unused.
    pub unused: [u16; 11],
}

/// Request body of `CUSE_INIT`.
///
/// `struct cuse_init_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct CuseInitIn {
    /// Kernel's major protocol version.
    pub major: u32,
    /// Kernel's minor protocol version.
    pub minor: u32,
    /// Unused.
    pub unused: u32,
    /// `CUSE_*` flags (see `cuse_init`).
    pub flags: u32,
}

/// Reply to `CUSE_INIT`; followed by the device info strings.
///
/// `struct cuse_init_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct CuseInitOut {
    /// Server's major protocol version.
    pub major: u32,
    /// Server's minor protocol version.
    pub minor: u32,
    /// Unused.
    pub unused: u32,
    /// `CUSE_*` flags (see `cuse_init`).
    pub flags: u32,
    /// Maximum size of a read.
    pub max_read: u32,
    /// Maximum size of a write.
    pub max_write: u32,
    /// Character device major.
    pub dev_major: u32,
    /// Character device minor.
    pub dev_minor: u32,
    /// Spare.
    pub spare: [u32; 10],
}

/// Request body of `INTERRUPT`.
///
/// `struct fuse_interrupt_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct InterruptIn {
    /// `unique` of the request to interrupt.
    pub unique: u64,
}

/// Request body of `BMAP`.
///
/// `struct fuse_bmap_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct BmapIn {
    /// File block.
    pub block: u64,
    /// Block size.
    pub blocksize: u32,
    /// Padding.
    pub padding: u32,
}

/// Reply to `BMAP`.
///
/// `struct fuse_bmap_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct BmapOut {
    /// Device block.
    pub block: u64,
}

/// Request body of `IOCTL`; followed by input data.
///
/// `struct fuse_ioctl_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct IoctlIn {
    /// File handle.
    pub fh: u64,
    /// `FUSE_IOCTL_*` flags (see `ioctl_flags`).
    pub flags: u32,
    /// ioctl command.
    pub cmd: u32,
    /// ioctl argument.
    pub arg: u64,
    /// Size of the input data.
    pub in_size: u32,
    /// Maximum size of the output data.
    pub out_size: u32,
}

/// An iovec in an unrestricted `IOCTL` retry reply.
///
/// `struct fuse_ioctl_iovec`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct IoctlIovec {
    /// Address.
    pub base: u64,
    /// Length.
    pub len: u64,
}

/// Reply to `IOCTL`.
///
/// `struct fuse_ioctl_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct IoctlOut {
    /// ioctl return value.
    pub result: i32,
    /// `FUSE_IOCTL_*` flags (see `ioctl_flags`).
    pub flags: u32,
    /// Number of input iovecs, for a retry.
    pub in_iovs: u32,
    /// Number of output iovecs, for a retry.
    pub out_iovs: u32,
}

/// Request body of `POLL`.
///
/// `struct fuse_poll_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct PollIn {
    /// File handle.
    pub fh: u64,
    /// Kernel handle to pass back in `NotifyPollWakeupOut`.
    pub kh: u64,
    /// `FUSE_POLL_*` flags (see `poll_flags`).
    pub flags: u32,
    /// Requested poll events.
    pub events: u32,
}

/// Reply to `POLL`.
///
/// `struct fuse_poll_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct PollOut {
    /// Ready poll events.
    pub revents: u32,
    /// Padding.
    pub padding: u32,
}

/// Body of a `NOTIFY_POLL` notification.
///
/// `struct fuse_notify_poll_wakeup_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct NotifyPollWakeupOut {
    /// Kernel handle from `PollIn::kh`.
    pub kh: u64,
}

/// Request body of `FALLOCATE`.
///
/// `struct fuse_fallocate_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct FallocateIn {
    /// File handle.
    pub fh: u64,
    /// Start of the range.
    pub offset: u64,
    /// Length of the range.
    pub length: u64,
    /// `fallocate(2)` mode.
    pub mode: u32,
    /// Padding.
    pub padding: u32,
}

/// Header of every request the kernel sends.
///
/// `struct fuse_in_header`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct InHeader {
    /// Total length of the request, header included.
    pub len: u32,
    /// The `Opcode`.
    pub opcode: u32,
    /// Request id, echoed in `OutHeader::unique`.
    pub unique: u64,
    /// Node ID the request is about.
    pub nodeid: u64,
    /// Caller's user id.
    pub uid: u32,
    /// Caller's group id.
    pub gid: u32,
    /// Caller's process id.
    pub pid: u32,
    /// Length of extensions after the request, in 8-byte units.
    pub total_extlen: u16,
    /// Padding.
    pub padding: u16,
}

/// Header of every reply and notification the server writes.
///
/// `struct fuse_out_header`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct OutHeader {
    /// Total length of the reply, header included.
    pub len: u32,
    /// Negative errno, 0, or a `NotifyCode` when `unique` is 0.
    pub error: i32,
    /// `InHeader::unique` of the request answered; 0 for notifications.
    pub unique: u64,
}

/// Header of a `READDIR` record; followed by `namelen` name bytes, padded to 8.
///
/// `struct fuse_dirent`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Dirent {
    /// Inode number.
    pub ino: u64,
    /// Offset of the next entry.
    pub off: u64,
    /// Length of the name.
    pub namelen: u32,
    /// File type (`DT_*`).
    pub r#type: u32,
}

/// Header of a `READDIRPLUS` record; followed by the name, padded to 8.
///
/// `struct fuse_direntplus`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Direntplus {
    /// The entry, as `LOOKUP` would return it.
    pub entry_out: EntryOut,
    /// The directory record header.
    pub dirent: Dirent,
}

/// Body of a `NOTIFY_INVAL_INODE` notification.
///
/// `struct fuse_notify_inval_inode_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct NotifyInvalInodeOut {
    /// Node ID.
    pub ino: u64,
    /// Start of the page-cache range to invalidate; negative: attributes only.
    pub off: i64,
    /// Length of the range; <= 0 means to the end of the file.
    pub len: i64,
}

/// Body of a `NOTIFY_INVAL_ENTRY` notification; followed by the name.
///
/// `struct fuse_notify_inval_entry_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct NotifyInvalEntryOut {
    /// Node ID of the parent directory.
    pub parent: u64,
    /// Length of the name.
    pub namelen: u32,
    /// `FUSE_EXPIRE_ONLY` (see `notify_inval_entry_flags`).
    pub flags: u32,
}

/// Body of a `NOTIFY_DELETE` notification; followed by the name.
///
/// `struct fuse_notify_delete_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct NotifyDeleteOut {
    /// Node ID of the parent directory.
    pub parent: u64,
    /// Node ID of the deleted child.
    pub child: u64,
    /// Length of the name.
    pub namelen: u32,
    /// Padding.
    pub padding: u32,
}

/// Body of a `NOTIFY_STORE` notification; followed by the data.
///
/// `struct fuse_notify_store_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct NotifyStoreOut {
    /// Node ID.
    pub nodeid: u64,
    /// Offset to store at.
    pub offset: u64,
    /// Number of bytes.
    pub size: u32,
    /// Padding.
    pub padding: u32,
}

/// Body of a `NOTIFY_RETRIEVE` notification.
///
/// `struct fuse_notify_retrieve_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct NotifyRetrieveOut {
    /// Id echoed in the kernel's `NOTIFY_REPLY`.
    pub notify_unique: u64,
    /// Node ID.
    pub nodeid: u64,
    /// Offset to retrieve from.
    pub offset: u64,
    /// Number of bytes.
    pub size: u32,
    /// Padding.
    pub padding: u32,
}

/// Request body of the kernel's `NOTIFY_REPLY` (same size as `WriteIn`); followed by the data.
///
/// `struct fuse_notify_retrieve_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct NotifyRetrieveIn {
    /// Unused.
    pub dummy1: u64,
    /// Offset of the data.
    pub offset: u64,
    /// Number of bytes.
    pub size: u32,
    /// Unused.
    pub dummy2: u32,
    /// Unused.
    pub dummy3: u64,
    /// Unused.
    pub dummy4: u64,
}

/// Body of a `NOTIFY_PRUNE` notification (7.45); followed by `count` `u64` node IDs.
///
/// `struct fuse_notify_prune_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct NotifyPruneOut {
    /// Number of node IDs that follow.
    pub count: u32,
    /// Padding.
    pub padding: u32,
    /// Spare.
    pub spare: u64,
}

/// Argument of the `FUSE_DEV_IOC_BACKING_OPEN` ioctl.
///
/// `struct fuse_backing_map`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct BackingMap {
    /// File descriptor of the backing file.
    pub fd: i32,
    /// Flags (must be 0).
    pub flags: u32,
    /// Padding.
    pub padding: u64,
}

/// Request body of `LSEEK`.
///
/// `struct fuse_lseek_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct LseekIn {
    /// File handle.
    pub fh: u64,
    /// Offset.
    pub offset: u64,
    /// `SEEK_DATA` or `SEEK_HOLE`.
    pub whence: u32,
    /// Padding.
    pub padding: u32,
}

/// Reply to `LSEEK`.
///
/// `struct fuse_lseek_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct LseekOut {
    /// Resulting offset.
    pub offset: u64,
}

/// Request body of `COPY_FILE_RANGE` and `COPY_FILE_RANGE_64`.
///
/// `struct fuse_copy_file_range_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct CopyFileRangeIn {
    /// Source file handle.
    pub fh_in: u64,
    /// Source offset.
    pub off_in: u64,
    /// Node ID of the destination.
    pub nodeid_out: u64,
    /// Destination file handle.
    pub fh_out: u64,
    /// Destination offset.
    pub off_out: u64,
    /// Number of bytes to copy.
    pub len: u64,
    /// `copy_file_range(2)` flags.
    pub flags: u64,
}

/// Reply to `COPY_FILE_RANGE_64` (7.45).
///
/// `struct fuse_copy_file_range_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct CopyFileRangeOut {
    /// Number of bytes copied.
    pub bytes_copied: u64,
}

/// Request body of `SETUPMAPPING` (DAX).
///
/// `struct fuse_setupmapping_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SetupmappingIn {
    /// An already open handle.
    pub fh: u64,
    /// Offset into the file to start the mapping.
    pub foffset: u64,
    /// Length of the mapping.
    pub len: u64,
    /// `FUSE_SETUPMAPPING_FLAG_*` (see `setupmapping_flags`).
    pub flags: u64,
    /// Offset in the memory window.
    pub moffset: u64,
}

/// Request body of `REMOVEMAPPING` (DAX); followed by `count` `RemovemappingOne`s.
///
/// `struct fuse_removemapping_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct RemovemappingIn {
    /// Number of `RemovemappingOne` entries that follow.
    pub count: u32,
}

/// One range of a `REMOVEMAPPING` request.
///
/// `struct fuse_removemapping_one`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct RemovemappingOne {
    /// Offset into the DAX window to start unmapping.
    pub moffset: u64,
    /// Length of the range.
    pub len: u64,
}

/// Request body of `SYNCFS`.
///
/// `struct fuse_syncfs_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SyncfsIn {
    /// Padding.
    pub padding: u64,
}

/// One security context in a request extension; followed by the name and the context.
///
/// `struct fuse_secctx`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Secctx {
    /// Size of the context.
    pub size: u32,
    /// Padding.
    pub padding: u32,
}

/// Header of the security-context extension (`FUSE_SECURITY_CTX`).
///
/// `struct fuse_secctx_header`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SecctxHeader {
    /// Total size of all contexts, this header included.
    pub size: u32,
    /// Number of `Secctx` that follow.
    pub nr_secctx: u32,
}

/// Header of a request extension (`InHeader::total_extlen`).
///
/// `struct fuse_ext_header`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct ExtHeader {
    /// Total size of this extension, header included.
    pub size: u32,
    /// Extension type (see `ext_type`).
    pub r#type: u32,
}

/// Supplementary-groups extension header; followed by `nr_groups` `u32` group ids.
///
/// `struct fuse_supp_groups`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SuppGroups {
    /// Number of group ids that follow.
    pub nr_groups: u32,
}

/// Per-entry data in `UringReqHeader`.
///
/// `struct fuse_uring_ent_in_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct UringEntInOut {
    /// Flags.
    pub flags: u64,
    /// Commit id to use in the reply (`UringCmdReq::commit_id`).
    pub commit_id: u64,
    /// Size of the user payload buffer.
    pub payload_sz: u32,
    /// Padding.
    pub padding: u32,
    /// Reserved.
    pub reserved: u64,
}

/// Header of every FUSE-over-io_uring request buffer.
///
/// `struct fuse_uring_req_header`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct UringReqHeader {
    /// `InHeader` (request) / `OutHeader` (reply) area.
    pub in_out: [u8; FUSE_URING_IN_OUT_HEADER_SZ],
    /// Per-opcode header area.
    pub op_in: [u8; FUSE_URING_OP_IN_OUT_SZ],
    /// Per-entry data.
    pub ring_ent_in_out: UringEntInOut,
}

impl Default for UringReqHeader {
    fn default() -> Self {
        Self {
            in_out: [0; FUSE_URING_IN_OUT_HEADER_SZ],
            op_in: [0; FUSE_URING_OP_IN_OUT_SZ],
            ring_ent_in_out: UringEntInOut::default(),
        }
    }
}

/// Payload of a FUSE io_uring command, in the SQE's 80-byte command area.
///
/// `struct fuse_uring_cmd_req`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct UringCmdReq {
    /// Flags.
    pub flags: u64,
    /// Entry identifier for commits.
    pub commit_id: u64,
    /// Queue index the command is for.
    pub qid: u16,
    /// Padding.
    pub padding: [u8; 6],
}
