//! The [`Filesystem`] implementation: one line per operation, naming the
//! module that does the work.
//!
//! - `entries`: names — lookup, forget, mknod, mkdir, symlink, link,
//!   unlink, rmdir, rename, readlink
//! - `attr`: getattr, setattr, access, statfs
//! - `file`: open, create, tmpfile, flush, release, fsync, syncfs
//! - `io`: read, write, fallocate, lseek, copy_file_range
//! - `dirs`: opendir, readdir, readdirplus, releasedir, fsyncdir
//! - `xattr`: the four xattr calls
//! - `lock`: getlk, setlk/setlkw, flock; POSIX locks per lock owner

mod attr;
mod dirs;
mod entries;
mod file;
mod io;
mod lock;
mod xattr;

use std::ffi::OsStr;

use fastfuse::abi::init::{FUSE_DONT_MASK, FUSE_FLOCK_LOCKS, FUSE_POSIX_ACL, FUSE_POSIX_LOCKS};
use fastfuse::{
    AttrReply, Caller, Capabilities, Connection, CopyRange, DirEntries, DirEntriesPlus, Entry,
    Errno, FileHandle, Filesystem, InitFlags, Lock, NodeId, OpenFlags, Opened, PipeData, SetAttr,
    StatFs, WriteFlags, Xattr,
};

use crate::fs::{PassthroughFs, SessionInfo};

impl Filesystem for PassthroughFs {
    fn init(&self, kernel: &Capabilities, ask: &mut InitFlags) -> Result<(), Errno> {
        // Locks are the source's: ops::lock takes them there.
        ask.ask(FUSE_POSIX_LOCKS | FUSE_FLOCK_LOCKS);
        if self.options.posix_acl && self.options.xattr {
            if !kernel.offers(FUSE_POSIX_ACL) {
                tracing::info!(
                    "the kernel does not offer FUSE_POSIX_ACL; ACLs are stored, not enforced"
                );
            } else if self.source_has_posix_acls() {
                // The kernel checks them and stops applying the umask;
                // the source applies it, or a default ACL (see
                // `PassthroughFs::as_creator`).
                ask.ask(FUSE_POSIX_ACL | FUSE_DONT_MASK);
            } else {
                tracing::info!("the source keeps no POSIX ACLs; serving without them");
            }
        }
        Ok(())
    }

    fn ready(&self, conn: &Connection) -> Result<(), Errno> {
        let n = conn.negotiated();
        let info = SessionInfo {
            conn: conn.clone(),
            writeback: n.writeback_cache(),
            passthrough: self.options.kernel_passthrough && n.passthrough(),
            max_write: n.max_write as usize,
            dont_mask: n.dont_mask(),
        };
        if info.writeback && self.options.timeout.is_zero() {
            tracing::warn!(
                "timeout 0 with the writeback cache: the kernel will ask GETATTR before every write"
            );
        }
        if self.options.kernel_passthrough && !n.passthrough() {
            tracing::info!("kernel passthrough not agreed; the daemon serves reads and writes");
        }
        tracing::debug!(
            source = %self.source.display(),
            writeback = info.writeback,
            passthrough = info.passthrough,
            "passthrough filesystem ready"
        );
        // A filesystem serves one session: its node ids and handles mean
        // nothing to another connection.
        self.session.set(info).map_err(|_| {
            tracing::error!("this PassthroughFs already served a session; create a new one");
            Errno::EBUSY
        })
    }

    fn destroy(&self) {
        file::release_all(self);
        self.dirs.drain();
        self.inodes.clear();
    }

    fn lookup(&self, _req: &Caller, parent: NodeId, name: &OsStr) -> Result<Entry, Errno> {
        entries::lookup(self, parent, name)
    }

    fn forget(&self, node: NodeId, nlookup: u64) {
        self.inodes.forget(node, nlookup);
    }

    fn batch_forget(&self, nodes: &mut dyn Iterator<Item = (NodeId, u64)>) {
        self.inodes.forget_many(nodes);
    }

