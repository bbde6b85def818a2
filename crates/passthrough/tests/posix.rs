//! POSIX behaviour through a real mount, each scenario with and without
//! the writeback cache.

mod common;

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};

use common::{errno, Mounted};

fn create_write_read_append(m: &Mounted) {
    let p = m.at("file");
    fs::write(&p, b"hello").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"hello");
    let mut f = OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(b", world").unwrap();
    drop(f);
    // O_APPEND on a second open lands at the end too.
    let mut f = OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(b"!").unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), b"hello, world!");
    assert_eq!(fs::read(m.source("file")).unwrap(), b"hello, world!");
    // Read in the middle, and past the end.
    let f = File::open(&p).unwrap();
    let mut buf = [0u8; 5];
    assert_eq!(f.read_at(&mut buf, 7).unwrap(), 5);
    assert_eq!(&buf, b"world");
    assert_eq!(f.read_at(&mut buf, 100).unwrap(), 0);
}

fn write_only_partial_page(m: &Mounted) {
    // A write-only open that changes a few bytes inside a page: under the
    // writeback cache the kernel must read the page first.
    let original = common::pattern(10_000, 1);
    fs::write(m.source("wo"), &original).unwrap();
    let f = OpenOptions::new().write(true).open(m.at("wo")).unwrap();
    f.write_all_at(b"0123456789", 5000).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let mut expected = original;
    expected[5000..5010].copy_from_slice(b"0123456789");
    assert_eq!(fs::read(m.source("wo")).unwrap(), expected);
    assert_eq!(fs::read(m.at("wo")).unwrap(), expected);
}

