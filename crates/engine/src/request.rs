//! Request decoding: a pure function from the bytes the kernel sent to a
//! typed [`Operation`] that borrows them. No I/O, no filesystem.
//!
//! Fixed-size argument structs are copied out by value (they are at most a
//! few dozen bytes, and copying frees the decoder from alignment rules);
//! names and WRITE data stay borrowed from the request buffer.

use std::cell::Cell;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use fastfuse_abi::{self as abi, Opcode};
use thiserror::Error;
use zerocopy::{FromBytes, IntoBytes};

use crate::deferred::{Deferred, ReplyTo};
use crate::interrupt::Interrupts;
use crate::types::Unique;

/// Why a request could not be decoded. The engine answers such a request
/// with EIO (or drops it when it cannot even read its `unique`) and logs it.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than a `fuse_in_header`.
    #[error("request of {0} bytes is shorter than fuse_in_header")]
    ShortHeader(usize),
    /// `fuse_in_header.len` disagrees with the bytes received.
    #[error("header says {header} bytes but {received} were received")]
    LengthMismatch {
        /// What the header claims.
        header: u32,
        /// What arrived.
        received: usize,
    },
    /// An argument runs past the end of the request.
    #[error("{opcode:?}: argument truncated (wanted {wanted} bytes, {left} left)")]
    Truncated {
        /// The request's opcode.
        opcode: Opcode,
        /// Bytes the argument needs.
        wanted: usize,
        /// Bytes that were left.
        left: usize,
    },
    /// A name is not NUL-terminated within the request.
    #[error("{0:?}: name without NUL terminator")]
    MissingNul(Opcode),
    /// The extension area (`total_extlen`) is larger than the request body.
    #[error("extension length {0} exceeds the request body")]
    BadExtLen(u32),
}

/// Who made a request, and whether it has been interrupted since.
pub struct Caller<'a> {
    /// The request's id.
    pub unique: Unique,
    /// The caller's fsuid.
    pub uid: u32,
    /// The caller's fsgid.
    pub gid: u32,
    /// The caller's thread group id (0 for requests made on nobody's behalf,
    /// such as writeback).
    pub pid: u32,
    opcode: u32,
    supp_group: Option<u32>,
    interrupts: Option<&'a Arc<Interrupts>>,
    reply_to: ReplyTo<'a>,
    /// Set by [`Caller::defer`]: the method's return value is not the reply.
    deferred: Cell<bool>,
}

impl std::fmt::Debug for Caller<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("unique", &self.unique)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("pid", &self.pid)
            .field("deferred", &self.deferred.get())
            .finish_non_exhaustive()
    }
}

impl<'a> Caller<'a> {
    pub(crate) fn new(
        header: &abi::InHeader,
        ext: Extensions,
        interrupts: Option<&'a Arc<Interrupts>>,
        reply_to: ReplyTo<'a>,
    ) -> Self {
        Caller {
            unique: Unique(header.unique),
            uid: header.uid,
            gid: header.gid,
            pid: header.pid,
            opcode: header.opcode,
            supp_group: ext.supp_group,
            interrupts,
            reply_to,
            deferred: Cell::new(false),
        }
    }

    /// A caller with the given credentials, for tests and for filesystems
    /// that call themselves. Its requests cannot be deferred.
    pub fn detached(uid: u32, gid: u32, pid: u32) -> Caller<'static> {
        Caller {
            unique: Unique(0),
            uid,
            gid,
            pid,
            opcode: 0,
            supp_group: None,
            interrupts: None,
            reply_to: ReplyTo::Nowhere,
            deferred: Cell::new(false),
        }
    }

    /// On CREATE, MKNOD, MKDIR, SYMLINK and TMPFILE, when the filesystem
    /// asked for `FUSE_CREATE_SUPP_GROUP`: the new entry's parent
    /// directory's group, if the caller is in it by one of its
    /// supplementary groups (and not by its fsgid). That is the one group
    /// besides the fsgid that decides whether a new file may keep a
    /// set-group-ID bit, and whether the parent's group permissions apply
    /// to the caller; `None` also when the kernel did not say.
    pub fn create_supp_group(&self) -> Option<u32> {
        self.supp_group
    }

    /// Whether the kernel has sent INTERRUPT for this request (the caller
    /// got a signal). A long wait, such as SETLKW, should then give up with
    /// EINTR.
    pub fn is_interrupted(&self) -> bool {
        self.interrupts.is_some_and(|i| i.contains(self.unique.0))
    }

    /// Takes the request over, to be answered later through the returned
    /// handle from any thread; the method's own return value is then
    /// ignored, and the worker goes on to other requests. `None` when this
    /// caller cannot defer (a [`detached`](Caller::detached) one) or the
    /// request was deferred already: answer it by returning.
    ///
    /// Deferring costs a reference count and, over io_uring, a spare ring
    /// entry while the request is out; answering at once costs nothing.
    pub fn defer(&self) -> Option<Deferred> {
        if self.deferred.get() {
            return None;
        }
        let interrupts = self.interrupts?.clone();
        let d = Deferred::new(self.unique.0, self.opcode, interrupts, self.reply_to)?;
        self.deferred.set(true);
        Some(d)
    }

    /// Whether [`defer`](Caller::defer) took the request over.
    pub(crate) fn was_deferred(&self) -> bool {
        self.deferred.get()
    }
}

