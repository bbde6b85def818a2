//! Acting as the caller: the worker thread's fsuid, fsgid and supplementary
//! groups switched to the requesting process's for the length of one
//! operation.
//!
//! Linux keeps credentials per thread; only the C library makes
//! `setuid`-style calls process-wide (it signals every thread). The raw
//! `setfsuid`, `setfsgid` and `setgroups` system calls therefore change the
//! calling worker alone, and the others keep serving as the daemon. A
//! non-zero fsuid also drops the filesystem capabilities (CAP_DAC_OVERRIDE,
//! CAP_FOWNER, CAP_MKNOD, ...) from the thread's effective set, so the
//! source's permission checks apply to the caller exactly; switching back
//! to fsuid 0 restores them.
//!
//! Safe code: the system calls are wrapped in [`crate::sys`].

use std::io::{self, BufRead};

use fastfuse::{Caller, Errno};

use crate::sys;

/// The daemon's own identity, restored after each switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

impl Identity {
    /// The calling thread's effective ids and supplementary groups (at
    /// construction, the daemon's).
    pub(crate) fn current() -> io::Result<Identity> {
        let (uid, gid) = sys::effective_ids();
        Ok(Identity {
            uid,
            gid,
            groups: sys::getgroups()?,
        })
    }

    /// Switches the calling thread to `caller`'s fsuid, fsgid and groups
    /// when they differ from the daemon's; the returned guard switches back
    /// when dropped. Fails with EPERM when the kernel refuses (the daemon
    /// lacks CAP_SETUID/CAP_SETGID): better no answer than a file created
    /// with the wrong owner.
    pub(crate) fn become_caller(
        &self,
        caller: &Caller<'_>,
        groups: Groups,
    ) -> Result<AsCaller<'_>, Errno> {
        if caller.uid == self.uid && caller.gid == self.gid {
            return Ok(AsCaller { daemon: None });
        }
        let groups = match groups {
            Groups::Given(group) => group.into_iter().collect(),
            // Requests the kernel makes on its own (writeback) name no
            // process; none of the daemon's groups must leak to them.
            Groups::OfProcess if caller.pid == 0 => Vec::new(),
            Groups::OfProcess => caller_groups(caller.pid).unwrap_or_default(),
        };
        // The guard exists before the first change, so that any failure
        // below still restores everything.
        let guard = AsCaller { daemon: Some(self) };
        sys::set_thread_groups(&groups).map_err(|e| {
            tracing::warn!("setgroups for uid {} failed: {e}", caller.uid);
            Errno::EPERM
        })?;
        sys::setfsgid(caller.gid);
        sys::setfsuid(caller.uid);
        // setfsuid/setfsgid report no error; asking with an invalid id (-1)
        // returns the current value, which tells whether the change took.
        if sys::setfsgid(u32::MAX) != caller.gid || sys::setfsuid(u32::MAX) != caller.uid {
            tracing::warn!(
                "cannot act as uid {} gid {} (is the daemon root?)",
                caller.uid,
                caller.gid
            );
            return Err(Errno::EPERM);
        }
        Ok(guard)
    }
}

/// The supplementary groups a switched worker takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Groups {
    /// The calling process's, from /proc (an open, a read and a parse).
    OfProcess,
    /// Only this one, or none: what the kernel said matters for a creation
    /// (`Caller::create_supp_group`).
    Given(Option<libc::gid_t>),
}

/// While alive, the worker thread acts as the caller; dropping it gives
/// the thread back the daemon's identity.
#[must_use = "the credentials switch back when this is dropped"]
pub(crate) struct AsCaller<'a> {
    /// The identity to restore, or `None` when nothing was switched.
    daemon: Option<&'a Identity>,
}

impl AsCaller<'_> {
    /// A guard that changed nothing (the options do not switch).
    pub(crate) fn unchanged() -> AsCaller<'static> {
        AsCaller { daemon: None }
    }
}

