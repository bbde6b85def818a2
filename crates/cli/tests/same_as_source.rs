//! "Same as the source" over /dev/fuse: the scripted comparison of
//! `source_script` against three mounts, the default (writeback cache),
//! `-o no_writeback`, and `-o allow_other` (which turns
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
fn same_as_source_writeback() {
    same_as_source(&[]);
}

#[test]
fn same_as_source_no_writeback() {
    same_as_source(&["-o", "no_writeback"]);
}

#[test]
fn same_as_source_allow_other() {
    same_as_source(&["-o", "allow_other"]);
}

/// Mounts with `args`, writes, unmounts, mounts again and compares what
/// the new mount (and the source) shows with what tmpfs kept.
fn same_after_remount(args: &[&str]) {
    let mut served = Served::start(args);
    source_script::same_after_remount(&mut served, args);
}

#[test]
fn same_after_remount_writeback() {
    same_after_remount(&[]);
}

#[test]
fn same_after_remount_no_writeback() {
    same_after_remount(&["-o", "no_writeback"]);
}
