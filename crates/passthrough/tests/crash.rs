//! The crash journal on real mounts: a journaled filesystem served
//! through the engine over a fresh tmpfs loses its server without any
//! cooperation (the session is paused and left, the filesystem dropped
//! unsaved, as a SIGKILL would leave things), and a filesystem recovered
//! from the journal serves the same connection: the kernel's node ids,
//! open files and directories, and cwds go on working.

mod common;

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use common::c;
use fastfuse::{BackgroundSession, Caller, Filesystem, Handover, MountOptions, NodeId, Session};
use fastfuse_passthrough::{Journal, Options, PassthroughError, PassthroughFs, Recovery};

/// A tmpfs mounted on a fresh directory, unmounted (detached) on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn new() -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("fastfuse-crash-src")
            .tempdir()
            .unwrap();
        let path = c(dir.path());
        // SAFETY: NUL-terminated strings that outlive the call.
        let r = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                path.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                c"size=64m".as_ptr().cast(),
            )
        };
        assert_eq!(r, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
        Tmpfs(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let path = c(self.0.path());
        // SAFETY: a NUL-terminated path that outlives the call.
        unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
    }
}

/// The FUSE connection number (the mount's device minor) of the mount at
/// `mnt`, from /proc/self/mountinfo (stat would ask the server).
fn connection_of(mnt: &Path) -> Option<u32> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mnt = mnt.to_string_lossy();
    info.lines().find_map(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        (fields.get(4) == Some(&&*mnt) && l.contains(common::FSNAME))
            .then(|| fields[2].split(':').nth(1)?.parse().ok())
            .flatten()
    })
}

/// Everything a crash test owns, dropped in an order that leaves nothing
/// behind even when the test fails between a crash and a recovery (when
/// no server serves the mount): the serving session unmounts; whatever is
/// still mounted then has its own connection aborted (so that nothing
/// waits on it) and is detached; the child goes; the tmpfs and the
/// directories last.
struct Rig {
    session: Option<BackgroundSession>,
    /// The handover of a crashed session, until a recovery takes it.
    handover: Option<Handover>,
    child: Option<Child>,
    connection: u32,
    config: fastfuse::Config,
    mnt: tempfile::TempDir,
    src: Tmpfs,
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            if !session.is_paused() {
                let _ = session.unmount();
            } else {
                session.leave();
            }
        }
        if common::mounted_at(self.mnt.path()) {
            let _ = fs::write(
                format!("/sys/fs/fuse/connections/{}/abort", self.connection),
                "1",
            );
            let path = c(self.mnt.path());
            // SAFETY: a NUL-terminated path that outlives the call.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
        self.handover.take();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn req() -> Caller<'static> {
    Caller::detached(0, 0, 1)
}

/// The node id `fs` answers for `path` (relative, under the root), looked
/// up component by component as the kernel would.
fn node_of(fs: &PassthroughFs, path: &str) -> NodeId {
    path.split('/').fold(NodeId::ROOT, |parent, name| {
        fs.lookup(&req(), parent, OsStr::new(name)).unwrap().node
    })
}

/// getdents64 on `dir` once: the names it gave (none at the end).
fn getdents(dir: &File) -> Vec<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: `buf` is valid for its length; the descriptor is open.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            dir.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    assert!(n >= 0, "getdents64: {}", std::io::Error::last_os_error());
    let mut names = Vec::new();
    let mut at = 0;
    while at < n as usize {
        let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
        let name = &buf[at + 19..at + reclen];
        let len = name.iter().position(|&b| b == 0).unwrap();
        names.push(String::from_utf8(name[..len].to_vec()).unwrap());
        at += reclen;
    }
    names
}

const ENTRIES: usize = 2000;
const DEEP: &str = "deep/a/b/c/d/e/f/leaf";

fn populate(src: &Path) {
    fs::create_dir(src.join("big")).unwrap();
    for i in 0..ENTRIES {
        fs::write(src.join(format!("big/entry-{i:05}")), b"").unwrap();
    }
    fs::create_dir_all(src.join("deep/a/b/c/d/e/f")).unwrap();
    fs::write(src.join(DEEP), b"leaf").unwrap();
    fs::write(src.join("h1"), b"linked").unwrap();
    fs::hard_link(src.join("h1"), src.join("h2")).unwrap();
    fs::create_dir(src.join("cwd")).unwrap();
    fs::write(src.join("cwd/inside"), b"seen from the cwd\n").unwrap();
}

/// Mounts a journaled filesystem over a fresh, populated tmpfs; the
/// filesystem and the supervisor's descriptor of the journal.
fn mount_journaled(options: Options) -> (Rig, Arc<PassthroughFs>, OwnedFd) {
    mount_journaled_with(common::config(true), options)
}

