//! Dispatch: one `match` from a decoded [`Operation`] to the [`Filesystem`]
//! method, and the method's typed answer to reply bytes.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fastfuse_abi::{self as abi, fattr::*};

use crate::deferred::ReplyTo;
use crate::dirent::{DirEntries, DirEntriesPlus};
use crate::errno::Errno;
use crate::filesystem::{CopyRange, Filesystem, OpenFlags};
use crate::interrupt::Interrupts;
use crate::reply::{self, put, put_bytes, Outcome};
use crate::request::{Caller, Extensions, Operation};
use crate::splice::PipeData;
use crate::types::{FileHandle, NodeId, SetAttr, TimeOrNow, Timestamp, WriteFlags, Xattr};

/// Shared by every worker of a session.
pub(crate) struct Dispatcher<F> {
    pub(crate) fs: F,
    pub(crate) interrupts: Arc<Interrupts>,
    destroyed: AtomicBool,
}

fn set_attr(a: &abi::SetattrIn) -> SetAttr {
    let v = a.valid;
    let on = |bit: u32| v & bit != 0;
    let stamp = |now_bit: u32, bit: u32, s: u64, ns: u32| {
        if on(now_bit) {
            Some(TimeOrNow::Now)
        } else if on(bit) {
            Some(TimeOrNow::At(Timestamp::from_wire(s, ns)))
        } else {
            None
        }
    };
    SetAttr {
        fh: on(FATTR_FH).then_some(FileHandle(a.fh)),
        mode: on(FATTR_MODE).then_some(a.mode),
        uid: on(FATTR_UID).then_some(a.uid),
        gid: on(FATTR_GID).then_some(a.gid),
        size: on(FATTR_SIZE).then_some(a.size),
        atime: stamp(FATTR_ATIME_NOW, FATTR_ATIME, a.atime, a.atimensec),
        mtime: stamp(FATTR_MTIME_NOW, FATTR_MTIME, a.mtime, a.mtimensec),
        ctime: on(FATTR_CTIME).then(|| Timestamp::from_wire(a.ctime, a.ctimensec)),
        kill_suidgid: on(FATTR_KILL_SUIDGID),
        lock_owner: on(FATTR_LOCKOWNER).then_some(a.lock_owner),
    }
}

fn xattr_reply(out: &mut [u8], x: Xattr, size: u32) -> Result<usize, Errno> {
    match x {
        Xattr::Size(n) => put(
            out,
            &abi::GetxattrOut {
                size: n,
                padding: 0,
            },
        ),
        Xattr::Data(d) if size == 0 => put(
            out,
            &abi::GetxattrOut {
                size: d.len() as u32,
                padding: 0,
            },
        ),
        Xattr::Data(d) if d.len() > size as usize => Err(Errno::ERANGE),
        Xattr::Data(d) => put_bytes(out, &d),
    }
}

fn write_flags(arg: &abi::WriteIn) -> WriteFlags {
    use abi::write_flags::*;
    WriteFlags {
        cache: arg.write_flags & FUSE_WRITE_CACHE != 0,
        kill_suidgid: arg.write_flags & FUSE_WRITE_KILL_SUIDGID != 0,
        lock_owner: (arg.write_flags & FUSE_WRITE_LOCKOWNER != 0).then_some(arg.lock_owner),
        open_flags: arg.flags,
    }
}

fn write_reply(out: &mut [u8], size: u32) -> Result<usize, Errno> {
    put(out, &abi::WriteOut { size, padding: 0 })
}

/// Runs a filesystem call; a panic in it is logged and answered with EIO
/// (nothing, for requests that take no reply) instead of ending the thread
/// that serves it, which would leave the kernel waiting for the answer (and,
/// over io_uring, leave that thread's entries unserved).
fn contain_panic(header: &abi::InHeader, call: impl FnOnce() -> Outcome) -> Outcome {
    // AssertUnwindSafe: the engine's own state is not touched by the call
    // (its locks recover from poisoning); the filesystem's is what the
    // panic left, as documented on Filesystem.
    catch_unwind(AssertUnwindSafe(call)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a non-string payload");
        tracing::error!(
            unique = header.unique,
            opcode = header.opcode,
            "the filesystem panicked serving a request ({what}); answering EIO"
        );
        if abi::Opcode::from_raw(header.opcode).is_none_or(abi::Opcode::takes_reply) {
            Outcome::Reply(Err(Errno::EIO))
        } else {
            Outcome::None
        }
    })
}

