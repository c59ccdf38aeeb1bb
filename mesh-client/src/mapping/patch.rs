//! Writing a remote file's new version by patching the local copy of the version before it.
//!
//! When a remote edit replaces a file this device holds unchanged (the index recorded its
//! manifest, and size, modification time and inode still match), the chunks the two versions
//! share are copied from the local file into the new version's temporary file with
//! `copy_file_range` (on file systems with shared extents, such as Btrfs and XFS, the kernel
//! shares them instead of copying; elsewhere it copies without the data passing through this
//! process), and only the other chunks are written from the blob store. So a 1 MiB edit of a
//! large file reads 1 MiB from the blob store, not the whole file.
//!
//! The local file is not trusted for it. Every chunk is read from it and checked against the
//! new manifest's hash before its range is copied, and a chunk that does not match (the file
//! was changed in place without its size or time changing) is written from the blob store
//! instead, or, where the store lacks it, the write fails and the target is left as it is.
//! Once everything is copied, the file must still be what it was when opened (inode, size,
//! modification and change times, read from the open handle): a write to it while it was
//! copied changes them (the kernel stamps a write before it copies data in), and fails the
//! write, so that no range is copied other than it was checked. Checking the local file
//! rather than reading the copy back matters: the copy's shared extents are not in memory
//! yet, the local file usually is.

use std::collections::HashMap;
use std::fs::File;

use mesh_core::blob::{ChunkHash, Manifest};

use super::beneath::DirHandle;
use super::fsops;
use super::ingest::same_file;
use super::scan::LocalFile;
use crate::store::BlobStore;

/// The local copy of the version a remote file replaces, opened for reading, with where each
/// of its chunks lies in it.
pub(super) struct Base {
    file: File,
    /// What `file` was when opened, and the file the pass saw: the copy must end on the same.
    opened: std::fs::Metadata,
    seen: LocalFile,
    /// A chunk's offset in `file` (its first occurrence).
    offsets: HashMap<ChunkHash, u64>,
}

impl Base {
    /// Opens `name` in `dir` (never through a symbolic link) as the version `manifest`, if it
    /// is still the file the pass saw (`seen`: same inode, size and modification time) and as
    /// long as `manifest`. `None` when it cannot serve (the write then takes every chunk from
    /// the blob store).
    pub fn open(
        blobs: &BlobStore,
        dir: &DirHandle,
        name: &str,
        manifest: &ChunkHash,
        seen: &LocalFile,
    ) -> Option<Base> {
        let m = blobs.manifest(manifest).ok()??;
        let file = dir.open_read(name).ok()?;
        let meta = file.metadata().ok()?;
        if !same_file(&meta, &meta, seen) || meta.len() != m.length() {
            return None;
        }
        let mut offsets = HashMap::with_capacity(m.chunks().len());
        let mut at = 0u64;
        for c in m.chunks() {
            offsets.entry(c.hash).or_insert(at);
            at += u64::from(c.len);
        }
        Some(Base {
            file,
            opened: meta,
            seen: seen.clone(),
            offsets,
        })
    }

    /// Fails if the file changed since it was opened: [`same_file`] (inode, size, time, mode),
    /// and its change time, which a write moves even when the modification time is put back.
    fn unchanged(&self) -> Result<(), String> {
        let now = self.file.metadata().map_err(|e| e.to_string())?;
        if !same_file(&self.opened, &now, &self.seen)
            || fsops::ctime_ns(&now) != fsops::ctime_ns(&self.opened)
        {
            return Err(
                "the local copy changed while it was copied; written at the next pass".into(),
            );
        }
        Ok(())
    }

    /// Whether the base holds a chunk with this hash.
    pub fn has(&self, hash: &ChunkHash) -> bool {
        self.offsets.contains_key(hash)
    }
}

/// What [`write_patched`] did, in bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Patched {
    /// Copied from the base and found as the manifest says.
    pub copied: u64,
    /// Written from the blob store (chunks the base lacks, and copied ranges that did not
    /// match).
    pub written: u64,
}

