//! `enum fuse_opcode` and `enum fuse_notify_code`.

macro_rules! code_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $kname:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $value, )+
        }

        impl $name {
            /// Every value, in the header's order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// Decode a raw value from the wire; `None` if the header does not define it.
            pub const fn from_raw(raw: u32) -> Option<$name> {
                match raw {
                    $( $value => Some($name::$variant), )+
                    _ => None,
                }
            }

            /// The raw value sent on the wire.
            pub const fn raw(self) -> u32 {
                self as u32
            }

            /// The kernel's name for this value, without the `FUSE_` / `FUSE_NOTIFY_` prefix.
            pub const fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $kname, )+
                }
            }
        }

        impl From<$name> for u32 {
            fn from(v: $name) -> u32 {
                v as u32
            }
        }

        impl TryFrom<u32> for $name {
            type Error = u32;

            /// Decode a raw value; the error is the unknown raw value.
            fn try_from(raw: u32) -> Result<Self, u32> {
                $name::from_raw(raw).ok_or(raw)
            }
        }
    };
}

code_enum! {
    /// Request opcodes (`enum fuse_opcode`, `InHeader::opcode`).
    ///
    /// The reserved byte-swap detection values are the crate-root constants
    /// `CUSE_INIT_BSWAP_RESERVED` and `FUSE_INIT_BSWAP_RESERVED`, not variants.
    pub enum Opcode {
        /// Look up a directory entry by name (`FUSE_LOOKUP`).
        Lookup = 1 => "LOOKUP",
        /// Drop lookup references to an inode; no reply (`FUSE_FORGET`).
        Forget = 2 => "FORGET",
        /// Get file attributes (`FUSE_GETATTR`).
        Getattr = 3 => "GETATTR",
        /// Set file attributes (`FUSE_SETATTR`).
        Setattr = 4 => "SETATTR",
        /// Read a symbolic link (`FUSE_READLINK`).
        Readlink = 5 => "READLINK",
        /// Create a symbolic link (`FUSE_SYMLINK`).
        Symlink = 6 => "SYMLINK",
        /// Create a file node (`FUSE_MKNOD`).
        Mknod = 8 => "MKNOD",
        /// Create a directory (`FUSE_MKDIR`).
        Mkdir = 9 => "MKDIR",
        /// Remove a file (`FUSE_UNLINK`).
        Unlink = 10 => "UNLINK",
        /// Remove a directory (`FUSE_RMDIR`).
        Rmdir = 11 => "RMDIR",
        /// Rename an entry (`FUSE_RENAME`).
        Rename = 12 => "RENAME",
        /// Create a hard link (`FUSE_LINK`).
        Link = 13 => "LINK",
        /// Open a file (`FUSE_OPEN`).
        Open = 14 => "OPEN",
        /// Read data (`FUSE_READ`).
        Read = 15 => "READ",
        /// Write data (`FUSE_WRITE`).
        Write = 16 => "WRITE",
        /// Get filesystem statistics (`FUSE_STATFS`).
        Statfs = 17 => "STATFS",
        /// Release an open file (`FUSE_RELEASE`).
        Release = 18 => "RELEASE",
        /// Synchronize file contents (`FUSE_FSYNC`).
        Fsync = 20 => "FSYNC",
        /// Set an extended attribute (`FUSE_SETXATTR`).
        Setxattr = 21 => "SETXATTR",
        /// Get an extended attribute (`FUSE_GETXATTR`).
        Getxattr = 22 => "GETXATTR",
        /// List extended attribute names (`FUSE_LISTXATTR`).
        Listxattr = 23 => "LISTXATTR",
        /// Remove an extended attribute (`FUSE_REMOVEXATTR`).
        Removexattr = 24 => "REMOVEXATTR",
        /// Flush on close of a file descriptor (`FUSE_FLUSH`).
        Flush = 25 => "FLUSH",
        /// Initialize the session (`FUSE_INIT`).
        Init = 26 => "INIT",
        /// Open a directory (`FUSE_OPENDIR`).
        Opendir = 27 => "OPENDIR",
        /// Read directory entries (`FUSE_READDIR`).
        Readdir = 28 => "READDIR",
        /// Release an open directory (`FUSE_RELEASEDIR`).
        Releasedir = 29 => "RELEASEDIR",
        /// Synchronize directory contents (`FUSE_FSYNCDIR`).
        Fsyncdir = 30 => "FSYNCDIR",
        /// Test for a POSIX lock (`FUSE_GETLK`).
        Getlk = 31 => "GETLK",
        /// Acquire/release a POSIX lock without waiting (`FUSE_SETLK`).
        Setlk = 32 => "SETLK",
        /// Acquire a POSIX lock, waiting (`FUSE_SETLKW`).
        Setlkw = 33 => "SETLKW",
        /// Check access permissions (`FUSE_ACCESS`).
        Access = 34 => "ACCESS",
        /// Create and open a file (`FUSE_CREATE`).
        Create = 35 => "CREATE",
        /// Interrupt a pending request (`FUSE_INTERRUPT`).
        Interrupt = 36 => "INTERRUPT",
        /// Map a file block to a device block (`FUSE_BMAP`).
        Bmap = 37 => "BMAP",
        /// Clean up the filesystem on unmount (`FUSE_DESTROY`).
        Destroy = 38 => "DESTROY",
        /// Perform an ioctl (`FUSE_IOCTL`).
        Ioctl = 39 => "IOCTL",
        /// Poll for I/O readiness (`FUSE_POLL`).
        Poll = 40 => "POLL",
        /// Reply to a `NOTIFY_RETRIEVE` notification (`FUSE_NOTIFY_REPLY`).
        NotifyReply = 41 => "NOTIFY_REPLY",
        /// Drop lookup references to many inodes; no reply (`FUSE_BATCH_FORGET`).
        BatchForget = 42 => "BATCH_FORGET",
        /// Allocate or punch file space (`FUSE_FALLOCATE`).
        Fallocate = 43 => "FALLOCATE",
        /// Read directory entries with attributes (`FUSE_READDIRPLUS`).
        Readdirplus = 44 => "READDIRPLUS",
        /// Rename with flags (`FUSE_RENAME2`).
        Rename2 = 45 => "RENAME2",
        /// Find data/holes in a file (`FUSE_LSEEK`).
        Lseek = 46 => "LSEEK",
        /// Copy a range between files, 32-bit result (`FUSE_COPY_FILE_RANGE`).
        CopyFileRange = 47 => "COPY_FILE_RANGE",
        /// Set up a DAX mapping (`FUSE_SETUPMAPPING`).
        Setupmapping = 48 => "SETUPMAPPING",
        /// Remove DAX mappings (`FUSE_REMOVEMAPPING`).
        Removemapping = 49 => "REMOVEMAPPING",
        /// Synchronize the whole filesystem (`FUSE_SYNCFS`).
        Syncfs = 50 => "SYNCFS",
        /// Create an unnamed temporary file (`FUSE_TMPFILE`).
        Tmpfile = 51 => "TMPFILE",
        /// Get extended file attributes (`FUSE_STATX`).
        Statx = 52 => "STATX",
        /// Copy a range between files, 64-bit result (`FUSE_COPY_FILE_RANGE_64`, 7.45).
        CopyFileRange64 = 53 => "COPY_FILE_RANGE_64",
        /// Initialize a CUSE session (`CUSE_INIT`).
        CuseInit = 4096 => "CUSE_INIT",
    }
}

