//! Runs a plan: for each repetition, every configuration (mounted fresh on
//! a new source, in an order rotated by one each repetition so that drift
//! over time cancels out) × every workload, then unmounts. Everything
//! mounted is taken down by guards, also when a step fails or the run is
//! interrupted.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{ConfigSpec, MountContext, Mounted};
use crate::cpu::{CpuMark, CpuSpent};
use crate::meta::{self, Tree};
use crate::mounts::{self, Scratch};
use crate::profile::Recording;
use crate::schema::{
    BenchRun, ConfigInfo, CpuUse, Machine, RunOptions, Sample, SeedMethodInfo, Status,
    WorkloadInfo, WriteSizes, SCHEMA,
};
use crate::units::{figure, GIB, MIB};
use crate::workload::{DataSpec, Kind, MetaOp, Sizes, Workload};
use crate::{fio, loadgen, stats};

/// Which load generator runs the data workloads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// The built-in pwrite/pread loops (a process per job, as fio).
    #[default]
    Builtin,
    /// fio (must be installed).
    Fio,
    /// Both, one after the other on the same mount; the table shows the
    /// built-in one's, the report checks that they agree.
    Both,
}

impl Engine {
    /// The engine whose numbers fill the table.
    pub fn primary(self) -> &'static str {
        match self {
            Engine::Fio => "fio",
            _ => "builtin",
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            Engine::Builtin => &["builtin"],
            Engine::Fio => &["fio"],
            Engine::Both => &["builtin", "fio"],
        }
    }
}

/// Everything a run needs, resolved.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Configurations, in table order.
    pub configs: Vec<ConfigSpec>,
    /// Workloads, in table order.
    pub workloads: Vec<Workload>,
    /// Sizes the workloads were built with.
    pub sizes: Sizes,
    /// Repetitions.
    pub reps: u32,
    /// Load generator.
    pub engine: Engine,
    /// The fastfuse binary (for fastfuse configurations and statistics).
    pub fastfuse_bin: Option<PathBuf>,
    /// Where logs go (results are written by the caller).
    pub out_dir: PathBuf,
    /// Whether `--quick` chose the sizes.
    pub quick: bool,
    /// The command line, for the record.
    pub command: Vec<String>,
    /// Notes to carry into the report (configurations not available...).
    pub notes: Vec<String>,
    /// How the built-in engine runs jobs.
    pub jobs: loadgen::Jobs,
    /// Whether fio runs its jobs as threads (`--thread`) too.
    pub fio_threads: bool,
    /// Record a flame graph of the first repetition of each configuration
    /// and workload (`--profile`; see [`crate::profile`]).
    pub profile: bool,
    /// Before the first timed untar on a mount, extract and remove the
    /// tree once, untimed, so that every server is measured as a mount that
    /// has done this before (`--no-warmup` turns it off).
    pub meta_warmup: bool,
    /// `--seed-method`: fio runs the seed's own command line with this
    /// `--ramp_time` ([`crate::seed`]), each row on a mount of its own.
    pub seed_ramp: Option<std::time::Duration>,
}

/// Progress on a terminal (a bar) or as plain lines.
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
}

