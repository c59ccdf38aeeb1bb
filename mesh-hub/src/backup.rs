//! `mesh-hub backup DEST`: a consistent copy of a hub's data directory, made while it serves.
//!
//! Each database is copied as one snapshot ([`mesh_store::backup::copy_sqlite`]), the replica
//! first and the blob store after it (every object an entry of the copied replica refers to was
//! stored before the entry, so it is in the later copy of the blob store), then the accounts
//! and the hub's secret. A hub started on the copy begins a new epoch that does not continue
//! the one that was running during the copy ([`crate::epoch`]), so devices that synced after
//! the copy was made offer back everything it lacks.

use std::path::{Path, PathBuf};

use crate::datadir::SECRET_FILE;
use crate::error::HubError;
use crate::{ACCOUNTS_DB, BLOBS_DB, REPLICA_DB};

/// What a backup copied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupReport {
    /// The files written, in the order they were copied.
    pub files: Vec<PathBuf>,
    /// Their total size in bytes.
    pub bytes: u64,
}

/// Copies the hub data directory `data` to `dest` (created, private to this user; it must not
/// exist or be empty), while a hub may be serving from `data`.
pub fn backup(data: &Path, dest: &Path) -> Result<BackupReport, HubError> {
    let io = |p: &Path, e: std::io::Error| {
        HubError::Io(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", p.display()),
        ))
    };
    if !data.join(REPLICA_DB).is_file() {
        return Err(HubError::Store(format!(
            "{} holds no hub replica ({REPLICA_DB})",
            data.display()
        )));
    }
    if dest.exists()
        && std::fs::read_dir(dest)
            .map_err(|e| io(dest, e))?
            .next()
            .is_some()
    {
        return Err(HubError::Store(format!(
            "{}: the backup destination is not empty",
            dest.display()
        )));
    }
    crate::datadir::make_private(dest)?;
    let mut report = BackupReport {
        files: Vec::new(),
        bytes: 0,
    };
    for name in [REPLICA_DB, BLOBS_DB, ACCOUNTS_DB] {
        let src = data.join(name);
        if !src.is_file() {
            continue;
        }
        let to = dest.join(name);
        mesh_store::backup::copy_sqlite(&src, &to)?;
        report.bytes += std::fs::metadata(&to).map_err(|e| io(&to, e))?.len();
        report.files.push(to);
    }
    let secret = data.join(SECRET_FILE);
    if secret.is_file() {
        let to = dest.join(SECRET_FILE);
        report.bytes += std::fs::copy(&secret, &to).map_err(|e| io(&to, e))?;
        report.files.push(to);
    }
    crate::datadir::make_private(dest)?;
    std::fs::File::open(dest)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dest, e))?;
    Ok(report)
}
