//! Serving a replica to an authenticated user: the one place in the client where sync
//! requests, blob objects and change notifications are answered through the core's access
//! guard. The in-process transport and the peer listener are thin adapters over it.

use std::sync::{Arc, Mutex, MutexGuard};

use futures::stream::{self, BoxStream, StreamExt};
use mesh_core::blob::ChunkHash;
use mesh_core::id::{FolderId, UserId};
use mesh_core::model::Action;
use mesh_core::sync::guard::{self, Pusher};
use mesh_core::sync::{Request, Response};
use mesh_core::trust::{MemoryKeyring, NoKeyring};
use mesh_core::CoreError;
use tokio::sync::broadcast::error::RecvError;

use crate::error::ClientError;
use crate::shared::{Changed, SharedReplica};
use crate::transport::{Notification, TransportError, MAX_OBJECTS_RESPONSE};

/// A keyring shared between whoever learns certificates and revocations (an authority, a
/// peer handshake) and the guard that checks pushed versions against it.
pub(crate) type SharedKeyring = Arc<Mutex<MemoryKeyring>>;

/// Locks a shared keyring (a poisoned lock still holds a consistent keyring: every update is
/// a single map operation).
pub(crate) fn lock_ring(ring: &SharedKeyring) -> MutexGuard<'_, MemoryKeyring> {
    ring.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves one replica: answers each call as the user it is given, with the access guard.
#[derive(Clone)]
pub(crate) struct ReplicaServer {
    shared: SharedReplica,
    /// The devices whose signatures pushed versions are checked against; `None` checks no
    /// signatures (every version counts as the pushing user's).
    keyring: Option<SharedKeyring>,
}

impl ReplicaServer {
    pub(crate) fn new(shared: SharedReplica, keyring: Option<SharedKeyring>) -> Self {
        ReplicaServer { shared, keyring }
    }

    /// Answers a sync request from `user` and announces the feed it changed, if any (after
    /// the replica's lock is released).
    pub(crate) async fn sync(
        &self,
        user: &UserId,
        request: Request,
    ) -> Result<Response, TransportError> {
        let user = user.clone();
        let keyring = self.keyring.clone();
        let (response, changed) = self
            .shared
            .run(move |r| {
                let response = match &keyring {
                    Some(ring) => {
                        let ring = lock_ring(ring);
                        guard::respond_as(r, Pusher::new(&user, &*ring), request)?
                    }
                    None => guard::respond_as(r, Pusher::new(&user, &NoKeyring), request)?,
                };
                let mut changed = None;
                if let Response::Pushed { feed, results } = &response {
                    if results.iter().any(|x| x.outcome.changed()) {
                        changed = Some(Changed {
                            feed: feed.clone(),
                            head: mesh_core::store::Store::head(r.store(), feed)?,
                            via: None,
                        });
                    }
                }
                Ok::<_, CoreError>((response, changed))
            })
            .await
            .map_err(|e| TransportError::Server(e.to_string()))?
            .map_err(TransportError::Remote)?;
        if let Some(c) = changed {
            self.shared.notify(c);
        }
        Ok(response)
    }

