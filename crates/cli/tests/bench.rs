//! `fastfuse bench` end to end: a tiny run of the whole suite produces a
//! complete result, Ctrl-C leaves nothing mounted, the two engines agree,
//! and `bench compare` prints the seed's format.
//!
//! Each run is the real binary as root (tmpfs sources). A sweeper unmounts
//! whatever a run left under its scratch directory, also when a test fails.
//! The tests take turns: they measure, and would disturb each other.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fastfuse_bench::schema::{BenchRun, Status};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn fastfuse_bin() -> &'static str {
    env!("CARGO_BIN_EXE_fastfuse")
}

/// Mountpoints under `prefix` in /proc/self/mountinfo, deepest first.
fn mounts_under(prefix: &str) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(prefix))
        .map(PathBuf::from)
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// A bench process and the scratch directories it may have made
/// (`/tmp/fastfuse-bench.PID.*`): on drop, the process is ended by its pid
/// and anything still mounted there is unmounted.
struct Run {
    child: Option<Child>,
    prefix: String,
}

impl Run {
    fn start(args: &[&str]) -> Run {
        let child = Command::new(fastfuse_bin())
            .arg("bench")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let prefix = format!(
            "{}/fastfuse-bench.{}.",
            std::env::temp_dir().display(),
            child.id()
        );
        Run {
            child: Some(child),
            prefix,
        }
    }

    /// Waits for the end, within `limit`.
    fn finish(&mut self, limit: Duration) -> Output {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + limit;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "fastfuse bench did not finish in {limit:?}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for m in mounts_under(&self.prefix) {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        // With nothing mounted under them any more, the scratch directories
        // of a bench that could not clean up (killed) can go.
        if mounts_under(&self.prefix).is_empty() {
            for e in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
                if e.path().to_string_lossy().starts_with(self.prefix.as_str()) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

fn run_ok(args: &[&str], limit: Duration) -> (BenchRun, String, tempfile::TempDir) {
    let out_dir = tempfile::tempdir().unwrap();
    let mut all: Vec<&str> = args.to_vec();
    let out = out_dir.path().to_str().unwrap().to_string();
    all.extend(["--out", &out]);
    let mut run = Run::start(&all);
    let output = run.finish(limit);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "fastfuse bench {args:?}: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        mounts_under(&run.prefix).is_empty(),
        "left mounted: {:?}",
        mounts_under(&run.prefix)
    );
    let json = std::fs::read_to_string(out_dir.path().join("results.json")).unwrap();
    let result: BenchRun = serde_json::from_str(&json).unwrap();
    (result, stdout, out_dir)
}

fn installed(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The whole suite on tiny sizes: the JSON follows the schema, and every
/// configuration × workload has a number (reads on a bypass mode, which
/// drops data, are "skipped").
#[test]
fn quick_run_covers_every_configuration_and_workload() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut configs = vec![
        "tmpfs",
        "fastfuse-seed",
        "fastfuse-nosplice",
        "fastfuse-wt",
        "fastfuse-bypass2",
    ];
    // libfuse's passthrough_ll and passthrough_hp, where the bench finds
    // them (scripts/setup.sh builds them next to this binary's target
    // directory).
    let peers = fastfuse_bench::config::PeerBins::find(Some(std::path::Path::new(fastfuse_bin())));
    for (name, bin) in [("libfuse-ll", &peers.ll), ("libfuse-hp", &peers.hp)] {
        if bin.is_some() {
            configs.push(name);
        }
    }
    for peer in ["mergerfs-wb", "bindfs"] {
        if installed(peer.trim_end_matches("-wb")) {
            configs.push(peer);
        }
    }
    let list = configs.join(",");
    let t = Instant::now();
    let (result, stdout, dir) = run_ok(
        &[
            "--quick",
            "--size",
            "8M",
            "--runtime",
            "200ms",
            "--files",
            "200",
            "--reps",
            "1",
            "--configs",
            &list,
        ],
        Duration::from_secs(120),
    );
    eprintln!("quick run of {list} took {:?}", t.elapsed());

    // The JSON's raw shape, as a reader in another language sees it.
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("results.json")).unwrap())
            .unwrap();
    assert_eq!(raw["schema"], "fastfuse-bench/1");
    for key in [
        "machine",
        "kernel",
        "command",
        "results",
        "configs",
        "workloads",
    ] {
        assert!(!raw[key].is_null(), "no {key:?} in the JSON");
    }
    assert!(raw["command"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "--quick"));

