//! The configurations: the raw source (the limit), fastfuse in its modes,
//! and peers (other FUSE servers), and how each is mounted on a fresh
//! tmpfs source and taken down again.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::mounts::{self, Scratch, ServerProcess};

/// What kind of configuration, for the report's columns and checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// The raw source filesystem: the physical limit.
    Limit,
    /// fastfuse storing data (a mode a user would run).
    Fastfuse,
    /// fastfuse in a `--bypass-rw` testbench mode: WRITE data is dropped.
    FastfuseBypass,
    /// Another FUSE server.
    Peer,
}

impl Family {
    /// The name in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Limit => "limit",
            Family::Fastfuse => "fastfuse",
            Family::FastfuseBypass => "fastfuse-bypass",
            Family::Peer => "peer",
        }
    }
}

/// How a configuration is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// Nothing: the workloads run on the source itself.
    Raw,
    /// The fastfuse binary with these arguments, in the foreground
    /// (`--foreground --pid-file FILE SRC MNT` are added).
    Fastfuse(Vec<String>),
    /// A shell command with `{src}` and `{mnt}`, run as `sh -c 'exec CMD'`.
    /// A server that stays in the foreground is our child (its pid is
    /// known); one that daemonizes is found by its mountpoint argument.
    Shell(String),
}

/// A configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSpec {
    /// The name in the table.
    pub name: String,
    /// Its kind.
    pub family: Family,
    /// How to mount it.
    pub launch: Launch,
}

impl ConfigSpec {
    /// Whether data written can be read back (not a bypass mode).
    pub fn stores_data(&self) -> bool {
        self.family != Family::FastfuseBypass
    }

    /// Whether it is served over io_uring (the bench must turn the
    /// kernel's `enable_uring` on): fastfuse with `--transport uring`, or a
    /// shell command with `io_uring` among its `-o` options (libfuse's).
    pub fn uses_io_uring(&self) -> bool {
        match &self.launch {
            Launch::Raw => false,
            Launch::Fastfuse(args) => args
                .windows(2)
                .any(|w| w[0] == "--transport" && w[1] == "uring"),
            Launch::Shell(cmd) => {
                let words: Vec<&str> = cmd.split_whitespace().collect();
                words
                    .windows(2)
                    .any(|w| w[0] == "-o" && w[1].split(',').any(|o| o == "io_uring"))
            }
        }
    }

    /// Whether fastfuse is started with `arg` among its arguments.
    fn has_fastfuse_arg(&self, arg: &str) -> bool {
        matches!(&self.launch, Launch::Fastfuse(args) if args.iter().any(|a| a == arg))
    }

    /// Whether it is served by fastfuse (its statistics can be read).
    pub fn is_fastfuse(&self) -> bool {
        matches!(self.family, Family::Fastfuse | Family::FastfuseBypass)
    }

    /// The mount command, for the report.
    pub fn command_line(&self) -> String {
        match &self.launch {
            Launch::Raw => String::new(),
            Launch::Fastfuse(args) => {
                let mut s = String::from("fastfuse");
                for a in args {
                    s.push(' ');
                    s.push_str(a);
                }
                s.push_str(" --foreground {src} {mnt}");
                s
            }
            Launch::Shell(cmd) => cmd.clone(),
        }
    }
}

/// Names of the configurations the bench knows, in table order.
pub const KNOWN: [&str; 17] = [
    "tmpfs",
    "fastfuse-seed",
    "fastfuse-nosplice",
    "fastfuse",
    "fastfuse-uring",
    "fastfuse-uring1",
    "fastfuse-wt",
    "fastfuse-wb",
    "fastfuse-wb-uring",
    "fastfuse-bypass1",
    "fastfuse-bypass2",
    "libfuse-ll",
    "libfuse-hp",
    "libfuse-hp-uring",
    "mergerfs-wb",
    "mergerfs",
    "bindfs",
];

