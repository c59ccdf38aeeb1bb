//! Reading local files into the blob store for publishing.

use std::collections::HashMap;

use mesh_core::blob::ChunkHash;
use mesh_core::id::FolderId;

use super::beneath::Beneath;
use super::dirs::DirCache;
use super::scan::LocalFile;
use super::{faults, fsops};
use crate::error::Result;
use crate::store::blobs::LocatedFile;

/// Chunks files of the mapped directory: small files into the blob store, many per
/// transaction; large ones (over [`SMALL`]) in place, streamed: only their manifests are
/// stored, and where each chunk lies in the file is recorded for uploads and peers to read it
/// from there (`located`). (A blob store that cannot record locations takes large files'
/// chunks too.) Each file is opened beneath the root's handle (never
/// through a symbolic link) and must be, before and after it is read, the file the scan saw
/// (same size and modification time, and the same inode throughout): a file that changes
/// while read is not published by this pass (the next one sees it settled).
pub(super) fn ingest_files(
    b: &crate::store::BlobStore,
    folder: &FolderId,
    mapping: &str,
    root: &Beneath,
    files: Vec<LocalFile>,
) -> Result<HashMap<String, std::result::Result<ChunkHash, String>>> {
    use std::io::Read;
    const BATCH: usize = 8 << 20;
    let in_place = b.locates();
    let mut out = HashMap::new();
    let mut pending: Vec<(ChunkHash, Vec<u8>)> = Vec::new();
    let mut pending_bytes = 0usize;
    // One handle per directory for the whole batch, not one per file.
    let dirs = DirCache::new(root);
    for l in files {
        let result: std::result::Result<ChunkHash, String> = (|| {
            faults::at(faults::Moment::Read, &root.path().join(l.path.as_str()));
            let f = dirs.open_read(&l.path).map_err(|e| e.to_string())?;
            let before = f.metadata().map_err(|e| e.to_string())?;
            let changed = "changed while read; published once it settles".to_string();
            if !same_file(&before, &before, &l) {
                return Err(changed);
            }
            let settled = |f: &std::fs::File| {
                f.metadata()
                    .map(|after| same_file(&before, &after, &l))
                    .unwrap_or(false)
            };
            if l.size <= SMALL {
                let mut data = Vec::with_capacity(l.size as usize);
                (&f).take(l.size + 1)
                    .read_to_end(&mut data)
                    .map_err(|e| e.to_string())?;
                if data.len() as u64 != l.size || !settled(&f) {
                    return Err(changed);
                }
                let objects = crate::store::blobs::chunk_in_memory(&data);
                let m = mesh_core::blob::Manifest::new(
                    objects.iter().map(|(h, d)| (*h, d.len() as u32)),
                )
                .map_err(|e| e.to_string())?;
                for (h, d) in objects {
                    pending_bytes += d.len();
                    pending.push((h, d.to_vec()));
                }
                let enc = m.encode();
                let h = ChunkHash::of(&enc);
                pending.push((h, enc));
                Ok(h)
            } else if in_place {
                let chunks = b
                    .chunk_streamed(std::io::BufReader::with_capacity(
                        1 << 20,
                        (&f).take(l.size + 1),
                    ))
                    .map_err(|e| e.to_string())?;
                let m = mesh_core::blob::Manifest::new(chunks.iter().map(|(h, _, n)| (*h, *n)))
                    .map_err(|e| e.to_string())?;
                if m.length() != l.size || !settled(&f) {
                    return Err(changed);
                }
                let enc = m.encode();
                let h = ChunkHash::of(&enc);
                b.put_trusted(folder, [(h, enc.as_slice())])
                    .map_err(|e| e.to_string())?;
                let file = LocatedFile {
                    key: l.path.fold_key(),
                    path: l.path.to_string(),
                    size: l.size,
                    mtime_ns: l.mtime_ns,
                    ino: fsops::ino_of(&before),
                };
                b.locate(folder, mapping, &file, &chunks)
                    .map_err(|e| e.to_string())?;
                Ok(h)
            } else {
                let m = b
                    .ingest(
                        folder,
                        std::io::BufReader::with_capacity(1 << 20, (&f).take(l.size + 1)),
                        l.size,
                    )
                    .map_err(|e| e.to_string())?;
                // (The chunks stored meanwhile are unreferenced if the file changed.)
                if m.length() != l.size || !settled(&f) {
                    return Err(changed);
                }
                Ok(m.hash())
            }
        })();
        out.insert(l.path.to_string(), result);
        if pending_bytes >= BATCH {
            b.put_trusted(folder, pending.iter().map(|(h, d)| (*h, d.as_slice())))?;
            pending.clear();
            pending_bytes = 0;
        }
    }
    b.put_trusted(folder, pending.iter().map(|(h, d)| (*h, d.as_slice())))?;
    Ok(out)
}

/// Files up to this size are read whole and their chunks stored; larger ones are published
/// in place.
pub(super) const SMALL: u64 = 1 << 20;

/// Whether `after` is still the file `before` was (same inode on Unix) and both are what the
/// scan saw as `l`.
pub(super) fn same_file(
    before: &std::fs::Metadata,
    after: &std::fs::Metadata,
    l: &LocalFile,
) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if before.ino() != after.ino()
            || before.dev() != after.dev()
            || (l.ino != 0 && after.ino() != l.ino)
        {
            return false;
        }
    }
    let _ = before;
    after.is_file()
        && after.len() == l.size
        && fsops::mtime_ns(after) == l.mtime_ns
        && fsops::mode_of(after) == l.mode
}