/// Writes the blob `manifest` into `out` (a new, empty file), taking the chunks `base` holds
/// from it (each checked before it is copied) and the others from `blobs` (checked as read).
/// Fails, leaving `out` to be discarded, if the base changed while it was copied.
pub(super) fn write_patched(
    blobs: &BlobStore,
    base: &Base,
    manifest: &Manifest,
    out: &File,
) -> Result<Patched, String> {
    let mut done = Patched::default();
    let mut pos = 0u64;
    let mut buf = Vec::new();
    // Checked chunks that lie one after the other in the base too, not copied yet: one copy
    // (from, to, len).
    let mut run: Option<(u64, u64, u64)> = None;
    let copy = |run: &mut Option<(u64, u64, u64)>| -> Result<(), String> {
        match run.take() {
            Some((from, to, len)) => copy_range(&base.file, from, out, to, len)
                .map_err(|e| format!("copying from the local copy: {e}")),
            None => Ok(()),
        }
    };
    for c in manifest.chunks() {
        let n = u64::from(c.len);
        let held = base.offsets.get(&c.hash).copied();
        let checked = match held {
            Some(from) => {
                buf.resize(c.len as usize, 0);
                read_exact_at(&base.file, &mut buf, from)
                    .map_err(|e| format!("reading the local copy: {e}"))?;
                c.hash.verifies(&buf).then_some(from)
            }
            None => None,
        };
        match checked {
            Some(from) => {
                match &mut run {
                    Some((f, _, len)) if *f + *len == from => *len += n,
                    _ => {
                        copy(&mut run)?;
                        run = Some((from, pos, n));
                    }
                }
                done.copied += n;
            }
            None => {
                copy(&mut run)?;
                write_from_store(blobs, &c.hash, out, pos).map_err(|e| match held {
                    Some(_) => format!("the local copy does not hold what its index records ({e})"),
                    None => e,
                })?;
                done.written += n;
            }
        }
        pos += n;
    }
    copy(&mut run)?;
    base.unchanged()?;
    Ok(done)
}

/// Writes the stored object `hash` at `pos` of `out`, checked against its hash.
fn write_from_store(
    blobs: &BlobStore,
    hash: &ChunkHash,
    out: &File,
    pos: u64,
) -> Result<(), String> {
    let data = blobs.get_checked(hash).map_err(|e| e.to_string())?;
    write_all_at(out, &data, pos).map_err(|e| e.to_string())
}

/// Copies `len` bytes at `from` in `src` to `to` in `dst`: `copy_file_range` on Linux (read
/// and write where it is refused, e.g. across file systems). A file system shares extents
/// only for whole blocks at the same place in their block in both files, so a range that
/// starts inside a block is copied in two calls: up to the next block boundary, then the
/// rest from there (otherwise the kernel copies the whole range byte by byte).
fn copy_range(src: &File, from: u64, dst: &File, to: u64, len: u64) -> std::io::Result<()> {
    let (mut from, mut to, mut left) = (from, to, len);
    #[cfg(target_os = "linux")]
    while left > 0 {
        const BLOCK: u64 = 4096;
        let step = match from % BLOCK {
            0 => 1 << 30,
            inside => BLOCK - inside,
        };
        let want = usize::try_from(left.min(step)).unwrap_or(1 << 20);
        match rustix::fs::copy_file_range(src, Some(&mut from), dst, Some(&mut to), want) {
            Ok(0) => break, // The source is shorter than it was: found below.
            Ok(n) => left -= n as u64,
            Err(_) => break, // Not supported here: copied below.
        }
    }
    let mut buf = vec![0u8; usize::try_from(left.min(1 << 20)).unwrap_or(1 << 20)];
    while left > 0 {
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        read_exact_at(src, &mut buf[..n], from)?;
        write_all_at(dst, &buf[..n], to)?;
        (from, to, left) = (from + n as u64, to + n as u64, left - n as u64);
    }
    Ok(())
}

#[cfg(unix)]
pub(super) fn read_exact_at(f: &File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, at)
}

#[cfg(unix)]
pub(super) fn write_all_at(f: &File, buf: &[u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(f, buf, at)
}

#[cfg(windows)]
pub(super) fn read_exact_at(f: &File, mut buf: &mut [u8], mut at: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match f.seek_read(buf, at)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => (buf, at) = (&mut buf[n..], at + n as u64),
        }
    }
    Ok(())
}

