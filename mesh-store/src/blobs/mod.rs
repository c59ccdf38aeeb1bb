//! The object store for blobs: chunks and manifests by content address, deduplicated, with the
//! folders each object belongs to — and the index of mapped directories.
//!
//! Every object is stored once however many blobs, files or folders use it. A folder's claim on
//! an object is recorded separately (`refs`): a peer may read or skip uploading only the objects
//! of folders it may read, so knowing a hash never grants its content, and the existence of an
//! object in another folder is never revealed (an upload for a folder that lacks the object is
//! always asked for, even when the bytes are already stored).
//!
//! Backends: memory, or a SQLite file beside the replica's (`<replica file>.blobs`, 64 KiB
//! pages, a rollback journal so that object bytes are written once, the replica's
//! [`Durability`]). Schema version 4:
//!
//! | table | holds |
//! |---|---|
//! | `objects(hash, size, data)` | one row per object; `hash` is its 32-byte BLAKE3 hash |
//! | `refs(folder, hash)` | which folders claim which objects |
//! | `folder_bytes(folder, bytes)` | the bytes of the objects each folder claims, kept in the transactions that claim |
//! | `file_index(folder, mapping, path, body)` | a mapped directory's last synced state of each path (JSON); `mapping` is the id in the directory's marker, so an index belongs to one directory |
//! | `mapped_dirs(folder, root, mapping)` | where each folder is mapped on this device, and the id of that directory's marker |
//! | `located_files`, `located` | where the chunks of large mapped files lie in the files themselves ([`located`]) |
//!
//! Version 2 replaced version 1's `file_index(folder, path, body)`, whose indexes belonged to a
//! folder rather than to a directory: they are dropped (a directory mapped again without its
//! index is merged with the feed, which never deletes anything). Version 3 added the
//! located chunks, version 4 each folder's claimed bytes (counted from the claims already
//! recorded when a file migrates).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fastcdc::v2020::StreamCDC;
use mesh_core::blob::{chunk_boundaries, ChunkHash, Manifest, AVG_CHUNK, MAX_CHUNK, MIN_CHUNK};
use mesh_core::id::FolderId;
use mesh_core::CoreError;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::any::StoreConfig;
use crate::error::{Result, StoreError};
use crate::sqlite::Durability;
use crate::sqlite::{check_header, identify, migrate, open_error, Schema, BUSY_TIMEOUT};

pub mod located;

pub use located::{LocatedChunk, LocatedFile, Location};

/// Inputs up to this size are read whole and chunked in memory.
const WHOLE_READ_LIMIT: u64 = 4 << 20;
/// Bytes of chunks stored per transaction while ingesting a large input.
const INGEST_BATCH: usize = 8 << 20;
/// Chunks cut but not yet hashed and stored, at most, while ingesting a large input (each at
/// most `MAX_CHUNK`).
const INGEST_QUEUE: usize = 32;

/// The migrations of a blob store file.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE objects (
        hash BLOB PRIMARY KEY NOT NULL,
        size INTEGER NOT NULL,
        data BLOB NOT NULL
    ) STRICT;
    CREATE TABLE refs (
        folder TEXT NOT NULL,
        hash   BLOB NOT NULL,
        PRIMARY KEY (folder, hash)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE file_index (
        folder TEXT NOT NULL,
        path   TEXT NOT NULL,
        body   TEXT NOT NULL,
        PRIMARY KEY (folder, path)
    ) STRICT, WITHOUT ROWID;
    ",
    "
    DROP TABLE file_index;
    CREATE TABLE file_index (
        folder  TEXT NOT NULL,
        mapping TEXT NOT NULL,
        path    TEXT NOT NULL,
        body    TEXT NOT NULL,
        PRIMARY KEY (folder, mapping, path)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE mapped_dirs (
        folder  TEXT PRIMARY KEY NOT NULL,
        root    TEXT NOT NULL,
        mapping TEXT NOT NULL
    ) STRICT;
    ",
    "
    CREATE TABLE located_files (
        folder   TEXT NOT NULL,
        mapping  TEXT NOT NULL,
        key      TEXT NOT NULL,
        path     TEXT NOT NULL,
        size     INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        ino      INTEGER NOT NULL,
        PRIMARY KEY (folder, mapping, key)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE located (
        hash    BLOB NOT NULL,
        folder  TEXT NOT NULL,
        mapping TEXT NOT NULL,
        key     TEXT NOT NULL,
        offset  INTEGER NOT NULL,
        len     INTEGER NOT NULL,
        PRIMARY KEY (hash, folder, mapping, key, offset)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX located_by_file ON located (folder, mapping, key);
    ",
    // 4: each folder's claimed bytes, added to in the transaction that adds claims
    // (`count_claims`) and dropped with the folder's claims (`release_folder`). Not a
    // trigger: a statement that fires one keeps a statement journal, a copy of every 64 KiB
    // page it changes, and ingesting small files took 15% longer with it.
    "
    CREATE TABLE folder_bytes (
        folder TEXT PRIMARY KEY NOT NULL,
        bytes  INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    INSERT INTO folder_bytes (folder, bytes)
        SELECT r.folder, sum(o.size) FROM refs AS r JOIN objects AS o USING (hash)
        GROUP BY r.folder;
    ",
];

const SCHEMA: Schema = Schema {
    application_id: BlobStore::APPLICATION_ID,
    migrations: MIGRATIONS,
};

/// Stored objects by content address, the folders that claim them, and mapped directories'
/// indexes. Cheap to clone (clones share the store); calls block on disk I/O for the SQLite
/// backend, so async code runs them on the blocking pool.
///
/// ```
/// use mesh_store::BlobStore;
/// use mesh_core::blob::ChunkHash;
/// let store = BlobStore::memory();
/// let folder = "f1".parse().unwrap();
/// let h = ChunkHash::of(b"chunk");
/// assert_eq!(store.missing(&folder, &[h]).unwrap(), vec![h]);
/// store.put(&folder, &[(h, b"chunk".to_vec())]).unwrap();
/// assert!(store.missing(&folder, &[h]).unwrap().is_empty());
/// // Another folder has no claim on it, even though the bytes are stored.
/// assert_eq!(store.missing(&"f2".parse().unwrap(), &[h]).unwrap(), vec![h]);
/// assert!(store.put(&folder, &[(h, b"forged".to_vec())]).is_err());
/// ```
#[derive(Clone)]
pub struct BlobStore(Arc<Backend>);

enum Backend {
    Memory(Mutex<MemoryBlobs>),
    Sqlite {
        conn: Mutex<Connection>,
    },
    #[cfg(feature = "postgres")]
    Postgres(crate::postgres::PgObjects),
}

#[derive(Default)]
struct MemoryBlobs {
    objects: HashMap<ChunkHash, Arc<[u8]>>,
    refs: HashSet<(FolderId, ChunkHash)>,
    /// The bytes of the objects each folder claims (`refs`), kept with it.
    folder_bytes: HashMap<FolderId, u64>,
    index: HashMap<(FolderId, String), BTreeMap<String, String>>,
    dirs: HashMap<FolderId, (String, String)>,
    located: HashMap<(FolderId, String, String), located::MemLocated>,
}

impl MemoryBlobs {
    /// Records `folder`'s claim on `hash`, if the object is stored, and counts its bytes
    /// once for the folder.
    fn add_claim(&mut self, folder: &FolderId, hash: ChunkHash) {
        let Some(len) = self.objects.get(&hash).map(|d| d.len() as u64) else {
            return;
        };
        if self.refs.insert((folder.clone(), hash)) {
            *self.folder_bytes.entry(folder.clone()).or_default() += len;
        }
    }
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            Backend::Memory(_) => f.write_str("BlobStore(memory)"),
            Backend::Sqlite { .. } => f.write_str("BlobStore(sqlite)"),
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => f.write_str("BlobStore(postgres)"),
        }
    }
}

/// The error for a blob object that is not stored.
fn not_found(hash: &ChunkHash) -> CoreError {
    CoreError::NotFound {
        kind: "blob object",
        id: hash.to_string(),
    }
}

fn store_err(e: rusqlite::Error) -> StoreError {
    StoreError::sqlite("blob store", e)
}

fn hash_from_sql(bytes: Vec<u8>) -> Result<ChunkHash> {
    let arr: [u8; 32] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        path: "blob store".into(),
        reason: "an object hash is not 32 bytes".into(),
    })?;
    Ok(ChunkHash::from_bytes(arr))
}

