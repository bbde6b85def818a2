//! CPU accounting in nanoseconds: a server process's time on CPU (all its
//! threads) and the whole machine's busy time, sampled before and after a
//! measurement.
//!
//! The server: the sum over its threads of the first field of
//! `/proc/PID/task/TID/schedstat` (the scheduler's `sum_exec_runtime`, in
//! ns). That sum only covers threads alive when it is read: a thread that
//! ends between the two samples takes its time with it. So each sample
//! also reads the process's utime + stime from `/proc/PID/stat`, which
//! the kernel keeps for ended threads too (it is the same
//! `sum_exec_runtime`, summed over the thread group, but printed in 10 ms
//! ticks). When a thread seen in the first sample is gone in the second,
//! or the tick count grew by more than its rounding allows above the
//! thread sum (a thread started and ended in between), the tick figure is
//! used instead and the sample says so ([`ServerClock::Ticks`]).
//! `/proc/PID/schedstat` is not used: it is the main thread's alone, and
//! `/proc/PID/sched` is per thread as well.
//!
//! The machine, the first of these that this kernel has:
//! - `cpuacct.usage` of the cgroup-v1 cpuacct root: ns charged to every
//!   task at each scheduler update (a tick at most behind a running task);
//!   on a container's private cgroup namespace that root is the
//!   container's, not the machine's;
//! - `/proc/schedstat` (`CONFIG_SCHEDSTATS`): field 7 of each `cpuN` line,
//!   the ns spent running by tasks on that CPU (Documentation/scheduler/
//!   sched-stats.rst; schedstat versions 15 to 17 keep it in place). It is
//!   credited when a task leaves the CPU, so a task running across a
//!   sample is counted at its next switch;
//! - `/proc/stat` busy ticks (user, nice, system, irq, softirq, steal).

use std::collections::BTreeMap;
use std::io;
use std::sync::OnceLock;

/// Nanoseconds per second.
const NS: f64 = 1e9;

/// Clock ticks per second of /proc's counters.
fn ticks_per_sec() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}

/// Parses the utime and stime (in ticks) of a /proc/PID/stat line. The
/// command name may hold spaces and parentheses, so fields are counted
/// from the last `)`.
///
/// ```
/// let line = "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0";
/// assert_eq!(fastfuse_bench::cpu::parse_pid_stat(line), Some((250, 75)));
/// ```
pub fn parse_pid_stat(line: &str) -> Option<(u64, u64)> {
    let rest = &line[line.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ")": state(3) ppid pgrp session tty_nr tpgid flags minflt
    // cminflt majflt cmajflt utime(14) stime(15).
    let utime = fields.nth(11)?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// Parses the busy ticks of the `cpu` line of /proc/stat: user, nice,
/// system, irq, softirq and steal (guest time is already in user).
///
/// ```
/// let stat = "cpu  100 5 50 1000 7 3 2 1 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
/// assert_eq!(fastfuse_bench::cpu::parse_proc_stat(stat), Some(161));
/// ```
pub fn parse_proc_stat(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal ...
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    Some(get(0) + get(1) + get(2) + get(5) + get(6) + get(7))
}

/// Parses /proc/schedstat: the sum over CPUs of field 7 of the `cpuN`
/// lines (ns spent running by tasks on that CPU). Only schedstat versions
/// 15 to 17 are read, whose `cpuN` lines have this layout.
///
/// ```
/// let text = "version 17\ntimestamp 4295\ncpu0 0 0 10 5 8 2 1500 30 9\n\
///             domain0 MC 3 0 0 0\ncpu1 0 0 10 5 8 2 2500 30 9\n";
/// assert_eq!(fastfuse_bench::cpu::parse_proc_schedstat(text), Some(4000));
/// assert_eq!(fastfuse_bench::cpu::parse_proc_schedstat("version 12\ncpu0 1 2 3 4 5 6 7 8 9\n"), None);
/// ```
pub fn parse_proc_schedstat(text: &str) -> Option<u64> {
    let version: u32 = text
        .lines()
        .find_map(|l| l.strip_prefix("version "))?
        .trim()
        .parse()
        .ok()?;
    if !(15..=17).contains(&version) {
        return None;
    }
    let mut total = 0u64;
    let mut cpus = 0;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(name) = fields.next() else { continue };
        let is_cpu = name
            .strip_prefix("cpu")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !is_cpu {
            continue;
        }
        total += fields.nth(6)?.parse::<u64>().ok()?;
        cpus += 1;
    }
    (cpus > 0).then_some(total)
}

/// Parses a `schedstat` file of a task: its first field, ns on CPU.
///
/// ```
/// assert_eq!(fastfuse_bench::cpu::parse_task_schedstat("88060451 10595934 523\n"), Some(88060451));
/// ```
pub fn parse_task_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// Where the server's figure of a measurement came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerClock {
    /// The per-thread ns counters (exact).
    Schedstat,
    /// /proc/PID/stat's ticks: a thread ended during the measurement.
    Ticks,
}

impl ServerClock {
    /// The name in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerClock::Schedstat => "schedstat",
            ServerClock::Ticks => "stat-ticks",
        }
    }
}

