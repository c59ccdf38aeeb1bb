//! Mapped folders never destroy data: a mapping whose directory is missing, replaced or
//! pointed elsewhere, a directory that cannot be read, races with local edits, symbolic links
//! swapped in, case-only renames, and bulk deletions.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use mesh_client::mapping::{faults, MappingOptions};
use mesh_client::transport::InProcessHub;
use mesh_client::{ClientError, Event, MappingEvent, MeshClient, PauseReason};
use mesh_core::id::FolderId;

use crate::common::{builder, settle};
use crate::mapping::{converge, device, manual, one_device, pair, quiet_mapping, snapshot, trio};

/// Files (not directories) below `root`, by relative path.
fn files(root: &Path) -> Vec<String> {
    snapshot(root)
        .into_iter()
        .filter(|(_, c)| c.is_some())
        .map(|(k, _)| k)
        .collect()
}

fn conflict_copies(root: &Path) -> Vec<String> {
    files(root)
        .into_iter()
        .filter(|k| k.contains("(conflict "))
        .collect()
}

/// Asserts that both directories hold exactly the files `want` (contents, sorted).
fn assert_both_hold(da: &Path, db: &Path, want: &[&[u8]]) {
    for root in [da, db] {
        let mut contents: Vec<Vec<u8>> = snapshot(root).into_values().flatten().collect();
        contents.sort();
        assert_eq!(contents, want, "{:?}", snapshot(root).keys());
    }
}

/// Publishes on `a`, then syncs both and applies on `b`.
async fn push(a: &MeshClient, b: &MeshClient, folder: &FolderId) {
    let _ = a.rescan(folder).await;
    settle(&[a, b]).await;
    let _ = b.rescan(folder).await;
    settle(&[a, b]).await;
}

fn paused(r: Result<(), ClientError>) -> PauseReason {
    match r {
        Err(ClientError::MappingPaused { reason, .. }) => reason,
        other => panic!("expected a paused mapping, got {other:?}"),
    }
}

/// Waits (20 s at most) for an event `pick` accepts.
async fn wait_for<T>(
    events: &mut futures::stream::BoxStream<'static, Event>,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(e) = events.next().await {
            if let Some(t) = pick(&e) {
                return t;
            }
        }
        panic!("event stream ended");
    })
    .await
    .expect("the event did not come")
}

/// Why: pointing a mapped folder at another directory reused the folder's index, so every
/// indexed path looked deleted and was tombstoned (25 → 0 on the other device).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapping_a_folder_onto_another_directory_deletes_nothing() {
    let p = pair().await;
    let (da, db) = (p.da.path(), p.db.path());
    for i in 0..25 {
        std::fs::write(da.join(format!("f{i}.txt")), format!("shared {i}")).unwrap();
    }
    converge(&p.a, &p.b, &p.folder, da, db).await;
    assert_eq!(files(db).len(), 25);

    // The other directory has a file of its own and a different version of a shared one.
    let dc = tempfile::tempdir().unwrap();
    std::fs::write(dc.path().join("own.txt"), b"only here").unwrap();
    std::fs::write(dc.path().join("f0.txt"), b"another f0").unwrap();
    p.a.map_folder_with(&p.folder, dc.path(), quiet_mapping())
        .await
        .unwrap();
    converge(&p.a, &p.b, &p.folder, dc.path(), db).await;
    let on_b = files(db);
    assert_eq!(on_b.len(), 27, "{on_b:?}");
    assert!(on_b.contains(&"own.txt".to_string()));
    for i in 1..25 {
        assert_eq!(
            std::fs::read(db.join(format!("f{i}.txt"))).unwrap(),
            format!("shared {i}").as_bytes()
        );
    }
    // Both versions of f0 are kept.
    let copies = conflict_copies(db);
    assert_eq!(copies.len(), 1, "{copies:?}");
    let mut f0: Vec<Vec<u8>> = vec![
        std::fs::read(db.join("f0.txt")).unwrap(),
        std::fs::read(db.join(&copies[0])).unwrap(),
    ];
    f0.sort();
    assert_eq!(f0, vec![b"another f0".to_vec(), b"shared 0".to_vec()]);
    // The first directory is left as it was.
    assert_eq!(files(da).len(), 25);
}

