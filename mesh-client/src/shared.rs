//! The replica a client (or an in-process hub) holds, shared between the application's calls,
//! the sync engines and any peers served directly.

use std::sync::{Arc, Mutex};

use mesh_core::id::RemoteId;
use mesh_core::model::FeedKey;
use mesh_core::replica::Replica;
use mesh_core::store::Cursor;
use mesh_core::trust::Revocation;
use tokio::sync::broadcast;

use crate::error::{ClientError, Result};
use crate::peer::TrustRegistry;
use crate::store::{BlobStore, ClientStore};

/// A feed of the shared replica changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Changed {
    /// The feed.
    pub feed: FeedKey,
    /// Its new head.
    pub head: Cursor,
    /// The remote whose sync caused the change (`None`: a local write or a peer's push).
    pub via: Option<RemoteId>,
}

struct Cell {
    replica: Mutex<Replica<ClientStore>>,
    blobs: BlobStore,
    changed: broadcast::Sender<Changed>,
    /// The store never blocks on I/O (memory): run its work on the calling thread.
    inline: bool,
    /// Set by [`SharedReplica::close`]: every later `run` fails with `Closed`.
    closed: std::sync::atomic::AtomicBool,
    /// The revocations and certificates the client learned, and the peer trusts they apply
    /// to.
    trust: TrustRegistry,
}

/// A replica behind a lock, with a broadcast of its changes. Store work runs on tokio's
/// blocking pool, so a slow disk never stalls the runtime.
#[derive(Clone)]
pub(crate) struct SharedReplica(Arc<Cell>);

impl SharedReplica {
    /// The replica and its blobs, knowing the revocation statements `saved` (read from its
    /// store).
    pub fn new(replica: Replica<ClientStore>, blobs: BlobStore, saved: Vec<Revocation>) -> Self {
        let (changed, _) = broadcast::channel(1024);
        let inline = matches!(replica.store(), ClientStore::Memory(_));
        SharedReplica(Arc::new(Cell {
            replica: Mutex::new(replica),
            blobs,
            changed,
            inline,
            closed: std::sync::atomic::AtomicBool::new(false),
            trust: TrustRegistry::new(saved),
        }))
    }

    /// Whether the store keeps entries as their JSON (all but the in-memory one), so that
    /// JSON made ahead of a merge saves its thread the work (see
    /// [`Prepared`](mesh_core::sync::Prepared)).
    pub fn stores_json(&self) -> bool {
        !self.0.inline
    }

    /// What the client learned of the mesh's devices (see [`TrustRegistry`]).
    pub fn trust(&self) -> &TrustRegistry {
        &self.0.trust
    }

    /// Refuses every later [`run`](SharedReplica::run) and
    /// [`run_blobs`](SharedReplica::run_blobs) with [`ClientError::Closed`].
    pub fn close(&self) {
        self.0
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.0.closed.load(std::sync::atomic::Ordering::Acquire) {
            Err(ClientError::Closed)
        } else {
            Ok(())
        }
    }

    /// Runs `f` with the replica locked: on the blocking pool when the store does disk I/O,
    /// on the calling thread when it is in memory (a hop to the pool would cost more than the
    /// work).
    pub async fn run<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&mut Replica<ClientStore>) -> R + Send + 'static,
        R: Send + 'static,
    {
        self.check_open()?;
        if self.0.inline {
            return Ok(self.run_now(f));
        }
        let cell = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = cell.replica.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| ClientError::Internal(format!("store task failed: {e}")))
    }

    /// Runs `f` with the replica locked, on the calling thread (for short, memory-only work).
    pub fn run_now<R>(&self, f: impl FnOnce(&mut Replica<ClientStore>) -> R) -> R {
        let mut guard = self.0.replica.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// The blob store that goes with the replica.
    pub fn blobs(&self) -> &BlobStore {
        &self.0.blobs
    }

    /// Runs `f` on the blob store: on the blocking pool when it is a file.
    pub async fn run_blobs<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&BlobStore) -> R + Send + 'static,
        R: Send + 'static,
    {
        self.check_open()?;
        let blobs = self.0.blobs.clone();
        if !blobs.blocks() {
            return Ok(f(&blobs));
        }
        tokio::task::spawn_blocking(move || f(&blobs))
            .await
            .map_err(|e| ClientError::Internal(format!("blob store task failed: {e}")))
    }

    pub fn notify(&self, c: Changed) {
        // No receiver is fine: nobody is listening.
        let _ = self.0.changed.send(c);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Changed> {
        self.0.changed.subscribe()
    }
}