/// [`mount_journaled`] with the engine configured as `config` says.
fn mount_journaled_with(
    config: fastfuse::Config,
    options: Options,
) -> (Rig, Arc<PassthroughFs>, OwnedFd) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let src = Tmpfs::new();
    populate(src.path());
    let mnt = tempfile::Builder::new()
        .prefix("fastfuse-crash-mnt")
        .tempdir()
        .unwrap();
    let journal = Journal::create().unwrap();
    let kept = journal.fd().try_clone_to_owned().unwrap();
    let fs = Arc::new(PassthroughFs::journaled(src.path(), options, journal).unwrap());
    let mount = MountOptions {
        fsname: common::FSNAME.into(),
        ..Default::default()
    };
    let session = Session::mount(fs.clone(), mnt.path(), &mount, config.clone())
        .unwrap()
        .spawn()
        .unwrap();
    let connection = connection_of(mnt.path()).expect("the mount's connection");
    let rig = Rig {
        session: Some(session),
        handover: None,
        child: None,
        connection,
        config,
        mnt,
        src,
    };
    (rig, fs, kept)
}

impl Rig {
    fn at(&self, rel: &str) -> PathBuf {
        self.mnt.path().join(rel)
    }

    fn source(&self, rel: &str) -> PathBuf {
        self.src.path().join(rel)
    }

    /// The server dies: its session stops serving and goes without a
    /// word to the filesystem, which is dropped unsaved (its descriptors
    /// close, as the kernel closes a killed process's). The connection
    /// stays, held by the handover's descriptor, as by a supervisor.
    fn crash(&mut self, fs: Arc<PassthroughFs>) {
        let mut session = self.session.take().unwrap();
        session.pause().unwrap();
        self.handover = Some(session.handover().unwrap());
        session.leave();
        let weak: Weak<PassthroughFs> = Arc::downgrade(&fs);
        drop(fs);
        assert!(weak.upgrade().is_none(), "the dead filesystem lives on");
    }

    /// A new server: recovered from (a new mapping of) the journal the
    /// supervisor kept, serving the crashed connection.
    fn recover(&mut self, kept: &OwnedFd, options: Options) -> (Arc<PassthroughFs>, Recovery) {
        let recovered = Journal::from_fd(kept.try_clone().unwrap())
            .and_then(|journal| PassthroughFs::recover(self.src.path(), options, journal));
        let (fs, recovery) = recovered.unwrap_or_else(|e| self.abort(&e));
        let fs = Arc::new(fs);
        let handover = self.handover.take().unwrap();
        let session = Session::resume(fs.clone(), handover, self.config.clone())
            .and_then(Session::spawn)
            .unwrap_or_else(|e| self.abort(&e));
        self.session = Some(session);
        (fs, recovery)
    }

    /// Fails the test with nobody serving the mount: its connection is
    /// aborted first, so that the test's open descriptors of it close
    /// without waiting for a server as they unwind.
    fn abort(&self, why: &dyn std::fmt::Display) -> ! {
        let _ = fs::write(
            format!("/sys/fs/fuse/connections/{}/abort", self.connection),
            "1",
        );
        panic!("recovery failed: {why}");
    }

    /// Requests of `op` the serving session has seen.
    fn count(&self, op: &str) -> u64 {
        let stats = self.session.as_ref().unwrap().stats().snapshot();
        stats.ops.get(op).map_or(0, |s| s.count)
    }
}

/// The node ids the old filesystem gave, for the recovered one to match.
fn ids(fs: &PassthroughFs) -> Vec<(&'static str, NodeId)> {
    [DEEP, "deep/a/b", "h1", "h2", "big", "cwd"]
        .into_iter()
        .map(|p| (p, node_of(fs, p)))
        .collect()
}

