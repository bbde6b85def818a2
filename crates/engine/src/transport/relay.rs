//! How a session's /dev/fuse workers wait for requests when they poll: one
//! worker at a time holds the reader's role and polls for the next
//! request for a moment before it sleeps in read(2); the others stand by in
//! userspace, out of the kernel's wait queue.
//!
//! Why poll: a synchronous request is a round trip between two sleeping
//! threads. The caller wakes a worker, the worker wakes the caller. On a
//! machine whose idle CPUs halt (every VM: a halted vCPU is woken by the
//! host), waking a thread on an idle CPU costs more than serving a LOOKUP
//! or a SETATTR. A worker that polls spares the caller one of the two
//! wake-ups.
//!
//! Why only one reads: the kernel wakes one sleeping reader for every
//! request it queues, whether or not a poller takes the request first, so
//! a second worker asleep in read(2) would cost the caller the very
//! wake-up the poller saves (an untar of 5,000 files: 6,500 files/s with
//! two workers in read(2) beside the poller, 7,500 with one worker).
//!
//! Why that stays live: the holder gives the role up when it takes a
//! request, before serving it, and takes it back afterwards if nobody else
//! did. While it serves, another worker may read:
//! - within [`WATCH`]: while the holder polls, one standby waits with that
//!   timeout and takes the role if it finds it free;
//! - at once when the holder slept in read(2): nobody waits with a timeout
//!   then, so the holder wakes a standby when it takes the request.
//!
//! No request therefore waits more than [`WATCH`] behind one that is slow
//! to serve.
//!
//! Why only while one caller at a time: with several callers, one reader
//! makes each wait for the others' requests, and its polling costs the
//! CPU they need (fio's 4 KiB random reads and writes from two jobs lost
//! 40%). A request from another caller (thread) than the last therefore
//! sets every worker reading on its own, none polling, as without a
//! relay; [`ONE_CALLER`] requests in a row from one caller bring the relay
//! back. The kernel's own FORGETs, which carry no caller and which nobody
//! waits for, count for neither.
//!
//! What polling costs is CPU, bounded by [`Spinner`]: a poll lasts at most
//! the budget, happens only while requests come closer together than that,
//! and yields the CPU at every turn.

use std::os::fd::BorrowedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::sys;

/// How long the reader's role may stay free, its holder serving a request,
/// before a standby takes it.
pub(crate) const WATCH: Duration = Duration::from_millis(1);

/// Requests in a row from one caller after which the workers go back to
/// one reader (see [`State::together`]).
const ONE_CALLER: u32 = 64;

/// The reader's role of one session's /dev/fuse workers.
pub(crate) struct Relay {
    state: Mutex<State>,
    /// Standbys wait here.
    standby: Condvar,
}

#[derive(Default)]
struct State {
    /// A worker holds the role: polls, or sleeps in read(2).
    held: bool,
    /// Its holder sleeps in read(2): it wakes a standby when it takes a
    /// request, so nobody needs to watch with a timeout.
    holder_sleeps: bool,
    /// Standbys waiting.
    waiting: usize,
    /// One of them waits with a timeout of [`WATCH`].
    watching: bool,
    /// The connection ended: standbys return.
    ended: bool,
    /// Every worker reads on its own, none polls: requests come from
    /// several callers at once, and one reader would make them wait for
    /// each other. Set when a request comes from another caller than the
    /// last; cleared after [`ONE_CALLER`] requests in a row from one.
    together: bool,
    /// The caller (thread id) of the last request that had one.
    last_caller: u32,
    /// Requests in a row from it.
    run: u32,
}

/// What a worker does next, as [`Relay::take`] says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// It holds the role: poll, then read.
    Poll,
    /// Every worker reads on its own: read, without polling.
    Read,
    /// The session is pausing: go to its gate.
    Pause,
    /// The connection ended: return.
    Ended,
}