    fn getattr(
        &self,
        _req: &Caller,
        node: NodeId,
        fh: Option<FileHandle>,
    ) -> Result<AttrReply, Errno> {
        attr::getattr(self, node, fh)
    }

    fn setattr(&self, req: &Caller, node: NodeId, changes: &SetAttr) -> Result<AttrReply, Errno> {
        attr::setattr(self, req, node, changes)
    }

    fn readlink(&self, _req: &Caller, node: NodeId) -> Result<Vec<u8>, Errno> {
        entries::readlink(self, node)
    }

    fn symlink(
        &self,
        req: &Caller,
        parent: NodeId,
        name: &OsStr,
        target: &OsStr,
    ) -> Result<Entry, Errno> {
        entries::symlink(self, req, parent, name, target)
    }

    fn mknod(
        &self,
        req: &Caller,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        rdev: u32,
        umask: u32,
    ) -> Result<Entry, Errno> {
        entries::mknod(self, req, parent, name, mode, rdev, umask)
    }

    fn mkdir(
        &self,
        req: &Caller,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> Result<Entry, Errno> {
        entries::mkdir(self, req, parent, name, mode, umask)
    }

    fn unlink(&self, _req: &Caller, parent: NodeId, name: &OsStr) -> Result<(), Errno> {
        entries::remove(self, parent, name, 0)
    }

    fn rmdir(&self, _req: &Caller, parent: NodeId, name: &OsStr) -> Result<(), Errno> {
        entries::remove(self, parent, name, libc::AT_REMOVEDIR)
    }

    fn rename(
        &self,
        _req: &Caller,
        parent: NodeId,
        name: &OsStr,
        new_parent: NodeId,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<(), Errno> {
        entries::rename(self, parent, name, new_parent, new_name, flags)
    }

    fn link(
        &self,
        req: &Caller,
        node: NodeId,
        new_parent: NodeId,
        new_name: &OsStr,
    ) -> Result<Entry, Errno> {
        entries::link(self, req, node, new_parent, new_name)
    }

    fn open(&self, req: &Caller, node: NodeId, flags: OpenFlags) -> Result<Opened, Errno> {
        file::open(self, req, node, flags)
    }

    fn read(
        &self,
        _req: &Caller,
        _node: NodeId,
        fh: FileHandle,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, Errno> {
        io::read(self, fh, offset, buf)
    }

    fn write(
        &self,
        req: &Caller,
        node: NodeId,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        flags: WriteFlags,
    ) -> Result<u32, Errno> {
        io::write(self, req, node, fh, offset, data, flags)
    }

    fn write_spliced(
        &self,
        req: &Caller,
        node: NodeId,
        fh: FileHandle,
        offset: u64,
        data: &mut PipeData<'_>,
        flags: WriteFlags,
    ) -> Result<u32, Errno> {
        io::write_spliced(self, req, node, fh, offset, data, flags)
    }

    fn flush(
        &self,
        _req: &Caller,
        _node: NodeId,
        fh: FileHandle,
        lock_owner: u64,
    ) -> Result<(), Errno> {
        file::flush(self, fh, lock_owner)
    }

    fn release(
        &self,
        _req: &Caller,
        _node: NodeId,
        fh: FileHandle,
        _flags: u32,
        release_flags: u32,
        lock_owner: u64,
    ) -> Result<(), Errno> {
        file::release(self, fh, release_flags, lock_owner);
        Ok(())
    }

    fn fsync(
        &self,
        _req: &Caller,
        _node: NodeId,
        fh: FileHandle,
        datasync: bool,
    ) -> Result<(), Errno> {
        file::fsync(self, fh, datasync)
    }

    fn opendir(&self, _req: &Caller, node: NodeId, _flags: u32) -> Result<Opened, Errno> {
        dirs::opendir(self, node)
    }

    fn readdir(
        &self,
        _req: &Caller,
        _node: NodeId,
        fh: FileHandle,
        offset: u64,
        out: &mut DirEntries<'_>,
    ) -> Result<(), Errno> {
        dirs::readdir(self, fh, offset, out)
    }

    fn readdirplus(
        &self,
        _req: &Caller,
        node: NodeId,
        fh: FileHandle,
        offset: u64,
        out: &mut DirEntriesPlus<'_>,
    ) -> Result<(), Errno> {
        dirs::readdirplus(self, node, fh, offset, out)
    }

    fn releasedir(
        &self,
        _req: &Caller,
        _node: NodeId,
        fh: FileHandle,
        _flags: u32,
    ) -> Result<(), Errno> {
        self.dirs.remove(fh);
        Ok(())
    }

    fn fsyncdir(
        &self,
        _req: &Caller,
        _node: NodeId,
        fh: FileHandle,
        datasync: bool,
    ) -> Result<(), Errno> {
        dirs::fsyncdir(self, fh, datasync)
    }

    fn statfs(&self, _req: &Caller, node: NodeId) -> Result<StatFs, Errno> {
        attr::statfs(self, node)
    }

    fn setxattr(
        &self,
        _req: &Caller,
        node: NodeId,
        name: &OsStr,
        value: &[u8],
        flags: u32,
        acl_kill_sgid: bool,
    ) -> Result<(), Errno> {
        xattr::set(self, node, name, value, flags, acl_kill_sgid)
    }

    fn getxattr(
        &self,
        _req: &Caller,
        node: NodeId,
        name: &OsStr,
        size: u32,
    ) -> Result<Xattr, Errno> {
        xattr::get(self, node, name, size)
    }

    fn listxattr(&self, _req: &Caller, node: NodeId, size: u32) -> Result<Xattr, Errno> {
        xattr::list(self, node, size)
    }

    fn removexattr(&self, _req: &Caller, node: NodeId, name: &OsStr) -> Result<(), Errno> {
        xattr::remove(self, node, name)
    }

    fn access(&self, req: &Caller, node: NodeId, mask: u32) -> Result<(), Errno> {
        attr::access(self, req, node, mask)
    }

    fn create(
        &self,
        req: &Caller,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: OpenFlags,
    ) -> Result<(Entry, Opened), Errno> {
        file::create(self, req, parent, name, mode, umask, flags)
    }

    fn getlk(
        &self,
        _req: &Caller,
        _node: NodeId,
        fh: FileHandle,
        lock_owner: u64,
        lock: Lock,
    ) -> Result<Lock, Errno> {
        lock::getlk(self, fh, lock_owner, lock)
    }

    fn setlk(
        &self,
        req: &Caller,
        _node: NodeId,
        fh: FileHandle,
        lock_owner: u64,
        lock: Lock,
        sleep: bool,
        flock: bool,
    ) -> Result<(), Errno> {
        lock::setlk(self, req, fh, lock_owner, lock, sleep, flock)
    }

    fn fallocate(
        &self,
        _req: &Caller,
        _node: NodeId,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: u32,
    ) -> Result<(), Errno> {
        io::fallocate(self, fh, offset, length, mode)
    }

    fn lseek(
        &self,
        _req: &Caller,
        _node: NodeId,
        fh: FileHandle,
        offset: u64,
        whence: u32,
    ) -> Result<u64, Errno> {
        io::lseek(self, fh, offset, whence)
    }

    fn copy_file_range(&self, _req: &Caller, range: &CopyRange) -> Result<u64, Errno> {
        io::copy_file_range(self, range)
    }

    fn syncfs(&self, _req: &Caller, _node: NodeId) -> Result<(), Errno> {
        file::syncfs(self)
    }

    fn tmpfile(
        &self,
        req: &Caller,
        parent: NodeId,
        mode: u32,
        umask: u32,
        flags: OpenFlags,
    ) -> Result<(Entry, Opened), Errno> {
        file::tmpfile(self, req, parent, mode, umask, flags)
    }
}
