//! Faults: the source full, removed or unmounted, the daemon killed, the
//! daemon out of file descriptors. Each must surface as an error to the
//! caller (never a silent success) and leave the daemon serving, or, once
//! the daemon is gone, leave a mount that can be cleaned up and reused.

mod common;
mod support;

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno as E;
use support::*;

/// close(2) with its error (std's File drop ignores it).
fn close(f: std::fs::File) -> Result<(), E> {
    let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
    // SAFETY: close(2) of a descriptor just released from its File.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(E::from_io_error(&std::io::Error::last_os_error()).unwrap())
    }
}

fn errno(e: &std::io::Error) -> E {
    E::from_io_error(e).unwrap_or_else(|| panic!("not an OS error: {e}"))
}

/// Writes `total` bytes in 64 KiB writes, then (with `fsync`) fsyncs, and
/// closes; returns how many bytes write() accepted and the first error
/// and which call reported it.
fn write_and_close(path: &Path, data: &[u8], fsync: bool) -> (usize, Option<(&'static str, E)>) {
    let mut f = std::fs::File::create(path).unwrap();
    let mut accepted = 0;
    for chunk in data.chunks(65536) {
        match f.write(chunk) {
            Ok(n) => {
                accepted += n;
                if n < chunk.len() {
                    break;
                }
            }
            Err(e) => {
                let _ = close(f);
                return (accepted, Some(("write", errno(&e))));
            }
        }
    }
    if fsync {
        if let Err(e) = f.sync_all() {
            let _ = close(f);
            return (accepted, Some(("fsync", errno(&e))));
        }
    }
    match close(f) {
        Ok(()) => (accepted, None),
        Err(e) => (accepted, Some(("close", e))),
    }
}

/// Free bytes on the filesystem of `path`.
fn free_bytes(path: &Path) -> u64 {
    let st = rustix::fs::statvfs(path).unwrap();
    st.f_bfree * st.f_frsize
}

/// A full source: writing twice what fits reports ENOSPC at write (without
/// the writeback cache: writethrough, and kernel passthrough, the default
/// mount as root, where the kernel writes the source file itself), or at
/// fsync or close (with it, where write() only fills the kernel's cache) —
/// never success everywhere. The source then
/// holds a prefix of what was written, nothing else; and once the kernel's
/// cache of the file is gone, the mount shows exactly that.
fn full_source_reports_enospc(args: &[&str], fsync: bool) {
    let served = Served::start_on(Tmpfs::new("8m"), args);
    let (mnt, src) = (served.mnt(), served.src());
    let data = content(1, 16 << 20);
    let (accepted, error) = write_and_close(&mnt.join("big"), &data, fsync);
    let (at, e) = error.unwrap_or_else(|| {
        panic!("16 MiB into an 8 MiB source: {accepted} bytes accepted and no error anywhere")
    });
    eprintln!("{args:?} fsync {fsync}: write() accepted {accepted} bytes; {e:?} at {at}");
    assert_eq!(e, E::NOSPC, "at {at}");
    let writeback = args.contains(&"writeback");
    let fine = match at {
        "write" => !writeback,
        "fsync" => writeback && fsync,
        _ => writeback && !fsync,
    };
    assert!(
        fine,
        "ENOSPC at {at} (writeback {writeback}, fsync {fsync})"
    );
    let on_source = std::fs::read(src.join("big")).unwrap();
    assert!(on_source.len() < data.len());
    if writeback {
        // Writeback sends its WRITEs from several threads in no fixed
        // order, so a later range may be stored while an earlier one met
        // ENOSPC: the source then holds each byte as written, or a hole
        // (zero) where a WRITE failed, and nothing else.
        let stray = on_source
            .iter()
            .zip(&data)
            .position(|(&got, &want)| got != want && got != 0);
        assert_eq!(
            stray, None,
            "the source holds bytes that were never written"
        );
    } else {
        // Writes go through in order: the source holds exactly the prefix
        // write() accepted.
        assert!(
            on_source == data[..on_source.len()],
            "the source holds bytes that were never written"
        );
        assert_eq!(on_source.len(), accepted);
    }
    let through = |name: &str| {
        let mut v = Vec::new();
        std::fs::File::open(mnt.join(name))
            .unwrap()
            .read_to_end(&mut v)
            .unwrap();
        v
    };
    if !writeback {
        assert!(
            through("big") == on_source,
            "the mount shows what is not stored"
        );
    }
    // With the writeback cache, the kernel keeps the pages it could not
    // write back (clean) and the size it computed until it evicts the
    // inode (see the README); after that the mount shows the source.
    assert!(wait_for(Duration::from_secs(10), || {
        drop_caches();
        std::fs::metadata(mnt.join("big")).unwrap().len() == on_source.len() as u64
    }));
    assert!(
        through("big") == on_source,
        "the mount shows what is not stored"
    );

    // Room again (once the kernel has released and forgotten the unlinked
    // file, which it does asynchronously): a file that fits is stored
    // whole, with no error.
    std::fs::remove_file(mnt.join("big")).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || free_bytes(src) > 7 << 20),
        "the space of the unlinked file did not come back"
    );
    let small = content(2, 1 << 20);
    assert_eq!(
        write_and_close(&mnt.join("small"), &small, fsync),
        (1 << 20, None)
    );
    assert!(std::fs::read(src.join("small")).unwrap() == small);
}

