//! What programs see on the mount before any cut: POSIX behaviour that a log agent
//! relies on (appends, holes, truncation, deleted-but-open files, locks, listings).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};

use common::*;
use durafs::CutMode;

#[test]
fn o_append_writes_land_at_the_end() {
    let rig = Rig::new();
    write(&rig.p("log"), b"one\n");
    let mut a = OpenOptions::new().append(true).open(rig.p("log")).unwrap();
    let mut b = OpenOptions::new().append(true).open(rig.p("log")).unwrap();
    a.write_all(b"two\n").unwrap();
    b.write_all(b"three\n").unwrap();
    a.write_all(b"four\n").unwrap();
    assert_eq!(fs::read(rig.p("log")).unwrap(), b"one\ntwo\nthree\nfour\n");
}

#[test]
fn a_write_past_the_end_leaves_a_zero_filled_hole() {
    let rig = Rig::new();
    write_synced(&rig.p("f"), b"abc");
    let f = OpenOptions::new().write(true).open(rig.p("f")).unwrap();
    f.write_all_at(b"xyz", 10_000).unwrap();
    let data = fs::read(rig.p("f")).unwrap();
    assert_eq!(data.len(), 10_003);
    assert_eq!(&data[..3], b"abc");
    assert!(data[3..10_000].iter().all(|&b| b == 0));
    assert_eq!(&data[10_000..], b"xyz");
}

#[test]
fn set_len_shrinks_and_grows_with_zeros() {
    let rig = Rig::new();
    write_synced(&rig.p("f"), &pattern(9_000, 3));
    let f = OpenOptions::new().write(true).open(rig.p("f")).unwrap();
    f.set_len(100).unwrap();
    f.set_len(9_000).unwrap();
    let data = fs::read(rig.p("f")).unwrap();
    assert_eq!(data[..100], pattern(9_000, 3)[..100]);
    assert!(data[100..].iter().all(|&b| b == 0));
}

#[test]
fn a_deleted_file_stays_readable_and_writable_through_an_open_descriptor() {
    let mut rig = Rig::new();
    write_synced(&rig.p("app.log"), b"line 1\n");
    sync_dir(rig.mnt.path());
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(rig.p("app.log"))
        .unwrap();
    fs::remove_file(rig.p("app.log")).unwrap();
    sync_dir(rig.mnt.path());
    assert!(!rig.p("app.log").exists());
    assert!(!rig.b("app.log").exists());
    f.seek(SeekFrom::End(0)).unwrap();
    f.write_all(b"line 2\n").unwrap();
    f.sync_all().unwrap();
    let mut all = String::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_string(&mut all).unwrap();
    assert_eq!(all, "line 1\nline 2\n");
    drop(f);
    rig.cut(CutMode::Drop);
    assert_eq!(fs::read_dir(rig.backing.path()).unwrap().count(), 0);
}

#[test]
fn flock_is_exclusive_on_the_mount() {
    // The WAL takes `wal.lock` with `File::try_lock` (flock) at open.
    let rig = Rig::new();
    let a = File::create(rig.p("wal.lock")).unwrap();
    let b = File::open(rig.p("wal.lock")).unwrap();
    a.try_lock().unwrap();
    assert!(matches!(b.try_lock(), Err(fs::TryLockError::WouldBlock)));
    drop(a);
    b.try_lock().unwrap();
}

#[test]
fn inode_numbers_stay_the_same_across_renames() {
    let rig = Rig::new();
    write(&rig.p("a"), b"x");
    let before = fs::metadata(rig.p("a")).unwrap().ino();
    fs::rename(rig.p("a"), rig.p("b")).unwrap();
    assert_eq!(fs::metadata(rig.p("b")).unwrap().ino(), before);
}

#[test]
fn listings_show_the_live_entries() {
    let rig = Rig::new();
    fs::create_dir(rig.p("d")).unwrap();
    for i in 0..300 {
        write(&rig.p(&format!("d/f{i:03}")), b"");
    }
    fs::remove_file(rig.p("d/f007")).unwrap();
    let mut names: Vec<String> = fs::read_dir(rig.p("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 299);
    assert!(!names.contains(&"f007".to_string()));
    assert!(
        fs::remove_dir(rig.p("d")).is_err(),
        "rmdir of a non-empty directory"
    );
}

#[test]
fn a_file_that_existed_in_the_backing_directory_is_served_as_durable() {
    let backing = tempfile::tempdir().unwrap();
    fs::create_dir(backing.path().join("wal")).unwrap();
    fs::write(backing.path().join("wal/old.seg"), b"old records").unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let mount = durafs::DuraFs::mount(backing.path(), mnt.path(), Default::default()).unwrap();
    assert_eq!(
        fs::read(mnt.path().join("wal/old.seg")).unwrap(),
        b"old records"
    );
    append(&mnt.path().join("wal/old.seg"), b" and new ones");
    mount.cut(CutMode::Drop).unwrap();
    assert_eq!(
        fs::read(backing.path().join("wal/old.seg")).unwrap(),
        b"old records"
    );
}
