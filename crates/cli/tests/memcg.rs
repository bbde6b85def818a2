//! Memory pressure: a writer and the daemon in one memory cgroup whose
//! limit is a tenth of what the writer puts through the writeback cache.
//! Reclaim in the cgroup then has to get rid of FUSE pages that only the
//! daemon, itself in the cgroup, can write back; the write must still
//! finish, fsync and close must succeed, and the source must hold exactly
//! the bytes written.
//!
//! The source is on a disk filesystem (ext4 under /var/tmp): tmpfs pages
//! charged to the cgroup could only be reclaimed to swap, and there is
//! none, so a tmpfs source would fail for want of memory, not for FUSE.
//! The cgroup is made under the test's own memory cgroup (cgroup v1), so
//! that whatever limits the test runner already has still apply.

mod common;
mod support;

use std::ffi::CString;
use std::io::Read;
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno as E;
use support::*;

/// What the writer writes.
const TOTAL: u64 = 1 << 30;
/// The cgroup's limit: a tenth of it, a little less.
const LIMIT: u64 = 100 << 20;
/// Where the source directory goes: a disk filesystem.
const DISK: &str = "/var/tmp";
/// How long the writer may take (it takes 2-3 s on the 2-CPU VM).
const WRITER_LIMIT: Duration = Duration::from_secs(120);

/// A memory cgroup (v1) of its own, removed on drop, also when the test
/// failed: processes still in it are moved back to its parent first.
struct MemCgroup {
    dir: PathBuf,
}

impl MemCgroup {
    /// A child of this process's memory cgroup with `limit` bytes.
    fn new(name: &str, limit: u64) -> MemCgroup {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let own = own
            .lines()
            .find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                controllers
                    .split(',')
                    .any(|c| c == "memory")
                    .then(|| path.to_string())
            })
            .expect("no cgroup v1 memory controller in /proc/self/cgroup; this test needs one");
        let parent = Path::new("/sys/fs/cgroup/memory").join(own.trim_start_matches('/'));
        let dir = parent.join(format!("fastfuse-{name}-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let cg = MemCgroup { dir };
        cg.write("memory.limit_in_bytes", &limit.to_string());
        cg
    }

    fn write(&self, file: &str, value: &str) {
        let path = self.dir.join(file);
        std::fs::write(&path, value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    fn add(&self, pid: u32) {
        self.write("cgroup.procs", &pid.to_string());
    }

    /// `cgroup.procs`, for a forked child to move itself in.
    fn procs(&self) -> CString {
        c(self.dir.join("cgroup.procs"))
    }

    /// A number from one of the cgroup's files: `key` within
    /// memory.oom_control-style files, or the whole file when `key` is
    /// `None`.
    fn read(&self, file: &str, key: Option<&str>) -> u64 {
        let text = std::fs::read_to_string(self.dir.join(file)).unwrap();
        let value = match key {
            None => text.trim(),
            Some(k) => text
                .lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("no {k} in {file}: {text}")),
        };
        value.trim().parse().unwrap()
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        let parent = self.dir.parent().unwrap().join("cgroup.procs");
        for pid in procs.split_whitespace() {
            let _ = std::fs::write(&parent, pid);
        }
        // A task that just left may keep the cgroup busy for a moment.
        let removed = wait_for(Duration::from_secs(10), || {
            std::fs::remove_dir(&self.dir).is_ok()
        });
        if !removed && !std::thread::panicking() {
            panic!("could not remove {}", self.dir.display());
        }
    }
}

/// The `i`th 8-byte word of the file: position-dependent, so that a block
/// written twice, dropped or misplaced shows.
fn word(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `buf` with the file's bytes from `offset` (a multiple of 8).
fn fill(buf: &mut [u8], offset: u64) {
    for (k, chunk) in buf.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&word(offset / 8 + k as u64).to_le_bytes());
    }
}

