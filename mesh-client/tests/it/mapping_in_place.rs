//! Large mapped files published in place: their chunks are read from the file itself (checked
//! against their hashes), not copied into the blob store first.

use mesh_core::id::FeedName;
use mesh_core::model::{names, FilePath, MediaRef};

use crate::common::settle;
use crate::mapping::{converge, noise, pair, snapshot};

/// Over the size up to which files are copied into the store (1 MiB).
const BIG: usize = 3 << 20;

async fn media_of(
    c: &mesh_client::MeshClient,
    folder: &mesh_core::id::FolderId,
    path: &str,
) -> MediaRef {
    let id = FilePath::new(path).unwrap().entry_id();
    let feed = FeedName::new(names::FILES).unwrap();
    let e = c.get(folder, &feed, &id).await.unwrap().expect("published");
    e.content.media.expect("a file's entry names its blob")
}

/// Why: a device copied every published file into its blob store before uploading it, and
/// the receiving device downloaded it into its store before writing the file, so a large
/// file was written twice on each. Now each device stores only the manifest (the receiver
/// writes the chunks straight into the file), and an edit moves only the chunks it changed,
/// both ways: each side's copy serves the chunks the versions share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_is_published_without_a_copy_and_arrives_whole() {
    let p = pair().await;
    let (da, db) = (p.da.path(), p.db.path());
    let big = noise(7, BIG);
    std::fs::write(da.join("video.bin"), &big).unwrap();
    std::fs::write(da.join("small.txt"), b"small files are still stored").unwrap();
    p.a.rescan(&p.folder).await.unwrap();
    let held = p.a.blob_usage().await.unwrap().bytes;
    assert!(held < 64 << 10, "the publishing device stored {held} bytes");
    // The publishing device can read its own blob before any sync (from the file).
    let media = media_of(&p.a, &p.folder, "video.bin").await;
    assert_eq!(p.a.read_blob(&p.folder, &media).await.unwrap(), big);
    converge(&p.a, &p.b, &p.folder, da, db).await;
    assert_eq!(std::fs::read(db.join("video.bin")).unwrap(), big);
    let held = p.b.blob_usage().await.unwrap().bytes;
    assert!(held < 64 << 10, "the receiving device stored {held} bytes");

    // An edit in the middle, on A, then another on B: each stores about what changed.
    for (n, (from, dir)) in [(&p.a, da), (&p.b, db)].into_iter().enumerate() {
        let mut edited = std::fs::read(dir.join("video.bin")).unwrap();
        edited[(1 << 20)..(1 << 20) + 4096].copy_from_slice(&noise(20 + n as u64, 4096));
        std::fs::write(dir.join("video.bin"), &edited).unwrap();
        let before = [
            p.a.blob_usage().await.unwrap().bytes,
            p.b.blob_usage().await.unwrap().bytes,
        ];
        from.rescan(&p.folder).await.unwrap();
        converge(&p.a, &p.b, &p.folder, da, db).await;
        assert_eq!(std::fs::read(da.join("video.bin")).unwrap(), edited);
        assert_eq!(std::fs::read(db.join("video.bin")).unwrap(), edited);
        for (side, c) in [&p.a, &p.b].into_iter().enumerate() {
            let grown = c.blob_usage().await.unwrap().bytes - before[side];
            assert!(
                grown < 1 << 20,
                "edit {n}: device {side} stored {grown} bytes"
            );
        }
    }
}

