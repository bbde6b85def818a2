//! WRITE data by splice(2): with [`Config::splice_write`] a /dev/fuse
//! worker splices each request into a pipe instead of reading it. The
//! kernel then hands the WRITE's pages to the pipe by reference, and the
//! filesystem splices them on into its file: the data is copied once (into
//! the file) instead of twice (into our buffer, then into the file).
//!
//! The kernel puts a request's header and fixed arguments in one pipe slot
//! and each piece of data (a page, or part of a folio) in one more; a
//! request that does not fit the pipe fails with EIO, which for a WRITE
//! from the writeback cache is lost data. So while splicing, max_write is
//! held to the pipe's slots minus two: one for the header, one for data
//! that does not start on a page boundary. The pipe can grow past
//! `/proc/sys/fs/pipe-max-size` (1 MiB by default) only with
//! CAP_SYS_RESOURCE; without it WRITEs are 1016 KiB instead of 1 MiB.
//!
//! [`Config::splice_write`]: crate::Config::splice_write

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::init::PAGE_SIZE;
use crate::sys;

/// WRITE data smaller than this is read into memory even from a pipe: one
/// splice into the file costs about what the copy saves.
pub(crate) const MIN_SPLICED_WRITE: usize = 32 * 1024;

/// A worker's pipe, empty between requests, and /dev/null to drain it.
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    null: OwnedFd,
    size: usize,
}

impl Pipe {
    /// A pipe of at least `want` bytes if the system allows it, else of
    /// `/proc/sys/fs/pipe-max-size`.
    pub(crate) fn new(want: usize) -> io::Result<Pipe> {
        let (read, write) = sys::pipe()?;
        let size = match sys::set_pipe_size(write.as_fd(), want) {
            Ok(size) => size,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                sys::set_pipe_size(write.as_fd(), pipe_max_size().min(want))?
            }
            Err(e) => return Err(e),
        };
        let null = OpenOptions::new().write(true).open("/dev/null")?.into();
        Ok(Pipe {
            read,
            write,
            null,
            size,
        })
    }

    /// The largest WRITE whose request always fits this pipe.
    pub(crate) fn max_write(&self) -> usize {
        (self.size / PAGE_SIZE).saturating_sub(2) * PAGE_SIZE
    }

    /// The pipe's size in bytes.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// The end the kernel splices requests into.
    pub(crate) fn write_end(&self) -> BorrowedFd<'_> {
        self.write.as_fd()
    }

    /// The end requests are read from.
    pub(crate) fn read_end(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Reads exactly `buf.len()` bytes that are already in the pipe.
    pub(crate) fn read_exact(&self, buf: &mut [u8]) -> io::Result<()> {
        read_exact(self.read.as_fd(), buf)
    }

    /// Throws away `len` bytes that are in the pipe (splicing them to
    /// /dev/null costs no copy), so that the next request finds it empty.
    pub(crate) fn discard(&self, mut len: usize) -> io::Result<()> {
        while len > 0 {
            match sys::splice(self.read.as_fd(), None, self.null.as_fd(), None, len, 0) {
                Ok(0) => return Err(io::Error::from_raw_os_error(libc::EIO)),
                Ok(n) => len -= n,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn pipe_max_size() -> usize {
    std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20)
}

fn read_exact(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match sys::read(fd, &mut buf[done..]) {
            // Everything asked for is in the pipe already; an empty read
            // means it was not.
            Ok(0) => return Err(io::Error::from_raw_os_error(libc::EIO)),
            Ok(n) => done += n,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The data of a WRITE that is still in a pipe, as
/// [`Filesystem::write_spliced`] receives it. Move it to a file with
/// [`splice_to`](Self::splice_to) (no copy through user memory), or read
/// it with [`read_remaining`](Self::read_remaining). Whatever is left when
/// the call returns is thrown away.
///
/// [`Filesystem::write_spliced`]: crate::Filesystem::write_spliced
pub struct PipeData<'a> {
    pipe: BorrowedFd<'a>,
    len: usize,
    taken: usize,
    scratch: &'a mut [u8],
}

impl<'a> PipeData<'a> {
    /// `len` bytes in `pipe`; `scratch` (at least `len` bytes) is where
    /// [`read_remaining`](Self::read_remaining) puts them.
    pub(crate) fn new(pipe: BorrowedFd<'a>, len: usize, scratch: &'a mut [u8]) -> Self {
        assert!(scratch.len() >= len, "scratch smaller than the WRITE");
        PipeData {
            pipe,
            len,
            taken: 0,
            scratch,
        }
    }

    /// The WRITE's size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the WRITE carries no data.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes not yet taken out of the pipe.
    pub fn remaining(&self) -> usize {
        self.len - self.taken
    }

    /// Moves up to [`remaining`](Self::remaining) bytes into `fd` at
    /// `offset` with one splice(2) and returns how many moved; loop on a
    /// short count as with `pwrite`. Files opened `O_APPEND` refuse with
    /// EINVAL: read the data instead.
    pub fn splice_to(&mut self, fd: BorrowedFd<'_>, offset: u64) -> io::Result<usize> {
        let n = sys::splice(
            self.pipe,
            None,
            fd,
            Some(offset),
            self.remaining(),
            libc::SPLICE_F_MOVE,
        )?;
        self.taken += n.min(self.remaining());
        Ok(n)
    }

    /// Reads the bytes not yet taken into memory and returns them.
    pub fn read_remaining(&mut self) -> io::Result<&[u8]> {
        let left = self.remaining();
        read_exact(self.pipe, &mut self.scratch[..left])?;
        self.taken = self.len;
        Ok(&self.scratch[..left])
    }
}

impl std::fmt::Debug for PipeData<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeData")
            .field("len", &self.len)
            .field("taken", &self.taken)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    fn fill(pipe: &Pipe, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            done += sys::writev(pipe.write_end(), &[&data[done..]]).unwrap();
        }
    }

    #[test]
    fn max_write_leaves_room_for_the_header_and_a_misaligned_page() {
        let pipe = Pipe::new(64 * 1024).unwrap();
        assert_eq!(pipe.size, 64 * 1024);
        assert_eq!(pipe.max_write(), 14 * PAGE_SIZE);
    }

    #[test]
    fn data_is_spliced_read_or_discarded_and_the_pipe_ends_empty() {
        let pipe = Pipe::new(64 * 1024).unwrap();
        let file = tempfile::tempfile().unwrap();
        let bytes: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        fill(&pipe, &bytes);
        let mut scratch = vec![0u8; bytes.len()];
        let mut data = PipeData::new(pipe.read_end(), bytes.len(), &mut scratch);
        let moved = data.splice_to(file.as_fd(), 100).unwrap();
        assert!(moved > 0);
        assert_eq!(data.remaining(), bytes.len() - moved);
        let rest = data.read_remaining().unwrap().to_vec();
        assert_eq!(rest, bytes[moved..]);
        let mut on_disk = vec![0u8; moved];
        file.read_exact_at(&mut on_disk, 100).unwrap();
        assert_eq!(on_disk, bytes[..moved]);

        fill(&pipe, &bytes);
        pipe.discard(bytes.len()).unwrap();
        fill(&pipe, b"next");
        let mut four = [0u8; 4];
        pipe.read_exact(&mut four).unwrap();
        assert_eq!(&four, b"next");
    }
}
