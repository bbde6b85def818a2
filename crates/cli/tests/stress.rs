//! Load: eight threads of random create, write, rename, link, unlink,
//! mkdir, rmdir, readdir, fsync, truncate and read through one mount for a
//! minute, then: the tree through the mount equals the source, the daemon
//! holds no more than it did before, and nothing hung.
//!
//! How the inode table is observed from outside the daemon: PassthroughFs
//! keeps exactly one `O_PATH` descriptor per inode-table entry (the root
//! included) and one descriptor per open file or directory handle; every
//! other descriptor of the daemon (/dev/fuse clones, io_uring rings, the
//! statistics socket, /proc/self/fd, stdio) is fixed for the session. So
//! with nothing open through the mount, the daemon's descriptors that lead
//! into the source (/proc/PID/fd/N) are its inode table, and its full set
//! of descriptors back at the baseline taken right after mounting means no
//! handle, inode or anything else leaked. No daemon code is needed for it.
//!
//! This test found the kernel's unfenced O_TRUNC under the writeback cache
//! (see the README and crates/engine/src/init.rs): now and then a file's
//! size through the mount ended below the source's, until the engine
//! stopped asking for FUSE_ATOMIC_O_TRUNC with the writeback cache.

mod common;
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use support::*;

const THREADS: u64 = 8;
const SEED: u64 = 0x57e55;
const DIRS: u64 = 4;
const NAMES: u64 = 12;

/// How long the threads run: 60 s, or FASTFUSE_STRESS_SECS for a quick
/// local run.
fn duration() -> Duration {
    let secs = std::env::var("FASTFUSE_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// The errors racing threads cause each other (a name gone, taken, a
/// directory where a file was or the other way round, a directory not
/// empty). Anything else fails the test.
fn expected(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::EEXIST | libc::ENOTEMPTY | libc::EISDIR | libc::ENOTDIR)
    )
}