#[test]
fn a_full_source_reports_enospc_at_fsync_with_writeback() {
    full_source_reports_enospc(&["-o", "writeback"], true);
}

#[test]
fn a_full_source_reports_enospc_at_close_with_writeback() {
    full_source_reports_enospc(&["-o", "writeback"], false);
}

#[test]
fn a_full_source_reports_enospc_at_write_in_the_default_mount() {
    full_source_reports_enospc(&[], false);
}

#[test]
fn a_full_source_reports_enospc_at_write_without_writeback() {
    full_source_reports_enospc(&["-o", "no_writeback"], false);
}

/// The daemon still answers: a file written and read back through the
/// mount, and the root listed.
fn assert_serving(served: &Served, name: &str) {
    let p = served.mnt().join(name);
    std::fs::write(&p, b"still serving").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"still serving");
    assert!(std::fs::read_dir(served.mnt()).unwrap().count() > 0);
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn a_directory_removed_under_an_open_cwd_gives_enoent() {
    let served = Served::start(&[]);
    let (mnt, src) = (served.mnt().to_path_buf(), served.src().to_path_buf());
    std::fs::create_dir_all(mnt.join("through/inner")).unwrap();
    std::fs::create_dir_all(mnt.join("behind/inner")).unwrap();
    std::fs::write(mnt.join("behind/inner/file"), b"x").unwrap();
    let through = open_dir_fd(&mnt.join("through/inner"));
    let behind = open_dir_fd(&mnt.join("behind/inner"));
    let file_fd = std::fs::File::open(mnt.join("behind/inner/file")).unwrap();

    // Removed through the mount while a process has it as its cwd.
    let cwd_child = Command::new("sleep")
        .arg("30")
        .current_dir(mnt.join("through/inner"))
        .spawn()
        .unwrap();
    std::fs::remove_dir(mnt.join("through/inner")).unwrap();
    // Removed in the source, behind the daemon's back.
    std::fs::remove_dir_all(src.join("behind")).unwrap();
    // Until the entry timeout (1 s) passes the kernel answers lookups of
    // names it has cached without asking the daemon.
    std::thread::sleep(Duration::from_millis(1100));

    for (what, dir) in [("through", &through), ("behind", &behind)] {
        let create = rustix::fs::openat(
            dir,
            "new",
            OFlags::WRONLY | OFlags::CREATE,
            Mode::from_raw_mode(0o644),
        );
        assert_eq!(create.unwrap_err(), E::NOENT, "{what}: create");
        let mkdir = rustix::fs::mkdirat(dir, "sub", Mode::from_raw_mode(0o755));
        assert_eq!(mkdir.unwrap_err(), E::NOENT, "{what}: mkdir");
        let lookup = rustix::fs::statat(dir, "file", rustix::fs::AtFlags::empty());
        assert_eq!(lookup.unwrap_err(), E::NOENT, "{what}: lookup");
        let listed = list(dir);
        assert!(
            listed.is_empty(),
            "{what}: a removed directory lists {listed:?}"
        );
    }
    // The cwd of another process: /proc shows it deleted, the daemon lives.
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", cwd_child.id())).unwrap();
    assert!(cwd.to_string_lossy().ends_with("(deleted)"), "{cwd:?}");
    // A file open in the removed tree still reads (the daemon holds it).
    let mut s = String::new();
    (&file_fd).read_to_string(&mut s).unwrap();
    assert_eq!(s, "x");
    end(cwd_child);
    drop((through, behind, file_fd));
    assert_serving(&served, "after");
}

