//! A mapping's index: per path, the state both sides last agreed on.

use mesh_core::blob::ChunkHash;
use mesh_core::model::{Entry, FileKind, FilePath};
use serde::{Deserialize, Serialize};

use crate::mapping::scan::LocalFile;

/// What a path looked like on disk, and which entry version it held, when this device last
/// published or applied it. A difference on disk is a local change; a different version in the
/// feed is a remote change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRecord {
    pub path: FilePath,
    pub kind: FileKind,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<ChunkHash>,
    /// [`version_key`] of the entry version.
    pub version: String,
    /// The file's inode number when recorded (0: unknown, as in older records).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ino: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl IndexRecord {
    /// A record for what is on disk now, holding `version`.
    pub fn of(local: &LocalFile, manifest: Option<ChunkHash>, version: String) -> Self {
        IndexRecord {
            path: local.path.clone(),
            kind: local.kind,
            size: local.size,
            mtime_ns: local.mtime_ns,
            mode: local.mode,
            manifest,
            version,
            ino: local.ino,
        }
    }

    /// Whether the file on disk is still what this record says.
    pub fn matches(&self, local: &LocalFile) -> bool {
        self.path == local.path
            && self.kind == local.kind
            && (self.kind == FileKind::Dir
                || (self.size == local.size
                    && self.mtime_ns == local.mtime_ns
                    && self.mode == local.mode
                    && (self.ino == 0 || local.ino == 0 || self.ino == local.ino)))
    }
}

/// Names one version of an entry: its update count and newest history item.
pub fn version_key(sync: &mesh_core::feedsync::SyncMeta) -> String {
    let top = sync.topmost();
    format!(
        "{}/{}/{}",
        sync.updates,
        top.and_then(|h| h.by.as_ref()).map_or("", |b| b.as_str()),
        top.and_then(|h| h.when).map_or(0, |w| w.unix())
    )
}

/// The key of an entry's winning version.
pub fn entry_version(e: &Entry) -> String {
    version_key(&e.sync)
}
