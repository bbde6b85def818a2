//! Request decoding: a pure function from the bytes the kernel sent to a
//! typed [`Operation`] that borrows them. No I/O, no filesystem.
//!
//! Fixed-size argument structs are copied out by value (they are at most a
//! few dozen bytes, and copying frees the decoder from alignment rules);
//! names and WRITE data stay borrowed from the request buffer.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use fastfuse_abi::{self as abi, Opcode};
use thiserror::Error;
use zerocopy::{FromBytes, IntoBytes};

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
#[derive(Debug)]
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
    interrupts: Option<&'a Interrupts>,
}

impl<'a> Caller<'a> {
    pub(crate) fn new(header: &abi::InHeader, interrupts: Option<&'a Interrupts>) -> Self {
        Caller {
            unique: Unique(header.unique),
            uid: header.uid,
            gid: header.gid,
            pid: header.pid,
            interrupts,
        }
    }

    /// A caller with the given credentials, for tests and for filesystems
    /// that call themselves.
    pub fn detached(uid: u32, gid: u32, pid: u32) -> Caller<'static> {
        Caller {
            unique: Unique(0),
            uid,
            gid,
            pid,
            interrupts: None,
        }
    }

    /// Whether the kernel has sent INTERRUPT for this request (the caller
    /// got a signal). A long wait, such as SETLKW, should then give up with
    /// EINTR.
    pub fn is_interrupted(&self) -> bool {
        self.interrupts.is_some_and(|i| i.contains(self.unique.0))
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
                abi::FUSE_COMPAT_SETXATTR_IN_SIZE as usize
            };
            let arg: abi::SetxattrIn = a.fixed_sized(size)?;
            let name = a.name()?;
            let value = a.bytes(arg.size as usize)?;
            O::Setxattr {
                size: arg.size,
                flags: arg.flags,
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
