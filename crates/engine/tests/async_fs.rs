//! The async adaptor against real mounts: the `async_timer` example's
//! filesystem served by `fastfuse::Async` with one engine worker and one
//! pool thread. Every mount is undone by a guard, also when an assertion
//! fails.

#[allow(dead_code)]
#[path = "../examples/async_timer.rs"]
mod async_timer;
mod common;

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use async_timer::{TimerFs, TIMER_TEXT};
use common::Mounted;
use fastfuse::{
    Async, AsyncCaller, AsyncFilesystem, AttrReply, Config, DirEntry, Entry, Errno, FileHandle,
    NodeId, OpenFlags, Opened, SetAttr, ThreadPoolSpawner, WriteFlags,
};

/// A READ waits this long on the example's timer.
const DELAY: Duration = Duration::from_millis(20);

/// Serves `fs` with one worker, and its futures on one pool thread.
fn mounted(fs: Arc<Probed>) -> Mounted {
    let config = Config {
        threads: 1,
        ..Default::default()
    };
    Mounted::new(
        Async::from_arc(fs, ThreadPoolSpawner::new(1).unwrap()),
        config,
    )
}

/// Opens once, for every future waiting on it.
#[derive(Default)]
struct Gate {
    open: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl Gate {
    fn opened() -> Gate {
        let gate = Gate::default();
        gate.open.store(true, Ordering::SeqCst);
        gate
    }

    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        for w in std::mem::take(&mut *self.wakers.lock().unwrap()) {
            w.wake();
        }
    }