fn rename_flags(m: &Mounted) {
    fs::write(m.at("a"), b"A").unwrap();
    fs::write(m.at("b"), b"B").unwrap();
    let e = common::renameat2(&m.at("a"), &m.at("b"), libc::RENAME_NOREPLACE).unwrap_err();
    assert_eq!(errno(&e), libc::EEXIST);
    common::renameat2(&m.at("a"), &m.at("b"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::read(m.at("a")).unwrap(), b"B");
    assert_eq!(fs::read(m.at("b")).unwrap(), b"A");
    assert_eq!(fs::read(m.source("a")).unwrap(), b"B");
    common::renameat2(&m.at("a"), &m.at("c"), libc::RENAME_NOREPLACE).unwrap();
    fs::create_dir(m.at("d")).unwrap();
    fs::rename(m.at("c"), m.at("d/c")).unwrap();
    assert!(!m.source("a").exists());
    assert_eq!(fs::read(m.source("d/c")).unwrap(), b"B");
    let e = fs::rename(m.at("missing"), m.at("x")).unwrap_err();
    assert_eq!(errno(&e), libc::ENOENT);
}

fn hard_links(m: &Mounted) {
    fs::write(m.at("f"), b"one").unwrap();
    fs::hard_link(m.at("f"), m.at("g")).unwrap();
    let (f, g) = (
        fs::metadata(m.at("f")).unwrap(),
        fs::metadata(m.at("g")).unwrap(),
    );
    assert_eq!(f.ino(), g.ino());
    assert_eq!(g.nlink(), 2);
    assert_eq!(
        fs::metadata(m.source("f")).unwrap().ino(),
        fs::metadata(m.source("g")).unwrap().ino()
    );
    fs::write(m.at("g"), b"two").unwrap();
    assert_eq!(fs::read(m.at("f")).unwrap(), b"two");
    fs::remove_file(m.at("f")).unwrap();
    assert_eq!(fs::metadata(m.at("g")).unwrap().nlink(), 1);
    let e = fs::hard_link(m.at("g"), m.at("g")).unwrap_err();
    assert_eq!(errno(&e), libc::EEXIST);
}

fn symlinks(m: &Mounted) {
    fs::write(m.at("target"), b"data").unwrap();
    std::os::unix::fs::symlink("target", m.at("l")).unwrap();
    std::os::unix::fs::symlink("../../outside/../x", m.at("dangling")).unwrap();
    assert_eq!(fs::read_link(m.at("l")).unwrap().to_str(), Some("target"));
    assert_eq!(
        fs::read_link(m.at("dangling")).unwrap().to_str(),
        Some("../../outside/../x")
    );
    assert_eq!(
        fs::read_link(m.source("l")).unwrap().to_str(),
        Some("target")
    );
    assert!(fs::symlink_metadata(m.at("l"))
        .unwrap()
        .file_type()
        .is_symlink());
    // Followed by the kernel, within the mount.
    assert_eq!(fs::read(m.at("l")).unwrap(), b"data");
    // A hard link to the symlink itself.
    fs::hard_link(m.at("l"), m.at("l2")).unwrap();
    let (a, b) = (
        fs::symlink_metadata(m.at("l")).unwrap(),
        fs::symlink_metadata(m.at("l2")).unwrap(),
    );
    assert!(b.file_type().is_symlink());
    assert_eq!(a.ino(), b.ino());
}

fn directories(m: &Mounted) {
    fs::create_dir(m.at("d")).unwrap();
    let mut expected = BTreeSet::new();
    for i in 0..1000 {
        let name = format!("entry-with-a-longish-name-{i:04}");
        fs::write(m.at(&format!("d/{name}")), b"").unwrap();
        expected.insert(name);
    }
    fs::create_dir(m.at("d/sub")).unwrap();
    expected.insert("sub".into());
    let listed: BTreeSet<String> = fs::read_dir(m.at("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(listed, expected);
    let e = fs::remove_dir(m.at("d")).unwrap_err();
    assert_eq!(errno(&e), libc::ENOTEMPTY);
    fs::remove_dir_all(m.at("d")).unwrap();
    assert!(!m.source("d").exists());
    let e = fs::metadata(m.at("d")).unwrap_err();
    assert_eq!(errno(&e), libc::ENOENT);
}

fn xattrs(m: &Mounted) {
    let p = m.at("x");
    fs::write(&p, b"").unwrap();
    common::setxattr(&p, "user.key", b"value").unwrap();
    // Size probing, then the value, then a buffer too small.
    assert_eq!(common::getxattr(&p, "user.key", 0).unwrap().0, 5);
    assert_eq!(common::getxattr(&p, "user.key", 64).unwrap().1, b"value");
    let e = common::getxattr(&p, "user.key", 2).unwrap_err();
    assert_eq!(errno(&e), libc::ERANGE);
    let (n, _) = common::listxattr(&p, 0).unwrap();
    let (_, names) = common::listxattr(&p, n).unwrap();
    assert!(
        names.split(|&b| b == 0).any(|n| n == b"user.key"),
        "{names:?}"
    );
    if n > 1 {
        let e = common::listxattr(&p, 1).unwrap_err();
        assert_eq!(errno(&e), libc::ERANGE);
    }
    assert_eq!(
        common::getxattr(&m.source("x"), "user.key", 64).unwrap().1,
        b"value"
    );
    common::removexattr(&p, "user.key").unwrap();
    let e = common::getxattr(&p, "user.key", 64).unwrap_err();
    assert_eq!(errno(&e), libc::ENODATA);
    let e = common::removexattr(&p, "user.key").unwrap_err();
    assert_eq!(errno(&e), libc::ENODATA);
}

fn truncate(m: &Mounted) {
    let p = m.at("t");
    fs::write(&p, common::pattern(10_000, 2)).unwrap();
    // ftruncate: SETATTR with a handle.
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(100).unwrap();
    drop(f);
    assert_eq!(fs::metadata(&p).unwrap().len(), 100);
    // truncate(2): SETATTR without one.
    common::truncate(&p, 50).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 50);
    common::truncate(&p, 5000).unwrap();
    let data = fs::read(&p).unwrap();
    assert_eq!(data.len(), 5000);
    assert_eq!(&data[..50], &common::pattern(10_000, 2)[..50]);
    assert!(data[50..].iter().all(|&b| b == 0));
    assert_eq!(fs::metadata(m.source("t")).unwrap().len(), 5000);
    // O_TRUNC on open.
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 0);
    assert_eq!(fs::metadata(m.source("t")).unwrap().len(), 0);
}

fn holes(m: &Mounted) {
    const MIB: i64 = 1 << 20;
    let p = m.at("sparse");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.write_all(&common::pattern(3 * MIB as usize, 3)).unwrap();
    f.sync_all().unwrap();
    common::fallocate(
        &f,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        MIB,
        MIB,
    )
    .unwrap();
    f.sync_all().unwrap();
    assert_eq!(f.metadata().unwrap().len(), 3 * MIB as u64);
    assert_eq!(common::lseek(&f, 0, libc::SEEK_HOLE).unwrap(), MIB);
    assert_eq!(common::lseek(&f, MIB, libc::SEEK_DATA).unwrap(), 2 * MIB);
    let e = common::lseek(&f, 3 * MIB, libc::SEEK_DATA).unwrap_err();
    assert_eq!(errno(&e), libc::ENXIO);
    // The hole reads as zeros.
    let mut buf = vec![1u8; 4096];
    f.seek(SeekFrom::Start(MIB as u64 + 4096)).unwrap();
    f.read_exact(&mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    // Preallocation grows the file unless KEEP_SIZE.
    common::fallocate(&f, 0, 3 * MIB, MIB).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 4 * MIB as u64);
}

fn attributes(m: &Mounted) {
    let p = m.at("attrs");
    fs::write(&p, b"x").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o640);
    assert_eq!(
        fs::metadata(m.source("attrs")).unwrap().mode() & 0o7777,
        0o640
    );
    std::os::unix::fs::chown(&p, Some(1234), Some(5678)).unwrap();
    let st = fs::metadata(m.source("attrs")).unwrap();
    assert_eq!((st.uid(), st.gid()), (1234, 5678));
    assert_eq!(fs::metadata(&p).unwrap().uid(), 1234);
    common::utimensat(&p, (1_000_000_000, 5), (1_100_000_000, 7)).unwrap();
    let st = fs::metadata(m.source("attrs")).unwrap();
    assert_eq!((st.atime(), st.atime_nsec()), (1_000_000_000, 5));
    assert_eq!((st.mtime(), st.mtime_nsec()), (1_100_000_000, 7));
    let st = fs::metadata(&p).unwrap();
    assert_eq!((st.mtime(), st.mtime_nsec()), (1_100_000_000, 7));
    // UTIME_NOW for mtime, atime left alone.
    common::utimensat(&p, (0, libc::UTIME_OMIT), (0, libc::UTIME_NOW)).unwrap();
    let st = fs::metadata(m.source("attrs")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (st.mtime() - now).abs() < 60,
        "mtime {} now {now}",
        st.mtime()
    );
    assert_eq!(st.atime(), 1_000_000_000);
    // Directories too.
    fs::create_dir(m.at("dir")).unwrap();
    fs::set_permissions(m.at("dir"), fs::Permissions::from_mode(0o711)).unwrap();
    assert_eq!(
        fs::metadata(m.source("dir")).unwrap().mode() & 0o7777,
        0o711
    );
}

