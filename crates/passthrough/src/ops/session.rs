//! The session's own requests: INIT (what the filesystem asks the kernel
//! for), its agreement, and DESTROY.

use fastfuse::abi::init::{
    FUSE_CREATE_SUPP_GROUP, FUSE_DONT_MASK, FUSE_FLOCK_LOCKS, FUSE_POSIX_ACL, FUSE_POSIX_LOCKS,
};
use fastfuse::{Capabilities, Connection, Errno, InitFlags};
use std::sync::atomic::Ordering;

use super::file;
use crate::fs::{PassthroughFs, SessionInfo};

/// INIT: the flags only this filesystem can promise. Locks are the
/// source's (`ops::lock` takes them there); POSIX ACLs where the source
/// keeps them and the options allow: FUSE_DONT_MASK, so that the source
/// applies a parent's default ACL in place of the umask, and
/// FUSE_POSIX_ACL only where the kernel checks permissions anyway.
pub(super) fn init(
    fs: &PassthroughFs,
    kernel: &Capabilities,
    ask: &mut InitFlags,
) -> Result<(), Errno> {
    ask.ask(FUSE_POSIX_LOCKS | FUSE_FLOCK_LOCKS);
    if fs.daemon.is_some() {
        // Creations name the one supplementary group that matters to
        // them (`PassthroughFs::create_as`).
        ask.ask(FUSE_CREATE_SUPP_GROUP);
    }
    if fs.options.posix_acl && fs.options.xattr {
        if !fs.source_has_posix_acls() {
            tracing::info!("the source keeps no POSIX ACLs; serving without them");
            return Ok(());
        }
        // The kernel stops applying the umask; the source applies it, or
        // a default ACL (see `PassthroughFs::as_creator`).
        ask.ask(FUSE_DONT_MASK);
        if !fs.options.kernel_checks_permissions {
            // FUSE_POSIX_ACL would turn `default_permissions` on, and
            // with it a GETATTR of the parent after every creation and
            // removal. Without it only the mounting user gets in, and
            // the source checks that user's access, ACLs included; the
            // ACL xattrs pass through as any xattr (`ops::xattr`).
            tracing::debug!("POSIX ACLs are checked by the source, not the kernel");
        } else if kernel.offers(FUSE_POSIX_ACL) {
            ask.ask(FUSE_POSIX_ACL);
        } else {
            tracing::info!(
                "the kernel does not offer FUSE_POSIX_ACL; it checks the modes without the ACLs"
            );
        }
    }
    Ok(())
}

/// INIT agreed: what the filesystem keeps of it for the session.
pub(super) fn ready(fs: &PassthroughFs, conn: &Connection) -> Result<(), Errno> {
    let n = conn.negotiated();
    let info = SessionInfo {
        conn: conn.clone(),
        writeback: n.writeback_cache(),
        passthrough: fs.options.kernel_passthrough && n.passthrough(),
        max_write: n.max_write as usize,
        dont_mask: n.dont_mask(),
        posix_acl: n.posix_acl(),
        create_supp_group: n.has(FUSE_CREATE_SUPP_GROUP),
    };
    if info.writeback && fs.options.timeout.is_zero() {
        tracing::warn!(
            "timeout 0 with the writeback cache: the kernel will ask GETATTR before every write"
        );
    }
    if fs.options.kernel_passthrough && !n.passthrough() {
        tracing::info!("kernel passthrough not agreed; the daemon serves reads and writes");
    }
    tracing::debug!(
        source = %fs.source.display(),
        writeback = info.writeback,
        passthrough = info.passthrough,
        "passthrough filesystem ready"
    );
    // A filesystem serves one session: its node ids and handles mean
    // nothing to another connection. The one exception is the same
    // session resumed after a hand-over that did not happen (`save` was
    // called since): the connection is the one kept, which stays.
    let Err(info) = fs.session.set(info) else {
        close_orphan_backing(fs, conn);
        return Ok(());
    };
    let same = fs
        .session
        .get()
        .is_some_and(|kept| kept.conn.negotiated() == info.conn.negotiated());
    // Acquire pairs with the release in `save`.
    if same && fs.saved.swap(false, Ordering::AcqRel) {
        tracing::info!("the state was not handed over; serving the session on");
        return Ok(());
    }
    tracing::error!("this PassthroughFs already served a session; create a new one");
    Err(Errno::EBUSY)
}

/// DESTROY (or the connection went away): every handle and node goes.
pub(super) fn destroy(fs: &PassthroughFs) {
    file::release_all(fs);
    for dir in fs.dirs.drain() {
        if let Some(journal) = &fs.journal {
            journal.release_open(&dir.journal_slot);
        }
    }
    fs.inodes.clear();
}

/// A recovered filesystem's first `ready`: the backing ids the dead
/// server registered that no recovered file uses are closed.
fn close_orphan_backing(fs: &PassthroughFs, conn: &Connection) {
    let Some(journal) = &fs.journal else { return };
    for id in journal.take_orphan_backing() {
        if let Err(e) = conn.backing_close(id) {
            tracing::debug!("backing_close({id}) of a dead server's backing id: {e}");
        }
    }
}
