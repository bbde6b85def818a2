//! Live upgrade: a running daemon starts a new binary and hands it the
//! mount (its /dev/fuse connection, the filesystem's node ids, open files
//! and locks, the statistics) without unmounting. The kernel queues what
//! arrives meanwhile; nothing is answered twice or lost.
//!
//! The steps, old daemon (O) and successor (S), over a [`Channel`]:
//! 1. O starts S with one end of the channel (`FASTFUSE_HANDOVER_FD`) and
//!    offers its state format's version; S accepts it or refuses (O then
//!    goes on serving as if nothing happened).
//! 2. O pauses: every worker finishes the request it serves and stops
//!    reading. O copies its state out (descriptors duplicated, nothing
//!    torn down) and sends it with the /dev/fuse fd.
//! 3. S rebuilds the filesystem, resumes the session and says it serves;
//!    O then leaves without unmounting and exits. If S fails, says
//!    nothing in time, or dies, O kills it and serves again.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use fastfuse::stats::StatsSnapshot;
use fastfuse::{BackgroundSession, Handover, Negotiated, Session};
use fastfuse_passthrough::{PassthroughFs, SavedState, OLDEST_STATE_VERSION, STATE_VERSION};
use serde::{Deserialize, Serialize};

use crate::channel::{self, Channel};
use crate::control::Listener;

/// Names the successor's end of the hand-over channel.
pub const HANDOVER_FD: &str = "FASTFUSE_HANDOVER_FD";

/// For tests of a refused upgrade: the state version a successor claims
/// to read instead of its own.
const CLAIMED_VERSION: &str = "FASTFUSE_STATE_VERSION";

/// For tests of a failed take-over: a successor with this set fails once
/// it has the state, as one that cannot serve would.
const FAIL_TAKE_OVER: &str = "FASTFUSE_FAIL_TAKE_OVER";

/// How long either side waits for the other at one step. Generous: the
/// successor's first step includes exec'ing a binary that may be cold.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// What the two daemons say to each other.
#[derive(Debug, Serialize, Deserialize)]
enum Msg {
    /// O → S: the state format O will send.
    Offer { state_version: u32, pid: u32 },
    /// S → O: S reads it.
    Accept,
    /// S → O: S cannot take over, and why.
    Refuse { why: String },
    /// O → S: O has paused; the state blob follows (the /dev/fuse fd
    /// first among its descriptors).
    Take(Taken),
    /// O → S: O gave up before sending the state; S exits.
    Abort { why: String },
    /// S → O: S serves the mount.
    Serving { pid: u32, pause_ms: f64 },
    /// S → O: S could not take over, and why.
    Failed { why: String },
}

/// The engine's [`Handover`] without its descriptor, and when O paused.
#[derive(Debug, Serialize, Deserialize)]
struct Taken {
    mountpoint: PathBuf,
    mount_id: u64,
    negotiated: Negotiated,
    stats: StatsSnapshot,
    /// CLOCK_MONOTONIC of O's pause, in ns: the same clock in both
    /// processes, so S can tell how long the mount went unserved.
    paused_at_ns: u64,
    /// Whether the io_uring ring memory follows the /dev/fuse fd among
    /// the descriptors.
    rings: bool,
}

/// A successful upgrade, as the client is told.
#[derive(Debug, Serialize, Deserialize)]
pub struct Upgraded {
    /// The daemon that served until now.
    pub old_pid: u32,
    /// The daemon that serves now.
    pub new_pid: u32,
    /// How long no daemon took requests.
    pub pause_ms: f64,
}

fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The old daemon's side: hands the paused session over to `binary`,
/// started with this daemon's own command line. On success the session
/// is left (not unmounted) and the caller exits; on failure it serves
/// again and the error says why. `release_names` runs just before the
/// state goes out, so that the successor can bind the control socket's
/// name (the caller binds it again if this fails).
pub fn hand_over(
    bg: &mut BackgroundSession,
    fs: &Arc<PassthroughFs>,
    binary: &Path,
    release_names: &mut dyn FnMut(),
) -> anyhow::Result<Upgraded> {
    let (chan, theirs) = channel::pair(STEP_TIMEOUT)?;
    rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty())
        .context("passing the hand-over socket")?;
    let mut child = Command::new(binary)
        .args(std::env::args_os().skip(1))
        .env(HANDOVER_FD, theirs.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    drop(theirs);
    match offer(bg, fs, &chan, release_names) {
        Ok(up) => {
            // S serves and lives on alone: reaped by whoever adopts it.
            drop(child);
            Ok(up)
        }
        Err(e) => {
            end_child(&mut child);
            bg.resume();
            Err(e)
        }
    }
}

