//! Entries: the items of every feed.

use serde::{Deserialize, Serialize};

use crate::content::JsonContent;
use crate::feedsync::{Item, Version};
use crate::id::{EntryId, UserId};
use crate::time::Timestamp;

/// A reference to an entry's media resource (a blob, such as a file's content).
///
/// The blob itself is moved by the client and hub; the entry only names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MediaRef {
    /// Content address of the blob's manifest (e.g. `blake3:…`).
    pub hash: String,
    /// MIME type, e.g. `image/png`.
    pub content_type: String,
    /// Size of the blob in bytes.
    pub length: u64,
}

/// The application data of one version of an entry: everything except sync metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryData {
    /// A short human-readable title.
    pub title: String,
    /// The application's JSON content.
    pub content: JsonContent,
    /// An optional media resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaRef>,
    /// The user who created the entry; never changes.
    pub author: UserId,
    /// When the entry was created.
    pub published: Timestamp,
    /// When this version was written.
    pub updated: Timestamp,
}

/// What an application writes: the parts of an entry it controls.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EntryDraft {
    /// Title.
    pub title: String,
    /// JSON content.
    pub content: JsonContent,
    /// Optional media resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaRef>,
}

impl EntryDraft {
    /// A draft with a title and JSON content.
    ///
    /// ```
    /// use mesh_core::model::EntryDraft;
    /// let d = EntryDraft::new("Buy milk", serde_json::json!({"done": false}));
    /// assert_eq!(d.content.as_str(), r#"{"done":false}"#);
    /// ```
    pub fn new(title: impl Into<String>, content: serde_json::Value) -> Self {
        EntryDraft {
            title: title.into(),
            content: JsonContent::from(&content),
            media: None,
        }
    }

    /// Completes the draft into entry data for a new entry.
    pub fn into_new_data(self, author: UserId, when: Timestamp) -> EntryData {
        EntryData {
            title: self.title,
            content: self.content,
            media: self.media,
            author,
            published: when,
            updated: when,
        }
    }

    /// Completes the draft into entry data for a new version of `previous`: author and
    /// publication time are kept.
    pub fn into_next_data(self, previous: &EntryData, when: Timestamp) -> EntryData {
        EntryData {
            title: self.title,
            content: self.content,
            media: self.media,
            author: previous.author.clone(),
            published: previous.published,
            updated: when,
        }
    }
}

/// An entry: its winning version and any conflicting versions.
pub type Entry = Item<EntryData>;

/// One version of an entry (a conflict is a full version).
pub type EntryVersion = Version<EntryData>;

impl Item<EntryData> {
    /// The entry's id.
    pub fn entry_id(&self) -> &EntryId {
        &self.sync.id
    }

    /// The winning version's data.
    pub fn data(&self) -> &EntryData {
        &self.content
    }
}
