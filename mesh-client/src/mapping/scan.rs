//! Scanning a mapped directory: what is there now, minus what `.meshignore` leaves out.

use std::collections::BTreeMap;
use std::sync::Arc;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use mesh_core::model::{FileKind, FilePath};

use crate::mapping::beneath::{Beneath, DirHandle, Found};
use crate::mapping::dirs::MAX_HELD;
use crate::mapping::fsops::TEMP_PREFIX;
use crate::mapping::root::MARKER_FILE;

/// The name of the ignore file at the root of a mapped directory.
pub const IGNORE_FILE: &str = ".meshignore";

/// One file or directory found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    pub path: FilePath,
    pub kind: FileKind,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    /// A file's inode number (0 for a directory, or where unknown): a file renamed over
    /// another keeps its own, so the replacement shows even with the same size and time.
    pub ino: u64,
}

/// The ignore rules of a mapped directory: the patterns of its root `.meshignore` (gitignore
/// syntax), plus the mapping's own temporary files and marker.
pub struct Ignore(Option<Gitignore>);

impl Ignore {
    /// Reads `<root>/.meshignore` beneath the root's handle (no file, or a symbolic link:
    /// nothing ignored; at most 1 MiB is read). A malformed pattern is skipped.
    pub fn load(root: &Beneath) -> Self {
        use std::io::Read;
        let Ok(f) = root.root().open_read(IGNORE_FILE) else {
            return Ignore(None);
        };
        let mut text = String::new();
        if f.take(1 << 20).read_to_string(&mut text).is_err() {
            return Ignore(None);
        }
        let mut b = GitignoreBuilder::new(root.path());
        for line in text.lines() {
            if let Err(e) = b.add_line(None, line) {
                tracing::warn!(error = %e, "bad .meshignore pattern");
            }
        }
        Ignore(b.build().ok())
    }

    /// Whether `path` (a directory when `dir`) is left out.
    pub fn ignored(&self, path: &str, dir: bool) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        if name.starts_with(TEMP_PREFIX) || path == MARKER_FILE {
            return true;
        }
        match &self.0 {
            Some(g) => g.matched_path_or_any_parents(path, dir).is_ignore(),
            None => false,
        }
    }
}

/// What a scan found, keyed by [`FilePath::fold_key`], and what it left out (symlinks, names
/// other devices could not hold, case collisions) with the reason.
pub struct Scan {
    pub files: BTreeMap<String, LocalFile>,
    pub skipped: Vec<(String, String)>,
    /// Directories and files that could not be read, with the error (`""`: the root). What is
    /// below them is unknown for this pass: neither deleted nor written.
    pub unreadable: Vec<(String, String)>,
}

impl Scan {
    /// Fold keys of the unreadable paths: a key equal to one, or below one, is unknown.
    pub fn unknown_prefixes(&self) -> Vec<String> {
        self.unreadable
            .iter()
            .map(|(p, _)| p.to_lowercase())
            .collect()
    }
}

/// Whether the fold key `key` is one of `prefixes` or below one.
pub fn is_unknown(prefixes: &[String], key: &str) -> bool {
    prefixes.iter().any(|p| {
        p.is_empty()
            || key == p
            || (key.len() > p.len()
                && key.starts_with(p.as_str())
                && key.as_bytes()[p.len()] == b'/')
    })
}