/// Why: a chunk read from a file that changed after it was published must never be sent as
/// that chunk, and a version whose file changed before it was uploaded must not stop the sync.
/// The file is overwritten with other bytes of the same size and its modification time put
/// back, so that only the chunks' hashes show the change: the upload leaves that version out
/// (the sync succeeds, the other device writes nothing wrong), and the next version, once the
/// file's time moves, arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_changed_before_its_upload_is_never_sent_stale() {
    let p = pair().await;
    let (da, db) = (p.da.path(), p.db.path());
    let path = da.join("disk.img");
    std::fs::write(&path, noise(1, BIG)).unwrap();
    p.a.rescan(&p.folder).await.unwrap();
    let first: mesh_core::blob::ChunkHash = media_of(&p.a, &p.folder, "disk.img")
        .await
        .hash
        .parse()
        .unwrap();
    let published = std::fs::metadata(&path).unwrap().modified().unwrap();
    let second = noise(2, BIG);
    {
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::io::Write::write_all(&mut &f, &second).unwrap();
        f.set_modified(published).unwrap();
    }
    p.a.sync_now()
        .await
        .expect("a version that cannot be read does not fail the sync");
    // Its manifest was not uploaded: a hub never holds a manifest without its chunks.
    assert_eq!(hub_lacks(&p, first).await, vec![first]);
    settle(&[&p.a, &p.b]).await;
    p.b.rescan(&p.folder).await.unwrap();
    assert!(
        snapshot(db).is_empty(),
        "nothing may be written from a version whose content is gone: {:?}",
        snapshot(db).keys()
    );
    // The file's time moves: the next pass publishes the content it now holds.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_modified(published + std::time::Duration::from_secs(2))
        .unwrap();
    converge(&p.a, &p.b, &p.folder, da, db).await;
    assert_eq!(std::fs::read(db.join("disk.img")).unwrap(), second);
}

/// Which of `h` the hub lacks for the pair's folder (asked as its user, not through a device).
async fn hub_lacks(
    p: &crate::mapping::Pair,
    h: mesh_core::blob::ChunkHash,
) -> Vec<mesh_core::blob::ChunkHash> {
    mesh_client::transport::Transport::missing_objects(
        &p._hub.connect("ann".parse().unwrap()),
        &p.folder,
        &[h],
    )
    .await
    .unwrap()
}

/// Why: an upload took a chunk it could not read for one the store had lost (an error that
/// failed every sync) whenever no file was located any more, which is what deleting the only
/// file published in place leaves. Worse, it then sent the blob's manifest with its chunks
/// instead of after them, so the hub could hold a manifest whose chunks never came. A file
/// deleted after it was published and before its upload is now unavailable, like one edited:
/// the sync goes on, the manifest stays here, and the deletion reaches the other device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_deleted_before_its_upload_is_skipped_not_an_error() {
    let p = pair().await;
    let (da, db) = (p.da.path(), p.db.path());
    std::fs::write(da.join("keep.txt"), b"kept").unwrap();
    std::fs::write(da.join("gone.bin"), noise(5, BIG)).unwrap();
    p.a.rescan(&p.folder).await.unwrap();
    let manifest: mesh_core::blob::ChunkHash = media_of(&p.a, &p.folder, "gone.bin")
        .await
        .hash
        .parse()
        .unwrap();
    std::fs::remove_file(da.join("gone.bin")).unwrap();
    // The pass that sees the deletion forgets where the file's chunks were: no file is
    // located any more, and the version published before is still to be pushed.
    p.a.rescan(&p.folder).await.unwrap();
    p.a.sync_now()
        .await
        .expect("a deleted file's version does not fail the sync");
    assert_eq!(
        hub_lacks(&p, manifest).await,
        vec![manifest],
        "a manifest reached the hub without its chunks"
    );
    converge(&p.a, &p.b, &p.folder, da, db).await;
    assert_eq!(std::fs::read(db.join("keep.txt")).unwrap(), b"kept");
    assert!(!db.join("gone.bin").exists());
}

/// A remote that changes the bytes of every chunk it serves (not the small manifests).
struct Tampering(std::sync::Arc<dyn mesh_client::transport::Transport>);

