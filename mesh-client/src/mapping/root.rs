//! A mapped directory's identity: the marker file at its root, and the checks that pause a
//! mapping whose directory is missing, unreadable or another one.
//!
//! An index says what a directory held when it last agreed with the feed; applied to any other
//! directory (an empty one created in place of an unmounted drive, a folder mapped elsewhere)
//! every indexed path would look deleted. So each mapped directory carries a marker naming the
//! folder, the device and the mapping (a random id), the index is stored under that id, and
//! every pass starts by checking that the marker is still there and still the same.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::mapping::beneath::{Beneath, Found};
use crate::sync::events::PauseReason;

/// The name of the marker file at the root of a mapped directory. It is never published, and a
/// remote entry of that name is left out.
pub const MARKER_FILE: &str = ".meshfolder";

/// Markers are small; a larger file there is not one.
const MARKER_LIMIT: u64 = 4096;

/// What a marker holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The folder mapped onto the directory.
    pub folder: String,
    /// The device that mapped it.
    pub device: String,
    /// The mapping's id: its index is stored under it.
    pub mapping: String,
}

impl Marker {
    /// A marker for a new mapping of `folder` by `device`.
    pub fn new(folder: &str, device: &str) -> Self {
        Marker {
            folder: folder.to_owned(),
            device: device.to_owned(),
            mapping: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    /// Writes the marker into `root` (atomically).
    pub fn write(&self, root: &Path) -> crate::error::Result<()> {
        let body = serde_json::to_vec_pretty(self).map_err(mesh_core::CoreError::from)?;
        crate::mapping::fsops::write_atomically(&root.join(MARKER_FILE), |w| {
            use std::io::Write;
            w.write_all(&body)
                .map_err(|e| crate::client::blobs::io_error(root, e))
        })
    }

    fn describe(&self) -> String {
        format!(
            "folder {}, device {}, mapping {}",
            self.folder, self.device, self.mapping
        )
    }
}

/// What is at a mapped directory's root.
pub enum Marking {
    /// The directory and its marker.
    Marked(Marker),
    /// The directory, without a marker.
    Unmarked,
}

/// Opens the mapped directory `root`, which must be a directory (not a symbolic link).
pub fn open(root: &Path) -> Result<Beneath, PauseReason> {
    let shown = root.display().to_string();
    Beneath::open(root).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => PauseReason::RootMissing { root: shown },
        _ => PauseReason::RootUnreadable {
            root: shown,
            error: e.to_string(),
        },
    })
}

/// Reads the marker of an opened mapped directory.
pub fn read_marker(root: &Beneath) -> Result<Marking, PauseReason> {
    let shown = root.path().display().to_string();
    let unreadable = |error: String| PauseReason::RootUnreadable {
        root: shown.clone(),
        error,
    };
    match root.root().entry(MARKER_FILE) {
        Ok(Found::File { size, .. }) if size <= MARKER_LIMIT => {}
        Ok(_) => {
            return Err(PauseReason::MarkerMismatch {
                root: shown.clone(),
                found: "something that is not a marker file".into(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Marking::Unmarked),
        Err(e) => return Err(unreadable(e.to_string())),
    }
    let mut body = Vec::new();
    root.root()
        .open_read(MARKER_FILE)
        .and_then(|f| f.take(MARKER_LIMIT).read_to_end(&mut body))
        .map_err(|e| unreadable(e.to_string()))?;
    match serde_json::from_slice::<Marker>(&body) {
        Ok(m) => Ok(Marking::Marked(m)),
        Err(_) => Err(PauseReason::MarkerMismatch {
            root: shown,
            found: "an unreadable marker".into(),
        }),
    }
}

fn read(root: &Path) -> Result<Marking, PauseReason> {
    read_marker(&open(root)?)
}

/// Opens `root` and checks that it is still the directory marked with `expected`.
pub fn check(root: &Path, expected: &Marker) -> Result<Beneath, PauseReason> {
    let opened = open(root)?;
    match read_marker(&opened)? {
        Marking::Marked(m) if m == *expected => Ok(opened),
        Marking::Marked(m) => Err(PauseReason::MarkerMismatch {
            root: root.display().to_string(),
            found: m.describe(),
        }),
        Marking::Unmarked => Err(PauseReason::MarkerMissing {
            root: root.display().to_string(),
        }),
    }
}

/// Where a mapping starts.
pub struct Start {
    /// The directory (canonical when it exists).
    pub root: PathBuf,
    /// Its marker.
    pub marker: Marker,
    /// Set when the mapping starts paused (its known directory is missing or unreadable).
    pub paused: Option<PauseReason>,
}

/// Finds or makes the directory of a new mapping of `folder` by `device` at `dir`. `known` is
/// where this device last mapped the folder (root, mapping id).
///
/// * A directory marked for this folder and device keeps its mapping (and so its index).
/// * A directory without a marker gets a new one: a new mapping with an empty index, which
///   merges the directory with the feed and never deletes anything.
/// * A directory marked for another folder or device is refused.
/// * A missing directory is created, unless it is the one this device last mapped the folder
///   onto: then the mapping starts paused (a drive not mounted, a folder moved away), and
///   resumes by itself when the marked directory is back.
pub fn prepare(
    folder: &str,
    device: &str,
    dir: &Path,
    known: Option<(String, String)>,
) -> Result<Start, PauseReason> {
    let absolute = absolute(dir);
    match read(dir) {
        Err(reason @ (PauseReason::RootMissing { .. } | PauseReason::RootUnreadable { .. })) => {
            if let Some((root, mapping)) = known.filter(|(root, _)| *root == absolute) {
                return Ok(Start {
                    root: PathBuf::from(root),
                    marker: Marker {
                        folder: folder.to_owned(),
                        device: device.to_owned(),
                        mapping,
                    },
                    paused: Some(reason),
                });
            }
            if !matches!(reason, PauseReason::RootMissing { .. }) {
                return Err(reason);
            }
            std::fs::create_dir_all(dir).map_err(|e| PauseReason::RootUnreadable {
                root: dir.display().to_string(),
                error: e.to_string(),
            })?;
            fresh(folder, device, dir)
        }
        Err(reason) => Err(reason),
        Ok(Marking::Unmarked) => fresh(folder, device, dir),
        Ok(Marking::Marked(m)) if m.folder == folder && m.device == device => Ok(Start {
            root: canonical(dir)?,
            marker: m,
            paused: None,
        }),
        Ok(Marking::Marked(m)) => Err(PauseReason::MarkerMismatch {
            root: dir.display().to_string(),
            found: m.describe(),
        }),
    }
}

fn fresh(folder: &str, device: &str, dir: &Path) -> Result<Start, PauseReason> {
    let root = canonical(dir)?;
    let marker = Marker::new(folder, device);
    marker
        .write(&root)
        .map_err(|e| PauseReason::RootUnreadable {
            root: root.display().to_string(),
            error: e.to_string(),
        })?;
    Ok(Start {
        root,
        marker,
        paused: None,
    })
}

fn canonical(dir: &Path) -> Result<PathBuf, PauseReason> {
    dir.canonicalize().map_err(|e| PauseReason::RootUnreadable {
        root: dir.display().to_string(),
        error: e.to_string(),
    })
}

/// `dir` as the canonical path it had when it existed: its parent canonicalized when that
/// exists, else made absolute.
pub fn absolute(dir: &Path) -> String {
    if let Ok(c) = dir.canonicalize() {
        return c.display().to_string();
    }
    if let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) {
        if let Ok(p) = parent.canonicalize() {
            return p.join(name).display().to_string();
        }
    }
    std::path::absolute(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .display()
        .to_string()
}
