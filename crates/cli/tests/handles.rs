//! File handles through the mount (what an NFS server exporting it keeps):
//! a handle taken with `name_to_handle_at` still opens its file with
//! `open_by_handle_at` after the kernel has forgotten the file's node, and
//! a handle of a deleted file gives ESTALE.
//!
//! The kernel's handle is the node id; decoding one whose inode it no
//! longer caches, it sends LOOKUP "." in that node id, which the daemon
//! answers from the source's own file handle of the inode.

mod common;
mod support;

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::*;
use rustix::fs::{Mode, OFlags};
use support::*;

/// Drops the caches until the daemon holds no node but the root (FORGETs
/// arrive asynchronously), so that nothing below is answered from an inode
/// the kernel still caches.
fn forget_everything(served: &Served) {
    let forgotten = wait_for(Duration::from_secs(10), || {
        drop_caches();
        fds_into(served.pid(), served.src()).len() == 1
    });
    assert!(
        forgotten,
        "the kernel still holds nodes: {:?}",
        fds_into(served.pid(), served.src())
    );
}

/// Where an fd leads, as /proc/self/fd says.
fn fd_path(fd: &OwnedFd) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
}

fn handles_outlive_the_kernels_nodes(args: &[&str]) {
    let served = Served::start(args);
    let _watchdog = Watchdog::start(
        Duration::from_secs(120),
        "file handle test",
        served.pid(),
        &[served.mnt(), served.source.path()],
    );
    let (mnt, src) = (served.mnt(), served.src());
    std::fs::create_dir_all(mnt.join("dir/sub")).unwrap();
    std::fs::write(mnt.join("file"), b"file contents").unwrap();
    std::fs::write(mnt.join("dir/linked"), b"linked contents").unwrap();
    std::fs::hard_link(mnt.join("dir/linked"), mnt.join("link")).unwrap();
    std::fs::write(mnt.join("deleted"), b"x").unwrap();
    std::fs::write(mnt.join("deleted_behind"), b"x").unwrap();

    let handle = |name: &str| FileHandle::of(&mnt.join(name)).unwrap();
    let file = handle("file");
    let dir = handle("dir");
    let sub = handle("dir/sub");
    let linked = handle("dir/linked");
    let deleted = handle("deleted");
    let deleted_behind = handle("deleted_behind");
    // Hard links are one node, hence one handle.
    assert_eq!(handle("link"), linked);
    assert_ne!(file, linked);

    std::fs::remove_file(mnt.join("deleted")).unwrap();
    forget_everything(&served);
    // Deleted on the source, behind the daemon's back, once forgotten.
    std::fs::remove_file(src.join("deleted_behind")).unwrap();

    let mount = mount_fd(mnt);
    for (h, name, contents) in [
        (&file, "file", &b"file contents"[..]),
        (&linked, "dir/linked", &b"linked contents"[..]),
    ] {
        let fd = h
            .open(&mount, libc::O_RDONLY)
            .unwrap_or_else(|e| panic!("open_by_handle_at of {name}: {e}"));
        let st = rustix::fs::fstat(&fd).unwrap();
        assert_eq!(
            st.st_ino,
            std::fs::metadata(src.join(name)).unwrap().ino(),
            "{name}"
        );
        let mut read = Vec::new();
        std::fs::File::from(fd).read_to_end(&mut read).unwrap();
        assert_eq!(read, contents, "{name}");
    }
    for (h, name, parent) in [(&dir, "dir", ""), (&sub, "dir/sub", "dir")] {
        let fd = h
            .open(&mount, libc::O_RDONLY | libc::O_DIRECTORY)
            .unwrap_or_else(|e| panic!("open_by_handle_at of {name}: {e}"));
        let st = rustix::fs::fstat(&fd).unwrap();
        assert_eq!(
            st.st_ino,
            std::fs::metadata(src.join(name)).unwrap().ino(),
            "{name}"
        );
        // The kernel reconnected the directory to the tree (LOOKUP "..").
        assert_eq!(fd_path(&fd), mnt.join(name));
        let up = rustix::fs::openat(
            &fd,
            "..",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        assert_eq!(
            rustix::fs::fstat(&up).unwrap().st_ino,
            std::fs::metadata(src.join(parent)).unwrap().ino(),
            "{name}/.."
        );
        assert_eq!(fd_path(&up), mnt.join(parent));
    }
    for (h, name) in [(&deleted, "deleted"), (&deleted_behind, "deleted_behind")] {
        assert_eq!(
            h.open(&mount, libc::O_RDONLY).unwrap_err(),
            Errno::STALE,
            "{name}"
        );
    }

    // Forgotten again and found by name, a file gets its old node id back:
    // the kernel hands out the same handle.
    drop(mount);
    forget_everything(&served);
    assert_eq!(handle("file"), file);
    assert_eq!(handle("dir/sub"), sub);
    assert_eq!(handle("link"), linked);
    // A new file in a deleted one's place is another file.
    std::fs::write(mnt.join("deleted"), b"new").unwrap();
    assert_ne!(handle("deleted"), deleted);
}

#[test]
fn handles_outlive_the_kernels_nodes_with_writeback() {
    handles_outlive_the_kernels_nodes(&[]);
}

#[test]
fn handles_outlive_the_kernels_nodes_without_writeback() {
    handles_outlive_the_kernels_nodes(&["-o", "no_writeback"]);
}

/// With `remembered_handles=0` nothing is remembered: a handle of a node
/// the kernel forgot goes stale (what happens beyond the bound, too).
#[test]
fn without_remembered_handles_forgotten_nodes_go_stale() {
    let served = Served::start(&["-o", "remembered_handles=0"]);
    let _watchdog = Watchdog::start(
        Duration::from_secs(60),
        "file handle test",
        served.pid(),
        &[served.mnt(), served.source.path()],
    );
    std::fs::write(served.mnt().join("file"), b"x").unwrap();
    let file = FileHandle::of(&served.mnt().join("file")).unwrap();
    forget_everything(&served);
    let mount = mount_fd(served.mnt());
    assert_eq!(file.open(&mount, libc::O_RDONLY).unwrap_err(), Errno::STALE);
}
