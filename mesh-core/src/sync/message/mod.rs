//! The sync protocol's messages.
//!
//! Three request/response pairs carry everything; their JSON form (serde, tagged by `type`) is
//! what transports move. See `docs/protocol.md`.
//!
//! They are read straight into their fields, whatever the place of `type` in the object
//! ([`decode`]): serde's own reading of a tagged enum would first copy the whole message
//! into an intermediate tree, and entries' content could not be taken as it came.

use serde::{Deserialize, Serialize};

mod decode;
mod prepared;

pub use prepared::Prepared;

use crate::feedsync::MergeOutcome;
use crate::id::{EntryId, ReplicaId};
use crate::model::{Entry, FeedKey};
use crate::store::{Cursor, FeedHead};
use crate::trust::{DeviceCertificate, Revocation};

/// The most changes a responder returns in one page, whatever the request asks (2,000; it
/// was 1,000 before, and sessions asked for 500 before that).
///
/// A page is one request and one durable commit on the side that merges it, so the count
/// sets how many syncs of the disk a large sync costs: on the benchmark machine, where each
/// takes about 2 ms, pages of 2,000 made the initial sync of 100,000 entries about a tenth
/// faster than pages of 1,000 (`docs/benchmarks.md`). The price is memory (a page of 1 KiB
/// entries is about 2.6 MB of JSON, decoded and encoded beside it, a few pages in flight)
/// and the time a push page holds its folder's lock on a hub. Pages are also cut at
/// [`MAX_PAGE_BYTES`].
pub const MAX_PAGE: u32 = 2000;

/// The most feeds a `feeds` request names in `only`: a responder refuses a request naming
/// more (a protocol error), since it looks each up. A [`SyncSession`](crate::sync::SyncSession)
/// limited to more feeds than this asks about every feed and keeps those it syncs.
pub const MAX_ONLY: usize = 4096;

/// The most bytes of entries a page carries, pushed or pulled, by
/// [`Entry::wire_len_bound`]: a page ends before the change that would take it past this,
/// though it always holds at least one change. Pages of large entries stay well within a
/// hub's body limit (32 MiB by default), and a page of small ones is bounded by [`MAX_PAGE`].
pub const MAX_PAGE_BYTES: usize = 8 << 20;

/// A request from the syncing replica to its peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Which feeds do you hold, and where are their heads?
    Feeds {
        /// The asking replica.
        from: ReplicaId,
        /// Only these feeds (all that the asker may see when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        only: Option<Vec<FeedKey>>,
        /// Also send the certificates of the devices whose versions the asker may receive
        /// (see [`Response::Feeds::certificates`]): a device that judges pages from peers
        /// asks, so that it can tell who signed a version a peer relays.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        certificates: bool,
    },
    /// Your changes of `feed` after `since`, at most `limit`.
    Pull {
        /// The asking replica: changes that came verbatim from it are skipped.
        from: ReplicaId,
        /// The feed.
        feed: FeedKey,
        /// A position in the responder's change log.
        since: Cursor,
        /// Page size (capped at [`MAX_PAGE`]).
        limit: u32,
    },
    /// Merge these entries into your `feed`.
    Push {
        /// The sending replica.
        from: ReplicaId,
        /// The feed.
        feed: FeedKey,
        /// Entries, each at most once.
        entries: Vec<Entry>,
    },
    /// [`Request::Push`] with each entry as the JSON the sender's store keeps: how a device
    /// sends its own changes, so that it does not decode them to encode them again. It is the
    /// same message (`"type": "push"`), so a receiver reads it as a [`Request::Push`]; one
    /// answered in process is decoded first ([`Request::decoded`]).
    #[serde(rename = "push")]
    PushEncoded {
        /// The sending replica.
        from: ReplicaId,
        /// The feed.
        feed: FeedKey,
        /// Entries, each at most once, as JSON.
        entries: Vec<RawEntry>,
    },
}

impl Request {
    /// The request with a [`Request::PushEncoded`]'s entries decoded (a [`Request::Push`]);
    /// any other request as it is. An entry that does not decode is an
    /// [`CoreError::InvalidJson`](crate::CoreError::InvalidJson).
    ///
    /// ```
    /// use mesh_core::sync::{RawEntry, Request};
    /// let feed: mesh_core::model::FeedKey = "mesh:u1/devices".parse().unwrap();
    /// let from: mesh_core::id::ReplicaId = "laptop".parse().unwrap();
    /// let encoded = Request::PushEncoded { from: from.clone(), feed: feed.clone(), entries: vec![] };
    /// let decoded = Request::Push { from, feed, entries: vec![] };
    /// assert_eq!(serde_json::to_string(&encoded).unwrap(), serde_json::to_string(&decoded).unwrap());
    /// assert_eq!(encoded.decoded().unwrap(), decoded);
    /// ```
    pub fn decoded(self) -> crate::Result<Request> {
        match self {
            Request::PushEncoded {
                from,
                feed,
                entries,
            } => Ok(Request::Push {
                from,
                feed,
                entries: entries
                    .iter()
                    .map(RawEntry::decode)
                    .collect::<crate::Result<_>>()?,
            }),
            other => Ok(other),
        }
    }
}

/// An entry as JSON (see [`Request::PushEncoded`]): checked to be one JSON value, not decoded.
/// Two are equal when their JSON is the same text.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct RawEntry(Box<serde_json::value::RawValue>);