    assert_eq!(result.source, "tmpfs");
    let names: Vec<&str> = result.configs.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, configs);
    assert_eq!(result.workloads.len(), 9);
    for c in &result.configs {
        for w in &result.workloads {
            let samples: Vec<_> = result
                .results
                .iter()
                .filter(|s| s.config == c.name && s.workload == w.name)
                .collect();
            assert_eq!(samples.len(), 1, "{} {}", c.name, w.name);
            let s = samples[0];
            let drops_data = c.family == "fastfuse-bypass";
            let reads = ["seq-read-1M-cold", "rand-rw-4k"].contains(&w.name.as_str());
            if drops_data && reads {
                assert_eq!(s.status, Status::Skipped, "{s:?}");
                continue;
            }
            assert_eq!(s.status, Status::Ok, "{s:?}");
            assert!(s.value.unwrap() > 0.0, "{s:?}");
            assert_eq!(s.unit, w.unit);
            let cpu = s.cpu.as_ref().unwrap();
            assert_eq!(cpu.server_secs.is_some(), c.family != "limit", "{s:?}");
            // Which counters, in the JSON.
            assert_eq!(cpu.server_clock.is_some(), c.family != "limit", "{s:?}");
            let machine = cpu.machine_clock.as_deref().unwrap();
            assert!(
                ["cpuacct", "proc-schedstat", "stat-ticks"].contains(&machine),
                "{s:?}"
            );
            if c.family.starts_with("fastfuse") && w.name.starts_with("seq-write") {
                let sizes = s.write_sizes.as_ref().expect("fastfuse WRITE sizes");
                assert!(sizes.writes > 0);
            }
            // Every fastfuse sample counts its requests; the others have
            // no server to ask.
            let requests = s.requests.as_ref();
            assert_eq!(
                requests.is_some(),
                c.family.starts_with("fastfuse"),
                "{s:?}"
            );
            if let Some(r) = requests {
                let expect = match w.name.as_str() {
                    "untar" => "CREATE",
                    "stat" => "LOOKUP",
                    "rm" => "UNLINK",
                    n if n.starts_with("seq-write") => "WRITE",
                    _ => "READ",
                };
                assert!(r.get(expect).is_some_and(|&n| n > 0), "{expect}: {s:?}");
            }
        }
    }
    // The table, the chart.
    assert!(stdout.contains("| seq-write-1M | MiB/s |"), "{stdout}");
    if configs.contains(&"libfuse-ll") {
        assert!(
            stdout.contains("## Headline: fastfuse-seed vs libfuse-ll"),
            "{stdout}"
        );
        assert!(
            stdout.contains(
                "| workload | unit | fastfuse-seed | libfuse-ll | fastfuse-seed / libfuse-ll |"
            ),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains("## WRITE sizes seen by fastfuse"),
        "{stdout}"
    );
    assert!(stdout.contains("## Requests per file"), "{stdout}");
    for w in ["untar", "stat", "rm"] {
        let table = stdout
            .split(&format!("\n### {w}\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("no requests table for {w}: {stdout}"));
        let header = table.lines().nth(1).unwrap();
        assert!(
            header.starts_with("| config |") && header.ends_with("| total | server µs/file |"),
            "{header}"
        );
        assert!(
            table.contains("\n| fastfuse-seed | "),
            "{w}: no fastfuse-seed row: {table}"
        );
    }
    let svg = std::fs::read_to_string(dir.path().join("chart.svg")).unwrap();
    assert!(svg.starts_with("<svg"));
}

/// `--seed-method` with its test knobs (a 200 ms ramp, 8M per job): the
/// seed's four rows, fio as the seed ran it, two runs a cell; the JSON records the method and its rows, and
/// report.md has the headline table with the LKML column, the outlier
/// rule and what the ramp did.
#[test]
fn seed_method_runs_the_seeds_fio_command_lines() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !installed("fio") {
        eprintln!("skipped: fio is not installed");
        return;
    }
    let (result, stdout, dir) = run_ok(
        &[
            "--seed-method",
            "--seed-ramp",
            "200ms",
            "--seed-size",
            "8M",
            "--reps",
            "2",
            "--configs",
            "fastfuse-seed",
        ],
        Duration::from_secs(120),
    );
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("results.json")).unwrap())
            .unwrap();
    assert_eq!(raw["schema"], "fastfuse-bench/1");
    let method = &raw["seed_method"];
    assert_eq!(method["ramp_secs"], 0.2);
    assert_eq!(method["size_per_job"], 8 << 20);
    assert!(method["outliers"].as_str().unwrap().contains("Tukey"));
    let rows: Vec<(String, u64, u64, u64)> = method["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["workload"].as_str().unwrap().to_string(),
                r["bs"].as_u64().unwrap(),
                r["jobs"].as_u64().unwrap(),
                r["size_per_job"].as_u64().unwrap(),
            )
        })
        .collect();
    let mib = 1u64 << 20;
    assert_eq!(
        rows,
        [
            ("seq-write-1k".to_string(), 1024, 2, 8 * mib),
            ("seq-write-4k".to_string(), 4096, 2, 8 * mib),
            ("seq-write-1M".to_string(), mib, 2, 8 * mib),
            ("seq-write-1M-32jobs".to_string(), mib, 32, 8 * mib),
        ]
    );
    assert_eq!(result.engine, "fio");
    assert_eq!(result.options.reps, 2);
    let names: Vec<&str> = result.configs.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["fastfuse-seed"]);
    assert_eq!(
        result.workloads[0].description,
        "fio --name=writeback --ioengine=sync --rw=write --bs=1k --size=8M --numjobs=2 \
         --ramp_time=200ms --group_reporting=1 --directory=MNT"
    );
    for (name, _, jobs, size) in &rows {
        let samples: Vec<_> = result
            .results
            .iter()
            .filter(|s| &s.workload == name)
            .collect();
        assert_eq!(samples.len(), 2, "{name}");
        for s in samples {
            assert_eq!((s.status, s.engine.as_str()), (Status::Ok, "fio"), "{s:?}");
            assert!(s.value.unwrap() > 0.0, "{s:?}");
            // Not time based: fio wrote each job's size once, and every
            // byte of it (the ramp is counted; see fastfuse_bench::fio).
            assert!(s.bytes.unwrap() <= jobs * size, "{s:?}");
            assert!(s.write_sizes.as_ref().unwrap().writes > 0, "{s:?}");
        }
    }
    let report = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert_eq!(report, stdout);
    assert!(
        report.contains("## Seed method: the LKML table's fio runs"),
        "{report}"
    );
    assert!(
        report.contains(
            "| row | fastfuse-seed MiB/s | LKML table, seed's machine (patched kernel) |"
        ),
        "{report}"
    );
    for (label, lkml) in [
        ("| 1k (2 jobs × 8M) |", "| 341 |"),
        ("| 4k (2 jobs × 8M) |", "| 2246 |"),
        ("| 1M (2 jobs × 8M) |", "| 2685 |"),
        ("| 1M (32 jobs × 8M) |", "| — |"),
    ] {
        let line = report
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no row {label}: {report}"));
        assert!(line.ends_with(lkml), "{line}");
        assert!(line.contains(" dropped) "), "{line}");
    }
    assert!(report.contains("Q1 − 1.5·IQR, Q3 + 1.5·IQR"), "{report}");
    assert!(report.contains("the ramp discards nothing"), "{report}");
    assert!(report.contains("not a measurement of this run"), "{report}");
    assert!(
        report.contains("| fastfuse-seed | seq-write-1M-32jobs | 2 |"),
        "{report}"
    );
}

