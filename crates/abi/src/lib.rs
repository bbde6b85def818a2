//! The Linux kernel's FUSE wire ABI, protocol 7.45, as plain data.
//!
//! This crate is a field-for-field transcription of the Linux 6.18
//! `include/uapi/linux/fuse.h` (`FUSE_KERNEL_VERSION` 7,
//! `FUSE_KERNEL_MINOR_VERSION` 45). It contains no logic and no I/O: only
//! `#[repr(C)]` structs (with the kernel's explicit padding fields, so none of
//! them has implicit padding), the opcode and notification-code enums, the
//! `#define` flag groups as `pub const`s in one module per group, and the
//! `/dev/fuse` ioctl request numbers.
//!
//! Naming follows the kernel: a struct `fuse_foo_bar` becomes `FooBar`
//! (`fuse_in_header` → [`InHeader`], `cuse_init_out` → [`CuseInitOut`]); field
//! names and field types are the kernel's; `#define` names are kept verbatim.
//!
//! Every struct derives the [`zerocopy`] traits `FromBytes`, `IntoBytes`,
//! `Immutable` and `KnownLayout`, so it can be read from and written to a
//! message buffer without `unsafe`.
//!
//! ```
//! use fastfuse_abi::{InHeader, Opcode, FUSE_KERNEL_MINOR_VERSION};
//!
//! assert_eq!(core::mem::size_of::<InHeader>(), 40);
//! assert_eq!(FUSE_KERNEL_MINOR_VERSION, 45);
//! assert_eq!(Opcode::from_raw(1), Some(Opcode::Lookup));
//! assert_eq!(Opcode::BatchForget.name(), "BATCH_FORGET");
//! ```

#![deny(unsafe_code)]

mod flags;
pub mod ioctl;
mod opcode;
mod structs;

pub use flags::*;
pub use opcode::{NotifyCode, Opcode};
pub use structs::*;

/// Major version of the FUSE protocol; sent in `InitIn::major` / `InitOut::major`.
pub const FUSE_KERNEL_VERSION: u32 = 7;

/// Minor version of the FUSE protocol this crate describes (7.45, Linux 6.18).
pub const FUSE_KERNEL_MINOR_VERSION: u32 = 45;

/// The node ID of the root inode (the `nodeid` the kernel uses for the mount root).
pub const FUSE_ROOT_ID: u64 = 1;

/// Minimum size of the buffer a server must use to read requests from `/dev/fuse`.
pub const FUSE_MIN_READ_BUFFER: usize = 8192;

/// Size of [`EntryOut`] for protocol minor versions before 7.9.
pub const FUSE_COMPAT_ENTRY_OUT_SIZE: usize = 120;

/// Size of [`AttrOut`] for protocol minor versions before 7.9.
pub const FUSE_COMPAT_ATTR_OUT_SIZE: usize = 96;

/// Size of [`MknodIn`] for protocol minor versions before 7.12 (no `umask`).
pub const FUSE_COMPAT_MKNOD_IN_SIZE: usize = 8;

/// Size of [`WriteIn`] for protocol minor versions before 7.9.
pub const FUSE_COMPAT_WRITE_IN_SIZE: usize = 24;

/// Size of [`StatfsOut`] for protocol minor versions before 7.4 (no `frsize`).
pub const FUSE_COMPAT_STATFS_SIZE: usize = 48;

/// Size of [`SetxattrIn`] when `FUSE_SETXATTR_EXT` was not negotiated.
pub const FUSE_COMPAT_SETXATTR_IN_SIZE: usize = 8;

/// Size of [`InitOut`] for protocol minor versions before 7.5.
pub const FUSE_COMPAT_INIT_OUT_SIZE: usize = 8;

/// Size of [`InitOut`] for protocol minor versions before 7.23.
pub const FUSE_COMPAT_22_INIT_OUT_SIZE: usize = 24;

/// Maximum size of the device-info strings that follow [`CuseInitOut`].
pub const CUSE_INIT_INFO_MAX: usize = 4096;

/// Flag in `InHeader::unique` marking a request the kernel resent (`FUSE_HAS_RESEND`).
pub const FUSE_UNIQUE_RESEND: u64 = 1 << 63;

/// Value of `InHeader::{uid,gid}` when an idmapped mount cannot map the caller's ids.
pub const FUSE_INVALID_UIDGID: u32 = u32::MAX;

/// Reserved opcode value (`CUSE_INIT << 8`) used to detect a byte-swapped peer.
pub const CUSE_INIT_BSWAP_RESERVED: u32 = 1_048_576;

/// Reserved opcode value (`FUSE_INIT << 24`) used to detect a byte-swapped peer.
pub const FUSE_INIT_BSWAP_RESERVED: u32 = 436_207_616;