impl<F: Filesystem> Dispatcher<F> {
    pub(crate) fn new(fs: F) -> Self {
        Dispatcher {
            fs,
            interrupts: Arc::default(),
            destroyed: AtomicBool::new(false),
        }
    }

    /// Calls the filesystem's `destroy` once, whether DESTROY arrived or the
    /// connection went away.
    pub(crate) fn destroy_once(&self) {
        if !self.destroyed.swap(true, Ordering::AcqRel) {
            self.fs.destroy();
        }
    }

    /// The connection ended: deferred requests still waiting are woken (their
    /// answers go nowhere) and every later wait counts as interrupted.
    pub(crate) fn connection_ended(&self) {
        self.interrupts.end();
    }

    /// Serves one request; `out` is where the reply payload goes, `to` where
    /// a deferred reply would go.
    pub(crate) fn handle(
        &self,
        header: &abi::InHeader,
        op: Operation<'_>,
        ext: Extensions,
        out: &mut [u8],
        to: ReplyTo<'_>,
    ) -> Outcome {
        let req = Caller::new(header, ext, Some(&self.interrupts), to);
        let result = contain_panic(header, || self.call(&req, header, op, out));
        self.settle(&req, result)
    }

    /// What a served request comes to: deferred if the filesystem took it
    /// over (also when it panicked after: the Deferred, dropped or kept,
    /// answers), otherwise `result`, and then the request leaves the
    /// interrupt set.
    fn settle(&self, req: &Caller<'_>, result: Outcome) -> Outcome {
        if req.was_deferred() {
            return Outcome::Deferred;
        }
        if let Outcome::Reply(_) = result {
            self.interrupts.finish(req.unique.0);
        }
        result
    }

    /// Serves a WRITE whose data is still in a pipe (see [`PipeData`]).
    pub(crate) fn handle_spliced_write(
        &self,
        header: &abi::InHeader,
        arg: &abi::WriteIn,
        data: &mut PipeData<'_>,
        out: &mut [u8],
        to: ReplyTo<'_>,
    ) -> Outcome {
        let req = Caller::new(header, Extensions::default(), Some(&self.interrupts), to);
        let fh = FileHandle(arg.fh);
        let r = contain_panic(header, || {
            Outcome::Reply(
                self.fs
                    .write_spliced(
                        &req,
                        NodeId(header.nodeid),
                        fh,
                        arg.offset,
                        data,
                        write_flags(arg),
                    )
                    .and_then(|n| write_reply(out, n)),
            )
        });
        self.settle(&req, r)
    }