impl Relay {
    /// A relay, or none when polling is off (`budget` zero) or pointless
    /// (one CPU: the caller needs it).
    pub(crate) fn new(budget: Duration) -> Option<Arc<Self>> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        (!budget.is_zero() && cpus > 1).then(|| {
            Arc::new(Relay {
                state: Mutex::new(State::default()),
                standby: Condvar::new(),
            })
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the role, standing by until it is free; `pausing` is checked
    /// at every wake-up.
    pub(crate) fn take(&self, pausing: impl Fn() -> bool) -> Turn {
        let mut s = self.lock();
        loop {
            if s.ended {
                return Turn::Ended;
            }
            if pausing() {
                return Turn::Pause;
            }
            if s.together {
                return Turn::Read;
            }
            if !s.held {
                s.held = true;
                s.holder_sleeps = false;
                return Turn::Poll;
            }
            let watch = !s.watching && !s.holder_sleeps;
            s.watching |= watch;
            s.waiting += 1;
            s = if watch {
                self.standby
                    .wait_timeout(s, WATCH)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            } else {
                self.standby.wait(s).unwrap_or_else(PoisonError::into_inner)
            };
            s.waiting -= 1;
            if watch {
                s.watching = false;
            }
        }
    }

    /// The holder stopped polling and sleeps in read(2): the watcher may
    /// stop timing its wait.
    pub(crate) fn sleeping(&self) {
        self.lock().holder_sleeps = true;
    }

    /// A worker read a request from `caller` (its thread id; 0 for the
    /// kernel's own FORGET and INTERRUPT, and `None` when unknown), or its
    /// read failed: the role, if it held it, is free while it serves.
    /// Switches between one reader and every worker reading on its own as
    /// the callers say (see [`State::together`]).
    pub(crate) fn took(&self, caller: Option<u32>) {
        let mut s = self.lock();
        s.held = false;
        match caller {
            Some(0) => {}
            Some(c) if c == s.last_caller => s.run = s.run.saturating_add(1),
            other => {
                s.last_caller = other.unwrap_or(0);
                s.run = 0;
            }
        }
        let wake = if !s.together && s.run == 0 && caller != Some(0) {
            s.together = true;
            Some(true)
        } else if s.together && s.run >= ONE_CALLER {
            s.together = false;
            None
        } else {
            // Nobody watches with a timeout when the holder slept, so
            // someone must be told that the role is free.
            (s.waiting > 0 && !s.watching).then_some(false)
        };
        drop(s);
        match wake {
            Some(true) => self.standby.notify_all(),
            Some(false) => self.standby.notify_one(),
            None => {}
        }
    }

    /// The request just taken (after [`Relay::took`]) is known to take
    /// long to serve: a standby takes the role now rather than when its
    /// watch runs out. Used for a large BATCH_FORGET, which a
    /// `drop_caches` makes of thousands of nodes: served under the
    /// watch, every request behind it waited up to [`WATCH`].
    pub(crate) fn long_to_serve(&self) {
        let s = self.lock();
        let tell = s.waiting > 0 && !s.held;
        drop(s);
        if tell {
            self.standby.notify_one();
        }
    }

    /// Gives the role up unused (a pause stopped the poll).
    pub(crate) fn give_up(&self) {
        let mut s = self.lock();
        s.held = false;
        let tell = s.waiting > 0;
        drop(s);
        if tell {
            self.standby.notify_one();
        }
    }

    /// Wakes every standby, to look at the gate (a pause is closing it).
    pub(crate) fn wake_all(&self) {
        let _s = self.lock();
        self.standby.notify_all();
    }

    /// The connection ended: every standby returns.
    pub(crate) fn end(&self) {
        let mut s = self.lock();
        s.ended = true;
        s.held = false;
        self.standby.notify_all();
    }
}

/// How a poll ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Polled {
    /// The fd is readable: a request is there (or the connection ended).
    Ready,
    /// No poll, or it ran out: sleep in read(2).
    Sleep,
    /// `stop` said so (a pause closed the gate).
    Stopped,
}

/// A poll after a listing lasts up to this many times as long as the
/// listing took to serve (within the base budget and [`WATCH`]).
const WORK_MULTIPLE: u32 = 4;

/// And at least this long per byte of the listing sent: what its caller
/// spends on each name before it asks again. A cold walk's walker took
/// about 200 µs for a READDIRPLUS of 100 names (16 KiB: the kernel making
/// a dentry and an inode of each, then an `lstat` of each); this leaves
/// room for a walker twice as slow.
const POLL_PER_BYTE: Duration = Duration::from_nanos(25);

/// One worker's polling: how long, and whether requests come close enough
/// together for it to pay.
///
/// How long: the base budget (`spin_wait`), and after a listing (READDIR,
/// READDIRPLUS) [`WORK_MULTIPLE`] times as long as it took to serve or
/// [`POLL_PER_BYTE`] for each byte it sent, whichever is longer, up to
/// [`WATCH`]. (By the time alone, a listing read ahead, served in a
/// fifth of the time, made the poll end before a cold walk's next
/// request.) A listing hands its caller a batch of names to work
/// through (a `find` stats each of them) before it asks again, longer than
/// the base budget, and a worker that sleeps that long sits on a halted
/// CPU when the next listing comes: on this project's 2-vCPU VM, a cold
/// walk of a tree ran 20% faster with a 500 µs poll than with 50 µs or
/// none. The multiple keeps what the longer poll costs within a few times
/// the work it follows. Only listings: timed by the wall clock, a request
/// whose worker was preempted looks long, and a long poll on the caller's
/// own CPU slows it down and makes the next request look long too (an
/// `rm -rf` lost 10-30% in some runs when every request counted).
pub(crate) struct Spinner {
    /// The shortest poll.
    base: Duration,
    /// How long the last request took to serve, if it was a listing.
    served: Duration,
    /// The bytes it sent, if it was a listing.
    sent: usize,
    /// Whether the next wait starts with a poll.
    armed: bool,
}

impl Spinner {
    /// A worker's spinner polling at least `base`, armed.
    pub(crate) fn new(base: Duration) -> Self {
        Spinner {
            base,
            served: Duration::ZERO,
            sent: 0,
            armed: true,
        }
    }