#[test]
fn a_crashed_server_is_recovered_with_the_kernels_nodes_and_handles() {
    // Directory handles too, which the journal records: without the
    // directory cache, the kernel opens them with OPENDIR.
    let options = Options {
        cache_dirs: false,
        ..Options::default()
    };
    let (mut rig, fs, kept) = mount_journaled(options);
    // A file written and read through one descriptor.
    let data = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(rig.at("data"))
        .unwrap();
    data.write_all_at(b"before the crash", 0).unwrap();
    let mut buf = [0u8; 16];
    data.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"before the crash");
    // A listing half read.
    let big = File::open(rig.at("big")).unwrap();
    let mut listed = Vec::new();
    while listed.len() < ENTRIES / 2 {
        let names = getdents(&big);
        assert!(!names.is_empty());
        listed.extend(names);
    }
    assert!(listed.len() < ENTRIES, "the listing is not half read");
    // Deep lookups, hard links, a cwd.
    let deep_ino = fs::metadata(rig.at(DEEP)).unwrap().ino();
    let h = fs::metadata(rig.at("h1")).unwrap().ino();
    assert_eq!(fs::metadata(rig.at("h2")).unwrap().ino(), h);
    let mut child = Command::new("sh")
        .args(["-c", "read go; cat inside; echo made > made_here"])
        .current_dir(rig.at("cwd"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    rig.child = Some(child);
    let before = ids(&fs);
    assert_eq!(before[2].1, before[3].1, "hard links share a node");

    rig.crash(fs);
    let (fs, got) = rig.recover(&kept, options);
    assert_eq!(
        (
            got.nodes_lost,
            got.files,
            got.files_lost,
            got.dirs,
            got.dirs_lost
        ),
        (0, 1, 0, 1, 0),
        "{got:?}"
    );
    // root's children data, big, deep, h1, cwd; deep/a..f/leaf; what
    // the direct lookups above added (cwd/inside was opened by the child
    // only after the crash).
    assert!(got.nodes >= 12, "{got:?}");
    assert_eq!(ids(&fs), before, "every node id means what it meant");

    // The old descriptor reads and writes, through the mount and on the
    // source.
    data.write_all_at(b"after", 16).unwrap();
    let mut buf = [0u8; 21];
    data.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"before the crashafter");
    data.sync_all().unwrap();
    assert_eq!(
        fs::read(rig.source("data")).unwrap(),
        b"before the crashafter"
    );
    // Paths looked up before resolve to the same inodes.
    assert_eq!(fs::metadata(rig.at(DEEP)).unwrap().ino(), deep_ino);
    assert_eq!(fs::read(rig.at(DEEP)).unwrap(), b"leaf");
    assert_eq!(fs::metadata(rig.at("h2")).unwrap().ino(), h);
    // The listing goes on where it was: every name exactly once.
    loop {
        let names = getdents(&big);
        if names.is_empty() {
            break;
        }
        listed.extend(names);
    }
    let count = listed.len();
    let unique: HashSet<String> = listed.into_iter().collect();
    assert_eq!((count, unique.len()), (ENTRIES + 2, ENTRIES + 2));
    assert!(unique.contains("entry-00000") && unique.contains("entry-01999"));
    drop(big);
    // The cwd still works.
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let mut out = String::new();
    stdout.read_to_string(&mut out).unwrap();
    assert!(rig.child.take().unwrap().wait().unwrap().success());
    assert_eq!(out, "seen from the cwd\n");
    assert_eq!(fs::read(rig.source("cwd/made_here")).unwrap(), b"made\n");
    // New files.
    fs::write(rig.at("new"), b"new after the crash").unwrap();
    assert_eq!(fs::read(rig.source("new")).unwrap(), b"new after the crash");

    // The kernel forgets what it can; recovered nodes stay (their real
    // counts are unknown), and everything resolves as before.
    let recovered = fs.inode_count();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.count("FORGET") + rig.count("BATCH_FORGET") == 0 {
        assert!(Instant::now() < deadline, "no FORGET came");
        fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(fs.inode_count() > got.nodes, "a recovered node was dropped");
    assert!(fs.inode_count() <= recovered);
    assert_eq!(fs::metadata(rig.at(DEEP)).unwrap().ino(), deep_ino);
    assert_eq!(fs::metadata(rig.at("h1")).unwrap().ino(), h);
    assert_eq!(ids(&fs), before);

    // A second crash, after the recovery.
    let new_id = node_of(&fs, "new");
    rig.crash(fs);
    let (fs, again) = rig.recover(&kept, options);
    assert_eq!(
        (again.nodes_lost, again.files, again.dirs),
        (0, 1, 0),
        "the directory was released: {again:?}"
    );
    assert_eq!(ids(&fs), before);
    assert_eq!(node_of(&fs, "new"), new_id);
    data.write_all_at(b"!", 21).unwrap();
    data.sync_all().unwrap();
    assert_eq!(
        fs::read(rig.source("data")).unwrap(),
        b"before the crashafter!"
    );
    assert_eq!(fs::read(rig.at("new")).unwrap(), b"new after the crash");
    fs::write(rig.at("newer"), b"after two").unwrap();
    assert_eq!(fs::read(rig.source("newer")).unwrap(), b"after two");
    drop(data);
    drop(fs);
    rig.session.take().unwrap().unmount().unwrap();
    assert!(!common::mounted_at(rig.mnt.path()));
}

/// A file unlinked while open: the dead server's descriptors were the last
/// of the inode, so tmpfs frees it with the server, and its handle no
/// longer opens (or opens an inode with no name left, if recovery comes
/// first). The node and the open file are lost: the application's
/// descriptor gets EBADF (the fh is unknown) for what reaches the server.
#[test]
fn a_file_unlinked_while_open_is_lost_with_the_server() {
    let (mut rig, fs, kept) = mount_journaled(Options::default());
    fs::write(rig.at("doomed"), b"soon gone").unwrap();
    // O_DIRECT, so that reads go to the server, not the page cache.
    let doomed = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(rig.at("doomed"))
        .unwrap();
    let kept_file = File::open(rig.at("h1")).unwrap();
    fs::remove_file(rig.at("doomed")).unwrap();
    let mut buf = [0u8; 9];
    doomed.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"soon gone");

    rig.crash(fs);
    let (_fs, got) = rig.recover(&kept, Options::default());
    assert_eq!(
        (got.files, got.files_lost, got.nodes_lost),
        (1, 1, 1),
        "{got:?}"
    );
    // Which of the two depends on whether the source had freed the
    // inode yet when recovery asked for it (the dead server's last
    // close of it may finish just after its death is seen): either way
    // it has no name and its node is lost.
    let node_lost = got.lost.get("gone from the source").copied().unwrap_or(0)
        + got.lost.get("deleted").copied().unwrap_or(0);
    assert_eq!(node_lost, 1, "{got:?}");
    assert_eq!(
        got.lost.get("opened on a node that was lost"),
        Some(&1),
        "{got:?}"
    );
    let err = doomed.read_at(&mut buf, 0).unwrap_err();
    assert_eq!(common::errno(&err), libc::EBADF, "{err}");
    let err = doomed.write_at(b"x", 0).unwrap_err();
    assert_eq!(common::errno(&err), libc::EBADF, "{err}");
    // The other open file is fine.
    let mut linked = String::new();
    (&kept_file).read_to_string(&mut linked).unwrap();
    assert_eq!(linked, "linked");
    drop((doomed, kept_file));
    rig.session.take().unwrap().unmount().unwrap();
}