/// Why: on restart with the mapped directory missing, `map_folder` created an empty one and
/// the old index tombstoned everything (10 → 0 on the other device).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_the_directory_missing_pauses_and_deletes_nothing() {
    let store = tempfile::tempdir().unwrap();
    let hub = InProcessHub::new();
    let open = || {
        builder("ann", "laptop")
            .store(mesh_client::store::StoreConfig::Sqlite(
                store.path().join("laptop.db"),
            ))
            .remote("hub".parse().unwrap(), hub.connect("ann".parse().unwrap()))
            .sync_options(manual())
            .build()
    };
    let a = open().await.unwrap();
    let b = device(&hub, "desktop").await;
    let folder = a
        .create_folder("Docs", "files".parse().unwrap())
        .await
        .unwrap()
        .id;
    settle(&[&a, &b]).await;
    let (parent, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let da = parent.path().join("Docs");
    a.map_folder_with(&folder, &da, quiet_mapping())
        .await
        .unwrap();
    b.map_folder_with(&folder, db.path(), quiet_mapping())
        .await
        .unwrap();
    for i in 0..10 {
        std::fs::write(da.join(format!("f{i}.txt")), format!("{i}")).unwrap();
    }
    converge(&a, &b, &folder, &da, db.path()).await;
    assert_eq!(files(db.path()).len(), 10);
    a.close();
    drop(a);

    // The directory is renamed while the application is closed.
    let moved = parent.path().join("Docs (moved)");
    std::fs::rename(&da, &moved).unwrap();
    let a = open().await.unwrap();
    let mut events = a.events().boxed();
    a.map_folder_with(&folder, &da, quiet_mapping())
        .await
        .unwrap();
    assert!(!da.exists(), "a missing mapped directory was created");
    let reason = wait_for(&mut events, |e| match e {
        Event::MappingPaused { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert_eq!(reason.kind(), "root_missing");
    assert_eq!(paused(a.rescan(&folder).await).kind(), "root_missing");
    push(&a, &b, &folder).await;
    assert_eq!(files(db.path()).len(), 10);

    // An empty directory in its place is not the mapped one either.
    std::fs::create_dir(&da).unwrap();
    assert_eq!(paused(a.rescan(&folder).await).kind(), "marker_missing");
    push(&a, &b, &folder).await;
    assert_eq!(files(db.path()).len(), 10);

    // The marked directory is back: the mapping resumes where it stopped.
    std::fs::remove_dir(&da).unwrap();
    std::fs::rename(&moved, &da).unwrap();
    std::fs::write(da.join("new.txt"), b"new").unwrap();
    a.rescan(&folder).await.unwrap();
    wait_for(&mut events, |e| {
        matches!(
            e,
            Event::Mapping {
                event: MappingEvent::Resumed,
                ..
            }
        )
        .then_some(())
    })
    .await;
    converge(&a, &b, &folder, &da, db.path()).await;
    assert_eq!(files(db.path()).len(), 11);
    assert!(conflict_copies(db.path()).is_empty());
}

/// Why: the mapped root disappearing while mapped (with the watcher on) was only a `Skipped`
/// event, and the empty scan became tombstones (40 → 0 within 1.5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_removed_while_watched_pauses_the_mapping() {
    let hub = InProcessHub::new();
    let a = device(&hub, "laptop").await;
    let b = device(&hub, "desktop").await;
    let folder = a
        .create_folder("Docs", "files".parse().unwrap())
        .await
        .unwrap()
        .id;
    settle(&[&a, &b]).await;
    let (parent, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let da = parent.path().join("Docs");
    std::fs::create_dir(&da).unwrap();
    for i in 0..40 {
        std::fs::write(da.join(format!("f{i}.txt")), format!("{i}")).unwrap();
    }
    let watched = MappingOptions::default()
        .with_debounce(Duration::from_millis(20))
        .with_follow_remote(false);
    let mut events = a.events().boxed();
    a.map_folder_with(&folder, &da, watched).await.unwrap();
    b.map_folder_with(&folder, db.path(), quiet_mapping())
        .await
        .unwrap();
    converge(&a, &b, &folder, &da, db.path()).await;
    assert_eq!(files(db.path()).len(), 40);

    std::fs::rename(&da, parent.path().join("elsewhere")).unwrap();
    let reason = wait_for(&mut events, |e| match e {
        Event::MappingPaused { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert_eq!(reason.kind(), "root_missing");
    push(&a, &b, &folder).await;
    assert_eq!(files(db.path()).len(), 40);

    // A directory of another folder in its place is refused too.
    std::fs::create_dir(&da).unwrap();
    std::fs::write(
        da.join(mesh_client::mapping::MARKER_FILE),
        br#"{"folder":"other","device":"laptop","mapping":"x"}"#,
    )
    .unwrap();
    assert_eq!(paused(a.rescan(&folder).await).kind(), "marker_mismatch");
    push(&a, &b, &folder).await;
    assert_eq!(files(db.path()).len(), 40);
    // And mapping onto it is refused with the same error.
    let dc = tempfile::tempdir().unwrap();
    std::fs::write(
        dc.path().join(mesh_client::mapping::MARKER_FILE),
        br#"{"folder":"other","device":"laptop","mapping":"x"}"#,
    )
    .unwrap();
    let err = a
        .map_folder_with(&folder, dc.path(), quiet_mapping())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::MappingPaused { .. }), "{err}");
}

/// Unmapping and mapping the same directory again carries on from its index: no spurious
/// conflict copies, and deletions made while unmapped are not undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remapping_the_same_directory_keeps_its_state() {
    let p = pair().await;
    let (da, db) = (p.da.path(), p.db.path());
    for name in ["a.txt", "b.txt", "c.txt"] {
        std::fs::write(da.join(name), name).unwrap();
    }
    converge(&p.a, &p.b, &p.folder, da, db).await;
    p.a.unmap_folder(&p.folder).await.unwrap();
    std::fs::remove_file(da.join("a.txt")).unwrap();
    std::fs::write(db.join("b.txt"), b"edited on the desktop").unwrap();
    push(&p.b, &p.a, &p.folder).await;

    p.a.map_folder_with(&p.folder, da, quiet_mapping())
        .await
        .unwrap();
    converge(&p.a, &p.b, &p.folder, da, db).await;
    assert_eq!(files(da), vec!["b.txt".to_string(), "c.txt".to_string()]);
    assert_eq!(
        std::fs::read(da.join("b.txt")).unwrap(),
        b"edited on the desktop"
    );
    assert!(conflict_copies(db).is_empty());
}

/// Why: a subdirectory that could not be read counted as "its files were deleted". Tests run
/// as root, where permissions do not stop reads, so the failure is injected:
/// [`faults::fail_listing`] makes the scan's listing of that directory fail with an I/O error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_directory_is_not_taken_for_deleted() {
    let p = pair().await;
    let (da, db) = (p.da.path(), p.db.path());
    std::fs::create_dir_all(da.join("sub/deeper")).unwrap();
    for name in [
        "top.txt",
        "sub/one.txt",
        "sub/two.txt",
        "sub/deeper/three.txt",
    ] {
        std::fs::write(da.join(name), name).unwrap();
    }
    converge(&p.a, &p.b, &p.folder, da, db).await;
    assert_eq!(files(db).len(), 4);

    let mut events = p.a.events().boxed();
    faults::fail_listing(&da.join("sub"), true);
    std::fs::write(db.join("sub/one.txt"), b"edited on the desktop").unwrap();
    std::fs::write(da.join("top.txt"), b"still published").unwrap();
    push(&p.a, &p.b, &p.folder).await;
    push(&p.b, &p.a, &p.folder).await;
    push(&p.a, &p.b, &p.folder).await;
    let path = wait_for(&mut events, |e| match e {
        Event::Mapping {
            event: MappingEvent::Unreadable { path, .. },
            ..
        } => Some(path.clone()),
        _ => None,
    })
    .await;
    assert_eq!(path, "sub");
    assert_eq!(files(db).len(), 4, "{:?}", files(db));
    assert_eq!(
        std::fs::read(db.join("top.txt")).unwrap(),
        b"still published"
    );
    // Nothing was written into the unreadable directory either.
    assert_eq!(
        std::fs::read(da.join("sub/one.txt")).unwrap(),
        b"sub/one.txt"
    );

    faults::fail_listing(&da.join("sub"), false);
    converge(&p.a, &p.b, &p.folder, da, db).await;
    assert_eq!(files(da).len(), 4);
    assert_eq!(
        std::fs::read(da.join("sub/one.txt")).unwrap(),
        b"edited on the desktop"
    );
}

/// Why: a local edit made while a remote version of the same file downloaded was overwritten
/// without a conflict copy. The edit is made at the last moment: by a hook
/// ([`faults::set_hook`] at [`faults::Moment::Replace`]) that runs after the remote version is written and synced,
/// just before it replaces the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_edit_made_during_a_download_is_kept() {
    let p = pair().await;
    let (da, db) = (p.da.path(), p.db.path());
    std::fs::write(da.join("plan.txt"), b"v1").unwrap();
    converge(&p.a, &p.b, &p.folder, da, db).await;

    std::fs::write(db.join("plan.txt"), b"remote edit").unwrap();
    faults::set_hook(da, |moment, target| {
        if moment == faults::Moment::Replace && target.ends_with("plan.txt") {
            std::fs::write(target, b"local edit, made during the download").unwrap();
        }
    });
    push(&p.b, &p.a, &p.folder).await;
    faults::clear_hooks(da);
    converge(&p.a, &p.b, &p.folder, da, db).await;
    assert_both_hold(
        da,
        db,
        &[b"local edit, made during the download", b"remote edit"],
    );
}

/// Runs a pass of `client`'s mapping of `folder` at `root` in which `client` syncs (once) at
/// the moment the pass reads the local file `name` to publish it: after the pass read the
/// feed, before it writes.
async fn rescan_syncing_as_it_reads(
    client: &MeshClient,
    folder: &FolderId,
    root: &Path,
    name: &str,
) {
    rescan_syncing_at(client, folder, root, faults::Moment::Read, name).await
}

/// Runs a pass in which `client` syncs (once) at `moment` of the pass's work on file `name`.
async fn rescan_syncing_at(
    client: &MeshClient,
    folder: &FolderId,
    root: &Path,
    at: faults::Moment,
    name: &str,
) {
    let synced = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (c, once, name) = (client.clone(), synced.clone(), name.to_owned());
    let runtime = tokio::runtime::Handle::current();
    faults::set_hook(root, move |moment, target| {
        if moment == at
            && target.ends_with(&name)
            && !once.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            // (The hook runs on a worker of the runtime: the sync runs on a thread of its own.)
            let (c, runtime) = (c.clone(), runtime.clone());
            std::thread::spawn(move || runtime.block_on(c.sync_now()).map(|_| ()))
                .join()
                .unwrap()
                .unwrap();
        }
    });
    client.rescan(folder).await.unwrap();
    faults::clear_hooks(root);
    assert!(
        synced.load(std::sync::atomic::Ordering::SeqCst),
        "the hook ran"
    );
}

