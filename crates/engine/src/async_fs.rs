//! Async filesystems (cargo feature `async`): [`AsyncFilesystem`] has
//! methods that return futures, and [`Async`] serves one through the
//! synchronous engine.
//!
//! Each request that [`Async`] serves is deferred with
//! [`Caller::defer`], its future built and handed to a [`Spawn`] as a task
//! that awaits it and answers the [`Deferred`]: the worker that read the
//! request goes straight on to the next one, so one worker serves any
//! number of requests waiting at once. The adaptor uses std futures only,
//! so any executor can run the tasks: a closure that spawns on a tokio
//! runtime, or the small built-in [`ThreadPoolSpawner`] for programs that
//! have none.
//!
//! ```no_run
//! use std::ffi::OsStr;
//! use std::time::Duration;
//! use fastfuse::{
//!     Async, AsyncCaller, AsyncFilesystem, Attr, AttrReply, Config, Errno, FileHandle,
//!     MountOptions, NodeId, Session, ThreadPoolSpawner,
//! };
//!
//! /// An empty directory, answered from futures.
//! struct Empty;
//!
//! impl AsyncFilesystem for Empty {
//!     async fn getattr(&self, _: AsyncCaller, node: NodeId, _: Option<FileHandle>) -> Result<AttrReply, Errno> {
//!         if node != NodeId::ROOT {
//!             return Err(Errno::ENOENT);
//!         }
//!         let attr = Attr { ino: 1, mode: libc::S_IFDIR | 0o755, nlink: 2, ..Default::default() };
//!         Ok(AttrReply { attr, timeout: Duration::from_secs(1) })
//!     }
//!     async fn lookup(&self, _: AsyncCaller, _: NodeId, _: &OsStr) -> Result<fastfuse::Entry, Errno> {
//!         Err(Errno::ENOENT)
//!     }
//! }
//!
//! let fs = Async::new(Empty, ThreadPoolSpawner::new(2)?);
//! Session::mount(fs, "/mnt/empty", &MountOptions::default(), Config::default())?.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! With tokio, a closure is a [`Spawn`]:
//! `Async::new(fs, move |task: fastfuse::Task| { handle.spawn(task); })`.

use std::ffi::{OsStr, OsString};
use std::future::{poll_fn, ready, Future};
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use fastfuse_abi as abi;
use zerocopy::IntoBytes;

use crate::deferred::Deferred;
use crate::dirent::DirEntries;
use crate::errno::Errno;
use crate::filesystem::{Filesystem, OpenFlags};
use crate::reply;
use crate::request::Caller;
use crate::types::{AttrReply, Entry, FileHandle, NodeId, Opened, SetAttr, Unique, WriteFlags};

/// Who made a request: the part of a [`Caller`] that a future can own
/// (a `Caller` borrows the worker's state and lives only as long as the
/// synchronous call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncCaller {
    /// The request's id.
    pub unique: Unique,
    /// The caller's fsuid.
    pub uid: u32,
    /// The caller's fsgid.
    pub gid: u32,
    /// The caller's thread group id (0 for requests made on nobody's
    /// behalf, such as writeback).
    pub pid: u32,
}

impl From<&Caller<'_>> for AsyncCaller {
    fn from(req: &Caller<'_>) -> Self {
        AsyncCaller {
            unique: req.unique,
            uid: req.uid,
            gid: req.gid,
            pid: req.pid,
        }
    }
}

/// One entry of a directory listing, as
/// [`AsyncFilesystem::readdir`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's inode number.
    pub ino: u64,
    /// The cookie the kernel passes back to continue *after* this entry.
    pub offset: u64,
    /// The `DT_*` type.
    pub typ: u32,
    /// The name.
    pub name: OsString,
}

