//! The syscall boundary: every `unsafe` block of the engine lives here, each
//! wrapper named after the call it makes.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use fastfuse_abi as abi;

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `read(fd, buf)` — [read(2)](https://man7.org/linux/man-pages/man2/read.2.html).
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid writable region of buf.len() bytes for the
    // duration of the call.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `writev(fd, iov)` — [writev(2)](https://man7.org/linux/man-pages/man2/writev.2.html).
pub fn writev(fd: BorrowedFd<'_>, parts: &[&[u8]]) -> io::Result<usize> {
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 4];
    let n = parts.len().min(iov.len());
    for (dst, src) in iov.iter_mut().zip(parts) {
        dst.iov_base = src.as_ptr() as *mut _;
        dst.iov_len = src.len();
    }
    // SAFETY: the first n iovecs point to live slices that outlive the call;
    // writev only reads them.
    let ret = unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr(), n as libc::c_int) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Opens `/dev/fuse` for reading and writing, close-on-exec.
pub fn open_dev_fuse() -> io::Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open /dev/fuse: {e}")))?;
    Ok(file.into())
}

/// `ioctl(new, FUSE_DEV_IOC_CLONE, &old)` — attaches a fresh /dev/fuse fd to
/// the connection of `old`, so that it gets its own request queue position
/// and replies go back on the fd the request came from.
pub fn clone_dev_fd(old: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let new = open_dev_fuse()?;
    let old_fd: u32 = old.as_raw_fd() as u32;
    // SAFETY: FUSE_DEV_IOC_CLONE reads one u32 through the pointer, which
    // points to a live local.
    check(unsafe {
        libc::ioctl(
            new.as_raw_fd(),
            abi::ioctl::FUSE_DEV_IOC_CLONE as _,
            &old_fd as *const u32,
        )
    })?;
    Ok(new)
}

/// `ioctl(dev, FUSE_DEV_IOC_BACKING_OPEN, &map)` — registers `file` as a
/// passthrough backing file and returns its backing id (needs
/// CAP_SYS_ADMIN in the initial user namespace).
pub fn backing_open(dev: BorrowedFd<'_>, file: BorrowedFd<'_>) -> io::Result<i32> {
    let map = abi::BackingMap {
        fd: file.as_raw_fd(),
        flags: 0,
        padding: 0,
    };
    // SAFETY: the ioctl reads a struct fuse_backing_map through the pointer,
    // which points to a live, correctly laid out local.
    check(unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            abi::ioctl::FUSE_DEV_IOC_BACKING_OPEN as _,
            &map as *const abi::BackingMap,
        )
    })
}

/// `ioctl(dev, FUSE_DEV_IOC_BACKING_CLOSE, &id)` — drops a backing id.
pub fn backing_close(dev: BorrowedFd<'_>, id: i32) -> io::Result<()> {
    let id: u32 = id as u32;
    // SAFETY: the ioctl reads one u32 through the pointer to a live local.
    check(unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            abi::ioctl::FUSE_DEV_IOC_BACKING_CLOSE as _,
            &id as *const u32,
        )
    })?;
    Ok(())
}

/// `mount(source, target, fstype, flags, data)` —
/// [mount(2)](https://man7.org/linux/man-pages/man2/mount.2.html).
pub fn mount(source: &str, target: &Path, fstype: &str, flags: u64, data: &str) -> io::Result<()> {
    let source = CString::new(source)?;
    let target = cstring(target)?;
    let fstype = CString::new(fstype)?;
    let data = CString::new(data)?;
    // SAFETY: all four pointers are NUL-terminated strings alive for the call.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags as libc::c_ulong,
            data.as_ptr().cast(),
        )
    })?;
    Ok(())
}

/// `umount2(target, flags)` —
/// [umount2(2)](https://man7.org/linux/man-pages/man2/umount2.2.html).
pub fn umount2(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let target = cstring(target)?;
    // SAFETY: target is a NUL-terminated string alive for the call.
    check(unsafe { libc::umount2(target.as_ptr(), flags) })?;
    Ok(())
}

/// `syncfs(fd)` — [syncfs(2)](https://man7.org/linux/man-pages/man2/syncfs.2.html).
pub fn syncfs(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain syscall on a borrowed, open fd.
    check(unsafe { libc::syncfs(fd.as_raw_fd()) })?;
    Ok(())
}

