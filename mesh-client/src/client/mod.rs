//! The [`MeshClient`] handle and its builder.

pub(crate) mod blobs;
mod builder;
mod entries;
mod folders;
mod remotes;
pub use remotes::MAX_REMOTES;

use std::sync::{Arc, Mutex};

use futures::stream::{self, BoxStream, StreamExt};
use mesh_core::id::{DeviceId, FolderId, RemoteId, UserId};
use mesh_core::model::{authorize, Action, FeedKey, Member, Role, Scope};
use mesh_core::replica::{Actor, Replica};
use mesh_core::sync::{guard, SyncReport};
use mesh_core::time::Timestamp;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

pub use blobs::BlobUsage;
pub use builder::{Clock, MeshClientBuilder};
pub use entries::BatchItem;

use crate::error::{ClientError, Result};
use crate::shared::{Changed, SharedReplica};
use crate::store::ClientStore;
use crate::sync::engine::EngineHandle;
use crate::sync::events::Event;
use crate::transport::InProcessTransport;

/// The mesh SDK's entry point: a local replica, its remotes, and the background sync between
/// them. Cheap to clone (all clones share one client); every write is local first and
/// returns at once, and the sync engines carry it to the remotes.
///
/// ```
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)] async fn main() -> mesh_client::error::Result<()> {
/// use mesh_client::MeshClient;
/// use mesh_client::transport::InProcessHub;
/// use mesh_core::model::{EntryDraft, FolderKind};
///
/// let hub = InProcessHub::new();
/// let laptop = MeshClient::builder()
///     .user("ann".parse()?)
///     .device("laptop".parse()?)
///     .remote("hub".parse()?, hub.connect("ann".parse()?))
///     .build()
///     .await?;
/// let folder = laptop.create_folder("Groceries", FolderKind::app("todo")?).await?;
/// let todos = laptop.create_feed(&folder.id, "todos".parse()?, "To do").await?;
/// let entry = laptop.put(&folder.id, &todos, EntryDraft::new("Buy milk", serde_json::json!({"done": false}))).await?;
/// laptop.sync_now().await?;
/// assert!(hub.inspect(|r| r.get(&mesh_core::model::FeedKey::folder(folder.id.clone(), todos.clone()), entry.entry_id()).unwrap().is_some()));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MeshClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub actor: Actor,
    pub shared: SharedReplica,
    pub events: broadcast::Sender<Event>,
    pub engines: Mutex<Vec<EngineHandle>>,
    pub mappings: Mutex<std::collections::HashMap<FolderId, crate::mapping::MappingHandle>>,
    pub clock: Clock,
    /// Every remote's status, updated by its engine.
    pub statuses: crate::sync::status::Statuses,
    /// What engines started later (see [`MeshClient::add_remote`]) are started with.
    pub engine_setup: (crate::sync::SyncOptions, crate::sync::engine::Identity),
    /// The store's lock, held as long as the client lives.
    pub _lock: Option<crate::store::StoreLock>,
}

impl std::fmt::Debug for MeshClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshClient")
            .field("user", &self.inner.actor.user)
            .field("device", &self.inner.actor.device)
            .finish()
    }
}

impl MeshClient {
    /// Starts building a client.
    pub fn builder() -> MeshClientBuilder {
        MeshClientBuilder::default()
    }

    /// The user this client acts for.
    pub fn user(&self) -> &UserId {
        &self.inner.actor.user
    }

    /// This device.
    pub fn device(&self) -> &DeviceId {
        &self.inner.actor.device
    }

    pub(crate) fn actor(&self) -> &Actor {
        &self.inner.actor
    }

    pub(crate) fn now(&self) -> Timestamp {
        (self.inner.clock)()
    }

    pub(crate) fn shared(&self) -> &SharedReplica {
        &self.inner.shared
    }

    pub(crate) fn changed(&self, feed: FeedKey, head: mesh_core::store::Cursor) {
        self.inner.shared.notify(Changed {
            feed,
            head,
            via: None,
        });
    }

    pub(crate) fn emit(&self, e: Event) {
        let _ = self.inner.events.send(e);
    }

