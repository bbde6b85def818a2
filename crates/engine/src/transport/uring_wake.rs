//! Local wake-ups: pinned ring threads that let the kernel wake a caller
//! on the CPU it slept on, and the guard that keeps them from starving.
//!
//! Why: requests go to the queue of the caller's CPU, whose pinned thread
//! serves them there. The reply wakes the caller from inside the commit
//! (`fuse_request_end`), while the ring thread still runs on that CPU, so
//! the scheduler (`select_idle_sibling`) finds the CPU busy and puts the
//! caller on another, idle one. On a VM that is an IPI to a halted vCPU for
//! every reply, and it is where most of a ring thread's time goes in a
//! metadata workload. A CPU whose runnable tasks are all SCHED_IDLE counts
//! as idle in that choice (`sched_idle_cpu`): a ring thread under
//! SCHED_IDLE gets its caller woken where it slept, the caller preempts it
//! at once, and the ring thread finishes its commit when the caller sleeps
//! again, which is when the next request needs it anyway.
//!
//! The risk: a SCHED_IDLE thread gets almost no CPU while a normal task
//! wants that CPU. Under a busy loop pinned to each CPU, an untar of 5,000
//! files took over two minutes with SCHED_IDLE ring threads, against 2.4 s
//! without. So a guard thread reads every watched thread's run delay (time
//! spent runnable but not running, `/proc/thread-self/schedstat`) every
//! [`TICK`]; a thread that waited for most of that time
//! ([`STARVED_PERCENT`]) goes back to SCHED_OTHER at once and stays there
//! for a backoff, which doubles when it starves again soon after (up to
//! [`MAX_BACKOFF`]). Such a wait can
//! only happen while some other task keeps the CPU busy, and a busy CPU is
//! not idle to the scheduler anyway, so nothing is given up while the
//! thread runs SCHED_OTHER. A request that arrives while its thread
//! starves waits about two ticks.
//!
//! When the queues have been quiet for [`QUIET`], the guard puts every
//! thread back to SCHED_OTHER and sleeps until a ring thread next wakes up:
//! an idle mount wakes nobody, and no thread is SCHED_IDLE while nobody
//! watches it.
//!
//! A thread inherits the policy of the thread that creates it, and a
//! filesystem may start one from a request handler that runs on a pinned
//! thread. The engine's own (helpers, lock waiters, queue kicks) leave
//! SCHED_IDLE first thing; for any other, the guard puts every thread of
//! the process it does not watch back to SCHED_OTHER every [`SCAN_TICKS`]
//! busy ticks and before it sleeps. (So a filesystem cannot keep threads
//! of its own under SCHED_IDLE while local wake-ups are on.)
//!
//! Only where a thread may leave SCHED_IDLE again: without CAP_SYS_NICE
//! (or an RLIMIT_NICE that allows nice 0) the kernel refuses the way back,
//! so [`LocalWake::start`] tries both ways on a thread of its own first.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::stats::Stats;
use crate::sys;

/// How often the guard reads the run delays while the queues are busy.
const TICK: Duration = Duration::from_millis(5);

/// Share of the time since the last look that a thread spent waiting for
/// the CPU, in percent, that counts as starving. A thread its own caller
/// preempted waits far less (at most 54% of any 5 ms of an untar, and 10%
/// in 99 of 100, measured); one behind a busy loop waits 80% and more.
const STARVED_PERCENT: u128 = 60;

/// The nice value of the guard, so that its ticks keep time on a CPU that
/// is busy: the same privilege that lets a thread leave SCHED_IDLE allows
/// it.
const GUARD_NICE: i32 = -10;

/// The first backoff under SCHED_OTHER after starving.
const MIN_BACKOFF: Duration = Duration::from_millis(250);

/// The longest backoff, for a CPU that stays busy.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// No request for this long, and the guard sleeps.
const QUIET: Duration = Duration::from_millis(100);

/// Every this many busy ticks, the guard looks for threads it does not
/// watch that run SCHED_IDLE: a thread inherits its creator's policy, so
/// one a request handler spawns on a pinned thread (a filesystem's lazily
/// started helper) would start under SCHED_IDLE, unwatched.
const SCAN_TICKS: u32 = 20;

/// The guard of one connection's pinned ring threads. Dropping it stops
/// the guard and leaves every thread it watched under SCHED_OTHER.
pub(crate) struct LocalWake {
    shared: Arc<Shared>,
    guard: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled to stop the guard, and to wake it from a quiet sleep.
    cond: Condvar,
    /// Wake-ups of the watched threads, to tell a busy mount from a quiet
    /// one.
    activity: AtomicU64,
    /// Set while the guard sleeps through a quiet spell: the next wake-up
    /// of a watched thread wakes it.
    asleep: AtomicBool,
    /// Where the guard counts what it does: the session's statistics, from
    /// the first thread that joins.
    stats: OnceLock<Arc<Stats>>,
}

