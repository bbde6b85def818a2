//! Crash survival (`--supervise`): a small supervisor process holds the
//! mount's /dev/fuse fd and the server's crash journal, and starts a new
//! server when the one serving dies.
//!
//! Why it works: the kernel keeps a FUSE connection while any fd of it is
//! open, so while the supervisor holds one, a dead server's mount does not
//! answer ENOTCONN; new requests wait in the kernel's queue. Every worker
//! of a supervised server reads on a clone of its own
//! ([`fastfuse::Config::clone_every_fd`]), so when the server dies the
//! kernel releases those clones and `fuse_dev_release` ends each request
//! they had read, and not answered, with ECONNABORTED: the application
//! sees that error once for each such request. The new server rebuilds
//! the node ids and open files from the journal
//! ([`fastfuse_passthrough::Journal`], a memfd the supervisor keeps) and
//! resumes the connection without a new INIT.
//!
//! The steps, supervisor (P) and server (S), over a [`Channel`]:
//! 1. P starts S with one end of the channel (`FASTFUSE_SUPERVISED_FD`)
//!    and says [`Msg::Mount`]; S mounts, journaling, and answers
//!    [`Msg::Serving`] with a duplicate of the /dev/fuse fd and the
//!    journal's memfd. P then reports readiness.
//! 2. P waits for S to exit. An exit with status 0 is the end of the mount
//!    (S unmounted it); P exits too. Otherwise, while the connection
//!    lives, P starts a new S and says [`Msg::Resume`] with both
//!    descriptors; S recovers and answers [`Msg::Serving`].
//! 3. A death after [`CRASH_LOOP_RESTARTS`] restarts within
//!    [`CRASH_LOOP_WINDOW`]: P gives up, detaches its own mount and exits
//!    with an error, rather than restart a server that cannot serve.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fastfuse::stats::{HandoverRecord, StatsSnapshot};
use fastfuse::{BackgroundSession, Handover, Negotiated, Session};
use fastfuse_passthrough::{Journal, PassthroughFs};
use serde::{Deserialize, Serialize};

use crate::channel::{self, Channel};
use crate::control::Listener;
use crate::daemon::Readiness;

/// Names the server's end of the supervisor's channel.
pub const SUPERVISED_FD: &str = "FASTFUSE_SUPERVISED_FD";

/// How long the supervisor waits for a server to mount or resume (a cold
/// binary, a large journal).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Restarts allowed within [`CRASH_LOOP_WINDOW`]: a death after that many
/// makes the supervisor give up.
pub const CRASH_LOOP_RESTARTS: usize = 5;

/// See [`CRASH_LOOP_RESTARTS`].
pub const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(60);

/// What the supervisor and its server say to each other.
#[derive(Debug, Serialize, Deserialize)]
enum Msg {
    /// P → S: mount afresh, journaling.
    Mount,
    /// P → S: the last server died; resume its mount. A blob with the
    /// /dev/fuse fd and the journal's memfd follows.
    Resume {
        mountpoint: PathBuf,
        mount_id: u64,
        negotiated: Negotiated,
        /// The mount's uptime and its restarts so far.
        stats: StatsSnapshot,
        /// CLOCK_MONOTONIC of the death, in ns: the same clock in both
        /// processes, so S can tell how long the mount went unserved.
        died_at_ns: u64,
    },
    /// S → P: S serves. After a [`Msg::Mount`], a blob with the /dev/fuse
    /// fd and the journal's memfd follows.
    Serving {
        pid: u32,
        mountpoint: PathBuf,
        mount_id: u64,
        negotiated: Negotiated,
        /// After a [`Msg::Resume`]: how long no server took requests.
        pause_ms: Option<f64>,
    },
    /// S → P: S could not serve, and why.
    Failed { why: String },
}

fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// What the supervisor keeps of the mount.
struct Kept {
    mountpoint: PathBuf,
    mount_id: u64,
    negotiated: Negotiated,
    dev: OwnedFd,
    journal: OwnedFd,
    mounted_at: Instant,
    restarts: Vec<HandoverRecord>,
}

