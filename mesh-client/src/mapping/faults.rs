//! Fault injection for tests: make a directory listing fail, or run a hook just before a
//! mapping replaces a file. Tests run as root, where permissions cannot make a read fail, and
//! a race needs a precise moment; these seams give both. Nothing is injected unless a test
//! asks (one relaxed atomic load per call otherwise).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

type Hook = Arc<dyn Fn(&Path) + Send + Sync>;

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

/// Runs `hook` with the target's path whenever a mapping is about to replace a file below
/// `root` with a remote version (after the remote version is written and synced, before the
/// rename), until [`clear_hooks`]. For tests of races with local edits.
#[doc(hidden)]
pub fn before_replace(root: &Path, hook: impl Fn(&Path) + Send + Sync + 'static) {
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

/// `std::fs::read_dir`, unless a test made listings of `dir` fail.
pub(crate) fn list_dir(dir: &Path) -> std::io::Result<std::fs::ReadDir> {
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
    std::fs::read_dir(dir)
}

/// Runs the hooks of tests for a file about to be replaced.
pub(crate) fn replacing(target: &Path) {
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
        h(target);
    }
}
