//! A background thread that sleeps in poll(2) and stops at once when
//! dropped: it polls an eventfd beside the descriptors it waits on, and the
//! drop writes that eventfd and joins it. No timed wait on the way out.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::sys;

/// The eventfd a [`StoppableThread`]'s body polls: readable once it must
/// return.
pub(crate) struct StopFd(Arc<OwnedFd>);

impl StopFd {
    /// The descriptor to poll beside the body's own.
    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// A thread whose body returns once its [`StopFd`] is readable; dropping
/// it makes it so and joins the thread.
pub(crate) struct StoppableThread {
    stop: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl StoppableThread {
    /// Spawns `body` on a thread named `name`.
    pub(crate) fn spawn(
        name: &str,
        body: impl FnOnce(StopFd) + Send + 'static,
    ) -> io::Result<StoppableThread> {
        let stop = Arc::new(sys::eventfd()?);
        let theirs = StopFd(stop.clone());
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(theirs))?;
        Ok(StoppableThread {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for StoppableThread {
    fn drop(&mut self) {
        if let Err(e) = sys::eventfd_signal(self.stop.as_fd()) {
            // Joining could then wait forever: leave the thread be.
            tracing::warn!("cannot stop a background thread: {e}");
            self.thread.take();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