/// A filesystem whose methods return futures, served by [`Async`].
///
/// It covers the operations most filesystems need; the others get the
/// synchronous [`Filesystem`] defaults (ENOSYS, where the kernel falls back
/// or remembers it). As with [`Filesystem`], methods take `&self` and their
/// futures may run concurrently, and the defaults are `Err(ENOSYS)`
/// (`Ok(())` for [`flush`](Self::flush) and [`release`](Self::release)).
/// Lookup counts are the same as [`Filesystem`]'s.
///
/// Implement the methods as `async fn`; the futures must be `Send`, since
/// the executor may move them between threads. A future can borrow `self`
/// and its arguments: the task that runs it owns them.
///
/// When the kernel interrupts a request (its caller got a signal) or the
/// connection ends, the task drops the future and answers EINTR: make
/// futures safe to drop at any `.await`, as with any async cancellation.
#[allow(unused_variables)]
pub trait AsyncFilesystem: Send + Sync + 'static {
    /// Looks `name` up in directory `parent`. Adds one lookup on success.
    fn lookup(
        &self,
        req: AsyncCaller,
        parent: NodeId,
        name: &OsStr,
    ) -> impl Future<Output = Result<Entry, Errno>> + Send {
        ready(Err(Errno::ENOSYS))
    }

    /// Subtracts `nlookup` from the node's lookup count. Synchronous: it
    /// takes no reply, so nothing waits for it.
    fn forget(&self, node: NodeId, nlookup: u64) {}

    /// Returns the node's attributes; `fh` is set for fstat.
    fn getattr(
        &self,
        req: AsyncCaller,
        node: NodeId,
        fh: Option<FileHandle>,
    ) -> impl Future<Output = Result<AttrReply, Errno>> + Send {
        ready(Err(Errno::ENOSYS))
    }

    /// Changes attributes (chmod, chown, truncate, utimens) and returns the
    /// result.
    fn setattr(
        &self,
        req: AsyncCaller,
        node: NodeId,
        changes: SetAttr,
    ) -> impl Future<Output = Result<AttrReply, Errno>> + Send {
        ready(Err(Errno::ENOSYS))
    }

    /// Opens a file. ENOSYS (with protocol 7.23+): opens always succeed and
    /// need no handle.
    fn open(
        &self,
        req: AsyncCaller,
        node: NodeId,
        flags: OpenFlags,
    ) -> impl Future<Output = Result<Opened, Errno>> + Send {
        ready(Err(Errno::ENOSYS))
    }

    /// Reads at most `size` bytes at `offset`; fewer means end of file
    /// (unless the file is in direct-I/O mode), and bytes beyond `size` are
    /// not sent.
    ///
    /// The data is an owned `Vec`, copied into the reply: the zero-copy
    /// path, filling the engine's reply buffer in place, is the synchronous
    /// [`Filesystem::read`]'s, since that buffer is the worker's and the
    /// worker has moved on by the time a future completes.
    fn read(
        &self,
        req: AsyncCaller,
        node: NodeId,
        fh: FileHandle,
        offset: u64,
        size: u32,
    ) -> impl Future<Output = Result<Vec<u8>, Errno>> + Send {
        ready(Err(Errno::ENOSYS))
    }

    /// Writes `data` and returns how many bytes were written. `data` is a
    /// copy of the request's (the request buffer is the worker's).
    fn write(
        &self,
        req: AsyncCaller,
        node: NodeId,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        flags: WriteFlags,
    ) -> impl Future<Output = Result<u32, Errno>> + Send {
        ready(Err(Errno::ENOSYS))
    }

    /// Called on every close(2) of a file descriptor.
    fn flush(
        &self,
        req: AsyncCaller,
        node: NodeId,
        fh: FileHandle,
        lock_owner: u64,
    ) -> impl Future<Output = Result<(), Errno>> + Send {
        ready(Ok(()))
    }

    /// The last reference to an open file is gone; see
    /// [`Filesystem::release`].
    fn release(
        &self,
        req: AsyncCaller,
        node: NodeId,
        fh: FileHandle,
        flags: u32,
        release_flags: u32,
        lock_owner: u64,
    ) -> impl Future<Output = Result<(), Errno>> + Send {
        ready(Ok(()))
    }

    /// Lists the entries of directory `node` that follow `offset` (0, or
    /// the [`offset`](DirEntry::offset) of an entry returned earlier), in
    /// order. [`Async`] sends as many as fit in the kernel's buffer, and the
    /// kernel asks again from the last one sent, so returning the whole
    /// rest of the directory is correct, only wasteful for a large one.
    fn readdir(
        &self,
        req: AsyncCaller,
        node: NodeId,
        fh: FileHandle,
        offset: u64,
    ) -> impl Future<Output = Result<Vec<DirEntry>, Errno>> + Send {
        ready(Err(Errno::ENOSYS))
    }

    /// Creates and opens a regular file. Adds one lookup on success.
    /// ENOSYS: the kernel falls back to MKNOD and OPEN from then on, and
    /// [`Async`] does not serve MKNOD, so creating files fails with ENOSYS.
    fn create(
        &self,
        req: AsyncCaller,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: OpenFlags,
    ) -> impl Future<Output = Result<(Entry, Opened), Errno>> + Send {
        ready(Err(Errno::ENOSYS))
    }

    /// Creates a directory. Adds one lookup on success.
    fn mkdir(
        &self,
        req: AsyncCaller,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> impl Future<Output = Result<Entry, Errno>> + Send {
        ready(Err(Errno::ENOSYS))
    }

    /// Removes a non-directory name.
    fn unlink(
        &self,
        req: AsyncCaller,
        parent: NodeId,
        name: &OsStr,
    ) -> impl Future<Output = Result<(), Errno>> + Send {
        ready(Err(Errno::ENOSYS))
    }

    /// Removes an empty directory.
    fn rmdir(
        &self,
        req: AsyncCaller,
        parent: NodeId,
        name: &OsStr,
    ) -> impl Future<Output = Result<(), Errno>> + Send {
        ready(Err(Errno::ENOSYS))
    }
}

