//! File entries: what a mapped directory publishes in its folder's `files` feed.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::blob::ChunkHash;
use crate::error::{CoreError, Result};
use crate::id::EntryId;
use crate::time::Timestamp;

/// The longest file path accepted, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// The longest path component accepted, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// A validated path of a file or directory inside a mapped folder: relative, `/`-separated,
/// and safe to join onto the mapped directory on any platform.
///
/// Refused: empty paths and components, absolute paths (a leading `/` or a drive letter), `.`
/// and `..` components, backslashes, NUL and other control characters, `:` (drive letters and
/// alternate data streams), names ending in a dot or a space, Windows device names (`CON`,
/// `PRN`, `AUX`, `NUL`, `COM1`–`COM9`, `LPT1`–`LPT9`, with or without an extension, in any
/// case), over-long names and paths.
///
/// ```
/// use mesh_core::model::FilePath;
/// let p: FilePath = "docs/Report.txt".parse().unwrap();
/// assert_eq!(p.file_name(), "Report.txt");
/// assert_eq!(p.parent().unwrap().as_str(), "docs");
/// for bad in ["/etc/passwd", "../x", "a/../../x", "a\\b", "c:/x", "con.txt", "a//b", "a\0b", ""] {
///     assert!(bad.parse::<FilePath>().is_err(), "{bad:?}");
/// }
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FilePath(Arc<str>);

const WINDOWS_DEVICES: &[&str] = &["CON", "PRN", "AUX", "NUL"];

impl FilePath {
    /// Checks `s` and wraps it.
    pub fn new(s: impl AsRef<str>) -> Result<Self> {
        let s = s.as_ref();
        validate(s)?;
        Ok(FilePath(Arc::from(s)))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The directory holding this path (`None` at the top level).
    pub fn parent(&self) -> Option<FilePath> {
        self.0.rfind('/').map(|i| FilePath(Arc::from(&self.0[..i])))
    }

    /// `self` inside `dir`.
    pub fn join(&self, name: &str) -> Result<FilePath> {
        FilePath::new(format!("{}/{name}", self.0))
    }

    /// The key two paths collide on in a case-insensitive file system (Unicode lowercase).
    pub fn fold_key(&self) -> String {
        self.0.to_lowercase()
    }

    /// The id of the `files` entry for this path: derived from [`FilePath::fold_key`], so every
    /// device names the same path (in any case) the same way, and concurrent creations of one
    /// path meet as a FeedSync conflict instead of two entries.
    pub fn entry_id(&self) -> EntryId {
        let hash = ChunkHash::of(self.fold_key().as_bytes());
        // 2 + 40 ASCII characters: always a valid id.
        EntryId::new(format!("f-{}", &hash.hex()[..40])).unwrap_or_else(|_| unreachable!())
    }

    /// The name of the conflict copy that keeps a losing version of this file:
    /// `name (conflict <device> <date> <time>).ext` (UTC, `YYYY-MM-DD HHMMSS`), beside it.
    ///
    /// ```
    /// use mesh_core::model::FilePath;
    /// use mesh_core::time::Timestamp;
    /// let p: FilePath = "notes/plan.v2.txt".parse().unwrap();
    /// let when = Timestamp::from_unix(1_764_000_000).unwrap();
    /// assert_eq!(
    ///     p.conflict_copy("laptop", when).unwrap().as_str(),
    ///     "notes/plan.v2 (conflict laptop 2025-11-24 160000).txt"
    /// );
    /// ```
    pub fn conflict_copy(&self, device: &str, when: Timestamp) -> Result<FilePath> {
        let name = self.file_name();
        let (stem, ext) = match name.rfind('.') {
            Some(i) if i > 0 => (&name[..i], &name[i..]),
            _ => (name, ""),
        };
        let device: String = device
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        let stamp = when.to_datetime().format("%Y-%m-%d %H%M%S");
        let copy = format!("{stem} (conflict {device} {stamp}){ext}");
        match self.parent() {
            Some(dir) => dir.join(&copy),
            None => FilePath::new(copy),
        }
    }
}

fn validate(s: &str) -> Result<()> {
    let bad = |reason: String| CoreError::InvalidPath {
        path: s.chars().take(200).collect(),
        reason,
    };
    if s.is_empty() {
        return Err(bad("empty path".into()));
    }
    if s.len() > MAX_PATH_LEN {
        return Err(bad(format!("longer than {MAX_PATH_LEN} bytes")));
    }
    if s.starts_with('/') {
        return Err(bad("absolute path".into()));
    }
    if s.contains('\\') {
        return Err(bad("backslash in path".into()));
    }
    if s.contains('\0') {
        return Err(bad("NUL in path".into()));
    }
    if s.chars().any(char::is_control) {
        return Err(bad("control character in path".into()));
    }
    if s.contains(':') {
        return Err(bad("':' in path (drive letter or stream name)".into()));
    }
    for name in s.split('/') {
        if name.is_empty() {
            return Err(bad("empty component".into()));
        }
        if name == "." || name == ".." {
            return Err(bad(format!("{name:?} component")));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(bad(format!("component longer than {MAX_NAME_LEN} bytes")));
        }
        if name.ends_with('.') || name.ends_with(' ') {
            return Err(bad("component ends in a dot or a space".into()));
        }
        let base = name.split('.').next().unwrap_or(name).trim_end();
        let upper = base.to_ascii_uppercase();
        let device = WINDOWS_DEVICES.contains(&upper.as_str())
            || ((upper.starts_with("COM") || upper.starts_with("LPT"))
                && upper.len() == 4
                && matches!(upper.as_bytes()[3], b'1'..=b'9'));
        if device {
            return Err(bad(format!("reserved device name {name:?}")));
        }
    }
    Ok(())
}

impl fmt::Display for FilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for FilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FilePath({:?})", &*self.0)
    }
}

