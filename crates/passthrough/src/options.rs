//! What the passthrough filesystem can be asked to do differently.

use std::time::Duration;

use crate::error::PassthroughError;

/// How the passthrough filesystem behaves. `Copy`, so that a caller can
/// keep using its values after handing them to [`PassthroughFs::new`].
///
/// [`PassthroughFs::new`]: crate::PassthroughFs::new
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// How long the kernel may cache attributes and names (attr and entry
    /// timeout). Default 1 s. Keep it non-zero under the writeback cache:
    /// with 0 the kernel asks GETATTR before every write.
    pub timeout: Duration,
    /// The seed's testbench modes for WRITE; [`BypassRw::Off`] by default.
    pub bypass_rw: BypassRw,
    /// Let the kernel read and write regular files itself
    /// (`FOPEN_PASSTHROUGH` with a backing id) when the session agreed
    /// passthrough. Needs CAP_SYS_ADMIN; excludes the writeback cache.
    pub kernel_passthrough: bool,
    /// Open every file with `FOPEN_DIRECT_IO`: no page cache in the kernel.
    pub direct_io: bool,
    /// Create files, nodes, directories, symlinks and links (and answer
    /// ACCESS) as the calling process's fsuid/fsgid and groups, so that
    /// new files belong to their creator. For a daemon running as root
    /// with `allow_other`.
    pub switch_credentials: bool,
    /// Serve extended attributes (default). `false` answers ENOSYS, after
    /// which the kernel answers EOPNOTSUPP itself without asking again.
    pub xattr: bool,
    /// Serve POSIX ACLs where the source keeps them and xattrs are served
    /// (default): new files get the caller's umask or the parent's default
    /// ACL from the source, as for a local process (FUSE_DONT_MASK), and,
    /// with [`Options::kernel_checks_permissions`], the kernel enforces
    /// the ACLs (FUSE_POSIX_ACL). `false`: the ACL xattrs are plain
    /// xattrs and the kernel applies the umask.
    pub posix_acl: bool,
    /// The mount has `default_permissions`: the kernel checks every access
    /// against the modes the daemon reports, so it must know the ACLs too
    /// and FUSE_POSIX_ACL is asked (see [`Options::posix_acl`]). Set it
    /// whenever the mount options have `default_permissions` (which
    /// `allow_other` needs, or any user reaches any file the daemon can).
    /// Without it (default, as [`MountOptions`]) the kernel checks nothing
    /// beyond letting only the mounting user in, and the source checks
    /// that user's access, ACLs included; FUSE_POSIX_ACL would turn
    /// `default_permissions` on and cost a GETATTR of the parent directory
    /// per file created or removed.
    ///
    /// [`MountOptions`]: fastfuse::MountOptions
    pub kernel_checks_permissions: bool,
    /// How many nodes the kernel has forgotten are remembered by the
    /// source's own file handle, so that the kernel's file handles of them
    /// (NFS export, `open_by_handle_at(2)`) still resolve: LOOKUP "." of a
    /// forgotten node id reopens the inode by its source handle and
    /// revives the node under the same id. Beyond this bound the oldest
    /// go, and a kernel file handle of one of those gives ESTALE. About
    /// 200 bytes each; 0 remembers none. Default 1 << 18 (262,144: up to some
    /// 50 MiB).
    pub remembered_handles: usize,
    /// Let the kernel open directories without asking and cache their
    /// listings (default): OPENDIR answers ENOSYS, which the kernel (it
    /// offers FUSE_NO_OPENDIR_SUPPORT) takes as "no OPENDIR nor
    /// RELEASEDIR from now on" for the whole connection, and READDIR comes
    /// without a handle, read from a descriptor opened for it. Each `ls`
    /// or `find` saves a synchronous round trip per directory and the
    /// wake-up of a RELEASEDIR. Such directories get `FOPEN_CACHE_DIR` from
    /// the kernel: a listing is kept with the directory's inode and read
    /// again once the directory changes through the mount, or once its
    /// attributes, cached for [`Options::timeout`], show another mtime: a
    /// change made behind the mount's back shows within the timeout, as a
    /// changed attribute does. `false` (or a zero timeout): every OPENDIR
    /// opens a handle and every listing is read from the source.
    pub cache_dirs: bool,
    /// Read ahead the listings of the subdirectories a READDIRPLUS from
    /// the start of a directory names, with each name's stat, on a thread
    /// of its own (SCHED_IDLE), so that a tree walk finds them read
    /// (default; see `statahead`). A listing is used only if no request
    /// that may change the source came since it was read, and only for a
    /// quarter of [`Options::timeout`]. `false`, or a zero timeout: every
    /// listing is read when asked.
    pub statahead: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(1),
            bypass_rw: BypassRw::Off,
            kernel_passthrough: false,
            direct_io: false,
            switch_credentials: false,
            xattr: true,
            posix_acl: true,
            kernel_checks_permissions: false,
            remembered_handles: 1 << 18,
            cache_dirs: true,
            statahead: true,
        }
    }
}

/// The seed's `--bypass-rw` levels: what a WRITE does with its payload.
/// They measure the kernel and transport alone. READ and every other
/// operation behave normally in all levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum BypassRw {
    /// 0: writes reach the source.
    #[default]
    Off = 0,
    /// 1: the payload is copied into a per-thread scratch buffer and the
    /// WRITE answered as complete; the source is not touched.
    CopyOnly = 1,
    /// 2: the WRITE is answered as complete at once: no copy, no I/O.
    NoIo = 2,
}

impl TryFrom<u8> for BypassRw {
    type Error = PassthroughError;

    /// 0, 1 or 2; anything else is [`PassthroughError::InvalidBypassRw`].
    /// (libfuse stored the level in a bool, so its 2 behaved as 1; here
    /// each level is its own.)
    fn try_from(level: u8) -> Result<BypassRw, PassthroughError> {
        match level {
            0 => Ok(BypassRw::Off),
            1 => Ok(BypassRw::CopyOnly),
            2 => Ok(BypassRw::NoIo),
            n => Err(PassthroughError::InvalidBypassRw(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bypass_levels_are_distinct() {
        assert_eq!(BypassRw::try_from(0).unwrap(), BypassRw::Off);
        assert_eq!(BypassRw::try_from(1).unwrap(), BypassRw::CopyOnly);
        assert_eq!(BypassRw::try_from(2).unwrap(), BypassRw::NoIo);
        assert_eq!(BypassRw::NoIo as u8, 2);
        let err = BypassRw::try_from(3).unwrap_err();
        assert!(err.to_string().contains('3'), "{err}");
    }

    #[test]
    fn defaults() {
        let o = Options::default();
        assert_eq!(o.timeout, Duration::from_secs(1));
        assert!(o.xattr && !o.direct_io && !o.kernel_passthrough && !o.switch_credentials);
        assert_eq!(o.bypass_rw, BypassRw::Off);
        assert_eq!(o.remembered_handles, 1 << 18);
        assert!(o.posix_acl && !o.kernel_checks_permissions);
    }
}
