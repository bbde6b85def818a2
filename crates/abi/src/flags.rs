//! The header's `#define` flag groups, one module per group.

/// Bitmasks for `SetattrIn::valid`: which attributes a `SETATTR` changes.
pub mod fattr {
    /// `mode` is valid.
    pub const FATTR_MODE: u32 = 1 << 0;
    /// `uid` is valid.
    pub const FATTR_UID: u32 = 1 << 1;
    /// `gid` is valid.
    pub const FATTR_GID: u32 = 1 << 2;
    /// `size` is valid (truncate).
    pub const FATTR_SIZE: u32 = 1 << 3;
    /// `atime`/`atimensec` are valid.
    pub const FATTR_ATIME: u32 = 1 << 4;
    /// `mtime`/`mtimensec` are valid.
    pub const FATTR_MTIME: u32 = 1 << 5;
    /// `fh` is valid (the change comes through an open file).
    pub const FATTR_FH: u32 = 1 << 6;
    /// Set atime to the current time.
    pub const FATTR_ATIME_NOW: u32 = 1 << 7;
    /// Set mtime to the current time.
    pub const FATTR_MTIME_NOW: u32 = 1 << 8;
    /// `lock_owner` is valid.
    pub const FATTR_LOCKOWNER: u32 = 1 << 9;
    /// `ctime`/`ctimensec` are valid.
    pub const FATTR_CTIME: u32 = 1 << 10;
    /// Kill suid/sgid (with `FUSE_HANDLE_KILLPRIV_V2`).
    pub const FATTR_KILL_SUIDGID: u32 = 1 << 11;
}

/// Flags returned in `OpenOut::open_flags` by `OPEN`/`OPENDIR`/`CREATE`.
pub mod fopen {
    /// Bypass the page cache for this open file.
    pub const FOPEN_DIRECT_IO: u32 = 1 << 0;
    /// Don't invalidate the data cache on open.
    pub const FOPEN_KEEP_CACHE: u32 = 1 << 1;
    /// The file is not seekable.
    pub const FOPEN_NONSEEKABLE: u32 = 1 << 2;
    /// Allow caching this directory.
    pub const FOPEN_CACHE_DIR: u32 = 1 << 3;
    /// The file is stream-like (no file position at all).
    pub const FOPEN_STREAM: u32 = 1 << 4;
    /// Don't flush the data cache on close (unless `FUSE_WRITEBACK_CACHE`).
    pub const FOPEN_NOFLUSH: u32 = 1 << 5;
    /// Allow concurrent direct writes on the same inode.
    pub const FOPEN_PARALLEL_DIRECT_WRITES: u32 = 1 << 6;
    /// Passthrough read/write I/O to the backing file (`OpenOut::backing_id`).
    pub const FOPEN_PASSTHROUGH: u32 = 1 << 7;
}

