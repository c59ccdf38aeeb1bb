//! Chunks located in mapped files: where a chunk of a large mapped file can be read, instead of
//! a copy of it in the store.
//!
//! A device that publishes a large file of a mapped directory records, per file, where each of
//! its chunks lies (`offset`, `len`) and what the file was when it was read (size,
//! modification time, inode). Uploads and peers then read the chunks from the file itself.
//! Nothing here is trusted: a reader checks that the file is still the one recorded and that
//! the bytes match the chunk's hash, and takes a chunk whose file changed as unavailable.
//!
//! Tables (schema version 3):
//!
//! | table | holds |
//! |---|---|
//! | `located_files(folder, mapping, key, path, size, mtime_ns, ino)` | one row per located file, by its mapping's index key |
//! | `located(hash, folder, mapping, key, offset, len)` | where each chunk of a located file lies |

use std::collections::HashMap;

use mesh_core::blob::ChunkHash;
use mesh_core::id::FolderId;
use rusqlite::{params, TransactionBehavior};

use super::{hash_from_sql, store_err, BlobStore};
use crate::error::{Result, StoreError};

/// Candidate locations returned per chunk, at most (a chunk held by many files, such as a run
/// of zeros, is read from the first that still holds it).
pub const LOCATIONS_PER_CHUNK: usize = 4;

/// Hashes looked up per statement.
const LOOKUP_GROUP: usize = 256;

/// A mapped file whose chunks are read from the file itself, as it was when it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedFile {
    /// The file's key in its mapping's index (its case-folded path).
    pub key: String,
    /// The file's path relative to the mapped directory.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time, in nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Its inode number (0: unknown).
    pub ino: u64,
}

/// Where one chunk may be read: `len` bytes at `offset` of a located file of a mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The chunk's hash.
    pub hash: ChunkHash,
    /// The folder whose mapping holds the file.
    pub folder: FolderId,
    /// The id of the mapping (the directory's marker) that recorded it.
    pub mapping: String,
    /// The file, as it was when its chunks were recorded.
    pub file: LocatedFile,
    /// Where the chunk starts in the file.
    pub offset: u64,
    /// The chunk's length.
    pub len: u32,
}

/// One chunk of a located file: hash, offset, length.
pub type LocatedChunk = (ChunkHash, u64, u32);

/// A located file and its chunks, in the memory backend.
pub(super) type MemLocated = (LocatedFile, Vec<LocatedChunk>);

fn no_locations() -> StoreError {
    StoreError::Config("this blob store keeps no mapped files (a hub's database)".into())
}

impl BlobStore {
    /// Whether this store can record located chunks (memory and SQLite; a hub's PostgreSQL
    /// database cannot).
    pub fn locates(&self) -> bool {
        self.pg().is_none()
    }

