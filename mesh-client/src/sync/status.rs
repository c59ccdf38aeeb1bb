//! What each remote's engine is up to, for an application to ask at any time
//! ([`MeshClient::status`](crate::MeshClient::status)) or follow as it changes.

use std::collections::HashSet;
use std::time::SystemTime;

use mesh_core::id::RemoteId;
use mesh_core::model::FeedKey;
use mesh_core::store::Store;
use tokio::sync::{broadcast, watch};

use crate::error::{Result, SyncError};
use crate::sync::events::Event;

/// One remote's sync state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteStatus {
    /// The remote.
    pub remote: RemoteId,
    /// Whether it was reachable at the last contact (`None`: no contact yet).
    pub online: Option<bool>,
    /// When the last sync with it completed.
    pub last_sync: Option<SystemTime>,
    /// Local changes it had not acknowledged at the last completed sync (an upper bound).
    pub pending_up: u64,
    /// Feeds it announced as changed that have not been pulled yet.
    pub pending_down: u64,
    /// The last failure, cleared by the next successful sync.
    pub last_error: Option<SyncError>,
}

impl RemoteStatus {
    /// A remote not contacted yet.
    pub(crate) fn new(remote: RemoteId) -> Self {
        RemoteStatus {
            remote,
            online: None,
            last_sync: None,
            pending_up: 0,
            pending_down: 0,
            last_error: None,
        }
    }
}

/// The statuses of every remote, shared by the client and its engines.
pub(crate) type Statuses = watch::Sender<Vec<RemoteStatus>>;

/// An engine's handle on its own entry of the statuses.
pub(crate) struct StatusCell {
    all: Statuses,
    remote: RemoteId,
    events: broadcast::Sender<Event>,
    /// Feeds announced since the last completed sync.
    announced: HashSet<FeedKey>,
}

/// The most announced feeds remembered between two syncs (a bound; the count saturates).
const MAX_ANNOUNCED: usize = 100_000;

impl StatusCell {
    pub fn new(all: Statuses, remote: RemoteId, events: broadcast::Sender<Event>) -> Self {
        all.send_modify(|v| {
            if !v.iter().any(|s| s.remote == remote) {
                v.push(RemoteStatus::new(remote.clone()));
            }
        });
        StatusCell {
            all,
            remote,
            events,
            announced: HashSet::new(),
        }
    }

    /// Changes this remote's status; when it really changed, says so (an
    /// [`Event::Status`]) and wakes the status watchers.
    pub fn update(&self, f: impl FnOnce(&mut RemoteStatus)) {
        let mut changed = None;
        self.all.send_if_modified(|v| {
            let Some(s) = v.iter_mut().find(|s| s.remote == self.remote) else {
                return false;
            };
            let before = s.clone();
            f(s);
            if *s != before {
                changed = Some(s.clone());
                true
            } else {
                false
            }
        });
        if let Some(status) = changed {
            let _ = self.events.send(Event::Status { status });
        }
    }

    /// The remote announced a change of `feed`.
    pub fn announced(&mut self, feed: FeedKey) {
        if self.announced.len() < MAX_ANNOUNCED {
            self.announced.insert(feed);
        }
        let n = self.announced.len() as u64;
        self.update(|s| s.pending_down = n);
    }

    /// A sync completed.
    pub fn synced(&mut self, pending_up: u64) {
        self.announced.clear();
        self.update(|s| {
            s.last_sync = Some(SystemTime::now());
            s.pending_up = pending_up;
            s.pending_down = 0;
            s.last_error = None;
        });
    }
}

/// Local changes not yet acknowledged by `remote` (counted up to a bound per feed: pages of
/// large entries end early, so a feed is read page by page until the bound).
pub(crate) fn pending<S: Store>(store: &S, remote: &RemoteId) -> Result<u64> {
    const COUNTED_PER_FEED: u64 = 10_000;
    let mut total = 0u64;
    for h in store.feeds()? {
        let st = store.sync_state(remote, &h.feed)?;
        let mut since = st.pushed;
        let mut counted = 0u64;
        while h.head > since && counted < COUNTED_PER_FEED {
            let left = (COUNTED_PER_FEED - counted) as usize;
            let page = store.changes_since(&h.feed, since, left, st.remote_replica.as_ref())?;
            counted += page.changes.len() as u64;
            if !page.more || page.next <= since {
                break;
            }
            since = page.next;
        }
        total += counted;
    }
    Ok(total)
}
