//! The [`Filesystem`] trait: what a filesystem built on the engine implements.

use std::ffi::OsStr;

use crate::connection::Connection;
use crate::dirent::{DirEntries, DirEntriesPlus};
use crate::errno::Errno;
use crate::init::{Capabilities, InitFlags};
use crate::request::Caller;
use crate::splice::PipeData;
use crate::types::{
    AttrReply, Entry, FileHandle, Lock, NodeId, Opened, SetAttr, StatFs, WriteFlags, Xattr,
};

/// Open flags of OPEN and CREATE, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenFlags {
    /// The caller's `open(2)` flags (`O_RDONLY`, `O_TRUNC`, ...). With the
    /// writeback cache the kernel has already stripped nothing: deciding what
    /// to do with `O_APPEND` and `O_WRONLY` is the filesystem's job.
    pub flags: u32,
    /// The kernel asks to clear suid/sgid because the open truncates
    /// (`FUSE_OPEN_KILL_SUIDGID`, with handle_killpriv_v2).
    pub kill_suidgid: bool,
}

/// The arguments of COPY_FILE_RANGE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyRange {
    /// Source node and handle.
    pub node_in: NodeId,
    /// Source handle.
    pub fh_in: FileHandle,
    /// Source offset.
    pub off_in: u64,
    /// Destination node.
    pub node_out: NodeId,
    /// Destination handle.
    pub fh_out: FileHandle,
    /// Destination offset.
    pub off_out: u64,
    /// Bytes to copy.
    pub len: u64,
    /// `copy_file_range(2)` flags (zero today).
    pub flags: u64,
}

