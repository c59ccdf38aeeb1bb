//! Writing remote files into a mapped directory without losing a local edit.
//!
//! Each file is written to a temporary file beside its target; all of a pass's temporary files
//! are flushed to disk at once; then each replaces its target. The replacement is where a local
//! edit made while the remote version downloaded could be lost, so it checks what it replaces:
//! on Linux the temporary file and the target are exchanged atomically (`renameat2` with
//! `RENAME_EXCHANGE`) and the replaced file is examined afterwards: unchanged since the pass
//! saw it, it is removed; changed, it is kept as a conflict copy. A target that appears where
//! the pass saw none is never replaced (`RENAME_NOREPLACE`). Elsewhere the target is examined
//! just before a plain rename.
//!
//! Conflict copies are named `name (conflict <device> <date> <time>).ext`, with a counter
//! before the closing parenthesis when that name is taken (`… 2)`, `… 3)`…): a copy never
//! replaces an existing file.

use std::collections::HashMap;
use std::io::{BufWriter, Write};

use mesh_core::blob::{ChunkHash, Manifest};
use mesh_core::model::{FileKind, FileMeta, FilePath};

use crate::mapping::beneath::{Beneath, DirHandle, Found, RenameMode};
use crate::mapping::dirs::DirCache;
use crate::mapping::faults;
use crate::mapping::fsops::{self, TEMP_PREFIX};
use crate::mapping::index::IndexRecord;
use crate::mapping::patch;
use crate::mapping::scan::LocalFile;

/// A remote file to write.
pub(super) struct WriteJob {
    pub key: String,
    pub meta: FileMeta,
    pub version: String,
    /// Keep the local file as a conflict copy first.
    pub conflict_copy: bool,
    /// What the pass saw at the target (`None`: nothing).
    pub expected: Option<LocalFile>,
    /// The manifest the index recorded for `expected`, when `expected` is that file: the
    /// chunks the two versions share are copied from it ([`patch`]).
    pub base: Option<ChunkHash>,
    /// A temporary file beside the target that already holds the content, complete
    /// ([`super::stage`]).
    pub staged: Option<String>,
}

/// What became of a [`WriteJob`].
pub(super) enum WriteOutcome {
    /// Written; `local` is the new file, `copy` a conflict copy kept of what it replaced.
    Written {
        local: LocalFile,
        copy: Option<FilePath>,
    },
    /// The content is not all here yet.
    Pending,
    /// The target changed locally after the pass saw it: left as it is (the next pass
    /// publishes the local edit, and the two versions meet as a conflict).
    ChangedMeanwhile,
    Refused(String),
    Failed(String),
}

/// Files up to this size have their content read from the store ahead, with the rest of their
/// group's, in two lookups (manifests, then chunks) instead of a few per file.
const PRELOAD_FILE: u64 = 256 << 10;
/// Bytes of content a group reads ahead, at most (the rest is read file by file).
const PRELOAD_BYTES: usize = 32 << 20;

/// A small file's content, read ahead: its manifest and its chunks' bytes, in order (not yet
/// checked against their hashes).
type Preloaded = HashMap<ChunkHash, (Manifest, Vec<Vec<u8>>)>;