/// Configurations that only run when named in `--configs`: evaluations of
/// one choice (splicing, io_uring's entries per queue, the writeback cache
/// over the ring) that would push the default run past 17 minutes.
pub const OPT_IN: [&str; 3] = ["fastfuse-nosplice", "fastfuse-uring1", "fastfuse-wb-uring"];

/// mergerfs 2.33 refuses to create files on a branch with less than
/// `minfreespace` (4G by default) free, which a small tmpfs is:
/// `minfreespace=0` is needed for it to work at all here.
const MERGERFS_WB: &str =
    "mergerfs -f -o cache.files=partial,cache.writeback=true,minfreespace=0 {src} {mnt}";
const MERGERFS: &str = "mergerfs -f -o minfreespace=0 {src} {mnt}";
/// bindfs as Debian ships it (as root it adds allow_other by itself).
const BINDFS: &str = "bindfs -f {src} {mnt}";
/// libfuse's passthrough_ll in the seed's configuration (`-o writeback
/// -o max_threads=4 -o source=SRC MNT`), with `-f` so that it stays our
/// child (daemonizing does not change what it serves). libfuse 3.14's
/// passthrough_ll parses max_threads but does not pass it to its loop
/// (it hands `fuse_session_loop_mt` a version-1 config, which has no such
/// field), so it runs up to libfuse's default of 10 workers.
const LIBFUSE_LL: &str = "-f -o writeback -o max_threads=4 -o source={src} {mnt}";

/// libfuse's passthrough_hp as it comes: kernel passthrough for reads and
/// writes (so no writeback cache: the kernel refuses the two together),
/// entry and attribute timeouts of a day, libfuse's default worker pool;
/// `--foreground` keeps it our child.
const LIBFUSE_HP: &str = "--foreground {src} {mnt}";
/// The same over FUSE-over-io_uring (libfuse 3.18's ring threads, one
/// queue per CPU).
const LIBFUSE_HP_URING: &str = "--foreground -o io_uring {src} {mnt}";

/// Where `scripts/setup.sh` puts the peers it builds, inside the target
/// directory: `peers/passthrough_ll` (libfuse 3.14's, from Debian's
/// libfuse3-dev examples) and `peers/passthrough_hp` (libfuse 3.18.3's).
pub const PEERS: &str = "peers";

/// The peer binaries at hand ([`find_peer`]).
#[derive(Debug, Clone, Default)]
pub struct PeerBins {
    /// libfuse's passthrough_ll.
    pub ll: Option<PathBuf>,
    /// libfuse's passthrough_hp.
    pub hp: Option<PathBuf>,
}

impl PeerBins {
    /// Looks for both next to `fastfuse_bin` (see [`find_peer`]).
    pub fn find(fastfuse_bin: Option<&Path>) -> PeerBins {
        PeerBins {
            ll: find_peer(fastfuse_bin, "passthrough_ll"),
            hp: find_peer(fastfuse_bin, "passthrough_hp"),
        }
    }
}

/// A peer binary `program` built by `scripts/setup.sh`: in the fastfuse
/// binary's target directory (`target/release/fastfuse` →
/// `target/peers/PROGRAM`), under `./target`, or on the PATH.
pub fn find_peer(fastfuse_bin: Option<&Path>, program: &str) -> Option<PathBuf> {
    let is_exe = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let rel = Path::new(PEERS).join(program);
    let near_bin = fastfuse_bin
        .and_then(|b| b.parent()?.parent().map(|t| t.join(&rel)))
        .and_then(|p| std::fs::canonicalize(p).ok());
    let in_cwd = std::fs::canonicalize(Path::new("target").join(&rel)).ok();
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(program))
            .find(|p| is_exe(p))
    });
    [near_bin, in_cwd, on_path]
        .into_iter()
        .flatten()
        .find(|p| is_exe(p))
}

fn fastfuse(name: &str, family: Family, args: &[String]) -> ConfigSpec {
    ConfigSpec {
        name: name.into(),
        family,
        launch: Launch::Fastfuse(args.to_vec()),
    }
}

