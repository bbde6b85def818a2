//! Permissions: what another user may do through a mount served by root.
//!
//! The daemon runs as root (as the tests do). Other users act through a
//! forked child that dropped to `nobody` (65534) or `daemon` (1). With
//! `-o allow_other` the binary implies `default_permissions`, so the
//! kernel checks every access against the modes and owners the daemon
//! reports, and the daemon creates files as the caller (per-thread fsuid).
//! Without it the kernel checks nothing, and does not ask for the parent
//! directory's attributes again after every creation and removal.

mod common;
mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno as E;
use support::*;

const DAEMON_USER: (u32, u32) = (1, 1);

fn open(path: &std::ffi::CStr, flags: OFlags) -> Result<(), Errno> {
    rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::from_raw_mode(0o644)).map(drop)
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    rustix::fs::chmod(path, Mode::from_raw_mode(mode)).unwrap();
}

/// Makes `private/` (0755) with `secret` (0600) and `public` (0644), and
/// `tmp/` (1777, sticky) with `roots` (0644), all root's.
fn roots_files(src: &Path) {
    std::fs::create_dir(src.join("private")).unwrap();
    std::fs::write(src.join("private/secret"), b"secret").unwrap();
    std::fs::write(src.join("private/public"), b"public").unwrap();
    std::fs::create_dir(src.join("tmp")).unwrap();
    std::fs::write(src.join("tmp/roots"), b"roots").unwrap();
    set_mode(&src.join("private"), 0o755);
    set_mode(&src.join("private/secret"), 0o600);
    set_mode(&src.join("private/public"), 0o644);
    set_mode(&src.join("tmp"), 0o1777);
    set_mode(&src.join("tmp/roots"), 0o644);
}

/// One operation tried as another user.
type Attempt<'a> = Box<dyn Fn() -> Result<(), Errno> + 'a>;

