//! One client per store: an exclusive lock on a file beside the store, held for the client's
//! life.

use std::fs::{File, OpenOptions};

use fs4::FileExt;
use fs4::TryLockError;
use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};

/// The lock file of the store at `db`: `<db>.lock` (`notes.db` → `notes.db.lock`).
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// An exclusive, advisory lock on a store's lock file (an OS file lock: released when the
/// holder closes the file or its process dies, so a crash never leaves a stale lock).
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    /// Takes the lock of the store at `db`, or fails at once with [`StoreError::Locked`]
    /// when another client holds it (in this process or another one).
    pub fn acquire(db: &Path) -> Result<StoreLock> {
        let path = lock_path(db);
        let io = |e: std::io::Error| StoreError::Io {
            path: path.clone(),
            source: e,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        // Through the trait, by name: `File::try_lock` itself is newer than our MSRV.
        match FileExt::try_lock(&file) {
            Ok(()) => Ok(StoreLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(StoreError::Locked {
                path: db.to_path_buf(),
            }),
            Err(TryLockError::Error(e)) => Err(io(e)),
        }
    }
}
