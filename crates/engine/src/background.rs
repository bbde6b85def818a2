//! A session serving on background threads ([`BackgroundSession`]): wait
//! for it, unmount it, or pause it and hand its connection to another
//! server without unmounting (a live upgrade).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::init::Negotiated;
use crate::mount::Mount;
use crate::session::{Handover, SessionError};
use crate::stats::Stats;
use crate::stoppable::StoppableThread;
use crate::sys;

/// How long a pause waits for workers to leave read(2) before signalling
/// those still there again: a signal sent just before a worker entered
/// the call is lost, and there is no event for "entered read".
const RESIGNAL_EVERY: Duration = Duration::from_millis(1);

/// What a [`BackgroundSession`] needs of its typed server to pause and
/// restart it (the session itself does not name the filesystem's type).
pub(crate) trait Serving: Send {
    /// Starts the /dev/fuse workers again, each calling `exited` as it
    /// returns.
    fn start_dev_workers(
        &self,
        exited: Arc<WorkerSet>,
    ) -> Result<Vec<JoinHandle<()>>, SessionError>;
    /// Deferred requests not answered yet.
    fn deferred_outstanding(&self) -> usize;
    /// What INIT agreed.
    fn negotiated(&self) -> Negotiated;
    /// The connection's /dev/fuse fd.
    fn dev(&self) -> &Arc<OwnedFd>;
    /// Whether io_uring queues serve (their rings belong to this process).
    fn uring(&self) -> bool;
    /// The flag that makes /dev/fuse workers stop between requests.
    fn stopping(&self) -> &AtomicBool;
    /// Runs the filesystem's `destroy` (the connection ended).
    fn destroy(&self);
}

/// The running workers, counted, and an eventfd made readable when the
/// last one returns.
pub(crate) struct WorkerSet {
    running: AtomicUsize,
    ended: OwnedFd,
}

impl WorkerSet {
    pub(crate) fn new() -> io::Result<Arc<WorkerSet>> {
        Ok(Arc::new(WorkerSet {
            running: AtomicUsize::new(0),
            ended: sys::eventfd()?,
        }))
    }

    /// A worker is about to start.
    pub(crate) fn enter(&self) {
        self.running.fetch_add(1, Ordering::SeqCst);
    }

    /// A worker returned.
    pub(crate) fn exit(&self) {
        if self.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Err(e) = sys::eventfd_signal(self.ended.as_fd()) {
                tracing::error!("cannot report that the workers stopped: {e}");
            }
        }
    }
}

/// Why [`BackgroundSession::pause`] left the session serving.
#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    /// io_uring queues serve this connection: their rings and buffers
    /// belong to this process and cannot be handed over.
    #[error("the mount is served over io_uring, whose rings cannot be handed over")]
    Uring,
    /// An `auto_unmount` fusermount3 unmounts once this process ends.
    #[error(
        "the mount was made with auto_unmount: fusermount3 would unmount it when this process ends"
    )]
    AutoUnmount,
    /// Deferred requests (lock waits) are out; their answers must go
    /// through this process's descriptors.
    #[error("{0} blocked request(s) (lock waits) are pending; try again once they are answered")]
    Deferred(usize),
    /// The workers have already stopped: the mount is gone.
    #[error("the session has ended")]
    Ended,
    /// The pause signal could not be installed or sent.
    #[error("{0}: {1}")]
    Io(&'static str, #[source] io::Error),
}

/// A session serving on background threads.
///
/// Dropping it (or calling [`unmount`](BackgroundSession::unmount)) flushes
/// dirty pages, unmounts and joins the workers. When files on the mount are
/// still open the unmount is lazy and the workers keep serving those files
/// until they are closed, so the drop waits for that: close every file of
/// the mount (in this process too) before dropping the session.
///
/// To hand the connection to another server (a new binary) without
/// unmounting: [`pause`](BackgroundSession::pause), give the successor
/// [`handover`](BackgroundSession::handover) and the filesystem's state,
/// then [`leave`](BackgroundSession::leave) once it serves, or
/// [`resume`](BackgroundSession::resume) if it failed.
pub struct BackgroundSession {
    mount: Arc<Mount>,
    stats: Arc<Stats>,
    workers: Vec<JoinHandle<()>>,
    set: Arc<WorkerSet>,
    serving: Option<Box<dyn Serving>>,
    paused: bool,
    signals: Option<StoppableThread>,
    stats_server: Option<StoppableThread>,
    /// Makes the statistics server again after a pause (the successor
    /// binds the same name meanwhile).
    make_stats_server: Box<dyn Fn() -> Option<StoppableThread> + Send>,
}

