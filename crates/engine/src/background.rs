//! A session serving on background threads ([`BackgroundSession`]): wait
//! for it, unmount it, or pause it and hand its connection to another
//! server without unmounting (a live upgrade).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::gate::{Gate, Reading};
use crate::init::Negotiated;
use crate::mount::Mount;
use crate::session::Handover;
use crate::stats::Stats;
use crate::stoppable::StoppableThread;
use crate::sys;

/// How long a pause waits for workers to leave read(2) before signalling
/// those still there again: a signal sent just before a worker entered
/// the call is lost, and there is no event for "entered read".
const RESIGNAL_EVERY: Duration = Duration::from_millis(1);

/// A pause waits, with every worker still serving, until no request has
/// been in flight longer than this before it closes the gate; and if one
/// that began since holds a worker longer than [`GIVE_UP`] after, the
/// gate opens again and the pause waits for the next quiet moment.
/// Parking the others while one finishes a long request (a fallocate of
/// hundreds of MiB takes tens of ms here) would stall every caller for as
/// long.
const QUIET: Duration = Duration::from_millis(1);

/// See [`QUIET`].
const GIVE_UP: Duration = Duration::from_millis(4);

/// How long a pause tries for a quiet moment before it waits out
/// whatever is in flight.
const QUIET_WAIT: Duration = Duration::from_secs(2);

