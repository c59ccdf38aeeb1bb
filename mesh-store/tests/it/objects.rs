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
    // The kept totals: each folder's own, so `a` (in both) counts twice for the pair; the
    // second put of `a` and the claim on `c` (not stored) added nothing.
    assert_eq!(
        store
            .claimed_bytes_bound(std::slice::from_ref(&f1))
            .unwrap(),
        30
    );
    assert_eq!(
        store
            .claimed_bytes_bound(std::slice::from_ref(&f2))
            .unwrap(),
        10
    );
    assert_eq!(
        store
            .claimed_bytes_bound(&[f1.clone(), f2.clone(), f1.clone()])
            .unwrap(),
        40,
        "a folder named twice counts once"
    );
    assert_eq!(store.claimed_bytes_bound(&[folder("f9")]).unwrap(), 0);
    assert_eq!(store.claimed_bytes_bound(&[]).unwrap(), 0);
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
    // Many at once, whatever folder claims them: absent ones skipped, within the budget.
    let got = store.get_many(&[c.0, b.0, a.0], usize::MAX).unwrap();
    assert_eq!(got, vec![(b.0, b.1.clone()), (a.0, a.1.clone())]);
    let got = store.get_many(&[c.0, b.0, a.0], 1).unwrap();
    assert_eq!(got, vec![(b.0, b.1.clone())]);
    assert!(store.get_many(&[c.0], usize::MAX).unwrap().is_empty());
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
    // With the whole length, from the same lookup.
    assert_eq!(
        store.read_sized_for(&f1, &b.0, 0, 8).unwrap(),
        Some((20, b.1[..8].to_vec()))
    );
    assert_eq!(
        store.read_sized_for(&f1, &b.0, 12, 100).unwrap(),
        Some((20, b.1[12..].to_vec()))
    );
    assert_eq!(store.read_sized_for(&f2, &b.0, 0, 10).unwrap(), None);
    // The same reads within one reading.
    let read = store
        .reading(|r| {
            Ok((
                r.read_sized_for(&f1, &b.0, 12, 100)?,
                r.read_sized_for(&f1, &a.0, 0, 4)?,
                r.read_sized_for(&f2, &b.0, 0, 10)?,
            ))
        })
        .unwrap();
    assert_eq!(
        read,
        (
            Some((20, b.1[12..].to_vec())),
            Some((10, a.1[..4].to_vec())),
            None
        )
    );
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
    assert_eq!(
        store
            .claimed_bytes_bound(std::slice::from_ref(&f1))
            .unwrap(),
        0,
        "a released folder's total goes with its claims"
    );
    assert_eq!(
        store
            .claimed_bytes_bound(std::slice::from_ref(&f2))
            .unwrap(),
        10
    );
    large_blobs(store);
}

/// Pseudo-random bytes (so that chunk boundaries fall where content decides).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    fastrand::Rng::with_seed(seed).fill(&mut out);
    out
}

/// A blob larger than what is read whole goes through the staged ingest (one thread cutting,
/// another hashing and storing): it is cut exactly as in memory, reads back whole, and
/// ingesting it again, for another folder, stores no byte twice but gives that folder its
/// claim on every object.
fn large_blobs(store: &BlobStore) {
    let (f3, f4) = (folder("f3"), folder("f4"));
    let content = noise(12 << 20, 7);
    let manifest = store
        .ingest(&f3, &content[..], content.len() as u64)
        .unwrap();
    let want: Vec<(ChunkHash, u32)> = mesh_store::blobs::chunk_in_memory(&content)
        .into_iter()
        .map(|(h, d)| (h, d.len() as u32))
        .collect();
    let got: Vec<(ChunkHash, u32)> = manifest.chunks().iter().map(|c| (c.hash, c.len)).collect();
    assert!(want.len() > 50, "{} chunks", want.len());
    assert_eq!(got, want, "the staged ingest cuts and hashes as in memory");
    let mut out = Vec::new();
    store.write_to(&manifest.hash(), &mut out).unwrap();
    assert!(out == content, "the blob reads back whole");
    let (objects, bytes) = store.usage().unwrap();
    let hashes: Vec<ChunkHash> = want.iter().map(|(h, _)| *h).collect();
    assert_eq!(store.missing(&f4, &hashes).unwrap().len(), hashes.len());
    let again = store
        .ingest(&f4, &content[..], content.len() as u64)
        .unwrap();
    assert_eq!(again.hash(), manifest.hash());
    assert_eq!(
        store.usage().unwrap(),
        (objects, bytes),
        "nothing stored twice"
    );
    assert!(
        store.missing(&f4, &hashes).unwrap().is_empty(),
        "the second folder claims every object it ingested"
    );
    assert!(store.missing(&f4, &[again.hash()]).unwrap().is_empty());
}

