//! Reading chunks from the mapped files they were published from.
//!
//! A large file of a mapped directory is published without a copy of its chunks in the blob
//! store: the store records where each chunk lies in the file
//! ([`mesh_store::blobs::located`]), and uploads, peers and this device's own reads take the
//! chunks from the file. A chunk is read only from the mapping the store recorded, beneath its
//! root's handle (never through a symbolic link), only while the file is still the one that
//! was read (same inode, size and modification time), and only if its bytes match its hash.
//! Anything else (the file edited, replaced, deleted, the directory unmapped or moved) makes
//! the chunk unavailable here; it is never an error of the caller's request.

use std::collections::{HashMap, HashSet};

use mesh_core::blob::ChunkHash;
use mesh_core::id::FolderId;
use mesh_core::model::FilePath;

use super::beneath::Beneath;
use super::fsops;
use super::patch::read_exact_at;
use crate::store::blobs::{LocatedFile, Location};
use crate::store::BlobStore;

/// The chunks of `hashes` that can be read from located files, checked, read in the order of
/// `hashes` up to about `max_bytes` (the chunk that reaches the bound is the last one read). `folder` limits the
/// search to that folder's mappings (`None`: any folder's, for this device's own use).
/// Failures to read make chunks unavailable; only the store's own errors are returned.
pub(crate) fn read_located(
    blobs: &BlobStore,
    folder: Option<&FolderId>,
    hashes: &[ChunkHash],
    max_bytes: usize,
) -> crate::error::Result<HashMap<ChunkHash, Vec<u8>>> {
    let mut out: HashMap<ChunkHash, Vec<u8>> = HashMap::new();
    if hashes.is_empty() || !blobs.has_located(folder)? {
        return Ok(out);
    }
    let locations = blobs.locations(folder, hashes)?;
    // One open file per located file (at most `MAX_OPEN_FILES` at once: a peer's request may
    // name a chunk of each of hundreds of files), and one opened root per folder.
    let mut roots: HashMap<FolderId, Option<(String, Beneath)>> = HashMap::new();
    let mut files: HashMap<(FolderId, String, String), Option<std::fs::File>> = HashMap::new();
    let mut bytes = 0usize;
    let mut failed: HashSet<(FolderId, String, String)> = HashSet::new();
    for loc in locations {
        if bytes >= max_bytes {
            break;
        }
        if out.contains_key(&loc.hash) {
            continue;
        }
        let id = (
            loc.folder.clone(),
            loc.mapping.clone(),
            loc.file.key.clone(),
        );
        if failed.contains(&id) {
            continue;
        }
        let root = roots
            .entry(loc.folder.clone())
            .or_insert_with(|| open_root(blobs, &loc.folder));
        let Some((mapping, root)) = root.as_ref() else {
            continue;
        };
        if *mapping != loc.mapping {
            continue; // Recorded by an earlier mapping of the folder.
        }
        if files.len() >= MAX_OPEN_FILES && !files.contains_key(&id) {
            // Bounded: a file met again later is opened (and checked) again.
            files.clear();
        }
        let file = files
            .entry(id.clone())
            .or_insert_with(|| open_file(root, &loc.file));
        let Some(file) = file.as_ref() else {
            failed.insert(id);
            continue;
        };
        match read_chunk(file, &loc) {
            Some(data) => {
                bytes += data.len();
                out.insert(loc.hash, data);
            }
            None => {
                // Changed since it was read: none of its chunks is trusted any more.
                tracing::debug!(path = %loc.file.path, "a located file changed; its chunks are unavailable");
                failed.insert(id);
            }
        }
    }
    Ok(out)
}

/// Files `read_located` keeps open at once.
const MAX_OPEN_FILES: usize = 64;

/// The folder's mapped directory, opened, with the id of its mapping.
fn open_root(blobs: &BlobStore, folder: &FolderId) -> Option<(String, Beneath)> {
    let (root, mapping) = blobs.mapped_dir(folder).ok().flatten()?;
    let root = Beneath::open(std::path::Path::new(&root)).ok()?;
    Some((mapping, root))
}

/// The located file, opened beneath the root, if it is still the file that was read.
fn open_file(root: &Beneath, file: &LocatedFile) -> Option<std::fs::File> {
    let path = FilePath::new(&file.path).ok()?;
    let f = root.open_read(&path).ok()?;
    let meta = f.metadata().ok()?;
    let same = meta.is_file()
        && meta.len() == file.size
        && fsops::mtime_ns(&meta) == file.mtime_ns
        && (file.ino == 0 || fsops::ino_of(&meta) == file.ino);
    same.then_some(f)
}

