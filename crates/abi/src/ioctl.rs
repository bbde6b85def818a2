//! `/dev/fuse` device ioctls, encoded like the kernel's `_IO`/`_IOR`/`_IOW`.
//!
//! The values are typed `u64`; cast them to the request type `libc::ioctl`
//! takes on the target.

use crate::BackingMap;

#[cfg(not(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips32r6",
    target_arch = "mips64",
    target_arch = "mips64r6",
    target_arch = "sparc",
    target_arch = "sparc64",
)))]
mod enc {
    // asm-generic/ioctl.h (x86, x86_64, arm, aarch64, riscv, loongarch, s390, ...)
    pub(super) const SIZEBITS: u32 = 14;
    pub(super) const NONE: u64 = 0;
    pub(super) const WRITE: u64 = 1;
    pub(super) const READ: u64 = 2;
}

#[cfg(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips32r6",
    target_arch = "mips64",
    target_arch = "mips64r6",
    target_arch = "sparc",
    target_arch = "sparc64",
))]
mod enc {
    // powerpc, mips and sparc use a 13-bit size field and 3 direction bits.
    pub(super) const SIZEBITS: u32 = 13;
    pub(super) const NONE: u64 = 1;
    pub(super) const WRITE: u64 = 4;
    pub(super) const READ: u64 = 2;
}

const NRSHIFT: u32 = 0;
const TYPESHIFT: u32 = 8;
const SIZESHIFT: u32 = 16;
const DIRSHIFT: u32 = SIZESHIFT + enc::SIZEBITS;

const fn ioc(dir: u64, ty: u64, nr: u64, size: usize) -> u64 {
    assert!(size < (1 << enc::SIZEBITS));
    (dir << DIRSHIFT) | (ty << TYPESHIFT) | (nr << NRSHIFT) | ((size as u64) << SIZESHIFT)
}

const fn io(ty: u64, nr: u64) -> u64 {
    ioc(enc::NONE, ty, nr, 0)
}

const fn ior(ty: u64, nr: u64, size: usize) -> u64 {
    ioc(enc::READ, ty, nr, size)
}

const fn iow(ty: u64, nr: u64, size: usize) -> u64 {
    ioc(enc::WRITE, ty, nr, size)
}

/// The ioctl "type" byte of all `/dev/fuse` ioctls.
pub const FUSE_DEV_IOC_MAGIC: u64 = 229;

/// `_IOR(229, 0, uint32_t)`: attach this `/dev/fuse` fd to the session of the
/// fd passed as the `u32` argument (for multi-threaded reading).
pub const FUSE_DEV_IOC_CLONE: u64 = ior(FUSE_DEV_IOC_MAGIC, 0, core::mem::size_of::<u32>());

/// `_IOW(229, 1, struct fuse_backing_map)`: register a backing file for
/// passthrough; returns the backing id to put in `OpenOut::backing_id`.
pub const FUSE_DEV_IOC_BACKING_OPEN: u64 =
    iow(FUSE_DEV_IOC_MAGIC, 1, core::mem::size_of::<BackingMap>());

/// `_IOW(229, 2, uint32_t)`: unregister a passthrough backing id.
pub const FUSE_DEV_IOC_BACKING_CLOSE: u64 = iow(FUSE_DEV_IOC_MAGIC, 2, core::mem::size_of::<u32>());

/// `_IO(229, 3)`: request synchronous `FUSE_INIT` (processed during mount);
/// fails with `ENOTTY` on kernels without support.
pub const FUSE_DEV_IOC_SYNC_INIT: u64 = io(FUSE_DEV_IOC_MAGIC, 3);