fn shell(name: &str, cmd: &str) -> ConfigSpec {
    ConfigSpec {
        name: name.into(),
        family: Family::Peer,
        launch: Launch::Shell(cmd.into()),
    }
}

/// Whether `program` is an executable on the PATH.
pub fn on_path(program: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(dir.join(program))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The known configurations: those usable here, and those that are not
/// with why. `has_fastfuse`: a fastfuse binary is at hand; `cpus`: the
/// thread count of the `fastfuse` configuration; `peers`: libfuse's
/// servers that are built ([`PeerBins::find`]).
pub fn known(
    has_fastfuse: bool,
    cpus: usize,
    root: bool,
    peers: &PeerBins,
) -> (Vec<ConfigSpec>, Vec<(String, String)>) {
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let threads = cpus.to_string();
    let mut usable = vec![ConfigSpec {
        name: "tmpfs".into(),
        family: Family::Limit,
        launch: Launch::Raw,
    }];
    let mut missing = Vec::new();
    // Every /dev/fuse configuration names its transport: the bench turns
    // the kernel's io_uring on for the run when fastfuse-uring is selected,
    // and "auto" would then pick the ring everywhere.
    let ff = [
        fastfuse(
            "fastfuse-seed",
            Family::Fastfuse,
            &s(&[
                "-o",
                "writeback",
                "-o",
                "max_threads=4",
                "--transport",
                "dev",
            ]),
        ),
        // The seed's configuration without splicing WRITE data from
        // /dev/fuse (fastfuse's default): what the splice buys.
        fastfuse(
            "fastfuse-nosplice",
            Family::Fastfuse,
            &s(&[
                "-o",
                "writeback",
                "-o",
                "max_threads=4",
                "-o",
                "no_splice_write",
                "--transport",
                "dev",
            ]),
        ),
        fastfuse(
            "fastfuse",
            Family::Fastfuse,
            &s(&["--num-threads", &threads, "--transport", "dev"]),
        ),
        fastfuse(
            "fastfuse-uring",
            Family::Fastfuse,
            &s(&["--transport", "uring"]),
        ),
        // One entry per io_uring queue: one request per CPU in flight.
        fastfuse(
            "fastfuse-uring1",
            Family::Fastfuse,
            &s(&["--transport", "uring", "--queue-depth", "1"]),
        ),
        fastfuse(
            "fastfuse-wt",
            Family::Fastfuse,
            &s(&["-o", "no_writeback", "--transport", "dev"]),
        ),
        // The default mount is kernel passthrough as root (hp's own mode);
        // these are the writeback cache, the default where passthrough is
        // not, on each transport.
        fastfuse(
            "fastfuse-wb",
            Family::Fastfuse,
            &s(&[
                "-o",
                "writeback",
                "--num-threads",
                &threads,
                "--transport",
                "dev",
            ]),
        ),
        fastfuse(
            "fastfuse-wb-uring",
            Family::Fastfuse,
            &s(&["-o", "writeback", "--transport", "uring"]),
        ),
        fastfuse(
            "fastfuse-bypass1",
            Family::FastfuseBypass,
            &s(&["--bypass-rw", "1", "--transport", "dev"]),
        ),
        fastfuse(
            "fastfuse-bypass2",
            Family::FastfuseBypass,
            &s(&["--bypass-rw", "2", "--transport", "dev"]),
        ),
    ];
    for c in ff {
        if !has_fastfuse {
            missing.push((c.name, "no fastfuse binary".into()));
        } else if let Some(why) = unavailable(&c, c.has_fastfuse_arg("--passthrough"), root) {
            missing.push((c.name, why.into()));
        } else {
            usable.push(c);
        }
    }
    match &peers.ll {
        Some(bin) => usable.push(shell(
            "libfuse-ll",
            &format!("{} {LIBFUSE_LL}", sh_quote(bin)),
        )),
        None => missing.push((
            "libfuse-ll".into(),
            format!(
                "libfuse's passthrough_ll is not built (scripts/setup.sh builds it into target/{PEERS}/passthrough_ll)"
            ),
        )),
    }
    for (name, args) in [
        ("libfuse-hp", LIBFUSE_HP),
        ("libfuse-hp-uring", LIBFUSE_HP_URING),
    ] {
        let spec = peers
            .hp
            .as_ref()
            .map(|bin| shell(name, &format!("{} {args}", sh_quote(bin))));
        match spec {
            // Its reads and writes go through kernel passthrough.
            Some(c) => match unavailable(&c, true, root) {
                Some(why) => missing.push((c.name, why.into())),
                None => usable.push(c),
            },
            None => missing.push((
                name.into(),
                format!(
                    "libfuse's passthrough_hp is not built (scripts/setup.sh builds libfuse 3.18.3's into target/{PEERS}/passthrough_hp)"
                ),
            )),
        }
    }
    for (name, cmd, program) in [
        ("mergerfs-wb", MERGERFS_WB, "mergerfs"),
        ("mergerfs", MERGERFS, "mergerfs"),
        ("bindfs", BINDFS, "bindfs"),
    ] {
        if on_path(program) {
            usable.push(shell(name, cmd));
        } else {
            missing.push((name.into(), format!("{program} is not installed")));
        }
    }
    (usable, missing)
}

/// Why `c` cannot run on this machine, if it cannot: kernel passthrough
/// (`passthrough`: it uses it) needs root, and FUSE over io_uring needs
/// root and the fuse module's switch.
fn unavailable(c: &ConfigSpec, passthrough: bool, root: bool) -> Option<&'static str> {
    if passthrough && !root {
        Some("kernel passthrough needs root")
    } else if c.uses_io_uring() && !(root && UringSwitch::available()) {
        Some("FUSE over io_uring needs root and the fuse module's enable_uring parameter (Linux 6.14+)")
    } else {
        None
    }
}

