//! The property of mapped folders under random local file-system operations on two devices,
//! hostile ones included: nothing outside either root is read or written, the two converge,
//! and no content is lost.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use crate::common::settle;
use crate::mapping::{converge, pair, snapshot};

#[derive(Debug, Clone)]
enum Op {
    /// Write new content to file `f` on a side.
    Write(bool, u8),
    Truncate(bool, u8),
    Delete(bool, u8),
    Rename(bool, u8, u8),
    /// `f1.txt` ↔ `F1.txt`.
    CaseRename(bool, u8),
    /// Toggle a directory's permission bits.
    ChmodDir(bool, u8),
    /// Rename the mapped root away, run a pass, put it back.
    RootAway(bool),
    /// Swap a directory for a symbolic link to the outside directory, run a pass, put it back.
    SwapForSymlink(bool, u8),
    Sync,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (any::<bool>(), 0u8..5).prop_map(|(s, f)| Op::Write(s, f)),
        1 => (any::<bool>(), 0u8..5).prop_map(|(s, f)| Op::Truncate(s, f)),
        2 => (any::<bool>(), 0u8..5).prop_map(|(s, f)| Op::Delete(s, f)),
        1 => (any::<bool>(), 0u8..5, 0u8..5).prop_map(|(s, f, t)| Op::Rename(s, f, t)),
        1 => (any::<bool>(), 0u8..5).prop_map(|(s, f)| Op::CaseRename(s, f)),
        1 => (any::<bool>(), 0u8..2).prop_map(|(s, d)| Op::ChmodDir(s, d)),
        1 => any::<bool>().prop_map(Op::RootAway),
        1 => (any::<bool>(), 0u8..2).prop_map(|(s, d)| Op::SwapForSymlink(s, d)),
        3 => Just(Op::Sync),
    ]
}

/// The relative path of file `f` in lower case (`F…` is its upper-case twin).
fn name(f: u8) -> String {
    match f % 2 {
        0 => format!("f{f}.txt"),
        _ => format!("d{}/f{f}.txt", f % 4 / 2),
    }
}

fn twin(rel: &str) -> String {
    match rel.rfind('/') {
        Some(i) => format!("{}/F{}", &rel[..i], &rel[i + 2..]),
        None => format!("F{}", &rel[1..]),
    }
}

/// Where file `f` is on a side now: its lower- or upper-case spelling (lower if neither).
fn existing(root: &Path, f: u8) -> String {
    let rel = name(f);
    if root.join(twin(&rel)).exists() {
        twin(&rel)
    } else {
        rel
    }
}

/// A content written by the test, and whether a later operation may have replaced it
/// knowingly: on the same device, or after a sync (an `Op::Sync`, or the sync inside a root or
/// symlink operation) — the other device may then have applied it before the user overwrote
/// it. (Mappings also run a pass by themselves when they start, which may publish earlier.)
struct Written {
    content: Vec<u8>,
    side: usize,
    file: u8,
    epoch: usize,
    excused: bool,
}

fn touch(written: &mut [Written], side: usize, file: u8, epoch: usize) {
    for w in written.iter_mut() {
        if w.file == file && (w.side == side || w.epoch < epoch) {
            w.excused = true;
        }
    }
}

#[cfg(unix)]
fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random local operations on two mapped devices (writes, truncations, deletions, renames
    /// including case-only ones, directory permission changes, the root renamed away, a
    /// directory swapped for a symbolic link to outside) with random syncs in between: nothing
    /// outside either root is written or read, the directories converge, and every content
    /// written is still there (as a file or a conflict copy) unless a later operation replaced
    /// or deleted it knowingly.
    #[test]
    fn mapped_directories_never_lose_content_nor_leave_their_roots(
        ops in proptest::collection::vec(op(), 4..24)
    ) {
        block_on(run(&ops));
    }
}