/// The chunks of a blob held in memory: each chunk's hash and bytes, in order.
pub fn chunk_in_memory(data: &[u8]) -> Vec<(ChunkHash, &[u8])> {
    chunk_boundaries(data)
        .map(|r| (ChunkHash::of(&data[r.clone()]), &data[r]))
        .collect()
}

/// `folders` as one JSON array, for a statement to read with `json_each` (no limit on how
/// many, one statement).
fn json_list(folders: &[FolderId]) -> Result<String> {
    let names: Vec<&str> = folders.iter().map(FolderId::as_str).collect();
    serde_json::to_string(&names).map_err(|e| StoreError::Backend(e.to_string()))
}

/// Adds `bytes` (of objects newly claimed, each once) to `folder`'s claimed bytes, in the
/// transaction that claimed them.
fn count_claims(conn: &Connection, folder: &FolderId, bytes: u64) -> Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO folder_bytes (folder, bytes) VALUES (?1, ?2)
         ON CONFLICT (folder) DO UPDATE SET bytes = bytes + excluded.bytes",
    )
    .and_then(|mut s| {
        s.execute(params![
            folder.as_str(),
            i64::try_from(bytes).unwrap_or(i64::MAX)
        ])
    })
    .map_err(store_err)?;
    Ok(())
}

/// [`crate::sqlite::in_read`] for the blob store's reads: on a store in rollback-journal
/// mode every transaction takes and drops the file's locks and checks for a journal (eight
/// system calls, 25–40 µs here), so a batch of lookups pays that once.
fn in_read<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    crate::sqlite::in_read(conn, store_err, f)
}

/// The objects `fetch` finds for `hashes`, in order, until `max_bytes` are gathered (the
/// first one found is always taken); the ones it does not find are skipped.
fn gather(
    hashes: &[ChunkHash],
    max_bytes: usize,
    mut fetch: impl FnMut(&ChunkHash) -> Result<Option<Vec<u8>>>,
) -> Result<Vec<(ChunkHash, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut total = 0usize;
    for h in hashes {
        if total >= max_bytes && !out.is_empty() {
            break;
        }
        if let Some(d) = fetch(h)? {
            total += d.len();
            out.push((*h, d));
        }
    }
    Ok(out)
}

/// [`BlobStore::read_sized_for`] on a SQLite connection.
fn read_sized_sqlite(
    conn: &Connection,
    folder: &FolderId,
    hash: &ChunkHash,
    offset: u64,
    max: usize,
) -> Result<Option<(u64, Vec<u8>)>> {
    let row: Option<(i64, i64)> = conn
        .prepare_cached(
            "SELECT o.rowid, o.size FROM refs AS r JOIN objects AS o USING (hash)
             WHERE r.folder = ?1 AND r.hash = ?2",
        )
        .map_err(store_err)?
        .query_row(params![folder.as_str(), &hash.as_bytes()[..]], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(store_err)?;
    let Some((rowid, size)) = row else {
        return Ok(None);
    };
    let size = size.max(0) as u64;
    let from = offset.min(size);
    let want = usize::try_from((size - from).min(max as u64)).unwrap_or(max);
    let mut buf = vec![0u8; want];
    if want > 0 {
        let blob = conn
            .blob_open(rusqlite::MAIN_DB, c"objects", c"data", rowid, true)
            .map_err(store_err)?;
        blob.read_at_exact(&mut buf, from as usize)
            .map_err(store_err)?;
    }
    Ok(Some((size, buf)))
}

/// Reads from one snapshot of a [`BlobStore`], made by [`BlobStore::reading`].
pub struct Reading<'a>(ReadFrom<'a>);

enum ReadFrom<'a> {
    /// A backend without snapshots to share: each read goes to the store.
    Store(&'a BlobStore),
    /// The SQLite connection, inside its read transaction.
    Sqlite(&'a Connection),
}

impl Reading<'_> {
    /// [`BlobStore::read_sized_for`] within this reading.
    pub fn read_sized_for(
        &self,
        folder: &FolderId,
        hash: &ChunkHash,
        offset: u64,
        max: usize,
    ) -> Result<Option<(u64, Vec<u8>)>> {
        match self.0 {
            ReadFrom::Store(s) => s.read_sized_for(folder, hash, offset, max),
            ReadFrom::Sqlite(conn) => read_sized_sqlite(conn, folder, hash, offset, max),
        }
    }
}

impl BlobStore {
    /// The `application_id` in the header of a blob store file (`"MSHB"`).
    pub const APPLICATION_ID: i32 = 0x4d53_4842;

    /// An empty store in memory.
    pub fn memory() -> Self {
        BlobStore(Arc::new(Backend::Memory(Mutex::default())))
    }

