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

use std::path::{Path, PathBuf};

use mesh_core::model::{FileMeta, FilePath};

use crate::mapping::faults;
use crate::mapping::fsops;
use crate::mapping::scan::{self, LocalFile};

/// A remote file to write.
pub(super) struct WriteJob {
    pub key: String,
    pub meta: FileMeta,
    pub version: String,
    /// Keep the local file as a conflict copy first.
    pub conflict_copy: bool,
    /// What the pass saw at the target (`None`: nothing).
    pub expected: Option<LocalFile>,
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
/// with one journal commit instead of one per file), then each replaces its target.
pub(super) fn write_files(
    blobs: &crate::store::BlobStore,
    root: &Path,
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
    let temps: Vec<&Path> = stages
        .iter()
        .filter_map(|s| match s {
            Stage::Ready { temp, .. } => Some(temp.as_path()),
            Stage::Done(_) => None,
        })
        .collect();
    let synced = if temps.is_empty() {
        Ok(())
    } else {
        fsops::sync_files(root, &temps)
    };
    jobs.into_iter()
        .zip(stages)
        .map(|(job, stage)| {
            let outcome = match (stage, &synced) {
                (Stage::Done(o), _) => o,
                (Stage::Ready { temp, target }, Ok(())) => {
                    finish_one(root, &job, &temp, &target, device, now)
                }
                (Stage::Ready { temp, .. }, Err(e)) => {
                    let _ = std::fs::remove_file(&temp);
                    WriteOutcome::Failed(format!("syncing to disk: {e}"))
                }
            };
            (job, outcome)
        })
        .collect()
}

/// A remote file on its way: written to `temp`, to be renamed over `target`.
enum Stage {
    Ready { temp: PathBuf, target: PathBuf },
    Done(WriteOutcome),
}

fn stage_one(blobs: &crate::store::BlobStore, root: &Path, job: &WriteJob) -> Stage {
    let Some(manifest) = job.meta.manifest else {
        return Stage::Done(WriteOutcome::Refused("file entry without content".into()));
    };
    match blobs.manifest(&manifest) {
        Ok(Some(m)) => match blobs.absent(&m.chunks().iter().map(|c| c.hash).collect::<Vec<_>>()) {
            Ok(a) if a.is_empty() => {}
            _ => return Stage::Done(WriteOutcome::Pending),
        },
        _ => return Stage::Done(WriteOutcome::Pending),
    }
    let target = match fsops::safe_target(root, &job.meta.path, true) {
        Ok(t) => t,
        Err(reason) => return Stage::Done(WriteOutcome::Refused(reason)),
    };
    if let Ok(m) = std::fs::symlink_metadata(&target) {
        if m.is_dir() {
            return Stage::Done(WriteOutcome::Refused(format!(
                "{} is a directory",
                target.display()
            )));
        }
    }
    match fsops::write_temp(&target, Some(job.meta.mtime_ns), Some(job.meta.mode), |w| {
        blobs.write_to(&manifest, w).map(|_| ())
    }) {
        Ok(temp) => Stage::Ready { temp, target },
        Err(e) => Stage::Done(WriteOutcome::Failed(e.to_string())),
    }
}

/// Keeps the local file as a conflict copy if asked, then puts the synced temporary file in
/// the target's place without losing what is there (see the module documentation).
fn finish_one(
    root: &Path,
    job: &WriteJob,
    temp: &Path,
    target: &Path,
    device: &str,
    now: mesh_core::time::Timestamp,
) -> WriteOutcome {
    let fail = |e: String| {
        let _ = std::fs::remove_file(temp);
        WriteOutcome::Failed(e)
    };
    let mut copy = None;
    let mut expected = job.expected.as_ref();
    if job.conflict_copy && target.exists() {
        match keep_as_copy(root, target, &job.meta.path, device, now) {
            Ok(c) => copy = Some(c),
            Err(e) => return fail(format!("keeping a conflict copy: {e}")),
        }
        expected = None;
    }
    faults::replacing(target);
    match replace(temp, target, expected, &job.meta.path) {
        Ok(Replaced::Done) => {}
        Ok(Replaced::Kept) => {
            // What the new file replaced had changed: it is at `temp` now; keep it.
            match keep_as_copy(root, temp, &job.meta.path, device, now) {
                Ok(c) => copy = Some(c),
                Err(e) => {
                    // Put it back rather than leave it under a temporary name.
                    return match exchange(temp, target) {
                        Ok(()) => fail(format!("keeping a file changed meanwhile: {e}")),
                        Err(e2) => WriteOutcome::Failed(format!(
                            "keeping a file changed meanwhile: {e}; it is at {}: {e2}",
                            temp.display()
                        )),
                    };
                }
            }
        }
        Ok(Replaced::Refused) => {
            let _ = std::fs::remove_file(temp);
            return WriteOutcome::ChangedMeanwhile;
        }
        Err(e) => return fail(format!("{}: {e}", target.display())),
    }
    match scan::stat(target, &job.meta.path) {
        Some(local) => WriteOutcome::Written { local, copy },
        None => WriteOutcome::Failed("the written file vanished".into()),
    }
}

enum Replaced {
    /// The target now holds the new file; what it replaced (if anything) was as expected.
    Done,
    /// The target now holds the new file; what it replaced had changed and is at the
    /// temporary path, to be kept.
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
    temp: &Path,
    target: &Path,
    expected: Option<&LocalFile>,
    path: &FilePath,
) -> std::io::Result<Replaced> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    if expected.is_none() {
        match renameat_with(CWD, temp, CWD, target, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(Replaced::Done),
            Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    renameat_with(CWD, temp, CWD, target, RenameFlags::EXCHANGE)?;
    // `temp` now names what was at the target.
    if unchanged(scan::stat(temp, path).as_ref(), expected) {
        let _ = std::fs::remove_file(temp);
        Ok(Replaced::Done)
    } else {
        Ok(Replaced::Kept)
    }
}

#[cfg(not(target_os = "linux"))]
fn replace(
    temp: &Path,
    target: &Path,
    expected: Option<&LocalFile>,
    path: &FilePath,
) -> std::io::Result<Replaced> {
    if !unchanged(scan::stat(target, path).as_ref(), expected) {
        return Ok(Replaced::Refused);
    }
    std::fs::rename(temp, target)?;
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

/// Renames `from` to the first free conflict-copy name of `path`, never replacing a file.
fn keep_as_copy(
    root: &Path,
    from: &Path,
    path: &FilePath,
    device: &str,
    now: mesh_core::time::Timestamp,
) -> Result<FilePath, String> {
    for n in 1..=COPY_LIMIT {
        let Some(copy) = copy_name(path, device, now, n) else {
            return Err("no name for a conflict copy".into());
        };
        let to = fsops::safe_target(root, &copy, false)?;
        match rename_noreplace(from, &to) {
            Ok(()) => return Ok(copy),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!(
        "{COPY_LIMIT} conflict copies of {path} in one second"
    ))
}

/// Swaps two files atomically.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    Ok(renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE)?)
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

#[cfg(target_os = "linux")]
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    Ok(renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE)?)
}

#[cfg(not(target_os = "linux"))]
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(to).is_ok() {
        return Err(std::io::ErrorKind::AlreadyExists.into());
    }
    std::fs::rename(from, to)
}