/// Ctrl-C in the middle of a workload: the bench stops, unmounts the FUSE
/// mount and the tmpfs, removes its directories, and keeps what it had.
#[test]
fn ctrl_c_unmounts_everything() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().to_str().unwrap();
    let mut run = Run::start(&[
        "--configs",
        "fastfuse-seed",
        "--workloads",
        "seq-write-1M",
        "--size",
        "8M",
        "--runtime",
        "60",
        "--out",
        out,
    ]);
    // Wait for the FUSE mount; the workload then runs for a minute unless
    // interrupted.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        if info
            .lines()
            .any(|l| l.contains(&run.prefix) && l.contains(" - fuse"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no FUSE mount appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let pid = rustix::process::Pid::from_raw(run.pid()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let t = Instant::now();
    let output = run.finish(Duration::from_secs(30));
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "stopping took {:?}",
        t.elapsed()
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        mounts_under(&run.prefix).is_empty(),
        "{:?}",
        mounts_under(&run.prefix)
    );
    let scratch: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.path().to_string_lossy().starts_with(run.prefix.as_str()))
        .collect();
    assert!(scratch.is_empty(), "scratch left: {scratch:?}");
    let result: BenchRun = serde_json::from_str(
        &std::fs::read_to_string(out_dir.path().join("results.json")).unwrap(),
    )
    .unwrap();
    assert!(result.interrupted);
}

