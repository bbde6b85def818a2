//! Confinement: no operation of the daemon reaches outside the source.
//!
//! Each test serves a directory `src` of a tmpfs whose sibling `outside`
//! holds a sentinel tree (a secret file, a directory, xattrs), so that an
//! escape would land on the same filesystem, where links and renames work.
//! The tests snapshot everything on the tmpfs but `src` before and after.
//!
//! The kernel resolves paths through a FUSE mount itself, and a symlink it
//! follows for the caller leads wherever it points, as on any filesystem:
//! that is the caller's walk, with the caller's permissions, not the
//! daemon's. So the callers here never let the kernel follow a symlink
//! (`openat2` with `RESOLVE_NO_SYMLINKS`, `*at` calls on a final component,
//! `AT_SYMLINK_NOFOLLOW`): whatever then changes outside `src` was done by
//! the daemon.

mod common;
mod support;

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, ResolveFlags, Timespec, Timestamps};
use support::*;

/// A tmpfs with `src` (served) and `outside` (the sentinel) side by side.
struct Layout {
    served: Served,
    /// The tmpfs root: `src` and `outside` are in it.
    top: PathBuf,
    outside: PathBuf,
}

impl Layout {
    fn start(args: &[&str]) -> Layout {
        let tmpfs = Tmpfs::new("64m");
        let top = tmpfs.path().to_path_buf();
        let outside = top.join("outside");
        std::fs::create_dir_all(outside.join("dir")).unwrap();
        std::fs::write(outside.join("secret"), b"secret").unwrap();
        std::fs::write(outside.join("dir/note"), b"note").unwrap();
        rustix::fs::chmod(outside.join("secret"), Mode::from_raw_mode(0o600)).unwrap();
        for p in [outside.join("secret"), outside.clone()] {
            rustix::fs::setxattr(&p, "trusted.outside", b"1", rustix::fs::XattrFlags::empty())
                .unwrap();
        }
        let served = Served::launch(
            tmpfs,
            Launch {
                subdir: Some("src"),
                ..Default::default()
            },
            args,
        );
        Layout {
            served,
            top,
            outside,
        }
    }

    fn src(&self) -> &Path {
        self.served.src()
    }

    fn mnt(&self) -> &Path {
        self.served.mnt()
    }

    /// Everything on the tmpfs but the source.
    fn sentinel(&self) -> Snapshot {
        snapshot(&self.top, self.src())
    }
}

fn open_dir(path: &Path) -> OwnedFd {
    rustix::fs::open(path, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap()
}

/// `openat2` that never lets the kernel follow a symlink for us.
fn open_nofollow(dir: impl AsFd, name: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    // openat2 insists on a zero mode unless it creates.
    let mode = if flags.contains(OFlags::CREATE) {
        Mode::from_raw_mode(0o644)
    } else {
        Mode::empty()
    };
    rustix::fs::openat2(
        dir,
        name,
        flags | OFlags::CLOEXEC,
        mode,
        ResolveFlags::NO_SYMLINKS,
    )
}

fn ino(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).unwrap().ino()
}

