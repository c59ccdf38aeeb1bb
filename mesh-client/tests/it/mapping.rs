//! Mapped directories: publish, apply, conflicts, deletions, renames, ignore rules, hostile
//! entries, interrupted downloads, and convergence under random file operations.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use mesh_client::mapping::MappingOptions;
use mesh_client::transport::{InProcessHub, Transport};
use mesh_client::{Event, MappingEvent, MeshClient, SyncOptions};
use mesh_core::id::FolderId;
use mesh_core::model::EntryDraft;
use proptest::prelude::*;

use crate::common::{builder, settle};

pub(crate) fn manual() -> SyncOptions {
    SyncOptions::default().with_auto(false)
}

pub(crate) fn quiet_mapping() -> MappingOptions {
    MappingOptions::default()
        .with_watch(false)
        .with_follow_remote(false)
}

pub(crate) async fn device(hub: &InProcessHub, name: &str) -> MeshClient {
    builder("ann", name)
        .remote("hub".parse().unwrap(), hub.connect("ann".parse().unwrap()))
        .sync_options(manual())
        .build()
        .await
        .unwrap()
}

/// One device ("laptop") of a new hub, with a new folder of files ("Docs").
pub(crate) async fn one_device() -> (MeshClient, FolderId) {
    let hub = InProcessHub::new();
    let a = device(&hub, "laptop").await;
    let folder = a
        .create_folder("Docs", "files".parse().unwrap())
        .await
        .unwrap()
        .id;
    (a, folder)
}