/// What a [`BackgroundSession`] needs of its typed server to pause it and
/// hand it over (the session itself does not name the filesystem's type).
pub(crate) trait Serving: Send {
    /// Deferred requests not answered yet.
    fn deferred_outstanding(&self) -> usize;
    /// What INIT agreed.
    fn negotiated(&self) -> Negotiated;
    /// The connection's /dev/fuse fd.
    fn dev(&self) -> &Arc<OwnedFd>;
    /// Whether io_uring queues serve.
    fn uring(&self) -> bool;
    /// Drains the io_uring queues and stops their threads, every entry
    /// kept for the next run; or says why they cannot be drained.
    fn drain_queues(&self) -> Result<(), String>;
    /// Serves the drained io_uring queues again, in this process.
    fn restart_queues(&self) -> io::Result<()>;
    /// Waits for the io_uring queues' threads to return.
    fn join_queues(&self);
    /// The memfd the io_uring entries live in (None over /dev/fuse).
    fn rings(&self) -> Option<BorrowedFd<'_>>;
    /// Where /dev/fuse workers park between requests while paused.
    fn gate(&self) -> &Gate;
    /// Wakes the /dev/fuse workers that stand by for the reader's role
    /// (see `transport::relay`), so that they see a closed gate.
    fn wake_standby(&self);
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
    /// The io_uring queues cannot be drained (a queue's CPU is offline or
    /// out of this process's reach), or draining failed.
    #[error("the mount is served over io_uring, and {0}")]
    Uring(String),
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
    /// For each /dev/fuse worker, the first of `workers`: whether it is in
    /// read(2), where a pause may signal it.
    readers: Vec<Arc<Reading>>,
    set: Arc<WorkerSet>,
    serving: Option<Box<dyn Serving>>,
    /// While paused: since when (the gate closed for good).
    paused_since: Option<Instant>,
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
        readers: Vec<Arc<Reading>>,
        set: Arc<WorkerSet>,
        serving: Box<dyn Serving>,
        signals: Option<StoppableThread>,
        stats_server: Option<StoppableThread>,
        make_stats_server: Box<dyn Fn() -> Option<StoppableThread> + Send>,
    ) -> BackgroundSession {
        BackgroundSession {
            mount,
            stats,
            workers,
            readers,
            set,
            serving: Some(serving),
            paused_since: None,
            signals,
            stats_server,
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
    /// unmounted or its connection aborted (paused workers park, they do
    /// not stop).
    /// Poll it beside other descriptors; then call
    /// [`join`](BackgroundSession::join), which returns at once.
    pub fn ended_fd(&self) -> BorrowedFd<'_> {
        self.set.ended.as_fd()
    }

    /// Whether [`pause`](BackgroundSession::pause) stopped the workers
    /// (and nothing resumed them).
    pub fn is_paused(&self) -> bool {
        self.paused_since.is_some()
    }

    /// How long ago the current pause told the workers to stop: since
    /// then no request has been taken (`None` unless paused).
    pub fn paused_for(&self) -> Option<Duration> {
        self.paused_since.map(|t| t.elapsed())
    }

    /// Flushes dirty pages, unmounts, and waits for the workers to stop
    /// (a paused session serves again first: the flush needs it).
    pub fn unmount(mut self) -> io::Result<()> {
        self.resume();
        let r = self.mount.unmount(true);
        self.finish();
        r
    }

    /// Waits until the filesystem is unmounted by someone else (umount,
    /// fusermount3 -u, a signal with `handle_signals`); a paused session
    /// serves again first.
    pub fn join(mut self) {
        self.resume();
        self.finish();
    }

    /// Stops taking requests without unmounting: every /dev/fuse worker
    /// finishes the request it serves and parks before reading another;
    /// what arrives meanwhile waits in the kernel's queue. Returns once
    /// all have parked. The statistics socket closes too (a successor
    /// binds the same name).
    ///
    /// The moment is chosen so that the pause is short: not while a
    /// request has been in flight for more than a millisecond, and if one
    /// that began since keeps a worker busy a few ms after the others
    /// parked, they go on and the pause waits for the next quiet moment
    /// (for up to 2 s, then it waits out what is in flight).
    ///
    /// Over io_uring the queues are drained first: every ring entry comes
    /// back from the kernel (each queue's free ones are handed a GETATTR
    /// made on its CPU) and is kept, its request not served or its reply
    /// not committed, for whoever serves next ([`handover`] hands the
    /// memory they live in over; [`resume`] serves them here). Their
    /// threads stop; requests being served are waited out.
    ///
    /// Refused, with the session still serving, under an auto_unmount
    /// fusermount3, while deferred requests are out (a pause then would
    /// strand their answers), and over io_uring when a queue's CPU is
    /// offline or out of this process's reach: see [`PauseError`].
    ///
    /// [`handover`]: BackgroundSession::handover
    /// [`resume`]: BackgroundSession::resume
    pub fn pause(&mut self) -> Result<(), PauseError> {
        let Some(serving) = &self.serving else {
            return Err(PauseError::Ended);
        };
        if self.paused_since.is_some() {
            return Ok(());
        }
        if self.mount.watched_by_fusermount() {
            return Err(PauseError::AutoUnmount);
        }
        let pending = serving.deferred_outstanding();
        if pending > 0 {
            return Err(PauseError::Deferred(pending));
        }
        if self.workers.iter().any(JoinHandle::is_finished) {
            return Err(PauseError::Ended);
        }
        let uring = serving.uring();
        if uring {
            // A drain waits out whatever is being served: begun at a quiet
            // moment, as the /dev/fuse half is (but once draining it cannot
            // let the others go on while a long request finishes).
            self.wait_for_quiet(Instant::now() + QUIET_WAIT);
        }
        let drained_at = Instant::now();
        if uring {
            serving.drain_queues().map_err(PauseError::Uring)?;
            tracing::debug!(took = ?drained_at.elapsed(), "io_uring queues drained");
        }
        let parked = self.park_workers();
        if let Err(e) = parked {
            if uring {
                self.restart_queues();
            }
            return Err(e);
        }
        if uring {
            // The queues stopped taking requests first.
            self.paused_since = Some(drained_at);
        }
        self.stats_server.take();
        // A request served just before the gate closed, or the queues
        // drained, may have been deferred.
        let pending = self
            .serving
            .as_ref()
            .map_or(0, |s| s.deferred_outstanding());
        if pending > 0 {
            self.resume();
            return Err(PauseError::Deferred(pending));
        }
        Ok(())
    }

    /// Serves the io_uring queues again after a drain.
    fn restart_queues(&self) {
        if let Some(serving) = &self.serving {
            if let Err(e) = serving.restart_queues() {
                tracing::error!("cannot serve the io_uring queues again: {e}");
            }
        }
    }

    /// The /dev/fuse half of a pause: parks every worker at a quiet
    /// moment (see [`pause`](BackgroundSession::pause)).
    fn park_workers(&mut self) -> Result<(), PauseError> {
        let Some(serving) = &self.serving else {
            return Err(PauseError::Ended);
        };
        sys::install_wake_handler()
            .map_err(|e| PauseError::Io("installing SIGURG's handler", e))?;
        let gate = serving.gate();
        let deadline = Instant::now() + QUIET_WAIT;
        loop {
            self.wait_for_quiet(deadline);
            let closed_at = Instant::now();
            gate.close();
            let patient = Instant::now() >= deadline;
            if self.park_all(gate, closed_at, patient)? {
                self.paused_since = Some(closed_at);
                break;
            }
            // A long request began in between: let the others serve while
            // it finishes.
            gate.open();
            if self.workers.iter().any(JoinHandle::is_finished) {
                return Err(PauseError::Ended);
            }
        }
        Ok(())
    }

    /// Waits, until `deadline` at most, for a moment when no request has
    /// been in flight longer than [`QUIET`]. No event says "the long
    /// request is done" (its worker goes on to the next one), so this
    /// polls, within the bound.
    fn wait_for_quiet(&self, deadline: Instant) {
        while self
            .stats
            .longest_in_flight()
            .is_some_and(|t| t > QUIET && Instant::now() < deadline)
        {
            let _ = sys::poll_readable(&[self.ended_fd()], Some(QUIET));
        }
    }

    /// With the gate closed: signals the workers out of read(2) until all
    /// have parked (true), or, unless `patient`, until one has been
    /// serving a request for [`GIVE_UP`] (false).
    fn park_all(&self, gate: &Gate, closed_at: Instant, patient: bool) -> Result<bool, PauseError> {
        loop {
            if let Some(serving) = &self.serving {
                serving.wake_standby();
            }
            // Only a worker in read(2) is signalled (see `gate`).
            for (w, reading) in self.workers.iter().zip(&self.readers) {
                // ESRCH: it returned (the connection ended).
                if let Err(e) = reading.interrupt(|| sys::signal_pause(w)) {
                    if e.raw_os_error() != Some(libc::ESRCH) {
                        return Err(PauseError::Io("signalling a worker", e));
                    }
                }
            }
            if gate.wait_parked(self.readers.len(), RESIGNAL_EVERY) {
                return Ok(true);
            }
            if self.workers.iter().any(JoinHandle::is_finished) {
                return Err(PauseError::Ended);
            }
            if !patient
                && closed_at.elapsed() > GIVE_UP
                && self.stats.longest_in_flight().is_some_and(|t| t > GIVE_UP)
            {
                return Ok(false);
            }
        }
    }

    /// Serves again after a [`pause`](BackgroundSession::pause) (the
    /// successor failed or refused): the parked workers go on.
    pub fn resume(&mut self) {
        if self.paused_since.take().is_none() {
            return;
        }
        if let Some(serving) = &self.serving {
            serving.gate().open();
            if serving.uring() {
                self.restart_queues();
            }
        }
        self.stats_server = (self.make_stats_server)();
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
        let Some(serving) = self.serving.as_ref().filter(|_| self.is_paused()) else {
            return Err(io::Error::other("hand over a paused session only"));
        };
        let rings = serving
            .rings()
            .map(|fd| fd.try_clone_to_owned())
            .transpose()?;
        Ok(Handover::of(
            serving.dev().try_clone()?,
            &self.mount,
            serving.negotiated(),
            &self.stats,
            rings,
        ))
    }

    /// What a standby (a supervisor process) holds so that the mount
    /// outlives this process: a duplicate of the /dev/fuse fd, the mount,
    /// what INIT agreed, the statistics so far, taken while serving. If
    /// this process dies, the kernel keeps the connection for the
    /// standby's fd and queues new requests; a new process resumes it with
    /// [`Session::resume`](crate::Session::resume). Serve with
    /// [`Config::clone_every_fd`](crate::Config::clone_every_fd), so that
    /// the requests this process had read end (ECONNABORTED) rather than
    /// wait forever.
    ///
    /// Not over io_uring: a request the kernel hands to an entry of a
    /// ring whose process is dying is ended without being copied
    /// (dev_uring.c, `IO_URING_F_TASK_DEAD`) and waits, with a unique no
    /// one saw, for a commit no one can make.
    pub fn standby(&self) -> io::Result<Handover> {
        let Some(serving) = self.serving.as_ref() else {
            return Err(io::Error::other("the session has ended"));
        };
        if serving.uring() {
            return Err(io::Error::other(
                "requests the kernel hands to a dying process's io_uring entries are never answered; serve through /dev/fuse to be restarted",
            ));
        }
        Ok(Handover::of(
            serving.dev().try_clone()?,
            &self.mount,
            serving.negotiated(),
            &self.stats,
            None,
        ))
    }

    /// Ends this paused session without unmounting and without the
    /// filesystem's `destroy`: the successor serves the mount now.
    pub fn leave(mut self) {
        self.signals.take();
        if let Some(serving) = self.serving.take() {
            serving.gate().leave();
            serving.join_queues();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        self.mount.release();
    }

    fn finish(&mut self) {
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(serving) = self.serving.take() {
            serving.join_queues();
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
        // Paused and dropped without leave or resume: serve the unmount's
        // flush, then end as usual.
        self.resume();
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