/// `mlock(buf)` — keeps a buffer resident so that serving a request never
/// faults it in under memory pressure.
pub fn mlock(buf: &[u8]) -> io::Result<()> {
    // SAFETY: the range is a live allocation; mlock does not touch contents.
    check(unsafe { libc::mlock(buf.as_ptr().cast(), buf.len()) })?;
    Ok(())
}

/// `prctl(PR_SET_IO_FLUSHER, 1)` — marks the process as one that writeback
/// depends on, so that its allocations avoid reclaim that waits on I/O.
pub fn set_io_flusher() -> io::Result<()> {
    // From <linux/prctl.h>; the libc crate does not export it.
    const PR_SET_IO_FLUSHER: libc::c_int = 57;
    // SAFETY: plain prctl with integer arguments.
    check(unsafe { libc::prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) })?;
    Ok(())
}

/// The real uid and gid of the process.
pub fn real_ids() -> (u32, u32) {
    // SAFETY: getuid/getgid cannot fail.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// The effective uid of the process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// The signals a session unmounts on.
pub const SHUTDOWN_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

fn shutdown_sigset() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the zeroed set in place.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in SHUTDOWN_SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Blocks SIGINT/SIGTERM/SIGHUP in the calling thread (and in threads it
/// spawns later), so that only a [`shutdown_signalfd`] receives them.
pub fn block_shutdown_signals() -> io::Result<()> {
    let set = shutdown_sigset();
    // SAFETY: set is initialised; the old-set pointer may be null.
    let ret = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    Ok(())
}

/// Receives one file descriptor sent with SCM_RIGHTS on `sock` (how
/// fusermount3 hands back the /dev/fuse fd).
pub fn recv_fd(sock: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // Room for one cmsghdr carrying one int, 8-aligned.
    let mut cmsg_buf = [0u64; 4];
    // SAFETY: msghdr is plain data; zeroed is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cmsg_buf);
    loop {
        // SAFETY: msg points to live buffers sized as declared in it.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "fusermount3 closed the socket without sending a file descriptor",
            ));
        }
        break;
    }
    // SAFETY: CMSG_FIRSTHDR/CMSG_DATA walk the control buffer the kernel
    // just filled, within msg_controllen.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "fusermount3 sent no file descriptor",
            ));
        }
        let fd: RawFd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Clears close-on-exec on `fd` so that a child process inherits it.
pub fn clear_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_SETFD with an integer argument on a borrowed open fd.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) })?;
    Ok(())
}

/// Writes a whole notification message; notifications are not answered.
pub fn write_all_parts(fd: &impl AsFd, parts: &[&[u8]]) -> io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let n = writev(fd.as_fd(), parts)?;
    if n != total {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write to /dev/fuse: {n} of {total} bytes"),
        ));
    }
    Ok(())
}

#[cfg(feature = "io-uring")]
/// A set of CPUs a thread may run on, as the kernel's bitmask of
/// `unsigned long`s: sized to the CPU numbers in use, so that CPUs past
/// glibc's 1024 (`cpu_set_t`) are neither lost nor a panic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuSet(Vec<libc::c_ulong>);

#[cfg(feature = "io-uring")]
const CPUS_PER_WORD: usize = libc::c_ulong::BITS as usize;

#[cfg(feature = "io-uring")]
impl CpuSet {
    /// The CPUs the calling thread may run on now (`sched_getaffinity`),
    /// growing the mask until the kernel's fits (EINVAL: too small).
    pub fn current() -> io::Result<CpuSet> {
        let mut words = 1024 / CPUS_PER_WORD;
        loop {
            let mut mask: Vec<libc::c_ulong> = vec![0; words];
            let bytes = words * size_of::<libc::c_ulong>();
            // SAFETY: the raw syscall writes at most `bytes` bytes into
            // the mask, which is that long; it returns how many it wrote.
            let r =
                unsafe { libc::syscall(libc::SYS_sched_getaffinity, 0, bytes, mask.as_mut_ptr()) };
            if r >= 0 {
                return Ok(CpuSet(mask));
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINVAL) || words >= 1 << 16 {
                return Err(e);
            }
            words *= 2;
        }
    }

