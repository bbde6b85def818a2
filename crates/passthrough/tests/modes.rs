//! The options: bypass levels, direct I/O, kernel passthrough, credential
//! switching, xattrs off, and the umask of created files.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::Command;

use common::{errno, Mounted};
use fastfuse::MountOptions;
use fastfuse_passthrough::{BypassRw, Options};

fn with_options(writeback: bool, options: Options) -> Mounted {
    common::mount_with(common::config(writeback), options, MountOptions::default())
}

fn bypass(level: BypassRw) {
    let m = with_options(
        false,
        Options {
            bypass_rw: level,
            ..Default::default()
        },
    );
    let mut f = File::create(m.at("sink")).unwrap();
    let chunk = common::pattern(64 * 1024, 6);
    for _ in 0..16 {
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    assert!(m.count("WRITE") >= 16);
    // Nothing reached the source.
    assert_eq!(fs::metadata(m.source("sink")).unwrap().len(), 0);
    // Reads still read.
    fs::write(m.source("real"), b"real data").unwrap();
    assert_eq!(fs::read(m.at("real")).unwrap(), b"real data");
}

#[test]
fn bypass_copy_only_answers_writes_without_storing() {
    bypass(BypassRw::CopyOnly);
}

#[test]
fn bypass_no_io_answers_writes_without_storing() {
    bypass(BypassRw::NoIo);
}

#[test]
fn direct_io_reaches_the_source_at_once() {
    for writeback in [false, true] {
        let m = with_options(
            writeback,
            Options {
                direct_io: true,
                ..Default::default()
            },
        );
        let data = common::pattern(300_000, 7);
        let f = File::create(m.at("d")).unwrap();
        f.write_all_at(&data, 0).unwrap();
        // No cache: the source has it before any fsync or close.
        assert!(fs::read(m.source("d")).unwrap() == data);
        f.write_all_at(b"abc", 1).unwrap();
        assert_eq!(
            &fs::read(m.source("d")).unwrap()[..4],
            &[data[0], b'a', b'b', b'c']
        );
        let mut back = Vec::new();
        File::open(m.at("d"))
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back.len(), data.len());
        assert_eq!(&back[1..4], b"abc");
    }
}

#[test]
fn kernel_passthrough_serves_io_in_the_kernel() {
    let m = common::mount_with(
        fastfuse::Config {
            passthrough: true,
            ..common::config(false)
        },
        Options {
            kernel_passthrough: true,
            ..Default::default()
        },
        MountOptions::default(),
    );
    assert!(
        m.negotiated.passthrough(),
        "the kernel did not agree to passthrough"
    );
    let data = common::pattern(1 << 20, 8);
    // Two opens of one inode at once share one backing file.
    let w = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.at("p"))
        .unwrap();
    let r = File::open(m.at("p")).unwrap();
    w.write_all_at(&data, 0).unwrap();
    let mut back = vec![0u8; data.len()];
    r.read_exact_at(&mut back, 0).unwrap();
    assert!(back == data);
    drop((w, r));
    assert!(fs::read(m.source("p")).unwrap() == data);
    // The daemon saw no READ or WRITE: the kernel did them.
    assert_eq!(m.count("WRITE"), 0);
    assert_eq!(m.count("READ"), 0);
    // Released and registered again on the next open.
    let mut f = OpenOptions::new().append(true).open(m.at("p")).unwrap();
    f.write_all(b"tail").unwrap();
    drop(f);
    assert_eq!(fs::metadata(m.source("p")).unwrap().len(), (1 << 20) + 4);
}