impl Progress {
    /// A bar when stderr is a terminal, plain lines otherwise; `total`
    /// steps.
    pub fn new(total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} [{elapsed}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        });
        Progress {
            bar,
            total,
            done: 0,
        }
    }

    /// Silent (for tests).
    pub fn hidden() -> Progress {
        Progress {
            bar: Some(ProgressBar::hidden()),
            total: 0,
            done: 0,
        }
    }

    fn begin(&self, what: &str) {
        if let Some(b) = &self.bar {
            b.set_message(what.to_string());
        }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn step(&mut self, text: &str) {
        self.done += 1;
        match &self.bar {
            Some(b) => {
                b.inc(1);
                b.println(text);
            }
            None => eprintln!("[{:>3}/{}] {text}", self.done, self.total),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// The samples that one step adds.
fn steps_per_config(plan: &Plan) -> u64 {
    plan.workloads
        .iter()
        .map(|w| match w.kind {
            Kind::Data(_) => plan.engine.names().len() as u64,
            Kind::Meta(_) => 1,
        })
        .sum()
}

/// The number of steps (samples) a plan takes.
pub fn total_steps(plan: &Plan) -> u64 {
    u64::from(plan.reps) * plan.configs.len() as u64 * steps_per_config(plan)
}

/// The machine this runs on.
pub fn machine() -> Machine {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_total_bytes = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(String::new, |(_, v)| v.trim().to_string());
    let uname = rustix::system::uname();
    Machine {
        hostname: uname.nodename().to_string_lossy().into_owned(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        mem_total_bytes,
        cpu_model,
    }
}

/// `uname -r`.
pub fn kernel() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// Now, as RFC 3339 UTC.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// What a step needs to know besides its configuration and workload.
struct Step<'a> {
    plan: &'a Plan,
    mounted: &'a Mounted,
    config: &'a ConfigSpec,
    tree: Option<&'a Tree>,
    scratch: &'a Path,
    stop: &'a AtomicBool,
    rep: u32,
    /// Whether the mount has had its untimed extraction and removal.
    warmed: std::cell::Cell<bool>,
}

/// What a measurement produced, before it becomes a [`Sample`].
struct Measured {
    value: f64,
    secs: f64,
    close_secs: Option<f64>,
    bytes: Option<u64>,
    files: Option<u64>,
    cpu: CpuSpent,
    /// The fastfuse server's WRITE sizes and requests over the measured
    /// part (not the preparation: laying out files, extracting the tree
    /// before `stat`).
    stats: Option<(WriteSizes, BTreeMap<String, u64>)>,
}

fn cpu_use(spent: CpuSpent, bytes: Option<u64>, files: Option<u64>) -> CpuUse {
    let (scale, per) = match (bytes, files) {
        (Some(b), _) => (b as f64 / GIB as f64, "s/GiB"),
        // ms per 1000 files: seconds × 1000 / (files / 1000).
        (None, Some(f)) => (f as f64 / 1e6, "ms/kfile"),
        _ => (0.0, "s"),
    };
    let per_unit = |s: f64| if scale > 0.0 { s / scale } else { 0.0 };
    CpuUse {
        server_secs: spent.server,
        machine_secs: spent.machine,
        server_clock: spent.server_clock.map(|c| c.as_str().to_string()),
        machine_clock: Some(spent.machine_clock.as_str().to_string()),
        server_per_unit: spent.server.map(per_unit),
        machine_per_unit: per_unit(spent.machine),
        per: per.to_string(),
    }
}

impl Step<'_> {
    fn sample(&self, workload: &Workload, engine: &str) -> Sample {
        Sample {
            rep: self.rep,
            config: self.config.name.clone(),
            workload: workload.name.clone(),
            engine: engine.to_string(),
            status: Status::Ok,
            note: None,
            value: None,
            unit: workload.unit().to_string(),
            secs: 0.0,
            close_secs: None,
            bytes: None,
            files: None,
            cpu: None,
            write_sizes: None,
            profile: None,
            requests: None,
        }
    }

    /// Starts a flame graph recording when this measurement is the
    /// profiled one of its cell: the first repetition, first engine.
    fn start_profile(&self, workload: &Workload, engine: &str) -> Option<(Recording, String)> {
        let first_engine = engines_for(self.plan, workload, 1).first() == Some(&engine);
        if !self.plan.profile || self.rep != 1 || !first_engine {
            return None;
        }
        let dir = self.plan.out_dir.join("profiles");
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!("--profile: creating {}: {e}", dir.display());
            return None;
        }
        let name = format!("{}-{}", self.config.name, workload.name);
        match Recording::start(&dir.join(format!("{name}.perf.data"))) {
            Ok(r) => Some((r, format!("profiles/{name}.svg"))),
            Err(e) => {
                tracing::warn!("--profile: {e:#}");
                None
            }
        }
    }

    fn stats_snapshot(&self) -> Option<stats::Snapshot> {
        if !self.config.is_fastfuse() {
            return None;
        }
        let (bin, mnt) = (self.plan.fastfuse_bin.as_ref()?, self.mounted.mountpoint()?);
        match stats::query(bin, mnt) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("{}: {e}", self.config.name);
                None
            }
        }
    }

    /// What the server counted since `before` (taken right before the
    /// measured part).
    fn stats_delta(
        &self,
        before: Option<stats::Snapshot>,
    ) -> Option<(WriteSizes, BTreeMap<String, u64>)> {
        let (before, after) = (before?, self.stats_snapshot()?);
        Some((
            stats::delta(&before, &after),
            stats::requests(&before, &after),
        ))
    }

    /// Runs one workload with one engine and records it.
    fn run(&self, workload: &Workload, engine: &str) -> Sample {
        let mut sample = self.sample(workload, engine);
        if let Kind::Data(spec) = &workload.kind {
            if spec.pattern.reads() && !self.config.stores_data() {
                sample.status = Status::Skipped;
                sample.note =
                    Some("this mode drops written data, so there is nothing to read".into());
                return sample;
            }
        }
        let recording = self.start_profile(workload, engine);
        let measured = match &workload.kind {
            Kind::Data(spec) => self.data(&workload.name, spec, engine),
            Kind::Meta(op) => self.meta(*op),
        };
        if let Some((recording, svg)) = recording {
            let title = format!("{} {} ({engine})", self.config.name, workload.name);
            match recording.finish(&self.plan.out_dir.join(&svg), &title) {
                Ok(()) => sample.profile = Some(svg),
                Err(e) => tracing::warn!("--profile {title}: {e:#}"),
            }
        }
        match measured {
            Ok(m) => {
                sample.value = Some(m.value);
                sample.secs = m.secs;
                sample.close_secs = m.close_secs;
                sample.bytes = m.bytes;
                sample.files = m.files;
                sample.cpu = Some(cpu_use(m.cpu, m.bytes, m.files));
                if let Some((sizes, requests)) = m.stats {
                    if sizes.writes > 0 {
                        sample.write_sizes = Some(sizes);
                    }
                    sample.requests = Some(requests);
                }
            }
            Err(e) => {
                sample.status = Status::Failed;
                sample.note = Some(format!("{e:#}"));
            }
        }
        sample
    }

    fn data(&self, name: &str, spec: &DataSpec, engine: &str) -> anyhow::Result<Measured> {
        let dir = self.mounted.dir();
        let result = self.data_in(dir, name, spec, engine);
        // Free the source's memory for the next workload, whatever happened.
        let files = if self.plan.seed_ramp.is_some() {
            fio::SEED_JOB
        } else {
            name
        };
        let removed = loadgen::remove_files(dir, files, spec.jobs);
        let m = result?;
        removed.context("removing the job files")?;
        Ok(m)
    }

    fn data_in(
        &self,
        dir: &Path,
        name: &str,
        spec: &DataSpec,
        engine: &str,
    ) -> anyhow::Result<Measured> {
        if spec.pattern.needs_layout() {
            loadgen::layout(dir, name, spec).context("laying out the files")?;
        } else if engine == "builtin" {
            loadgen::prepare(dir, name, spec).context("creating the files")?;
        }
        if spec.cold {
            drop_caches(meta::Drop::All)?;
        }
        let stats_before = self.stats_snapshot();
        let mark = CpuMark::now(self.mounted.server_pid());
        let (bytes, bytes_per_sec, secs, close_secs) = if engine == "fio" {
            let o = match self.plan.seed_ramp {
                Some(ramp) => fio::run_seed(dir, spec, ramp, self.scratch, self.stop)?,
                None => fio::run(
                    dir,
                    name,
                    spec,
                    self.plan.fio_threads,
                    self.scratch,
                    self.stop,
                )?,
            };
            (
                o.read_bytes + o.write_bytes,
                o.bytes_per_sec(),
                o.secs,
                None,
            )
        } else {
            let o = loadgen::run(dir, name, spec, self.stop, &self.plan.jobs)?;
            (
                o.read_bytes + o.write_bytes,
                o.bytes_per_sec(),
                o.secs,
                Some(o.close_secs),
            )
        };
        let cpu = mark.spent();
        let stats = self.stats_delta(stats_before);
        if self.stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        if bytes == 0 {
            bail!("no bytes moved");
        }
        Ok(Measured {
            value: bytes_per_sec / MIB as f64,
            secs,
            close_secs,
            bytes: Some(bytes),
            files: None,
            cpu,
            stats,
        })
    }

    fn meta(&self, op: MetaOp) -> anyhow::Result<Measured> {
        let dir = self.mounted.dir();
        let tree = self.tree.context("no tree generated")?;
        match op {
            MetaOp::Untar => {
                if self.plan.meta_warmup && !self.warmed.replace(true) && !Tree::present_in(dir) {
                    // The first extraction on a fresh mount is not what a
                    // mount that has served does: over io_uring it ran up
                    // to 1.9x faster than every later one, for fastfuse
                    // and passthrough_hp alike (README, "Local wake-ups").
                    tree.untar(dir).context("tar (warm-up)")?;
                }
                if Tree::present_in(dir) {
                    meta::remove_tree(dir).context("removing the previous tree")?;
                }
            }
            MetaOp::Stat | MetaOp::Rm => {
                if !Tree::present_in(dir) {
                    tree.untar(dir).context("extracting the tree first")?;
                }
            }
        }
        let stats_before = self.stats_snapshot();
        let mark = CpuMark::now(self.mounted.server_pid());
        let (files, secs) = match op {
            MetaOp::Untar => (tree.entries(), tree.untar(dir).context("tar")?),
            MetaOp::Stat => {
                // One cold walk takes ~50 ms, which a 2-CPU VM's noise
                // moved by +-20% between samples: a sample is several
                // (`STAT_WALKS`).
                let (mut seen, mut secs) = (0, 0.0);
                for _ in 0..meta::STAT_WALKS {
                    drop_caches(meta::Drop::Dentries)?;
                    let (n, s) = meta::stat_tree(dir).context("stat")?;
                    if n != tree.entries() {
                        bail!("saw {n} entries, the tree has {}", tree.entries());
                    }
                    seen += n;
                    secs += s;
                }
                (seen, secs)
            }
            MetaOp::Rm => (tree.entries(), meta::remove_tree(dir).context("rm -rf")?),
        };
        let cpu = mark.spent();
        let stats = self.stats_delta(stats_before);
        if Tree::present_in(dir) && op == MetaOp::Rm {
            bail!("rm -rf left the tree in place");
        }
        Ok(Measured {
            value: files as f64 / secs.max(1e-9),
            secs,
            close_secs: None,
            bytes: None,
            files: Some(files),
            cpu,
            stats,
        })
    }
}