/// Size of the `in_out` area of [`UringReqHeader`] (holds `InHeader`/`OutHeader`).
pub const FUSE_URING_IN_OUT_HEADER_SZ: usize = 128;

/// Size of the `op_in` area of [`UringReqHeader`] (holds the per-opcode header).
pub const FUSE_URING_OP_IN_OUT_SZ: usize = 128;

/// io_uring command (SQE `cmd_op`): invalid / unset.
pub const FUSE_IO_URING_CMD_INVALID: u32 = 0;

/// io_uring command: register the request buffer and fetch a FUSE request.
pub const FUSE_IO_URING_CMD_REGISTER: u32 = 1;

/// io_uring command: commit a request's reply and fetch the next request.
pub const FUSE_IO_URING_CMD_COMMIT_AND_FETCH: u32 = 2;

/// Offset of the name in a `READDIR` record (`offsetof(struct fuse_dirent, name)`).
pub const FUSE_NAME_OFFSET: usize = core::mem::size_of::<Dirent>();

/// Offset of the name in a `READDIRPLUS` record
/// (`offsetof(struct fuse_direntplus, dirent.name)`).
pub const FUSE_NAME_OFFSET_DIRENTPLUS: usize = core::mem::size_of::<Direntplus>();

/// `FUSE_DIRENT_ALIGN(x)` (= `FUSE_REC_ALIGN(x)`): round a directory record
/// length up to the next multiple of 8, as the kernel requires between records.
pub const fn dirent_align(len: usize) -> usize {
    (len + core::mem::size_of::<u64>() - 1) & !(core::mem::size_of::<u64>() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    /// Sizes computed by hand from the C header (field widths summed), never
    /// from the Rust definitions.
    #[test]
    fn struct_sizes_match_the_kernel() {
        macro_rules! size {
            ($($t:ty => $n:expr,)+) => {
                $( assert_eq!(size_of::<$t>(), $n, stringify!($t)); )+
            };
        }
        size! {
            Attr => 88,
            SxTime => 16,
            Statx => 256,
            Kstatfs => 80,
            FileLock => 24,
            EntryOut => 128,
            ForgetIn => 8,
            ForgetOne => 16,
            BatchForgetIn => 8,
            GetattrIn => 16,
            AttrOut => 104,
            StatxIn => 24,
            StatxOut => 288,
            MknodIn => 16,
            MkdirIn => 8,
            RenameIn => 8,
            Rename2In => 16,
            LinkIn => 8,
            SetattrIn => 88,
            OpenIn => 8,
            CreateIn => 16,
            OpenOut => 16,
            ReleaseIn => 24,
            FlushIn => 24,
            ReadIn => 40,
            WriteIn => 40,
            WriteOut => 8,
            StatfsOut => 80,
            FsyncIn => 16,
            SetxattrIn => 16,
            GetxattrIn => 8,
            GetxattrOut => 8,
            LkIn => 48,
            LkOut => 24,
            AccessIn => 8,
            InitIn => 64,
            InitOut => 64,
            CuseInitIn => 16,
            CuseInitOut => 72,
            InterruptIn => 8,
            BmapIn => 16,
            BmapOut => 8,
            IoctlIn => 32,
            IoctlIovec => 16,
            IoctlOut => 16,
            PollIn => 24,
            PollOut => 8,
            NotifyPollWakeupOut => 8,
            FallocateIn => 32,
            InHeader => 40,
            OutHeader => 16,
            Dirent => 24,
            Direntplus => 152,
            NotifyInvalInodeOut => 24,
            NotifyInvalEntryOut => 16,
            NotifyDeleteOut => 24,
            NotifyStoreOut => 24,
            NotifyRetrieveOut => 32,
            NotifyRetrieveIn => 40,
            NotifyPruneOut => 16,
            BackingMap => 16,
            LseekIn => 24,
            LseekOut => 8,
            CopyFileRangeIn => 56,
            CopyFileRangeOut => 8,
            SetupmappingIn => 40,
            RemovemappingIn => 4,
            RemovemappingOne => 16,
            SyncfsIn => 8,
            Secctx => 8,
            SecctxHeader => 8,
            ExtHeader => 8,
            SuppGroups => 4,
            UringEntInOut => 32,
            UringReqHeader => 288,
            UringCmdReq => 24,
        }
    }

    #[test]
    fn compat_sizes_are_prefixes() {
        assert!(FUSE_COMPAT_ENTRY_OUT_SIZE < size_of::<EntryOut>());
        assert!(FUSE_COMPAT_ATTR_OUT_SIZE < size_of::<AttrOut>());
        assert_eq!(FUSE_COMPAT_MKNOD_IN_SIZE, offset_of!(MknodIn, umask));
        assert_eq!(FUSE_COMPAT_WRITE_IN_SIZE, offset_of!(WriteIn, lock_owner));
        assert_eq!(FUSE_COMPAT_STATFS_SIZE, offset_of!(Kstatfs, frsize));
        assert_eq!(
            FUSE_COMPAT_SETXATTR_IN_SIZE,
            offset_of!(SetxattrIn, setxattr_flags)
        );
        assert_eq!(
            FUSE_COMPAT_INIT_OUT_SIZE,
            offset_of!(InitOut, max_readahead)
        );
        assert_eq!(FUSE_COMPAT_22_INIT_OUT_SIZE, offset_of!(InitOut, time_gran));
    }

    #[test]
    fn in_header_offsets() {
        assert_eq!(offset_of!(InHeader, len), 0);
        assert_eq!(offset_of!(InHeader, opcode), 4);
        assert_eq!(offset_of!(InHeader, unique), 8);
        assert_eq!(offset_of!(InHeader, nodeid), 16);
        assert_eq!(offset_of!(InHeader, uid), 24);
        assert_eq!(offset_of!(InHeader, gid), 28);
        assert_eq!(offset_of!(InHeader, pid), 32);
        assert_eq!(offset_of!(InHeader, total_extlen), 36);
        assert_eq!(offset_of!(InHeader, padding), 38);
    }

    #[test]
    fn out_header_offsets() {
        assert_eq!(offset_of!(OutHeader, len), 0);
        assert_eq!(offset_of!(OutHeader, error), 4);
        assert_eq!(offset_of!(OutHeader, unique), 8);
    }

    #[test]
    fn init_offsets() {
        assert_eq!(offset_of!(InitIn, flags), 12);
        assert_eq!(offset_of!(InitIn, flags2), 16);
        assert_eq!(offset_of!(InitIn, unused), 20);
        assert_eq!(offset_of!(InitOut, flags), 12);
        assert_eq!(offset_of!(InitOut, max_background), 16);
        assert_eq!(offset_of!(InitOut, congestion_threshold), 18);
        assert_eq!(offset_of!(InitOut, max_write), 20);
        assert_eq!(offset_of!(InitOut, time_gran), 24);
        assert_eq!(offset_of!(InitOut, max_pages), 28);
        assert_eq!(offset_of!(InitOut, map_alignment), 30);
        assert_eq!(offset_of!(InitOut, flags2), 32);
        assert_eq!(offset_of!(InitOut, max_stack_depth), 36);
        assert_eq!(offset_of!(InitOut, request_timeout), 40);
        assert_eq!(offset_of!(InitOut, unused), 42);
    }

    #[test]
    fn dirent_offsets() {
        assert_eq!(FUSE_NAME_OFFSET, 24);
        assert_eq!(offset_of!(Dirent, namelen), 16);
        assert_eq!(offset_of!(Dirent, r#type), 20);
        assert_eq!(offset_of!(Direntplus, entry_out), 0);
        assert_eq!(offset_of!(Direntplus, dirent), 128);
        assert_eq!(FUSE_NAME_OFFSET_DIRENTPLUS, 152);
        assert_eq!(dirent_align(0), 0);
        assert_eq!(dirent_align(1), 8);
        assert_eq!(dirent_align(8), 8);
        assert_eq!(dirent_align(FUSE_NAME_OFFSET + 5), 32);
        assert_eq!(dirent_align(FUSE_NAME_OFFSET_DIRENTPLUS + 9), 168);
    }

    #[test]
    fn misc_offsets() {
        assert_eq!(offset_of!(EntryOut, attr), 40);
        assert_eq!(offset_of!(AttrOut, attr), 16);
        assert_eq!(offset_of!(StatxOut, stat), 32);
        assert_eq!(offset_of!(Statx, mode), 28);
        assert_eq!(offset_of!(Statx, ino), 32);
        assert_eq!(offset_of!(Statx, atime), 64);
        assert_eq!(offset_of!(Statx, rdev_major), 128);
        assert_eq!(offset_of!(Statx, __spare2), 144);
        assert_eq!(offset_of!(SetattrIn, atimensec), 56);
        assert_eq!(offset_of!(OpenOut, backing_id), 12);
        assert_eq!(offset_of!(LkIn, lk), 16);
        assert_eq!(offset_of!(LkIn, lk_flags), 40);
        assert_eq!(offset_of!(UringCmdReq, qid), 16);
        assert_eq!(offset_of!(UringEntInOut, payload_sz), 16);
    }

    #[test]
    fn uring_req_header_offsets() {
        assert_eq!(offset_of!(UringReqHeader, in_out), 0);
        assert_eq!(offset_of!(UringReqHeader, op_in), 128);
        assert_eq!(offset_of!(UringReqHeader, ring_ent_in_out), 256);
        assert!(size_of::<InHeader>() <= FUSE_URING_IN_OUT_HEADER_SZ);
        assert_eq!(UringReqHeader::default().in_out, [0u8; 128]);
    }

    #[test]
    fn opcodes() {
        // 1..=53 without 7 and 19, plus CUSE_INIT.
        assert_eq!(Opcode::ALL.len(), 52);
        for &op in Opcode::ALL {
            assert_eq!(Opcode::from_raw(op as u32), Some(op));
            assert_eq!(Opcode::try_from(u32::from(op)), Ok(op));
        }
        assert_eq!(Opcode::from_raw(0), None);
        assert_eq!(Opcode::from_raw(7), None);
        assert_eq!(Opcode::from_raw(19), None);
        assert_eq!(Opcode::from_raw(54), None);
        assert_eq!(Opcode::from_raw(CUSE_INIT_BSWAP_RESERVED), None);
        assert_eq!(Opcode::from_raw(FUSE_INIT_BSWAP_RESERVED), None);
        assert_eq!(Opcode::Lookup as u32, 1);
        assert_eq!(Opcode::Init as u32, 26);
        assert_eq!(Opcode::Statx as u32, 52);
        assert_eq!(Opcode::CopyFileRange64 as u32, 53);
        assert_eq!(Opcode::CuseInit as u32, 4096);
        assert_eq!(CUSE_INIT_BSWAP_RESERVED, (Opcode::CuseInit as u32) << 8);
        assert_eq!(FUSE_INIT_BSWAP_RESERVED, (Opcode::Init as u32) << 24);
        assert_eq!(Opcode::Lookup.name(), "LOOKUP");
        assert_eq!(Opcode::BatchForget.name(), "BATCH_FORGET");
        assert_eq!(Opcode::CopyFileRange64.name(), "COPY_FILE_RANGE_64");
        assert_eq!(Opcode::CuseInit.name(), "CUSE_INIT");
    }

    #[test]
    fn notify_codes() {
        assert_eq!(NotifyCode::ALL.len(), 9);
        for (i, &c) in NotifyCode::ALL.iter().enumerate() {
            assert_eq!(c as u32, i as u32 + 1);
            assert_eq!(NotifyCode::from_raw(c as u32), Some(c));
        }
        assert_eq!(NotifyCode::from_raw(0), None);
        assert_eq!(NotifyCode::from_raw(10), None);
        assert_eq!(NotifyCode::Prune as u32, 9);
        assert_eq!(NotifyCode::IncEpoch.name(), "INC_EPOCH");
    }

    #[test]
    fn init_flags_span_flags2() {
        assert_eq!(init::FUSE_ASYNC_READ, 1);
        assert_eq!(init::FUSE_INIT_EXT, 1 << 30);
        assert_eq!(init::FUSE_SECURITY_CTX >> 32, 1);
        assert_eq!(init::FUSE_PASSTHROUGH >> 32, 1 << 5);
        assert_eq!(init::FUSE_OVER_IO_URING >> 32, 1 << 9);
        assert_eq!(init::FUSE_REQUEST_TIMEOUT >> 32, 1 << 10);
        assert_eq!(init::FUSE_DIRECT_IO_RELAX, init::FUSE_DIRECT_IO_ALLOW_MMAP);
    }

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "x86"))]
    fn ioctl_numbers() {
        assert_eq!(ioctl::FUSE_DEV_IOC_CLONE, 0x8004_e500);
        assert_eq!(ioctl::FUSE_DEV_IOC_BACKING_OPEN, 0x4010_e501);
        assert_eq!(ioctl::FUSE_DEV_IOC_BACKING_CLOSE, 0x4004_e502);
        assert_eq!(ioctl::FUSE_DEV_IOC_SYNC_INIT, 0xe503);
    }

    #[test]
    fn zerocopy_round_trip() {
        use zerocopy::{FromBytes, IntoBytes};
        let h = InHeader {
            len: 40,
            opcode: Opcode::Getattr as u32,
            unique: 0x1122_3344_5566_7788,
            nodeid: FUSE_ROOT_ID,
            uid: 1000,
            gid: 1000,
            pid: 42,
            total_extlen: 0,
            padding: 0,
        };
        let bytes = h.as_bytes();
        assert_eq!(bytes.len(), 40);
        assert_eq!(&bytes[4..8], &3u32.to_ne_bytes());
        assert_eq!(InHeader::read_from_bytes(bytes).unwrap(), h);
    }
}

/// The crate README's examples, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
