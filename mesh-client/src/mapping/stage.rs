//! Large remote files downloaded straight into their temporary file.
//!
//! A remote file over 1 MiB that is not built on a local copy is not downloaded into the blob
//! store and then copied out: its chunks are written into the temporary file beside its target
//! as they arrive (each checked against its hash), the chunks this device already holds are
//! copied in from the store or the files they lie in, and the file then goes through the usual
//! flush and guarded replacement ([`super::apply`]). Once it is in place, the store records
//! where its chunks lie (`located`), so peers and later edits read them from the file.
//!
//! A download that stops part way keeps what arrived. When the pass gives up on it, the chunks
//! written so far are read back, checked, and stored before the temporary file is removed.
//! When the process is killed, the temporary file stays (its name is derived from the path and
//! the version, and the start-up clean-up leaves such files for a week): the next attempt
//! reopens it, keeps every chunk in it that matches its hash, and downloads only the rest.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use mesh_core::blob::{ChunkHash, Manifest};
use mesh_core::id::FolderId;

use super::apply::WriteJob;
use super::beneath::{Beneath, DirHandle, Found};
use super::fsops::{self, TEMP_PREFIX};
use super::patch::{read_exact_at, write_all_at};
use crate::store::BlobStore;
use crate::sync::transfer::{ChunkSink, Fetch};
use crate::MeshClient;

/// Chunks read from the store or located files at a time while filling in a staged file.
const LOCAL_PER_READ: usize = 64;

/// What the names of staged files start with, after [`TEMP_PREFIX`].
const STAGED: &str = "stage-";

/// Whether a temporary file's name is that of a staged download.
pub(super) fn is_staged(name: &str) -> bool {
    name.strip_prefix(TEMP_PREFIX)
        .is_some_and(|rest| rest.starts_with(STAGED))
}

/// The staged file's name for the index key `key` and the blob `manifest`: one per path and
/// version (public to tests through [`super::faults::staged_file_name`]).
pub(super) fn staged_file_name(key: &str, manifest: &ChunkHash) -> String {
    let id = ChunkHash::of(format!("{key}\n{manifest}").as_bytes());
    format!("{TEMP_PREFIX}{STAGED}{}", &id.hex()[..32])
}

/// Whether `job` is written by [`stage`]: a large file, not built on a local copy, on a store
/// that can record where its chunks lie.
pub(super) fn is_large(blobs: &BlobStore, job: &WriteJob) -> bool {
    job.base.is_none()
        && job.meta.size > super::ingest::SMALL
        && job.meta.manifest.is_some()
        && blobs.locates()
}

/// Each chunk's length and offsets in the blob.
type Offsets = HashMap<ChunkHash, (u32, Vec<u64>)>;

/// Where a staged file's chunks go: written at every offset where the manifest has them.
struct FileSink {
    blobs: BlobStore,
    manifest: ChunkHash,
    file: std::fs::File,
    /// The blob's length and the offsets of each chunk, from the manifest (read once the
    /// download has stored it).
    layout: OnceLock<(u64, Offsets)>,
    written: Mutex<HashSet<ChunkHash>>,
}

impl FileSink {
    fn layout(&self) -> &(u64, Offsets) {
        self.layout
            .get_or_init(|| match self.blobs.manifest(&self.manifest) {
                Ok(Some(m)) if m.hash() == self.manifest => (m.length(), offsets_of(&m)),
                _ => (0, HashMap::new()),
            })
    }

    fn offsets(&self) -> &Offsets {
        &self.layout().1
    }

    /// The blob's length.
    fn length(&self) -> u64 {
        self.layout().0
    }