    /// The set of one CPU.
    pub fn one(cpu: usize) -> CpuSet {
        let mut mask: Vec<libc::c_ulong> = vec![0; cpu / CPUS_PER_WORD + 1];
        mask[cpu / CPUS_PER_WORD] |= 1 << (cpu % CPUS_PER_WORD);
        CpuSet(mask)
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: usize) -> bool {
        self.0
            .get(cpu / CPUS_PER_WORD)
            .is_some_and(|w| w & (1 << (cpu % CPUS_PER_WORD)) != 0)
    }

    /// Restricts the calling thread to this set (`sched_setaffinity`).
    /// Threads it creates afterwards inherit the set.
    pub fn apply(&self) -> io::Result<()> {
        let bytes = self.0.len() * size_of::<libc::c_ulong>();
        // SAFETY: the kernel reads `bytes` bytes of the mask we own.
        let r = unsafe { libc::syscall(libc::SYS_sched_setaffinity, 0, bytes, self.0.as_ptr()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(feature = "io-uring")]
/// The calling thread's id (`gettid`).
pub fn gettid() -> libc::pid_t {
    // SAFETY: gettid takes no argument, touches no memory and cannot fail.
    unsafe { libc::gettid() }
}

#[cfg(feature = "io-uring")]
/// Runs thread `tid` of this process (0: the calling thread) under
/// SCHED_IDLE (`idle`) or SCHED_OTHER (`sched_setscheduler`). Leaving
/// SCHED_IDLE takes CAP_SYS_NICE or an RLIMIT_NICE that allows nice 0.
pub fn set_sched_idle(tid: libc::pid_t, idle: bool) -> io::Result<()> {
    let policy = if idle {
        libc::SCHED_IDLE
    } else {
        libc::SCHED_OTHER
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: the kernel reads one sched_param, which outlives the call.
    if unsafe { libc::sched_setscheduler(tid, policy, &param) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(feature = "io-uring")]
/// Sets the calling thread's nice value (`setpriority`; below 0 takes
/// CAP_SYS_NICE).
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    let tid = gettid() as libc::id_t;
    // SAFETY: setpriority takes plain integers and touches no memory.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(feature = "io-uring")]
/// Whether thread `tid` of this process runs under SCHED_IDLE.
pub fn is_sched_idle(tid: libc::pid_t) -> io::Result<bool> {
    // SAFETY: sched_getscheduler only reads the thread's policy.
    let policy = unsafe { libc::sched_getscheduler(tid) };
    if policy < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(policy == libc::SCHED_IDLE)
}

/// Writes a zero into the first byte of every page of `buf`, so that each
/// page is resident now rather than faulted in while serving. Volatile: a
/// buffer known to be zeroed (calloc) would otherwise let the optimizer
/// drop stores of zero.
pub fn prefault(buf: &mut [u8]) {
    for page in buf.chunks_mut(4096) {
        // SAFETY: `page[0]` is a valid byte of an exclusive borrow.
        unsafe { std::ptr::write_volatile(&mut page[0], 0) };
    }
}

#[cfg(feature = "io-uring")]
/// Sets the `len` field of an IORING_OP_URING_CMD submission entry, which
/// the io-uring crate's builder does not expose: FUSE's REGISTER command
/// reads its iovec count from there.
pub fn uring_cmd_with_len(
    entry: io_uring::squeue::Entry128,
    len: u32,
) -> io_uring::squeue::Entry128 {
    // The kernel's struct io_uring_sqe: `len` is the u32 at offset 24.
    const LEN_OFFSET: usize = 24;
    // SAFETY: Entry128 is #[repr(C)] over struct io_uring_sqe followed by
    // 64 command bytes: exactly 128 bytes with no padding, so it may be
    // viewed as bytes and rebuilt from bytes.
    unsafe {
        let mut bytes: [u8; 128] = std::mem::transmute(entry);
        bytes[LEN_OFFSET..LEN_OFFSET + 4].copy_from_slice(&len.to_ne_bytes());
        std::mem::transmute::<[u8; 128], io_uring::squeue::Entry128>(bytes)
    }
}

#[cfg(feature = "io-uring")]
/// Queues one submission entry on `ring`.
///
/// # Safety
/// Every buffer the entry points to must stay valid and unmoved until its
/// completion has been reaped (or the ring is closed).
pub unsafe fn uring_push(
    ring: &mut io_uring::IoUring<io_uring::squeue::Entry128>,
    entry: &io_uring::squeue::Entry128,
) -> io::Result<()> {
    let mut sq = ring.submission();
    // SAFETY: the caller guarantees the entry's buffers outlive it.
    if unsafe { sq.push(entry) }.is_err() {
        drop(sq);
        ring.submit()?;
        let mut sq = ring.submission();
        // SAFETY: as above.
        unsafe { sq.push(entry) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
    }
    Ok(())
}

/// `pipe2(O_CLOEXEC)` — [pipe(2)](https://man7.org/linux/man-pages/man2/pipe.2.html):
/// (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is an array of two ints, as pipe2 requires.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both are fresh descriptors owned by no
    // one else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `fcntl(F_SETPIPE_SZ)`: resizes a pipe; returns the size it got (a power
/// of two pages at least `size`).
pub fn set_pipe_size(fd: BorrowedFd<'_>, size: usize) -> io::Result<usize> {
    let size =
        libc::c_int::try_from(size).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: F_SETPIPE_SZ takes an int and touches no memory of ours.
    let got = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, size) })?;
    Ok(got as usize)
}

/// `splice(fd_in, off_in, fd_out, off_out, len, flags)` —
/// [splice(2)](https://man7.org/linux/man-pages/man2/splice.2.html); an
/// offset is given for the side that is not a pipe.
pub fn splice(
    fd_in: BorrowedFd<'_>,
    off_in: Option<u64>,
    fd_out: BorrowedFd<'_>,
    off_out: Option<u64>,
    len: usize,
    flags: libc::c_uint,
) -> io::Result<usize> {
    let to_off = |o: Option<u64>| -> io::Result<Option<libc::loff_t>> {
        o.map(|o| libc::loff_t::try_from(o).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL)))
            .transpose()
    };
    let (mut off_in, mut off_out) = (to_off(off_in)?, to_off(off_out)?);
    let ptr = |o: &mut Option<libc::loff_t>| {
        o.as_mut()
            .map_or(std::ptr::null_mut(), |o| o as *mut libc::loff_t)
    };
    // SAFETY: the offsets are null or point to locals that outlive the
    // call; splice moves data between the two descriptors only.
    let n = unsafe {
        libc::splice(
            fd_in.as_raw_fd(),
            ptr(&mut off_in),
            fd_out.as_raw_fd(),
            ptr(&mut off_out),
            len,
            flags,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `eventfd(0, EFD_CLOEXEC)` — [eventfd(2)](https://man7.org/linux/man-pages/man2/eventfd.2.html).
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers.
    let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) })?;
    // SAFETY: eventfd succeeded, so fd is a fresh descriptor owned by no one
    // else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter, waking whoever reads it.
pub fn eventfd_signal(fd: BorrowedFd<'_>) -> io::Result<()> {
    let one = 1u64.to_ne_bytes();
    // SAFETY: the buffer is 8 valid bytes, as an eventfd write requires.
    let n = unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(feature = "io-uring")]
/// Reads (and so resets) an eventfd's counter, which must be nonzero or
/// the fd nonblocking: otherwise the read waits for a signal.
pub fn eventfd_read(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut count = [0u8; 8];
    // SAFETY: the buffer is 8 writable bytes, as an eventfd read requires.
    let n = unsafe { libc::read(fd.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from_ne_bytes(count))
}

/// The signal that wakes a thread from a blocking call: SIGURG, ignored
/// by default (a stray one harms no thread), with a handler that does
/// nothing and no `SA_RESTART`, so that the call returns EINTR. A pause
/// ends a /dev/fuse worker's read(2) with it, without taking a request.
pub const WAKE_SIGNAL: libc::c_int = libc::SIGURG;

extern "C" fn on_wake_signal(_: libc::c_int) {}

/// Installs [`WAKE_SIGNAL`]'s handler, once per process: after it, a
/// thread sent `WAKE_SIGNAL` leaves a blocking system call with EINTR.
/// The engine's pauses use it, and a filesystem may for its own waits
/// (the passthrough's lock waits do).
pub fn install_wake_handler() -> io::Result<()> {
    static INSTALLED: std::sync::OnceLock<Result<(), i32>> = std::sync::OnceLock::new();
    let r = INSTALLED.get_or_init(|| {
        // SAFETY: `struct sigaction` is plain data, valid zeroed; the
        // handler is an `extern "C"` function that does nothing, which is
        // async-signal-safe.
        check(unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_wake_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(WAKE_SIGNAL, &sa, std::ptr::null_mut())
        })
        .map(drop)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EINVAL))
    });
    r.map_err(io::Error::from_raw_os_error)
}

