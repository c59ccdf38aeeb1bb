//! Mesh-level and folder-level resources: devices, folders, mappings and news.
//!
//! Each is the JSON content of an entry in a well-known feed (see
//! [`FeedKey`](crate::model::FeedKey)), so the one sync engine moves all of them.

use serde::{Deserialize, Serialize};

use super::FolderKind;
use crate::id::{DeviceId, EntryId, FeedName, FolderId, UserId};
use crate::time::Timestamp;

/// A registered device of a user: an entry of `mesh:<user>/devices`, keyed by device id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The device's id (its FeedSync endpoint id).
    pub id: DeviceId,
    /// The user who owns it.
    pub owner: UserId,
    /// A human-readable name ("Ann's laptop").
    pub name: String,
    /// What kind of device ("desktop", "laptop", "phone", "server"…).
    pub kind: String,
    /// When it was last seen syncing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
    /// Whether it is connected now.
    #[serde(default)]
    pub online: bool,
    /// Where the device listens for peers (`ip:port` strings), as the device itself published
    /// them (static discovery). Written by a device in its own record only; a reader treats
    /// them as hostile hints and validates them (see `mesh_client::peer::discovery`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

/// A folder ("mesh object"): an entry of `mesh:<user>/folders` for every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Folder {
    /// The folder's id.
    pub id: FolderId,
    /// A human-readable name.
    pub name: String,
    /// What the folder holds: `files`, or `app/<name>` for an application's data (a string
    /// on the wire).
    pub kind: FolderKind,
    /// Who created it (its first owner).
    pub created_by: UserId,
    /// When it was created.
    pub created_at: Timestamp,
}

/// Which device replicates a folder, and where: an entry of a folder's `mappings` feed keyed
/// by device id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    /// The device that replicates the folder.
    pub device: DeviceId,
    /// The user who owns that device.
    pub user: UserId,
    /// A local directory the folder is mapped to, if it is a folder of files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// When the mapping was made.
    pub created_at: Timestamp,
}

/// What a news item reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NewsKind {
    /// An entry was added.
    EntryAdded,
    /// An entry was changed.
    EntryChanged,
    /// An entry was deleted.
    EntryDeleted,
    /// A conflict appeared.
    ConflictDetected,
    /// A conflict was resolved.
    ConflictResolved,
    /// A member was invited.
    MemberInvited,
    /// A member joined.
    MemberJoined,
    /// A member left or was removed.
    MemberLeft,
    /// A folder was created.
    FolderCreated,
    /// A device was registered.
    DeviceAdded,
}

/// One item of activity: an entry of a `news` feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewsItem {
    /// What happened.
    pub kind: NewsKind,
    /// Who did it.
    pub actor: UserId,
    /// On which device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceId>,
    /// In which folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<FolderId>,
    /// In which feed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed: Option<FeedName>,
    /// About which entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<EntryId>,
    /// A one-line human-readable summary.
    pub summary: String,
    /// When.
    pub at: Timestamp,
}
