//! Statahead: the listings of the directories a tree walk is about to
//! read, each name with its stat, read ahead on CPU time nobody else
//! wants: by a thread of their own, and by workers waiting for a request
//! (a step at a time, see [`Statahead::step`]).
//!
//! Why: a cold walk (`find`, `du`, `ls -lR`) is serial. The walker lists
//! a directory, the daemon reads it and stats every name for the
//! READDIRPLUS reply, and the walker waits; then the walker stats every
//! name itself, and the daemon waits. On this project's 2-vCPU VM, over
//! io_uring, those two halves were all of a walk's time (11.9 and 9.9 ms
//! of a 21.4 ms walk of 5,000 entries), the other CPU idle. The daemon's
//! half is mostly the source's own work (getdents64 and a stat by name),
//! which can be done before the READDIRPLUS comes: when a READDIRPLUS from
//! the start of a directory lists subdirectories, each of them is read
//! ahead, and a READDIRPLUS from the start of one that was answers from
//! that reading, taking only the lookups (the inode table) itself.
//!
//! What a listing read ahead may say: what the source held when it was
//! read, so a reply made from it can be older than one read at once. Three
//! rules bound that:
//! - a request that changes names or attributes and says where (unlink,
//!   rmdir, mkdir, mknod, symlink, link, setattr: see `ops`) makes stale
//!   the listings read before it of the directory whose names changed,
//!   and those holding the stat of the inode that changed; an unlink, which
//!   changes the link count of every other name of a file, also those
//!   holding a file of several names. These changes go into a log of the
//!   last [`LOG_LEN`]; a listing older than the log is stale;
//! - any other request that may change the source (everything but
//!   lookups, reads, listings and the like) makes every listing read
//!   before it stale, so a change through the mount is never missed;
//! - a listing older than a quarter of the attribute timeout is not used,
//!   so a change behind the mount's back shows as late as that, on top of
//!   the timeout the kernel caches attributes for anyway.
//!
//! In what order: the newest listing's subdirectories first (walks are
//! depth-first), from the end of that listing the walk was seen to take
//! them from (a walker with a stack takes them last first).
//!
//! What it costs: the thread runs under SCHED_IDLE, so it takes only CPU
//! time no other thread wants, and a walk that never comes leaves the
//! work undone rather than anyone waiting; a worker's step is a few names
//! between two polls, in time it would spend polling anyway. At most
//! [`MAX_QUEUED`] directories wait to be read and [`MAX_READY`] entries
//! are kept, a directory of more than [`MAX_ENTRIES`] names is not read
//! ahead, and a change through the mount that does not say where empties
//! the queue (every listing read for it would be stale).

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, TryLockError, Weak};
use std::time::{Duration, Instant};

use fastfuse::NodeId;

use crate::dir::{DirStream, Taken};
use crate::fs::c_string;
use crate::inode::{Inode, InodeKey};
use crate::sys;

/// Directories waiting to be read ahead, at most.
const MAX_QUEUED: usize = 4096;

/// Entries of listings read ahead and not yet used, at most.
const MAX_READY: usize = 1 << 16;

/// A directory with more entries than this is left to be read when asked.
const MAX_ENTRIES: usize = 1024;

/// Changes the log keeps (see the module doc): an `rm -rf` of directories
/// of [`MAX_ENTRIES`] names makes two per name (UNLINK, and SETATTR under
/// the writeback cache) before it comes to the next directory.
const LOG_LEN: usize = 4 * MAX_ENTRIES;

/// One name of a listing read ahead.
#[derive(Debug)]
pub(crate) struct Ahead {
    /// The name, as getdents64 gave it.
    pub(crate) name: Box<[u8]>,
    /// `d_ino`.
    pub(crate) ino: u64,
    /// The cookie after it.
    pub(crate) next_offset: u64,
    /// `DT_*`.
    pub(crate) typ: u8,
    /// The name's stat; `None` for "." and "..", and for a name gone
    /// between getdents64 and the stat.
    pub(crate) st: Option<libc::stat>,
}

/// A directory's listing read ahead.
#[derive(Debug)]
pub(crate) struct Listing {
    /// [`Statahead::changes`] and [`Statahead::logged`] before it was read.
    seen: Seen,
    /// When its reading began.
    at: Instant,
    /// Every entry, from the start to the end of the directory.
    pub(crate) entries: Vec<Ahead>,
    /// The directory's key and those of the entries stated, sorted: a
    /// logged change of one of them makes the listing stale.
    keys: Vec<InodeKey>,
    /// It holds a non-directory of more than one name (see the module
    /// doc).
    shared: bool,
}