#[derive(Default)]
struct State {
    watched: Vec<Watched>,
    stop: bool,
}

/// A pinned ring thread the guard watches.
struct Watched {
    /// Unique among the watched: a thread leaves the watch before it ends.
    tid: libc::pid_t,
    /// The thread's `/proc/thread-self/schedstat`, opened by the thread
    /// itself: its second field is the run delay in ns.
    schedstat: File,
    last_delay: u64,
    last_look: Instant,
    idle: bool,
    /// Under SCHED_OTHER until then, after starving.
    back_at: Instant,
    backoff: Duration,
    last_starved: Option<Instant>,
}

impl Watched {
    fn run_delay(&self) -> io::Result<u64> {
        let mut buf = [0u8; 96];
        let n = self.schedstat.read_at(&mut buf, 0)?;
        std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|s| s.split_whitespace().nth(1))
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other("unreadable schedstat"))
    }

    /// Whether the policy changed.
    fn set_idle(&mut self, idle: bool) -> bool {
        if self.idle == idle {
            return false;
        }
        match sys::set_sched_idle(self.tid, idle) {
            Ok(()) => {
                self.idle = idle;
                true
            }
            Err(e) => {
                tracing::debug!(
                    tid = self.tid,
                    idle,
                    "cannot change the ring thread's policy: {e}"
                );
                false
            }
        }
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LocalWake {
    /// The guard, running, or None where threads cannot leave SCHED_IDLE
    /// again or the guard cannot start.
    pub(crate) fn start() -> Option<LocalWake> {
        let probe = std::thread::Builder::new()
            .name("ff-uring-probe".into())
            .spawn(|| sys::set_sched_idle(0, true).and_then(|()| sys::set_sched_idle(0, false)))
            .ok()?
            .join()
            .ok()?;
        if let Err(e) = probe {
            tracing::debug!("ring threads stay SCHED_OTHER: {e}");
            return None;
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
            activity: AtomicU64::new(0),
            asleep: AtomicBool::new(false),
            stats: OnceLock::new(),
        });
        let s = shared.clone();
        let guard = std::thread::Builder::new()
            .name("ff-uring-guard".into())
            .spawn(move || {
                if let Err(e) = sys::set_thread_nice(GUARD_NICE) {
                    tracing::debug!("the ring threads' guard runs at nice 0: {e}");
                }
                s.guard()
            })
            .inspect_err(|e| tracing::debug!("no guard for the ring threads: {e}"))
            .ok()?;
        Some(LocalWake {
            shared,
            guard: Some(guard),
        })
    }

    /// Puts the calling thread, a pinned ring thread, under watch; the
    /// guard makes it SCHED_IDLE at its next tick. None if its schedstat
    /// cannot be read (a kernel without CONFIG_SCHED_INFO).
    pub(crate) fn join(&self, stats: &Arc<Stats>) -> Option<Member> {
        let _ = self.shared.stats.set(stats.clone());
        let schedstat = File::open("/proc/thread-self/schedstat")
            .inspect_err(|e| tracing::debug!("ring thread stays SCHED_OTHER: {e}"))
            .ok()?;
        let tid = sys::gettid();
        let mut w = Watched {
            tid,
            schedstat,
            last_delay: 0,
            last_look: Instant::now(),
            idle: false,
            back_at: Instant::now(),
            backoff: MIN_BACKOFF,
            last_starved: None,
        };
        w.last_delay = w.run_delay().ok()?;
        lock(&self.shared.state).watched.push(w);
        Some(Member {
            shared: self.shared.clone(),
            tid,
        })
    }
}

impl Drop for LocalWake {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.cond.notify_all();
        if let Some(guard) = self.guard.take() {
            let _ = guard.join();
        }
    }
}

/// A pinned ring thread's place under watch. Dropped by that thread: it
/// leaves the watch and SCHED_IDLE.
pub(crate) struct Member {
    shared: Arc<Shared>,
    tid: libc::pid_t,
}