    /// The blob store that goes with a replica store: in memory for a memory replica, the
    /// file `<replica file>.blobs` for a SQLite one.
    pub fn for_config(config: &StoreConfig) -> Result<Self> {
        match config {
            StoreConfig::Memory => Ok(Self::memory()),
            StoreConfig::Sqlite(p) => Self::open(Self::path_beside(p), Durability::Full),
            StoreConfig::SqliteWith(p, d) => Self::open(Self::path_beside(p), *d),
        }
    }

    /// The blob store file that goes with the replica file `replica`.
    pub fn path_beside(replica: &Path) -> PathBuf {
        let mut name = replica.as_os_str().to_owned();
        name.push(".blobs");
        PathBuf::from(name)
    }

    /// Opens (or creates) a blob store file. Fails with [`StoreError::Corrupt`] on a
    /// file that is not a blob store and [`StoreError::TooNew`] on a newer one.
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> Result<Self> {
        let path = path.as_ref();
        let location = path.display().to_string();
        check_header(path, &location)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn =
            Connection::open_with_flags(path, flags).map_err(|e| open_error(&location, e))?;
        let fail = |e: rusqlite::Error| open_error(&location, e);
        crate::sqlite::tune(&conn).map_err(fail)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
        let version = identify(&conn, &location, &SCHEMA)?;
        if version == 0 {
            // Objects are up to 256 KiB: large pages keep their overflow chains short. Only
            // a new file can take it.
            conn.pragma_update(None, "page_size", 65_536)
                .map_err(fail)?;
        }
        // A rollback journal, not WAL: new objects are appended to the file and written once
        // (WAL would write every byte twice, to the log and at the checkpoint); only the few
        // b-tree pages a transaction changes are journaled.
        conn.pragma_update_and_check(None, "journal_mode", "TRUNCATE", |r| r.get::<_, String>(0))
            .map_err(fail)?;
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)
            .map_err(fail)?;
        if version < SCHEMA.version() {
            migrate(&mut conn, &location, &SCHEMA)?;
        }
        Ok(BlobStore(Arc::new(Backend::Sqlite {
            conn: Mutex::new(conn),
        })))
    }

    /// Keeps a SQLite store's file locked by its connection until the store is dropped, as
    /// [`SqliteStore::keep_file_locked`](crate::SqliteStore::keep_file_locked) does for a
    /// replica (here it also spares the rollback journal's checks on every transaction);
    /// nothing for the other backends.
    pub fn keep_file_locked(&self) -> Result<()> {
        match self.conn() {
            Some(conn) => crate::sqlite::hold_file(&conn, "blob store"),
            None => Ok(()),
        }
    }

    /// The objects of a PostgreSQL database (a hub's; mapping indexes are not kept there).
    #[cfg(feature = "postgres")]
    pub fn postgres(objects: crate::postgres::PgObjects) -> Self {
        BlobStore(Arc::new(Backend::Postgres(objects)))
    }

    /// Whether calls do disk or network I/O (and so belong on a blocking thread).
    pub fn blocks(&self) -> bool {
        !matches!(&*self.0, Backend::Memory(_))
    }

    fn conn(&self) -> Option<std::sync::MutexGuard<'_, Connection>> {
        match &*self.0 {
            Backend::Sqlite { conn } => Some(conn.lock().unwrap_or_else(|p| p.into_inner())),
            _ => None,
        }
    }

    /// The SQLite connection, or the error for a backend without one (a hub's database keeps
    /// no mapping indexes).
    fn sqlite_conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>> {
        self.conn().ok_or_else(|| {
            StoreError::Config("this blob store keeps no mapping indexes (a hub's database)".into())
        })
    }

    fn mem(&self) -> Option<std::sync::MutexGuard<'_, MemoryBlobs>> {
        match &*self.0 {
            Backend::Memory(m) => Some(m.lock().unwrap_or_else(|p| p.into_inner())),
            _ => None,
        }
    }

    #[cfg(feature = "postgres")]
    fn pg(&self) -> Option<&crate::postgres::PgObjects> {
        match &*self.0 {
            Backend::Postgres(p) => Some(p),
            _ => None,
        }
    }

    #[cfg(not(feature = "postgres"))]
    fn pg(&self) -> Option<&NoPostgres> {
        None
    }
}

/// Stands in for the PostgreSQL backend in builds without it (never made).
#[cfg(not(feature = "postgres"))]
enum NoPostgres {}

#[cfg(not(feature = "postgres"))]
#[allow(clippy::unused_self)]
impl NoPostgres {
    fn lacking(&self, _: Option<&FolderId>, _: &[ChunkHash]) -> Result<Vec<ChunkHash>> {
        match *self {}
    }
    fn put(&self, _: &FolderId, _: &[(ChunkHash, &[u8])]) -> Result<u64> {
        match *self {}
    }
    fn claim(&self, _: &FolderId, _: &[ChunkHash]) -> Result<()> {
        match *self {}
    }
    fn release_folder(&self, _: &FolderId) -> Result<u64> {
        match *self {}
    }
    fn get(&self, _: &ChunkHash) -> Result<Option<Vec<u8>>> {
        match *self {}
    }
    fn get_for(
        &self,
        _: &FolderId,
        _: &[ChunkHash],
        _: usize,
    ) -> Result<Vec<(ChunkHash, Vec<u8>)>> {
        match *self {}
    }
    fn usage(&self) -> Result<(u64, u64)> {
        match *self {}
    }
    fn claimed_bytes(&self, _: &[FolderId]) -> Result<u64> {
        match *self {}
    }
    fn claimed_bytes_bound(&self, _: &[FolderId]) -> Result<u64> {
        match *self {}
    }
    fn claimed_among(&self, _: &[FolderId], _: &[ChunkHash]) -> Result<Vec<ChunkHash>> {
        match *self {}
    }
    fn hashes(&self) -> Result<Vec<ChunkHash>> {
        match *self {}
    }
    fn len_for(&self, _: &FolderId, _: &ChunkHash) -> Result<Option<u64>> {
        match *self {}
    }
    fn read_sized_for(
        &self,
        _: &FolderId,
        _: &ChunkHash,
        _: u64,
        _: usize,
    ) -> Result<Option<(u64, Vec<u8>)>> {
        match *self {}
    }
}

impl BlobStore {
    /// The objects of `hashes` that `folder` has no claim on (in the order given, without
    /// repeats).
    pub fn missing(&self, folder: &FolderId, hashes: &[ChunkHash]) -> Result<Vec<ChunkHash>> {
        self.lacking(Some(folder), hashes)
    }