/// A listing kept for the READDIRPLUS to come.
#[derive(Debug)]
struct Ready {
    listing: Arc<Listing>,
    /// A READDIRPLUS answered from it: the walk has been there, so it is
    /// the first to go when room is short.
    used: bool,
}

/// Where the changes stood when a reading began.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// [`Statahead::changes`].
    changes: u64,
    /// [`Statahead::logged`].
    logged: u64,
}

/// One change the log keeps: an inode whose names or attributes changed.
#[derive(Debug, Clone, Copy)]
struct Touched {
    key: InodeKey,
    /// A name of a non-directory went (UNLINK).
    unlinked: bool,
}

/// The last [`LOG_LEN`] changes that said where; the newest is number
/// `first + touched.len() - 1`, the first ever 1.
#[derive(Debug, Default)]
struct Log {
    touched: VecDeque<Touched>,
    first: u64,
}

/// The subdirectories one READDIRPLUS listed, in listing order, less
/// those read or asked for since.
type Batch = VecDeque<(NodeId, Arc<Inode>)>;

#[derive(Debug, Default)]
struct State {
    /// Directories to read, a batch per listing, the newest last: walks
    /// are depth-first (`find`, `du`, `ls -R`, a walker with a stack), so
    /// the newest listing's subdirectories are the next ones asked for.
    batches: Vec<Batch>,
    /// Directories in `batches`, at most [`MAX_QUEUED`].
    queued: usize,
    /// The walk takes a listing's subdirectories last first (a walker
    /// that pushes them on a stack and pops them), so the reader does
    /// too. Learnt from where in its batch a directory that the reader
    /// had not come to yet was asked for.
    backward: bool,
    /// [`Statahead::changes`] when directories were last queued.
    queued_at: u64,
    /// Listings read, used or not.
    ready: HashMap<NodeId, Ready>,
    /// Entries in `ready`.
    ready_entries: usize,
    /// The reader is asleep, waiting for work.
    idle: bool,
    /// The filesystem is gone: the reader returns.
    ended: bool,
}

impl State {
    /// The next directory to read: of the newest batch, in the walk's
    /// order. None once the source changed since directories were last
    /// queued (`changes` is [`Statahead::changes`] now): what is queued
    /// comes from a walk that changes what it walks (`rm -rf`, `chmod
    /// -R`), whose listings would be stale before they are asked for, so
    /// the queue goes.
    fn pop(&mut self, changes: u64) -> Option<(NodeId, Arc<Inode>)> {
        if changes != self.queued_at {
            self.batches.clear();
            self.queued = 0;
            return None;
        }
        while let Some(batch) = self.batches.last_mut() {
            let dir = if self.backward {
                batch.pop_back()
            } else {
                batch.pop_front()
            };
            match dir {
                Some(dir) => {
                    self.queued -= 1;
                    return Some(dir);
                }
                None => drop(self.batches.pop()),
            }
        }
        None
    }

    /// Puts `dir` back, to be read next.
    fn requeue(&mut self, node: NodeId, dir: Arc<Inode>) {
        if self.ended {
            return;
        }
        self.queued += 1;
        self.batches.push(VecDeque::from([(node, dir)]));
    }

    /// A READDIRPLUS asked for `node` before it was read ahead: if it is
    /// queued, it leaves the queue, and the end of its batch it was at
    /// tells the reader which way the walk goes.
    fn asked_before_read(&mut self, node: NodeId) {
        // The newest batches are the likeliest to hold it.
        for b in (0..self.batches.len()).rev() {
            let batch = &mut self.batches[b];
            let Some(at) = batch.iter().position(|(n, _)| *n == node) else {
                continue;
            };
            let (first, last) = (at == 0, at + 1 == batch.len());
            batch.remove(at);
            self.queued -= 1;
            if first != last {
                // A walk asks for a batch's directories from one end: the
                // front going forward, the back going backward.
                self.backward = last;
            }
            if batch.is_empty() {
                self.batches.remove(b);
            }
            return;
        }
    }
}

/// The read-ahead listings of one filesystem, and its reader's work.
#[derive(Debug)]
pub(crate) struct Statahead {
    /// Requests that may have changed the source without saying where,
    /// counted (see the module doc).
    changes: AtomicU64,
    /// The changes that said where. Taken by workers only, never by the
    /// reader thread: under SCHED_IDLE it could be kept off the CPU while
    /// holding it, and every worker that changes something would wait.
    log: Mutex<Log>,
    /// The number of the newest change in the log (0: none yet).
    logged: AtomicU64,
    /// The number of the oldest change the log still has: a listing read
    /// before the one ahead of it cannot be checked.
    log_first: AtomicU64,
    /// How old a listing may be when used.
    max_age: Duration,
    state: Mutex<State>,
    /// The reader waits here for work.
    work: Condvar,
    /// What the workers' steps read (see [`Statahead::step`]).
    stepping: Mutex<Stepping>,
    /// Whether a step may find work: set when directories are queued,
    /// cleared by a step that found none.
    to_step: AtomicBool,
}

