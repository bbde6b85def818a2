//! Mounting and unmounting: mount(2) as root, fusermount3 otherwise.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use thiserror::Error;

use crate::sys;

/// Why a mount failed.
#[derive(Debug, Error)]
pub enum MountError {
    /// The mountpoint does not exist.
    #[error("mountpoint {0} does not exist")]
    NoMountpoint(PathBuf),
    /// The mountpoint is not a directory.
    #[error("mountpoint {0} is not a directory")]
    NotADirectory(PathBuf),
    /// The mountpoint could not be examined (a dead FUSE mount answers
    /// ENOTCONN: unmount it first).
    #[error("cannot examine mountpoint {0}")]
    Mountpoint(PathBuf, #[source] io::Error),
    /// An option is malformed or unknown.
    #[error("bad mount option {0:?}: {1}")]
    BadOption(String, &'static str),
    /// mount(2) or fusermount3 failed.
    #[error("mounting on {0} failed")]
    Mount(PathBuf, #[source] io::Error),
}

/// Options of a FUSE mount, as mount.fuse3 users know them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// The "source" shown in /proc/mounts (`fsname=`).
    pub fsname: String,
    /// The type suffix: the mount appears as `fuse.SUBTYPE` (`subtype=`).
    pub subtype: Option<String>,
    /// Let users other than the mounter in (`allow_other`; root only, or
    /// `user_allow_other` in /etc/fuse.conf).
    pub allow_other: bool,
    /// Let the kernel check permissions from the file modes
    /// (`default_permissions`).
    pub default_permissions: bool,
    /// Read-only (`ro`).
    pub read_only: bool,
    /// Unmount when the daemon dies, through fusermount3 (`auto_unmount`).
    pub auto_unmount: bool,
    /// Honour suid bits (`suid`; off by default, as with fuse3).
    pub suid: bool,
    /// Honour device files (`dev`; off by default).
    pub dev: bool,
    /// `noexec`.
    pub noexec: bool,
    /// `noatime` (MS_NOATIME).
    pub noatime: bool,
    /// `nodiratime` (MS_NODIRATIME).
    pub nodiratime: bool,
    /// `relatime` (MS_RELATIME; the kernel's default anyway unless
    /// `noatime` or `strictatime`).
    pub relatime: bool,
    /// `strictatime` (MS_STRICTATIME).
    pub strictatime: bool,
    /// `lazytime` (MS_LAZYTIME).
    pub lazytime: bool,
    /// `sync`.
    pub sync: bool,
    /// `dirsync`.
    pub dirsync: bool,
    /// `max_read=N`, 0 for the kernel's default.
    pub max_read: u32,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            fsname: "fastfuse".into(),
            subtype: None,
            allow_other: false,
            default_permissions: false,
            read_only: false,
            auto_unmount: false,
            suid: false,
            dev: false,
            noexec: false,
            noatime: false,
            nodiratime: false,
            relatime: false,
            strictatime: false,
            lazytime: false,
            sync: false,
            dirsync: false,
            max_read: 0,
        }
    }
}

