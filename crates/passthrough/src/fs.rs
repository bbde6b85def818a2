//! [`PassthroughFs`]: the state shared by every operation, and the helpers
//! the operations (in `ops/`) have in common.

use std::cell::Cell;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fastfuse::{attr_from_stat, AttrReply, Caller, Connection, Entry, Errno, NodeId};

use crate::creds::{AsCaller, Groups, Identity};
use crate::error::PassthroughError;
use crate::handle::{self, HandleTable, OpenDir, OpenFile};
use crate::inode::{Inode, InodeTable};
use crate::journal::Journal;
use crate::lock_wait::LockWaiters;
use crate::options::Options;
use crate::procfd::ProcFd;
use crate::statahead::Statahead;
use crate::sys;

/// A filesystem that mirrors a source directory.
///
/// Every operation works relative to `O_PATH` descriptors of the source's
/// inodes, never on a path from the source root, so neither `..` nor a
/// symlink in the source can lead outside it. Mount it with
/// [`fastfuse::Session::mount`]; share it with an `Arc` to look at it while
/// mounted (`Arc<PassthroughFs>` is a [`fastfuse::Filesystem`] too).
pub struct PassthroughFs {
    pub(crate) source: PathBuf,
    pub(crate) options: Options,
    pub(crate) inodes: Arc<InodeTable>,
    pub(crate) files: HandleTable<OpenFile>,
    pub(crate) dirs: HandleTable<OpenDir>,
    pub(crate) proc: ProcFd,
    /// The daemon's identity, when operations switch to the caller's.
    pub(crate) daemon: Option<Identity>,
    /// What INIT agreed. Set once in `init`, before any other request is
    /// served; `OnceLock` publishes it to the workers (its `get` is an
    /// acquire load that pairs with the release in `set`).
    pub(crate) session: OnceLock<SessionInfo>,
    /// Whether the "backing_open failed" warning was logged. `Relaxed`: it
    /// only keeps a log line from repeating; no data hangs on it.
    pub(crate) passthrough_warned: AtomicBool,
    /// Blocking lock requests waiting on threads of their own.
    pub(crate) lock_waits: LockWaiters,
    /// The state was saved for a successor since the last `ready`: the
    /// engine may resume this session (the hand-over failed), calling
    /// `ready` again with the same connection.
    pub(crate) saved: AtomicBool,
    /// The crash journal every node and open goes into, when journaled
    /// (see `journal`).
    pub(crate) journal: Option<Arc<Journal>>,
    /// Listings read ahead for tree walks, when [`Options::statahead`].
    pub(crate) statahead: Option<Arc<Statahead>>,
}

impl Drop for PassthroughFs {
    fn drop(&mut self) {
        if let Some(s) = &self.statahead {
            s.end();
        }
    }
}

/// What the session agreed, as far as the filesystem cares.
#[derive(Debug, Clone)]
pub(crate) struct SessionInfo {
    /// For kernel passthrough backing files.
    pub(crate) conn: Connection,
    /// The writeback cache is on.
    pub(crate) writeback: bool,
    /// Kernel passthrough is on and asked for by the options.
    pub(crate) passthrough: bool,
    /// The largest WRITE payload (sizes the bypass scratch buffer).
    pub(crate) max_write: usize,
    /// FUSE_DONT_MASK was agreed: new files' modes come without the
    /// caller's umask, which the source applies (see
    /// [`PassthroughFs::as_creator`]).
    pub(crate) dont_mask: bool,
    /// FUSE_POSIX_ACL was agreed: the kernel caches and enforces ACLs, and
    /// drops a file's cached attributes itself when its ACL changes.
    pub(crate) posix_acl: bool,
    /// FUSE_CREATE_SUPP_GROUP was agreed (see [`PassthroughFs::create_as`]).
    pub(crate) create_supp_group: bool,
}

impl std::fmt::Debug for PassthroughFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassthroughFs")
            .field("source", &self.source)
            .field("options", &self.options)
            .field("inodes", &self.inodes.len())
            .finish_non_exhaustive()
    }
}