/// The content of the small files among `jobs` that is all here, read from the store in two
/// lookups: [`PRELOAD_FILE`] per file and [`PRELOAD_BYTES`] in all, whatever the manifests
/// claim. Files patched from a local copy, larger ones and ones with content missing are left
/// out (read file by file as before); a failed read leaves everything out.
fn preload(blobs: &crate::store::BlobStore, jobs: &[WriteJob]) -> Preloaded {
    let mut wanted: Vec<ChunkHash> = jobs
        .iter()
        .filter(|j| j.base.is_none() && j.meta.size <= PRELOAD_FILE)
        .filter_map(|j| j.meta.manifest)
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let Ok(manifests) = blobs.get_many(&wanted, PRELOAD_BYTES) else {
        return Preloaded::new();
    };
    let mut chosen: Vec<(ChunkHash, Manifest)> = Vec::new();
    let mut budget = 0u64;
    for (h, bytes) in manifests {
        let Ok(m) = Manifest::decode(&bytes) else {
            continue;
        };
        if !h.verifies(&bytes) || m.length() > PRELOAD_FILE {
            continue;
        }
        budget += m.length();
        if budget > PRELOAD_BYTES as u64 {
            break;
        }
        chosen.push((h, m));
    }
    let mut chunks: Vec<ChunkHash> = chosen
        .iter()
        .flat_map(|(_, m)| m.chunks().iter().map(|c| c.hash))
        .collect();
    chunks.sort_unstable();
    chunks.dedup();
    let Ok(data) = blobs.get_many(&chunks, PRELOAD_BYTES) else {
        return Preloaded::new();
    };
    let data: HashMap<ChunkHash, Vec<u8>> = data.into_iter().collect();
    // Counted by the bytes held, not by what the manifests say of them.
    let mut held = 0usize;
    let mut out = Preloaded::new();
    for (h, m) in chosen {
        let content: Option<Vec<Vec<u8>>> = m
            .chunks()
            .iter()
            .map(|c| {
                data.get(&c.hash)
                    .filter(|d| d.len() == c.len as usize)
                    .cloned()
            })
            .collect();
        let Some(content) = content else { continue };
        held += content.iter().map(Vec::len).sum::<usize>();
        if held > PRELOAD_BYTES {
            break;
        }
        out.insert(h, (m, content));
    }
    out
}

/// Writes remote files in three steps: every file into a temporary file beside its target (a
/// few at a time), then one flush of the file system (so the data of all of them is durable
/// with one journal commit instead of one per file), then each replaces its target. Every
/// operation goes through the handle of the target's directory, opened beneath the root once
/// for the whole group ([`DirCache`]: at most [`super::dirs::MAX_HELD`] held open, whatever
/// the group's directories).
pub(super) fn write_files(
    blobs: &crate::store::BlobStore,
    root: &Beneath,
    jobs: Vec<WriteJob>,
    device: &str,
    now: mesh_core::time::Timestamp,
) -> Vec<(WriteJob, WriteOutcome)> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let preloaded = preload(blobs, &jobs);
    let dirs = DirCache::new(root);
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Stage>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    let workers = jobs.len().clamp(1, 4);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                let pre = job.meta.manifest.and_then(|m| preloaded.get(&m));
                let stage = stage_one(blobs, &dirs, job, pre);
                *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(stage);
            });
        }
    });
    let stages: Vec<Stage> = slots
        .into_iter()
        .map(|s| {
            s.into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .unwrap_or(Stage::Done(WriteOutcome::Pending))
        })
        .collect();
    let any = stages.iter().any(|s| matches!(s, Stage::Ready { .. }));
    let synced = if any { sync(root) } else { Ok(()) };
    jobs.into_iter()
        .zip(stages)
        .map(|(job, stage)| {
            let outcome = match stage {
                Stage::Done(o) => o,
                // The directory's handle again: the one the file was written through, unless
                // the group had more directories than the cache holds (then opened anew).
                Stage::Ready { temp, name } => match dirs.parent(&job.meta.path, false) {
                    Err(e) => WriteOutcome::Failed(format!(
                        "{}: reopening its directory: {e}",
                        job.meta.path
                    )),
                    Ok((dir, _)) => match &synced {
                        Ok(()) => finish_one(root, &job, &dir, &temp, &name, device, now),
                        Err(e) => {
                            let _ = dir.remove(&temp, false);
                            WriteOutcome::Failed(format!("syncing to disk: {e}"))
                        }
                    },
                },
            };
            (job, outcome)
        })
        .collect()
}

/// Makes the pass's temporary files durable: on Linux one `syncfs` of the file system holding
/// the root (a single journal commit for all of them); elsewhere each was synced when written.
fn sync(root: &Beneath) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        root.root().sync_fs()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = root;
        Ok(())
    }
}

/// A remote file on its way: written to `temp` in its target's directory, to replace `name`
/// there. The directory's handle is not kept here (see [`write_files`]).
enum Stage {
    Ready { temp: String, name: String },
    Done(WriteOutcome),
}