/// A reader that yields `ok` bytes, then fails.
struct FailsAfter {
    left: usize,
}

impl std::io::Read for FailsAfter {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("the disk went away"));
        }
        let n = buf.len().min(self.left);
        buf[..n].fill(0x5a);
        self.left -= n;
        Ok(n)
    }
}

/// Runs `f` on a thread of its own and fails the test, rather than hang it, should `f` not
/// end within a minute.
fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("the ingest neither ended nor failed")
}

#[test]
fn a_large_ingest_whose_reader_fails_fails_and_ends() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path().join("blobs.db"), Durability::Full).unwrap();
    let result = within_a_minute(move || {
        store.ingest(&folder("f1"), FailsAfter { left: 20 << 20 }, 64 << 20)
    });
    match result {
        Err(e) => assert!(e.to_string().contains("the disk went away"), "{e}"),
        Ok(m) => panic!("a failed read made a blob of {} bytes", m.length()),
    }
}

#[test]
fn a_large_ingest_whose_store_fails_fails_and_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blobs.db");
    let store = BlobStore::open(&path, Durability::Full).unwrap();
    // Another connection breaks the file's schema: every write of the store fails from now
    // on, while the reader still has far more to give than the queue between them holds.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TABLE objects")
        .unwrap();
    let content = noise(64 << 20, 3);
    let result = within_a_minute(move || store.ingest(&folder("f1"), &content[..], 64 << 20));
    assert!(result.is_err(), "the store's failure is the ingest's");
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

/// One step of [`kept_totals_agree_with_the_claims`].
#[derive(Debug, Clone)]
enum Step {
    /// Stores objects (by number, with repeats) for a folder.
    Put(usize, Vec<u8>),
    /// Claims objects (stored or not) for a folder.
    Claim(usize, Vec<u8>),
    /// Releases a folder.
    Release(usize),
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    let objects = || proptest::collection::vec(0u8..12, 0..6);
    prop_oneof![
        4 => (0usize..4, objects()).prop_map(|(f, o)| Step::Put(f, o)),
        3 => (0usize..4, objects()).prop_map(|(f, o)| Step::Claim(f, o)),
        1 => (0usize..4).prop_map(Step::Release),
    ]
}

