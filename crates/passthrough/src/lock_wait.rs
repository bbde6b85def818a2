//! Lock waits off the workers. A blocking lock (SETLKW, flock without
//! LOCK_NB) that cannot be had at once is waited for on a thread of its
//! own, in a blocking `fcntl(F_OFD_SETLKW)` or `flock(2)`, and answered
//! through the engine's [`Deferred`] when granted. The worker that read the
//! request goes on at once, so no number of waiters can hold up the unlock
//! that releases them.
//!
//! When the kernel interrupts the request (the waiting process got a
//! signal) or the connection ends, the engine calls the waiter's waker,
//! which sends its thread a signal (`sys::WakeableThread`): the blocking
//! call returns EINTR and the request is answered EINTR. A signal sent
//! just before the thread enters the call would be lost, so a woken
//! waiter is signalled again every [`NUDGE_EVERY`] until it has answered
//! (the nudger thread below); a waiter nobody wakes costs nothing.
//!
//! Each filesystem counts its deferred waits ([`LockWaiters`]): one in
//! flight owns a deferred reply that only this process can send, so the
//! state cannot be handed to a successor while there is one (see
//! `PassthroughFs::save`).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use fastfuse::{Caller, Deferred, Errno};

use crate::sys::{self, WakeableThread};

/// How often a woken waiter that has not answered yet is signalled again.
const NUDGE_EVERY: Duration = Duration::from_millis(2);

/// Stack of a waiter thread: it only makes one system call at a time.
const WAITER_STACK: usize = 64 * 1024;

/// One waiting thread, as its waker sees it.
struct Waiter {
    /// The thread while it may still block; None once it is past its last
    /// blocking call (it must not be signalled after it has exited).
    thread: Mutex<Option<WakeableThread>>,
    woken: AtomicBool,
}

impl Waiter {
    /// Signals the thread if it may still block; false once it is past.
    fn signal(&self) -> bool {
        let thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner);
        match *thread {
            Some(t) => {
                t.wake();
                true
            }
            None => false,
        }
    }

    fn wake(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        if self.signal() {
            nudger().add(self.clone());
        }
    }

    /// Leaves: no signal reaches the thread after this returns.
    fn leave(&self) {
        *self.thread.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Signals woken waiters again until they have left.
struct Nudger {
    woken: Mutex<Vec<Arc<Waiter>>>,
    changed: Condvar,
}

fn nudger() -> &'static Nudger {
    static NUDGER: OnceLock<&'static Nudger> = OnceLock::new();
    NUDGER.get_or_init(|| {
        let nudger: &'static Nudger = Box::leak(Box::new(Nudger {
            woken: Mutex::new(Vec::new()),
            changed: Condvar::new(),
        }));
        let spawned = std::thread::Builder::new()
            .name("ff-locknudge".into())
            .stack_size(WAITER_STACK)
            .spawn(move || nudger.run());
        if let Err(e) = spawned {
            tracing::error!("no thread to re-signal interrupted lock waiters: {e}");
        }
        nudger
    })
}

impl Nudger {
    fn add(&self, waiter: Arc<Waiter>) {
        self.woken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(waiter);
        self.changed.notify_one();
    }

    fn run(&self) {
        let mut woken = self.woken.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            while woken.is_empty() {
                woken = self
                    .changed
                    .wait(woken)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            drop(woken);
            std::thread::sleep(NUDGE_EVERY);
            woken = self.woken.lock().unwrap_or_else(PoisonError::into_inner);
            woken.retain(|w| w.signal());
        }
    }
}

/// How many lock waits of one filesystem are in flight on threads of
/// their own, each with a deferred reply to send.
#[derive(Debug, Default)]
pub(crate) struct LockWaiters(Arc<AtomicUsize>);

impl LockWaiters {
    /// Waits in flight now. Only a worker starts one, so once the workers
    /// are stopped this can only fall.
    pub(crate) fn pending(&self) -> usize {
        // Acquire pairs with the release in `WaitCount::drop`: a waiter
        // seen gone has finished everything it did (its reply included).
        self.0.load(Ordering::Acquire)
    }

    /// Counts one more wait until the returned guard drops.
    fn start(&self) -> WaitCount {
        self.0.fetch_add(1, Ordering::AcqRel);
        WaitCount(self.0.clone())
    }
}

/// One wait counted in [`LockWaiters`]; dropped once its reply is sent.
struct WaitCount(Arc<AtomicUsize>);