/// INIT request/reply flags, as one `u64`: bits 0..31 travel in `flags`,
/// bits 32..63 in `flags2` (test `flags as u64 | (flags2 as u64) << 32`).
pub mod init {
    /// Asynchronous read requests.
    pub const FUSE_ASYNC_READ: u64 = 1 << 0;
    /// Remote locking for POSIX file locks.
    pub const FUSE_POSIX_LOCKS: u64 = 1 << 1;
    /// Kernel sends file handle for fstat, etc. (not yet supported).
    pub const FUSE_FILE_OPS: u64 = 1 << 2;
    /// The filesystem handles the `O_TRUNC` open flag.
    pub const FUSE_ATOMIC_O_TRUNC: u64 = 1 << 3;
    /// The filesystem handles lookups of "." and "..".
    pub const FUSE_EXPORT_SUPPORT: u64 = 1 << 4;
    /// The filesystem can handle writes larger than 4 KiB.
    pub const FUSE_BIG_WRITES: u64 = 1 << 5;
    /// Don't apply umask to file mode on create operations.
    pub const FUSE_DONT_MASK: u64 = 1 << 6;
    /// Kernel supports splice write on the device.
    pub const FUSE_SPLICE_WRITE: u64 = 1 << 7;
    /// Kernel supports splice move on the device.
    pub const FUSE_SPLICE_MOVE: u64 = 1 << 8;
    /// Kernel supports splice read on the device.
    pub const FUSE_SPLICE_READ: u64 = 1 << 9;
    /// Remote locking for BSD-style file locks.
    pub const FUSE_FLOCK_LOCKS: u64 = 1 << 10;
    /// Kernel supports ioctl on directories.
    pub const FUSE_HAS_IOCTL_DIR: u64 = 1 << 11;
    /// Automatically invalidate cached pages.
    pub const FUSE_AUTO_INVAL_DATA: u64 = 1 << 12;
    /// Do READDIRPLUS (READDIR + LOOKUP in one).
    pub const FUSE_DO_READDIRPLUS: u64 = 1 << 13;
    /// Adaptive readdirplus.
    pub const FUSE_READDIRPLUS_AUTO: u64 = 1 << 14;
    /// Asynchronous direct I/O submission.
    pub const FUSE_ASYNC_DIO: u64 = 1 << 15;
    /// Use the writeback cache for buffered writes.
    pub const FUSE_WRITEBACK_CACHE: u64 = 1 << 16;
    /// Kernel supports zero-message opens.
    pub const FUSE_NO_OPEN_SUPPORT: u64 = 1 << 17;
    /// Allow parallel lookups and readdir.
    pub const FUSE_PARALLEL_DIROPS: u64 = 1 << 18;
    /// The filesystem kills suid/sgid/cap on write/chown/trunc.
    pub const FUSE_HANDLE_KILLPRIV: u64 = 1 << 19;
    /// The filesystem supports POSIX ACLs.
    pub const FUSE_POSIX_ACL: u64 = 1 << 20;
    /// Reading the device after abort returns `ECONNABORTED`.
    pub const FUSE_ABORT_ERROR: u64 = 1 << 21;
    /// `InitOut::max_pages` contains the max number of request pages.
    pub const FUSE_MAX_PAGES: u64 = 1 << 22;
    /// Cache READLINK responses.
    pub const FUSE_CACHE_SYMLINKS: u64 = 1 << 23;
    /// Kernel supports zero-message opendir.
    pub const FUSE_NO_OPENDIR_SUPPORT: u64 = 1 << 24;
    /// Only invalidate cached pages on explicit request.
    pub const FUSE_EXPLICIT_INVAL_DATA: u64 = 1 << 25;
    /// `InitOut::map_alignment` holds log2 of the DAX mapping alignment.
    pub const FUSE_MAP_ALIGNMENT: u64 = 1 << 26;
    /// Kernel supports auto-mounting directory submounts.
    pub const FUSE_SUBMOUNTS: u64 = 1 << 27;
    /// The filesystem kills suid/sgid/cap like the VFS does (v2 semantics).
    pub const FUSE_HANDLE_KILLPRIV_V2: u64 = 1 << 28;
    /// Server supports the extended `SetxattrIn`.
    pub const FUSE_SETXATTR_EXT: u64 = 1 << 29;
    /// Extended `InitIn`/`InitOut` (the `flags2` fields are valid).
    pub const FUSE_INIT_EXT: u64 = 1 << 30;
    /// Reserved, do not use.
    pub const FUSE_INIT_RESERVED: u64 = 1 << 31;
    /// Add security context to create, mkdir, symlink and mknod.
    pub const FUSE_SECURITY_CTX: u64 = 1 << 32;
    /// Use per-inode DAX.
    pub const FUSE_HAS_INODE_DAX: u64 = 1 << 33;
    /// Add supplementary group info to create, mkdir, symlink and mknod.
    pub const FUSE_CREATE_SUPP_GROUP: u64 = 1 << 34;
    /// Kernel supports expiry-only entry invalidation.
    pub const FUSE_HAS_EXPIRE_ONLY: u64 = 1 << 35;
    /// Allow shared mmap in `FOPEN_DIRECT_IO` mode.
    pub const FUSE_DIRECT_IO_ALLOW_MMAP: u64 = 1 << 36;
    /// Passthrough I/O to backing files is supported.
    pub const FUSE_PASSTHROUGH: u64 = 1 << 37;
    /// Explicitly disable export support.
    pub const FUSE_NO_EXPORT_SUPPORT: u64 = 1 << 38;
    /// Kernel supports resending pending requests (`FUSE_UNIQUE_RESEND`).
    pub const FUSE_HAS_RESEND: u64 = 1 << 39;
    /// Obsolete alias for `FUSE_DIRECT_IO_ALLOW_MMAP`.
    pub const FUSE_DIRECT_IO_RELAX: u64 = FUSE_DIRECT_IO_ALLOW_MMAP;
    /// Allow creation of idmapped mounts.
    pub const FUSE_ALLOW_IDMAP: u64 = 1 << 40;
    /// The client supports FUSE over io_uring.
    pub const FUSE_OVER_IO_URING: u64 = 1 << 41;
    /// Kernel supports timing out requests (`InitOut::request_timeout`).
    pub const FUSE_REQUEST_TIMEOUT: u64 = 1 << 42;
}

/// CUSE INIT request/reply flags (`CuseInitIn::flags` / `CuseInitOut::flags`).
pub mod cuse_init {
    /// Use unrestricted ioctl.
    pub const CUSE_UNRESTRICTED_IOCTL: u32 = 1 << 0;
}

/// Release flags (`ReleaseIn::release_flags`).
pub mod release_flags {
    /// Flush before release.
    pub const FUSE_RELEASE_FLUSH: u32 = 1 << 0;
    /// Unlock BSD (flock) locks held by the file on release.
    pub const FUSE_RELEASE_FLOCK_UNLOCK: u32 = 1 << 1;
}

