//! `hello`: one read-only file, `/hello`, saying hello.
//!
//! Run: `cargo run -p fastfuse --example hello -- MOUNTPOINT` (as root or
//! with fusermount3), then `cat MOUNTPOINT/hello`. Unmounts on Ctrl-C.

use std::ffi::OsStr;
use std::time::Duration;

use fastfuse::{
    Attr, AttrReply, Caller, Config, DirEntries, Entry, Errno, FileHandle, Filesystem,
    MountOptions, NodeId, OpenFlags, Opened, Session,
};

const CONTENT: &[u8] = b"Hello from fastfuse!\n";
const FILE: NodeId = NodeId(2);
const TTL: Duration = Duration::from_secs(60);

/// The filesystem: static content, no state.
pub struct Hello;

fn attr(node: NodeId) -> Option<Attr> {
    let (mode, size, nlink) = match node {
        NodeId::ROOT => (libc::S_IFDIR | 0o555, 0, 2),
        FILE => (libc::S_IFREG | 0o444, CONTENT.len() as u64, 1),
        _ => return None,
    };
    Some(Attr {
        ino: node.0,
        mode,
        size,
        nlink,
        blksize: 4096,
        ..Default::default()
    })
}

impl Filesystem for Hello {
    fn lookup(&self, _: &Caller, parent: NodeId, name: &OsStr) -> Result<Entry, Errno> {
        if parent != NodeId::ROOT || name != "hello" {
            return Err(Errno::ENOENT);
        }
        Ok(Entry {
            node: FILE,
            generation: 0,
            attr: attr(FILE).ok_or(Errno::ENOENT)?,
            attr_timeout: TTL,
            entry_timeout: TTL,
        })
    }

    fn getattr(&self, _: &Caller, node: NodeId, _: Option<FileHandle>) -> Result<AttrReply, Errno> {
        let attr = attr(node).ok_or(Errno::ENOENT)?;
        Ok(AttrReply { attr, timeout: TTL })
    }

    fn open(&self, _: &Caller, node: NodeId, flags: OpenFlags) -> Result<Opened, Errno> {
        if node != FILE {
            return Err(Errno::EISDIR);
        }
        if flags.flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32 {
            return Err(Errno::EACCES);
        }
        Ok(Opened::default())
    }

    fn read(
        &self,
        _: &Caller,
        _: NodeId,
        _: FileHandle,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, Errno> {
        let start = (offset as usize).min(CONTENT.len());
        let n = buf.len().min(CONTENT.len() - start);
        buf[..n].copy_from_slice(&CONTENT[start..start + n]);
        Ok(n)
    }

    fn readdir(
        &self,
        _: &Caller,
        node: NodeId,
        _: FileHandle,
        offset: u64,
        out: &mut DirEntries<'_>,
    ) -> Result<(), Errno> {
        if node != NodeId::ROOT {
            return Err(Errno::ENOTDIR);
        }
        let entries = [
            (1, libc::DT_DIR, "."),
            (1, libc::DT_DIR, ".."),
            (2, libc::DT_REG, "hello"),
        ];
        for (i, (ino, typ, name)) in entries.iter().enumerate().skip(offset as usize) {
            if !out.push(*ino, i as u64 + 1, u32::from(*typ), name.as_bytes()) {
                break;
            }
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    // hello MOUNTPOINT [-o OPTIONS]
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mountpoint = args.first().ok_or("usage: hello MOUNTPOINT [-o OPTIONS]")?;
    let mut options = MountOptions {
        fsname: "hello".into(),
        subtype: Some("hello".into()),
        read_only: true,
        ..Default::default()
    };
    if let (Some("-o"), Some(opts)) = (args.get(1).map(String::as_str), args.get(2)) {
        for opt in opts.split(',') {
            if !options.apply(opt)? {
                return Err(format!("unknown option {opt}").into());
            }
        }
    }
    let config = Config {
        threads: 2,
        handle_signals: true,
        ..Default::default()
    };
    Session::mount(Hello, mountpoint, &options, config)?.run()?;
    Ok(())
}