#[cfg(windows)]
pub(super) fn write_all_at(f: &File, mut buf: &[u8], mut at: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match f.seek_write(buf, at)? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            n => (buf, at) = (&buf[n..], at + n as u64),
        }
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use mesh_core::blob::chunk_boundaries;
    use mesh_core::id::FolderId;
    use mesh_core::model::{FileKind, FileMeta, FilePath};
    use mesh_core::time::Timestamp;

    use super::super::apply::{write_files, WriteJob, WriteOutcome};
    use super::super::beneath::Beneath;
    use super::*;

    /// Bytes that chunk like real content (no repeats), from `seed`.
    pub(in crate::mapping) fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut out = vec![0u8; len];
        fastrand::Rng::with_seed(seed).fill(&mut out);
        out
    }

    /// Stores `data`'s manifest and its chunks, leaving out the chunks `leave_out` has too;
    /// returns the manifest.
    fn store(blobs: &BlobStore, folder: &FolderId, data: &[u8], leave_out: &[u8]) -> Manifest {
        let skip: std::collections::HashSet<ChunkHash> = chunk_boundaries(leave_out)
            .map(|r| ChunkHash::of(&leave_out[r]))
            .collect();
        let chunks: Vec<(ChunkHash, &[u8])> = chunk_boundaries(data)
            .map(|r| (ChunkHash::of(&data[r.clone()]), &data[r]))
            .collect();
        let m = Manifest::new(chunks.iter().map(|(h, d)| (*h, d.len() as u32))).unwrap();
        let enc = m.encode();
        blobs
            .put_trusted(
                folder,
                chunks
                    .iter()
                    .filter(|(h, _)| !skip.contains(h))
                    .copied()
                    .chain([(ChunkHash::of(&enc), enc.as_slice())]),
            )
            .unwrap();
        m
    }

    struct Case {
        _dir: tempfile::TempDir,
        root: Beneath,
        blobs: BlobStore,
        old: Vec<u8>,
        new: Vec<u8>,
        job: WriteJob,
    }

    /// A 3 MiB file `big.bin` on disk as the index recorded it, and a remote version with
    /// 200 KiB in the middle changed. The blob store holds the old version's manifest and
    /// the new version's, and of the chunks only those the old version lacks (`all`: every
    /// chunk of both).
    fn case(all: bool) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let folder: FolderId = "f".parse().unwrap();
        let old = noise(3 << 20, 7);
        let mut new = old.clone();
        new[1 << 20..(1 << 20) + 200 * 1024].copy_from_slice(&noise(200 * 1024, 9));
        let blobs = BlobStore::memory();
        let base = store(&blobs, &folder, &old, if all { &[] } else { &old });
        let next = store(&blobs, &folder, &new, if all { &[] } else { &old });
        std::fs::write(dir.path().join("big.bin"), &old).unwrap();
        let root = Beneath::open(dir.path()).unwrap();
        let path = FilePath::new("big.bin").unwrap();
        let seen = root.root().stat("big.bin", &path).unwrap();
        let job = WriteJob {
            key: "big.bin".into(),
            meta: FileMeta {
                path,
                kind: FileKind::File,
                size: new.len() as u64,
                mtime_ns: 1_700_000_000_000_000_000,
                mode: 0o644,
                manifest: Some(next.hash()),
                renamed_from: None,
            },
            version: "2".into(),
            conflict_copy: false,
            expected: Some(seen),
            base: Some(base.hash()),
            staged: None,
        };
        Case {
            _dir: dir,
            root,
            blobs,
            old,
            new,
            job,
        }
    }

    fn write(c: Case) -> (WriteOutcome, Vec<u8>, Vec<String>) {
        let now = Timestamp::from_unix(1_700_000_000).unwrap();
        let mut out = write_files(&c.blobs, &c.root, vec![c.job], "pc", now);
        let (_, outcome) = out.pop().unwrap();
        let on_disk = std::fs::read(c.root.path().join("big.bin")).unwrap();
        let names = std::fs::read_dir(c.root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        (outcome, on_disk, names)
    }

    /// Changes 4 KiB inside the first chunk of the file on disk, keeping its size, inode
    /// and modification time.
    fn tamper(c: &Case) {
        let path = c.root.path().join("big.bin");
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mtime = f.metadata().unwrap().modified().unwrap();
        write_all_at(&f, &[0x5a; 4096], 1000).unwrap();
        f.set_modified(mtime).unwrap();
    }

    #[test]
    fn a_new_version_takes_the_chunks_it_shares_from_the_local_copy() {
        // The store lacks every chunk the two versions share: the write can only succeed by
        // copying them from the file on disk.
        let c = case(false);
        let new = c.new.clone();
        let (outcome, on_disk, names) = write(c);
        assert!(
            matches!(outcome, WriteOutcome::Written { copy: None, .. }),
            "not written"
        );
        assert!(
            on_disk == new,
            "the written file differs from the new version"
        );
        assert_eq!(
            names,
            vec!["big.bin".to_string()],
            "a temporary file was left"
        );
    }

    #[test]
    fn the_copied_ranges_and_the_stored_chunks_make_up_the_whole_file() {
        let c = case(false);
        let (m, base) = (
            c.blobs
                .manifest(&c.job.meta.manifest.unwrap())
                .unwrap()
                .unwrap(),
            c.job.base.unwrap(),
        );
        let dir = c.root.root();
        let base = Base::open(
            &c.blobs,
            dir,
            "big.bin",
            &base,
            c.job.expected.as_ref().unwrap(),
        )
        .expect("the unchanged file serves as base");
        let out = dir.create_new("out").unwrap();
        let done = write_patched(&c.blobs, &base, &m, &out).unwrap();
        assert_eq!(done.copied + done.written, c.new.len() as u64);
        // The edit touches a few chunks around 200 KiB; everything else is copied.
        assert!(done.written < 1 << 20, "{done:?}");
        assert!(std::fs::read(c.root.path().join("out")).unwrap() == c.new);
    }

    #[test]
    fn a_local_copy_changed_in_place_is_checked_and_the_store_fills_in() {
        let c = case(true);
        tamper(&c);
        let new = c.new.clone();
        let (outcome, on_disk, _) = write(c);
        assert!(
            matches!(outcome, WriteOutcome::Written { .. }),
            "not written"
        );
        assert!(
            on_disk == new,
            "bytes changed in place in the local copy reached the new version"
        );
    }

    #[test]
    fn a_local_copy_changed_in_place_without_the_chunk_stored_fails_and_touches_nothing() {
        let c = case(false);
        tamper(&c);
        let mut tampered = c.old.clone();
        tampered[1000..1000 + 4096].fill(0x5a);
        let (outcome, on_disk, names) = write(c);
        match outcome {
            WriteOutcome::Failed(e) => assert!(e.contains("does not hold"), "{e}"),
            _ => panic!("written from a local copy that does not match its index"),
        }
        assert!(on_disk == tampered, "the local file was replaced");
        assert_eq!(
            names,
            vec!["big.bin".to_string()],
            "a temporary file was left"
        );
    }

    #[test]
    fn a_local_copy_written_to_while_it_is_copied_fails_the_write() {
        // Every chunk is stored, so only the check after the copy can refuse: the file is
        // written to (its time put back) after it was opened as the base, as a writer racing
        // the copy would.
        let c = case(true);
        let m = c
            .blobs
            .manifest(&c.job.meta.manifest.unwrap())
            .unwrap()
            .unwrap();
        let dir = c.root.root();
        let base = Base::open(
            &c.blobs,
            dir,
            "big.bin",
            &c.job.base.unwrap(),
            c.job.expected.as_ref().unwrap(),
        )
        .expect("the unchanged file serves as base");
        tamper(&c);
        let out = dir.create_new("out").unwrap();
        match write_patched(&c.blobs, &base, &m, &out) {
            Err(e) => assert!(e.contains("changed while it was copied"), "{e}"),
            Ok(done) => panic!("a base written to during the copy was used: {done:?}"),
        }
    }

    #[test]
    fn a_local_copy_that_is_not_the_file_the_pass_saw_is_not_used() {
        let c = case(false);
        // Replaced by another file of the same size and time: only the inode differs.
        let path = c.root.path().join("big.bin");
        let other = c.root.path().join("other");
        std::fs::write(&other, &c.old).unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::File::options()
            .write(true)
            .open(&other)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        std::fs::rename(&other, &path).unwrap();
        let job = &c.job;
        let base = Base::open(
            &c.blobs,
            c.root.root(),
            "big.bin",
            &job.base.unwrap(),
            job.expected.as_ref().unwrap(),
        );
        assert!(base.is_none(), "a replaced file served as base");
        // Without a base, the chunks the store lacks keep the write pending.
        let (outcome, _, _) = write(c);
        assert!(matches!(outcome, WriteOutcome::Pending));
    }
}
