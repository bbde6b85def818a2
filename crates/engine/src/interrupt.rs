//! INTERRUPT bookkeeping: which requests in flight the kernel asked to
//! interrupt, so that long waits (SETLKW) can give up with EINTR.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// More pending interrupts than this means stale entries piled up (an
/// INTERRUPT for a request that had already been answered): start over.
const MAX_PENDING: usize = 4096;

/// The set of interrupted request ids.
#[derive(Debug, Default)]
pub struct Interrupts {
    /// How many ids the set holds: lets the common case (none) skip the lock.
    /// Relaxed suffices: the set itself is read under the mutex, and a check
    /// that misses a just-arrived interrupt is repeated by the waiter.
    pending: AtomicUsize,
    set: Mutex<HashSet<u64>>,
}

impl Interrupts {
    /// Records an INTERRUPT for request `unique`.
    pub fn insert(&self, unique: u64) {
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        if set.len() >= MAX_PENDING {
            set.clear();
        }
        set.insert(unique);
        self.pending.store(set.len(), Ordering::Relaxed);
    }

    /// Whether request `unique` was interrupted.
    pub fn contains(&self, unique: u64) -> bool {
        if self.pending.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        set.contains(&unique)
    }

    /// Forgets request `unique` once it has been answered.
    pub fn finish(&self, unique: u64) {
        if self.pending.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        set.remove(&unique);
        self.pending.store(set.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
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
}
