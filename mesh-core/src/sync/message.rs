//! The sync protocol's messages.
//!
//! Three request/response pairs carry everything; their JSON form (serde, tagged by `type`) is
//! what transports move. See `docs/protocol.md`.

use serde::{Deserialize, Serialize};

use crate::feedsync::MergeOutcome;
use crate::id::{EntryId, ReplicaId};
use crate::model::{Entry, FeedKey};
use crate::store::{Cursor, FeedHead};

/// The most changes a responder returns in one page, whatever the request asks.
pub const MAX_PAGE: u32 = 1000;

/// A request from the syncing replica to its peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Which feeds do you hold, and where are their heads?
    Feeds {
        /// The asking replica.
        from: ReplicaId,
        /// Only these feeds (all that the asker may see when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        only: Option<Vec<FeedKey>>,
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
}

/// The peer's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Feeds`].
    Feeds {
        /// The responder's replica id (cursors are only valid for it).
        replica: ReplicaId,
        /// Its feeds and their heads.
        feeds: Vec<FeedHead>,
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