/// Defines [`Filesystem`] from its methods, written once, the forwarding
/// `impl Filesystem for Arc<T>` from the same list, so that the two cannot
/// drift apart, and [`filesystem_methods!`](crate::filesystem_methods),
/// which hands the list to other crates. Each method is `fn name(&self,
/// arg: Type, ...) -> Ret { default body }` with its doc comment. The first
/// token is a `$`, for the macro it defines (macro_rules cannot write a
/// `$` of its own on stable Rust).
macro_rules! filesystem_trait {
    ($d:tt $(
        $(#[$attr:meta])*
        fn $name:ident(&$self:ident $(, $arg:ident: $ty:ty)* $(,)?) $(-> $ret:ty)? $default:block
    )*) => {
        /// A filesystem served by the engine.
        ///
        /// Methods take `&self` and may run concurrently on several worker threads,
        /// so implementations do their own locking. Each returns a typed result; an
        /// `Err(errno)` becomes the reply's error. The default of every method is
        /// `Err(ENOSYS)`; for several operations the kernel remembers an ENOSYS
        /// answer and stops sending the operation (noted per method), so a default
        /// costs one round trip, not one per call.
        ///
        /// Lookup counts: every successful reply carrying an [`Entry`] with a
        /// non-zero node (lookup, mknod, mkdir, symlink, link, create, tmpfile, and
        /// each READDIRPLUS entry) adds one to that node's count; FORGET and
        /// BATCH_FORGET subtract. A node must stay valid while its count is above
        /// zero. The root node is never forgotten.
        ///
        /// A method that panics does not take its worker down: the request is
        /// answered EIO and the worker goes on. The filesystem's own state is what
        /// the panic left of it.
        #[allow(unused_variables, clippy::too_many_arguments)]
        pub trait Filesystem: Send + Sync + 'static {
            $(
                $(#[$attr])*
                fn $name(&$self $(, $arg: $ty)*) $(-> $ret)? $default
            )*
        }

        /// Calls `$callback!` with the signature of every [`Filesystem`]
        /// method, in the trait's order: `fn name(&self, arg: Type, ...) ->
        /// Ret;` each. A filesystem can generate its `impl Filesystem` from
        /// it instead of writing every signature out once more (the
        /// passthrough crate forwards each method to a function of the same
        /// name and arguments). The types are named as the engine names
        /// them (`Caller`, `NodeId`, `Entry`, ...): the expansion needs them
        /// in scope.
        #[macro_export]
        macro_rules! filesystem_methods {
            ($d callback:ident) => {
                $d callback! { $( fn $name(&$self $(, $arg: $ty)*) $(-> $ret)?; )* }
            };
        }

        /// Shares one filesystem between a session and its owner (for example a
        /// test that inspects the filesystem while it is mounted).
        impl<T: Filesystem + ?Sized> Filesystem for std::sync::Arc<T> {
            $(
                #[allow(clippy::too_many_arguments)]
                fn $name(&$self $(, $arg: $ty)*) $(-> $ret)? {
                    (**$self).$name($($arg),*)
                }
            )*
        }
    };
}

filesystem_trait! {
    $
    /// Called once with what the kernel offers at INIT, before the engine
    /// answers: `ask` holds the flags the [`Config`](crate::Config) asks
    /// for, and the filesystem adds what it implements and drops what it
    /// cannot serve (`fastfuse::abi::init` names them). A filesystem that
    /// serves locks asks for `FUSE_POSIX_LOCKS` and `FUSE_FLOCK_LOCKS`
    /// here; without them the kernel keeps fcntl and flock locks itself
    /// and never calls [`getlk`](Filesystem::getlk) or
    /// [`setlk`](Filesystem::setlk). An error refuses the connection and
    /// fails the mount.
    fn init(&self, kernel: &Capabilities, ask: &mut InitFlags) -> Result<(), Errno> {
        Ok(())
    }

    /// Called once INIT is agreed, before the reply is sent and any other
    /// request is served; what was agreed is in
    /// [`Connection::negotiated`]. Keep `conn` to send notifications. An
    /// error fails the mount.
    fn ready(&self, conn: &Connection) -> Result<(), Errno> {
        Ok(())
    }

    /// Called once when the session ends (DESTROY, or the connection went
    /// away): flush whatever must reach stable storage.
    fn destroy(&self) {}

    /// Called by a /dev/fuse worker that polls for its next request (see
    /// [`Config::spin_wait`](crate::Config::spin_wait)), between polls, so
    /// that the CPU time it spends waiting can go to work the filesystem
    /// expects to be asked for soon (reading ahead, say). One call does one
    /// small piece of it: a request that comes meanwhile waits for the call
    /// to return, so it should take microseconds. Returns whether it did
    /// any work; when it did not, the worker yields the CPU instead.
    fn idle(&self) -> bool {
        false
    }

    /// Looks `name` up in directory `parent`. Adds one lookup on success.
    fn lookup(&self, req: &Caller, parent: NodeId, name: &OsStr) -> Result<Entry, Errno> {
        Err(Errno::ENOSYS)
    }

    /// Subtracts `nlookup` from the node's lookup count. No reply is sent.
    fn forget(&self, node: NodeId, nlookup: u64) {}

    /// FORGET for many nodes at once. The default calls [`forget`] for each.
    ///
    /// [`forget`]: Filesystem::forget
    fn batch_forget(&self, nodes: &mut dyn Iterator<Item = (NodeId, u64)>) {
        for (node, nlookup) in nodes {
            self.forget(node, nlookup);
        }
    }

    /// Returns the node's attributes; `fh` is set when the kernel asks
    /// through an open file (fstat).
    fn getattr(
        &self,
        req: &Caller,
        node: NodeId,
        fh: Option<FileHandle>,
    ) -> Result<AttrReply, Errno> {
        Err(Errno::ENOSYS)
    }

    /// Changes attributes (chmod, chown, truncate, utimens) and returns the
    /// result.
    fn setattr(&self, req: &Caller, node: NodeId, changes: &SetAttr) -> Result<AttrReply, Errno> {
        Err(Errno::ENOSYS)
    }

    /// Returns a symlink's target.
    fn readlink(&self, req: &Caller, node: NodeId) -> Result<Vec<u8>, Errno> {
        Err(Errno::ENOSYS)
    }

    /// Creates a symlink `name` in `parent` pointing to `target`.
    fn symlink(
        &self,
        req: &Caller,
        parent: NodeId,
        name: &OsStr,
        target: &OsStr,
    ) -> Result<Entry, Errno> {
        Err(Errno::ENOSYS)
    }

    /// Creates a file node (regular, fifo, socket or device). `mode` has the
    /// type bits; `umask` is the caller's, already applied by the kernel
    /// unless the filesystem negotiated `FUSE_DONT_MASK`.
    fn mknod(
        &self,
        req: &Caller,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        rdev: u32,
        umask: u32,
    ) -> Result<Entry, Errno> {
        Err(Errno::ENOSYS)
    }

    /// Creates a directory.
    fn mkdir(
        &self,
        req: &Caller,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> Result<Entry, Errno> {
        Err(Errno::ENOSYS)
    }

    /// Removes a non-directory name.
    fn unlink(&self, req: &Caller, parent: NodeId, name: &OsStr) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }

    /// Removes an empty directory.
    fn rmdir(&self, req: &Caller, parent: NodeId, name: &OsStr) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }

    /// Renames; `flags` are `renameat2(2)`'s (`RENAME_NOREPLACE`,
    /// `RENAME_EXCHANGE`, `RENAME_WHITEOUT`). ENOSYS with non-zero flags makes
    /// the kernel answer EINVAL for flags from then on.
    fn rename(
        &self,
        req: &Caller,
        parent: NodeId,
        name: &OsStr,
        new_parent: NodeId,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }

    /// Creates a hard link `new_name` in `new_parent` to `node`.
    fn link(
        &self,
        req: &Caller,
        node: NodeId,
        new_parent: NodeId,
        new_name: &OsStr,
    ) -> Result<Entry, Errno> {
        Err(Errno::ENOSYS)
    }

    /// Opens a file. ENOSYS (with protocol 7.23+) means "opens always
    /// succeed and need no handle": the kernel stops sending OPEN.
    fn open(&self, req: &Caller, node: NodeId, flags: OpenFlags) -> Result<Opened, Errno> {
        Err(Errno::ENOSYS)
    }

    /// Reads into `buf` (as long as the kernel asked for, or shorter if the
    /// reply buffer is smaller) and returns how many bytes were read; fewer
    /// than asked means end of file, unless the file is in direct-I/O mode.
    fn read(
        &self,
        req: &Caller,
        node: NodeId,
        fh: FileHandle,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, Errno> {
        Err(Errno::ENOSYS)
    }

    /// Writes `data`, borrowed from the request buffer, and returns how many
    /// bytes were written.
    fn write(
        &self,
        req: &Caller,
        node: NodeId,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        flags: WriteFlags,
    ) -> Result<u32, Errno> {
        Err(Errno::ENOSYS)
    }

    /// A WRITE whose data is still in a pipe: with
    /// [`Config::splice_write`](crate::Config::splice_write), large WRITEs
    /// arrive here so that the data can reach a file by splice(2) without
    /// passing through user memory. The default reads the data and calls
    /// [`write`](Self::write).
    fn write_spliced(
        &self,
        req: &Caller,
        node: NodeId,
        fh: FileHandle,
        offset: u64,
        data: &mut PipeData<'_>,
        flags: WriteFlags,
    ) -> Result<u32, Errno> {
        let data = data.read_remaining()?;
        self.write(req, node, fh, offset, data, flags)
    }

    /// Called on every close(2) of a file descriptor (there may be several
    /// per open). ENOSYS: the kernel stops sending FLUSH.
    fn flush(
        &self,
        req: &Caller,
        node: NodeId,
        fh: FileHandle,
        lock_owner: u64,
    ) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }

    /// The last reference to an open file is gone. `release_flags` has
    /// `FUSE_RELEASE_FLUSH` / `FUSE_RELEASE_FLOCK_UNLOCK`. The reply's error
    /// is ignored by the kernel.
    fn release(
        &self,
        req: &Caller,
        node: NodeId,
        fh: FileHandle,
        flags: u32,
        release_flags: u32,
        lock_owner: u64,
    ) -> Result<(), Errno> {
        Ok(())
    }

    /// Flushes a file to stable storage. ENOSYS: the kernel stops sending
    /// FSYNC and fsync(2) succeeds.
    fn fsync(
        &self,
        req: &Caller,
        node: NodeId,
        fh: FileHandle,
        datasync: bool,
    ) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }

    /// Opens a directory. ENOSYS (7.29+): opendir always succeeds.
    fn opendir(&self, req: &Caller, node: NodeId, flags: u32) -> Result<Opened, Errno> {
        Err(Errno::ENOSYS)
    }

    /// Lists directory entries from `offset` (0, or a cookie given with an
    /// earlier entry) into `out` until it is full or the directory ends.
    fn readdir(
        &self,
        req: &Caller,
        node: NodeId,
        fh: FileHandle,
        offset: u64,
        out: &mut DirEntries<'_>,
    ) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }

    /// READDIR with attributes: each pushed entry with a non-zero node adds
    /// one lookup. Only sent when the filesystem asked for readdirplus.
    fn readdirplus(
        &self,
        req: &Caller,
        node: NodeId,
        fh: FileHandle,
        offset: u64,
        out: &mut DirEntriesPlus<'_>,
    ) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }

    /// Closes a directory handle.
    fn releasedir(
        &self,
        req: &Caller,
        node: NodeId,
        fh: FileHandle,
        flags: u32,
    ) -> Result<(), Errno> {
        Ok(())
    }

    /// fsync(2) on a directory. ENOSYS: the kernel stops sending FSYNCDIR.
    fn fsyncdir(
        &self,
        req: &Caller,
        node: NodeId,
        fh: FileHandle,
        datasync: bool,
    ) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }

    /// Filesystem statistics. The default describes an empty filesystem
    /// (what the kernel assumes on ENOSYS too).
    fn statfs(&self, req: &Caller, node: NodeId) -> Result<StatFs, Errno> {
        Ok(StatFs {
            bsize: 512,
            namelen: 255,
            ..Default::default()
        })
    }

    /// Sets an extended attribute; `flags` are `setxattr(2)`'s. ENOSYS: the
    /// kernel answers EOPNOTSUPP to setxattr(2) from then on without asking
    /// (it keeps one such flag per xattr operation: an ENOSYS here leaves
    /// getxattr, listxattr and removexattr alone).
    ///
    /// `acl_kill_sgid` (`FUSE_SETXATTR_ACL_KILL_SGID`, once
    /// [`init`](Filesystem::init) asked for `FUSE_POSIX_ACL`): a POSIX ACL
    /// set by a caller that is neither in the file's group nor has
    /// CAP_FSETID, which must also clear the file's set-group-ID bit, as
    /// setting the ACL directly would.
    fn setxattr(
        &self,
        req: &Caller,
        node: NodeId,
        name: &OsStr,
        value: &[u8],
        flags: u32,
        acl_kill_sgid: bool,
    ) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }

    /// Reads an extended attribute; `size` 0 asks for the size only. Answer
    /// ERANGE when the value is larger than a non-zero `size`.
    fn getxattr(
        &self,
        req: &Caller,
        node: NodeId,
        name: &OsStr,
        size: u32,
    ) -> Result<Xattr, Errno> {
        Err(Errno::ENOSYS)
    }

    /// Lists extended attribute names (NUL-separated); `size` as for
    /// [`getxattr`](Filesystem::getxattr).
    fn listxattr(&self, req: &Caller, node: NodeId, size: u32) -> Result<Xattr, Errno> {
        Err(Errno::ENOSYS)
    }

    /// Removes an extended attribute.
    fn removexattr(&self, req: &Caller, node: NodeId, name: &OsStr) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }

    /// access(2). Not sent with `default_permissions`. ENOSYS: the kernel
    /// treats every later access check as granted.
    fn access(&self, req: &Caller, node: NodeId, mask: u32) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }

    /// Creates and opens a regular file. Adds one lookup on success.
    /// ENOSYS: the kernel falls back to MKNOD + OPEN from then on.
    fn create(
        &self,
        req: &Caller,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: OpenFlags,
    ) -> Result<(Entry, Opened), Errno> {
        Err(Errno::ENOSYS)
    }

    /// Tests for a POSIX lock (F_GETLK / F_OFD_GETLK). Sent only when
    /// [`init`](Filesystem::init) asked for `FUSE_POSIX_LOCKS`; the kernel
    /// then has no local fallback: an error, ENOSYS included, reaches the
    /// caller of fcntl(2).
    fn getlk(
        &self,
        req: &Caller,
        node: NodeId,
        fh: FileHandle,
        lock_owner: u64,
        lock: Lock,
    ) -> Result<Lock, Errno> {
        Err(Errno::ENOSYS)
    }

    /// Takes or releases a lock; `flock` marks a BSD flock(2) lock rather
    /// than a POSIX one. Sent for POSIX locks only when
    /// [`init`](Filesystem::init) asked for `FUSE_POSIX_LOCKS`, for flocks
    /// only with `FUSE_FLOCK_LOCKS`; errors, ENOSYS included, reach the
    /// caller. With `sleep` (SETLKW) a lock that is held
    /// elsewhere must be waited for: do not block here, which would hold
    /// the worker (and, with as many waiters as workers, the unlock that
    /// would release them); [`Caller::defer`] the request and answer it
    /// from another thread when granted, or EINTR once
    /// [`Deferred::on_interrupt`](crate::Deferred::on_interrupt) fires.
    fn setlk(
        &self,
        req: &Caller,
        node: NodeId,
        fh: FileHandle,
        lock_owner: u64,
        lock: Lock,
        sleep: bool,
        flock: bool,
    ) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }

    /// fallocate(2). ENOSYS: the kernel answers EOPNOTSUPP from then on.
    fn fallocate(
        &self,
        req: &Caller,
        node: NodeId,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: u32,
    ) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }

    /// lseek(2) for SEEK_DATA/SEEK_HOLE (the kernel does SEEK_SET/CUR/END
    /// itself). ENOSYS: the kernel uses its generic implementation.
    fn lseek(
        &self,
        req: &Caller,
        node: NodeId,
        fh: FileHandle,
        offset: u64,
        whence: u32,
    ) -> Result<u64, Errno> {
        Err(Errno::ENOSYS)
    }

    /// copy_file_range(2) between two open files; returns bytes copied.
    /// ENOSYS: the kernel copies through the page cache from then on.
    fn copy_file_range(&self, req: &Caller, range: &CopyRange) -> Result<u64, Errno> {
        Err(Errno::ENOSYS)
    }

    /// syncfs(2) on the mount. ENOSYS: the kernel stops sending SYNCFS.
    fn syncfs(&self, req: &Caller, node: NodeId) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }

    /// O_TMPFILE: creates an unnamed file in `parent` and opens it. Adds one
    /// lookup. ENOSYS: the kernel answers EOPNOTSUPP from then on.
    fn tmpfile(
        &self,
        req: &Caller,
        parent: NodeId,
        mode: u32,
        umask: u32,
        flags: OpenFlags,
    ) -> Result<(Entry, Opened), Errno> {
        Err(Errno::ENOSYS)
    }
}
