//! Lookup counts, forgetting, unmounting, odd input, and waiting for locks.

mod common;

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{errno, Mounted};
use fastfuse::{Caller, Errno, FileHandle, Filesystem, MountOptions, NodeId, WriteFlags};
use fastfuse_passthrough::{Options, PassthroughFs};

#[test]
fn modes_are_what_was_asked() {
    let m = common::mount(true);
    assert!(m.negotiated.writeback_cache());
    let m = common::mount(false);
    assert!(!m.negotiated.writeback_cache());
}

fn busy_tree(m: &Mounted) {
    fs::create_dir_all(m.at("a/b/c")).unwrap();
    for i in 0..50 {
        fs::write(m.at(&format!("a/b/f{i}")), b"x").unwrap();
    }
    fs::hard_link(m.at("a/b/f0"), m.at("a/link")).unwrap();
    std::os::unix::fs::symlink("b/f1", m.at("a/sym")).unwrap();
    fs::rename(m.at("a/b/f2"), m.at("a/c2")).unwrap();
    fs::remove_file(m.at("a/b/f3")).unwrap();
    for e in fs::read_dir(m.at("a/b")).unwrap() {
        let e = e.unwrap();
        fs::metadata(e.path()).unwrap();
    }
    assert_eq!(fs::read(m.at("a/sym")).unwrap(), b"x");
    let _ = fs::metadata(m.at("a/missing"));
}

#[test]
fn inode_table_returns_to_baseline_after_drop_caches() {
    for writeback in [true, false] {
        let m = common::mount(writeback);
        assert_eq!(m.fs.inode_count(), 1);
        busy_tree(&m);
        assert!(m.fs.inode_count() > 50);
        assert_eq!(m.forget_all(), 1, "writeback {writeback}");
        // Every inode forgotten is remembered by its source handle, but
        // the deleted f3: a/, a/b/, a/b/c/, 49 files (f0 and a/link are
        // one inode), a/sym.
        assert_eq!(m.fs.remembered_count(), 53, "writeback {writeback}");
    }
}

#[test]
fn readdirplus_lookups_are_given_back() {
    let m = common::mount_with(
        fastfuse::Config {
            readdirplus: true,
            ..common::config(true)
        },
        Options::default(),
        MountOptions::default(),
    );
    fs::create_dir(m.at("d")).unwrap();
    for i in 0..300 {
        fs::write(m.source(&format!("d/f{i:03}")), b"").unwrap();
    }
    fs::create_dir(m.source("d/sub")).unwrap();
    // Twice, the second time from the kernel's cached listing or not.
    for _ in 0..2 {
        let mut n = 0;
        for e in fs::read_dir(m.at("d")).unwrap() {
            let e = e.unwrap();
            e.metadata().unwrap();
            n += 1;
        }
        assert_eq!(n, 301);
    }
    assert!(m.count("READDIRPLUS") > 0, "{:?}", m.stats().ops.keys());
    assert_eq!(m.forget_all(), 1);
}