    /// Records where the chunks of a mapped file lie, replacing what was recorded for the same
    /// key of the same mapping.
    ///
    /// ```
    /// use mesh_store::BlobStore;
    /// use mesh_store::blobs::LocatedFile;
    /// use mesh_core::blob::ChunkHash;
    /// let store = BlobStore::memory();
    /// let folder = "f1".parse().unwrap();
    /// let file = LocatedFile { key: "a.bin".into(), path: "a.bin".into(), size: 10, mtime_ns: 1, ino: 7 };
    /// let h = ChunkHash::of(b"0123456789");
    /// store.locate(&folder, "m1", &file, &[(h, 0, 10)]).unwrap();
    /// let found = store.locations(Some(&folder), &[h]).unwrap();
    /// assert_eq!((found[0].offset, found[0].len), (0, 10));
    /// // Not an object of the store: `missing` still names it.
    /// assert_eq!(store.missing(&folder, &[h]).unwrap(), vec![h]);
    /// ```
    pub fn locate(
        &self,
        folder: &FolderId,
        mapping: &str,
        file: &LocatedFile,
        chunks: &[LocatedChunk],
    ) -> Result<()> {
        if self.pg().is_some() {
            return Err(no_locations());
        }
        if let Some(mut m) = self.mem() {
            m.located.insert(
                (folder.clone(), mapping.to_owned(), file.key.clone()),
                (file.clone(), chunks.to_vec()),
            );
            return Ok(());
        }
        let mut conn = self.sqlite_conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(store_err)?;
        {
            forget(&tx, folder, mapping, &file.key)?;
            tx.prepare_cached(
                "INSERT INTO located_files (folder, mapping, key, path, size, mtime_ns, ino)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    folder.as_str(),
                    mapping,
                    file.key,
                    file.path,
                    file.size as i64,
                    file.mtime_ns,
                    file.ino as i64
                ])
            })
            .map_err(store_err)?;
            let mut put = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO located (hash, folder, mapping, key, offset, len)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(store_err)?;
            for (h, offset, len) in chunks {
                put.execute(params![
                    &h.as_bytes()[..],
                    folder.as_str(),
                    mapping,
                    file.key,
                    *offset as i64,
                    i64::from(*len)
                ])
                .map_err(store_err)?;
            }
        }
        tx.commit().map_err(store_err)
    }

    /// Forgets the located files of `keys` in a mapping (files deleted, or replaced by a
    /// remote version).
    pub fn unlocate(&self, folder: &FolderId, mapping: &str, keys: &[String]) -> Result<()> {
        if self.pg().is_some() {
            return Err(no_locations());
        }
        if let Some(mut m) = self.mem() {
            for k in keys {
                m.located
                    .remove(&(folder.clone(), mapping.to_owned(), k.clone()));
            }
            return Ok(());
        }
        let mut conn = self.sqlite_conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(store_err)?;
        for k in keys {
            forget(&tx, folder, mapping, k)?;
        }
        tx.commit().map_err(store_err)
    }

    /// Whether any file is located, in `folder`'s mappings (`None`: in any folder's): a
    /// cheap question that spares looking up chunk by chunk on devices that locate nothing.
    pub fn has_located(&self, folder: Option<&FolderId>) -> Result<bool> {
        if self.pg().is_some() {
            return Ok(false);
        }
        if let Some(m) = self.mem() {
            return Ok(m
                .located
                .keys()
                .any(|(f, _, _)| folder.is_none_or(|want| want == f)));
        }
        let conn = self.sqlite_conn()?;
        conn.prepare_cached("SELECT 1 FROM located_files WHERE ?1 IS NULL OR folder = ?1 LIMIT 1")
            .and_then(|mut s| s.exists(params![folder.map(|f| f.as_str())]))
            .map_err(store_err)
    }

    /// Where the chunks of `hashes` may be read: up to [`LOCATIONS_PER_CHUNK`] locations per
    /// chunk, in `folder`'s mappings only (`None`: any folder's), in the order of `hashes` (a
    /// hash named twice is answered once). Chunks located nowhere are left out. The
    /// locations are claims, not facts: read them with the file's identity and the chunk's
    /// hash checked.
    pub fn locations(
        &self,
        folder: Option<&FolderId>,
        hashes: &[ChunkHash],
    ) -> Result<Vec<Location>> {
        if self.pg().is_some() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        if let Some(m) = self.mem() {
            // One walk over every located chunk, then the locations in the order asked.
            let mut found: HashMap<ChunkHash, Vec<Location>> =
                hashes.iter().map(|h| (*h, Vec::new())).collect();
            for ((f, mapping, _), (file, chunks)) in &m.located {
                if folder.is_some_and(|want| want != f) {
                    continue;
                }
                for (c, offset, len) in chunks {
                    let Some(at) = found.get_mut(c) else { continue };
                    if at.len() < LOCATIONS_PER_CHUNK {
                        at.push(Location {
                            hash: *c,
                            folder: f.clone(),
                            mapping: mapping.clone(),
                            file: file.clone(),
                            offset: *offset,
                            len: *len,
                        });
                    }
                }
            }
            for h in hashes {
                out.extend(found.remove(h).unwrap_or_default());
            }
            return Ok(out);
        }
        // One statement per group of hashes (a statement per hash cost 25–40 µs each on a
        // store of 64 KiB pages; this about 5), the hashes passed as a JSON array of hex.
        let conn = self.sqlite_conn()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT hash, folder, mapping, offset, len, key, path, size, mtime_ns, ino
                 FROM (SELECT l.hash, l.folder, l.mapping, l.offset, l.len,
                              f.key, f.path, f.size, f.mtime_ns, f.ino,
                              row_number() OVER (PARTITION BY l.hash) AS n
                       FROM located l JOIN located_files f
                         ON f.folder = l.folder AND f.mapping = l.mapping AND f.key = l.key
                       WHERE l.hash IN (SELECT unhex(value) FROM json_each(?1))
                         AND (?2 IS NULL OR l.folder = ?2))
                 WHERE n <= ?3",
            )
            .map_err(store_err)?;
        let mut found: HashMap<ChunkHash, Vec<Location>> = HashMap::new();
        for group in hashes.chunks(LOOKUP_GROUP) {
            let list = format!(
                "[{}]",
                group
                    .iter()
                    .map(|h| format!("\"{}\"", h.hex()))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let rows = stmt
                .query_map(
                    params![list, folder.map(|f| f.as_str()), LOCATIONS_PER_CHUNK as i64],
                    |r| {
                        Ok((
                            r.get::<_, Vec<u8>>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                            LocatedFile {
                                key: r.get(5)?,
                                path: r.get(6)?,
                                size: r.get::<_, i64>(7)? as u64,
                                mtime_ns: r.get(8)?,
                                ino: r.get::<_, i64>(9)? as u64,
                            },
                        ))
                    },
                )
                .map_err(store_err)?;
            for row in rows {
                let (hash, f, mapping, offset, len, file) = row.map_err(store_err)?;
                let (Ok(folder), Ok(len)) = (f.parse::<FolderId>(), u32::try_from(len)) else {
                    continue; // Not written by this store: skipped.
                };
                let hash = hash_from_sql(hash)?;
                found.entry(hash).or_default().push(Location {
                    hash,
                    folder,
                    mapping,
                    file,
                    offset: offset as u64,
                    len,
                });
            }
        }
        // In the order asked (a hash asked twice is answered once, as in memory).
        for h in hashes {
            out.extend(found.remove(h).unwrap_or_default());
        }
        Ok(out)
    }
}