/// Drops caches; without root that cannot be done, which the report says
/// once (the run's warnings), so it is not an error here.
fn drop_caches(what: meta::Drop) -> anyhow::Result<()> {
    match meta::drop_caches(what) {
        Err(_) if !mounts::is_root() => Ok(()),
        r => r.context("dropping caches"),
    }
}

fn describe(sample: &Sample) -> String {
    let head = format!(
        "rep {} {:<22} {:<20} {:<7}",
        sample.rep, sample.config, sample.workload, sample.engine
    );
    match (sample.status, sample.value) {
        (Status::Ok, Some(v)) => {
            let cpu = sample.cpu.as_ref().map_or(String::new(), |c| {
                format!(
                    "  cpu {}: server {} machine {}",
                    c.per,
                    c.server_per_unit.map_or("-".into(), figure),
                    figure(c.machine_per_unit)
                )
            });
            format!("{head} {:>9} {}{cpu}", figure(v), sample.unit)
        }
        (Status::Skipped, _) => format!("{head} skipped"),
        _ => format!(
            "{head} FAILED: {}",
            sample.note.as_deref().unwrap_or("unknown")
        ),
    }
}

/// Installs a SIGINT/SIGTERM handler that sets the returned flag (the run
/// then stops at the next check and cleans up).
pub fn stop_flag() -> std::io::Result<std::sync::Arc<AtomicBool>> {
    let flag = std::sync::Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, flag.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, flag.clone())?;
    Ok(flag)
}