    fn call(
        &self,
        req: &Caller<'_>,
        header: &abi::InHeader,
        op: Operation<'_>,
        out: &mut [u8],
    ) -> Outcome {
        let fs = &self.fs;
        let node = NodeId(header.nodeid);
        use Operation as O;
        let r: Result<usize, Errno> = match op {
            O::Forget(arg) => {
                fs.forget(node, arg.nlookup);
                return Outcome::None;
            }
            O::BatchForget(forgets) => {
                fs.batch_forget(&mut forgets.map(|f| (NodeId(f.nodeid), f.nlookup)));
                return Outcome::None;
            }
            O::Interrupt(arg) => {
                self.interrupts.insert(arg.unique);
                return Outcome::None;
            }
            O::NotifyReply => return Outcome::None,
            // A second INIT on a live session is a protocol error.
            O::Init(_) => Err(Errno::EIO),
            O::Destroy => {
                self.destroy_once();
                Ok(0)
            }
            O::Lookup { name } => fs
                .lookup(req, node, name)
                .and_then(|e| put(out, &reply::entry_out(&e))),
            O::Getattr(arg) => {
                let fh = (arg.getattr_flags & abi::getattr_flags::FUSE_GETATTR_FH != 0)
                    .then_some(FileHandle(arg.fh));
                fs.getattr(req, node, fh)
                    .and_then(|a| put(out, &reply::attr_out(&a)))
            }
            O::Setattr(arg) => fs
                .setattr(req, node, &set_attr(&arg))
                .and_then(|a| put(out, &reply::attr_out(&a))),
            O::Readlink => fs.readlink(req, node).and_then(|t| put_bytes(out, &t)),
            O::Symlink { name, target } => fs
                .symlink(req, node, name, target)
                .and_then(|e| put(out, &reply::entry_out(&e))),
            O::Mknod { arg, name } => fs
                .mknod(req, node, name, arg.mode, arg.rdev, arg.umask)
                .and_then(|e| put(out, &reply::entry_out(&e))),
            O::Mkdir { arg, name } => fs
                .mkdir(req, node, name, arg.mode, arg.umask)
                .and_then(|e| put(out, &reply::entry_out(&e))),
            O::Unlink { name } => fs.unlink(req, node, name).map(|()| 0),
            O::Rmdir { name } => fs.rmdir(req, node, name).map(|()| 0),
            O::Rename {
                new_dir,
                flags,
                name,
                new_name,
            } => fs
                .rename(req, node, name, NodeId(new_dir), new_name, flags)
                .map(|()| 0),
            O::Link { arg, name } => fs
                .link(req, NodeId(arg.oldnodeid), node, name)
                .and_then(|e| put(out, &reply::entry_out(&e))),
            O::Open(arg) => {
                let flags = OpenFlags {
                    flags: arg.flags,
                    kill_suidgid: arg.open_flags & abi::open_flags::FUSE_OPEN_KILL_SUIDGID != 0,
                };
                fs.open(req, node, flags)
                    .and_then(|o| put(out, &reply::open_out(&o)))
            }
            O::Read(arg) => {
                let n = (arg.size as usize).min(out.len());
                fs.read(req, node, FileHandle(arg.fh), arg.offset, &mut out[..n])
                    .map(|got| got.min(n))
            }
            O::Write { arg, data } => fs
                .write(
                    req,
                    node,
                    FileHandle(arg.fh),
                    arg.offset,
                    data,
                    write_flags(&arg),
                )
                .and_then(|n| write_reply(out, n)),
            O::Statfs => fs
                .statfs(req, node)
                .and_then(|st| put(out, &abi::StatfsOut { st })),
            O::Release(arg) => fs
                .release(
                    req,
                    node,
                    FileHandle(arg.fh),
                    arg.flags,
                    arg.release_flags,
                    arg.lock_owner,
                )
                .map(|()| 0),
            O::Fsync(arg) => fs
                .fsync(req, node, FileHandle(arg.fh), arg.fsync_flags & 1 != 0)
                .map(|()| 0),
            O::Setxattr {
                flags,
                setxattr_flags,
                name,
                value,
                ..
            } => {
                let kill_sgid =
                    setxattr_flags & abi::setxattr_flags::FUSE_SETXATTR_ACL_KILL_SGID != 0;
                fs.setxattr(req, node, name, value, flags, kill_sgid)
                    .map(|()| 0)
            }
            O::Getxattr { size, name } => fs
                .getxattr(req, node, name, size)
                .and_then(|x| xattr_reply(out, x, size)),
            O::Listxattr { size } => fs
                .listxattr(req, node, size)
                .and_then(|x| xattr_reply(out, x, size)),
            O::Removexattr { name } => fs.removexattr(req, node, name).map(|()| 0),
            O::Flush(arg) => fs
                .flush(req, node, FileHandle(arg.fh), arg.lock_owner)
                .map(|()| 0),
            O::Opendir(arg) => fs
                .opendir(req, node, arg.flags)
                .and_then(|o| put(out, &reply::open_out(&o))),
            O::Readdir(arg) => {
                let n = (arg.size as usize).min(out.len());
                let mut entries = DirEntries::new(&mut out[..n]);
                fs.readdir(req, node, FileHandle(arg.fh), arg.offset, &mut entries)
                    .map(|()| entries.len())
            }
            O::Readdirplus(arg) => {
                let n = (arg.size as usize).min(out.len());
                let mut entries = DirEntriesPlus::new(&mut out[..n]);
                fs.readdirplus(req, node, FileHandle(arg.fh), arg.offset, &mut entries)
                    .map(|()| entries.len())
            }
            O::Releasedir(arg) => fs
                .releasedir(req, node, FileHandle(arg.fh), arg.flags)
                .map(|()| 0),
            O::Fsyncdir(arg) => fs
                .fsyncdir(req, node, FileHandle(arg.fh), arg.fsync_flags & 1 != 0)
                .map(|()| 0),
            O::Getlk(arg) => fs
                .getlk(req, node, FileHandle(arg.fh), arg.owner, arg.lk.into())
                .and_then(|lk| put(out, &abi::LkOut { lk: lk.into() })),
            O::Setlk(arg) | O::Setlkw(arg) => {
                let sleep = header.opcode == abi::Opcode::Setlkw as u32;
                let flock = arg.lk_flags & abi::lk_flags::FUSE_LK_FLOCK != 0;
                fs.setlk(
                    req,
                    node,
                    FileHandle(arg.fh),
                    arg.owner,
                    arg.lk.into(),
                    sleep,
                    flock,
                )
                .map(|()| 0)
            }
            O::Access(arg) => fs.access(req, node, arg.mask).map(|()| 0),
            O::Create { arg, name } => {
                let flags = OpenFlags {
                    flags: arg.flags,
                    kill_suidgid: arg.open_flags & abi::open_flags::FUSE_OPEN_KILL_SUIDGID != 0,
                };
                fs.create(req, node, name, arg.mode, arg.umask, flags)
                    .and_then(|(e, o)| {
                        let n = put(out, &reply::entry_out(&e))?;
                        Ok(n + put(&mut out[n..], &reply::open_out(&o))?)
                    })
            }
            O::Tmpfile { arg } => {
                let flags = OpenFlags {
                    flags: arg.flags,
                    kill_suidgid: false,
                };
                fs.tmpfile(req, node, arg.mode, arg.umask, flags)
                    .and_then(|(e, o)| {
                        let n = put(out, &reply::entry_out(&e))?;
                        Ok(n + put(&mut out[n..], &reply::open_out(&o))?)
                    })
            }
            O::Fallocate(arg) => fs
                .fallocate(
                    req,
                    node,
                    FileHandle(arg.fh),
                    arg.offset,
                    arg.length,
                    arg.mode,
                )
                .map(|()| 0),
            O::Lseek(arg) => fs
                .lseek(req, node, FileHandle(arg.fh), arg.offset, arg.whence)
                .and_then(|offset| put(out, &abi::LseekOut { offset })),
            O::CopyFileRange(arg) => {
                // The reply's size is 32 bits: never copy more than fits.
                let range = CopyRange {
                    node_in: node,
                    fh_in: FileHandle(arg.fh_in),
                    off_in: arg.off_in,
                    node_out: NodeId(arg.nodeid_out),
                    fh_out: FileHandle(arg.fh_out),
                    off_out: arg.off_out,
                    len: arg.len.min(u64::from(u32::MAX) & !0xfff),
                    flags: arg.flags,
                };
                fs.copy_file_range(req, &range).and_then(|n| {
                    put(
                        out,
                        &abi::WriteOut {
                            size: n as u32,
                            padding: 0,
                        },
                    )
                })
            }
            O::Syncfs(_) => fs.syncfs(req, node).map(|()| 0),
            // STATX: the kernel falls back to GETATTR on ENOSYS.
            O::Statx(_)
            | O::Bmap(_)
            | O::Ioctl(_)
            | O::Poll(_)
            | O::Unsupported(_)
            | O::Unknown(_) => Err(Errno::ENOSYS),
        };
        Outcome::Reply(r)
    }
}
