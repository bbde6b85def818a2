//! POSIX conformance and data integrity through a real mount over
//! /dev/fuse: pjdfstest compared against the raw tmpfs in the same run, and
//! fsx, also on `-o direct_io` mounts (see `posix_suite`; `uring_suites.rs`
//! runs the same over io_uring, without the direct_io runs).

mod common;
mod posix_suite;

use common::Served;
use posix_suite::{fsx, fsx_ops, pjdfstest_same_as_tmpfs};

/// In the default mode (kernel passthrough, as root); `uring_suites.rs`
/// runs it with the writeback cache.
#[test]
fn pjdfstest_passes_through_fastfuse_what_passes_on_tmpfs() {
    let served = Served::start(&["-o", "allow_other,default_permissions"]);
    pjdfstest_same_as_tmpfs(&served);
}

#[test]
fn fsx_100k_ops_writeback_without_splice() {
    let args = ["-o", "writeback,no_splice_write"];
    fsx(&Served::start(&args), &args);
}

/// The default mount as root: kernel passthrough, the kernel reading and
/// writing the source file itself.
#[test]
fn fsx_100k_ops_default_passthrough() {
    let args = ["--transport", "dev"];
    fsx(&Served::start(&args), &args);
}

#[test]
fn fsx_100k_ops_writethrough() {
    let args = ["-o", "no_writeback"];
    fsx(&Served::start(&args), &args);
}

/// fsx over /dev/fuse, where WRITE data is spliced into the source
/// (`splice_write`, the default); the statistics show that some WRITEs
/// went that way.
#[test]
fn fsx_100k_ops_writeback_spliced() {
    let args = ["-o", "writeback", "--transport", "dev"];
    let served = Served::start(&args);
    fsx(&served, &args);
    let snap = fastfuse::stats::query(served.mnt()).unwrap();
    let writes = snap.ops.get("WRITE").map_or(0, |w| w.count);
    eprintln!("{} of {writes} WRITEs spliced", snap.spliced_writes);
    assert!(
        snap.spliced_writes > 0,
        "no WRITE was spliced: {:?}",
        snap.write_sizes
    );
}

/// fsx on a `-o direct_io` mount (FOPEN_DIRECT_IO: reads and writes go to
/// the daemon, bypassing the page cache) with its mmap reads and writes,
/// which go through the page cache (FUSE_DIRECT_IO_ALLOW_MMAP), mixed in:
/// the two views must stay coherent. The installed fsx (the fsx crate)
/// cannot open its file O_DIRECT; the scripted comparison's
/// `mixed_io_fsx_like` step does that against tmpfs. 40,000 operations
/// take about 10 s here.
fn fsx_direct_io(args: &[&str]) {
    const OPS: u32 = 40_000;
    let served = Served::start(args);
    fsx_ops(&served, args, OPS);
    // Bypassing the page cache, each of fsx's reads and each mapped read
    // of a page not cached is a READ: 0.69 per operation for 20,000 of
    // them, against 0.24 with the page cache (which its truncates, hole
    // punches and invalidations empty often).
    let snap = fastfuse::stats::query(served.mnt()).unwrap();
    let reads = snap.ops.get("READ").map_or(0, |r| r.count);
    eprintln!("{args:?}: {reads} READs for {OPS} fsx operations");
    assert!(
        reads > u64::from(OPS / 2),
        "only {reads} READs for {OPS} fsx operations: was the page cache bypassed?"
    );
}

#[test]
fn fsx_direct_io_with_mmap_writeback() {
    fsx_direct_io(&["-o", "direct_io"]);
}

#[test]
fn fsx_direct_io_with_mmap_writethrough() {
    fsx_direct_io(&["-o", "direct_io,no_writeback"]);
}