impl MountOptions {
    /// Applies one `-o` option (without the `-o`). Returns `Ok(false)` for an
    /// option this type does not know, so that a caller can handle its own
    /// (e.g. `source=`) before reporting it.
    pub fn apply(&mut self, opt: &str) -> Result<bool, MountError> {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        let flag = |v: Option<&str>| match v {
            None => Ok(()),
            Some(_) => Err(MountError::BadOption(opt.into(), "takes no value")),
        };
        match key {
            "fsname" => self.fsname = value.unwrap_or_default().into(),
            "subtype" => self.subtype = value.filter(|v| !v.is_empty()).map(Into::into),
            "allow_other" => {
                flag(value)?;
                self.allow_other = true
            }
            "default_permissions" => {
                flag(value)?;
                self.default_permissions = true
            }
            "ro" => {
                flag(value)?;
                self.read_only = true
            }
            "rw" => {
                flag(value)?;
                self.read_only = false
            }
            "auto_unmount" => {
                flag(value)?;
                self.auto_unmount = true
            }
            // The atime modes as mount(8) takes them: the last of noatime,
            // relatime and strictatime wins.
            "atime" => {
                flag(value)?;
                self.noatime = false
            }
            "noatime" => {
                flag(value)?;
                (self.noatime, self.relatime, self.strictatime) = (true, false, false)
            }
            "relatime" => {
                flag(value)?;
                (self.noatime, self.relatime, self.strictatime) = (false, true, false)
            }
            "strictatime" => {
                flag(value)?;
                (self.noatime, self.relatime, self.strictatime) = (false, false, true)
            }
            "norelatime" => {
                flag(value)?;
                self.relatime = false
            }
            "nostrictatime" => {
                flag(value)?;
                self.strictatime = false
            }
            "diratime" | "nodiratime" => {
                flag(value)?;
                self.nodiratime = key == "nodiratime"
            }
            "lazytime" | "nolazytime" => {
                flag(value)?;
                self.lazytime = key == "lazytime"
            }
            "suid" => self.suid = true,
            "nosuid" => self.suid = false,
            "dev" => self.dev = true,
            "nodev" => self.dev = false,
            "exec" => self.noexec = false,
            "noexec" => self.noexec = true,
            "sync" => self.sync = true,
            "async" => self.sync = false,
            "dirsync" => self.dirsync = true,
            "max_read" => {
                self.max_read = value
                    .and_then(|v| v.parse().ok())
                    .ok_or(MountError::BadOption(opt.into(), "wants a number"))?
            }
            // Words of fstab and mount(8) that mount(8) or systemd act on
            // and mount.fuse3 drops (`x-*` and `comment=` are notes for
            // other programs); they change nothing here.
            "allow_root" | "user" | "nouser" | "users" | "owner" | "group" | "auto" | "noauto"
            | "_netdev" | "nofail" | "defaults" | "comment" => {}
            _ if key.starts_with("x-") => {}
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn fstype(&self) -> String {
        match &self.subtype {
            Some(s) => format!("fuse.{s}"),
            None => "fuse".into(),
        }
    }

    fn ms_flags(&self) -> u64 {
        let mut flags = 0;
        for (on, bit) in [
            (!self.suid, libc::MS_NOSUID),
            (!self.dev, libc::MS_NODEV),
            (self.noexec, libc::MS_NOEXEC),
            (self.noatime, libc::MS_NOATIME),
            (self.nodiratime, libc::MS_NODIRATIME),
            (self.relatime, libc::MS_RELATIME),
            (self.strictatime, libc::MS_STRICTATIME),
            (self.lazytime, libc::MS_LAZYTIME),
            (self.sync, libc::MS_SYNCHRONOUS),
            (self.dirsync, libc::MS_DIRSYNC),
            (self.read_only, libc::MS_RDONLY),
        ] {
            if on {
                flags |= bit;
            }
        }
        flags
    }

    /// The option string fusermount3 understands.
    fn fusermount_opts(&self) -> String {
        let mut opts = vec![
            if self.read_only { "ro" } else { "rw" }.to_string(),
            format!("fsname={}", self.fsname),
        ];
        if let Some(s) = &self.subtype {
            opts.push(format!("subtype={s}"));
        }
        for (on, name) in [
            (self.allow_other, "allow_other"),
            (self.default_permissions, "default_permissions"),
            (self.auto_unmount, "auto_unmount"),
            (!self.suid, "nosuid"),
            (!self.dev, "nodev"),
            (self.noexec, "noexec"),
            (self.noatime, "noatime"),
            // relatime is left out: it is what the kernel does anyway, and
            // fusermount3 3.14 (Debian 12) refuses the word. These three it
            // refuses too, but without them the mount would not be what
            // was asked for: better its error than a silent difference.
            (self.nodiratime, "nodiratime"),
            (self.strictatime, "strictatime"),
            (self.lazytime, "lazytime"),
            (self.sync, "sync"),
            (self.dirsync, "dirsync"),
        ] {
            if on {
                opts.push(name.into());
            }
        }
        if self.max_read > 0 {
            opts.push(format!("max_read={}", self.max_read));
        }
        opts.join(",")
    }
}

/// A live FUSE mount and the /dev/fuse fd of its connection.
///
/// A mount is known by its unique mount id, never by its path or device
/// number: after an unmount the next mount on the same path very likely
/// gets the same `major:minor` (anonymous device minors, like the old
/// mount ids, are reused lowest first), and unmounting by path alone would
/// take that one down.
#[derive(Debug)]
pub struct Mount {
    mountpoint: PathBuf,
    /// The kernel's never-reused id of this mount (`STATX_MNT_ID_UNIQUE`).
    id: u64,
    /// The connection's /dev/fuse fd, to ask the kernel whether it has
    /// ended the connection.
    conn: Arc<OwnedFd>,
    via_fusermount: bool,
    /// With auto_unmount, fusermount3 stays alive and unmounts when this
    /// socket closes (that is, when this process is gone).
    auto_unmount: AutoUnmount,
    /// Handed over to another server ([`Mount::release`]): dropping it
    /// leaves the mount in place.
    released: std::sync::atomic::AtomicBool,
}

fn check_mountpoint(mountpoint: &Path) -> Result<std::fs::Metadata, MountError> {
    match std::fs::metadata(mountpoint) {
        Ok(m) if m.is_dir() => Ok(m),
        Ok(_) => Err(MountError::NotADirectory(mountpoint.into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(MountError::NoMountpoint(mountpoint.into()))
        }
        Err(e) => Err(MountError::Mountpoint(mountpoint.into(), e)),
    }
}

/// Mounts a FUSE filesystem at `mountpoint` and returns the mount and the
/// connection's /dev/fuse fd. As root (without auto_unmount) through
/// mount(2); otherwise through fusermount3.
pub fn mount(mountpoint: &Path, opts: &MountOptions) -> Result<(Mount, Arc<OwnedFd>), MountError> {
    let meta = check_mountpoint(mountpoint)?;
    let mountpoint = std::fs::canonicalize(mountpoint)
        .map_err(|e| MountError::Mountpoint(mountpoint.into(), e))?;
    let fail = |e| MountError::Mount(mountpoint.clone(), e);
    // A mount is known by its unique id (see Mount): without it there is
    // no safe way to unmount later, so refuse before mounting.
    sys::statx_mount(&mountpoint).map_err(fail)?;
    let (fd, via_fusermount, auto) = if sys::effective_uid() == 0 && !opts.auto_unmount {
        let fd = sys::open_dev_fuse().map_err(fail)?;
        let (uid, gid) = sys::real_ids();
        let mut data = format!(
            "fd={},rootmode={:o},user_id={uid},group_id={gid}",
            fd.as_raw_fd(),
            meta.mode() & libc::S_IFMT
        );
        if opts.allow_other {
            data.push_str(",allow_other");
        }
        if opts.default_permissions {
            data.push_str(",default_permissions");
        }
        if opts.max_read > 0 {
            data.push_str(&format!(",max_read={}", opts.max_read));
        }
        sys::mount(
            &opts.fsname,
            &mountpoint,
            &opts.fstype(),
            opts.ms_flags(),
            &data,
        )
        .map_err(fail)?;
        (fd, false, None)
    } else {
        let (fd, auto) = fusermount(&mountpoint, opts).map_err(fail)?;
        (fd, true, auto)
    };
    let conn = Arc::new(fd);
    // Taken at once, while the mount just made is the top one on the path.
    let stat = match sys::statx_mount(&mountpoint) {
        Ok(stat) => stat,
        Err(e) => {
            // statx worked on the bare mountpoint a moment ago, so this is
            // unlikely; the mount cannot be told apart later, so it goes now.
            if let Err(e) = sys::umount2(&mountpoint, libc::MNT_DETACH) {
                tracing::warn!("detaching {} failed: {e}", mountpoint.display());
            }
            return Err(fail(e));
        }
    };
    Ok((
        Mount {
            mountpoint,
            id: stat.mount_id,
            conn: conn.clone(),
            via_fusermount,
            auto_unmount: auto,
            released: std::sync::atomic::AtomicBool::new(false),
        },
        conn,
    ))
}

/// Adopts a FUSE mount someone else made (a parent process, a container
/// runtime, systemd's fd store, an earlier server of the same connection)
/// together with its /dev/fuse fd `conn`: the mount at the top of
/// `mountpoint` now, and with `expect_id` only if it is that mount (its
/// unique id). From then on it is this process's mount: unmounted (only
/// if it is still the top mount there) when the session ends. Nothing is
/// sent to the filesystem: statx asks for the mount id alone, which FUSE
/// answers without a request, so an adoption before INIT does not wait.
pub(crate) fn adopt(
    mountpoint: &Path,
    conn: Arc<OwnedFd>,
    expect_id: Option<u64>,
) -> Result<Mount, MountError> {
    let mountpoint = std::fs::canonicalize(mountpoint)
        .map_err(|e| MountError::Mountpoint(mountpoint.into(), e))?;
    let stat =
        sys::statx_mount(&mountpoint).map_err(|e| MountError::Mountpoint(mountpoint.clone(), e))?;
    if let Some(want) = expect_id {
        if stat.mount_id != want {
            return Err(MountError::Mount(
                mountpoint,
                io::Error::other(format!(
                    "the mount there is {}, not the one handed over ({want})",
                    stat.mount_id
                )),
            ));
        }
    }
    Ok(Mount {
        mountpoint,
        id: stat.mount_id,
        conn,
        via_fusermount: sys::effective_uid() != 0,
        auto_unmount: None,
        released: std::sync::atomic::AtomicBool::new(false),
    })
}

type AutoUnmount = Option<(UnixStream, Child)>;

fn fusermount(mountpoint: &Path, opts: &MountOptions) -> io::Result<(OwnedFd, AutoUnmount)> {
    let (ours, theirs) = UnixStream::pair()?;
    sys::clear_cloexec(theirs.as_fd())?;
    let mut child = Command::new("fusermount3")
        .arg("-o")
        .arg(opts.fusermount_opts())
        .arg("--")
        .arg(mountpoint)
        .env("_FUSE_COMMFD", theirs.as_raw_fd().to_string())
        .stdin(Stdio::null())
        // Its complaints (an option it does not know...) belong in our
        // error, not on a daemon's stderr that may go nowhere.
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run fusermount3: {e}")))?;
    drop(theirs);
    let said = |child: &mut Child| {
        let mut text = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        }
        text.trim().to_string()
    };
    let fd = match sys::recv_fd(ours.as_fd()) {
        Ok(fd) => fd,
        Err(e) => {
            let text = said(&mut child);
            let status = child.wait()?;
            let why = if text.is_empty() { e.to_string() } else { text };
            return Err(io::Error::new(
                e.kind(),
                format!("fusermount3 failed ({status}): {why}"),
            ));
        }
    };
    if opts.auto_unmount {
        // It lives on with its stderr pipe open (it only writes there if an
        // unmount fails), until the Mount ends it.
        Ok((fd, Some((ours, child))))
    } else {
        let text = said(&mut child);
        child.wait()?;
        if !text.is_empty() {
            tracing::warn!("fusermount3: {text}");
        }
        Ok((fd, None))
    }
}

impl Mount {
    /// Where the filesystem is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The kernel's unique, never-reused id of this mount.
    #[cfg(feature = "stats")]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether an auto_unmount fusermount3 watches this process (and
    /// unmounts when it ends).
    pub(crate) fn watched_by_fusermount(&self) -> bool {
        self.auto_unmount.is_some()
    }

    /// Gives the mount up without unmounting it, for another server to
    /// adopt: its path and unique id. Not for a mount
    /// [watched by fusermount3](Mount::watched_by_fusermount).
    pub(crate) fn release(&self) {
        self.released
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The kernel's unique, never-reused id of this mount.
    pub(crate) fn unique_id(&self) -> u64 {
        self.id
    }

    /// Whether the kernel has ended the connection (an unmount or an abort
    /// did): there is nothing left to unmount then, whatever is mounted at
    /// the path now.
    pub fn connection_ended(&self) -> bool {
        match sys::fuse_connection_ended(self.conn.as_fd()) {
            Ok(ended) => ended,
            Err(e) => {
                tracing::warn!("cannot poll /dev/fuse: {e}");
                false
            }
        }
    }

    /// Whether `stat` describes this mount.
    fn is(&self, stat: io::Result<sys::MountStat>) -> bool {
        matches!(stat, Ok(s) if s.mount_id == self.id)
    }

    /// Whether this mount is still in place: its connection lives and it
    /// is the top mount on its path. Never sends the filesystem a request.
    pub fn is_mounted(&self) -> bool {
        !self.connection_ended() && self.is(sys::statx_mount(&self.mountpoint))
    }

    /// Unmounts, if this mount is still in place. With `flush`, first syncs
    /// the filesystem so that dirty pages reach the daemon while it still
    /// serves (call it with workers running). Tries a normal unmount and
    /// falls back to a lazy one when files are still open; the session
    /// then ends when the last one closes.
    ///
    /// The normal unmount goes by path (a handle on the mount would keep it
    /// busy), right after checking that the top mount there is this one.
    pub fn unmount(&self, flush: bool) -> io::Result<()> {
        if !self.is_mounted() {
            return Ok(());
        }
        if flush {
            if let Ok(dir) = std::fs::File::open(&self.mountpoint) {
                if !self.is(sys::statx_mount_fd(dir.as_fd())) {
                    return Ok(());
                }
                if let Err(e) = sys::syncfs(dir.as_fd()) {
                    tracing::warn!("syncfs on {} failed: {e}", self.mountpoint.display());
                }
            }
        }
        if !self.is_mounted() {
            return Ok(());
        }
        if self.via_fusermount {
            let status = Command::new("fusermount3")
                .args(["-u", "-q", "--"])
                .arg(&self.mountpoint)
                .status()?;
            if status.success() || !self.is_mounted() {
                return Ok(());
            }
            self.detach()
        } else {
            match sys::umount2(&self.mountpoint, 0) {
                Ok(()) => Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    tracing::info!(
                        "{} is busy: detaching it; the session ends when the last file closes",
                        self.mountpoint.display()
                    );
                    self.detach()
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
                Err(e) => Err(e),
            }
        }
    }

    /// Detaches the mount lazily, if it is still in place: never waits,
    /// never flushes. Through mount(2) it goes by a handle on the mount
    /// itself, so it cannot take another mount down.
    fn detach(&self) -> io::Result<()> {
        if self.connection_ended() {
            return Ok(());
        }
        let root = match sys::open_path(&self.mountpoint) {
            Ok(root) => root,
            // Nothing at the path any more: nothing of ours either.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(e),
        };
        if !self.is(sys::statx_mount_fd(root.as_fd())) {
            return Ok(());
        }
        if self.via_fusermount {
            drop(root);
            let status = Command::new("fusermount3")
                .args(["-u", "-q", "-z", "--"])
                .arg(&self.mountpoint)
                .status()?;
            if !status.success() && self.is_mounted() {
                return Err(io::Error::other(format!(
                    "fusermount3 -u -z exited with {status}"
                )));
            }
            Ok(())
        } else {
            match sys::umount2_fd(root.as_fd(), libc::MNT_DETACH) {
                // Detached already (by someone else, since the check).
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
                r => r,
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if *self.released.get_mut() {
            return;
        }
        // By the time a Mount is dropped nothing serves it any more, so only
        // a lazy detach is safe: a normal unmount would wait on writeback
        // that no one can answer.
        match self.detach() {
            Ok(()) => {
                // Our mount is gone, so the auto_unmount fusermount3 has
                // nothing left to do, and what it would unmount once its
                // socket closes is whatever is mounted at the path by then.
                if let Some((sock, mut child)) = self.auto_unmount.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                    drop(sock);
                }
            }
            Err(e) => tracing::warn!("detaching {} failed: {e}", self.mountpoint.display()),
        }
    }
}

/// The unique, never-reused id of the mount `path` is on (for a
/// mountpoint, the top mount there), from statx(2) with
/// `STATX_MNT_ID_UNIQUE` (Linux 6.8+). Sends a FUSE filesystem mounted at
/// `path` no request, so it answers even when the daemon is stopped or busy.
pub fn mount_id(path: &Path) -> io::Result<u64> {
    Ok(sys::statx_mount(path)?.mount_id)
}

/// The `major:minor` of the filesystem mounted at `mountpoint`, from
/// /proc/self/mountinfo (the last mount there wins, as path lookup does), or
/// `None` when nothing is mounted exactly there. Never touches the mount.
pub fn mount_device(mountpoint: &Path) -> io::Result<Option<(u32, u32)>> {
    let abs = if mountpoint.is_absolute() {
        mountpoint.to_path_buf()
    } else {
        std::env::current_dir()?.join(mountpoint)
    };
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(parse_mountinfo(&info, &abs))
}

fn unescape_mountinfo(field: &str) -> String {
    let mut out = Vec::with_capacity(field.len());
    let b = field.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_mountinfo(info: &str, mountpoint: &Path) -> Option<(u32, u32)> {
    let want = mountpoint.to_string_lossy();
    let want = want.trim_end_matches('/');
    let want = if want.is_empty() { "/" } else { want };
    info.lines()
        .rev()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let dev = fields.nth(2)?;
            let mp = fields.nth(1)?;
            (unescape_mountinfo(mp) == want).then_some(dev)
        })
        .next()
        .and_then(|dev| {
            let (ma, mi) = dev.split_once(':')?;
            Some((ma.parse().ok()?, mi.parse().ok()?))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_finds_last_mount_on_path() {
        let info = "\
22 1 0:21 / /mnt/a rw - tmpfs none rw
23 22 0:55 / /mnt/a rw,nosuid - fuse.fastfuse src rw
24 1 0:56 / /mnt/with\\040space rw - fuse x rw
";
        assert_eq!(parse_mountinfo(info, Path::new("/mnt/a")), Some((0, 55)));
        assert_eq!(parse_mountinfo(info, Path::new("/mnt/a/")), Some((0, 55)));
        assert_eq!(
            parse_mountinfo(info, Path::new("/mnt/with space")),
            Some((0, 56))
        );
        assert_eq!(parse_mountinfo(info, Path::new("/mnt")), None);
    }

    #[test]
    fn options_parse_and_render() {
        let mut o = MountOptions::default();
        for opt in [
            "allow_other",
            "default_permissions",
            "fsname=src",
            "subtype=fastfuse",
            "ro",
        ] {
            assert!(o.apply(opt).unwrap());
        }
        assert!(!o.apply("source=/x").unwrap());
        assert!(o.apply("allow_other=1").is_err());
        assert!(o.apply("max_read=abc").is_err());
        assert_eq!(o.fstype(), "fuse.fastfuse");
        assert_eq!(
            o.fusermount_opts(),
            "ro,fsname=src,subtype=fastfuse,allow_other,default_permissions,nosuid,nodev"
        );
        assert_eq!(
            o.ms_flags(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_RDONLY
        );
    }

    #[test]
    fn kernel_flags_and_fstab_words_are_accepted() {
        let mut o = MountOptions::default();
        for opt in [
            "nodiratime",
            "norelatime",
            "lazytime",
            "nofail",
            "_netdev",
            "x-systemd.foo",
            "x-systemd.requires=a.mount",
            "comment=anything",
            "defaults",
            "user",
            "users",
            "noauto",
            "auto",
            "sync",
            "dirsync",
        ] {
            assert!(o.apply(opt).unwrap(), "{opt}");
        }
        assert_eq!(
            o.ms_flags(),
            libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_NODIRATIME
                | libc::MS_LAZYTIME
                | libc::MS_SYNCHRONOUS
                | libc::MS_DIRSYNC
        );
        assert_eq!(
            o.fusermount_opts(),
            "rw,fsname=fastfuse,nosuid,nodev,nodiratime,lazytime,sync,dirsync"
        );
        for (opt, bit) in [
            ("strictatime", libc::MS_STRICTATIME),
            ("relatime", libc::MS_RELATIME),
            ("noatime", libc::MS_NOATIME),
        ] {
            let mut o = MountOptions::default();
            // The last atime mode wins.
            for o_ in ["noatime", "strictatime", "relatime", opt] {
                o.apply(o_).unwrap();
            }
            let modes = libc::MS_NOATIME | libc::MS_RELATIME | libc::MS_STRICTATIME;
            assert_eq!(o.ms_flags() & modes, bit, "{opt}");
        }
        let mut o = MountOptions::default();
        for opt in [
            "nodiratime",
            "diratime",
            "lazytime",
            "nolazytime",
            "strictatime",
            "nostrictatime",
            "atime",
        ] {
            o.apply(opt).unwrap();
        }
        assert_eq!(o, MountOptions::default());
        assert!(o.apply("nodiratime=1").is_err());
        assert!(!o.apply("bogus").unwrap());
        assert!(!o.apply("xsystemd").unwrap());
    }

    #[test]
    fn missing_and_non_directory_mountpoints_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = mount(&missing, &MountOptions::default()).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(err.to_string().contains("nope"), "{err}");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = mount(&file, &MountOptions::default()).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }
}
