//! The `fastfuse bench` command line: options parsed first, then turned
//! into a [`Plan`], run, and reported.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::config::{self, ConfigSpec};
use crate::runner::{self, Engine, Plan, Progress};
use crate::schema::Status;
use crate::units::{parse_duration, parse_size};
use crate::workload::{self, Sizes};
use crate::{check, compare, loadgen, report, seed};

/// `fastfuse bench`: the seed's fio table over tmpfs, fastfuse's modes and
/// other FUSE servers.
///
/// Runs every configuration (each on a fresh tmpfs source) × every
/// workload, repeated and interleaved, and writes results.json, report.md
/// and chart.svg to --out. Needs root for tmpfs sources, kernel
/// passthrough and dropping caches.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// Compare two runs instead.
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// Options of a run.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands of `fastfuse bench`.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Print two runs side by side: per configuration, rows workload,
    /// columns Before, After, % diff.
    Compare {
        /// The earlier run's results.json.
        old: PathBuf,
        /// The later run's results.json.
        new: PathBuf,
        /// Test every row relative to this configuration's median in each
        /// run, which cancels the machine's drift between the runs (its own
        /// rows are then not tested). Default: libfuse-ll when both runs
        /// have it, else the limit (tmpfs), else raw values; `limit` for
        /// the limit, `none` for raw values.
        #[arg(long, value_name = "CONFIG")]
        reference: Option<String>,
    },
    /// Make report.md and chart.svg again from a run's results.json (in
    /// its directory) and print the report.
    Report {
        /// The run's results.json.
        results: PathBuf,
    },
    /// Check that the built-in load generator measures what fio does, on
    /// a run made with `--engine both` (the seed rows, each within its
    /// band; see the report's "Engine agreement"). Fails when a row is out
    /// of band or the run has none.
    Check {
        /// The run's results.json.
        results: PathBuf,
    },
}

