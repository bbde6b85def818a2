//! Data: read, write (and the bypass modes), fallocate, lseek,
//! copy_file_range. READ and WRITE allocate nothing: a handle lookup is a
//! shared lock and an `Arc` clone.

use std::cell::RefCell;
use std::os::fd::AsFd;

use fastfuse::{Caller, CopyRange, Errno, FileHandle, NodeId, PipeData, WriteFlags};

use super::file::kill_suidgid;
use crate::fs::PassthroughFs;
use crate::handle::OpenFile;
use crate::options::BypassRw;
use crate::sys;

/// A file offset from the kernel as `off_t`; EINVAL past `i64::MAX`.
fn offset(o: u64) -> Result<i64, Errno> {
    i64::try_from(o).map_err(|_| Errno::EINVAL)
}

/// READ: pread straight into the reply buffer, looping on short reads
/// until it is full or the file ends (the kernel takes a short answer for
/// end of file). An error after some bytes returns those bytes.
pub(super) fn read(
    fs: &PassthroughFs,
    _req: &Caller<'_>,
    _node: NodeId,
    fh: FileHandle,
    off: u64,
    buf: &mut [u8],
) -> Result<usize, Errno> {
    let file = fs.files.get(fh)?;
    let start = offset(off)?;
    let mut done = 0;
    while done < buf.len() {
        let at = start.checked_add(done as i64).ok_or(Errno::EINVAL)?;
        match sys::pread(file.fd.as_fd(), &mut buf[done..], at) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(_) if done > 0 => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

thread_local! {
    /// The scratch buffer of [`BypassRw::CopyOnly`]: sized once per worker
    /// to the largest WRITE, then reused without allocating.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// [`BypassRw::CopyOnly`]: copy the payload where a real write would have
/// read it from, and throw it away.
fn copy_to_scratch(data: &[u8], max_write: usize) {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        if scratch.capacity() < data.len() {
            // First WRITE on this worker (or one larger than max_write,
            // which the kernel does not send): size it for every later one.
            let want = data.len().max(max_write);
            scratch.clear();
            scratch.reserve_exact(want);
        }
        scratch.clear();
        scratch.extend_from_slice(data);
        // The copy is the point of this mode; keep the optimizer from
        // deciding nobody reads it.
        std::hint::black_box(&mut *scratch);
    });
}

/// WRITE: pwrite from the borrowed payload, looping until all of it is
/// written. An error with nothing written is the answer (ENOSPC, EDQUOT,
/// EIO stay what they are); after a partial write, the count is, and the
/// caller's next write meets the error.
///
/// Writes from the writeback cache (`flags.cache`) may name any handle of
/// the inode that was opened for writing; under writeback every such
/// handle is `O_RDWR`, so any of them does.
pub(super) fn write(
    fs: &PassthroughFs,
    req: &Caller<'_>,
    node: NodeId,
    fh: FileHandle,
    off: u64,
    data: &[u8],
    flags: WriteFlags,
) -> Result<u32, Errno> {
    // WRITE payloads are at most max_write (a few MiB), far below u32::MAX.
    let len = data.len() as u32;
    match fs.options.bypass_rw {
        BypassRw::NoIo => return Ok(len),
        BypassRw::CopyOnly => {
            let max_write = fs.session.get().map_or(1 << 20, |s| s.max_write);
            copy_to_scratch(data, max_write);
            return Ok(len);
        }
        BypassRw::Off => {}
    }
    store(fs, req, node, fh, flags, |file| {
        pwrite_all(file, offset(off)?, data)
    })
}

/// What every WRITE that stores data does around `put`, which stores it in
/// the source file: clear suid/sgid when the kernel asks, and keep the
/// source's mtime for a writeback-cache WRITE (see `crate::mtime`).
fn store(
    fs: &PassthroughFs,
    req: &Caller<'_>,
    node: NodeId,
    fh: FileHandle,
    flags: WriteFlags,
    put: impl FnOnce(&OpenFile) -> Result<u32, Errno>,
) -> Result<u32, Errno> {
    let file = fs.files.get(fh)?;
    if flags.kill_suidgid && kill_suidgid(&file.fd, req)? && fs.writeback() {
        // The kernel asks this only on direct writes, and afterwards
        // refreshes only what the writeback cache does not keep itself
        // (mtime, ctime and size are its own): without this the old mode
        // would show until the attribute timeout.
        if let Some(session) = fs.session.get() {
            if let Err(e) = session.conn.inval_inode(node, -1, 0) {
                tracing::debug!(node = node.0, "attribute invalidation failed: {e}");
            }
        }
    }
    let _keep = if flags.cache && fs.writeback() {
        file.inode.kept_mtime.write(file.fd.as_fd())
    } else {
        None
    };
    put(&file)
}

/// The pwrite loop of [`write`].
fn pwrite_all(file: &OpenFile, start: i64, data: &[u8]) -> Result<u32, Errno> {
    let mut done = 0;
    while done < data.len() {
        let at = start.checked_add(done as i64).ok_or(Errno::EFBIG)?;
        match sys::pwrite(file.fd.as_fd(), &data[done..], at) {
            // A zero-byte write of a non-empty buffer would loop forever.
            Ok(0) => break,
            Ok(n) => done += n,
            Err(_) if done > 0 => break,
            Err(e) => return Err(e.into()),
        }
    }
    if done == 0 && !data.is_empty() {
        return Err(Errno::EIO);
    }
    Ok(done as u32)
}

/// WRITE with its data still in a pipe (the engine's `splice_write`):
/// spliced into the source file, so the data is copied once, by the
/// source's write, and never into our memory. Otherwise as [`write`]; a
/// file that refuses splice (opened `O_APPEND` without the writeback
/// cache, or a source without splice support) gets the data read and
/// pwritten.
pub(super) fn write_spliced(
    fs: &PassthroughFs,
    req: &Caller<'_>,
    node: NodeId,
    fh: FileHandle,
    off: u64,
    data: &mut PipeData<'_>,
    flags: WriteFlags,
) -> Result<u32, Errno> {
    // WRITE payloads are at most max_write (a few MiB), far below u32::MAX.
    let len = data.len() as u32;
    match fs.options.bypass_rw {
        // The engine throws away what is left in the pipe.
        BypassRw::NoIo => return Ok(len),
        BypassRw::CopyOnly => {
            // Reading the pipe is the one copy a real write would make.
            std::hint::black_box(data.read_remaining()?);
            return Ok(len);
        }
        BypassRw::Off => {}
    }
    store(fs, req, node, fh, flags, |file| {
        splice_all(file, offset(off)?, data)
    })
}

/// The splice loop of [`write_spliced`], as [`pwrite_all`] is of [`write`].
fn splice_all(file: &OpenFile, start: i64, data: &mut PipeData<'_>) -> Result<u32, Errno> {
    let len = data.len();
    let mut done = 0usize;
    while data.remaining() > 0 {
        let at = start.checked_add(done as i64).ok_or(Errno::EFBIG)?;
        match data.splice_to(file.fd.as_fd(), at as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if done == 0 && e.raw_os_error() == Some(libc::EINVAL) => {
                return pwrite_all(file, start, data.read_remaining()?);
            }
            Err(_) if done > 0 => break,
            Err(e) => return Err(e.into()),
        }
    }
    if done == 0 && len > 0 {
        return Err(Errno::EIO);
    }
    Ok(done as u32)
}

/// FALLOCATE: the mode as given (keep-size, punch-hole, zero-range, ...).
pub(super) fn fallocate(
    fs: &PassthroughFs,
    _req: &Caller<'_>,
    _node: NodeId,
    fh: FileHandle,
    off: u64,
    length: u64,
    mode: u32,
) -> Result<(), Errno> {
    let file = fs.files.get(fh)?;
    sys::fallocate(
        file.fd.as_fd(),
        mode as libc::c_int,
        offset(off)?,
        offset(length)?,
    )?;
    Ok(())
}

/// LSEEK (the kernel sends SEEK_DATA and SEEK_HOLE): lseek on the handle.
pub(super) fn lseek(
    fs: &PassthroughFs,
    _req: &Caller<'_>,
    _node: NodeId,
    fh: FileHandle,
    off: u64,
    whence: u32,
) -> Result<u64, Errno> {
    let file = fs.files.get(fh)?;
    let whence = libc::c_int::try_from(whence).map_err(|_| Errno::EINVAL)?;
    Ok(sys::lseek(file.fd.as_fd(), offset(off)?, whence)?)
}

/// COPY_FILE_RANGE: copy_file_range(2) between the two handles, so that
/// the source filesystem can reflink or copy server-side.
pub(super) fn copy_file_range(
    fs: &PassthroughFs,
    _req: &Caller<'_>,
    range: &CopyRange,
) -> Result<u64, Errno> {
    let from = fs.files.get(range.fh_in)?;
    let to = fs.files.get(range.fh_out)?;
    let flags = libc::c_uint::try_from(range.flags).map_err(|_| Errno::EINVAL)?;
    let len = usize::try_from(range.len).unwrap_or(usize::MAX);
    let n = sys::copy_file_range(
        from.fd.as_fd(),
        offset(range.off_in)?,
        to.fd.as_fd(),
        offset(range.off_out)?,
        len,
        flags,
    )?;
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_is_allocated_once() {
        std::thread::spawn(|| {
            copy_to_scratch(&[1; 100], 4096);
            let cap = SCRATCH.with(|s| s.borrow().capacity());
            assert!(cap >= 4096);
            copy_to_scratch(&[2; 4096], 4096);
            copy_to_scratch(&[3; 10], 4096);
            assert_eq!(SCRATCH.with(|s| s.borrow().capacity()), cap);
            assert_eq!(SCRATCH.with(|s| s.borrow().clone()), vec![3; 10]);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn offsets_past_off_t_are_refused() {
        assert_eq!(offset(u64::MAX).unwrap_err(), Errno::EINVAL);
        assert_eq!(offset(5).unwrap(), 5);
    }
}
