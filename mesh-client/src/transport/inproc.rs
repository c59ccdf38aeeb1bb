//! The in-process transport: a hub replica (or another client) in the same process.

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use mesh_core::id::{ReplicaId, UserId};
use mesh_core::replica::Replica;
use mesh_core::sync::{guard, Request, Response};
use mesh_core::CoreError;
use tokio::sync::broadcast::error::RecvError;

use crate::error::{ClientError, Result};
use crate::shared::{Changed, SharedReplica};
use crate::store::{BlobStore, ClientStore, StoreConfig};
use crate::transport::{Notification, Transport, TransportError, MAX_OBJECTS_RESPONSE};
use mesh_core::blob::ChunkHash;
use mesh_core::id::FolderId;
use mesh_core::model::Action;

/// A hub in the same process: a replica that serves any number of clients through
/// [`InProcessTransport`]s, enforcing the folders' member roles like the HTTP hub does.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use mesh_client::transport::{InProcessHub, Transport};
/// let hub = InProcessHub::new();
/// let transport = hub.connect("ann".parse().unwrap());
/// assert_eq!(transport.describe(), "in-process hub as ann");
/// # }
/// ```
#[derive(Clone)]
pub struct InProcessHub {
    shared: SharedReplica,
}

impl Default for InProcessHub {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcessHub {
    /// A hub with an in-memory store and a fresh replica id.
    pub fn new() -> Self {
        let id = format!("hub-{}", uuid::Uuid::new_v4().simple());
        // A fresh uuid is always a valid id.
        let id: ReplicaId = id.parse().unwrap_or_else(|_| unreachable!());
        let store = ClientStore::Memory(mesh_core::store::MemoryStore::new(id));
        Self::from_store(store, BlobStore::memory())
    }

    /// A hub over the given store (for a hub whose data survives restarts).
    pub fn open(config: &StoreConfig) -> Result<Self> {
        let id = format!("hub-{}", uuid::Uuid::new_v4().simple());
        let id: ReplicaId = id.parse().unwrap_or_else(|_| unreachable!());
        Ok(Self::from_store(
            ClientStore::open(config, id)?,
            BlobStore::for_config(config)?,
        ))
    }

    fn from_store(store: ClientStore, blobs: BlobStore) -> Self {
        InProcessHub {
            shared: SharedReplica::new(Replica::new(store), blobs),
        }
    }

    /// The hub's blob store (for tests and inspection).
    pub fn blobs(&self) -> &BlobStore {
        self.shared.blobs()
    }

    /// A transport through which `user` syncs with this hub.
    pub fn connect(&self, user: UserId) -> InProcessTransport {
        InProcessTransport {
            shared: self.shared.clone(),
            label: format!("in-process hub as {user}"),
            user,
        }
    }

    /// Reads the hub's replica (for tests and inspection).
    pub fn inspect<R>(&self, f: impl FnOnce(&Replica<ClientStore>) -> R) -> R {
        self.shared.run_now(|r| f(r))
    }
}

/// A transport to an [`InProcessHub`] (or to a client served with `MeshClient::serve`) on
/// behalf of one user.
#[derive(Clone)]
pub struct InProcessTransport {
    shared: SharedReplica,
    user: UserId,
    label: String,
}

impl InProcessTransport {
    pub(crate) fn new(shared: SharedReplica, user: UserId, label: String) -> Self {
        InProcessTransport {
            shared,
            user,
            label,
        }
    }
}

fn remote_error(e: CoreError) -> TransportError {
    TransportError::Remote(e)
}

#[async_trait]
impl Transport for InProcessTransport {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        let user = self.user.clone();
        let (response, changed) = self
            .shared
            .run(move |r| {
                let response = guard::respond_as(r, &user, request)?;
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
            .map_err(remote_error)?;
        if let Some(c) = changed {
            self.shared.notify(c);
        }
        Ok(response)
    }

    async fn watch(&self) -> Result<BoxStream<'static, Notification>, TransportError> {
        let rx = self.shared.subscribe();
        let shared = self.shared.clone();
        let user = self.user.clone();
        let s = stream::unfold(rx, move |mut rx| {
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
                                return Some((
                                    Notification {
                                        feed: c.feed,
                                        head: c.head,
                                    },
                                    rx,
                                ));
                            }
                        }
                        // Missed some: the receiver syncs everything anyway.
                        Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(s.boxed())
    }

    async fn whoami(&self) -> Result<Option<crate::transport::Identity>, TransportError> {
        Ok(Some(crate::transport::Identity {
            user: self.user.clone(),
            device: None,
        }))
    }

    fn describe(&self) -> String {
        self.label.clone()
    }

    async fn missing_objects(
        &self,
        folder: &FolderId,
        hashes: &[ChunkHash],
    ) -> Result<Vec<ChunkHash>, TransportError> {
        self.allowed(folder, Action::Read).await?;
        let (folder, hashes) = (folder.clone(), hashes.to_vec());
        self.shared
            .run_blobs(move |b| b.missing(&folder, &hashes))
            .await
            .and_then(|r| r)
            .map_err(blob_error)
    }

    async fn put_objects(
        &self,
        folder: &FolderId,
        objects: Vec<(ChunkHash, Vec<u8>)>,
    ) -> Result<(), TransportError> {
        self.allowed(folder, Action::CreateEntry).await?;
        let folder = folder.clone();
        self.shared
            .run_blobs(move |b| b.put(&folder, &objects))
            .await
            .and_then(|r| r)
            .map(|_| ())
            .map_err(blob_error)
    }

    async fn get_objects(
        &self,
        folder: &FolderId,
        hashes: &[ChunkHash],
    ) -> Result<Vec<(ChunkHash, Vec<u8>)>, TransportError> {
        self.allowed(folder, Action::Read).await?;
        let (folder, hashes) = (folder.clone(), hashes.to_vec());
        self.shared
            .run_blobs(move |b| b.get_for(&folder, &hashes, MAX_OBJECTS_RESPONSE))
            .await
            .and_then(|r| r)
            .map_err(blob_error)
    }
}

impl InProcessTransport {
    /// Checks the user's role in `folder` like a hub does; a non-member gets the same answer as
    /// for a folder that does not exist.
    async fn allowed(
        &self,
        folder: &FolderId,
        action: Action<'static>,
    ) -> Result<(), TransportError> {
        let (f, user) = (folder.clone(), self.user.clone());
        self.shared
            .run(move |r| guard::check_folder(r.store(), &user, &f, action))
            .await
            .map_err(|e| TransportError::Server(e.to_string()))?
            .map(|_| ())
            .map_err(remote_error)
    }
}

fn blob_error(e: ClientError) -> TransportError {
    match e {
        ClientError::Core(c) => TransportError::Remote(c),
        other => TransportError::Server(other.to_string()),
    }
}
