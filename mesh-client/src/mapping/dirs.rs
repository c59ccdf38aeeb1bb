//! Directory handles shared by one batch of file operations beneath a mapped root.
//!
//! Every operation on a file goes through the handle of the directory holding it, opened
//! beneath the root one component at a time ([`Beneath::parent`]). Opened afresh for each file,
//! that is a duplicate of the root's handle, one `openat2` per directory on the way and as many
//! `close`s: more system calls than the file's own work for a small file. A batch (one group
//! of files written; one pass's files read, directories made or files removed) asks a
//! [`DirCache`] instead, which opens each directory once and hands the same handle to every
//! file in it.
//!
//! The cache holds at most [`MAX_HELD`] handles, whatever the batch: a batch's paths come
//! from the remote, and a thousand files in a thousand directories must not hold a thousand
//! descriptors open (the default soft limit on open files is 1,024 on many systems). A
//! directory past that limit is opened for each use and closed after it, as without a cache.
//!
//! A handle is resolved once, when it is first asked for; what it names is then the directory
//! it opened, for the rest of the batch, even if that directory is moved meanwhile. That is
//! how each file's operations already worked (its temporary file is written, synced and
//! renamed through one handle); the cache makes the window a batch's instead of a file's.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use mesh_core::model::FilePath;

use crate::mapping::beneath::{Beneath, DirHandle};

/// Directory handles a [`DirCache`] keeps open at most; also the levels of a scan's way down
/// that keep their handle for the directories waiting below them (see [`super::scan::scan`]).
pub(super) const MAX_HELD: usize = 64;

/// The directories of one batch of file operations, each opened once beneath the root (see
/// the module documentation). Shared by the batch's threads.
pub(super) struct DirCache<'a> {
    root: &'a Beneath,
    /// By the directory's path relative to the root (`""` for the root itself).
    held: Mutex<HashMap<String, Arc<DirHandle>>>,
    limit: usize,
}

impl<'a> DirCache<'a> {
    /// An empty cache over `root`, holding at most [`MAX_HELD`] handles.
    pub(super) fn new(root: &'a Beneath) -> Self {
        Self::with_limit(root, MAX_HELD)
    }

    fn with_limit(root: &'a Beneath, limit: usize) -> Self {
        DirCache {
            root,
            held: Mutex::new(HashMap::new()),
            limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<DirHandle>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The directory holding `path`, opened beneath the root (missing directories on the way
    /// created when `create` is set), and `path`'s last name: as [`Beneath::parent`], with
    /// the handle shared by every file of the batch in the same directory.
    pub(super) fn parent(
        &self,
        path: &FilePath,
        create: bool,
    ) -> io::Result<(Arc<DirHandle>, String)> {
        let name = path.file_name().to_owned();
        let dir = path
            .parent()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        if let Some(held) = self.lock().get(&dir) {
            return Ok((held.clone(), name));
        }
        // Opened without the lock: the batch's other threads go on meanwhile. Should two open
        // the same directory at once, the first one kept is shared and the other closed.
        let (opened, _) = self.root.parent(path, create)?;
        let opened = Arc::new(opened);
        let mut held = self.lock();
        if let Some(first) = held.get(&dir) {
            return Ok((first.clone(), name));
        }
        if held.len() < self.limit {
            held.insert(dir, opened.clone());
        }
        Ok((opened, name))
    }

    /// Opens the regular file `path` for reading, through its directory's shared handle.
    pub(super) fn open_read(&self, path: &FilePath) -> io::Result<File> {
        let (dir, name) = self.parent(path, false)?;
        dir.open_read(&name)
    }

    /// How many handles the cache holds.
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.lock().len()
    }
}

/// For tests of what must hold under a low limit on open files.
#[cfg(all(test, target_os = "linux"))]
pub(in crate::mapping) mod limited {
    /// Set in the child process that runs a test under the limit.
    const INNER: &str = "MESH_TEST_LOW_FILE_LIMIT";

    /// In the test process: runs the test `name` (its full path) again in a child process (this
    /// test binary, through `sh`'s `ulimit`) that may hold at most `limit` files open, checks
    /// that it passed, and returns `false`. In that child: returns `true`, and the caller does
    /// the work.
    pub(in crate::mapping) fn under_file_limit(name: &str, limit: u32) -> bool {
        if std::env::var_os(INNER).is_some() {
            return true;
        }
        let exe = std::env::current_exe().expect("the test binary");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(r#"ulimit -n {limit} && exec "$0" "$@""#))
            .arg(exe)
            .args(["--exact", name, "--test-threads=1", "--nocapture"])
            .env(INNER, "1")
            .output()
            .expect("sh runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "the test did not run: {text}");
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> FilePath {
        FilePath::new(s).unwrap()
    }

    /// Files of one directory share its handle; the root's files share the root's; a
    /// directory is created on the way when asked, and not when not.
    #[test]
    fn files_of_one_directory_share_its_handle() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        let root = Beneath::open(dir.path()).unwrap();
        let cache = DirCache::new(&root);
        let (a1, n1) = cache.parent(&path("a/one"), false).unwrap();
        let (a2, n2) = cache.parent(&path("a/two"), false).unwrap();
        assert!(Arc::ptr_eq(&a1, &a2));
        assert_eq!((n1.as_str(), n2.as_str()), ("one", "two"));
        let (r1, _) = cache.parent(&path("top"), false).unwrap();
        let (r2, _) = cache.parent(&path("other"), false).unwrap();
        assert!(Arc::ptr_eq(&r1, &r2));
        assert!(!Arc::ptr_eq(&a1, &r1));
        assert!(cache.parent(&path("b/c/x"), false).is_err());
        assert_eq!(cache.held(), 2, "a failed open is not kept");
        let (c, name) = cache.parent(&path("b/c/x"), true).unwrap();
        c.create_new(&name).unwrap();
        assert!(dir.path().join("b/c/x").is_file());
        std::fs::write(dir.path().join("a/one"), b"1").unwrap();
        let mut read = String::new();
        std::io::Read::read_to_string(&mut cache.open_read(&path("a/one")).unwrap(), &mut read)
            .unwrap();
        assert_eq!(read, "1");
    }

    /// Past its limit the cache keeps no more handles: each further directory is opened for
    /// its caller alone and closed when the caller drops it.
    #[test]
    fn the_cache_holds_no_more_than_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..10 {
            std::fs::create_dir(dir.path().join(format!("d{i}"))).unwrap();
        }
        let root = Beneath::open(dir.path()).unwrap();
        let cache = DirCache::with_limit(&root, 3);
        for round in 0..2 {
            for i in 0..10 {
                let (d, _) = cache.parent(&path(&format!("d{i}/f")), false).unwrap();
                let shared = Arc::strong_count(&d) > 1;
                assert_eq!(shared, i < 3, "round {round}, d{i}");
            }
        }
        assert_eq!(cache.held(), 3);
    }

    /// A symbolic link on the way is refused, as by [`Beneath::parent`], and never kept.
    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_on_the_way_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let root = Beneath::open(dir.path()).unwrap();
        let cache = DirCache::new(&root);
        for create in [false, true] {
            assert!(cache.parent(&path("link/x"), create).is_err());
        }
        assert_eq!(cache.held(), 0);
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