impl PassthroughFs {
    /// Opens `source` (`O_PATH`) as the root of a new filesystem. Fails,
    /// naming the path, when it is missing or not a directory.
    ///
    /// Create it in the process that will serve: `/proc/self/fd` is opened
    /// here and names this process.
    pub fn new(source: &Path, options: Options) -> Result<PassthroughFs, PassthroughError> {
        let (root, st) = open_root(source)?;
        PassthroughFs::new_with(source, options, root, &st, None)
    }

    /// A new filesystem over the source root `root` (`st` its stat),
    /// journaled into `journal` if given.
    pub(crate) fn new_with(
        source: &Path,
        options: Options,
        root: std::os::fd::OwnedFd,
        st: &libc::stat,
        journal: Option<Arc<Journal>>,
    ) -> Result<PassthroughFs, PassthroughError> {
        let (files, dirs) = handle::tables();
        let inodes = InodeTable::new(root, st, options.remembered_handles);
        PassthroughFs::assemble(source, options, inodes, files, dirs, journal)
    }

    /// A filesystem over these tables (new or restored), journaled into
    /// `journal` if given.
    pub(crate) fn assemble(
        source: &Path,
        options: Options,
        mut inodes: InodeTable,
        files: HandleTable<OpenFile>,
        dirs: HandleTable<OpenDir>,
        journal: Option<Arc<Journal>>,
    ) -> Result<PassthroughFs, PassthroughError> {
        if let Some(journal) = &journal {
            inodes.set_journal(journal.clone());
        }
        let inodes = Arc::new(inodes);
        inodes.start_sweeper().map_err(PassthroughError::Sweeper)?;
        let proc = ProcFd::open().map_err(PassthroughError::Proc)?;
        let daemon = if options.switch_credentials {
            Some(Identity::current().map_err(PassthroughError::Credentials)?)
        } else {
            None
        };
        let statahead = if options.statahead && !options.timeout.is_zero() {
            let s = Arc::new(Statahead::new(options.timeout / 4));
            s.start().map_err(PassthroughError::Statahead)?;
            Some(s)
        } else {
            None
        };
        Ok(PassthroughFs {
            source: source.to_owned(),
            options,
            inodes,
            files,
            dirs,
            proc,
            daemon,
            session: OnceLock::new(),
            passthrough_warned: AtomicBool::new(false),
            lock_waits: LockWaiters::default(),
            saved: AtomicBool::new(false),
            journal,
            statahead,
        })
    }

    /// A request that may have changed the source was served, where is
    /// not known (see `statahead`). Called after the change.
    pub(crate) fn source_changed(&self) {
        if let Some(s) = &self.statahead {
            s.changed();
        }
    }

    /// Names in `dir` changed through the mount: listings of it, and those
    /// holding its stat, are stale (see `statahead`). `unlinked`: a name
    /// of a non-directory went, whose link count other listings may show.
    /// Called after the change.
    pub(crate) fn names_changed(&self, dir: &Inode, unlinked: bool) {
        if let Some(s) = &self.statahead {
            s.touched(dir.key, unlinked);
        }
    }

    /// The attributes of `inode` changed through the mount: listings
    /// holding its stat are stale (see `statahead`). Called after the
    /// change.
    pub(crate) fn inode_changed(&self, inode: &Inode) {
        if let Some(s) = &self.statahead {
            s.touched(inode.key, false);
        }
    }

    /// Live entries of the inode table, the root included: 1 when the
    /// kernel holds no node but the root.
    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    /// Nodes the kernel forgot that are remembered by their source file
    /// handle (see [`Options::remembered_handles`]).
    pub fn remembered_count(&self) -> usize {
        self.inodes.forgotten_len()
    }