/// Ends a successor that failed: it may be stuck, so by SIGKILL, then
/// reaped.
fn end_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn offer(
    bg: &mut BackgroundSession,
    fs: &Arc<PassthroughFs>,
    chan: &Channel,
    release_names: &mut dyn FnMut(),
) -> anyhow::Result<Upgraded> {
    let pid = std::process::id();
    chan.send(&Msg::Offer {
        state_version: STATE_VERSION,
        pid,
    })?;
    match chan
        .recv::<Msg>()
        .context("waiting for the new daemon to start")?
    {
        Msg::Accept => {}
        Msg::Refuse { why } => bail!("the new binary refused the hand-over: {why}"),
        other => bail!("the new daemon said {other:?} where it should accept"),
    }
    if let Err(e) = bg.pause() {
        let _ = chan.send(&Msg::Abort { why: e.to_string() });
        return Err(anyhow!(e).context("pausing the mount"));
    }
    let stopped_ns = monotonic_ns();
    let paused_at_ns = stopped_ns - bg.paused_for().unwrap_or_default().as_nanos() as u64;
    let saved = fs.save();
    let (state, fds) = match saved {
        Ok(s) => s,
        Err(e) => {
            let _ = chan.send(&Msg::Abort { why: e.to_string() });
            return Err(anyhow!(e).context("copying the filesystem's state"));
        }
    };
    let saved_ns = monotonic_ns();
    let handover = bg.handover().context("the paused session's hand-over")?;
    let json = serde_json::to_vec(&state).context("encoding the state")?;
    let mut all: Vec<BorrowedFd<'_>> = Vec::with_capacity(fds.len() + 1);
    all.push(handover.dev.as_fd());
    all.extend(handover.rings.as_ref().map(|r| r.as_fd()));
    all.extend(fds.borrow());
    release_names();
    chan.send(&Msg::Take(Taken {
        mountpoint: handover.mountpoint.clone(),
        mount_id: handover.mount_id,
        negotiated: handover.negotiated,
        stats: handover.stats.clone(),
        paused_at_ns,
        rings: handover.rings.is_some(),
    }))?;
    chan.send_blob(&json, &all)?;
    let sent_ns = monotonic_ns();
    tracing::info!(
        state_bytes = json.len(),
        descriptors = all.len(),
        stop_workers_ms = (stopped_ns - paused_at_ns) as f64 / 1e6,
        save_ms = (saved_ns - stopped_ns) as f64 / 1e6,
        encode_and_send_ms = (sent_ns - saved_ns) as f64 / 1e6,
        "state sent"
    );
    match chan
        .recv::<Msg>()
        .context("waiting for the new daemon to serve")?
    {
        Msg::Serving { pid, pause_ms } => Ok(Upgraded {
            old_pid: std::process::id(),
            new_pid: pid,
            pause_ms,
        }),
        Msg::Failed { why } => bail!("the new daemon could not take over: {why}"),
        other => bail!("the new daemon said {other:?} where it should serve"),
    }
}

/// What the successor needs of its own command line.
pub struct Successor<'a> {
    /// The source directory.
    pub source: &'a Path,
    /// Its passthrough options.
    pub options: fastfuse_passthrough::Options,
    /// The engine configuration.
    pub config: fastfuse::Config,
    /// Written before the old daemon is told (so that whoever follows the
    /// daemon by it never reads the old pid after the upgrade returned).
    pub pid_file: Option<&'a Path>,
}