/// Why: a version that arrived while a pass worked was overwritten unseen. The pass read
/// the feed (no entry for the file yet), planned to publish the local file as new, and a sync
/// brought the other device's version of it before the publish: the publish wrote over that
/// version, and the other device then replaced its file without a conflict copy. The sync
/// runs at the last moment, from a hook ([`faults::Moment::Read`]) as the pass reads the
/// local file to publish it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_arrives_during_a_pass_is_not_overwritten_unseen() {
    let p = pair().await;
    let (da, db) = (p.da.path(), p.db.path());
    std::fs::write(da.join("plan.txt"), b"the laptop's").unwrap();
    p.a.rescan(&p.folder).await.unwrap();
    p.a.sync_now().await.unwrap();

    std::fs::write(db.join("plan.txt"), b"the desktop's").unwrap();
    rescan_syncing_as_it_reads(&p.b, &p.folder, db, "plan.txt").await;
    converge(&p.a, &p.b, &p.folder, da, db).await;
    assert_both_hold(da, db, &[b"the desktop's", b"the laptop's"]);
}

/// The same race for a deletion: an edit that arrives while the pass that deletes the file
/// works is not deleted unseen; the edit wins, as it does over a deletion it meets in a sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_that_arrives_during_a_pass_is_not_deleted_unseen() {
    let p = pair().await;
    let (da, db) = (p.da.path(), p.db.path());
    std::fs::write(da.join("plan.txt"), b"v1").unwrap();
    converge(&p.a, &p.b, &p.folder, da, db).await;

    std::fs::write(da.join("plan.txt"), b"the laptop's edit").unwrap();
    p.a.rescan(&p.folder).await.unwrap();
    p.a.sync_now().await.unwrap();
    // The desktop deletes the file and writes another, whose reading is the moment the
    // laptop's edit arrives (after the pass has read the feed).
    std::fs::remove_file(db.join("plan.txt")).unwrap();
    std::fs::write(db.join("notes.txt"), b"notes").unwrap();
    rescan_syncing_as_it_reads(&p.b, &p.folder, db, "notes.txt").await;
    converge(&p.a, &p.b, &p.folder, da, db).await;
    for root in [da, db] {
        let files = snapshot(root);
        assert_eq!(
            files.get("plan.txt"),
            Some(&Some(b"the laptop's edit".to_vec())),
            "{files:?}"
        );
        assert_eq!(files.get("notes.txt"), Some(&Some(b"notes".to_vec())));
    }
}

