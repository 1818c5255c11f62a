//! The durability rules at a power cut: file data is durable after the file's `fsync`,
//! names after their directory's `fsync`, and nothing else survives a `drop` cut; `torn`
//! and `pages` cuts keep some of the unsynced bytes, in the shapes they promise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::FileExt;

use common::*;
use durafs::{CutMode, DuraFs, MountOptions};

#[test]
fn written_but_not_fsynced_data_is_gone_after_a_drop_cut() {
    // Power cut after write(), before fsync: the appended bytes were only in memory.
    let mut rig = Rig::new();
    write_synced(&rig.p("log"), b"durable");
    sync_dir(rig.mnt.path());
    append(&rig.p("log"), b" and more");
    assert_eq!(fs::read(rig.p("log")).unwrap(), b"durable and more");
    rig.cut(CutMode::Drop);
    assert_eq!(fs::read(rig.b("log")).unwrap(), b"durable");
}

#[test]
fn fsynced_data_survives_a_cut_and_a_remount_serves_it() {
    let mut rig = Rig::new();
    write_synced(&rig.p("log"), b"first");
    sync_dir(rig.mnt.path());
    append(&rig.p("log"), b" second");
    fs::File::open(rig.p("log")).unwrap().sync_data().unwrap();
    rig.cut_and_remount(CutMode::Drop);
    assert_eq!(fs::read(rig.p("log")).unwrap(), b"first second");
}

#[test]
fn created_file_vanishes_at_a_cut_if_its_directory_was_not_synced_even_if_the_file_was() {
    // Power cut after creat() and fsync(file), before fsync(dir): the data is on disk but
    // no directory entry points at it.
    let mut rig = Rig::new();
    write_synced(&rig.p("new"), b"synced data");
    rig.cut(CutMode::Drop);
    assert!(!rig.b("new").exists());
    assert_eq!(fs::read_dir(rig.backing.path()).unwrap().count(), 0);
}

#[test]
fn created_file_stays_after_a_cut_once_its_directory_was_synced() {
    let mut rig = Rig::new();
    write_synced(&rig.p("new"), b"synced data");
    sync_dir(rig.mnt.path());
    rig.cut(CutMode::Drop);
    assert_eq!(fs::read(rig.b("new")).unwrap(), b"synced data");
}

#[test]
fn created_file_with_synced_directory_but_unsynced_data_is_empty_after_a_cut() {
    let mut rig = Rig::new();
    write(&rig.p("new"), b"unsynced data");
    sync_dir(rig.mnt.path());
    rig.cut(CutMode::Drop);
    assert_eq!(fs::read(rig.b("new")).unwrap(), b"");
}

#[test]
fn new_directory_and_its_files_vanish_unless_the_parent_is_synced_too() {
    let mut rig = Rig::new();
    fs::create_dir(rig.p("d")).unwrap();
    write_synced(&rig.p("d/f"), b"x");
    sync_dir(&rig.p("d"));
    rig.cut_and_remount(CutMode::Drop);
    assert!(!rig.b("d").exists());

    fs::create_dir(rig.p("d")).unwrap();
    write_synced(&rig.p("d/f"), b"x");
    sync_dir(&rig.p("d"));
    sync_dir(rig.mnt.path());
    rig.cut(CutMode::Drop);
    assert_eq!(fs::read(rig.b("d/f")).unwrap(), b"x");
}

#[test]
fn rename_to_a_new_name_is_reverted_without_a_directory_sync() {
    // Power cut after rename(), before fsync(dir): the old name comes back.
    let mut rig = Rig::new();
    write_synced(&rig.p("a.tmp"), b"content");
    sync_dir(rig.mnt.path());
    fs::rename(rig.p("a.tmp"), rig.p("a")).unwrap();
    assert!(rig.p("a").exists() && !rig.p("a.tmp").exists());
    rig.cut(CutMode::Drop);
    assert_eq!(fs::read(rig.b("a.tmp")).unwrap(), b"content");
    assert!(!rig.b("a").exists());
}

#[test]
fn rename_over_an_existing_name_is_reverted_without_a_directory_sync() {
    // Power cut after the classic write-temp-then-rename, before fsync(dir): the old
    // file is back under its name, with its old content.
    let mut rig = Rig::new();
    write_synced(&rig.p("config"), b"old");
    sync_dir(rig.mnt.path());
    write_synced(&rig.p("config.tmp"), b"new");
    sync_dir(rig.mnt.path());
    fs::rename(rig.p("config.tmp"), rig.p("config")).unwrap();
    assert_eq!(fs::read(rig.p("config")).unwrap(), b"new");
    rig.cut(CutMode::Drop);
    assert_eq!(fs::read(rig.b("config")).unwrap(), b"old");
    assert_eq!(fs::read(rig.b("config.tmp")).unwrap(), b"new");
}

#[test]
fn rename_over_an_existing_name_is_durable_after_a_directory_sync() {
    let mut rig = Rig::new();
    write_synced(&rig.p("config"), b"old");
    sync_dir(rig.mnt.path());
    write_synced(&rig.p("config.tmp"), b"new");
    fs::rename(rig.p("config.tmp"), rig.p("config")).unwrap();
    sync_dir(rig.mnt.path());
    rig.cut(CutMode::Drop);
    assert_eq!(fs::read(rig.b("config")).unwrap(), b"new");
    assert!(!rig.b("config.tmp").exists());
}

