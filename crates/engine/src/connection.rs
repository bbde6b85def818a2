//! The connection a filesystem talks to beyond request/reply: what INIT
//! agreed, passthrough backing files, and notifications.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use fastfuse_abi::{self as abi, NotifyCode};
use zerocopy::IntoBytes;

use crate::init::Negotiated;
use crate::sys;
use crate::types::NodeId;

/// A handle on the session's FUSE connection. Cheap to clone; a filesystem
/// may keep one from [`Filesystem::ready`](crate::Filesystem::ready).
#[derive(Debug, Clone)]
pub struct Connection {
    negotiated: Negotiated,
    dev: Arc<OwnedFd>,
}

impl Connection {
    pub(crate) fn new(negotiated: Negotiated, dev: Arc<OwnedFd>) -> Self {
        Connection { negotiated, dev }
    }

    /// What INIT agreed.
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// Registers `file` as a kernel passthrough backing file; put the id in
    /// [`Opened::backing_id`](crate::Opened::backing_id) with
    /// `FOPEN_PASSTHROUGH`. Needs CAP_SYS_ADMIN and an agreed passthrough.
    pub fn backing_open(&self, file: BorrowedFd<'_>) -> io::Result<i32> {
        sys::backing_open(self.dev.as_fd(), file)
    }

    /// Drops a backing id once no open file uses it.
    pub fn backing_close(&self, id: i32) -> io::Result<()> {
        sys::backing_close(self.dev.as_fd(), id)
    }

    fn notify(&self, code: NotifyCode, parts: &[&[u8]]) -> io::Result<()> {
        let len = size_of::<abi::OutHeader>() + parts.iter().map(|p| p.len()).sum::<usize>();
        let header = abi::OutHeader {
            len: len as u32,
            error: code as i32,
            unique: 0,
        };
        let mut all: [&[u8]; 4] = [header.as_bytes(), &[], &[], &[]];
        for (dst, src) in all[1..].iter_mut().zip(parts) {
            *dst = src;
        }
        sys::write_all_parts(&self.dev.as_fd(), &all[..=parts.len()])
    }

    /// Tells the kernel to drop cached data of `node` in `[offset,
    /// offset+len)` (len 0: to the end; offset -1: attributes only).
    pub fn inval_inode(&self, node: NodeId, offset: i64, len: i64) -> io::Result<()> {
        let arg = abi::NotifyInvalInodeOut {
            ino: node.0,
            off: offset,
            len,
        };
        self.notify(NotifyCode::InvalInode, &[arg.as_bytes()])
    }

    /// Tells the kernel to drop its cached entry `name` in `parent`.
    pub fn inval_entry(&self, parent: NodeId, name: &OsStr) -> io::Result<()> {
        let arg = abi::NotifyInvalEntryOut {
            parent: parent.0,
            namelen: name.len() as u32,
            flags: 0,
        };
        self.notify(
            NotifyCode::InvalEntry,
            &[arg.as_bytes(), name.as_bytes(), b"\0"],
        )
    }

    /// Tells the kernel that `name` in `parent`, which was `child`, is gone
    /// (like inval_entry, and also drops the dentry if it is in use).
    pub fn delete(&self, parent: NodeId, child: NodeId, name: &OsStr) -> io::Result<()> {
        let arg = abi::NotifyDeleteOut {
            parent: parent.0,
            child: child.0,
            namelen: name.len() as u32,
            padding: 0,
        };
        self.notify(
            NotifyCode::Delete,
            &[arg.as_bytes(), name.as_bytes(), b"\0"],
        )
    }
}