fn error_numbers(m: &Mounted) {
    let e = File::open(m.at("missing")).unwrap_err();
    assert_eq!(errno(&e), libc::ENOENT);
    fs::write(m.at("exists"), b"").unwrap();
    let e = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.at("exists"))
        .unwrap_err();
    assert_eq!(errno(&e), libc::EEXIST);
    fs::create_dir(m.at("dir")).unwrap();
    let e = fs::create_dir(m.at("dir")).unwrap_err();
    assert_eq!(errno(&e), libc::EEXIST);
    fs::write(m.at("dir/child"), b"").unwrap();
    let e = fs::remove_dir(m.at("dir")).unwrap_err();
    assert_eq!(errno(&e), libc::ENOTEMPTY);
    let e = fs::remove_dir(m.at("exists")).unwrap_err();
    assert_eq!(errno(&e), libc::ENOTDIR);
    let e = fs::remove_file(m.at("dir")).unwrap_err();
    assert_eq!(errno(&e), libc::EISDIR);
    let e = OpenOptions::new()
        .write(true)
        .open(m.at("dir"))
        .unwrap_err();
    assert_eq!(errno(&e), libc::EISDIR);
    let e = File::open(m.at("exists/child")).unwrap_err();
    assert_eq!(errno(&e), libc::ENOTDIR);
    let e = fs::remove_file(m.at("missing")).unwrap_err();
    assert_eq!(errno(&e), libc::ENOENT);
}

