//! Running in the background: the command re-executes itself in the
//! foreground as a detached child and returns once that child says the mount
//! is live (or why it failed), so that a script can use the mount on its
//! next line.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// Names the fd on which a daemonized child reports readiness.
const READY_FD: &str = "FASTFUSE_READY_FD";

/// Starts this program again with `--foreground` added, detached from the
/// terminal, and waits for its report. `log` receives its stderr.
pub fn spawn_and_wait(log: Option<&std::path::Path>) -> anyhow::Result<()> {
    let (mut ours, theirs) = UnixStream::pair().context("creating the readiness socket")?;
    rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty())
        .context("passing the readiness socket")?;
    let stderr = match log {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening log file {}", path.display()))?,
        ),
        None => Stdio::null(),
    };
    let exe = std::env::current_exe().context("finding this program")?;
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .arg("--foreground")
        .env(READY_FD, theirs.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .context("starting the daemon")?;
    drop(theirs);
    let mut report = String::new();
    ours.read_to_string(&mut report)
        .context("waiting for the daemon")?;
    match report.strip_prefix("ok") {
        Some(_) => Ok(()),
        None => {
            let status = child.wait()?;
            if report.is_empty() {
                bail!("the daemon exited ({status}) before mounting");
            }
            bail!("{}", report.trim_end())
        }
    }
}

/// The readiness channel of a daemonized child, if this process is one.
pub struct Readiness(Option<UnixStream>);

impl Readiness {
    /// Takes the channel named in the environment. The variable is
    /// removed, so that it is taken once and no child sees it; the fd is
    /// adopted only if it is an inherited socket (see
    /// [`fastfuse::adopt_inherited_socket`]), and otherwise ignored.
    pub fn from_env() -> Readiness {
        match inherited_socket(READY_FD) {
            Ok(fd) => Readiness(fd.map(UnixStream::from)),
            Err(e) => {
                tracing::warn!("ignoring {READY_FD}: {e:#}");
                Readiness(None)
            }
        }
    }

    /// Reports success: the parent exits 0.
    pub fn ready(&mut self) {
        if let Some(mut s) = self.0.take() {
            let _ = s.write_all(b"ok\n");
        }
    }

    /// Reports a failure: the parent prints it and exits 1.
    pub fn failed(&mut self, err: &anyhow::Error) {
        if let Some(mut s) = self.0.take() {
            let _ = write!(s, "{err:#}");
        }
    }
}

/// The socket a parent passed by its number in the environment variable
/// `var`, if that is set. Taken once: the variable is removed, so that no
/// child sees it; and only if the number is an inherited socket (see
/// [`fastfuse::adopt_inherited_socket`]). Call it before any thread
/// starts (tracing's subscriber starts none), so that no one reads the
/// environment meanwhile.
pub fn inherited_socket(var: &str) -> anyhow::Result<Option<OwnedFd>> {
    let Some(value) = std::env::var_os(var) else {
        return Ok(None);
    };
    std::env::remove_var(var);
    let fd: RawFd = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{var}={value:?} is not a descriptor number"))?;
    let sock = fastfuse::adopt_inherited_socket(fd).with_context(|| format!("{var}={value:?}"))?;
    Ok(Some(sock))
}

/// Writes this process's pid to `path` (`--pid-file`).
pub fn write_pid_file(path: &std::path::Path) -> anyhow::Result<()> {
    std::fs::write(path, format!("{}\n", std::process::id()))
        .with_context(|| format!("writing pid file {}", path.display()))
}
