//! FUSE over io_uring: the ring serves requests when the kernel offers it,
//! and the session falls back (or fails clearly) when it does not. These
//! tests flip the fuse module's `enable_uring` parameter, so they run one at
//! a time and put the parameter back as they found it.

#[allow(dead_code)]
#[path = "../examples/memfs.rs"]
mod memfs;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use fastfuse::{BackgroundSession, Config, MountOptions, Session, SessionError, TransportKind};

const PARAM: &str = "/sys/module/fuse/parameters/enable_uring";
static SERIAL: Mutex<()> = Mutex::new(());

/// Sets enable_uring for the life of the guard and restores it after.
struct UringParam {
    before: String,
    _serial: MutexGuard<'static, ()>,
}

impl UringParam {
    fn set(on: bool) -> UringParam {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let before = std::fs::read_to_string(PARAM)
            .expect("the fuse module has no enable_uring parameter (needs Linux 6.14+)");
        std::fs::write(PARAM, if on { "Y" } else { "N" }).unwrap();
        UringParam {
            before: before.trim().to_string(),
            _serial: serial,
        }
    }
}

impl Drop for UringParam {
    fn drop(&mut self) {
        let _ = std::fs::write(PARAM, &self.before);
    }
}

fn mount(dir: &Path, transport: TransportKind) -> Result<BackgroundSession, SessionError> {
    let config = Config {
        transport,
        uring_queue_depth: 4,
        ..Default::default()
    };
    Session::mount(
        memfs::MemFs::default(),
        dir,
        &MountOptions::default(),
        config,
    )?
    .spawn()
}

fn exercise(root: &Path, files: usize) {
    for i in 0..files {
        let p = root.join(format!("f{i}"));
        let body = vec![i as u8; 1000 + i * 4096];
        std::fs::write(&p, &body).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), body);
    }
    assert_eq!(std::fs::read_dir(root).unwrap().count(), files);
}

/// Runs `f` on CPU `cpu` (the kernel picks the queue of the caller's CPU).
fn on_cpu(cpu: usize, f: impl FnOnce() + Send) {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: plain data cpu_set_t and a syscall on this thread.
            #[allow(unsafe_code)]
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                assert_eq!(
                    libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
                    0
                );
            }
            f()
        });
    });
}

#[test]
fn requests_are_served_through_the_ring_on_every_queue() {
    let _param = UringParam::set(true);
    let dir = tempfile::tempdir().unwrap();
    let session = mount(dir.path(), TransportKind::Uring).unwrap();
    let cpus = std::thread::available_parallelism().unwrap().get();
    // One queue busy, then every queue busy at once.
    on_cpu(0, || exercise(&dir.path().join("."), 10));
    let after_one = session.stats().snapshot();
    std::thread::scope(|s| {
        for cpu in 0..cpus {
            let root = dir.path().join(format!("cpu{cpu}"));
            s.spawn(move || {
                on_cpu(cpu, || {
                    std::fs::create_dir(&root).unwrap();
                    exercise(&root, 20);
                })
            });
        }
    });
    let snap = session.stats().snapshot();
    let uring = snap
        .requests_by_transport
        .get("uring")
        .copied()
        .unwrap_or(0);
    assert!(
        after_one
            .requests_by_transport
            .get("uring")
            .copied()
            .unwrap_or(0)
            > 20,
        "{:?}",
        after_one.requests_by_transport
    );
    assert!(uring > 100, "{:?}", snap.requests_by_transport);
    // Only FORGET/INTERRUPT (and requests before the ring was ready) may
    // take the /dev/fuse path.
    let dev = snap.requests_by_transport.get("dev").copied().unwrap_or(0);
    assert!(dev < uring / 4, "{:?}", snap.requests_by_transport);
    session.unmount().unwrap();
}

/// The CPUs listed like "0-3,8" (a `Cpus_allowed_list`).
fn cpu_list(list: &str) -> Vec<usize> {
    list.trim()
        .split(',')
        .flat_map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()
        })
        .collect()
}

/// The CPUs a thread may run on, from its /proc `status` file.
fn allowed_cpus(status: &Path) -> Option<Vec<usize>> {
    let status = std::fs::read_to_string(status).ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    Some(cpu_list(list))
}

/// Each thread of this process: (name, the CPUs it may run on).
fn thread_cpus() -> Vec<(String, Vec<usize>)> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| {
            let t = t.ok()?.path();
            let name = std::fs::read_to_string(t.join("comm")).ok()?;
            Some((name.trim().to_string(), allowed_cpus(&t.join("status"))?))
        })
        .collect()
}