/// A task as [`Async`] hands it to a [`Spawn`]: it answers its request
/// when it completes.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Runs tasks to completion, on whatever executor the program has.
///
/// A closure `Fn(Task)` is one, e.g. one that calls `tokio::spawn`.
pub trait Spawn: Send + Sync + 'static {
    /// Runs `task` until it completes. A task dropped unfinished answers its
    /// request EIO.
    fn spawn(&self, task: Task);
}

impl<T: Fn(Task) + Send + Sync + 'static> Spawn for T {
    fn spawn(&self, task: Task) {
        self(task)
    }
}

/// Serves an [`AsyncFilesystem`] as a [`Filesystem`]: every request it
/// covers is deferred and answered by a task run by `S`.
pub struct Async<F, S> {
    fs: Arc<F>,
    spawner: S,
}

impl<F: AsyncFilesystem, S: Spawn> Async<F, S> {
    /// Serves `fs`, running its futures with `spawner`.
    pub fn new(fs: F, spawner: S) -> Self {
        Self::from_arc(Arc::new(fs), spawner)
    }

    /// Serves a filesystem shared with its owner (who may inspect it while
    /// it is mounted).
    pub fn from_arc(fs: Arc<F>, spawner: S) -> Self {
        Async { fs, spawner }
    }

    /// The filesystem served.
    pub fn filesystem(&self) -> &Arc<F> {
        &self.fs
    }

    /// Defers `req`, and spawns a task that awaits `work` and answers with
    /// `answer` (or the error). The return value is what the synchronous
    /// method returns: ignored once deferred, EIO when the request could
    /// not be deferred (a detached caller), since nothing could answer it.
    fn serve<R, T, W>(
        &self,
        req: &Caller<'_>,
        work: impl FnOnce(Arc<F>, AsyncCaller) -> W,
        answer: impl FnOnce(Deferred, T) + Send + 'static,
    ) -> Result<R, Errno>
    where
        W: Future<Output = Result<T, Errno>> + Send + 'static,
    {
        let Some(deferred) = req.defer() else {
            return Err(Errno::EIO);
        };
        let work = work(self.fs.clone(), AsyncCaller::from(req));
        self.spawner.spawn(Box::pin(async move {
            let interrupt = Arc::new(InterruptSignal::default());
            let raise = interrupt.clone();
            deferred.on_interrupt(move || raise.raise());
            let mut work = pin!(work);
            let result = poll_fn(|cx| {
                if interrupt.poll_raised(cx) {
                    return Poll::Ready(Err(Errno::EINTR));
                }
                work.as_mut().poll(cx)
            })
            .await;
            match result {
                Ok(value) => answer(deferred, value),
                Err(e) => deferred.error(e),
            }
        }));
        // Not the reply: the deferred handle is.
        Err(Errno::EIO)
    }
}