    /// The replica's change notifications for the feeds `user` may read (checked when each
    /// arrives, so a membership change takes effect at once). Ends when the replica closes,
    /// and when the stream falls so far behind that changes went by unannounced (more than the
    /// replica's broadcast keeps): the watcher then opens it again and syncs everything.
    pub(crate) fn watch(&self, user: &UserId) -> BoxStream<'static, Notification> {
        let rx = self.shared.subscribe();
        let shared = self.shared.clone();
        let user = user.clone();
        stream::unfold(rx, move |mut rx| {
            let shared = shared.clone();
            let user = user.clone();
            async move {
                loop {
                    match rx.recv().await {
                        Ok(c) => {
                            let visible = shared
                                .run_now(|r| guard::can_read(r.store(), &user, &c.feed))
                                .unwrap_or(false);
                            if visible {
                                let n = Notification::new(c.feed, c.head);
                                return Some((n, rx));
                            }
                        }
                        // Missed some, perhaps of a feed the watcher will hear of no
                        // more: the stream ends, and a watcher that opens it again syncs
                        // everything first.
                        Err(RecvError::Lagged(_)) => return None,
                        Err(RecvError::Closed) => return None,
                    }
                }
            }
        })
        .boxed()
    }

    /// Which of `hashes` the replica lacks for `folder` (needs read access).
    pub(crate) async fn missing_objects(
        &self,
        user: &UserId,
        folder: &FolderId,
        hashes: &[ChunkHash],
    ) -> Result<Vec<ChunkHash>, TransportError> {
        self.allowed(user, folder, Action::Read).await?;
        let (folder, hashes) = (folder.clone(), hashes.to_vec());
        self.shared
            .run_blobs(move |b| b.missing(&folder, &hashes))
            .await
            .and_then(|r| r.map_err(ClientError::from))
            .map_err(blob_error)
    }

    /// Stores objects for `folder` (needs the right to create entries; the blob store checks
    /// each object against its hash).
    pub(crate) async fn put_objects(
        &self,
        user: &UserId,
        folder: &FolderId,
        objects: Vec<(ChunkHash, Vec<u8>)>,
    ) -> Result<(), TransportError> {
        self.allowed(user, folder, Action::CreateEntry).await?;
        let folder = folder.clone();
        self.shared
            .run_blobs(move |b| b.put(&folder, &objects))
            .await
            .and_then(|r| r.map_err(ClientError::from))
            .map(|_| ())
            .map_err(blob_error)
    }

    /// The objects of `hashes` the replica holds for `folder`, in order, up to
    /// [`MAX_OBJECTS_RESPONSE`] bytes (needs read access).
    pub(crate) async fn get_objects(
        &self,
        user: &UserId,
        folder: &FolderId,
        hashes: &[ChunkHash],
    ) -> Result<Vec<(ChunkHash, Vec<u8>)>, TransportError> {
        self.allowed(user, folder, Action::Read).await?;
        let (folder, hashes) = (folder.clone(), hashes.to_vec());
        self.shared
            .run_blobs(move |b| {
                crate::mapping::read_objects(b, Some(&folder), &hashes, MAX_OBJECTS_RESPONSE)
            })
            .await
            .and_then(|r| r)
            .map_err(blob_error)
    }

    /// Checks `user`'s role in `folder` like a hub does; a non-member gets the same answer as
    /// for a folder that does not exist.
    async fn allowed(
        &self,
        user: &UserId,
        folder: &FolderId,
        action: Action<'static>,
    ) -> Result<(), TransportError> {
        let (f, user) = (folder.clone(), user.clone());
        self.shared
            .run(move |r| guard::check_folder(r.store(), &user, &f, action))
            .await
            .map_err(|e| TransportError::Server(e.to_string()))?
            .map(|_| ())
            .map_err(TransportError::Remote)
    }
}

fn blob_error(e: ClientError) -> TransportError {
    match e {
        ClientError::Core(c) => TransportError::Remote(c),
        other => TransportError::Server(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::model::FeedKey;
    use mesh_core::replica::Replica;
    use mesh_core::store::{Cursor, MemoryStore};

    use crate::store::{BlobStore, ClientStore};

    /// Why: a stream that fell behind skipped what it missed and went on, so a watcher never
    /// heard of a feed whose only change was among the missed ones (until its next periodic
    /// sync).
    #[tokio::test(start_paused = true)]
    async fn a_notification_stream_that_fell_behind_ends() {
        let store = ClientStore::Memory(MemoryStore::new("hub-test".parse().unwrap()));
        let shared = SharedReplica::new(Replica::new(store), BlobStore::memory(), Vec::new());
        let server = ReplicaServer::new(shared.clone(), None);
        let mut stream = server.watch(&"ann".parse().unwrap());
        let feed = FeedKey::folder("f1".parse().unwrap(), "notes".parse().unwrap());
        for i in 0..1_100 {
            shared.notify(Changed {
                feed: feed.clone(),
                head: Cursor(i),
                via: None,
            });
        }
        let next = tokio::time::timeout(std::time::Duration::from_secs(60), stream.next()).await;
        assert!(matches!(next, Ok(None)), "the stream went on");
    }
}