/// What the protocol agreed at INIT that changes how requests are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The agreed minor version.
    pub minor: u32,
    /// FUSE_SETXATTR_EXT was agreed: `fuse_setxattr_in` is the full struct.
    pub setxattr_ext: bool,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            minor: abi::FUSE_KERNEL_MINOR_VERSION,
            setxattr_ext: false,
        }
    }
}

/// One decoded request: the operation and its arguments, borrowing the
/// request buffer. The node the operation applies to is in the header.
#[derive(Debug)]
#[allow(missing_docs)] // variants mirror the kernel's opcodes one to one
pub enum Operation<'a> {
    Init(abi::InitIn),
    Destroy,
    Lookup {
        name: &'a OsStr,
    },
    Forget(abi::ForgetIn),
    BatchForget(Forgets<'a>),
    Getattr(abi::GetattrIn),
    Setattr(abi::SetattrIn),
    Readlink,
    Symlink {
        name: &'a OsStr,
        target: &'a OsStr,
    },
    Mknod {
        arg: abi::MknodIn,
        name: &'a OsStr,
    },
    Mkdir {
        arg: abi::MkdirIn,
        name: &'a OsStr,
    },
    Unlink {
        name: &'a OsStr,
    },
    Rmdir {
        name: &'a OsStr,
    },
    Rename {
        new_dir: u64,
        flags: u32,
        name: &'a OsStr,
        new_name: &'a OsStr,
    },
    Link {
        arg: abi::LinkIn,
        name: &'a OsStr,
    },
    Open(abi::OpenIn),
    Read(abi::ReadIn),
    Write {
        arg: abi::WriteIn,
        data: &'a [u8],
    },
    Statfs,
    Release(abi::ReleaseIn),
    Fsync(abi::FsyncIn),
    Setxattr {
        size: u32,
        flags: u32,
        setxattr_flags: u32,
        name: &'a OsStr,
        value: &'a [u8],
    },
    Getxattr {
        size: u32,
        name: &'a OsStr,
    },
    Listxattr {
        size: u32,
    },
    Removexattr {
        name: &'a OsStr,
    },
    Flush(abi::FlushIn),
    Opendir(abi::OpenIn),
    Readdir(abi::ReadIn),
    Releasedir(abi::ReleaseIn),
    Fsyncdir(abi::FsyncIn),
    Getlk(abi::LkIn),
    Setlk(abi::LkIn),
    Setlkw(abi::LkIn),
    Access(abi::AccessIn),
    Create {
        arg: abi::CreateIn,
        name: &'a OsStr,
    },
    Interrupt(abi::InterruptIn),
    Bmap(abi::BmapIn),
    Ioctl(abi::IoctlIn),
    Poll(abi::PollIn),
    NotifyReply,
    Readdirplus(abi::ReadIn),
    Fallocate(abi::FallocateIn),
    Lseek(abi::LseekIn),
    CopyFileRange(abi::CopyFileRangeIn),
    Syncfs(abi::SyncfsIn),
    Tmpfile {
        arg: abi::CreateIn,
    },
    Statx(abi::StatxIn),
    /// An opcode this engine knows but does not serve (DAX mappings,
    /// CUSE, ...): answered ENOSYS.
    Unsupported(Opcode),
    /// An opcode this engine does not know: answered ENOSYS.
    Unknown(u32),
}

