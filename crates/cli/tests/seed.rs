//! The seed's command lines, unchanged, mount and serve correct data.

mod common;

use std::process::Command;

use common::*;

/// `fastfuse -o writeback -o max_threads=4 -o source=SRC MNT` (daemonized,
/// as passthrough_ll runs) returns once the mount is live, and fio's
/// sequential 1M writes from 2 jobs land intact in the source.
#[test]
fn passthrough_ll_command_line_serves_fio() {
    let src = Tmpfs::new("1g");
    let mnt = tempfile::tempdir().unwrap();
    let pidfile = mnt.path().with_extension("pid");
    let status = Command::new(fastfuse_bin())
        .args(["-o", "writeback", "-o", "max_threads=4", "-o"])
        .arg(format!("source={}", src.path().display()))
        .arg(mnt.path())
        .arg("--pid-file")
        .arg(&pidfile)
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
    // Returned only after the mount is live: usable on the next line.
    assert!(is_mounted(mnt.path()));
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = std::fs::remove_file(&pidfile);
    let guard = scopeguard(mnt.path().to_path_buf(), pid);

    let out = Command::new("fio")
        .args([
            "--name=seed",
            "--rw=write",
            "--bs=1M",
            "--numjobs=2",
            "--size=64M",
            "--ioengine=sync",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            // No verify state files left in the working directory.
            "--verify_state_save=0",
            "--output-format=json",
        ])
        .arg(format!("--directory={}", mnt.path().display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fio failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for job in json["jobs"].as_array().unwrap() {
        assert_eq!(job["error"], 0, "{job}");
        assert_eq!(job["write"]["io_bytes"], 64 << 20);
    }
    // Every byte fio wrote through the mount is in the source, identical.
    let files = tree(mnt.path());
    assert_eq!(files.len(), 2, "{files:?}");
    for (rel, len, _) in &files {
        assert_eq!(*len, 64 << 20);
        let through = std::fs::read(mnt.path().join(rel)).unwrap();
        let direct = std::fs::read(src.path().join(rel)).unwrap();
        assert!(
            through == direct,
            "{} differs between mount and source",
            rel.display()
        );
    }
    drop(guard);
    assert!(!is_mounted(mnt.path()));
}

/// Unmounts and waits for the daemon `pid` to exit on drop, also when the
/// test fails; kills it by pid as a last resort.
struct Guard(std::path::PathBuf, i32);

fn scopeguard(mnt: std::path::PathBuf, pid: i32) -> Guard {
    Guard(mnt, pid)
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
        let proc = std::path::PathBuf::from(format!("/proc/{}", self.1));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while proc.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if proc.exists() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(self.1.to_string())
                .status();
        }
    }
}
