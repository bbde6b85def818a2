//! Handing the filesystem's state over (`PassthroughFs::save` and
//! `restore`) on real mounts: a session resumed after a hand-over that did
//! not happen, a restored filesystem serving the connection it was handed,
//! and no save while a lock wait owns a deferred reply.

mod common;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::c;
use fastfuse::{Errno, Handover, MountOptions, Session, SessionError};
use fastfuse_passthrough::{Options, PassthroughError, PassthroughFs, SavedFds, SavedState};

/// Detaches whatever is still mounted at the path when dropped: a handed
/// over connection belongs to no session until one resumes it, so nothing
/// else would unmount it if the test fails in between.
struct DetachOnDrop(PathBuf);

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        if common::mounted_at(&self.0) {
            let path = c(&self.0);
            // SAFETY: a NUL-terminated path that outlives the call.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// A source, a mountpoint (detached on drop), and the handover of a
/// session of `fs` on it that agreed INIT (one `ready`).
struct HandedOver {
    handover: Option<Handover>,
    _detach: DetachOnDrop,
    mnt: tempfile::TempDir,
}

/// A saved state with descriptors of its own, as a successor in another
/// process would receive them.
fn owned((state, fds): (SavedState, SavedFds)) -> (SavedState, Vec<std::os::fd::OwnedFd>) {
    (state, fds.duplicate().unwrap())
}

fn source() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fastfuse-src")
        .tempdir()
        .unwrap()
}

fn hand_over(fs: Arc<PassthroughFs>) -> HandedOver {
    let mnt = tempfile::Builder::new()
        .prefix("fastfuse-mnt")
        .tempdir()
        .unwrap();
    let detach = DetachOnDrop(mnt.path().to_owned());
    let opts = MountOptions {
        fsname: common::FSNAME.into(),
        ..Default::default()
    };
    let session = Session::mount(fs, mnt.path(), &opts, common::config(true)).unwrap();
    let Ok(handover) = session.hand_over() else {
        panic!("hand_over refused");
    };
    assert!(common::mounted_at(mnt.path()));
    HandedOver {
        handover: Some(handover),
        _detach: detach,
        mnt,
    }
}

/// Serves the mount through `session` for a moment: a file written and
/// read back, then unmounted.
fn serve_and_unmount<F: fastfuse::Filesystem>(session: Session<F>, mnt: &Path, src: &Path) {
    let session = session.spawn().unwrap();
    fs::write(mnt.join("f"), b"after the hand-over").unwrap();
    assert_eq!(fs::read(mnt.join("f")).unwrap(), b"after the hand-over");
    assert_eq!(fs::read(src.join("f")).unwrap(), b"after the hand-over");
    assert_eq!(
        fs::metadata(mnt.join("f")).unwrap().ino(),
        fs::metadata(src.join("f")).unwrap().ino()
    );
    session.unmount().unwrap();
    assert!(!common::mounted_at(mnt));
}

/// After a save, the session the state was saved from may resume (the
/// successor refused): `ready` is accepted a second time. Without a save
/// it is refused, as before: the filesystem serves one session.
#[test]
fn a_session_resumes_after_a_save_and_only_then() {
    let src = source();
    let fs = Arc::new(PassthroughFs::new(src.path(), Options::default()).unwrap());
    let mut h = hand_over(fs.clone());
    let (state, fds) = fs.save().map(owned).unwrap();
    drop((state, fds));
    let session =
        Session::resume(fs.clone(), h.handover.take().unwrap(), common::config(true)).unwrap();
    serve_and_unmount(session, h.mnt.path(), src.path());

    let src = source();
    let fs = Arc::new(PassthroughFs::new(src.path(), Options::default()).unwrap());
    let mut h = hand_over(fs.clone());
    let refused = Session::resume(fs, h.handover.take().unwrap(), common::config(true));
    assert!(
        matches!(refused, Err(SessionError::FsInit(e)) if e == Errno::EBUSY),
        "a second ready without a save must be refused"
    );
}

/// A filesystem restored from the state of the one that agreed INIT
/// serves the connection handed over: `ready` with the agreed values,
/// then requests.
#[test]
fn a_restored_filesystem_serves_the_handed_over_connection() {
    let src = source();
    fs::create_dir(src.path().join("d")).unwrap();
    let fs = Arc::new(PassthroughFs::new(src.path(), Options::default()).unwrap());
    let mut h = hand_over(fs.clone());
    let (state, fds) = fs.save().map(owned).unwrap();
    let next = PassthroughFs::restore(src.path(), Options::default(), state, fds).unwrap();
    drop(fs);
    let session = Session::resume(next, h.handover.take().unwrap(), common::config(true)).unwrap();
    serve_and_unmount(session, h.mnt.path(), src.path());
}

/// A blocking lock request waiting off the workers owns a deferred reply
/// that cannot move: save refuses until it has been answered.
#[test]
fn save_waits_for_no_lock_wait() {
    let m = common::mount(true);
    fs::write(m.at("f"), b"").unwrap();
    let open = |path: &Path| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap()
    };
    let holder = open(&m.at("f"));
    common::fcntl_lock(&holder, libc::F_OFD_SETLK, libc::F_WRLCK, 0, 0).unwrap();
    let waiting = open(&m.at("f"));
    let waiter = std::thread::spawn(move || {
        common::fcntl_lock(&waiting, libc::F_OFD_SETLKW, libc::F_WRLCK, 0, 0).map(drop)
    });
    // The SETLKW reaches the filesystem when it does: until then a save
    // succeeds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match m.fs.save() {
            Err(PassthroughError::LockWaitPending(1)) => break,
            Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            other => panic!("the lock wait never counted: {other:?}"),
        }
    }
    let err = m.fs.save().unwrap_err();
    assert!(err.to_string().contains("1 blocking lock request"), "{err}");
    common::fcntl_lock(&holder, libc::F_OFD_SETLK, libc::F_UNLCK, 0, 0).unwrap();
    waiter.join().unwrap().unwrap();
    // The waiter's thread lets go of its count just after the reply.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match m.fs.save() {
            Ok(_) => break,
            Err(PassthroughError::LockWaitPending(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("save still refused after the wait ended: {e}"),
        }
    }
}
