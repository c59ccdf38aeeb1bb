//! Blob objects on PostgreSQL: the object half of [`BlobStore`](crate::BlobStore) (objects by
//! content address and the folders that claim them). A device's mapping indexes are not kept
//! here: a hub has none.

use mesh_core::blob::ChunkHash;
use mesh_core::id::FolderId;

use super::database::{block, PgDatabase};
use super::migrations::pg;
use crate::error::{Result, StoreError};

/// The objects of a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgObjects {
    db: PgDatabase,
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
        PgObjects { db }
    }

    /// Those of `hashes` (already without repeats, in order) that `folder` has no claim on
    /// or, without a folder, that are not stored.
    pub(crate) fn lacking(
        &self,
        folder: Option<&FolderId>,
        hashes: &[ChunkHash],
    ) -> Result<Vec<ChunkHash>> {
        let c = self.db.connection()?;
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

    /// Runs `f` holding the session advisory lock named `name` (on a connection of its own,
    /// so `f` may use the pool; keyed like the replica store's scope locks): every process of
    /// the database waits for it. If releasing
    /// fails, the connection is dropped instead of going back to the pool, which ends the
    /// session and its locks.
    pub(crate) fn exclusive<T>(&self, name: &str, f: impl FnOnce() -> T) -> Result<T> {
        let c = self.db.connection()?;
        block(c.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", &[&name]))
            .map_err(pg("taking an advisory lock"))?;
        let out = f();
        if block(c.execute(
            "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
            &[&name],
        ))
        .is_err()
        {
            drop(deadpool_postgres::Object::take(c));
        }
        Ok(out)
    }

    /// Stores objects (already checked) for `folder` in one transaction; the bytes newly
    /// stored.
    pub(crate) fn put(&self, folder: &FolderId, objects: &[(ChunkHash, &[u8])]) -> Result<u64> {
        let mut c = self.db.connection()?;
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
                "INSERT INTO mesh_object_refs (folder, hash)
                 SELECT $1, h FROM unnest($2::bytea[]) AS h ON CONFLICT DO NOTHING",
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
        let c = self.db.connection()?;
        block(c.execute(
            "INSERT INTO mesh_object_refs (folder, hash)
             SELECT $1, hash FROM mesh_objects WHERE hash = ANY($2) ON CONFLICT DO NOTHING",
            &[&folder.as_str(), &keys(hashes)],
        ))
        .map_err(pg("claiming objects"))?;
        Ok(())
    }

    /// Drops every claim of `folder` and the objects no other folder claims; returns how
    /// many objects were removed. One statement: the claims and the objects go together.
    pub(crate) fn release_folder(&self, folder: &FolderId) -> Result<u64> {
        let c = self.db.connection()?;
        let n = block(c.execute(
            "WITH r AS (DELETE FROM mesh_object_refs WHERE folder = $1 RETURNING hash)
             DELETE FROM mesh_objects o
             WHERE o.hash IN (SELECT hash FROM r)
               AND NOT EXISTS (SELECT 1 FROM mesh_object_refs x
                               WHERE x.hash = o.hash AND x.folder <> $1)",
            &[&folder.as_str()],
        ))
        .map_err(pg("releasing a folder's objects"))?;
        Ok(n)
    }

    /// One object, whatever folder claims it.
    pub(crate) fn get(&self, hash: &ChunkHash) -> Result<Option<Vec<u8>>> {
        let c = self.db.connection()?;
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
        let c = self.db.connection()?;
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
        let c = self.db.connection()?;
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
        let c = self.db.connection()?;
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
        let c = self.db.connection()?;
        let r = block(c.query_one(
            "SELECT count(*), coalesce(sum(size), 0)::bigint FROM mesh_objects",
            &[],
        ))
        .map_err(pg("measuring objects"))?;
        Ok((r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64))
    }

    /// The bytes of the distinct objects any of `folders` claims.
    pub(crate) fn claimed_bytes(&self, folders: &[FolderId]) -> Result<u64> {
        let c = self.db.connection()?;
        let names: Vec<&str> = folders.iter().map(FolderId::as_str).collect();
        let r = block(c.query_one(
            "SELECT coalesce(sum(size), 0)::bigint FROM mesh_objects
             WHERE hash IN (SELECT hash FROM mesh_object_refs WHERE folder = ANY($1))",
            &[&names],
        ))
        .map_err(pg("measuring a user's objects"))?;
        Ok(r.get::<_, i64>(0) as u64)
    }

    /// Which of `hashes` any of `folders` claims.
    pub(crate) fn claimed_among(
        &self,
        folders: &[FolderId],
        hashes: &[ChunkHash],
    ) -> Result<Vec<ChunkHash>> {
        let c = self.db.connection()?;
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
        let c = self.db.connection()?;
        let rows =
            block(c.query("SELECT hash FROM mesh_objects", &[])).map_err(pg("listing objects"))?;
        rows.into_iter().map(|r| hash_from_sql(r.get(0))).collect()
    }
}