/// `--profile` records a flame graph per configuration and workload
/// (perf record -a -g; Debian's linux-perf, which scripts/setup.sh
/// installs) and the report links it; the SVG names the fastfuse server's
/// own frames.
#[test]
fn profile_draws_a_flame_graph_per_cell() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !installed("perf") {
        eprintln!("skipped: perf is not installed");
        return;
    }
    let (result, stdout, dir) = run_ok(
        &[
            "--quick",
            "--profile",
            "--configs",
            "fastfuse-seed",
            "--workloads",
            "seq-write-1M",
        ],
        Duration::from_secs(300),
    );
    let profiled: Vec<_> = result
        .results
        .iter()
        .filter_map(|s| s.profile.clone())
        .collect();
    assert_eq!(
        profiled,
        ["profiles/fastfuse-seed-seq-write-1M.svg"],
        "{stdout}"
    );
    let svg = std::fs::read_to_string(dir.path().join(&profiled[0])).unwrap();
    assert!(svg.contains("<svg"), "not an SVG");
    assert!(svg.contains("fuse_"), "no FUSE frame in the flame graph");
    assert!(stdout.contains("## Flame graphs"), "{stdout}");
    let leftover: Vec<_> = std::fs::read_dir(dir.path().join("profiles"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !n.to_string_lossy().ends_with(".svg"))
        .collect();
    assert!(leftover.is_empty(), "perf data left behind: {leftover:?}");
}

/// `bench check`, which holds the built-in load generator to what fio
/// measures on a run made with `--engine both` (the bands are in
/// `fastfuse_bench::check`; a timed comparison has no place in cargo test,
/// where the machine's load moves the ratio): it passes a run whose seed
/// rows agree, fails one with a row out of band, and refuses a run without
/// fio samples.
#[test]
fn check_holds_the_engines_to_their_bands() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, fio_1m: f64| {
        let path = dir.path().join(name);
        let mut results = Vec::new();
        for (workload, builtin, fio) in [
            ("seq-write-4k", 1528.0, 1299.0),
            ("seq-write-1M", 1658.0, fio_1m),
        ] {
            for (engine, v) in [("builtin", builtin), ("fio", fio)] {
                results.push(serde_json::json!({
                    "rep": 1, "config": "fastfuse-seed", "workload": workload, "engine": engine,
                    "status": "ok", "value": v, "unit": "MiB/s", "secs": 1.0
                }));
            }
        }
        let mut v: serde_json::Value =
            serde_json::from_str(&sample_run("2026-12-01T00:00:00Z", &[])).unwrap();
        v["results"] = serde_json::Value::Array(results);
        v["both_engines"] = serde_json::Value::Bool(true);
        std::fs::write(&path, v.to_string()).unwrap();
        path
    };
    let check = |path: &std::path::Path| {
        Command::new(fastfuse_bin())
            .args(["bench", "check"])
            .arg(path)
            .output()
            .unwrap()
    };
    let good = check(&run("good.json", 1600.0));
    let text = String::from_utf8_lossy(&good.stdout);
    assert!(
        good.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(
        text.contains("| fastfuse-seed | seq-write-1M |") && !text.contains("OUT OF BAND"),
        "{text}"
    );
    let bad = check(&run("bad.json", 1300.0));
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stdout).contains("OUT OF BAND"));
    let builtin_only = dir.path().join("builtin.json");
    std::fs::write(
        &builtin_only,
        sample_run(
            "2026-12-01T00:00:00Z",
            &[("fastfuse-seed", "seq-write-1M", 1658.0)],
        ),
    )
    .unwrap();
    let none = check(&builtin_only);
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("--engine both"));
}

/// A run's JSON as schema 1 has always had it (no CPU clocks): one entry
/// per (configuration, workload, value), repetitions numbered in order.
fn sample_run(started: &str, values: &[(&str, &str, f64)]) -> String {
    let mut reps: std::collections::HashMap<(&str, &str), u32> = Default::default();
    let results: Vec<serde_json::Value> = values
        .iter()
        .map(|(config, workload, v)| {
            let rep = reps.entry((config, workload)).or_default();
            *rep += 1;
            serde_json::json!({
                "rep": *rep, "config": config, "workload": workload, "engine": "builtin",
                "status": "ok", "value": v, "unit": "MiB/s", "secs": 1.0
            })
        })
        .collect();
    serde_json::json!({
        "schema": "fastfuse-bench/1",
        "started": started, "finished": started,
        "machine": {"hostname": "h", "cpus": 2, "mem_total_bytes": 1, "cpu_model": "x"},
        "kernel": "6.18.0", "command": ["fastfuse", "bench"], "engine": "builtin",
        "both_engines": false, "source": "tmpfs",
        "options": {"reps": 1, "size_per_job": 1, "runtime_secs": 1.0, "tree_entries": 0, "quick": false},
        "configs": [
            {"name": "fastfuse-seed", "family": "fastfuse", "command": ""},
            {"name": "bindfs", "family": "peer", "command": ""}
        ],
        "workloads": [
            {"name": "seq-write-1k", "unit": "MiB/s", "description": ""},
            {"name": "seq-write-4k", "unit": "MiB/s", "description": ""},
            {"name": "seq-write-1M", "unit": "MiB/s", "description": ""}
        ],
        "results": results, "warnings": [], "interrupted": false
    })
    .to_string()
}