/// A journal kept for one source is refused over another.
#[test]
fn a_journal_of_another_source_is_refused() {
    let (mut rig, fs, kept) = mount_journaled(Options::default());
    // Open, so that the kernel holds the path's nodes whatever drops its
    // caches meanwhile.
    let leaf = File::open(rig.at(DEEP)).unwrap();
    let other = Tmpfs::new();
    let journal = Journal::from_fd(kept.try_clone().unwrap()).unwrap();
    let err = PassthroughFs::recover(other.path(), Options::default(), journal).unwrap_err();
    assert!(matches!(err, PassthroughError::JournalRoot { .. }), "{err}");
    // The journal is untouched by the refusal: the right source recovers.
    rig.crash(fs);
    let (_fs, got) = rig.recover(&kept, Options::default());
    assert_eq!((got.nodes_lost, got.files), (0, 1), "{got:?}");
    assert!(got.nodes >= 8, "deep/a..f/leaf: {got:?}");
    assert_eq!(fs::read(rig.at(DEEP)).unwrap(), b"leaf");
    let mut back = String::new();
    (&leaf).read_to_string(&mut back).unwrap();
    assert_eq!(back, "leaf");
    drop(leaf);
    rig.session.take().unwrap().unmount().unwrap();
}

/// Kernel passthrough: the kernel does the I/O of such files itself, so
/// they work across the crash anyway; the recovered server knows their
/// backing id and its users, and closes it with the last release.
#[test]
fn kernel_passthrough_files_keep_their_backing_id() {
    let options = Options {
        kernel_passthrough: true,
        ..Options::default()
    };
    let config = fastfuse::Config {
        passthrough: true,
        ..common::config(false)
    };
    let (mut rig, fs, kept) = mount_journaled_with(config, options);
    let w = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(rig.at("p"))
        .unwrap();
    let r = File::open(rig.at("p")).unwrap();
    w.write_all_at(b"through the kernel", 0).unwrap();

    rig.crash(fs);
    let (fs, got) = rig.recover(&kept, options);
    assert_eq!((got.files, got.backing_ids), (2, 1), "{got:?}");
    w.write_all_at(b"!", 18).unwrap();
    let mut buf = [0u8; 19];
    r.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"through the kernel!");
    assert_eq!(
        rig.count("READ") + rig.count("WRITE"),
        0,
        "the kernel did the I/O"
    );
    // One user goes: the id stays for the other.
    drop(w);
    rig.crash(fs);
    let (fs, got) = rig.recover(&kept, options);
    assert_eq!((got.files, got.backing_ids), (1, 1), "{got:?}");
    r.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"through the kernel!");
    // The last goes: the id is closed.
    drop(r);
    rig.crash(fs);
    let (_fs, got) = rig.recover(&kept, options);
    assert_eq!((got.files, got.backing_ids), (0, 0), "{got:?}");
    // A new open registers one anew.
    let again = File::open(rig.at("p")).unwrap();
    again.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"through the kernel!");
    assert_eq!(rig.count("READ"), 0);
    drop(again);
    rig.session.take().unwrap().unmount().unwrap();
}