#[test]
fn files_are_created_as_the_caller() {
    let m = common::mount_with(
        common::config(true),
        Options {
            switch_credentials: true,
            ..Default::default()
        },
        MountOptions {
            allow_other: true,
            ..Default::default()
        },
    );
    fs::set_permissions(m.mnt(), fs::Permissions::from_mode(0o777)).unwrap();
    fs::create_dir(m.at("closed")).unwrap();
    fs::set_permissions(m.at("closed"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(m.at("roots"), b"").unwrap();
    let script = "set -e; cd \"$1\"; echo hi > file; mkdir dir; ln -s file sym; mkfifo fifo; \
                  if echo no > closed/x 2>/dev/null; then exit 10; fi; \
                  if test -w roots; then exit 11; fi; test -r roots";
    let status = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(m.mnt())
        .uid(1000)
        .gid(1000)
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
    for name in ["file", "dir", "sym", "fifo"] {
        let st = fs::symlink_metadata(m.source(name)).unwrap();
        assert_eq!((st.uid(), st.gid()), (1000, 1000), "{name}");
    }
    assert!(!m.source("closed/x").exists());
    // The daemon's own identity came back: root creates as root.
    fs::write(m.at("again"), b"").unwrap();
    let st = fs::metadata(m.source("again")).unwrap();
    assert_eq!((st.uid(), st.gid()), (0, 0));
}

#[test]
fn created_modes_carry_only_the_callers_umask() {
    // The test process's own umask (typically 022) must not be applied a
    // second time by the daemon's workers.
    let m = common::mount(true);
    let status = Command::new("sh")
        .args([
            "-c",
            "umask 000; cd \"$1\" && touch f && mkdir d && mkfifo p",
            "sh",
        ])
        .arg(m.mnt())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(fs::metadata(m.source("f")).unwrap().mode() & 0o777, 0o666);
    assert_eq!(fs::metadata(m.source("d")).unwrap().mode() & 0o777, 0o777);
    assert_eq!(fs::metadata(m.source("p")).unwrap().mode() & 0o777, 0o666);
    let status = Command::new("sh")
        .args(["-c", "umask 077; cd \"$1\" && touch g && mkdir e", "sh"])
        .arg(m.mnt())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(fs::metadata(m.source("g")).unwrap().mode() & 0o777, 0o600);
    assert_eq!(fs::metadata(m.source("e")).unwrap().mode() & 0o777, 0o700);
}

#[test]
fn xattrs_can_be_turned_off() {
    let m = with_options(
        true,
        Options {
            xattr: false,
            ..Default::default()
        },
    );
    fs::write(m.at("f"), b"").unwrap();
    for _ in 0..2 {
        let e = common::setxattr(&m.at("f"), "user.k", b"v").unwrap_err();
        assert_eq!(errno(&e), libc::EOPNOTSUPP);
        let e = common::getxattr(&m.at("f"), "user.k", 10).unwrap_err();
        assert_eq!(errno(&e), libc::EOPNOTSUPP);
    }
    // ENOSYS once, then the kernel answered by itself.
    assert_eq!(m.count("SETXATTR"), 1);
    assert_eq!(m.count("GETXATTR"), 1);
}

/// With `splice_write`, large WRITEs go from /dev/fuse to the source by
/// splice: the data arrives whole, through the spliced path (the stats
/// name it), under the writeback cache and without it, and also into a
/// file opened O_APPEND, which splice(2) refuses (read and pwritten).
#[test]
fn spliced_writes_reach_the_source_intact() {
    for writeback in [true, false] {
        let mut config = common::config(writeback);
        config.splice_write = true;
        let m = common::mount_with(config, Options::default(), MountOptions::default());
        let data = common::pattern(24 << 20, 11);
        let f = File::create(m.at("big")).unwrap();
        // Unaligned, so that WRITEs straddle pages.
        f.write_all_at(&data, 1000).unwrap();
        f.sync_all().unwrap();
        drop(f);
        let on_source = fs::read(m.source("big")).unwrap();
        assert_eq!(on_source.len(), data.len() + 1000);
        assert!(on_source[1000..] == data[..], "writeback {writeback}");
        assert!(on_source[..1000].iter().all(|&b| b == 0));

        let mut a = OpenOptions::new()
            .append(true)
            .create(true)
            .open(m.at("log"))
            .unwrap();
        a.write_all(&data[..256 << 10]).unwrap();
        a.write_all(&data[..128 << 10]).unwrap();
        a.sync_all().unwrap();
        drop(a);
        let log = fs::read(m.source("log")).unwrap();
        assert_eq!(log.len(), 384 << 10);
        assert!(log[..256 << 10] == data[..256 << 10] && log[256 << 10..] == data[..128 << 10]);

        // A worker splices once large WRITEs dominate what it serves.
        let stats = m.stats();
        assert!(stats.spliced_writes > 0, "{stats:?}");
        assert!(m.count("WRITE") > stats.spliced_writes);
    }
}