#[test]
fn another_user_cannot_read_write_chmod_unlink_or_rename_roots_files() {
    let served = Served::start(&["-o", "allow_other"]);
    let src = served.src();
    roots_files(src);
    let before = snapshot(src, Path::new("/nonexistent"));
    let m = served.mnt();
    let (secret, public) = (c(m.join("private/secret")), c(m.join("private/public")));
    let (tmp_roots, private) = (c(m.join("tmp/roots")), c(m.join("private")));
    let (moved, moved_tmp) = (c(m.join("private/moved")), c(m.join("tmp/moved")));
    let created = c(m.join("private/new"));
    let when = Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: when,
        last_modification: when,
    };

    let cases: Vec<(&str, E, Attempt<'_>)> = vec![
        (
            "read 0600",
            E::ACCESS,
            Box::new(|| open(&secret, OFlags::RDONLY)),
        ),
        (
            "write 0644",
            E::ACCESS,
            Box::new(|| open(&public, OFlags::WRONLY)),
        ),
        (
            "O_TRUNC 0644",
            E::ACCESS,
            Box::new(|| open(&public, OFlags::RDONLY | OFlags::TRUNC)),
        ),
        (
            "truncate 0644",
            E::ACCESS,
            Box::new(|| truncate(&public, 0)),
        ),
        (
            "chmod 0644",
            E::PERM,
            Box::new(|| rustix::fs::chmod(&public, Mode::from_raw_mode(0o666))),
        ),
        (
            "chmod 0600",
            E::PERM,
            Box::new(|| rustix::fs::chmod(&secret, Mode::from_raw_mode(0o666))),
        ),
        ("chown", E::PERM, Box::new(|| chown_to(&public, NOBODY))),
        (
            "set times",
            E::PERM,
            Box::new(|| rustix::fs::utimensat(rustix::fs::CWD, &*public, &times, AtFlags::empty())),
        ),
        (
            "setxattr",
            E::ACCESS,
            Box::new(|| {
                rustix::fs::setxattr(&public, "user.x", b"1", rustix::fs::XattrFlags::empty())
            }),
        ),
        (
            "unlink",
            E::ACCESS,
            Box::new(|| rustix::fs::unlink(&public)),
        ),
        (
            "rename",
            E::ACCESS,
            Box::new(|| rustix::fs::rename(&public, &moved)),
        ),
        (
            "rename out",
            E::ACCESS,
            Box::new(|| rustix::fs::rename(&public, &moved_tmp)),
        ),
        (
            "create",
            E::ACCESS,
            Box::new(|| open(&created, OFlags::WRONLY | OFlags::CREATE)),
        ),
        (
            "mkdir",
            E::ACCESS,
            Box::new(|| rustix::fs::mkdir(&created, Mode::from_raw_mode(0o755))),
        ),
        ("rmdir", E::ACCESS, Box::new(|| rustix::fs::rmdir(&private))),
        // In the sticky 1777 directory: writable, but not root's entries.
        (
            "unlink sticky",
            E::PERM,
            Box::new(|| rustix::fs::unlink(&tmp_roots)),
        ),
        (
            "rename sticky",
            E::PERM,
            Box::new(|| rustix::fs::rename(&tmp_roots, &moved_tmp)),
        ),
        (
            "write sticky",
            E::ACCESS,
            Box::new(|| open(&tmp_roots, OFlags::WRONLY)),
        ),
    ];
    // The child can reach the mount: refusals are about the files.
    assert_eq!(as_user(NOBODY, || open(&public, OFlags::RDONLY)), Ok(()));
    let mut wrong = Vec::new();
    for (what, want, op) in &cases {
        let got = as_user(NOBODY, op);
        if got != Err(*want) {
            wrong.push(format!("{what}: {got:?}, want {want:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "nobody was not refused:\n{}",
        wrong.join("\n")
    );
    let after = snapshot(src, Path::new("/nonexistent"));
    assert_untouched(&before, &after);
}

fn chown_to(path: &std::ffi::CStr, (uid, gid): (u32, u32)) -> Result<(), Errno> {
    rustix::fs::chown(
        path,
        Some(rustix::process::Uid::from_raw(uid)),
        Some(rustix::process::Gid::from_raw(gid)),
    )
}

#[test]
fn files_another_user_creates_are_owned_by_them() {
    let served = Served::start(&["-o", "allow_other"]);
    let src = served.src();
    roots_files(src);
    let m = served.mnt();
    let names = [
        "tmp/file",
        "tmp/dir",
        "tmp/fifo",
        "tmp/link",
        "tmp/dir/inner",
    ];
    let [file, dir, fifo, link, inner] = names.map(|n| c(m.join(n)));
    let made = as_user(NOBODY, || {
        rustix::process::umask(Mode::from_raw_mode(0o022));
        let f = rustix::fs::open(
            &file,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
            Mode::from_raw_mode(0o666),
        )?;
        rustix::io::write(&f, b"mine")?;
        rustix::fs::mkdir(&dir, Mode::from_raw_mode(0o777))?;
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &*fifo,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o666),
            0,
        )?;
        rustix::fs::symlink(c"file", &link)?;
        drop(rustix::fs::open(
            &inner,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
            Mode::from_raw_mode(0o600),
        )?);
        Ok(())
    });
    assert_eq!(made, Ok(()));
    let modes = [0o644, 0o755, 0o644, 0o777, 0o600];
    for (name, want) in names.iter().zip(modes) {
        for (side, root) in [("through the mount", m), ("in the source", src)] {
            let st = std::fs::symlink_metadata(root.join(name)).unwrap();
            assert_eq!((st.uid(), st.gid()), NOBODY, "{name} {side}");
            assert_eq!(st.mode() & 0o7777, want, "{name} {side}");
        }
    }
    // Root's files stay root's; nobody cannot create where it may not.
    assert_eq!(std::fs::metadata(src.join("tmp/roots")).unwrap().uid(), 0);
    let denied = c(m.join("private/mine"));
    assert_eq!(
        as_user(NOBODY, || open(&denied, OFlags::WRONLY | OFlags::CREATE)),
        Err(E::ACCESS)
    );
    assert!(!src.join("private/mine").exists());
}