/// The entries of a BATCH_FORGET, read one by one from the request buffer.
#[derive(Debug, Clone)]
pub struct Forgets<'a> {
    bytes: &'a [u8],
}

impl Iterator for Forgets<'_> {
    type Item = abi::ForgetOne;

    fn next(&mut self) -> Option<abi::ForgetOne> {
        let (one, rest) = abi::ForgetOne::read_from_prefix(self.bytes).ok()?;
        self.bytes = rest;
        Some(one)
    }
}

/// A request's body as the transport received it.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// /dev/fuse: the bytes after `fuse_in_header`, arguments back to back.
    Contiguous(&'a [u8]),
    /// io_uring: the operation's fixed argument struct in its own area, the
    /// rest (names, data) in the payload buffer.
    Split {
        /// The `op_in` area of the ring entry's header.
        op: &'a [u8],
        /// The payload buffer, `payload_sz` bytes.
        payload: &'a [u8],
    },
}

struct Args<'a> {
    opcode: Opcode,
    op: Option<&'a [u8]>,
    data: &'a [u8],
}

impl<'a> Args<'a> {
    fn truncated(&self, wanted: usize, left: usize) -> DecodeError {
        DecodeError::Truncated {
            opcode: self.opcode,
            wanted,
            left,
        }
    }

    /// The operation's fixed argument struct (read by value).
    fn fixed<T: FromBytes + IntoBytes>(&mut self) -> Result<T, DecodeError> {
        self.fixed_sized::<T>(size_of::<T>())
    }

    /// A struct of which the kernel may send only the first `size` bytes
    /// (older layouts); the missing tail reads as zero.
    fn fixed_sized<T: FromBytes + IntoBytes>(&mut self, size: usize) -> Result<T, DecodeError> {
        let from_op = self.op.take();
        let src = from_op.unwrap_or(self.data);
        if src.len() < size {
            return Err(self.truncated(size, src.len()));
        }
        let mut value = T::new_zeroed();
        value.as_mut_bytes()[..size].copy_from_slice(&src[..size]);
        if from_op.is_none() {
            self.data = &self.data[size..];
        }
        Ok(value)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.data.len() < n {
            return Err(self.truncated(n, self.data.len()));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    fn name(&mut self) -> Result<&'a OsStr, DecodeError> {
        let nul = self
            .data
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::MissingNul(self.opcode))?;
        let name = &self.data[..nul];
        self.data = &self.data[nul + 1..];
        Ok(OsStr::from_bytes(name))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Reads and checks the header of a /dev/fuse request of `received` bytes.
pub fn decode_header(buf: &[u8]) -> Result<(abi::InHeader, &[u8]), DecodeError> {
    let (header, body) =
        abi::InHeader::read_from_prefix(buf).map_err(|_| DecodeError::ShortHeader(buf.len()))?;
    if header.len as usize != buf.len() {
        return Err(DecodeError::LengthMismatch {
            header: header.len,
            received: buf.len(),
        });
    }
    Ok((header, body))
}

/// What a request's extensions say (the area `total_extlen` counts, at the
/// end of the body). Security contexts are skipped: no filesystem of this
/// engine asks for them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Extensions {
    /// The one group of a `FUSE_EXT_GROUPS` extension.
    pub(crate) supp_group: Option<u32>,
}

/// Reads the extensions of a request. Malformed ones are ignored (the
/// request itself decodes without them, see [`decode`]): a wrong group
/// would only make a creation fall back to the caller's full groups.
pub(crate) fn extensions(header: &abi::InHeader, body: Body<'_>) -> Extensions {
    let mut ext = Extensions::default();
    let len = header.total_extlen as usize * 8;
    if len == 0 {
        return ext;
    }
    let data = match body {
        Body::Contiguous(data) | Body::Split { payload: data, .. } => data,
    };
    let Some(mut area) = data.len().checked_sub(len).map(|start| &data[start..]) else {
        return ext;
    };
    while let Ok((h, _)) = abi::ExtHeader::read_from_prefix(area) {
        let size = h.size as usize;
        if size < size_of::<abi::ExtHeader>() || size > area.len() {
            break;
        }
        if h.r#type == abi::ext_type::FUSE_EXT_GROUPS {
            let groups = &area[size_of::<abi::ExtHeader>()..size];
            if let Ok((n, rest)) = u32::read_from_prefix(groups) {
                if n >= 1 {
                    ext.supp_group = u32::read_from_prefix(rest).ok().map(|(g, _)| g);
                }
            }
        }
        area = &area[size..];
    }
    ext
}