/// The supervisor: starts the server, reports readiness once it serves,
/// and restarts it whenever it dies while the mount lives. Returns when
/// the mount has ended (the server exited 0).
pub fn supervise(readiness: &mut Readiness, pid_file: Option<&Path>) -> anyhow::Result<()> {
    let signals = Signals::forward()?;
    let exe = std::env::current_exe().context("finding this program")?;
    let (mut child, kept) = match first_server(&exe) {
        Ok(started) => started,
        Err(e) => {
            readiness.failed(&e);
            return Err(e);
        }
    };
    if let Some(path) = pid_file {
        crate::daemon::write_pid_file(path)?;
    }
    readiness.ready();
    tracing::info!(
        server = child.id(),
        "supervising {}",
        kept.mountpoint.display()
    );
    let mut kept = kept;
    let mut recent: Vec<Instant> = Vec::new();
    loop {
        signals.serving(child.id());
        // A signal that came while no server was named (before the first
        // served, or during a restart). Both sides store, then load, with
        // SeqCst: at least one of them sees the other, so the server is
        // told at least once.
        if signals.stopping() {
            signals.forward_to(child.id());
        }
        let status = child.wait().context("waiting for the server")?;
        let died_at_ns = monotonic_ns();
        signals.serving(0);
        if status.success() {
            tracing::info!("the server ended the mount; exiting");
            return Ok(());
        }
        if signals.stopping() {
            bail!("the server, told to stop, exited with {status}");
        }
        check_alive(&kept, status)?;
        child = loop {
            recent.retain(|t| t.elapsed() < CRASH_LOOP_WINDOW);
            if recent.len() >= CRASH_LOOP_RESTARTS {
                detach(&kept);
                bail!(
                    "{} restarts within {} s: giving up on {}",
                    recent.len(),
                    CRASH_LOOP_WINDOW.as_secs(),
                    kept.mountpoint.display()
                );
            }
            recent.push(Instant::now());
            tracing::warn!("the server died ({status}); starting another");
            match restart(&exe, &mut kept, died_at_ns) {
                Ok(child) => break child,
                Err(e) => {
                    tracing::error!("restarting the server failed: {e:#}");
                    check_alive(&kept, status)?;
                }
            }
        };
    }
}

/// Whether a restart can help: the connection must live and the mount
/// must still be ours. Otherwise the mount is detached (when it is still
/// there) and the error says why.
fn check_alive(kept: &Kept, status: ExitStatus) -> anyhow::Result<()> {
    let mounted = fastfuse::mount_id(&kept.mountpoint).is_ok_and(|id| id == kept.mount_id);
    if !mounted {
        bail!(
            "the server exited ({status}) and {} is no longer mounted",
            kept.mountpoint.display()
        );
    }
    // /dev/fuse polls EPOLLERR once the connection is aborted (an abort
    // through /sys/fs/fuse/connections, a request timeout).
    let mut fds = [rustix::event::PollFd::new(
        &kept.dev,
        rustix::event::PollFlags::IN,
    )];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let aborted = rustix::event::poll(&mut fds, Some(&zero)).is_ok()
        && fds[0].revents().contains(rustix::event::PollFlags::ERR);
    if aborted {
        detach(kept);
        bail!(
            "the server exited ({status}) and the connection of {} was aborted",
            kept.mountpoint.display()
        );
    }
    Ok(())
}

/// Detaches the supervised mount, if it is still the one at its path.
fn detach(kept: &Kept) {
    if fastfuse::mount_id(&kept.mountpoint).is_ok_and(|id| id == kept.mount_id) {
        if let Err(e) =
            rustix::mount::unmount(&kept.mountpoint, rustix::mount::UnmountFlags::DETACH)
        {
            tracing::warn!("detaching {} failed: {e}", kept.mountpoint.display());
        }
    }
}

/// Starts a server with this process's own command line and the channel.
fn spawn_server(exe: &Path) -> anyhow::Result<(Child, Channel)> {
    let (chan, theirs) = channel::pair(START_TIMEOUT)?;
    rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty())
        .context("passing the supervisor's socket")?;
    let child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(SUPERVISED_FD, theirs.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    drop(theirs);
    Ok((child, chan))
}