#[test]
fn each_queue_has_a_pinned_thread_and_helpers_that_float() {
    let _param = UringParam::set(true);
    let dir = tempfile::tempdir().unwrap();
    let session = mount(dir.path(), TransportKind::Uring).unwrap();
    // Served through the ring: every queue has registered, so every
    // queue's threads exist.
    exercise(dir.path(), 3);
    let allowed = allowed_cpus(Path::new("/proc/thread-self/status")).unwrap();
    let threads = thread_cpus();
    let queues = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    let queues = cpu_list(&queues).len();
    for q in 0..queues {
        let pinned: Vec<_> = threads
            .iter()
            .filter(|(n, _)| *n == format!("ff-uring{q}"))
            .collect();
        assert_eq!(pinned.len(), 1, "queue {q}: {threads:?}");
        if allowed.contains(&q) {
            assert_eq!(
                pinned[0].1,
                vec![q],
                "queue {q}'s thread is not pinned to CPU {q}"
            );
        }
        let helpers: Vec<_> = threads
            .iter()
            .filter(|(n, _)| n.starts_with(&format!("ff-uring{q}h")))
            .collect();
        assert!(!helpers.is_empty(), "queue {q} has no helper: {threads:?}");
        for (name, cpus) in helpers {
            // A thread inherits its creator's affinity: helpers are
            // spawned by the pinned thread and must be set free again.
            assert_eq!(cpus, &allowed, "{name} does not float");
        }
    }
    session.unmount().unwrap();
}

#[test]
fn auto_falls_back_to_dev_fuse_when_the_kernel_does_not_offer_io_uring() {
    let _param = UringParam::set(false);
    let dir = tempfile::tempdir().unwrap();
    let session = mount(dir.path(), TransportKind::Auto).unwrap();
    exercise(dir.path(), 5);
    let snap = session.stats().snapshot();
    assert!(!snap.requests_by_transport.contains_key("uring"));
    assert!(snap.requests_by_transport["dev"] > 10);
    session.unmount().unwrap();
}

#[test]
fn uring_required_but_not_offered_fails_clearly() {
    let _param = UringParam::set(false);
    let dir = tempfile::tempdir().unwrap();
    let err = mount(dir.path(), TransportKind::Uring)
        .err()
        .expect("mount must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("FUSE_OVER_IO_URING") && msg.contains("enable_uring"),
        "{msg}"
    );
    // Nothing is left mounted.
    assert!(fastfuse::mount_device(dir.path()).unwrap().is_none());
}

/// Where the connection mounted at `dir` counts its waiting requests;
/// taken while it serves (a stat of the mount would wait while paused).
fn waiting_file(dir: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir).unwrap().dev();
    format!("/sys/fs/fuse/connections/{}/waiting", libc::minor(dev))
}