/// Runs the plan. Stops early, cleanly, when `stop` is set; the result
/// then says `interrupted`.
pub fn run(plan: &Plan, progress: &mut Progress, stop: &AtomicBool) -> anyhow::Result<BenchRun> {
    let started = now();
    if plan.configs.is_empty() || plan.workloads.is_empty() {
        bail!("nothing to run: no configurations or no workloads");
    }
    if plan.engine != Engine::Builtin && !fio::available() {
        bail!(
            "--engine {:?} needs fio, and fio is not installed",
            plan.engine
        );
    }
    let mut warnings = plan.notes.clone();
    let root = mounts::is_root();
    let max_data = plan
        .workloads
        .iter()
        .filter_map(Workload::data)
        .map(|d| d.file_size * u64::from(d.jobs))
        .max()
        .unwrap_or(0);
    let tree = if plan
        .workloads
        .iter()
        .any(|w| matches!(w.kind, Kind::Meta(_)))
    {
        Some(Tree::generate(plan.sizes.tree_files).context("generating the tree")?)
    } else {
        None
    };
    let tree_bytes = tree.as_ref().map_or(0, |t| t.tar.len() as u64 * 2);
    let tmpfs_size = root.then(|| max_data + max_data / 2 + tree_bytes + 256 * MIB);
    if !root {
        warnings.push(
            "not root: sources are plain directories, not tmpfs; caches cannot be dropped".into(),
        );
    }
    let log_dir = plan.out_dir.join("logs");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let scratch = Scratch::new().context("creating the scratch directory")?;
    let _uring = if plan.configs.iter().any(|c| c.uses_io_uring()) {
        Some(crate::config::UringSwitch::enable().context("enabling FUSE over io_uring")?)
    } else {
        None
    };
    let ctx = MountContext {
        scratch: &scratch,
        fastfuse_bin: plan.fastfuse_bin.as_deref(),
        tmpfs_size,
        log_dir: &log_dir,
    };

    let mut results = Vec::new();
    let mut interrupted = false;
    let n = plan.configs.len();
    // The seed method mounts afresh for every row, as each of the seed's
    // fio runs had a mount of its own; the normal bench runs the workloads
    // of a repetition on one mount.
    let groups: Vec<&[Workload]> = if plan.seed_ramp.is_some() {
        plan.workloads.chunks(1).collect()
    } else {
        vec![&plan.workloads[..]]
    };
    'reps: for rep in 1..=plan.reps {
        for (i, group) in (0..n).flat_map(|i| groups.iter().map(move |g| (i, *g))) {
            let config = &plan.configs[(i + rep as usize - 1) % n];
            if stop.load(Ordering::Relaxed) {
                interrupted = true;
                break 'reps;
            }
            let tag = if groups.len() > 1 {
                format!("rep{rep}-{}-{}", config.name, group[0].name)
            } else {
                format!("rep{rep}-{}", config.name)
            };
            progress.begin(&format!("rep {rep} {}: mounting", config.name));
            let mut mounted = match Mounted::start(config, &ctx, &tag) {
                Ok(m) => m,
                Err(e) => {
                    let msg = format!("rep {rep}: {} did not mount: {e}", config.name);
                    progress.line(&format!("warning: {msg}"));
                    warnings.push(msg);
                    for w in group {
                        for engine in engines_for(plan, w, rep) {
                            let mut s = failed_sample(rep, config, w, engine);
                            s.note = Some(format!("mount failed: {e}"));
                            progress.step(&describe(&s));
                            results.push(s);
                        }
                    }
                    continue;
                }
            };
            let step = Step {
                plan,
                mounted: &mounted,
                config,
                tree: tree.as_ref(),
                scratch: scratch.path(),
                stop,
                rep,
                warmed: std::cell::Cell::new(false),
            };
            for w in group {
                for engine in engines_for(plan, w, rep) {
                    if stop.load(Ordering::Relaxed) {
                        interrupted = true;
                        break;
                    }
                    progress.begin(&format!("rep {rep} {} {} ({engine})", config.name, w.name));
                    let sample = step.run(w, engine);
                    progress.step(&describe(&sample));
                    if sample.status == Status::Failed && !stop.load(Ordering::Relaxed) {
                        warnings.push(format!(
                            "rep {rep} {} {} ({engine}) failed: {}",
                            config.name,
                            w.name,
                            sample.note.as_deref().unwrap_or("?")
                        ));
                    }
                    if stop.load(Ordering::Relaxed) && sample.status == Status::Failed {
                        interrupted = true;
                    } else {
                        results.push(sample);
                    }
                }
                if interrupted {
                    break;
                }
            }
            progress.begin(&format!("rep {rep} {}: unmounting", config.name));
            for note in mounted.teardown() {
                progress.line(&format!("warning: cleanup: {note}"));
                warnings.push(format!("cleanup after rep {rep} {}: {note}", config.name));
            }
            if interrupted {
                break 'reps;
            }
        }
    }
    progress.finish();
    drop(scratch);
    if interrupted {
        warnings.push("interrupted: the results are partial".into());
    }
    Ok(BenchRun {
        schema: SCHEMA.to_string(),
        started,
        finished: now(),
        machine: machine(),
        kernel: kernel(),
        command: plan.command.clone(),
        engine: plan.engine.primary().to_string(),
        both_engines: plan.engine == Engine::Both,
        source: if root { "tmpfs" } else { "tempdir" }.to_string(),
        options: RunOptions {
            reps: plan.reps,
            size_per_job: plan.sizes.file_size,
            runtime_secs: plan.sizes.runtime.as_secs_f64(),
            tree_entries: tree.as_ref().map_or(0, Tree::entries),
            quick: plan.quick,
        },
        configs: plan
            .configs
            .iter()
            .map(|c| ConfigInfo {
                name: c.name.clone(),
                family: c.family.as_str().to_string(),
                command: c.command_line(),
            })
            .collect(),
        workloads: plan
            .workloads
            .iter()
            .map(|w| WorkloadInfo {
                name: w.name.clone(),
                unit: w.unit().to_string(),
                description: match (plan.seed_ramp, w.data()) {
                    (Some(ramp), Some(d)) => crate::seed::describe(d, ramp),
                    _ if plan.meta_warmup && w.meta() == Some(MetaOp::Untar) => format!(
                        "{}, on a mount that extracted and removed it once before",
                        w.describe(tree.as_ref().map_or(0, Tree::entries))
                    ),
                    _ => w.describe(tree.as_ref().map_or(0, Tree::entries)),
                },
            })
            .collect(),
        results,
        warnings,
        interrupted,
        seed_method: plan.seed_ramp.map(|ramp| SeedMethodInfo {
            ramp_secs: ramp.as_secs_f64(),
            size_per_job: plan.sizes.file_size,
            rows: crate::seed::rows(&plan.workloads),
            outliers: crate::seed::OUTLIER_RULE.to_string(),
        }),
    })
}

