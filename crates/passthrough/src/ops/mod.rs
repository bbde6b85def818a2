//! The [`Filesystem`] implementation: one function per operation, with
//! the trait method's name and arguments (after the filesystem itself), in
//! the module named for its kind. The `impl Filesystem` that calls them is
//! generated from the engine's list of methods
//! ([`fastfuse::filesystem_methods!`]), so no signature is written out a
//! second time here.
//!
//! - `session`: init, ready, destroy
//! - `entries`: names — lookup, forget, batch_forget, mknod, mkdir,
//!   symlink, link, unlink, rmdir, rename, readlink
//! - `attr`: getattr, setattr, access, statfs
//! - `file`: open, create, tmpfile, flush, release, fsync, syncfs
//! - `io`: read, write, write_spliced, fallocate, lseek, copy_file_range
//! - `dirs`: opendir, readdir, readdirplus, releasedir, fsyncdir, idle
//!   (reading ahead)
//! - `xattr`: the four xattr calls
//! - `lock`: getlk, setlk (POSIX locks per lock owner, OFD locks, flocks)

mod attr;
mod dirs;
mod entries;
mod file;
mod io;
mod lock;
mod session;
mod xattr;

use std::ffi::OsStr;

use fastfuse::{
    AttrReply, Caller, Capabilities, Connection, CopyRange, DirEntries, DirEntriesPlus, Entry,
    Errno, FileHandle, Filesystem, InitFlags, Lock, NodeId, OpenFlags, Opened, PipeData, SetAttr,
    StatFs, WriteFlags, Xattr,
};

use attr::{access, getattr, setattr, statfs};
use dirs::{fsyncdir, idle, opendir, readdir, readdirplus, releasedir};
use entries::{
    batch_forget, forget, link, lookup, mkdir, mknod, readlink, rename, rmdir, symlink, unlink,
};
use file::{create, flush, fsync, open, release, syncfs, tmpfile};
use io::{copy_file_range, fallocate, lseek, read, write, write_spliced};
use lock::{getlk, setlk};
use session::{destroy, init, ready};
use xattr::{getxattr, listxattr, removexattr, setxattr};

use crate::fs::PassthroughFs;

/// Whether the operation named `op` may change the source's names or
/// attributes, which makes listings read ahead stale (see `statahead`).
/// OPEN changes it only with O_TRUNC, which `open` tells itself. A method
/// the engine adds counts as a change until it is named here.
fn may_change(op: &str) -> bool {
    !matches!(
        op,
        "init"
            | "ready"
            | "destroy"
            | "idle"
            | "lookup"
            | "forget"
            | "batch_forget"
            | "getattr"
            | "readlink"
            | "open"
            | "read"
            | "opendir"
            | "readdir"
            | "readdirplus"
            | "releasedir"
            | "fsyncdir"
            | "statfs"
            | "getxattr"
            | "listxattr"
            | "access"
            | "getlk"
            | "setlk"
            | "lseek"
            | "syncfs"
    )
}

/// Whether the operation named `op` tells the statahead itself what it
/// changed (`PassthroughFs::names_changed`, `inode_changed`), so that a
/// walk that changes what it walks (`rm -rf`) keeps the listings read
/// ahead of the directories it has not come to. The others that may
/// change the source make every listing read before them stale.
fn tells_its_changes(op: &str) -> bool {
    matches!(
        op,
        "unlink" | "rmdir" | "mkdir" | "mknod" | "symlink" | "link" | "setattr"
    )
}

/// `impl Filesystem for PassthroughFs` from the engine's method list: each
/// method calls the function of the same name with `self` and its
/// arguments, and, after one that may change the source and does not say
/// what it changed, tells the statahead. A method the engine adds fails to
/// compile here until this crate has a function for it.
macro_rules! forward_to_ops {
    ($( fn $name:ident(&$s:ident $(, $arg:ident: $ty:ty)*) $(-> $ret:ty)?; )*) => {
        impl Filesystem for PassthroughFs {
            $(
                #[allow(clippy::too_many_arguments)]
                fn $name(&self $(, $arg: $ty)*) $(-> $ret)? {
                    let done = $name(self $(, $arg)*);
                    if may_change(stringify!($name)) && !tells_its_changes(stringify!($name)) {
                        self.source_changed();
                    }
                    done
                }
            )*
        }
    };
}

fastfuse::filesystem_methods!(forward_to_ops);