/// Why: two conflicts on one file within the same second lost the first local edit: copy
/// names had one-second resolution and the second copy replaced the first. Both devices'
/// clocks stand still here, so every copy is made in the same second; copies are named by the
/// device's display name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_copies_in_the_same_second_never_replace_each_other() {
    let hub = InProcessHub::new();
    let frozen = || mesh_core::time::Timestamp::from_unix(1_800_000_000).unwrap();
    let dev = |id: &str, name: &str| {
        builder("ann", id)
            .device_name(name, "laptop")
            .clock(frozen)
            .remote("hub".parse().unwrap(), hub.connect("ann".parse().unwrap()))
            .sync_options(manual())
            .build()
    };
    let a = dev("laptop", "Ann's laptop").await.unwrap();
    let b = dev("desktop", "Ann's desktop").await.unwrap();
    let folder = a
        .create_folder("Docs", "files".parse().unwrap())
        .await
        .unwrap()
        .id;
    settle(&[&a, &b]).await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (da, db) = (da.path(), db.path());
    a.map_folder_with(&folder, da, quiet_mapping())
        .await
        .unwrap();
    b.map_folder_with(&folder, db, quiet_mapping())
        .await
        .unwrap();
    std::fs::write(da.join("plan.txt"), b"v1").unwrap();
    converge(&a, &b, &folder, da, db).await;
    let mut written = Vec::new();
    for round in 0..3 {
        let (ea, eb) = (format!("laptop {round}"), format!("desktop {round}"));
        std::fs::write(da.join("plan.txt"), &ea).unwrap();
        std::fs::write(db.join("plan.txt"), &eb).unwrap();
        a.rescan(&folder).await.unwrap();
        b.rescan(&folder).await.unwrap();
        converge(&a, &b, &folder, da, db).await;
        written.push(ea);
        written.push(eb);
    }
    // Every edit is there but the ones a later round overwrote knowingly (each round's winner,
    // which both devices had seen when they edited it again).
    let contents: Vec<String> = snapshot(da)
        .into_values()
        .flatten()
        .map(|c| String::from_utf8(c).unwrap())
        .collect();
    assert_eq!(contents.len(), 4, "{:?}", snapshot(da).keys());
    let copies = conflict_copies(da);
    assert_eq!(copies.len(), 3, "{copies:?}");
    assert!(
        copies
            .iter()
            .all(|c| c.contains("Ann_s_laptop") || c.contains("Ann_s_desktop")),
        "{copies:?}"
    );
    let main = std::fs::read_to_string(da.join("plan.txt")).unwrap();
    assert!(main.ends_with(" 2"), "{main}");
    for c in &contents {
        assert!(written.contains(c), "{c}");
    }
}

/// Swaps the directory `dir` (inside a mapped root) for a symbolic link to `outside`, keeping
/// the real directory as `<dir>.real`. The swap is one atomic exchange, as an attacker would
/// make it: with a rename and then a link, another writer thread of the mapping could find
/// `dir` missing in between and create it again (a directory inside the root: harmless, but
/// then there is nothing to swap).
#[cfg(unix)]
fn swap_for_symlink(dir: &Path, outside: &Path) {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    // Hooks run on the mapping's writer threads, several at once: one swap at a time.
    static SWAP: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = SWAP.lock().unwrap_or_else(|p| p.into_inner());
    let real = dir.with_extension("real");
    if dir.is_symlink() || real.exists() {
        return;
    }
    let link = dir.with_extension("link");
    std::os::unix::fs::symlink(outside, &link).unwrap();
    renameat_with(CWD, &link, CWD, dir, RenameFlags::EXCHANGE).unwrap();
    // `link` now names the real directory.
    std::fs::rename(&link, &real).unwrap();
}

/// Why: path checks and the later open or rename were separate steps, so a process swapping a
/// directory for a symbolic link in between had files written outside the root and an
/// outside secret published. The swap is made at the worst moment, by hooks: after the
/// checks, just before the temporary file is written, and just before a local file is read.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_swapped_for_a_symlink_never_leads_outside() {
    let p = pair().await;
    let (da, db) = (p.da.path(), p.db.path());
    let outside = tempfile::tempdir().unwrap();
    let out = outside.path().to_path_buf();
    std::fs::write(out.join("secret.txt"), b"outside secret!").unwrap();
    std::fs::write(out.join("doc.txt"), b"outside doc").unwrap();
    std::fs::create_dir(da.join("docs")).unwrap();
    std::fs::write(da.join("docs/doc.txt"), b"v1").unwrap();
    converge(&p.a, &p.b, &p.folder, da, db).await;

    // Writes: the remote version of docs/doc.txt arrives; docs is swapped just before it is
    // written.
    std::fs::write(db.join("docs/doc.txt"), b"remote version").unwrap();
    std::fs::write(db.join("docs/new.txt"), b"a new file").unwrap();
    let o = out.clone();
    faults::set_hook(da, move |moment, target| {
        if moment == faults::Moment::Write {
            swap_for_symlink(target.parent().unwrap(), &o);
        }
    });
    push(&p.b, &p.a, &p.folder).await;
    faults::clear_hooks(da);
    assert_eq!(std::fs::read(out.join("doc.txt")).unwrap(), b"outside doc");
    assert!(!out.join("new.txt").exists());
    let mut outside_names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    outside_names.sort();
    assert_eq!(outside_names, vec!["doc.txt", "secret.txt"]);
    std::fs::remove_file(da.join("docs")).unwrap();
    std::fs::rename(da.join("docs.real"), da.join("docs")).unwrap();
    converge(&p.a, &p.b, &p.folder, da, db).await;

    // Reads: a local file is edited; its directory is swapped for a link to a directory
    // holding a file of the same name and size just before it is read.
    std::fs::write(da.join("docs/secret.txt"), b"inside secret!!").unwrap();
    let o = out.clone();
    faults::set_hook(da, move |moment, target| {
        if moment == faults::Moment::Read && target.ends_with("secret.txt") {
            swap_for_symlink(target.parent().unwrap(), &o);
        }
    });
    push(&p.a, &p.b, &p.folder).await;
    faults::clear_hooks(da);
    assert_ne!(
        std::fs::read(db.join("docs/secret.txt")).ok().as_deref(),
        Some(&b"outside secret!"[..]),
        "an outside file was published"
    );
}

