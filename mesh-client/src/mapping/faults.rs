//! Fault injection for tests: make a directory listing fail, or run a hook at a precise
//! moment of a mapping's file operations (a local edit, or a directory swapped for a symbolic
//! link, racing with them). Tests run as root, where permissions cannot make a read fail, and
//! a race needs a precise moment; these seams give both. Nothing is injected unless a test
//! asks (one relaxed atomic load per call otherwise).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

type Hook = Arc<dyn Fn(Moment, &Path) + Send + Sync>;

/// A moment of a mapping's file operations a test hook runs at.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// A pass has read the feed and is about to act on it (the target is the mapped root).
    Plan,
    /// A local file's path was checked and is about to be opened and read to publish it.
    Read,
    /// A remote file's directory was checked and its temporary file is about to be written.
    Write,
    /// A remote file was written and synced and is about to replace its target.
    Replace,
}

static ARMED: AtomicBool = AtomicBool::new(false);
static FAILING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static HOOKS: Mutex<Vec<(PathBuf, Hook)>> = Mutex::new(Vec::new());

fn canonical(dir: &Path) -> PathBuf {
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())
}

/// Makes every listing of the directory `dir` by a mapping scan fail with an I/O error
/// (`EIO`) while `fail` is set. For tests.
#[doc(hidden)]
pub fn fail_listing(dir: &Path, fail: bool) {
    let dir = canonical(dir);
    let mut f = FAILING.lock().unwrap_or_else(|p| p.into_inner());
    f.retain(|d| *d != dir);
    if fail {
        f.push(dir);
        ARMED.store(true, Ordering::SeqCst);
    }
}

/// Runs `hook` with the moment and the file's path at each [`Moment`] of a mapping's file
/// operations below `root`, until [`clear_hooks`]. For tests of races.
#[doc(hidden)]
pub fn set_hook(root: &Path, hook: impl Fn(Moment, &Path) + Send + Sync + 'static) {
    HOOKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((canonical(root), Arc::new(hook)));
    ARMED.store(true, Ordering::SeqCst);
}

/// Removes the hooks of `root`.
#[doc(hidden)]
pub fn clear_hooks(root: &Path) {
    let root = canonical(root);
    HOOKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|(r, _)| *r != root);
}

/// An injected error if a test made listings of `dir` fail.
pub(crate) fn listing(dir: &Path) -> std::io::Result<()> {
    if ARMED.load(Ordering::Relaxed)
        && FAILING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|d| d == dir)
    {
        return Err(std::io::Error::other(
            "input/output error (injected by a test)",
        ));
    }
    Ok(())
}

/// Runs the hooks of tests at `moment` for `target`.
pub(crate) fn at(moment: Moment, target: &Path) {
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    let hooks: Vec<Hook> = HOOKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(root, _)| target.starts_with(root))
        .map(|(_, h)| h.clone())
        .collect();
    for h in hooks {
        h(moment, target);
    }
}

/// The name of the temporary file a large remote file is downloaded into, for the file whose
/// case-folded path is `key` and whose blob is `manifest` (tests plant things under it).
#[doc(hidden)]
pub fn staged_file_name(key: &str, manifest: &mesh_core::blob::ChunkHash) -> String {
    super::stage::staged_file_name(key, manifest)
}