impl Drop for WaitCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// Waits for a lock with `wait` (a blocking call that returns EINTR when
/// signalled) without holding the caller's worker: defers the request and
/// waits on a new thread, which answers it, counted in `waiters` until it
/// has. `granted` runs on that thread once the lock is held, before the
/// answer. Without a way to defer (a detached caller), waits here.
pub(crate) fn wait_for_lock(
    req: &Caller<'_>,
    waiters: &LockWaiters,
    wait: impl FnMut() -> io::Result<()> + Send + 'static,
    granted: impl FnOnce() + Send + 'static,
) -> Result<(), Errno> {
    if let Err(e) = sys::install_wake_handler() {
        tracing::error!("cannot install the lock waiters' signal handler: {e}");
        return Err(Errno::ENOLCK);
    }
    let Some(reply) = req.defer() else {
        let r = wait_here(wait, || req.is_interrupted());
        if r.is_ok() {
            granted();
        }
        return r;
    };
    // Counted from before the worker returns, so that no save can run
    // between the deferral and the count.
    let counted = waiters.start();
    let spawned = std::thread::Builder::new()
        .name("ff-lockwait".into())
        .stack_size(WAITER_STACK)
        .spawn(move || {
            wait_deferred(reply, wait, granted);
            drop(counted);
        });
    // On failure the closure, and with it the Deferred and the count, was
    // dropped: the request has been answered EIO.
    if let Err(e) = spawned {
        tracing::error!("no thread to wait for a lock on: {e}");
    }
    Ok(())
}

/// Waits on this thread until `wait` succeeds or fails with something
/// other than EINTR, or `interrupted` says to give up.
fn wait_here(
    mut wait: impl FnMut() -> io::Result<()>,
    interrupted: impl Fn() -> bool,
) -> Result<(), Errno> {
    loop {
        if interrupted() {
            return Err(Errno::EINTR);
        }
        match wait() {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn wait_deferred(reply: Deferred, wait: impl FnMut() -> io::Result<()>, granted: impl FnOnce()) {
    let thread = match WakeableThread::current() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("a lock waiter cannot be made wakeable: {e}");
            return reply.error(Errno::ENOLCK);
        }
    };
    let waiter = Arc::new(Waiter {
        thread: Mutex::new(Some(thread)),
        woken: AtomicBool::new(false),
    });
    let waker = waiter.clone();
    reply.on_interrupt(move || waker.wake());
    let r = wait_here(wait, || {
        waiter.woken.load(Ordering::SeqCst) || reply.is_interrupted()
    });
    waiter.leave();
    match r {
        Ok(()) => {
            granted();
            reply.ok();
        }
        Err(e) => reply.error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_here_ends_on_success_hard_error_or_interrupt() {
        let mut n = 0;
        let r = wait_here(
            || {
                n += 1;
                if n < 3 {
                    Err(io::Error::from_raw_os_error(libc::EINTR))
                } else {
                    Ok(())
                }
            },
            || false,
        );
        assert_eq!((r, n), (Ok(()), 3));
        let r = wait_here(|| Err(io::Error::from_raw_os_error(libc::EBADF)), || false);
        assert_eq!(r, Err(Errno::EBADF));
        let r = wait_here(|| Ok(()), || true);
        assert_eq!(r, Err(Errno::EINTR));
    }

    #[test]
    fn a_blocked_thread_is_woken_by_its_waker() {
        // Blocks in a pipe read until signalled: the same EINTR path as a
        // lock wait.
        sys::install_wake_handler().unwrap();
        let (rd, _wr) = std::io::pipe().unwrap();
        let waiter = Arc::new(Waiter {
            thread: Mutex::new(None),
            woken: AtomicBool::new(false),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let w = waiter.clone();
        let t = std::thread::spawn(move || {
            *w.thread.lock().unwrap() = Some(WakeableThread::current().unwrap());
            tx.send(()).unwrap();
            let mut rd = rd;
            let r = wait_here(
                || {
                    use std::io::Read;
                    let mut b = [0u8; 1];
                    rd.read(&mut b).map(drop)
                },
                || w.woken.load(Ordering::SeqCst),
            );
            w.leave();
            r
        });
        rx.recv().unwrap();
        waiter.wake();
        assert_eq!(t.join().unwrap(), Err(Errno::EINTR));
        assert!(!waiter.signal(), "a waiter that left is not signalled");
    }
}