/// Why: a same-size in-place rewrite during a scan published torn contents. A hook rewrites
/// the first half of the file just before it is read (a writer part way through); the
/// mapping must not publish what it read, and publishes the finished file later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rewritten_while_read_is_not_published_torn() {
    let p = pair().await;
    let (da, db) = (p.da.path(), p.db.path());
    std::fs::write(da.join("data.bin"), vec![b'a'; 4000]).unwrap();
    converge(&p.a, &p.b, &p.folder, da, db).await;

    std::fs::write(da.join("data.bin"), vec![b'b'; 4000]).unwrap();
    faults::set_hook(da, |moment, target| {
        if moment == faults::Moment::Read && target.ends_with("data.bin") {
            use std::io::{Seek, Write};
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(target)
                .unwrap();
            f.seek(std::io::SeekFrom::Start(0)).unwrap();
            f.write_all(&[b'c'; 2000]).unwrap();
        }
    });
    push(&p.a, &p.b, &p.folder).await;
    faults::clear_hooks(da);
    let seen = std::fs::read(db.join("data.bin")).unwrap();
    assert!(
        seen == vec![b'a'; 4000] || seen == vec![b'b'; 4000],
        "torn contents were published"
    );
    // The writer finishes; the finished file is published.
    std::fs::write(da.join("data.bin"), vec![b'c'; 4000]).unwrap();
    converge(&p.a, &p.b, &p.folder, da, db).await;
    assert_eq!(
        std::fs::read(db.join("data.bin")).unwrap(),
        vec![b'c'; 4000]
    );
}

/// Bulk deletions are published in batches (one transaction per 1,000 tombstones) and all
/// reach the other device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_deletions_are_published_together() {
    let p = pair().await;
    let (da, db) = (p.da.path(), p.db.path());
    std::fs::create_dir(da.join("many")).unwrap();
    for i in 0..1500 {
        std::fs::write(da.join(format!("many/{i}.txt")), format!("{i}")).unwrap();
    }
    std::fs::write(da.join("kept.txt"), b"kept").unwrap();
    converge(&p.a, &p.b, &p.folder, da, db).await;
    assert_eq!(files(db).len(), 1501);
    std::fs::remove_dir_all(da.join("many")).unwrap();
    push(&p.a, &p.b, &p.folder).await;
    assert_eq!(files(db), vec!["kept.txt".to_string()]);
    assert!(!db.join("many").exists());
}

/// Why: a case-only rename (`Foo.txt` → `foo.txt`) split the file for good: the other device
/// kept `Foo.txt`, and neither side's edits reached the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_only_rename_is_a_rename_on_every_device() {
    let p = pair().await;
    let (da, db) = (p.da.path(), p.db.path());
    std::fs::create_dir(da.join("Notes")).unwrap();
    std::fs::write(da.join("Foo.txt"), b"v1").unwrap();
    std::fs::write(da.join("Notes/Plan.txt"), b"plan").unwrap();
    converge(&p.a, &p.b, &p.folder, da, db).await;

    std::fs::rename(da.join("Foo.txt"), da.join("foo.txt")).unwrap();
    std::fs::rename(da.join("Notes"), da.join("notes")).unwrap();
    converge(&p.a, &p.b, &p.folder, da, db).await;
    assert_eq!(files(db), vec!["foo.txt", "notes/Plan.txt"]);

    // Edits cross both ways under the new name.
    std::fs::write(db.join("foo.txt"), b"edited on the desktop").unwrap();
    converge(&p.a, &p.b, &p.folder, da, db).await;
    assert_eq!(
        std::fs::read(da.join("foo.txt")).unwrap(),
        b"edited on the desktop"
    );
    std::fs::write(da.join("notes/Plan.txt"), b"edited on the laptop").unwrap();
    converge(&p.a, &p.b, &p.folder, da, db).await;
    assert_eq!(
        std::fs::read(db.join("notes/Plan.txt")).unwrap(),
        b"edited on the laptop"
    );
    assert!(conflict_copies(da).is_empty());
}

/// Why: two devices creating `Report.txt` and `report.txt` never converged (each refused the
/// other's name). They are one path: one name wins, the other content is a conflict copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_differing_only_in_case_converge() {
    let p = pair().await;
    let (da, db) = (p.da.path(), p.db.path());
    std::fs::write(da.join("Report.txt"), b"the laptop's report").unwrap();
    std::fs::write(db.join("report.txt"), b"the desktop's report").unwrap();
    p.a.rescan(&p.folder).await.unwrap();
    p.b.rescan(&p.folder).await.unwrap();
    converge(&p.a, &p.b, &p.folder, da, db).await;
    let mut contents: Vec<Vec<u8>> = snapshot(da).into_values().flatten().collect();
    contents.sort();
    assert_eq!(
        contents,
        vec![
            b"the desktop's report".to_vec(),
            b"the laptop's report".to_vec()
        ]
    );
    assert_eq!(conflict_copies(da).len(), 1);
}

/// Three devices holding `plan.txt`, each of which then edits it (`edit <n>`) and publishes
/// before any hears of the others; all synced, no pass run since.
async fn three_edits_of_one_file() -> crate::mapping::Trio {
    let t = trio().await;
    std::fs::write(t.dir(0).join("plan.txt"), b"v1").unwrap();
    t.converge().await;
    for (n, (c, d)) in t.devices.iter().enumerate() {
        std::fs::write(d.path().join("plan.txt"), format!("edit {n}")).unwrap();
        c.rescan(&t.folder).await.unwrap();
    }
    settle(&t.clients()).await;
    t
}