    /// The entry/attribute timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.options.timeout
    }

    /// Whether the writeback cache was agreed.
    pub(crate) fn writeback(&self) -> bool {
        self.session.get().is_some_and(|s| s.writeback)
    }

    /// The inode of `node`.
    pub(crate) fn inode(&self, node: NodeId) -> Result<Arc<Inode>, Errno> {
        self.inodes.get(node)
    }

    /// An attribute reply for `st`.
    pub(crate) fn attr_reply(&self, st: &libc::stat) -> AttrReply {
        AttrReply {
            attr: attr_from_stat(st),
            timeout: self.timeout(),
        }
    }

    /// The entry reply for `node`, whose stat is `st`.
    pub(crate) fn entry(&self, node: NodeId, st: &libc::stat) -> Entry {
        Entry {
            node,
            // Node ids are never reused, so (node, 0) is unique for the
            // filesystem's lifetime, as NFS export wants.
            generation: 0,
            attr: attr_from_stat(st),
            attr_timeout: self.timeout(),
            entry_timeout: self.timeout(),
        }
    }

    /// Looks `name` up in `parent` and counts one lookup of the result.
    pub(crate) fn lookup_child(&self, parent: &Inode, name: &CStr) -> Result<Entry, Errno> {
        let fd = sys::openat(parent.fd.as_fd(), name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        let st = sys::stat_fd(fd.as_fd())?;
        let (node, _) = self.inodes.acquire(fd, &st);
        Ok(self.entry(node, &st))
    }

    /// [`lookup_child`](Self::lookup_child) of a name that probably names
    /// an inode the table holds open (LOOKUP, READDIRPLUS): a stat of the
    /// name finds it without opening it again.
    pub(crate) fn lookup_known_child(&self, parent: &Inode, name: &CStr) -> Result<Entry, Errno> {
        let st = sys::fstatat(parent.fd.as_fd(), name, libc::AT_SYMLINK_NOFOLLOW)?;
        self.lookup_stated_child(parent, name, &st)
    }

    /// [`lookup_known_child`](Self::lookup_known_child) of a name whose
    /// stat `st` was taken already (a listing read ahead).
    pub(crate) fn lookup_stated_child(
        &self,
        parent: &Inode,
        name: &CStr,
        st: &libc::stat,
    ) -> Result<Entry, Errno> {
        match self.inodes.acquire_known(st) {
            Some((node, _)) => Ok(self.entry(node, st)),
            None => self.lookup_child(parent, name),
        }
    }

    /// Counts one lookup of the inode an open descriptor `fd` refers to
    /// (after CREATE and O_TMPFILE, where looking the name up again could
    /// find another file).
    pub(crate) fn lookup_open_file(
        &self,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> Result<(Entry, Arc<Inode>), Errno> {
        let path_fd = self.proc.reopen(fd, libc::O_PATH)?;
        let st = sys::stat_fd(path_fd.as_fd())?;
        let (node, inode) = self.inodes.acquire(path_fd, &st);
        Ok((self.entry(node, &st), inode))
    }

    /// Prepares the calling worker to act for `req` (ACCESS, symlinks,
    /// links): switches it to the caller's credentials when the options
    /// ask for it and the caller is someone else, and gives it a umask of
    /// 0, so that the daemon's own never strips bits.
    pub(crate) fn as_caller(&self, req: &Caller<'_>) -> Result<AsCaller<'_>, Errno> {
        self.as_creator(req, 0)
    }

    /// As [`PassthroughFs::as_caller`], to create a file, node or directory
    /// with the caller's `umask`. Without FUSE_DONT_MASK the kernel has
    /// applied it already and the worker's umask is 0. With it, the worker
    /// takes the caller's umask, and the source does what it does for any
    /// process: apply the parent's default ACL if it has one (which
    /// replaces the umask), the umask otherwise.
    pub(crate) fn as_creator(&self, req: &Caller<'_>, umask: u32) -> Result<AsCaller<'_>, Errno> {
        self.as_creator_with(req, umask, Groups::OfProcess)
    }

    fn as_creator_with(
        &self,
        req: &Caller<'_>,
        umask: u32,
        groups: Groups,
    ) -> Result<AsCaller<'_>, Errno> {
        let dont_mask = self.session.get().is_some_and(|s| s.dont_mask);
        thread_umask(if dont_mask { umask & 0o777 } else { 0 });
        match &self.daemon {
            Some(daemon) => daemon.become_caller(req, groups),
            None => Ok(AsCaller::unchanged()),
        }
    }

    /// Runs `create` (CREATE, MKNOD, MKDIR, SYMLINK, TMPFILE) as
    /// [`PassthroughFs::as_creator`] says. With FUSE_CREATE_SUPP_GROUP the
    /// kernel names the one supplementary group that matters for a new
    /// entry (the parent's, if the caller is in it), so the worker takes
    /// that one instead of reading the caller's from /proc. The kernel has
    /// checked the caller's permission on the parent already; should the
    /// source still refuse (an ACL entry of the parent granting another of
    /// the caller's groups), it is tried again with all of them. A refused
    /// creation created nothing, so the second try is as the first.
    pub(crate) fn create_as<T>(
        &self,
        req: &Caller<'_>,
        umask: u32,
        create: impl Fn() -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        if self.session.get().is_some_and(|s| s.create_supp_group) {
            let given = {
                let _as =
                    self.as_creator_with(req, umask, Groups::Given(req.create_supp_group()))?;
                create()
            };
            if !matches!(given, Err(e) if e == Errno::EACCES) {
                return given;
            }
        }
        let _as = self.as_creator(req, umask)?;
        create()
    }

    /// Whether the source keeps POSIX ACLs: a read of the root's access
    /// ACL is answered (with the ACL or ENODATA) rather than refused with
    /// EOPNOTSUPP. Decides whether to ask the kernel for FUSE_DONT_MASK and
    /// FUSE_POSIX_ACL (see the `init` of `ops`).
    pub(crate) fn source_has_posix_acls(&self) -> bool {
        let root = match self.inodes.get(NodeId::ROOT) {
            Ok(root) => root,
            Err(_) => return false,
        };
        match self
            .proc
            .xattrs(root.fd.as_fd())
            .get(c"system.posix_acl_access", &mut [])
        {
            Ok(_) => true,
            Err(e) => e.raw_os_error() == Some(libc::ENODATA),
        }
    }
}

/// Opens `source` (`O_PATH`) and checks that it is a directory. Fails,
/// naming the path, when it is missing or not a directory.
pub(crate) fn open_root(
    source: &Path,
) -> Result<(std::os::fd::OwnedFd, libc::stat), PassthroughError> {
    let open_err = |e: std::io::Error| PassthroughError::OpenSource {
        path: source.to_owned(),
        source: e,
    };
    let c_source = CString::new(source.as_os_str().as_bytes())
        .map_err(|_| open_err(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
    // The source path itself may be a symlink: the user named it, so it
    // is followed once, here; nothing below it ever is.
    let root = sys::open(&c_source, libc::O_PATH).map_err(open_err)?;
    let st = sys::stat_fd(root.as_fd()).map_err(open_err)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(PassthroughError::NotADirectory {
            path: source.to_owned(),
        });
    }
    Ok((root, st))
}

/// A name from the kernel as a C string. Names are single path components:
/// empty names, names with '/' or NUL, and "." / ".." (which the kernel
/// never sends for these operations) are refused with EINVAL, so no name
/// can walk anywhere but into its parent.
pub(crate) fn component(name: &OsStr) -> Result<CName, Errno> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        tracing::debug!(?name, "refused name");
        return Err(Errno::EINVAL);
    }
    CName::new(bytes)
}

/// Any C string from the kernel (symlink targets, xattr names).
pub(crate) fn c_string(s: &OsStr) -> Result<CName, Errno> {
    CName::new(s.as_bytes())
}

/// Room for every name a Linux filesystem keeps (NAME_MAX, 255) and its
/// NUL.
const INLINE_NAME: usize = 256;

/// A string from the kernel as a C string: on the stack when it fits, so
/// that a request allocates nothing for its names; longer ones (symlink
/// targets, say) on the heap.
// The inline variant is large on purpose: it lives on the stack of one
// request, and boxing it would be the allocation it exists to avoid.
#[allow(clippy::large_enum_variant)]
pub(crate) enum CName {
    Inline { buf: [u8; INLINE_NAME], len: usize },
    Heap(CString),
}

impl CName {
    /// `bytes` with a NUL after; EINVAL if they hold one.
    fn new(bytes: &[u8]) -> Result<CName, Errno> {
        if bytes.contains(&0) {
            return Err(Errno::EINVAL);
        }
        if bytes.len() < INLINE_NAME {
            let mut buf = [0u8; INLINE_NAME];
            buf[..bytes.len()].copy_from_slice(bytes);
            Ok(CName::Inline {
                buf,
                len: bytes.len(),
            })
        } else {
            CString::new(bytes)
                .map(CName::Heap)
                .map_err(|_| Errno::EINVAL)
        }
    }
}

impl std::fmt::Debug for CName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl std::ops::Deref for CName {
    type Target = CStr;

    fn deref(&self) -> &CStr {
        match self {
            // `new` put a NUL at `len` and none before it.
            CName::Inline { buf, len } => CStr::from_bytes_with_nul(&buf[..=*len]).unwrap_or(c""),
            CName::Heap(s) => s,
        }
    }
}

/// A worker thread's umask, as far as [`thread_umask`] knows it.
#[derive(Debug, Clone, Copy)]
enum ThreadUmask {
    /// Still the process's shared one, not yet made private.
    Unset,
    /// Its own, with this value.
    Own(libc::mode_t),
    /// Could not be made private: never changed, since that would change
    /// every other thread's too.
    Shared,
}

thread_local! {
    static THREAD_UMASK: Cell<ThreadUmask> = const { Cell::new(ThreadUmask::Unset) };
}

/// Gives the calling worker the umask `want`, on a private fs_struct made
/// on first use (see [`sys::private_umask`]) so that no other thread's
/// umask changes. One umask(2) call when it differs from the last one
/// set; none otherwise.
fn thread_umask(want: libc::mode_t) {
    THREAD_UMASK.with(|current| match current.get() {
        ThreadUmask::Own(have) if have == want => {}
        ThreadUmask::Own(_) => {
            sys::set_umask(want);
            current.set(ThreadUmask::Own(want));
        }
        ThreadUmask::Unset => match sys::private_umask(want) {
            Ok(()) => current.set(ThreadUmask::Own(want)),
            Err(e) => {
                tracing::warn!(
                    "cannot give this worker its own umask ({e}); new files get the daemon's umask too"
                );
                current.set(ThreadUmask::Shared);
            }
        },
        ThreadUmask::Shared => {}
    });
}

/// Logs `what` once per filesystem.
pub(crate) fn warn_once(flag: &AtomicBool, what: std::fmt::Arguments<'_>) {
    if !flag.swap(true, Ordering::Relaxed) {
        tracing::warn!("{what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_components() {
        assert!(component(OsStr::new("a")).is_ok());
        for bad in ["", ".", "..", "a/b", "/", "a\0b"] {
            assert_eq!(
                component(OsStr::new(bad)).unwrap_err(),
                Errno::EINVAL,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn names_short_and_long_keep_their_bytes() {
        for len in [1, 255, 256, 4000] {
            let bytes = vec![b'x'; len];
            let name = c_string(OsStr::from_bytes(&bytes)).unwrap();
            assert_eq!(name.to_bytes(), &bytes[..], "{len}");
            assert_eq!(matches!(name, CName::Inline { .. }), len < INLINE_NAME);
        }
    }

    #[test]
    fn new_names_the_path_on_error() {
        let err =
            PassthroughFs::new(Path::new("/nonexistent/src"), Options::default()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/src"), "{err}");
        let err =
            PassthroughFs::new(Path::new("/proc/self/status"), Options::default()).unwrap_err();
        assert!(
            matches!(err, PassthroughError::NotADirectory { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("/proc/self/status"), "{err}");
    }

    #[test]
    fn a_new_filesystem_holds_only_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let fs = PassthroughFs::new(dir.path(), Options::default()).unwrap();
        assert_eq!(fs.inode_count(), 1);
        assert!(!fs.writeback());
    }
}