fn open_dir_fd(path: &Path) -> std::os::fd::OwnedFd {
    rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap()
}

/// The names in an open directory, "." and ".." left out.
fn list(dir: &std::os::fd::OwnedFd) -> Vec<String> {
    let dup = rustix::io::dup(dir).unwrap();
    let mut d = rustix::fs::Dir::read_from(&dup).unwrap();
    d.rewind();
    let mut names = Vec::new();
    while let Some(e) = d.read() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name != "." && name != ".." {
            names.push(name);
        }
    }
    names
}

/// Ends a child this test started, by its pid.
fn end(mut child: std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The source's filesystem lazily unmounted under the daemon: the daemon
/// holds the source by descriptors, never by path, so it keeps serving the
/// detached filesystem (which lives on while those descriptors do); the
/// path to the source leads elsewhere now, and nothing the daemon does
/// touches what is there.
#[test]
fn the_source_unmounted_under_the_daemon_keeps_serving_the_detached_tree() {
    let served = Served::start(&[]);
    let (mnt, src) = (served.mnt().to_path_buf(), served.src().to_path_buf());
    std::fs::create_dir(mnt.join("dir")).unwrap();
    std::fs::write(mnt.join("dir/file"), b"before").unwrap();
    let open = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(mnt.join("dir/file"))
        .unwrap();
    run(Command::new("umount").arg("-l").arg(&src));
    assert!(!is_mounted(&src));
    assert_eq!(std::fs::read_dir(&src).unwrap().count(), 0);

    // Existing files, new lookups, creates, renames: all on the detached
    // tree, through the daemon's descriptors.
    (&open).write_all(b"+open").unwrap();
    open.sync_all().unwrap();
    close(open).unwrap();
    assert_eq!(std::fs::read(mnt.join("dir/file")).unwrap(), b"+opene");
    std::fs::write(mnt.join("dir/new"), b"new").unwrap();
    std::fs::rename(mnt.join("dir/new"), mnt.join("renamed")).unwrap();
    drop_caches();
    assert_eq!(std::fs::read(mnt.join("renamed")).unwrap(), b"new");
    let mut names: Vec<_> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["dir", "renamed"]);
    // The bare directory where the source was stays untouched.
    assert_eq!(std::fs::read_dir(&src).unwrap().count(), 0);
    assert_serving(&served, "after");
}

/// How the kernel fails a request when the daemon dies: ENOTCONN once the
/// connection is gone; ECONNABORTED for a request caught by the abort (the
/// engine negotiates FUSE_ABORT_ERROR); ECANCELED for one caught in an
/// io_uring queue.
fn aborted(e: E) -> bool {
    e == E::NOTCONN || e == E::CONNABORTED || e == E::CANCELED
}

/// SIGKILL: the kernel aborts the connection, the mountpoint answers
/// ENOTCONN; `umount` clears it and a new daemon mounts there and serves
/// what the source holds.
#[test]
fn a_killed_daemon_leaves_enotconn_and_a_new_daemon_mounts_there() {
    let mut served = Served::start(&[]);
    let mnt = served.mnt().to_path_buf();
    std::fs::write(mnt.join("kept"), b"kept").unwrap();
    let status = served.kill();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    assert!(
        is_mounted(&mnt),
        "the dead mount should stay until unmounted"
    );
    // The daemon's /dev/fuse descriptors may close a moment after it is
    // reaped; a request caught in the abort fails as `aborted` says, every
    // one after it with ENOTCONN.
    assert!(wait_for(Duration::from_secs(5), || {
        let e = errno(&std::fs::metadata(&mnt).unwrap_err());
        assert!(aborted(e), "{e:?}");
        e == E::NOTCONN
    }));
    for e in [
        std::fs::metadata(&mnt).unwrap_err(),
        std::fs::read_dir(&mnt).unwrap_err(),
        std::fs::read(mnt.join("kept")).unwrap_err(),
        std::fs::write(mnt.join("new"), b"x").unwrap_err(),
    ] {
        assert_eq!(errno(&e), E::NOTCONN, "{e}");
    }
    run(Command::new("umount").arg(&mnt));
    assert!(!is_mounted(&mnt));
    served.respawn(&[]);
    assert_eq!(std::fs::read(mnt.join("kept")).unwrap(), b"kept");
    assert_serving(&served, "after");
}

