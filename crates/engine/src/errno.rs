//! The error a filesystem answers with: a positive errno value.
//!
//! Every filesystem error travels as an [`Errno`] and becomes `-errno` in the
//! reply header in exactly one place (`reply::finish`).

use std::fmt;
use std::io;

/// A positive `errno` value, as the kernel expects it negated in
/// `fuse_out_header.error`.
///
/// A newtype rather than an enum: filesystems pass through whatever the
/// source filesystem said, including values this crate has no name for.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(i32);

macro_rules! errno_consts {
    ($($name:ident),* $(,)?) => {
        impl Errno {
            $(
                #[doc = concat!("`", stringify!($name), "`")]
                pub const $name: Errno = Errno(libc::$name);
            )*
        }
    };
}

errno_consts!(
    EPERM,
    ENOENT,
    EINTR,
    EIO,
    ENXIO,
    E2BIG,
    EBADF,
    EAGAIN,
    ENOMEM,
    EACCES,
    EFAULT,
    EBUSY,
    EEXIST,
    EXDEV,
    ENODEV,
    ENOTDIR,
    EISDIR,
    EINVAL,
    ENFILE,
    EMFILE,
    EFBIG,
    ENOSPC,
    ESPIPE,
    EROFS,
    EMLINK,
    ERANGE,
    ENAMETOOLONG,
    ENOSYS,
    ENOTEMPTY,
    ELOOP,
    ENODATA,
    EOPNOTSUPP,
    ENOTSUP,
    EOVERFLOW,
    ENOTCONN,
    ESTALE,
    EDQUOT,
    ENOLCK,
    ETXTBSY,
    EDEADLK,
);

impl Errno {
    /// Wraps a raw positive errno value. Zero or negative values become
    /// `EIO`, because a "successful error" would be a protocol violation.
    pub const fn new(raw: i32) -> Errno {
        if raw > 0 {
            Errno(raw)
        } else {
            Errno(libc::EIO)
        }
    }

    /// The positive errno value.
    pub const fn raw(self) -> i32 {
        self.0
    }

    /// The calling thread's current `errno`.
    pub fn last() -> Errno {
        Errno::from(io::Error::last_os_error())
    }
}

impl From<io::Error> for Errno {
    /// Keeps the OS error code; errors without one (e.g. a short write
    /// reported by std) become `EIO`.
    fn from(err: io::Error) -> Errno {
        Errno::new(err.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl From<Errno> for io::Error {
    fn from(err: Errno) -> io::Error {
        io::Error::from_raw_os_error(err.0)
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Errno({}: {})",
            self.0,
            io::Error::from_raw_os_error(self.0)
        )
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&io::Error::from_raw_os_error(self.0), f)
    }
}

impl std::error::Error for Errno {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_round_trip_keeps_code() {
        let e = Errno::from(io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e, Errno::ENOSPC);
        assert_eq!(io::Error::from(e).raw_os_error(), Some(libc::ENOSPC));
    }

    #[test]
    fn non_positive_values_become_eio() {
        assert_eq!(Errno::new(0), Errno::EIO);
        assert_eq!(Errno::new(-2), Errno::EIO);
        assert_eq!(Errno::from(io::Error::other("x")), Errno::EIO);
    }
}