/// One chunk's bytes, if they are still there and match its hash.
fn read_chunk(file: &std::fs::File, loc: &Location) -> Option<Vec<u8>> {
    let mut data = vec![0u8; loc.len as usize];
    read_exact_at(file, &mut data, loc.offset).ok()?;
    loc.hash.verifies(&data).then_some(data)
}

/// `BlobStore::get_for` (or, without a folder, `get_many`) with located chunks read for the
/// objects the store lacks: the objects of `hashes` available here, in the order asked, until
/// `max_bytes` are gathered (the object that reaches the bound is the last one).
pub(crate) fn read_objects(
    blobs: &BlobStore,
    folder: Option<&FolderId>,
    hashes: &[ChunkHash],
    max_bytes: usize,
) -> crate::error::Result<Vec<(ChunkHash, Vec<u8>)>> {
    let stored = match folder {
        Some(f) => blobs.get_for(f, hashes, max_bytes)?,
        None => blobs.get_many(hashes, max_bytes)?,
    };
    let total: usize = stored.iter().map(|(_, d)| d.len()).sum();
    // The store's answer covers the hashes up to its last object when the bound cut it.
    let covered = if total >= max_bytes {
        stored
            .last()
            .and_then(|(last, _)| hashes.iter().position(|h| h == last))
            .map_or(hashes.len(), |p| p + 1)
    } else {
        hashes.len()
    };
    let have: HashSet<ChunkHash> = stored.iter().map(|(h, _)| *h).collect();
    let absent: Vec<ChunkHash> = hashes[..covered]
        .iter()
        .filter(|h| !have.contains(h))
        .copied()
        .collect();
    if absent.is_empty() {
        return Ok(stored);
    }
    let mut located = read_located(blobs, folder, &absent, max_bytes)?;
    if located.is_empty() {
        return Ok(stored);
    }
    // (Located chunks are read in the order asked, up to the same bound: the answer below
    // reaches the bound no later than the last one read, so every hash it skips is one this
    // device cannot serve, which is what a fetch's asker concludes from a skipped hash.)
    let mut stored: HashMap<ChunkHash, Vec<u8>> = stored.into_iter().collect();
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for h in &hashes[..covered] {
        let Some(data) = stored.remove(h).or_else(|| located.remove(h)) else {
            continue;
        };
        bytes += data.len();
        out.push((*h, data));
        if bytes >= max_bytes {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder mapped onto a temporary directory holding `a.bin` (chunks `x`, `y` located in
    /// it) and a store holding `s`.
    fn setup() -> (
        tempfile::TempDir,
        BlobStore,
        FolderId,
        [(ChunkHash, Vec<u8>); 3],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (x, y, s) = (vec![1u8; 100], vec![2u8; 50], vec![3u8; 70]);
        let file = [x.clone(), y.clone()].concat();
        std::fs::write(dir.path().join("a.bin"), &file).unwrap();
        let meta = std::fs::metadata(dir.path().join("a.bin")).unwrap();
        let blobs = BlobStore::memory();
        let folder: FolderId = "f1".parse().unwrap();
        blobs
            .set_mapped_dir(&folder, Some((dir.path().to_str().unwrap(), "m")))
            .unwrap();
        let (hx, hy, hs) = (ChunkHash::of(&x), ChunkHash::of(&y), ChunkHash::of(&s));
        let located = LocatedFile {
            key: "a.bin".into(),
            path: "a.bin".into(),
            size: file.len() as u64,
            mtime_ns: fsops::mtime_ns(&meta),
            ino: fsops::ino_of(&meta),
        };
        blobs
            .locate(&folder, "m", &located, &[(hx, 0, 100), (hy, 100, 50)])
            .unwrap();
        blobs.put(&folder, &[(hs, s.clone())]).unwrap();
        (dir, blobs, folder, [(hx, x), (hy, y), (hs, s)])
    }

    #[test]
    fn stored_and_located_objects_come_in_the_order_asked_within_the_bound() {
        let (_dir, blobs, folder, [x, y, s]) = setup();
        let absent = ChunkHash::of(b"nowhere");
        let asked = [y.0, absent, s.0, x.0];
        let all = read_objects(&blobs, Some(&folder), &asked, usize::MAX).unwrap();
        assert_eq!(all, vec![y.clone(), s.clone(), x.clone()]);
        // The bound: the object that reaches it is the last one.
        let some = read_objects(&blobs, Some(&folder), &asked, 60).unwrap();
        assert_eq!(some, vec![y.clone(), s.clone()]);
        // Another folder's mapping is not read for this one.
        let other: FolderId = "f2".parse().unwrap();
        assert!(read_objects(&blobs, Some(&other), &[x.0], usize::MAX)
            .unwrap()
            .is_empty());
    }

    /// A located file swapped for a symbolic link (even to a file with the same bytes) is
    /// not followed.
    #[cfg(unix)]
    #[test]
    fn a_located_file_swapped_for_a_symbolic_link_serves_nothing() {
        let (dir, blobs, folder, [x, y, _]) = setup();
        let path = dir.path().join("a.bin");
        let outside = tempfile::tempdir().unwrap();
        let copy = outside.path().join("same.bin");
        std::fs::copy(&path, &copy).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&copy, &path).unwrap();
        // Recorded as the link's target is, so that only the link itself stands in the way.
        let meta = std::fs::metadata(&copy).unwrap();
        let file = LocatedFile {
            key: "a.bin".into(),
            path: "a.bin".into(),
            size: meta.len(),
            mtime_ns: fsops::mtime_ns(&meta),
            ino: fsops::ino_of(&meta),
        };
        blobs
            .locate(&folder, "m", &file, &[(x.0, 0, 100), (y.0, 100, 50)])
            .unwrap();
        assert!(read_located(&blobs, Some(&folder), &[x.0, y.0], usize::MAX)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_located_file_that_changed_serves_nothing() {
        let (dir, blobs, folder, [x, _, _]) = setup();
        // Same size, other bytes: the hash check refuses them.
        let path = dir.path().join("a.bin");
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::io::Write::write_all(&mut &f, &[9u8; 150]).unwrap();
        f.set_modified(before).unwrap();
        assert!(read_located(&blobs, Some(&folder), &[x.0], usize::MAX)
            .unwrap()
            .is_empty());
        // A directory mapped anew (another mapping id) is not read for the old one.
        std::fs::write(&path, [x.1.clone(), vec![2u8; 50]].concat()).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_modified(before).unwrap();
        assert_eq!(
            read_located(&blobs, Some(&folder), &[x.0], usize::MAX)
                .unwrap()
                .len(),
            1,
            "the file holds what was located again"
        );
        blobs
            .set_mapped_dir(&folder, Some((dir.path().to_str().unwrap(), "other")))
            .unwrap();
        assert!(read_located(&blobs, Some(&folder), &[x.0], usize::MAX)
            .unwrap()
            .is_empty());
    }

    /// More located files than are kept open at once, read in one call, twice over in an
    /// order that meets each file again after it was closed: every chunk comes, checked.
    #[test]
    fn chunks_of_more_files_than_are_kept_open_are_all_read() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::memory();
        let folder: FolderId = "f1".parse().unwrap();
        blobs
            .set_mapped_dir(&folder, Some((dir.path().to_str().unwrap(), "m")))
            .unwrap();
        let n = MAX_OPEN_FILES * 2 + 5;
        let mut firsts = Vec::new();
        let mut seconds = Vec::new();
        for i in 0..n {
            let (a, b) = (
                format!("first {i}").into_bytes(),
                format!("second {i}").into_bytes(),
            );
            let name = format!("f{i}.bin");
            std::fs::write(dir.path().join(&name), [a.clone(), b.clone()].concat()).unwrap();
            let meta = std::fs::metadata(dir.path().join(&name)).unwrap();
            let (ha, hb) = (ChunkHash::of(&a), ChunkHash::of(&b));
            let file = LocatedFile {
                key: name.clone(),
                path: name,
                size: (a.len() + b.len()) as u64,
                mtime_ns: fsops::mtime_ns(&meta),
                ino: fsops::ino_of(&meta),
            };
            blobs
                .locate(
                    &folder,
                    "m",
                    &file,
                    &[
                        (ha, 0, a.len() as u32),
                        (hb, a.len() as u64, b.len() as u32),
                    ],
                )
                .unwrap();
            firsts.push((ha, a));
            seconds.push((hb, b));
        }
        let wanted: Vec<ChunkHash> = firsts.iter().chain(&seconds).map(|(h, _)| *h).collect();
        let got = read_located(&blobs, Some(&folder), &wanted, usize::MAX).unwrap();
        assert_eq!(got.len(), 2 * n);
        for (h, data) in firsts.iter().chain(&seconds) {
            assert_eq!(got.get(h), Some(data));
        }
    }
}