/// Runs `steps` on `store`, checking after each that every folder's kept total is what its
/// claims hold, and that any set of folders' sum of totals is at least what they hold
/// together (equal for one folder).
fn check_totals(
    store: &BlobStore,
    steps: &[Step],
) -> Result<(), proptest::test_runner::TestCaseError> {
    use proptest::prelude::*;
    let folders: Vec<FolderId> = (0..4).map(|i| folder(&format!("f{i}"))).collect();
    // Object n: n + 1 bytes, so that sizes tell objects apart in the sums.
    let obj = |n: u8| object(n, usize::from(n) + 1);
    for s in steps {
        match s {
            Step::Put(f, o) => {
                let objects: Vec<_> = o.iter().map(|&n| obj(n)).collect();
                store.put(&folders[*f], &objects).unwrap();
            }
            Step::Claim(f, o) => {
                let hashes: Vec<_> = o.iter().map(|&n| obj(n).0).collect();
                store.claim(&folders[*f], &hashes).unwrap();
            }
            Step::Release(f) => {
                store.release_folder(&folders[*f]).unwrap();
            }
        }
        for f in &folders {
            let one = std::slice::from_ref(f);
            prop_assert_eq!(
                store.claimed_bytes_bound(one).unwrap(),
                store.claimed_bytes(one).unwrap(),
                "{} after {:?}",
                f,
                s
            );
        }
        prop_assert!(
            store.claimed_bytes_bound(&folders).unwrap() >= store.claimed_bytes(&folders).unwrap()
        );
    }
    Ok(())
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(48))]
    /// Whatever puts, claims and releases run, in any order, the kept per-folder totals the
    /// quota reads first agree with the claims (in memory and on SQLite).
    #[test]
    fn kept_totals_agree_with_the_claims(steps in proptest::collection::vec(step(), 1..24)) {
        check_totals(&BlobStore::memory(), &steps)?;
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("blobs.db"), Durability::Normal).unwrap();
        check_totals(&store, &steps)?;
    }
}

/// A file of schema version 3 (before the kept totals) opens with each folder's total
/// counted from the claims it holds.
#[test]
fn an_older_blob_store_opens_with_its_totals_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blobs.db");
    let (f1, f2) = (folder("f1"), folder("f2"));
    let (a, b) = (object(1, 10), object(2, 20));
    {
        let store = BlobStore::open(&path, Durability::Full).unwrap();
        store.put(&f1, &[a.clone(), b.clone()]).unwrap();
        store.put(&f2, std::slice::from_ref(&a)).unwrap();
    }
    // What version 3 had: no totals.
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("DROP TABLE folder_bytes; PRAGMA user_version = 3;")
        .unwrap();
    drop(c);
    totals_counted_then_kept(&BlobStore::open(&path, Durability::Full).unwrap(), &b);
}

/// After a migration from a store where f1 claimed objects 1 (10 bytes) and 2 (`b`, 20)
/// and f2 object 1: the totals were counted, and are kept from then on.
fn totals_counted_then_kept(store: &BlobStore, b: &(ChunkHash, Vec<u8>)) {
    let bound = |f: &str| store.claimed_bytes_bound(&[folder(f)]).unwrap();
    assert_eq!((bound("f1"), bound("f2")), (30, 10));
    store.put(&folder("f2"), std::slice::from_ref(b)).unwrap();
    assert_eq!(bound("f2"), 30);
}

/// A second connection to a SQLite blob store's file, which waits for no lock.
fn other_connection(path: &std::path::Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.busy_timeout(std::time::Duration::ZERO).unwrap();
    c
}

/// A reading is one read transaction on SQLite: a writer elsewhere cannot change what it
/// reads until it ends (one snapshot, and the file's locks taken once for all its reads).
#[test]
fn a_reading_on_sqlite_is_one_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blobs.db");
    let store = BlobStore::open(&path, Durability::Full).unwrap();
    let f1 = folder("f1");
    let a = object(1, 10);
    store.put(&f1, std::slice::from_ref(&a)).unwrap();
    let other = other_connection(&path);
    let drop_claims = || other.execute("DELETE FROM refs", []);
    let (first, refused, second) = store
        .reading(|r| {
            let first = r.read_sized_for(&f1, &a.0, 0, 100)?;
            let refused = drop_claims().is_err();
            let second = r.read_sized_for(&f1, &a.0, 0, 100)?;
            Ok((first, refused, second))
        })
        .unwrap();
    assert!(refused, "a writer got in while the reading ran");
    assert_eq!(first, Some((10, a.1.clone())));
    assert_eq!(second, first);
    // Once it ends, the writer may go on.
    drop_claims().unwrap();
    assert_eq!(store.read_sized_for(&f1, &a.0, 0, 100).unwrap(), None);
}