/// Deterministic pseudo-random bytes (xorshift): no repeats for the chunker to deduplicate.
pub(crate) fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// Relative path → content (`None` for a directory), skipping only the mapping's marker.
pub(crate) fn snapshot(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let ft = e.file_type().unwrap();
            if rel == mesh_client::mapping::MARKER_FILE {
                continue;
            }
            if ft.is_dir() {
                out.insert(rel, None);
                stack.push(p);
            } else if ft.is_file() {
                out.insert(rel, Some(std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

/// Rescans and syncs both devices until their directories agree and stay so.
pub(crate) async fn converge(
    a: &MeshClient,
    b: &MeshClient,
    folder: &FolderId,
    da: &Path,
    db: &Path,
) {
    let mut stable = 0;
    for _ in 0..20 {
        a.rescan(folder).await.unwrap();
        settle(&[a, b]).await;
        b.rescan(folder).await.unwrap();
        settle(&[a, b]).await;
        a.rescan(folder).await.unwrap();
        if snapshot(da) == snapshot(db) {
            stable += 1;
            if stable == 2 {
                return;
            }
        } else {
            stable = 0;
        }
    }
    panic!(
        "directories did not converge:\nA: {:?}\nB: {:?}",
        snapshot(da).keys().collect::<Vec<_>>(),
        snapshot(db).keys().collect::<Vec<_>>()
    );
}

pub(crate) struct Pair {
    pub _hub: InProcessHub,
    pub a: MeshClient,
    pub b: MeshClient,
    pub folder: FolderId,
    pub da: tempfile::TempDir,
    pub db: tempfile::TempDir,
}

pub(crate) async fn pair() -> Pair {
    pair_with(quiet_mapping()).await
}

/// A [`pair`] whose desktop maps its directory with `b_options`.
pub(crate) async fn pair_with(b_options: MappingOptions) -> Pair {
    let hub = InProcessHub::new();
    let a = device(&hub, "laptop").await;
    let b = device(&hub, "desktop").await;
    let folder = a
        .create_folder("Docs", "files".parse().unwrap())
        .await
        .unwrap()
        .id;
    settle(&[&a, &b]).await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    a.map_folder_with(&folder, da.path(), quiet_mapping())
        .await
        .unwrap();
    b.map_folder_with(&folder, db.path(), b_options)
        .await
        .unwrap();
    Pair {
        _hub: hub,
        a,
        b,
        folder,
        da,
        db,
    }
}

/// Three devices mapping one folder, each with its directory.
pub(crate) struct Trio {
    _hub: InProcessHub,
    pub(crate) devices: Vec<(MeshClient, tempfile::TempDir)>,
    pub(crate) folder: FolderId,
}

pub(crate) async fn trio() -> Trio {
    let hub = InProcessHub::new();
    let mut devices = Vec::new();
    for name in ["laptop", "desktop", "tablet"] {
        devices.push((device(&hub, name).await, tempfile::tempdir().unwrap()));
    }
    let folder = devices[0]
        .0
        .create_folder("Docs", "files".parse().unwrap())
        .await
        .unwrap()
        .id;
    let clients: Vec<&MeshClient> = devices.iter().map(|(c, _)| c).collect();
    settle(&clients).await;
    for (c, d) in &devices {
        c.map_folder_with(&folder, d.path(), quiet_mapping())
            .await
            .unwrap();
    }
    Trio {
        _hub: hub,
        devices,
        folder,
    }
}

impl Trio {
    pub(crate) fn clients(&self) -> Vec<&MeshClient> {
        self.devices.iter().map(|(c, _)| c).collect()
    }

    pub(crate) fn dir(&self, n: usize) -> &Path {
        self.devices[n].1.path()
    }

    /// Rescans and syncs every device in turn until all directories agree twice in a row.
    pub(crate) async fn converge(&self) {
        let mut stable = 0;
        for _ in 0..20 {
            for (c, _) in &self.devices {
                c.rescan(&self.folder).await.unwrap();
                settle(&self.clients()).await;
            }
            let first = snapshot(self.dir(0));
            if (1..self.devices.len()).all(|n| snapshot(self.dir(n)) == first) {
                stable += 1;
                if stable == 2 {
                    return;
                }
            } else {
                stable = 0;
            }
        }
        panic!("directories did not converge");
    }

    /// Asserts that every device's directory holds exactly the files `want` (contents).
    pub(crate) fn assert_contents(&self, want: &[&str]) {
        for n in 0..self.devices.len() {
            assert_eq!(
                self.contents(n),
                want,
                "device {n}: {:?}",
                snapshot(self.dir(n)).keys()
            );
        }
    }

    /// Every file's content, sorted, on device `n`.
    fn contents(&self, n: usize) -> Vec<String> {
        let mut out: Vec<String> = snapshot(self.dir(n))
            .into_values()
            .flatten()
            .map(|c| String::from_utf8(c).unwrap())
            .collect();
        out.sort();
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_directories_edits_renames_and_deletions_reach_the_other_device() {
    let p = pair().await;
    let (da, db) = (p.da.path(), p.db.path());
    std::fs::create_dir_all(da.join("notes/empty")).unwrap();
    std::fs::write(da.join("notes/todo.txt"), b"milk").unwrap();
    let big = noise(1, 3_000_000);
    std::fs::write(da.join("big.bin"), &big).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(da.join("run.sh"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(da.join("run.sh"), std::fs::Permissions::from_mode(0o750))
            .unwrap();
    }
    converge(&p.a, &p.b, &p.folder, da, db).await;
    assert_eq!(std::fs::read(db.join("notes/todo.txt")).unwrap(), b"milk");
    assert!(db.join("notes/empty").is_dir());
    assert_eq!(std::fs::read(db.join("big.bin")).unwrap(), big);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(db.join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o750);
    }
    // The mtime travels too.
    let ma = std::fs::metadata(da.join("notes/todo.txt"))
        .unwrap()
        .modified()
        .unwrap();
    let mb = std::fs::metadata(db.join("notes/todo.txt"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(ma, mb);

    // Edit on B, rename and delete on A.
    std::fs::write(db.join("notes/todo.txt"), b"milk, eggs").unwrap();
    std::fs::rename(da.join("big.bin"), da.join("notes/big-renamed.bin")).unwrap();
    std::fs::remove_dir(da.join("notes/empty")).unwrap();
    let objects_before = p.b.blob_usage().await.unwrap().bytes;
    converge(&p.a, &p.b, &p.folder, da, db).await;
    assert_eq!(
        std::fs::read(da.join("notes/todo.txt")).unwrap(),
        b"milk, eggs"
    );
    assert!(!db.join("big.bin").exists());
    assert_eq!(
        std::fs::read(db.join("notes/big-renamed.bin")).unwrap(),
        big
    );
    assert!(!db.join("notes/empty").exists());
    // The rename moved no chunk: B's store grew by at most the edited file and a manifest.
    let grown = p.b.blob_usage().await.unwrap().bytes - objects_before;
    assert!(grown < 2_000, "the rename downloaded {grown} bytes");

    // Delete everything on B.
    std::fs::remove_dir_all(db.join("notes")).unwrap();
    std::fs::remove_file(db.join("run.sh")).unwrap();
    converge(&p.a, &p.b, &p.folder, da, db).await;
    assert!(snapshot(da).is_empty(), "{:?}", snapshot(da).keys());
}

/// An edit in the middle of a large file reaches the other device, whose copy of the version
/// before serves the chunks the two share (its writer copies them from it, checked): the
/// result is the edited file, byte for byte, and so is the one after a second edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_of_a_large_file_reach_the_other_device_built_on_its_copy() {
    let p = pair().await;
    let (da, db) = (p.da.path(), p.db.path());
    let mut big = noise(5, 3_000_000);
    std::fs::write(da.join("big.bin"), &big).unwrap();
    converge(&p.a, &p.b, &p.folder, da, db).await;
    for (round, at) in [(1u64, 1_200_000usize), (2, 40_000)] {
        big[at..at + 100_000].copy_from_slice(&noise(10 + round, 100_000));
        std::fs::write(da.join("big.bin"), &big).unwrap();
        converge(&p.a, &p.b, &p.folder, da, db).await;
        assert!(
            std::fs::read(db.join("big.bin")).unwrap() == big,
            "edit {round} differs on the other device"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_keep_both_versions_as_a_conflict_copy() {
    let p = pair().await;
    let (da, db) = (p.da.path(), p.db.path());
    std::fs::write(da.join("plan.txt"), b"v1").unwrap();
    converge(&p.a, &p.b, &p.folder, da, db).await;

    // Both edit offline, both publish, then sync.
    std::fs::write(da.join("plan.txt"), b"laptop edit").unwrap();
    std::fs::write(db.join("plan.txt"), b"desktop edit, longer").unwrap();
    p.a.rescan(&p.folder).await.unwrap();
    p.b.rescan(&p.folder).await.unwrap();
    let mut events = p.a.events().boxed();
    let mut events_b = p.b.events().boxed();
    converge(&p.a, &p.b, &p.folder, da, db).await;
    let snap = snapshot(da);
    let contents: Vec<&[u8]> = snap.values().flatten().map(|v| v.as_slice()).collect();
    assert_eq!(snap.len(), 2, "{:?}", snap.keys());
    assert!(contents.contains(&&b"laptop edit"[..]));
    assert!(contents.contains(&&b"desktop edit, longer"[..]));
    let copy = snap.keys().find(|k| k.contains("(conflict ")).unwrap();
    assert!(copy.starts_with("plan (conflict "), "{copy}");
    assert!(copy.ends_with(").txt"), "{copy}");
    // One device reported keeping the copy.
    let mut reported = false;
    for stream in [&mut events, &mut events_b] {
        while let Some(Some(e)) = futures::FutureExt::now_or_never(stream.next()) {
            if matches!(
                e,
                Event::Mapping {
                    event: MappingEvent::ConflictCopy { .. },
                    ..
                }
            ) {
                reported = true;
            }
        }
    }
    assert!(reported);
    // The entry's conflict was resolved.
    assert!(p.a.conflicts(&p.folder).await.unwrap().is_empty());

    // An edit beats a deletion.
    std::fs::remove_file(da.join("plan.txt")).unwrap();
    std::fs::write(db.join("plan.txt"), b"kept").unwrap();
    p.a.rescan(&p.folder).await.unwrap();
    p.b.rescan(&p.folder).await.unwrap();
    converge(&p.a, &p.b, &p.folder, da, db).await;
    assert_eq!(std::fs::read(da.join("plan.txt")).unwrap(), b"kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_rules_symlinks_and_unmap() {
    let p = pair().await;
    let (da, db) = (p.da.path(), p.db.path());
    std::fs::write(da.join(".meshignore"), b"*.tmp\nbuild/\n").unwrap();
    std::fs::write(da.join("keep.txt"), b"k").unwrap();
    std::fs::write(da.join("scratch.tmp"), b"t").unwrap();
    std::fs::create_dir(da.join("build")).unwrap();
    std::fs::write(da.join("build/out.o"), b"o").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("/etc", da.join("etc-link")).unwrap();
    for _ in 0..3 {
        p.a.rescan(&p.folder).await.unwrap();
        settle(&[&p.a, &p.b]).await;
        p.b.rescan(&p.folder).await.unwrap();
    }
    let snap = snapshot(db);
    assert!(snap.contains_key("keep.txt"));
    assert!(snap.contains_key(".meshignore"));
    assert!(!snap.contains_key("scratch.tmp"));
    assert!(!snap.keys().any(|k| k.starts_with("build")));
    assert!(!snap.keys().any(|k| k.starts_with("etc-link")));

    // Unmapping keeps every local file, and stops syncing.
    p.b.unmap_folder(&p.folder).await.unwrap();
    assert!(db.join("keep.txt").exists());
    assert!(p.b.rescan(&p.folder).await.is_err());
    std::fs::write(da.join("later.txt"), b"l").unwrap();
    p.a.rescan(&p.folder).await.unwrap();
    settle(&[&p.a, &p.b]).await;
    assert!(!db.join("later.txt").exists());
}

/// Hostile entries written straight into the folder's files feed by another member: each is
/// refused with an event, and nothing appears outside the mapped directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_paths_are_refused_and_nothing_is_written_outside() {
    let hub = InProcessHub::new();
    let mallory = builder("mallory", "evil")
        .remote(
            "hub".parse().unwrap(),
            hub.connect("mallory".parse().unwrap()),
        )
        .sync_options(manual())
        .build()
        .await
        .unwrap();
    let ann = device(&hub, "laptop").await;
    let folder = mallory
        .create_folder("Shared", "files".parse().unwrap())
        .await
        .unwrap()
        .id;
    mallory
        .invite(
            &folder,
            &"ann".parse().unwrap(),
            mesh_core::model::Role::Full,
        )
        .await
        .unwrap();
    settle(&[&mallory, &ann]).await;
    ann.accept(&folder).await.unwrap();
    settle(&[&mallory, &ann]).await;

    let outer = tempfile::tempdir().unwrap();
    let mapped = outer.path().join("mapped");
    std::fs::create_dir(&mapped).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(outer.path(), mapped.join("escape")).unwrap();
    let mut events = ann.events().boxed();
    ann.map_folder_with(&folder, &mapped, quiet_mapping())
        .await
        .unwrap();

    let media = mallory
        .put_blob(&folder, b"pwned".to_vec(), "text/plain")
        .await
        .unwrap();
    let files: mesh_core::id::FeedName = "files".parse().unwrap();
    let hostile = [
        "../outside.txt",
        "/tmp/absolute.txt",
        "a/../../outside2.txt",
        "a\\..\\..\\win.txt",
        "nul\u{0}byte.txt",
        "CON",
        "aux.txt",
        "C:/drive.txt",
        "escape/through-symlink.txt",
    ];
    for (i, path) in hostile.iter().enumerate() {
        let meta = serde_json::json!({
            "path": path, "kind": "file", "size": 5, "mtime_ns": 0, "mode": 420,
            "manifest": media.hash,
        });
        let mut d = EntryDraft::new("x", meta.clone());
        d.media = Some(media.clone());
        // The id of a valid path, so only the path check can refuse it…
        let id = match path.parse::<mesh_core::model::FilePath>() {
            Ok(p) => p.entry_id(),
            Err(_) => format!("hostile-{i}").parse().unwrap(),
        };
        mallory.put_with_id(&folder, &files, id, d).await.unwrap();
    }
    // …and a valid path under an id that is not its own (a case-collision attempt).
    let meta = serde_json::json!({"path": "Readme.txt", "kind": "file", "size": 5, "manifest": media.hash});
    let mut d = EntryDraft::new("x", meta);
    d.media = Some(media.clone());
    mallory
        .put_with_id(&folder, &files, "f-not-its-id".parse().unwrap(), d)
        .await
        .unwrap();
    // A case collision with a local file.
    std::fs::write(mapped.join("readme.TXT"), b"mine").unwrap();
    ann.rescan(&folder).await.unwrap();
    let meta = serde_json::json!({"path": "README.txt", "kind": "file", "size": 5, "manifest": media.hash});
    let mut d = EntryDraft::new("x", meta);
    d.media = Some(media.clone());
    let id = "README.txt"
        .parse::<mesh_core::model::FilePath>()
        .unwrap()
        .entry_id();
    // Mallory's version of the same (case-folded) id.
    let _ = mallory.put_with_id(&folder, &files, id, d).await;
    settle(&[&mallory, &ann]).await;
    ann.rescan(&folder).await.unwrap();

    let mut refused = Vec::new();
    while let Some(Some(e)) = futures::FutureExt::now_or_never(events.next()) {
        if let Event::Mapping {
            event: MappingEvent::Refused { path, .. },
            ..
        } = e
        {
            refused.push(path);
        }
    }
    for path in hostile {
        let shown = path.to_string();
        assert!(
            refused.iter().any(|r| r == &shown),
            "{path:?} not refused: {refused:?}"
        );
    }
    assert!(refused.iter().any(|r| r == "Readme.txt"), "{refused:?}");
    // Nothing outside the mapped directory.
    let outside: Vec<_> = std::fs::read_dir(outer.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(outside, vec![std::ffi::OsString::from("mapped")]);
    assert!(!Path::new("/tmp/absolute.txt").exists());
    // The remote version under a case-differing name is the same path: the local file is
    // renamed to its case and kept as a conflict copy, never lost.
    let inside = snapshot(&mapped);
    assert!(
        inside
            .iter()
            .any(|(k, v)| k.starts_with("README (conflict ") && v.as_deref() == Some(&b"mine"[..])),
        "{:?}",
        inside.keys()
    );
    assert!(!inside
        .keys()
        .any(|k| k.contains("pwned") || k.ends_with("drive.txt")));
}

/// A transport whose downloads break after a budget of objects.
struct Flaky {
    inner: Arc<dyn Transport>,
    budget: Arc<Mutex<usize>>,
}

#[async_trait::async_trait]
impl Transport for Flaky {
    async fn send(
        &self,
        r: mesh_core::sync::Request,
    ) -> Result<mesh_core::sync::Response, mesh_client::transport::TransportError> {
        self.inner.send(r).await
    }
    async fn watch(
        &self,
    ) -> Result<
        futures::stream::BoxStream<'static, mesh_client::transport::Notification>,
        mesh_client::transport::TransportError,
    > {
        self.inner.watch().await
    }
    fn describe(&self) -> String {
        "flaky".into()
    }
    async fn get_objects(
        &self,
        folder: &FolderId,
        hashes: &[mesh_core::blob::ChunkHash],
    ) -> Result<Vec<(mesh_core::blob::ChunkHash, Vec<u8>)>, mesh_client::transport::TransportError>
    {
        let allowed = {
            let mut b = self.budget.lock().unwrap();
            let n = (*b).min(hashes.len()).min(3);
            *b -= n;
            n
        };
        if allowed == 0 {
            return Err(mesh_client::transport::TransportError::Offline(
                "cut".into(),
            ));
        }
        self.inner.get_objects(folder, &hashes[..allowed]).await
    }
}

/// A download cut midway leaves no partial file visible (nor a temporary one after the next
/// start), and resumes without fetching again what it already has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_download_leaves_no_partial_file_and_resumes() {
    let hub = InProcessHub::new();
    let a = device(&hub, "laptop").await;
    let folder = a
        .create_folder("Docs", "files".parse().unwrap())
        .await
        .unwrap()
        .id;
    let budget = Arc::new(Mutex::new(6usize));
    let b = builder("ann", "desktop")
        .remote(
            "hub".parse().unwrap(),
            Flaky {
                inner: Arc::new(hub.connect("ann".parse().unwrap())),
                budget: budget.clone(),
            },
        )
        .sync_options(manual())
        .build()
        .await
        .unwrap();
    settle(&[&a, &b]).await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    a.map_folder_with(&folder, da.path(), quiet_mapping())
        .await
        .unwrap();
    b.map_folder_with(&folder, db.path(), quiet_mapping())
        .await
        .unwrap();
    let big = noise(2, 4_000_000);
    std::fs::write(da.path().join("video.bin"), &big).unwrap();
    a.rescan(&folder).await.unwrap();
    settle(&[&a, &b]).await;
    let mut transfers = b.events().boxed();
    b.rescan(&folder).await.unwrap();
    // Cut after 6 objects: nothing visible yet, no temporary file either.
    assert!(
        snapshot(db.path()).is_empty(),
        "{:?}",
        snapshot(db.path()).keys()
    );
    let stored_after_cut = b.blob_usage().await.unwrap().bytes;
    assert!(stored_after_cut > 0, "the first objects were kept");
    let mut progressed = false;
    while let Some(Some(e)) = futures::FutureExt::now_or_never(transfers.next()) {
        if let Event::Transfer {
            done_bytes,
            total_bytes,
            ..
        } = e
        {
            assert!(done_bytes <= total_bytes);
            progressed |= done_bytes > 0;
        }
    }
    assert!(progressed);
    // The link comes back: the rest arrives, and only the rest (a budget of exactly the
    // objects not yet fetched: fetching any again would leave the file incomplete).
    let chunks = mesh_client::store::blobs::chunk_in_memory(&big).len();
    *budget.lock().unwrap() = chunks + 1 - 6;
    b.rescan(&folder).await.unwrap();
    assert_eq!(std::fs::read(db.path().join("video.bin")).unwrap(), big);
    let total = b.blob_usage().await.unwrap().bytes;
    assert!(total < big.len() as u64 + 10_000);
}

#[derive(Debug, Clone)]
enum Op {
    Write(bool, u8, u8),
    Delete(bool, u8),
    Rename(bool, u8, u8),
    Mkdir(bool, u8),
    Sync,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 0u8..6, any::<u8>()).prop_map(|(s, f, c)| Op::Write(s, f, c)),
        2 => (any::<bool>(), 0u8..6).prop_map(|(s, f)| Op::Delete(s, f)),
        1 => (any::<bool>(), 0u8..6, 0u8..6).prop_map(|(s, f, t)| Op::Rename(s, f, t)),
        1 => (any::<bool>(), 0u8..3).prop_map(|(s, d)| Op::Mkdir(s, d)),
        2 => Just(Op::Sync),
    ]
}

fn file_name(f: u8) -> String {
    match f % 3 {
        0 => format!("f{f}.txt"),
        1 => format!("d{}/f{f}.txt", f % 2),
        _ => format!("d{}/sub/f{f}.dat", f % 2),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    /// Two mapped directories converge to the same tree, whatever files are written, deleted,
    /// renamed and made on both sides between syncs.
    #[test]
    fn two_mapped_directories_converge(ops in proptest::collection::vec(op(), 1..16)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let p = pair().await;
            let dirs = [p.da.path().to_path_buf(), p.db.path().to_path_buf()];
            for op in &ops {
                match op {
                    Op::Write(side, f, c) => {
                        let path = dirs[*side as usize].join(file_name(*f));
                        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                        let _ = std::fs::write(&path, vec![*c; 10 + *c as usize]);
                    }
                    Op::Delete(side, f) => {
                        let _ = std::fs::remove_file(dirs[*side as usize].join(file_name(*f)));
                    }
                    Op::Rename(side, f, t) => {
                        let to = dirs[*side as usize].join(file_name(*t));
                        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                        let _ = std::fs::rename(dirs[*side as usize].join(file_name(*f)), to);
                    }
                    Op::Mkdir(side, d) => {
                        let _ = std::fs::create_dir_all(dirs[*side as usize].join(format!("empty{d}")));
                    }
                    Op::Sync => {
                        p.a.rescan(&p.folder).await.unwrap();
                        p.b.rescan(&p.folder).await.unwrap();
                        settle(&[&p.a, &p.b]).await;
                    }
                }
            }
            converge(&p.a, &p.b, &p.folder, p.da.path(), p.db.path()).await;
        });
    }
}

/// Streaming a large input and chunking it whole in memory cut at the same boundaries.
#[test]
fn streamed_and_whole_chunking_agree() {
    let data = noise(9, 9_000_000);
    let store = mesh_client::store::BlobStore::memory();
    let folder: FolderId = "f".parse().unwrap();
    let streamed = store
        .ingest(&folder, data.as_slice(), data.len() as u64)
        .unwrap();
    let whole = store.ingest(&folder, data.as_slice(), 0).unwrap();
    assert_eq!(streamed, whole);
    let mut back = Vec::new();
    store.write_to(&streamed.hash(), &mut back).unwrap();
    assert_eq!(back, data);
}

/// With the defaults (notifications, automatic sync, passes on remote changes) a file written
/// on one device appears on the other with no call but the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_directories_sync_by_themselves() {
    let hub = InProcessHub::new();
    let auto = |name: &str| {
        builder("ann", name)
            .remote("hub".parse().unwrap(), hub.connect("ann".parse().unwrap()))
            .build()
    };
    let a = auto("laptop").await.unwrap();
    let b = auto("desktop").await.unwrap();
    let folder = a
        .create_folder("Docs", "files".parse().unwrap())
        .await
        .unwrap()
        .id;
    settle(&[&a, &b]).await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    a.map_folder(&folder, da.path()).await.unwrap();
    b.map_folder(&folder, db.path()).await.unwrap();
    let mut events = b.events().boxed();
    std::fs::write(da.path().join("hello.txt"), b"hi").unwrap();
    let arrived = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(e) = events.next().await {
            if let Event::Mapping {
                event:
                    MappingEvent::Applied {
                        path,
                        deleted: false,
                    },
                ..
            } = e
            {
                // (The watcher may have seen the file empty, between its creation and the
                // write: that version arrives first.)
                if path == "hello.txt"
                    && std::fs::read(db.path().join("hello.txt")).ok().as_deref() == Some(b"hi")
                {
                    return;
                }
            }
        }
    })
    .await;
    assert!(arrived.is_ok(), "the file did not arrive by itself");
}

/// An application's media: stored as chunks on one device, uploaded with its entry, fetched
/// on demand on another, deduplicated both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_blobs_travel_with_their_entries_and_are_fetched_on_demand() {
    let hub = InProcessHub::new();
    let a = device(&hub, "laptop").await;
    let b = device(&hub, "desktop").await;
    let folder = a
        .create_folder("Photos", "app/photos".parse().unwrap())
        .await
        .unwrap()
        .id;
    let feed = a
        .create_feed(&folder, "photos".parse().unwrap(), "Photos")
        .await
        .unwrap();
    let photo = noise(5, 1_500_000);
    let media = a
        .put_blob(&folder, photo.clone(), "image/jpeg")
        .await
        .unwrap();
    assert_eq!(media.length, 1_500_000);
    let mut d = EntryDraft::new("Beach", serde_json::json!({}));
    d.media = Some(media.clone());
    let e = a.put(&folder, &feed, d).await.unwrap();
    settle(&[&a, &b]).await;
    // The hub got every object before the entry.
    assert!(hub.blobs().usage().unwrap().1 >= 1_500_000);
    let got = b.get(&folder, &feed, e.entry_id()).await.unwrap().unwrap();
    let m = got.data().media.clone().unwrap();
    // Not downloaded until asked for.
    assert_eq!(b.blob_usage().await.unwrap().bytes, 0);
    let mut events = b.events().boxed();
    assert_eq!(b.read_blob(&folder, &m).await.unwrap(), photo);
    let mut last = None;
    while let Some(Some(ev)) = futures::FutureExt::now_or_never(events.next()) {
        if let Event::Transfer {
            done_bytes,
            total_bytes,
            ..
        } = ev
        {
            last = Some((done_bytes, total_bytes));
        }
    }
    let (done, total) = last.unwrap();
    assert_eq!(done, total);
    // A second fetch moves nothing.
    assert_eq!(b.fetch_blob(&folder, &m).await.unwrap(), 0);
    // Exported atomically to a file.
    let dir = tempfile::tempdir().unwrap();
    b.export_blob(&folder, &m, dir.path().join("beach.jpg"))
        .await
        .unwrap();
    assert_eq!(std::fs::read(dir.path().join("beach.jpg")).unwrap(), photo);
    // A blob of another folder is not reachable through this one.
    let other = a
        .create_folder("Private", "app/photos".parse().unwrap())
        .await
        .unwrap()
        .id;
    settle(&[&a, &b]).await;
    let secret = a
        .put_blob(&other, noise(6, 10_000), "text/plain")
        .await
        .unwrap();
    assert!(b.fetch_blob(&folder, &secret).await.is_err());
}

/// A blob store file that is garbage, another application's database or from a newer build
/// is refused with a typed error and left as it was; a good one reopens with its objects.
#[test]
fn blob_store_files_are_checked_when_opened() {
    use mesh_client::store::{BlobStore, Durability};
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.blobs");
    std::fs::write(&garbage, b"definitely not a database, just some bytes").unwrap();
    assert!(matches!(
        BlobStore::open(&garbage, Durability::Full),
        Err(mesh_client::store::StoreError::Corrupt { .. })
    ));
    assert_eq!(
        std::fs::read(&garbage).unwrap(),
        b"definitely not a database, just some bytes"
    );
    let foreign = dir.path().join("foreign.blobs");
    {
        let c = rusqlite::Connection::open(&foreign).unwrap();
        c.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
    }
    assert!(matches!(
        BlobStore::open(&foreign, Durability::Full),
        Err(mesh_client::store::StoreError::Corrupt { .. })
    ));
    let good = dir.path().join("good.blobs");
    let folder: FolderId = "f".parse().unwrap();
    let h = mesh_core::blob::ChunkHash::of(b"chunk");
    BlobStore::open(&good, Durability::Full)
        .unwrap()
        .put(&folder, &[(h, b"chunk".to_vec())])
        .unwrap();
    let reopened = BlobStore::open(&good, Durability::Normal).unwrap();
    assert_eq!(reopened.get(&h).unwrap().unwrap(), b"chunk");
    drop(reopened);
    {
        let c = rusqlite::Connection::open(&good).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
    }
    assert!(matches!(
        BlobStore::open(&good, Durability::Full),
        Err(mesh_client::store::StoreError::TooNew { found: 99, .. })
    ));
}

/// Reading the mapped files (an application, a backup, the mapping's own scan opening every
/// directory) starts no pass: Linux reports opens to the watcher, and a pass started by them
/// used to start the next one without end, rescanning the whole tree all the time. A write
/// still does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_mapped_files_starts_no_pass() {
    use std::time::Duration;
    let (a, folder) = one_device().await;
    let dir = tempfile::tempdir().unwrap();
    for d in 0..4 {
        std::fs::create_dir(dir.path().join(format!("d{d}"))).unwrap();
        for f in 0..5 {
            let path = dir.path().join(format!("d{d}/f{f}.txt"));
            std::fs::write(path, format!("{d} {f}")).unwrap();
        }
    }
    let mut events = a.events().boxed();
    let options = MappingOptions::default()
        .with_follow_remote(false)
        .with_debounce(Duration::from_millis(10))
        .with_rescan_interval(Duration::from_secs(3600));
    a.map_folder_with(&folder, dir.path(), options)
        .await
        .unwrap();
    // The next pass within `window`, with what it published.
    async fn next_pass(
        events: &mut (impl futures::Stream<Item = Event> + Unpin),
        window: Duration,
    ) -> Option<usize> {
        tokio::time::timeout(window, async {
            while let Some(e) = events.next().await {
                if let Event::Mapping {
                    event: MappingEvent::Scanned { published, .. },
                    ..
                } = e
                {
                    return Some(published);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }
    assert!(
        next_pass(&mut events, Duration::from_secs(20))
            .await
            .is_some(),
        "the first pass"
    );
    // Quiet within a bound: 300 ms without a pass, within 5 s.
    let quiet = tokio::time::timeout(Duration::from_secs(5), async {
        while next_pass(&mut events, Duration::from_millis(300))
            .await
            .is_some()
        {}
    })
    .await;
    assert!(quiet.is_ok(), "passes follow each other without a change");
    for _ in 0..3 {
        for d in 0..4 {
            for entry in std::fs::read_dir(dir.path().join(format!("d{d}"))).unwrap() {
                std::fs::read(entry.unwrap().path()).unwrap();
            }
        }
    }
    assert_eq!(
        next_pass(&mut events, Duration::from_millis(300)).await,
        None,
        "reads started a pass"
    );
    std::fs::write(dir.path().join("d0/new.txt"), b"new").unwrap();
    let mut published = 0;
    while published == 0 {
        published = next_pass(&mut events, Duration::from_secs(20))
            .await
            .expect("a write starts a pass");
    }
    assert_eq!(published, 1);
}

/// A pass that applies more remote files than it writes at once (groups of 1,000, each
/// written while the next one downloads) writes every one of them, in that one pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pass_writes_every_group_of_remote_files() {
    let p = pair().await;
    for d in 0..5 {
        std::fs::create_dir(p.da.path().join(format!("d{d}"))).unwrap();
        for f in 0..500 {
            let path = p.da.path().join(format!("d{d}/f{f}"));
            std::fs::write(path, noise(2 * (d * 1_000 + f) + 1, 100)).unwrap();
        }
    }
    p.a.rescan(&p.folder).await.unwrap();
    settle(&[&p.a, &p.b]).await;
    let mut events = p.b.events().boxed();
    p.b.rescan(&p.folder).await.unwrap();
    let (sa, sb) = (snapshot(p.da.path()), snapshot(p.db.path()));
    assert!(sa == sb, "B holds {} of A's {} paths", sb.len(), sa.len());
    let mut applied = 0;
    while let Ok(Some(e)) =
        tokio::time::timeout(std::time::Duration::from_millis(100), events.next()).await
    {
        if let Event::Mapping {
            event: MappingEvent::Applied { deleted: false, .. },
            ..
        } = e
        {
            applied += 1;
        }
    }
    assert_eq!(applied, 2_505, "2,500 files and 5 directories");
}

/// A pass publishes the changed files it hashes a group at a time (1,000 files): the first
/// group's entries are in the feed, for the engine to upload and push, before the pass reads
/// a file of the next group, rather than once it has read every file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_publishes_each_group_of_files_before_reading_the_next() {
    use mesh_client::mapping::faults;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let p = pair().await;
    // (The mapping's first pass has ended: every file below is read by the pass timed here.)
    p.a.rescan(&p.folder).await.unwrap();
    for f in 0..1_200u64 {
        std::fs::write(p.da.path().join(format!("f{f:04}")), noise(f + 1, 64)).unwrap();
    }
    let files: mesh_core::id::FeedName = "files".parse().unwrap();
    let reads = Arc::new(AtomicUsize::new(0));
    let published_then: Arc<Mutex<Option<usize>>> = Arc::new(Mutex::new(None));
    let (c, folder, runtime) = (
        p.a.clone(),
        p.folder.clone(),
        tokio::runtime::Handle::current(),
    );
    let (count, then, feed) = (reads.clone(), published_then.clone(), files.clone());
    faults::set_hook(p.da.path(), move |moment, _| {
        if moment == faults::Moment::Read && count.fetch_add(1, Ordering::SeqCst) == 1_000 {
            // (The hook runs on the pass's blob thread: the query runs on a thread of its own.)
            let (c, folder, feed, runtime) =
                (c.clone(), folder.clone(), feed.clone(), runtime.clone());
            let held = std::thread::spawn(move || {
                runtime.block_on(c.query(&folder, &feed, mesh_core::model::Query::new()))
            })
            .join()
            .unwrap()
            .unwrap()
            .len();
            *then.lock().unwrap() = Some(held);
        }
    });
    p.a.rescan(&p.folder).await.unwrap();
    faults::clear_hooks(p.da.path());
    assert_eq!(reads.load(Ordering::SeqCst), 1_200);
    assert_eq!(
        *published_then.lock().unwrap(),
        Some(1_000),
        "the first group is published before the 1,001st file is read"
    );
    let all =
        p.a.query(&p.folder, &files, mesh_core::model::Query::new())
            .await
            .unwrap();
    assert_eq!(all.len(), 1_200);
}

/// A remote file whose content no remote served (a blob still uploading, a remote that had
/// lost it) is tried again by itself a little later: no new version announces that the
/// content is there now, and the rescan interval is an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_whose_content_was_not_available_is_tried_again_by_itself() {
    let hub = InProcessHub::new();
    let a = device(&hub, "laptop").await;
    let proxy = crate::common::HubProxy::new(&hub, "ann");
    let withheld = proxy.withheld.clone();
    let b = builder("ann", "desktop")
        .remote("hub".parse().unwrap(), proxy)
        .sync_options(manual())
        .build()
        .await
        .unwrap();
    let folder = a
        .create_folder("Docs", "files".parse().unwrap())
        .await
        .unwrap()
        .id;
    settle(&[&a, &b]).await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    a.map_folder_with(&folder, da.path(), quiet_mapping())
        .await
        .unwrap();
    let hourly = quiet_mapping().with_rescan_interval(std::time::Duration::from_secs(3600));
    b.map_folder_with(&folder, db.path(), hourly).await.unwrap();
    let data = noise(5, 300_000);
    std::fs::write(da.path().join("photo.bin"), &data).unwrap();
    a.rescan(&folder).await.unwrap();
    a.sync_now().await.unwrap();
    withheld.lock().unwrap().extend(
        mesh_core::blob::chunk_boundaries(&data).map(|r| mesh_core::blob::ChunkHash::of(&data[r])),
    );
    let mut events = b.events().boxed();
    b.sync_now().await.unwrap();
    b.rescan(&folder).await.unwrap();
    assert!(
        !db.path().join("photo.bin").exists(),
        "its content was withheld"
    );
    withheld.lock().unwrap().clear();
    let arrived = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(e) = events.next().await {
            if let Event::Mapping {
                event: MappingEvent::Applied { path, .. },
                ..
            } = e
            {
                if path == "photo.bin" {
                    return;
                }
            }
        }
    })
    .await;
    assert!(arrived.is_ok(), "the file was not tried again");
    assert_eq!(std::fs::read(db.path().join("photo.bin")).unwrap(), data);
}