/// Runs `ops` on two mapped devices, then checks the property.
async fn run(ops: &[Op]) {
    let p = pair().await;
    let outside = tempfile::tempdir().unwrap();
    let secret = b"the outside secret".to_vec();
    std::fs::write(outside.path().join("f1.txt"), &secret).unwrap();
    std::fs::write(outside.path().join("f3.txt"), &secret).unwrap();
    let before_outside = snapshot(outside.path());
    let dirs: [PathBuf; 2] = [p.da.path().to_path_buf(), p.db.path().to_path_buf()];
    let clients = [&p.a, &p.b];
    let mut written: Vec<Written> = Vec::new();
    let mut epoch = 0;
    for (n, op) in ops.iter().enumerate() {
        match op {
            Op::Write(s, f) => {
                let side = *s as usize;
                let rel = existing(&dirs[side], *f);
                let path = dirs[side].join(&rel);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let content = format!("op {n} on side {side}").into_bytes();
                touch(&mut written, side, *f, epoch);
                if std::fs::write(&path, &content).is_ok() {
                    written.push(Written {
                        content,
                        side,
                        file: *f,
                        epoch,
                        excused: false,
                    });
                }
            }
            Op::Truncate(s, f) => {
                let side = *s as usize;
                let path = dirs[side].join(existing(&dirs[side], *f));
                if path.is_file() {
                    touch(&mut written, side, *f, epoch);
                    let _ = std::fs::OpenOptions::new()
                        .write(true)
                        .truncate(true)
                        .open(&path);
                }
            }
            Op::Delete(s, f) => {
                let side = *s as usize;
                touch(&mut written, side, *f, epoch);
                let _ = std::fs::remove_file(dirs[side].join(existing(&dirs[side], *f)));
            }
            Op::Rename(s, f, t) => {
                let side = *s as usize;
                let to = dirs[side].join(existing(&dirs[side], *t));
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                // What was at the target is replaced; what moves keeps its content
                // under another name.
                touch(&mut written, side, *t, epoch);
                touch(&mut written, side, *f, epoch);
                let _ = std::fs::rename(dirs[side].join(existing(&dirs[side], *f)), to);
            }
            Op::CaseRename(s, f) => {
                let side = *s as usize;
                let from = existing(&dirs[side], *f);
                let to = if from == name(*f) {
                    twin(&from)
                } else {
                    name(*f)
                };
                let _ = std::fs::rename(dirs[side].join(from), dirs[side].join(to));
            }
            Op::ChmodDir(s, d) => {
                #[cfg(unix)]
                {
                    let dir = dirs[*s as usize].join(format!("d{d}"));
                    if dir.is_dir() {
                        use std::os::unix::fs::PermissionsExt;
                        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
                        set_mode(&dir, if mode == 0o700 { 0o755 } else { 0o700 });
                    }
                }
                let _ = d;
            }
            Op::RootAway(s) => {
                let side = *s as usize;
                let away = dirs[side].with_extension("away");
                std::fs::rename(&dirs[side], &away).unwrap();
                let r = clients[side].rescan(&p.folder).await;
                assert!(
                    matches!(r, Err(mesh_client::ClientError::MappingPaused { .. })),
                    "{r:?}"
                );
                settle(&[&p.a, &p.b]).await;
                // (A sync: what either device had published has reached the other.)
                epoch += 1;
                std::fs::rename(&away, &dirs[side]).unwrap();
            }
            Op::SwapForSymlink(s, d) => {
                #[cfg(unix)]
                {
                    let side = *s as usize;
                    let dir = dirs[side].join(format!("d{d}"));
                    let kept = dirs[side].with_extension("kept");
                    if dir.is_dir() && !dir.is_symlink() {
                        std::fs::rename(&dir, &kept).unwrap();
                        std::os::unix::fs::symlink(outside.path(), &dir).unwrap();
                        let _ = clients[side].rescan(&p.folder).await;
                        settle(&[&p.a, &p.b]).await;
                        epoch += 1;
                        std::fs::remove_file(&dir).unwrap();
                        std::fs::rename(&kept, &dir).unwrap();
                        // Meanwhile the files below it were gone from the mapping.
                        for f in 0..5u8 {
                            if name(f).starts_with(&format!("d{d}/")) {
                                touch(&mut written, side, f, epoch);
                            }
                        }
                    }
                }
                let _ = (s, d);
            }
            Op::Sync => {
                p.a.rescan(&p.folder).await.unwrap();
                p.b.rescan(&p.folder).await.unwrap();
                settle(&[&p.a, &p.b]).await;
                epoch += 1;
            }
        }
    }
    converge(&p.a, &p.b, &p.folder, &dirs[0], &dirs[1]).await;
    // Nothing outside was written, nor read and published.
    assert_eq!(snapshot(outside.path()), before_outside);
    let contents: Vec<Vec<u8>> = snapshot(&dirs[0]).into_values().flatten().collect();
    assert!(!contents.contains(&secret), "an outside file was published");
    assert_nothing_lost(&written, &dirs[0]);
}

