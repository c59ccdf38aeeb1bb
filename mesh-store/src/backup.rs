//! Online copies of SQLite databases.
//!
//! A copy is made with SQLite's `VACUUM INTO` over a read-only connection of its own: it reads
//! one consistent snapshot of the database (in WAL mode, writers carry on meanwhile) and
//! writes it, compacted, to a new file. The copy is private to this user (0600 on Unix).

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::error::{Result, StoreError};

/// How long a copy waits for a lock held by the database's writers before it fails.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Copies the SQLite database at `src` to `dest` (which must not exist), as one consistent
/// snapshot, while other connections may keep writing to `src`.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let src = dir.path().join("a.db");
/// let db = rusqlite::Connection::open(&src)?;
/// db.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (42);")?;
/// mesh_store::backup::copy_sqlite(&src, &dir.path().join("copy.db"))?;
/// let copy = rusqlite::Connection::open(dir.path().join("copy.db"))?;
/// let x: i64 = copy.query_row("SELECT x FROM t", [], |r| r.get(0))?;
/// assert_eq!(x, 42);
/// # Ok(()) }
/// ```
pub fn copy_sqlite(src: &Path, dest: &Path) -> Result<()> {
    let context = || format!("copying {} to {}", src.display(), dest.display());
    if dest.exists() {
        return Err(StoreError::Backend(format!(
            "{}: the destination exists",
            context()
        )));
    }
    if !src.is_file() {
        return Err(StoreError::Backend(format!(
            "{}: no such database",
            context()
        )));
    }
    let conn = Connection::open_with_flags(
        src,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::sqlite(context(), e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| StoreError::sqlite(context(), e))?;
    let Some(target) = dest.to_str() else {
        return Err(StoreError::Backend(format!(
            "{}: the destination path is not UTF-8",
            context()
        )));
    };
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(|e| StoreError::sqlite(context(), e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
            StoreError::Backend(format!("{}: making the copy private: {e}", context()))
        })?;
    }
    // The copy is complete once it is on disk.
    std::fs::File::open(dest)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::Backend(format!("{}: syncing the copy: {e}", context())))?;
    Ok(())
}
