//! Mount primitives: a tmpfs source, "is this mounted", unmounting with
//! fallbacks, and ending a server by its pid (never by name).

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::mount::{MountFlags, UnmountFlags};
use rustix::process::{Pid, Signal};

/// Whether this process runs as root (it can mount tmpfs and drop caches).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn unescape_mountinfo(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
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

/// The filesystem type mounted exactly at `path` (the topmost mount), from
/// a /proc/self/mountinfo text.
///
/// ```
/// let info = "36 25 0:32 / /tmp/a\\040b rw,relatime shared:1 - tmpfs none rw\n\
///             40 36 0:45 / /tmp/m rw - fuse.mergerfs src rw\n";
/// use fastfuse_bench::mounts::fstype_in;
/// assert_eq!(fstype_in(info, "/tmp/a b".as_ref()).as_deref(), Some("tmpfs"));
/// assert_eq!(fstype_in(info, "/tmp/m".as_ref()).as_deref(), Some("fuse.mergerfs"));
/// assert_eq!(fstype_in(info, "/tmp".as_ref()), None);
/// ```
pub fn fstype_in(mountinfo: &str, path: &Path) -> Option<String> {
    let want = path.to_string_lossy();
    let mut found = None;
    for line in mountinfo.lines() {
        let mut halves = line.splitn(2, " - ");
        let (Some(left), Some(right)) = (halves.next(), halves.next()) else {
            continue;
        };
        let Some(point) = left.split(' ').nth(4) else {
            continue;
        };
        if unescape_mountinfo(point) == want {
            found = right.split(' ').next().map(str::to_string);
        }
    }
    found
}

/// The filesystem type mounted exactly at `path`, if anything is.
pub fn mounted_fstype(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    fstype_in(&info, path)
}

/// Whether something is mounted exactly at `path`.
pub fn is_mounted(path: &Path) -> bool {
    mounted_fstype(path).is_some()
}

/// Mounts a tmpfs of at most `size` bytes at `path`.
pub fn mount_tmpfs(path: &Path, size: u64) -> io::Result<()> {
    let data =
        std::ffi::CString::new(format!("size={size},mode=0755")).expect("no NUL in the options");
    rustix::mount::mount(
        "fastfuse-bench",
        path,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(data.as_c_str()),
    )?;
    Ok(())
}

/// Unmounts `path` the way `umount` does, retrying a busy mount for a
/// moment, then `umount -l` (detach). A mount this process may not
/// unmount (a FUSE mount made by a non-root user) goes through
/// `fusermount3 -u`, then `-uz`. Returns how it was done.
pub fn unmount(path: &Path) -> io::Result<&'static str> {
    if !is_mounted(path) {
        return Ok("not mounted");
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match rustix::mount::unmount(path, UnmountFlags::empty()) {
            Ok(()) => return Ok("umount"),
            Err(rustix::io::Errno::BUSY) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(rustix::io::Errno::PERM) => {
                for args in [["-u"], ["-uz"]] {
                    let ok = Command::new("fusermount3")
                        .args(args)
                        .arg(path)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success());
                    if ok {
                        return Ok("fusermount3");
                    }
                }
                return Err(io::Error::other(format!(
                    "cannot unmount {}: permission denied, and fusermount3 failed",
                    path.display()
                )));
            }
            Err(_) => break,
        }
    }
    rustix::mount::unmount(path, UnmountFlags::DETACH)?;
    Ok("umount -l")
}

/// A server process: our child, or a pid found after it daemonized.
#[derive(Debug)]
pub enum ServerProcess {
    /// Started by us in the foreground.
    Child(Child),
    /// Not our child (a daemon); known by pid only.
    Pid(i32),
}

impl ServerProcess {
    /// Its pid.
    pub fn pid(&self) -> i32 {
        match self {
            ServerProcess::Child(c) => c.id() as i32,
            ServerProcess::Pid(p) => *p,
        }
    }