/// Writes one file to a temporary file beside its target, from `pre` when its content was
/// read ahead, else from the store.
fn stage_one(
    blobs: &crate::store::BlobStore,
    dirs: &DirCache<'_>,
    job: &WriteJob,
    pre: Option<&(Manifest, Vec<Vec<u8>>)>,
) -> Stage {
    let Some(manifest) = job.meta.manifest else {
        return Stage::Done(WriteOutcome::Refused("file entry without content".into()));
    };
    if let Some(temp) = &job.staged {
        return staged(dirs, job, temp);
    }
    let read;
    let (m, absent) = match pre {
        Some((m, _)) => (m, Vec::new()),
        None => {
            let Ok(Some(m)) = blobs.manifest(&manifest) else {
                return Stage::Done(WriteOutcome::Pending);
            };
            let chunks: Vec<ChunkHash> = m.chunks().iter().map(|c| c.hash).collect();
            let Ok(absent) = blobs.absent(&chunks) else {
                return Stage::Done(WriteOutcome::Pending);
            };
            read = m;
            (&read, absent)
        }
    };
    if !absent.is_empty() && job.base.is_none() {
        return Stage::Done(WriteOutcome::Pending);
    }
    let (dir, name) = match dirs.parent(&job.meta.path, true) {
        Ok(d) => d,
        Err(e) => return Stage::Done(WriteOutcome::Refused(e.to_string())),
    };
    match dir.entry(&name) {
        Ok(Found::Dir { .. }) => {
            return Stage::Done(WriteOutcome::Refused(format!(
                "{} is a directory",
                job.meta.path
            )))
        }
        Ok(Found::Symlink) => {
            return Stage::Done(WriteOutcome::Refused(format!(
                "{} is a symbolic link",
                job.meta.path
            )))
        }
        _ => {}
    }
    let base = match (&job.base, &job.expected) {
        (Some(b), Some(seen)) => patch::Base::open(blobs, &dir, &name, b, seen),
        _ => None,
    };
    if absent
        .iter()
        .any(|h| !base.as_ref().is_some_and(|b| b.has(h)))
    {
        return Stage::Done(WriteOutcome::Pending);
    }
    faults::at(faults::Moment::Write, &dir.path().join(&name));
    let temp = format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple());
    let written = (|| -> Result<(), String> {
        let mut file = dir.create_new(&temp).map_err(|e| e.to_string())?;
        match (&base, pre) {
            (Some(base), _) => {
                patch::write_patched(blobs, base, m, &file)?;
            }
            (None, Some((m, content))) => {
                // Checked as the store checks what it reads.
                for (c, data) in m.chunks().iter().zip(content) {
                    if !c.hash.verifies(data) {
                        return Err(format!(
                            "blob store: object {} does not match its hash",
                            c.hash
                        ));
                    }
                    file.write_all(data).map_err(|e| e.to_string())?;
                }
            }
            (None, None) => {
                let mut w = BufWriter::with_capacity(1 << 20, &file);
                blobs
                    .write_to(&manifest, &mut w)
                    .map_err(|e| e.to_string())?;
                w.flush().map_err(|e| e.to_string())?;
            }
        }
        file.set_modified(fsops::from_ns(job.meta.mtime_ns))
            .map_err(|e| e.to_string())?;
        fsops::set_mode(&file, Some(job.meta.mode)).map_err(|e| e.to_string())?;
        #[cfg(not(target_os = "linux"))]
        file.sync_all().map_err(|e| e.to_string())?;
        Ok(())
    })();
    match written {
        Ok(()) => Stage::Ready { temp, name },
        Err(e) => {
            let _ = dir.remove(&temp, false);
            Stage::Done(WriteOutcome::Failed(e))
        }
    }
}