/// A GETATTR of the mount's root, whatever the attribute cache holds.
fn getattr(dir: &Path) -> std::io::Result<()> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: plain data statx buffer and a NUL-terminated path.
    #[allow(unsafe_code)]
    let r = unsafe {
        let mut stx: libc::statx = std::mem::zeroed();
        libc::statx(
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_STATX_FORCE_SYNC,
            libc::STATX_MODE,
            &mut stx,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Starts a GETATTR of the mount's root on each CPU (each queue, then),
/// which the paused session leaves waiting, and waits until the kernel
/// has them.
fn requests_while_paused(
    dir: &Path,
    counter: &str,
) -> Vec<std::thread::JoinHandle<std::io::Result<()>>> {
    let waiting = || -> u64 {
        std::fs::read_to_string(counter)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let cpus = std::thread::available_parallelism().unwrap().get();
    let before = waiting();
    let writers: Vec<_> = (0..cpus)
        .map(|cpu| {
            let dir = dir.to_path_buf();
            std::thread::spawn(move || {
                let mut r = Ok(());
                on_cpu(cpu, || r = getattr(&dir));
                r
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while waiting() < before + cpus as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the writes never came"
        );
        std::thread::yield_now();
    }
    assert!(
        writers.iter().all(|w| !w.is_finished()),
        "a request was served while paused"
    );
    writers
}

/// A session over io_uring pauses (its queues drain: every ring entry
/// comes back and is kept), serves again through the same entries,
/// pauses again and hands the entries to a new session in the same
/// process, which answers what waited and goes on through io_uring.
#[test]
fn a_paused_ring_session_resumes_and_hands_its_entries_over() {
    let _param = UringParam::set(true);
    let dir = tempfile::tempdir().unwrap();
    let mut first = mount(dir.path(), TransportKind::Uring).unwrap();
    let uring = |s: &fastfuse::stats::StatsSnapshot| s.requests_by_transport.get("uring").copied();
    exercise(dir.path(), 5);
    let counter = waiting_file(dir.path());
    first.pause().unwrap();
    let writers = requests_while_paused(dir.path(), &counter);
    let before = uring(&first.stats().snapshot());
    first.resume();
    for w in writers {
        w.join().unwrap().unwrap();
    }
    assert!(
        uring(&first.stats().snapshot()) > before,
        "not served by the ring"
    );

    first.pause().unwrap();
    let writers = requests_while_paused(dir.path(), &counter);
    let handover = first.handover().unwrap();
    assert!(
        handover.rings.is_some(),
        "an io_uring hand-over carries its rings"
    );
    first.leave();
    let next = Session::resume(
        memfs::MemFs::default(),
        handover,
        Config {
            uring_queue_depth: 4,
            ..Default::default()
        },
    )
    .unwrap()
    .spawn()
    .unwrap();
    for w in writers {
        w.join().unwrap().unwrap();
    }
    let served = uring(&next.stats().snapshot());
    // The next MemFs starts empty: the kernel's cached names of the
    // first one's files mean nothing to it.
    std::fs::create_dir(dir.path().join("next")).unwrap();
    exercise(&dir.path().join("next"), 5);
    assert!(
        uring(&next.stats().snapshot()) > served,
        "the next session serves by the ring"
    );
    next.unmount().unwrap();
}

/// The calling thread's scheduling policy, from field 41 of its stat.
fn own_policy() -> Option<i32> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split_whitespace().nth(38)?.parse().ok()
}

/// A filesystem whose LOOKUP starts a thread the first time it runs under
/// SCHED_IDLE, as a filesystem may start a helper lazily from a handler.
/// The thread inherits SCHED_IDLE from the pinned ring thread and reports
/// the policies it runs under.
#[derive(Default)]
struct SpawnsInLookup {
    /// The policies the spawned thread saw, first to last (deduplicated).
    seen: std::sync::Arc<Mutex<Vec<i32>>>,
    spawned: std::sync::atomic::AtomicBool,
}

impl fastfuse::Filesystem for SpawnsInLookup {
    fn lookup(
        &self,
        _: &fastfuse::Caller,
        _: fastfuse::NodeId,
        _: &std::ffi::OsStr,
    ) -> Result<fastfuse::Entry, fastfuse::Errno> {
        if own_policy() == Some(libc::SCHED_IDLE)
            && !self.spawned.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let seen = self.seen.clone();
            std::thread::spawn(move || {
                let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
                while std::time::Instant::now() < end {
                    let p = own_policy().unwrap_or(-1);
                    let mut seen = seen.lock().unwrap();
                    if seen.last() != Some(&p) {
                        seen.push(p);
                    }
                    if p == libc::SCHED_OTHER {
                        return;
                    }
                    drop(seen);
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            });
        }
        Err(fastfuse::Errno::ENOENT)
    }

    fn getattr(
        &self,
        _: &fastfuse::Caller,
        node: fastfuse::NodeId,
        _: Option<fastfuse::FileHandle>,
    ) -> Result<fastfuse::AttrReply, fastfuse::Errno> {
        if node != fastfuse::NodeId::ROOT {
            return Err(fastfuse::Errno::ENOENT);
        }
        Ok(fastfuse::AttrReply {
            attr: fastfuse::Attr {
                ino: 1,
                mode: libc::S_IFDIR | 0o755,
                nlink: 2,
                ..Default::default()
            },
            timeout: std::time::Duration::from_secs(1),
        })
    }
}

#[test]
fn a_thread_a_handler_starts_on_a_pinned_thread_leaves_sched_idle() {
    let _param = UringParam::set(true);
    let dir = tempfile::tempdir().unwrap();
    let fs = SpawnsInLookup::default();
    let seen = fs.seen.clone();
    let config = Config {
        transport: TransportKind::Uring,
        ..Default::default()
    };
    let session = Session::mount(fs, dir.path(), &MountOptions::default(), config)
        .unwrap()
        .spawn()
        .unwrap();
    // LOOKUPs of a missing name, each answered ENOENT and so not cached,
    // keep the mount busy until the spawned thread has left SCHED_IDLE.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let done = loop {
        let _ = std::fs::metadata(dir.path().join("missing"));
        let seen = seen.lock().unwrap().clone();
        if seen.last() == Some(&libc::SCHED_OTHER) || std::time::Instant::now() > end {
            break seen;
        }
    };
    session.unmount().unwrap();
    assert_eq!(
        done,
        vec![libc::SCHED_IDLE, libc::SCHED_OTHER],
        "policies of a thread started by a handler on a pinned thread (5: SCHED_IDLE, 0: SCHED_OTHER)"
    );
}

/// MemFs counting the FORGET and BATCH_FORGET requests it is given and
/// the nodes they name.
#[derive(Default)]
struct CountsForgets {
    fs: memfs::MemFs,
    requests: std::sync::atomic::AtomicU64,
    nodes: std::sync::atomic::AtomicU64,
}

impl fastfuse::Filesystem for CountsForgets {
    fn lookup(
        &self,
        req: &fastfuse::Caller,
        parent: fastfuse::NodeId,
        name: &std::ffi::OsStr,
    ) -> Result<fastfuse::Entry, fastfuse::Errno> {
        self.fs.lookup(req, parent, name)
    }

    fn forget(&self, node: fastfuse::NodeId, nlookup: u64) {
        use std::sync::atomic::Ordering::SeqCst;
        self.requests.fetch_add(1, SeqCst);
        self.nodes.fetch_add(1, SeqCst);
        self.fs.forget(node, nlookup);
    }

    fn batch_forget(&self, nodes: &mut dyn Iterator<Item = (fastfuse::NodeId, u64)>) {
        use std::sync::atomic::Ordering::SeqCst;
        self.requests.fetch_add(1, SeqCst);
        for (node, nlookup) in nodes {
            self.nodes.fetch_add(1, SeqCst);
            self.fs.forget(node, nlookup);
        }
    }

    fn getattr(
        &self,
        req: &fastfuse::Caller,
        node: fastfuse::NodeId,
        fh: Option<fastfuse::FileHandle>,
    ) -> Result<fastfuse::AttrReply, fastfuse::Errno> {
        self.fs.getattr(req, node, fh)
    }

    fn create(
        &self,
        req: &fastfuse::Caller,
        parent: fastfuse::NodeId,
        name: &std::ffi::OsStr,
        mode: u32,
        umask: u32,
        flags: fastfuse::OpenFlags,
    ) -> Result<(fastfuse::Entry, fastfuse::Opened), fastfuse::Errno> {
        self.fs.create(req, parent, name, mode, umask, flags)
    }

    fn unlink(
        &self,
        req: &fastfuse::Caller,
        parent: fastfuse::NodeId,
        name: &std::ffi::OsStr,
    ) -> Result<(), fastfuse::Errno> {
        self.fs.unlink(req, parent, name)
    }
}

#[test]
fn forgets_of_removed_files_gather_into_few_requests() {
    use std::sync::atomic::Ordering::SeqCst;
    let _param = UringParam::set(true);
    let dir = tempfile::tempdir().unwrap();
    let fs = std::sync::Arc::new(CountsForgets::default());
    let config = Config {
        transport: TransportKind::Uring,
        uring_queue_depth: 4,
        ..Default::default()
    };
    let session = Session::mount(fs.clone(), dir.path(), &MountOptions::default(), config)
        .unwrap()
        .spawn()
        .unwrap();
    let files = 400u64;
    for i in 0..files {
        std::fs::File::create(dir.path().join(format!("f{i}"))).unwrap();
    }
    let (requests, nodes) = (fs.requests.load(SeqCst), fs.nodes.load(SeqCst));
    // Each UNLINK drops the file's last reference, and the kernel queues
    // its FORGET before the unlink returns; read as they came, they were
    // one request each.
    for i in 0..files {
        std::fs::remove_file(dir.path().join(format!("f{i}"))).unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while fs.nodes.load(SeqCst) < nodes + files {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {files} removed files forgotten",
            fs.nodes.load(SeqCst) - nodes
        );
        std::thread::yield_now();
    }
    let requests = fs.requests.load(SeqCst) - requests;
    assert!(
        requests < files / 4,
        "{requests} FORGET requests for {files} removed files"
    );
    session.unmount().unwrap();
}
