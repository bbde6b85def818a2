//! Directory listings through a real mount: by default the kernel opens
//! directories without OPENDIR and caches their listings, which must
//! still follow every change made through the mount at once and a change
//! made on the source within the attribute timeout; `-o no_dir_cache`
//! opens a handle per listing and reads the source every time. A tree walk
//! finds its next listings read ahead (`statahead`), which must never
//! answer with what a change through the mount has changed since.

mod common;
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::{op_count, Served};
use support::wait_for;

/// Held by the tests that drop the kernel's caches and by those that
/// count on a listing staying cached: the tests of one binary run at
/// once, and `drop_caches` empties every mount's.
static CACHES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn caches() -> std::sync::MutexGuard<'static, ()> {
    CACHES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The names in `dir`, "." and ".." left out.
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// READDIR and READDIRPLUS the daemon has answered.
fn listings(mnt: &Path) -> u64 {
    op_count(mnt, "READDIR") + op_count(mnt, "READDIRPLUS")
}

#[test]
fn cached_listings_follow_every_change_without_opendir() {
    let _caches = caches();
    let served = Served::start(&[]);
    let (mnt, src) = (served.mnt(), served.src());
    let dir = mnt.join("d");
    std::fs::create_dir(&dir).unwrap();
    // More names than one READDIRPLUS reply holds, so that the listing
    // resumes from a cookie on a directory opened for that request.
    let mut want: BTreeSet<String> = (0..600).map(|i| format!("file-{i:04}")).collect();
    for name in &want {
        std::fs::write(dir.join(name), b"x").unwrap();
    }
    assert_eq!(names(&dir), want);
    let opendirs = op_count(mnt, "OPENDIR");
    assert!(opendirs <= 1, "OPENDIR once at most (ENOSYS): {opendirs}");

    // Listed again, unchanged: from the kernel's cache.
    let before = listings(mnt);
    assert_eq!(names(&dir), want);
    assert_eq!(listings(mnt), before, "an unchanged listing was read again");

    // Changes through the mount show at once.
    std::fs::write(dir.join("new"), b"x").unwrap();
    want.insert("new".into());
    assert_eq!(names(&dir), want);
    std::fs::remove_file(dir.join("file-0007")).unwrap();
    want.remove("file-0007");
    assert_eq!(names(&dir), want);
    std::fs::rename(dir.join("file-0008"), dir.join("renamed")).unwrap();
    want.remove("file-0008");
    want.insert("renamed".into());
    assert_eq!(names(&dir), want);

    // A change on the source shows once the directory's attributes (1 s)
    // are asked again.
    std::fs::write(src.join("d/behind"), b"x").unwrap();
    want.insert("behind".into());
    assert!(
        wait_for(Duration::from_secs(10), || names(&dir) == want),
        "a name created on the source never showed"
    );

    // Never a handle: nothing to release.
    assert_eq!(op_count(mnt, "OPENDIR"), opendirs);
    assert_eq!(op_count(mnt, "RELEASEDIR"), 0);
}

#[test]
fn without_the_directory_cache_every_listing_reads_the_source() {
    let served = Served::start(&["-o", "no_dir_cache"]);
    let (mnt, src) = (served.mnt(), served.src());
    let dir = mnt.join("d");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a"), b"x").unwrap();
    let before = (op_count(mnt, "OPENDIR"), listings(mnt));
    assert_eq!(names(&dir), BTreeSet::from(["a".to_string()]));
    assert_eq!(op_count(mnt, "OPENDIR"), before.0 + 1);
    assert!(listings(mnt) > before.1);
    // A change on the source shows in the very next listing.
    std::fs::write(src.join("d/behind"), b"x").unwrap();
    assert_eq!(
        names(&dir),
        BTreeSet::from(["a".to_string(), "behind".to_string()])
    );
    // RELEASEDIR is sent in the background: it comes, but maybe later.
    assert!(
        wait_for(Duration::from_secs(10), || op_count(mnt, "RELEASEDIR") >= 2),
        "no RELEASEDIR came"
    );
}

/// The modes of every file under `top/*/`, by path, as `find` would see
/// them: each directory listed, each name stat'ed.
fn modes(top: &Path) -> Vec<(String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut seen = Vec::new();
    for d in std::fs::read_dir(top).unwrap() {
        let d = d.unwrap().path();
        for f in std::fs::read_dir(&d).unwrap() {
            let f = f.unwrap().path();
            let mode = std::fs::symlink_metadata(&f).unwrap().permissions().mode();
            seen.push((f.to_string_lossy().into_owned(), mode & 0o7777));
        }
    }
    seen.sort();
    seen
}

#[test]
fn a_walk_after_a_change_through_the_mount_sees_the_change() {
    use std::os::unix::fs::PermissionsExt;
    let _caches = caches();
    let served = Served::start(&[]);
    let top = served.mnt().join("top");
    for d in 0..20 {
        std::fs::create_dir_all(top.join(format!("d{d:02}"))).unwrap();
        for f in 0..20 {
            std::fs::write(top.join(format!("d{d:02}/f{f:02}")), b"x").unwrap();
        }
    }
    for round in 0..5u32 {
        // Cold: the listing of `top` has the subdirectories read ahead.
        support::drop_caches();
        let _ = names(&top);
        // Then every file changes mode through the mount before its
        // directory is listed: no listing read before may answer.
        let mode = if round % 2 == 0 { 0o600 } else { 0o644 };
        for d in 0..20 {
            for f in 0..20 {
                let p = top.join(format!("d{d:02}/f{f:02}"));
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            }
        }
        let stale: Vec<_> = modes(&top)
            .into_iter()
            .filter(|(_, m)| *m != mode)
            .collect();
        assert!(stale.is_empty(), "round {round}: stale modes {stale:?}");
    }
}
