//! Mounting: the command line of libfuse's passthrough_ll and passthrough_hp,
//! turned into an engine [`Config`], [`MountOptions`] and passthrough
//! [`Options`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use fastfuse::{Config, MountOptions, Session, TransportKind};
use fastfuse_passthrough::{BypassRw, Journal, Options, PassthroughFs};

use crate::daemon::{self, Readiness};
use crate::{control, supervise, upgrade};

/// How long a /dev/fuse worker polls for the next request by default
/// (`-o spin_wait=US`).
const DEFAULT_SPIN_WAIT: Duration = Duration::from_micros(50);

/// Arguments of a mount.
#[derive(clap::Args, Debug, Default)]
pub struct MountArgs {
    /// The source directory (or give it as `-o source=SRC`).
    #[arg(value_name = "SRC")]
    first: Option<PathBuf>,
    /// The mountpoint.
    #[arg(value_name = "MNT")]
    second: Option<PathBuf>,
    /// Mount and filesystem options, comma-separated; may repeat. Mount:
    /// ro, allow_other, default_permissions, no_default_permissions,
    /// fsname=, subtype=, auto_unmount, suid, dev, noexec, noatime, max_read=.
    /// Filesystem: source=SRC, writeback (the default where kernel
    /// passthrough is not: see --passthrough), no_writeback,
    /// max_threads=N, timeout=SECS, direct_io, passthrough, clone_fd,
    /// bypass_rw=N, max_pages=N, max_background=N, congestion_threshold=N,
    /// io_uring, transport=dev|uring|auto, xattr, no_xattr, acl (the
    /// default where the source keeps POSIX ACLs: new files get a parent's
    /// default ACL, and with default_permissions the kernel enforces ACLs),
    /// noacl, dir_cache (the default: directories open without OPENDIR and
    /// their listings are cached like attributes), no_dir_cache, statahead
    /// (the default: a walk's next listings are read ahead), no_statahead,
    /// readdirplus,
    /// no_readdirplus, splice_write (the default: large WRITEs spliced from
    /// /dev/fuse into the source file, one copy fewer), no_splice_write,
    /// request_timeout=SECS (the kernel aborts the connection when a
    /// request stays unanswered that long; 0: never, the default),
    /// spin_wait=US (over /dev/fuse, how long a worker polls for the next
    /// request before it sleeps; default 50, 0: never), local_wake (the
    /// default: over io_uring, each CPU's ring thread runs SCHED_IDLE
    /// while a guard sees it get the CPU, so that a reply wakes its caller
    /// on the caller's CPU; root only), no_local_wake,
    /// remembered_handles=N (forgotten nodes kept by their source file
    /// handle, so that NFS-export file handles of them still resolve;
    /// default 262144, 0: none), supervise (as --supervise, for fstab).
    #[arg(short = 'o', value_name = "OPTS")]
    options: Vec<String>,
    /// Worker threads (default: one per CPU).
    #[arg(long, value_name = "N")]
    num_threads: Option<usize>,
    /// One worker thread.
    #[arg(long)]
    single: bool,
    /// Give each worker its own /dev/fuse fd (the default; kept for
    /// passthrough_hp's command line).
    #[arg(long)]
    clone_fd: bool,
    /// Kernel passthrough: the kernel reads and writes the source files
    /// itself (needs CAP_SYS_ADMIN; turns the writeback cache off). The
    /// default as root when no cache mode (`-o writeback`, `-o
    /// no_writeback`, --direct-io, --bypass-rw, --supervise) is asked
    /// for; where the kernel does not offer it, the writeback cache.
    #[arg(long, conflicts_with = "nopassthrough")]
    passthrough: bool,
    /// No kernel passthrough: the writeback cache (as `-o writeback`).
    #[arg(long)]
    nopassthrough: bool,
    /// Testbench: 0 normal; 1 WRITE data is copied but not stored; 2 WRITEs
    /// are answered at once. Data written with 1 or 2 is LOST.
    #[arg(long, value_name = "N", default_value_t = 0)]
    bypass_rw: u8,
    /// How requests travel: dev (/dev/fuse), uring (FUSE over io_uring,
    /// fail if unavailable) or auto (io_uring when the kernel offers it).
    #[arg(long, value_name = "KIND", default_value = "auto")]
    transport: TransportKind,
    /// Ring entries per io_uring queue.
    #[arg(long, value_name = "N")]
    queue_depth: Option<usize>,
    /// Bypass the page cache (FOPEN_DIRECT_IO).
    #[arg(long)]
    direct_io: bool,
    /// Attribute and entry cache timeout in seconds (default 1).
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Stay in the foreground.
    #[arg(short = 'f', long)]
    foreground: bool,
    /// Debug logging (implies --foreground).
    #[arg(short = 'd', long)]
    debug: bool,
    /// Where a daemonized fastfuse writes its log (default: nowhere).
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// Write the serving process's pid here once the mount is live (with
    /// --supervise: the supervisor's).
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// Survive a crash of the daemon: a small supervisor process holds the
    /// mount and starts a new server when the one serving dies (also
    /// `-o supervise`, e.g. from fstab). Serves through /dev/fuse.
    #[arg(long)]
    supervise: bool,
}

