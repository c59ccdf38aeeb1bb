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

/// Why: a device copied every published file into its blob store before uploading it, so a
/// large file was written to the device's disk a second time. Now only its manifest is stored,
/// and the other device still receives it whole.
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
