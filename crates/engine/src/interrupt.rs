//! INTERRUPT bookkeeping: which requests in flight the kernel asked to
//! interrupt, so that long waits (SETLKW) can give up with EINTR, and the
//! wakers of deferred requests, called when their INTERRUPT arrives or the
//! connection ends.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// More pending interrupts than this means stale entries piled up (an
/// INTERRUPT for a request that had already been answered): start over.
const MAX_PENDING: usize = 4096;

/// Called once when the request it was registered for is interrupted.
pub(crate) type Waker = Box<dyn FnOnce() + Send>;

/// The set of interrupted request ids, and the wakers of deferred requests.
#[derive(Default)]
pub struct Interrupts {
    /// How many ids the set holds: lets the common case (none) skip the lock.
    /// Relaxed suffices: the set itself is read under the mutex, and a check
    /// that misses a just-arrived interrupt is repeated by the waiter.
    pending: AtomicUsize,
    set: Mutex<HashSet<u64>>,
    /// Deferred requests waiting for something, by unique id.
    wakers: Mutex<HashMap<u64, Waker>>,
    /// Set when the connection ended: every request counts as interrupted.
    ended: AtomicBool,
    /// Deferred requests not answered yet. A session must not hand its
    /// connection over while one is out: its answer belongs to this
    /// process's fd.
    deferred: AtomicUsize,
}

impl std::fmt::Debug for Interrupts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interrupts")
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .field("ended", &self.ended.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Interrupts {
    /// Records an INTERRUPT for request `unique` and wakes it if it waits.
    pub fn insert(&self, unique: u64) {
        {
            let mut set = lock(&self.set);
            if set.len() >= MAX_PENDING {
                set.clear();
            }
            set.insert(unique);
            self.pending.store(set.len(), Ordering::Relaxed);
        }
        // Taken out before the call: a waker may answer its request, which
        // comes back here through `finish`.
        let waker = lock(&self.wakers).remove(&unique);
        if let Some(wake) = waker {
            wake();
        }
    }

    /// Whether request `unique` was interrupted (or the connection ended).
    pub fn contains(&self, unique: u64) -> bool {
        if self.ended.load(Ordering::Acquire) {
            return true;
        }
        if self.pending.load(Ordering::Relaxed) == 0 {
            return false;
        }
        lock(&self.set).contains(&unique)
    }

    /// Registers `wake` for request `unique`; called at once if the request
    /// is already interrupted. Replaces an earlier waker of the request.
    pub(crate) fn on_interrupt(&self, unique: u64, wake: Waker) {
        let mut wakers = lock(&self.wakers);
        // Checked under the wakers' lock: `insert` and `end` take the waker
        // out under it after marking, so one of the two sides sees the other.
        if self.contains(unique) {
            drop(wakers);
            wake();
        } else {
            wakers.insert(unique, wake);
        }
    }

    /// Forgets request `unique` once it has been answered.
    pub fn finish(&self, unique: u64) {
        if self.pending.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut set = lock(&self.set);
        set.remove(&unique);
        self.pending.store(set.len(), Ordering::Relaxed);
    }

    /// A request was deferred: counted until [`finish_deferred`].
    ///
    /// [`finish_deferred`]: Interrupts::finish_deferred
    pub(crate) fn start_deferred(&self) {
        self.deferred.fetch_add(1, Ordering::SeqCst);
    }

    /// Deferred requests not answered yet.
    pub(crate) fn deferred_outstanding(&self) -> usize {
        self.deferred.load(Ordering::SeqCst)
    }

    /// [`finish`](Interrupts::finish) for a deferred request, which may
    /// have a waker: only those take the wakers' lock, never a request
    /// answered by the worker that read it.
    pub(crate) fn finish_deferred(&self, unique: u64) {
        self.deferred.fetch_sub(1, Ordering::SeqCst);
        self.finish(unique);
        let waker = lock(&self.wakers).remove(&unique);
        drop(waker);
    }

    /// The connection ended: every request counts as interrupted from now
    /// on, and every waiting deferred request is woken so that it answers
    /// (into the void) and lets go of what it holds.
    pub(crate) fn end(&self) {
        self.ended.store(true, Ordering::Release);
        let wakers = std::mem::take(&mut *lock(&self.wakers));
        for wake in wakers.into_values() {
            wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn insert_contains_finish() {
        let i = Interrupts::default();
        assert!(!i.contains(5));
        i.insert(5);
        assert!(i.contains(5));
        assert!(!i.contains(6));
        i.finish(5);
        assert!(!i.contains(5));
    }

    #[test]
    fn stale_entries_are_bounded() {
        let i = Interrupts::default();
        for u in 0..(MAX_PENDING as u64 + 10) {
            i.insert(u);
        }
        assert!(i.pending.load(Ordering::Relaxed) <= MAX_PENDING);
    }

    #[test]
    fn wakers_run_once_on_interrupt_or_end_and_never_after_finish() {
        let i = Interrupts::default();
        for _ in 1..=3 {
            i.start_deferred();
        }
        let woken = Arc::new(AtomicUsize::new(0));
        let count = |w: &Arc<AtomicUsize>| {
            let w = w.clone();
            Box::new(move || {
                w.fetch_add(1, Ordering::SeqCst);
            }) as Waker
        };
        i.on_interrupt(1, count(&woken));
        i.on_interrupt(2, count(&woken));
        i.on_interrupt(3, count(&woken));
        i.insert(1);
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        i.insert(1);
        assert_eq!(woken.load(Ordering::SeqCst), 1, "a waker runs once");
        i.finish_deferred(2);
        assert_eq!(i.deferred_outstanding(), 2, "1 and 3 are still out");
        // Already interrupted: the waker runs at once.
        i.on_interrupt(1, count(&woken));
        assert_eq!(woken.load(Ordering::SeqCst), 2);
        i.end();
        assert_eq!(woken.load(Ordering::SeqCst), 3, "3 woken at the end, 2 not");
        assert!(i.contains(99));
        i.on_interrupt(4, count(&woken));
        assert_eq!(woken.load(Ordering::SeqCst), 4);
    }
}
