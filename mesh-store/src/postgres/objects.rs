//! Blob objects on PostgreSQL: the object half of [`BlobStore`](crate::BlobStore) (objects by
//! content address and the folders that claim them). A device's mapping indexes are not kept
//! here: a hub has none.

use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use deadpool_postgres::Object;
use mesh_core::blob::ChunkHash;
use mesh_core::id::FolderId;

use super::database::{block, PgDatabase};
use super::migrations::pg;
use crate::error::{Result, StoreError};

/// The objects of a PostgreSQL database.
#[derive(Clone)]
pub struct PgObjects {
    db: PgDatabase,
    /// Inside [`exclusive`](Self::exclusive): the one connection every statement uses (the
    /// one that holds the lock), so that the section never asks the pool for a second.
    pinned: Option<Arc<Mutex<Object>>>,
}

impl std::fmt::Debug for PgObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgObjects")
            .field("db", &self.db)
            .field("pinned", &self.pinned.is_some())
            .finish()
    }
}

/// A connection for one method: from the pool, or the pinned one.
// (One lives on the stack for one method's statements; boxing it would allocate per call.)
#[allow(clippy::large_enum_variant)]
enum Conn<'a> {
    Pooled(Object),
    Pinned(MutexGuard<'a, Object>),
}

impl std::ops::Deref for Conn<'_> {
    type Target = Object;
    fn deref(&self) -> &Object {
        match self {
            Conn::Pooled(c) => c,
            Conn::Pinned(c) => c,
        }
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Object {
        match self {
            Conn::Pooled(c) => c,
            Conn::Pinned(c) => c,
        }
    }
}

/// The pinned connection; an error, not a wait, if a statement on it is still running (a
/// section that used the store from two threads at once).
fn take_pinned(pinned: &Mutex<Object>) -> Result<MutexGuard<'_, Object>> {
    match pinned.try_lock() {
        Ok(g) => Ok(g),
        Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
        Err(TryLockError::WouldBlock) => Err(StoreError::Backend(
            "postgres: the locked section's connection is already in use".into(),
        )),
    }
}

/// An exclusive section's lock, released when it is dropped.
struct Section<'a> {
    pinned: Option<Arc<Mutex<Object>>>,
    name: &'a str,
    /// Whether the section took the connection from the pool (and so closes it if the lock
    /// cannot be released).
    owned: bool,
}

impl Drop for Section<'_> {
    fn drop(&mut self) {
        let Some(pinned) = self.pinned.take() else {
            return;
        };
        let unlocked = take_pinned(&pinned).is_ok_and(|c| {
            block(c.execute(
                "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
                &[&self.name],
            ))
            .is_ok()
        });
        if !unlocked && self.owned {
            // Closed rather than pooled with the lock still held (if a copy of the pinned
            // objects was kept, the connection closes when that copy goes).
            if let Ok(m) = Arc::try_unwrap(pinned) {
                drop(Object::take(
                    m.into_inner().unwrap_or_else(|p| p.into_inner()),
                ));
            }
        }
    }
}

fn hash_from_sql(bytes: Vec<u8>) -> Result<ChunkHash> {
    let arr: [u8; 32] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        path: "postgres: mesh_objects".into(),
        reason: "an object hash is not 32 bytes".into(),
    })?;
    Ok(ChunkHash::from_bytes(arr))
}

fn keys(hashes: &[ChunkHash]) -> Vec<Vec<u8>> {
    hashes.iter().map(|h| h.as_bytes().to_vec()).collect()
}

impl PgObjects {
    /// The objects of a migrated database.
    pub fn new(db: PgDatabase) -> Self {
        PgObjects { db, pinned: None }
    }