/// Makes a system call that does nothing, so that a signal sent to this
/// thread (already pending: `pthread_kill` has returned) is handled on its
/// way back, before whatever comes next.
pub fn take_pending_signals() {
    // SAFETY: getpid takes no arguments and cannot fail; the raw syscall
    // (not a cached or vDSO value) enters the kernel.
    unsafe { libc::syscall(libc::SYS_getpid) };
}

/// Sends `thread` [`WAKE_SIGNAL`], for a pause. The caller holds the thread's
/// `JoinHandle` and has not joined it, so the id is still valid (POSIX
/// keeps it so until the join, also once the thread has returned).
pub fn signal_pause(thread: &std::thread::JoinHandle<()>) -> io::Result<()> {
    use std::os::unix::thread::JoinHandleExt;
    // SAFETY: the id comes from an unjoined JoinHandle (see above).
    let r = unsafe { libc::pthread_kill(thread.as_pthread_t(), WAKE_SIGNAL) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

#[cfg(feature = "io-uring")]
/// `statx(path, AT_STATX_FORCE_SYNC)`: on a FUSE mount, one GETATTR
/// whatever the attribute cache holds.
pub fn statx_force_sync(path: &Path) -> io::Result<()> {
    statx(
        libc::AT_FDCWD,
        &cstring(path)?,
        libc::AT_STATX_FORCE_SYNC | libc::AT_NO_AUTOMOUNT,
        libc::STATX_MODE,
    )
    .map(drop)
}

/// `STATX_MNT_ID_UNIQUE` (Linux 6.8): the 64-bit mount id that is never
/// reused while the system runs; the libc crate does not export it.
const STATX_MNT_ID_UNIQUE: libc::c_uint = 0x4000;

/// What [`statx_mount`] reports of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountStat {
    /// The never-reused id of the mount the path is on.
    pub mount_id: u64,
}

/// `statx(dirfd, path, flags, mask)` —
/// [statx(2)](https://man7.org/linux/man-pages/man2/statx.2.html).
fn statx(
    dirfd: libc::c_int,
    path: &std::ffi::CStr,
    flags: libc::c_int,
    mask: libc::c_uint,
) -> io::Result<libc::statx> {
    // SAFETY: struct statx is plain data; zeroed is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: path is NUL-terminated and stx a live, writable struct statx;
    // both outlive the call.
    check(unsafe { libc::statx(dirfd, path.as_ptr(), flags, mask, &mut stx) })?;
    Ok(stx)
}

fn statx_at(
    dirfd: libc::c_int,
    path: &std::ffi::CStr,
    flags: libc::c_int,
) -> io::Result<MountStat> {
    // AT_STATX_DONT_SYNC: a FUSE filesystem answers from its attribute
    // cache and sends no request, so this cannot wait on a daemon that is
    // stopped, not serving yet, or gone.
    let flags = flags | libc::AT_STATX_DONT_SYNC | libc::AT_NO_AUTOMOUNT;
    let stx = statx(dirfd, path, flags, STATX_MNT_ID_UNIQUE)?;
    if stx.stx_mask & STATX_MNT_ID_UNIQUE == 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the kernel reports no unique mount id (STATX_MNT_ID_UNIQUE needs Linux 6.8+)",
        ));
    }
    Ok(MountStat {
        mount_id: stx.stx_mnt_id,
    })
}