/// The successor's side: takes over the mount from the daemon at the
/// other end of the inherited channel `fd`. Returns the serving session,
/// its filesystem and its control socket, bound before the old daemon is
/// told (so that an upgrade right after this one finds it).
pub fn take_over(
    fd: OwnedFd,
    me: Successor<'_>,
) -> anyhow::Result<(BackgroundSession, Arc<PassthroughFs>, Listener)> {
    let chan = Channel::new(fd, STEP_TIMEOUT);
    let Msg::Offer { state_version, pid } = chan.recv::<Msg>()? else {
        bail!("the old daemon did not offer its state");
    };
    let reads = match std::env::var(CLAIMED_VERSION) {
        Ok(v) => {
            let claimed = v
                .parse()
                .with_context(|| format!("{CLAIMED_VERSION}={v:?} is not a number"))?;
            claimed..=claimed
        }
        Err(_) => OLDEST_STATE_VERSION..=STATE_VERSION,
    };
    if !reads.contains(&state_version) {
        let why = format!(
            "the running daemon (pid {pid}) writes state version {state_version}, this binary reads versions {} to {}",
            reads.start(),
            reads.end()
        );
        chan.send(&Msg::Refuse { why: why.clone() })?;
        bail!("{why}");
    }
    chan.send(&Msg::Accept)?;
    let taken = match chan.recv::<Msg>()? {
        Msg::Take(taken) => taken,
        Msg::Abort { why } => bail!("the old daemon gave up: {why}"),
        other => bail!("the old daemon said {other:?} where it should hand over"),
    };
    let (json, mut fds) = chan.recv_blob()?;
    let received_ns = monotonic_ns();
    let serving = (|| -> anyhow::Result<(BackgroundSession, Arc<PassthroughFs>, Duration)> {
        if let Some(v) = std::env::var_os(FAIL_TAKE_OVER) {
            bail!("{FAIL_TAKE_OVER}={v:?}: told to fail the take-over");
        }
        if fds.is_empty() {
            bail!("no /dev/fuse descriptor came with the state");
        }
        let dev = fds.remove(0);
        let rings = match taken.rings {
            true if fds.is_empty() => bail!("no io_uring ring memory came with the state"),
            true => Some(fds.remove(0)),
            false => None,
        };
        let state: SavedState = serde_json::from_slice(&json).context("decoding the state")?;
        let fs = PassthroughFs::restore(me.source, me.options, state, fds)
            .with_context(|| format!("restoring the state over {}", me.source.display()))?;
        let fs = Arc::new(fs);
        let handover = Handover {
            dev,
            mountpoint: taken.mountpoint,
            mount_id: taken.mount_id,
            negotiated: taken.negotiated,
            stats: taken.stats,
            rings,
        };
        let restored_ns = monotonic_ns();
        let session =
            Session::resume(fs.clone(), handover, me.config).context("resuming the session")?;
        let stats = session.stats();
        let bg = session.spawn().context("serving")?;
        let pause = Duration::from_nanos(monotonic_ns().saturating_sub(taken.paused_at_ns));
        stats.record_handover("upgrade", pause);
        tracing::info!(
            receive_ms = (received_ns.saturating_sub(taken.paused_at_ns)) as f64 / 1e6,
            restore_ms = (restored_ns - received_ns) as f64 / 1e6,
            resume_ms = (monotonic_ns() - restored_ns) as f64 / 1e6,
            "state taken over"
        );
        Ok((bg, fs, pause))
    })();
    let (bg, fs, pause) = match serving {
        Ok(s) => s,
        Err(e) => {
            let _ = chan.send(&Msg::Failed {
                why: format!("{e:#}"),
            });
            return Err(e);
        }
    };
    // From here this daemon serves the mount, whatever happens to the old
    // one: nothing may fail (a dropped session would unmount).
    if let Some(path) = me.pid_file {
        if let Err(e) = crate::daemon::write_pid_file(path) {
            tracing::warn!("{e:#}");
        }
    }
    let listener = Listener::bind(bg.mount_id());
    let pause_ms = pause.as_secs_f64() * 1e3;
    if let Err(e) = chan.send(&Msg::Serving {
        pid: std::process::id(),
        pause_ms,
    }) {
        tracing::warn!("the old daemon cannot be told that this one serves: {e:#}");
    }
    tracing::info!(
        old_pid = pid,
        pause_ms,
        "took over {} from the old daemon",
        bg.mountpoint().display()
    );
    Ok((bg, fs, listener))
}

/// `fastfuse upgrade MNT`: the command line.
#[derive(clap::Args, Debug)]
pub struct UpgradeArgs {
    /// The mountpoint of a running fastfuse daemon.
    #[arg(value_name = "MNT")]
    mountpoint: PathBuf,
    /// The binary to hand over to (default: the daemon's own executable
    /// path, which now holds whatever binary was installed there).
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
}

/// Asks the daemon serving `MNT` to upgrade, and reports how it went.
pub fn run(args: UpgradeArgs) -> anyhow::Result<()> {
    let binary = match &args.binary {
        Some(b) => {
            Some(std::fs::canonicalize(b).with_context(|| format!("the binary {}", b.display()))?)
        }
        None => None,
    };
    let up = crate::control::request_upgrade(&args.mountpoint, binary.as_deref())?;
    println!(
        "upgraded {}: pid {} -> {}, paused {:.1} ms",
        args.mountpoint.display(),
        up.old_pid,
        up.new_pid,
        up.pause_ms
    );
    Ok(())
}