/// `bench compare OLD NEW`: per configuration in both, rows workload,
/// columns Before, After, % diff (the seed's table: 1k/4k/1M before and
/// after the patch).
#[test]
fn compare_prints_before_after_and_percent() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.json");
    let new = dir.path().join("new.json");
    std::fs::write(
        &old,
        sample_run(
            "2024-11-01T00:00:00Z",
            &[
                ("fastfuse-seed", "seq-write-1k", 341.0),
                ("fastfuse-seed", "seq-write-4k", 2246.0),
                ("fastfuse-seed", "seq-write-1M", 2685.0),
                ("fastfuse-seed", "seq-write-1M", 2600.0),
                ("fastfuse-seed", "seq-write-1M", 2700.0),
                ("fastfuse-seed", "seq-write-1M", 2650.0),
                ("fastfuse-seed", "seq-write-1M", 2690.0),
                ("bindfs", "seq-write-1k", 21.0),
                ("bindfs", "seq-write-1k", 23.0),
                ("bindfs", "seq-write-1k", 19.0),
            ],
        ),
    )
    .unwrap();
    std::fs::write(
        &new,
        sample_run(
            "2024-11-02T00:00:00Z",
            &[
                ("fastfuse-seed", "seq-write-1k", 360.0),
                ("fastfuse-seed", "seq-write-4k", 2200.0),
                ("fastfuse-seed", "seq-write-1M", 5370.0),
                ("fastfuse-seed", "seq-write-1M", 5300.0),
                ("fastfuse-seed", "seq-write-1M", 5400.0),
                ("fastfuse-seed", "seq-write-1M", 5350.0),
                ("fastfuse-seed", "seq-write-1M", 5380.0),
                ("bindfs", "seq-write-1k", 22.0),
                ("bindfs", "seq-write-1k", 20.0),
                ("bindfs", "seq-write-1k", 21.0),
            ],
        ),
    )
    .unwrap();
    let out = Command::new(fastfuse_bin())
        .args(["bench", "compare"])
        .arg(&old)
        .arg(&new)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("### fastfuse-seed"), "{text}");
    assert!(
        text.contains("| workload | unit | Before | After | % diff | vs noise |"),
        "{text}"
    );
    assert!(text.contains("Mann–Whitney U"), "{text}");
    assert!(text.contains("Holm"), "{text}");
    // One repetition a side: a difference, but no verdict.
    assert!(
        text.contains("| seq-write-1k | MiB/s | 341 | 360 | +5.6% | too few reps |"),
        "{text}"
    );
    assert!(
        text.contains("| seq-write-4k | MiB/s | 2246 | 2200 | -2.0% | too few reps |"),
        "{text}"
    );
    // Five a side, every After above every Before: p = 2/252, the only
    // row of Holm's family.
    assert!(
        text.contains(
            "| seq-write-1M | MiB/s | 2685 [2600–2700] | 5370 [5300–5400] | +100.0% | changed (p=7.94e-3, Holm 0.008) |"
        ),
        "{text}"
    );
    assert!(text.contains("### bindfs"), "{text}");
    // Three a side: at best p = 0.1, which cannot show a change.
    assert!(
        text.contains("| seq-write-1k | MiB/s | 21.0 [19.0–23.0] | 21.0 [20.0–22.0] | +0.0% | within noise (p=1.00; 3 vs 3 reps cannot show a change) |"),
        "{text}"
    );
    assert!(text.contains("1 of 2 rows changed"), "{text}");
    assert!(
        text.contains("| seq-write-4k | MiB/s | - | - | - | - |"),
        "{text}"
    );

    // Not a bench result: a clear error.
    std::fs::write(&new, "{\"jobs\": []}").unwrap();
    let out = Command::new(fastfuse_bin())
        .args(["bench", "compare"])
        .arg(&old)
        .arg(&new)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a fastfuse bench result"));
}
