//! Request statistics: per-opcode counts and latency histograms, and a
//! histogram of WRITE sizes. Each worker owns a shard that only it writes
//! (so counting is an uncontended atomic add); a snapshot sums the shards.
//!
//! While mounted, a session serves snapshots as JSON on an abstract Unix
//! socket named after the mount's unique id (`STATX_MNT_ID_UNIQUE`, never
//! reused, unlike device numbers, so the socket of a daemon still exiting
//! never clashes with that of the next mount on the same path); `query`
//! reads them. The socket and `query` are the `stats` feature's; the
//! counters are always kept.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fastfuse_abi::Opcode;
#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

/// Opcodes are indexed directly; everything above (CUSE_INIT) shares the
/// last slot.
const OP_SLOTS: usize = 64;
/// Latency buckets: bucket `i` counts requests of `[2^i, 2^(i+1))` ns.
const LATENCY_BUCKETS: usize = 40;
/// WRITE size buckets: bucket `i` counts writes of `(2^(i-1), 2^i]` bytes.
const SIZE_BUCKETS: usize = 32;

struct OpCounters {
    count: AtomicU64,
    errors: AtomicU64,
    total_ns: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS],
}

impl Default for OpCounters {
    fn default() -> Self {
        OpCounters {
            count: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            total_ns: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// One worker's counters. Only its worker writes them; Relaxed ordering is
/// enough because readers want eventually consistent totals, not a
/// consistent cut.
pub struct Shard {
    transport: &'static str,
    ops: [OpCounters; OP_SLOTS],
    write_sizes: [AtomicU64; SIZE_BUCKETS],
    spliced_writes: AtomicU64,
    /// When the request this worker serves began, in ns since [`epoch`]
    /// (0: none). A pause waits until no request has been in flight for
    /// long (see `BackgroundSession::pause`).
    busy_since: AtomicU64,
}

/// The clock `Shard::busy_since` counts from.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn since_epoch(at: Instant) -> u64 {
    (at.saturating_duration_since(epoch()).as_nanos() as u64).max(1)
}

fn slot(opcode: u32) -> usize {
    (opcode as usize).min(OP_SLOTS - 1)
}

fn log2_bucket(v: u64, buckets: usize) -> usize {
    ((u64::BITS - v.leading_zeros()) as usize).min(buckets - 1)
}

impl Shard {
    /// A request began at `start`.
    pub(crate) fn begin(&self, start: Instant) {
        self.busy_since.store(since_epoch(start), Ordering::Relaxed);
    }

    /// The request that began is answered (or deferred).
    pub(crate) fn end(&self) {
        self.busy_since.store(0, Ordering::Relaxed);
    }

    /// Counts one answered request.
    pub fn record(&self, opcode: u32, elapsed: Duration, failed: bool) {
        let c = &self.ops[slot(opcode)];
        let ns = elapsed.as_nanos().min(u64::MAX as u128) as u64;
        c.count.fetch_add(1, Ordering::Relaxed);
        if failed {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        c.total_ns.fetch_add(ns, Ordering::Relaxed);
        c.latency[log2_bucket(ns, LATENCY_BUCKETS).saturating_sub(1)]
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the size of one WRITE.
    pub fn record_write(&self, size: usize) {
        let bucket = log2_bucket((size as u64).saturating_sub(1), SIZE_BUCKETS);
        self.write_sizes[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one WRITE whose data went on by splice.
    pub fn record_spliced_write(&self) {
        self.spliced_writes.fetch_add(1, Ordering::Relaxed);
    }
}

/// The statistics of one session.
pub struct Stats {
    started: Mutex<Instant>,
    shards: Mutex<Vec<Arc<Shard>>>,
    /// What the servers this session took over from had counted
    /// ([`Stats::carry_on`]), and the hand-overs since.
    earlier: Mutex<StatsSnapshot>,
    /// Pinned ring threads put under SCHED_IDLE by the local-wake guard.
    idle_spells: AtomicU64,
    /// Pinned ring threads it put back under SCHED_OTHER for a busy CPU.
    starved: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            idle_spells: AtomicU64::new(0),
            starved: AtomicU64::new(0),
            earlier: Mutex::new(StatsSnapshot::default()),
            started: Mutex::new(Instant::now()),
            shards: Mutex::new(Vec::new()),
        }
    }
}

impl Stats {
    /// How long the session (and the sessions it took over from) has been up.
    pub fn uptime(&self) -> Duration {
        self.started
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
    }

    /// Goes on from `earlier`, the statistics of the server this session
    /// took over from: the uptime counts from its `uptime_secs` ago, and
    /// its counts are added to this session's.
    pub fn carry_on(&self, earlier: StatsSnapshot) {
        let now = Instant::now();
        let up = Duration::try_from_secs_f64(earlier.uptime_secs).unwrap_or_default();
        *self.started.lock().unwrap_or_else(PoisonError::into_inner) =
            now.checked_sub(up).unwrap_or(now);
        *self.earlier.lock().unwrap_or_else(PoisonError::into_inner) = earlier;
    }

    /// Records a hand-over to this session (`kind`: "upgrade" or
    /// "restart") and how long the mount went unserved.
    pub fn record_handover(&self, kind: &str, pause: Duration) {
        let uptime = self.uptime().as_secs_f64();
        self.earlier
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .handovers
            .push(HandoverRecord {
                kind: kind.to_string(),
                at_uptime_secs: uptime,
                pause_ms: pause.as_secs_f64() * 1e3,
            });
    }

    /// Counts a pinned ring thread put under SCHED_IDLE (`starved`: false)
    /// or, starving, back under SCHED_OTHER (true).
    #[cfg(feature = "io-uring")]
    pub(crate) fn record_local_wake(&self, starved: bool) {
        let counter = if starved {
            &self.starved
        } else {
            &self.idle_spells
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// How long the oldest request still being served has been, if any.
    pub(crate) fn longest_in_flight(&self) -> Option<Duration> {
        let now = since_epoch(Instant::now());
        let shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        shards
            .iter()
            .map(|s| s.busy_since.load(Ordering::Relaxed))
            .filter(|&t| t != 0)
            .map(|t| Duration::from_nanos(now.saturating_sub(t)))
            .max()
    }

    /// A new shard for a worker serving through `transport`.
    pub fn shard(&self, transport: &'static str) -> Arc<Shard> {
        let shard = Arc::new(Shard {
            transport,
            ops: std::array::from_fn(|_| OpCounters::default()),
            write_sizes: std::array::from_fn(|_| AtomicU64::new(0)),
            spliced_writes: AtomicU64::new(0),
            busy_since: AtomicU64::new(0),
        });
        self.shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(shard.clone());
        shard
    }

    /// Sums every shard into a snapshot.
    pub fn snapshot(&self) -> StatsSnapshot {
        let shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        let mut ops: BTreeMap<String, OpStats> = BTreeMap::new();
        let mut transports: BTreeMap<String, u64> = BTreeMap::new();
        let mut write_sizes = [0u64; SIZE_BUCKETS];
        let mut spliced_writes = 0;
        for shard in shards.iter() {
            spliced_writes += shard.spliced_writes.load(Ordering::Relaxed);
            for (raw, c) in shard.ops.iter().enumerate() {
                let count = c.count.load(Ordering::Relaxed);
                if count == 0 {
                    continue;
                }
                *transports.entry(shard.transport.to_string()).or_default() += count;
                let name = Opcode::from_raw(raw as u32).map_or("OTHER", Opcode::name);
                let e = ops.entry(name.to_string()).or_default();
                e.count += count;
                e.errors += c.errors.load(Ordering::Relaxed);
                e.total_ns += c.total_ns.load(Ordering::Relaxed);
                e.latency_log2_ns.resize(LATENCY_BUCKETS, 0);
                for (dst, src) in e.latency_log2_ns.iter_mut().zip(&c.latency) {
                    *dst += src.load(Ordering::Relaxed);
                }
            }
            for (dst, src) in write_sizes.iter_mut().zip(&shard.write_sizes) {
                *dst += src.load(Ordering::Relaxed);
            }
        }
        let earlier = self
            .earlier
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        spliced_writes += earlier.spliced_writes;
        for (transport, n) in earlier.requests_by_transport {
            *transports.entry(transport).or_default() += n;
        }
        for (name, old) in earlier.ops {
            let e = ops.entry(name).or_default();
            e.count += old.count;
            e.errors += old.errors;
            e.total_ns += old.total_ns;
            if e.latency_log2_ns.len() < old.latency_log2_ns.len() {
                e.latency_log2_ns.resize(old.latency_log2_ns.len(), 0);
            }
            for (dst, src) in e.latency_log2_ns.iter_mut().zip(&old.latency_log2_ns) {
                *dst += src;
            }
        }
        for old in &earlier.write_sizes {
            if let Some(i) = (0..SIZE_BUCKETS).find(|&i| 1u64 << i == old.up_to_bytes) {
                write_sizes[i] += old.count;
            }
        }
        for op in ops.values_mut() {
            while op.latency_log2_ns.last() == Some(&0) {
                op.latency_log2_ns.pop();
            }
        }
        StatsSnapshot {
            uptime_secs: self.uptime().as_secs_f64(),
            requests_by_transport: transports,
            ops,
            write_sizes: write_sizes
                .iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .map(|(i, &n)| WriteSizeBucket {
                    up_to_bytes: 1u64 << i,
                    count: n,
                })
                .collect(),
            spliced_writes,
            handovers: earlier.handovers,
            local_wake: LocalWakeStats {
                idle_spells: self.idle_spells.load(Ordering::Relaxed),
                starved: self.starved.load(Ordering::Relaxed),
            },
        }
    }
}

/// Counters of one opcode.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct OpStats {
    /// Requests answered (or taken, for those without reply).
    pub count: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Sum of service times, in nanoseconds.
    pub total_ns: u64,
    /// Histogram: entry `i` counts requests served in `[2^i, 2^(i+1))` ns.
    pub latency_log2_ns: Vec<u64>,
}

/// One bucket of the WRITE size histogram.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct WriteSizeBucket {
    /// Writes larger than half of this and at most this many bytes.
    pub up_to_bytes: u64,
    /// How many.
    pub count: u64,
}

/// A point-in-time copy of a session's statistics.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct StatsSnapshot {
    /// Seconds since the session started.
    pub uptime_secs: f64,
    /// Requests served per transport ("dev", "uring").
    pub requests_by_transport: BTreeMap<String, u64>,
    /// Per opcode, by the kernel's name ("WRITE", "LOOKUP", ...).
    pub ops: BTreeMap<String, OpStats>,
    /// WRITE sizes, only non-empty buckets.
    pub write_sizes: Vec<WriteSizeBucket>,
    /// WRITEs whose data was left in a pipe for the filesystem to splice
    /// (`Config::splice_write`).
    #[cfg_attr(feature = "serde", serde(default))]
    pub spliced_writes: u64,
    /// The hand-overs this mount has seen (live upgrades, restarts after a
    /// crash), oldest first.
    #[cfg_attr(feature = "serde", serde(default))]
    pub handovers: Vec<HandoverRecord>,
    /// What the io_uring queues' pinned threads ran, since this server
    /// started (not carried over a hand-over).
    #[cfg_attr(feature = "serde", serde(default))]
    pub local_wake: LocalWakeStats,
}

/// The local-wake guard of the io_uring queues (`Config::uring_local_wake`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct LocalWakeStats {
    /// Times a pinned thread was put under SCHED_IDLE.
    pub idle_spells: u64,
    /// Times one was put back under SCHED_OTHER because it waited for its
    /// CPU (the others go back when the mount is quiet).
    pub starved: u64,
}

/// One hand-over of a mount to a new server.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct HandoverRecord {
    /// "upgrade" (`fastfuse upgrade`) or "restart" (after a crash).
    pub kind: String,
    /// The mount's uptime when the new server began serving.
    pub at_uptime_secs: f64,
    /// How long no server took requests: from the old server's pause to
    /// the new one's first worker.
    pub pause_ms: f64,
}

impl StatsSnapshot {
    /// The number of WRITEs of exactly a power-of-two bucket `up_to_bytes`.
    pub fn writes_up_to(&self, up_to_bytes: u64) -> u64 {
        self.write_sizes
            .iter()
            .find(|b| b.up_to_bytes == up_to_bytes)
            .map_or(0, |b| b.count)
    }
}

/// The statistics socket (the `stats` feature): an abstract Unix socket
/// per mount that answers a JSON snapshot.
#[cfg(feature = "stats")]
mod socket {
    use std::io::{self, Read, Write};
    use std::os::fd::AsFd;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use super::{Stats, StatsSnapshot};
    use crate::stoppable::StoppableThread;
    use crate::sys;

