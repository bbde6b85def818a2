//! The metadata workloads: a generated tree of small files, extracted with
//! `tar`, stat'ed entry by entry, and removed with `rm -rf`; and the
//! page-cache dropping the cold workloads need.

use std::io::{self, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// The top directory of the tree inside the mount.
pub const TREE_DIR: &str = "tree";

/// Files per directory of the tree.
const PER_DIR: u32 = 100;

/// A tree of small files as an in-memory tarball (so that extracting it
/// does not read a disk, and dropping caches does not slow the next
/// extraction).
#[derive(Debug, Clone)]
pub struct Tree {
    /// The tarball.
    pub tar: Vec<u8>,
    /// Regular files.
    pub files: u64,
    /// Directories, the top one included.
    pub dirs: u64,
}

impl Tree {
    /// Entries: files and directories.
    pub fn entries(&self) -> u64 {
        self.files + self.dirs
    }

    /// Generates `files` files of 0 to 8 KiB (4 KiB on average, like a
    /// source tree) in directories of 100, under [`TREE_DIR`].
    pub fn generate(files: u32) -> io::Result<Tree> {
        let mut b = tar::Builder::new(Vec::new());
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut rand = move || {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let dir_header = |b: &mut tar::Builder<Vec<u8>>, path: &str| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            b.append_data(&mut h, path, io::empty())
        };
        dir_header(&mut b, TREE_DIR)?;
        let mut dirs = 1;
        let payload: Vec<u8> = (0..8192u32).map(|i| (i * 31 % 251) as u8).collect();
        for i in 0..files {
            let d = i / PER_DIR;
            if i % PER_DIR == 0 {
                dir_header(&mut b, &format!("{TREE_DIR}/d{d:04}"))?;
                dirs += 1;
            }
            let size = (rand() % 8193) as usize;
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(size as u64);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            b.append_data(
                &mut h,
                format!("{TREE_DIR}/d{d:04}/f{i:06}"),
                &payload[..size],
            )?;
        }
        let tar = b.into_inner()?;
        Ok(Tree {
            tar,
            files: u64::from(files),
            dirs,
        })
    }

    /// Whether the tree is present in `dir`.
    pub fn present_in(dir: &Path) -> bool {
        dir.join(TREE_DIR).exists()
    }

    /// Extracts the tree into `dir` with `tar -xf - -C DIR` (the tarball on
    /// its stdin). Returns the seconds it took.
    pub fn untar(&self, dir: &Path) -> io::Result<f64> {
        let t = Instant::now();
        let mut child = Command::new("tar")
            .arg("-xf")
            .arg("-")
            .arg("-C")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let fed = stdin.write_all(&self.tar);
        drop(stdin);
        let out = child.wait_with_output()?;
        let secs = t.elapsed().as_secs_f64();
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "tar failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        fed?;
        Ok(secs)
    }
}

/// Cold walks of the tree in one sample of the stat workload, each after
/// dropping dentries and inodes; only the walks are timed. With 5 (a
/// quarter of a second), one rep's stat against passthrough_hp's ranged
/// 0.59-1.66 on this project's 2-vCPU VM within one run; with 15,
/// 1.18-1.51.
pub const STAT_WALKS: u64 = 15;

/// `lstat`s every entry under `dir/tree` (reading each directory first, as
/// `find` or `ls -lR` would). Returns the entries seen and the seconds.
pub fn stat_tree(dir: &Path) -> io::Result<(u64, f64)> {
    let t = Instant::now();
    let mut seen = 0;
    let mut stack = vec![dir.join(TREE_DIR)];
    std::fs::symlink_metadata(&stack[0])?;
    seen += 1;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            let m = std::fs::symlink_metadata(&p)?;
            seen += 1;
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    Ok((seen, t.elapsed().as_secs_f64()))
}

/// `rm -rf dir/tree`. Returns the seconds.
pub fn remove_tree(dir: &Path) -> io::Result<f64> {
    let t = Instant::now();
    let out = Command::new("rm")
        .arg("-rf")
        .arg(dir.join(TREE_DIR))
        .stdin(Stdio::null())
        .output()?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "rm -rf failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(secs)
}

/// What to drop from the kernel's caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Dentries and inodes (`echo 2`).
    Dentries,
    /// The page cache too (`echo 3`): a FUSE mount's cached pages go as
    /// well, which is the point of a cold read.
    All,
}

/// `sync`, then `echo N > /proc/sys/vm/drop_caches` (root only).
pub fn drop_caches(what: Drop) -> io::Result<()> {
    rustix::fs::sync();
    let v = match what {
        Drop::Dentries => "2",
        Drop::All => "3",
    };
    std::fs::write("/proc/sys/vm/drop_caches", v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_round_trip_in_a_directory() {
        let tree = Tree::generate(250).unwrap();
        assert_eq!(tree.files, 250);
        assert_eq!(tree.dirs, 1 + 3);
        let dir = tempfile::tempdir().unwrap();
        assert!(!Tree::present_in(dir.path()));
        tree.untar(dir.path()).unwrap();
        assert!(Tree::present_in(dir.path()));
        let (seen, _) = stat_tree(dir.path()).unwrap();
        assert_eq!(seen, tree.entries());
        remove_tree(dir.path()).unwrap();
        assert!(!Tree::present_in(dir.path()));
    }

    #[test]
    fn generation_is_deterministic() {
        assert_eq!(
            Tree::generate(10).unwrap().tar,
            Tree::generate(10).unwrap().tar
        );
    }
}