/// The fuse module's switch for FUSE over io_uring.
const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// Turns the kernel's FUSE-over-io_uring on for as long as it lives and
/// puts the parameter back as it was.
#[derive(Debug)]
pub struct UringSwitch {
    before: String,
}

impl UringSwitch {
    /// Whether this kernel has the parameter.
    pub fn available() -> bool {
        Path::new(ENABLE_URING).exists()
    }

    /// Sets `enable_uring` to Y.
    pub fn enable() -> io::Result<UringSwitch> {
        let before = std::fs::read_to_string(ENABLE_URING)?.trim().to_string();
        std::fs::write(ENABLE_URING, "Y")?;
        Ok(UringSwitch { before })
    }
}

impl Drop for UringSwitch {
    fn drop(&mut self) {
        let _ = std::fs::write(ENABLE_URING, &self.before);
    }
}

/// Parses `--peer NAME='COMMAND {src} {mnt}'`.
///
/// ```
/// let p = fastfuse_bench::config::parse_peer("hp=passthrough_hp {src} {mnt}").unwrap();
/// assert_eq!(p.name, "hp");
/// assert!(fastfuse_bench::config::parse_peer("x=cmd without placeholders").is_err());
/// ```
pub fn parse_peer(text: &str) -> Result<ConfigSpec, String> {
    let (name, cmd) = text
        .split_once('=')
        .ok_or_else(|| format!("--peer {text:?}: expected NAME='COMMAND {{src}} {{mnt}}'"))?;
    let name = name.trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "--peer {text:?}: the name may hold letters, digits, - _ ."
        ));
    }
    if KNOWN.contains(&name) {
        return Err(format!(
            "--peer {name}: the name is taken by a built-in configuration"
        ));
    }
    if !cmd.contains("{src}") || !cmd.contains("{mnt}") {
        return Err(format!(
            "--peer {text:?}: the command needs {{src}} and {{mnt}}"
        ));
    }
    Ok(shell(name, cmd.trim()))
}

/// Quotes a path for `sh`.
fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.to_string_lossy().replace('\'', r"'\''"))
}