    /// The abstract socket name for the mount with unique id `mount_id`.
    fn socket_name(mount_id: u64) -> String {
        format!("fastfuse-stats-{mount_id}")
    }

    /// A thread that serves snapshots on the abstract socket until dropped, to
    /// root and to the user the daemon runs as.
    pub(crate) fn serve(stats: Arc<Stats>, mount_id: u64) -> io::Result<StoppableThread> {
        let name = socket_name(mount_id);
        let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(&name)?)
            .map_err(|e| io::Error::new(e.kind(), format!("binding @{name}: {e}")))?;
        // Readiness comes from poll; a client that gave up in between must
        // not block the loop in accept.
        listener.set_nonblocking(true)?;
        let owner = sys::effective_uid();
        let thread = StoppableThread::spawn("fastfuse-stats", move |stop| loop {
            let fds = [listener.as_fd(), stop.as_fd()];
            match sys::poll_readable(&fds, None) {
                Ok(ready) if ready[1] != 0 => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("statistics socket: poll failed: {e}");
                    return;
                }
            }
            match listener.accept() {
                Ok((mut conn, _)) => {
                    // An abstract socket has no file mode: anyone on the
                    // machine may connect. What a mount serves is its owner's
                    // business (file sizes and rates tell a lot), so only
                    // root and the daemon's own user are answered.
                    match sys::peer_uid(conn.as_fd()) {
                        Ok(uid) if uid == 0 || uid == owner => {
                            let json = serde_json::to_vec(&stats.snapshot()).unwrap_or_default();
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.write_all(&json);
                        }
                        Ok(uid) => tracing::debug!(uid, "statistics refused to another user"),
                        Err(e) => tracing::debug!("statistics socket: SO_PEERCRED failed: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Out of descriptors (EMFILE) a waiting connection stays
                // queued and accept fails at once, again and again: pause
                // rather than spin on it, still waking at once to stop.
                Err(_) => {
                    if let Ok(ready) =
                        sys::poll_readable(&[stop.as_fd()], Some(Duration::from_millis(50)))
                    {
                        if ready[0] != 0 {
                            return;
                        }
                    }
                }
            }
        })?;
        Ok(thread)
    }

    /// Reads the statistics of the fastfuse session mounted at `mountpoint`
    /// (in this or another process). Finds the session by the unique id of the
    /// mount at `mountpoint` (statx with `AT_STATX_DONT_SYNC`, which sends the
    /// filesystem no request), so it answers even when the filesystem is busy
    /// or its daemon stopped, and never reaches an older daemon that served the
    /// same path. Needs Linux 6.8+, the right to access the mount (its owner,
    /// or anyone with `allow_other`), and to be root or the daemon's user: the
    /// daemon closes the connection on anyone else, which reads as an error
    /// here.
    pub fn query(mountpoint: &Path) -> io::Result<StatsSnapshot> {
        let mount_id = crate::mount::mount_id(mountpoint).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot examine {}: {e}", mountpoint.display()),
            )
        })?;
        let addr = SocketAddr::from_abstract_name(socket_name(mount_id))?;
        let mut conn = UnixStream::connect_addr(&addr).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "no fastfuse session serves statistics for {} (is it a fastfuse mountpoint?): {e}",
                    mountpoint.display()
                ),
            )
        })?;
        let mut json = Vec::new();
        conn.read_to_end(&mut json)?;
        serde_json::from_slice(&json).map_err(io::Error::other)
    }
}