/// `statx(path, AT_STATX_DONT_SYNC | AT_NO_AUTOMOUNT, STATX_MNT_ID_UNIQUE)`
/// — [statx(2)](https://man7.org/linux/man-pages/man2/statx.2.html): the
/// unique id of the mount `path` is on (the top one, for a mountpoint).
/// Sends FUSE no request for the last component.
pub fn statx_mount(path: &Path) -> io::Result<MountStat> {
    statx_at(libc::AT_FDCWD, &cstring(path)?, 0)
}

/// [`statx_mount`] of what `fd` refers to (`AT_EMPTY_PATH`).
pub fn statx_mount_fd(fd: BorrowedFd<'_>) -> io::Result<MountStat> {
    statx_at(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
}

/// `open(path, O_PATH | O_CLOEXEC)`: a handle on the mount at `path` that
/// the filesystem never sees (no OPEN request).
pub fn open_path(path: &Path) -> io::Result<OwnedFd> {
    let path = cstring(path)?;
    // SAFETY: path is NUL-terminated and alive for the call.
    let fd = check(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC | libc::O_DIRECTORY,
        )
    })?;
    // SAFETY: open succeeded, so fd is a fresh descriptor owned by no one
    // else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `umount2("/proc/self/fd/N", flags)`: unmounts exactly the mount `fd`