    async fn wait(&self) {
        std::future::poll_fn(|cx| {
            self.wakers.lock().unwrap().push(cx.waker().clone());
            if self.open.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// Sends on drop: tells that a future was dropped, done or not.
struct OnDrop(mpsc::Sender<&'static str>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        let _ = self.0.send("read future dropped");
    }
}

/// The example's filesystem, with a READ that first waits for `gate`, and
/// a record of the thread each method ran on.
struct Probed {
    inner: TimerFs,
    gate: Gate,
    /// Told when a READ's future starts, and when one is dropped.
    reads: Mutex<mpsc::Sender<&'static str>>,
    threads: Mutex<Vec<(&'static str, String)>>,
}

impl Probed {
    fn new(gate: Gate) -> (Arc<Probed>, mpsc::Receiver<&'static str>) {
        let (tx, rx) = mpsc::channel();
        let fs = Probed {
            inner: TimerFs::new(DELAY).unwrap(),
            gate,
            reads: Mutex::new(tx),
            threads: Mutex::new(Vec::new()),
        };
        (Arc::new(fs), rx)
    }

    /// How many times `op` reached the filesystem.
    fn calls(&self, op: &str) -> usize {
        let threads = self.threads.lock().unwrap();
        threads.iter().filter(|(o, _)| *o == op).count()
    }

    fn note(&self, op: &'static str) {
        let thread = std::thread::current().name().unwrap_or("").to_owned();
        self.threads.lock().unwrap().push((op, thread));
    }
}

impl AsyncFilesystem for Probed {
    async fn lookup(&self, who: AsyncCaller, parent: NodeId, name: &OsStr) -> Result<Entry, Errno> {
        self.note("lookup");
        self.inner.lookup(who, parent, name).await
    }

    async fn getattr(
        &self,
        who: AsyncCaller,
        node: NodeId,
        fh: Option<FileHandle>,
    ) -> Result<AttrReply, Errno> {
        self.note("getattr");
        self.inner.getattr(who, node, fh).await
    }

    async fn setattr(
        &self,
        who: AsyncCaller,
        node: NodeId,
        changes: SetAttr,
    ) -> Result<AttrReply, Errno> {
        self.note("setattr");
        self.inner.setattr(who, node, changes).await
    }

    async fn open(
        &self,
        who: AsyncCaller,
        node: NodeId,
        flags: OpenFlags,
    ) -> Result<Opened, Errno> {
        self.note("open");
        self.inner.open(who, node, flags).await
    }

    async fn read(
        &self,
        who: AsyncCaller,
        node: NodeId,
        fh: FileHandle,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, Errno> {
        self.note("read");
        let reads = self.reads.lock().unwrap().clone();
        let _dropped = OnDrop(reads.clone());
        let _ = reads.send("read started");
        self.gate.wait().await;
        self.inner.read(who, node, fh, offset, size).await
    }

    async fn write(
        &self,
        who: AsyncCaller,
        node: NodeId,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        flags: WriteFlags,
    ) -> Result<u32, Errno> {
        self.note("write");
        self.inner.write(who, node, fh, offset, data, flags).await
    }

    async fn readdir(
        &self,
        who: AsyncCaller,
        node: NodeId,
        fh: FileHandle,
        offset: u64,
    ) -> Result<Vec<DirEntry>, Errno> {
        self.note("readdir");
        self.inner.readdir(who, node, fh, offset).await
    }

    async fn create(
        &self,
        who: AsyncCaller,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: OpenFlags,
    ) -> Result<(Entry, Opened), Errno> {
        self.note("create");
        self.inner
            .create(who, parent, name, mode, umask, flags)
            .await
    }

    async fn mkdir(
        &self,
        who: AsyncCaller,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> Result<Entry, Errno> {
        self.note("mkdir");
        self.inner.mkdir(who, parent, name, mode, umask).await
    }

    async fn unlink(&self, who: AsyncCaller, parent: NodeId, name: &OsStr) -> Result<(), Errno> {
        self.note("unlink");
        self.inner.unlink(who, parent, name).await
    }

    async fn rmdir(&self, who: AsyncCaller, parent: NodeId, name: &OsStr) -> Result<(), Errno> {
        self.note("rmdir");
        self.inner.rmdir(who, parent, name).await
    }
}

/// Reads, writes, listings, creations and removals through the mount, all
/// of them answered by tasks on the pool thread: the one engine worker
/// only defers.
#[test]
fn std_fs_through_the_async_adaptor() {
    let (fs, _reads) = Probed::new(Gate::opened());
    let m = mounted(fs.clone());
    let timer = m.path().join("timer");

    let t = Instant::now();
    assert_eq!(std::fs::read(&timer).unwrap(), TIMER_TEXT);
    assert!(t.elapsed() >= DELAY, "the READ did not wait for the timer");

    // Rewriting truncates (O_TRUNC at OPEN) and writes; direct I/O reads
    // it back. set_len and chmod are SETATTRs.
    std::fs::write(&timer, b"shorter\n").unwrap();
    assert_eq!(std::fs::read(&timer).unwrap(), b"shorter\n");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&timer)
        .unwrap();
    f.set_len(5).unwrap();
    drop(f);
    assert_eq!(std::fs::read(&timer).unwrap(), b"short");
    std::fs::set_permissions(&timer, std::fs::Permissions::from_mode(0o600)).unwrap();
    let meta = std::fs::metadata(&timer).unwrap();
    assert_eq!((meta.len(), meta.permissions().mode() & 0o7777), (5, 0o600));

    // Enough entries (300 of 152 bytes) that the listing overflows
    // getdents' 32 KiB buffer, so that it takes several READDIRs, each one
    // continuing from the cookie of the last entry the previous one held.
    let dir = m.path().join("dir");
    let long = "x".repeat(120);
    let mut want: Vec<String> = (0..300).map(|i| format!("file-{i:03}-{long}")).collect();
    for name in &want {
        std::fs::write(dir.join(name), name.as_bytes()).unwrap();
    }
    std::fs::create_dir(dir.join("sub")).unwrap();
    want.push("sub".into());
    let before = fs.calls("readdir");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let readdirs = fs.calls("readdir") - before;
    names.sort();
    assert_eq!(names, want);
    assert!(readdirs > 2, "{readdirs} READDIRs for 303 entries");
    let name = format!("file-123-{long}");
    assert_eq!(
        std::fs::read(dir.join(&name)).unwrap(),
        name.as_bytes(),
        "a file created through the mount reads back"
    );
    assert!(std::fs::metadata(dir.join("sub")).unwrap().is_dir());

    let name = format!("file-000-{long}");
    std::fs::remove_file(dir.join(&name)).unwrap();
    let err = std::fs::metadata(dir.join(&name)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    let err = std::fs::remove_dir(&dir).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY));
    std::fs::remove_dir(dir.join("sub")).unwrap();
    assert!(!dir.join("sub").exists());

    let threads = fs.threads.lock().unwrap();
    for op in [
        "lookup", "getattr", "setattr", "open", "read", "write", "readdir", "create", "mkdir",
        "unlink", "rmdir",
    ] {
        assert!(
            threads.iter().any(|(o, _)| *o == op),
            "{op} never reached the filesystem"
        );
    }
    let elsewhere: Vec<_> = threads
        .iter()
        .filter(|(_, t)| t != "fastfuse-async-0")
        .collect();
    assert!(elsewhere.is_empty(), "not run by the pool: {elsewhere:?}");
}

/// One engine worker, one pool thread, and a READ that waits (on a gate,
/// then on the timer): stat(2)s are answered meanwhile, and the READ
/// completes once the gate opens, no sooner than the timer allows.
#[test]
fn a_getattr_is_answered_while_a_timed_read_waits() {
    let (fs, reads) = Probed::new(Gate::default());
    let m = mounted(fs.clone());
    let timer = m.path().join("timer");
    std::fs::metadata(&timer).unwrap();

    let reader = {
        let timer = timer.clone();
        std::thread::spawn(move || std::fs::read(&timer).unwrap())
    };
    assert_eq!(
        reads.recv_timeout(Duration::from_secs(30)),
        Ok("read started"),
        "the READ never reached the filesystem"
    );
    // On another thread, so that a held worker fails the test instead of
    // hanging it. stat(2) until five GETATTRs reached the filesystem (the
    // kernel may answer a stat from attributes fetched in the same jiffy).
    let (stats_done, stats_seen) = mpsc::channel();
    let stats = {
        let (timer, fs) = (timer.clone(), fs.clone());
        std::thread::spawn(move || {
            let want = fs.calls("getattr") + 5;
            for _ in 0..10_000 {
                if fs.calls("getattr") >= want {
                    stats_done.send(()).unwrap();
                    return;
                }
                std::fs::metadata(&timer).unwrap();
            }
        })
    };
    let served = stats_seen.recv_timeout(Duration::from_secs(30));
    assert!(
        !reader.is_finished(),
        "the READ was answered before its gate opened"
    );
    let opened_at = Instant::now();
    fs.gate.open();
    assert!(
        served.is_ok(),
        "five stat(2)s were not answered while the READ waited"
    );
    stats.join().unwrap();

    assert_eq!(reader.join().unwrap(), TIMER_TEXT);
    assert!(
        opened_at.elapsed() >= DELAY,
        "the READ did not wait for the timer after the gate"
    );
}

extern "C" fn ignore(_: libc::c_int) {}

/// A signal to a thread whose READ waits makes the kernel send INTERRUPT:
/// the adaptor drops the READ's future and answers EINTR, which read(2)
/// returns.
#[test]
fn an_interrupted_read_drops_its_future_and_returns_eintr() {
    // A handler (not SIG_IGN, and without SA_RESTART): the signal
    // interrupts the read(2) instead of being discarded or restarting it.
    // SAFETY: `sigaction` is plain data, valid zeroed; `ignore` is an
    // async-signal-safe handler that does nothing.
    let r = unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = ignore as *const () as libc::sighandler_t;
        libc::sigaction(libc::SIGUSR1, &act, std::ptr::null_mut())
    };
    assert_eq!(r, 0, "sigaction: {}", std::io::Error::last_os_error());

    let (fs, reads) = Probed::new(Gate::default());
    let m = mounted(fs.clone());
    let timer = m.path().join("timer");
    let reader = {
        let timer = timer.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::File::open(&timer).unwrap();
            // One read(2): read_to_end would retry after EINTR.
            f.read(&mut [0; 64]).map_err(|e| e.raw_os_error())
        })
    };
    assert_eq!(
        reads.recv_timeout(Duration::from_secs(30)),
        Ok("read started"),
        "the READ never reached the filesystem"
    );
    // SAFETY: the thread has not been joined, so its pthread_t is valid.
    let r = unsafe { libc::pthread_kill(reader.as_pthread_t(), libc::SIGUSR1) };
    assert_eq!(r, 0);
    let dropped = reads.recv_timeout(Duration::from_secs(30));
    // Whatever happened, let a READ still waiting go before unmounting.
    fs.gate.open();
    assert_eq!(dropped, Ok("read future dropped"));
    assert_eq!(reader.join().unwrap(), Err(Some(libc::EINTR)));
    // The mount goes on serving.
    fs.gate.open();
    assert_eq!(std::fs::read(&timer).unwrap(), TIMER_TEXT);
}
