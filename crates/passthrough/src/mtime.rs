//! The source's mtime under the writeback cache: the kernel's, not the
//! one the source stamps at each WRITE.
//!
//! Under the writeback cache the kernel keeps a regular file's mtime
//! itself: it stamps it when data enters its cache, sends it in SETATTR
//! (at close, fsync, utimes, or when it writes the inode back), and ignores
//! the mtime in our replies while it caches the inode. The source, though,
//! stamps its own mtime at every pwrite, and a cache WRITE that reaches it
//! after the kernel's last SETATTR (a second write within one clock tick
//! dirties no inode; background writeback may send WRITEs after the
//! SETATTR, from another thread) would leave the source's mtime later than
//! the kernel's: visible on the source, and through the mount once the
//! kernel forgets the inode.
//!
//! Putting the mtime back after every WRITE costs each one an fstat and a
//! futimens. Instead a WRITE only notes that it disturbed the mtime, and
//! the mtime is put back when it matters: at FLUSH, FSYNC and RELEASE of a
//! handle of the inode (by then the kernel has written back what that
//! handle dirtied), or by a SETATTR of the times, which sets it anyway.
//! The kernel forgets an inode only after its last RELEASE, so what it
//! shows later is always what it last said.

use std::os::fd::BorrowedFd;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::saved::SavedMtime;
use crate::sys;

/// (seconds, nanoseconds) of an mtime.
type Mtime = (i64, i64);

/// Per inode: what the source's mtime should be, and whether cache WRITEs
/// changed it since.
#[derive(Debug, Default)]
pub(crate) struct KeptMtime {
    state: Mutex<State>,
}

#[derive(Debug, Default, Clone, Copy)]
struct State {
    /// Cache WRITEs in flight on the inode.
    writes: u32,
    /// The mtime to put back: the source's before the first cache WRITE
    /// since the last time it was put back, or what a SETATTR set since.
    owed: Option<Mtime>,
    /// A cache WRITE ended since `owed` was last true on the source.
    disturbed: bool,
}

fn mtime_of(st: &libc::stat) -> Mtime {
    (st.st_mtime, st.st_mtime_nsec)
}

impl KeptMtime {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Before a cache WRITE stores data through `fd`: the first one since
    /// the mtime was last put back notes the mtime to keep. The returned
    /// guard, dropped after the store, marks the mtime disturbed. `None`
    /// (nothing will be put back) when the mtime cannot be read.
    pub(crate) fn write(&self, fd: BorrowedFd<'_>) -> Option<WriteGuard<'_>> {
        let mut state = self.lock();
        if state.owed.is_none() {
            state.owed = Some(mtime_of(&sys::stat_fd(fd).ok()?));
        }
        state.writes += 1;
        Some(WriteGuard { kept: self })
    }

    /// Puts the kept mtime back through `fd` if cache WRITEs disturbed it
    /// and none is in flight (one in flight puts it back at a later
    /// FLUSH or RELEASE of its own handle).
    pub(crate) fn settle(&self, fd: BorrowedFd<'_>) {
        let mut state = self.lock();
        if !state.disturbed || state.writes > 0 {
            return;
        }
        if let Some(mtime) = state.owed {
            if let Err(e) = sys::futimens(fd, &times(mtime)) {
                tracing::debug!("cannot put the mtime back after cache writes: {e}");
            }
        }
        *state = State::default();
    }

    /// What is kept, for a successor (see `saved`).
    pub(crate) fn save(&self) -> SavedMtime {
        let state = *self.lock();
        SavedMtime {
            writes: state.writes,
            owed: state.owed,
            disturbed: state.disturbed,
        }
    }

    /// What a predecessor kept ([`KeptMtime::save`]).
    pub(crate) fn restore(saved: &SavedMtime) -> KeptMtime {
        KeptMtime {
            state: Mutex::new(State {
                writes: saved.writes,
                owed: saved.owed,
                disturbed: saved.disturbed,
            }),
        }
    }

    /// Sets the times with `set` (a SETATTR) under the lock, so that no
    /// WRITE notes an mtime in between; what the source then shows
    /// (`stat`) is the mtime kept from now on.
    pub(crate) fn set_times<E>(
        &self,
        set: impl FnOnce() -> Result<(), E>,
        stat: impl FnOnce() -> std::io::Result<libc::stat>,
    ) -> Result<(), E> {
        let mut state = self.lock();
        set()?;
        if state.writes == 0 {
            // Nothing in flight: the source shows the kernel's mtime now.
            *state = State::default();
        } else {
            // Those in flight will disturb it again: keep the new one.
            state.owed = stat().ok().map(|st| mtime_of(&st));
            state.disturbed = false;
        }
        Ok(())
    }
}

/// A cache WRITE in flight (see [`KeptMtime::write`]).
pub(crate) struct WriteGuard<'a> {
    kept: &'a KeptMtime,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.kept.lock();
        state.writes -= 1;
        state.disturbed = true;
    }
}

/// utimensat's pair: atime left alone, mtime set.
fn times(mtime: Mtime) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    fn mtime(f: &std::fs::File) -> Mtime {
        mtime_of(&sys::stat_fd(f.as_fd()).unwrap())
    }

    fn set(f: &std::fs::File, m: Mtime) {
        sys::futimens(f.as_fd(), &times(m)).unwrap();
    }

    #[test]
    fn writes_are_put_back_at_settle_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = std::fs::File::create(dir.path().join("f")).unwrap();
        set(&f, (1_000_000, 5));
        let kept = KeptMtime::default();
        for _ in 0..3 {
            let guard = kept.write(f.as_fd()).unwrap();
            f.write_all(b"data").unwrap();
            drop(guard);
        }
        // The writes stamped their own mtime; nothing put it back yet.
        assert_ne!(mtime(&f), (1_000_000, 5));
        kept.settle(f.as_fd());
        assert_eq!(mtime(&f), (1_000_000, 5));
    }

    #[test]
    fn settle_waits_for_writes_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = std::fs::File::create(dir.path().join("f")).unwrap();
        set(&f, (2_000_000, 0));
        let kept = KeptMtime::default();
        let first = kept.write(f.as_fd()).unwrap();
        f.write_all(b"a").unwrap();
        drop(first);
        let second = kept.write(f.as_fd()).unwrap();
        f.write_all(b"b").unwrap();
        // A FLUSH of another handle while the second is in flight.
        kept.settle(f.as_fd());
        drop(second);
        kept.settle(f.as_fd());
        assert_eq!(mtime(&f), (2_000_000, 0));
    }

    #[test]
    fn setattr_changes_what_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = std::fs::File::create(dir.path().join("f")).unwrap();
        set(&f, (3_000_000, 0));
        let kept = KeptMtime::default();
        let guard = kept.write(f.as_fd()).unwrap();
        f.write_all(b"a").unwrap();
        kept.set_times(
            || sys::futimens(f.as_fd(), &times((4_000_000, 7))),
            || sys::stat_fd(f.as_fd()),
        )
        .unwrap();
        // The WRITE in flight lands after the SETATTR.
        f.write_all(b"b").unwrap();
        drop(guard);
        kept.settle(f.as_fd());
        assert_eq!(mtime(&f), (4_000_000, 7));
    }
}
