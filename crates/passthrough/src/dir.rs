//! Directory streams: `getdents64` on an open directory, with the source
//! filesystem's own `d_off` cookies handed to the kernel as READDIR
//! offsets, and `lseek` to resume from one.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use fastfuse::Errno;

use crate::sys;

/// Bytes read per getdents64 call: a few hundred entries.
const BUFFER_SIZE: usize = 32 * 1024;

/// Header of a `struct linux_dirent64`: d_ino (8), d_off (8), d_reclen
/// (2), d_type (1); the name follows.
const HEADER: usize = 19;

/// One directory entry, borrowed from the stream's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirEntry<'a> {
    /// The source inode number.
    pub(crate) ino: u64,
    /// The cookie that resumes the listing *after* this entry.
    pub(crate) next_offset: u64,
    /// `DT_*` type.
    pub(crate) typ: u8,
    /// The name, without NUL.
    pub(crate) name: &'a [u8],
}

impl DirEntry<'_> {
    /// Whether this is "." or "..".
    pub(crate) fn is_dot_or_dotdot(&self) -> bool {
        self.name == b"." || self.name == b".."
    }
}

/// Parses the record at the start of `buf`; returns it and its length.
/// `None` for a truncated or inconsistent record (the kernel does not
/// write those; the parser still refuses to read past `buf`).
fn parse(buf: &[u8]) -> Option<(DirEntry<'_>, usize)> {
    let header = buf.get(..HEADER)?;
    let ino = u64::from_ne_bytes(header[0..8].try_into().ok()?);
    let off = i64::from_ne_bytes(header[8..16].try_into().ok()?);
    let reclen = u16::from_ne_bytes(header[16..18].try_into().ok()?) as usize;
    let typ = header[18];
    if reclen < HEADER {
        return None;
    }
    let record = buf.get(..reclen)?;
    let name_area = &record[HEADER..];
    let name_len = name_area.iter().position(|&b| b == 0)?;
    Some((
        DirEntry {
            ino,
            next_offset: off as u64,
            typ,
            name: &name_area[..name_len],
        },
        reclen,
    ))
}

/// What a consumer did with an entry it was offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// The entry went into the reply; offer the next.
    Yes,
    /// The reply is full: the entry stays for the next READDIR.
    Full,
}

/// An open directory and the entries read from it but not yet sent.
///
/// The directory fd's position is shared state, so a stream lives behind
/// a per-handle mutex.
#[derive(Debug)]
pub(crate) struct DirStream {
    fd: OwnedFd,
    buf: Box<[u8]>,
    /// The unsent records are `buf[start..end]`.
    start: usize,
    end: usize,
    /// The cookie of the position right before `buf[start]`: a READDIR at
    /// this offset continues from the buffer without seeking.
    position: u64,
}

impl DirStream {
    /// A stream over `fd`, an open (not `O_PATH`) directory.
    pub(crate) fn new(fd: OwnedFd) -> DirStream {
        DirStream {
            fd,
            buf: vec![0; BUFFER_SIZE].into_boxed_slice(),
            start: 0,
            end: 0,
            position: 0,
        }
    }

    /// The cookie right before the first unsent entry: a
    /// [`read_from`](Self::read_from) there goes on from the buffer.
    pub(crate) fn position(&self) -> u64 {
        self.position
    }

    /// What a successor needs to go on (see `saved`): the directory fd,
    /// the cookie right before the first unsent entry and the unsent
    /// records, as getdents64 gave them. The fd's position is that of the
    /// open file description, which a duplicate shares: it is where the
    /// next getdents64 goes on after those records.
    pub(crate) fn save(&self) -> (std::os::fd::BorrowedFd<'_>, u64, &[u8]) {
        (
            self.fd.as_fd(),
            self.position,
            &self.buf[self.start..self.end],
        )
    }

    /// A stream that goes on where [`DirStream::save`] left one: over
    /// `fd`, at `position`, with the `unsent` records first. `None` when
    /// they are more than a buffer holds (no stream saved them).
    pub(crate) fn restore(fd: OwnedFd, position: u64, unsent: &[u8]) -> Option<DirStream> {
        if unsent.len() > BUFFER_SIZE {
            return None;
        }
        let mut stream = DirStream::new(fd);
        stream.buf[..unsent.len()].copy_from_slice(unsent);
        stream.end = unsent.len();
        stream.position = position;
        Some(stream)
    }