/// Deletes a located file and its chunks.
pub(super) fn forget(
    tx: &rusqlite::Transaction<'_>,
    folder: &FolderId,
    mapping: &str,
    key: &str,
) -> Result<()> {
    for sql in [
        "DELETE FROM located WHERE folder = ?1 AND mapping = ?2 AND key = ?3",
        "DELETE FROM located_files WHERE folder = ?1 AND mapping = ?2 AND key = ?3",
    ] {
        tx.prepare_cached(sql)
            .and_then(|mut s| s.execute(params![folder.as_str(), mapping, key]))
            .map_err(store_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(key: &str, size: u64) -> LocatedFile {
        LocatedFile {
            key: key.into(),
            path: key.to_uppercase(),
            size,
            mtime_ns: 5,
            ino: u64::MAX - 1,
        }
    }

    fn stores() -> Vec<(BlobStore, tempfile::TempDir)> {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = BlobStore::open(
            dir.path().join("b.blobs"),
            crate::sqlite::Durability::Normal,
        )
        .unwrap();
        vec![
            (BlobStore::memory(), tempfile::tempdir().unwrap()),
            (sqlite, dir),
        ]
    }

    #[test]
    fn locations_are_replaced_forgotten_and_kept_per_folder() {
        for (s, _dir) in stores() {
            let (f1, f2): (FolderId, FolderId) = ("f1".parse().unwrap(), "f2".parse().unwrap());
            let (a, b, c) = (
                ChunkHash::of(b"a"),
                ChunkHash::of(b"b"),
                ChunkHash::of(b"c"),
            );
            assert!(!s.has_located(None).unwrap());
            s.locate(&f1, "m", &file("x", 3), &[(a, 0, 1), (b, 1, 2)])
                .unwrap();
            s.locate(&f2, "m", &file("y", 9), &[(a, 4, 1)]).unwrap();
            assert!(s.has_located(Some(&f2)).unwrap());
            assert!(!s.has_located(Some(&"f3".parse().unwrap())).unwrap());
            let found = s.locations(Some(&f1), &[a, b, c]).unwrap();
            assert_eq!(found.len(), 2, "{found:?}");
            assert_eq!(found[0].file, file("x", 3));
            assert_eq!((found[1].hash, found[1].offset, found[1].len), (b, 1, 2));
            assert_eq!(s.locations(None, &[a]).unwrap().len(), 2);
            // The same key again replaces the file's chunks.
            s.locate(&f1, "m", &file("x", 4), &[(c, 0, 4)]).unwrap();
            assert!(s.locations(Some(&f1), &[a, b]).unwrap().is_empty());
            assert_eq!(s.locations(Some(&f1), &[c]).unwrap()[0].file.size, 4);
            s.unlocate(&f1, "m", &["x".into()]).unwrap();
            assert!(s.locations(Some(&f1), &[c]).unwrap().is_empty());
            assert_eq!(s.locations(None, &[a]).unwrap().len(), 1);
            // Nothing located is an object of the store.
            assert_eq!(s.absent(&[a]).unwrap(), vec![a]);
        }
    }

    #[test]
    fn a_chunk_in_many_files_has_a_bounded_number_of_locations() {
        for (s, _dir) in stores() {
            let f: FolderId = "f1".parse().unwrap();
            let z = ChunkHash::of(&[0u8; 16]);
            for n in 0..20 {
                s.locate(
                    &f,
                    "m",
                    &file(&format!("k{n}"), 64),
                    &[(z, 0, 16), (z, 16, 16)],
                )
                .unwrap();
            }
            assert_eq!(
                s.locations(Some(&f), &[z]).unwrap().len(),
                LOCATIONS_PER_CHUNK
            );
        }
    }

    #[test]
    fn many_chunks_are_found_in_the_order_asked() {
        for (s, _dir) in stores() {
            let f: FolderId = "f1".parse().unwrap();
            let n = LOOKUP_GROUP * 2 + 7;
            let chunks: Vec<LocatedChunk> = (0..n as u64)
                .map(|i| (ChunkHash::of(&i.to_le_bytes()), i * 10, 10))
                .collect();
            s.locate(&f, "m", &file("big", n as u64 * 10), &chunks)
                .unwrap();
            let unknown = ChunkHash::of(b"nowhere");
            let mut asked: Vec<ChunkHash> = chunks.iter().rev().map(|c| c.0).collect();
            asked.insert(3, unknown);
            asked.push(chunks[5].0);
            let found = s.locations(Some(&f), &asked).unwrap();
            // (The hash asked twice is answered once.)
            let expected: Vec<(ChunkHash, u64)> = chunks.iter().rev().map(|c| (c.0, c.1)).collect();
            let got: Vec<(ChunkHash, u64)> = found.iter().map(|l| (l.hash, l.offset)).collect();
            assert!(
                got == expected,
                "{} found, {} expected",
                got.len(),
                expected.len()
            );
            assert!(s
                .locations(Some(&"f2".parse().unwrap()), &asked)
                .unwrap()
                .is_empty());
        }
    }
}