/// A blob store kept locked holds its file from its first write on, until it is dropped.
#[test]
fn a_blob_store_kept_locked_shuts_out_other_connections() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blobs.db");
    let f1 = folder("f1");
    let a = object(1, 10);
    let count = |c: &rusqlite::Connection| {
        c.query_row("SELECT count(*) FROM objects", [], |r| r.get::<_, i64>(0))
    };
    {
        let store = BlobStore::open(&path, Durability::Full).unwrap();
        store.put(&f1, std::slice::from_ref(&a)).unwrap();
        assert_eq!(
            count(&other_connection(&path)).unwrap(),
            1,
            "not kept locked"
        );
        store.keep_file_locked().unwrap();
        let b = object(2, 20);
        store.put(&f1, std::slice::from_ref(&b)).unwrap();
        assert!(count(&other_connection(&path)).is_err());
        // The store itself goes on as before.
        assert_eq!(store.get(&b.0).unwrap(), Some(b.1));
        assert!(store.missing(&f1, &[a.0, b.0]).unwrap().is_empty());
    }
    assert_eq!(count(&other_connection(&path)).unwrap(), 2);
    let reopened = BlobStore::open(&path, Durability::Full).unwrap();
    assert_eq!(reopened.get(&a.0).unwrap(), Some(a.1));
    BlobStore::memory().keep_file_locked().unwrap();
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

/// A handle of its own on the database (as another hub process holds), in `schema`.
#[cfg(feature = "postgres")]
fn pg_handle(url: &str, schema: &str) -> BlobStore {
    use mesh_store::postgres::{PgConfig, PgDatabase, PgObjects};
    let db = PgDatabase::connect(PgConfig::new(url).schema(schema)).unwrap();
    db.migrate().unwrap();
    BlobStore::postgres(PgObjects::new(db))
}

/// Two handles on one database (as two hub processes hold): while one runs an exclusive
/// section, the other's waits in PostgreSQL until it ends. Seen in `pg_locks`, not guessed
/// from timing.
#[cfg(feature = "postgres")]
#[test]
fn an_exclusive_section_holds_across_processes_of_one_database() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(url) = crate::postgres::server() else {
        return;
    };
    let schema = crate::postgres::fresh_schema();
    let (a, b) = (pg_handle(&url, &schema), pg_handle(&url, &schema));
    // Advisory locks are database-wide: a name of this run's own.
    let name = format!("quota-{schema}");
    let entered = AtomicBool::new(false);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let waiting = || {
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            let conn = tokio::spawn(conn);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let n: i64 = client
                    .query_one(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
                         AND NOT granted AND objsubid = 1
                         AND ((classid::bigint << 32) | objid::bigint) = hashtextextended($1, 0)",
                        &[&name],
                    )
                    .await
                    .unwrap()
                    .get(0);
                if n > 0 {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the second section never waited for the lock"
                );
                tokio::task::yield_now().await;
            }
            drop(client);
            let _ = conn.await;
        })
    };
    std::thread::scope(|s| {
        let second = a
            .exclusive(&name, |_| {
                let second =
                    s.spawn(|| b.exclusive(&name, |_| entered.store(true, Ordering::SeqCst)));
                waiting();
                assert!(
                    !entered.load(Ordering::SeqCst),
                    "the second section ran while the first held the lock"
                );
                second
            })
            .unwrap();
        second.join().unwrap().unwrap();
    });
    assert!(entered.load(Ordering::SeqCst));
    // Memory and file stores run the section as it is (their callers serialize threads).
    assert_eq!(BlobStore::memory().exclusive(&name, |_| 7).unwrap(), 7);
}

