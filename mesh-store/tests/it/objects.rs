//! The object store (blob chunks and manifests, and the folders that claim them): one suite,
//! run on every backend.

use mesh_core::blob::ChunkHash;
use mesh_core::id::FolderId;
use mesh_store::{BlobStore, Durability, StoreError};

fn folder(s: &str) -> FolderId {
    s.parse().unwrap()
}

fn object(n: u8, len: usize) -> (ChunkHash, Vec<u8>) {
    let data = vec![n; len];
    (ChunkHash::of(&data), data)
}

/// What every object store does.
fn suite(store: &BlobStore) {
    let (f1, f2) = (folder("f1"), folder("f2"));
    let (a, b, c) = (object(1, 10), object(2, 20), object(3, 30));
    // Nothing stored: every hash is missing, once, in order.
    assert_eq!(
        store.missing(&f1, &[a.0, b.0, a.0]).unwrap(),
        vec![a.0, b.0]
    );
    assert_eq!(store.absent(&[c.0]).unwrap(), vec![c.0]);
    // A mismatched object refuses the whole batch.
    let forged = (a.0, b"forged".to_vec());
    assert!(matches!(
        store.put(&f1, &[b.clone(), forged]),
        Err(StoreError::Core(_))
    ));
    assert_eq!(
        store.usage().unwrap(),
        (0, 0),
        "nothing of a refused batch is kept"
    );
    assert_eq!(store.put(&f1, &[a.clone(), b.clone()]).unwrap(), 30);
    assert_eq!(
        store.put(&f1, std::slice::from_ref(&a)).unwrap(),
        0,
        "stored once"
    );
    assert!(store.missing(&f1, &[a.0, b.0]).unwrap().is_empty());
    // Another folder has no claim, though the bytes are stored.
    assert_eq!(store.missing(&f2, &[a.0]).unwrap(), vec![a.0]);
    assert!(store.absent(&[a.0]).unwrap().is_empty());
    assert!(store.get_for(&f2, &[a.0], usize::MAX).unwrap().is_empty());
    store.claim(&f2, &[a.0, c.0]).unwrap();
    // What folders hold, each object once.
    assert_eq!(store.claimed_bytes(std::slice::from_ref(&f1)).unwrap(), 30);
    assert_eq!(store.claimed_bytes(std::slice::from_ref(&f2)).unwrap(), 10);
    assert_eq!(store.claimed_bytes(&[f1.clone(), f2.clone()]).unwrap(), 30);
    assert_eq!(store.claimed_bytes(&[folder("f9")]).unwrap(), 0);
    assert_eq!(store.claimed_bytes(&[]).unwrap(), 0);
    let mut among = store
        .claimed_among(std::slice::from_ref(&f2), &[a.0, b.0, c.0, a.0])
        .unwrap();
    among.sort();
    assert_eq!(among, vec![a.0]);
    let mut among = store
        .claimed_among(&[f1.clone(), f2.clone()], &[a.0, b.0, c.0])
        .unwrap();
    among.sort();
    let mut want = vec![a.0, b.0];
    want.sort();
    assert_eq!(among, want);
    assert!(store.claimed_among(&[], &[a.0]).unwrap().is_empty());
    assert!(store.missing(&f2, &[a.0]).unwrap().is_empty());
    assert_eq!(
        store.missing(&f2, &[c.0]).unwrap(),
        vec![c.0],
        "a claim on an object not stored is not recorded"
    );
    // Reads: in order, within the budget (the first always).
    let got = store.get_for(&f1, &[b.0, a.0], 1).unwrap();
    assert_eq!(got, vec![(b.0, b.1.clone())]);
    let got = store.get_for(&f1, &[b.0, c.0, a.0], usize::MAX).unwrap();
    assert_eq!(got, vec![(b.0, b.1.clone()), (a.0, a.1.clone())]);
    assert_eq!(store.get(&a.0).unwrap(), Some(a.1.clone()));
    assert_eq!(store.get(&c.0).unwrap(), None);
    assert_eq!(store.usage().unwrap(), (2, 30));
    let mut hashes = store.hashes().unwrap();
    hashes.sort();
    let mut want = vec![a.0, b.0];
    want.sort();
    assert_eq!(hashes, want);
    // Pieces of an object, for the folders that claim it.
    assert_eq!(store.len_for(&f1, &b.0).unwrap(), Some(20));
    assert_eq!(store.len_for(&f2, &b.0).unwrap(), None, "not claimed by f2");
    assert_eq!(
        store.read_for(&f1, &b.0, 5, 10).unwrap(),
        Some(b.1[5..15].to_vec())
    );
    assert_eq!(
        store.read_for(&f1, &b.0, 15, 10).unwrap(),
        Some(b.1[15..].to_vec())
    );
    assert_eq!(store.read_for(&f1, &b.0, 25, 10).unwrap(), Some(Vec::new()));
    assert_eq!(store.read_for(&f2, &b.0, 0, 10).unwrap(), None);
    // A whole blob: chunks and manifest, written back.
    let content: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let manifest = store
        .ingest(&f1, &content[..], content.len() as u64)
        .unwrap();
    let mut out = Vec::new();
    store.write_to(&manifest.hash(), &mut out).unwrap();
    assert_eq!(out, content);
    // Releasing a folder (deleted) drops its claims and the objects only it claimed.
    let (objects, _) = store.usage().unwrap();
    let removed = store.release_folder(&f1).unwrap();
    assert!(removed >= 2, "b and the blob's chunks go ({removed})");
    assert_eq!(store.get(&b.0).unwrap(), None, "only f1 claimed b");
    assert_eq!(
        store.get(&a.0).unwrap(),
        Some(a.1.clone()),
        "f2 still claims a"
    );
    assert_eq!(
        store.len_for(&f1, &a.0).unwrap(),
        None,
        "f1's claim is gone"
    );
    assert_eq!(store.len_for(&f2, &a.0).unwrap(), Some(10));
    assert_eq!(store.usage().unwrap().0, objects - removed);
    assert_eq!(store.release_folder(&f1).unwrap(), 0);
}

#[test]
fn the_object_suite_passes_in_memory() {
    suite(&BlobStore::memory());
}

#[test]
fn the_object_suite_passes_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    suite(&BlobStore::open(dir.path().join("blobs.db"), Durability::Full).unwrap());
}

#[cfg(feature = "postgres")]
#[test]
fn the_object_suite_passes_on_postgres() {
    use mesh_store::postgres::{PgConfig, PgDatabase, PgObjects};
    let Some(url) = crate::postgres::server() else {
        return;
    };
    let db =
        PgDatabase::connect(PgConfig::new(url).schema(crate::postgres::fresh_schema())).unwrap();
    db.migrate().unwrap();
    let store = BlobStore::postgres(PgObjects::new(db));
    suite(&store);
    // A hub's database keeps no mapping indexes: asking is an error, not a panic.
    assert!(matches!(
        store.index_load(&folder("f1"), "m"),
        Err(StoreError::Config(_))
    ));
}