/// (an [`open_path`] of its root) is on, whatever is mounted at its path
/// now. Only useful with `MNT_DETACH`: the fd itself keeps the mount busy.
pub fn umount2_fd(fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<()> {
    umount2(
        Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())),
        flags,
    )
}

/// The events `poll(2)` reported for one descriptor.
pub type PollEvents = libc::c_short;

/// `poll(fds, POLLIN)` —
/// [poll(2)](https://man7.org/linux/man-pages/man2/poll.2.html): waits
/// until one of `fds` is readable (or in error), or `timeout` passes
/// (`None`: no limit); returns each fd's `revents`. EINTR is retried.
pub fn poll_readable(
    fds: &[BorrowedFd<'_>],
    timeout: Option<std::time::Duration>,
) -> io::Result<Vec<PollEvents>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
    loop {
        // SAFETY: pfds is a live array of pfds.len() pollfd structs, which
        // poll writes revents into.
        let ret = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if ret >= 0 {
            return Ok(pfds.iter().map(|p| p.revents).collect());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Whether `fd` is readable (or in error) right now: `poll(2)` with a zero
/// timeout, which puts the caller on no wait queue, so a writer has nobody
/// to wake.
pub fn poll_now(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: pfd is one live pollfd, which poll writes revents into.
    let ret = check(unsafe { libc::poll(&mut pfd, 1, 0) })?;
    Ok(ret > 0)
}

/// Whether the kernel has ended the FUSE connection `dev` (a /dev/fuse fd)
/// belongs to: after an unmount or an abort, /dev/fuse polls as POLLERR.
pub fn fuse_connection_ended(dev: BorrowedFd<'_>) -> io::Result<bool> {
    let revents = poll_readable(&[dev], Some(std::time::Duration::ZERO))?;
    Ok(revents[0] & libc::POLLERR != 0)
}

/// `signalfd(SHUTDOWN_SIGNALS, SFD_CLOEXEC | SFD_NONBLOCK)` —
/// [signalfd(2)](https://man7.org/linux/man-pages/man2/signalfd.2.html): a
/// descriptor that becomes readable when a shutdown signal is pending. The
/// signals must be blocked ([`block_shutdown_signals`]) in every thread.
/// Non-blocking, so that a signal taken by someone else between poll and
/// read leaves the reader waiting in poll, where it can be woken.
pub fn shutdown_signalfd() -> io::Result<OwnedFd> {
    let set = shutdown_sigset();
    // SAFETY: set is an initialised sigset_t alive for the call.
    let fd = check(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })?;
    // SAFETY: signalfd succeeded, so fd is a fresh descriptor owned by no
    // one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Takes one pending signal from a [`shutdown_signalfd`]: its number.
pub fn read_signalfd(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: signalfd_siginfo is plain data; zeroed is a valid value.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: info is a live, writable signalfd_siginfo of `size` bytes.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            size,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != size {
        return Err(io::Error::other(format!(
            "short read from a signalfd: {n} bytes"
        )));
    }
    Ok(info.ssi_signo as libc::c_int)
}

/// Takes ownership of a socket this process inherited across exec, under a
/// number it was told (e.g. in an environment variable by the parent that
/// passed it).
///
/// Why the returned `OwnedFd` is the only owner: every descriptor this
/// process opens through std, this crate or rustix is close-on-exec, so an
/// open descriptor above the standard streams *without* FD_CLOEXEC can
/// only have come through exec; and adopting sets FD_CLOEXEC (under a
/// lock), so the same descriptor is refused a second time. The remaining
/// assumption, which a process cannot check, is that no C code in it opened
/// that number without O_CLOEXEC and holds it.
pub fn adopt_inherited_socket(fd: RawFd) -> io::Result<OwnedFd> {
    static ADOPTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serialised = ADOPTING.lock().unwrap_or_else(|e| e.into_inner());
    let refuse = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {fd} {why}"),
        ))
    };
    if fd <= libc::STDERR_FILENO {
        return refuse("is a standard stream or invalid");
    }
    // SAFETY: F_GETFD takes no argument and touches no memory; on a number
    // that is not open it fails with EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return refuse(&format!("is not open: {}", io::Error::last_os_error()));
    }
    if flags & libc::FD_CLOEXEC != 0 {
        return refuse(
            "is close-on-exec: opened (or adopted already) in this process, not inherited",
        );
    }
    // SAFETY: struct stat is plain data; fstat writes it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a live, writable struct stat for the call.
    check(unsafe { libc::fstat(fd, &mut st) })?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return refuse("is not a socket");
    }
    // SAFETY: F_SETFD with an integer argument; marks the fd adopted and
    // keeps it from children (fusermount3) from now on.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
    // SAFETY: fd is open, a socket, and was inherited and not adopted
    // before (see above), so nothing else in this process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(feature = "stats")]
