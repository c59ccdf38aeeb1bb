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

    /// The entry's JSON as stores keep it and sync messages carry it: what
    /// `serde_json::to_string` gives, written into a buffer sized once by
    /// [`wire_len_bound`](Self::wire_len_bound) instead of one grown (and copied) as it is
    /// written.
    ///
    /// ```
    /// use mesh_core::model::{EntryDraft, FeedKey};
    /// use mesh_core::replica::{Actor, Replica};
    /// use mesh_core::store::MemoryStore;
    /// use mesh_core::time::Timestamp;
    ///
    /// let mut replica = Replica::new(MemoryStore::new("laptop".parse().unwrap()));
    /// let feed = FeedKey::folder("f1".parse().unwrap(), "notes".parse().unwrap());
    /// let ann = Actor::new("ann".parse().unwrap(), "laptop".parse().unwrap());
    /// let draft = EntryDraft::new("Quote \"1\"\n", serde_json::json!({"x": "é".repeat(100)}));
    /// let now = Timestamp::from_unix(1_700_000_000).unwrap();
    /// let entry = replica.create(&feed, "t1".parse().unwrap(), draft, &ann, now).unwrap().entry;
    /// assert_eq!(entry.to_json().unwrap(), serde_json::to_string(&entry).unwrap());
    /// ```
    pub fn to_json(&self) -> serde_json::Result<String> {
        let mut out = Vec::with_capacity(self.wire_len_bound());
        serde_json::to_writer(&mut out, self)?;
        String::from_utf8(out).map_err(|e| {
            <serde_json::Error as serde::ser::Error>::custom(format!("not UTF-8: {e}"))
        })
    }

    /// At least as many bytes as the entry takes in a sync message's JSON, all its versions
    /// and history included (strings counted as if every character were escaped): what
    /// bounds a page by bytes ([`MAX_PAGE_BYTES`](crate::sync::MAX_PAGE_BYTES)). Counted
    /// without encoding anything.
    ///
    /// ```
    /// use mesh_core::model::{EntryDraft, FeedKey};
    /// use mesh_core::replica::{Actor, Replica};
    /// use mesh_core::store::MemoryStore;
    /// use mesh_core::time::Timestamp;
    ///
    /// let mut replica = Replica::new(MemoryStore::new("laptop".parse().unwrap()));
    /// let feed = FeedKey::folder("f1".parse().unwrap(), "notes".parse().unwrap());
    /// let ann = Actor::new("ann".parse().unwrap(), "laptop".parse().unwrap());
    /// let draft = EntryDraft::new("Quote \"1\"\n", serde_json::json!({"x": "y".repeat(1000)}));
    /// let now = Timestamp::from_unix(1_700_000_000).unwrap();
    /// let entry = replica.create(&feed, "t1".parse().unwrap(), draft, &ann, now).unwrap().entry;
    /// let json = serde_json::to_string(&entry).unwrap();
    /// assert!(entry.wire_len_bound() >= json.len());
    /// ```
    pub fn wire_len_bound(&self) -> usize {
        fn version(sync: &crate::feedsync::SyncMeta, d: &EntryData) -> usize {
            let text = |s: &str| 2 + 6 * s.len();
            let history: usize = sync
                .history
                .iter()
                .map(|h| {
                    96 + h.by.as_ref().map_or(0, |b| text(b.as_str()))
                        + 384 * usize::from(h.seal.is_some())
                })
                .sum();
            256 + text(sync.id.as_str())
                + text(&d.title)
                + d.content.as_str().len()
                + d.media
                    .as_ref()
                    .map_or(0, |m| 64 + text(&m.hash) + text(&m.content_type))
                + text(d.author.as_str())
                + history
        }
        version(&self.sync, &self.content)
            + self
                .conflicts
                .iter()
                .map(|c| version(&c.sync, &c.content))
                .sum::<usize>()
    }
}