    /// The directory fd (for fsyncdir).
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Offers the entries after cookie `offset` to `take`, one by one,
    /// until it answers [`Taken::Full`], returns an error, or the
    /// directory ends. An error after some entries were taken ends the
    /// reply early without failing it (they must reach the kernel).
    pub(crate) fn read_from(
        &mut self,
        offset: u64,
        mut take: impl FnMut(&DirEntry<'_>) -> Result<Taken, Errno>,
    ) -> Result<(), Errno> {
        if offset != self.position {
            sys::lseek(self.fd.as_fd(), offset as i64, libc::SEEK_SET)?;
            self.start = 0;
            self.end = 0;
            self.position = offset;
        }
        let mut taken_any = false;
        loop {
            if self.start == self.end {
                match self.fill() {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(_) if taken_any => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
            let Some((entry, len)) = parse(&self.buf[self.start..self.end]) else {
                tracing::warn!("malformed getdents64 record; ending the listing");
                self.start = self.end;
                return Ok(());
            };
            match take(&entry) {
                Ok(Taken::Yes) => {
                    taken_any = true;
                    self.position = entry.next_offset;
                    self.start += len;
                }
                Ok(Taken::Full) => return Ok(()),
                Err(_) if taken_any => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    fn fill(&mut self) -> io::Result<usize> {
        let n = sys::getdents64(self.fd.as_fd(), &mut self.buf)?;
        self.start = 0;
        self.end = n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ino: u64, off: i64, typ: u8, name: &[u8]) -> Vec<u8> {
        let reclen = (HEADER + name.len() + 1).next_multiple_of(8);
        let mut r = Vec::with_capacity(reclen);
        r.extend_from_slice(&ino.to_ne_bytes()); // d_ino
        r.extend_from_slice(&off.to_ne_bytes()); // d_off
        r.extend_from_slice(&(reclen as u16).to_ne_bytes()); // d_reclen
        r.push(typ); // d_type
        r.extend_from_slice(name); // d_name
        r.resize(reclen, 0); // NUL and padding
        r
    }

    #[test]
    fn parses_a_record() {
        let r = record(42, 7, libc::DT_REG, b"hello");
        let (e, len) = parse(&r).unwrap();
        assert_eq!(len, 32);
        assert_eq!(
            (e.ino, e.next_offset, e.typ, e.name),
            (42, 7, libc::DT_REG, &b"hello"[..])
        );
    }

    #[test]
    fn refuses_truncated_and_inconsistent_records() {
        let r = record(42, 7, libc::DT_REG, b"hello");
        assert!(parse(&r[..10]).is_none()); // header cut
        assert!(parse(&r[..24]).is_none()); // record cut
        let mut bad = r.clone();
        bad[16..18].copy_from_slice(&3u16.to_ne_bytes()); // reclen < header
        assert!(parse(&bad).is_none());
        let mut no_nul = r.clone();
        no_nul[HEADER..].fill(b'x'); // name without NUL
        assert!(parse(&no_nul).is_none());
    }

    #[test]
    fn lists_resumes_and_seeks() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..300 {
            std::fs::write(dir.path().join(format!("f{i}")), b"").unwrap();
        }
        let fd = sys::open(
            &std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap(),
            libc::O_RDONLY | libc::O_DIRECTORY,
        )
        .unwrap();
        let mut s = DirStream::new(fd);
        // Take ten at a time, resuming from the last cookie each time.
        let mut names = Vec::new();
        let mut offset = 0;
        loop {
            let mut batch = 0;
            s.read_from(offset, |e| {
                if batch == 10 {
                    return Ok(Taken::Full);
                }
                batch += 1;
                names.push(String::from_utf8(e.name.to_vec()).unwrap());
                offset = e.next_offset;
                Ok(Taken::Yes)
            })
            .unwrap();
            if batch == 0 {
                break;
            }
        }
        assert_eq!(names.len(), 302);
        // From the start again: a seek back to 0.
        let mut first = None;
        s.read_from(0, |e| {
            first = Some(e.name.to_vec());
            Ok(Taken::Full)
        })
        .unwrap();
        assert_eq!(first.as_deref(), Some(names[0].as_bytes()));
    }
}