impl RawEntry {
    /// `json`, as a store keeps it.
    pub fn new(json: Box<serde_json::value::RawValue>) -> Self {
        RawEntry(json)
    }

    /// The JSON.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The entry it holds.
    pub fn decode(&self) -> crate::Result<Entry> {
        Ok(serde_json::from_str(self.0.get())?)
    }
}

impl PartialEq for RawEntry {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for RawEntry {}

/// The peer's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Feeds`].
    Feeds {
        /// The responder's replica id (cursors are only valid for it).
        replica: ReplicaId,
        /// Its feeds and their heads.
        feeds: Vec<FeedHead>,
        /// The responder's epoch, when its change log can be replaced by an older copy (a
        /// hub restored from a backup): cursors are valid only for the epoch they were issued
        /// in and the epochs it [`continues`](Epoch::continues).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<Epoch>,
        /// The authority's revocation statements the responder knows for devices of the
        /// asking user and of the users it shares a folder with; the receiver checks each
        /// against the authority it pinned and refuses those devices from then on. At most
        /// [`MAX_REVOCATIONS_PER_ANSWER`](crate::trust::MAX_REVOCATIONS_PER_ANSWER) are read.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        revocations: Vec<Revocation>,
        /// When asked ([`Request::Feeds::certificates`]): the device certificates the
        /// responder knows, of devices not known revoked, of the asking user and of the users
        /// it shares a folder with. Each is the authority's signed word; the receiver checks
        /// it against the authority it pinned. At most
        /// [`MAX_CERTIFICATES_PER_ANSWER`](crate::trust::MAX_CERTIFICATES_PER_ANSWER) are read.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        certificates: Vec<DeviceCertificate>,
    },
    /// Answer to [`Request::Pull`].
    Changes {
        /// The feed.
        feed: FeedKey,
        /// Changed entries, in change order.
        entries: Vec<Entry>,
        /// Where to continue from.
        next: Cursor,
        /// Whether more changes follow.
        more: bool,
    },
    /// Answer to [`Request::Push`].
    Pushed {
        /// The feed.
        feed: FeedKey,
        /// What the responder made of each entry, in request order.
        results: Vec<PushResult>,
    },
}

/// A [`Response::Changes`] whose entries are the JSON its responder's store keeps
/// ([`Store::encoded_changes_since`](crate::store::Store::encoded_changes_since)): it
/// serializes to the same message, so the asker reads it as a [`Response::Changes`], but the
/// responder never decodes the entries to encode them again.
///
/// ```
/// use mesh_core::sync::{EncodedChanges, Response};
/// let feed: mesh_core::model::FeedKey = "mesh:u1/devices".parse().unwrap();
/// let (next, more) = (mesh_core::store::Cursor(7), true);
/// let encoded = EncodedChanges { feed: feed.clone(), entries: vec![], next, more };
/// let decoded = Response::Changes { feed, entries: vec![], next, more };
/// assert_eq!(
///     serde_json::to_string(&encoded).unwrap(),
///     serde_json::to_string(&decoded).unwrap()
/// );
/// ```
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename = "changes")]
pub struct EncodedChanges {
    /// The feed.
    pub feed: FeedKey,
    /// Changed entries, in change order, as JSON.
    pub entries: Vec<Box<serde_json::value::RawValue>>,
    /// Where to continue from.
    pub next: Cursor,
    /// Whether more changes follow.
    pub more: bool,
}

/// The most earlier epochs an [`Epoch`] may name as continued.
pub const MAX_CONTINUED_EPOCHS: usize = 64;

/// The longest epoch id, in bytes.
pub const MAX_EPOCH_ID: usize = 64;

/// A period of a responder's change log during which its positions kept their meaning.
///
/// A hub starts a new epoch each time it opens its store. An epoch that ended cleanly (the hub
/// stopped after its last commit) is *continued* by the next one: positions issued in it still
/// name the same changes. An epoch that did not end cleanly (a crash, or a copy of the store
/// taken while it ran: a backup) is not continued, and neither is one the store never saw (the
/// store was replaced by an older copy): a replica holding cursors of such an epoch starts over
/// with the responder, pulling everything it lacks and offering everything the responder
/// lacks, and says so ([`SessionEvent::RemoteReset`](crate::sync::SessionEvent::RemoteReset)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epoch {
    /// This epoch's id (1 to [`MAX_EPOCH_ID`] ASCII letters, digits and `-`).
    pub id: String,
    /// The earlier epochs whose positions stay valid in this one, newest first (at most
    /// [`MAX_CONTINUED_EPOCHS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub continues: Vec<String>,
}

impl Epoch {
    /// Whether `id` has the shape of an epoch id.
    pub fn valid_id(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= MAX_EPOCH_ID
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    }

    /// The name under which a replica keeps its cursors for `replica` in this epoch.
    pub fn remote_name(replica: &ReplicaId, epoch: &str) -> Result<ReplicaId, crate::CoreError> {
        format!("{replica}@{epoch}").parse()
    }
}

/// What the responder made of one pushed entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushResult {
    /// The entry.
    pub id: EntryId,
    /// The outcome of merging it into the responder's replica (`unchanged` when refused).
    pub outcome: MergeOutcome,
    /// Why the responder refused the entry (the pusher's role does not allow the write); the
    /// other entries of the batch were still merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// The stable error code of the refusal (`permission_denied`, `not_found`,
    /// `invalid_signature`, `untrusted_certificate`, `revoked`, `limit_exceeded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}