/// Why a configuration could not be mounted.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A step failed.
    #[error("{what}: {source}")]
    Io {
        /// The step.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The server exited before the mount appeared.
    #[error("the server exited ({status}) before mounting: {log}")]
    Exited {
        /// Its exit status.
        status: String,
        /// The end of its log.
        log: String,
    },
    /// The mount did not appear in time.
    #[error("no mount at {0} after 20 s")]
    Timeout(PathBuf),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> MountError {
    let what = what.into();
    move |source| MountError::Io { what, source }
}

/// What mounting needs from the run.
#[derive(Debug)]
pub struct MountContext<'a> {
    /// Where sources and mountpoints are created.
    pub scratch: &'a Scratch,
    /// The fastfuse binary.
    pub fastfuse_bin: Option<&'a Path>,
    /// A tmpfs source of this many bytes; `None`: a plain directory (not
    /// root).
    pub tmpfs_size: Option<u64>,
    /// Where servers' stderr goes (`NAME.log`).
    pub log_dir: &'a Path,
}

/// A configuration mounted on a fresh source: unmounted, its server ended
/// and its directories removed by [`Mounted::teardown`] or on drop (also
/// when a workload failed or the run was interrupted).
#[derive(Debug)]
pub struct Mounted {
    source: PathBuf,
    source_mounted: bool,
    mnt: Option<PathBuf>,
    server: Option<ServerProcess>,
    pid_file: Option<PathBuf>,
    /// The serving pid named by fastfuse's pid file, if it differs from
    /// the child's.
    pid_from_file: Option<i32>,
    log: Option<PathBuf>,
    done: bool,
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(3).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
}

impl Mounted {
    /// Mounts `spec` on a fresh source; `tag` names its directories and log
    /// (e.g. `rep1-fastfuse`).
    pub fn start(
        spec: &ConfigSpec,
        ctx: &MountContext<'_>,
        tag: &str,
    ) -> Result<Mounted, MountError> {
        let source = ctx
            .scratch
            .fresh_dir(&format!("src-{tag}"))
            .map_err(io_err("creating the source directory"))?;
        let mut m = Mounted {
            source,
            source_mounted: false,
            mnt: None,
            server: None,
            pid_file: None,
            pid_from_file: None,
            log: None,
            done: false,
        };
        if let Some(size) = ctx.tmpfs_size {
            mounts::mount_tmpfs(&m.source, size).map_err(io_err("mounting the tmpfs source"))?;
            m.source_mounted = true;
        }
        let mut command = match &spec.launch {
            Launch::Raw => return Ok(m),
            Launch::Fastfuse(args) => {
                let bin = ctx.fastfuse_bin.ok_or_else(|| MountError::Io {
                    what: "starting fastfuse".into(),
                    source: io::Error::new(io::ErrorKind::NotFound, "no fastfuse binary"),
                })?;
                let pid_file = ctx.scratch.path().join(format!("{tag}.pid"));
                let mnt = ctx
                    .scratch
                    .fresh_dir(&format!("mnt-{tag}"))
                    .map_err(io_err("creating the mountpoint"))?;
                let mut c = Command::new(bin);
                c.args(args)
                    .arg("--foreground")
                    .arg("--pid-file")
                    .arg(&pid_file)
                    .arg(&m.source)
                    .arg(&mnt);
                m.pid_file = Some(pid_file);
                m.mnt = Some(mnt);
                c
            }
            Launch::Shell(template) => {
                let mnt = ctx
                    .scratch
                    .fresh_dir(&format!("mnt-{tag}"))
                    .map_err(io_err("creating the mountpoint"))?;
                let cmd = template
                    .replace("{src}", &sh_quote(&m.source))
                    .replace("{mnt}", &sh_quote(&mnt));
                let mut c = Command::new("sh");
                c.arg("-c").arg(format!("exec {cmd}"));
                m.mnt = Some(mnt);
                c
            }
        };
        let log = ctx.log_dir.join(format!("{tag}.log"));
        let stderr = File::create(&log).map_err(io_err("creating the server log"))?;
        m.log = Some(log.clone());
        // Its own process group: a Ctrl-C at the terminal reaches the bench,
        // which then unmounts in order, and not the server mid-workload.
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(io_err(format!("starting {}", spec.name)))?;
        m.server = Some(ServerProcess::Child(child));
        m.wait_live(&log)?;
        Ok(m)
    }