/// Everything a mount needs, resolved from the arguments.
#[derive(Debug)]
struct Plan {
    source: PathBuf,
    mountpoint: PathBuf,
    mount: MountOptions,
    config: Config,
    fs: Options,
    /// Run under a supervisor that restarts the server (`--supervise`).
    supervise: bool,
}

fn parse_num<T: std::str::FromStr>(opt: &str, value: Option<&str>) -> anyhow::Result<T> {
    value
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("option {opt:?} wants a number"))
}

fn plan(args: &MountArgs) -> anyhow::Result<Plan> {
    let mut mount = MountOptions {
        subtype: Some("fastfuse".into()),
        ..Default::default()
    };
    let mut config = Config {
        writeback_cache: true,
        readdirplus: true,
        // PassthroughFs clears suid/sgid itself when told to; without this
        // the kernel asks GETXATTR(security.capability) before every write.
        handle_killpriv_v2: true,
        // Large WRITEs go from /dev/fuse to the source by splice: one copy
        // fewer, 5-15% more MiB/s at 1M and less CPU per GiB in the bench,
        // no loss elsewhere (workers splice only while large WRITEs
        // dominate). Not used over io_uring.
        splice_write: true,
        // A worker polls for the next request for up to 50 µs before it
        // sleeps: untar and rm over /dev/fuse ran 1.4-1.55x faster on this
        // project's 2-vCPU VM (see the README's "Polling for the next
        // request"), for CPU that only requests closer than 50 µs apart,
        // from one caller at a time, make it spend.
        spin_wait: DEFAULT_SPIN_WAIT,
        handle_signals: true,
        ..Default::default()
    };
    config.transport = args.transport;
    if let Some(depth) = args.queue_depth {
        config.uring_queue_depth = depth;
    }
    let mut fs = Options::default();
    let mut source = None;
    let mut default_permissions = None;
    let mut bypass = args.bypass_rw;
    let mut supervise = args.supervise;
    // A cache mode asked for by name; without one, root gets kernel
    // passthrough where the kernel offers it (see `auto_passthrough`).
    let mut mode_named = args.passthrough || args.nopassthrough || args.direct_io;
    for opt in args.options.iter().flat_map(|o| o.split(',')) {
        if opt == "default_permissions" {
            default_permissions = Some(true);
        }
        if opt.is_empty() || mount.apply(opt).context("mount option")? {
            continue;
        }
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        mode_named |= matches!(
            key,
            "writeback" | "no_writeback" | "direct_io" | "passthrough"
        );
        match key {
            "source" => source = value.map(PathBuf::from),
            "writeback" => config.writeback_cache = true,
            "no_writeback" => config.writeback_cache = false,
            "max_threads" | "num_threads" => config.threads = parse_num(opt, value)?,
            "timeout" | "attr_timeout" | "entry_timeout" => {
                fs.timeout = Duration::from_secs_f64(parse_num(opt, value)?)
            }
            "direct_io" => fs.direct_io = true,
            "passthrough" => config.passthrough = true,
            "clone_fd" => config.clone_fd = true,
            "bypass_rw" => bypass = parse_num(opt, value)?,
            "max_pages" => config.max_pages = parse_num(opt, value)?,
            "max_background" => config.max_background = parse_num(opt, value)?,
            "congestion_threshold" => config.congestion_threshold = parse_num(opt, value)?,
            "request_timeout" => config.request_timeout = parse_num(opt, value)?,
            "spin_wait" => config.spin_wait = Duration::from_micros(parse_num(opt, value)?),
            "local_wake" => config.uring_local_wake = true,
            "no_local_wake" => config.uring_local_wake = false,
            "remembered_handles" => fs.remembered_handles = parse_num(opt, value)?,
            "xattr" => fs.xattr = true,
            "no_xattr" => fs.xattr = false,
            "acl" => fs.posix_acl = true,
            "noacl" | "no_acl" => fs.posix_acl = false,
            "dir_cache" => fs.cache_dirs = true,
            "no_dir_cache" => fs.cache_dirs = false,
            "statahead" => fs.statahead = true,
            "no_statahead" => fs.statahead = false,
            "io_uring" => config.transport = TransportKind::Uring,
            "transport" => {
                config.transport = value
                    .unwrap_or_default()
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!(e))?
            }
            "supervise" => supervise = true,
            "readdirplus" => config.readdirplus = true,
            "no_readdirplus" => config.readdirplus = false,
            "no_default_permissions" => default_permissions = Some(false),
            "splice_write" | "splice_move" => config.splice_write = true,
            "no_splice_write" | "no_splice_move" => config.splice_write = false,
            // passthrough_ll options that have no meaning here (READ replies
            // are not spliced: see the README).
            "flock" | "no_flock" | "cache" | "splice_read" | "no_splice_read" => {}
            _ => bail!("unknown option {opt:?} (see --help)"),
        }
    }
    let (source, mountpoint) = match (&args.first, &args.second, source) {
        (Some(src), Some(mnt), None) => (src.clone(), mnt.clone()),
        (Some(mnt), None, Some(src)) => (src, mnt.clone()),
        (Some(_), Some(_), Some(_)) => {
            bail!("give the source either as SRC or as -o source=, not both")
        }
        _ => bail!("usage: fastfuse [OPTIONS] SRC MNT, or fastfuse -o source=SRC [OPTIONS] MNT"),
    };
    if args.single {
        config.threads = 1;
    }
    if let Some(n) = args.num_threads {
        config.threads = n;
    }
    if args.clone_fd {
        config.clone_fd = true;
    }
    if args.passthrough {
        config.passthrough = true;
    }
    if args.nopassthrough {
        config.passthrough = false;
    }
    if args.direct_io {
        fs.direct_io = true;
    }
    if let Some(t) = args.timeout {
        if !(t >= 0.0 && t.is_finite()) {
            bail!("--timeout wants a number of seconds >= 0");
        }
        fs.timeout = Duration::from_secs_f64(t);
    }
    fs.bypass_rw = BypassRw::try_from(bypass).map_err(|e| anyhow::anyhow!("{e}"))?;
    let is_root = rustix::process::geteuid().is_root();
    if config.passthrough {
        // The kernel refuses passthrough on a writeback-cache mount.
        config.writeback_cache = false;
        fs.kernel_passthrough = true;
    } else if auto_passthrough(mode_named, fs.bypass_rw, supervise) {
        // Both asked for: INIT keeps passthrough where the kernel offers
        // it and the writeback cache where it does not (`negotiate`); with
        // no attribute timeout, which the writeback cache cannot do
        // without, writethrough where it does not.
        config.passthrough = true;
        fs.kernel_passthrough = true;
        if fs.timeout.is_zero() {
            config.writeback_cache = false;
        }
    }
    if config.writeback_cache && fs.timeout.is_zero() {
        bail!("the writeback cache needs a non-zero timeout (or use -o no_writeback)");
    }
    // With allow_other, let the kernel check permissions unless told not to:
    // otherwise any user could reach any file the daemon can.
    mount.default_permissions = default_permissions.unwrap_or(mount.allow_other);
    // The kernel checks ACLs only where it checks permissions at all, and
    // only then needs FUSE_POSIX_ACL (which would turn default_permissions
    // on). Elsewhere the source checks them, as the daemon's user (or, as
    // root with allow_other, as the caller).
    fs.kernel_checks_permissions = mount.default_permissions;
    if mount.fsname == "fastfuse" {
        mount.fsname = source.display().to_string();
    }
    fs.switch_credentials = is_root && mount.allow_other;
    if supervise {
        match config.transport {
            TransportKind::Uring => bail!(
                "--supervise serves through /dev/fuse: requests the kernel hands to a dead server's io_uring entries are never answered (see the README; drop --transport uring / -o io_uring)"
            ),
            TransportKind::Auto | TransportKind::Dev => config.transport = TransportKind::Dev,
        }
        if mount.auto_unmount {
            bail!("--supervise and auto_unmount exclude each other: fusermount3 would unmount when the first server dies");
        }
        if !is_root {
            bail!("--supervise needs root: a restarted server reopens files by their handles (open_by_handle_at, CAP_DAC_READ_SEARCH)");
        }
        // What a dead server had read must end with it (see `supervise`).
        config.clone_fd = true;
        config.clone_every_fd = true;
    }
    Ok(Plan {
        source,
        mountpoint,
        mount,
        config,
        fs,
        supervise,
    })
}