#[test]
fn without_allow_other_other_users_get_eacces_from_the_kernel() {
    let served = Served::start(&[]);
    let src = served.src();
    std::fs::write(src.join("public"), b"public").unwrap();
    std::fs::create_dir(src.join("open")).unwrap();
    set_mode(&src.join("public"), 0o666);
    set_mode(&src.join("open"), 0o777);
    let m = served.mnt();
    let (root, public, open_dir, new) = (
        c(m),
        c(m.join("public")),
        c(m.join("open")),
        c(m.join("open/new")),
    );
    let requests = || -> std::collections::BTreeMap<String, u64> {
        let snap = fastfuse::stats::query(m).unwrap();
        snap.ops.into_iter().map(|(op, o)| (op, o.count)).collect()
    };
    // Root (the mount's owner) gets in.
    assert_eq!(std::fs::read(m.join("public")).unwrap(), b"public");
    // The kernel sends that file's RELEASE in the background, after
    // close(2) returned: the count to compare with is the one after it.
    assert!(
        wait_for(std::time::Duration::from_secs(20), || {
            requests().get("RELEASE").copied().unwrap_or(0) >= 1
        }),
        "the RELEASE of root's read never came"
    );
    let served_before = requests();
    let cases: Vec<(&str, Attempt<'_>)> = vec![
        (
            "stat the root",
            Box::new(|| rustix::fs::stat(&root).map(drop)),
        ),
        (
            "open the root",
            Box::new(|| open(&root, OFlags::RDONLY | OFlags::DIRECTORY)),
        ),
        (
            "stat a 0666 file",
            Box::new(|| rustix::fs::stat(&public).map(drop)),
        ),
        (
            "read a 0666 file",
            Box::new(|| open(&public, OFlags::RDONLY)),
        ),
        (
            "write a 0666 file",
            Box::new(|| open(&public, OFlags::WRONLY)),
        ),
        (
            "list a 0777 dir",
            Box::new(|| open(&open_dir, OFlags::RDONLY | OFlags::DIRECTORY)),
        ),
        (
            "create in a 0777 dir",
            Box::new(|| open(&new, OFlags::WRONLY | OFlags::CREATE)),
        ),
        (
            "access",
            Box::new(|| rustix::fs::access(&public, rustix::fs::Access::READ_OK)),
        ),
    ];
    let mut wrong = Vec::new();
    for user in [NOBODY, DAEMON_USER] {
        for (what, op) in &cases {
            let got = as_user(user, op);
            if got != Err(E::ACCESS) {
                wrong.push(format!("uid {}: {what}: {got:?}", user.0));
            }
        }
    }
    assert!(wrong.is_empty(), "not refused:\n{}", wrong.join("\n"));
    // The kernel refused them all: none of it reached the daemon.
    assert_eq!(requests(), served_before, "the daemon was asked");
    assert!(!src.join("open/new").exists());
}