#[test]
fn dotdot_from_the_mount_root_never_reaches_the_source_parent() {
    let l = Layout::start(&[]);
    std::fs::create_dir_all(l.src().join("sub/deeper")).unwrap();
    let before = l.sentinel();
    let mnt = l.mnt();
    let above_mnt = ino(mnt.parent().unwrap());
    let above_src = ino(&l.top);
    assert_ne!(above_mnt, above_src);

    // The kernel walks ".." itself: from the mount's root it leaves the
    // mount to the mountpoint's parent, never to the source's parent.
    for walk in ["..", "sub/../..", "sub/deeper/../../.."] {
        let st = std::fs::metadata(mnt.join(walk)).unwrap();
        assert_eq!(st.ino(), above_mnt, "{walk}");
    }
    let root = open_dir(mnt);
    let up = rustix::fs::statat(&root, "..", AtFlags::empty()).unwrap();
    assert_eq!(up.st_ino, above_mnt);
    // RESOLVE_BENEATH keeps ".." of the root from leaving it at all.
    assert_eq!(
        rustix::fs::openat2(
            &root,
            "..",
            OFlags::PATH,
            Mode::empty(),
            ResolveFlags::BENEATH
        )
        .unwrap_err(),
        rustix::io::Errno::XDEV
    );
    let listed: Vec<_> = std::fs::read_dir(mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(listed, [OsStr::new("sub")]);

    // The daemon itself answers LOOKUP "..", when the kernel reconnects a
    // directory found by file handle (NFS export): an inotify watch keeps
    // the inode of sub/deeper cached while drop_caches frees its dentry
    // and its parents', so open_by_handle_at must ask "who is the parent?"
    // up to the root. Were ".." of `sub` answered with anything but the
    // root's node, the kernel would keep climbing, out of the source.
    let handle = FileHandle::of(&mnt.join("sub/deeper")).unwrap();
    let inotify = rustix::fs::inotify::init(rustix::fs::inotify::CreateFlags::CLOEXEC).unwrap();
    rustix::fs::inotify::add_watch(
        &inotify,
        mnt.join("sub/deeper"),
        rustix::fs::inotify::WatchFlags::ATTRIB,
    )
    .unwrap();
    let lookups = |s: &fastfuse::stats::StatsSnapshot| s.ops.get("LOOKUP").map_or(0, |o| o.count);
    let before_stats = fastfuse::stats::query(mnt).unwrap();
    drop(root);
    drop_caches();
    let fd = handle
        .open(&mount_fd(mnt), libc::O_RDONLY | libc::O_DIRECTORY)
        .unwrap();
    let after_stats = fastfuse::stats::query(mnt).unwrap();
    let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
    assert_eq!(path, mnt.join("sub/deeper"));
    assert!(
        lookups(&after_stats) >= lookups(&before_stats) + 2,
        "reconnecting made the daemon look up \"..\" (LOOKUPs {} -> {})",
        lookups(&before_stats),
        lookups(&after_stats)
    );
    let st = rustix::fs::fstat(&fd).unwrap();
    assert_eq!(st.st_ino, ino(&l.src().join("sub/deeper")));
    drop(fd);
    drop(inotify);
    assert_untouched(&before, &l.sentinel());
}

#[test]
fn symlinks_to_outside_are_never_followed_by_the_daemon() {
    let l = Layout::start(&[]);
    let src = l.src().to_path_buf();
    let outside = l.outside.clone();
    std::fs::create_dir(src.join("sub")).unwrap();
    std::fs::write(src.join("file"), b"file").unwrap();
    // Absolute and relative, to a directory, to a file, and dangling into
    // the outside (where following with O_CREAT would create a file).
    let links: Vec<(PathBuf, PathBuf)> = vec![
        (src.join("abs_dir"), outside.clone()),
        (src.join("rel_dir"), "../outside".into()),
        (src.join("sub/rel_dir"), "../../outside".into()),
        (src.join("abs_file"), outside.join("secret")),
        (src.join("rel_file"), "../outside/secret".into()),
        (src.join("sub/rel_file"), "../../outside/secret".into()),
        (src.join("abs_new"), outside.join("new")),
        (src.join("rel_new"), "../outside/new".into()),
        (src.join("root"), "/".into()),
    ];
    for (link, target) in &links {
        std::os::unix::fs::symlink(target, link).unwrap();
    }
    let before = l.sentinel();
    let mnt = l.mnt().to_path_buf();
    let root = open_dir(&mnt);

    for (link, target) in &links {
        let rel = link.strip_prefix(&src).unwrap();
        let name = rel.file_name().unwrap().to_str().unwrap();
        let through = mnt.join(rel);
        let parent = open_dir(through.parent().unwrap());
        let what = rel.display().to_string();

        // LOOKUP: the link itself, never what it points to.
        let st = std::fs::symlink_metadata(&through).unwrap();
        assert!(st.file_type().is_symlink(), "{what}");
        assert_eq!(st.ino(), ino(link), "{what}");
        assert_eq!(&std::fs::read_link(&through).unwrap(), target, "{what}");
        // Used as a parent, with the kernel forbidden to follow it: ELOOP
        // from the kernel; the daemon is never asked for anything below.
        for flags in [
            OFlags::RDONLY,
            OFlags::PATH,
            OFlags::WRONLY | OFlags::CREATE,
        ] {
            let e = open_nofollow(&root, &format!("{what}/secret"), flags).unwrap_err();
            assert_eq!(e, rustix::io::Errno::LOOP, "{what}/secret {flags:?}");
            let e = open_nofollow(&root, &what, flags).unwrap_err();
            assert_eq!(e, rustix::io::Errno::LOOP, "{what} {flags:?}");
        }

        // LINK: the daemon links the node it holds, the symlink itself
        // (never the file or directory it names).
        let hard = format!("{name}.hard");
        rustix::fs::linkat(&parent, name, &parent, &*hard, AtFlags::empty()).unwrap();
        let hard_src = link.with_file_name(&hard);
        assert_eq!(
            ino(&hard_src),
            ino(link),
            "{what}: LINK linked something else"
        );
        assert!(std::fs::symlink_metadata(&hard_src)
            .unwrap()
            .file_type()
            .is_symlink());

        // SETXATTR, GETXATTR, LISTXATTR, REMOVEXATTR on the link (trusted.*
        // is allowed on symlinks): the link gets it, the target keeps its
        // own.
        rustix::fs::lsetxattr(
            &through,
            "trusted.fastfuse",
            b"x",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        assert_eq!(xattr_names(link), ["trusted.fastfuse"], "{what}");
        assert_eq!(xattr_names(&through), ["trusted.fastfuse"], "{what}");
        let mut buf = [0u8; 16];
        assert_eq!(
            rustix::fs::lgetxattr(&through, "trusted.outside", &mut buf).unwrap_err(),
            rustix::io::Errno::NODATA,
            "{what}: GETXATTR read the target's"
        );
        rustix::fs::lremovexattr(&through, "trusted.fastfuse").unwrap();
        assert!(xattr_names(link).is_empty(), "{what}");
        // user.* is refused on symlinks (by the kernel, before FUSE).
        assert!(rustix::fs::lsetxattr(
            &through,
            "user.fastfuse",
            b"x",
            rustix::fs::XattrFlags::empty()
        )
        .is_err());

        // SETATTR: owner and times of the link itself.
        rustix::fs::chownat(
            &parent,
            name,
            Some(rustix::process::Uid::from_raw(1)),
            Some(rustix::process::Gid::from_raw(1)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
        let m = std::fs::symlink_metadata(link).unwrap();
        assert_eq!((m.uid(), m.gid()), (1, 1), "{what}");
        let when = Timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 0,
        };
        rustix::fs::utimensat(
            &parent,
            name,
            &Timestamps {
                last_access: when,
                last_modification: when,
            },
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
        assert_eq!(
            std::fs::symlink_metadata(link).unwrap().mtime(),
            1_000_000_000
        );
        // A mode cannot be set on a symlink at all (the VFS refuses).
        assert!(rustix::fs::chmodat(
            &parent,
            name,
            Mode::from_raw_mode(0o777),
            AtFlags::SYMLINK_NOFOLLOW
        )
        .is_err());

        // RENAME, RENAME_EXCHANGE with a file, RENAME over it, UNLINK: all
        // move or remove the link, never its target.
        let moved = format!("{name}.moved");
        rustix::fs::renameat(&parent, name, &parent, &*moved).unwrap();
        assert_eq!(ino(&link.with_file_name(&moved)), ino(&hard_src));
        rustix::fs::renameat(&parent, &*moved, &parent, name).unwrap();
        rustix::fs::renameat_with(&root, "file", &parent, name, RenameFlags::EXCHANGE).unwrap();
        assert_eq!(std::fs::read(link).unwrap(), b"file");
        assert_eq!(&std::fs::read_link(src.join("file")).unwrap(), target);
        rustix::fs::renameat_with(&root, "file", &parent, name, RenameFlags::EXCHANGE).unwrap();
        // MKNOD, MKDIR, SYMLINK and create over the link's name: it
        // exists, so EEXIST, whatever it points to.
        assert_eq!(
            rustix::fs::mknodat(
                &parent,
                name,
                rustix::fs::FileType::Fifo,
                Mode::from_raw_mode(0o644),
                0
            )
            .unwrap_err(),
            rustix::io::Errno::EXIST
        );
        assert_eq!(
            rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755)).unwrap_err(),
            rustix::io::Errno::EXIST
        );
        assert_eq!(
            open_nofollow(
                &parent,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL
            )
            .unwrap_err(),
            rustix::io::Errno::EXIST
        );
        rustix::fs::unlinkat(&parent, &*hard, AtFlags::empty()).unwrap();
        assert!(std::fs::symlink_metadata(link).is_ok());
    }
    // What the daemon did to the links stayed on the links.
    assert_untouched(&before, &l.sentinel());
}

/// The source, changed behind the daemon's back: a directory the mount is
/// using is renamed away and replaced by a symlink to the outside, and a
/// name inside it flips between absent and a symlink dangling into the
/// outside, while threads look names up, create, make nodes, rename and
/// link through the mount. Whatever the interleaving, nothing may appear or
/// change outside the source: the daemon holds directories by their inode
/// and opens every name with O_NOFOLLOW, so the only way out would be a
/// symlink it followed.
#[test]
fn a_directory_swapped_for_a_symlink_under_racing_operations_leaks_nothing() {
    const RACE: Duration = Duration::from_secs(4);
    let l = Layout::start(&[]);
    let src = l.src().to_path_buf();
    std::fs::create_dir_all(src.join("d/sub")).unwrap();
    // Opened before the swapping starts: `d` is sometimes away.
    let trap_dirs = [open_dir(&src.join("d")), open_dir(&src.join("d/sub"))];
    let before = l.sentinel();
    let _watchdog = Watchdog::start(
        Duration::from_secs(60),
        "the symlink race",
        l.served.pid(),
        &[l.mnt(), &l.top],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();

    // The directory: d <-> d.moved, and d as a symlink (absolute or
    // relative) to the outside while d.moved is away.
    {
        let (src, outside, stop) = (src.clone(), l.outside.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                std::fs::rename(src.join("d"), src.join("d.moved")).unwrap();
                let target: PathBuf = if swaps.is_multiple_of(2) {
                    outside.clone()
                } else {
                    "../outside".into()
                };
                std::os::unix::fs::symlink(&target, src.join("d")).unwrap();
                std::thread::yield_now();
                std::fs::remove_file(src.join("d")).unwrap();
                std::fs::rename(src.join("d.moved"), src.join("d")).unwrap();
                swaps += 1;
                // Long enough for the mount to get in.
                std::thread::sleep(Duration::from_micros(300));
            }
            swaps
        }));
    }
    // The trap: d/trap and d/sub/trap flip between absent and a symlink
    // to outside/trapped-N, through fds that follow the directories
    // wherever they are renamed.
    for dir in trap_dirs {
        let (outside, stop) = (l.outside.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let target = outside.join(format!("trapped-{}", flips % 4));
                let _ = rustix::fs::symlinkat(&target, &dir, "trap");
                std::thread::yield_now();
                // Anything the mount created there in between goes too.
                let _ = rustix::fs::unlinkat(&dir, "trap", AtFlags::empty());
                let _ = rustix::fs::unlinkat(&dir, "trap", AtFlags::REMOVEDIR);
                flips += 1;
            }
            flips
        }));
    }

    let creates = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for t in 0..4u64 {
        let (mnt, stop, creates) = (l.mnt().to_path_buf(), stop.clone(), creates.clone());
        workers.push(std::thread::spawn(move || {
            let root = open_dir(&mnt);
            let mut rng = Rng::new(0xc0f1 + t);
            while !stop.load(Ordering::Relaxed) {
                let dir = ["d", "d/sub"][rng.below(2) as usize];
                // ELOOP while `d` is the symlink, ENOENT while it is away.
                let Ok(d) = open_nofollow(&root, dir, OFlags::PATH | OFlags::DIRECTORY) else {
                    continue;
                };
                let name = if rng.below(2) == 0 {
                    "trap".to_string()
                } else {
                    format!("f{t}-{}", rng.below(4))
                };
                let _ = rustix::fs::statat(&d, &*name, AtFlags::SYMLINK_NOFOLLOW);
                match rng.below(6) {
                    0 | 1 => {
                        // NONBLOCK: the name may be a fifo made by a
                        // neighbour, which would wait for a reader.
                        let flags =
                            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NONBLOCK;
                        if let Ok(f) = open_nofollow(&d, &name, flags) {
                            let _ = rustix::io::write(&f, b"inside");
                            creates.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    2 => {
                        let _ = rustix::fs::mknodat(
                            &d,
                            &*name,
                            rustix::fs::FileType::Fifo,
                            Mode::from_raw_mode(0o644),
                            0,
                        );
                    }
                    3 => {
                        let _ = rustix::fs::mkdirat(&d, &*name, Mode::from_raw_mode(0o755));
                    }
                    4 => {
                        let other = format!("g{t}");
                        let _ = rustix::fs::renameat(&d, &*name, &d, &*other);
                        let _ = rustix::fs::linkat(&d, &*other, &d, &*name, AtFlags::empty());
                    }
                    _ => {
                        let _ = rustix::fs::unlinkat(&d, &*name, AtFlags::empty());
                        let _ = rustix::fs::unlinkat(&d, &*name, AtFlags::REMOVEDIR);
                    }
                }
            }
        }));
    }

    let started = Instant::now();
    while started.elapsed() < RACE {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let counts: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    eprintln!(
        "swaps {}, trap flips {:?}, creates through the mount {}",
        counts[0],
        &counts[1..],
        creates.load(Ordering::Relaxed)
    );
    assert!(
        counts.iter().all(|&n| n > 100),
        "the race barely ran: {counts:?}"
    );
    assert!(creates.load(Ordering::Relaxed) > 100);
    assert_untouched(&before, &l.sentinel());
    // The daemon is alive and serving.
    std::fs::write(l.mnt().join("after"), b"ok").unwrap();
    assert_eq!(std::fs::read(src.join("after")).unwrap(), b"ok");
}