/// Options of a run.
#[derive(clap::Args, Debug, Default)]
pub struct RunArgs {
    /// Small files and short runs (the whole default suite in under two
    /// minutes on two cores); one repetition.
    #[arg(long)]
    pub quick: bool,
    /// Configurations to run, comma-separated (default: all available
    /// but the opt-in ones). Known: tmpfs, fastfuse-seed, fastfuse and
    /// fastfuse-uring (the default mount: kernel passthrough as root),
    /// fastfuse-wt, fastfuse-wb (the writeback cache), fastfuse-bypass1,
    /// fastfuse-bypass2, libfuse-ll (libfuse's passthrough_ll), libfuse-hp
    /// and libfuse-hp-uring (libfuse 3.18.3's passthrough_hp over /dev/fuse
    /// and io_uring; scripts/setup.sh builds both peers), mergerfs-wb,
    /// mergerfs, bindfs, and --peer names; opt-in: fastfuse-nosplice (the
    /// seed's without splicing WRITE data), fastfuse-uring1 (io_uring with
    /// one ring entry per queue), fastfuse-wb-uring (the writeback cache
    /// over io_uring).
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    pub configs: Vec<String>,
    /// Workloads to run, comma-separated (default: all). Known:
    /// seq-write-1k, seq-write-4k, seq-write-1M, seq-write-1M-32jobs,
    /// seq-read-1M-cold, rand-rw-4k, untar, stat, rm. With --seed-method,
    /// the rows (`--rows` too): the first four.
    #[arg(long, alias = "rows", value_delimiter = ',', value_name = "X,Y")]
    pub workloads: Vec<String>,
    /// Load generator of the data workloads; `both` runs fio too and
    /// checks that the two agree.
    #[arg(long, value_enum, default_value_t = Engine::Builtin)]
    pub engine: Engine,
    /// Another FUSE server as a configuration: NAME='COMMAND {src} {mnt}'
    /// (run with sh; may repeat).
    #[arg(long = "peer", value_name = "NAME='CMD {src} {mnt}'")]
    pub peers: Vec<String>,
    /// Repetitions (default 3; 1 with --quick; 10 with --seed-method).
    /// `bench compare` can mark a change only with enough of them: 4 a
    /// run for a single row, 6 among ten rows, 8 among the ~100 rows of a
    /// full run (see `fastfuse_bench::signif`).
    #[arg(long, value_name = "N")]
    pub reps: Option<u32>,
    /// Where results go (default target/bench/TIMESTAMP).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// File size per job of the data workloads, as fio's --size (default
    /// 256M; 32M with --quick). The 32-job workload shares 2 × SIZE.
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub size: Option<u64>,
    /// Run time of each data workload: 3, 0.5, 700ms (default 3 s; 0.7 s
    /// with --quick).
    #[arg(long, value_parser = parse_duration, value_name = "TIME")]
    pub runtime: Option<Duration>,
    /// Files in the metadata tree (default 5000; 1000 with --quick).
    #[arg(long, value_name = "N")]
    pub files: Option<u32>,
    /// The fastfuse binary to mount with (default: this one); e.g. an
    /// older build, for a before/after comparison.
    #[arg(long, value_name = "PATH")]
    pub fastfuse_bin: Option<PathBuf>,
    /// Run each job as a thread of one process instead of a process of
    /// its own (fio's --thread; passed to fio too).
    #[arg(long)]
    pub thread: bool,
    /// Time the first extraction of the metadata tree on each mount, with
    /// no untimed extraction and removal before it. Over io_uring the first
    /// one runs in a scheduler state of its own (callers woken on the CPU
    /// they slept on, by chance): see the README's "Local wake-ups".
    #[arg(long)]
    pub no_warmup: bool,
    /// Record a flame graph (perf record -a -g, cpu-clock) during the first
    /// repetition of each configuration and workload, linked from
    /// report.md; profiles/ holds the SVGs. Without perf (Debian's
    /// linux-perf) the run goes on without them.
    #[arg(long)]
    pub profile: bool,
    /// Measure as the LKML thread of the FUSE writeback patch did: fio's
    /// own command line (`fio --name=writeback --ioengine=sync --rw=write
    /// --bs=1k|4k|1M --size=2G --numjobs=2 --ramp_time=30
    /// --group_reporting=1 --directory=MNT`, and 32 jobs of 1M with the
    /// largest size per job that fits in memory), ten runs a cell, each on
    /// a fresh mount, the cell the mean after dropping outliers (Tukey's
    /// fences); configurations fastfuse-seed and libfuse-ll unless
    /// --configs says otherwise. Takes 40 minutes and more.
    #[arg(long, conflicts_with_all = ["quick", "size", "runtime", "files", "thread", "engine"])]
    pub seed_method: bool,
    /// Internal (tests): fio's --ramp_time for --seed-method (default 30).
    #[arg(long, hide = true, requires = "seed_method", value_parser = parse_duration)]
    pub seed_ramp: Option<Duration>,
    /// Internal (tests): fio's --size per job for --seed-method (default
    /// 2G; the 32-job row at most what fits).
    #[arg(long, hide = true, requires = "seed_method", value_parser = parse_size)]
    pub seed_size: Option<u64>,
    /// List the configurations and workloads, and exit.
    #[arg(long)]
    pub list: bool,
    /// Internal: be one job process of the built-in engine.
    #[arg(long, hide = true, value_name = "REQUEST")]
    pub job_worker: Option<String>,
}

/// How the running program starts itself again as a job process of the
/// built-in engine: `exe ARGS --job-worker REQUEST` must reach [`run`].
#[derive(Debug, Clone)]
pub struct SelfExe {
    /// The program.
    pub exe: PathBuf,
    /// Arguments before `--job-worker` (e.g. `["bench"]`).
    pub args: Vec<String>,
}

