//! Reply encoding: typed answers to the kernel's wire structs, written into
//! the reply buffer the transport owns.
//!
//! A reply is a `fuse_out_header` followed by a payload. Transports place
//! the header themselves (/dev/fuse: in front of the payload in one buffer;
//! io_uring: in the ring entry's header area), so encoders here write only
//! the payload and return its length.

use std::time::Duration;

use fastfuse_abi as abi;
use zerocopy::{Immutable, IntoBytes};

use crate::errno::Errno;
use crate::types::{AttrReply, Entry, Opened};

/// The outcome of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Send a reply: success with this many payload bytes, or an error.
    Reply(Result<usize, Errno>),
    /// The operation takes no reply (FORGET, BATCH_FORGET, INTERRUPT, ...).
    None,
    /// The filesystem took the request over with
    /// [`Caller::defer`](crate::Caller::defer) and answers it later.
    Deferred,
}

/// Builds the reply header for a request.
pub fn out_header(unique: u64, result: Result<usize, Errno>) -> abi::OutHeader {
    let (error, len) = match result {
        Ok(len) => (0, len),
        Err(e) => (-e.raw(), 0),
    };
    abi::OutHeader {
        len: (size_of::<abi::OutHeader>() + len) as u32,
        error,
        unique,
    }
}

/// Writes `value` at the start of `out` and returns its size; ERANGE when
/// the buffer is too small (which would be an engine bug: buffers are sized
/// for the largest struct plus max_write).
pub fn put<T: IntoBytes + Immutable>(out: &mut [u8], value: &T) -> Result<usize, Errno> {
    put_bytes(out, value.as_bytes())
}

/// Copies `bytes` to the start of `out` and returns their length.
pub fn put_bytes(out: &mut [u8], bytes: &[u8]) -> Result<usize, Errno> {
    let dst = out.get_mut(..bytes.len()).ok_or(Errno::ERANGE)?;
    dst.copy_from_slice(bytes);
    Ok(bytes.len())
}

fn split(d: Duration) -> (u64, u32) {
    (d.as_secs(), d.subsec_nanos())
}

/// `fuse_entry_out` for an [`Entry`].
pub fn entry_out(e: &Entry) -> abi::EntryOut {
    let (entry_valid, entry_valid_nsec) = split(e.entry_timeout);
    let (attr_valid, attr_valid_nsec) = split(e.attr_timeout);
    abi::EntryOut {
        nodeid: e.node.0,
        generation: e.generation,
        entry_valid,
        attr_valid,
        entry_valid_nsec,
        attr_valid_nsec,
        attr: e.attr,
    }
}

/// `fuse_attr_out` for an [`AttrReply`].
pub fn attr_out(a: &AttrReply) -> abi::AttrOut {
    let (attr_valid, attr_valid_nsec) = split(a.timeout);
    abi::AttrOut {
        attr_valid,
        attr_valid_nsec,
        dummy: 0,
        attr: a.attr,
    }
}

/// `fuse_open_out` for an [`Opened`].
pub fn open_out(o: &Opened) -> abi::OpenOut {
    abi::OpenOut {
        fh: o.fh.0,
        open_flags: o.open_flags,
        backing_id: o.backing_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{FileHandle, NodeId};

    fn sample_attr() -> abi::Attr {
        abi::Attr {
            ino: 0x1111,
            size: 0x2222,
            mode: 0o100644,
            nlink: 1,
            ..Default::default()
        }
    }

    #[test]
    fn out_header_success_and_error() {
        let h = out_header(9, Ok(24));
        assert_eq!((h.len, h.error, h.unique), (40, 0, 9));
        let h = out_header(9, Err(Errno::ENOENT));
        assert_eq!((h.len, h.error, h.unique), (16, -libc::ENOENT, 9));
        // Wire layout: len u32, error i32, unique u64.
        let bytes = h.as_bytes();
        assert_eq!(&bytes[0..4], &16u32.to_ne_bytes());
        assert_eq!(&bytes[4..8], &(-libc::ENOENT).to_ne_bytes());
        assert_eq!(&bytes[8..16], &9u64.to_ne_bytes());
    }

    #[test]
    fn entry_out_wire_layout() {
        let e = Entry {
            node: NodeId(42),
            generation: 7,
            attr: sample_attr(),
            attr_timeout: Duration::new(3, 500),
            entry_timeout: Duration::new(2, 100),
        };
        let out = entry_out(&e);
        let b = out.as_bytes();
        assert_eq!(b.len(), 128);
        assert_eq!(&b[0..8], &42u64.to_ne_bytes()); // nodeid
        assert_eq!(&b[8..16], &7u64.to_ne_bytes()); // generation
        assert_eq!(&b[16..24], &2u64.to_ne_bytes()); // entry_valid
        assert_eq!(&b[24..32], &3u64.to_ne_bytes()); // attr_valid
        assert_eq!(&b[32..36], &100u32.to_ne_bytes()); // entry_valid_nsec
        assert_eq!(&b[36..40], &500u32.to_ne_bytes()); // attr_valid_nsec
        assert_eq!(&b[40..48], &0x1111u64.to_ne_bytes()); // attr.ino
        assert_eq!(&b[48..56], &0x2222u64.to_ne_bytes()); // attr.size
    }

    #[test]
    fn attr_out_wire_layout() {
        let out = attr_out(&AttrReply {
            attr: sample_attr(),
            timeout: Duration::new(5, 6),
        });
        let b = out.as_bytes();
        assert_eq!(b.len(), 104);
        assert_eq!(&b[0..8], &5u64.to_ne_bytes()); // attr_valid
        assert_eq!(&b[8..12], &6u32.to_ne_bytes()); // attr_valid_nsec
        assert_eq!(&b[12..16], &0u32.to_ne_bytes()); // dummy
        assert_eq!(&b[16..24], &0x1111u64.to_ne_bytes()); // attr.ino
    }

    #[test]
    fn open_out_wire_layout() {
        let out = open_out(&Opened {
            fh: FileHandle(0xabcd),
            open_flags: abi::fopen::FOPEN_KEEP_CACHE,
            backing_id: 3,
        });
        let b = out.as_bytes();
        assert_eq!(b.len(), 16);
        assert_eq!(&b[0..8], &0xabcdu64.to_ne_bytes());
        assert_eq!(&b[8..12], &abi::fopen::FOPEN_KEEP_CACHE.to_ne_bytes());
        assert_eq!(&b[12..16], &3i32.to_ne_bytes());
    }

    #[test]
    fn put_refuses_short_buffer() {
        let mut small = [0u8; 8];
        assert_eq!(
            put(&mut small, &open_out(&Opened::default())),
            Err(Errno::ERANGE)
        );
        assert_eq!(put_bytes(&mut small, b"12345678"), Ok(8));
    }
}