/// A server process sampled once: ns on CPU per live thread, and the
/// process's utime + stime in ns (a multiple of the tick).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// Thread id to ns on CPU.
    pub threads: BTreeMap<i32, u64>,
    /// utime + stime of /proc/PID/stat, in ns.
    pub ticks_ns: u64,
}

impl ProcSample {
    /// Samples process `pid`.
    pub fn read(pid: i32) -> io::Result<ProcSample> {
        let mut threads = BTreeMap::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let entry = entry?;
            let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            // A thread that ends between the listing and the read is gone
            // from both this sample and the next: the tick cross-check
            // catches the time it took with it.
            if let Some(ns) = std::fs::read_to_string(entry.path().join("schedstat"))
                .ok()
                .as_deref()
                .and_then(parse_task_schedstat)
            {
                threads.insert(tid, ns);
            }
        }
        let line = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let (u, s) = parse_pid_stat(&line)
            .ok_or_else(|| io::Error::other(format!("cannot parse /proc/{pid}/stat")))?;
        Ok(ProcSample {
            threads,
            ticks_ns: (u + s) * (1_000_000_000 / ticks_per_sec()),
        })
    }
}

/// The ns a process spent between two samples, and which counter says so;
/// `tick_ns` is the length of a /proc tick.
///
/// ```
/// use fastfuse_bench::cpu::{server_ns, ProcSample, ServerClock};
/// let s = |threads: &[(i32, u64)], ticks_ns| ProcSample { threads: threads.iter().copied().collect(), ticks_ns };
/// // Threads 1 and 2 ran 3 ms and 4 ms; thread 3 started and ran 1 ms.
/// let (ns, clock) = server_ns(&s(&[(1, 10_000_000), (2, 0)], 10_000_000),
///                             &s(&[(1, 13_000_000), (2, 4_000_000), (3, 1_000_000)], 20_000_000), 10_000_000);
/// assert_eq!((ns, clock), (8_000_000, ServerClock::Schedstat));
/// ```
pub fn server_ns(before: &ProcSample, after: &ProcSample, tick_ns: u64) -> (u64, ServerClock) {
    let live: u64 = after
        .threads
        .iter()
        .map(|(tid, &ns)| ns.saturating_sub(before.threads.get(tid).copied().unwrap_or(0)))
        .sum();
    let ticks = after.ticks_ns.saturating_sub(before.ticks_ns);
    let ended = before
        .threads
        .keys()
        .any(|t| !after.threads.contains_key(t));
    // utime and stime are each truncated to a whole tick when printed, so
    // a difference of two samples is off by less than two ticks: beyond
    // that, threads that are gone ran in between.
    if !ended && ticks <= live + 2 * tick_ns {
        (live, ServerClock::Schedstat)
    } else {
        (ticks.max(live), ServerClock::Ticks)
    }
}

/// Where the machine's figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineClock {
    /// The cgroup-v1 cpuacct root's `cpuacct.usage`, ns.
    Cpuacct,
    /// /proc/schedstat's field 7, ns.
    Schedstat,
    /// /proc/stat's busy ticks.
    Ticks,
}

/// The cpuacct root's total.
const CPUACCT_USAGE: &str = "/sys/fs/cgroup/cpuacct/cpuacct.usage";

impl MachineClock {
    /// The name in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            MachineClock::Cpuacct => "cpuacct",
            MachineClock::Schedstat => "proc-schedstat",
            MachineClock::Ticks => "stat-ticks",
        }
    }

    /// The best clock this kernel has (chosen once per process).
    pub fn best() -> MachineClock {
        static BEST: OnceLock<MachineClock> = OnceLock::new();
        *BEST.get_or_init(|| {
            [MachineClock::Cpuacct, MachineClock::Schedstat]
                .into_iter()
                .find(|c| c.read_ns().is_ok())
                .unwrap_or(MachineClock::Ticks)
        })
    }

    /// Busy ns of the machine so far, all CPUs summed.
    pub fn read_ns(self) -> io::Result<u64> {
        let bad = |what: &str| io::Error::other(format!("cannot parse {what}"));
        match self {
            MachineClock::Cpuacct => std::fs::read_to_string(CPUACCT_USAGE)?
                .trim()
                .parse()
                .map_err(|_| bad(CPUACCT_USAGE)),
            MachineClock::Schedstat => {
                parse_proc_schedstat(&std::fs::read_to_string("/proc/schedstat")?)
                    .ok_or_else(|| bad("/proc/schedstat"))
            }
            MachineClock::Ticks => parse_proc_stat(&std::fs::read_to_string("/proc/stat")?)
                .map(|t| t * (1_000_000_000 / ticks_per_sec()))
                .ok_or_else(|| bad("/proc/stat")),
        }
    }
}

/// A sample taken before a measurement.
#[derive(Debug, Clone)]
pub struct CpuMark {
    server: Option<ProcSample>,
    machine: Option<u64>,
    clock: MachineClock,
    pid: Option<i32>,
}

