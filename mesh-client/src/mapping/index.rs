//! A mapping's index: per path, the state both sides last agreed on.

use mesh_core::blob::ChunkHash;
use mesh_core::feedsync::{history_covers, HistoryItem};
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
    /// Set when this device wrote `version` only to acknowledge a lost conflict: the topmost
    /// history item of the winner it acknowledged, whose content the version keeps. (None for
    /// versions holding content of their own, and in older records.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<HistoryItem>,
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
            acknowledged: None,
        }
    }

    /// Whether losing this record's version to `winner` leaves nothing to keep: the version
    /// only acknowledged an earlier winner, and `winner`'s history covers that one, so whoever
    /// wrote `winner` had the content this version keeps and replaced it knowingly. (A winner
    /// that does not cover it, such as a third device's concurrent edit, leaves the content to
    /// be kept as a conflict copy.)
    pub fn loss_is_known_to(&self, winner: &mesh_core::feedsync::SyncMeta) -> bool {
        self.acknowledged
            .as_ref()
            .is_some_and(|acked| history_covers(&winner.history, acked))
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
