//! Scanning a mapped directory: what is there now, minus what `.meshignore` leaves out.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use mesh_core::model::{FileKind, FilePath};

use crate::mapping::fsops::{mode_of, mtime_ns, TEMP_PREFIX};

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
}

impl LocalFile {
    /// What the metadata of a directory or regular file at `path` says.
    fn of(path: FilePath, meta: &fs::Metadata) -> Self {
        let dir = meta.is_dir();
        LocalFile {
            path,
            kind: if dir { FileKind::Dir } else { FileKind::File },
            size: if dir { 0 } else { meta.len() },
            mtime_ns: if dir { 0 } else { mtime_ns(meta) },
            mode: mode_of(meta),
        }
    }
}

/// The ignore rules of a mapped directory: the patterns of its root `.meshignore` (gitignore
/// syntax), plus the mapping's own temporary files.
pub struct Ignore(Option<Gitignore>);

impl Ignore {
    /// Reads `<root>/.meshignore` (no file: nothing ignored). A malformed pattern is skipped.
    pub fn load(root: &Path) -> Self {
        let file = root.join(IGNORE_FILE);
        if !file.is_file() {
            return Ignore(None);
        }
        let mut b = GitignoreBuilder::new(root);
        if let Some(e) = b.add(&file) {
            tracing::warn!(file = %file.display(), error = %e, "bad .meshignore pattern");
        }
        Ignore(b.build().ok())
    }

    /// Whether `path` (a directory when `dir`) is left out.
    pub fn ignored(&self, path: &str, dir: bool) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        if name.starts_with(TEMP_PREFIX) {
            return true;
        }
        match &self.0 {
            Some(g) => g.matched_path_or_any_parents(path, dir).is_ignore(),
            None => false,
        }
    }
}

/// What a scan found, keyed by [`FilePath::fold_key`], and what it left out (symlinks, names
/// other devices could not hold, case collisions, unreadable entries) with the reason.
pub struct Scan {
    pub files: BTreeMap<String, LocalFile>,
    pub skipped: Vec<(String, String)>,
}

/// Walks `root` without following symbolic links.
pub fn scan(root: &Path, ignore: &Ignore) -> Scan {
    let mut out = Scan {
        files: BTreeMap::new(),
        skipped: Vec::new(),
    };
    let mut stack: Vec<(std::path::PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => {
                out.skipped.push((prefix.clone(), e.to_string()));
                continue;
            }
        };
        let mut entries: Vec<fs::DirEntry> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            let Some(name) = name.to_str() else {
                out.skipped.push((
                    format!("{prefix}{}", name.to_string_lossy()),
                    "the name is not UTF-8".into(),
                ));
                continue;
            };
            let rel = format!("{prefix}{name}");
            let Ok(meta) = fs::symlink_metadata(e.path()) else {
                continue; // Gone meanwhile.
            };
            let ft = meta.file_type();
            if ignore.ignored(&rel, ft.is_dir()) {
                continue;
            }
            if ft.is_symlink() {
                out.skipped
                    .push((rel, "symbolic links are not followed or synced".into()));
                continue;
            }
            if !ft.is_dir() && !ft.is_file() {
                out.skipped.push((rel, "not a regular file".into()));
                continue;
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
            if ft.is_dir() {
                stack.push((e.path(), format!("{rel}/")));
            }
            out.files.insert(key, LocalFile::of(path, &meta));
        }
    }
    out
}

/// What is at `target` now (`None`: nothing, or something a mapping does not hold).
pub fn stat(target: &Path, path: &FilePath) -> Option<LocalFile> {
    let meta = fs::symlink_metadata(target).ok()?;
    let ft = meta.file_type();
    if ft.is_symlink() || !(ft.is_dir() || ft.is_file()) {
        return None;
    }
    Some(LocalFile::of(path.clone(), &meta))
}