    /// The connection a method uses: the pinned one inside a locked section, else one from
    /// the pool.
    fn conn(&self) -> Result<Conn<'_>> {
        match &self.pinned {
            Some(p) => take_pinned(p).map(Conn::Pinned),
            None => self.db.connection().map(Conn::Pooled),
        }
    }

    /// Those of `hashes` (already without repeats, in order) that `folder` has no claim on
    /// or, without a folder, that are not stored.
    pub(crate) fn lacking(
        &self,
        folder: Option<&FolderId>,
        hashes: &[ChunkHash],
    ) -> Result<Vec<ChunkHash>> {
        let c = self.conn()?;
        let rows = match folder {
            Some(f) => block(c.query(
                "SELECT hash FROM mesh_object_refs WHERE folder = $1 AND hash = ANY($2)",
                &[&f.as_str(), &keys(hashes)],
            )),
            None => block(c.query(
                "SELECT hash FROM mesh_objects WHERE hash = ANY($1)",
                &[&keys(hashes)],
            )),
        }
        .map_err(pg("looking up objects"))?;
        let have: std::collections::HashSet<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
        Ok(hashes
            .iter()
            .filter(|h| !have.contains(&h.as_bytes()[..]))
            .copied()
            .collect())
    }

    /// Runs `f` holding the session advisory lock named `name` (keyed like the replica
    /// store's scope locks): every process of the database waits for it. `f` gets these
    /// objects pinned to the connection that holds the lock, and must use them, not the pool:
    /// a section that waited for a second connection while holding one could wait on itself
    /// until the pool's timeout (a pool of one, or every connection held by sections waiting
    /// for the lock). If releasing fails, the connection is dropped instead of going back to
    /// the pool, which ends the session and its locks.
    pub(crate) fn exclusive<T>(&self, name: &str, f: impl FnOnce(&PgObjects) -> T) -> Result<T> {
        let pinned = match &self.pinned {
            Some(p) => p.clone(),
            None => Arc::new(Mutex::new(self.db.connection()?)),
        };
        {
            let c = take_pinned(&pinned)?;
            block(c.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", &[&name]))
                .map_err(pg("taking an advisory lock"))?;
        }
        // Released when the section ends, also if `f` panics: a connection must never go back
        // to the pool with the lock held (every later section, in every process, would wait
        // for it for good).
        let section = Section {
            pinned: Some(pinned),
            name,
            owned: self.pinned.is_none(),
        };
        let view = PgObjects {
            db: self.db.clone(),
            pinned: section.pinned.clone(),
        };
        let out = f(&view);
        drop(view);
        drop(section);
        Ok(out)
    }

    /// Stores objects (already checked) for `folder` in one transaction; the bytes newly
    /// stored.
    pub(crate) fn put(&self, folder: &FolderId, objects: &[(ChunkHash, &[u8])]) -> Result<u64> {
        let mut c = self.conn()?;
        let hashes: Vec<Vec<u8>> = objects.iter().map(|(h, _)| h.as_bytes().to_vec()).collect();
        let sizes: Vec<i64> = objects.iter().map(|(_, d)| d.len() as i64).collect();
        let datas: Vec<&[u8]> = objects.iter().map(|(_, d)| *d).collect();
        block(async {
            let tx = c.transaction().await?;
            let added: Option<i64> = tx
                .query_one(
                    "WITH ins AS (
                        INSERT INTO mesh_objects (hash, size, data)
                        SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bytea[])
                        ON CONFLICT (hash) DO NOTHING RETURNING size)
                     SELECT sum(size)::bigint FROM ins",
                    &[&hashes, &sizes, &datas],
                )
                .await?
                .get(0);
            tx.execute(
                format!(
                    "WITH c AS (INSERT INTO mesh_object_refs (folder, hash)
                       SELECT $1, h FROM unnest($2::bytea[]) AS h
                       ON CONFLICT DO NOTHING RETURNING hash)
                     {COUNT_CLAIMS}"
                )
                .as_str(),
                &[&folder.as_str(), &hashes],
            )
            .await?;
            tx.commit().await?;
            Ok(added.unwrap_or(0).max(0) as u64)
        })
        .map_err(pg("storing objects"))
    }

    /// Records `folder`'s claim on those of `hashes` that are stored.
    pub(crate) fn claim(&self, folder: &FolderId, hashes: &[ChunkHash]) -> Result<()> {
        let c = self.conn()?;
        block(
            c.execute(
                format!(
                    "WITH c AS (INSERT INTO mesh_object_refs (folder, hash)
                   SELECT $1, hash FROM mesh_objects WHERE hash = ANY($2)
                   ON CONFLICT DO NOTHING RETURNING hash)
                 {COUNT_CLAIMS}"
                )
                .as_str(),
                &[&folder.as_str(), &keys(hashes)],
            ),
        )
        .map_err(pg("claiming objects"))?;
        Ok(())
    }

    /// Drops every claim of `folder` and the objects no other folder claims; returns how
    /// many objects were removed. One statement: the claims and the objects go together.
    pub(crate) fn release_folder(&self, folder: &FolderId) -> Result<u64> {
        let c = self.conn()?;
        release_folder_on(&c, folder)
    }

    /// [`release_folder`](Self::release_folder) on the connection `store` holds, when it is
    /// a connection to this database (a hub purging a deleted folder while its request holds
    /// that connection: asking the pool for a second one could wait on itself, up to the
    /// pool's timeout, when the pool has no other); on one of its own otherwise.
    pub(crate) fn release_folder_in(
        &self,
        store: &super::PgStore,
        folder: &FolderId,
    ) -> Result<u64> {
        if store.database().same(&self.db) {
            release_folder_on(store.connection(), folder)
        } else {
            self.release_folder(folder)
        }
    }

    /// One object, whatever folder claims it.
    pub(crate) fn get(&self, hash: &ChunkHash) -> Result<Option<Vec<u8>>> {
        let c = self.conn()?;
        Ok(block(c.query_opt(
            "SELECT data FROM mesh_objects WHERE hash = $1",
            &[&&hash.as_bytes()[..]],
        ))
        .map_err(pg("reading an object"))?
        .map(|r| r.get(0)))
    }

    /// The objects of `hashes` that `folder` claims, in order, until `max_bytes` (the first
    /// always), one query per object so that memory stays at one object plus the answer.
    pub(crate) fn get_for(
        &self,
        folder: &FolderId,
        hashes: &[ChunkHash],
        max_bytes: usize,
    ) -> Result<Vec<(ChunkHash, Vec<u8>)>> {
        let c = self.conn()?;
        let mut out = Vec::new();
        let mut total = 0usize;
        for h in hashes {
            if total >= max_bytes && !out.is_empty() {
                break;
            }
            let row = block(c.query_opt(
                "SELECT o.data FROM mesh_object_refs r JOIN mesh_objects o USING (hash)
                 WHERE r.folder = $1 AND r.hash = $2",
                &[&folder.as_str(), &&h.as_bytes()[..]],
            ))
            .map_err(pg("reading objects"))?;
            if let Some(r) = row {
                let d: Vec<u8> = r.get(0);
                total += d.len();
                out.push((*h, d));
            }
        }
        Ok(out)
    }

    /// The length of one object `folder` claims.
    pub(crate) fn len_for(&self, folder: &FolderId, hash: &ChunkHash) -> Result<Option<u64>> {
        let c = self.conn()?;
        Ok(block(c.query_opt(
            "SELECT o.size FROM mesh_object_refs r JOIN mesh_objects o USING (hash)
             WHERE r.folder = $1 AND r.hash = $2",
            &[&folder.as_str(), &&hash.as_bytes()[..]],
        ))
        .map_err(pg("reading an object's length"))?
        .map(|r| r.get::<_, i64>(0).max(0) as u64))
    }

    /// The length of one object `folder` claims and up to `max` bytes of it from `offset`
    /// (the server cuts the piece: the rest of the object is not sent).
    pub(crate) fn read_sized_for(
        &self,
        folder: &FolderId,
        hash: &ChunkHash,
        offset: u64,
        max: usize,
    ) -> Result<Option<(u64, Vec<u8>)>> {
        let c = self.conn()?;
        // Objects are at most 64 MiB (`MAX_OBJECT`): 32-bit positions, as `substring` takes.
        let from = i32::try_from(offset)
            .unwrap_or(i32::MAX - 1)
            .saturating_add(1);
        let len = i32::try_from(max).unwrap_or(i32::MAX);
        Ok(block(c.query_opt(
            "SELECT o.size, substring(o.data FROM $3 FOR $4) FROM mesh_object_refs r
             JOIN mesh_objects o USING (hash) WHERE r.folder = $1 AND r.hash = $2",
            &[&folder.as_str(), &&hash.as_bytes()[..], &from, &len],
        ))
        .map_err(pg("reading an object"))?
        .map(|r| (r.get::<_, i64>(0).max(0) as u64, r.get(1))))
    }

    /// The number of objects and their total size.
    pub(crate) fn usage(&self) -> Result<(u64, u64)> {
        let c = self.conn()?;
        let r = block(c.query_one(
            "SELECT count(*), coalesce(sum(size), 0)::bigint FROM mesh_objects",
            &[],
        ))
        .map_err(pg("measuring objects"))?;
        Ok((r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64))
    }

    /// The bytes of the distinct objects any of `folders` claims.
    pub(crate) fn claimed_bytes(&self, folders: &[FolderId]) -> Result<u64> {
        let c = self.conn()?;
        let names: Vec<&str> = folders.iter().map(FolderId::as_str).collect();
        let r = block(c.query_one(
            "SELECT coalesce(sum(size), 0)::bigint FROM mesh_objects
             WHERE hash IN (SELECT hash FROM mesh_object_refs WHERE folder = ANY($1))",
            &[&names],
        ))
        .map_err(pg("measuring a user's objects"))?;
        Ok(r.get::<_, i64>(0) as u64)
    }

    /// The sum of each of `folders`' claimed bytes, from their kept totals.
    pub(crate) fn claimed_bytes_bound(&self, folders: &[FolderId]) -> Result<u64> {
        let c = self.conn()?;
        let names: Vec<&str> = folders.iter().map(FolderId::as_str).collect();
        let r = block(c.query_one(
            "SELECT coalesce(sum(bytes), 0)::bigint FROM mesh_folder_bytes
             WHERE folder = ANY($1)",
            &[&names],
        ))
        .map_err(pg("measuring a user's folders"))?;
        Ok(r.get::<_, i64>(0).max(0) as u64)
    }

    /// Which of `hashes` any of `folders` claims.
    pub(crate) fn claimed_among(
        &self,
        folders: &[FolderId],
        hashes: &[ChunkHash],
    ) -> Result<Vec<ChunkHash>> {
        let c = self.conn()?;
        let names: Vec<&str> = folders.iter().map(FolderId::as_str).collect();
        let rows = block(c.query(
            "SELECT DISTINCT hash FROM mesh_object_refs WHERE folder = ANY($1) AND hash = ANY($2)",
            &[&names, &keys(hashes)],
        ))
        .map_err(pg("finding a user's objects"))?;
        rows.into_iter().map(|r| hash_from_sql(r.get(0))).collect()
    }

    /// Every hash stored.
    pub(crate) fn hashes(&self) -> Result<Vec<ChunkHash>> {
        let c = self.conn()?;
        let rows =
            block(c.query("SELECT hash FROM mesh_objects", &[])).map_err(pg("listing objects"))?;
        rows.into_iter().map(|r| hash_from_sql(r.get(0))).collect()
    }
}

/// The end of a statement that claims objects for folder `$1` in a data-modifying `WITH c`
/// returning the hashes newly claimed: adds their bytes to the folder's total, in the same
/// statement (a claim already recorded returns nothing, so nothing counts twice).
const COUNT_CLAIMS: &str = "INSERT INTO mesh_folder_bytes (folder, bytes)
     SELECT $1, sum(o.size) FROM c JOIN mesh_objects o USING (hash) HAVING count(*) > 0
     ON CONFLICT (folder) DO UPDATE SET bytes = mesh_folder_bytes.bytes + EXCLUDED.bytes";

fn release_folder_on(c: &tokio_postgres::Client, folder: &FolderId) -> Result<u64> {
    block(c.execute(
        "WITH r AS (DELETE FROM mesh_object_refs WHERE folder = $1 RETURNING hash),
              t AS (DELETE FROM mesh_folder_bytes WHERE folder = $1)
         DELETE FROM mesh_objects o
         WHERE o.hash IN (SELECT hash FROM r)
           AND NOT EXISTS (SELECT 1 FROM mesh_object_refs x
                           WHERE x.hash = o.hash AND x.folder <> $1)",
        &[&folder.as_str()],
    ))
    .map_err(pg("releasing a folder's objects"))
}