/// A file already written into `temp` beside its target ([`super::stage`]): ready once the
/// target is still something it may replace.
fn staged(dirs: &DirCache<'_>, job: &WriteJob, temp: &str) -> Stage {
    let (dir, name) = match dirs.parent(&job.meta.path, false) {
        Ok(d) => d,
        Err(e) => return Stage::Done(WriteOutcome::Refused(e.to_string())),
    };
    let refused = match dir.entry(&name) {
        Ok(Found::Dir { .. }) => Some(format!("{} is a directory", job.meta.path)),
        Ok(Found::Symlink) => Some(format!("{} is a symbolic link", job.meta.path)),
        _ => None,
    };
    if let Some(reason) = refused {
        let _ = dir.remove(temp, false);
        return Stage::Done(WriteOutcome::Refused(reason));
    }
    faults::at(faults::Moment::Write, &dir.path().join(&name));
    Stage::Ready {
        temp: temp.to_owned(),
        name,
    }
}

/// Keeps the local file as a conflict copy if asked, then puts the synced temporary file in
/// the target's place without losing what is there (see the module documentation).
fn finish_one(
    root: &Beneath,
    job: &WriteJob,
    dir: &DirHandle,
    temp: &str,
    name: &str,
    device: &str,
    now: mesh_core::time::Timestamp,
) -> WriteOutcome {
    let fail = |e: String| {
        let _ = dir.remove(temp, false);
        WriteOutcome::Failed(e)
    };
    let path = &job.meta.path;
    let mut copy = None;
    let mut expected = job.expected.as_ref();
    if job.conflict_copy && dir.entry(name).is_ok() {
        match keep_as_copy(dir, name, path, device, now) {
            Ok(c) => copy = Some(c),
            Err(e) => return fail(format!("keeping a conflict copy: {e}")),
        }
        expected = None;
    }
    faults::at(faults::Moment::Replace, &root.path().join(path.as_str()));
    match replace(dir, temp, name, expected, path) {
        Ok(Replaced::Done) => {}
        Ok(Replaced::Kept) => {
            // What the new file replaced had changed: it is at `temp` now; keep it.
            match keep_as_copy(dir, temp, path, device, now) {
                Ok(c) => copy = Some(c),
                Err(e) => {
                    // Put it back rather than leave it under a temporary name.
                    return match dir.rename(temp, name, RenameMode::Exchange) {
                        Ok(()) => fail(format!("keeping a file changed meanwhile: {e}")),
                        Err(e2) => WriteOutcome::Failed(format!(
                            "keeping a file changed meanwhile: {e}; it is at {}: {e2}",
                            dir.path().join(temp).display()
                        )),
                    };
                }
            }
        }
        Ok(Replaced::Refused) => {
            let _ = dir.remove(temp, false);
            return WriteOutcome::ChangedMeanwhile;
        }
        Err(e) => return fail(format!("{path}: {e}")),
    }
    match dir.stat(name, path) {
        Some(local) => WriteOutcome::Written { local, copy },
        None => WriteOutcome::Failed("the written file vanished".into()),
    }
}

enum Replaced {
    /// The target now holds the new file; what it replaced (if anything) was as expected.
    Done,
    /// The target now holds the new file; what it replaced had changed and is at the
    /// temporary name, to be kept.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Kept,
    /// The target had changed; nothing was replaced.
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    Refused,
}

/// Whether `now` is still what the pass saw.
fn unchanged(now: Option<&LocalFile>, expected: Option<&LocalFile>) -> bool {
    match (now, expected) {
        (None, None) => true,
        (Some(n), Some(e)) => n == e,
        _ => false,
    }
}