fn large_file_matches_source(m: &Mounted) {
    let data = common::pattern(8 << 20, 4);
    let mut f = File::create(m.at("big")).unwrap();
    // Odd chunk sizes, so writes straddle pages.
    for chunk in data.chunks(123_457) {
        f.write_all(chunk).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    assert!(fs::read(m.source("big")).unwrap() == data);
    assert!(fs::read(m.at("big")).unwrap() == data);
    // Random-offset overwrite through pwrite.
    let f = OpenOptions::new().write(true).open(m.at("big")).unwrap();
    f.write_all_at(b"patched", 4_000_003).unwrap();
    f.sync_all().unwrap();
    let source = fs::read(m.source("big")).unwrap();
    assert_eq!(&source[4_000_003..4_000_010], b"patched");
}

fn tmpfile(m: &Mounted) {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(m.mnt())
        .unwrap();
    f.write_all(b"anonymous").unwrap();
    common::link_open_file(&f, &m.at("named")).unwrap();
    f.sync_all().unwrap();
    assert_eq!(fs::read(m.at("named")).unwrap(), b"anonymous");
    assert_eq!(fs::read(m.source("named")).unwrap(), b"anonymous");
}

fn special_files(m: &Mounted) {
    common::mknod(&m.at("fifo"), libc::S_IFIFO | 0o644, 0).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &fs::metadata(m.source("fifo")).unwrap().file_type()
    ));
    common::mknod(&m.at("sock"), libc::S_IFSOCK | 0o644, 0).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_socket(
        &fs::symlink_metadata(m.source("sock")).unwrap().file_type()
    ));
    common::mknod(&m.at("null"), libc::S_IFCHR | 0o666, libc::makedev(1, 3)).unwrap();
    let st = fs::metadata(m.source("null")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &st.file_type()
    ));
    assert_eq!(st.rdev(), libc::makedev(1, 3));
    assert_eq!(
        fs::metadata(m.at("null")).unwrap().rdev(),
        libc::makedev(1, 3)
    );
    // Regular files through mknod.
    common::mknod(&m.at("plain"), libc::S_IFREG | 0o600, 0).unwrap();
    assert!(fs::metadata(m.source("plain")).unwrap().is_file());
}

fn copy_range(m: &Mounted) {
    let data = common::pattern(100_000, 5);
    fs::write(m.at("from"), &data).unwrap();
    let from = File::open(m.at("from")).unwrap();
    let to = File::create(m.at("to")).unwrap();
    let mut copied = 0;
    while copied < 50_000 {
        let n = common::copy_file_range(
            &from,
            1000 + copied as i64,
            &to,
            copied as i64,
            50_000 - copied,
        )
        .unwrap();
        assert!(n > 0);
        copied += n;
    }
    to.sync_all().unwrap();
    assert_eq!(fs::read(m.at("to")).unwrap(), &data[1000..51_000]);
    assert_eq!(fs::read(m.source("to")).unwrap(), &data[1000..51_000]);
}

