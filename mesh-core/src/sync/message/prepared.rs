//! A response on its way into a [`SyncSession`](crate::sync::SyncSession), with the JSON of
//! the entries it carries made before the session merges them.

use crate::store::Incoming;
use crate::trust::{DeviceCertificate, Revocation};

use super::Response;

/// A [`Response`] as a [`SyncSession`](crate::sync::SyncSession) receives it, with the JSON
/// stores keep for each entry of a [`Response::Changes`] made ahead when asked for
/// ([`Prepared::encoded`]).
///
/// A receiver merges each page on its store's thread while the next page travels; making the
/// entries' JSON on the thread that read the page ([`Prepared::encoded`]) takes that work out
/// of the merge. The JSON is made from the entries themselves, which cannot be changed
/// afterwards, so it always matches them. A plain `Response` converts to a `Prepared`
/// without JSON.
///
/// ```
/// use mesh_core::model::{EntryDraft, FeedKey};
/// use mesh_core::replica::{Actor, Replica};
/// use mesh_core::store::{Cursor, MemoryStore};
/// use mesh_core::sync::{Prepared, Response};
/// use mesh_core::time::Timestamp;
///
/// let mut replica = Replica::new(MemoryStore::new("laptop".parse().unwrap()));
/// let feed = FeedKey::folder("f1".parse().unwrap(), "todos".parse().unwrap());
/// let ann = Actor::new("ann".parse().unwrap(), "laptop".parse().unwrap());
/// let now = Timestamp::from_unix(1_700_000_000).unwrap();
/// let draft = EntryDraft::new("Buy milk", serde_json::json!({}));
/// let entry = replica.create(&feed, "t1".parse().unwrap(), draft, &ann, now).unwrap().entry;
///
/// let response = Response::Changes { feed, entries: vec![entry], next: Cursor(1), more: false };
/// let mut prepared = Prepared::encoded(response.clone());
/// assert_eq!(prepared.made_ahead(), 1);
/// assert_eq!(prepared.response(), &response);
/// // A `changes` answer carries no trust statements: it is left as it is.
/// assert!(prepared.take_trust().is_none());
/// assert_eq!(prepared.made_ahead(), 1);
/// assert_eq!(Prepared::from(response).made_ahead(), 0);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    response: Response,
    /// For a [`Response::Changes`] encoded ahead: each entry's JSON, in the entries' order;
    /// otherwise empty.
    json: Vec<String>,
}

impl Prepared {
    /// `response`, with the JSON of each entry it carries made now (a
    /// [`Response::Changes`]'s; other responses carry no entries). Should an entry fail to
    /// encode, none carries JSON: the merge then meets the error where it stores the entry.
    pub fn encoded(response: Response) -> Self {
        let json = match &response {
            Response::Changes { entries, .. } => entries
                .iter()
                .map(crate::model::Entry::to_json)
                .collect::<std::result::Result<_, _>>()
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        Prepared { response, json }
    }

    /// The response.
    pub fn response(&self) -> &Response {
        &self.response
    }

    /// A [`Response::Feeds`]'s revocation statements and device certificates, taken out of
    /// it: the receiver checks them against the authority it pinned before the session reads
    /// the rest ([`SyncSession::receive`](crate::sync::SyncSession::receive) ignores them).
    /// `None` for any other response, which is left as it is.
    pub fn take_trust(&mut self) -> Option<(Vec<Revocation>, Vec<DeviceCertificate>)> {
        match &mut self.response {
            Response::Feeds {
                revocations,
                certificates,
                ..
            } => Some((std::mem::take(revocations), std::mem::take(certificates))),
            _ => None,
        }
    }

    /// How many entries carry their JSON.
    pub fn made_ahead(&self) -> usize {
        self.json.len()
    }

    /// The response alone.
    pub fn into_response(self) -> Response {
        self.response
    }

    /// The response, and a [`Response::Changes`]'s entries with their JSON where it was made
    /// ahead (none for the other responses: their entries are taken from the response).
    pub(crate) fn into_parts(self) -> (Response, Option<Vec<String>>) {
        let json = match self.json.is_empty() {
            true => None,
            false => Some(self.json),
        };
        (self.response, json)
    }

    /// `entries` (a [`Response::Changes`]'s, as [`Prepared::into_parts`] gave them) with
    /// their JSON, if it was made for them.
    pub(crate) fn rejoin(
        entries: Vec<crate::model::Entry>,
        json: Option<Vec<String>>,
    ) -> Vec<Incoming> {
        match json {
            Some(json) if json.len() == entries.len() => entries
                .into_iter()
                .zip(json)
                .map(|(entry, json)| Incoming::rejoin(entry, Some(json)))
                .collect(),
            _ => entries.into_iter().map(Incoming::from).collect(),
        }
    }
}

impl From<Response> for Prepared {
    /// `response`, without JSON: the session encodes each entry it stores.
    fn from(response: Response) -> Self {
        Prepared {
            response,
            json: Vec::new(),
        }
    }
}