/// The engines of a workload in repetition `rep`: with both, their order
/// alternates so that neither always runs on the fresher mount.
fn engines_for(plan: &Plan, w: &Workload, rep: u32) -> Vec<&'static str> {
    match w.kind {
        Kind::Data(_) => {
            let mut e = plan.engine.names().to_vec();
            if rep & 1 == 0 {
                e.reverse();
            }
            e
        }
        Kind::Meta(_) => vec!["builtin"],
    }
}

fn failed_sample(rep: u32, config: &ConfigSpec, w: &Workload, engine: &str) -> Sample {
    Sample {
        rep,
        config: config.name.clone(),
        workload: w.name.clone(),
        engine: engine.to_string(),
        status: Status::Failed,
        note: None,
        value: None,
        unit: w.unit().to_string(),
        secs: 0.0,
        close_secs: None,
        bytes: None,
        files: None,
        cpu: None,
        write_sizes: None,
        profile: None,
        requests: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_per_gib_and_per_kfile() {
        let spent = CpuSpent {
            server: Some(1.0),
            server_clock: Some(crate::cpu::ServerClock::Schedstat),
            machine: 4.0,
            machine_clock: crate::cpu::MachineClock::Cpuacct,
        };
        let c = cpu_use(spent, Some(2 * GIB), None);
        assert_eq!((c.server_per_unit, c.machine_per_unit), (Some(0.5), 2.0));
        assert_eq!(c.per, "s/GiB");
        let c = cpu_use(spent, None, Some(2000));
        // 1 s over 2000 files = 500 ms per 1000 files.
        assert_eq!(c.server_per_unit, Some(500.0));
        assert_eq!(c.per, "ms/kfile");
    }

    #[test]
    fn machine_facts_are_read() {
        let m = machine();
        assert!(m.cpus >= 1);
        assert!(m.mem_total_bytes > 0);
        assert!(!kernel().is_empty());
        assert!(now().ends_with('Z'));
    }
}
