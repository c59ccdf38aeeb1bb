//! File-system operations of a mapping: safe targets, atomic writes, metadata.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::client::blobs::io_error;
use crate::error::Result;

/// Names starting with this are a mapping's temporary files: never published, removed when a
/// mapping starts (left over from a crash).
pub const TEMP_PREFIX: &str = ".mesh-tmp-";

/// Writes `target` atomically: `fill` writes the content into a new temporary file in the
/// same directory, which is synced to disk and then renamed over `target`. A crash at any
/// point leaves either the old file or the new one, never a part of it (at worst a temporary
/// file, which the next mapping start removes).
pub(crate) fn write_atomically(
    target: &Path,
    fill: impl FnOnce(&mut BufWriter<&File>) -> Result<()>,
) -> Result<()> {
    write_atomically_with(target, None, None, fill)
}

/// [`write_atomically`], also setting the modification time and permission bits before the
/// rename.
pub(crate) fn write_atomically_with(
    target: &Path,
    mtime_ns: Option<i64>,
    mode: Option<u32>,
    fill: impl FnOnce(&mut BufWriter<&File>) -> Result<()>,
) -> Result<()> {
    let temp = write_temp(target, mtime_ns, mode, fill)?;
    let result = (|| {
        File::open(&temp)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_error(&temp, e))?;
        fs::rename(&temp, target).map_err(|e| io_error(target, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Writes a new temporary file in `target`'s directory (not yet synced to disk) and returns
/// its path; on failure nothing is left behind.
pub(crate) fn write_temp(
    target: &Path,
    mtime_ns: Option<i64>,
    mode: Option<u32>,
    fill: impl FnOnce(&mut BufWriter<&File>) -> Result<()>,
) -> Result<PathBuf> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let temp = dir.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| io_error(&temp, e))?;
        {
            let mut w = BufWriter::with_capacity(1 << 20, &file);
            fill(&mut w)?;
            w.flush().map_err(|e| io_error(&temp, e))?;
        }
        if let Some(ns) = mtime_ns {
            file.set_modified(from_ns(ns))
                .map_err(|e| io_error(&temp, e))?;
        }
        set_mode(&file, mode).map_err(|e| io_error(&temp, e))
    })();
    match result {
        Ok(()) => Ok(temp),
        Err(e) => {
            let _ = fs::remove_file(&temp);
            Err(e)
        }
    }
}

#[cfg(unix)]
pub(crate) fn set_mode(file: &File, mode: Option<u32>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match mode {
        Some(m) if m & 0o777 != 0 => file.set_permissions(fs::Permissions::from_mode(m & 0o777)),
        _ => Ok(()),
    }
}

#[cfg(not(unix))]
pub(crate) fn set_mode(_file: &File, _mode: Option<u32>) -> std::io::Result<()> {
    Ok(())
}

/// The permission bits of a file's metadata (0 where the platform has none).
#[cfg(unix)]
pub fn mode_of(meta: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o777
}

/// The permission bits of a file's metadata (0 where the platform has none).
#[cfg(not(unix))]
pub fn mode_of(_meta: &fs::Metadata) -> u32 {
    0
}

/// A file's inode number (0 where the platform has none).
#[cfg(unix)]
pub fn ino_of(meta: &fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

/// A file's inode number (0 where the platform has none).
#[cfg(not(unix))]
pub fn ino_of(_meta: &fs::Metadata) -> u64 {
    0
}

/// Nanoseconds since the Unix epoch of a file's modification time.
pub fn mtime_ns(meta: &fs::Metadata) -> i64 {
    match meta.modified() {
        Ok(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
        },
        Err(_) => 0,
    }
}

/// Nanoseconds since the Unix epoch of a file's change time (its inode's last change, which
/// no caller can set: 0 where the platform has none).
#[cfg(unix)]
pub fn ctime_ns(meta: &fs::Metadata) -> i128 {
    use std::os::unix::fs::MetadataExt;
    i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec())
}

#[cfg(not(unix))]
pub fn ctime_ns(_meta: &fs::Metadata) -> i128 {
    0
}

pub(crate) fn from_ns(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}
