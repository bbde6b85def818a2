//! "Same as the source" (run over /dev/fuse by `same_as_source.rs` and
//! over io_uring by `uring_suites.rs`): one scripted sequence of operations
//! runs on a raw tmpfs directory and through a fastfuse mount of another
//! tmpfs, and what each step observes (return values, errno values, stat
//! fields, contents, directory listings, xattr lists, lock answers) must be
//! the same on both sides.
//!
//! The script covers each writeback-cache rule of DESIGN.md (partial-page
//! write to an O_WRONLY file, O_APPEND from two writers, mtime after write
//! and close, truncate while dirty, mmap write read back through the
//! source), rename flags, xattrs, locks between two processes, hard links,
//! symlinks, chmod/chown/utimensat, the common errno cases, other users'
//! permissions (with allow_other) and readdir over 10,000 entries with
//! concurrent unlinks. It runs against three mounts: the default
//! (writeback cache), `-o no_writeback`, and `-o allow_other` (which turns
//! default_permissions on and lets the script act as other users).
//!
//! Fields that legitimately differ between two filesystems are left out or
//! turned into relations, each with its reason where the observation is
//! made:
//! - st_dev and st_ino: the mount is another device with its own inode
//!   numbers; the script compares equality relations instead (hard links
//!   share st_ino on both sides, distinct files do not).
//! - st_blksize and statfs f_type/f_flag/f_fsid: FUSE reports its own.
//! - atime, mtime and ctime: each side has its own clock readings; the
//!   script compares exact values only where it set them explicitly, and
//!   ordering relations ("mtime advanced after the write and close",
//!   "ctime >= mtime", "mtime did not move again") everywhere else.
//!
//! A helper process (this test binary run again, with
//! `FASTFUSE_SAME_AS_SOURCE_HELPER` naming what it should do) takes locks
//! and acts as other users.

use std::collections::{BTreeSet, HashSet};
use std::ffi::CString;
use std::fmt;
use std::fs::{File, Metadata};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::common::*;

// ---------------------------------------------------------------------------
// System calls, answering the errno on failure.

/// A result whose error is the errno.
type Res<T> = Result<T, i32>;

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("test paths have no NUL")
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn cvt(r: libc::c_int) -> Res<libc::c_int> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

fn cvt_size(r: isize) -> Res<usize> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as usize)
    }
}

fn io(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn open(p: &Path, flags: i32, mode: u32) -> Res<File> {
    let c = cpath(p);
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    let fd = cvt(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode) })?;
    // SAFETY: `fd` was just returned by open(2) and nothing else owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn mkdir(p: &Path, mode: u32) -> Res<()> {
    let c = cpath(p);
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    cvt(unsafe { libc::mkdir(c.as_ptr(), mode) }).map(drop)
}

fn mknod(p: &Path, mode: u32, dev: u64) -> Res<()> {
    let c = cpath(p);
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    cvt(unsafe { libc::mknod(c.as_ptr(), mode, dev) }).map(drop)
}

fn rmdir(p: &Path) -> Res<()> {
    std::fs::remove_dir(p).map_err(io)
}

fn unlink(p: &Path) -> Res<()> {
    std::fs::remove_file(p).map_err(io)
}

fn link(from: &Path, to: &Path) -> Res<()> {
    std::fs::hard_link(from, to).map_err(io)
}

fn symlink(target: &str, at: &Path) -> Res<()> {
    std::os::unix::fs::symlink(target, at).map_err(io)
}

fn rename(from: &Path, to: &Path) -> Res<()> {
    std::fs::rename(from, to).map_err(io)
}

fn renameat2(from: &Path, to: &Path, flags: u32) -> Res<()> {
    let (a, b) = (cpath(from), cpath(to));
    // SAFETY: both paths are NUL-terminated and outlive the call.
    cvt(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

fn readlink(p: &Path) -> Res<Vec<u8>> {
    std::fs::read_link(p)
        .map(|t| t.as_os_str().as_bytes().to_vec())
        .map_err(io)
}

/// readlink(2) into a buffer of `size` bytes (it truncates silently).
fn readlink_into(p: &Path, size: usize) -> Res<Vec<u8>> {
    let c = cpath(p);
    let mut buf = vec![0u8; size];
    // SAFETY: `buf` is writable for `size` bytes; `c` outlives the call.
    let n = cvt_size(unsafe { libc::readlink(c.as_ptr(), buf.as_mut_ptr().cast(), size) })?;
    buf.truncate(n);
    Ok(buf)
}

fn lstat(p: &Path) -> Res<Metadata> {
    std::fs::symlink_metadata(p).map_err(io)
}

fn stat(p: &Path) -> Res<Metadata> {
    std::fs::metadata(p).map_err(io)
}

fn write_file(p: &Path, data: &[u8]) -> Res<()> {
    std::fs::write(p, data).map_err(io)
}

fn read_file(p: &Path) -> Res<Vec<u8>> {
    std::fs::read(p).map_err(io)
}

fn chmod(p: &Path, mode: u32) -> Res<()> {
    let c = cpath(p);
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    cvt(unsafe { libc::chmod(c.as_ptr(), mode) }).map(drop)
}

/// lchown(2); `u32::MAX` leaves an id unchanged.
fn lchown(p: &Path, uid: u32, gid: u32) -> Res<()> {
    let c = cpath(p);
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    cvt(unsafe { libc::lchown(c.as_ptr(), uid, gid) }).map(drop)
}

fn truncate(p: &Path, len: i64) -> Res<()> {
    let c = cpath(p);
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    cvt(unsafe { libc::truncate(c.as_ptr(), len) }).map(drop)
}

fn ftruncate(f: &File, len: i64) -> Res<()> {
    // SAFETY: plain syscall on an fd we own.
    cvt(unsafe { libc::ftruncate(f.as_raw_fd(), len) }).map(drop)
}

fn pwrite(f: &File, data: &[u8], off: u64) -> Res<usize> {
    f.write_at(data, off).map_err(io)
}

fn write(mut f: &File, data: &[u8]) -> Res<usize> {
    f.write(data).map_err(io)
}

fn pread(f: &File, len: usize, off: u64) -> Res<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let n = f.read_at(&mut buf, off).map_err(io)?;
    buf.truncate(n);
    Ok(buf)
}

fn lseek(f: &File, off: i64, whence: i32) -> Res<i64> {
    // SAFETY: plain syscall on an fd we own.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off, whence) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

fn fsync(f: &File) -> Res<()> {
    f.sync_all().map_err(io)
}

fn fallocate(f: &File, mode: i32, off: i64, len: i64) -> Res<()> {
    // SAFETY: plain syscall on an fd we own.
    cvt(unsafe { libc::fallocate(f.as_raw_fd(), mode, off, len) }).map(drop)
}

/// One aligned block written with O_DIRECT at `off` (a multiple of 4096):
/// direct I/O wants the buffer, offset and length aligned.
fn pwrite_direct(f: &File, off: u64) -> Res<()> {
    let layout = std::alloc::Layout::from_size_align(4096, 4096).unwrap();
    // SAFETY: the layout has a non-zero size.
    let buf = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!buf.is_null(), "out of memory");
    // SAFETY: `buf` holds 4096 initialized (zeroed) bytes until freed below.
    let block = unsafe { std::slice::from_raw_parts_mut(buf, 4096) };
    block.fill(b'D');
    let r = pwrite(f, block, off);
    // SAFETY: allocated above with this layout, freed once.
    unsafe { std::alloc::dealloc(buf, layout) };
    r.map(drop)
}

// POSIX ACLs as the kernel stores them in `system.posix_acl_*`
// (include/uapi/linux/posix_acl_xattr.h): a version-2 header, then
// (tag, perm, id) entries sorted by tag and id.
const ACL_ACCESS: &str = "system.posix_acl_access";
const ACL_DEFAULT: &str = "system.posix_acl_default";
const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
/// The id of entries that name no user or group.
const NO_ID: u32 = u32::MAX;

/// The xattr value of an ACL made of `entries` (tag, rwx bits, id).
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

fn timespec(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

/// utimensat(2) on a path; `nofollow` acts on a symlink itself.
fn utimensat(p: &Path, times: Option<[libc::timespec; 2]>, nofollow: bool) -> Res<()> {
    let c = cpath(p);
    let flags = if nofollow {
        libc::AT_SYMLINK_NOFOLLOW
    } else {
        0
    };
    let ptr = times.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
    // SAFETY: `c` outlives the call; `ptr` is null or points at two
    // timespecs that outlive it.
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ptr, flags) }).map(drop)
}

fn futimens(f: &File, times: [libc::timespec; 2]) -> Res<()> {
    // SAFETY: `times` holds two timespecs and outlives the call.
    cvt(unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) }).map(drop)
}

fn access(p: &Path, mode: i32) -> Res<()> {
    let c = cpath(p);
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    cvt(unsafe { libc::access(c.as_ptr(), mode) }).map(drop)
}

fn flock(f: &File, op: i32) -> Res<()> {
    // SAFETY: plain syscall on an fd we own.
    cvt(unsafe { libc::flock(f.as_raw_fd(), op) }).map(drop)
}

fn lsetxattr(p: &Path, name: &str, value: &[u8], flags: i32) -> Res<()> {
    let (c, n) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: the path and name are NUL-terminated, `value` is readable for
    // its length; all outlive the call.
    cvt(unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

/// lgetxattr(2) with a buffer of `size` bytes (0 asks for the size, which
/// is then the length of the answer, filled with zeros).
fn lgetxattr(p: &Path, name: &str, size: usize) -> Res<Vec<u8>> {
    let (c, n) = (cpath(p), CString::new(name).unwrap());
    let mut buf = vec![0u8; size];
    // SAFETY: `buf` is writable for `size` bytes (null with size 0 is what
    // the size probe passes); the strings outlive the call.
    let r = cvt_size(unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            n.as_ptr(),
            if size == 0 {
                std::ptr::null_mut()
            } else {
                buf.as_mut_ptr().cast()
            },
            size,
        )
    })?;
    if size == 0 {
        return Ok(vec![0; r]);
    }
    buf.truncate(r);
    Ok(buf)
}

/// llistxattr(2) with a buffer of `size` bytes (0: the size probe, as for
/// [`lgetxattr`]).
fn llistxattr(p: &Path, size: usize) -> Res<Vec<u8>> {
    let c = cpath(p);
    let mut buf = vec![0u8; size];
    // SAFETY: as in `lgetxattr`.
    let r = cvt_size(unsafe {
        libc::llistxattr(
            c.as_ptr(),
            if size == 0 {
                std::ptr::null_mut()
            } else {
                buf.as_mut_ptr().cast()
            },
            size,
        )
    })?;
    if size == 0 {
        return Ok(vec![0; r]);
    }
    buf.truncate(r);
    Ok(buf)
}

fn lremovexattr(p: &Path, name: &str) -> Res<()> {
    let (c, n) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: both strings are NUL-terminated and outlive the call.
    cvt(unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) }).map(drop)
}

fn flock_struct(typ: i32, start: i64, len: i64) -> libc::flock {
    // SAFETY: `struct flock` is plain data; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = len;
    fl
}

/// fcntl F_SETLK/F_SETLKW/F_OFD_SETLK/F_OFD_SETLKW.
fn setlk(f: &File, cmd: i32, typ: i32, start: i64, len: i64) -> Res<()> {
    let mut fl = flock_struct(typ, start, len);
    // SAFETY: `fl` is a valid `struct flock` for the call's duration.
    cvt(unsafe { libc::fcntl(f.as_raw_fd(), cmd, &mut fl) }).map(drop)
}

/// fcntl F_GETLK/F_OFD_GETLK: the answer's lock.
fn getlk(f: &File, cmd: i32, typ: i32, start: i64, len: i64) -> Res<libc::flock> {
    let mut fl = flock_struct(typ, start, len);
    // SAFETY: `fl` is a valid `struct flock` for the call's duration.
    cvt(unsafe { libc::fcntl(f.as_raw_fd(), cmd, &mut fl) })?;
    Ok(fl)
}

fn lock_type_name(t: i32) -> &'static str {
    match t {
        libc::F_RDLCK => "F_RDLCK",
        libc::F_WRLCK => "F_WRLCK",
        libc::F_UNLCK => "F_UNLCK",
        _ => "F_?",
    }
}

/// A GETLK answer without l_pid (compared as a relation by the caller).
fn lock_text(fl: &libc::flock) -> String {
    format!(
        "{} whence={} start={} len={}",
        lock_type_name(i32::from(fl.l_type)),
        fl.l_whence,
        fl.l_start,
        fl.l_len
    )
}

fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ERANGE => "ERANGE",
        libc::EDEADLK => "EDEADLK",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::E2BIG => "E2BIG",
        libc::ESTALE => "ESTALE",
        libc::ETXTBSY => "ETXTBSY",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

/// A result as the helper prints it: "ok" or the errno's name.
fn res_text<T>(r: &Res<T>) -> String {
    match r {
        Ok(_) => "ok".to_string(),
        Err(e) => errno_name(*e),
    }
}

/// Names in a directory (without "." and ".."), sorted, each with a type
/// letter from d_type.
fn list_dir(p: &Path) -> Res<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(p).map_err(io)? {
        let e = e.map_err(io)?;
        let t = e.file_type().map_err(io)?;
        let letter = if t.is_dir() {
            'd'
        } else if t.is_symlink() {
            'l'
        } else if t.is_fifo() {
            'p'
        } else if t.is_socket() {
            's'
        } else if t.is_char_device() {
            'c'
        } else if t.is_block_device() {
            'b'
        } else {
            '-'
        };
        names.push(format!("{letter} {}", e.file_name().to_string_lossy()));
    }
    names.sort();
    Ok(names)
}

fn nanos(sec: i64, nsec: i64) -> i128 {
    i128::from(sec) * 1_000_000_000 + i128::from(nsec)
}

/// The three timestamps of a stat, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Times {
    atime: i128,
    mtime: i128,
    ctime: i128,
}

impl Times {
    fn of(m: &Metadata) -> Times {
        Times {
            atime: nanos(m.atime(), m.atime_nsec()),
            mtime: nanos(m.mtime(), m.mtime_nsec()),
            ctime: nanos(m.ctime(), m.ctime_nsec()),
        }
    }
}

fn now_coarse() -> i128 {
    // The filesystems stamp files with the coarse clock (or a fine one at
    // least as late), so a coarse reading taken before an operation is
    // never later than the stamp it makes.
    let mut ts = timespec(0, 0);
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    nanos(ts.tv_sec, ts.tv_nsec)
}

fn now_fine() -> i128 {
    let mut ts = timespec(0, 0);
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    nanos(ts.tv_sec, ts.tv_nsec)
}

/// Bytes with a position-dependent pattern, so that misplaced data shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(u32::from(seed)) as u8)
        .collect()
}

/// Long enough that timestamps taken on either side of it differ (tmpfs
/// stamps with the coarse clock, one tick at most a few ms).
fn tick() {
    std::thread::sleep(Duration::from_millis(30));
}

// ---------------------------------------------------------------------------
// Observations.

/// The stat fields that must match. st_dev, st_ino (compared as relations),
/// st_blksize (FUSE's own) and the timestamps (compared as relations or
/// where set explicitly) are left out.
#[derive(Clone, PartialEq, Eq)]
struct StatView {
    mode: u32,
    nlink: u64,
    uid: u32,
    gid: u32,
    size: u64,
    blocks: u64,
    rdev: u64,
}

impl StatView {
    fn of(m: &Metadata) -> StatView {
        StatView {
            mode: m.mode(),
            nlink: m.nlink(),
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            blocks: m.blocks(),
            rdev: m.rdev(),
        }
    }
}

impl fmt::Debug for StatView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mode={:o} nlink={} uid={} gid={} size={} blocks={} rdev={:#x}",
            self.mode, self.nlink, self.uid, self.gid, self.size, self.blocks, self.rdev
        )
    }
}

/// What one observation saw.
#[derive(Clone, PartialEq, Eq)]
enum Obs {
    /// The call succeeded (and returned nothing worth comparing).
    Ok,
    /// The call failed with this errno.
    Err(i32),
    Num(i64),
    Text(String),
    /// A relation that held or did not.
    Fact(bool),
    Stat(StatView),
    Data(Vec<u8>),
    Names(Vec<String>),
}

/// FNV-1a, to name a large content or listing in a message.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl fmt::Debug for Obs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Obs::Ok => write!(f, "ok"),
            Obs::Err(e) => write!(f, "{}", errno_name(*e)),
            Obs::Num(n) => write!(f, "{n}"),
            Obs::Text(t) => write!(f, "{t:?}"),
            Obs::Fact(b) => write!(f, "{b}"),
            Obs::Stat(s) => write!(f, "{s:?}"),
            Obs::Data(d) if d.len() <= 64 => write!(f, "{:?}", String::from_utf8_lossy(d)),
            Obs::Data(d) => write!(
                f,
                "{} bytes, fnv {:016x}, starting {:?}",
                d.len(),
                fnv(d),
                String::from_utf8_lossy(&d[..32])
            ),
            Obs::Names(n) if n.len() <= 40 => write!(f, "{n:?}"),
            Obs::Names(n) => write!(
                f,
                "{} names, fnv {:016x}, first {:?}",
                n.len(),
                fnv(n.join("/").as_bytes()),
                &n[..5]
            ),
        }
    }
}

