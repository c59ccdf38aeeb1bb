//! Scanning a mapped directory: what is there now, minus what `.meshignore` leaves out.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use mesh_core::model::{FileKind, FilePath};

use crate::mapping::fsops::{mode_of, mtime_ns, TEMP_PREFIX};
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
/// syntax), plus the mapping's own temporary files and marker.
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

/// Walks `root` without following symbolic links. A path is reported absent only when its
/// directory was listed completely: a directory whose listing fails (or fails part way) and a
/// file whose metadata cannot be read are [`Scan::unreadable`].
pub fn scan(root: &Path, ignore: &Ignore) -> Scan {
    let mut out = Scan {
        files: BTreeMap::new(),
        skipped: Vec::new(),
        unreadable: Vec::new(),
    };
    let mut stack: Vec<(std::path::PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let shown = prefix.trim_end_matches('/').to_owned();
        let listed = crate::mapping::faults::list_dir(&dir)
            .and_then(|rd| rd.collect::<std::io::Result<Vec<fs::DirEntry>>>());
        let mut entries = match listed {
            Ok(entries) => entries,
            Err(e) => {
                out.unreadable.push((shown, e.to_string()));
                continue;
            }
        };
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
            let meta = match fs::symlink_metadata(e.path()) {
                Ok(m) => m,
                // Gone, or unreadable, meanwhile: unknown for this pass.
                Err(err) => {
                    out.unreadable.push((rel, err.to_string()));
                    continue;
                }
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