/// A non-owner (and an owner without CAP_FSETID) writing, truncating or
/// opening with O_TRUNC drops set-user-ID and set-group-ID (group-exec
/// set), as on any local filesystem; root's write keeps them. The kernel
/// asks the daemon to (FUSE_WRITE_KILL_SUIDGID, FUSE_OPEN_KILL_SUIDGID,
/// FATTR_KILL_SUIDGID, handle_killpriv_v2), because the daemon, being root,
/// would keep them otherwise.
fn suid_and_sgid_are_cleared(args: &[&str]) {
    let served = Served::start(args);
    let src = served.src();
    std::fs::create_dir(src.join("tmp")).unwrap();
    set_mode(&src.join("tmp"), 0o1777);
    let names = ["write", "trunc_open", "truncate", "own_write", "root_write"];
    for name in names {
        std::fs::write(src.join("tmp").join(name), b"0123456789").unwrap();
        set_mode(&src.join("tmp").join(name), 0o6777);
    }
    let own = src.join("tmp/own_write");
    rustix::fs::chown(
        &own,
        Some(rustix::process::Uid::from_raw(NOBODY.0)),
        Some(rustix::process::Gid::from_raw(NOBODY.1)),
    )
    .unwrap();
    set_mode(&own, 0o6777);
    let m = served.mnt();
    // Look them up first, so that the kernel's cached modes carry the bits.
    for name in names {
        assert_eq!(mode(&m.join("tmp").join(name)), 0o6777, "{name}");
    }
    let [write, trunc_open, truncated, own_write, _] = names.map(|n| c(m.join("tmp").join(n)));
    let write_to = |path: &std::ffi::CStr| -> Result<(), Errno> {
        let f = rustix::fs::open(path, OFlags::WRONLY, Mode::empty())?;
        rustix::io::write(&f, b"x")?;
        rustix::fs::fsync(&f)
    };
    assert_eq!(as_user(NOBODY, || write_to(&write)), Ok(()));
    assert_eq!(
        as_user(NOBODY, || open(&trunc_open, OFlags::WRONLY | OFlags::TRUNC)),
        Ok(())
    );
    assert_eq!(as_user(NOBODY, || truncate(&truncated, 3)), Ok(()));
    assert_eq!(as_user(NOBODY, || write_to(&own_write)), Ok(()));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.join("tmp/root_write"))
        .unwrap();
    std::io::Write::write_all(&mut &f, b"r").unwrap();
    f.sync_all().unwrap();
    drop(f);

    for name in names {
        let want = if name == "root_write" { 0o6777 } else { 0o777 };
        assert_eq!(
            mode(&src.join("tmp").join(name)),
            want,
            "{name} in the source"
        );
        assert_eq!(
            mode(&m.join("tmp").join(name)),
            want,
            "{name} through the mount"
        );
    }
    assert_eq!(std::fs::read(src.join("tmp/write")).unwrap(), b"x123456789");
    assert_eq!(std::fs::read(src.join("tmp/truncate")).unwrap(), b"012");
    assert!(std::fs::read(src.join("tmp/trunc_open"))
        .unwrap()
        .is_empty());
}

#[test]
fn suid_and_sgid_are_cleared_when_another_user_writes_with_writeback() {
    suid_and_sgid_are_cleared(&["-o", "allow_other"]);
}

#[test]
fn suid_and_sgid_are_cleared_when_another_user_writes_without_writeback() {
    suid_and_sgid_are_cleared(&["-o", "allow_other,no_writeback"]);
}

/// GETATTRs the daemon served while `n` files were created in a fresh
/// directory of the mount, and while they were removed again.
fn getattrs_creating_and_removing(served: &Served, n: usize) -> (u64, u64) {
    let m = served.mnt();
    let getattrs = || {
        let snap = fastfuse::stats::query(m).unwrap();
        snap.ops.get("GETATTR").map_or(0, |o| o.count)
    };
    let dir = m.join("fresh");
    std::fs::create_dir(&dir).unwrap();
    let names: Vec<_> = (0..n).map(|i| c(dir.join(format!("f{i}")))).collect();
    let before = getattrs();
    for name in &names {
        open(name, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL).unwrap();
    }
    let created = getattrs();
    for name in &names {
        rustix::fs::unlink(name).unwrap();
    }
    let removed = getattrs();
    (created - before, removed - created)
}

/// Without allow_other (and so without default_permissions) the kernel
/// checks no permissions and FUSE_POSIX_ACL, which would turn
/// default_permissions on, is not asked although the source (tmpfs) keeps
/// ACLs: a creation or removal, which drops the parent's cached
/// attributes, is not followed by a GETATTR of the parent for the next
/// path walk's permission check.
#[test]
fn without_allow_other_no_getattr_of_the_parent_per_file() {
    let served = Served::start(&[]);
    let (create, remove) = getattrs_creating_and_removing(&served, 200);
    assert!(
        create < 50 && remove < 50,
        "GETATTRs while creating 200 files: {create}, removing them: {remove}"
    );
}

/// The other side of the test above: with allow_other the kernel checks
/// permissions (default_permissions, FUSE_POSIX_ACL), and needs the
/// parent's mode again after each creation and removal.
#[test]
fn with_allow_other_the_parent_is_asked_again_per_file() {
    let served = Served::start(&["-o", "allow_other"]);
    let (create, remove) = getattrs_creating_and_removing(&served, 200);
    assert!(
        create >= 190 && remove >= 190,
        "GETATTRs while creating 200 files: {create}, removing them: {remove}"
    );
}