/// The uid of the process at the other end of a connected Unix socket
/// (`SO_PEERCRED`: the credentials it had when it connected).
pub(crate) fn peer_uid(sock: BorrowedFd<'_>) -> io::Result<libc::uid_t> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a writable `ucred` and `len` its size, as
    // SO_PEERCRED wants; the kernel writes at most `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn only_an_inherited_socket_is_adopted_and_only_once() {
        assert!(adopt_inherited_socket(libc::STDIN_FILENO).is_err());
        // std opens everything close-on-exec: not inherited, refused.
        let (a, b) = UnixStream::pair().unwrap();
        let err = adopt_inherited_socket(a.as_raw_fd()).unwrap_err();
        assert!(err.to_string().contains("close-on-exec"), "{err}");
        // As a parent leaves it for its child.
        clear_cloexec(b.as_fd()).unwrap();
        let raw = std::os::fd::IntoRawFd::into_raw_fd(b);
        let adopted = adopt_inherited_socket(raw).unwrap();
        assert!(adopt_inherited_socket(raw).is_err(), "adopted twice");
        // SAFETY: F_GETFD on a descriptor this test owns (`adopted`).
        let flags = unsafe { libc::fcntl(adopted.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        drop(adopted);
        assert!(adopt_inherited_socket(raw).is_err(), "closed, yet adopted");
        let (r, _w) = pipe().unwrap();
        clear_cloexec(r.as_fd()).unwrap();
        let err = adopt_inherited_socket(r.as_raw_fd()).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
    }

    #[test]
    fn statx_reports_a_unique_mount_id() {
        let root = statx_mount(Path::new("/")).unwrap();
        let dir = open_path(Path::new("/")).unwrap();
        assert_eq!(statx_mount_fd(dir.as_fd()).unwrap(), root);
        // Unique ids start above the 32-bit range of the reused ones.
        assert!(root.mount_id > u64::from(u32::MAX >> 1), "{root:?}");
    }

    #[cfg(feature = "io-uring")]
    #[test]
    fn cpu_sets_hold_cpus_past_1024() {
        let far = CpuSet::one(1500);
        assert!(far.contains(1500));
        assert!(!far.contains(1499) && !far.contains(0) && !far.contains(4096));
        let here = CpuSet::current().unwrap();
        assert!((0..4096).any(|cpu| here.contains(cpu)));
        here.apply().unwrap();
        // A set naming only a CPU that does not exist is refused, not a
        // panic.
        assert!(CpuSet::one(100_000).apply().is_err());
    }

    #[test]
    fn prefault_keeps_contents() {
        let mut buf = vec![0u8; 3 * 4096 + 10];
        prefault(&mut buf);
        assert!(buf.iter().all(|&b| b == 0));
    }
}