impl Statahead {
    /// Read-ahead listings usable for `max_age` after they were read.
    pub(crate) fn new(max_age: Duration) -> Statahead {
        Statahead {
            changes: AtomicU64::new(0),
            log: Mutex::new(Log {
                touched: VecDeque::with_capacity(LOG_LEN),
                first: 1,
            }),
            logged: AtomicU64::new(0),
            log_first: AtomicU64::new(1),
            max_age,
            state: Mutex::default(),
            work: Condvar::new(),
            stepping: Mutex::default(),
            to_step: AtomicBool::new(false),
        }
    }

    /// The state, waited for: by the reader thread, and where no request
    /// waits (the end, tests).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state, if nobody holds it. Workers take it only so: the reader
    /// holds it too, and under SCHED_IDLE any busy CPU keeps the reader
    /// off the CPU, holding it or not; a worker that waited for it would
    /// wait for a starved thread, and a pause for that worker (an upgrade
    /// test under load once waited 44 s for its workers to pause, which
    /// this explains; not reproduced since). A worker that finds it held
    /// goes without: a listing not taken, a hint not given, a step not
    /// made.
    fn try_lock(&self) -> Option<MutexGuard<'_, State>> {
        match self.state.try_lock() {
            Ok(s) => Some(s),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// A request that may have changed the source was served: every
    /// listing read before now is stale. Called after the change, so that
    /// a listing read from then on sees it.
    pub(crate) fn changed(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// The names (in a directory) or the attributes of the inode `key`
    /// changed; `unlinked`: a name of a non-directory went. Listings read
    /// before now that hold it are stale (see the module doc). Called
    /// after the change, so that a listing read from then on sees it.
    pub(crate) fn touched(&self, key: InodeKey, unlinked: bool) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if log.touched.len() == LOG_LEN {
            log.touched.pop_front();
            log.first += 1;
            self.log_first.store(log.first, Ordering::Release);
        }
        log.touched.push_back(Touched { key, unlinked });
        let newest = log.first + log.touched.len() as u64 - 1;
        self.logged.store(newest, Ordering::Release);
    }

    /// Where the changes stand now.
    fn seen(&self) -> Seen {
        Seen {
            changes: self.changes.load(Ordering::Acquire),
            logged: self.logged.load(Ordering::Acquire),
        }
    }

    /// Asks for `dirs` to be read ahead (within the bounds): those not
    /// read yet, and those whose listing a READDIRPLUS used already. A
    /// walk that comes again (a second `find`, a stat walk after the
    /// kernel dropped its caches) would otherwise find the listings of
    /// its first pass, which age out in the middle of it and are not
    /// read again.
    pub(crate) fn want(&self, dirs: Vec<(NodeId, Arc<Inode>)>) {
        if dirs.is_empty() {
            return;
        }
        let Some(mut s) = self.try_lock() else {
            return;
        };
        if s.ended {
            return;
        }
        if s.ready_entries >= MAX_READY {
            self.purge(&mut s);
        }
        let batch: Batch = dirs
            .into_iter()
            .filter(|(node, _)| s.ready.get(node).is_none_or(|r| r.used))
            .collect();
        if batch.is_empty() || s.ready_entries >= MAX_READY {
            return;
        }
        let changes = self.changes.load(Ordering::Acquire);
        if changes != s.queued_at {
            // What is queued was wanted before a change (see `pop`).
            s.batches.clear();
            s.queued = 0;
            s.queued_at = changes;
        }
        s.queued += batch.len();
        s.batches.push(batch);
        self.to_step.store(true, Ordering::Relaxed);
        // Over the bound, the oldest batches go (the walk has moved on),
        // then the newest's last directories.
        while s.queued > MAX_QUEUED && s.batches.len() > 1 {
            let oldest = s.batches.remove(0);
            s.queued -= oldest.len();
        }
        if s.queued > MAX_QUEUED {
            s.batches[0].truncate(MAX_QUEUED);
            s.queued = MAX_QUEUED;
        }
        if s.idle && s.queued > 0 {
            s.idle = false;
            drop(s);
            self.work.notify_one();
        }
    }

    /// The listing of `node` read ahead, if there is one still fresh: no
    /// change to it since it was read, and younger than the bound. It
    /// stays for the next READDIRPLUS from the start while fresh: `rm
    /// -rf` opens every directory twice, once to see whether it is empty
    /// (a getdents64 that the kernel turns into a READDIRPLUS of a whole
    /// buffer). Without one, a directory still queued leaves the queue
    /// (the READDIRPLUS reads it itself), and where it was in its batch
    /// tells the order the walk goes in.
    pub(crate) fn take(&self, node: NodeId) -> Option<Arc<Listing>> {
        let mut s = self.try_lock()?;
        let Some(ready) = s.ready.get_mut(&node) else {
            s.asked_before_read(node);
            return None;
        };
        ready.used = true;
        let listing = Arc::clone(&ready.listing);
        drop(s);
        if self.usable(&listing) && self.untouched(&listing) {
            return Some(listing);
        }
        // Stale: it goes, unless a newer reading has replaced it since.
        if let Some(mut s) = self.try_lock() {
            if s.ready
                .get(&node)
                .is_some_and(|r| Arc::ptr_eq(&r.listing, &listing))
            {
                s.ready.remove(&node);
                s.ready_entries -= listing.entries.len();
            }
        }
        None
    }

    /// Starts the reader thread; it returns once the filesystem (which
    /// holds the last strong reference) is dropped.
    pub(crate) fn start(self: &Arc<Self>) -> std::io::Result<()> {
        let ahead = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("fastfuse-ahead".into())
            .spawn(move || {
                if let Err(e) = sys::block_all_signals() {
                    tracing::error!("the statahead reader cannot block signals ({e}); not reading");
                    return;
                }
                // Only CPU time nobody else wants: the work is a guess.
                if let Err(e) = sys::sched_idle() {
                    tracing::debug!("the statahead reader is not SCHED_IDLE: {e}");
                }
                reader(&ahead);
            })
            .map(drop)
    }

    /// Wakes the reader to return (the filesystem is going).
    pub(crate) fn end(&self) {
        let mut s = self.lock();
        s.ended = true;
        s.batches.clear();
        s.queued = 0;
        drop(s);
        self.work.notify_one();
    }

    /// The next directory to read, waiting for one; `None` once ended.
    fn next(&self) -> Option<(NodeId, Arc<Inode>)> {
        let mut s = self.lock();
        loop {
            if s.ended {
                return None;
            }
            if let Some(dir) = s.pop(self.changes.load(Ordering::Acquire)) {
                return Some(dir);
            }
            s.idle = true;
            s = self.work.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Whether `listing` may still answer a READDIRPLUS, as far as can be
    /// told without the log: no change that did not say where since it
    /// was read, the log still reaching back to it, and younger than the
    /// bound.
    fn usable(&self, listing: &Listing) -> bool {
        listing.seen.changes == self.changes.load(Ordering::Acquire)
            && listing.seen.logged + 1 >= self.log_first.load(Ordering::Acquire)
            && listing.at.elapsed() <= self.max_age
    }

    /// Whether no change logged since `listing` was read touches it (see
    /// the module doc). Workers only (see [`Statahead::log`]).
    fn untouched(&self, listing: &Listing) -> bool {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(skip) = (listing.seen.logged + 1).checked_sub(log.first) else {
            // The log has lost changes made since.
            return false;
        };
        log.touched
            .iter()
            .skip(skip as usize)
            .all(|t| !(t.unlinked && listing.shared) && listing.keys.binary_search(&t.key).is_err())
    }

    /// Drops the listings used already and those that can no longer be
    /// used (a walk that went elsewhere, or a change), to make room. What
    /// the log says is left to `take`: the reader thread calls this too.
    fn purge(&self, s: &mut State) {
        s.ready.retain(|_, r| !r.used && self.usable(&r.listing));
        s.ready_entries = s.ready.values().map(|r| r.listing.entries.len()).sum();
    }

    /// Keeps `listing` of `node` for a READDIRPLUS to take (the reader
    /// thread's).
    fn keep(&self, node: NodeId, listing: Listing) {
        self.keep_in(&mut self.lock(), node, listing);
    }

    /// [`keep`](Self::keep) under the state `s`.
    fn keep_in(&self, s: &mut State, node: NodeId, listing: Listing) {
        if s.ready_entries + listing.entries.len() > MAX_READY {
            self.purge(s);
        }
        if s.ended || s.ready_entries + listing.entries.len() > MAX_READY {
            return;
        }
        s.ready_entries += listing.entries.len();
        let ready = Ready {
            listing: Arc::new(listing),
            used: false,
        };
        if let Some(old) = s.ready.insert(node, ready) {
            s.ready_entries -= old.listing.entries.len();
        }
    }

    /// Reads directory `dir` from the start: every entry with its stat,
    /// or `None` when it cannot be read or is too large.
    fn read(&self, dir: &Inode) -> Option<Listing> {
        let mut reading = Reading::start(self, dir)?;
        loop {
            match reading.advance(dir, 1) {
                // A worker that polls for its next request yields the CPU
                // at every turn, and a yield hands it to this thread for a
                // whole slice (up to a millisecond) if this one does not
                // yield it back: the request would wait that long.
                Progress::More => std::thread::yield_now(),
                Progress::Done => return Some(reading.finish()),
                Progress::Failed => return None,
            }
        }
    }

    /// One step of reading ahead by a worker waiting for a request (see
    /// [`Filesystem::idle`](fastfuse::Filesystem::idle)): the next
    /// [`STEP`] entries of the directory a worker is reading, or the next
    /// directory of the queue opened. Whether there was anything to do.
    /// Off for [`SLOW_PAUSE`] once a step took longer than [`SLOW_STEP`]:
    /// on a source that slow, a request would wait for the step, and the
    /// reader's thread reads instead.
    pub(crate) fn step(&self) -> bool {
        // Read first, as the worker polls in a loop: with nothing to read
        // ahead, a step costs one load.
        if !self.to_step.load(Ordering::Relaxed) {
            return false;
        }
        let Ok(mut stepping) = self.stepping.try_lock() else {
            // Another worker steps.
            return false;
        };
        if let Some(until) = stepping.paused_until {
            if Instant::now() < until {
                return false;
            }
            stepping.paused_until = None;
        }
        let begun = Instant::now();
        let did = match stepping.current.take() {
            Some((node, dir, mut reading)) => {
                match reading.advance(&dir, STEP) {
                    Progress::More => stepping.current = Some((node, dir, reading)),
                    Progress::Done => {
                        if let Some(mut s) = self.try_lock() {
                            self.keep_in(&mut s, node, reading.finish());
                        }
                    }
                    Progress::Failed => {}
                }
                true
            }
            None => {
                let next = {
                    let Some(mut s) = self.try_lock() else {
                        return false;
                    };
                    let changes = self.changes.load(Ordering::Acquire);
                    let next = if s.ended { None } else { s.pop(changes) };
                    if next.is_none() {
                        // Under the lock, which `want` sets it under.
                        self.to_step.store(false, Ordering::Relaxed);
                    }
                    next
                };
                match next {
                    Some((node, dir)) => {
                        if let Some(reading) = Reading::start(self, &dir) {
                            stepping.current = Some((node, dir, reading));
                        }
                        true
                    }
                    None => false,
                }
            }
        };
        if begun.elapsed() > SLOW_STEP {
            stepping.paused_until = Some(Instant::now() + SLOW_PAUSE);
            // Left to the thread, which reads it whole.
            if let (Some((node, dir, _)), Some(mut s)) = (stepping.current.take(), self.try_lock())
            {
                s.requeue(node, dir);
                drop(s);
                self.work.notify_one();
            }
        }
        did
    }
}

/// Entries a worker's step of reading ahead stats, at most.
const STEP: usize = 4;

/// A step that takes longer than this pauses the workers' steps.
const SLOW_STEP: Duration = Duration::from_millis(1);

/// For this long.
const SLOW_PAUSE: Duration = Duration::from_secs(1);

/// What the workers' steps are reading (see [`Statahead::step`]).
#[derive(Debug, Default)]
struct Stepping {
    /// The directory being read, and how far.
    current: Option<(NodeId, Arc<Inode>, Reading)>,
    /// Steps are off until then.
    paused_until: Option<Instant>,
}

/// A directory's listing being read ahead, resumable.
#[derive(Debug)]
struct Reading {
    seen: Seen,
    at: Instant,
    dir: InodeKey,
    stream: DirStream,
    entries: Vec<Ahead>,
}

/// How far [`Reading::advance`] got.
enum Progress {
    /// The step ended with entries left.
    More,
    /// The directory is read to its end.
    Done,
    /// It could not be read, or has more than [`MAX_ENTRIES`] entries.
    Failed,
}

impl Reading {
    /// Opens `dir` to be read from its start.
    fn start(statahead: &Statahead, dir: &Inode) -> Option<Reading> {
        let seen = statahead.seen();
        let at = Instant::now();
        let fd = sys::open_dir(dir.fd.as_fd()).ok()?;
        Some(Reading {
            seen,
            at,
            dir: dir.key,
            stream: DirStream::new(fd),
            entries: Vec::new(),
        })
    }

    /// Reads up to `max` more entries of `dir` (".." and "." not counted),
    /// each with its stat.
    fn advance(&mut self, dir: &Inode, max: usize) -> Progress {
        let (mut stated, mut stopped, mut too_many) = (0, false, false);
        let entries = &mut self.entries;
        // Where the last step stopped: the stream goes on from its buffer.
        let read = self.stream.read_from(self.stream.position(), |e| {
            if entries.len() == MAX_ENTRIES {
                too_many = true;
                return Ok(Taken::Full);
            }
            let st = if e.is_dot_or_dotdot() {
                None
            } else {
                if stated == max {
                    stopped = true;
                    return Ok(Taken::Full);
                }
                stated += 1;
                c_string(OsStr::from_bytes(e.name)).ok().and_then(|name| {
                    sys::fstatat(dir.fd.as_fd(), &name, libc::AT_SYMLINK_NOFOLLOW).ok()
                })
            };
            entries.push(Ahead {
                name: e.name.into(),
                ino: e.ino,
                next_offset: e.next_offset,
                typ: e.typ,
                st,
            });
            Ok(Taken::Yes)
        });
        match (read, too_many, stopped) {
            (Err(_), _, _) | (_, true, _) => Progress::Failed,
            (Ok(()), false, true) => Progress::More,
            (Ok(()), false, false) => Progress::Done,
        }
    }

    /// The listing read.
    fn finish(self) -> Listing {
        let mut keys: Vec<InodeKey> = std::iter::once(self.dir)
            .chain(
                self.entries
                    .iter()
                    .filter_map(|a| a.st.as_ref())
                    .map(InodeKey::of),
            )
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let shared = self
            .entries
            .iter()
            .filter_map(|a| a.st.as_ref())
            .any(|st| st.st_mode & libc::S_IFMT != libc::S_IFDIR && st.st_nlink > 1);
        Listing {
            seen: self.seen,
            at: self.at,
            entries: self.entries,
            keys,
            shared,
        }
    }
}

/// The reader's loop: reads the queued directories, one at a time, until
/// the filesystem is gone.
fn reader(ahead: &Weak<Statahead>) {
    loop {
        let Some(statahead) = ahead.upgrade() else {
            return;
        };
        let Some((node, dir)) = statahead.next() else {
            return;
        };
        if let Some(listing) = statahead.read(&dir) {
            statahead.keep(node, listing);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::path::{Path, PathBuf};

    use super::*;

    fn dir_inode(path: &Path) -> Arc<Inode> {
        let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let fd = sys::open(&c, libc::O_PATH | libc::O_DIRECTORY).unwrap();
        let st = sys::stat_fd(fd.as_fd()).unwrap();
        Arc::new(Inode::new(fd, &st))
    }

    #[test]
    fn a_listing_is_whole_and_answers_while_nothing_changed() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..10 {
            std::fs::write(dir.path().join(format!("f{i}")), b"x").unwrap();
        }
        let s = Statahead::new(Duration::from_secs(60));
        let inode = dir_inode(dir.path());
        let listing = s.read(&inode).unwrap();
        assert_eq!(listing.entries.len(), 12, "ten files, . and ..");
        let stated = listing.entries.iter().filter(|a| a.st.is_some()).count();
        assert_eq!(stated, 10);
        let node = NodeId(7);
        s.keep(node, listing);
        assert!(s.take(node).is_some());
        assert!(s.take(node).is_some(), "rm lists a directory twice");

        // A change after the reading makes it stale.
        s.keep(node, s.read(&inode).unwrap());
        s.changed();
        assert!(s.take(node).is_none(), "read before a change");
        assert_eq!(s.lock().ready_entries, 0);
    }

    fn key_of(path: &Path) -> InodeKey {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(path).unwrap();
        InodeKey::from_parts(m.dev(), m.ino())
    }

    /// A new directory with two subdirectories, `a` holding `a/file`.
    fn a_and_b() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(a.join("file"), b"x").unwrap();
        (dir, a, b)
    }

    #[test]
    fn a_change_elsewhere_keeps_a_listing_and_a_change_to_it_does_not() {
        let (_dir, a, b) = a_and_b();
        std::fs::create_dir(a.join("sub")).unwrap();
        std::fs::write(b.join("other"), b"x").unwrap();
        let s = Statahead::new(Duration::from_secs(60));
        let inode = dir_inode(&a);
        let node = NodeId(7);
        // `rm -rf` removing names of another directory, under the
        // writeback cache with a SETATTR of each removed file.
        s.keep(node, s.read(&inode).unwrap());
        s.touched(key_of(&b), true);
        s.touched(key_of(&b.join("other")), false);
        assert!(s.take(node).is_some(), "a change elsewhere");
        // Names in the listed directory, or attributes of what it lists
        // (a file, a subdirectory's mtime and link count).
        for changed in [a.clone(), a.join("file"), a.join("sub")] {
            s.keep(node, s.read(&inode).unwrap());
            s.touched(key_of(&changed), false);
            assert!(s.take(node).is_none(), "{} changed", changed.display());
        }
        // Read after the change: fresh.
        s.keep(node, s.read(&inode).unwrap());
        assert!(s.take(node).is_some());
    }

    #[test]
    fn an_unlink_elsewhere_makes_a_listing_with_a_file_of_two_names_stale() {
        let (_dir, a, b) = a_and_b();
        std::fs::hard_link(a.join("file"), b.join("link")).unwrap();
        let s = Statahead::new(Duration::from_secs(60));
        let inode = dir_inode(&a);
        // Removing `b/link` changes `a/file`'s link count, and which file
        // lost a name is not known.
        s.keep(NodeId(7), s.read(&inode).unwrap());
        s.touched(key_of(&b), true);
        assert!(s.take(NodeId(7)).is_none());
        // A name made there changes no link count of what `a` lists.
        s.keep(NodeId(7), s.read(&inode).unwrap());
        s.touched(key_of(&b), false);
        assert!(s.take(NodeId(7)).is_some());
    }

    #[test]
    fn a_listing_older_than_the_log_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let s = Statahead::new(Duration::from_secs(60));
        let inode = dir_inode(dir.path());
        let elsewhere = InodeKey::from_parts(u64::MAX, 1);
        s.keep(NodeId(7), s.read(&inode).unwrap());
        for _ in 0..LOG_LEN {
            s.touched(elsewhere, false);
        }
        assert!(s.take(NodeId(7)).is_some(), "the log still reaches back");
        s.keep(NodeId(7), s.read(&inode).unwrap());
        for _ in 0..=LOG_LEN {
            s.touched(elsewhere, false);
        }
        assert!(s.take(NodeId(7)).is_none(), "changes since were lost");
    }

    #[test]
    fn changes_that_say_where_keep_the_queue() {
        let s = Statahead::new(Duration::from_secs(60));
        let (_a, dirs) = subdirs(100, 2);
        s.want(dirs);
        s.touched(InodeKey::from_parts(u64::MAX, 1), true);
        assert_eq!(next_node(&s), Some(100));
        assert_eq!(next_node(&s), Some(101));
    }

    #[test]
    fn listings_no_longer_usable_make_room_for_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let s = Statahead::new(Duration::from_secs(60));
        let inode = dir_inode(dir.path());
        // Full of listings read before a change.
        let per = s.read(&inode).unwrap().entries.len();
        for n in 0..MAX_READY / per {
            s.keep(NodeId(n as u64 + 10), s.read(&inode).unwrap());
        }
        assert!(s.lock().ready_entries + per > MAX_READY);
        s.changed();
        s.keep(NodeId(1), s.read(&inode).unwrap());
        assert_eq!(s.lock().ready_entries, per, "the stale ones went");
        assert!(s.take(NodeId(1)).is_some());
    }

    #[test]
    fn an_old_listing_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let s = Statahead::new(Duration::ZERO);
        let inode = dir_inode(dir.path());
        s.keep(NodeId(7), s.read(&inode).unwrap());
        std::thread::sleep(Duration::from_millis(1));
        assert!(s.take(NodeId(7)).is_none());
    }

