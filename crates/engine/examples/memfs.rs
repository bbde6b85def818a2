//! `memfs`: a small read-write filesystem that lives in memory.
//!
//! Run: `cargo run -p fastfuse --example memfs -- MOUNTPOINT`. Everything is
//! lost on unmount. One mutex guards the whole tree: simple, not fast.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fastfuse::{
    Attr, AttrReply, Caller, DirEntries, Entry, Errno, FileHandle, Filesystem, NodeId, OpenFlags,
    Opened, SetAttr, TimeOrNow, WriteFlags,
};

const TTL: Duration = Duration::from_secs(1);

enum Content {
    File(Vec<u8>),
    Dir(BTreeMap<OsString, u64>),
}

struct Node {
    attr: Attr,
    content: Content,
    /// Kernel references; an unlinked node is dropped when this reaches 0.
    lookups: u64,
}

struct Tree {
    nodes: HashMap<u64, Node>,
    next: u64,
}

/// The filesystem: a tree of nodes behind one mutex.
pub struct MemFs {
    tree: Mutex<Tree>,
}

fn now() -> (u64, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs(), d.subsec_nanos())
}

fn touch(attr: &mut Attr) {
    let (s, ns) = now();
    (attr.mtime, attr.mtimensec, attr.ctime, attr.ctimensec) = (s, ns, s, ns);
}

fn entry(ino: u64, attr: Attr) -> Entry {
    Entry {
        node: NodeId(ino),
        generation: 0,
        attr,
        attr_timeout: TTL,
        entry_timeout: TTL,
    }
}

impl Default for MemFs {
    fn default() -> Self {
        let (s, ns) = now();
        let root = Node {
            attr: Attr {
                ino: 1,
                mode: libc::S_IFDIR | 0o755,
                nlink: 2,
                atime: s,
                mtime: s,
                ctime: s,
                atimensec: ns,
                mtimensec: ns,
                ctimensec: ns,
                blksize: 4096,
                ..Default::default()
            },
            content: Content::Dir(BTreeMap::new()),
            lookups: 1,
        };
        MemFs {
            tree: Mutex::new(Tree {
                nodes: HashMap::from([(1, root)]),
                next: 2,
            }),
        }
    }
}