/// One random operation under `root`; `Err` only for unexpected errors.
fn operate(root: &Path, rng: &mut Rng, tag: u64) -> Result<(), String> {
    let path = |rng: &mut Rng| {
        root.join(format!("d{}", rng.below(DIRS)))
            .join(format!("n{}", rng.below(NAMES)))
    };
    let p = path(rng);
    let op = rng.below(12);
    let len = rng.below(256 << 10) as usize;
    let r: std::io::Result<()> = (|| match op {
        0 | 1 => {
            let mut f = std::fs::File::create(&p)?;
            f.write_all(&content(tag, len))
        }
        2 | 3 => {
            let mut f = std::fs::OpenOptions::new().write(true).open(&p)?;
            f.seek(SeekFrom::Start(rng.below(512 << 10)))?;
            f.write_all(&content(tag, len / 4))
        }
        4 => std::fs::rename(&p, path(rng)),
        5 => std::fs::hard_link(&p, path(rng)),
        6 => std::fs::remove_file(&p).or_else(|e| {
            if e.raw_os_error() == Some(libc::EISDIR) {
                std::fs::remove_dir(&p)
            } else {
                Err(e)
            }
        }),
        7 => std::fs::create_dir(&p),
        8 => {
            for e in std::fs::read_dir(p.parent().unwrap())? {
                match e.and_then(|e| std::fs::symlink_metadata(e.path())) {
                    Ok(_) => {}
                    Err(e) if expected(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
        9 => {
            let mut f = std::fs::OpenOptions::new().write(true).open(&p)?;
            f.write_all(&content(tag, 4096))?;
            f.sync_all()
        }
        10 => std::fs::OpenOptions::new()
            .write(true)
            .open(&p)?
            .set_len(rng.below(512 << 10)),
        _ => {
            let mut v = Vec::new();
            std::fs::File::open(&p)?.read_to_end(&mut v).map(drop)
        }
    })();
    match r {
        Ok(()) => Ok(()),
        Err(e) if expected(&e) => Ok(()),
        // A hard link to a directory (the name was made by mkdir).
        Err(e) if op == 5 && e.raw_os_error() == Some(libc::EPERM) => Ok(()),
        Err(e) => Err(format!("op {op} on {}: {e}", p.display())),
    }
}

/// Type, permission bits, link count, size and contents of every entry
/// under `root`, by relative path.
fn describe(root: &Path) -> BTreeMap<PathBuf, (u32, u64, u64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            let bytes = if m.is_file() {
                std::fs::read(&path).unwrap()
            } else {
                stack.push(path.clone());
                Vec::new()
            };
            let size = if m.is_file() { m.size() } else { 0 };
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            out.insert(rel, (m.mode(), m.nlink(), size, bytes));
        }
    }
    out
}

#[test]
fn random_operations_from_eight_threads_leave_the_mount_equal_to_the_source() {
    random_operations_from_eight_threads(&[]);
}

#[test]
fn random_operations_from_eight_threads_with_the_writeback_cache() {
    random_operations_from_eight_threads(&["-o", "writeback"]);
}

/// Eight threads of random operations on a mount with `args`, then the
/// mount and the source compared.
fn random_operations_from_eight_threads(args: &[&str]) {
    let served = Served::start(args);
    let (mnt, src, pid) = (
        served.mnt().to_path_buf(),
        served.src().to_path_buf(),
        served.pid(),
    );
    let run_for = duration();
    let _watchdog = Watchdog::start(
        run_for + Duration::from_secs(60),
        "the stress test",
        pid,
        &[&mnt, served.source.path()],
    );
    // The baseline: only the root known, nothing open, and the daemon done
    // starting. The mount is visible before the daemon has started its
    // workers (their cloned /dev/fuse fds, their splice pipes) or closed
    // what it read while mounting, so its table must hold still first.
    let mut baseline = daemon_fds(pid);
    assert!(wait_for(Duration::from_secs(10), || {
        drop_caches();
        std::thread::sleep(Duration::from_millis(200));
        let now = daemon_fds(pid);
        let still = now == baseline;
        baseline = now;
        still && fds_into(pid, &src).len() == 1
    }));
    for d in 0..DIRS {
        std::fs::create_dir(mnt.join(format!("d{d}"))).unwrap();
    }

    eprintln!("stress: {THREADS} threads, seed {SEED:#x}, {run_for:?}");
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (mnt, stop) = (mnt.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::new(SEED + t);
                let mut ops = 0u64;
                let mut errors = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = operate(&mnt, &mut rng, (t << 40) | ops) {
                        errors.push(e);
                    }
                    ops += 1;
                }
                (ops, errors)
            })
        })
        .collect();
    let started = Instant::now();
    while started.elapsed() < run_for {
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let ops: Vec<u64> = results.iter().map(|r| r.0).collect();
    let errors: Vec<&String> = results.iter().flat_map(|r| &r.1).collect();
    eprintln!("stress: operations per thread {ops:?}");
    assert!(errors.is_empty(), "unexpected errors: {errors:#?}");
    assert!(ops.iter().all(|&n| n > 100), "a thread stalled: {ops:?}");

    // Attributes the kernel cached (1 s) have expired; the mount shows
    // what the source holds, name by name, byte by byte.
    std::thread::sleep(Duration::from_millis(1100));
    let through = describe(&mnt);
    let on_source = describe(&src);
    let files = on_source.values().filter(|v| !v.3.is_empty()).count();
    eprintln!(
        "stress: {} entries ({files} non-empty files)",
        on_source.len()
    );
    assert!(files > 0);
    if through != on_source {
        let differ: Vec<String> = through
            .keys()
            .chain(on_source.keys())
            .filter(|k| through.get(*k) != on_source.get(*k))
            .map(|k| {
                let brief = |v: Option<&(u32, u64, u64, Vec<u8>)>| v.map(|v| (v.0, v.1, v.2));
                let (a, b) = (through.get(k), on_source.get(k));
                let bytes = match (a, b) {
                    (Some(a), Some(b)) => {
                        let first = a.3.iter().zip(&b.3).position(|(x, y)| x != y);
                        let (short, long) = if a.3.len() < b.3.len() { (&a.3, &b.3) } else { (&b.3, &a.3) };
                        let tail_zero = long[short.len()..].iter().all(|&x| x == 0);
                        format!("first differing byte {first:?}, longer one's tail all zero: {tail_zero}")
                    }
                    _ => String::new(),
                };
                format!(
                    "{}: mount {:?}, source {:?}; {bytes}",
                    k.display(),
                    brief(a),
                    brief(b)
                )
            })
            .collect();
        panic!(
            "the mount and the source differ (mode, nlink, size):\n{}",
            differ.join("\n")
        );
    }

    // Once the kernel drops its caches it forgets every node: the inode
    // table is back to the root alone, and every descriptor is as before.
    let back = wait_for(Duration::from_secs(20), || {
        drop_caches();
        fds_into(pid, &src).len() == 1
    });
    assert!(
        back,
        "the inode table did not return to the root: {} entries still {:?}",
        fds_into(pid, &src).len(),
        fds_into(pid, &src).iter().take(10).collect::<Vec<_>>()
    );
    let now = daemon_fds(pid);
    assert_eq!(
        now, baseline,
        "the daemon's descriptors are not the baseline"
    );
}