/// Set when the kernel interrupts a request, waking the task that waits
/// for it.
#[derive(Default)]
struct InterruptSignal {
    raised: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl InterruptSignal {
    fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        let waker = self
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Whether raised; if not, `cx` is woken when it is. The waker is
    /// stored before the flag is read, so that a raise in between wakes.
    fn poll_raised(&self, cx: &Context<'_>) -> bool {
        {
            let mut slot = self.waker.lock().unwrap_or_else(PoisonError::into_inner);
            match &*slot {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        }
        self.raised.load(Ordering::SeqCst)
    }
}

fn entry(d: Deferred, e: Entry) {
    d.entry(&e);
}

fn attr(d: Deferred, a: AttrReply) {
    d.attr(&a);
}

fn ok(d: Deferred, (): ()) {
    d.ok();
}

impl<F: AsyncFilesystem, S: Spawn> Filesystem for Async<F, S> {
    fn lookup(&self, req: &Caller, parent: NodeId, name: &OsStr) -> Result<Entry, Errno> {
        let name = name.to_owned();
        self.serve(
            req,
            move |fs, who| async move { fs.lookup(who, parent, &name).await },
            entry,
        )
    }

    fn forget(&self, node: NodeId, nlookup: u64) {
        self.fs.forget(node, nlookup);
    }

    fn getattr(
        &self,
        req: &Caller,
        node: NodeId,
        fh: Option<FileHandle>,
    ) -> Result<AttrReply, Errno> {
        self.serve(
            req,
            move |fs, who| async move { fs.getattr(who, node, fh).await },
            attr,
        )
    }

    fn setattr(&self, req: &Caller, node: NodeId, changes: &SetAttr) -> Result<AttrReply, Errno> {
        let changes = *changes;
        self.serve(
            req,
            move |fs, who| async move { fs.setattr(who, node, changes).await },
            attr,
        )
    }

    fn open(&self, req: &Caller, node: NodeId, flags: OpenFlags) -> Result<Opened, Errno> {
        self.serve(
            req,
            move |fs, who| async move { fs.open(who, node, flags).await },
            |d, o| d.reply_struct(&reply::open_out(&o)),
        )
    }

    fn read(
        &self,
        req: &Caller,
        node: NodeId,
        fh: FileHandle,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, Errno> {
        // The engine has already bounded the buffer by the kernel's size.
        let size = buf.len();
        self.serve(
            req,
            move |fs, who| async move { fs.read(who, node, fh, offset, size as u32).await },
            move |d, data: Vec<u8>| d.reply(Ok(&data[..data.len().min(size)])),
        )
    }

    fn write(
        &self,
        req: &Caller,
        node: NodeId,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        flags: WriteFlags,
    ) -> Result<u32, Errno> {
        let data = data.to_vec();
        self.serve(
            req,
            move |fs, who| async move { fs.write(who, node, fh, offset, &data, flags).await },
            |d, size| d.reply_struct(&abi::WriteOut { size, padding: 0 }),
        )
    }

    fn flush(
        &self,
        req: &Caller,
        node: NodeId,
        fh: FileHandle,
        lock_owner: u64,
    ) -> Result<(), Errno> {
        self.serve(
            req,
            move |fs, who| async move { fs.flush(who, node, fh, lock_owner).await },
            ok,
        )
    }

    fn release(
        &self,
        req: &Caller,
        node: NodeId,
        fh: FileHandle,
        flags: u32,
        release_flags: u32,
        lock_owner: u64,
    ) -> Result<(), Errno> {
        self.serve(
            req,
            move |fs, who| async move {
                fs.release(who, node, fh, flags, release_flags, lock_owner)
                    .await
            },
            ok,
        )
    }

    fn readdir(
        &self,
        req: &Caller,
        node: NodeId,
        fh: FileHandle,
        offset: u64,
        out: &mut DirEntries<'_>,
    ) -> Result<(), Errno> {
        let capacity = out.capacity();
        self.serve(
            req,
            move |fs, who| async move { fs.readdir(who, node, fh, offset).await },
            move |d, entries: Vec<DirEntry>| {
                let mut buf = vec![0; capacity];
                let mut out = DirEntries::new(&mut buf);
                for e in &entries {
                    if !out.push(e.ino, e.offset, e.typ, e.name.as_bytes()) {
                        break;
                    }
                }
                let len = out.len();
                d.reply(Ok(&buf[..len]));
            },
        )
    }

    fn create(
        &self,
        req: &Caller,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: OpenFlags,
    ) -> Result<(Entry, Opened), Errno> {
        let name = name.to_owned();
        self.serve(
            req,
            move |fs, who| async move { fs.create(who, parent, &name, mode, umask, flags).await },
            |d, (e, o): (Entry, Opened)| {
                let mut payload = reply::entry_out(&e).as_bytes().to_vec();
                payload.extend_from_slice(reply::open_out(&o).as_bytes());
                d.reply(Ok(&payload));
            },
        )
    }

    fn mkdir(
        &self,
        req: &Caller,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> Result<Entry, Errno> {
        let name = name.to_owned();
        self.serve(
            req,
            move |fs, who| async move { fs.mkdir(who, parent, &name, mode, umask).await },
            entry,
        )
    }

    fn unlink(&self, req: &Caller, parent: NodeId, name: &OsStr) -> Result<(), Errno> {
        let name = name.to_owned();
        self.serve(
            req,
            move |fs, who| async move { fs.unlink(who, parent, &name).await },
            ok,
        )
    }

    fn rmdir(&self, req: &Caller, parent: NodeId, name: &OsStr) -> Result<(), Errno> {
        let name = name.to_owned();
        self.serve(
            req,
            move |fs, who| async move { fs.rmdir(who, parent, &name).await },
            ok,
        )
    }
}

/// A small executor for programs without an async runtime: a fixed number
/// of threads polling tasks as they are woken. Workers sleep on a channel
/// while no task is ready. Clones share the threads, which end once every
/// clone and every unfinished task is gone.
#[derive(Clone, Debug)]
pub struct ThreadPoolSpawner {
    queue: mpsc::Sender<Arc<PoolTask>>,
}

/// A spawned task: its future (None once complete) and the queue a wake
/// puts it back on.
struct PoolTask {
    future: Mutex<Option<Task>>,
    /// Set while the task is in the queue, so that many wakes before the
    /// next poll queue it once.
    queued: AtomicBool,
    queue: mpsc::Sender<Arc<PoolTask>>,
}

impl Wake for PoolTask {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            // Fails only when no worker is left, and then nothing runs the
            // task: dropped, it answers its request EIO.
            let _ = self.queue.send(self.clone());
        }
    }
}

impl ThreadPoolSpawner {
    /// Starts `threads` worker threads (at least one).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let (queue, ready) = mpsc::channel::<Arc<PoolTask>>();
        let ready = Arc::new(Mutex::new(ready));
        for i in 0..threads.max(1) {
            let ready = ready.clone();
            std::thread::Builder::new()
                .name(format!("fastfuse-async-{i}"))
                .spawn(move || Self::work(&ready))?;
        }
        Ok(ThreadPoolSpawner { queue })
    }

    fn work(ready: &Mutex<mpsc::Receiver<Arc<PoolTask>>>) {
        loop {
            let next = ready.lock().unwrap_or_else(PoisonError::into_inner).recv();
            let Ok(task) = next else {
                return; // every sender is gone: no task can come
            };
            // Cleared before the poll: a wake during it queues the task again.
            task.queued.store(false, Ordering::Release);
            let mut slot = task.future.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(future) = slot.as_mut() else {
                continue; // completed; a stale wake
            };
            let waker = Waker::from(task.clone());
            let mut cx = Context::from_waker(&waker);
            // A panicking task must not take the worker with it; dropping
            // it answers its request EIO.
            match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx))) {
                Ok(Poll::Pending) => {}
                Ok(Poll::Ready(())) => *slot = None,
                Err(_) => {
                    tracing::error!("an async task panicked; its request is answered EIO");
                    *slot = None;
                }
            }
        }
    }
}