/// More detail on how two observations differ, where it helps.
fn difference(a: &Obs, b: &Obs) -> String {
    match (a, b) {
        (Obs::Data(x), Obs::Data(y)) => {
            let at = x.iter().zip(y).position(|(p, q)| p != q);
            match at {
                Some(i) => format!(
                    "first difference at byte {i}: {:#04x} vs {:#04x}",
                    x[i], y[i]
                ),
                None => format!("one is a prefix of the other ({} vs {})", x.len(), y.len()),
            }
        }
        (Obs::Names(x), Obs::Names(y)) => {
            let xs: BTreeSet<_> = x.iter().collect();
            let ys: BTreeSet<_> = y.iter().collect();
            let only_x: Vec<_> = xs.difference(&ys).take(10).collect();
            let only_y: Vec<_> = ys.difference(&xs).take(10).collect();
            format!("only on tmpfs: {only_x:?}; only through fastfuse: {only_y:?}")
        }
        _ => String::new(),
    }
}

struct Record {
    step: &'static str,
    label: String,
    obs: Obs,
}

/// What a script run saw, and where the script's own expectations (the
/// POSIX answer the script knows) failed.
struct Run {
    side: String,
    records: Vec<Record>,
    unexpected: Vec<String>,
}

/// The state a step works with.
struct Ctx {
    side: String,
    /// The step's directory as the script uses it (on tmpfs, or through
    /// the mount).
    dir: PathBuf,
    /// The same directory on the source filesystem (the same path on the
    /// tmpfs side).
    src: PathBuf,
    step: &'static str,
    records: Vec<Record>,
    unexpected: Vec<String>,
}

impl Ctx {
    /// A path in the step's directory.
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// The same path on the source.
    fn s(&self, rel: &str) -> PathBuf {
        self.src.join(rel)
    }

    fn record(&mut self, label: impl Into<String>, obs: Obs) {
        self.records.push(Record {
            step: self.step,
            label: label.into(),
            obs,
        });
    }

    fn unexpected(&mut self, label: &str, what: String) {
        self.unexpected
            .push(format!("[{}] {}: {label}: {what}", self.side, self.step));
    }

    /// Records success or the errno, and hands back the value.
    fn res<T>(&mut self, label: &str, r: Res<T>) -> Option<T> {
        match r {
            Ok(v) => {
                self.record(label, Obs::Ok);
                Some(v)
            }
            Err(e) => {
                self.record(label, Obs::Err(e));
                None
            }
        }
    }

    /// As [`Ctx::res`], and the script expects success.
    fn ok<T>(&mut self, label: &str, r: Res<T>) -> Option<T> {
        if let Err(e) = &r {
            self.unexpected(label, format!("expected success, got {}", errno_name(*e)));
        }
        self.res(label, r)
    }

    /// As [`Ctx::res`], and the script expects this errno.
    fn fails<T>(&mut self, label: &str, r: Res<T>, want: i32) {
        match &r {
            Err(e) if *e == want => {}
            Err(e) => self.unexpected(
                label,
                format!("expected {}, got {}", errno_name(want), errno_name(*e)),
            ),
            Ok(_) => self.unexpected(label, format!("expected {}, got success", errno_name(want))),
        }
        self.res(label, r);
    }

    fn num(&mut self, label: &str, n: i64) {
        self.record(label, Obs::Num(n));
    }

    fn text(&mut self, label: &str, t: String) {
        self.record(label, Obs::Text(t));
    }

    /// A relation, compared between the sides.
    fn fact(&mut self, label: &str, holds: bool) {
        self.record(label, Obs::Fact(holds));
    }

    /// A relation the script also expects to hold (POSIX says so).
    fn must(&mut self, label: &str, holds: bool) {
        if !holds {
            self.unexpected(label, "does not hold".to_string());
        }
        self.fact(label, holds);
    }

    /// lstat of `rel`: records the compared fields.
    fn stat(&mut self, rel: &str) -> Option<Metadata> {
        let r = lstat(&self.p(rel));
        self.observe_stat(&format!("lstat {rel}"), r)
    }

    /// fstat of the open `file` (named `rel`) without st_blocks, which the
    /// kernel refreshes only at close under the writeback cache (see
    /// `sparse_files`).
    fn open_stat(&mut self, rel: &str, file: &File) {
        let label = format!("fstat {rel} while open (st_blocks left out)");
        match file.metadata() {
            Ok(m) => {
                let view = StatView {
                    blocks: 0,
                    ..StatView::of(&m)
                };
                self.record(label, Obs::Stat(view));
            }
            Err(e) => self.record(label, Obs::Err(io(e))),
        }
    }

    /// stat (following symlinks) of `rel`.
    fn stat_follow(&mut self, rel: &str) -> Option<Metadata> {
        let r = stat(&self.p(rel));
        self.observe_stat(&format!("stat {rel}"), r)
    }

    fn observe_stat(&mut self, label: &str, r: Res<Metadata>) -> Option<Metadata> {
        match r {
            Ok(m) => {
                self.record(label, Obs::Stat(StatView::of(&m)));
                Some(m)
            }
            Err(e) => {
                self.record(label, Obs::Err(e));
                None
            }
        }
    }

    /// The content of `rel`, through the script's view.
    fn content(&mut self, rel: &str) {
        let r = read_file(&self.p(rel));
        self.data(&format!("content of {rel}"), r);
    }

    /// The content of `rel` read from the source filesystem, and whether
    /// the source's size and mtime are what the script's view shows.
    fn source_content(&mut self, rel: &str) {
        let r = read_file(&self.s(rel));
        self.data(&format!("content of {rel} read from the source"), r);
        let (view, source) = (lstat(&self.p(rel)), lstat(&self.s(rel)));
        if let (Ok(v), Ok(s)) = (view, source) {
            let label = format!("{rel}: size and mtime on the source are the ones seen");
            let same = v.size() == s.size() && Times::of(&v).mtime == Times::of(&s).mtime;
            if !same {
                self.unexpected(
                    &label,
                    format!(
                        "seen size {} mtime {}, source size {} mtime {}",
                        v.size(),
                        Times::of(&v).mtime,
                        s.size(),
                        Times::of(&s).mtime
                    ),
                );
            }
            self.fact(&label, same);
        }
    }

    fn data(&mut self, label: &str, r: Res<Vec<u8>>) {
        match r {
            Ok(d) => self.record(label, Obs::Data(d)),
            Err(e) => self.record(label, Obs::Err(e)),
        }
    }

    /// The sorted listing of directory `rel`.
    fn listing(&mut self, rel: &str) {
        let label = format!("readdir {rel}");
        match list_dir(&self.p(rel)) {
            Ok(n) => self.record(label, Obs::Names(n)),
            Err(e) => self.record(label, Obs::Err(e)),
        }
    }

    /// The timestamps of `rel` (not recorded: for relations).
    fn times(&self, rel: &str) -> Option<Times> {
        lstat(&self.p(rel)).ok().map(|m| Times::of(&m))
    }

    /// Records the helper's answer.
    fn helper_says(&mut self, label: &str, answer: &str, want: &str) {
        if answer != want {
            self.unexpected(label, format!("expected {want}, got {answer}"));
        }
        self.text(label, answer.to_string());
    }
}

// ---------------------------------------------------------------------------
// The helper process: this test binary again.

const HELPER_ENV: &str = "FASTFUSE_SAME_AS_SOURCE_HELPER";

/// A helper process: it does what its arguments say, prints
/// `READY <answer>`, and (for locks) holds on until its stdin closes.
struct Helper {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Helper {
    fn start(args: &[&str]) -> Helper {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                &helper_test_name(),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HELPER_ENV, args.join("\n"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Helper {
            child,
            stdin,
            lines,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The helper's answer (after `READY `).
    fn answer(&mut self) -> String {
        self.line_after("READY ")
    }

    /// The rest of the first line holding `marker`.
    fn line_after(&mut self, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some((_, a)) = line.split_once(marker) {
                        return a.to_string();
                    }
                }
                Err(e) => panic!("helper {} never said {marker:?}: {e}", self.pid()),
            }
        }
    }