    fn wait_live(&mut self, log: &Path) -> Result<(), MountError> {
        let mnt = self.mnt.clone().expect("a server has a mountpoint");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let live = mounts::mounted_fstype(&mnt).is_some_and(|t| t.starts_with("fuse"));
            let pid_ready = self.pid_file.as_ref().is_none_or(|p| p.exists());
            if live && pid_ready {
                break;
            }
            if let Some(ServerProcess::Child(child)) = &mut self.server {
                if let Some(status) = child.try_wait().map_err(io_err("waiting for the server"))? {
                    if status.success() && live {
                        // It daemonized: find the serving process.
                        self.server = mounts::find_server_pid(&mnt).map(ServerProcess::Pid);
                        if self.server.is_none() {
                            tracing::warn!("cannot find the server of {}", mnt.display());
                        }
                        return Ok(());
                    }
                    if !status.success() {
                        self.server = None;
                        return Err(MountError::Exited {
                            status: status.to_string(),
                            log: log_tail(log),
                        });
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(MountError::Timeout(mnt));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // fastfuse names the serving process in its pid file.
        if let Some(pid) = self
            .pid_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            if self.server.as_ref().map(ServerProcess::pid) != Some(pid) {
                // Keep the child to reap it; CPU is read from the process
                // the pid file names.
                tracing::debug!("fastfuse serves from pid {pid}");
                self.pid_from_file = Some(pid);
            }
        }
        Ok(())
    }

    /// Where the workloads run: the mountpoint, or the source for the raw
    /// configuration.
    pub fn dir(&self) -> &Path {
        self.mnt.as_deref().unwrap_or(&self.source)
    }

    /// The FUSE mountpoint, if any.
    pub fn mountpoint(&self) -> Option<&Path> {
        self.mnt.as_deref()
    }

    /// The pid of the serving process.
    pub fn server_pid(&self) -> Option<i32> {
        self.pid_from_file
            .or_else(|| self.server.as_ref().map(ServerProcess::pid))
    }

    /// Unmounts, ends the server, removes the directories. Returns notes on
    /// anything that did not go cleanly. Idempotent.
    pub fn teardown(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.done {
            return notes;
        }
        self.done = true;
        if let Some(mnt) = &self.mnt {
            match mounts::unmount(mnt) {
                Ok("umount" | "not mounted") => {}
                Ok(how) => notes.push(format!("{}: unmounted with {how}", mnt.display())),
                Err(e) => notes.push(format!("{}: {e}", mnt.display())),
            }
        }
        if let Some(server) = &mut self.server {
            if let Some(note) = server.finish() {
                notes.push(note);
            }
        }
        if let Some(mnt) = &self.mnt {
            if let Err(e) = mounts::remove_dir(mnt) {
                notes.push(format!("removing {}: {e}", mnt.display()));
            }
        }
        if self.source_mounted {
            match mounts::unmount(&self.source) {
                Ok("umount" | "not mounted") => {}
                Ok(how) => notes.push(format!("{}: unmounted with {how}", self.source.display())),
                Err(e) => notes.push(format!("{}: {e}", self.source.display())),
            }
        } else {
            // A plain directory source: empty it (no mount can be inside).
            let _ = std::fs::remove_dir_all(&self.source);
        }
        if let Err(e) = mounts::remove_dir(&self.source) {
            notes.push(format!("removing {}: {e}", self.source.display()));
        }
        if let Some(p) = &self.pid_file {
            let _ = std::fs::remove_file(p);
        }
        // An empty log says nothing.
        if let Some(log) = &self.log {
            if std::fs::metadata(log).is_ok_and(|m| m.len() == 0) {
                let _ = std::fs::remove_file(log);
            }
        }
        notes
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        for note in self.teardown() {
            tracing::warn!("cleanup: {note}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_configurations_in_table_order() {
        let peers = PeerBins {
            ll: Some("/opt/peers/passthrough_ll".into()),
            hp: Some("/opt/peers/passthrough_hp".into()),
        };
        let (usable, missing) = known(true, 2, true, &peers);
        let mut names: Vec<&str> = usable.iter().map(|c| c.name.as_str()).collect();
        names.extend(missing.iter().map(|(n, _)| n.as_str()));
        for n in KNOWN {
            assert!(names.contains(&n), "{n}");
        }
        assert_eq!(usable[0].family, Family::Limit);
        let ll_spec = usable.iter().find(|c| c.name == "libfuse-ll").unwrap();
        assert_eq!(ll_spec.family, Family::Peer);
        assert_eq!(
            ll_spec.command_line(),
            "'/opt/peers/passthrough_ll' -f -o writeback -o max_threads=4 -o source={src} {mnt}"
        );
        let hp = usable.iter().find(|c| c.name == "libfuse-hp").unwrap();
        assert_eq!(
            hp.command_line(),
            "'/opt/peers/passthrough_hp' --foreground {src} {mnt}"
        );
        assert!(!hp.uses_io_uring());
        if UringSwitch::available() {
            let ring = usable
                .iter()
                .find(|c| c.name == "libfuse-hp-uring")
                .unwrap();
            assert!(ring.uses_io_uring());
        }
        let (usable, missing) = known(false, 2, false, &PeerBins::default());
        assert!(usable.iter().all(|c| !c.is_fastfuse()));
        assert!(missing
            .iter()
            .any(|(n, why)| n == "fastfuse-seed" && why.contains("binary")));
        assert!(missing
            .iter()
            .any(|(n, why)| n == "libfuse-ll" && why.contains("scripts/setup.sh")));
        assert!(missing
            .iter()
            .any(|(n, why)| n == "libfuse-hp-uring" && why.contains("scripts/setup.sh")));
    }

    #[test]
    fn the_seed_configuration_uses_the_seed_options() {
        let (usable, _) = known(true, 8, true, &PeerBins::default());
        let seed = usable.iter().find(|c| c.name == "fastfuse-seed").unwrap();
        assert_eq!(
            seed.command_line(),
            "fastfuse -o writeback -o max_threads=4 --transport dev --foreground {src} {mnt}"
        );
        let all = usable.iter().find(|c| c.name == "fastfuse").unwrap();
        assert!(all.command_line().contains("--num-threads 8"));
        let b2 = usable
            .iter()
            .find(|c| c.name == "fastfuse-bypass2")
            .unwrap();
        assert!(!b2.stores_data());
        for c in &usable {
            let ring = c.name.starts_with("fastfuse-uring") || c.name.ends_with("-uring");
            assert_eq!(c.uses_io_uring(), ring, "{}", c.name);
        }
        let no_splice = usable
            .iter()
            .find(|c| c.name == "fastfuse-nosplice")
            .unwrap();
        assert_eq!(
            no_splice.command_line(),
            "fastfuse -o writeback -o max_threads=4 -o no_splice_write --transport dev \
             --foreground {src} {mnt}"
        );
    }

    #[test]
    fn peers_are_checked() {
        assert!(parse_peer("tmpfs=x {src} {mnt}").is_err());
        assert!(parse_peer("a b=x {src} {mnt}").is_err());
        assert!(parse_peer("noequals").is_err());
        let p = parse_peer("hp=passthrough_hp --bypass-rw 2 {src} {mnt}").unwrap();
        assert_eq!(p.family, Family::Peer);
        assert!(!p.uses_io_uring());
        let p = parse_peer("hp=passthrough_hp -o allow_other,io_uring {src} {mnt}").unwrap();
        assert!(p.uses_io_uring());
        assert_eq!(sh_quote(Path::new("/a'b")), r"'/a'\''b'");
    }
}
