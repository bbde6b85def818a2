//! POSIX conformance and data integrity through a real mount over
//! /dev/fuse: pjdfstest compared against the raw tmpfs in the same run, and
//! fsx (see `posix_suite`; `uring_suites.rs` runs the same over io_uring).

mod common;
mod posix_suite;

use common::Served;
use posix_suite::{fsx, pjdfstest_same_as_tmpfs};

#[test]
fn pjdfstest_passes_through_fastfuse_what_passes_on_tmpfs() {
    let served = Served::start(&["-o", "allow_other,default_permissions"]);
    pjdfstest_same_as_tmpfs(&served);
}

#[test]
fn fsx_100k_ops_writeback_without_splice() {
    let args = ["-o", "no_splice_write"];
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
    let args = ["--transport", "dev"];
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