impl Opcode {
    /// Whether the kernel waits for an answer: FORGET and BATCH_FORGET
    /// take none, INTERRUPT is answered only through the request it names,
    /// and NOTIFY_REPLY is itself an answer.
    pub const fn takes_reply(self) -> bool {
        !matches!(
            self,
            Opcode::Forget | Opcode::BatchForget | Opcode::Interrupt | Opcode::NotifyReply
        )
    }
}

code_enum! {
    /// Notification codes (`enum fuse_notify_code`), sent by the server in
    /// `OutHeader::error` with `OutHeader::unique == 0`.
    pub enum NotifyCode {
        /// Wake up pollers (`FUSE_NOTIFY_POLL`, `NotifyPollWakeupOut`).
        Poll = 1 => "POLL",
        /// Invalidate an inode's attributes/data (`NotifyInvalInodeOut`).
        InvalInode = 2 => "INVAL_INODE",
        /// Invalidate a directory entry (`NotifyInvalEntryOut`).
        InvalEntry = 3 => "INVAL_ENTRY",
        /// Store data into the page cache (`NotifyStoreOut`).
        Store = 4 => "STORE",
        /// Retrieve data from the page cache (`NotifyRetrieveOut`).
        Retrieve = 5 => "RETRIEVE",
        /// Delete a directory entry (`NotifyDeleteOut`).
        Delete = 6 => "DELETE",
        /// Ask the kernel to resend all pending requests.
        Resend = 7 => "RESEND",
        /// Increment the connection epoch, invalidating cached entries.
        IncEpoch = 8 => "INC_EPOCH",
        /// Try to drop unused inodes by node ID (`NotifyPruneOut`, 7.45).
        Prune = 9 => "PRUNE",
    }
}