/// An exclusive section works on the store it is given, over the connection that holds the
/// lock: on a pool of one connection it reads, writes and nests without waiting for a
/// second connection (which would wait on itself until the pool's timeout), and the
/// connection goes back to the pool, unlocked, when it ends.
#[cfg(feature = "postgres")]
#[test]
fn an_exclusive_section_needs_no_second_connection() {
    use mesh_store::postgres::{PgConfig, PgDatabase, PgObjects};
    let Some(url) = crate::postgres::server() else {
        return;
    };
    let schema = crate::postgres::fresh_schema();
    let mut config = PgConfig::new(url).schema(schema.clone()).max_connections(1);
    config.timeout = std::time::Duration::from_secs(2);
    let db = PgDatabase::connect(config).unwrap();
    db.migrate().unwrap();
    let store = BlobStore::postgres(PgObjects::new(db));
    let f = folder("f1");
    let (h, data) = object(3, 1000);
    let name = format!("pinned-{schema}");
    let (added, got, nested) = store
        .exclusive(&name, |b| {
            let added = b.put(&f, &[(h, data.clone())]).unwrap();
            let got = b.get(&h).unwrap();
            let nested = b
                .exclusive(&format!("{name}-inner"), |b| {
                    b.claimed_bytes(std::slice::from_ref(&f))
                })
                .unwrap()
                .unwrap();
            (added, got, nested)
        })
        .unwrap();
    assert_eq!(
        (added, got.as_deref(), nested),
        (1000, Some(&data[..]), 1000)
    );
    // The one connection is back in the pool, without the lock: a second section runs.
    assert_eq!(
        store.exclusive(&name, |b| b.usage().unwrap()).unwrap(),
        (1, 1000)
    );
}

/// A section whose closure panics still releases its lock: its connection goes back to the
/// pool, and another handle on the database (another hub process) takes the lock at once
/// instead of waiting for good.
#[cfg(feature = "postgres")]
#[test]
fn a_panicking_section_releases_its_lock() {
    let Some(url) = crate::postgres::server() else {
        return;
    };
    let schema = crate::postgres::fresh_schema();
    let (a, b) = (pg_handle(&url, &schema), pg_handle(&url, &schema));
    let name = format!("panic-{schema}");
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        a.exclusive(&name, |s| {
            s.usage().unwrap();
            panic!("a bug inside the section")
        })
    }));
    assert!(panicked.is_err());
    let (tx, rx) = std::sync::mpsc::channel();
    let other = name.clone();
    std::thread::spawn(move || {
        let _ = tx.send(b.exclusive(&other, |_| 7).unwrap());
    });
    assert_eq!(
        rx.recv_timeout(std::time::Duration::from_secs(20)).ok(),
        Some(7),
        "the lock was still held by the pooled connection"
    );
    // The first handle's pool still works, unlocked.
    assert_eq!(a.exclusive(&name, |_| 8).unwrap(), 8);
}

/// A database of schema version 5 (before the kept totals) migrates with each folder's total
/// counted from the claims it holds, and keeps it from then on.
#[cfg(feature = "postgres")]
#[test]
fn an_older_database_migrates_with_its_totals_counted() {
    use mesh_store::postgres::{PgConfig, PgDatabase, PgObjects};
    let Some(url) = crate::postgres::server() else {
        return;
    };
    let schema = crate::postgres::fresh_schema();
    let (a, b) = (object(1, 10), object(2, 20));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = crate::postgres::database_at(&url, &schema, 5).await;
        for (h, d) in [&a, &b] {
            client
                .execute(
                    "INSERT INTO mesh_objects (hash, size, data) VALUES ($1, $2, $3)",
                    &[&&h.as_bytes()[..], &(d.len() as i64), &&d[..]],
                )
                .await
                .unwrap();
        }
        for (f, h) in [("f1", &a.0), ("f1", &b.0), ("f2", &a.0)] {
            client
                .execute(
                    "INSERT INTO mesh_object_refs (folder, hash) VALUES ($1, $2)",
                    &[&f, &&h.as_bytes()[..]],
                )
                .await
                .unwrap();
        }
    });
    let db = PgDatabase::connect(PgConfig::new(url).schema(schema)).unwrap();
    assert_eq!(
        db.migrate().unwrap(),
        mesh_store::postgres::MIGRATIONS.len() - 5
    );
    totals_counted_then_kept(&BlobStore::postgres(PgObjects::new(db)), &b);
}