fn timestamp_dir() -> PathBuf {
    let stamp = runner::now().replace(['-', ':'], "");
    PathBuf::from("target/bench").join(stamp)
}

/// Resolves the options into a plan. `default_bin`: the fastfuse binary to
/// use when `--fastfuse-bin` is not given; `worker`: how to start job
/// processes (without it, jobs are threads).
pub fn plan(
    args: &RunArgs,
    default_bin: Option<&Path>,
    worker: Option<&SelfExe>,
    argv: Vec<String>,
) -> anyhow::Result<Plan> {
    let base = if args.quick {
        Sizes::QUICK
    } else {
        Sizes::FULL
    };
    let sizes = Sizes {
        file_size: if args.seed_method {
            args.seed_size.unwrap_or(seed::SIZE)
        } else {
            args.size.unwrap_or(base.file_size)
        },
        // The seed's runs are not time based.
        runtime: if args.seed_method {
            Duration::ZERO
        } else {
            args.runtime.unwrap_or(base.runtime)
        },
        tree_files: args.files.unwrap_or(base.tree_files),
    };
    let seed_size = args.seed_size.unwrap_or(seed::SIZE);
    let workloads = if args.seed_method {
        seed::workloads(
            seed_size,
            runner::machine().mem_total_bytes,
            &args.workloads,
        )
    } else {
        workload::select(&sizes, &args.workloads)
    }
    .map_err(anyhow::Error::msg)?;
    let (size, flag) = if args.seed_method {
        (seed_size, "--seed-size")
    } else {
        (sizes.file_size, "--size")
    };
    for w in &workloads {
        if let Some(d) = w.data() {
            if size < d.bs {
                bail!("{flag} {size} is smaller than {}'s block size", w.name);
            }
        }
    }
    let bin = args
        .fastfuse_bin
        .clone()
        .or_else(|| default_bin.map(Path::to_path_buf));
    if let Some(b) = &bin {
        if args.fastfuse_bin.is_some() && !b.exists() {
            bail!("--fastfuse-bin {}: no such file", b.display());
        }
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let peers = config::PeerBins::find(bin.as_deref());
    let (mut usable, missing) =
        config::known(bin.is_some(), cpus, crate::mounts::is_root(), &peers);
    for p in &args.peers {
        let peer = config::parse_peer(p).map_err(anyhow::Error::msg)?;
        if usable.iter().any(|c| c.name == peer.name) {
            bail!("--peer {}: given twice", peer.name);
        }
        usable.push(peer);
    }
    let mut notes = Vec::new();
    let jobs = match worker {
        Some(w) if !args.thread => loadgen::Jobs::Processes {
            exe: w.exe.clone(),
            args: w.args.clone(),
        },
        _ => {
            if !args.thread {
                notes.push("built-in jobs ran as threads (no worker program)".into());
            }
            loadgen::Jobs::Threads
        }
    };
    let wanted: Vec<String> = if args.seed_method && args.configs.is_empty() {
        seed::CONFIGS.map(String::from).to_vec()
    } else {
        args.configs.clone()
    };
    let configs: Vec<ConfigSpec> = if wanted.is_empty() {
        for (name, why) in &missing {
            if !crate::config::OPT_IN.contains(&name.as_str()) {
                // The report's headline is fastfuse against it.
                if name == "libfuse-ll" {
                    tracing::warn!("{name} not run: {why}");
                }
                notes.push(format!("{name} not run: {why}"));
            }
        }
        usable
            .into_iter()
            .filter(|c| !crate::config::OPT_IN.contains(&c.name.as_str()))
            .collect()
    } else {
        let mut picked = Vec::new();
        for name in &wanted {
            if let Some((_, why)) = missing.iter().find(|(n, _)| n == name) {
                bail!("configuration {name} is not available: {why}");
            }
            if !usable.iter().any(|c| &c.name == name) {
                bail!(
                    "unknown configuration {name:?}; known: {}",
                    usable
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        // Table order, not command-line order.
        for c in usable {
            if wanted.contains(&c.name) {
                picked.push(c);
            }
        }
        picked
    };
    let profile = args.profile && crate::profile::available();
    if args.profile && !profile {
        let why =
            "--profile: perf is not installed (Debian's linux-perf); running without flame graphs";
        eprintln!("warning: {why}");
        notes.push(why.into());
    }
    Ok(Plan {
        configs,
        workloads,
        sizes,
        reps: args
            .reps
            .unwrap_or(if args.seed_method {
                seed::REPS
            } else if args.quick {
                1
            } else {
                3
            })
            .max(1),
        engine: if args.seed_method {
            Engine::Fio
        } else {
            args.engine
        },
        fastfuse_bin: bin,
        out_dir: args.out.clone().unwrap_or_else(timestamp_dir),
        quick: args.quick,
        command: argv,
        notes,
        jobs,
        fio_threads: args.thread,
        profile,
        meta_warmup: !args.no_warmup,
        seed_ramp: args
            .seed_method
            .then(|| args.seed_ramp.unwrap_or(seed::RAMP)),
    })
}

/// Runs `fastfuse bench` (or `bench compare`, or a job process).
/// `fastfuse_bin`: the binary that mounts fastfuse configurations (the
/// running one); `worker`: how to start job processes.
pub fn run(
    args: BenchArgs,
    fastfuse_bin: Option<&Path>,
    worker: Option<SelfExe>,
) -> anyhow::Result<()> {
    if let Some(request) = &args.run.job_worker {
        return loadgen::serve_job(request).context("job process");
    }
    match &args.command {
        Some(BenchCommand::Compare {
            old,
            new,
            reference,
        }) => {
            let (old, new) = (compare::load(old)?, compare::load(new)?);
            let reference = match reference.as_deref() {
                None => compare::Reference::Default,
                Some("limit") => compare::Reference::Limit,
                Some("none") => compare::Reference::None,
                Some(name) => compare::Reference::Config(name.to_string()),
            };
            print!("{}", compare::compare_with(&old, &new, &reference)?);
            return Ok(());
        }
        Some(BenchCommand::Check { results }) => {
            let run = compare::load(results)?;
            let rows = check::engines_agree(&run);
            if rows.is_empty() {
                bail!(
                    "{} has no seed row measured by both engines (run with --engine both)",
                    results.display()
                );
            }
            print!("{}", check::markdown(&rows));
            let out = rows.iter().filter(|r| !r.ok()).count();
            if out > 0 {
                bail!("{out} row(s) out of band");
            }
            return Ok(());
        }
        Some(BenchCommand::Report { results }) => {
            let run = compare::load(results)?;
            let dir = results.parent().unwrap_or(Path::new("."));
            print!("{}", report::write_all(&run, dir)?);
            return Ok(());
        }
        None => {}
    }
    let argv: Vec<String> = std::env::args().collect();
    let plan = plan(&args.run, fastfuse_bin, worker.as_ref(), argv)?;
    if args.run.list {
        for c in &plan.configs {
            println!("config   {:<22} {}", c.name, c.command_line());
        }
        for n in &plan.notes {
            println!("         {n}");
        }
        for w in &plan.workloads {
            println!(
                "workload {:<22} {}",
                w.name,
                w.describe(u64::from(plan.sizes.tree_files))
            );
        }
        return Ok(());
    }
    let stop = runner::stop_flag().context("installing the Ctrl-C handler")?;
    let mut progress = Progress::new(runner::total_steps(&plan));
    let result = runner::run(&plan, &mut progress, &stop)?;
    let md = report::write_all(&result, &plan.out_dir)?;
    print!("{md}");
    eprintln!("results in {}", plan.out_dir.display());
    if result.interrupted {
        bail!("interrupted; partial results in {}", plan.out_dir.display());
    }
    let failed = result
        .results
        .iter()
        .filter(|s| s.status == Status::Failed)
        .count();
    if failed > 0 {
        bail!("{failed} measurement(s) failed; see the warnings");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Top {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> BenchArgs {
        Top::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .unwrap()
            .bench
    }

    #[test]
    fn options_become_a_plan() {
        let a = parse(&[
            "--quick",
            "--configs",
            "tmpfs",
            "--workloads",
            "seq-write-1M,rm",
            "--size",
            "8M",
            "--runtime",
            "250ms",
            "--out",
            "/tmp/x",
        ]);
        let p = plan(&a.run, None, None, vec![]).unwrap();
        assert_eq!(p.configs.len(), 1);
        assert_eq!(p.workloads.len(), 2);
        assert_eq!(p.reps, 1);
        assert_eq!(p.sizes.file_size, 8 << 20);
        assert_eq!(p.sizes.runtime, Duration::from_millis(250));
        assert_eq!(p.out_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn bad_choices_are_refused() {
        let a = parse(&["--configs", "fastfuse-seed"]);
        let e = plan(&a.run, None, None, vec![]).unwrap_err().to_string();
        assert!(e.contains("not available"), "{e}");
        let a = parse(&["--configs", "nfs"]);
        assert!(plan(&a.run, None, None, vec![]).is_err());
        let a = parse(&["--workloads", "seq-write-1M", "--size", "4k"]);
        assert!(plan(&a.run, None, None, vec![]).is_err());
    }

    #[test]
    fn peers_join_the_configurations() {
        let a = parse(&[
            "--peer",
            "mine=mybinary -f {src} {mnt}",
            "--configs",
            "tmpfs,mine",
        ]);
        let p = plan(&a.run, None, None, vec![]).unwrap();
        let names: Vec<_> = p.configs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["tmpfs", "mine"]);
    }

    #[test]
    fn seed_method_plans_the_seeds_runs() {
        let a = parse(&["--seed-method", "--configs", "tmpfs"]);
        let p = plan(&a.run, None, None, vec![]).unwrap();
        assert_eq!(p.reps, 10);
        assert_eq!(p.engine, Engine::Fio);
        assert_eq!(p.seed_ramp, Some(Duration::from_secs(30)));
        let names: Vec<_> = p.workloads.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, seed::ROWS.map(|r| r.0));
        assert_eq!(p.workloads[0].data().unwrap().file_size, 2 << 30);
        let a = parse(&[
            "--seed-method",
            "--rows",
            "seq-write-1M",
            "--reps",
            "3",
            "--seed-ramp",
            "100ms",
            "--seed-size",
            "4M",
            "--configs",
            "tmpfs",
        ]);
        let p = plan(&a.run, None, None, vec![]).unwrap();
        assert_eq!((p.reps, p.workloads.len()), (3, 1));
        assert_eq!(p.workloads[0].data().unwrap().file_size, 4 << 20);
        assert_eq!(p.seed_ramp, Some(Duration::from_millis(100)));
        // Its default configurations need the fastfuse binary.
        let e = plan(&parse(&["--seed-method"]).run, None, None, vec![])
            .unwrap_err()
            .to_string();
        assert!(e.contains("fastfuse-seed is not available"), "{e}");
        let bad = |args: &[&str]| {
            Top::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).is_err()
        };
        assert!(bad(&["--seed-method", "--quick"]));
        assert!(bad(&["--seed-method", "--engine", "builtin"]));
        assert!(bad(&["--seed-ramp", "1"]));
        let a = parse(&[
            "--seed-method",
            "--workloads",
            "untar",
            "--configs",
            "tmpfs",
        ]);
        assert!(plan(&a.run, None, None, vec![]).is_err());
    }

    #[test]
    fn compare_is_a_subcommand() {
        let a = parse(&["compare", "a.json", "b.json"]);
        assert!(matches!(a.command, Some(BenchCommand::Compare { .. })));
    }
}
