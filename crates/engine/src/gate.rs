//! Where /dev/fuse workers wait while their session is paused (see
//! [`BackgroundSession::pause`](crate::BackgroundSession::pause)): a
//! worker that finds the gate closed between two requests parks on it,
//! with its buffers, until the gate opens again (the pause is called off,
//! or the successor refused) or the session is left to a successor, when
//! it returns without reading another request.

use std::sync::atomic::{AtomicBool, Ordering};
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