    #[test]
    fn a_directory_too_large_is_not_read_ahead() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..MAX_ENTRIES {
            std::fs::write(dir.path().join(format!("f{i}")), b"").unwrap();
        }
        let s = Statahead::new(Duration::from_secs(60));
        assert!(s.read(&dir_inode(dir.path())).is_none());
    }

    #[test]
    fn the_reader_reads_what_is_wanted_and_ends_with_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a"), b"x").unwrap();
        let s = Arc::new(Statahead::new(Duration::from_secs(60)));
        s.start().unwrap();
        s.want(vec![(NodeId(9), dir_inode(&dir.path().join("sub")))]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !s.lock().ready.contains_key(&NodeId(9)) {
            assert!(Instant::now() < deadline, "never read");
            std::thread::sleep(Duration::from_millis(1));
        }
        let listing = s.take(NodeId(9)).unwrap();
        let names: Vec<&[u8]> = listing.entries.iter().map(|a| &*a.name).collect();
        assert!(names.contains(&&b"a"[..]));
        s.end();
        assert!(s.lock().ended);
    }

    /// `n` subdirectories of a new directory, as nodes `first`,
    /// `first + 1`, ...
    fn subdirs(first: u64, n: u64) -> (tempfile::TempDir, Vec<(NodeId, Arc<Inode>)>) {
        let dir = tempfile::tempdir().unwrap();
        let dirs = (0..n)
            .map(|i| {
                let path = dir.path().join(format!("d{i}"));
                std::fs::create_dir(&path).unwrap();
                (NodeId(first + i), dir_inode(&path))
            })
            .collect();
        (dir, dirs)
    }

    fn next_node(s: &Statahead) -> Option<u64> {
        let changes = s.changes.load(Ordering::Acquire);
        s.lock().pop(changes).map(|(node, _)| node.0)
    }

    #[test]
    fn the_newest_listing_is_read_first_and_in_the_order_the_walk_goes() {
        let s = Statahead::new(Duration::from_secs(60));
        let (_a, older) = subdirs(100, 2);
        s.want(older);
        let (_b, newer) = subdirs(110, 4);
        s.want(newer);
        // Forward: the newest batch from its front.
        assert_eq!(next_node(&s), Some(110));
        // The walk asks for the back of the batch before it was read: a
        // walker popping a stack. The reader turns round.
        assert!(s.take(NodeId(113)).is_none());
        assert!(s.lock().backward);
        assert_eq!(next_node(&s), Some(112));
        assert_eq!(next_node(&s), Some(111));
        // The older batch once the newer is done, backward too.
        assert_eq!(next_node(&s), Some(101));
        // A walk asking for the front of a batch goes forward.
        let (_c, more) = subdirs(200, 3);
        s.want(more);
        assert!(s.take(NodeId(200)).is_none(), "nothing was read");
        assert!(!s.lock().backward);
        assert_eq!(next_node(&s), Some(201));
        assert_eq!(next_node(&s), Some(202));
        assert_eq!(next_node(&s), Some(100));
        assert_eq!(next_node(&s), None);
        assert_eq!(s.lock().queued, 0);
    }

    #[test]
    fn a_walk_that_comes_again_has_its_directories_read_again() {
        let s = Statahead::new(Duration::from_secs(60));
        let (_a, dirs) = subdirs(100, 2);
        s.want(dirs.clone());
        let (node, dir) = s.lock().pop(0).unwrap();
        s.keep(node, s.read(&dir).unwrap());
        assert_eq!(next_node(&s), Some(101));
        // Read and not used yet: a second hint does not queue it again.
        s.want(dirs.clone());
        assert_eq!(next_node(&s), Some(101), "only the one not read");
        assert_eq!(next_node(&s), None);
        // Used by the first walk: the next walk's hint reads it afresh,
        // before the first reading ages out under it.
        let first = s.take(node).unwrap();
        s.want(dirs);
        assert_eq!(next_node(&s), Some(100));
        s.keep(node, s.read(&dir).unwrap());
        let second = s.take(node).unwrap();
        assert!(!Arc::ptr_eq(&first, &second), "the new reading answers");
    }

    #[test]
    fn a_change_after_directories_were_queued_empties_the_queue() {
        let s = Statahead::new(Duration::from_secs(60));
        let (_a, dirs) = subdirs(100, 3);
        s.want(dirs);
        assert_eq!(next_node(&s), Some(100));
        // `rm -rf` lists a directory, then removes what it listed.
        s.changed();
        assert_eq!(next_node(&s), None);
        assert_eq!(s.lock().queued, 0);
        assert!(!s.step(), "nothing for the workers either");
        // A listing wanted after the change is read.
        let (_b, dirs) = subdirs(100, 1);
        s.want(dirs);
        assert_eq!(next_node(&s), Some(100));
    }

    #[test]
    fn steps_read_a_queued_directory_as_the_reader_would() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        for i in 0..(3 * STEP + 1) {
            std::fs::write(sub.join(format!("f{i}")), b"x").unwrap();
        }
        let s = Statahead::new(Duration::from_secs(60));
        assert!(!s.step(), "nothing queued");
        s.want(vec![(NodeId(9), dir_inode(&sub))]);
        let mut steps = 0;
        while s.step() {
            steps += 1;
            assert!(steps < 100, "steps never end");
        }
        // One to open it, one per STEP names (and the rest), one finding
        // the queue empty.
        assert!(steps > 3, "{steps} steps");
        let listing = s.take(NodeId(9)).expect("read by the steps");
        let whole = s.read(&dir_inode(&sub)).unwrap();
        let names = |l: &Listing| {
            let mut v: Vec<Vec<u8>> = l.entries.iter().map(|a| a.name.to_vec()).collect();
            v.sort();
            v
        };
        assert_eq!(names(&listing), names(&whole));
        let stated = listing.entries.iter().filter(|a| a.st.is_some()).count();
        assert_eq!(stated, 3 * STEP + 1);
        assert!(!s.step(), "the queue is empty");
    }
}