/// Whether a mount that named no cache mode gets kernel passthrough:
/// where the kernel will register backing files for it
/// ([`may_register_backing_files`]), serving I/O for real (the
/// testbench's bypass levels answer WRITEs in the daemon), and not
/// supervised (a restarted server would inherit backing files it did not
/// register; untested). Kernel passthrough leaves reads and writes to
/// the kernel, and spares round trips: under the writeback cache written
/// data reaches the source in WRITEs, and every unlink also writes the
/// inode's times back (a SETATTR the kernel waits for), since the kernel
/// keeps a regular file's times itself (see the README's "Default mode").
fn auto_passthrough(mode_named: bool, bypass: BypassRw, supervise: bool) -> bool {
    !mode_named && bypass == BypassRw::Off && !supervise && may_register_backing_files()
}

/// Whether FUSE_DEV_IOC_BACKING_OPEN can succeed for this process: the
/// kernel asks for CAP_SYS_ADMIN in the initial user namespace. Root in a
/// container's own namespace has the capability only there, and every
/// open would fail over to the daemon, without the writeback cache.
fn may_register_backing_files() -> bool {
    use rustix::thread::{capabilities, CapabilitySet};
    let admin = capabilities(None).is_ok_and(|c| c.effective.contains(CapabilitySet::SYS_ADMIN));
    // The initial namespace maps every uid to itself.
    let initial_ns = std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]);
    admin && initial_ns
}