/// Why: when three devices edited one file at once, the first device whose version lost
/// resolved the entry to the winner, and so also resolved away the third device's version,
/// which that device had not yet kept as a conflict copy: the third device then took the
/// resolution as a plain remote edit and wrote over its file. Every edit must survive, as
/// the file or as a conflict copy, on every device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_devices_editing_one_file_at_once_lose_no_edit() {
    let t = three_edits_of_one_file().await;
    t.converge().await;
    t.assert_contents(&["edit 0", "edit 1", "edit 2"]);
}

/// The same loss, as a race: a version that arrives while the pass that keeps this device's
/// losing version works is not folded away unseen. The laptop and the desktop edit at once;
/// as the loser's pass writes the winner, a sync brings the tablet's two edits (the second
/// wins, being later in its own history), which no device has kept yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_arrives_as_a_loss_is_kept_is_not_folded_away() {
    let t = trio().await;
    std::fs::write(t.dir(0).join("plan.txt"), b"v1").unwrap();
    t.converge().await;
    let (laptop, desktop, tablet) = (&t.devices[0].0, &t.devices[1].0, &t.devices[2].0);
    for (n, c) in [laptop, desktop].into_iter().enumerate() {
        std::fs::write(t.dir(n).join("plan.txt"), format!("edit {n}")).unwrap();
        c.rescan(&t.folder).await.unwrap();
    }
    settle(&[laptop, desktop]).await;
    let conflicted = laptop.conflicts(&t.folder).await.unwrap();
    assert_eq!(conflicted.len(), 1);
    let winner = conflicted[0].1.sync.topmost().unwrap().by.clone().unwrap();
    let loser = if winner == *laptop.device() { 1 } else { 0 };

    for edit in ["tablet a", "tablet b"] {
        std::fs::write(t.dir(2).join("plan.txt"), edit).unwrap();
        tablet.rescan(&t.folder).await.unwrap();
    }
    tablet.sync_now().await.unwrap();

    let (c, root) = (&t.devices[loser].0, t.dir(loser));
    rescan_syncing_at(c, &t.folder, root, faults::Moment::Write, "plan.txt").await;

    t.converge().await;
    t.assert_contents(&["edit 0", "edit 1", "tablet b"]);
    assert!(laptop.conflicts(&t.folder).await.unwrap().is_empty());
}

/// An edit beats a deletion, and a second edit made at the same time survives too: the
/// device that brings its edit back does not fold the other device's edit away with the
/// deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edits_beat_a_deletion_and_both_survive() {
    let t = trio().await;
    std::fs::write(t.dir(0).join("plan.txt"), b"v1").unwrap();
    t.converge().await;
    for n in [1, 2] {
        std::fs::write(t.dir(n).join("plan.txt"), format!("edit {n}")).unwrap();
        t.devices[n].0.rescan(&t.folder).await.unwrap();
    }
    // The deletion is the latest update: it wins the entry over both edits.
    std::fs::remove_file(t.dir(0).join("plan.txt")).unwrap();
    t.devices[0].0.rescan(&t.folder).await.unwrap();
    settle(&t.clients()).await;
    let conflicted = t.devices[0].0.conflicts(&t.folder).await.unwrap();
    assert!(
        conflicted.len() == 1 && conflicted[0].1.is_deleted(),
        "the deletion wins: {conflicted:?}"
    );
    t.converge().await;
    t.assert_contents(&["edit 1", "edit 2"]);
    assert!(t.devices[0]
        .0
        .conflicts(&t.folder)
        .await
        .unwrap()
        .is_empty());
}

/// Two devices acknowledging their losses at the same time write two concurrent versions of
/// the winner's content; the one that loses that conflict has nothing to keep (its file
/// already holds the winner), so no conflict copy of the winner's content is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_acknowledgements_make_no_spurious_conflict_copy() {
    let t = three_edits_of_one_file().await;
    // Both losers keep their copies and acknowledge before either hears of the other.
    for (c, _) in &t.devices {
        c.rescan(&t.folder).await.unwrap();
    }
    t.converge().await;
    t.assert_contents(&["edit 0", "edit 1", "edit 2"]);
}

/// Why: two devices acknowledged their losses to the laptop's edit (updates keeping its
/// content), and meanwhile the laptop edited the file again. Its new edit beat both
/// acknowledgements, and each device kept its acknowledgement, a copy of the laptop's old
/// content, as a conflict copy: twice the content the laptop itself had replaced. An
/// acknowledgement that loses to a winner whose history covers the version it acknowledged
/// leaves nothing to keep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_overtaken_by_the_winners_next_edit_makes_no_conflict_copy() {
    let t = trio().await;
    let (laptop, desktop, tablet) = (&t.devices[0].0, &t.devices[1].0, &t.devices[2].0);
    for (n, text) in [(1, "desktop 1"), (0, "laptop 1"), (2, "tablet 1")] {
        std::fs::write(t.dir(n).join("plan.txt"), text).unwrap();
    }
    for c in [laptop, tablet] {
        c.rescan(&t.folder).await.unwrap();
        c.sync_now().await.unwrap();
    }
    std::fs::write(t.dir(0).join("plan.txt"), "laptop 2").unwrap();
    for _ in 0..2 {
        desktop.rescan(&t.folder).await.unwrap();
        desktop.sync_now().await.unwrap();
    }
    tablet.rescan(&t.folder).await.unwrap();
    t.converge().await;
    // "laptop 1" was replaced by the laptop itself.
    t.assert_contents(&["desktop 1", "laptop 2", "tablet 1"]);
}