    /// The objects of `hashes` not stored at all (for any folder).
    pub fn absent(&self, hashes: &[ChunkHash]) -> Result<Vec<ChunkHash>> {
        self.lacking(None, hashes)
    }

    /// The hashes (in order, without repeats) that `folder` has no claim on or, without a
    /// folder, that are not stored at all.
    fn lacking(&self, folder: Option<&FolderId>, hashes: &[ChunkHash]) -> Result<Vec<ChunkHash>> {
        let mut seen = HashSet::with_capacity(hashes.len());
        let wanted = hashes.iter().filter(|h| seen.insert(**h));
        if let Some(p) = self.pg() {
            let wanted: Vec<ChunkHash> = wanted.copied().collect();
            return p.lacking(folder, &wanted);
        }
        if let Some(m) = self.mem() {
            let has = |h: &ChunkHash| match folder {
                Some(f) => m.refs.contains(&(f.clone(), *h)),
                None => m.objects.contains_key(h),
            };
            return Ok(wanted.filter(|h| !has(h)).copied().collect());
        }
        let conn = self.sqlite_conn()?;
        in_read(&conn, |conn| {
            let mut stmt = conn
                .prepare_cached(match folder {
                    Some(_) => "SELECT 1 FROM refs WHERE hash = ?1 AND folder = ?2",
                    None => "SELECT 1 FROM objects WHERE hash = ?1",
                })
                .map_err(store_err)?;
            let mut out = Vec::new();
            for h in wanted {
                let key = &h.as_bytes()[..];
                let found = match folder {
                    Some(f) => stmt.query_row(params![key, f.as_str()], |_| Ok(())),
                    None => stmt.query_row(params![key], |_| Ok(())),
                }
                .optional()
                .map_err(store_err)?;
                if found.is_none() {
                    out.push(*h);
                }
            }
            Ok(out)
        })
    }

    /// Stores objects for `folder` in one transaction, after checking each against its hash
    /// (all or nothing: one mismatch refuses the batch with [`CoreError::InvalidBlob`]).
    /// Returns the bytes newly stored (objects already present cost nothing).
    pub fn put(&self, folder: &FolderId, objects: &[(ChunkHash, Vec<u8>)]) -> Result<u64> {
        for (h, data) in objects {
            if !h.verifies(data) {
                return Err(CoreError::InvalidBlob(format!(
                    "object {h} does not match its content"
                ))
                .into());
            }
        }
        self.put_trusted(folder, objects.iter().map(|(h, d)| (*h, d.as_slice())))
    }