#[test]
fn rename_across_directories_is_durable_in_each_directory_that_was_synced() {
    let mut rig = Rig::new();
    fs::create_dir(rig.p("a")).unwrap();
    fs::create_dir(rig.p("b")).unwrap();
    write_synced(&rig.p("a/f"), b"f");
    sync_dir(&rig.p("a"));
    sync_dir(rig.mnt.path());
    fs::rename(rig.p("a/f"), rig.p("b/f")).unwrap();
    sync_dir(&rig.p("b"));
    // Only the target directory was synced: the file is durable under both names.
    rig.cut(CutMode::Drop);
    assert_eq!(fs::read(rig.b("a/f")).unwrap(), b"f");
    assert_eq!(fs::read(rig.b("b/f")).unwrap(), b"f");
}

#[test]
fn unlink_is_reverted_without_a_directory_sync() {
    let mut rig = Rig::new();
    write_synced(&rig.p("segment"), b"records");
    sync_dir(rig.mnt.path());
    fs::remove_file(rig.p("segment")).unwrap();
    assert!(!rig.p("segment").exists());
    rig.cut_and_remount(CutMode::Drop);
    assert_eq!(fs::read(rig.p("segment")).unwrap(), b"records");

    fs::remove_file(rig.p("segment")).unwrap();
    sync_dir(rig.mnt.path());
    rig.cut(CutMode::Drop);
    assert!(!rig.b("segment").exists());
}

#[test]
fn pending_truncate_is_lost_at_a_cut() {
    let mut rig = Rig::new();
    write_synced(&rig.p("f"), &pattern(10_000, 1));
    sync_dir(rig.mnt.path());
    fs::OpenOptions::new()
        .write(true)
        .open(rig.p("f"))
        .unwrap()
        .set_len(10)
        .unwrap();
    assert_eq!(fs::metadata(rig.p("f")).unwrap().len(), 10);
    rig.cut(CutMode::Drop);
    assert_eq!(fs::read(rig.b("f")).unwrap(), pattern(10_000, 1));
}

/// A durable 5,000-byte file followed by 40,000 unsynced bytes, cut with `mode`.
fn durable_head_and_unsynced_tail(mode: CutMode, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut rig = Rig::with_seed(seed);
    let head = pattern(5_000, 7);
    let tail = pattern(40_000, 99);
    write_synced(&rig.p("f"), &head);
    sync_dir(rig.mnt.path());
    append(&rig.p("f"), &tail);
    let mut live = head.clone();
    live.extend_from_slice(&tail);
    let report = rig.cut(mode);
    assert_eq!(report.seed, seed);
    (live, fs::read(rig.b("f")).unwrap())
}

#[test]
fn torn_cut_keeps_a_random_prefix_of_the_unsynced_bytes() {
    // Power cut while the disk wrote the dirty pages front to back.
    let mut partial = 0;
    for seed in 1..=8 {
        let (live, after) = durable_head_and_unsynced_tail(CutMode::Torn, seed);
        assert!(after.len() >= 5_000, "seed {seed}: durable bytes lost");
        assert_eq!(after[..], live[..after.len()], "seed {seed}: not a prefix");
        partial += usize::from(after.len() > 5_000 && after.len() < live.len());
    }
    assert!(partial > 0, "no seed kept part of the unsynced bytes");
}

#[test]
fn pages_cut_keeps_a_subset_of_whole_unsynced_pages() {
    // Power cut while the disk wrote the dirty pages in any order.
    let mut some_kept = false;
    let mut some_lost = false;
    for seed in 1..=8 {
        let (live, after) = durable_head_and_unsynced_tail(CutMode::Pages, seed);
        assert!(after.len() >= 5_000, "seed {seed}: durable bytes lost");
        assert_eq!(
            after[..4096],
            live[..4096],
            "seed {seed}: a durable page changed"
        );
        for (i, page) in after.chunks(4096).enumerate() {
            let at = i * 4096;
            let want = &live[at..(at + page.len()).min(live.len())];
            let kept = page == want;
            // A lost page past the durable end reads as zeros (a hole); the page that
            // holds the durable end keeps its durable head when lost.
            let lost = page[(5_000usize.saturating_sub(at)).min(page.len())..]
                .iter()
                .all(|&b| b == 0);
            assert!(
                kept || lost,
                "seed {seed}: page {i} is neither kept nor lost"
            );
            some_kept |= kept && at >= 8192;
            some_lost |= !kept;
        }
        if after.len() < live.len() {
            some_lost = true;
        }
    }
    assert!(some_kept && some_lost, "pages were all kept or all lost");
}

#[test]
fn the_same_seed_replays_the_same_cut() {
    for mode in [CutMode::Torn, CutMode::Pages] {
        let a = durable_head_and_unsynced_tail(mode, 77).1;
        let b = durable_head_and_unsynced_tail(mode, 77).1;
        assert_eq!(a, b, "{mode:?}");
    }
}

#[test]
fn clean_unmount_makes_everything_durable() {
    let backing = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let mount = DuraFs::mount(backing.path(), mnt.path(), MountOptions::default()).unwrap();
    fs::create_dir(mnt.path().join("d")).unwrap();
    write(&mnt.path().join("d/f"), b"not synced by anyone");
    mount.unmount().unwrap();
    assert_eq!(
        fs::read(backing.path().join("d/f")).unwrap(),
        b"not synced by anyone"
    );
}

#[test]
fn a_cut_completes_while_a_file_is_still_open_and_that_descriptor_then_fails() {
    // Power cut under a process that still holds a file open: the mount is detached and
    // its FUSE connection aborted instead of waiting for the descriptor to close.
    let mut rig = Rig::new();
    write_synced(&rig.p("f"), b"x");
    sync_dir(rig.mnt.path());
    let f = fs::File::open(rig.p("f")).unwrap();
    rig.cut(CutMode::Drop);
    let mut buf = [0u8; 1];
    assert!(f.read_at(&mut buf, 0).is_err());
    rig.remount();
    assert_eq!(fs::read(rig.p("f")).unwrap(), b"x");
    drop(f);
}