/// The other side of the rule above: an acknowledgement that loses to an edit whose writer
/// never saw the acknowledged content is kept as a conflict copy, since it may be the last
/// version holding that content. The laptop and the desktop edit at once, and the loser
/// acknowledges the winner (the winner's own version is then only history). The tablet,
/// having heard of neither, had edited three times: its version has more updates and beats
/// the acknowledgement. The winner's content must survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_beaten_by_an_edit_that_never_saw_it_is_kept() {
    let t = trio().await;
    let (laptop, desktop, tablet) = (&t.devices[0].0, &t.devices[1].0, &t.devices[2].0);
    for text in ["tablet 1", "tablet 2", "tablet 3"] {
        std::fs::write(t.dir(2).join("plan.txt"), text).unwrap();
        tablet.rescan(&t.folder).await.unwrap();
    }
    for (n, text) in [(0, "laptop"), (1, "desktop")] {
        std::fs::write(t.dir(n).join("plan.txt"), text).unwrap();
        t.devices[n].0.rescan(&t.folder).await.unwrap();
    }
    settle(&[laptop, desktop]).await;
    // The loser keeps its copy, writes the winner and acknowledges it.
    for _ in 0..2 {
        for c in [laptop, desktop] {
            c.rescan(&t.folder).await.unwrap();
        }
        settle(&[laptop, desktop]).await;
    }
    assert!(laptop.conflicts(&t.folder).await.unwrap().is_empty());
    t.converge().await;
    t.assert_contents(&["desktop", "laptop", "tablet 3"]);
}

/// Why: an edit that beats a deletion is brought back by its device with an update of its
/// own; written over a version that arrived after the pass read the feed, it would supersede
/// that version unseen. Here the laptop's deletion wins over the desktop's edit; the laptop
/// then writes the file anew, and that version arrives as the desktop's pass starts to bring
/// its edit back (a sync at [`faults::Moment::Plan`]). Both contents survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bringing_an_edit_back_never_overwrites_a_version_unseen() {
    let p = pair().await;
    let (da, db) = (p.da.path(), p.db.path());
    std::fs::write(da.join("plan.txt"), b"v1").unwrap();
    converge(&p.a, &p.b, &p.folder, da, db).await;
    std::fs::write(db.join("plan.txt"), b"the desktop's edit").unwrap();
    p.b.rescan(&p.folder).await.unwrap();
    // The deletion is the later update: it wins.
    std::fs::remove_file(da.join("plan.txt")).unwrap();
    p.a.rescan(&p.folder).await.unwrap();
    settle(&[&p.a, &p.b]).await;
    let conflicted = p.b.conflicts(&p.folder).await.unwrap();
    assert!(
        conflicted.len() == 1 && conflicted[0].1.is_deleted(),
        "the deletion wins: {conflicted:?}"
    );
    std::fs::write(da.join("plan.txt"), b"the laptop's new").unwrap();
    p.a.rescan(&p.folder).await.unwrap();
    p.a.sync_now().await.unwrap();

    rescan_syncing_at(&p.b, &p.folder, db, faults::Moment::Plan, "").await;
    converge(&p.a, &p.b, &p.folder, da, db).await;
    assert_both_hold(da, db, &[b"the desktop's edit", b"the laptop's new"]);
}

/// Set in the child process that runs a test under a low limit on inotify watches.
const LOW_WATCH_LIMIT: &str = "MESH_TEST_LOW_WATCH_LIMIT";