#[async_trait::async_trait]
impl mesh_client::transport::Transport for Tampering {
    async fn send(
        &self,
        r: mesh_core::sync::Request,
    ) -> Result<mesh_core::sync::Response, mesh_client::transport::TransportError> {
        self.0.send(r).await
    }
    async fn watch(
        &self,
    ) -> Result<
        futures::stream::BoxStream<'static, mesh_client::transport::Notification>,
        mesh_client::transport::TransportError,
    > {
        self.0.watch().await
    }
    fn describe(&self) -> String {
        "tampering".into()
    }
    async fn get_objects(
        &self,
        folder: &mesh_core::id::FolderId,
        hashes: &[mesh_core::blob::ChunkHash],
    ) -> Result<Vec<(mesh_core::blob::ChunkHash, Vec<u8>)>, mesh_client::transport::TransportError>
    {
        let mut got = self.0.get_objects(folder, hashes).await?;
        for (_, data) in got.iter_mut().filter(|(_, d)| d.len() >= 16 << 10) {
            let last = data.len() - 1;
            data[last] ^= 0xff;
        }
        Ok(got)
    }
}

/// Why: a large file is written straight from the network into its temporary file, so the
/// chunks must be checked before they are written, as the store checks what it keeps. A
/// remote that alters every chunk gets nothing written: no file, no temporary file left, and
/// the download reports the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_chunks_are_never_written_into_a_file() {
    let hub = mesh_client::transport::InProcessHub::new();
    let a = crate::mapping::device(&hub, "laptop").await;
    let folder = a
        .create_folder("Docs", "files".parse().unwrap())
        .await
        .unwrap()
        .id;
    let b = crate::common::builder("ann", "desktop")
        .remote(
            "hub".parse().unwrap(),
            Tampering(std::sync::Arc::new(hub.connect("ann".parse().unwrap()))),
        )
        .sync_options(crate::mapping::manual())
        .build()
        .await
        .unwrap();
    settle(&[&a, &b]).await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for (c, d) in [(&a, &da), (&b, &db)] {
        c.map_folder_with(&folder, d.path(), crate::mapping::quiet_mapping())
            .await
            .unwrap();
    }
    std::fs::write(da.path().join("video.bin"), noise(3, BIG)).unwrap();
    a.rescan(&folder).await.unwrap();
    settle(&[&a, &b]).await;
    b.rescan(&folder).await.unwrap();
    assert!(
        snapshot(db.path()).is_empty(),
        "{:?}",
        snapshot(db.path()).keys()
    );
}

/// Why: a large file's download goes into a temporary file named after its path and version,
/// which a killed download leaves for the next attempt. Whatever holds that name must neither
/// block the file nor end up in it: a directory there makes the download take another name;
/// a file there with other, longer content is reused only for the chunks that match their
/// hashes and cut to the blob's length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatever_holds_a_staged_name_neither_blocks_nor_taints_the_file() {
    for planted in ["a directory", "a longer file"] {
        let p = pair().await;
        let (da, db) = (p.da.path(), p.db.path());
        let big = noise(9, BIG);
        std::fs::write(da.join("video.bin"), &big).unwrap();
        p.a.rescan(&p.folder).await.unwrap();
        let manifest: mesh_core::blob::ChunkHash = media_of(&p.a, &p.folder, "video.bin")
            .await
            .hash
            .parse()
            .unwrap();
        let name = mesh_client::mapping::faults::staged_file_name("video.bin", &manifest);
        match planted {
            "a directory" => {
                std::fs::create_dir(db.join(&name)).unwrap();
                std::fs::write(db.join(&name).join("inside"), b"x").unwrap();
            }
            _ => {
                let mut junk = big.clone();
                junk[100] ^= 1;
                junk.extend_from_slice(&noise(10, 5000));
                std::fs::write(db.join(&name), junk).unwrap();
            }
        }
        settle(&[&p.a, &p.b]).await;
        p.b.rescan(&p.folder).await.unwrap();
        assert!(
            std::fs::read(db.join("video.bin")).is_ok_and(|got| got == big),
            "with {planted} at the staged name"
        );
    }
}