    /// [`BlobStore::put`] for objects the caller hashed itself.
    pub fn put_trusted<'a>(
        &self,
        folder: &FolderId,
        objects: impl IntoIterator<Item = (ChunkHash, &'a [u8])>,
    ) -> Result<u64> {
        let mut added = 0u64;
        if let Some(p) = self.pg() {
            let objects: Vec<(ChunkHash, &[u8])> = objects.into_iter().collect();
            return p.put(folder, &objects);
        }
        if let Some(mut m) = self.mem() {
            for (h, data) in objects {
                if let std::collections::hash_map::Entry::Vacant(v) = m.objects.entry(h) {
                    added += data.len() as u64;
                    v.insert(Arc::from(data));
                }
                m.add_claim(folder, h);
            }
            return Ok(added);
        }
        let mut conn = self.sqlite_conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(store_err)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO objects (hash, size, data) VALUES (?1, ?2, ?3)
                     ON CONFLICT (hash) DO NOTHING",
                )
                .map_err(store_err)?;
            let mut claim = tx
                .prepare_cached("INSERT OR IGNORE INTO refs (folder, hash) VALUES (?1, ?2)")
                .map_err(store_err)?;
            // Looked up first, so that the bytes of an object already held (most of an
            // edited file's) are not handed to the database at all.
            let mut held = tx
                .prepare_cached("SELECT 1 FROM objects WHERE hash = ?1")
                .map_err(store_err)?;
            let mut claimed = 0u64;
            for (h, data) in objects {
                let key = &h.as_bytes()[..];
                let stored = held
                    .query_row(params![key], |_| Ok(()))
                    .optional()
                    .map_err(store_err)?
                    .is_some();
                if !stored {
                    insert
                        .execute(params![key, data.len() as i64, data])
                        .map_err(store_err)?;
                    added += data.len() as u64;
                }
                // (An object's bytes match its hash, so `data`'s length is the stored one.)
                if claim
                    .execute(params![folder.as_str(), &h.as_bytes()[..]])
                    .map_err(store_err)?
                    > 0
                {
                    claimed += data.len() as u64;
                }
            }
            count_claims(&tx, folder, claimed)?;
        }
        tx.commit().map_err(store_err)?;
        Ok(added)
    }

    /// Records `folder`'s claim on those of `hashes` that are stored (for objects this device
    /// already holds under another folder).
    pub fn claim(&self, folder: &FolderId, hashes: &[ChunkHash]) -> Result<()> {
        if let Some(p) = self.pg() {
            return p.claim(folder, hashes);
        }
        if let Some(mut m) = self.mem() {
            for h in hashes {
                m.add_claim(folder, *h);
            }
            return Ok(());
        }
        let mut conn = self.sqlite_conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(store_err)?;
        {
            let mut claim = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO refs (folder, hash)
                     SELECT ?1, hash FROM objects WHERE hash = ?2",
                )
                .map_err(store_err)?;
            let mut size = tx
                .prepare_cached("SELECT size FROM objects WHERE hash = ?1")
                .map_err(store_err)?;
            let mut claimed = 0u64;
            for h in hashes {
                if claim
                    .execute(params![folder.as_str(), &h.as_bytes()[..]])
                    .map_err(store_err)?
                    > 0
                {
                    let n: i64 = size
                        .query_row(params![&h.as_bytes()[..]], |r| r.get(0))
                        .map_err(store_err)?;
                    claimed += n.max(0) as u64;
                }
            }
            count_claims(&tx, folder, claimed)?;
        }
        tx.commit().map_err(store_err)
    }

    /// [`release_folder`](Self::release_folder) for a caller that holds `store`: where both
    /// are on the same PostgreSQL database, the statement runs on the connection the store
    /// holds rather than on a second one from the pool (a request that waited for a second
    /// connection while holding one could wait on itself until the pool's timeout).
    /// Elsewhere the same as `release_folder`.
    pub fn release_folder_in(&self, store: &crate::AnyStore, folder: &FolderId) -> Result<u64> {
        #[cfg(feature = "postgres")]
        if let (Some(p), crate::AnyStore::Postgres(s)) = (self.pg(), store) {
            return p.release_folder_in(s, folder);
        }
        let _ = store;
        self.release_folder(folder)
    }

    /// Drops every claim of `folder` (a deleted folder) and its located files, and removes
    /// the objects no other folder claims; returns how many objects were removed.
    pub fn release_folder(&self, folder: &FolderId) -> Result<u64> {
        if let Some(p) = self.pg() {
            return p.release_folder(folder);
        }
        if let Some(mut m) = self.mem() {
            let mine: Vec<ChunkHash> = m
                .refs
                .iter()
                .filter(|(f, _)| f == folder)
                .map(|(_, h)| *h)
                .collect();
            m.refs.retain(|(f, _)| f != folder);
            m.folder_bytes.remove(folder);
            m.located.retain(|(f, _, _), _| f != folder);
            let still: HashSet<ChunkHash> = m.refs.iter().map(|(_, h)| *h).collect();
            let mut removed = 0;
            for h in mine {
                if !still.contains(&h) && m.objects.remove(&h).is_some() {
                    removed += 1;
                }
            }
            return Ok(removed);
        }
        let mut conn = self.sqlite_conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(store_err)?;
        let removed = tx
            .execute(
                "DELETE FROM objects WHERE hash IN (SELECT hash FROM refs WHERE folder = ?1)
                   AND hash NOT IN (SELECT hash FROM refs WHERE folder != ?1)",
                [folder.as_str()],
            )
            .and_then(|n| {
                tx.execute("DELETE FROM refs WHERE folder = ?1", [folder.as_str()])?;
                tx.execute(
                    "DELETE FROM folder_bytes WHERE folder = ?1",
                    [folder.as_str()],
                )?;
                tx.execute("DELETE FROM located WHERE folder = ?1", [folder.as_str()])?;
                tx.execute(
                    "DELETE FROM located_files WHERE folder = ?1",
                    [folder.as_str()],
                )?;
                Ok(n)
            })
            .map_err(store_err)?;
        tx.commit().map_err(store_err)?;
        Ok(removed as u64)
    }

    /// Chunks everything `reader` yields into objects stored for `folder` (in batches of a
    /// few MiB, so a large file never sits in memory) and stores the blob's manifest last.
    /// `size_hint` (the expected length) picks between reading small inputs whole and
    /// streaming large ones; both cut at the same boundaries.
    pub fn ingest(
        &self,
        folder: &FolderId,
        mut reader: impl std::io::Read,
        size_hint: u64,
    ) -> Result<Manifest> {
        let io = |e: std::io::Error| StoreError::Backend(format!("reading blob content: {e}"));
        let mut chunks: Vec<(ChunkHash, u32)> = Vec::new();
        if size_hint <= WHOLE_READ_LIMIT {
            let mut data = Vec::with_capacity(size_hint as usize);
            reader.read_to_end(&mut data).map_err(io)?;
            let objects = chunk_in_memory(&data);
            chunks.extend(objects.iter().map(|(h, d)| (*h, d.len() as u32)));
            self.put_trusted(folder, objects)?;
        } else {
            let streamed = self.ingest_streamed(Some(folder), reader)?;
            chunks.extend(streamed.into_iter().map(|(h, _, len)| (h, len)));
        }
        let manifest = Manifest::new(chunks)?;
        let encoded = manifest.encode();
        self.put_trusted(folder, [(ChunkHash::of(&encoded), encoded.as_slice())])?;
        Ok(manifest)
    }

    /// Cuts and hashes everything `reader` yields, as [`ingest`](Self::ingest) would, without
    /// storing anything: each chunk's hash, offset and length (for content read in place,
    /// such as a large mapped file whose chunks are then [located](Self::locate)).
    pub fn chunk_streamed(&self, reader: impl std::io::Read) -> Result<Vec<LocatedChunk>> {
        self.ingest_streamed(None, reader)
    }

    /// The streaming half of [`ingest`](Self::ingest), in two stages that overlap: this
    /// thread reads and cuts chunks, a second hashes them and, with a `folder`, stores them in
    /// batches. The queue between them holds at most [`INGEST_QUEUE`] chunks, so memory stays
    /// bounded whatever the input; an error on either side stops both.
    fn ingest_streamed(
        &self,
        folder: Option<&FolderId>,
        reader: impl std::io::Read,
    ) -> Result<Vec<LocatedChunk>> {
        let io = |e: std::io::Error| StoreError::Backend(format!("reading blob content: {e}"));
        let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(INGEST_QUEUE);
        std::thread::scope(|scope| {
            let store = scope.spawn(move || -> Result<Vec<LocatedChunk>> {
                let mut chunks = Vec::new();
                let mut batch: Vec<(ChunkHash, Vec<u8>)> = Vec::new();
                let mut batch_bytes = 0usize;
                for (offset, data) in rx {
                    let h = ChunkHash::of(&data);
                    chunks.push((h, offset, data.len() as u32));
                    let Some(folder) = folder else { continue };
                    batch_bytes += data.len();
                    batch.push((h, data));
                    if batch_bytes >= INGEST_BATCH {
                        self.put_trusted(folder, batch.iter().map(|(h, d)| (*h, d.as_slice())))?;
                        batch.clear();
                        batch_bytes = 0;
                    }
                }
                if let Some(folder) = folder {
                    self.put_trusted(folder, batch.iter().map(|(h, d)| (*h, d.as_slice())))?;
                }
                Ok(chunks)
            });
            let mut read = Ok(());
            for c in StreamCDC::new(reader, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK) {
                match c {
                    Ok(c) => {
                        if tx.send((c.offset, c.data)).is_err() {
                            // A closed queue: the storing side failed, and says why below.
                            break;
                        }
                    }
                    Err(e) => {
                        read = Err(io(e.into()));
                        break;
                    }
                }
            }
            drop(tx);
            let stored = store.join().unwrap_or_else(|_| {
                Err(StoreError::Backend("the blob ingest thread failed".into()))
            });
            read?;
            stored
        })
    }

    /// The manifest of a stored blob.
    pub fn manifest(&self, hash: &ChunkHash) -> Result<Option<Manifest>> {
        match self.get(hash)? {
            Some(bytes) => Ok(Some(Manifest::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Writes a stored blob's content to `out`, chunk by chunk, checking every chunk against
    /// its hash. Fails with [`CoreError::NotFound`] if an object is missing (fetch the blob
    /// first) and [`StoreError::Corrupt`] if one was damaged on disk.
    pub fn write_to(&self, manifest: &ChunkHash, mut out: impl std::io::Write) -> Result<u64> {
        let m = self
            .manifest(manifest)?
            .ok_or_else(|| not_found(manifest))?;
        for c in m.chunks() {
            let data = self.get_checked(&c.hash)?;
            out.write_all(&data)
                .map_err(|e| StoreError::Backend(format!("writing blob content: {e}")))?;
        }
        Ok(m.length())
    }

    /// One stored object, checked against its hash: [`CoreError::NotFound`] if it is not
    /// stored, [`StoreError::Corrupt`] if it was damaged on disk.
    pub fn get_checked(&self, hash: &ChunkHash) -> Result<Vec<u8>> {
        let data = self.get(hash)?.ok_or_else(|| not_found(hash))?;
        if !hash.verifies(&data) {
            return Err(StoreError::Corrupt {
                path: "blob store".into(),
                reason: format!("object {hash} does not match its hash"),
            });
        }
        Ok(data)
    }

    /// One object, whatever folder claims it (for the device's own use).
    pub fn get(&self, hash: &ChunkHash) -> Result<Option<Vec<u8>>> {
        if let Some(p) = self.pg() {
            return p.get(hash);
        }
        if let Some(m) = self.mem() {
            return Ok(m.objects.get(hash).map(|d| d.to_vec()));
        }
        let conn = self.sqlite_conn()?;
        let data = conn
            .prepare_cached("SELECT data FROM objects WHERE hash = ?1")
            .map_err(store_err)?
            .query_row(params![&hash.as_bytes()[..]], |r| r.get(0))
            .optional()
            .map_err(store_err)?;
        Ok(data)
    }

    /// The stored objects of `hashes`, whatever folder claims them, in order, stopping once
    /// `max_bytes` are gathered (the first one found is always returned); absent ones are
    /// skipped. Many small objects in one lookup, for the device's own use; like
    /// [`BlobStore::get`], the bytes are not checked against their hashes.
    ///
    /// ```
    /// use mesh_store::BlobStore;
    /// use mesh_core::blob::ChunkHash;
    /// let store = BlobStore::memory();
    /// let folder = "f1".parse().unwrap();
    /// let (a, b) = (b"first".to_vec(), b"second".to_vec());
    /// let (ha, hb) = (ChunkHash::of(&a), ChunkHash::of(&b));
    /// store.put(&folder, &[(ha, a.clone()), (hb, b)]).unwrap();
    /// let absent = ChunkHash::of(b"never stored");
    /// // The budget is spent by the first: the rest waits for the next call.
    /// assert_eq!(store.get_many(&[absent, ha, hb], 3).unwrap(), vec![(ha, a)]);
    /// ```
    pub fn get_many(
        &self,
        hashes: &[ChunkHash],
        max_bytes: usize,
    ) -> Result<Vec<(ChunkHash, Vec<u8>)>> {
        // On SQLite, one statement and one read transaction for all.
        let Some(conn) = self.conn() else {
            return gather(hashes, max_bytes, |h| self.get(h));
        };
        in_read(&conn, |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT data FROM objects WHERE hash = ?1")
                .map_err(store_err)?;
            gather(hashes, max_bytes, |h| {
                stmt.query_row(params![&h.as_bytes()[..]], |r| r.get(0))
                    .optional()
                    .map_err(store_err)
            })
        })
    }

    /// The objects of `hashes` that `folder` claims, in order, stopping once `max_bytes` are
    /// gathered (the first object is always returned whatever its size). Objects the folder
    /// does not claim are skipped.
    pub fn get_for(
        &self,
        folder: &FolderId,
        hashes: &[ChunkHash],
        max_bytes: usize,
    ) -> Result<Vec<(ChunkHash, Vec<u8>)>> {
        if let Some(p) = self.pg() {
            return p.get_for(folder, hashes, max_bytes);
        }
        if let Some(m) = self.mem() {
            return gather(hashes, max_bytes, |h| {
                Ok(m.refs
                    .contains(&(folder.clone(), *h))
                    .then(|| m.objects.get(h).map(|d| d.to_vec()))
                    .flatten())
            });
        }
        let conn = self.sqlite_conn()?;
        in_read(&conn, |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT o.data FROM refs AS r JOIN objects AS o USING (hash)
                     WHERE r.folder = ?1 AND r.hash = ?2",
                )
                .map_err(store_err)?;
            gather(hashes, max_bytes, |h| {
                stmt.query_row(params![folder.as_str(), &h.as_bytes()[..]], |r| r.get(0))
                    .optional()
                    .map_err(store_err)
            })
        })
    }

    /// The length of one object `folder` claims, or `None` when it claims no such object.
    pub fn len_for(&self, folder: &FolderId, hash: &ChunkHash) -> Result<Option<u64>> {
        if let Some(p) = self.pg() {
            return p.len_for(folder, hash);
        }
        if let Some(m) = self.mem() {
            if !m.refs.contains(&(folder.clone(), *hash)) {
                return Ok(None);
            }
            return Ok(m.objects.get(hash).map(|d| d.len() as u64));
        }
        let conn = self.sqlite_conn()?;
        let size: Option<i64> = conn
            .prepare_cached(
                "SELECT o.size FROM refs AS r JOIN objects AS o USING (hash)
                 WHERE r.folder = ?1 AND r.hash = ?2",
            )
            .map_err(store_err)?
            .query_row(params![folder.as_str(), &hash.as_bytes()[..]], |r| r.get(0))
            .optional()
            .map_err(store_err)?;
        Ok(size.map(|s| s.max(0) as u64))
    }

    /// Up to `max` bytes of one object `folder` claims, from byte `offset` (fewer at its end,
    /// none past it), read without loading the rest of the object; `None` when the folder
    /// claims no such object.
    pub fn read_for(
        &self,
        folder: &FolderId,
        hash: &ChunkHash,
        offset: u64,
        max: usize,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self
            .read_sized_for(folder, hash, offset, max)?
            .map(|(_, data)| data))
    }

    /// [`BlobStore::read_for`] with the object's whole length, found by the same lookup: what
    /// a sender needs to start an object (its length, then its first piece) in one read.
    ///
    /// ```
    /// use mesh_store::BlobStore;
    /// use mesh_core::blob::ChunkHash;
    /// let store = BlobStore::memory();
    /// let folder = "f1".parse().unwrap();
    /// let data = b"twenty bytes of data".to_vec();
    /// let h = ChunkHash::of(&data);
    /// store.put(&folder, &[(h, data)]).unwrap();
    /// assert_eq!(
    ///     store.read_sized_for(&folder, &h, 0, 6).unwrap(),
    ///     Some((20, b"twenty".to_vec()))
    /// );
    /// ```
    pub fn read_sized_for(
        &self,
        folder: &FolderId,
        hash: &ChunkHash,
        offset: u64,
        max: usize,
    ) -> Result<Option<(u64, Vec<u8>)>> {
        if let Some(p) = self.pg() {
            return p.read_sized_for(folder, hash, offset, max);
        }
        if let Some(m) = self.mem() {
            if !m.refs.contains(&(folder.clone(), *hash)) {
                return Ok(None);
            }
            return Ok(m.objects.get(hash).map(|d| {
                let from = usize::try_from(offset).unwrap_or(usize::MAX).min(d.len());
                let piece = d[from..from.saturating_add(max).min(d.len())].to_vec();
                (d.len() as u64, piece)
            }));
        }
        let conn = self.sqlite_conn()?;
        in_read(&conn, |conn| {
            read_sized_sqlite(conn, folder, hash, offset, max)
        })
    }

    /// Runs `f` with a [`Reading`] of this store: on SQLite, every read made through it is
    /// one snapshot, in one read transaction, so a batch of small reads (a fetch answer's
    /// objects) takes the database file's locks and makes SQLite's journal checks once
    /// instead of once per read. The store is busy for other callers until `f` returns: keep
    /// `f` to a bounded batch.
    ///
    /// ```
    /// use mesh_store::BlobStore;
    /// use mesh_core::blob::ChunkHash;
    /// let store = BlobStore::memory();
    /// let folder = "f1".parse().unwrap();
    /// let (a, b) = (b"first".to_vec(), b"second".to_vec());
    /// let (ha, hb) = (ChunkHash::of(&a), ChunkHash::of(&b));
    /// store.put(&folder, &[(ha, a), (hb, b)]).unwrap();
    /// let lengths = store
    ///     .reading(|r| {
    ///         let mut total = 0;
    ///         for h in [ha, hb] {
    ///             total += r.read_sized_for(&folder, &h, 0, 0)?.map_or(0, |(len, _)| len);
    ///         }
    ///         Ok(total)
    ///     })
    ///     .unwrap();
    /// assert_eq!(lengths, 11);
    /// ```
    pub fn reading<T>(&self, f: impl FnOnce(&Reading<'_>) -> Result<T>) -> Result<T> {
        let Some(conn) = self.conn() else {
            return f(&Reading(ReadFrom::Store(self)));
        };
        in_read(&conn, |conn| f(&Reading(ReadFrom::Sqlite(conn))))
    }

    /// Runs `f` holding the store-wide lock `name`: on PostgreSQL every process of the
    /// database waits for it (an advisory lock, released when `f` returns, or when the
    /// connection ends if the process dies); the other backends serve one process, whose
    /// caller serializes its own threads. For a check and the write it admits (the hub's
    /// stored-bytes quota), so that two processes cannot both pass the check on the same
    /// room. `f` gets the store to use inside the section: on PostgreSQL the same objects
    /// over the one connection that holds the lock (so the section never waits for a second
    /// connection while holding one); elsewhere this store.
    pub fn exclusive<T>(&self, name: &str, f: impl FnOnce(&BlobStore) -> T) -> Result<T> {
        #[cfg(feature = "postgres")]
        if let Some(p) = self.pg() {
            return p.exclusive(name, |pinned| {
                f(&BlobStore(Arc::new(Backend::Postgres(pinned.clone()))))
            });
        }
        let _ = name; // (only PostgreSQL has a lock to take)
        Ok(f(self))
    }

    /// The number of objects stored and their total size in bytes.
    pub fn usage(&self) -> Result<(u64, u64)> {
        if let Some(p) = self.pg() {
            return p.usage();
        }
        if let Some(m) = self.mem() {
            let bytes = m.objects.values().map(|d| d.len() as u64).sum();
            return Ok((m.objects.len() as u64, bytes));
        }
        let conn = self.sqlite_conn()?;
        conn.query_row(
            "SELECT count(*), ifnull(sum(size), 0) FROM objects",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )
        .map_err(store_err)
    }

    /// The bytes of the distinct objects any of `folders` claims (an object claimed by two of
    /// them counts once): what a user's folders hold, for the stored-bytes quota.
    pub fn claimed_bytes(&self, folders: &[FolderId]) -> Result<u64> {
        if folders.is_empty() {
            return Ok(0);
        }
        if let Some(p) = self.pg() {
            return p.claimed_bytes(folders);
        }
        if let Some(m) = self.mem() {
            let wanted: HashSet<&FolderId> = folders.iter().collect();
            let hashes: HashSet<&ChunkHash> = m
                .refs
                .iter()
                .filter(|(f, _)| wanted.contains(f))
                .map(|(_, h)| h)
                .collect();
            return Ok(hashes
                .into_iter()
                .filter_map(|h| m.objects.get(h))
                .map(|d| d.len() as u64)
                .sum());
        }
        let conn = self.sqlite_conn()?;
        let list = json_list(folders)?;
        conn.query_row(
            "SELECT ifnull(sum(size), 0) FROM objects WHERE hash IN
               (SELECT hash FROM refs WHERE folder IN (SELECT value FROM json_each(?1)))",
            [list],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n as u64)
        .map_err(store_err)
    }

    /// The sum over `folders` of the bytes each one claims: at least
    /// [`claimed_bytes`](Self::claimed_bytes) (an object claimed by two of them counts
    /// twice here), and the same when none is claimed by two. Read from a total kept per
    /// folder, so its cost grows with the number of folders and not with what they hold: a
    /// quota check compares this first and counts exactly only near its limit.
    ///
    /// ```
    /// use mesh_store::BlobStore;
    /// use mesh_core::blob::ChunkHash;
    /// let store = BlobStore::memory();
    /// let (f1, f2) = ("f1".parse().unwrap(), "f2".parse().unwrap());
    /// let h = ChunkHash::of(b"chunk");
    /// store.put(&f1, &[(h, b"chunk".to_vec())]).unwrap();
    /// store.claim(&f2, &[h]).unwrap();
    /// let both = [f1, f2];
    /// assert_eq!(store.claimed_bytes(&both).unwrap(), 5);
    /// assert_eq!(store.claimed_bytes_bound(&both).unwrap(), 10);
    /// ```
    pub fn claimed_bytes_bound(&self, folders: &[FolderId]) -> Result<u64> {
        if folders.is_empty() {
            return Ok(0);
        }
        if let Some(p) = self.pg() {
            return p.claimed_bytes_bound(folders);
        }
        if let Some(m) = self.mem() {
            let wanted: HashSet<&FolderId> = folders.iter().collect();
            return Ok(wanted
                .into_iter()
                .filter_map(|f| m.folder_bytes.get(f))
                .sum());
        }
        let conn = self.sqlite_conn()?;
        let list = json_list(folders)?;
        conn.prepare_cached(
            "SELECT ifnull(sum(bytes), 0) FROM folder_bytes
             WHERE folder IN (SELECT value FROM json_each(?1))",
        )
        .and_then(|mut s| s.query_row([list], |r| r.get::<_, i64>(0)))
        .map(|n| n.max(0) as u64)
        .map_err(store_err)
    }

    /// Which of `hashes` any of `folders` claims (each once, in no particular order).
    pub fn claimed_among(
        &self,
        folders: &[FolderId],
        hashes: &[ChunkHash],
    ) -> Result<Vec<ChunkHash>> {
        if folders.is_empty() || hashes.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(p) = self.pg() {
            return p.claimed_among(folders, hashes);
        }
        let wanted: HashSet<&ChunkHash> = hashes.iter().collect();
        if let Some(m) = self.mem() {
            let folders: HashSet<&FolderId> = folders.iter().collect();
            let found: HashSet<ChunkHash> = m
                .refs
                .iter()
                .filter(|(f, h)| folders.contains(f) && wanted.contains(h))
                .map(|(_, h)| *h)
                .collect();
            return Ok(found.into_iter().collect());
        }
        let conn = self.sqlite_conn()?;
        let list = json_list(folders)?;
        in_read(&conn, |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT 1 FROM refs WHERE hash = ?1
                       AND folder IN (SELECT value FROM json_each(?2)) LIMIT 1",
                )
                .map_err(store_err)?;
            let mut found = Vec::new();
            for h in wanted {
                let hit = stmt
                    .query_row(params![&h.as_bytes()[..], &list], |_| Ok(()))
                    .optional()
                    .map_err(store_err)?;
                if hit.is_some() {
                    found.push(*h);
                }
            }
            Ok(found)
        })
    }

    /// Every hash stored (for tests and checks).
    pub fn hashes(&self) -> Result<Vec<ChunkHash>> {
        if let Some(p) = self.pg() {
            return p.hashes();
        }
        if let Some(m) = self.mem() {
            return Ok(m.objects.keys().copied().collect());
        }
        let conn = self.sqlite_conn()?;
        let mut stmt = conn
            .prepare("SELECT hash FROM objects")
            .map_err(store_err)?;
        let rows = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .map_err(store_err)?;
        rows.map(|r| hash_from_sql(r.map_err(store_err)?)).collect()
    }

    /// A mapped directory's index (the directory whose marker holds the id `mapping`): path →
    /// the JSON its mapping stored.
    pub fn index_load(&self, folder: &FolderId, mapping: &str) -> Result<BTreeMap<String, String>> {
        if let Some(m) = self.mem() {
            let key = (folder.clone(), mapping.to_owned());
            return Ok(m.index.get(&key).cloned().unwrap_or_default());
        }
        let conn = self.sqlite_conn()?;
        let mut stmt = conn
            .prepare_cached("SELECT path, body FROM file_index WHERE folder = ?1 AND mapping = ?2")
            .map_err(store_err)?;
        let rows = stmt
            .query_map(params![folder.as_str(), mapping], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(store_err)?;
        rows.map(|r| r.map_err(store_err)).collect()
    }

    /// Updates a mapped directory's index in one transaction: `Some(body)` sets a path,
    /// `None` removes it (and forgets where its chunks lay, if it was located).
    pub fn index_update(
        &self,
        folder: &FolderId,
        mapping: &str,
        changes: &[(String, Option<String>)],
    ) -> Result<()> {
        if let Some(mut m) = self.mem() {
            let index = m
                .index
                .entry((folder.clone(), mapping.to_owned()))
                .or_default();
            for (path, body) in changes {
                match body {
                    Some(b) => index.insert(path.clone(), b.clone()),
                    None => index.remove(path),
                };
            }
            for (path, body) in changes {
                if body.is_none() {
                    m.located
                        .remove(&(folder.clone(), mapping.to_owned(), path.clone()));
                }
            }
            return Ok(());
        }
        let mut conn = self.sqlite_conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(store_err)?;
        {
            let mut set = tx
                .prepare_cached(
                    "INSERT INTO file_index (folder, mapping, path, body) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (folder, mapping, path) DO UPDATE SET body = excluded.body",
                )
                .map_err(store_err)?;
            let mut del = tx
                .prepare_cached(
                    "DELETE FROM file_index WHERE folder = ?1 AND mapping = ?2 AND path = ?3",
                )
                .map_err(store_err)?;
            for (path, body) in changes {
                match body {
                    Some(b) => set.execute(params![folder.as_str(), mapping, path, b]),
                    None => del.execute(params![folder.as_str(), mapping, path]),
                }
                .map_err(store_err)?;
                if body.is_none() {
                    located::forget(&tx, folder, mapping, path)?;
                }
            }
        }
        tx.commit().map_err(store_err)
    }

    /// Where `folder` is mapped on this device: the directory and the mapping id in its marker.
    pub fn mapped_dir(&self, folder: &FolderId) -> Result<Option<(String, String)>> {
        if let Some(m) = self.mem() {
            return Ok(m.dirs.get(folder).cloned());
        }
        let conn = self.sqlite_conn()?;
        conn.query_row(
            "SELECT root, mapping FROM mapped_dirs WHERE folder = ?1",
            params![folder.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(store_err)
    }

    /// Records where `folder` is mapped on this device (`None`: nowhere). Indexes are kept:
    /// they belong to their directories, which may be mapped again.
    pub fn set_mapped_dir(&self, folder: &FolderId, dir: Option<(&str, &str)>) -> Result<()> {
        if let Some(mut m) = self.mem() {
            match dir {
                Some((root, mapping)) => {
                    m.dirs
                        .insert(folder.clone(), (root.to_owned(), mapping.to_owned()));
                }
                None => {
                    m.dirs.remove(folder);
                }
            }
            return Ok(());
        }
        let conn = self.sqlite_conn()?;
        match dir {
            Some((root, mapping)) => conn.execute(
                "INSERT INTO mapped_dirs (folder, root, mapping) VALUES (?1, ?2, ?3)
                 ON CONFLICT (folder) DO UPDATE SET root = excluded.root, mapping = excluded.mapping",
                params![folder.as_str(), root, mapping],
            ),
            None => conn.execute(
                "DELETE FROM mapped_dirs WHERE folder = ?1",
                params![folder.as_str()],
            ),
        }
        .map_err(store_err)?;
        Ok(())
    }
}