impl Tree {
    fn node(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn dir(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match &mut self.node(ino)?.content {
            Content::Dir(d) => Ok(d),
            Content::File(_) => Err(Errno::ENOTDIR),
        }
    }

    fn child(&mut self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.dir(parent)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn create(
        &mut self,
        req: &Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
    ) -> Result<Entry, Errno> {
        if self.dir(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next;
        self.next += 1;
        let is_dir = mode & libc::S_IFMT == libc::S_IFDIR;
        let mut attr = Attr {
            ino,
            mode,
            nlink: if is_dir { 2 } else { 1 },
            uid: req.uid,
            gid: req.gid,
            blksize: 4096,
            ..Default::default()
        };
        touch(&mut attr);
        (attr.atime, attr.atimensec) = (attr.mtime, attr.mtimensec);
        let content = if is_dir {
            Content::Dir(BTreeMap::new())
        } else {
            Content::File(Vec::new())
        };
        self.nodes.insert(
            ino,
            Node {
                attr,
                content,
                lookups: 1,
            },
        );
        self.dir(parent)?.insert(name.to_owned(), ino);
        let p = self.node(parent)?;
        touch(&mut p.attr);
        if is_dir {
            p.attr.nlink += 1;
        }
        Ok(entry(ino, attr))
    }

    /// Drops a node once it has neither names nor kernel references.
    fn reap(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get(&ino) {
            if n.lookups == 0 && n.attr.nlink == 0 {
                self.nodes.remove(&ino);
            }
        }
    }

    fn remove(&mut self, parent: u64, name: &OsStr, want_dir: bool) -> Result<(), Errno> {
        let ino = self.child(parent, name)?;
        let node = self.node(ino)?;
        match (&node.content, want_dir) {
            (Content::Dir(d), true) if !d.is_empty() => return Err(Errno::ENOTEMPTY),
            (Content::Dir(_), false) => return Err(Errno::EISDIR),
            (Content::File(_), true) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        node.attr.nlink = 0;
        self.dir(parent)?.remove(name);
        let p = self.node(parent)?;
        touch(&mut p.attr);
        if want_dir {
            p.attr.nlink -= 1;
        }
        self.reap(ino);
        Ok(())
    }
}

impl MemFs {
    fn tree(&self) -> MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Filesystem for MemFs {
    fn lookup(&self, _: &Caller, parent: NodeId, name: &OsStr) -> Result<Entry, Errno> {
        let mut t = self.tree();
        let ino = t.child(parent.0, name)?;
        let node = t.node(ino)?;
        node.lookups += 1;
        Ok(entry(ino, node.attr))
    }

    fn forget(&self, node: NodeId, nlookup: u64) {
        let mut t = self.tree();
        if let Ok(n) = t.node(node.0) {
            n.lookups = n.lookups.saturating_sub(nlookup);
            t.reap(node.0);
        }
    }

    fn getattr(&self, _: &Caller, node: NodeId, _: Option<FileHandle>) -> Result<AttrReply, Errno> {
        let attr = self.tree().node(node.0)?.attr;
        Ok(AttrReply { attr, timeout: TTL })
    }

    fn setattr(&self, _: &Caller, node: NodeId, c: &SetAttr) -> Result<AttrReply, Errno> {
        let mut t = self.tree();
        let n = t.node(node.0)?;
        if let Some(size) = c.size {
            let Content::File(data) = &mut n.content else {
                return Err(Errno::EISDIR);
            };
            data.resize(size as usize, 0);
            n.attr.size = size;
            touch(&mut n.attr);
        }
        if let Some(mode) = c.mode {
            n.attr.mode = (n.attr.mode & libc::S_IFMT) | (mode & 0o7777);
        }
        n.attr.uid = c.uid.unwrap_or(n.attr.uid);
        n.attr.gid = c.gid.unwrap_or(n.attr.gid);
        let stamp = |t: TimeOrNow| match t {
            TimeOrNow::At(t) => (t.secs as u64, t.nsecs),
            TimeOrNow::Now => now(),
        };
        if let Some(t) = c.atime {
            (n.attr.atime, n.attr.atimensec) = stamp(t);
        }
        if let Some(t) = c.mtime {
            (n.attr.mtime, n.attr.mtimensec) = stamp(t);
        }
        Ok(AttrReply {
            attr: n.attr,
            timeout: TTL,
        })
    }

    fn mkdir(
        &self,
        req: &Caller,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        _: u32,
    ) -> Result<Entry, Errno> {
        self.tree()
            .create(req, parent.0, name, libc::S_IFDIR | (mode & 0o7777))
    }

    fn create(
        &self,
        req: &Caller,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        _: u32,
        _: OpenFlags,
    ) -> Result<(Entry, Opened), Errno> {
        let e = self
            .tree()
            .create(req, parent.0, name, libc::S_IFREG | (mode & 0o7777))?;
        Ok((e, Opened::default()))
    }

    fn unlink(&self, _: &Caller, parent: NodeId, name: &OsStr) -> Result<(), Errno> {
        self.tree().remove(parent.0, name, false)
    }

    fn rmdir(&self, _: &Caller, parent: NodeId, name: &OsStr) -> Result<(), Errno> {
        self.tree().remove(parent.0, name, true)
    }

    fn rename(
        &self,
        _: &Caller,
        parent: NodeId,
        name: &OsStr,
        new_parent: NodeId,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<(), Errno> {
        if flags != 0 {
            return Err(Errno::EINVAL);
        }
        let mut t = self.tree();
        let ino = t.child(parent.0, name)?;
        if let Ok(old) = t.child(new_parent.0, new_name) {
            if old == ino {
                return Ok(());
            }
            let is_dir = matches!(t.node(ino)?.content, Content::Dir(_));
            t.remove(new_parent.0, new_name, is_dir)?;
        }
        t.dir(parent.0)?.remove(name);
        t.dir(new_parent.0)?.insert(new_name.to_owned(), ino);
        Ok(())
    }

    fn open(&self, _: &Caller, node: NodeId, flags: OpenFlags) -> Result<Opened, Errno> {
        let mut t = self.tree();
        let n = t.node(node.0)?;
        if flags.flags & libc::O_TRUNC as u32 != 0 {
            if let Content::File(data) = &mut n.content {
                data.clear();
                n.attr.size = 0;
            }
        }
        Ok(Opened::default())
    }

    fn read(
        &self,
        _: &Caller,
        node: NodeId,
        _: FileHandle,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, Errno> {
        let mut t = self.tree();
        let Content::File(data) = &t.node(node.0)?.content else {
            return Err(Errno::EISDIR);
        };
        let start = (offset as usize).min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn write(
        &self,
        _: &Caller,
        node: NodeId,
        _: FileHandle,
        offset: u64,
        src: &[u8],
        _: WriteFlags,
    ) -> Result<u32, Errno> {
        let mut t = self.tree();
        let n = t.node(node.0)?;
        let Content::File(data) = &mut n.content else {
            return Err(Errno::EISDIR);
        };
        let end = offset as usize + src.len();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[offset as usize..end].copy_from_slice(src);
        n.attr.size = data.len() as u64;
        touch(&mut n.attr);
        Ok(src.len() as u32)
    }

    fn readdir(
        &self,
        _: &Caller,
        node: NodeId,
        _: FileHandle,
        offset: u64,
        out: &mut DirEntries<'_>,
    ) -> Result<(), Errno> {
        let mut t = self.tree();
        let dir = t.dir(node.0)?.clone();
        let dots = [
            (OsString::from("."), node.0),
            (OsString::from(".."), node.0),
        ];
        let all = dots.into_iter().chain(dir);
        for (i, (name, ino)) in all.enumerate().skip(offset as usize) {
            let typ = match t.node(ino).map(|n| &n.content) {
                Ok(Content::File(_)) => libc::DT_REG,
                _ => libc::DT_DIR,
            };
            if !out.push(ino, i as u64 + 1, typ.into(), name.as_encoded_bytes()) {
                break;
            }
        }
        Ok(())
    }
}

#[allow(dead_code)] // integration tests include this file for `MemFs` only
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mountpoint = std::env::args_os()
        .nth(1)
        .ok_or("usage: memfs MOUNTPOINT")?;
    let options = fastfuse::MountOptions {
        fsname: "memfs".into(),
        subtype: Some("memfs".into()),
        ..Default::default()
    };
    let config = fastfuse::Config {
        handle_signals: true,
        ..Default::default()
    };
    fastfuse::Session::mount(MemFs::default(), mountpoint, &options, config)?.run()?;
    Ok(())
}