impl Member {
    /// The thread woke up to serve: the mount is busy.
    pub(crate) fn woke(&self) {
        // SeqCst here and in `Shared::sleep`: each side stores one flag,
        // then loads the other's, and one of them must see the other.
        self.shared.activity.fetch_add(1, Ordering::SeqCst);
        if self.shared.asleep.load(Ordering::SeqCst)
            && self.shared.asleep.swap(false, Ordering::SeqCst)
        {
            let _state = lock(&self.shared.state);
            self.shared.cond.notify_all();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        state.watched.retain(|w| w.tid != self.tid);
        drop(state);
        if let Err(e) = sys::set_sched_idle(0, false) {
            tracing::debug!("ring thread stays as it is: {e}");
        }
    }
}

impl Shared {
    fn guard(&self) {
        let mut state = lock(&self.state);
        let mut seen = self.activity.load(Ordering::Relaxed);
        let mut quiet_since = Instant::now();
        let mut busy_ticks = 0u32;
        loop {
            state = self
                .cond
                .wait_timeout_while(state, TICK, |s| !s.stop)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            if state.stop {
                break;
            }
            let now = Instant::now();
            let activity = self.activity.load(Ordering::Relaxed);
            let busy = activity != seen;
            for w in &mut state.watched {
                if let (Some(starved), Some(stats)) = (Self::check(w, now, busy), self.stats.get())
                {
                    stats.record_local_wake(starved);
                }
            }
            if busy {
                seen = activity;
                quiet_since = now;
                busy_ticks = busy_ticks.wrapping_add(1);
                if busy_ticks.is_multiple_of(SCAN_TICKS) {
                    unwatched_to_other(&state.watched);
                }
            } else if now.duration_since(quiet_since) >= QUIET {
                state = self.sleep(state);
                if state.stop {
                    break;
                }
                seen = self.activity.load(Ordering::Relaxed);
                quiet_since = Instant::now();
                for w in &mut state.watched {
                    // Waits while asleep were under SCHED_OTHER.
                    w.last_delay = w.run_delay().unwrap_or(w.last_delay);
                    w.last_look = Instant::now();
                }
            }
        }
        for w in &mut state.watched {
            w.set_idle(false);
        }
    }

    /// One tick's look at a thread: back to SCHED_OTHER if it starved
    /// (Some(true)), to SCHED_IDLE once its backoff is over and the mount
    /// is `busy` (Some(false)).
    fn check(w: &mut Watched, now: Instant, busy: bool) -> Option<bool> {
        let Ok(delay) = w.run_delay() else {
            w.set_idle(false);
            return None;
        };
        // The span the delay grew over ends when it was read, not at `now`.
        let read_at = Instant::now();
        let waited = Duration::from_nanos(delay.saturating_sub(w.last_delay));
        let since = read_at.duration_since(w.last_look);
        w.last_delay = delay;
        w.last_look = read_at;
        if waited.as_nanos() * 100 >= since.as_nanos() * STARVED_PERCENT {
            if w.idle {
                let again = w
                    .last_starved
                    .is_some_and(|t| now.duration_since(t) < w.backoff * 4);
                w.backoff = if again {
                    (w.backoff * 2).min(MAX_BACKOFF)
                } else {
                    MIN_BACKOFF
                };
                w.last_starved = Some(now);
                tracing::debug!(tid = w.tid, ?waited, backoff = ?w.backoff, "ring thread starved: SCHED_OTHER");
                w.back_at = now + w.backoff;
                return w.set_idle(false).then_some(true);
            }
            // Still waiting for the CPU under SCHED_OTHER: the CPU is
            // busy, so stay.
            w.back_at = now + w.backoff;
        } else if !w.idle && busy && now >= w.back_at {
            return w.set_idle(true).then_some(false);
        }
        None
    }

    /// Sleeps through a quiet spell, every thread under SCHED_OTHER, until
    /// a watched thread wakes up or the guard is stopped.
    fn sleep<'a>(&self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        for w in &mut state.watched {
            w.set_idle(false);
        }
        unwatched_to_other(&state.watched);
        let before = self.activity.load(Ordering::SeqCst);
        self.asleep.store(true, Ordering::SeqCst);
        // A wake-up between the last look and the flag would be missed.
        if self.activity.load(Ordering::SeqCst) != before {
            self.asleep.store(false, Ordering::SeqCst);
            return state;
        }
        self.cond
            .wait_while(state, |s| !s.stop && self.asleep.load(Ordering::SeqCst))
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Puts every thread of the process that `watched` does not hold and that
/// runs SCHED_IDLE back under SCHED_OTHER.
fn unwatched_to_other(watched: &[Watched]) {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        if watched.iter().all(|w| w.tid != tid) {
            leave_sched_idle(tid);
        }
    }
}

/// Puts thread `tid` of the process (0: the calling thread) under
/// SCHED_OTHER if it runs SCHED_IDLE: a thread started by a pinned one
/// inherits its policy, and only pinned threads are watched.
pub(crate) fn leave_sched_idle(tid: libc::pid_t) {
    if !sys::is_sched_idle(tid).unwrap_or(false) {
        return;
    }
    match sys::set_sched_idle(tid, false) {
        Ok(()) => tracing::debug!(tid, "a thread started by a ring thread leaves SCHED_IDLE"),
        Err(e) => tracing::warn!(
            tid,
            "a thread started by a ring thread stays SCHED_IDLE: {e}"
        ),
    }
}