impl Spawn for ThreadPoolSpawner {
    fn spawn(&self, task: Task) {
        let task = Arc::new(PoolTask {
            future: Mutex::new(Some(task)),
            queued: AtomicBool::new(true),
            queue: self.queue.clone(),
        });
        // Fails only when no worker is left (see `wake_by_ref`).
        let _ = self.queue.send(task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A future that is pending until its flag is set from another thread.
    struct Flag(Arc<(AtomicBool, Mutex<Option<Waker>>)>);

    impl Future for Flag {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            *self.0 .1.lock().unwrap() = Some(cx.waker().clone());
            if self.0 .0.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    #[test]
    fn the_pool_runs_a_task_woken_from_another_thread_and_one_that_panicked_does_not_stop_it() {
        let pool = ThreadPoolSpawner::new(1).unwrap();
        let (done, finished) = mpsc::channel();
        pool.spawn(Box::pin(async { panic!("a task that panics") }));
        let state = Arc::new((AtomicBool::new(false), Mutex::new(None::<Waker>)));
        let flag = Flag(state.clone());
        let done2 = done.clone();
        pool.spawn(Box::pin(async move {
            flag.await;
            done2.send("woken").unwrap();
        }));
        pool.spawn(Box::pin(async move { done.send("ready").unwrap() }));
        // The pending task does not hold the only thread.
        assert_eq!(
            finished.recv_timeout(std::time::Duration::from_secs(10)),
            Ok("ready")
        );
        state.0.store(true, Ordering::SeqCst);
        if let Some(w) = state.1.lock().unwrap().take() {
            w.wake();
        }
        assert_eq!(
            finished.recv_timeout(std::time::Duration::from_secs(10)),
            Ok("woken")
        );
    }
}