/// Runs a mount: in the foreground until unmounted, or daemonized.
pub fn run(args: MountArgs) -> anyhow::Result<()> {
    let plan = plan(&args)?;
    // Taken before anything can replace it: `fastfuse upgrade` without
    // --binary hands over to whatever is installed at this path by then.
    let exe = std::env::current_exe().context("finding this program")?;
    let successor = std::env::var_os(upgrade::HANDOVER_FD).is_some();
    let foreground = args.foreground || args.debug || successor;
    if !foreground {
        return daemon::spawn_and_wait(args.log_file.as_deref());
    }
    let level = if args.debug { "debug" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Some(sock) =
        daemon::inherited_socket(upgrade::HANDOVER_FD).context("the hand-over socket")?
    {
        raise_nofile();
        let (bg, fs, listener) = upgrade::take_over(
            sock,
            upgrade::Successor {
                source: &plan.source,
                options: plan.fs,
                config: plan.config,
                pid_file: args.pid_file.as_deref(),
            },
        )?;
        return control::serve(bg, fs, listener, exe, control::Upgrades::Allowed);
    }
    if let Some(sock) =
        daemon::inherited_socket(supervise::SUPERVISED_FD).context("the supervisor's socket")?
    {
        raise_nofile();
        let source = plan.source.clone();
        let (options, config) = (plan.fs, plan.config.clone());
        let (bg, fs, listener) = supervise::serve(
            sock,
            supervise::Server {
                source: &source,
                options,
                config,
                mount: &|journal| mount(&plan, Some(journal)),
            },
        )?;
        return control::serve(bg, fs, listener, exe, control::Upgrades::Supervised);
    }
    let mut readiness = Readiness::from_env();
    if plan.supervise {
        return supervise::supervise(&mut readiness, args.pid_file.as_deref());
    }
    match mount(&plan, None) {
        Ok((session, fs)) => {
            if let Some(path) = &args.pid_file {
                daemon::write_pid_file(path)?;
            }
            let bg = session.spawn().context("serving")?;
            // Bound before the caller is told, so that an upgrade on the
            // next line of its script finds it.
            let listener = control::Listener::bind(bg.mount_id());
            readiness.ready();
            control::serve(bg, fs, listener, exe, control::Upgrades::Allowed)
        }
        Err(e) => {
            readiness.failed(&e);
            Err(e)
        }
    }
}

fn raise_nofile() {
    match fastfuse_passthrough::raise_nofile_limit() {
        Ok(n) => tracing::debug!("RLIMIT_NOFILE raised to {n}"),
        Err(e) => tracing::warn!("could not raise RLIMIT_NOFILE: {e}"),
    }
}

/// Mounts as `plan` says; with a crash journal when supervised.
fn mount(
    plan: &Plan,
    journal: Option<Journal>,
) -> anyhow::Result<(Session<Arc<PassthroughFs>>, Arc<PassthroughFs>)> {
    tracing::debug!(?plan, "mounting");
    if plan.fs.bypass_rw != BypassRw::Off {
        tracing::warn!(
            "--bypass-rw {}: WRITE data is NOT stored; this mode is for benchmarking the transport only",
            plan.fs.bypass_rw as u8
        );
    }
    if plan.config.passthrough && !rustix::process::geteuid().is_root() {
        bail!("kernel passthrough (--passthrough) needs CAP_SYS_ADMIN: run as root, or drop --passthrough");
    }
    raise_nofile();
    let fs = match journal {
        Some(journal) => PassthroughFs::journaled(&plan.source, plan.fs, journal),
        None => PassthroughFs::new(&plan.source, plan.fs),
    };
    let fs = Arc::new(fs.with_context(|| format!("source {}", plan.source.display()))?);
    let config = plan.config.clone();
    let asked_timeout = config.request_timeout;
    let session = Session::mount(fs.clone(), &plan.mountpoint, &plan.mount, config)?;
    let n = session.connection().negotiated();
    if asked_timeout != 0 && n.request_timeout == 0 {
        tracing::warn!(
            "the kernel does not offer FUSE_REQUEST_TIMEOUT (Linux 6.15+); request_timeout={asked_timeout} is not in force"
        );
    }
    if plan.fs.kernel_passthrough && !n.passthrough() {
        if n.writeback_cache() {
            tracing::info!("the kernel does not offer passthrough; the writeback cache is on");
        } else {
            tracing::warn!(
                "the kernel did not agree to passthrough; serving reads and writes in the daemon"
            );
        }
    }
    tracing::info!(
        writeback_cache = n.writeback_cache(),
        passthrough = n.passthrough(),
        io_uring = n.io_uring(),
        posix_acl = n.posix_acl(),
        max_write = n.max_write,
        request_timeout = n.request_timeout,
        "mounted {} on {}",
        plan.source.display(),
        plan.mountpoint.display()
    );
    Ok((session, fs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(line: &[&str]) -> anyhow::Result<Plan> {
        let cli =
            crate::Cli::try_parse_from(std::iter::once("fastfuse").chain(line.iter().copied()))?;
        plan(&cli.mount)
    }

    #[test]
    fn passthrough_ll_command_line() {
        let p = parse(&[
            "-o",
            "writeback",
            "-o",
            "max_threads=4",
            "-o",
            "source=/src",
            "/mnt",
        ])
        .unwrap();
        assert_eq!(p.source, PathBuf::from("/src"));
        assert_eq!(p.mountpoint, PathBuf::from("/mnt"));
        assert!(p.config.writeback_cache);
        assert_eq!(p.config.threads, 4);
    }

    #[test]
    fn passthrough_hp_command_line() {
        let p = parse(&[
            "--num-threads",
            "8",
            "--clone-fd",
            "--bypass-rw",
            "2",
            "--foreground",
            "/s",
            "/m",
        ])
        .unwrap();
        assert_eq!((p.config.threads, p.config.clone_fd), (8, true));
        assert_eq!(p.fs.bypass_rw, BypassRw::NoIo);
        assert!(parse(&["--bypass-rw", "3", "/s", "/m"]).is_err());
    }

    #[test]
    fn modes_and_permissions() {
        let p = parse(&["-o", "no_writeback", "/s", "/m"]).unwrap();
        assert!(!p.config.writeback_cache);
        let p = parse(&["--passthrough", "/s", "/m"]).unwrap();
        assert!(p.config.passthrough && !p.config.writeback_cache && p.fs.kernel_passthrough);
        let p = parse(&["/s", "/m"]).unwrap();
        assert!(!p.mount.default_permissions && !p.fs.kernel_checks_permissions);
        assert!(p.fs.posix_acl);
        let p = parse(&["-o", "allow_other", "/s", "/m"]).unwrap();
        assert!(p.mount.allow_other && p.mount.default_permissions);
        assert!(p.fs.kernel_checks_permissions && p.fs.posix_acl);
        let p = parse(&["-o", "default_permissions", "/s", "/m"]).unwrap();
        assert!(!p.mount.allow_other && p.fs.kernel_checks_permissions);
        let p = parse(&["-o", "allow_other,no_default_permissions", "/s", "/m"]).unwrap();
        assert!(!p.mount.default_permissions && !p.fs.kernel_checks_permissions);
        assert!(p.fs.posix_acl);
        assert!(!parse(&["-o", "noacl", "/s", "/m"]).unwrap().fs.posix_acl);
        assert!(parse(&["/s", "/m"]).unwrap().fs.cache_dirs);
        assert!(
            !parse(&["-o", "no_dir_cache", "/s", "/m"])
                .unwrap()
                .fs
                .cache_dirs
        );
        assert!(parse(&["-o", "bogus", "/s", "/m"]).is_err());
        assert!(parse(&["-o", "writeback,timeout=0", "/s", "/m"]).is_err());
        assert!(parse(&["/m"]).is_err());
        let p = parse(&["--transport", "uring", "/s", "/m"]).unwrap();
        assert_eq!(p.config.transport, TransportKind::Uring);
        let p = parse(&["-o", "io_uring", "/s", "/m"]).unwrap();
        assert_eq!(p.config.transport, TransportKind::Uring);
        assert_eq!(
            parse(&["/s", "/m"]).unwrap().config.transport,
            TransportKind::Auto
        );
    }

    #[test]
    fn a_mount_that_names_no_mode_gets_passthrough_where_it_can() {
        let p = parse(&["/s", "/m"]).unwrap();
        assert_eq!(p.config.passthrough, may_register_backing_files());
        assert_eq!(p.fs.kernel_passthrough, may_register_backing_files());
        // Where the kernel does not offer passthrough, INIT keeps this.
        assert!(p.config.writeback_cache);
        for named in [
            &["-o", "writeback"][..],
            &["-o", "no_writeback"],
            &["-o", "direct_io"],
            &["--direct-io"],
            &["--nopassthrough"],
            &["--bypass-rw", "1"],
        ] {
            let line: Vec<&str> = named.iter().copied().chain(["/s", "/m"]).collect();
            let p = parse(&line).unwrap();
            assert!(
                !p.config.passthrough && !p.fs.kernel_passthrough,
                "{named:?}"
            );
        }
        // No attribute timeout: passthrough, or writethrough where the
        // kernel does not offer it; the writeback cache cannot do without.
        let p = parse(&["-o", "timeout=0", "/s", "/m"]);
        assert_eq!(p.is_ok(), may_register_backing_files());
        if let Ok(p) = p {
            assert!(p.config.passthrough && !p.config.writeback_cache);
        }
    }

    #[test]
    fn supervise() {
        for line in [
            &["--supervise", "/s", "/m"][..],
            &["-o", "supervise", "/s", "/m"],
        ] {
            let p = parse(line).unwrap();
            assert!(p.supervise && p.config.clone_fd && p.config.clone_every_fd);
            assert_eq!(p.config.transport, TransportKind::Dev);
        }
        assert!(!parse(&["/s", "/m"]).unwrap().config.clone_every_fd);
        let err = parse(&["--supervise", "-o", "io_uring", "/s", "/m"]).unwrap_err();
        assert!(err.to_string().contains("io_uring"), "{err}");
        assert!(parse(&["--supervise", "-o", "auto_unmount", "/s", "/m"]).is_err());
    }

    #[test]
    fn remembered_handles() {
        let fs = |args: &[&str]| parse(args).unwrap().fs.remembered_handles;
        assert_eq!(fs(&["/s", "/m"]), 1 << 18);
        assert_eq!(fs(&["-o", "remembered_handles=0", "/s", "/m"]), 0);
        assert_eq!(fs(&["-o", "remembered_handles=500", "/s", "/m"]), 500);
        assert!(parse(&["-o", "remembered_handles=-1", "/s", "/m"]).is_err());
    }

    #[test]
    fn request_timeout() {
        assert_eq!(parse(&["/s", "/m"]).unwrap().config.request_timeout, 0);
        let p = parse(&["-o", "request_timeout=30", "/s", "/m"]).unwrap();
        assert_eq!(p.config.request_timeout, 30);
        assert_eq!(
            parse(&["-o", "request_timeout=0", "/s", "/m"])
                .unwrap()
                .config
                .request_timeout,
            0
        );
        for bad in [
            "request_timeout",
            "request_timeout=x",
            "request_timeout=65536",
        ] {
            assert!(parse(&["-o", bad, "/s", "/m"]).is_err(), "{bad}");
        }
    }
}
