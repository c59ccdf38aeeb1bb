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

use std::io::{BufWriter, Write};

use mesh_core::blob::ChunkHash;
use mesh_core::model::{FileMeta, FilePath};

use crate::mapping::beneath::{Beneath, DirHandle, Found, RenameMode};
use crate::mapping::faults;
use crate::mapping::fsops::{self, TEMP_PREFIX};
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

/// Writes remote files in three steps: every file into a temporary file beside its target (a
/// few at a time), then one flush of the file system (so the data of all of them is durable
/// with one journal commit instead of one per file), then each replaces its target. Every
/// operation goes through the handle of the target's directory, opened beneath the root.
pub(super) fn write_files(
    blobs: &crate::store::BlobStore,
    root: &Beneath,
    jobs: Vec<WriteJob>,
    device: &str,
    now: mesh_core::time::Timestamp,
) -> Vec<(WriteJob, WriteOutcome)> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Stage>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    let workers = jobs.len().clamp(1, 4);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                let stage = stage_one(blobs, root, job);
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
            let outcome = match (stage, &synced) {
                (Stage::Done(o), _) => o,
                (Stage::Ready { dir, temp, name }, Ok(())) => {
                    finish_one(root, &job, &dir, &temp, &name, device, now)
                }
                (Stage::Ready { dir, temp, .. }, Err(e)) => {
                    let _ = dir.remove(&temp, false);
                    WriteOutcome::Failed(format!("syncing to disk: {e}"))
                }
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

/// A remote file on its way: written to `temp` in `dir`, to replace `name` there.
enum Stage {
    Ready {
        dir: DirHandle,
        temp: String,
        name: String,
    },
    Done(WriteOutcome),
}

fn stage_one(blobs: &crate::store::BlobStore, root: &Beneath, job: &WriteJob) -> Stage {
    let Some(manifest) = job.meta.manifest else {
        return Stage::Done(WriteOutcome::Refused("file entry without content".into()));
    };
    let Ok(Some(m)) = blobs.manifest(&manifest) else {
        return Stage::Done(WriteOutcome::Pending);
    };
    let Ok(absent) = blobs.absent(&m.chunks().iter().map(|c| c.hash).collect::<Vec<_>>()) else {
        return Stage::Done(WriteOutcome::Pending);
    };
    if !absent.is_empty() && job.base.is_none() {
        return Stage::Done(WriteOutcome::Pending);
    }
    let (dir, name) = match root.parent(&job.meta.path, true) {
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
        let file = dir.create_new(&temp).map_err(|e| e.to_string())?;
        match &base {
            Some(base) => {
                patch::write_patched(blobs, base, &m, &file)?;
            }
            None => {
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
        Ok(()) => Stage::Ready { dir, temp, name },
        Err(e) => {
            let _ = dir.remove(&temp, false);
            Stage::Done(WriteOutcome::Failed(e))
        }
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
/// through a symbolic link).
pub(super) fn remove_stale_temps(root: &Beneath) {
    let mut stack = vec![root.open_dir("")];
    while let Some(dir) = stack.pop() {
        let Ok(dir) = dir else { continue };
        let Ok(names) = dir.list() else { continue };
        for name in names {
            let Some(name) = name.to_str() else { continue };
            match dir.entry(name) {
                Ok(Found::Dir { .. }) => stack.push(dir.child_dir(name)),
                Ok(Found::File { .. }) if name.starts_with(TEMP_PREFIX) => {
                    let _ = dir.remove(name, false);
                }
                _ => {}
            }
        }
    }
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
