//! An async filesystem: every READ answers only after a timer fires, yet
//! one engine worker keeps serving other requests meanwhile, because
//! [`fastfuse::Async`] defers each request and answers it from a task.
//!
//! The tree is in memory: a file `/timer` and a directory `/dir`, where
//! files and directories can be created, written and removed. The futures
//! run on the built-in [`ThreadPoolSpawner`], and the timer is a single
//! std thread that wakes them; no async runtime is involved.
//!
//! ```text
//! cargo run -p fastfuse --features async --example async_timer -- /mnt/timer
//! ```

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use fastfuse::{
    Async, AsyncCaller, AsyncFilesystem, Attr, AttrReply, Config, DirEntry, Entry, Errno,
    FileHandle, MountOptions, NodeId, OpenFlags, Opened, Session, SetAttr, ThreadPoolSpawner,
    WriteFlags,
};

/// How long a READ waits in `main`.
pub const READ_DELAY: Duration = Duration::from_millis(100);

/// The content `/timer` starts with.
pub const TIMER_TEXT: &[u8] = b"answered when the timer fired\n";

/// Node ids of the two entries the tree starts with.
pub const TIMER_FILE: NodeId = NodeId(2);
/// The directory `/dir`.
pub const DIR: NodeId = NodeId(3);

/// Zero: every stat(2) asks, so a GETATTR can be seen served while a READ
/// waits (and sizes change).
const TTL: Duration = Duration::ZERO;

/// One timer thread for any number of sleeps: it sleeps until the earliest
/// deadline and wakes the futures that are due.
pub struct Timer {
    shared: Arc<TimerShared>,
}

struct TimerShared {
    state: Mutex<TimerState>,
    changed: Condvar,
}

#[derive(Default)]
struct TimerState {
    /// Sleeps by deadline; the sequence number tells equal deadlines apart.
    due: BTreeMap<(Instant, u64), Arc<SleepState>>,
    next: u64,
    stop: bool,
}

