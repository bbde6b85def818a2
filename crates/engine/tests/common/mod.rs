//! What the engine's mount tests share: a filesystem served in this
//! process on a temporary mountpoint, unmounted when dropped.

use std::path::Path;

use fastfuse::{BackgroundSession, Config, Filesystem, MountOptions, Session};

/// A filesystem served in this process on a temporary mountpoint.
pub struct Mounted {
    session: Option<BackgroundSession>,
    dir: tempfile::TempDir,
}

impl Mounted {
    /// Mounts `fs` on a new temporary directory and serves it.
    pub fn new(fs: impl Filesystem, config: Config) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        let opts = MountOptions {
            fsname: "fastfuse-test".into(),
            ..Default::default()
        };
        let session = Session::mount(fs, dir.path(), &opts, config)
            .unwrap()
            .spawn()
            .unwrap();
        Mounted {
            session: Some(session),
            dir,
        }
    }

    /// The mountpoint.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The serving session.
    #[allow(dead_code)] // not every test binary reads it
    pub fn session(&self) -> &BackgroundSession {
        self.session.as_ref().unwrap()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // Unmount (and join the workers) before the directory goes away.
        drop(self.session.take());
    }
}
