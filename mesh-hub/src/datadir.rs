//! A hub's claim on its data directory: private to the hub's user (the directory 0700, its
//! files 0600), held by one hub at a time (an OS lock on `hub.lock`, released when the hub's
//! process ends however it ends), and the home of the hub's secret (`hub.secret`, 32 random
//! bytes) that authenticates the cursors it issues.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use fs4::{FileExt, TryLockError};

use crate::error::HubError;

/// The lock file in a hub's data directory.
pub const LOCK_FILE: &str = "hub.lock";
/// The file holding the hub's secret.
pub const SECRET_FILE: &str = "hub.secret";

/// A data directory claimed by a running hub; the claim ends when this is dropped.
#[derive(Debug)]
pub(crate) struct DataDir {
    dir: PathBuf,
    _lock: File,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> HubError + '_ {
    move |e| {
        HubError::Io(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        ))
    }
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<(), HubError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<(), HubError> {
    Ok(())
}

fn private_file(path: &Path) -> Result<File, HubError> {
    let mut o = OpenOptions::new();
    o.create(true).truncate(false).read(true).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path).map_err(io(path))
}

/// Makes `dir` (created if missing) and the files in it private to this user (0700 and 0600),
/// without claiming it: the admin commands use this, as they work beside a running hub.
pub fn make_private(dir: &Path) -> Result<(), HubError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    set_mode(dir, 0o700)?;
    tighten(dir)
}

fn tighten(dir: &Path) -> Result<(), HubError> {
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        if e.file_type().map_err(io(&e.path()))?.is_file() {
            set_mode(&e.path(), 0o600)?;
        }
    }
    Ok(())
}

impl DataDir {
    /// Creates `dir` if needed, makes it private and takes its lock; fails with
    /// [`HubError::DataDirInUse`] while another hub (in this process or another) holds it.
    pub fn claim(dir: &Path) -> Result<DataDir, HubError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        set_mode(dir, 0o700)?;
        let path = dir.join(LOCK_FILE);
        let lock = private_file(&path)?;
        match FileExt::try_lock(&lock) {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(HubError::DataDirInUse(dir.display().to_string()))
            }
            Err(TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        Ok(DataDir {
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The hub's secret, made (32 random bytes) on first use and kept in the directory.
    pub fn secret(&self) -> Result<[u8; 32], HubError> {
        let path = self.dir.join(SECRET_FILE);
        let mut f = private_file(&path)?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).map_err(io(&path))?;
        if let Ok(key) = <[u8; 32]>::try_from(buf.as_slice()) {
            return Ok(key);
        }
        if !buf.is_empty() {
            return Err(HubError::Store(format!(
                "{}: {} bytes, expected 32 (remove it to make a new secret; cursors issued \
                 before are then refused)",
                path.display(),
                buf.len()
            )));
        }
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| HubError::Store(format!("no randomness: {e}")))?;
        f.write_all(&key).map_err(io(&path))?;
        f.sync_all().map_err(io(&path))?;
        Ok(key)
    }

    /// Makes every file in the directory private (the stores' files, made by SQLite with the
    /// process' umask, included; SQLite gives its WAL and shared-memory files the mode of
    /// their database).
    pub fn tighten(&self) -> Result<(), HubError> {
        tighten(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_at_a_time_and_the_secret_stays() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("hub");
        let a = DataDir::claim(&dir).unwrap();
        assert!(matches!(
            DataDir::claim(&dir),
            Err(HubError::DataDirInUse(_))
        ));
        let key = a.secret().unwrap();
        assert_eq!(a.secret().unwrap(), key);
        drop(a);
        let b = DataDir::claim(&dir).unwrap();
        assert_eq!(b.secret().unwrap(), key, "kept across claims");
        std::fs::write(dir.join(SECRET_FILE), b"short").unwrap();
        assert!(matches!(b.secret(), Err(HubError::Store(_))));
    }
}
