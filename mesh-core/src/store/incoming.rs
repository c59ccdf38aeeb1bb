//! An entry on its way into a store, with the JSON the store keeps for it when that JSON was
//! made ahead of the write.

use crate::error::Result;
use crate::model::Entry;

/// An entry on its way into a store ([`StoreTxn::put_incoming`](super::StoreTxn::put_incoming)
/// or a merge), optionally with its JSON as stores keep it: `serde_json::to_string` of the
/// entry.
///
/// A replica that serves many writers takes a lock per feed or folder while it merges; making
/// the JSON beforehand ([`Incoming::encoded`], on another thread, while the lock's holder
/// works) takes that work out of the locked section. The JSON can only be made from the entry
/// itself, so it always matches it. A merge that stores something other than the incoming
/// entry as it came (a version merged with local ones) encodes its result as usual.
///
/// ```
/// use mesh_core::model::{EntryDraft, FeedKey};
/// use mesh_core::replica::{Actor, Replica};
/// use mesh_core::store::{Incoming, MemoryStore};
/// use mesh_core::time::Timestamp;
///
/// let mut replica = Replica::new(MemoryStore::new("laptop".parse().unwrap()));
/// let feed = FeedKey::folder("f1".parse().unwrap(), "todos".parse().unwrap());
/// let ann = Actor::new("ann".parse().unwrap(), "laptop".parse().unwrap());
/// let now = Timestamp::from_unix(1_700_000_000).unwrap();
/// let draft = EntryDraft::new("Buy milk", serde_json::json!({}));
/// let entry = replica.create(&feed, "t1".parse().unwrap(), draft, &ann, now).unwrap().entry;
///
/// let incoming = Incoming::encoded(entry.clone()).unwrap();
/// assert_eq!(incoming.json(), Some(serde_json::to_string(&entry).unwrap().as_str()));
/// assert_eq!(Incoming::from(entry).json(), None);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    entry: Entry,
    json: Option<String>,
}

impl Incoming {
    /// `entry` with its JSON, made now.
    pub fn encoded(entry: Entry) -> Result<Self> {
        let json = entry.to_json()?;
        Ok(Incoming {
            entry,
            json: Some(json),
        })
    }

    /// The entry.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// Its JSON as stores keep it, when it was made ahead.
    pub fn json(&self) -> Option<&str> {
        self.json.as_deref()
    }

    /// The entry, and its JSON when it was made ahead.
    pub fn into_parts(self) -> (Entry, Option<String>) {
        (self.entry, self.json)
    }

    /// The entry, and its JSON made ahead when a merge that keeps the entry as it came may
    /// store that JSON: only for an entry of one version. A merge that keeps an entry with
    /// conflicts verbatim may still order its conflicts otherwise than they came.
    pub(crate) fn into_storable_parts(self) -> (Entry, Option<String>) {
        let json = self.json.filter(|_| self.entry.conflicts.is_empty());
        (self.entry, json)
    }

    /// `entry` with `json`, which the caller knows to be the JSON of this very entry (made by
    /// [`Incoming::encoded`] for an entry that the caller has only moved since).
    pub(crate) fn rejoin(entry: Entry, json: Option<String>) -> Self {
        Incoming { entry, json }
    }
}

impl From<Entry> for Incoming {
    /// `entry`, without its JSON: a store encodes it when it writes it.
    fn from(entry: Entry) -> Self {
        Incoming { entry, json: None }
    }
}
