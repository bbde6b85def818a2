//! The daemon's control socket: an abstract Unix socket per mount, named
//! by the mount's unique id, on which `fastfuse upgrade` asks for a live
//! upgrade; and the loop a daemon runs while it serves, waiting for that
//! or for the end of the mount.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use fastfuse::BackgroundSession;
use fastfuse_passthrough::PassthroughFs;
use rustix::event::{poll, PollFd, PollFlags};
use serde::{Deserialize, Serialize};

use crate::upgrade::{self, Upgraded};

/// How long the client waits for the daemon's answer: a hand-over waits
/// up to 30 s per step for the successor, twice.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

fn socket_name(mount_id: u64) -> String {
    format!("fastfuse-ctl-{mount_id}")
}

/// What a client asks.
#[derive(Debug, Serialize, Deserialize)]
enum Request {
    /// Hand over to this binary (None: the daemon's own executable path).
    Upgrade { binary: Option<PathBuf> },
}

/// What the daemon answers.
#[derive(Debug, Serialize, Deserialize)]
enum Answer {
    Upgraded(Upgraded),
    Error(String),
}

/// Asks the daemon serving `mountpoint` to hand over to `binary`.
pub fn request_upgrade(mountpoint: &Path, binary: Option<&Path>) -> anyhow::Result<Upgraded> {
    let id = fastfuse::mount_id(mountpoint)
        .with_context(|| format!("cannot examine {}", mountpoint.display()))?;
    let name = socket_name(id);
    let addr = SocketAddr::from_abstract_name(&name)?;
    let mut conn = UnixStream::connect_addr(&addr).with_context(|| {
        format!(
            "no fastfuse daemon answers for {} (is it a fastfuse mount?)",
            mountpoint.display()
        )
    })?;
    conn.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    let mut line = serde_json::to_vec(&Request::Upgrade {
        binary: binary.map(Path::to_path_buf),
    })?;
    line.push(b'\n');
    conn.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(conn)
        .read_line(&mut answer)
        .context("waiting for the daemon's answer")?;
    if answer.is_empty() {
        bail!("the daemon closed the connection without answering (not root or its user?)");
    }
    match serde_json::from_str(&answer).context("decoding the daemon's answer")? {
        Answer::Upgraded(up) => Ok(up),
        Answer::Error(e) => bail!("{e}"),
    }
}

/// The daemon's half: its listener, if bound.
pub struct Listener {
    name: String,
    sock: Option<UnixListener>,
}

impl Listener {
    /// Binds the control socket of the mount with unique id `mount_id`
    /// (a warning, and no live upgrade, if the name is taken).
    pub fn bind(mount_id: u64) -> Listener {
        let mut l = Listener {
            name: socket_name(mount_id),
            sock: None,
        };
        l.rebind();
        l
    }

    fn rebind(&mut self) {
        let bound =
            SocketAddr::from_abstract_name(&self.name).and_then(|a| UnixListener::bind_addr(&a));
        match bound {
            // Readiness comes from poll; a client that gave up in between
            // must not block the loop in accept.
            Ok(sock) => match sock.set_nonblocking(true) {
                Ok(()) => self.sock = Some(sock),
                Err(e) => tracing::warn!("control socket @{}: {e}; no live upgrade", self.name),
            },
            Err(e) => tracing::warn!(
                "control socket @{} unavailable ({e}); no live upgrade",
                self.name
            ),
        }
    }
}

/// Whether this daemon hands its mount over on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrades {
    /// It does (`fastfuse upgrade`).
    Allowed,
    /// It serves under a supervisor (`--supervise`), which holds the
    /// connection and the crash journal and would lose track of a
    /// successor: refused, with a message.
    Supervised,
}

/// Serves until the mount ends (then joins the session, which runs the
/// filesystem's destroy) or until it was handed over to a successor
/// (then leaves it mounted), answering on `listener`. `exe` is the
/// default binary to upgrade to.
pub fn serve(
    mut bg: BackgroundSession,
    fs: Arc<PassthroughFs>,
    mut listener: Listener,
    exe: PathBuf,
    upgrades: Upgrades,
) -> anyhow::Result<()> {
    let owner = rustix::process::geteuid();
    loop {
        let readable = {
            let ended = bg.ended_fd();
            let mut fds = vec![PollFd::new(&ended, PollFlags::IN)];
            if let Some(sock) = &listener.sock {
                fds.push(PollFd::new(sock, PollFlags::IN));
            }
            match poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e).context("waiting for the mount or a control request"),
            }
            (
                !fds[0].revents().is_empty(),
                fds.get(1).is_some_and(|f| !f.revents().is_empty()),
            )
        };
        if readable.0 {
            bg.join();
            return Ok(());
        }
        if !readable.1 {
            continue;
        }
        let Some(sock) = &listener.sock else { continue };
        let mut conn = match sock.accept() {
            Ok((conn, _)) => conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            // Out of descriptors (EMFILE) the connection stays queued and
            // accept fails at once, again and again: pause rather than
            // spin, still waking at once when the mount ends.
            Err(_) => {
                let ended = bg.ended_fd();
                let _ = poll(
                    &mut [PollFd::new(&ended, PollFlags::IN)],
                    Some(&rustix::event::Timespec {
                        tv_sec: 0,
                        tv_nsec: 50_000_000,
                    }),
                );
                continue;
            }
        };
        if conn.set_nonblocking(false).is_err() {
            continue;
        }
        // An abstract socket has no mode: anyone may connect, so only
        // root and the daemon's own user are heard.
        match rustix::net::sockopt::socket_peercred(conn.as_fd()) {
            Ok(cred) if cred.uid.is_root() || cred.uid == owner => {}
            _ => continue,
        }
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let mut line = String::new();
        if BufReader::new(&conn).read_line(&mut line).is_err() {
            continue;
        }
        let request: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                reply(&mut conn, &Answer::Error(format!("bad request: {e}")));
                continue;
            }
        };
        let Request::Upgrade { binary } = request;
        if upgrades == Upgrades::Supervised {
            reply(
                &mut conn,
                &Answer::Error(
                    "this mount runs under --supervise: a live upgrade of a supervised mount is not supported; restart the supervisor with the new binary instead".into(),
                ),
            );
            continue;
        }
        let binary = binary.unwrap_or_else(|| exe.clone());
        tracing::info!("upgrading to {}", binary.display());
        let result = upgrade::hand_over(&mut bg, &fs, &binary, &mut || listener.sock = None);
        match result {
            Ok(up) => {
                tracing::info!(
                    new_pid = up.new_pid,
                    pause_ms = up.pause_ms,
                    "handed {} over; exiting",
                    bg.mountpoint().display()
                );
                reply(&mut conn, &Answer::Upgraded(up));
                bg.leave();
                return Ok(());
            }
            Err(e) => {
                if listener.sock.is_none() {
                    listener.rebind();
                }
                tracing::warn!("upgrade failed, serving on: {e:#}");
                reply(&mut conn, &Answer::Error(format!("{e:#}")));
            }
        }
    }
}

fn reply(conn: &mut UnixStream, answer: &Answer) {
    if let Ok(mut line) = serde_json::to_vec(answer) {
        line.push(b'\n');
        let _ = conn.write_all(&line);
    }
}