/// In the test process: runs the test `name` again in a child process (this test binary, in a
/// user namespace of its own whose limit on inotify watches is `limit`), checks that it
/// passed, and returns `false`. In that child: returns `true`, and the caller does the work.
/// Where user namespaces are not allowed, says so and skips (with `MESH_REQUIRE_USERNS` set,
/// as `.ci/run` does, fails).
fn under_watch_limit(name: &str, limit: u32) -> bool {
    if std::env::var_os(LOW_WATCH_LIMIT).is_some() {
        return true;
    }
    let allowed = std::process::Command::new("unshare")
        .args(["-U", "-r", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !allowed {
        assert!(
            std::env::var_os("MESH_REQUIRE_USERNS").is_none(),
            "MESH_REQUIRE_USERNS is set: `unshare -U -r` must work"
        );
        eprintln!("SKIPPED {name}: no user namespaces here (`unshare -U -r` failed)");
        return false;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new("unshare")
        .args(["-U", "-r", "sh", "-c"])
        .arg(format!(
            r#"echo {limit} > /proc/sys/user/max_inotify_watches && exec "$0" "$@""#
        ))
        .arg(exe)
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env(LOW_WATCH_LIMIT, "1")
        .output()
        .expect("unshare runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "the test did not run: {text}");
    false
}

/// A watched mapping of a directory holding `n` subdirectories of one file each, and the
/// device's events.
async fn watched_tree(
    n: usize,
) -> (
    MeshClient,
    FolderId,
    tempfile::TempDir,
    futures::stream::BoxStream<'static, Event>,
) {
    let (a, folder) = one_device().await;
    let da = tempfile::tempdir().unwrap();
    for i in 0..n {
        std::fs::create_dir(da.path().join(format!("d{i}"))).unwrap();
        std::fs::write(da.path().join(format!("d{i}/f.txt")), format!("{i}")).unwrap();
    }
    let watched = MappingOptions::default()
        .with_debounce(Duration::from_millis(20))
        .with_rescan_interval(Duration::from_secs(3600))
        .with_follow_remote(false);
    let events = a.events().boxed();
    a.map_folder_with(&folder, da.path(), watched)
        .await
        .unwrap();
    (a, folder, da, events)
}

fn told_the_limit(e: &Event) -> Option<String> {
    match e {
        Event::Mapping {
            event: MappingEvent::Error { error },
            ..
        } if error.contains("limit on watched directories") => Some(error.clone()),
        _ => None,
    }
}

fn scanned(e: &Event) -> Option<usize> {
    match e {
        Event::Mapping {
            event: MappingEvent::Scanned { paths, .. },
            ..
        } => Some(*paths),
        _ => None,
    }
}

/// Why: an error of the watch (here the system's limit on watched directories, reached by
/// directories made after the mapping started) was dropped unseen, and no pass looked at what
/// the watch stopped seeing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_made_past_the_watch_limit_are_told_and_scanned() {
    if !under_watch_limit(
        "mapping_safety::directories_made_past_the_watch_limit_are_told_and_scanned",
        6,
    ) {
        return;
    }
    let (a, folder, da, mut events) = watched_tree(2).await;
    // The first pass: two directories with a file each.
    assert_eq!(wait_for(&mut events, scanned).await, 4);
    for i in 2..12 {
        std::fs::create_dir(da.path().join(format!("d{i}"))).unwrap();
        std::fs::write(da.path().join(format!("d{i}/f.txt")), format!("{i}")).unwrap();
    }
    wait_for(&mut events, told_the_limit).await;
    // A pass after the error sees (and publishes) every directory made, watched or not.
    while wait_for(&mut events, scanned).await < 24 {}
    drop((a, folder));
}

/// Why: a tree with more directories than the limit on watches at start lost the whole watch
/// (the part set up was dropped with the error), so even the root's changes waited for the
/// periodic rescan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_past_the_watch_limit_is_told_and_watched_in_part() {
    if !under_watch_limit(
        "mapping_safety::a_tree_past_the_watch_limit_is_told_and_watched_in_part",
        6,
    ) {
        return;
    }
    let (a, folder, da, mut events) = watched_tree(12).await;
    wait_for(&mut events, told_the_limit).await;
    assert_eq!(wait_for(&mut events, scanned).await, 24);
    // The root was watched first: a change there starts a pass by itself.
    std::fs::write(da.path().join("top.txt"), b"new").unwrap();
    assert_eq!(wait_for(&mut events, scanned).await, 25);
    drop((a, folder));
}

/// Why: a mapping hears of remote changes through a broadcast of every change of the replica
/// (1,024 kept). While a pass ran, more than that went by (an application writing entries
/// one by one), the folder's own change was dropped with them, and the mapping took the
/// "missed some" answer for nothing to do: the remote file waited for the periodic rescan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_changes_missed_in_a_flood_of_others_still_start_a_pass() {
    // Passes for remote changes only on the desktop (no watch; no periodic rescan within the
    // test).
    let following = MappingOptions::default()
        .with_watch(false)
        .with_rescan_interval(Duration::from_secs(3600));
    let p = crate::mapping::pair_with(following).await;
    let (a, b, folder, da, db) = (&p.a, &p.b, &p.folder, &p.da, &p.db);
    // (The mapping's first pass is over once this one is.)
    b.rescan(folder).await.unwrap();
    let mut events = b.events().boxed();
    // While B's next pass runs: A publishes a file, B syncs it in, then B writes 1,100 entries of
    // another feed, one by one.
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (a2, b2, f2, da2, once) = (
        a.clone(),
        b.clone(),
        folder.clone(),
        da.path().to_owned(),
        ran.clone(),
    );
    let runtime = tokio::runtime::Handle::current();
    faults::set_hook(db.path(), move |moment, _| {
        if moment != faults::Moment::Plan || once.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let (a, b, folder, da, runtime) = (
            a2.clone(),
            b2.clone(),
            f2.clone(),
            da2.clone(),
            runtime.clone(),
        );
        std::thread::spawn(move || {
            runtime.block_on(async {
                std::fs::write(da.join("late.txt"), b"arrived during the pass").unwrap();
                a.rescan(&folder).await.unwrap();
                a.sync_now().await.unwrap();
                b.sync_now().await.unwrap();
                let notes: mesh_core::id::FeedName = "notes".parse().unwrap();
                for i in 0..1_100 {
                    let draft = mesh_core::model::EntryDraft::new(
                        format!("note {i}"),
                        serde_json::json!(i),
                    );
                    b.put(&folder, &notes, draft).await.unwrap();
                }
            })
        })
        .join()
        .unwrap();
    });
    b.rescan(folder).await.unwrap();
    faults::clear_hooks(db.path());
    assert!(
        ran.load(std::sync::atomic::Ordering::SeqCst),
        "the hook ran"
    );
    assert!(
        !db.path().join("late.txt").exists(),
        "the pass read the feed before"
    );
    // The next pass comes by itself.
    wait_for(&mut events, |e| match e {
        Event::Mapping {
            event: MappingEvent::Applied { path, .. },
            ..
        } if path == "late.txt" => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(
        std::fs::read(db.path().join("late.txt")).unwrap(),
        b"arrived during the pass"
    );
}

/// Why: the watch was set up once, when the mapping started, and a watch follows the
/// directory it was set on. A root put back from a copy (the same marker, another directory)
/// resumed the mapping, but its changes waited for the periodic rescan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_put_back_from_a_copy_is_watched_again() {
    let (a, folder) = one_device().await;
    let parent = tempfile::tempdir().unwrap();
    let da = parent.path().join("Docs");
    std::fs::create_dir(&da).unwrap();
    std::fs::write(da.join("kept.txt"), b"kept").unwrap();
    let watched = MappingOptions::default()
        .with_debounce(Duration::from_millis(20))
        .with_rescan_interval(Duration::from_secs(3600))
        .with_follow_remote(false);
    a.map_folder_with(&folder, &da, watched).await.unwrap();
    a.rescan(&folder).await.unwrap();
    // Moved away, and a copy put in its place (marker included).
    let old = parent.path().join("Docs.old");
    std::fs::rename(&da, &old).unwrap();
    std::fs::create_dir(&da).unwrap();
    for name in ["kept.txt", mesh_client::mapping::MARKER_FILE] {
        std::fs::copy(old.join(name), da.join(name)).unwrap();
    }
    // The first rescan finds the copy (the mapping resumes if a pass paused it meanwhile);
    // the second is answered only after the mapping has looked at its watch again.
    a.rescan(&folder).await.unwrap();
    a.rescan(&folder).await.unwrap();
    let mut events = a.events().boxed();
    std::fs::write(da.join("new.txt"), b"new").unwrap();
    // A pass comes by itself and sees the new file.
    wait_for(&mut events, |e| scanned(e).filter(|&paths| paths == 2)).await;
}
