//! The checks of the passthrough filesystem over FUSE-over-io_uring
//! (`--transport uring`): pjdfstest compared against tmpfs, fsx (100,000
//! operations: the default kernel passthrough, writeback and writethrough)
//! and the scripted comparison with the source on its four mounts, the
//! same suites `posix.rs` and `same_as_source.rs` run over /dev/fuse.
//!
//! Each test checks from the daemon's statistics that the ring answers on
//! its mount before the suite runs, and again after: the engine falls back
//! to /dev/fuse when a queue fails, and a suite that passed over /dev/fuse
//! must not pass for the ring.
//!
//! The kernel offers io_uring only while the fuse module's `enable_uring`
//! parameter is Y, so every test here holds a [`RingEnabled`] for its
//! whole run.

mod common;
mod posix_suite;
mod source_script;

use common::{RingEnabled, Served};
use posix_suite::{fsx, pjdfstest_same_as_tmpfs};
use source_script::same_as_source;

/// What the kernel sends on /dev/fuse even when the ring serves the mount:
/// dev_uring.c takes over requests, not FORGETs or INTERRUPTs.
const DEV_ONLY: [&str; 3] = ["FORGET", "BATCH_FORGET", "INTERRUPT"];

/// Asserts that the ring has answered more than `more_than` requests on
/// `served`'s mount and /dev/fuse nothing but [`DEV_ONLY`] (the kernel holds
/// every other request until all queues have registered, so none may take
/// /dev/fuse unless the ring was given up); returns the ring's count.
fn assert_ring_answered(served: &Served, more_than: u64) -> u64 {
    let snap = fastfuse::stats::query(served.mnt()).unwrap();
    let answered = |transport: &str| {
        snap.requests_by_transport
            .get(transport)
            .copied()
            .unwrap_or(0)
    };
    let dev_only: u64 = DEV_ONLY
        .iter()
        .filter_map(|op| snap.ops.get(*op))
        .map(|op| op.count)
        .sum();
    eprintln!(
        "{}: ring {} requests, /dev/fuse {} ({dev_only} FORGET/BATCH_FORGET/INTERRUPT)",
        served.mnt().display(),
        answered("uring"),
        answered("dev")
    );
    assert!(
        answered("uring") > more_than && answered("dev") == dev_only,
        "the ring answered {} requests (wanted more than {more_than}), /dev/fuse {} \
         of which {dev_only} FORGET/BATCH_FORGET/INTERRUPT; by opcode: {:?}",
        answered("uring"),
        answered("dev"),
        snap.ops
            .iter()
            .map(|(name, op)| (name, op.count))
            .collect::<Vec<_>>()
    );
    answered("uring")
}

/// Mounts with `--transport uring` and `extra`, checks that the ring
/// answers there, runs `suite` on the mount (given the mount's arguments),
/// and checks that the ring answered the suite too.
fn through_ring(extra: &[&str], suite: impl FnOnce(&Served, &[&str])) {
    // Declared before the mount, so dropped after it: 6.18 keeps serving
    // a connection's ring when the parameter goes back to N, but earlier
    // kernels (6.14) refuse every ring command from then on.
    let _ring = RingEnabled::hold();
    let args: Vec<&str> = ["--transport", "uring"]
        .iter()
        .chain(extra)
        .copied()
        .collect();
    let served = Served::start(&args);
    // GETATTR of the root, OPENDIR (ENOSYS: the kernel opens directories
    // itself from then on) and READDIRPLUS are answered before these
    // return.
    std::fs::metadata(served.mnt()).unwrap();
    std::fs::read_dir(served.mnt()).unwrap().for_each(drop);
    let before = assert_ring_answered(&served, 2);
    suite(&served, &args);
    // Every suite makes tens of thousands of requests; a thousand more on
    // the ring shows it served the suite rather than a few stragglers.
    assert_ring_answered(&served, before + 1000);
}

#[test]
fn pjdfstest_passes_through_the_ring_what_passes_on_tmpfs() {
    // The writeback cache here; posix.rs runs it in the default mode.
    through_ring(
        &["-o", "allow_other,default_permissions,writeback"],
        |served, _| pjdfstest_same_as_tmpfs(served),
    );
}

#[test]
fn fsx_100k_ops_writeback_through_the_ring() {
    through_ring(&["-o", "writeback"], fsx);
}

#[test]
fn fsx_100k_ops_default_passthrough_through_the_ring() {
    through_ring(&[], fsx);
}

#[test]
fn fsx_100k_ops_writethrough_through_the_ring() {
    through_ring(&["-o", "no_writeback"], fsx);
}

#[test]
fn same_as_source_default_passthrough_through_the_ring() {
    through_ring(&[], same_as_source);
}

#[test]
fn same_as_source_writeback_through_the_ring() {
    through_ring(&["-o", "writeback"], same_as_source);
}

#[test]
fn same_as_source_no_writeback_through_the_ring() {
    through_ring(&["-o", "no_writeback"], same_as_source);
}

#[test]
fn same_as_source_allow_other_through_the_ring() {
    through_ring(&["-o", "allow_other,writeback"], same_as_source);
}