/// Walks the opened mapped directory `root` without following symbolic links: every directory
/// is opened beneath the root's handle (see [`Beneath`]), so a directory swapped for a symbolic
/// link meanwhile is never listed. A path is reported absent only when its directory was
/// listed completely: a directory whose listing fails (or fails part way) and a name whose
/// metadata cannot be read are [`Scan::unreadable`].
pub fn scan(root: &Beneath, ignore: &Ignore) -> Scan {
    let mut out = Scan {
        files: BTreeMap::new(),
        skipped: Vec::new(),
        unreadable: Vec::new(),
    };
    // Directories still to list, each opened when its turn comes, so that a directory's
    // thousands of subdirectories waiting do not hold as many descriptors open. A waiting
    // directory keeps its parent's handle (shared by its siblings) to be opened from: those
    // are the directories on the way down to the one being listed, one each. Below
    // `MAX_HELD` levels none is kept, and a waiting directory is opened from the root by its
    // path (a remote can make paths of 2,000 levels).
    let mut stack: Vec<(Option<Arc<DirHandle>>, String)> = vec![(None, String::new())];
    while let Some((parent, prefix)) = stack.pop() {
        let shown = prefix.trim_end_matches('/').to_owned();
        let opened = match parent {
            Some(parent) => parent.child_dir(shown.rsplit('/').next().unwrap_or(&shown)),
            None => root.open_dir(&shown),
        };
        let listed = opened.and_then(|d| {
            crate::mapping::faults::listing(d.path())?;
            let names = d.list()?;
            Ok((Arc::new(d), names))
        });
        let (dir, mut names) = match listed {
            Ok(listed) => listed,
            Err(e) => {
                out.unreadable.push((shown, e.to_string()));
                continue;
            }
        };
        names.sort();
        for name in names {
            let Some(name) = name.to_str() else {
                out.skipped.push((
                    format!("{prefix}{}", name.to_string_lossy()),
                    "the name is not UTF-8".into(),
                ));
                continue;
            };
            let rel = format!("{prefix}{name}");
            let found = match dir.entry(name) {
                Ok(f) => f,
                // Gone, or unreadable, meanwhile: unknown for this pass.
                Err(err) => {
                    out.unreadable.push((rel, err.to_string()));
                    continue;
                }
            };
            let is_dir = matches!(found, Found::Dir { .. });
            if ignore.ignored(&rel, is_dir) {
                continue;
            }
            match found {
                Found::Symlink => {
                    out.skipped
                        .push((rel, "symbolic links are not followed or synced".into()));
                    continue;
                }
                Found::Other => {
                    out.skipped.push((rel, "not a regular file".into()));
                    continue;
                }
                Found::Dir { .. } | Found::File { .. } => {}
            }
            let path = match FilePath::new(&rel) {
                Ok(p) => p,
                Err(e) => {
                    out.skipped.push((rel, e.to_string()));
                    continue;
                }
            };
            let key = path.fold_key();
            if let Some(other) = out.files.get(&key) {
                out.skipped
                    .push((rel, format!("differs only in case from {}", other.path)));
                continue;
            }
            if is_dir {
                let from = (prefix.matches('/').count() < MAX_HELD).then(|| dir.clone());
                stack.push((from, format!("{rel}/")));
            }
            if let Some(local) = found.local(&path) {
                out.files.insert(key, local);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory with more subdirectories than the process may hold open at once is listed
    /// whole, and so is a chain of directories deeper than that: the directories waiting their
    /// turn hold a descriptor only for the first levels of the way down. Checked in a child
    /// process whose open-file limit is lowered to 200, with 600 subdirectories and a chain of
    /// 300 levels.
    #[cfg(target_os = "linux")]
    #[test]
    fn more_subdirectories_than_the_open_file_limit_are_all_listed() {
        if !crate::mapping::dirs::limited::under_file_limit(
            "mapping::scan::tests::more_subdirectories_than_the_open_file_limit_are_all_listed",
            200,
        ) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for i in 0..600 {
            let sub = dir.path().join(format!("d{i:03}"));
            std::fs::create_dir_all(sub.join("inner")).unwrap();
            std::fs::write(sub.join("inner/f"), b"x").unwrap();
        }
        // And a chain 300 levels deep, each level with a sibling waiting its turn (listed
        // after the chain's next level: the last name in order is walked first).
        let mut deep = dir.path().join("deep");
        for _ in 0..300 {
            std::fs::create_dir_all(deep.join("a")).unwrap();
            deep = deep.join("z");
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("f"), b"x").unwrap();
        let root = Beneath::open(dir.path()).unwrap();
        let found = scan(&root, &Ignore::load(&root));
        assert!(
            found.unreadable.is_empty(),
            "{:?}",
            found.unreadable.first()
        );
        // 600 × (directory, inner, file); deep, 300 × (a, z), and the file.
        assert_eq!(found.files.len(), 1800 + 1 + 300 * 2 + 1);
    }
}
