//! CPU accounting: a server process's utime + stime (/proc/PID/stat, all
//! its threads) and the whole machine's busy time (/proc/stat), sampled
//! before and after a measurement.

use std::io;

/// Clock ticks per second of /proc's counters.
fn ticks_per_sec() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
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

/// CPU seconds of process `pid` so far (all threads, live and ended).
pub fn process_secs(pid: i32) -> io::Result<f64> {
    let line = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (u, s) = parse_pid_stat(&line)
        .ok_or_else(|| io::Error::other(format!("cannot parse /proc/{pid}/stat")))?;
    Ok((u + s) as f64 / ticks_per_sec())
}

/// Busy CPU seconds of the machine so far, all CPUs summed.
pub fn machine_secs() -> io::Result<f64> {
    let text = std::fs::read_to_string("/proc/stat")?;
    let busy = parse_proc_stat(&text).ok_or_else(|| io::Error::other("cannot parse /proc/stat"))?;
    Ok(busy as f64 / ticks_per_sec())
}

/// A sample taken before a measurement.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    server: Option<f64>,
    machine: f64,
    pid: Option<i32>,
}

/// CPU seconds spent between a [`CpuMark`] and now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuSpent {
    /// The server's, when there is a server and it could be read both
    /// times.
    pub server: Option<f64>,
    /// The machine's.
    pub machine: f64,
}

impl CpuMark {
    /// Samples now, with the server `pid` if any.
    pub fn now(pid: Option<i32>) -> CpuMark {
        CpuMark {
            server: pid.and_then(|p| process_secs(p).ok()),
            machine: machine_secs().unwrap_or(0.0),
            pid,
        }
    }

    /// What was spent since the mark.
    pub fn spent(&self) -> CpuSpent {
        let server = match (self.pid, self.server) {
            (Some(p), Some(before)) => process_secs(p).ok().map(|after| (after - before).max(0.0)),
            _ => None,
        };
        CpuSpent {
            server,
            machine: (machine_secs().unwrap_or(0.0) - self.machine).max(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_cpu() {
        let pid = std::process::id() as i32;
        let mark = CpuMark::now(Some(pid));
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(100) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let spent = mark.spent();
        assert!(x > 0);
        assert!(spent.server.unwrap() > 0.0, "{spent:?}");
        assert!(spent.machine > 0.0);
    }

    #[test]
    fn a_missing_process_has_no_server_time() {
        let mark = CpuMark::now(None);
        assert_eq!(mark.spent().server, None);
        assert!(parse_pid_stat("garbage").is_none());
        assert!(parse_proc_stat("intr 1 2").is_none());
    }
}