    fn alive(&mut self) -> bool {
        match self {
            ServerProcess::Child(c) => matches!(c.try_wait(), Ok(None)),
            ServerProcess::Pid(p) => match Pid::from_raw(*p) {
                Some(pid) => rustix::process::test_kill_process(pid).is_ok(),
                None => false,
            },
        }
    }

    fn signal(&self, sig: Signal) {
        if let Some(pid) = Pid::from_raw(self.pid()) {
            let _ = rustix::process::kill_process(pid, sig);
        }
    }

    fn wait_gone(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if !self.alive() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the server to exit after its unmount; if it lingers, sends
    /// SIGTERM, then SIGKILL, to its pid. Returns a note if it had to.
    pub fn finish(&mut self) -> Option<String> {
        if self.wait_gone(Duration::from_secs(10)) {
            return None;
        }
        self.signal(Signal::TERM);
        if self.wait_gone(Duration::from_secs(5)) {
            return Some(format!("server pid {} needed SIGTERM", self.pid()));
        }
        self.signal(Signal::KILL);
        self.wait_gone(Duration::from_secs(5));
        Some(format!("server pid {} needed SIGKILL", self.pid()))
    }
}

/// The pid of a process (not this one) whose command line has `mountpoint`
/// as an argument: how a daemonized peer is found.
pub fn find_server_pid(mountpoint: &Path) -> Option<i32> {
    let me = std::process::id() as i32;
    let want = mountpoint.as_os_str().as_encoded_bytes();
    for entry in std::fs::read_dir("/proc").ok()? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.split(|&b| b == 0).any(|arg| arg == want) {
            return Some(pid);
        }
    }
    None
}

/// Removes an empty directory; a missing one is fine. Never recursive: a
/// directory that still holds something (a mount that would not go) is
/// left alone.
pub fn remove_dir(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The directory that holds a run's sources and mountpoints.
#[derive(Debug)]
pub struct Scratch {
    root: PathBuf,
}

impl Scratch {
    /// Creates `fastfuse-bench.PID.N` under the temporary directory.
    pub fn new() -> io::Result<Scratch> {
        let base = std::env::temp_dir();
        for n in 0..1000 {
            let root = base.join(format!("fastfuse-bench.{}.{n}", std::process::id()));
            match std::fs::create_dir(&root) {
                Ok(()) => return Ok(Scratch { root }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("cannot create a scratch directory"))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// A new empty directory inside it.
    pub fn fresh_dir(&self, name: &str) -> io::Result<PathBuf> {
        let p = self.root.join(name);
        std::fs::create_dir(&p)?;
        Ok(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Files left here (fio's JSON, the log of a failed run) go; a
        // directory that is still a mountpoint stays, and says so.
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for e in entries.flatten() {
                let p = e.path();
                if is_mounted(&p) {
                    tracing::warn!("{} is still mounted; left in place", p.display());
                } else if p.is_dir() {
                    let _ = remove_dir(&p);
                } else {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        let _ = remove_dir(&self.root);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_dirs_are_created_and_removed() {
        let s = Scratch::new().unwrap();
        let root = s.path().to_path_buf();
        let d = s.fresh_dir("a").unwrap();
        std::fs::write(root.join("f.json"), b"{}").unwrap();
        assert!(d.is_dir());
        drop(s);
        assert!(!root.exists());
    }

    #[test]
    fn unmounting_what_is_not_mounted_is_fine() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(unmount(d.path()).unwrap(), "not mounted");
        assert!(is_mounted(Path::new("/")));
    }

    #[test]
    fn finds_a_process_by_its_mountpoint_argument() {
        let dir = tempfile::tempdir().unwrap();
        // The directory is `$0` of the shell, so it is in its command line.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("sleep 30")
            .arg(dir.path())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut found = None;
        while found.is_none() && Instant::now() < deadline {
            found = find_server_pid(dir.path());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(found, Some(child.id() as i32));
        let mut server = ServerProcess::Pid(child.id() as i32);
        server.signal(Signal::KILL);
        child.wait().unwrap();
        assert!(!server.alive());
    }
}