/// Runs a property's body on a runtime of its own.
fn block_on(run: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run);
}

/// Every content of `written` that no later operation replaced knowingly is a file in `root`.
fn assert_nothing_lost(written: &[Written], root: &Path) {
    let contents: Vec<Vec<u8>> = snapshot(root).into_values().flatten().collect();
    let lost: Vec<String> = written
        .iter()
        .filter(|w| !w.excused && !contents.contains(&w.content))
        .map(|w| String::from_utf8_lossy(&w.content).into_owned())
        .collect();
    assert!(
        lost.is_empty(),
        "lost {lost:?}; have {:?}",
        snapshot(root).keys().collect::<Vec<_>>()
    );
}

/// One step on three devices editing the same two files.
#[derive(Debug, Clone)]
enum Step {
    /// Device `d` writes new content to file `f`.
    Write(usize, u8),
    /// Device `d` deletes file `f`.
    Delete(usize, u8),
    /// Device `d` runs a pass (publishing what changed) without syncing.
    Pass(usize),
    /// Device `d` runs a pass and syncs with the hub, alone.
    Sync(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0usize..3, 0u8..2).prop_map(|(d, f)| Step::Write(d, f)),
        1 => (0usize..3, 0u8..2).prop_map(|(d, f)| Step::Delete(d, f)),
        2 => (0usize..3).prop_map(Step::Pass),
        3 => (0usize..3).prop_map(Step::Sync),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    /// Three devices edit and delete the same files concurrently, each syncing on its own
    /// schedule (three-way conflicts, edits against deletions, versions arriving between
    /// passes): the directories converge, every content written is still there (as the file
    /// or a conflict copy) unless a later operation replaced or deleted it knowingly, none is
    /// held twice (no needless conflict copy), and no conflict is left unsettled in the feed.
    #[test]
    fn three_devices_converge_without_losing_content_or_leaving_conflicts(
        steps in proptest::collection::vec(step(), 3..16)
    ) {
        block_on(run_three(&steps));
    }
}

async fn run_three(steps: &[Step]) {
    let t = crate::mapping::trio().await;
    let mut written: Vec<Written> = Vec::new();
    let mut epoch = 0;
    for (n, s) in steps.iter().enumerate() {
        match *s {
            Step::Write(d, f) => {
                let content = format!("step {n} on device {d}").into_bytes();
                touch(&mut written, d, f, epoch);
                std::fs::write(t.dir(d).join(format!("f{f}.txt")), &content).unwrap();
                written.push(Written {
                    content,
                    side: d,
                    file: f,
                    epoch,
                    excused: false,
                });
            }
            Step::Delete(d, f) => {
                touch(&mut written, d, f, epoch);
                let _ = std::fs::remove_file(t.dir(d).join(format!("f{f}.txt")));
            }
            Step::Pass(d) => t.devices[d].0.rescan(&t.folder).await.unwrap(),
            Step::Sync(d) => {
                let c = &t.devices[d].0;
                c.rescan(&t.folder).await.unwrap();
                c.sync_now().await.unwrap();
                epoch += 1;
            }
        }
    }
    t.converge().await;
    assert_nothing_lost(&written, t.dir(0));
    assert_nothing_held_twice(t.dir(0));
    for (c, _) in &t.devices {
        let left = c.conflicts(&t.folder).await.unwrap();
        assert!(left.is_empty(), "conflicts left: {left:?}");
    }
}

/// No content is in two files of `root`: every content written by the three-device property
/// is unique, so a content held twice is a needless conflict copy.
fn assert_nothing_held_twice(root: &Path) {
    let mut contents: Vec<Vec<u8>> = snapshot(root).into_values().flatten().collect();
    let n = contents.len();
    contents.sort();
    contents.dedup();
    assert_eq!(
        contents.len(),
        n,
        "a content is held twice: {:?}",
        snapshot(root).keys()
    );
}