impl BackgroundSession {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        mount: Arc<Mount>,
        stats: Arc<Stats>,
        workers: Vec<JoinHandle<()>>,
        set: Arc<WorkerSet>,
        serving: Box<dyn Serving>,
        signals: Option<StoppableThread>,
        make_stats_server: Box<dyn Fn() -> Option<StoppableThread> + Send>,
    ) -> BackgroundSession {
        BackgroundSession {
            mount,
            stats,
            workers,
            set,
            serving: Some(serving),
            paused: false,
            signals,
            stats_server: make_stats_server(),
            make_stats_server,
        }
    }

    /// Where the filesystem is mounted.
    pub fn mountpoint(&self) -> &Path {
        self.mount.mountpoint()
    }

    /// The mount's unique, never-reused id (`STATX_MNT_ID_UNIQUE`).
    pub fn mount_id(&self) -> u64 {
        self.mount.unique_id()
    }

    /// The session's statistics.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Readable once every worker has stopped: the filesystem was
    /// unmounted or its connection aborted (or the session is paused).
    /// Poll it beside other descriptors; then call
    /// [`join`](BackgroundSession::join), which returns at once.
    pub fn ended_fd(&self) -> BorrowedFd<'_> {
        self.set.ended.as_fd()
    }

    /// Whether [`pause`](BackgroundSession::pause) stopped the workers
    /// (and nothing resumed them).
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Flushes dirty pages, unmounts, and waits for the workers to stop.
    pub fn unmount(mut self) -> io::Result<()> {
        let r = self.mount.unmount(true);
        self.finish();
        r
    }

    /// Waits until the filesystem is unmounted by someone else (umount,
    /// fusermount3 -u, a signal with `handle_signals`).
    pub fn join(mut self) {
        self.finish();
    }

    /// Stops taking requests without unmounting: every /dev/fuse worker
    /// finishes the request it serves and stops before reading another;
    /// what arrives meanwhile waits in the kernel's queue. Returns once
    /// all have stopped. The statistics socket closes too (a successor
    /// binds the same name).
    ///
    /// Refused, with the session still serving, over io_uring, under an
    /// auto_unmount fusermount3, and while deferred requests are out (a
    /// pause then would strand their answers): see [`PauseError`].
    pub fn pause(&mut self) -> Result<(), PauseError> {
        let Some(serving) = &self.serving else {
            return Err(PauseError::Ended);
        };
        if self.paused {
            return Ok(());
        }
        if serving.uring() {
            return Err(PauseError::Uring);
        }
        if self.mount.watched_by_fusermount() {
            return Err(PauseError::AutoUnmount);
        }
        let pending = serving.deferred_outstanding();
        if pending > 0 {
            return Err(PauseError::Deferred(pending));
        }
        if self.workers.is_empty()
            || sys::poll_readable(&[self.ended_fd()], Some(Duration::ZERO)).is_ok_and(|r| r[0] != 0)
        {
            return Err(PauseError::Ended);
        }
        sys::install_pause_handler()
            .map_err(|e| PauseError::Io("installing SIGURG's handler", e))?;
        serving.stopping().store(true, Ordering::Release);
        // Each worker either sees the flag after its current request or is
        // in read(2), which the signal ends with EINTR.
        loop {
            for w in self.workers.iter().filter(|w| !w.is_finished()) {
                // ESRCH: it returned between the check and the kill.
                if let Err(e) = sys::signal_pause(w) {
                    if e.raw_os_error() != Some(libc::ESRCH) {
                        return Err(PauseError::Io("signalling a worker", e));
                    }
                }
            }
            match sys::poll_readable(&[self.set.ended.as_fd()], Some(RESIGNAL_EVERY)) {
                Ok(r) if r[0] != 0 => break,
                Ok(_) => {}
                Err(e) => return Err(PauseError::Io("waiting for the workers", e)),
            }
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        self.paused = true;
        self.stats_server.take();
        // A request served just before the flag took effect may have been
        // deferred.
        let pending = serving.deferred_outstanding();
        if pending > 0 {
            if let Err(e) = self.resume() {
                tracing::error!("cannot resume after a refused pause: {e}");
            }
            return Err(PauseError::Deferred(pending));
        }
        Ok(())
    }

    /// Serves again after a [`pause`](BackgroundSession::pause) (the
    /// successor failed or refused).
    pub fn resume(&mut self) -> Result<(), SessionError> {
        let Some(serving) = &self.serving else {
            return Ok(());
        };
        if !self.paused {
            return Ok(());
        }
        sys::eventfd_drain(self.set.ended.as_fd())
            .map_err(|e| SessionError::Io("resetting the workers' eventfd", e))?;
        serving.stopping().store(false, Ordering::Release);
        self.workers = serving.start_dev_workers(self.set.clone())?;
        self.paused = false;
        self.stats_server = (self.make_stats_server)();
        Ok(())
    }

    /// What a successor needs to take the paused connection over
    /// ([`Session::resume`](crate::Session::resume)): a duplicate of the
    /// /dev/fuse fd, the mount, what INIT agreed, the statistics so far.
    /// The session stays paused and can still [`resume`]; send the
    /// handover to the successor (the fd with SCM_RIGHTS), then
    /// [`leave`] once it serves.
    ///
    /// [`resume`]: BackgroundSession::resume
    /// [`leave`]: BackgroundSession::leave
    pub fn handover(&self) -> io::Result<Handover> {
        let Some(serving) = self.serving.as_ref().filter(|_| self.paused) else {
            return Err(io::Error::other("hand over a paused session only"));
        };
        Ok(Handover {
            dev: serving.dev().try_clone()?,
            mountpoint: self.mount.mountpoint().to_path_buf(),
            mount_id: self.mount.unique_id(),
            negotiated: serving.negotiated(),
            uptime: self.stats.uptime(),
            stats: self.stats.snapshot(),
        })
    }

    /// Ends this paused session without unmounting and without the
    /// filesystem's `destroy`: the successor serves the mount now.
    pub fn leave(mut self) {
        self.signals.take();
        self.serving.take();
        self.mount.release();
    }

    fn finish(&mut self) {
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(serving) = self.serving.take() {
            serving.destroy();
        }
        self.signals.take();
    }
}

impl Drop for BackgroundSession {
    fn drop(&mut self) {
        if self.serving.is_none() {
            return;
        }
        if self.paused {
            // Paused and dropped without leave or resume: serve the unmount's
            // flush, then end as usual.
            if let Err(e) = self.resume() {
                tracing::error!("cannot resume a dropped paused session: {e}");
            }
        }
        if !self.workers.is_empty() {
            if let Err(e) = self.mount.unmount(true) {
                tracing::error!(
                    "unmounting {} failed: {e}",
                    self.mount.mountpoint().display()
                );
            }
        }
        self.finish();
    }
}