impl FromStr for FilePath {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self> {
        FilePath::new(s)
    }
}

impl Serialize for FilePath {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for FilePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        FilePath::new(s).map_err(serde::de::Error::custom)
    }
}

/// What a `files` entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A regular file with content.
    File,
    /// A directory (published so that empty directories sync too).
    Dir,
}

/// The JSON content of a `files` entry: one file or directory of a mapped folder.
///
/// The content itself is the entry's media resource (a blob manifest, see
/// [`crate::blob`]); `manifest` repeats its address so the entry alone says what to fetch.
///
/// ```
/// use mesh_core::model::{FileKind, FileMeta};
/// let json = r#"{"path":"a/b.txt","kind":"file","size":3,"mtime_ns":1700000000000000000,"mode":420,
///   "manifest":"blake3:0000000000000000000000000000000000000000000000000000000000000000"}"#;
/// let meta: FileMeta = serde_json::from_str(json).unwrap();
/// assert_eq!(meta.kind, FileKind::File);
/// assert!(serde_json::from_str::<FileMeta>(&json.replace("a/b.txt", "../b.txt")).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Where the file lives in the mapped directory.
    pub path: FilePath,
    /// File or directory.
    pub kind: FileKind,
    /// Length in bytes (0 for directories).
    #[serde(default)]
    pub size: u64,
    /// Last modification, nanoseconds since the Unix epoch.
    #[serde(default)]
    pub mtime_ns: i64,
    /// Unix permission bits (`0o644`…); only the `0o777` bits are applied.
    #[serde(default)]
    pub mode: u32,
    /// The content's blob address (files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<ChunkHash>,
    /// The path this file was renamed from, when the publishing device saw a rename.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_from: Option<FilePath>,
}

impl FileMeta {
    /// Checks the fields against each other: a file has a manifest, a directory has none.
    pub fn check(&self) -> Result<()> {
        match (self.kind, &self.manifest) {
            (FileKind::File, None) => Err(CoreError::InvalidPath {
                path: self.path.to_string(),
                reason: "file entry without a manifest".into(),
            }),
            (FileKind::Dir, Some(_)) => Err(CoreError::InvalidPath {
                path: self.path.to_string(),
                reason: "directory entry with a manifest".into(),
            }),
            _ => Ok(()),
        }
    }
}