/// Getattr flags (`GetattrIn::getattr_flags`, `StatxIn::getattr_flags`).
pub mod getattr_flags {
    /// `fh` is valid.
    pub const FUSE_GETATTR_FH: u32 = 1 << 0;
}

/// Lock flags (`LkIn::lk_flags`).
pub mod lk_flags {
    /// The lock is a BSD flock, not a POSIX lock.
    pub const FUSE_LK_FLOCK: u32 = 1 << 0;
}

/// WRITE flags (`WriteIn::write_flags`).
pub mod write_flags {
    /// Delayed write from the page cache; the file handle is guessed.
    pub const FUSE_WRITE_CACHE: u32 = 1 << 0;
    /// `lock_owner` is valid.
    pub const FUSE_WRITE_LOCKOWNER: u32 = 1 << 1;
    /// Kill suid and sgid bits.
    pub const FUSE_WRITE_KILL_SUIDGID: u32 = 1 << 2;
    /// Obsolete alias for `FUSE_WRITE_KILL_SUIDGID`.
    pub const FUSE_WRITE_KILL_PRIV: u32 = FUSE_WRITE_KILL_SUIDGID;
}

/// Read flags (`ReadIn::read_flags`).
pub mod read_flags {
    /// `lock_owner` is valid.
    pub const FUSE_READ_LOCKOWNER: u32 = 1 << 1;
}

/// Ioctl flags (`IoctlIn::flags` / `IoctlOut::flags`) and the iovec limit.
pub mod ioctl_flags {
    /// 32-bit compat ioctl on a 64-bit machine.
    pub const FUSE_IOCTL_COMPAT: u32 = 1 << 0;
    /// Not restricted to well-formed ioctls; retry allowed.
    pub const FUSE_IOCTL_UNRESTRICTED: u32 = 1 << 1;
    /// Retry with new iovecs.
    pub const FUSE_IOCTL_RETRY: u32 = 1 << 2;
    /// 32-bit ioctl.
    pub const FUSE_IOCTL_32BIT: u32 = 1 << 3;
    /// The target is a directory.
    pub const FUSE_IOCTL_DIR: u32 = 1 << 4;
    /// x32 compat ioctl on a 64-bit machine (64-bit `time_t`).
    pub const FUSE_IOCTL_COMPAT_X32: u32 = 1 << 5;
    /// Maximum of `in_iovs + out_iovs`.
    pub const FUSE_IOCTL_MAX_IOV: u32 = 256;
}

/// Poll flags (`PollIn::flags`).
pub mod poll_flags {
    /// Request a poll wakeup notification.
    pub const FUSE_POLL_SCHEDULE_NOTIFY: u32 = 1 << 0;
}

/// Fsync flags (`FsyncIn::fsync_flags`).
pub mod fsync_flags {
    /// Sync data only, not metadata.
    pub const FUSE_FSYNC_FDATASYNC: u32 = 1 << 0;
}

/// `Attr::flags` bits.
pub mod attr_flags {
    /// The object is a submount root.
    pub const FUSE_ATTR_SUBMOUNT: u32 = 1 << 0;
    /// Enable DAX for this file in per-inode DAX mode.
    pub const FUSE_ATTR_DAX: u32 = 1 << 1;
}

/// Open flags (`OpenIn::open_flags`, `CreateIn::open_flags`).
pub mod open_flags {
    /// Kill suid and sgid if executable.
    pub const FUSE_OPEN_KILL_SUIDGID: u32 = 1 << 0;
}

/// setxattr flags (`SetxattrIn::setxattr_flags`).
pub mod setxattr_flags {
    /// Clear SGID when `system.posix_acl_access` is set.
    pub const FUSE_SETXATTR_ACL_KILL_SGID: u32 = 1 << 0;
}

/// notify_inval_entry flags (`NotifyInvalEntryOut::flags`).
pub mod notify_inval_entry_flags {
    /// Only expire the dentry, don't invalidate it.
    pub const FUSE_EXPIRE_ONLY: u32 = 1 << 0;
}

/// Extension types (`enum fuse_ext_type`, `ExtHeader::type`).
pub mod ext_type {
    /// Maximum value of `SecctxHeader::nr_secctx`; types 0..=31 are reserved for it.
    pub const FUSE_MAX_NR_SECCTX: u32 = 31;
    /// A `SuppGroups` extension.
    pub const FUSE_EXT_GROUPS: u32 = 32;
}

/// DAX mapping flags (`SetupmappingIn::flags`).
pub mod setupmapping_flags {
    /// Map for writing.
    pub const FUSE_SETUPMAPPING_FLAG_WRITE: u64 = 1 << 0;
    /// Map for reading.
    pub const FUSE_SETUPMAPPING_FLAG_READ: u64 = 1 << 1;
}