    /// How long the next poll may last.
    fn budget(&self) -> Duration {
        let by_size = POLL_PER_BYTE.saturating_mul(u32::try_from(self.sent).unwrap_or(u32::MAX));
        (self.served * WORK_MULTIPLE)
            .max(by_size)
            .clamp(self.base, WATCH.max(self.base))
    }

    /// The request just served took `listing` to serve and sent that many
    /// bytes, if it was a listing (`None`: another request).
    pub(crate) fn served(&mut self, listing: Option<(Duration, usize)>) {
        (self.served, self.sent) = listing.unwrap_or_default();
    }

    /// Polls `fd` until a request is there, the budget runs out, or `stop`
    /// returns true; not at all when disarmed. A poll is `poll(2)` with a
    /// zero timeout, which puts the worker on no wait queue, so the caller
    /// has nobody to wake. Between polls, `idle` does a piece of the
    /// filesystem's own work ([`Filesystem::idle`]); when it has none, the
    /// turn yields the CPU, so a thread that wants it (often the caller
    /// itself) gets it. The budget is wall time, so a yield that lasts
    /// ends the poll.
    ///
    /// [`Filesystem::idle`]: crate::Filesystem::idle
    pub(crate) fn wait(
        &mut self,
        fd: BorrowedFd<'_>,
        stop: impl Fn() -> bool,
        mut idle: impl FnMut() -> bool,
    ) -> Polled {
        if !self.armed {
            return Polled::Sleep;
        }
        let start = Instant::now();
        let budget = self.budget();
        loop {
            match sys::poll_now(fd) {
                Ok(true) | Err(_) => return Polled::Ready,
                Ok(false) => {}
            }
            if stop() {
                return Polled::Stopped;
            }
            if start.elapsed() >= budget {
                self.armed = false;
                return Polled::Sleep;
            }
            if !idle() {
                std::thread::yield_now();
            }
        }
    }