#[test]
fn racing_lookups_share_one_node() {
    let m = common::mount(false);
    for i in 0..20 {
        fs::write(m.source(&format!("f{i}")), b"").unwrap();
    }
    let mnt = Arc::new(m.mnt().to_owned());
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let mnt = mnt.clone();
            std::thread::spawn(move || {
                (0..20)
                    .map(|i| fs::metadata(mnt.join(format!("f{i}"))).unwrap().ino())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let inos: Vec<Vec<u64>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(inos.iter().all(|v| *v == inos[0]));
    assert_eq!(m.fs.inode_count(), 21);
    assert_eq!(m.forget_all(), 1);
}

#[test]
fn unmount_leaves_no_mount_even_after_a_panic() {
    let m = common::mount(true);
    let mnt = m.mnt().to_owned();
    fs::write(m.at("f"), b"data").unwrap();
    assert!(common::mounted_at(&mnt));
    m.unmount();
    assert!(!common::mounted_at(&mnt));

    let mnt = std::sync::Mutex::new(None);
    let r = std::panic::catch_unwind(|| {
        let m = common::mount(true);
        *mnt.lock().unwrap() = Some(m.mnt().to_owned());
        // Dirty data in the writeback cache and a file open when the panic
        // comes (it closes first: locals drop in reverse order).
        let mut f = File::create(m.at("f")).unwrap();
        std::io::Write::write_all(&mut f, b"unsynced").unwrap();
        panic!("test failure");
    });
    assert!(r.is_err());
    let mnt = mnt.lock().unwrap().clone().unwrap();
    assert!(!common::mounted_at(&mnt));
}

/// The filesystem without a mount, called as the engine would.
fn unmounted() -> (tempfile::TempDir, PassthroughFs) {
    let src = tempfile::tempdir().unwrap();
    fs::create_dir(src.path().join("sub")).unwrap();
    let fs = PassthroughFs::new(src.path(), Options::default()).unwrap();
    (src, fs)
}

#[test]
fn dot_and_dotdot_stay_in_the_source() {
    let (src, fs) = unmounted();
    let req = Caller::detached(0, 0, 1);
    let root_ino = fs::metadata(src.path()).unwrap().ino();
    // ".." of the root is the root, never the source's parent.
    let up = fs.lookup(&req, NodeId::ROOT, OsStr::new("..")).unwrap();
    assert_eq!(up.node, NodeId::ROOT);
    assert_eq!(up.attr.ino, root_ino);
    let dot = fs.lookup(&req, NodeId::ROOT, OsStr::new(".")).unwrap();
    assert_eq!(dot.node, NodeId::ROOT);
    let sub = fs.lookup(&req, NodeId::ROOT, OsStr::new("sub")).unwrap();
    assert_ne!(sub.node, NodeId::ROOT);
    assert_eq!(
        fs.lookup(&req, sub.node, OsStr::new("..")).unwrap().node,
        NodeId::ROOT
    );
    assert_eq!(
        fs.lookup(&req, sub.node, OsStr::new(".")).unwrap().node,
        sub.node
    );
    assert_eq!(fs.inode_count(), 2);
    // "sub" and "." each counted one.
    fs.forget(sub.node, 1);
    assert_eq!(fs.inode_count(), 2);
    fs.forget(sub.node, 1);
    assert_eq!(fs.inode_count(), 1);
}

#[test]
fn odd_input_is_answered_not_panicked_on() {
    let (_src, fs) = unmounted();
    let req = Caller::detached(0, 0, 1);
    let root = NodeId::ROOT;
    for name in ["a/b", "", "/", "../sub"] {
        assert_eq!(
            fs.lookup(&req, root, OsStr::new(name)).unwrap_err(),
            Errno::EINVAL,
            "{name:?}"
        );
    }
    assert_eq!(
        fs.mkdir(&req, root, OsStr::new(".."), 0o755, 0)
            .unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(
        fs.unlink(&req, root, OsStr::new("..")).unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(
        fs.rename(&req, root, OsStr::new("sub"), root, OsStr::new("x/y"), 0)
            .unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(
        fs.lookup(&req, root, OsStr::new("missing")).unwrap_err(),
        Errno::ENOENT
    );
    assert_eq!(
        fs.lookup(&req, NodeId(999), OsStr::new("x")).unwrap_err(),
        Errno::ESTALE
    );
    assert_eq!(
        fs.getattr(&req, NodeId(12345), None).unwrap_err(),
        Errno::ESTALE
    );
    fs.forget(NodeId(999), 1);
    fs.forget(root, u64::MAX);
    fs.batch_forget(&mut [(NodeId(5), 1), (NodeId(0), 3)].into_iter());
    let mut buf = [0u8; 16];
    assert_eq!(
        fs.read(&req, root, FileHandle(77), 0, &mut buf)
            .unwrap_err(),
        Errno::EBADF
    );
    assert_eq!(
        fs.write(&req, root, FileHandle(77), 0, b"x", WriteFlags::default())
            .unwrap_err(),
        Errno::EBADF
    );
    assert_eq!(
        fs.flush(&req, root, FileHandle(77), 0).unwrap_err(),
        Errno::EBADF
    );
    assert!(fs.release(&req, root, FileHandle(77), 0, 0, 0).is_ok());
    assert!(fs.releasedir(&req, root, FileHandle(77), 0).is_ok());
    assert_eq!(
        fs.fsyncdir(&req, root, FileHandle(77), false).unwrap_err(),
        Errno::EBADF
    );
    // A getattr naming a handle we never gave falls back to the node.
    assert!(fs.getattr(&req, root, Some(FileHandle(77))).is_ok());
    // Offsets past off_t.
    let opened = fs
        .create(
            &req,
            root,
            OsStr::new("f"),
            0o644,
            0,
            fastfuse::OpenFlags {
                flags: libc::O_RDWR as u32,
                kill_suidgid: false,
            },
        )
        .unwrap()
        .1;
    assert_eq!(
        fs.read(&req, root, opened.fh, u64::MAX, &mut buf)
            .unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(fs.inode_count(), 2);
}

extern "C" fn ignore_signal(_: libc::c_int) {}

#[test]
fn a_waiting_lock_is_interruptible() {
    // A handler without SA_RESTART, so the signal interrupts fcntl.
    // SAFETY: `sigaction` is plain old data; the handler is a valid
    // extern "C" function that does nothing (async-signal-safe).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = ignore_signal as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    let m = common::mount(true);
    fs::write(m.at("f"), b"").unwrap();
    let holder = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.at("f"))
        .unwrap();
    common::fcntl_lock(&holder, libc::F_OFD_SETLK, libc::F_WRLCK, 0, 0).unwrap();
    let path = m.at("f");
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        // SAFETY: pthread_self has no preconditions.
        tx.send(unsafe { libc::pthread_self() }).unwrap();
        common::fcntl_lock(&f, libc::F_OFD_SETLKW, libc::F_WRLCK, 0, 0)
    });
    let thread = rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Signal until the waiter returns: a signal that lands before the
    // fcntl starts waiting is lost.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !waiter.is_finished() && Instant::now() < deadline {
        // SAFETY: the thread is alive (not finished) and SIGUSR1 has a
        // handler.
        unsafe { libc::pthread_kill(thread, libc::SIGUSR1) };
        std::thread::sleep(Duration::from_millis(200));
    }
    if !waiter.is_finished() {
        // Let it finish rather than hang the suite, then fail.
        drop(holder);
        panic!("SETLKW did not return on a signal");
    }
    let e = waiter.join().unwrap().unwrap_err();
    assert_eq!(errno(&e), libc::EINTR);
    // The filesystem still serves.
    common::fcntl_lock(&holder, libc::F_OFD_SETLK, libc::F_UNLCK, 0, 0).unwrap();
    assert_eq!(fs::read(m.at("f")).unwrap(), b"");
}
