//! "Same as the source" over /dev/fuse: the scripted comparison of
//! `source_script` against four mounts, the default (kernel passthrough,
//! as these tests run as root), `-o writeback`, `-o no_writeback`, and
//! `-o allow_other` with the writeback cache (which turns
//! default_permissions on and lets the script act as other users).
//! `uring_suites.rs` runs the same over io_uring.

mod common;
mod source_script;

use common::Served;

/// Mounts with `args` and runs the comparison through the mount.
fn same_as_source(args: &[&str]) {
    let served = Served::start(args);
    source_script::same_as_source(&served, args);
}

#[test]
fn same_as_source_default_passthrough() {
    same_as_source(&[]);
}

#[test]
fn same_as_source_writeback() {
    same_as_source(&["-o", "writeback"]);
}

#[test]
fn same_as_source_no_writeback() {
    same_as_source(&["-o", "no_writeback"]);
}

#[test]
fn same_as_source_allow_other() {
    same_as_source(&["-o", "allow_other,writeback"]);
}

/// Mounts with `args`, writes, unmounts, mounts again and compares what
/// the new mount (and the source) shows with what tmpfs kept.
fn same_after_remount(args: &[&str]) {
    let mut served = Served::start(args);
    source_script::same_after_remount(&mut served, args);
}

#[test]
fn same_after_remount_default_passthrough() {
    same_after_remount(&[]);
}

#[test]
fn same_after_remount_writeback() {
    same_after_remount(&["-o", "writeback"]);
}

#[test]
fn same_after_remount_no_writeback() {
    same_after_remount(&["-o", "no_writeback"]);
}

/// An open file whose last name went, seen on the source through an fd of
/// its own. Under the writeback cache the kernel follows every UNLINK
/// with a SETATTR of the file's mtime, which the passthrough skips when
/// the source has that mtime already (it would change only the ctime,
/// which the unlink set): the source keeps what tmpfs would show, and an
/// mtime that does change still reaches it. The same holds in the default
/// mount (kernel passthrough), where no SETATTR follows the UNLINK.
fn an_unlinked_open_file_keeps_its_times_and_takes_new_ones(args: &[&str]) {
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, UNIX_EPOCH};

    let served = Served::start(args);
    let (through, on_source) = (served.mnt().join("f"), served.src().join("f"));
    std::fs::write(&through, b"data").unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&through)
        .unwrap();
    let source = std::fs::File::open(&on_source).unwrap();
    let before = source.metadata().unwrap();
    std::fs::remove_file(&through).unwrap();
    let after = source.metadata().unwrap();
    assert_eq!(after.nlink(), 0, "the source's file has no name left");
    assert_eq!(
        (after.mtime(), after.mtime_nsec()),
        (before.mtime(), before.mtime_nsec()),
        "an unlink leaves the mtime"
    );
    assert!(
        (after.ctime(), after.ctime_nsec()) >= (before.ctime(), before.ctime_nsec()),
        "an unlink sets the ctime"
    );
    // futimens of the mtime alone, through the open, unlinked file.
    let mtime = UNIX_EPOCH + Duration::new(1_000_000, 5);
    file.set_times(std::fs::FileTimes::new().set_modified(mtime))
        .unwrap();
    let changed = source.metadata().unwrap();
    assert_eq!((changed.mtime(), changed.mtime_nsec()), (1_000_000, 5));
    assert_eq!(file.metadata().unwrap().mtime(), 1_000_000);
}

#[test]
fn an_unlinked_open_file_keeps_its_times_and_takes_new_ones_writeback() {
    an_unlinked_open_file_keeps_its_times_and_takes_new_ones(&["-o", "writeback"]);
}

#[test]
fn an_unlinked_open_file_keeps_its_times_and_takes_new_ones_default() {
    an_unlinked_open_file_keeps_its_times_and_takes_new_ones(&[]);
}
