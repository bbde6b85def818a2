//! Local wake-ups over io_uring: each queue's pinned thread runs
//! SCHED_IDLE while its mount is busy and nothing else wants its CPU, and
//! goes back to SCHED_OTHER when the mount is quiet or when a busy CPU
//! would starve it (see the engine's `transport::uring_wake`).
//!
//! What the threads run is read from /proc (the policy field of
//! `/proc/PID/task/TID/stat`), as any user could check it.

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{stats, RingEnabled, Served};

/// The tests here run one at a time: one's busy CPUs would starve the
/// other's threads.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

const SCHED_OTHER: u32 = 0;
const SCHED_IDLE: u32 = 5;

/// The pinned ring threads of daemon `pid` (named `ff-uringN`), by tid.
fn pinned_threads(pid: u32) -> Vec<u32> {
    let mut tids = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let entry = entry.unwrap();
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if comm
            .strip_prefix("ff-uring")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            tids.push(entry.file_name().to_str().unwrap().parse().unwrap());
        }
    }
    tids
}

/// Every thread of daemon `pid`, by tid.
fn all_threads(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The scheduling policy of thread `tid` of `pid`: field 41 of its stat,
/// counted after the parenthesised name (which may hold spaces).
fn policy(pid: u32, tid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    // Field 3 (state) is the first after the name, so 41 is the 39th.
    after_name.split_whitespace().nth(38)?.parse().ok()
}

/// Polls until `cond` holds or `limit` passes; whether it held.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}

/// Metadata requests on `dir` until `stop` is set: create, stat, unlink.
fn churn(dir: &Path, stop: &std::sync::atomic::AtomicBool) -> u64 {
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let f = dir.join(format!("f{}", n % 64));
        std::fs::write(&f, b"x").unwrap();
        std::fs::metadata(&f).unwrap();
        std::fs::remove_file(&f).unwrap();
        n += 1;
    }
    n
}

/// A busy loop on every CPU, as processes of ours, ended by pid on drop.
struct BusyCpus(Vec<Child>);

impl BusyCpus {
    fn start() -> BusyCpus {
        let cpus = std::thread::available_parallelism().unwrap().get();
        BusyCpus(
            (0..cpus)
                .map(|cpu| {
                    Command::new("taskset")
                        .args(["-c", &cpu.to_string(), "sh", "-c", "while :; do :; done"])
                        .spawn()
                        .expect("taskset (util-linux) runs")
                })
                .collect(),
        )
    }
}

impl Drop for BusyCpus {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn pinned_threads_run_sched_idle_while_busy_and_sched_other_when_quiet() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _ring = RingEnabled::hold();
    let served = Served::start(&["--transport", "uring"]);
    let pid = served.pid();
    let tids = pinned_threads(pid);
    assert!(!tids.is_empty(), "no ff-uringN thread in daemon {pid}");
    let any_idle = || tids.iter().any(|&t| policy(pid, t) == Some(SCHED_IDLE));
    let all_other = || tids.iter().all(|&t| policy(pid, t) == Some(SCHED_OTHER));
    assert!(
        wait_for(Duration::from_secs(5), all_other),
        "pinned threads of an idle mount: {:?}",
        tids.iter().map(|&t| policy(pid, t)).collect::<Vec<_>>()
    );

    let stop = std::sync::atomic::AtomicBool::new(false);
    let (went_idle, served_ops) = std::thread::scope(|s| {
        let worker = s.spawn(|| churn(served.mnt(), &stop));
        let went_idle = wait_for(Duration::from_secs(10), any_idle);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (went_idle, worker.join().unwrap())
    });
    assert!(served_ops > 0);
    assert!(
        went_idle,
        "no pinned thread ran SCHED_IDLE during {served_ops} rounds of requests"
    );
    assert!(stats(served.mnt())["local_wake"]["idle_spells"].as_u64() > Some(0));
    // The guard sleeps after 100 ms without a request, every thread put
    // back first: the pinned ones, and any a pinned one started (threads
    // inherit their creator's policy).
    let every_thread_other = || {
        all_threads(pid)
            .iter()
            .all(|&t| policy(pid, t).is_none_or(|p| p == SCHED_OTHER))
    };
    assert!(
        wait_for(Duration::from_secs(10), every_thread_other),
        "threads of a quiet mount: {:?}",
        all_threads(pid)
            .iter()
            .map(|&t| (t, policy(pid, t)))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_busy_cpu_does_not_starve_the_ring() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _ring = RingEnabled::hold();
    let served = Served::start(&["--transport", "uring"]);
    let pid = served.pid();
    let tids = pinned_threads(pid);
    // Busy first, so that the guard has made the threads SCHED_IDLE when
    // the CPUs fill up.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let worker = s.spawn(|| churn(served.mnt(), &stop));
        let any_idle = wait_for(Duration::from_secs(10), || {
            tids.iter().any(|&t| policy(pid, t) == Some(SCHED_IDLE))
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        worker.join().unwrap();
        assert!(any_idle, "no pinned thread ran SCHED_IDLE");
    });

    // With a busy loop on every CPU, a SCHED_IDLE thread gets ~0.3% of a
    // CPU: an untar of 5,000 files took minutes that way. The guard must
    // see the threads wait for their CPU and put them back to SCHED_OTHER
    // (not only once the mount looks quiet because nothing is served).
    let starved_before = stats(served.mnt())["local_wake"]["starved"]
        .as_u64()
        .unwrap();
    let busy = BusyCpus::start();
    let dir = served.mnt().join("busy");
    std::fs::create_dir(&dir).unwrap();
    let start = Instant::now();
    for i in 0..2000 {
        let f = dir.join(format!("f{i}"));
        std::fs::write(&f, b"data").unwrap();
        std::fs::remove_file(&f).unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{i} of 2,000 files in a minute with busy CPUs: the ring starves; policies {:?}",
            tids.iter().map(|&t| policy(pid, t)).collect::<Vec<_>>()
        );
    }
    drop(busy);
    let starved = stats(served.mnt())["local_wake"]["starved"]
        .as_u64()
        .unwrap();
    assert!(
        starved > starved_before,
        "no pinned thread was put back for a busy CPU ({starved} times in all)"
    );
    eprintln!(
        "2,000 files created and removed with every CPU busy in {:?}",
        start.elapsed()
    );
}
