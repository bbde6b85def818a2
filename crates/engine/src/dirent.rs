//! Fillers for READDIR and READDIRPLUS replies, writing `fuse_dirent` and
//! `fuse_direntplus` records straight into the reply buffer the engine owns.

use fastfuse_abi as abi;
use zerocopy::IntoBytes;

use crate::types::Entry;

/// Where READDIR entries go: a window of the reply buffer, at most as large
/// as the kernel asked for.
pub struct DirEntries<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> DirEntries<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        DirEntries { buf, len: 0 }
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes the kernel asked for: the most the reply may hold.
    #[cfg(feature = "async")]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Appends one entry. `offset` is the cookie the kernel passes back to
    /// continue *after* this entry; `typ` is the `DT_*` type. Returns
    /// `false`, writing nothing, when the entry does not fit: stop there and
    /// return.
    pub fn push(&mut self, ino: u64, offset: u64, typ: u32, name: &[u8]) -> bool {
        let dirent = abi::Dirent {
            ino,
            off: offset,
            namelen: name.len() as u32,
            r#type: typ,
        };
        push_record(self.buf, &mut self.len, &[], dirent.as_bytes(), name)
    }
}

/// Where READDIRPLUS entries go. Every entry pushed with a non-zero node id
/// counts as a lookup of that node, exactly like a LOOKUP reply; an entry
/// that did not fit was not sent and does not count.
pub struct DirEntriesPlus<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> DirEntriesPlus<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        DirEntriesPlus { buf, len: 0 }
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether an entry with a name of `name_len` bytes still fits. Check
    /// this before taking a lookup reference for the entry.
    pub fn fits(&self, name_len: usize) -> bool {
        self.len + record_len(size_of::<abi::Direntplus>(), name_len) <= self.buf.len()
    }

    /// Appends one entry with its attributes; see [`DirEntries::push`] for
    /// `offset` and `typ`. Returns `false`, writing nothing, when it does
    /// not fit.
    pub fn push(&mut self, entry: &Entry, offset: u64, typ: u32, name: &[u8]) -> bool {
        let out = crate::reply::entry_out(entry);
        let dirent = abi::Dirent {
            ino: entry.attr.ino,
            off: offset,
            namelen: name.len() as u32,
            r#type: typ,
        };
        push_record(
            self.buf,
            &mut self.len,
            out.as_bytes(),
            dirent.as_bytes(),
            name,
        )
    }
}

fn record_len(header: usize, name_len: usize) -> usize {
    abi::dirent_align(header + name_len)
}

fn push_record(buf: &mut [u8], len: &mut usize, a: &[u8], b: &[u8], name: &[u8]) -> bool {
    let header = a.len() + b.len();
    let total = record_len(header, name.len());
    let Some(dst) = buf.get_mut(*len..*len + total) else {
        return false;
    };
    dst[..a.len()].copy_from_slice(a);
    dst[a.len()..header].copy_from_slice(b);
    dst[header..header + name.len()].copy_from_slice(name);
    // Alignment padding must be zero: the kernel copies it to userspace.
    dst[header + name.len()..].fill(0);
    *len += total;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirent_layout_is_padded_to_eight() {
        let mut buf = [0xffu8; 64];
        let mut d = DirEntries::new(&mut buf);
        assert!(d.push(7, 1, libc::DT_REG as u32, b"abc"));
        // 24-byte header + 3 name bytes, aligned up to 32.
        assert_eq!(d.len(), 32);
        assert_eq!(&buf[0..8], &7u64.to_ne_bytes()); // ino
        assert_eq!(&buf[8..16], &1u64.to_ne_bytes()); // off
        assert_eq!(&buf[16..20], &3u32.to_ne_bytes()); // namelen
        assert_eq!(&buf[20..24], &(libc::DT_REG as u32).to_ne_bytes()); // type
        assert_eq!(&buf[24..27], b"abc");
        assert_eq!(&buf[27..32], &[0; 5]);
    }

    #[test]
    fn entry_that_does_not_fit_is_not_written() {
        let mut buf = [0u8; 40];
        let mut d = DirEntries::new(&mut buf);
        assert!(d.push(1, 1, 0, b"a"));
        assert!(!d.push(2, 2, 0, b"b"));
        assert_eq!(d.len(), 32);
    }

    #[test]
    fn direntplus_fits_matches_push() {
        let mut buf = vec![0u8; 152 + 8];
        let mut d = DirEntriesPlus::new(&mut buf);
        assert!(d.fits(8));
        assert!(!d.fits(9));
        let e = Entry {
            node: crate::NodeId(5),
            generation: 0,
            attr: Default::default(),
            attr_timeout: Default::default(),
            entry_timeout: Default::default(),
        };
        assert!(d.push(&e, 1, 0, b"12345678"));
        assert_eq!(d.len(), 160);
        assert_eq!(&buf[0..8], &5u64.to_ne_bytes()); // entry_out.nodeid
    }
}