/// Decodes one request's body into an [`Operation`].
pub fn decode<'a>(
    header: &abi::InHeader,
    body: Body<'a>,
    layout: Layout,
) -> Result<Operation<'a>, DecodeError> {
    let Some(opcode) = Opcode::from_raw(header.opcode) else {
        return Ok(Operation::Unknown(header.opcode));
    };
    let (op, data) = match body {
        Body::Contiguous(data) => (None, data),
        Body::Split { op, payload } => (Some(op), payload),
    };
    // Request extensions (security context, supplementary groups) sit at
    // the end of the body; this engine negotiates none, but must not take
    // them for arguments if a kernel sends them.
    let ext = header.total_extlen as usize * 8;
    let data = if ext == 0 {
        data
    } else if ext <= data.len() {
        &data[..data.len() - ext]
    } else {
        return Err(DecodeError::BadExtLen(header.total_extlen.into()));
    };
    let mut a = Args { opcode, op, data };
    use Operation as O;
    Ok(match opcode {
        Opcode::Init => {
            // Kernels before 7.36 send only the first 16 bytes.
            let size = a.data.len().clamp(16, size_of::<abi::InitIn>());
            O::Init(a.fixed_sized(size)?)
        }
        Opcode::Destroy => O::Destroy,
        Opcode::Lookup => O::Lookup { name: a.name()? },
        Opcode::Forget => O::Forget(a.fixed()?),
        Opcode::BatchForget => {
            let arg: abi::BatchForgetIn = a.fixed()?;
            let n = arg.count as usize * size_of::<abi::ForgetOne>();
            O::BatchForget(Forgets { bytes: a.bytes(n)? })
        }
        Opcode::Getattr => O::Getattr(a.fixed()?),
        Opcode::Setattr => O::Setattr(a.fixed()?),
        Opcode::Readlink => O::Readlink,
        Opcode::Symlink => {
            let name = a.name()?;
            O::Symlink {
                name,
                target: a.name()?,
            }
        }
        Opcode::Mknod => {
            let arg = a.fixed()?;
            O::Mknod {
                arg,
                name: a.name()?,
            }
        }
        Opcode::Mkdir => {
            let arg = a.fixed()?;
            O::Mkdir {
                arg,
                name: a.name()?,
            }
        }
        Opcode::Unlink => O::Unlink { name: a.name()? },
        Opcode::Rmdir => O::Rmdir { name: a.name()? },
        Opcode::Rename => {
            let arg: abi::RenameIn = a.fixed()?;
            let name = a.name()?;
            O::Rename {
                new_dir: arg.newdir,
                flags: 0,
                name,
                new_name: a.name()?,
            }
        }
        Opcode::Rename2 => {
            let arg: abi::Rename2In = a.fixed()?;
            let name = a.name()?;
            O::Rename {
                new_dir: arg.newdir,
                flags: arg.flags,
                name,
                new_name: a.name()?,
            }
        }
        Opcode::Link => {
            let arg = a.fixed()?;
            O::Link {
                arg,
                name: a.name()?,
            }
        }
        Opcode::Open => O::Open(a.fixed()?),
        Opcode::Read => O::Read(a.fixed()?),
        Opcode::Write => {
            let arg: abi::WriteIn = a.fixed()?;
            let data = a.bytes(arg.size as usize)?;
            O::Write { arg, data }
        }
        Opcode::Statfs => O::Statfs,
        Opcode::Release => O::Release(a.fixed()?),
        Opcode::Fsync => O::Fsync(a.fixed()?),
        Opcode::Setxattr => {
            let size = if layout.setxattr_ext {
                size_of::<abi::SetxattrIn>()
            } else {
                abi::FUSE_COMPAT_SETXATTR_IN_SIZE
            };
            let arg: abi::SetxattrIn = a.fixed_sized(size)?;
            let name = a.name()?;
            let value = a.bytes(arg.size as usize)?;
            O::Setxattr {
                size: arg.size,
                flags: arg.flags,
                setxattr_flags: arg.setxattr_flags,
                name,
                value,
            }
        }
        Opcode::Getxattr => {
            let arg: abi::GetxattrIn = a.fixed()?;
            O::Getxattr {
                size: arg.size,
                name: a.name()?,
            }
        }
        Opcode::Listxattr => {
            let arg: abi::GetxattrIn = a.fixed()?;
            O::Listxattr { size: arg.size }
        }
        Opcode::Removexattr => O::Removexattr { name: a.name()? },
        Opcode::Flush => O::Flush(a.fixed()?),
        Opcode::Opendir => O::Opendir(a.fixed()?),
        Opcode::Readdir => O::Readdir(a.fixed()?),
        Opcode::Releasedir => O::Releasedir(a.fixed()?),
        Opcode::Fsyncdir => O::Fsyncdir(a.fixed()?),
        Opcode::Getlk => O::Getlk(a.fixed()?),
        Opcode::Setlk => O::Setlk(a.fixed()?),
        Opcode::Setlkw => O::Setlkw(a.fixed()?),
        Opcode::Access => O::Access(a.fixed()?),
        Opcode::Create => {
            let arg = a.fixed()?;
            O::Create {
                arg,
                name: a.name()?,
            }
        }
        Opcode::Interrupt => O::Interrupt(a.fixed()?),
        Opcode::Bmap => O::Bmap(a.fixed()?),
        Opcode::Ioctl => O::Ioctl(a.fixed()?),
        Opcode::Poll => O::Poll(a.fixed()?),
        Opcode::NotifyReply => {
            a.rest();
            O::NotifyReply
        }
        Opcode::Readdirplus => O::Readdirplus(a.fixed()?),
        Opcode::Fallocate => O::Fallocate(a.fixed()?),
        Opcode::Lseek => O::Lseek(a.fixed()?),
        Opcode::CopyFileRange => O::CopyFileRange(a.fixed()?),
        Opcode::Syncfs => O::Syncfs(a.fixed()?),
        Opcode::Tmpfile => O::Tmpfile { arg: a.fixed()? },
        Opcode::Statx => O::Statx(a.fixed()?),
        other => O::Unsupported(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request: header fields, then the body bytes.
    fn req(opcode: u32, nodeid: u64, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(40 + body.len() as u32).to_ne_bytes()); // len
        v.extend_from_slice(&opcode.to_ne_bytes()); // opcode
        v.extend_from_slice(&7u64.to_ne_bytes()); // unique
        v.extend_from_slice(&nodeid.to_ne_bytes()); // nodeid
        v.extend_from_slice(&1000u32.to_ne_bytes()); // uid
        v.extend_from_slice(&1001u32.to_ne_bytes()); // gid
        v.extend_from_slice(&42u32.to_ne_bytes()); // pid
        v.extend_from_slice(&0u16.to_ne_bytes()); // total_extlen
        v.extend_from_slice(&0u16.to_ne_bytes()); // padding
        v.extend_from_slice(body);
        v
    }

    fn decode_bytes(bytes: &[u8]) -> Result<Operation<'_>, DecodeError> {
        let (h, body) = decode_header(bytes)?;
        decode(&h, Body::Contiguous(body), Layout::default())
    }

    #[test]
    fn lookup_borrows_the_name() {
        let bytes = req(Opcode::Lookup as u32, 1, b"file.txt\0");
        let (h, _) = decode_header(&bytes).unwrap();
        assert_eq!(
            (h.unique, h.nodeid, h.uid, h.gid, h.pid),
            (7, 1, 1000, 1001, 42)
        );
        match decode_bytes(&bytes).unwrap() {
            Operation::Lookup { name } => assert_eq!(name, "file.txt"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn write_data_is_the_tail_of_the_buffer() {
        let mut body = Vec::new();
        body.extend_from_slice(&3u64.to_ne_bytes()); // fh
        body.extend_from_slice(&4096u64.to_ne_bytes()); // offset
        body.extend_from_slice(&5u32.to_ne_bytes()); // size
        body.extend_from_slice(&1u32.to_ne_bytes()); // write_flags: FUSE_WRITE_CACHE
        body.extend_from_slice(&0u64.to_ne_bytes()); // lock_owner
        body.extend_from_slice(&2u32.to_ne_bytes()); // flags: O_RDWR
        body.extend_from_slice(&0u32.to_ne_bytes()); // padding
        body.extend_from_slice(b"hello");
        let bytes = req(Opcode::Write as u32, 9, &body);
        match decode_bytes(&bytes).unwrap() {
            Operation::Write { arg, data } => {
                assert_eq!(
                    (arg.fh, arg.offset, arg.size, arg.write_flags),
                    (3, 4096, 5, 1)
                );
                assert_eq!(data, b"hello");
                // Borrowed, not copied: the slice points into the buffer.
                assert_eq!(data.as_ptr(), bytes[bytes.len() - 5..].as_ptr());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rename2_and_symlink_take_two_names() {
        let mut body = Vec::new();
        body.extend_from_slice(&5u64.to_ne_bytes()); // newdir
        body.extend_from_slice(&1u32.to_ne_bytes()); // flags: RENAME_NOREPLACE
        body.extend_from_slice(&0u32.to_ne_bytes()); // padding
        body.extend_from_slice(b"a\0b\0");
        match decode_bytes(&req(Opcode::Rename2 as u32, 1, &body)).unwrap() {
            Operation::Rename {
                new_dir,
                flags,
                name,
                new_name,
            } => assert_eq!(
                (new_dir, flags, name.to_str(), new_name.to_str()),
                (5, 1, Some("a"), Some("b"))
            ),
            other => panic!("{other:?}"),
        }
        match decode_bytes(&req(Opcode::Symlink as u32, 1, b"link\0target\0")).unwrap() {
            Operation::Symlink { name, target } => assert_eq!(
                (name.to_str(), target.to_str()),
                (Some("link"), Some("target"))
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn batch_forget_reads_every_entry() {
        let mut body = Vec::new();
        body.extend_from_slice(&2u32.to_ne_bytes()); // count
        body.extend_from_slice(&0u32.to_ne_bytes()); // dummy
        for (node, n) in [(10u64, 1u64), (11, 3)] {
            body.extend_from_slice(&node.to_ne_bytes()); // nodeid
            body.extend_from_slice(&n.to_ne_bytes()); // nlookup
        }
        match decode_bytes(&req(Opcode::BatchForget as u32, 0, &body)).unwrap() {
            Operation::BatchForget(f) => {
                let v: Vec<_> = f.map(|o| (o.nodeid, o.nlookup)).collect();
                assert_eq!(v, [(10, 1), (11, 3)]);
            }
            other => panic!("{other:?}"),
        }
        // A count larger than the entries sent is refused.
        body[0] = 3;
        assert!(matches!(
            decode_bytes(&req(Opcode::BatchForget as u32, 0, &body)),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn short_header_is_an_error() {
        let bytes = req(Opcode::Lookup as u32, 1, b"x\0");
        assert_eq!(
            decode_header(&bytes[..39]).unwrap_err(),
            DecodeError::ShortHeader(39)
        );
        assert_eq!(decode_header(&[]).unwrap_err(), DecodeError::ShortHeader(0));
    }

    #[test]
    fn length_larger_than_received_is_an_error() {
        let mut bytes = req(Opcode::Lookup as u32, 1, b"x\0");
        bytes[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(
            decode_header(&bytes).unwrap_err(),
            DecodeError::LengthMismatch {
                header: 1000,
                received: 42
            }
        );
    }

    #[test]
    fn name_without_nul_is_an_error() {
        let bytes = req(Opcode::Lookup as u32, 1, b"no-terminator");
        assert_eq!(
            decode_bytes(&bytes).unwrap_err(),
            DecodeError::MissingNul(Opcode::Lookup)
        );
        let bytes = req(Opcode::Symlink as u32, 1, b"link\0target");
        assert_eq!(
            decode_bytes(&bytes).unwrap_err(),
            DecodeError::MissingNul(Opcode::Symlink)
        );
    }

    #[test]
    fn unknown_opcode_decodes_as_unknown() {
        let bytes = req(9999, 1, b"");
        assert!(matches!(
            decode_bytes(&bytes).unwrap(),
            Operation::Unknown(9999)
        ));
    }

    #[test]
    fn truncated_fixed_args_and_write_data_are_errors() {
        // READ with half a fuse_read_in.
        let bytes = req(Opcode::Read as u32, 1, &[0u8; 20]);
        assert!(matches!(
            decode_bytes(&bytes),
            Err(DecodeError::Truncated {
                opcode: Opcode::Read,
                wanted: 40,
                left: 20
            })
        ));
        // WRITE whose size claims more data than was sent.
        let mut body = vec![0u8; 40];
        body[16..20].copy_from_slice(&100u32.to_ne_bytes()); // size
        body.extend_from_slice(&[1u8; 10]);
        assert!(matches!(
            decode_bytes(&req(Opcode::Write as u32, 1, &body)),
            Err(DecodeError::Truncated {
                opcode: Opcode::Write,
                wanted: 100,
                left: 10
            })
        ));
    }

    #[test]
    fn extension_length_beyond_body_is_an_error() {
        let mut bytes = req(Opcode::Lookup as u32, 1, b"x\0");
        bytes[36..38].copy_from_slice(&4u16.to_ne_bytes()); // total_extlen: 32 bytes
        assert_eq!(decode_bytes(&bytes).unwrap_err(), DecodeError::BadExtLen(4));
    }

    #[test]
    fn supplementary_group_extension_is_read_past_a_security_context() {
        // MKDIR: mode, umask, name; then the extensions: a security
        // context area (type 1: one context) of 24 bytes, and a group
        // extension of 16.
        let mut body = Vec::new();
        body.extend_from_slice(&0o755u32.to_ne_bytes());
        body.extend_from_slice(&0o022u32.to_ne_bytes());
        body.extend_from_slice(b"dir\0\0\0\0\0");
        for word in [24u32, 1, 8, 0, 0, 0] {
            body.extend_from_slice(&word.to_ne_bytes());
        }
        for word in [16u32, abi::ext_type::FUSE_EXT_GROUPS, 1, 1234] {
            body.extend_from_slice(&word.to_ne_bytes());
        }
        let mut bytes = req(Opcode::Mkdir as u32, 1, &body);
        bytes[36..38].copy_from_slice(&5u16.to_ne_bytes()); // 40 bytes
        let (h, b) = decode_header(&bytes).unwrap();
        let ext = extensions(&h, Body::Contiguous(b));
        assert_eq!(ext.supp_group, Some(1234));
        match decode(&h, Body::Contiguous(b), Layout::default()).unwrap() {
            Operation::Mkdir { name, .. } => assert_eq!(name, "dir"),
            other => panic!("decoded {other:?}"),
        }
        // No extensions, or a malformed one: no group.
        let plain = req(Opcode::Mkdir as u32, 1, &body[..16]);
        let (h, b) = decode_header(&plain).unwrap();
        assert_eq!(extensions(&h, Body::Contiguous(b)).supp_group, None);
        let mut bad = bytes.clone();
        let at = bad.len() - 16;
        bad[at..at + 4].copy_from_slice(&64u32.to_ne_bytes()); // size past the end
        let (h, b) = decode_header(&bad).unwrap();
        assert_eq!(extensions(&h, Body::Contiguous(b)).supp_group, None);
    }

    #[test]
    fn split_layout_reads_the_struct_from_the_op_area() {
        let bytes = req(Opcode::Mkdir as u32, 1, b"");
        let (h, _) = decode_header(&bytes).unwrap();
        let mut op = [0u8; 128];
        op[0..4].copy_from_slice(&0o755u32.to_ne_bytes()); // mode
        op[4..8].copy_from_slice(&0o022u32.to_ne_bytes()); // umask
        let body = Body::Split {
            op: &op,
            payload: b"dir\0",
        };
        match decode(&h, body, Layout::default()).unwrap() {
            Operation::Mkdir { arg, name } => {
                assert_eq!(
                    (arg.mode, arg.umask, name.to_str()),
                    (0o755, 0o022, Some("dir"))
                )
            }
            other => panic!("{other:?}"),
        }
    }

    proptest::proptest! {
        /// Any bytes, any opcode: decoding returns, never panics.
        #[test]
        fn decoding_random_requests_never_panics(
            opcode in 0u32..60,
            extlen in 0u16..4,
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let mut bytes = req(opcode, 1, &body);
            bytes[36..38].copy_from_slice(&extlen.to_ne_bytes());
            let _ = decode_bytes(&bytes);
            let (h, _) = decode_header(&bytes).unwrap();
            let split = Body::Split { op: &body[..body.len().min(128)], payload: &body };
            let _ = decode(&h, split, Layout { minor: 45, setxattr_ext: true });
        }
    }
}