#[derive(Default)]
struct SleepState {
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Timer {
    /// Starts the timer thread; it ends when the `Timer` is dropped.
    pub fn new() -> std::io::Result<Timer> {
        let shared = Arc::new(TimerShared {
            state: Mutex::new(TimerState::default()),
            changed: Condvar::new(),
        });
        let thread = shared.clone();
        std::thread::Builder::new()
            .name("timer".into())
            .spawn(move || thread.run())?;
        Ok(Timer { shared })
    }

    /// A future that completes `after` from now.
    pub fn sleep(&self, after: Duration) -> Sleep {
        let state = Arc::new(SleepState::default());
        let mut timers = lock(&self.shared.state);
        let seq = timers.next;
        timers.next += 1;
        timers
            .due
            .insert((Instant::now() + after, seq), state.clone());
        drop(timers);
        // The new deadline may be the earliest.
        self.shared.changed.notify_one();
        Sleep { state }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.changed.notify_one();
    }
}

impl TimerShared {
    fn run(&self) {
        let mut timers = lock(&self.state);
        while !timers.stop {
            let now = Instant::now();
            match timers.due.first_key_value() {
                Some((&(at, _), _)) if at <= now => {
                    let (_, sleep) = timers.due.pop_first().expect("not empty");
                    sleep.fired.store(true, Ordering::SeqCst);
                    let waker = lock(&sleep.waker).take();
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                }
                Some((&(at, _), _)) => {
                    timers = self
                        .changed
                        .wait_timeout(timers, at - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                None => {
                    timers = self
                        .changed
                        .wait(timers)
                        .unwrap_or_else(PoisonError::into_inner)
                }
            }
        }
    }
}

/// [`Timer::sleep`]'s future.
pub struct Sleep {
    state: Arc<SleepState>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // The waker goes in before the flag is read: the timer sets the
        // flag before it takes the waker, so a firing in between wakes.
        *lock(&self.state.waker) = Some(cx.waker().clone());
        if self.state.fired.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

enum Kind {
    File(Vec<u8>),
    Dir(BTreeMap<OsString, NodeId>),
}

struct Node {
    attr: Attr,
    kind: Kind,
}

struct Tree {
    nodes: HashMap<NodeId, Node>,
    next: u64,
}

impl Tree {
    fn node(&self, id: NodeId) -> Result<&Node, Errno> {
        self.nodes.get(&id).ok_or(Errno::ENOENT)
    }

    fn children(&self, id: NodeId) -> Result<&BTreeMap<OsString, NodeId>, Errno> {
        match &self.node(id)?.kind {
            Kind::Dir(children) => Ok(children),
            Kind::File(_) => Err(Errno::ENOTDIR),
        }
    }

    fn children_mut(&mut self, id: NodeId) -> Result<&mut BTreeMap<OsString, NodeId>, Errno> {
        match &mut self.nodes.get_mut(&id).ok_or(Errno::ENOENT)?.kind {
            Kind::Dir(children) => Ok(children),
            Kind::File(_) => Err(Errno::ENOTDIR),
        }
    }

    fn entry(&self, id: NodeId) -> Result<Entry, Errno> {
        Ok(Entry {
            node: id,
            generation: 0,
            attr: self.node(id)?.attr,
            attr_timeout: TTL,
            entry_timeout: Duration::from_secs(1),
        })
    }

    /// Adds `name` to `parent` as a new node of `mode`.
    fn add(
        &mut self,
        who: AsyncCaller,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
    ) -> Result<Entry, Errno> {
        if self.children(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let id = NodeId(self.next);
        self.next += 1;
        let (kind, nlink) = if mode & libc::S_IFMT == libc::S_IFDIR {
            (Kind::Dir(BTreeMap::new()), 2)
        } else {
            (Kind::File(Vec::new()), 1)
        };
        let attr = Attr {
            ino: id.0,
            mode,
            nlink,
            uid: who.uid,
            gid: who.gid,
            ..Default::default()
        };
        self.nodes.insert(id, Node { attr, kind });
        self.children_mut(parent)?.insert(name.to_owned(), id);
        self.entry(id)
    }

    /// Removes `name` from `parent`, if it is a directory exactly when
    /// `dir` is. The node stays: this example keeps no lookup counts to
    /// know when the kernel is done with it.
    fn remove(&mut self, parent: NodeId, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let id = *self.children(parent)?.get(name).ok_or(Errno::ENOENT)?;
        match (&self.node(id)?.kind, dir) {
            (Kind::Dir(children), true) if !children.is_empty() => return Err(Errno::ENOTEMPTY),
            (Kind::Dir(_), false) => return Err(Errno::EISDIR),
            (Kind::File(_), true) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        self.children_mut(parent)?.remove(name);
        Ok(())
    }
}

/// The filesystem: an in-memory tree whose READs wait `read_delay` on the
/// timer before they answer.
pub struct TimerFs {
    timer: Timer,
    read_delay: Duration,
    tree: Mutex<Tree>,
}

impl TimerFs {
    /// `/timer` holding [`TIMER_TEXT`] and an empty `/dir`; every READ
    /// answers `read_delay` after it arrives.
    pub fn new(read_delay: Duration) -> std::io::Result<TimerFs> {
        let dir = |ino: u64| Attr {
            ino,
            mode: libc::S_IFDIR | 0o755,
            nlink: 2,
            ..Default::default()
        };
        let file = Attr {
            ino: TIMER_FILE.0,
            mode: libc::S_IFREG | 0o644,
            nlink: 1,
            size: TIMER_TEXT.len() as u64,
            ..Default::default()
        };
        let root = BTreeMap::from([("timer".into(), TIMER_FILE), ("dir".into(), DIR)]);
        let nodes = HashMap::from([
            (
                NodeId::ROOT,
                Node {
                    attr: Attr { nlink: 3, ..dir(1) },
                    kind: Kind::Dir(root),
                },
            ),
            (
                TIMER_FILE,
                Node {
                    attr: file,
                    kind: Kind::File(TIMER_TEXT.to_vec()),
                },
            ),
            (
                DIR,
                Node {
                    attr: dir(DIR.0),
                    kind: Kind::Dir(BTreeMap::new()),
                },
            ),
        ]);
        Ok(TimerFs {
            timer: Timer::new()?,
            read_delay,
            tree: Mutex::new(Tree { nodes, next: 4 }),
        })
    }

    fn tree(&self) -> MutexGuard<'_, Tree> {
        lock(&self.tree)
    }
}

impl AsyncFilesystem for TimerFs {
    async fn lookup(&self, _: AsyncCaller, parent: NodeId, name: &OsStr) -> Result<Entry, Errno> {
        let tree = self.tree();
        let id = *tree.children(parent)?.get(name).ok_or(Errno::ENOENT)?;
        tree.entry(id)
    }

    async fn getattr(
        &self,
        _: AsyncCaller,
        node: NodeId,
        _: Option<FileHandle>,
    ) -> Result<AttrReply, Errno> {
        Ok(AttrReply {
            attr: self.tree().node(node)?.attr,
            timeout: TTL,
        })
    }

    async fn setattr(
        &self,
        _: AsyncCaller,
        node: NodeId,
        changes: SetAttr,
    ) -> Result<AttrReply, Errno> {
        let mut tree = self.tree();
        let n = tree.nodes.get_mut(&node).ok_or(Errno::ENOENT)?;
        if let Some(size) = changes.size {
            let Kind::File(data) = &mut n.kind else {
                return Err(Errno::EISDIR);
            };
            data.resize(size as usize, 0);
            n.attr.size = size;
        }
        if let Some(mode) = changes.mode {
            n.attr.mode = (n.attr.mode & libc::S_IFMT) | (mode & !libc::S_IFMT);
        }
        n.attr.uid = changes.uid.unwrap_or(n.attr.uid);
        n.attr.gid = changes.gid.unwrap_or(n.attr.gid);
        Ok(AttrReply {
            attr: n.attr,
            timeout: TTL,
        })
    }

    async fn open(&self, _: AsyncCaller, node: NodeId, flags: OpenFlags) -> Result<Opened, Errno> {
        let mut tree = self.tree();
        let n = tree.nodes.get_mut(&node).ok_or(Errno::ENOENT)?;
        let Kind::File(data) = &mut n.kind else {
            return Err(Errno::EISDIR);
        };
        // With FUSE_ATOMIC_O_TRUNC (the engine asks for it) the kernel
        // leaves O_TRUNC to OPEN instead of sending a SETATTR.
        if flags.flags & libc::O_TRUNC as u32 != 0 {
            data.clear();
            n.attr.size = 0;
        }
        // Direct I/O: every read(2) is a READ, none served from the page
        // cache, so every one waits for the timer.
        Ok(Opened {
            open_flags: fastfuse::abi::fopen::FOPEN_DIRECT_IO,
            ..Default::default()
        })
    }

    async fn read(
        &self,
        _: AsyncCaller,
        node: NodeId,
        _: FileHandle,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, Errno> {
        self.timer.sleep(self.read_delay).await;
        let tree = self.tree();
        let Kind::File(data) = &tree.node(node)?.kind else {
            return Err(Errno::EISDIR);
        };
        let start = (offset as usize).min(data.len());
        let end = start.saturating_add(size as usize).min(data.len());
        Ok(data[start..end].to_vec())
    }

    async fn write(
        &self,
        _: AsyncCaller,
        node: NodeId,
        _: FileHandle,
        offset: u64,
        data: &[u8],
        _: WriteFlags,
    ) -> Result<u32, Errno> {
        let mut tree = self.tree();
        let n = tree.nodes.get_mut(&node).ok_or(Errno::ENOENT)?;
        let Kind::File(content) = &mut n.kind else {
            return Err(Errno::EISDIR);
        };
        let start = offset as usize;
        let end = start + data.len();
        if content.len() < end {
            content.resize(end, 0);
        }
        content[start..end].copy_from_slice(data);
        n.attr.size = content.len() as u64;
        Ok(data.len() as u32)
    }

    async fn readdir(
        &self,
        _: AsyncCaller,
        node: NodeId,
        _: FileHandle,
        offset: u64,
    ) -> Result<Vec<DirEntry>, Errno> {
        let tree = self.tree();
        let dot = |name: &str, ino: u64| (ino, libc::DT_DIR, OsString::from(name));
        let listing = [dot(".", node.0), dot("..", node.0)].into_iter().chain(
            tree.children(node)?.iter().map(|(name, id)| {
                let typ = match tree.nodes[id].kind {
                    Kind::Dir(_) => libc::DT_DIR,
                    Kind::File(_) => libc::DT_REG,
                };
                (id.0, typ, name.clone())
            }),
        );
        // Cookies are positions: entry i continues at i + 1.
        Ok(listing
            .enumerate()
            .skip(offset as usize)
            .map(|(i, (ino, typ, name))| DirEntry {
                ino,
                offset: i as u64 + 1,
                typ: u32::from(typ),
                name,
            })
            .collect())
    }

    async fn create(
        &self,
        who: AsyncCaller,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _: OpenFlags,
    ) -> Result<(Entry, Opened), Errno> {
        let entry = self.tree().add(who, parent, name, mode)?;
        let opened = Opened {
            open_flags: fastfuse::abi::fopen::FOPEN_DIRECT_IO,
            ..Default::default()
        };
        Ok((entry, opened))
    }

    async fn mkdir(
        &self,
        who: AsyncCaller,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        _umask: u32,
    ) -> Result<Entry, Errno> {
        self.tree().add(who, parent, name, libc::S_IFDIR | mode)
    }

    async fn unlink(&self, _: AsyncCaller, parent: NodeId, name: &OsStr) -> Result<(), Errno> {
        self.tree().remove(parent, name, false)
    }

    async fn rmdir(&self, _: AsyncCaller, parent: NodeId, name: &OsStr) -> Result<(), Errno> {
        self.tree().remove(parent, name, true)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    // async_timer MOUNTPOINT [-o OPTIONS]
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mountpoint = args
        .first()
        .ok_or("usage: async_timer MOUNTPOINT [-o OPTIONS]")?;
    let mut options = MountOptions {
        fsname: "async_timer".into(),
        subtype: Some("async_timer".into()),
        ..Default::default()
    };
    if let (Some("-o"), Some(opts)) = (args.get(1).map(String::as_str), args.get(2)) {
        for opt in opts.split(',') {
            if !options.apply(opt)? {
                return Err(format!("unknown option {opt}").into());
            }
        }
    }
    // One worker is enough: it only defers, the pool's threads run the
    // futures, and the futures wait without holding a thread.
    let config = Config {
        threads: 1,
        handle_signals: true,
        ..Default::default()
    };
    let fs = Async::new(TimerFs::new(READ_DELAY)?, ThreadPoolSpawner::new(2)?);
    Session::mount(fs, mountpoint, &options, config)?.run()?;
    Ok(())
}