    fn written(&self) -> HashSet<ChunkHash> {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes as written every chunk the file already holds at all its offsets (a download
    /// a killed process left): each read back and checked against its hash.
    fn recover(&self) {
        // (Without the manifest stored yet, nothing can be checked: the file starts over.)
        if !matches!(self.blobs.manifest(&self.manifest), Ok(Some(_))) {
            return;
        }
        let mut found = HashSet::new();
        for (h, (len, at)) in self.offsets() {
            let mut data = vec![0u8; *len as usize];
            let whole = at.iter().all(|offset| {
                read_exact_at(&self.file, &mut data, *offset).is_ok() && h.verifies(&data)
            });
            if whole {
                found.insert(*h);
            }
        }
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(found);
    }

    fn write(&self, hash: &ChunkHash, data: &[u8]) -> std::io::Result<bool> {
        let Some((len, at)) = self.offsets().get(hash) else {
            return Ok(false);
        };
        if data.len() != *len as usize {
            return Ok(false);
        }
        for offset in at {
            write_all_at(&self.file, data, *offset)?;
        }
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*hash);
        Ok(true)
    }
}

impl ChunkSink for FileSink {
    fn take(&self, chunks: &[(ChunkHash, Vec<u8>)]) -> crate::error::Result<()> {
        for (h, data) in chunks {
            self.write(h, data)
                .map_err(|e| crate::ClientError::Internal(format!("writing a chunk: {e}")))?;
        }
        Ok(())
    }
}

/// The [`Offsets`] of manifest `m`.
fn offsets_of(m: &Manifest) -> Offsets {
    let mut out: Offsets = HashMap::new();
    for (h, at, len) in located_chunks(m) {
        out.entry(h).or_insert((len, Vec::new())).1.push(at);
    }
    out
}

/// Each chunk of `m` with its offset, in order (for recording where they lie).
pub(super) fn located_chunks(m: &Manifest) -> Vec<(ChunkHash, u64, u32)> {
    let mut at = 0u64;
    m.chunks()
        .iter()
        .map(|c| {
            let out = (c.hash, at, c.len);
            at += u64::from(c.len);
            out
        })
        .collect()
}

/// Downloads `job`'s file into a new temporary file beside its target and returns that
/// file's name, complete, with the entry's modification time and mode; `None` when it could
/// not be made now (the job then takes the usual path, which reports why or waits).
pub(super) async fn stage(
    client: &MeshClient,
    root: Arc<Beneath>,
    folder: &FolderId,
    job: &WriteJob,
) -> Option<String> {
    let manifest = job.meta.manifest?;
    let path = job.meta.path.clone();
    let staged = staged_file_name(&job.key, &manifest);
    let blobs = client.shared().blobs().clone();
    let b = blobs.clone();
    let opened =
        tokio::task::spawn_blocking(move || -> Option<(DirHandle, Arc<FileSink>, String)> {
            let (dir, name) = root.parent(&path, true).ok()?;
            if matches!(dir.entry(&name), Ok(Found::Dir { .. } | Found::Symlink)) {
                return None; // Refused by the usual path, with the reason.
            }
            // A download a killed process left carries on; otherwise a new file (under another
            // name if something that is not a file holds this one).
            let (file, resumed, temp) = match dir.open_rw(&staged) {
                Ok(f) => (f, true, staged),
                Err(_) => {
                    let _ = dir.remove(&staged, false);
                    match dir.create_new(&staged) {
                        Ok(f) => (f, false, staged),
                        Err(_) => {
                            let other = format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple());
                            (dir.create_new(&other).ok()?, false, other)
                        }
                    }
                }
            };
            let sink = Arc::new(FileSink {
                blobs: b,
                manifest,
                file,
                layout: OnceLock::new(),
                written: Mutex::new(HashSet::new()),
            });
            if resumed {
                sink.recover();
            }
            Some((dir, sink, temp))
        })
        .await
        .ok()??;
    let (dir, sink, temp) = opened;
    let how = Fetch {
        sink: Some(sink.clone()),
        except: Arc::new(sink.written()),
    };
    let fetched = client
        .fetch_objects_with(folder, vec![manifest], &how)
        .await;
    let (mtime, mode, folder) = (job.meta.mtime_ns, job.meta.mode, folder.clone());
    let done = tokio::task::spawn_blocking(move || {
        let complete = fetched.is_ok() && fill_in(&blobs, &sink).unwrap_or(false);
        // (A reopened file may hold more than the blob: cut to its length.)
        let finished = complete
            && sink.file.set_len(sink.length()).is_ok()
            && sink.file.set_modified(fsops::from_ns(mtime)).is_ok()
            && fsops::set_mode(&sink.file, Some(mode)).is_ok()
            && (cfg!(target_os = "linux") || sink.file.sync_all().is_ok());
        if finished {
            return Some(temp);
        }
        if let Err(e) = &fetched {
            tracing::debug!(error = %e, "a large file's download stopped; what arrived is kept");
        }
        salvage(&blobs, &folder, &dir, &temp, &sink);
        let _ = dir.remove(&temp, false);
        None
    })
    .await
    .ok()?;
    done
}

/// Writes the chunks the download did not bring (this device held them) from the store or
/// the files they lie in, each checked; whether the file is then complete.
fn fill_in(blobs: &BlobStore, sink: &FileSink) -> crate::error::Result<bool> {
    let written = sink.written();
    let todo: Vec<ChunkHash> = sink
        .offsets()
        .keys()
        .filter(|h| !written.contains(h))
        .copied()
        .collect();
    if sink.offsets().is_empty() {
        return Ok(false);
    }
    for part in todo.chunks(LOCAL_PER_READ) {
        let got = super::located::read_objects(blobs, None, part, usize::MAX)?;
        for (h, data) in &got {
            if !h.verifies(data) {
                return Ok(false);
            }
            sink.write(h, data)
                .map_err(|e| crate::ClientError::Internal(format!("writing a chunk: {e}")))?;
        }
    }
    let written = sink.written();
    Ok(sink.offsets().keys().all(|h| written.contains(h)))
}

/// Stores the chunks already written to a staged file that is given up, read back and
/// checked, so that the next attempt does not download them again. Best effort.
fn salvage(blobs: &BlobStore, folder: &FolderId, dir: &DirHandle, temp: &str, sink: &FileSink) {
    let written = sink.written();
    if written.is_empty() {
        return;
    }
    let Ok(file) = dir.open_read(temp) else {
        return;
    };
    let mut batch: Vec<(ChunkHash, Vec<u8>)> = Vec::new();
    let mut bytes = 0usize;
    for h in written {
        let Some((len, at)) = sink.offsets().get(&h) else {
            continue;
        };
        let mut data = vec![0u8; *len as usize];
        if read_exact_at(&file, &mut data, at[0]).is_err() || !h.verifies(&data) {
            continue;
        }
        bytes += data.len();
        batch.push((h, data));
        if bytes >= 8 << 20 {
            let _ = blobs.put_trusted(folder, batch.iter().map(|(h, d)| (*h, d.as_slice())));
            batch.clear();
            bytes = 0;
        }
    }
    let _ = blobs.put_trusted(folder, batch.iter().map(|(h, d)| (*h, d.as_slice())));
}