/// Ends a server that failed to start: it may be stuck, so by SIGKILL.
fn end(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn first_server(exe: &Path) -> anyhow::Result<(Child, Kept)> {
    let (mut child, chan) = spawn_server(exe)?;
    let started = (|| {
        chan.send(&Msg::Mount)?;
        let msg = chan
            .recv::<Msg>()
            .context("waiting for the server to mount")?;
        let (mountpoint, mount_id, negotiated) = match msg {
            Msg::Serving {
                mountpoint,
                mount_id,
                negotiated,
                ..
            } => (mountpoint, mount_id, negotiated),
            Msg::Failed { why } => bail!("{why}"),
            other => bail!("the server said {other:?} where it should serve"),
        };
        let (_, fds) = chan.recv_blob()?;
        let [dev, journal]: [OwnedFd; 2] = fds
            .try_into()
            .map_err(|_| anyhow::anyhow!("the server sent the wrong descriptors"))?;
        Ok(Kept {
            mountpoint,
            mount_id,
            negotiated,
            dev,
            journal,
            mounted_at: Instant::now(),
            restarts: Vec::new(),
        })
    })();
    match started {
        Ok(kept) => Ok((child, kept)),
        Err(e) => {
            // A server that mounted and then failed leaves nothing behind:
            // its mount ends with its last descriptor, which it held alone.
            end(&mut child);
            Err(e)
        }
    }
}

fn restart(exe: &Path, kept: &mut Kept, died_at_ns: u64) -> anyhow::Result<Child> {
    let (mut child, chan) = spawn_server(exe)?;
    let resumed = (|| {
        chan.send(&Msg::Resume {
            mountpoint: kept.mountpoint.clone(),
            mount_id: kept.mount_id,
            negotiated: kept.negotiated,
            stats: StatsSnapshot {
                uptime_secs: kept.mounted_at.elapsed().as_secs_f64(),
                handovers: kept.restarts.clone(),
                ..Default::default()
            },
            died_at_ns,
        })?;
        chan.send_blob(&[], &[kept.dev.as_fd(), kept.journal.as_fd()])?;
        match chan
            .recv::<Msg>()
            .context("waiting for the server to resume")?
        {
            Msg::Serving { pid, pause_ms, .. } => Ok((pid, pause_ms.unwrap_or_default())),
            Msg::Failed { why } => bail!("{why}"),
            other => bail!("the server said {other:?} where it should serve"),
        }
    })();
    match resumed {
        Ok((pid, pause_ms)) => {
            tracing::info!(pid, pause_ms, "a new server serves");
            kept.restarts.push(HandoverRecord {
                kind: "restart".into(),
                at_uptime_secs: kept.mounted_at.elapsed().as_secs_f64(),
                pause_ms,
            });
            Ok(child)
        }
        Err(e) => {
            end(&mut child);
            Err(e)
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP, taken by a thread of their own and passed
/// on to the server, which unmounts (after flushing) and exits 0.
struct Signals {
    server: Arc<AtomicI32>,
    stopping: Arc<AtomicBool>,
}

impl Signals {
    fn forward() -> anyhow::Result<Signals> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        // Handlers, not a mask: a server started by exec gets the default
        // dispositions back.
        let mut incoming = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
            .context("taking shutdown signals")?;
        let signals = Signals {
            server: Arc::new(AtomicI32::new(0)),
            stopping: Arc::new(AtomicBool::new(false)),
        };
        let (server, stopping) = (signals.server.clone(), signals.stopping.clone());
        std::thread::Builder::new()
            .name("fastfuse-signals".into())
            .spawn(move || {
                for sig in incoming.forever() {
                    stopping.store(true, Ordering::SeqCst);
                    let pid = server.load(Ordering::SeqCst);
                    tracing::info!(sig, server = pid, "passing the signal on to the server");
                    send(pid, sig);
                }
            })
            .context("starting the signal thread")?;
        Ok(signals)
    }

    /// Which server to pass signals to (0: none, between servers). Set to
    /// 0 as soon as `wait` returns, so that a reaped pid is never
    /// signalled.
    fn serving(&self, pid: u32) {
        self.server.store(pid as i32, Ordering::SeqCst);
    }

    /// Whether a shutdown signal came.
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// A shutdown signal came between servers: the new one gets SIGTERM.
    fn forward_to(&self, pid: u32) {
        send(pid as i32, signal_hook::consts::SIGTERM);
    }
}

/// Sends `sig` to our child `pid` (nothing for 0).
fn send(pid: i32, sig: i32) {
    let (Some(pid), Some(sig)) = (
        rustix::process::Pid::from_raw(pid),
        rustix::process::Signal::from_named_raw(sig),
    ) else {
        return;
    };
    if let Err(e) = rustix::process::kill_process(pid, sig) {
        tracing::warn!("signalling the server (pid {}): {e}", pid.as_raw_nonzero());
    }
}

/// A mount made, and the filesystem it serves.
pub type Mounted = (Session<Arc<PassthroughFs>>, Arc<PassthroughFs>);

/// What a supervised server needs of its own command line.
pub struct Server<'a> {
    /// The source directory.
    pub source: &'a Path,
    /// Its passthrough options.
    pub options: fastfuse_passthrough::Options,
    /// The engine configuration (every worker on a clone of its own).
    pub config: fastfuse::Config,
    /// Mounts afresh with this journal (the first server).
    pub mount: &'a dyn Fn(Journal) -> anyhow::Result<Mounted>,
}

/// The server's side: mounts or resumes as the supervisor at the other end
/// of the inherited channel `fd` says, and tells it once it serves.
pub fn serve(
    fd: OwnedFd,
    me: Server<'_>,
) -> anyhow::Result<(BackgroundSession, Arc<PassthroughFs>, Listener)> {
    let chan = Channel::new(fd, START_TIMEOUT);
    let started = match chan.recv::<Msg>()? {
        Msg::Mount => mount(&me),
        Msg::Resume {
            mountpoint,
            mount_id,
            negotiated,
            stats,
            died_at_ns,
        } => {
            let (_, fds) = chan.recv_blob()?;
            resume(
                &me, fds, mountpoint, mount_id, negotiated, stats, died_at_ns,
            )
        }
        other => bail!("the supervisor said {other:?}"),
    };
    let started = match started {
        Ok(s) => s,
        Err(e) => {
            let _ = chan.send(&Msg::Failed {
                why: format!("{e:#}"),
            });
            return Err(e);
        }
    };
    let listener = Listener::bind(started.bg.mount_id());
    let serving = Msg::Serving {
        pid: std::process::id(),
        mountpoint: started.bg.mountpoint().to_path_buf(),
        mount_id: started.bg.mount_id(),
        negotiated: started.negotiated,
        pause_ms: started.pause.map(|p| p.as_secs_f64() * 1e3),
    };
    let told = chan
        .send(&serving)
        .and_then(|()| match &started.for_supervisor {
            Some([dev, journal]) => chan.send_blob(&[], &[dev.as_fd(), journal.as_fd()]),
            None => Ok(()),
        });
    if let Err(e) = told {
        // Without the supervisor's copy the mount cannot outlive this
        // process; it serves on all the same.
        tracing::error!("the supervisor cannot be told that this server serves: {e:#}");
    }
    Ok((started.bg, started.fs, listener))
}

/// A server that serves, and what the supervisor is told of it.
struct Started {
    bg: BackgroundSession,
    fs: Arc<PassthroughFs>,
    negotiated: Negotiated,
    /// After a restart: how long no server took requests.
    pause: Option<Duration>,
    /// After the first mount: the /dev/fuse fd and the journal's memfd.
    for_supervisor: Option<[OwnedFd; 2]>,
}

fn mount(me: &Server<'_>) -> anyhow::Result<Started> {
    let journal = Journal::create().context("creating the crash journal")?;
    let journal_fd = journal
        .fd()
        .try_clone_to_owned()
        .context("keeping the crash journal's descriptor")?;
    let (session, fs) = (me.mount)(journal)?;
    let bg = session.spawn().context("serving")?;
    let standby = bg.standby().context("the connection for the supervisor")?;
    Ok(Started {
        bg,
        fs,
        negotiated: standby.negotiated,
        pause: None,
        for_supervisor: Some([standby.dev, journal_fd]),
    })
}

fn resume(
    me: &Server<'_>,
    fds: Vec<OwnedFd>,
    mountpoint: PathBuf,
    mount_id: u64,
    negotiated: Negotiated,
    stats: StatsSnapshot,
    died_at_ns: u64,
) -> anyhow::Result<Started> {
    let [dev, journal]: [OwnedFd; 2] = fds
        .try_into()
        .map_err(|_| anyhow::anyhow!("the supervisor sent the wrong descriptors"))?;
    let journal = Journal::from_fd(journal).context("the crash journal")?;
    let begun = Instant::now();
    let (fs, recovery) = PassthroughFs::recover(me.source, me.options, journal)
        .with_context(|| format!("recovering over {}", me.source.display()))?;
    tracing::info!(
        ?recovery,
        took_ms = begun.elapsed().as_secs_f64() * 1e3,
        "recovered the journal"
    );
    let fs = Arc::new(fs);
    let handover = Handover {
        dev,
        mountpoint,
        mount_id,
        negotiated,
        stats,
        rings: None,
    };
    let session =
        Session::resume(fs.clone(), handover, me.config.clone()).context("resuming the session")?;
    let stats = session.stats();
    let bg = session.spawn().context("serving")?;
    let pause = Duration::from_nanos(monotonic_ns().saturating_sub(died_at_ns));
    stats.record_handover("restart", pause);
    Ok(Started {
        bg,
        fs,
        negotiated,
        pause: Some(pause),
        for_supervisor: None,
    })
}