    /// Every event of this client, from now on. Dropping the stream unsubscribes.
    /// A consumer that falls far behind skips the events it missed.
    pub fn events(&self) -> BoxStream<'static, Event> {
        event_stream(self.inner.events.subscribe(), |_| true)
    }

    /// Every remote's sync state now: reachable or not, when it last synced, what is pending
    /// either way, its last error. Also as [`Event::Status`] and [`status_changes`].
    ///
    /// [`status_changes`]: MeshClient::status_changes
    pub fn status(&self) -> Vec<crate::sync::RemoteStatus> {
        self.inner.statuses.borrow().clone()
    }

    /// The statuses of every remote each time one changes, starting with the current ones.
    /// A slow reader sees the latest, not every step.
    pub fn status_changes(&self) -> BoxStream<'static, Vec<crate::sync::RemoteStatus>> {
        let mut rx = self.inner.statuses.subscribe();
        rx.mark_changed();
        stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            let now = rx.borrow_and_update().clone();
            Some((now, rx))
        })
        .boxed()
    }

    /// The events about one folder (every feed in it, when `feed` is `None`) or one feed.
    pub fn subscribe(
        &self,
        folder: &FolderId,
        feed: Option<&mesh_core::id::FeedName>,
    ) -> BoxStream<'static, Event> {
        let folder = folder.clone();
        let feed = feed.cloned();
        event_stream(self.inner.events.subscribe(), move |e| match e.feed() {
            Some(k) => {
                k.scope == Scope::Folder(folder.clone())
                    && feed.as_ref().is_none_or(|f| &k.name == f)
            }
            None => false,
        })
    }

    /// Syncs with every remote now; completes when each session has finished with both sides
    /// caught up, or fails with the first failing remote's error once every remote has
    /// answered ([`sync_each`](MeshClient::sync_each) gives every outcome).
    pub async fn sync_now(&self) -> Result<Vec<(RemoteId, SyncReport)>> {
        let mut out = Vec::new();
        for (remote, outcome) in self.sync_each().await? {
            out.push((remote, outcome?));
        }
        Ok(out)
    }

    /// Like [`sync_now`](MeshClient::sync_now), but waits for every remote and returns each
    /// one's outcome (a report or its typed error), so that one failing remote hides nothing
    /// of the others. Fails only when the client is closed.
    pub async fn sync_each(&self) -> Result<Vec<(RemoteId, Result<SyncReport>)>> {
        let requests = {
            let engines = self.inner.engines.lock().unwrap_or_else(|p| p.into_inner());
            engines
                .iter()
                .map(|e| Ok((e.remote.clone(), e.request_sync()?)))
                .collect::<Result<Vec<_>>>()?
        };
        let mut out = Vec::with_capacity(requests.len());
        for (remote, rx) in requests {
            let outcome = rx.await.unwrap_or(Err(ClientError::Closed));
            out.push((remote, outcome));
        }
        Ok(out)
    }

    /// A transport through which another client (acting for `user`) syncs directly with this
    /// client's replica, as if it were a hub; member roles are enforced the same way.
    pub fn serve(&self, user: UserId) -> InProcessTransport {
        InProcessTransport::new(
            self.inner.shared.clone(),
            user.clone(),
            format!("device {} as {user}", self.inner.actor.device),
        )
    }

    /// Closes the client, with the same meaning as `mesh_client_close` in C: stops every
    /// sync engine and mapping, and every later call that reads or writes fails with
    /// [`ClientError::Closed`] (`sync_now` has no remote left and returns an empty list).
    /// Idempotent. The store's lock is released when the last handle is dropped.
    pub fn close(&self) {
        let mappings = std::mem::take(
            &mut *self
                .inner
                .mappings
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        drop(mappings);
        let engines =
            std::mem::take(&mut *self.inner.engines.lock().unwrap_or_else(|p| p.into_inner()));
        for e in &engines {
            e.stop();
        }
        self.inner.shared.close();
    }

    /// The role of this client's user in `folder` (`None`: not an active member).
    pub async fn role(&self, folder: &FolderId) -> Result<Option<Role>> {
        Ok(self
            .membership(folder)
            .await?
            .and_then(|m| m.effective_role()))
    }

    /// This user's membership record in `folder`: `None` when there is none, and when the
    /// folder was deleted (its record is a tombstone: nobody acts in it any more).
    pub(crate) async fn membership(&self, folder: &FolderId) -> Result<Option<Member>> {
        Ok(self.membership_or_deleted(folder).await?.ok().flatten())
    }

    /// The membership record, or `Err(())` when the folder was deleted.
    async fn membership_or_deleted(
        &self,
        folder: &FolderId,
    ) -> Result<std::result::Result<Option<Member>, ()>> {
        let folder = folder.clone();
        let user = self.user().clone();
        Ok(self
            .shared()
            .run(move |r| membership_or_deleted(r, &folder, &user))
            .await??)
    }

    pub(crate) async fn check(
        &self,
        folder: &FolderId,
        action: Action<'_>,
    ) -> Result<Option<Member>> {
        let m = self.membership_or_deleted(folder).await?;
        allowed(self.user(), folder, m, action)
    }
}

/// `user`'s membership record in `folder`, or `Err(())` when the folder was deleted.
fn membership_or_deleted(
    r: &Replica<ClientStore>,
    folder: &FolderId,
    user: &UserId,
) -> mesh_core::Result<std::result::Result<Option<Member>, ()>> {
    if guard::folder_deleted(r.store(), folder)? {
        return Ok(Err(()));
    }
    guard::membership(r.store(), folder, user).map(Ok)
}

/// Whether `user`, with membership `m` in `folder` (`Err(())`: the folder was deleted), may
/// do `action`; its record when it may.
fn allowed(
    user: &UserId,
    folder: &FolderId,
    m: std::result::Result<Option<Member>, ()>,
    action: Action<'_>,
) -> Result<Option<Member>> {
    let Ok(m) = m else {
        // Deleted here or by its owner elsewhere: the folder is gone for everyone.
        return Err(mesh_core::CoreError::NotFound {
            kind: "folder",
            id: folder.to_string(),
        }
        .into());
    };
    let role = m.as_ref().and_then(Member::effective_role);
    authorize(user, role, action)?;
    Ok(m)
}

/// [`MeshClient::check`] where the caller already runs on the replica: the role check and
/// the write that follows it are then one step, with no sync in between.
pub(crate) fn check_in(
    r: &Replica<ClientStore>,
    user: &UserId,
    folder: &FolderId,
    action: Action<'_>,
) -> Result<Option<Member>> {
    allowed(
        user,
        folder,
        membership_or_deleted(r, folder, user)?,
        action,
    )
}

fn event_stream(
    rx: broadcast::Receiver<Event>,
    keep: impl Fn(&Event) -> bool + Send + Sync + 'static,
) -> BoxStream<'static, Event> {
    let keep = Arc::new(keep);
    stream::unfold(rx, move |mut rx| {
        let keep = keep.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(e) if keep(&e) => return Some((e, rx)),
                    Ok(_) => continue,
                    // Said, never skipped silently.
                    Err(RecvError::Lagged(missed)) => return Some((Event::Lagged { missed }, rx)),
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    })
    .boxed()
}