impl Drop for AsCaller<'_> {
    fn drop(&mut self) {
        let Some(daemon) = self.daemon else { return };
        // fsuid first: going back to fsuid 0 restores the fs capabilities
        // before the groups are set.
        sys::setfsuid(daemon.uid);
        sys::setfsgid(daemon.gid);
        let groups = sys::set_thread_groups(&daemon.groups);
        if groups.is_err()
            || sys::setfsuid(u32::MAX) != daemon.uid
            || sys::setfsgid(u32::MAX) != daemon.gid
        {
            // A worker that keeps a caller's identity would serve the next
            // request as the wrong user. That cannot be allowed to go on;
            // it also cannot happen while the daemon keeps CAP_SETUID and
            // CAP_SETGID, which switching away never drops.
            tracing::error!("cannot restore the daemon's credentials; aborting");
            std::process::abort();
        }
    }
}

/// Whether `caller` is in group `gid`: its fsgid, or one of its process's
/// supplementary groups (read only when the fsgid is not it). Requests the
/// kernel makes on nobody's behalf (pid 0) are in no other group.
pub(crate) fn in_group(caller: &Caller<'_>, gid: libc::gid_t) -> bool {
    caller.gid == gid
        || (caller.pid != 0
            && caller_groups(caller.pid).is_some_and(|groups| groups.contains(&gid)))
}

/// The supplementary groups of process `pid`, from the "Groups:" line of
/// `/proc/<pid>/status`. `None` when the process is gone or unreadable.
fn caller_groups(pid: u32) -> Option<Vec<libc::gid_t>> {
    let file = std::fs::File::open(format!("/proc/{pid}/status")).ok()?;
    for line in io::BufReader::new(file).lines() {
        let line = line.ok()?;
        if let Some(rest) = line.strip_prefix("Groups:") {
            return Some(parse_groups(rest));
        }
    }
    None
}

/// Parses the whitespace-separated numbers of a "Groups:" line, skipping
/// anything that is not one.
fn parse_groups(list: &str) -> Vec<libc::gid_t> {
    list.split_whitespace()
        .filter_map(|g| g.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_line() {
        assert_eq!(parse_groups("\t4 24 27 x 100  "), vec![4, 24, 27, 100]);
        assert!(parse_groups("").is_empty());
    }

    #[test]
    fn own_groups_are_readable() {
        let pid = std::process::id();
        assert!(caller_groups(pid).is_some());
    }

    #[test]
    fn same_identity_switches_nothing() {
        let me = Identity::current().unwrap();
        let caller = Caller::detached(me.uid, me.gid, std::process::id());
        let guard = me.become_caller(&caller, Groups::OfProcess).unwrap();
        assert!(guard.daemon.is_none());
    }

    #[test]
    fn switch_is_per_thread_and_restored() {
        let me = Identity::current().unwrap();
        if me.uid != 0 {
            eprintln!("skipped: switching credentials needs root");
            return;
        }
        // In a thread of its own, so the test harness thread never changes.
        let (switched_tx, switched_rx) = std::sync::mpsc::channel();
        let (checked_tx, checked_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            let caller = Caller::detached(12345, 23456, 0);
            {
                let _as = me.become_caller(&caller, Groups::OfProcess).unwrap();
                assert_eq!(sys::setfsuid(u32::MAX), 12345);
                assert_eq!(sys::setfsgid(u32::MAX), 23456);
                assert!(sys::getgroups().unwrap().is_empty());
                switched_tx.send(()).unwrap();
                checked_rx.recv().unwrap();
            }
            assert_eq!(sys::setfsuid(u32::MAX), me.uid);
            assert_eq!(sys::setfsgid(u32::MAX), me.gid);
            assert_eq!(sys::getgroups().unwrap(), me.groups);
        });
        switched_rx.recv().unwrap();
        // This thread, running at the same time, kept its identity.
        assert_eq!(sys::setfsuid(u32::MAX), 0);
        checked_tx.send(()).unwrap();
        worker.join().unwrap();
    }
}