/// The writer, run in a forked child: moves itself into the cgroup
/// (`procs`), writes [`TOTAL`] bytes to `path` in `buf.len()` writes,
/// fsyncs and closes, each checked.
fn write_in_cgroup(procs: &CString, path: &CString, buf: &mut [u8]) -> Result<(), E> {
    let cg = rustix::fs::open(procs.as_c_str(), OFlags::WRONLY, Mode::empty())?;
    // "0" is the writing process itself.
    rustix::io::write(&cg, b"0")?;
    drop(cg);
    let fd = rustix::fs::open(
        path.as_c_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC,
        Mode::from_raw_mode(0o644),
    )?;
    let mut offset = 0;
    while offset < TOTAL {
        fill(buf, offset);
        let mut done = 0;
        while done < buf.len() {
            done += rustix::io::write(&fd, &buf[done..])?;
        }
        offset += buf.len() as u64;
    }
    rustix::fs::fsync(&fd)?;
    let raw = fd.into_raw_fd();
    // SAFETY: close(2) of the descriptor just released from its OwnedFd;
    // called directly because dropping an OwnedFd ignores close's error,
    // which is where a failed writeback shows.
    if unsafe { libc::close(raw) } != 0 {
        return Err(E::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap(),
        ));
    }
    Ok(())
}

/// Asserts that `path` holds exactly the bytes the writer wrote.
fn assert_intact(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    assert_eq!(len, TOTAL, "size of {}", path.display());
    let mut f = std::fs::File::open(path).unwrap();
    let mut got = vec![0u8; 1 << 20];
    let mut want = vec![0u8; 1 << 20];
    let mut offset = 0;
    while offset < TOTAL {
        f.read_exact(&mut got).unwrap();
        fill(&mut want, offset);
        if got != want {
            let at = got.iter().zip(&want).position(|(a, b)| a != b).unwrap();
            panic!(
                "{} differs from what was written at byte {}",
                path.display(),
                offset + at as u64
            );
        }
        offset += got.len() as u64;
    }
}

/// Writes [`TOTAL`] bytes in `block`-byte writes through a writeback-cache
/// mount, writer and daemon in a cgroup of [`LIMIT`] bytes.
fn write_through_a_tenth(name: &str, block: usize) {
    let cgroup = MemCgroup::new(name, LIMIT);
    let mut served = Served::start_on(
        Tmpfs::on_disk(Path::new(DISK)),
        &["--transport", "dev", "-o", "writeback"],
    );
    let mnt = served.mnt().to_path_buf();
    let (_, minor) = fastfuse::mount_device(&mnt).unwrap().unwrap();
    let abort = PathBuf::from(format!("/sys/fs/fuse/connections/{minor}/abort"));
    assert!(abort.exists(), "{} is missing", abort.display());
    let _watchdog = Watchdog::start(
        Duration::from_secs(240),
        "memcg test",
        served.pid(),
        &[&mnt],
    );
    cgroup.add(served.pid());

    let procs = cgroup.procs();
    let path = c(mnt.join("out"));
    let mut buf = vec![0u8; block];
    let start = Instant::now();
    let r = in_child(
        WRITER_LIMIT,
        || {
            let _ = std::fs::write(&abort, "1");
        },
        || write_in_cgroup(&procs, &path, &mut buf),
    );
    let took = start.elapsed();
    let failcnt = cgroup.read("memory.failcnt", None);
    let max_usage = cgroup.read("memory.max_usage_in_bytes", None);
    let oom_kills = cgroup.read("memory.oom_control", Some("oom_kill"));
    eprintln!(
        "{name}: {} MiB in {block}-byte writes through a {} MiB cgroup: {r:?} in {took:.2?}; \
         failcnt {failcnt}, max_usage {} MiB, oom_kill {oom_kills}",
        TOTAL >> 20,
        LIMIT >> 20,
        max_usage >> 20
    );
    let r = r.unwrap_or_else(|| panic!("the writer still ran after {WRITER_LIMIT:?}"));
    assert_eq!(r, Ok(()), "write, fsync or close failed");
    assert_eq!(oom_kills, 0, "the OOM killer ran in the cgroup");
    // Otherwise the limit was never reached and nothing was tested.
    assert!(failcnt > 0, "the cgroup never hit its limit");
    assert!(is_mounted(&mnt), "the mount went away");

    let status = served.stop();
    assert!(status.success(), "the daemon exited with {status}");
    assert_intact(&served.src().join("out"));
}

#[test]
fn one_gib_in_1m_writes_through_a_100m_cgroup() {
    write_through_a_tenth("memcg-1m", 1 << 20);
}

#[test]
fn one_gib_in_4k_writes_through_a_100m_cgroup() {
    write_through_a_tenth("memcg-4k", 4096);
}
