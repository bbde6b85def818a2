//! Mounting and unmounting: mount(2) as root, fusermount3 otherwise.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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
    #[error("cannot examine mountpoint {0}: {1}")]
    Mountpoint(PathBuf, #[source] io::Error),
    /// An option is malformed or unknown.
    #[error("bad mount option {0:?}: {1}")]
    BadOption(String, &'static str),
    /// mount(2) or fusermount3 failed.
    #[error("mounting on {0} failed: {1}")]
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
    /// `noatime`.
    pub noatime: bool,
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
            "suid" => self.suid = true,
            "nosuid" => self.suid = false,
            "dev" => self.dev = true,
            "nodev" => self.dev = false,
            "exec" => self.noexec = false,
            "noexec" => self.noexec = true,
            "atime" | "relatime" | "strictatime" => self.noatime = false,
            "noatime" => self.noatime = true,
            "sync" => self.sync = true,
            "async" => self.sync = false,
            "dirsync" => self.dirsync = true,
            "max_read" => {
                self.max_read = value
                    .and_then(|v| v.parse().ok())
                    .ok_or(MountError::BadOption(opt.into(), "wants a number"))?
            }
            // Accepted for compatibility with mount.fuse3 and fstab; they
            // change nothing here.
            "allow_root" | "user" | "nouser" | "users" | "auto" | "noauto" | "_netdev"
            | "nofail" | "defaults" => {}
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
#[derive(Debug)]
pub struct Mount {
    mountpoint: PathBuf,
    /// `major:minor` of the mount, to recognise it in /proc/self/mountinfo.
    dev: (u32, u32),
    via_fusermount: bool,
    /// With auto_unmount, fusermount3 stays alive and unmounts when this
    /// socket closes (that is, when this process is gone).
    _auto_unmount: Option<(UnixStream, Child)>,
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
pub fn mount(mountpoint: &Path, opts: &MountOptions) -> Result<(Mount, OwnedFd), MountError> {
    let meta = check_mountpoint(mountpoint)?;
    let mountpoint = std::fs::canonicalize(mountpoint)
        .map_err(|e| MountError::Mountpoint(mountpoint.into(), e))?;
    let fail = |e| MountError::Mount(mountpoint.clone(), e);
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
    let dev = mount_device(&mountpoint).map_err(fail)?.ok_or_else(|| {
        fail(io::Error::other(
            "the mount does not appear in /proc/self/mountinfo",
        ))
    })?;
    Ok((
        Mount {
            mountpoint,
            dev,
            via_fusermount,
            _auto_unmount: auto,
        },
        fd,
    ))
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
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run fusermount3: {e}")))?;
    drop(theirs);
    let fd = match sys::recv_fd(ours.as_fd()) {
        Ok(fd) => fd,
        Err(e) => {
            let status = child.wait()?;
            return Err(io::Error::new(
                e.kind(),
                format!("fusermount3 failed ({status}): {e}"),
            ));
        }
    };
    if opts.auto_unmount {
        Ok((fd, Some((ours, child))))
    } else {
        child.wait()?;
        Ok((fd, None))
    }
}

impl Mount {
    /// Where the filesystem is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// `major:minor` of the mount.
    pub fn device(&self) -> (u32, u32) {
        self.dev
    }

    /// Whether this mount is still in place.
    pub fn is_mounted(&self) -> bool {
        matches!(mount_device(&self.mountpoint), Ok(Some(dev)) if dev == self.dev)
    }

    /// Unmounts. With `flush`, first syncs the filesystem so that dirty
    /// pages reach the daemon while it still serves (call it with workers
    /// running). Tries a normal unmount and falls back to a lazy one when
    /// files are still open; the session then ends when the last one closes.
    pub fn unmount(&self, flush: bool) -> io::Result<()> {
        if !self.is_mounted() {
            return Ok(());
        }
        if flush {
            if let Ok(dir) = std::fs::File::open(&self.mountpoint) {
                if let Err(e) = sys::syncfs(dir.as_fd()) {
                    tracing::warn!("syncfs on {} failed: {e}", self.mountpoint.display());
                }
            }
        }
        if self.via_fusermount {
            for lazy in [false, true] {
                let mut cmd = Command::new("fusermount3");
                cmd.arg("-u").arg("-q");
                if lazy {
                    cmd.arg("-z");
                }
                let status = cmd.arg("--").arg(&self.mountpoint).status()?;
                if status.success() || !self.is_mounted() {
                    return Ok(());
                }
            }
            Err(io::Error::other(format!(
                "fusermount3 -u {} failed",
                self.mountpoint.display()
            )))
        } else {
            match sys::umount2(&self.mountpoint, 0) {
                Ok(()) => Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    tracing::info!(
                        "{} is busy: detaching it; the session ends when the last file closes",
                        self.mountpoint.display()
                    );
                    sys::umount2(&self.mountpoint, libc::MNT_DETACH)
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
                Err(e) => Err(e),
            }
        }
    }
}

impl Mount {
    /// Detaches the mount lazily: never waits, never flushes.
    fn detach(&self) -> io::Result<()> {
        if self.via_fusermount {
            let status = Command::new("fusermount3")
                .args(["-u", "-q", "-z", "--"])
                .arg(&self.mountpoint)
                .status()?;
            if !status.success() {
                return Err(io::Error::other(format!(
                    "fusermount3 -u -z exited with {status}"
                )));
            }
            Ok(())
        } else {
            sys::umount2(&self.mountpoint, libc::MNT_DETACH)
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // By the time a Mount is dropped nothing serves it any more, so only
        // a lazy detach is safe: a normal unmount would wait on writeback
        // that no one can answer.
        if self.is_mounted() {
            if let Err(e) = self.detach() {
                tracing::warn!("detaching {} failed: {e}", self.mountpoint.display());
            }
        }
    }
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