#[cfg(target_os = "linux")]
fn replace(
    dir: &DirHandle,
    temp: &str,
    name: &str,
    expected: Option<&LocalFile>,
    path: &FilePath,
) -> std::io::Result<Replaced> {
    if expected.is_none() {
        match dir.rename(temp, name, RenameMode::NoReplace) {
            Ok(()) => return Ok(Replaced::Done),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    dir.rename(temp, name, RenameMode::Exchange)?;
    // `temp` now names what was at the target.
    if unchanged(dir.stat(temp, path).as_ref(), expected) {
        let _ = dir.remove(temp, false);
        Ok(Replaced::Done)
    } else {
        Ok(Replaced::Kept)
    }
}

#[cfg(not(target_os = "linux"))]
fn replace(
    dir: &DirHandle,
    temp: &str,
    name: &str,
    expected: Option<&LocalFile>,
    path: &FilePath,
) -> std::io::Result<Replaced> {
    if !unchanged(dir.stat(name, path).as_ref(), expected) {
        return Ok(Replaced::Refused);
    }
    dir.rename_over(temp, name)?;
    Ok(Replaced::Done)
}

/// The conflict-copy name of `path` for `device` at `now`, numbered `n` (1: no number).
pub(super) fn copy_name(
    path: &FilePath,
    device: &str,
    now: mesh_core::time::Timestamp,
    n: u32,
) -> Option<FilePath> {
    let base = path.conflict_copy(device, now).ok()?;
    if n <= 1 {
        return Some(base);
    }
    let s = base.as_str();
    let close = s.rfind(')')?;
    FilePath::new(format!("{} {n}{}", &s[..close], &s[close..])).ok()
}

/// Most copies of one name a device keeps in one second.
const COPY_LIMIT: u32 = 1000;

/// Renames `from` (in `dir`, the directory of `path`) to the first free conflict-copy name of
/// `path`, never replacing a file.
fn keep_as_copy(
    dir: &DirHandle,
    from: &str,
    path: &FilePath,
    device: &str,
    now: mesh_core::time::Timestamp,
) -> Result<FilePath, String> {
    for n in 1..=COPY_LIMIT {
        let Some(copy) = copy_name(path, device, now, n) else {
            return Err("no name for a conflict copy".into());
        };
        match dir.rename(from, copy.file_name(), RenameMode::NoReplace) {
            Ok(()) => return Ok(copy),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!(
        "{COPY_LIMIT} conflict copies of {path} in one second"
    ))
}

/// Removes temporary files a crashed write left behind, below the opened root (never
/// through a symbolic link). A large file's download in progress ([`super::stage`]) is kept
/// for the next attempt to carry on from, unless it is older than [`STAGED_KEPT`].
pub(super) fn remove_stale_temps(root: &Beneath) {
    // By path, each directory opened when its turn comes (one open at a time, as in a scan).
    let mut stack = vec![String::new()];
    while let Some(path) = stack.pop() {
        let Ok(dir) = root.open_dir(&path) else {
            continue;
        };
        let Ok(names) = dir.list() else { continue };
        for name in names {
            let Some(name) = name.to_str() else { continue };
            match dir.entry(name) {
                Ok(Found::Dir { .. }) => stack.push(match path.is_empty() {
                    true => name.to_owned(),
                    false => format!("{path}/{name}"),
                }),
                Ok(Found::File { mtime_ns, .. }) if name.starts_with(TEMP_PREFIX) => {
                    if super::stage::is_staged(name) && !stale(mtime_ns) {
                        continue;
                    }
                    let _ = dir.remove(name, false);
                }
                _ => {}
            }
        }
    }
}

/// How long a large file's interrupted download is kept for the next attempt.
const STAGED_KEPT: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Whether a file last written at `mtime_ns` was written more than [`STAGED_KEPT`] ago (or
/// says it was written in the future).
fn stale(mtime_ns: i64) -> bool {
    fsops::from_ns(mtime_ns)
        .elapsed()
        .map_or(true, |age| age > STAGED_KEPT)
}

/// Renames local paths to the case the feed names them in: `(key, from, to)`, parents before
/// what is below them (fold-key order). A path below a directory renamed before it follows
/// it. Gives each with the path it had and the outcome.
pub(super) fn rename_cases(
    root: &Beneath,
    moves: Vec<(String, FilePath, FilePath)>,
) -> Vec<(String, FilePath, FilePath, Result<(), String>)> {
    let mut renamed_dirs: Vec<(String, FilePath)> = Vec::new();
    let mut out = Vec::with_capacity(moves.len());
    for (key, from, to) in moves {
        let mut from = from;
        for (old, new) in renamed_dirs.iter().rev() {
            if let Some(rest) = from.as_str().strip_prefix(old.as_str()) {
                if let Ok(p) = new.join(rest.trim_start_matches('/')) {
                    from = p;
                }
                break;
            }
        }
        let result = if from == to {
            Ok(())
        } else {
            rename_case(root, &from, &to)
        };
        if result.is_ok() {
            renamed_dirs.push((format!("{}/", from.as_str()), to.clone()));
        }
        out.push((key, from, to, result));
    }
    out
}

/// Makes the directories remote entries name, in the order given (a parent before what is
/// in it), with missing parents on the way; one that is already a directory counts as made,
/// one held by something else (a file, a symbolic link) is refused. Through one handle per
/// parent directory ([`DirCache`]).
pub(super) fn make_dirs(root: &Beneath, paths: &[FilePath]) -> Vec<Result<(), String>> {
    let dirs = DirCache::new(root);
    paths
        .iter()
        .map(|path| {
            let (dir, name) = dirs.parent(path, true).map_err(|e| e.to_string())?;
            match dir.entry(&name) {
                Ok(Found::Dir { .. }) => Ok(()),
                Ok(_) => Err(format!("{path} exists and is not a directory")),
                Err(_) => dir.mkdir(&name).map_err(|e| e.to_string()),
            }
        })
        .collect()
}

/// Removes what remote deletions name, in the order given (deepest first, so that a
/// directory's files go before it): a file only while it is unchanged since it was synced
/// (`expected`), a directory only while it is one (and empty: the system refuses otherwise).
/// Each through its directory's handle, opened once for all of them ([`DirCache`]). Something
/// already gone counts as removed.
pub(super) fn remove_files(
    root: &Beneath,
    asked: Vec<(FilePath, FileKind, Option<IndexRecord>)>,
) -> Vec<Result<(), String>> {
    let dirs = DirCache::new(root);
    asked
        .into_iter()
        .map(|(path, kind, expected)| {
            let (dir, name) = dirs.parent(&path, false).map_err(|e| e.to_string())?;
            let now = dir.stat(&name, &path);
            match (kind, now, expected) {
                (FileKind::File, Some(now), Some(exp)) if exp.matches(&now) => {
                    dir.remove(&name, false).map_err(|e| e.to_string())
                }
                (FileKind::Dir, Some(now), _) if now.kind == FileKind::Dir => {
                    dir.remove(&name, true).map_err(|e| e.to_string())
                }
                (_, None, _) => Ok(()),
                _ => Err("changed since it was synced; kept".into()),
            }
        })
        .collect()
}

/// Renames `from` to `to`, which differs from it only in case, in the same directory; never
/// over another file (on a case-insensitive file system the two names are one file).
fn rename_case(root: &Beneath, from: &FilePath, to: &FilePath) -> Result<(), String> {
    let parent = |p: &FilePath| p.parent().map(|d| d.as_str().to_owned());
    if parent(from) != parent(to) {
        return Err("its directory differs in case".into());
    }
    let (dir, old) = root.parent(from, false).map_err(|e| e.to_string())?;
    let new = to.file_name();
    match dir.entry(new) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => dir
            .rename(&old, new, RenameMode::NoReplace)
            .map_err(|e| e.to_string()),
        Ok(_) if dir.same_file(&old, new) => dir.rename_over(&old, new).map_err(|e| e.to_string()),
        Ok(_) => Err(format!("{to} exists")),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use mesh_core::blob::chunk_boundaries;
    use mesh_core::id::FolderId;
    use mesh_core::time::Timestamp;

    use super::super::patch::tests::noise;
    use super::*;
    use crate::store::{BlobStore, Durability};

    /// Leftover temporary files go at start-up, except a large file's interrupted download
    /// younger than a week (the next attempt carries on from it).
    #[test]
    fn stale_temporaries_go_but_a_recent_interrupted_download_stays() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            format!("{TEMP_PREFIX}0123"),
            format!("{TEMP_PREFIX}stage-recent"),
            format!("{TEMP_PREFIX}stage-old"),
        ];
        for n in &names {
            std::fs::write(dir.path().join(n), b"part").unwrap();
        }
        let old = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join(&names[2]))
            .unwrap();
        old.set_modified(std::time::SystemTime::now() - STAGED_KEPT * 2)
            .unwrap();
        remove_stale_temps(&Beneath::open(dir.path()).unwrap());
        let left: Vec<bool> = names.iter().map(|n| dir.path().join(n).exists()).collect();
        assert_eq!(left, [false, true, false]);
    }

    /// Stores `data` (its chunks, or `damaged` in place of the first, then its manifest) and
    /// returns a job writing it at `name`.
    fn job(blobs: &BlobStore, name: &str, data: &[u8], damaged: Option<&[u8]>) -> WriteJob {
        let folder: FolderId = "f".parse().unwrap();
        let chunks: Vec<(ChunkHash, Vec<u8>)> = chunk_boundaries(data)
            .map(|r| (ChunkHash::of(&data[r.clone()]), data[r].to_vec()))
            .collect();
        let m = Manifest::new(chunks.iter().map(|(h, d)| (*h, d.len() as u32))).unwrap();
        let enc = m.encode();
        let stored = chunks.iter().enumerate().map(|(i, (h, d))| match damaged {
            Some(bad) if i == 0 => (*h, bad),
            _ => (*h, d.as_slice()),
        });
        blobs
            .put_trusted(&folder, stored.chain([(m.hash(), enc.as_slice())]))
            .unwrap();
        WriteJob {
            key: name.into(),
            meta: FileMeta {
                path: FilePath::new(name).unwrap(),
                kind: FileKind::File,
                size: data.len() as u64,
                mtime_ns: 1_700_000_000_000_000_000,
                mode: 0o644,
                manifest: Some(m.hash()),
                renamed_from: None,
            },
            version: "1".into(),
            conflict_copy: false,
            expected: None,
            base: None,
            staged: None,
        }
    }

    /// Small files (one chunk, several chunks, empty) are written from content read ahead in
    /// one lookup, a file above [`PRELOAD_FILE`] from the store as before: every one whole.
    #[test]
    fn small_files_read_ahead_and_large_ones_are_all_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().join("blobs.db"), Durability::Normal).unwrap();
        let files: Vec<(&str, Vec<u8>)> = vec![
            ("one.bin", noise(4096, 1)),
            ("several.bin", noise(200 << 10, 2)),
            ("empty.bin", Vec::new()),
            ("large.bin", noise(PRELOAD_FILE as usize + (100 << 10), 3)),
        ];
        let jobs: Vec<WriteJob> = files.iter().map(|(n, d)| job(&blobs, n, d, None)).collect();
        let ahead = preload(&blobs, &jobs);
        assert_eq!(ahead.len(), 3, "the three small files are read ahead");
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        let root = Beneath::open(&tree).unwrap();
        let now = Timestamp::from_unix(1_700_000_000).unwrap();
        for (job, outcome) in write_files(&blobs, &root, jobs, "dev", now) {
            assert!(
                matches!(outcome, WriteOutcome::Written { .. }),
                "{} not written",
                job.key
            );
        }
        for (name, data) in &files {
            assert_eq!(&std::fs::read(tree.join(name)).unwrap(), data, "{name}");
        }
    }

    /// A group of files in more directories than the process may hold open at once is
    /// written whole: the group does not keep a handle per directory until its end. Checked in
    /// a child process (this test binary again) whose open-file limit is lowered to 200, with
    /// 600 files in 600 directories (a remote chooses both).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_group_in_more_directories_than_the_open_file_limit_is_written_whole() {
        if !super::super::dirs::limited::under_file_limit(
            "mapping::apply::tests::a_group_in_more_directories_than_the_open_file_limit_is_written_whole",
            200,
        ) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().join("blobs.db"), Durability::Normal).unwrap();
        let jobs: Vec<WriteJob> = (0..600u64)
            .map(|i| job(&blobs, &format!("d{i:03}/f.bin"), &noise(100, i), None))
            .collect();
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        let root = Beneath::open(&tree).unwrap();
        let now = Timestamp::from_unix(1_700_000_000).unwrap();
        for (job, outcome) in write_files(&blobs, &root, jobs, "dev", now) {
            match outcome {
                WriteOutcome::Written { .. } => {}
                WriteOutcome::Refused(e) | WriteOutcome::Failed(e) => {
                    panic!("{} not written: {e}", job.key)
                }
                _ => panic!("{} not written", job.key),
            }
        }
        for i in 0..600u64 {
            let path = tree.join(format!("d{i:03}/f.bin"));
            assert_eq!(std::fs::read(path).unwrap(), noise(100, i));
        }
    }

    /// Remote directories made together: nested ones with their parents, an existing one
    /// counted as made, a name held by a file or a symbolic link refused, and nothing made
    /// outside the root through the link.
    #[cfg(unix)]
    #[test]
    fn directories_are_made_beneath_the_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("old")).unwrap();
        std::fs::write(tree.join("file"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), tree.join("link")).unwrap();
        let root = Beneath::open(&tree).unwrap();
        let paths: Vec<FilePath> = ["a", "a/b", "c/d/e", "old", "file", "link", "link/x"]
            .iter()
            .map(|p| FilePath::new(p).unwrap())
            .collect();
        let made = make_dirs(&root, &paths);
        let ok: Vec<bool> = made.iter().map(Result::is_ok).collect();
        assert_eq!(
            ok,
            [true, true, true, true, false, false, false],
            "{made:?}"
        );
        for d in ["a/b", "c/d/e", "old"] {
            assert!(tree.join(d).is_dir(), "{d}");
        }
        assert!(tree.join("file").is_file());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    /// Remote deletions applied together: an unchanged file goes, a changed one stays, a
    /// directory goes once its files have (deepest first), something already gone counts as
    /// removed, and a path through a symbolic link removes nothing outside the root.
    #[cfg(unix)]
    #[test]
    fn deletions_remove_only_what_is_unchanged_and_beneath_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        for d in ["tree/a", "tree/b"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        for f in ["a/same", "a/also", "b/changed"] {
            std::fs::write(tree.join(f), b"synced").unwrap();
        }
        std::fs::write(outside.path().join("x"), b"not ours").unwrap();
        std::os::unix::fs::symlink(outside.path(), tree.join("link")).unwrap();
        let root = Beneath::open(&tree).unwrap();
        let record = |p: &str| {
            let path = FilePath::new(p).unwrap();
            let (d, name) = root.parent(&path, false).unwrap();
            IndexRecord::of(&d.stat(&name, &path).unwrap(), None, "1".into())
        };
        let (same, also, changed) = (record("a/same"), record("a/also"), record("b/changed"));
        std::fs::write(tree.join("b/changed"), b"edited here since").unwrap();
        let asked = |p: &str, kind, exp: Option<&IndexRecord>| {
            (FilePath::new(p).unwrap(), kind, exp.cloned())
        };
        let results = remove_files(
            &root,
            vec![
                asked("link/x", FileKind::File, Some(&same)),
                asked("gone", FileKind::File, Some(&same)),
                asked("b/changed", FileKind::File, Some(&changed)),
                asked("b", FileKind::Dir, None),
                asked("a/same", FileKind::File, Some(&same)),
                asked("a/also", FileKind::File, Some(&also)),
                asked("a", FileKind::Dir, None),
            ],
        );
        let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
        assert_eq!(
            ok,
            [false, true, false, false, true, true, true],
            "{results:?}"
        );
        assert!(!tree.join("a").exists());
        assert_eq!(
            std::fs::read(tree.join("b/changed")).unwrap(),
            b"edited here since"
        );
        assert_eq!(
            std::fs::read(outside.path().join("x")).unwrap(),
            b"not ours"
        );
    }

    /// A stored chunk whose bytes do not match its hash is refused when read ahead, as when
    /// read from the store: the file is not written and no temporary file is left.
    #[test]
    fn a_damaged_chunk_read_ahead_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::memory();
        let data = noise(4096, 4);
        let mut bad = data.clone();
        bad[100] ^= 1;
        let jobs = vec![job(&blobs, "bad.bin", &data, Some(&bad))];
        assert_eq!(preload(&blobs, &jobs).len(), 1);
        let root = Beneath::open(dir.path()).unwrap();
        let now = Timestamp::from_unix(1_700_000_000).unwrap();
        let written = write_files(&blobs, &root, jobs, "dev", now);
        match &written[0].1 {
            WriteOutcome::Failed(e) => assert!(e.contains("does not match"), "{e}"),
            _ => panic!("a damaged chunk was written"),
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
