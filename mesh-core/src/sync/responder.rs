//! The answering side of the protocol.

use crate::error::CoreError;
use crate::error::Result;
use crate::id::ReplicaId;
use crate::model::FeedKey;
use crate::replica::Replica;
use crate::store::Store;
use crate::store::{Cursor, FeedHead};
use crate::sync::message::{
    EncodedChanges, PushResult, Request, Response, MAX_ONLY, MAX_PAGE, MAX_PAGE_BYTES,
};

/// The heads of the feeds a `feeds` request names in `only`, each once, in the order of
/// their keys. They are looked up one by one, so answering a peer that asks about a few
/// feeds costs the same however many others the replica holds (a hub holds every user's);
/// a request naming more than [`MAX_ONLY`] is refused before any is looked up.
pub(crate) fn named_heads<S: Store>(store: &S, only: Vec<FeedKey>) -> Result<Vec<FeedHead>> {
    if only.len() > MAX_ONLY {
        return Err(CoreError::Protocol(format!(
            "a feeds request names {} feeds; at most {MAX_ONLY} are answered",
            only.len()
        )));
    }
    let only: std::collections::BTreeSet<FeedKey> = only.into_iter().collect();
    let mut heads = Vec::with_capacity(only.len());
    for feed in &only {
        if let Some(h) = store.feed_head(feed)? {
            heads.push(h);
        }
    }
    Ok(heads)
}

/// Answers one request from a peer against `replica`.
///
/// This is all a hub or a device needs to serve sync (after it has authenticated the peer and
/// checked which feeds it may touch): pulls are answered from the change log, skipping what
/// came from the asker; pushes are merged in one transaction.
pub fn respond<S: Store>(replica: &mut Replica<S>, request: Request) -> Result<Response> {
    match request {
        push @ Request::PushEncoded { .. } => respond(replica, push.decoded()?),
        Request::Feeds { from: _, only, .. } => {
            let feeds = match only {
                Some(only) => named_heads(replica.store(), only)?,
                None => replica.store().feeds()?,
            };
            Ok(Response::Feeds {
                replica: replica.id(),
                feeds,
                epoch: None,
                revocations: Vec::new(),
                certificates: Vec::new(),
            })
        }
        Request::Pull {
            from,
            feed,
            since,
            limit,
        } => pull(replica, &from, feed, since, limit),
        Request::Push {
            from,
            feed,
            entries,
        } => {
            let reports = replica.merge_batch(&feed, entries, Some(&from))?;
            Ok(Response::Pushed {
                feed,
                results: reports
                    .into_iter()
                    .map(|r| PushResult {
                        id: r.id,
                        outcome: r.outcome,
                        refused: None,
                        code: None,
                    })
                    .collect(),
            })
        }
    }
}

/// Answers a pull: up to `limit` (capped at [`MAX_PAGE`]) changes of `feed` after `since`,
/// skipping those that came verbatim from `from`.
pub(crate) fn pull<S: Store>(
    replica: &Replica<S>,
    from: &ReplicaId,
    feed: FeedKey,
    since: Cursor,
    limit: u32,
) -> Result<Response> {
    let limit = limit.clamp(1, MAX_PAGE) as usize;
    let page = replica
        .store()
        .changes_since(&feed, since, limit, Some(from))?
        .within(MAX_PAGE_BYTES);
    Ok(Response::Changes {
        feed,
        entries: page.changes.into_iter().map(|c| c.entry).collect(),
        next: page.next,
        more: page.more,
    })
}

/// Answers a pull as [`pull`] does, with the entries passed on as the store keeps them
/// ([`Store::encoded_changes_since`]): what a responder that only relays entries (a hub)
/// sends, without decoding each stored entry and encoding it again.
///
/// ```
/// use mesh_core::replica::Replica;
/// use mesh_core::store::{Cursor, MemoryStore};
/// use mesh_core::sync::pull_encoded;
/// let replica = Replica::new(MemoryStore::new("hub".parse().unwrap()));
/// let feed: mesh_core::model::FeedKey = "mesh:u1/devices".parse().unwrap();
/// let from = "device-a".parse().unwrap();
/// let page = pull_encoded(&replica, &from, feed, Cursor::ZERO, 100).unwrap();
/// assert!(page.entries.is_empty() && !page.more);
/// ```
pub fn pull_encoded<S: Store>(
    replica: &Replica<S>,
    from: &ReplicaId,
    feed: FeedKey,
    since: Cursor,
    limit: u32,
) -> Result<EncodedChanges> {
    let limit = limit.clamp(1, MAX_PAGE) as usize;
    let page = replica
        .store()
        .encoded_changes_since(&feed, since, limit, Some(from))?
        .within(MAX_PAGE_BYTES);
    Ok(EncodedChanges {
        feed,
        entries: page.changes.into_iter().map(|c| c.entry).collect(),
        next: page.next,
        more: page.more,
    })
}