/// What a SIGKILL loses: dirty pages of a file still open, which only
/// the daemon could have written to the source. The writer is told: fsync
/// and close fail (the kernel reports the aborted connection), never
/// succeed, whatever part of the data background writeback had already
/// stored.
#[test]
fn a_killed_daemon_makes_fsync_and_close_of_unwritten_data_fail() {
    // Dirty pages only the daemon writes: the writeback cache's (in the
    // default mount, kernel passthrough, the kernel writes the source).
    let mut served = Served::start(&["-o", "writeback"]);
    let (mnt, src) = (served.mnt().to_path_buf(), served.src().to_path_buf());
    let total = 4 << 20;
    let mut f = std::fs::File::create(mnt.join("dirty")).unwrap();
    f.write_all(&content(3, total)).unwrap();
    served.kill();
    let fsync = f.sync_all().map_err(|e| errno(&e));
    let closed = close(f);
    let on_source = std::fs::metadata(src.join("dirty")).unwrap().size();
    eprintln!(
        "after SIGKILL: fsync {fsync:?}, close {closed:?}; {on_source} of {total} bytes stored"
    );
    for (what, r) in [("fsync", fsync), ("close", closed)] {
        let e = r.expect_err(&format!("{what} reported success after SIGKILL"));
        assert!(aborted(e), "{what}: {e:?}");
    }
}

/// Out of descriptors: a daemon limited to 64 cannot hold an inode and an
/// open file for each of 200 files; the callers past the limit get EMFILE
/// (the daemon's own error, passed on), and once they close, the daemon
/// serves again as before.
#[test]
fn out_of_descriptors_gives_emfile_and_the_daemon_recovers() {
    let source = Tmpfs::new("64m");
    for i in 0..200 {
        std::fs::write(source.path().join(format!("f{i}")), format!("{i}")).unwrap();
    }
    let served = Served::launch(
        source,
        Launch {
            // Both limits: PassthroughFs raises the soft one to the hard one.
            wrapper: &["prlimit", "--nofile=64:64", "--"],
            ..Default::default()
        },
        &[],
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", served.pid())).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.split_whitespace().nth(3) == Some("64")),
        "{limits}"
    );
    let mnt = served.mnt();
    let mut open = Vec::new();
    let mut refused = Vec::new();
    for i in 0..200 {
        match std::fs::File::open(mnt.join(format!("f{i}"))) {
            Ok(f) => open.push((i, f)),
            Err(e) => refused.push(errno(&e)),
        }
    }
    eprintln!("{} opened, {} refused", open.len(), refused.len());
    assert!(open.len() < 64 && !open.is_empty(), "{} opened", open.len());
    assert!(
        refused.iter().all(|&e| e == E::MFILE || e == E::NFILE),
        "refused with {refused:?}"
    );
    // The ones that opened read right.
    for (i, f) in &mut open {
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, i.to_string());
    }
    let last_opened = open.last().unwrap().0;
    drop(open);
    // The kernel forgets the nodes once their dentries go, and the daemon
    // closes their descriptors: back to the root's alone.
    assert!(
        wait_for(Duration::from_secs(10), || {
            drop_caches();
            fds_into(served.pid(), served.src()).len() == 1
        }),
        "the daemon still holds {:?}",
        fds_into(served.pid(), served.src())
    );
    // Files that were refused open now, as many as fit at once: each costs
    // the daemon two descriptors (its node's O_PATH and the open file), and
    // the daemon's own (device, pipes, signal and stats fds, whatever the
    // test harness let it inherit) take the rest of the 64, less a spare.
    let held = std::fs::read_dir(format!("/proc/{}/fd", served.pid()))
        .unwrap()
        .count();
    let fit = (64 - held - 2) / 2;
    assert!(fit >= 10, "the daemon holds {held} descriptors at rest");
    let again: Vec<_> = (last_opened + 1..last_opened + 1 + fit.min(20))
        .map(|i| {
            let mut f = std::fs::File::open(mnt.join(format!("f{i}")))
                .unwrap_or_else(|e| panic!("f{i} after recovery: {e}"));
            let mut s = String::new();
            f.read_to_string(&mut s).unwrap();
            assert_eq!(s, i.to_string());
            f
        })
        .collect();
    drop(again);
    assert_serving(&served, "after");
}