    /// After a read(2) that slept `slept`: poll before the next one only if
    /// a poll of the budget would have caught this request.
    pub(crate) fn slept(&mut self, slept: Duration) {
        self.armed = slept < self.budget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn relay() -> Arc<Relay> {
        Arc::new(Relay {
            state: Mutex::new(State::default()),
            standby: Condvar::new(),
        })
    }

    #[test]
    fn a_poll_finds_a_readable_fd_at_once() {
        let (r, w) = std::io::pipe().unwrap();
        std::io::Write::write_all(&mut &w, b"x").unwrap();
        let mut s = Spinner::new(Duration::from_secs(1));
        assert_eq!(s.wait(r.as_fd(), || false, || false), Polled::Ready);
        assert!(s.armed, "a hit keeps polling on");
    }

    #[test]
    fn a_poll_that_runs_out_disarms_until_a_short_sleep() {
        let (r, _w) = std::io::pipe().unwrap();
        let mut s = Spinner::new(Duration::from_micros(200));
        assert_eq!(s.wait(r.as_fd(), || false, || false), Polled::Sleep);
        assert!(!s.armed);
        assert_eq!(
            s.wait(r.as_fd(), || false, || false),
            Polled::Sleep,
            "disarmed"
        );
        s.slept(Duration::from_millis(5));
        assert!(!s.armed, "a long sleep leaves it off");
        s.slept(Duration::from_micros(10));
        assert!(s.armed, "a short one turns it on");
    }

    #[test]
    fn a_listing_lengthens_the_next_poll_within_bounds() {
        let base = Duration::from_micros(50);
        let mut s = Spinner::new(base);
        assert_eq!(s.budget(), base);
        s.served(Some((Duration::from_micros(150), 0)));
        assert_eq!(s.budget(), Duration::from_micros(600));
        s.served(Some((Duration::from_micros(5), 0)));
        assert_eq!(s.budget(), base, "never below the base");
        s.served(Some((Duration::from_micros(30), 16 * 1024)));
        assert_eq!(s.budget(), POLL_PER_BYTE * 16 * 1024, "by what it sent");
        s.served(Some((Duration::from_millis(3), 0)));
        assert_eq!(s.budget(), WATCH, "never beyond WATCH");
        s.served(Some((Duration::ZERO, 1 << 20)));
        assert_eq!(s.budget(), WATCH, "nor for a large listing");
        s.served(None);
        assert_eq!(s.budget(), base, "other requests poll the base");
        // A sleep the longer budget would have caught keeps polling on.
        s.served(Some((Duration::from_micros(150), 0)));
        s.slept(Duration::from_micros(400));
        assert!(s.armed);
    }

    #[test]
    fn a_poll_stops_when_told() {
        let (r, _w) = std::io::pipe().unwrap();
        let mut s = Spinner::new(Duration::from_secs(10));
        assert_eq!(s.wait(r.as_fd(), || true, || false), Polled::Stopped);
    }

    #[test]
    fn one_worker_holds_the_role_and_a_standby_takes_it_when_freed() {
        let relay = relay();
        assert_eq!(relay.take(|| false), Turn::Poll);
        let taken = Arc::new(AtomicBool::new(false));
        let standby = {
            let (relay, taken) = (relay.clone(), taken.clone());
            std::thread::spawn(move || {
                let turn = relay.take(|| false);
                taken.store(true, Ordering::SeqCst);
                turn
            })
        };
        // The holder sleeps in read(2): the standby waits without a
        // timeout, and only the holder's taking a request frees it.
        relay.sleeping();
        while relay.lock().waiting == 0 {
            std::thread::yield_now();
        }
        assert!(!taken.load(Ordering::SeqCst), "the role is held");
        relay.took(Some(0));
        assert_eq!(standby.join().unwrap(), Turn::Poll);
        assert!(relay.lock().held, "the standby holds it now");
        assert_eq!(relay.take(|| true), Turn::Pause, "a pause is seen first");
    }

    #[test]
    fn a_free_role_is_taken_within_the_watch_while_the_holder_polled() {
        let relay = relay();
        assert_eq!(relay.take(|| false), Turn::Poll);
        let standby = {
            let relay = relay.clone();
            std::thread::spawn(move || relay.take(|| false))
        };
        while !relay.lock().watching {
            std::thread::yield_now();
        }
        // The polling holder takes a request and tells nobody: the
        // watcher finds the role free at its next look.
        {
            let mut s = relay.lock();
            s.held = false;
        }
        let start = Instant::now();
        assert_eq!(standby.join().unwrap(), Turn::Poll);
        assert!(start.elapsed() < WATCH * 100, "{:?}", start.elapsed());
    }

    #[test]
    fn two_callers_set_every_worker_reading_and_one_caller_brings_the_relay_back() {
        let relay = relay();
        assert_eq!(relay.take(|| false), Turn::Poll);
        relay.sleeping();
        let spawn = || {
            let relay = relay.clone();
            std::thread::spawn(move || relay.take(|| false))
        };
        let (a, b) = (spawn(), spawn());
        while relay.lock().waiting < 2 {
            std::thread::yield_now();
        }
        relay.took(Some(100));
        assert_eq!(a.join().unwrap(), Turn::Read, "a new caller: all read");
        assert_eq!(b.join().unwrap(), Turn::Read);
        assert_eq!(relay.take(|| false), Turn::Read);
        relay.took(Some(200));
        for _ in 0..ONE_CALLER - 1 {
            relay.took(Some(200));
            assert!(relay.lock().together);
        }
        relay.took(Some(200));
        assert!(
            !relay.lock().together,
            "{ONE_CALLER} in a row from one caller"
        );
        assert_eq!(relay.take(|| false), Turn::Poll);
        let c = spawn();
        while relay.lock().waiting < 1 {
            std::thread::yield_now();
        }
        relay.end();
        assert_eq!(c.join().unwrap(), Turn::Ended, "an end returns standbys");
    }

    #[test]
    fn forgets_are_nobodys_and_leave_the_mode_as_it_is() {
        let relay = relay();
        relay.took(Some(7));
        assert!(relay.lock().together, "a first caller");
        for _ in 0..ONE_CALLER {
            relay.took(Some(7));
        }
        assert!(!relay.lock().together);
        relay.took(Some(0));
        assert!(!relay.lock().together, "a FORGET between");
        relay.took(Some(7));
        assert!(!relay.lock().together, "the same caller on");
        relay.took(Some(8));
        assert!(relay.lock().together, "another caller");
    }

    #[test]
    fn a_pause_wakes_every_standby() {
        let relay = relay();
        assert_eq!(relay.take(|| false), Turn::Poll);
        relay.sleeping();
        let pausing = Arc::new(AtomicBool::new(false));
        let spawn = || {
            let (relay, pausing) = (relay.clone(), pausing.clone());
            std::thread::spawn(move || relay.take(|| pausing.load(Ordering::SeqCst)))
        };
        let (a, b) = (spawn(), spawn());
        while relay.lock().waiting < 2 {
            std::thread::yield_now();
        }
        pausing.store(true, Ordering::SeqCst);
        relay.wake_all();
        assert_eq!(a.join().unwrap(), Turn::Pause);
        assert_eq!(b.join().unwrap(), Turn::Pause);
    }
}