    /// Closes its stdin (it lets go of its locks and exits) and waits.
    fn finish(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "helper did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts a helper, waits for its answer, lets it exit.
    fn run(args: &[&str]) -> String {
        let mut h = Helper::start(args);
        let a = h.answer();
        h.finish();
        a
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Our own child, by its pid: when a step panicked half-way. A
        // helper stuck in a request the daemon never answers dies only
        // once the daemon is gone, which `Served`'s drop sees to after
        // this; so wait a bounded time, never forever.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// The full name of [`helper_process`] in the test binary that includes
/// this module (`source_script::helper_process`): libtest's `--exact`
/// wants the module path, which `module_path!` gives after the crate's
/// name.
fn helper_test_name() -> String {
    let (_crate, module) = module_path!()
        .split_once("::")
        .expect("this file is a module of a test crate");
    format!("{module}::helper_process")
}

/// Not a test by itself: the entry point of the helper process. Without
/// the environment variable it returns at once.
#[test]
fn helper_process() {
    let Ok(spec) = std::env::var(HELPER_ENV) else {
        return;
    };
    let args: Vec<&str> = spec.split('\n').collect();
    let answer = helper_main(&args);
    // After libtest's "test source_script::helper_process ... " on the
    // same line.
    println!("READY {answer}");
    std::io::stdout().flush().unwrap();
    // Hold whatever was taken until the parent closes our stdin.
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    std::process::exit(0);
}

fn helper_main(args: &[&str]) -> String {
    let lock_type = |s: &str| match s {
        "r" => libc::F_RDLCK,
        "w" => libc::F_WRLCK,
        other => panic!("lock type {other}"),
    };
    match args {
        // A process-associated (POSIX) or open-file-description lock,
        // non-blocking or waiting; "close-other" then opens and closes a
        // second descriptor of the file (which drops POSIX locks).
        [kind @ ("posix" | "posix-close-other" | "posix-wait" | "ofd"), typ, start, len, path] => {
            let f = match open(Path::new(path), libc::O_RDWR, 0) {
                Ok(f) => f,
                Err(e) => return errno_name(e),
            };
            let cmd = match *kind {
                "ofd" => libc::F_OFD_SETLK,
                "posix-wait" => libc::F_SETLKW,
                _ => libc::F_SETLK,
            };
            if *kind == "posix-wait" {
                // The parent starts its clock at this line.
                println!("WAITING");
                std::io::stdout().flush().unwrap();
            }
            let t = Instant::now();
            let r = setlk(
                &f,
                cmd,
                lock_type(typ),
                start.parse().unwrap(),
                len.parse().unwrap(),
            );
            if *kind == "posix-close-other" {
                drop(open(Path::new(path), libc::O_RDONLY, 0));
            }
            let answer = res_text(&r);
            // Keep `f` (and its locks) until the process exits.
            std::mem::forget(f);
            if *kind == "posix-wait" {
                format!("{answer} after {} ms", t.elapsed().as_millis())
            } else {
                answer
            }
        }
        ["flock", how, path] => {
            let f = match open(Path::new(path), libc::O_RDONLY, 0) {
                Ok(f) => f,
                Err(e) => return errno_name(e),
            };
            let op = if *how == "ex" {
                libc::LOCK_EX
            } else {
                libc::LOCK_SH
            };
            let r = flock(&f, op | libc::LOCK_NB);
            std::mem::forget(f);
            res_text(&r)
        }
        ["as-user", uid, gid, op, path] => {
            let (uid, gid): (u32, u32) = (uid.parse().unwrap(), gid.parse().unwrap());
            // SAFETY: plain syscalls changing this (helper) process's ids;
            // glibc applies them to every thread.
            let dropped = unsafe {
                libc::setgroups(0, std::ptr::null()) == 0
                    && libc::setresgid(gid, gid, gid) == 0
                    && libc::setresuid(uid, uid, uid) == 0
            };
            assert!(
                dropped,
                "cannot become {uid}:{gid}: {}",
                errno_name(errno())
            );
            let p = Path::new(path);
            let r = match *op {
                "stat" => lstat(p).map(drop),
                "open-r" => open(p, libc::O_RDONLY, 0).map(drop),
                "append" => open(p, libc::O_WRONLY | libc::O_APPEND, 0)
                    .and_then(|f| write(&f, b"appended by another user\n"))
                    .map(drop),
                "write" => open(p, libc::O_WRONLY, 0)
                    .and_then(|f| pwrite(&f, b"W", 1))
                    .map(drop),
                "open-trunc" => open(p, libc::O_WRONLY | libc::O_TRUNC, 0).map(drop),
                "create" => open(p, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o666)
                    .and_then(|f| write(&f, b"mine\n"))
                    .map(drop),
                "mkdir" => mkdir(p, 0o777),
                "unlink" => unlink(p),
                "chmod" => chmod(p, 0o666),
                "utime-now" => utimensat(p, None, false),
                "utime-set" => utimensat(p, Some([timespec(1, 0), timespec(2, 0)]), false),
                "access-r" => access(p, libc::R_OK),
                "access-w" => access(p, libc::W_OK),
                "write-direct" => {
                    open(p, libc::O_WRONLY | libc::O_DIRECT, 0).and_then(|f| pwrite_direct(&f, 0))
                }
                "fallocate" => open(p, libc::O_WRONLY, 0).and_then(|f| fallocate(&f, 0, 0, 8192)),
                "ftruncate" => open(p, libc::O_WRONLY, 0).and_then(|f| ftruncate(&f, 10)),
                "set-acl-0640" => lsetxattr(
                    p,
                    ACL_ACCESS,
                    &acl(&[
                        (ACL_USER_OBJ, 6, NO_ID),
                        (ACL_GROUP_OBJ, 4, NO_ID),
                        (ACL_OTHER, 0, NO_ID),
                    ]),
                    0,
                ),
                other => panic!("helper op {other}"),
            };
            res_text(&r)
        }
        // Creates `path` as root under `umask`, as a regular file (mode
        // 0666), a directory (0777) or a fifo (0666).
        ["umask-create", umask, kind, path] => {
            let umask = u32::from_str_radix(umask, 8).unwrap();
            // SAFETY: umask always succeeds; this helper process is ours.
            unsafe { libc::umask(umask) };
            let p = Path::new(path);
            let r = match *kind {
                "file" => open(p, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o666).map(drop),
                "dir" => mkdir(p, 0o777),
                "fifo" => mknod(p, libc::S_IFIFO | 0o666, 0),
                other => panic!("umask-create kind {other}"),
            };
            res_text(&r)
        }
        // O_APPEND writes of `count` records of `size` bytes (see
        // `append_record`), started when the parent writes a byte to
        // stdin, so that all helpers append at once.
        ["append", tag, count, size, path] => {
            let f = open(Path::new(path), libc::O_WRONLY | libc::O_APPEND, 0);
            println!("OPENED {}", res_text(&f));
            std::io::stdout().flush().unwrap();
            let Ok(f) = f else {
                return "not opened".to_string();
            };
            let mut go = [0u8; 1];
            std::io::stdin().read_exact(&mut go).unwrap();
            let (tag, count): (usize, usize) = (tag.parse().unwrap(), count.parse().unwrap());
            assert_eq!(size.parse::<usize>().unwrap(), APPEND_RECORD);
            for i in 0..count {
                let rec = append_record(tag, i);
                match write(&f, &rec) {
                    Ok(n) if n == rec.len() => {}
                    Ok(n) => return format!("short append of {n} bytes"),
                    Err(e) => return errno_name(e),
                }
            }
            "ok".to_string()
        }
        other => panic!("helper arguments {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// The script.

struct Step {
    name: &'static str,
    /// Runs only where other users may use the filesystem (raw tmpfs, or
    /// a mount with allow_other).
    other_users: bool,
    run: fn(&mut Ctx),
}

const SCRIPT: &[Step] = &[
    Step {
        name: "errnos",
        other_users: false,
        run: errnos,
    },
    Step {
        name: "symlinks",
        other_users: false,
        run: symlinks,
    },
    Step {
        name: "modes_owners_times",
        other_users: false,
        run: modes_owners_times,
    },
    Step {
        name: "chown_and_setid",
        other_users: false,
        run: chown_and_setid,
    },
    Step {
        name: "times_across_boundaries",
        other_users: false,
        run: times_across_boundaries,
    },
    Step {
        name: "hard_links",
        other_users: false,
        run: hard_links,
    },
    Step {
        name: "rename_flags",
        other_users: false,
        run: rename_flags,
    },
    Step {
        name: "xattrs",
        other_users: false,
        run: xattrs,
    },
    Step {
        name: "partial_page_write_wronly",
        other_users: false,
        run: partial_page_write_wronly,
    },
    Step {
        name: "append_two_writers",
        other_users: false,
        run: append_two_writers,
    },
    Step {
        name: "mtime_after_write_and_close",
        other_users: false,
        run: mtime_after_write_and_close,
    },
    Step {
        name: "truncate_while_dirty",
        other_users: false,
        run: truncate_while_dirty,
    },
    Step {
        name: "mmap_write_read_through_source",
        other_users: false,
        run: mmap_write_read_through_source,
    },
    Step {
        name: "sparse_files",
        other_users: false,
        run: sparse_files,
    },
    Step {
        name: "special_files_and_listing",
        other_users: false,
        run: special_files_and_listing,
    },
    Step {
        name: "locks_between_processes",
        other_users: false,
        run: locks_between_processes,
    },
    Step {
        name: "other_users",
        other_users: true,
        run: other_users,
    },
    Step {
        name: "setid_after_writes_by_others",
        other_users: true,
        run: setid_after_writes_by_others,
    },
    Step {
        name: "posix_acls",
        other_users: false,
        run: posix_acls,
    },
    Step {
        name: "posix_acl_access_checks",
        other_users: true,
        run: posix_acl_access_checks,
    },
    Step {
        name: "statfs",
        other_users: false,
        run: statfs,
    },
    Step {
        name: "readdir_10000_with_concurrent_unlinks",
        other_users: false,
        run: readdir_10000_with_concurrent_unlinks,
    },
    Step {
        name: "mmap_write_then_truncate",
        other_users: false,
        run: mmap_write_then_truncate,
    },
    Step {
        name: "pwrite_pread_unaligned",
        other_users: false,
        run: pwrite_pread_unaligned,
    },
    Step {
        name: "append_from_processes",
        other_users: false,
        run: append_from_processes,
    },
    Step {
        name: "direct_io_and_buffered",
        other_users: false,
        run: direct_io_and_buffered,
    },
    Step {
        name: "mixed_io_fsx_like",
        other_users: false,
        run: mixed_io_fsx_like,
    },
];

/// ENOENT, EEXIST, ENOTEMPTY, EISDIR, ENOTDIR, EINVAL and friends.
fn errnos(c: &mut Ctx) {
    let (d, f) = (c.p("d"), c.p("f"));
    c.ok("mkdir d", mkdir(&d, 0o755));
    c.fails("mkdir d again", mkdir(&d, 0o755), libc::EEXIST);
    c.ok("write f", write_file(&f, b"file f\n"));
    c.ok("mkdir d/sub", mkdir(&c.p("d/sub"), 0o755));
    c.ok("write d/sub/x", write_file(&c.p("d/sub/x"), b"x"));

    // ENOENT
    let missing = c.p("missing");
    c.fails(
        "open missing",
        open(&missing, libc::O_RDONLY, 0),
        libc::ENOENT,
    );
    c.fails("lstat missing", lstat(&missing), libc::ENOENT);
    c.fails("unlink missing", unlink(&missing), libc::ENOENT);
    c.fails("rmdir missing", rmdir(&missing), libc::ENOENT);
    c.fails("readlink missing", readlink(&missing), libc::ENOENT);
    c.fails(
        "rename missing",
        rename(&missing, &c.p("other")),
        libc::ENOENT,
    );
    c.fails("link missing", link(&missing, &c.p("other")), libc::ENOENT);
    c.fails(
        "O_CREAT in a missing directory",
        open(&c.p("missing/x"), libc::O_CREAT | libc::O_WRONLY, 0o644),
        libc::ENOENT,
    );
    c.fails(
        "getxattr on missing",
        lgetxattr(&missing, "user.x", 0),
        libc::ENOENT,
    );

    // EEXIST
    c.fails(
        "O_CREAT|O_EXCL on f",
        open(&f, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o644),
        libc::EEXIST,
    );
    c.fails("link f f", link(&f, &f), libc::EEXIST);
    c.fails("symlink at f", symlink("x", &f), libc::EEXIST);
    c.fails(
        "mknod fifo at f",
        mknod(&f, libc::S_IFIFO | 0o644, 0),
        libc::EEXIST,
    );
    c.fails("mkdir at f", mkdir(&f, 0o755), libc::EEXIST);
    c.fails(
        "O_CREAT|O_EXCL on d",
        open(&d, libc::O_CREAT | libc::O_EXCL | libc::O_RDONLY, 0o644),
        libc::EEXIST,
    );

    // ENOTEMPTY
    c.fails("rmdir d", rmdir(&d), libc::ENOTEMPTY);
    c.fails("rmdir d/sub", rmdir(&c.p("d/sub")), libc::ENOTEMPTY);
    c.ok("mkdir e", mkdir(&c.p("e"), 0o755));
    c.fails("rename e over d", rename(&c.p("e"), &d), libc::ENOTEMPTY);

    // EISDIR
    c.fails("open d O_WRONLY", open(&d, libc::O_WRONLY, 0), libc::EISDIR);
    c.fails("open d O_RDWR", open(&d, libc::O_RDWR, 0), libc::EISDIR);
    c.fails(
        "open d O_CREAT",
        open(&d, libc::O_CREAT | libc::O_RDONLY, 0o644),
        libc::EISDIR,
    );
    c.fails("unlink d", unlink(&d), libc::EISDIR);
    c.fails("rename f over d", rename(&f, &d), libc::EISDIR);
    if let Some(dir) = c.res("open d O_RDONLY", open(&d, libc::O_RDONLY, 0)) {
        c.fails("read(2) on a directory", pread(&dir, 10, 0), libc::EISDIR);
    }

    // ENOTDIR
    c.fails(
        "open f/x",
        open(&c.p("f/x"), libc::O_RDONLY, 0),
        libc::ENOTDIR,
    );
    c.fails("lstat f/x", lstat(&c.p("f/x")), libc::ENOTDIR);
    c.fails("mkdir f/y", mkdir(&c.p("f/y"), 0o755), libc::ENOTDIR);
    c.fails("rmdir f", rmdir(&f), libc::ENOTDIR);
    c.fails(
        "open f O_DIRECTORY",
        open(&f, libc::O_RDONLY | libc::O_DIRECTORY, 0),
        libc::ENOTDIR,
    );
    c.fails("rename d over f", rename(&d, &f), libc::ENOTDIR);
    c.fails("unlink f/", unlink(&c.p("f/")), libc::ENOTDIR);

    // EINVAL
    c.fails(
        "rename d into d/sub/z",
        rename(&d, &c.p("d/sub/z")),
        libc::EINVAL,
    );
    c.fails("rmdir d/.", rmdir(&c.p("d/.")), libc::EINVAL);
    c.fails("readlink f", readlink(&f), libc::EINVAL);
    c.fails(
        "renameat2 NOREPLACE|EXCHANGE",
        renameat2(
            &f,
            &c.p("g"),
            libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE,
        ),
        libc::EINVAL,
    );
    c.fails("truncate f to -1", truncate(&f, -1), libc::EINVAL);
    if let Some(ro) = c.res("open f O_RDONLY", open(&f, libc::O_RDONLY, 0)) {
        c.fails("ftruncate a read-only fd", ftruncate(&ro, 0), libc::EINVAL);
        c.fails("write a read-only fd", write(&ro, b"x"), libc::EBADF);
        c.fails(
            "SEEK_DATA past the end",
            lseek(&ro, 100, libc::SEEK_DATA),
            libc::ENXIO,
        );
    }
    if let Some(wo) = c.res("open f O_WRONLY", open(&f, libc::O_WRONLY, 0)) {
        c.fails("read a write-only fd", pread(&wo, 1, 0), libc::EBADF);
    }

    // EPERM, ENAMETOOLONG
    c.fails(
        "hard link to a directory",
        link(&d, &c.p("d2")),
        libc::EPERM,
    );
    let long = "n".repeat(256);
    c.fails(
        "create a 256-byte name",
        open(&c.p(&long), libc::O_CREAT | libc::O_WRONLY, 0o644),
        libc::ENAMETOOLONG,
    );
    let longest = "n".repeat(255);
    c.ok(
        "create a 255-byte name",
        open(&c.p(&longest), libc::O_CREAT | libc::O_WRONLY, 0o644),
    );
    c.listing("");
    c.stat("d");
    c.stat("f");
}

/// symlink, readlink, lstat/stat, dangling links, ELOOP, O_NOFOLLOW.
fn symlinks(c: &mut Ctx) {
    c.ok("write target", write_file(&c.p("target"), b"target\n"));
    c.ok("symlink l -> target", symlink("target", &c.p("l")));
    c.ok(
        "symlink dangling -> nowhere",
        symlink("nowhere", &c.p("dangling")),
    );
    c.ok("symlink loop -> loop", symlink("loop", &c.p("loop")));
    let long_target = "x/".repeat(2000) + "end";
    c.ok("symlink long", symlink(&long_target, &c.p("long")));
    let r = readlink(&c.p("l"));
    c.data("readlink l", r);
    let r = readlink(&c.p("long"));
    c.data("readlink long", r);
    let r = readlink_into(&c.p("long"), 5);
    c.data("readlink long into 5 bytes", r);
    c.stat("l");
    c.stat_follow("l");
    c.stat("long");
    c.stat("dangling");
    c.fails("stat dangling", stat(&c.p("dangling")), libc::ENOENT);
    c.fails("stat loop", stat(&c.p("loop")), libc::ELOOP);
    c.fails(
        "open l O_NOFOLLOW",
        open(&c.p("l"), libc::O_RDONLY | libc::O_NOFOLLOW, 0),
        libc::ELOOP,
    );
    c.content("l");
    // O_CREAT through a dangling symlink creates its target.
    c.ok(
        "O_CREAT through dangling",
        open(&c.p("dangling"), libc::O_CREAT | libc::O_WRONLY, 0o640),
    );
    c.stat("nowhere");
    c.ok("lchown the symlink", lchown(&c.p("l"), 4321, 8765));
    c.stat("l");
    c.stat("target");
    c.ok(
        "utimensat the symlink itself",
        utimensat(
            &c.p("l"),
            Some([timespec(1_000_000_000, 111), timespec(1_000_000_001, 222)]),
            true,
        ),
    );
    if let Some(t) = c.times("l") {
        c.text("symlink atime/mtime", format!("{} {}", t.atime, t.mtime));
    }
    c.fails(
        "user xattr on a symlink",
        lsetxattr(&c.p("l"), "user.x", b"v", 0),
        libc::EPERM,
    );
    c.ok("unlink the symlink", unlink(&c.p("l")));
    c.stat("target");
    c.listing("");
}

/// chmod, chown (and what it clears), utimensat with explicit times,
/// UTIME_OMIT and UTIME_NOW.
fn modes_owners_times(c: &mut Ctx) {
    let f = c.p("f");
    c.ok("write f", write_file(&f, b"0123456789"));
    c.ok("chmod 0640", chmod(&f, 0o640));
    c.stat("f");
    c.ok("chmod 06755", chmod(&f, 0o6755));
    c.stat("f");
    let before = c.times("f");
    tick();
    // chown clears set-user-ID and set-group-ID on an executable file, for
    // root too.
    c.ok("chown 1234:5678", lchown(&f, 1234, 5678));
    c.stat("f");
    if let (Some(b), Some(a)) = (before, c.times("f")) {
        c.must("chown advanced ctime", a.ctime > b.ctime);
        c.must("chown left mtime", a.mtime == b.mtime);
    }
    c.ok("chown -1:42", lchown(&f, u32::MAX, 42));
    c.stat("f");
    c.ok("chmod 02710", chmod(&f, 0o2710));
    c.stat("f");
    c.ok("mkdir d", mkdir(&c.p("d"), 0o755));
    c.ok("chmod d 01777", chmod(&c.p("d"), 0o1777));
    c.ok("chown d 7:8", lchown(&c.p("d"), 7, 8));
    c.stat("d");
    c.ok("chmod d 02775", chmod(&c.p("d"), 0o2775));
    // A directory with set-group-ID passes its group on.
    c.ok("create d/child", write_file(&c.p("d/child"), b"child"));
    c.ok("mkdir d/subdir", mkdir(&c.p("d/subdir"), 0o755));
    c.stat("d/child");
    c.stat("d/subdir");

    // Explicit times are kept exactly.
    let explicit = [
        timespec(1_000_000_000, 123_456_789),
        timespec(1_100_000_000, 987_654_321),
    ];
    c.ok("utimensat explicit", utimensat(&f, Some(explicit), false));
    if let Some(t) = c.times("f") {
        c.text(
            "atime/mtime after explicit",
            format!("{} {}", t.atime, t.mtime),
        );
    }
    c.ok(
        "utimensat mtime only (atime UTIME_OMIT)",
        utimensat(
            &f,
            Some([timespec(0, libc::UTIME_OMIT), timespec(1_200_000_000, 5)]),
            false,
        ),
    );
    if let Some(t) = c.times("f") {
        c.text(
            "atime/mtime after UTIME_OMIT",
            format!("{} {}", t.atime, t.mtime),
        );
    }
    let t0 = now_coarse();
    tick();
    c.ok(
        "utimensat UTIME_NOW",
        utimensat(
            &f,
            Some([timespec(0, libc::UTIME_NOW), timespec(0, libc::UTIME_NOW)]),
            false,
        ),
    );
    let t1 = now_fine();
    if let Some(t) = c.times("f") {
        c.must(
            "UTIME_NOW: atime and mtime between before and after",
            (t0..=t1).contains(&t.atime) && (t0..=t1).contains(&t.mtime),
        );
        c.must("UTIME_NOW: ctime >= mtime", t.ctime >= t.mtime);
    }
    c.ok("utimensat NULL (now)", utimensat(&c.p("d"), None, false));
    let t2 = now_fine();
    if let Some(t) = c.times("d") {
        c.must("times NULL: now", (t0..=t2).contains(&t.mtime));
    }
    // truncate(2) changes size, mtime and ctime.
    let before = c.times("f");
    tick();
    c.ok("truncate to 4", truncate(&f, 4));
    c.stat("f");
    if let (Some(b), Some(a)) = (before, c.times("f")) {
        c.must("truncate advanced mtime", a.mtime > b.mtime);
        c.must("truncate: ctime >= mtime", a.ctime >= a.mtime);
    }
    c.content("f");
    c.source_content("f");
}

/// chown(2) clears set-user-ID, and set-group-ID with group-execute, of a
/// regular file even when the owner does not change, for root too
/// (chown_common always asks notify_change to kill them, and
/// notify_change then clears them whatever the caller's capabilities), and
/// any chown, even one that changes nothing (-1, -1), updates ctime.
fn chown_and_setid(c: &mut Ctx) {
    let f = c.p("f");
    c.ok("write f", write_file(&f, b"setid"));
    let Ok(owner) = lstat(&f) else {
        return c.unexpected("lstat f", "failed".into());
    };
    let (uid, gid) = (owner.uid(), owner.gid());
    for (label, mode) in [("06555", 0o6555), ("06755", 0o6755), ("02644", 0o2644)] {
        c.ok(&format!("chmod {label}"), chmod(&f, mode));
        c.ok(
            &format!("chown to the same owner after {label}"),
            lchown(&f, uid, gid),
        );
        c.stat("f");
    }
    c.ok("chmod 06755 again", chmod(&f, 0o6755));
    let before = c.times("f");
    tick();
    c.ok("chown -1:-1", lchown(&f, u32::MAX, u32::MAX));
    c.stat("f");
    if let (Some(b), Some(a)) = (before, c.times("f")) {
        c.must("chown -1:-1 advanced ctime", a.ctime > b.ctime);
    }
}

/// Timestamps before 1970 and at the 32- and 34-bit boundaries round-trip
/// through utimensat and stat (utimensat(2): any time64_t with
/// nanoseconds below 10^9; tmpfs keeps them all), through the mount and on
/// the source, which is what a later mount reads them from.
fn times_across_boundaries(c: &mut Ctx) {
    let f = c.p("f");
    c.ok("write f", write_file(&f, b"times"));
    for (label, sec, nsec) in [
        ("1960-01-01", -315_619_200, 0),
        ("-1 s", -1, 0),
        ("-1 s and a half", -2, 500_000_000),
        ("INT32_MIN", i64::from(i32::MIN), 1),
        ("INT32_MIN - 1", i64::from(i32::MIN) - 1, 999_999_999),
        ("epoch", 0, 0),
        ("INT32_MAX", i64::from(i32::MAX), 999_999_999),
        ("2^31", 1 << 31, 0),
        ("2^32 - 1", (1 << 32) - 1, 0),
        ("2^32", 1 << 32, 7),
        ("2^34 - 1", (1 << 34) - 1, 0),
        ("2^34", 1 << 34, 0),
    ] {
        let times = [timespec(sec, nsec), timespec(sec + 3600, nsec)];
        c.ok(label, utimensat(&f, Some(times), false));
        for (side, path) in [("mount", f.clone()), ("source", c.src.join("f"))] {
            let seen = lstat(&path).map(|m| {
                format!(
                    "atime {}.{:09} mtime {}.{:09}",
                    m.atime(),
                    m.atime_nsec(),
                    m.mtime(),
                    m.mtime_nsec()
                )
            });
            match seen {
                Ok(t) => c.text(&format!("{label}: {side}"), t),
                Err(e) => c.text(&format!("{label}: {side}"), errno_name(e)),
            }
        }
    }
}

/// nlink counts, shared inode numbers, data through another name.
fn hard_links(c: &mut Ctx) {
    let (f, g, h) = (c.p("f"), c.p("g"), c.p("h"));
    c.ok("write f", write_file(&f, b"first\n"));
    c.ok("write other", write_file(&c.p("other"), b"other\n"));
    c.ok("link f g", link(&f, &g));
    c.ok("mkdir d", mkdir(&c.p("d"), 0o755));
    c.ok("link f d/h2", link(&f, &c.p("d/h2")));
    c.ok("link g h", link(&g, &h));
    let ms: Vec<_> = ["f", "g", "h", "d/h2", "other"]
        .iter()
        .map(|n| c.stat(n))
        .collect();
    if let [Some(f), Some(g), Some(h), Some(h2), Some(o)] = &ms[..] {
        // st_ino itself differs between the sides; the relation must not.
        c.must(
            "f, g, h, d/h2 share one inode",
            f.ino() == g.ino() && g.ino() == h.ino() && h.ino() == h2.ino(),
        );
        c.must("other is another inode", o.ino() != f.ino());
    }
    c.ok("unlink f", unlink(&f));
    c.stat("g");
    if let Some(file) = c.ok(
        "open g O_WRONLY|O_APPEND",
        open(&g, libc::O_WRONLY | libc::O_APPEND, 0),
    ) {
        c.ok("append through g", write(&file, b"through g\n"));
    }
    c.content("h");
    c.stat("h");
    c.content("d/h2");
    // Renaming one link of an inode over another link of it does nothing.
    c.ok("rename g over h", rename(&g, &h));
    c.stat("g");
    c.stat("h");
    c.ok("unlink d/h2", unlink(&c.p("d/h2")));
    c.stat("h");
    c.source_content("h");

    // Directory link counts.
    c.ok("mkdir p", mkdir(&c.p("p"), 0o755));
    c.stat("p");
    c.ok("mkdir p/a", mkdir(&c.p("p/a"), 0o755));
    c.ok("mkdir p/b", mkdir(&c.p("p/b"), 0o755));
    c.stat("p");
    c.ok("rmdir p/a", rmdir(&c.p("p/a")));
    c.stat("p");
    c.ok("rename p/b out of p", rename(&c.p("p/b"), &c.p("b")));
    c.stat("p");
    c.stat("");
    // An open file keeps its data after its last name goes.
    if let Some(file) = c.ok("open h", open(&h, libc::O_RDWR, 0)) {
        c.ok("unlink h", unlink(&h));
        c.ok("unlink g", unlink(&g));
        let r = file.metadata().map_err(io).map(|m| m.nlink() as i64);
        if let Some(n) = c.res("fstat after the last unlink", r) {
            c.num("nlink of the open, unlinked file", n);
        }
        let r = pread(&file, 100, 0);
        c.data("read the unlinked file", r);
    }
    c.listing("");
}

/// renameat2 with RENAME_NOREPLACE and RENAME_EXCHANGE, and plain rename
/// keeping inodes.
fn rename_flags(c: &mut Ctx) {
    c.ok("write a", write_file(&c.p("a"), b"A"));
    c.ok("write b", write_file(&c.p("b"), b"B"));
    c.fails(
        "NOREPLACE a over existing b",
        renameat2(&c.p("a"), &c.p("b"), libc::RENAME_NOREPLACE),
        libc::EEXIST,
    );
    c.content("a");
    c.content("b");
    c.ok(
        "NOREPLACE a to new c",
        renameat2(&c.p("a"), &c.p("c"), libc::RENAME_NOREPLACE),
    );
    c.fails("lstat a", lstat(&c.p("a")), libc::ENOENT);
    c.content("c");

    c.ok("mkdir d", mkdir(&c.p("d"), 0o750));
    c.ok("write d/inner", write_file(&c.p("d/inner"), b"inner"));
    let ino_c = lstat(&c.p("c")).map(|m| m.ino()).ok();
    let ino_d = lstat(&c.p("d")).map(|m| m.ino()).ok();
    c.ok(
        "EXCHANGE file c and directory d",
        renameat2(&c.p("c"), &c.p("d"), libc::RENAME_EXCHANGE),
    );
    c.stat("c");
    c.stat("d");
    c.content("d");
    c.listing("c");
    c.content("c/inner");
    let (now_c, now_d) = (
        lstat(&c.p("c")).map(|m| m.ino()).ok(),
        lstat(&c.p("d")).map(|m| m.ino()).ok(),
    );
    c.must(
        "EXCHANGE swapped the inodes",
        ino_c.is_some() && now_d == ino_c && now_c == ino_d,
    );
    c.fails(
        "EXCHANGE with a missing target",
        renameat2(&c.p("c"), &c.p("missing"), libc::RENAME_EXCHANGE),
        libc::ENOENT,
    );
    c.fails(
        "NOREPLACE onto a directory",
        renameat2(&c.p("b"), &c.p("c"), libc::RENAME_NOREPLACE),
        libc::EEXIST,
    );

    // Across directories: the parents' link counts follow.
    c.ok("mkdir p1", mkdir(&c.p("p1"), 0o755));
    c.ok("mkdir p2", mkdir(&c.p("p2"), 0o755));
    c.ok("mkdir p1/x", mkdir(&c.p("p1/x"), 0o755));
    c.ok("write p2/y", write_file(&c.p("p2/y"), b"y"));
    c.ok(
        "EXCHANGE p1/x and p2/y",
        renameat2(&c.p("p1/x"), &c.p("p2/y"), libc::RENAME_EXCHANGE),
    );
    c.stat("p1");
    c.stat("p2");
    c.stat("p1/x");
    c.stat("p2/y");
    c.ok(
        "NOREPLACE p2/y to p1/z",
        renameat2(&c.p("p2/y"), &c.p("p1/z"), libc::RENAME_NOREPLACE),
    );
    c.stat("p1");
    c.stat("p2");

    // Plain rename over an existing file keeps the moved inode.
    let ino_b = lstat(&c.p("b")).map(|m| m.ino()).ok();
    c.ok("rename b over d", rename(&c.p("b"), &c.p("d")));
    c.must(
        "rename kept the inode",
        ino_b.is_some() && lstat(&c.p("d")).map(|m| m.ino()).ok() == ino_b,
    );
    c.content("d");
    c.ok("mkdir empty", mkdir(&c.p("empty"), 0o755));
    c.ok(
        "rename p2 over empty directory",
        rename(&c.p("p2"), &c.p("empty")),
    );
    c.stat("empty");
    c.listing("");
    c.listing("p1");
}

/// set/get/list/remove, size probes, ERANGE, ENODATA, XATTR_CREATE and
/// XATTR_REPLACE.
fn xattrs(c: &mut Ctx) {
    let f = c.p("f");
    c.ok("write f", write_file(&f, b"f"));
    c.fails(
        "get user.a (none)",
        lgetxattr(&f, "user.a", 0),
        libc::ENODATA,
    );
    let r = llistxattr(&f, 0).map(|v| v.len() as i64);
    if let Some(n) = c.ok("list size probe (none)", r) {
        c.num("list size (none)", n);
    }
    c.ok("set user.a", lsetxattr(&f, "user.a", b"value-a", 0));
    c.fails(
        "set user.a XATTR_CREATE",
        lsetxattr(&f, "user.a", b"again", libc::XATTR_CREATE),
        libc::EEXIST,
    );
    c.fails(
        "set user.b XATTR_REPLACE",
        lsetxattr(&f, "user.b", b"b", libc::XATTR_REPLACE),
        libc::ENODATA,
    );
    let big = pattern(300, 7);
    c.ok("set user.b (300 bytes)", lsetxattr(&f, "user.b", &big, 0));
    c.ok("set user.empty", lsetxattr(&f, "user.empty", b"", 0));
    let large = pattern(16 * 1024, 9);
    c.ok(
        "set user.large (16 KiB)",
        lsetxattr(&f, "user.large", &large, 0),
    );
    c.ok(
        "set trusted.t as root",
        lsetxattr(&f, "trusted.t", b"trusted", 0),
    );
    let r = lgetxattr(&f, "user.a", 0).map(|v| v.len() as i64);
    if let Some(n) = c.ok("get user.a size probe", r) {
        c.num("user.a size", n);
    }
    c.fails(
        "get user.a into 3 bytes",
        lgetxattr(&f, "user.a", 3),
        libc::ERANGE,
    );
    let r = lgetxattr(&f, "user.a", 100);
    c.data("get user.a", r);
    let r = lgetxattr(&f, "user.b", 300);
    c.data("get user.b into exactly 300", r);
    let r = lgetxattr(&f, "user.empty", 10);
    c.data("get user.empty", r);
    let r = lgetxattr(&f, "user.large", 65536);
    c.data("get user.large", r);
    let r = lgetxattr(&f, "trusted.t", 100);
    c.data("get trusted.t", r);
    c.ok(
        "replace user.a XATTR_REPLACE",
        lsetxattr(&f, "user.a", b"A2", libc::XATTR_REPLACE),
    );
    let r = lgetxattr(&f, "user.a", 100);
    c.data("get user.a after replace", r);
    let r = llistxattr(&f, 0).map(|v| v.len() as i64);
    if let Some(n) = c.ok("list size probe", r) {
        c.num("list size", n);
    }
    c.fails("list into 1 byte", llistxattr(&f, 1), libc::ERANGE);
    let r = llistxattr(&f, 4096);
    c.data("list (raw order)", r);
    c.fails(
        "set an unknown namespace",
        lsetxattr(&f, "foo.bar", b"x", 0),
        libc::EOPNOTSUPP,
    );
    c.ok("remove user.a", lremovexattr(&f, "user.a"));
    c.fails(
        "remove user.a again",
        lremovexattr(&f, "user.a"),
        libc::ENODATA,
    );
    c.fails(
        "get user.a removed",
        lgetxattr(&f, "user.a", 100),
        libc::ENODATA,
    );
    let r = llistxattr(&f, 4096);
    c.data("list after remove", r);

    c.ok("mkdir d", mkdir(&c.p("d"), 0o755));
    c.ok(
        "set user.dir on d",
        lsetxattr(&c.p("d"), "user.dir", b"D", 0),
    );
    let r = lgetxattr(&c.p("d"), "user.dir", 10);
    c.data("get user.dir", r);
    let r = llistxattr(&c.p("d"), 4096);
    c.data("list d", r);
    // A hard link sees the same attributes.
    c.ok("link f g", link(&f, &c.p("g")));
    let r = lgetxattr(&c.p("g"), "user.b", 1000);
    c.data("get user.b through g", r);
    c.stat("f");
}

/// Writeback rule: the kernel reads the page around a partial write even
/// on a write-only open.
fn partial_page_write_wronly(c: &mut Ctx) {
    let original = pattern(3 * 4096, 1);
    c.ok("write f (3 pages)", write_file(&c.p("f"), &original));
    if let Some(f) = c.ok("open f O_WRONLY", open(&c.p("f"), libc::O_WRONLY, 0)) {
        let r = pwrite(&f, &[b'X'; 100], 5000).map(|n| n as i64);
        if let Some(n) = c.ok("pwrite 100 bytes at 5000", r) {
            c.num("written", n);
        }
        // Seen by another descriptor before close.
        let r = read_file(&c.p("f"));
        c.data("content before close", r);
        let r = pwrite(&f, &[b'Y'; 100], 12250).map(|n| n as i64);
        c.res("pwrite 100 bytes at 12250 (extends)", r);
        let r = pwrite(&f, b"Z", 20000).map(|n| n as i64);
        c.res("pwrite 1 byte at 20000 (hole)", r);
    }
    c.content("f");
    c.source_content("f");
    c.stat("f");
    // A write-only file the caller cannot read (root can; the daemon must
    // not need to either).
    c.ok("write g", write_file(&c.p("g"), &pattern(8192, 2)));
    c.ok("chmod g 0200", chmod(&c.p("g"), 0o200));
    if let Some(f) = c.ok("open g O_WRONLY", open(&c.p("g"), libc::O_WRONLY, 0)) {
        c.ok("pwrite 10 bytes at 4090", pwrite(&f, b"0123456789", 4090));
    }
    c.content("g");
    c.source_content("g");
}

/// Writeback rule: the kernel does appends (O_APPEND is stripped at the
/// source); two writers lose nothing.
fn append_two_writers(c: &mut Ctx) {
    let p = c.p("log");
    c.ok("write log", write_file(&p, b"start\n"));
    let a = c.ok(
        "open writer A O_WRONLY|O_APPEND",
        open(&p, libc::O_WRONLY | libc::O_APPEND, 0),
    );
    let b = c.ok(
        "open writer B O_RDWR|O_APPEND",
        open(&p, libc::O_RDWR | libc::O_APPEND, 0),
    );
    let mut expected = 6i64;
    if let (Some(a), Some(b)) = (&a, &b) {
        let mut failures = 0;
        for i in 0..50 {
            let ra = format!("A{i:02}{}\n", "a".repeat(i % 7));
            let rb = format!("B{i:02}{}\n", "b".repeat(i % 11));
            failures += usize::from(write(a, ra.as_bytes()).is_err());
            failures += usize::from(write(b, rb.as_bytes()).is_err());
            expected += (ra.len() + rb.len()) as i64;
        }
        c.num("failed appends", failures as i64);
        // pwrite on an O_APPEND descriptor appends too (Linux).
        c.ok("pwrite at 0 on writer A", pwrite(a, b"P\n", 0));
        expected += 2;
        if let Some(o) = c.res("lseek A", lseek(a, 0, libc::SEEK_CUR)) {
            c.num("offset of A", o);
        }
        if let Some(o) = c.res("lseek B", lseek(b, 0, libc::SEEK_CUR)) {
            c.num("offset of B", o);
        }
        // Writer B reads what A appended, through the same file.
        let r = pread(b, 7, 6);
        c.data("B reads A's first record", r);
    }
    drop((a, b));
    let size = lstat(&p).map(|m| m.size() as i64).unwrap_or(-1);
    c.must("size is the sum of all appends", size == expected);
    c.content("log");
    c.source_content("log");

    // Two threads appending at once: every record whole, none lost.
    let q = c.p("concurrent");
    c.ok("create concurrent", write_file(&q, b""));
    let results: Vec<Res<()>> = ["one", "two"]
        .iter()
        .map(|who| {
            let q = q.clone();
            let who = who.to_string();
            std::thread::spawn(move || -> Res<()> {
                let f = open(&q, libc::O_WRONLY | libc::O_APPEND, 0)?;
                for i in 0..400 {
                    let rec = format!("{who}-{i:04}-{}\n", "z".repeat(17 + i % 13));
                    let n = write(&f, rec.as_bytes())?;
                    assert_eq!(n, rec.len(), "short append");
                }
                Ok(())
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    for (i, r) in results.into_iter().enumerate() {
        c.ok(&format!("appending thread {i}"), r);
    }
    if let Some(data) = c.res("read concurrent", read_file(&q)) {
        let text = String::from_utf8_lossy(&data);
        let mut lines: Vec<&str> = text.lines().collect();
        let whole = lines.iter().all(|l| {
            l.len() > 9
                && (l.starts_with("one-") || l.starts_with("two-"))
                && l[9..].bytes().all(|b| b == b'z')
        });
        c.must("every record whole", whole);
        // The interleaving differs from run to run; the set must not.
        lines.sort_unstable();
        c.record("records, sorted", Obs::Data(lines.join("\n").into_bytes()));
        c.num("size", data.len() as i64);
    }
}

/// Writeback rule: mtime comes from the kernel (SETATTR at close) and must
/// not move after the data reaches the source.
fn mtime_after_write_and_close(c: &mut Ctx) {
    let old = [timespec(1_000_000_000, 0), timespec(1_000_000_000, 0)];
    c.ok("write f", write_file(&c.p("f"), &pattern(10_000, 3)));
    c.ok("write g", write_file(&c.p("g"), &pattern(10_000, 4)));
    c.ok("write r", write_file(&c.p("r"), &pattern(10_000, 5)));
    for n in ["f", "g", "r"] {
        c.ok(
            &format!("set {n}'s times in the past"),
            utimensat(&c.p(n), Some(old), false),
        );
    }
    tick();

    // f: write, close.
    let before = c.times("f");
    let write_start = now_coarse();
    let mut while_open = None;
    if let Some(file) = c.ok("open f O_WRONLY", open(&c.p("f"), libc::O_WRONLY, 0)) {
        c.ok("write 10 bytes at 100", pwrite(&file, b"0123456789", 100));
        while_open = c.times("f");
    }
    let after_close = c.times("f");
    if let (Some(b), Some(o), Some(a)) = (before, while_open, after_close) {
        c.must(
            "mtime advanced by the write (seen while open)",
            o.mtime > b.mtime && o.mtime >= write_start,
        );
        c.must(
            "mtime after close is the one seen while open",
            a.mtime == o.mtime,
        );
        c.must("ctime >= mtime after close", a.ctime >= a.mtime);
    }

    // g: write, then set an explicit mtime while the data may be dirty.
    if let Some(file) = c.ok("open g O_RDWR", open(&c.p("g"), libc::O_RDWR, 0)) {
        c.ok("write 10 bytes at 5000", pwrite(&file, b"abcdefghij", 5000));
        c.ok(
            "futimens while dirty",
            futimens(
                &file,
                [timespec(0, libc::UTIME_OMIT), timespec(1_300_000_000, 42)],
            ),
        );
    }
    if let Some(t) = c.times("g") {
        c.text("g mtime after close", t.mtime.to_string());
    }

    // r: read only.
    let r_before = c.times("r");
    let r = read_file(&c.p("r")).map(|d| d.len() as i64);
    c.res("read r", r);

    // Past the attribute timeout (1 s), the kernel asks the daemon again:
    // what the source kept must be what was seen.
    std::thread::sleep(Duration::from_millis(1200));
    let later = c.times("f");
    if let (Some(a), Some(l)) = (after_close, later) {
        c.must("mtime did not move again", l.mtime == a.mtime);
        c.must("ctime did not go back", l.ctime >= a.ctime);
        c.must("ctime >= mtime later", l.ctime >= l.mtime);
    }
    if let Some(t) = c.times("g") {
        c.text("g mtime later", t.mtime.to_string());
    }
    if let (Some(b), Some(a)) = (r_before, c.times("r")) {
        c.must(
            "a read leaves mtime and ctime",
            a.mtime == b.mtime && a.ctime == b.ctime,
        );
    }
    c.source_content("f");
    c.source_content("g");
    c.stat("f");
    c.stat("g");

    // fsync does not move it either; a second write does.
    if let Some(file) = c.ok("reopen f O_RDWR", open(&c.p("f"), libc::O_RDWR, 0)) {
        let b = c.times("f");
        c.ok("fsync f without writing", fsync(&file));
        let a = c.times("f");
        c.must(
            "fsync alone leaves mtime",
            b.map(|t| t.mtime) == a.map(|t| t.mtime),
        );
        tick();
        c.ok("write again", pwrite(&file, b"again", 0));
        c.ok("fsync f", fsync(&file));
        let w = c.times("f");
        c.must(
            "a second write advances mtime",
            matches!((a, w), (Some(a), Some(w)) if w.mtime > a.mtime),
        );
    }
    c.source_content("f");
}

/// Writeback rule: truncate while pages are dirty; the size and data that
/// result are the source's.
fn truncate_while_dirty(c: &mut Ctx) {
    let p = c.p("f");
    if let Some(f) = c.ok(
        "create f O_RDWR",
        open(&p, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o644),
    ) {
        c.ok("write 10000 bytes", pwrite(&f, &pattern(10_000, 6), 0));
        c.ok("ftruncate 3000", ftruncate(&f, 3000));
        let r = pread(&f, 10_000, 0);
        c.data("read after shrinking", r);
        c.ok("ftruncate 9000", ftruncate(&f, 9000));
        c.ok("write 4 bytes at 8990", pwrite(&f, b"tail", 8990));
        let r = pread(&f, 10_000, 0);
        c.data("read before close", r);
        let r = f.metadata().map(|m| m.size() as i64).map_err(io);
        if let Some(n) = c.res("fstat before close", r) {
            c.num("size before close", n);
        }
    }
    c.stat("f");
    c.content("f");
    c.source_content("f");

    // truncate(2) by path while another descriptor has dirty data.
    let q = c.p("g");
    if let Some(f) = c.ok(
        "create g O_WRONLY",
        open(&q, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o644),
    ) {
        c.ok("write 8192 bytes", write(&f, &pattern(8192, 8)));
        c.ok("truncate g to 100 by path", truncate(&q, 100));
        c.ok("write 10 more at the fd's offset", write(&f, b"after-trnc"));
        let r = lstat(&q).map(|m| m.size() as i64);
        if let Some(n) = c.res("lstat g before close", r) {
            c.num("g size before close", n);
        }
    }
    c.stat("g");
    c.content("g");
    c.source_content("g");

    // O_TRUNC open while another descriptor has dirty data.
    let r = c.p("h");
    if let Some(f) = c.ok(
        "create h",
        open(&r, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o644),
    ) {
        c.ok("write 5000 bytes", pwrite(&f, &pattern(5000, 9), 0));
        c.ok(
            "open h O_TRUNC elsewhere",
            open(&r, libc::O_WRONLY | libc::O_TRUNC, 0),
        );
        c.ok("write 3 bytes at 10", pwrite(&f, b"end", 10));
    }
    c.stat("h");
    c.content("h");
    c.source_content("h");
}

/// Writeback rule: data written through a shared mapping reaches the
/// source by msync, munmap and close.
fn mmap_write_read_through_source(c: &mut Ctx) {
    let len = 3 * 4096 + 100;
    c.ok("write f", write_file(&c.p("f"), &pattern(len, 10)));
    c.ok(
        "set f's times in the past",
        utimensat(
            &c.p("f"),
            Some([timespec(1_000_000_000, 0), timespec(1_000_000_000, 0)]),
            false,
        ),
    );
    let Some(f) = c.ok("open f O_RDWR", open(&c.p("f"), libc::O_RDWR, 0)) else {
        return;
    };
    // SAFETY: a fresh shared mapping of `len` bytes of an open file; no
    // other mapping aliases it, and it is unmapped below before `f` closes.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        c.record("mmap", Obs::Err(errno()));
        return;
    }
    c.record("mmap", Obs::Ok);
    {
        // SAFETY: `map` is a live mapping of `len` readable and writable
        // bytes (checked above); this slice is the only reference to it
        // until munmap.
        let bytes = unsafe { std::slice::from_raw_parts_mut(map.cast::<u8>(), len) };
        for (i, at) in [0, 4095, 4096, 9000, len - 1].into_iter().enumerate() {
            bytes[at] = b'M' + i as u8;
        }
        bytes[100..110].copy_from_slice(b"via-mmap!!");
        // A write(2) through the fd shows in the mapping.
        c.ok("pwrite through the fd", pwrite(&f, b"via-fd", 8000));
        c.data("the mapping at 8000", Ok(bytes[8000..8006].to_vec()));
    }
    // SAFETY: `map` is the mapping made above, `len` bytes long.
    let r = cvt(unsafe { libc::msync(map, len, libc::MS_SYNC) });
    c.ok("msync MS_SYNC", r);
    // SAFETY: as above; no reference into the mapping is left.
    let r = cvt(unsafe { libc::munmap(map, len) });
    c.ok("munmap", r);
    drop(f);
    c.source_content("f");
    c.content("f");
    c.stat("f");
    if let Some(t) = c.times("f") {
        c.must("mtime advanced", t.mtime > nanos(1_000_000_000, 0));
    }

    // Mapping only (no write(2)): the stores alone must reach the source.
    c.ok("write g", write_file(&c.p("g"), &pattern(8192, 11)));
    let Some(g) = c.ok("open g O_RDWR", open(&c.p("g"), libc::O_RDWR, 0)) else {
        return;
    };
    // SAFETY: as for the first mapping, 8192 bytes of `g`.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            g.as_raw_fd(),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        c.record("mmap g", Obs::Err(errno()));
        return;
    }
    // SAFETY: live mapping of 8192 bytes, the only reference to it.
    let bytes = unsafe { std::slice::from_raw_parts_mut(map.cast::<u8>(), 8192) };
    bytes[4000..4200].fill(b'#');
    // SAFETY: the mapping made above; `bytes` is not used after this.
    let r = cvt(unsafe { libc::munmap(map, 8192) });
    c.ok("munmap g without msync", r);
    c.ok("fsync g", fsync(&g));
    drop(g);
    c.source_content("g");
    c.content("g");
}

/// fallocate modes, SEEK_DATA/SEEK_HOLE, sizes and block counts.
///
/// Normalised: st_blocks is compared after each close, not while the file
/// is open. Under the writeback cache the kernel keeps the attributes of
/// its last GETATTR/SETATTR reply for the attribute timeout and does not
/// invalidate st_blocks when its own writeback (or fsync) lands; FLUSH (at
/// close) does invalidate it (fs/fuse/file.c), so from then on it is the
/// source's. Size and mode are compared while open too.
fn sparse_files(c: &mut Ctx) {
    let f = c.p("f");
    if let Some(file) = c.ok("create f", open(&f, libc::O_RDWR | libc::O_CREAT, 0o644)) {
        c.ok(
            "write 4 KiB at 1 MiB",
            pwrite(&file, &pattern(4096, 12), 1 << 20),
        );
        c.ok("fsync", fsync(&file));
        c.open_stat("f", &file);
        if let Some(o) = c.res("SEEK_DATA from 0", lseek(&file, 0, libc::SEEK_DATA)) {
            c.num("data at", o);
        }
        if let Some(o) = c.res("SEEK_HOLE from 0", lseek(&file, 0, libc::SEEK_HOLE)) {
            c.num("hole at", o);
        }
    }
    c.stat("f");
    if let Some(file) = c.ok("open f O_RDWR", open(&f, libc::O_RDWR, 0)) {
        c.ok(
            "fallocate KEEP_SIZE 64 KiB past the end",
            fallocate(&file, libc::FALLOC_FL_KEEP_SIZE, (1 << 20) + 4096, 65536),
        );
        c.open_stat("f", &file);
    }
    c.stat("f");
    if let Some(file) = c.ok("open f O_WRONLY", open(&f, libc::O_WRONLY, 0)) {
        c.ok("fallocate 8 KiB at 0", fallocate(&file, 0, 0, 8192));
        c.ok(
            "punch a hole in the middle",
            fallocate(
                &file,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                (1 << 20) + 1024,
                2048,
            ),
        );
        // tmpfs has no FALLOC_FL_ZERO_RANGE (EOPNOTSUPP); compared, not
        // expected.
        c.res(
            "zero a range past the end",
            fallocate(&file, libc::FALLOC_FL_ZERO_RANGE, (1 << 20) + 8192, 100),
        );
        c.open_stat("f", &file);
    }
    c.stat("f");
    c.content("f");
    c.source_content("f");
}

// ---------------------------------------------------------------------------
// Data after mmap, truncate, O_APPEND from several processes and O_DIRECT
// (issue #15), and what a remount finds of it.

/// The page size of every machine the tests run on (x86-64, aarch64 with
/// 4 KiB pages), and the O_DIRECT alignment the steps keep to.
const PAGE: usize = 4096;

/// A shared read-write mapping of an open file; unmapped on drop unless
/// [`Mapping::unmap`] did it first.
///
/// It keeps a duplicate of the file's descriptor, to check the file's size
/// before touching a page: a page wholly past the end raises SIGBUS, which
/// would end the test process without its cleanup (the daemon and its
/// mount would stay). The duplicate changes nothing the steps observe: a
/// mapping holds the open file until munmap anyway, and FLUSH comes at
/// every close(2) of a descriptor, duplicated or not.
struct Mapping {
    addr: *mut libc::c_void,
    len: usize,
    file: File,
}

impl Mapping {
    /// `mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_SHARED, f, 0)`.
    fn shared(f: &File, len: usize) -> Res<Mapping> {
        let file = f.try_clone().map_err(io)?;
        // SAFETY: a fresh mapping chosen by the kernel (NULL hint), so it
        // aliases no Rust object; `f` is an open descriptor.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(errno());
        }
        Ok(Mapping { addr, len, file })
    }

    /// Whether `[at, at + n)` lies inside the mapping and in pages that
    /// hold some of the file; EFAULT (what touching them would be) if not.
    fn check(&self, at: usize, n: usize) -> Res<()> {
        let size = self.file.metadata().map_err(io)?.size() as usize;
        if at + n <= self.len && at + n <= size.div_ceil(PAGE) * PAGE {
            Ok(())
        } else {
            Err(libc::EFAULT)
        }
    }

    /// A copy of `[at, at + n)` (see [`Mapping::check`]).
    fn read(&self, at: usize, n: usize) -> Res<Vec<u8>> {
        self.check(at, n)?;
        let mut out = vec![0u8; n];
        // SAFETY: `[at, at + n)` lies inside the live mapping and in the
        // file's pages (checked); `out` is a separate allocation of `n`
        // bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(self.addr.cast::<u8>().add(at), out.as_mut_ptr(), n)
        };
        Ok(out)
    }

    /// Stores `data` at `at` (see [`Mapping::check`]).
    fn write(&self, at: usize, data: &[u8]) -> Res<()> {
        self.check(at, data.len())?;
        // SAFETY: as in `read`; the mapping is writable and no Rust
        // reference into it exists.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.addr.cast::<u8>().add(at), data.len())
        };
        Ok(())
    }

    fn msync(&self) -> Res<()> {
        // SAFETY: the live mapping made by `shared`, `len` bytes long.
        cvt(unsafe { libc::msync(self.addr, self.len, libc::MS_SYNC) }).map(drop)
    }

    fn unmap(mut self) -> Res<()> {
        let len = std::mem::take(&mut self.len);
        // SAFETY: the live mapping made by `shared`; `len` is now 0, so
        // drop does not unmap it again.
        cvt(unsafe { libc::munmap(self.addr, len) }).map(drop)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: the live mapping made by `shared`; nothing refers
            // into it past this point.
            unsafe { libc::munmap(self.addr, self.len) };
        }
    }
}

/// A page-aligned buffer, as O_DIRECT wants one.
struct Aligned {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let raw = vec![0u8; len + PAGE];
        let start = raw.as_ptr().align_offset(PAGE);
        Aligned { raw, start, len }
    }

    /// Filled with `data` (its length).
    fn with(data: &[u8]) -> Aligned {
        let mut a = Aligned::new(data.len());
        a.bytes_mut().copy_from_slice(data);
        a
    }

    fn bytes(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// pread(2) into a page-aligned buffer of `len` bytes (for O_DIRECT).
fn pread_aligned(f: &File, len: usize, off: u64) -> Res<Vec<u8>> {
    let mut buf = Aligned::new(len);
    let n = f.read_at(buf.bytes_mut(), off).map_err(io)?;
    Ok(buf.bytes()[..n].to_vec())
}

/// pwrite(2) of `data` from a page-aligned copy (for O_DIRECT).
fn pwrite_aligned(f: &File, data: &[u8], off: u64) -> Res<usize> {
    f.write_at(Aligned::with(data).bytes(), off).map_err(io)
}

/// Maps `f` (`len` bytes), records the mapping's `[at, at + n)`, unmaps.
fn fresh_mapping(c: &mut Ctx, label: &str, f: &File, len: usize, at: usize, n: usize) {
    match Mapping::shared(f, len) {
        Ok(m) => {
            c.data(label, m.read(at, n));
            let r = m.unmap();
            c.ok(&format!("{label}: munmap"), r);
        }
        Err(e) => c.record(label, Obs::Err(e)),
    }
}

/// Stores through a shared mapping, then ftruncate(2) smaller and larger
/// (POSIX: the bytes past the smaller size are gone, and a larger size
/// reads zeros there, through read(2) and through any mapping), once after
/// munmap and once with the mapping still in place.
fn mmap_write_then_truncate(c: &mut Ctx) {
    let len = 5 * PAGE + 300;
    c.ok("write f", write_file(&c.p("f"), &pattern(len, 20)));
    if let Some(f) = c.ok("open f O_RDWR", open(&c.p("f"), libc::O_RDWR, 0)) {
        if let Some(m) = c.ok("mmap f", Mapping::shared(&f, len)) {
            c.ok("mapped store of head", m.write(0, b"head"));
            c.ok(
                "mapped store of across-pages",
                m.write(PAGE - 6, b"across-pages"),
            );
            c.ok(
                "mapped store of third page",
                m.write(3 * PAGE + 7, b"third page"),
            );
            c.ok("mapped store of tail!", m.write(len - 5, b"tail!"));
            c.ok("munmap f without msync", m.unmap());
        }
        c.ok(
            "ftruncate f to 2 pages + 123",
            ftruncate(&f, 2 * 4096 + 123),
        );
        let r = pread(&f, len, 0);
        c.data("read f after shrinking", r);
        c.open_stat("f", &f);
        c.ok("ftruncate f to 6 pages + 1", ftruncate(&f, 6 * 4096 + 1));
        let r = pread(&f, 7 * PAGE, 0);
        c.data("read f after growing", r);
        c.open_stat("f", &f);
    }
    c.stat("f");
    c.content("f");
    c.source_content("f");
    // Last: on tmpfs, a read fault of a shared mapping allocates the pages
    // of holes (shmem_fault), which read(2) and a read from the source
    // (what fills FUSE's page cache) do not, so st_blocks would differ.
    if let Some(f) = c.ok("reopen f", open(&c.p("f"), libc::O_RDONLY, 0)) {
        fresh_mapping(c, "a fresh mapping of f", &f, 6 * PAGE + 1, 0, 6 * PAGE + 1);
    }

    // The mapping stays while the file shrinks under it: the partial last
    // page is zeroed past the new end, whole pages past it are dropped.
    let len = 4 * PAGE;
    c.ok("write g", write_file(&c.p("g"), &pattern(len, 21)));
    if let Some(g) = c.ok("open g O_RDWR", open(&c.p("g"), libc::O_RDWR, 0)) {
        if let Some(m) = c.ok("mmap g", Mapping::shared(&g, len)) {
            c.ok(
                "mapped store of dirty-before-shrink",
                m.write(100, b"dirty-before-shrink"),
            );
            c.ok(
                "mapped store of past-the-new-end",
                m.write(PAGE + 500, b"past-the-new-end"),
            );
            c.ok(
                "mapped store of in-the-last-page",
                m.write(3 * PAGE + 50, b"in-the-last-page"),
            );
            c.ok("ftruncate g to 1 page + 10", ftruncate(&g, 4096 + 10));
            c.data("the old mapping after shrinking", m.read(0, PAGE + 10));
            let r = pread(&g, len, 0);
            c.data("read g after shrinking", r);
            c.ok("ftruncate g to 4 pages", ftruncate(&g, 4 * 4096));
            c.data("the old mapping after growing", m.read(0, len));
            c.ok(
                "mapped store of after-grow",
                m.write(3 * PAGE, b"after-grow"),
            );
            c.ok("msync g", m.msync());
            let r = pread(&g, len, 0);
            c.data("read g after the store past the old end", r);
            // Left mapped past close: the mapping holds the file.
            drop(g);
            c.ok(
                "mapped store of after-close",
                m.write(2 * PAGE + 1, b"after-close"),
            );
            c.ok("munmap g after close", m.unmap());
        }
    }
    c.stat("g");
    c.content("g");
    c.source_content("g");
    if let Some(g) = c.ok("reopen g", open(&c.p("g"), libc::O_RDONLY, 0)) {
        fresh_mapping(c, "a fresh mapping of g", &g, len, 0, len);
    }
}

/// pwrite/pread at unaligned offsets and sizes across page boundaries,
/// into holes and past the end, through two descriptors; sizes while open,
/// block counts after close (see `sparse_files`), and the holes the source
/// keeps.
fn pwrite_pread_unaligned(c: &mut Ctx) {
    let p = c.p("f");
    let Some(w) = c.ok(
        "create f O_RDWR",
        open(&p, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o644),
    ) else {
        return;
    };
    let Some(r) = c.ok("open f O_RDONLY", open(&p, libc::O_RDONLY, 0)) else {
        return;
    };
    let writes: &[(u64, usize)] = &[
        (4000, 200),
        (0, 1),
        (8191, 2),
        (2 * 12288 + 17, 5000),
        (70_000, 3),
        (4050, 100),
        (65_535, 4098),
        (100_000, 0),
        (12_287, 1),
        (3 * 65_536 + 4095, 8193),
    ];
    let mut size = 0u64;
    for (i, &(off, len)) in writes.iter().enumerate() {
        let label = format!("pwrite {len} bytes at {off}");
        let data = pattern(len, 40 + i as u8);
        if let Some(n) = c.ok(&label, pwrite(&w, &data, off)) {
            c.num(&format!("{label}: written"), n as i64);
        }
        if len > 0 {
            size = size.max(off + len as u64);
        }
        let from = off.saturating_sub(10);
        let got = pread(&r, len + 20, from);
        c.data(
            &format!("pread {} at {from} by the other fd", len + 20),
            got,
        );
        let got = pread(&w, 50, size.saturating_sub(5));
        c.data(&format!("pread 50 straddling the end {size}"), got);
        c.fact(
            &format!("pread past the end {size} reads nothing"),
            pread(&r, 10, size + 100).is_ok_and(|d| d.is_empty()),
        );
        c.open_stat("f", &w);
    }
    let got = pread(&r, 300_000, 0);
    c.data("pread the whole file while open", got);
    drop((w, r));
    c.stat("f");
    c.content("f");
    c.source_content("f");
    if let Some(f) = c.ok("reopen f", open(&p, libc::O_RDONLY, 0)) {
        for from in [0, 9000, 30_000, 70_005] {
            if let Some(o) = c.res(
                &format!("SEEK_HOLE from {from}"),
                lseek(&f, from, libc::SEEK_HOLE),
            ) {
                c.num(&format!("hole at, from {from}"), o);
            }
            if let Some(o) = c.res(
                &format!("SEEK_DATA from {from}"),
                lseek(&f, from, libc::SEEK_DATA),
            ) {
                c.num(&format!("data at, from {from}"), o);
            }
        }
    }
}

/// How many processes append at once, and the records each writes.
const APPENDERS: usize = 4;
const APPENDS_EACH: usize = 300;
/// Not a divisor of the page size, so that records straddle pages.
const APPEND_RECORD: usize = 97;

/// Record `i` of appender `tag`, as the helper writes it.
fn append_record(tag: usize, i: usize) -> Vec<u8> {
    let head = format!("P{tag}-{i:05}-");
    let mut rec = head.into_bytes();
    rec.resize(APPEND_RECORD - 1, b'a' + tag as u8);
    rec.push(b'\n');
    rec
}

/// O_APPEND from several processes at once (write(2): the offset is set
/// to the end and the write made as one atomic step): every record lands
/// whole, exactly once, and the size is their total.
fn append_from_processes(c: &mut Ctx) {
    let p = c.p("log");
    c.ok("create log", write_file(&p, b""));
    let path = p.to_str().unwrap().to_string();
    let (count, size) = (APPENDS_EACH.to_string(), APPEND_RECORD.to_string());
    let mut helpers: Vec<Helper> = (0..APPENDERS)
        .map(|tag| Helper::start(&["append", &tag.to_string(), &count, &size, &path]))
        .collect();
    // All open before any writes, then all let go together.
    for h in &mut helpers {
        let opened = h.line_after("OPENED ");
        c.helper_says("helper: open log O_WRONLY|O_APPEND", &opened, "ok");
    }
    for h in &mut helpers {
        let go = h
            .stdin
            .as_mut()
            .map(|s| s.write_all(b"g").and_then(|()| s.flush()));
        c.fact("told the helper to go", matches!(go, Some(Ok(()))));
    }
    for (tag, mut h) in helpers.into_iter().enumerate() {
        let a = h.answer();
        c.helper_says(&format!("helper {tag}: {count} appends"), &a, "ok");
        h.finish();
    }
    let Some(data) = c.res("read log", read_file(&p)) else {
        return;
    };
    c.must(
        "size is every record's",
        data.len() == APPENDERS * APPENDS_EACH * APPEND_RECORD,
    );
    let mut seen = vec![vec![0usize; APPENDS_EACH]; APPENDERS];
    let mut in_order = true;
    let mut last = [None::<usize>; APPENDERS];
    let mut torn = 0;
    for rec in data.chunks(APPEND_RECORD) {
        let found = (0..APPENDERS).find_map(|tag| {
            let i: usize = std::str::from_utf8(rec.get(3..8)?).ok()?.parse().ok()?;
            (i < APPENDS_EACH && rec == append_record(tag, i).as_slice()).then_some((tag, i))
        });
        match found {
            Some((tag, i)) => {
                seen[tag][i] += 1;
                in_order &= last[tag].is_none_or(|l| l < i);
                last[tag] = Some(i);
            }
            None => torn += 1,
        }
    }
    c.must("no record torn or overwritten", torn == 0);
    c.must(
        "every record present exactly once",
        seen.iter().flatten().all(|&n| n == 1),
    );
    c.must("each process's records in its order", in_order);
    // The interleaving differs from run to run; the set must not.
    let mut records: Vec<&[u8]> = data.chunks(APPEND_RECORD).collect();
    records.sort_unstable();
    c.record("records, sorted", Obs::Data(records.concat()));
    c.stat("log");
    // The same interleaving, so not compared with tmpfs's.
    c.must(
        "the source holds what was read",
        read_file(&c.s("log")).is_ok_and(|s| s == data),
    );
}

/// Buffered writes (still dirty under the writeback cache) read back with
/// O_DIRECT, O_DIRECT writes read back buffered and through a mapping
/// (open(2): O_DIRECT I/O must see, and be seen by, the page cache; tmpfs
/// takes O_DIRECT since Linux 6.6), with page-aligned buffers, offsets and
/// lengths.
fn direct_io_and_buffered(c: &mut Ctx) {
    let p = c.p("f");
    let Some(f) = c.ok(
        "create f O_RDWR (buffered)",
        open(&p, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o644),
    ) else {
        return;
    };
    let size = 5 * PAGE + 1000;
    c.ok(
        "buffered pwrite 5 pages + 1000",
        pwrite(&f, &pattern(size, 30), 0),
    );
    c.ok(
        "buffered pwrite across a page boundary",
        pwrite(&f, b"dirty-across", PAGE as u64 + 4090),
    );
    let Some(d) = c.ok(
        "open f O_RDWR|O_DIRECT",
        open(&p, libc::O_RDWR | libc::O_DIRECT, 0),
    ) else {
        return;
    };
    let r = pread_aligned(&d, 3 * PAGE, PAGE as u64);
    c.data("O_DIRECT pread 3 pages at page 1", r);
    let r = pread_aligned(&d, 2 * PAGE, 4 * PAGE as u64);
    c.data("O_DIRECT pread 2 pages at page 4 (to the end)", r);
    let r = pread_aligned(&d, PAGE, 8 * PAGE as u64);
    c.data("O_DIRECT pread past the end", r);

    let r = pread(&f, 3 * PAGE, PAGE as u64);
    c.data(
        "buffered pread before the O_DIRECT write (fills the cache)",
        r,
    );
    let r = pwrite_aligned(&d, &pattern(2 * PAGE, 31), 2 * PAGE as u64);
    if let Some(n) = c.ok("O_DIRECT pwrite 2 pages at page 2", r) {
        c.num("written", n as i64);
    }
    let r = pread(&f, 3 * PAGE, PAGE as u64);
    c.data("buffered pread after the O_DIRECT write", r);
    let r = pwrite_aligned(&d, &pattern(PAGE, 32), 6 * PAGE as u64);
    c.ok("O_DIRECT pwrite a page at page 6 (extends)", r);
    c.open_stat("f", &f);
    let r = pread(&f, 3 * PAGE, 4 * PAGE as u64);
    c.data("buffered pread over the old end", r);
    fresh_mapping(
        c,
        "a mapping after the O_DIRECT writes",
        &f,
        7 * PAGE,
        0,
        7 * PAGE,
    );

    // And back: buffered writes seen by O_DIRECT reads again.
    c.ok(
        "buffered pwrite at page 2 + 10",
        pwrite(&f, b"after", 2 * PAGE as u64 + 10),
    );
    let r = pread_aligned(&d, PAGE, 2 * PAGE as u64);
    c.data("O_DIRECT pread page 2 after the buffered write", r);
    if let Some(m) = c.ok("mmap f", Mapping::shared(&f, 7 * PAGE)) {
        c.ok(
            "mapped store of mapped-store",
            m.write(5 * PAGE - 3, b"mapped-store"),
        );
        c.ok("msync f", m.msync());
        c.ok("munmap f", m.unmap());
    }
    let r = pread_aligned(&d, 2 * PAGE, 4 * PAGE as u64);
    c.data("O_DIRECT pread after a mapped store", r);
    c.ok(
        "ftruncate f through the O_DIRECT fd",
        ftruncate(&d, 3 * 4096 + 5),
    );
    let r = pread_aligned(&d, 2 * PAGE, 2 * PAGE as u64);
    c.data("O_DIRECT pread over the new end", r);
    drop((f, d));
    c.stat("f");
    c.content("f");
    c.source_content("f");
}

/// A deterministic sequence (xorshift64*), so that both sides run the
/// same operations.
struct Sequence(u64);

impl Sequence {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// fsx's idea with O_DIRECT, which the installed fsx cannot do: a seeded
/// mix of buffered, O_DIRECT and mapped reads and writes and truncates on
/// one file, each read compared with tmpfs's.
fn mixed_io_fsx_like(c: &mut Ctx) {
    const FLEN: u64 = 256 * 1024;
    const OPS: usize = 400;
    let p = c.p("f");
    let Some(f) = c.ok(
        "create f O_RDWR",
        open(&p, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o644),
    ) else {
        return;
    };
    let Some(d) = c.ok(
        "open f O_RDWR|O_DIRECT",
        open(&p, libc::O_RDWR | libc::O_DIRECT, 0),
    ) else {
        return;
    };
    let mut rng = Sequence(0x5eed_0015);
    // The size the operations produce, the same on both sides whatever
    // each filesystem does, so that both run the same sequence.
    let mut size = 0u64;
    let pages = FLEN / PAGE as u64;
    for op in 0..OPS {
        let seed = op as u8;
        match rng.below(8) {
            0 => {
                let off = rng.below(FLEN - 1);
                let len = 1 + rng.below((FLEN - off).min(16384));
                let r = pwrite(&f, &pattern(len as usize, seed), off);
                c.res(&format!("op {op}: pwrite {len} at {off}"), r);
                size = size.max(off + len);
            }
            1 => {
                let off = rng.below(pages) * PAGE as u64;
                let len = (1 + rng.below(4.min(pages - off / PAGE as u64))) * PAGE as u64;
                let r = pwrite_aligned(&d, &pattern(len as usize, seed), off);
                c.res(&format!("op {op}: O_DIRECT pwrite {len} at {off}"), r);
                size = size.max(off + len);
            }
            2 => {
                let off = rng.below(size + PAGE as u64);
                let len = 1 + rng.below(16384);
                let r = pread(&f, len as usize, off);
                c.data(&format!("op {op}: pread {len} at {off}"), r);
            }
            3 => {
                let off = rng.below(size.div_ceil(PAGE as u64) + 1) * PAGE as u64;
                let len = (1 + rng.below(4)) * PAGE as u64;
                let r = pread_aligned(&d, len as usize, off);
                c.data(&format!("op {op}: O_DIRECT pread {len} at {off}"), r);
            }
            4 | 5 if size == 0 => {}
            4 => {
                let off = rng.below(size);
                let len = 1 + rng.below((size - off).min(16384));
                let sync = rng.below(2) == 0;
                let label = format!("op {op}: mapped store {len} at {off}, msync {sync}");
                match Mapping::shared(&f, size as usize) {
                    Ok(m) => {
                        let r = m.write(off as usize, &pattern(len as usize, seed));
                        c.ok(&format!("{label}: store"), r);
                        if sync {
                            c.ok(&format!("{label}: msync"), m.msync());
                        }
                        c.ok(&label, m.unmap());
                    }
                    Err(e) => c.record(label, Obs::Err(e)),
                }
            }
            5 => {
                let off = rng.below(size);
                let len = 1 + rng.below((size - off).min(16384));
                let label = format!("op {op}: mapped read {len} at {off}");
                fresh_mapping(c, &label, &f, size as usize, off as usize, len as usize);
            }
            6 => {
                let to = if rng.below(2) == 0 {
                    rng.below(pages + 1) * PAGE as u64
                } else {
                    rng.below(FLEN)
                };
                let r = ftruncate(&f, to as i64);
                c.res(&format!("op {op}: ftruncate {to}"), r);
                size = to;
            }
            _ => {
                let r = f.metadata().map(|m| m.size() as i64).map_err(io);
                if let Some(n) = c.res(&format!("op {op}: fstat"), r) {
                    c.num(&format!("op {op}: size"), n);
                }
            }
        }
    }
    drop((f, d));
    // Normalised: st_blocks left out. The mapped reads of holes allocate
    // pages on tmpfs (shmem_fault), not through the mount, whose page
    // cache is filled by READs that read(2) the source's holes.
    match lstat(&p) {
        Ok(m) => c.record(
            "lstat f (st_blocks left out)",
            Obs::Stat(StatView {
                blocks: 0,
                ..StatView::of(&m)
            }),
        ),
        Err(e) => c.record("lstat f (st_blocks left out)", Obs::Err(e)),
    }
    c.content("f");
    c.source_content("f");
}

/// The writes of the remount test: mmap stores with truncates, unaligned
/// pwrites into holes, O_DIRECT over buffered data, appends from two
/// descriptors. Everything is closed and unmapped at the end (an unmount
/// waits for nothing else).
fn remount_writes(c: &mut Ctx) {
    let len = 3 * PAGE + 77;
    c.ok(
        "write mapped",
        write_file(&c.p("mapped"), &pattern(len, 50)),
    );
    if let Some(f) = c.ok("open mapped", open(&c.p("mapped"), libc::O_RDWR, 0)) {
        if let Some(m) = c.ok("mmap mapped", Mapping::shared(&f, len)) {
            c.ok(
                "mapped store of stored-through-the-mapping",
                m.write(10, b"stored-through-the-mapping"),
            );
            c.ok(
                "mapped store of dropped-by-the-truncate",
                m.write(2 * PAGE + 5, b"dropped-by-the-truncate"),
            );
            c.ok("munmap mapped", m.unmap());
        }
        c.ok("ftruncate mapped smaller", ftruncate(&f, 4096 + 3));
        c.ok("ftruncate mapped larger", ftruncate(&f, 5 * 4096 + 1));
    }
    if let Some(f) = c.ok(
        "create pwritten",
        open(&c.p("pwritten"), libc::O_RDWR | libc::O_CREAT, 0o644),
    ) {
        for (i, (off, n)) in [(4000, 300), (70_001, 5), (8190, 9000), (1, 1)]
            .into_iter()
            .enumerate()
        {
            c.ok(
                &format!("pwrite {n} at {off}"),
                pwrite(&f, &pattern(n, 51 + i as u8), off),
            );
        }
    }
    if let Some(f) = c.ok(
        "create direct",
        open(&c.p("direct"), libc::O_RDWR | libc::O_CREAT, 0o644),
    ) {
        c.ok("buffered pwrite", pwrite(&f, &pattern(4 * PAGE + 9, 55), 0));
        if let Some(d) = c.ok(
            "open direct O_DIRECT",
            open(&c.p("direct"), libc::O_WRONLY | libc::O_DIRECT, 0),
        ) {
            c.ok(
                "O_DIRECT pwrite over buffered data",
                pwrite_aligned(&d, &pattern(2 * PAGE, 56), PAGE as u64),
            );
            c.ok(
                "O_DIRECT pwrite past the end",
                pwrite_aligned(&d, &pattern(PAGE, 57), 6 * PAGE as u64),
            );
        }
        c.ok(
            "buffered pwrite after",
            pwrite(&f, b"buffered-last", 3 * PAGE as u64 - 4),
        );
    }
    let log = c.p("appended");
    let a = c.ok(
        "open appended A",
        open(&log, libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT, 0o644),
    );
    let b = c.ok(
        "open appended B",
        open(&log, libc::O_RDWR | libc::O_APPEND, 0),
    );
    if let (Some(a), Some(b)) = (a, b) {
        let failed = (0..200)
            .filter(|i| {
                let w = if i % 2 == 0 { &a } else { &b };
                write(
                    w,
                    format!("record {i:03} {}\n", "x".repeat(i % 37)).as_bytes(),
                )
                .is_err()
            })
            .count();
        c.num("failed appends", failed as i64);
    }
}

/// What the remount test compares after the writes: contents and stat,
/// seen through the (new) mount and on the source.
fn remount_reads(c: &mut Ctx) {
    for n in ["mapped", "pwritten", "direct", "appended"] {
        c.stat(n);
        c.content(n);
        c.source_content(n);
        if let Some(f) = c.ok(
            &format!("open {n} O_DIRECT"),
            open(&c.p(n), libc::O_RDONLY | libc::O_DIRECT, 0),
        ) {
            let r = pread_aligned(&f, 32 * PAGE, 0);
            c.data(&format!("O_DIRECT read of {n}"), r);
        }
    }
}

/// The data of `remount_writes` through a mount, unmounted (the daemon
/// stopped cleanly) and mounted again with the same `args` on the same
/// source, is what the same writes leave on a raw tmpfs.
#[allow(dead_code)] // uring_suites.rs includes this module and does not remount.
pub fn same_after_remount(served: &mut Served, args: &[&str]) {
    const WRITES: &[Step] = &[Step {
        name: "remount",
        other_users: false,
        run: remount_writes,
    }];
    const READS: &[Step] = &[Step {
        name: "remount",
        other_users: false,
        run: remount_reads,
    }];
    let raw = Tmpfs::new("256m");
    let raw_root = raw.path().join("work");
    std::fs::create_dir(&raw_root).unwrap();
    let mut on_tmpfs = run_steps("tmpfs", &raw_root, &raw_root, WRITES, true, false);
    on_tmpfs
        .records
        .extend(run_steps("tmpfs", &raw_root, &raw_root, READS, false, false).records);
    drop(raw);

    let side = format!("fastfuse {} remounted", args.join(" "));
    let (root, source) = (served.mnt().join("work"), served.source.path().join("work"));
    std::fs::create_dir(&root).unwrap();
    let mut through = run_steps(&side, &root, &source, WRITES, true, false);
    let status = served.stop();
    assert!(status.success(), "fastfuse exited with {status} at unmount");
    served.respawn(args);
    let reads = run_steps(&side, &root, &source, READS, false, false);
    through.records.extend(reads.records);
    through.unexpected.extend(reads.unexpected);

    let differences = compare(&on_tmpfs, &through);
    let unexpected: Vec<_> = on_tmpfs
        .unexpected
        .iter()
        .chain(&through.unexpected)
        .collect();
    assert!(
        on_tmpfs.records.len() > 40,
        "the remount scenario observed too little"
    );
    assert!(
        differences.is_empty() && unexpected.is_empty(),
        "{side} differs from tmpfs:\n{}\n\nbroken expectations:\n{}",
        differences.join("\n"),
        unexpected
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// mknod of fifos, sockets and devices; readdir types; listing after
/// changes.
fn special_files_and_listing(c: &mut Ctx) {
    c.ok("mkfifo", mknod(&c.p("fifo"), libc::S_IFIFO | 0o640, 0));
    c.ok(
        "mknod socket",
        mknod(&c.p("sock"), libc::S_IFSOCK | 0o600, 0),
    );
    c.ok(
        "mknod char device 1:3",
        mknod(&c.p("null"), libc::S_IFCHR | 0o666, libc::makedev(1, 3)),
    );
    c.ok(
        "mknod block device 7:0",
        mknod(&c.p("loop"), libc::S_IFBLK | 0o660, libc::makedev(7, 0)),
    );
    c.ok(
        "mknod regular file",
        mknod(&c.p("regular"), libc::S_IFREG | 0o604, 0),
    );
    c.ok("mkdir dir", mkdir(&c.p("dir"), 0o711));
    c.ok("symlink", symlink("dir", &c.p("link")));
    for n in ["fifo", "sock", "null", "loop", "regular", "dir", "link"] {
        c.stat(n);
    }
    c.listing("");
    c.ok("unlink fifo", unlink(&c.p("fifo")));
    c.ok("rename regular", rename(&c.p("regular"), &c.p("dir/moved")));
    c.listing("");
    c.listing("dir");
    c.stat("dir");
}

/// POSIX, OFD and flock locks held by another process, seen (F_GETLK) and
/// contended (F_SETLK, F_SETLKW, flock) from this one.
fn locks_between_processes(c: &mut Ctx) {
    let p = c.p("locked");
    c.ok("write locked", write_file(&p, &[0u8; 1000]));
    let path = p.to_str().unwrap().to_string();
    let Some(mine) = c.ok("open locked O_RDWR", open(&p, libc::O_RDWR, 0)) else {
        return;
    };

    // The helper holds a POSIX write lock on [0, 100).
    let mut h = Helper::start(&["posix", "w", "0", "100", &path]);
    let a = h.answer();
    c.helper_says("helper: F_SETLK write [0,100)", &a, "ok");
    match getlk(&mine, libc::F_GETLK, libc::F_WRLCK, 50, 10) {
        Ok(fl) => {
            c.text("F_GETLK write [50,60)", lock_text(&fl));
            c.fact("F_GETLK names the holder's pid", fl.l_pid == h.pid());
        }
        Err(e) => c.record("F_GETLK write [50,60)", Obs::Err(e)),
    }
    match getlk(&mine, libc::F_OFD_GETLK, libc::F_RDLCK, 0, 0) {
        Ok(fl) => c.text("F_OFD_GETLK read whole file", lock_text(&fl)),
        Err(e) => c.record("F_OFD_GETLK read whole file", Obs::Err(e)),
    }
    match getlk(&mine, libc::F_GETLK, libc::F_WRLCK, 100, 50) {
        Ok(fl) => c.text("F_GETLK write [100,150) (free)", lock_text(&fl)),
        Err(e) => c.record("F_GETLK write [100,150) (free)", Obs::Err(e)),
    }
    c.fails(
        "F_SETLK read [0,10) (contended)",
        setlk(&mine, libc::F_SETLK, libc::F_RDLCK, 0, 10),
        libc::EAGAIN,
    );
    c.fails(
        "F_OFD_SETLK write [99,1) (contended)",
        setlk(&mine, libc::F_OFD_SETLK, libc::F_WRLCK, 99, 1),
        libc::EAGAIN,
    );
    c.ok(
        "F_SETLK write [100,10) (free)",
        setlk(&mine, libc::F_SETLK, libc::F_WRLCK, 100, 10),
    );
    // flock and POSIX locks do not interact on Linux.
    c.ok(
        "flock LOCK_EX|LOCK_NB",
        flock(&mine, libc::LOCK_EX | libc::LOCK_NB),
    );
    c.ok("flock LOCK_UN", flock(&mine, libc::LOCK_UN));
    h.finish();
    match getlk(&mine, libc::F_GETLK, libc::F_WRLCK, 0, 100) {
        Ok(fl) => c.text("F_GETLK after the holder exited", lock_text(&fl)),
        Err(e) => c.record("F_GETLK after the holder exited", Obs::Err(e)),
    }
    c.ok(
        "F_SETLK write [0,100) after the holder exited",
        setlk(&mine, libc::F_SETLK, libc::F_WRLCK, 0, 100),
    );

    // Our locks, seen from the helper; merging of our two ranges.
    let a = Helper::run(&["posix", "r", "50", "10", &path]);
    c.helper_says("helper: read [50,60) against our write lock", &a, "EAGAIN");
    let a = Helper::run(&["posix", "w", "105", "1", &path]);
    c.helper_says(
        "helper: write [105,106) against our merged lock",
        &a,
        "EAGAIN",
    );
    let a = Helper::run(&["posix", "w", "200", "10", &path]);
    c.helper_says("helper: write [200,210) (free)", &a, "ok");

    // Closing any descriptor of the file drops this process's POSIX locks.
    drop(c.ok(
        "open and close another descriptor",
        open(&p, libc::O_RDONLY, 0),
    ));
    let a = Helper::run(&["posix", "w", "0", "10", &path]);
    c.helper_says("helper: write [0,10) after our close", &a, "ok");
    let mut h = Helper::start(&["posix-close-other", "w", "0", "10", &path]);
    let a = h.answer();
    c.helper_says("helper: lock, then close another descriptor", &a, "ok");
    match getlk(&mine, libc::F_GETLK, libc::F_WRLCK, 0, 10) {
        Ok(fl) => c.text("F_GETLK after the helper closed another fd", lock_text(&fl)),
        Err(e) => c.record("F_GETLK after the helper closed another fd", Obs::Err(e)),
    }
    h.finish();

    // F_SETLKW waits for the holder.
    c.ok(
        "F_SETLK write [0,10) again",
        setlk(&mine, libc::F_SETLK, libc::F_WRLCK, 0, 10),
    );
    let mut w = Helper::start(&["posix-wait", "w", "5", "1", &path]);
    w.line_after("WAITING");
    std::thread::sleep(Duration::from_millis(300));
    c.ok(
        "F_SETLK unlock [0,10)",
        setlk(&mine, libc::F_SETLK, libc::F_UNLCK, 0, 10),
    );
    let a = w.answer();
    let (result, waited) = a.split_once(" after ").unwrap_or((&a, "0 ms"));
    c.helper_says("helper: F_SETLKW write [5,6)", result, "ok");
    let waited: u64 = waited.trim_end_matches(" ms").parse().unwrap_or(0);
    c.must("F_SETLKW waited for the unlock", waited >= 250);
    c.fails(
        "F_SETLK write [5,6) while the helper waited it in",
        setlk(&mine, libc::F_SETLK, libc::F_WRLCK, 5, 1),
        libc::EAGAIN,
    );
    w.finish();

    // An OFD lock held by the helper.
    let mut h = Helper::start(&["ofd", "r", "300", "0", &path]);
    let a = h.answer();
    c.helper_says("helper: F_OFD_SETLK read [300,EOF)", &a, "ok");
    match getlk(&mine, libc::F_OFD_GETLK, libc::F_WRLCK, 400, 1) {
        Ok(fl) => {
            c.text("F_OFD_GETLK write [400,401)", lock_text(&fl));
            c.fact("l_pid of an OFD lock is -1", fl.l_pid == -1);
        }
        Err(e) => c.record("F_OFD_GETLK write [400,401)", Obs::Err(e)),
    }
    // Normalised: a classic F_GETLK meeting an OFD lock says l_pid -1 on
    // tmpfs. Through FUSE the kernel turns the pid the server answers into
    // one of its own (find_pid_ns, fs/fuse/file.c), so -1 cannot be said:
    // the daemon names the process that took the lock. Either is "the
    // holder" here; the range and type must match exactly.
    match getlk(&mine, libc::F_GETLK, libc::F_WRLCK, 400, 1) {
        Ok(fl) => {
            c.text("F_GETLK write [400,401) meets the OFD lock", lock_text(&fl));
            c.must(
                "l_pid: -1, or the process that took the OFD lock",
                [-1, h.pid()].contains(&fl.l_pid),
            );
        }
        Err(e) => c.record("F_GETLK write [400,401) meets the OFD lock", Obs::Err(e)),
    }
    c.ok(
        "F_SETLK read [300,310) shares the read lock",
        setlk(&mine, libc::F_SETLK, libc::F_RDLCK, 300, 10),
    );
    c.fails(
        "F_SETLK write [500,510) (contended)",
        setlk(&mine, libc::F_SETLK, libc::F_WRLCK, 500, 10),
        libc::EAGAIN,
    );
    h.finish();

    // flock held by the helper.
    let mut h = Helper::start(&["flock", "ex", &path]);
    let a = h.answer();
    c.helper_says("helper: flock LOCK_EX", &a, "ok");
    if let Some(other) = c.ok("open locked O_RDONLY", open(&p, libc::O_RDONLY, 0)) {
        c.fails(
            "flock LOCK_SH|LOCK_NB (contended)",
            flock(&other, libc::LOCK_SH | libc::LOCK_NB),
            libc::EWOULDBLOCK,
        );
        c.fails(
            "flock LOCK_EX|LOCK_NB (contended)",
            flock(&other, libc::LOCK_EX | libc::LOCK_NB),
            libc::EWOULDBLOCK,
        );
        c.ok(
            "F_SETLK read [600,610) beside the flock",
            setlk(&other, libc::F_SETLK, libc::F_RDLCK, 600, 10),
        );
        h.finish();
        c.ok(
            "flock LOCK_EX|LOCK_NB after the holder exited",
            flock(&other, libc::LOCK_EX | libc::LOCK_NB),
        );
        let a = Helper::run(&["flock", "sh", &path]);
        c.helper_says("helper: flock LOCK_SH against ours", &a, "EAGAIN");
    }
}

/// What a write, direct write, fallocate, truncate or ACL change by
/// someone without CAP_FSETID leaves of set-user-ID and set-group-ID
/// (setattr_should_drop_suidgid in fs/attr.c): set-user-ID always goes;
/// set-group-ID goes when group-execute is set, and without it only when
/// the writer is not in the file's group. The files belong to root (the
/// writer is in none of their groups) or to the writer (in its group).
fn setid_after_writes_by_others(c: &mut Ctx) {
    const U: u32 = 65534;
    let path = |c: &Ctx, rel: &str| c.p(rel).to_str().unwrap().to_string();
    c.ok("chmod the step directory 0755", chmod(&c.p(""), 0o755));
    let mut names = Vec::new();
    for op in ["write", "write-direct", "fallocate", "ftruncate"] {
        for (owner, mode) in [
            ("root", 0o6666),
            ("root", 0o6676),
            ("writer", 0o6644),
            ("writer", 0o6654),
        ] {
            let name = format!("{op}-{owner}-{mode:o}");
            c.ok(
                &format!("write {name}"),
                write_file(&c.p(&name), &pattern(5000, 3)),
            );
            if owner == "writer" {
                c.ok(&format!("chown {name}"), lchown(&c.p(&name), U, U));
            }
            c.ok(&format!("chmod {name}"), chmod(&c.p(&name), mode));
            let a = Helper::run(&[
                "as-user",
                &U.to_string(),
                &U.to_string(),
                op,
                &path(c, &name),
            ]);
            c.helper_says(&format!("uid {U}: {op} {name}"), &a, "ok");
            names.push(name);
        }
    }
    // The owner, outside the file's group, sets an ACL: set-group-ID goes
    // (FUSE_SETXATTR_ACL_KILL_SGID), and the ACL becomes the mode.
    let name = "acl-by-owner";
    c.ok("write acl-by-owner", write_file(&c.p(name), b"acl"));
    c.ok("chown acl-by-owner", lchown(&c.p(name), U, 0));
    c.ok("chmod acl-by-owner", chmod(&c.p(name), 0o2664));
    let a = Helper::run(&[
        "as-user",
        &U.to_string(),
        &U.to_string(),
        "set-acl-0640",
        &path(c, name),
    ]);
    c.helper_says(&format!("uid {U}: set-acl-0640 {name}"), &a, "ok");
    names.push(name.to_string());
    for n in &names {
        c.stat(n);
        let mode = lstat(&c.s(n)).map(|m| format!("{:o}", m.mode()));
        c.text(
            &format!("{n}: mode on the source"),
            mode.unwrap_or_else(errno_name),
        );
    }
}

/// POSIX ACLs (acl(5)): setting an access ACL sets the mode from its base
/// entries at once; a default ACL on a directory is inherited by what is
/// created in it, masked by the mode the creator asked for, in place of
/// the umask; chmod rewrites the mask entry; removing the ACL leaves the
/// mode. Files are created by a helper process under a umask of 027.
fn posix_acls(c: &mut Ctx) {
    let f = c.p("f");
    c.ok("write f", write_file(&f, b"acl"));
    c.ok("chmod f 0644", chmod(&f, 0o644));
    c.stat("f");
    // setfacl -m u::r,g::w,o::x f
    let base = acl(&[
        (ACL_USER_OBJ, 4, NO_ID),
        (ACL_GROUP_OBJ, 2, NO_ID),
        (ACL_OTHER, 1, NO_ID),
    ]);
    c.ok(
        "set base entries r,w,x",
        lsetxattr(&f, ACL_ACCESS, &base, 0),
    );
    c.stat("f");
    c.data("access ACL of f", lgetxattr(&f, ACL_ACCESS, 256));
    // An extended ACL: a named user and a mask.
    let extended = acl(&[
        (ACL_USER_OBJ, 6, NO_ID),
        (ACL_USER, 7, 65534),
        (ACL_GROUP_OBJ, 4, NO_ID),
        (ACL_MASK, 5, NO_ID),
        (ACL_OTHER, 0, NO_ID),
    ]);
    c.ok(
        "set an extended ACL",
        lsetxattr(&f, ACL_ACCESS, &extended, 0),
    );
    c.stat("f");
    c.data("extended ACL of f", lgetxattr(&f, ACL_ACCESS, 256));
    c.ok("chmod f 0600", chmod(&f, 0o600));
    c.stat("f");
    c.data("ACL of f after chmod 0600", lgetxattr(&f, ACL_ACCESS, 256));
    c.ok("remove the ACL", lremovexattr(&f, ACL_ACCESS));
    c.stat("f");
    c.data("ACL of f after removal", lgetxattr(&f, ACL_ACCESS, 256));

    let d = c.p("d");
    c.ok("mkdir d", mkdir(&d, 0o755));
    let default = acl(&[
        (ACL_USER_OBJ, 7, NO_ID),
        (ACL_USER, 7, 65534),
        (ACL_GROUP_OBJ, 5, NO_ID),
        (ACL_GROUP, 6, 65534),
        (ACL_MASK, 7, NO_ID),
        (ACL_OTHER, 0, NO_ID),
    ]);
    c.ok(
        "set a default ACL on d",
        lsetxattr(&d, ACL_DEFAULT, &default, 0),
    );
    c.data("default ACL of d", lgetxattr(&d, ACL_DEFAULT, 256));
    c.ok("mkdir plain", mkdir(&c.p("plain"), 0o755));
    for (dir, label) in [("d", "with a default ACL"), ("plain", "without")] {
        for kind in ["file", "dir", "fifo"] {
            let rel = format!("{dir}/{kind}");
            let p = c.p(&rel);
            let a = Helper::run(&["umask-create", "027", kind, p.to_str().unwrap()]);
            c.helper_says(&format!("create {kind} in the directory {label}"), &a, "ok");
            c.stat(&rel);
            c.data(
                &format!("access ACL of {rel}"),
                lgetxattr(&p, ACL_ACCESS, 256),
            );
            c.data(
                &format!("default ACL of {rel}"),
                lgetxattr(&p, ACL_DEFAULT, 256),
            );
        }
    }
    c.ok("mkdir d/dir/deeper", mkdir(&c.p("d/dir/deeper"), 0o700));
    c.stat("d/dir/deeper");
    c.data(
        "default ACL of d/dir/deeper",
        lgetxattr(&c.p("d/dir/deeper"), ACL_DEFAULT, 256),
    );
}

/// The kernel checks access against ACLs (acl(5), "access check
/// algorithm"): a named-user entry grants what the mask lets through, even
/// where the mode would refuse, and refuses where the mode would grant.
fn posix_acl_access_checks(c: &mut Ctx) {
    const U: &str = "65534";
    let path = |c: &Ctx, rel: &str| c.p(rel).to_str().unwrap().to_string();
    c.ok("chmod the step directory 0755", chmod(&c.p(""), 0o755));
    let granted = acl(&[
        (ACL_USER_OBJ, 6, NO_ID),
        (ACL_USER, 6, 65534),
        (ACL_GROUP_OBJ, 0, NO_ID),
        (ACL_MASK, 6, NO_ID),
        (ACL_OTHER, 0, NO_ID),
    ]);
    let masked = acl(&[
        (ACL_USER_OBJ, 6, NO_ID),
        (ACL_USER, 6, 65534),
        (ACL_GROUP_OBJ, 0, NO_ID),
        (ACL_MASK, 0, NO_ID),
        (ACL_OTHER, 0, NO_ID),
    ]);
    let refused = acl(&[
        (ACL_USER_OBJ, 6, NO_ID),
        (ACL_USER, 0, 65534),
        (ACL_GROUP_OBJ, 4, NO_ID),
        (ACL_MASK, 4, NO_ID),
        (ACL_OTHER, 4, NO_ID),
    ]);
    for (name, value) in [
        ("granted", &granted),
        ("masked", &masked),
        ("refused", &refused),
    ] {
        c.ok(&format!("write {name}"), write_file(&c.p(name), b"acl\n"));
        c.ok(
            &format!("set the ACL of {name}"),
            lsetxattr(&c.p(name), ACL_ACCESS, value, 0),
        );
        c.stat(name);
    }
    c.ok("mkdir shared", mkdir(&c.p("shared"), 0o755));
    let dir_acl = acl(&[
        (ACL_USER_OBJ, 7, NO_ID),
        (ACL_USER, 7, 65534),
        (ACL_GROUP_OBJ, 5, NO_ID),
        (ACL_MASK, 7, NO_ID),
        (ACL_OTHER, 5, NO_ID),
    ]);
    c.ok(
        "set the ACL of shared",
        lsetxattr(&c.p("shared"), ACL_ACCESS, &dir_acl, 0),
    );
    let cases: &[(&str, &str, &str)] = &[
        ("open-r", "granted", "ok"),
        ("write", "granted", "ok"),
        ("access-w", "granted", "ok"),
        ("open-r", "masked", "EACCES"),
        ("access-r", "masked", "EACCES"),
        ("open-r", "refused", "EACCES"),
        ("access-r", "refused", "EACCES"),
        ("create", "shared/mine", "ok"),
    ];
    for (op, rel, want) in cases {
        let a = Helper::run(&["as-user", U, U, op, &path(c, rel)]);
        c.helper_says(&format!("uid {U}: {op} {rel}"), &a, want);
    }
    c.content("granted");
    c.stat("shared/mine");
}

/// Another user's view (allow_other): permission checks, new files
/// owned by their creator, set-user-ID cleared by a non-owner's write.
fn other_users(c: &mut Ctx) {
    const U: &str = "65534";
    let path = |c: &Ctx, rel: &str| c.p(rel).to_str().unwrap().to_string();
    c.ok("chmod the step directory 0755", chmod(&c.p(""), 0o755));
    c.ok("mkdir open 0777", mkdir(&c.p("open"), 0o777));
    c.ok("chmod open 0777", chmod(&c.p("open"), 0o777));
    c.ok("mkdir sticky", mkdir(&c.p("sticky"), 0o777));
    c.ok("chmod sticky 01777", chmod(&c.p("sticky"), 0o1777));
    c.ok("write secret", write_file(&c.p("secret"), b"secret\n"));
    c.ok("chmod secret 0600", chmod(&c.p("secret"), 0o600));
    c.ok("write public", write_file(&c.p("public"), b"public\n"));
    c.ok("chmod public 0666", chmod(&c.p("public"), 0o666));
    for n in ["suid-write", "suid-trunc"] {
        c.ok(
            &format!("write {n}"),
            write_file(&c.p(n), &pattern(5000, 13)),
        );
        c.ok(&format!("chmod {n} 06777"), chmod(&c.p(n), 0o6777));
    }
    c.ok(
        "write sticky/victim",
        write_file(&c.p("sticky/victim"), b"v"),
    );
    c.ok(
        "chmod sticky/victim 0666",
        chmod(&c.p("sticky/victim"), 0o666),
    );

    let cases: &[(&str, &str, &str)] = &[
        ("stat", "secret", "ok"),
        ("open-r", "secret", "EACCES"),
        ("access-r", "secret", "EACCES"),
        ("access-w", "public", "ok"),
        ("chmod", "secret", "EPERM"),
        ("append", "public", "ok"),
        ("create", "open/mine", "ok"),
        ("create", "mine-here", "EACCES"),
        ("mkdir", "open/minedir", "ok"),
        ("write", "suid-write", "ok"),
        ("open-trunc", "suid-trunc", "ok"),
        ("unlink", "sticky/victim", "EPERM"),
        ("utime-now", "public", "ok"),
        ("utime-set", "public", "EPERM"),
        ("open-r", "open/mine", "ok"),
    ];
    for (op, rel, want) in cases {
        let a = Helper::run(&["as-user", U, U, op, &path(c, rel)]);
        c.helper_says(&format!("uid {U}: {op} {rel}"), &a, want);
    }
    for n in [
        "open/mine",
        "open/minedir",
        "suid-write",
        "suid-trunc",
        "public",
    ] {
        c.stat(n);
    }
    c.content("public");
    c.content("suid-write");
    c.source_content("suid-write");
    c.listing("open");
}

/// statfs fields that are the source's (f_type, f_fsid and f_flag are the
/// mount's own: FUSE_SUPER_MAGIC, the fuse device, nosuid/nodev).
fn statfs(c: &mut Ctx) {
    match rustix::fs::statvfs(c.p("")) {
        Ok(s) => c.text(
            "statvfs",
            format!(
                "bsize={} frsize={} blocks={} files={} namemax={}",
                s.f_bsize, s.f_frsize, s.f_blocks, s.f_files, s.f_namemax
            ),
        ),
        Err(e) => c.record("statvfs", Obs::Err(e.raw_os_error())),
    }
}

/// 10,000 entries: listed in full, then listed while another thread
/// unlinks every other one. POSIX leaves open whether names unlinked
/// during the listing appear, so the listing itself may differ between
/// the sides; the invariants may not.
fn readdir_10000_with_concurrent_unlinks(c: &mut Ctx) {
    const N: usize = 10_000;
    let dir = c.p("big");
    c.ok("mkdir big", mkdir(&dir, 0o755));
    let name = |i: usize| format!("entry-{i:05}");
    let failed = (0..N)
        .filter(|&i| mknod(&dir.join(name(i)), libc::S_IFREG | 0o644, 0).is_err())
        .count();
    c.num("failed creates", failed as i64);
    c.listing("big");

    let removed = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicBool::new(false));
    let unlinker = {
        let (dir, removed, started) = (dir.clone(), removed.clone(), started.clone());
        std::thread::spawn(move || {
            while !started.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            // From the end, so that most unlinks land ahead of the
            // listing (the two meet about a third of the way in).
            let mut failed = 0;
            for i in (1..N).step_by(2).rev() {
                failed += usize::from(unlink(&dir.join(format!("entry-{i:05}"))).is_err());
                removed.fetch_add(1, Ordering::Release);
            }
            failed
        })
    };
    let mut seen = Vec::new();
    let listing: Res<()> = (|| {
        for (k, e) in std::fs::read_dir(&dir).map_err(io)?.enumerate() {
            let e = e.map_err(io)?;
            seen.push(e.file_name().to_string_lossy().into_owned());
            started.store(true, Ordering::Release);
            // Keep pace: 250 unlinks per 250 names listed, so that the
            // listing and the unlinks overlap on both sides whatever
            // their speeds (a getdents batch holds up to hundreds).
            if k % 250 == 249 {
                let want = (k + 1).min(N / 2);
                let deadline = Instant::now() + Duration::from_secs(5);
                while removed.load(Ordering::Acquire) < want && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        }
        Ok(())
    })();
    started.store(true, Ordering::Release);
    let unlink_failures = unlinker.join().unwrap();
    c.ok("listing during the unlinks", listing);
    c.num("failed unlinks", unlink_failures as i64);

    let created: HashSet<String> = (0..N).map(name).collect();
    let survivors: HashSet<String> = (0..N).step_by(2).map(name).collect();
    let unique: HashSet<&String> = seen.iter().collect();
    c.must("no entry listed twice", unique.len() == seen.len());
    c.must(
        "every entry never unlinked is listed",
        survivors.iter().all(|s| unique.contains(s)),
    );
    c.must(
        "nothing listed that was never created",
        seen.iter().all(|s| created.contains(s)),
    );
    // For the log, not compared (POSIX leaves it open): how many of the
    // unlinked names the listing still showed.
    let unlinked_listed = seen.iter().filter(|s| !survivors.contains(*s)).count();
    eprintln!(
        "[{}] readdir with concurrent unlinks: {} listed, {unlinked_listed} of {} unlinked ones",
        c.side,
        seen.len(),
        N / 2
    );
    // Afterwards, exactly the survivors.
    c.listing("big");
}

// ---------------------------------------------------------------------------
// Running and comparing.

/// Runs the script in `root` (the script's view) whose source directory is
/// `source` (the same path on tmpfs).
fn run_script(side: &str, root: &Path, source: &Path, other_users: bool) -> Run {
    run_steps(side, root, source, SCRIPT, true, other_users)
}

/// Runs `steps` as [`run_script`] runs the script; `mkdir_steps` makes each
/// step's directory first (a later run on the same directories does not).
fn run_steps(
    side: &str,
    root: &Path,
    source: &Path,
    steps: &[Step],
    mkdir_steps: bool,
    other_users: bool,
) -> Run {
    let mut ctx = Ctx {
        side: side.to_string(),
        dir: root.to_path_buf(),
        src: source.to_path_buf(),
        step: "",
        records: Vec::new(),
        unexpected: Vec::new(),
    };
    for step in steps {
        if step.other_users && !other_users {
            continue;
        }
        ctx.step = step.name;
        ctx.dir = root.join(step.name);
        ctx.src = source.join(step.name);
        if mkdir_steps {
            let r = mkdir(&ctx.dir, 0o755);
            ctx.ok("mkdir the step's directory", r);
        }
        let t = Instant::now();
        (step.run)(&mut ctx);
        eprintln!("[{side}] {}: {:?}", step.name, t.elapsed());
    }
    Run {
        side: side.to_string(),
        records: ctx.records,
        unexpected: ctx.unexpected,
    }
}

/// Every difference between two runs, as lines for the failure message.
fn compare(raw: &Run, fuse: &Run) -> Vec<String> {
    let mut out = Vec::new();
    for (i, (a, b)) in raw.records.iter().zip(&fuse.records).enumerate() {
        if a.step != b.step || a.label != b.label {
            out.push(format!(
                "the runs diverge at observation {i}: {} / {:?} on {} but {} / {:?} on {}",
                a.step, a.label, raw.side, b.step, b.label, fuse.side
            ));
            return out;
        }
        if a.obs != b.obs {
            let detail = difference(&a.obs, &b.obs);
            out.push(format!(
                "{} / {}:\n    {:<9} {:?}\n    {:<9} {:?}{}",
                a.step,
                a.label,
                "tmpfs",
                a.obs,
                "fastfuse",
                b.obs,
                if detail.is_empty() {
                    String::new()
                } else {
                    format!("\n    {detail}")
                }
            ));
        }
    }
    if raw.records.len() != fuse.records.len() {
        out.push(format!(
            "{} made {} observations, {} made {}",
            raw.side,
            raw.records.len(),
            fuse.side,
            fuse.records.len()
        ));
    }
    out
}

/// The script on a raw tmpfs, then through `served`, a fastfuse mount
/// started with `args` (which name the side in messages; with
/// `allow_other` the script also acts as other users); every difference,
/// and every broken expectation on either side, fails.
pub fn same_as_source(served: &Served, args: &[&str]) {
    let other_users = args.iter().any(|a| a.contains("allow_other"));
    let start = Instant::now();

    let raw = Tmpfs::new("1g");
    let raw_root = raw.path().join("work");
    std::fs::create_dir(&raw_root).unwrap();
    let on_tmpfs = run_script("tmpfs", &raw_root, &raw_root, other_users);
    drop(raw);

    let root = served.mnt().join("work");
    std::fs::create_dir(&root).unwrap();
    let side = format!("fastfuse {}", args.join(" "));
    let through = run_script(
        &side,
        &root,
        &served.source.path().join("work"),
        other_users,
    );

    let differences = compare(&on_tmpfs, &through);
    let unexpected: Vec<_> = on_tmpfs
        .unexpected
        .iter()
        .chain(&through.unexpected)
        .collect();
    eprintln!(
        "{side}: {} observations compared in {:?}",
        on_tmpfs.records.len(),
        start.elapsed()
    );
    assert!(
        on_tmpfs.records.len() > 300,
        "the script observed too little"
    );
    assert!(
        differences.is_empty() && unexpected.is_empty(),
        "{side} differs from tmpfs in {} observations:\n{}\n\nbroken expectations ({}):\n{}",
        differences.len(),
        differences.join("\n"),
        unexpected.len(),
        unexpected
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