fn posix_locks(m: &Mounted) {
    fs::write(m.at("locked"), b"0123456789").unwrap();
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.at("locked"))
            .unwrap()
    };
    let (a, b, c) = (open(), open(), open());
    // Open-file-description locks: a and b are different owners.
    common::fcntl_lock(&a, libc::F_OFD_SETLK, libc::F_WRLCK, 0, 5).unwrap();
    let e = common::fcntl_lock(&b, libc::F_OFD_SETLK, libc::F_WRLCK, 2, 2).unwrap_err();
    assert_eq!(errno(&e), libc::EAGAIN);
    let probe = common::fcntl_lock(&b, libc::F_OFD_GETLK, libc::F_WRLCK, 0, 0).unwrap();
    assert_eq!(i32::from(probe.l_type), libc::F_WRLCK);
    assert_eq!((probe.l_start, probe.l_len), (0, 5));
    // Outside the locked range: fine.
    common::fcntl_lock(&b, libc::F_OFD_SETLK, libc::F_WRLCK, 5, 5).unwrap();
    common::fcntl_lock(&a, libc::F_OFD_SETLK, libc::F_UNLCK, 0, 5).unwrap();
    common::fcntl_lock(&b, libc::F_OFD_SETLK, libc::F_WRLCK, 0, 5).unwrap();
    common::fcntl_lock(&b, libc::F_OFD_SETLK, libc::F_UNLCK, 0, 0).unwrap();

    // Classic POSIX locks: this process is one owner, whichever fd it uses.
    common::fcntl_lock(&a, libc::F_SETLK, libc::F_WRLCK, 0, 10).unwrap();
    common::fcntl_lock(&b, libc::F_SETLK, libc::F_WRLCK, 0, 10).unwrap();
    let e = common::fcntl_lock(&c, libc::F_OFD_SETLK, libc::F_RDLCK, 0, 1).unwrap_err();
    assert_eq!(errno(&e), libc::EAGAIN);
    // Closing any fd of the file drops the process's locks (FLUSH).
    drop(b);
    common::fcntl_lock(&c, libc::F_OFD_SETLK, libc::F_RDLCK, 0, 1).unwrap();
    common::fcntl_lock(&c, libc::F_OFD_SETLK, libc::F_UNLCK, 0, 0).unwrap();
    // An open file's own locks end with it, unlocked or not.
    common::fcntl_lock(&a, libc::F_SETLK, libc::F_UNLCK, 0, 0).unwrap();
    let d = open();
    common::fcntl_lock(&d, libc::F_OFD_SETLK, libc::F_WRLCK, 0, 0).unwrap();
    let e = common::fcntl_lock(&c, libc::F_OFD_SETLK, libc::F_WRLCK, 0, 0).unwrap_err();
    assert_eq!(errno(&e), libc::EAGAIN);
    drop(d);
    // RELEASE is asynchronous: the lock goes soon after close(2) returns.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while let Err(e) = common::fcntl_lock(&c, libc::F_OFD_SETLK, libc::F_WRLCK, 0, 0) {
        assert_eq!(errno(&e), libc::EAGAIN);
        assert!(
            std::time::Instant::now() < deadline,
            "lock of a closed file kept"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // All of this was the daemon's work, not the kernel's local locks.
    assert!(m.count("SETLK") > 0 && m.count("GETLK") > 0);
}

fn flock_locks(m: &Mounted) {
    fs::write(m.at("flocked"), b"").unwrap();
    let a = File::open(m.at("flocked")).unwrap();
    let b = File::open(m.at("flocked")).unwrap();
    common::flock(&a, libc::LOCK_EX).unwrap();
    let e = common::flock(&b, libc::LOCK_EX | libc::LOCK_NB).unwrap_err();
    assert_eq!(errno(&e), libc::EWOULDBLOCK);
    common::flock(&a, libc::LOCK_UN).unwrap();
    common::flock(&b, libc::LOCK_SH | libc::LOCK_NB).unwrap();
    common::flock(&a, libc::LOCK_SH | libc::LOCK_NB).unwrap();
    // Closing the holder releases it.
    drop(b);
    drop(a);
    let c = File::open(m.at("flocked")).unwrap();
    common::flock(&c, libc::LOCK_EX | libc::LOCK_NB).unwrap();
    assert!(m.count("SETLK") + m.count("SETLKW") > 0);
}

fn statfs_and_access(m: &Mounted) {
    let ours = common::statvfs(m.mnt()).unwrap();
    let theirs = common::statvfs(m.src()).unwrap();
    assert_eq!(ours.f_blocks, theirs.f_blocks);
    assert_eq!(ours.f_bsize, theirs.f_bsize);
    fs::write(m.at("acc"), b"").unwrap();
    common::access(&m.at("acc"), libc::R_OK | libc::W_OK).unwrap();
    let e = common::access(&m.at("acc"), libc::X_OK).unwrap_err();
    assert_eq!(errno(&e), libc::EACCES);
    let e = common::access(&m.at("nope"), libc::F_OK).unwrap_err();
    assert_eq!(errno(&e), libc::ENOENT);
}

/// Each scenario once per cache mode.
macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {
        mod writeback {
            $(#[test] fn $name() { super::$name(&super::common::mount(true)); })*
        }
        mod no_writeback {
            $(#[test] fn $name() { super::$name(&super::common::mount(false)); })*
        }
    };
}

in_both_modes!(
    create_write_read_append,
    write_only_partial_page,
    rename_flags,
    hard_links,
    symlinks,
    directories,
    xattrs,
    truncate,
    holes,
    attributes,
    error_numbers,
    large_file_matches_source,
    tmpfile,
    special_files,
    copy_range,
    posix_locks,
    flock_locks,
    statfs_and_access,
);