#[cfg(feature = "stats")]
pub use socket::query;
#[cfg(feature = "stats")]
pub(crate) use socket::serve;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_sizes_land_in_power_of_two_buckets() {
        let stats = Stats::default();
        let shard = stats.shard("dev");
        shard.record_write(1 << 20);
        shard.record_write(4096);
        shard.record_write(4097);
        shard.record_write(1);
        let snap = stats.snapshot();
        assert_eq!(snap.writes_up_to(1 << 20), 1);
        assert_eq!(snap.writes_up_to(4096), 1);
        assert_eq!(snap.writes_up_to(8192), 1);
        assert_eq!(snap.writes_up_to(1), 1);
    }

    #[test]
    fn shards_are_summed_per_opcode_and_transport() {
        let stats = Stats::default();
        let a = stats.shard("dev");
        let b = stats.shard("uring");
        a.record(Opcode::Lookup as u32, Duration::from_micros(3), false);
        b.record(Opcode::Lookup as u32, Duration::from_micros(5), true);
        let snap = stats.snapshot();
        let lookup = &snap.ops["LOOKUP"];
        assert_eq!((lookup.count, lookup.errors), (2, 1));
        assert_eq!(lookup.total_ns, 8000);
        assert_eq!(lookup.latency_log2_ns.iter().sum::<u64>(), 2);
        assert_eq!(snap.requests_by_transport["dev"], 1);
        assert_eq!(snap.requests_by_transport["uring"], 1);
    }
}
