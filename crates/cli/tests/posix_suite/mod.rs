//! POSIX conformance and data integrity through a mount: pjdfstest compared
//! against a raw tmpfs in the same run, and fsx. `posix.rs` runs them over
//! /dev/fuse and `uring_suites.rs` over io_uring.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// pjdfstest's settings: its dummy users and the optional features both
/// filesystems have. Kept beside this module.
fn pjdfstest_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/posix_suite/pjdfstest.toml")
}

/// Runs pjdfstest in `dir` and returns the names of the tests that passed.
fn pjdfstest_passes(dir: &Path) -> (BTreeSet<String>, String) {
    let out = Command::new("pjdfstest")
        .arg("-c")
        .arg(pjdfstest_config())
        .arg("-p")
        .arg(dir)
        .env("NO_COLOR", "1")
        .current_dir(dir)
        .output()
        .expect("pjdfstest not found: ./scripts/setup.sh installs it");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let passed = stdout
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?;
            (words.next() == Some("ok") && words.next().is_none() && name.contains("::"))
                .then(|| name.to_string())
        })
        .collect();
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("Summary"))
        .unwrap_or("no summary")
        .to_string();
    (passed, summary)
}

/// pjdfstest on a raw tmpfs, then in `served`'s mount (which needs
/// `allow_other,default_permissions`: pjdfstest acts as other users): every
/// test that passes on tmpfs must pass through fastfuse.
pub fn pjdfstest_same_as_tmpfs(served: &Served) {
    let raw = Tmpfs::new("256m");
    let (on_tmpfs, raw_summary) = pjdfstest_passes(raw.path());
    assert!(
        on_tmpfs.len() > 300,
        "pjdfstest ran too few tests on tmpfs: {raw_summary}"
    );

    let (through, fuse_summary) = pjdfstest_passes(served.mnt());
    let missing: Vec<_> = on_tmpfs.difference(&through).collect();
    eprintln!("tmpfs: {raw_summary}\nfastfuse: {fuse_summary}");
    assert!(
        missing.is_empty(),
        "{} tests pass on tmpfs but not through fastfuse: {missing:#?}",
        missing.len()
    );
}

/// Every operation fsx knows on Linux, mmap reads and writes included.
const FSX_CONFIG: &str = r#"
flen = 262144
nomsyncafterwrite = false
nosizechecks = false
blockmode = false

[opsize]
max = 65536
min = 0
align = 1

[weights]
close_open      = 1
read            = 10
write           = 10
mapread         = 10
mapwrite        = 10
invalidate      = 1
truncate        = 2
fsync           = 1
fdatasync       = 1
posix_fallocate = 1
punch_hole      = 1
sendfile        = 1
posix_fadvise   = 1
copy_file_range = 1
"#;

/// fsx, 100,000 operations from a fixed seed, on a file in `served`'s
/// mount, which was started with `args` (named in the failure message).
pub fn fsx(served: &Served, args: &[&str]) {
    fsx_ops(served, args, 100_000);
}

/// fsx as [`fsx`] does, `ops` operations.
pub fn fsx_ops(served: &Served, args: &[&str], ops: u32) {
    let cfg = served.mnt().with_extension("fsx.toml");
    std::fs::write(&cfg, FSX_CONFIG).unwrap();
    let out = Command::new("fsx")
        .args(["-N", &ops.to_string(), "-S", "42", "-f"])
        .arg(&cfg)
        .arg(served.mnt().join("fsx-file"))
        .output()
        .expect("fsx not found: ./scripts/setup.sh installs it");
    let _ = std::fs::remove_file(&cfg);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("All operations completed A-OK"),
        "fsx {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        stderr.lines().take(80).collect::<Vec<_>>().join("\n")
    );
}