/// CPU seconds spent between a [`CpuMark`] and now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuSpent {
    /// The server's, when there is a server and it could be read both
    /// times.
    pub server: Option<f64>,
    /// Which counter gave the server's.
    pub server_clock: Option<ServerClock>,
    /// The machine's.
    pub machine: f64,
    /// Which counter gave the machine's.
    pub machine_clock: MachineClock,
}

impl CpuMark {
    /// Samples now, with the server `pid` if any.
    pub fn now(pid: Option<i32>) -> CpuMark {
        let clock = MachineClock::best();
        CpuMark {
            server: pid.and_then(|p| ProcSample::read(p).ok()),
            machine: clock.read_ns().ok(),
            clock,
            pid,
        }
    }

    /// What was spent since the mark.
    pub fn spent(&self) -> CpuSpent {
        let server = match (self.pid, &self.server) {
            (Some(p), Some(before)) => ProcSample::read(p)
                .ok()
                .map(|after| server_ns(before, &after, 1_000_000_000 / ticks_per_sec())),
            _ => None,
        };
        let machine = match (self.machine, self.clock.read_ns()) {
            (Some(before), Ok(after)) => after.saturating_sub(before),
            _ => 0,
        };
        CpuSpent {
            server: server.map(|(ns, _)| ns as f64 / NS),
            server_clock: server.map(|(_, c)| c),
            machine: machine as f64 / NS,
            machine_clock: self.clock,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn burn(d: std::time::Duration) {
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < d {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
    }

    /// This thread's own ns on CPU.
    fn own_ns() -> u64 {
        parse_task_schedstat(&std::fs::read_to_string("/proc/thread-self/schedstat").unwrap())
            .unwrap()
    }

    #[test]
    fn this_process_uses_cpu() {
        let pid = std::process::id() as i32;
        let mark = CpuMark::now(Some(pid));
        let start = own_ns();
        burn(std::time::Duration::from_millis(100));
        let mine = own_ns() - start;
        let spent = mark.spent();
        // At least what this thread counted itself (other test threads
        // may add theirs; if one of them ended, the ticks count, which
        // round down by less than two); the machine ran it too.
        let slack = 2.0 / ticks_per_sec() as f64;
        assert!(
            spent.server.unwrap() >= mine as f64 / NS - slack,
            "{spent:?} {mine}"
        );
        assert!(spent.machine > 0.0, "{spent:?}");
    }

    #[test]
    fn a_thread_that_ends_is_still_counted() {
        let pid = std::process::id() as i32;
        let mark = CpuMark::now(Some(pid));
        let burned = std::thread::spawn(|| {
            let start = own_ns();
            burn(std::time::Duration::from_millis(150));
            own_ns() - start
        })
        .join()
        .unwrap();
        let spent = mark.spent();
        // The thread is gone: its time comes from the ticks, which round
        // down by less than two ticks.
        let slack = 2.0 / ticks_per_sec() as f64;
        assert!(
            spent.server.unwrap() >= burned as f64 / NS - slack,
            "{spent:?} burned {burned} ns"
        );
        assert_eq!(spent.server_clock, Some(ServerClock::Ticks));
    }

    #[test]
    fn ended_threads_and_unexplained_ticks_fall_back_to_ticks() {
        let s = |threads: &[(i32, u64)], ticks_ns| ProcSample {
            threads: threads.iter().copied().collect(),
            ticks_ns,
        };
        let tick = 10_000_000;
        // Thread 2 ended: the ticks (40 ms) count.
        let (ns, c) = server_ns(
            &s(&[(1, 0), (2, 0)], 0),
            &s(&[(1, 5_000_000)], 40_000_000),
            tick,
        );
        assert_eq!((ns, c), (40_000_000, ServerClock::Ticks));
        // No thread ended, but 50 ms of ticks against 5 ms on the live
        // threads: one started and ended in between.
        let (ns, c) = server_ns(&s(&[(1, 0)], 0), &s(&[(1, 5_000_000)], 50_000_000), tick);
        assert_eq!((ns, c), (50_000_000, ServerClock::Ticks));
        // Within the ticks' rounding: the exact figure.
        let (ns, c) = server_ns(&s(&[(1, 0)], 0), &s(&[(1, 5_000_000)], 20_000_000), tick);
        assert_eq!((ns, c), (5_000_000, ServerClock::Schedstat));
    }

    #[test]
    fn the_machine_clock_reads() {
        let c = MachineClock::best();
        let a = c.read_ns().unwrap();
        burn(std::time::Duration::from_millis(50));
        let b = c.read_ns().unwrap();
        assert!(b >= a, "{c:?}");
        assert!(MachineClock::Ticks.read_ns().unwrap() > 0);
    }

    #[test]
    fn a_missing_process_has_no_server_time() {
        let mark = CpuMark::now(None);
        assert_eq!(mark.spent().server, None);
        assert!(parse_pid_stat("garbage").is_none());
        assert!(parse_proc_stat("intr 1 2").is_none());
        assert!(parse_proc_schedstat("version 17\n").is_none());
        assert!(parse_task_schedstat("").is_none());
    }
}
