//! Where /dev/fuse workers wait while their session is paused (see
//! [`BackgroundSession::pause`](crate::BackgroundSession::pause)): a
//! worker that finds the gate closed between two requests parks on it,
//! with its buffers, until the gate opens again (the pause is called off,
//! or the successor refused) or the session is left to a successor, when
//! it returns without reading another request.
//!
//! A worker blocked in read(2) is woken by a signal, which ends the read
//! with EINTR and takes no request. The signal must reach a worker only
//! there: one serving a request may be in a system call that a signal
//! cuts short (tmpfs's fallocate returns EINTR, a copy_file_range comes
//! back short), and the caller would see it. [`Reading`] makes sure.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The gate of one session's workers.
#[derive(Default)]
pub(crate) struct Gate {
    /// Checked by every worker after every request, so lock-free. Written
    /// under `state`'s lock, so that a parking worker, which checks it
    /// again under the lock, never misses an opening.
    closed: AtomicBool,
    state: Mutex<State>,
    /// Workers wait here for the gate to open.
    opened: Condvar,
    /// The pausing thread waits here for workers to park.
    parked: Condvar,
}

#[derive(Default)]
struct State {
    parked: usize,
    /// The session was left: parked workers return.
    left: bool,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a worker must stop before reading another request.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// A worker between requests: waits while the gate is closed. True to
    /// go on serving, false to return (the session was left).
    pub(crate) fn wait(&self) -> bool {
        let mut state = self.lock();
        if state.left {
            return false;
        }
        if !self.closed.load(Ordering::Acquire) {
            return true;
        }
        state.parked += 1;
        self.parked.notify_all();
        while self.closed.load(Ordering::Acquire) && !state.left {
            state = self
                .opened
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.parked -= 1;
        !state.left
    }

    /// Closes the gate: workers park after the request they serve.
    pub(crate) fn close(&self) {
        let _state = self.lock();
        self.closed.store(true, Ordering::Release);
    }

    /// Opens it: parked workers go on.
    pub(crate) fn open(&self) {
        let _state = self.lock();
        self.closed.store(false, Ordering::Release);
        self.opened.notify_all();
    }

    /// The session was left: parked workers, and any that would park,
    /// return.
    pub(crate) fn leave(&self) {
        let mut state = self.lock();
        state.left = true;
        self.opened.notify_all();
    }

    /// Waits up to `limit` until `count` workers are parked; whether they
    /// are.
    pub(crate) fn wait_parked(&self, count: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut state = self.lock();
        while state.parked < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .parked
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

/// Where one worker is, as the pausing thread may signal it.
#[derive(Default)]
pub(crate) struct Reading(AtomicU8);

/// Serving a request, parked, or between the two: no signal.
const BUSY: u8 = 0;
/// In (or about to enter) read(2) on /dev/fuse: may be signalled.
const READING: u8 = 1;
/// The pausing thread is sending the signal.
const SIGNALLING: u8 = 2;
/// The signal was sent: it has been or will be handled at the worker's
/// next return from a system call.
const SIGNALLED: u8 = 3;

impl Reading {
    /// The worker is about to read a request.
    pub(crate) fn enter(&self) {
        self.0.store(READING, Ordering::SeqCst);
    }

    /// The read returned (with a request or EINTR): from here no signal
    /// may arrive. If one was sent meanwhile, it is taken now, by a
    /// system call whose return runs the handler, rather than in the
    /// middle of serving.
    pub(crate) fn leave(&self) {
        loop {
            match self
                .0
                .compare_exchange(READING, BUSY, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return,
                // The pauser is between its claim and its kill: a few
                // instructions.
                Err(SIGNALLING) => std::hint::spin_loop(),
                Err(_) => {
                    crate::sys::take_pending_signals();
                    self.0.store(BUSY, Ordering::SeqCst);
                    return;
                }
            }
        }
    }

    /// The pausing thread: signals the worker if it is reading (with
    /// `kill`, which must send it the pause signal); whether it was.
    pub(crate) fn interrupt(
        &self,
        kill: impl FnOnce() -> std::io::Result<()>,
    ) -> std::io::Result<bool> {
        if self
            .0
            .compare_exchange(READING, SIGNALLING, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Ok(false);
        }
        let r = kill();
        self.0.store(SIGNALLED, Ordering::SeqCst);
        r.map(|()| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn workers_park_while_closed_go_on_when_opened_and_return_when_left() {
        let gate = Arc::new(Gate::default());
        assert!(gate.wait(), "an open gate lets a worker on");
        gate.close();
        let spawn = |g: &Arc<Gate>| {
            let g = g.clone();
            std::thread::spawn(move || g.wait())
        };
        let (a, b) = (spawn(&gate), spawn(&gate));
        assert!(gate.wait_parked(2, Duration::from_secs(10)));
        assert!(!gate.wait_parked(3, Duration::from_millis(1)));
        gate.open();
        assert!(a.join().unwrap() && b.join().unwrap(), "opened: they go on");
        gate.close();
        let c = spawn(&gate);
        assert!(gate.wait_parked(1, Duration::from_secs(10)));
        gate.leave();
        assert!(!c.join().unwrap(), "left: it returns");
        assert!(!gate.wait(), "and so does any later one");
    }
}
