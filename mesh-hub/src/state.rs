//! The state every request shares: the hub's replica, its blob store, its change broadcast, the
//! accounts, device presence and the revocation and shutdown signals.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use mesh_core::id::{DeviceId, ReplicaId};
use mesh_core::model::FeedKey;
use mesh_core::replica::Replica;
use mesh_core::store::Cursor;
use mesh_core::time::Timestamp;
use mesh_core::trust::{Keyring, NoKeyring};
use mesh_store::postgres::PgDatabase;
use mesh_store::{AnyStore, BlobStore};
use tokio::sync::{broadcast, watch};

use crate::accounts::Accounts;
use crate::api::CursorKey;
use crate::datadir::DataDir;
use crate::error::ApiError;
use crate::ops::Observer;
use crate::quota::Quotas;
use crate::server::rate::Limiter;
use crate::server::{ConnectionLimits, RateLimits};

pub(crate) use crate::changed::Changed;

/// Limits and timings of a hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// The largest request body accepted, in bytes (larger ones get 413).
    pub max_body: usize,
    /// How often an idle notification stream gets a heartbeat comment.
    pub heartbeat: Duration,
    /// The longest a long-poll waits before answering with no changes.
    pub long_poll_max: Duration,
    /// The longest an objects `fetch` may wait for objects still being uploaded (it asks with
    /// `?wait=`; see [`upload_idle`](Self::upload_idle)).
    pub fetch_wait_max: Duration,
    /// How long after a folder's last upload ended a waiting `fetch` still expects more: past
    /// it, a fetch that finds none of its objects answers at once.
    pub upload_idle: Duration,
    /// How long the device certificates the hub issues stay valid.
    pub certificate_validity: Duration,
    /// Whether pushed versions are verified against the devices' certificates and authorized
    /// as their signers' writes (the default). Off, every pushed version counts as the
    /// pusher's own write, as before signatures existed: for measuring what verification
    /// costs, never for a hub that serves more than one trusted user.
    pub verify_signatures: bool,
    /// How many connections, and how long the hub waits for each.
    pub connections: ConnectionLimits,
    /// Requests per second allowed per device and per user.
    pub rates: RateLimits,
    /// What one user may hold.
    pub quotas: Quotas,
    /// The largest blob accepted: a manifest declaring more bytes is refused.
    pub max_blob: u64,
    /// With a token, `GET /metrics` answers only requests bearing it; without, anyone who can
    /// reach the hub may read its metrics.
    pub metrics_token: Option<String>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            max_body: 32 << 20,
            heartbeat: Duration::from_secs(15),
            long_poll_max: Duration::from_secs(60),
            fetch_wait_max: Duration::from_secs(10),
            upload_idle: Duration::from_secs(2),
            certificate_validity: Duration::from_secs(365 * 86_400),
            verify_signatures: true,
            connections: ConnectionLimits::default(),
            rates: RateLimits::default(),
            quotas: Quotas::default(),
            max_blob: 16 << 30,
            metrics_token: None,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Presence {
    pub last_seen: Option<Timestamp>,
    pub streams: usize,
}

/// Where the hub's replica lives.
pub(crate) enum Backend {
    /// In this process (memory or SQLite), behind one lock.
    Local(Box<Mutex<Replica<AnyStore>>>),
    /// In PostgreSQL, shared with any number of hub processes: each request works on a
    /// replica over a connection of its own; writers of one folder take turns through the
    /// database's scope locks.
    Postgres(PgDatabase),
}

pub(crate) struct Inner {
    pub backend: Backend,
    pub replica_id: ReplicaId,
    /// Blob objects (chunks, manifests) and the folders that claim them.
    pub blobs: BlobStore,
    /// The FeedSync endpoint of writes the hub makes for REST clients.
    pub endpoint: DeviceId,
    pub accounts: Arc<Accounts>,
    pub config: HubConfig,
    pub changes: broadcast::Sender<Changed>,
    pub revoked: broadcast::Sender<DeviceId>,
    pub shutdown: watch::Sender<bool>,
    pub presence: Mutex<HashMap<DeviceId, Presence>>,
    /// Set once the cross-process notification task runs (PostgreSQL only).
    pub fanout: std::sync::OnceLock<()>,
    /// Set once the housekeeping task runs.
    pub housekeeping: std::sync::OnceLock<()>,
    /// The housekeeping task, until a server that stops waits for its end (see
    /// `crate::housekeeping::stopped`).
    pub housekeeper: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Folder rosters shared by the notification streams.
    pub readers: Arc<crate::readers::Readers>,
    /// How many notification streams of this process asked for changes along (see
    /// [`crate::changed`]): while none does, pushes do not read their changes back.
    pub paged: Arc<std::sync::atomic::AtomicUsize>,
    /// The replica-wide number of the replica's newest change when the hub opened
    /// (PostgreSQL): changes after it are announced by the notification task, even those that
    /// commit before it listens.
    pub opened_at: u64,
    /// Metrics and the request log.
    pub observer: Observer,
    /// Per-device and per-user request rates (on PostgreSQL, this process's share of them).
    pub limiter: Limiter,
    /// This process's id among the processes serving one database.
    pub process_id: String,
    /// The secret that authenticates the hub's cursors: random for each hub, or the one kept
    /// in the data directory when the hub claimed it.
    pub secret: RwLock<[u8; 32]>,
    /// The data directory's claim, held for the hub's life (when it was opened with one).
    pub data_dir: Mutex<Option<DataDir>>,
    /// Read-only connections to a SQLite replica, so that reads never wait for the writer's
    /// lock (`None` in memory and on PostgreSQL, where every request has a connection).
    pub reader_pool: Option<ReaderPool>,
    /// The epoch the hub announces (SQLite replicas; see [`crate::epoch`]).
    pub epoch: std::sync::OnceLock<mesh_core::sync::Epoch>,
    /// Held from the stored-bytes quota check of an upload to the write it admits, so that
    /// two uploads cannot both pass the check on the same free bytes (within this process).
    pub quota_bytes: Mutex<()>,
    /// The uploads under way, per folder: what a waiting `fetch` waits on.
    pub uploads: crate::uploads::Uploads,
}

/// How many reads run at once on their own SQLite connections.
pub(crate) const READERS: usize = 8;

/// Reader connections to a SQLite replica file, opened as needed (at most [`READERS`]) and
/// kept for the next read.
pub(crate) struct ReaderPool {
    path: std::path::PathBuf,
    replica: ReplicaId,
    idle: Mutex<Vec<Replica<AnyStore>>>,
    permits: Arc<tokio::sync::Semaphore>,
}

impl ReaderPool {
    pub fn new(path: std::path::PathBuf, replica: ReplicaId) -> Self {
        ReaderPool {
            path,
            replica,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(tokio::sync::Semaphore::new(READERS)),
        }
    }

    fn take(&self) -> Result<Replica<AnyStore>, mesh_store::StoreError> {
        if let Some(r) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(r);
        }
        let store = mesh_store::SqliteStore::open(&self.path, self.replica.clone())?;
        Ok(Replica::new(AnyStore::Sqlite(store)))
    }

    fn give_back(&self, r: Replica<AnyStore>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < READERS {
            idle.push(r);
        }
    }
}

/// Shared by every request; cheap to clone.
#[derive(Clone)]
pub(crate) struct HubState(pub Arc<Inner>);

pub(crate) fn now() -> Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Timestamp::from_unix(secs).unwrap_or(Timestamp::EPOCH)
}

/// 32 random bytes (from the OS; a hash of the time and process should the OS fail, which is
/// only as good as a secret that never leaves the process).
fn random_secret() -> [u8; 32] {
    let mut key = [0u8; 32];
    if getrandom::fill(&mut key).is_err() {
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        key = *blake3::hash(seed.as_bytes()).as_bytes();
    }
    key
}

impl HubState {
    /// What the hub's cursors are authenticated with.
    pub fn cursor_key(&self) -> CursorKey {
        CursorKey {
            replica: self.0.replica_id.clone(),
            secret: *self.0.secret.read().unwrap_or_else(|p| p.into_inner()),
            epochs: self
                .0
                .epoch
                .get()
                .map(|e| {
                    std::iter::once(e.id.clone())
                        .chain(e.continues.iter().cloned())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    pub fn new(
        backend: Backend,
        opened_at: u64,
        replica_id: ReplicaId,
        blobs: BlobStore,
        accounts: Arc<Accounts>,
        config: HubConfig,
        reader_pool: Option<ReaderPool>,
    ) -> Self {
        // A replica id is a valid device id: both are plain ids.
        let endpoint: DeviceId = replica_id
            .as_str()
            .parse()
            .unwrap_or_else(|_| unreachable!("replica ids are valid device ids"));
        accounts.set_authority_device(endpoint.clone());
        let (changes, _) = broadcast::channel(4096);
        let (revoked, _) = broadcast::channel(256);
        let (shutdown, _) = watch::channel(false);
        HubState(Arc::new(Inner {
            backend,
            replica_id,
            blobs,
            endpoint,
            accounts,
            changes,
            revoked,
            shutdown,
            presence: Mutex::new(HashMap::new()),
            fanout: std::sync::OnceLock::new(),
            housekeeping: std::sync::OnceLock::new(),
            housekeeper: Mutex::new(None),
            readers: Arc::default(),
            paged: Arc::default(),
            opened_at,
            observer: Observer::new(),
            limiter: Limiter::new(&config.rates),
            process_id: format!("hub-process-{}", uuid::Uuid::new_v4().simple()),
            secret: RwLock::new(random_secret()),
            data_dir: Mutex::new(None),
            epoch: std::sync::OnceLock::new(),
            reader_pool,
            quota_bytes: Mutex::new(()),
            uploads: crate::uploads::Uploads::default(),
            config,
        }))
    }

    /// Runs `f`, which only reads, on the replica, on tokio's blocking pool: over a reader
    /// connection of its own (SQLite: it never waits for a writer, and sees what was committed
    /// when each of its statements began; PostgreSQL), or under the replica's lock (memory).
    /// Writes go through [`run_scoped`](Self::run_scoped).
    pub async fn run<R, F>(&self, f: F) -> Result<R, ApiError>
    where
        F: FnOnce(&mut Replica<AnyStore>) -> R + Send + 'static,
        R: Send + 'static,
    {
        self.run_after(|| (), move |r, ()| f(r)).await
    }

    /// [`run`](Self::run), with what `prepare` makes first on the same blocking thread, before
    /// a reader or the replica is taken: work that waits on something else (the keyring:
    /// on PostgreSQL a query over a connection of its own, which must not be asked for while
    /// this request holds one) without a second hand-off.
    pub async fn run_after<P, R, G, F>(&self, prepare: G, f: F) -> Result<R, ApiError>
    where
        G: FnOnce() -> P + Send + 'static,
        F: FnOnce(&mut Replica<AnyStore>, P) -> R + Send + 'static,
        R: Send + 'static,
    {
        let Some(pool) = &self.0.reader_pool else {
            return self.run_in(None, prepare, f).await;
        };
        // At most `READERS` reads at once: the rest wait here, not on threads.
        let _permit = pool
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(ApiError::internal)?;
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let Some(pool) = &inner.reader_pool else {
                return Err(ApiError::internal("the reader pool went away"));
            };
            let prepared = prepare();
            let mut reader = pool.take().map_err(unavailable)?;
            let out = f(&mut reader, prepared);
            pool.give_back(reader);
            Ok(out)
        })
        .await
        .map_err(ApiError::internal)?
    }

    /// Runs `f` on the replica as a writer of `scope` (a folder): with PostgreSQL, under the
    /// database's lock of that scope, so that no other process writes the folder (or changes
    /// its members) between the role checks `f` makes and its commit. In one process the
    /// replica's lock does the same. What `prepare` makes (see [`run_after`](Self::run_after))
    /// is made first, before the scope's lock and the replica are taken.
    pub async fn run_scoped<P, R, G, F>(
        &self,
        scope: String,
        prepare: G,
        f: F,
    ) -> Result<R, ApiError>
    where
        G: FnOnce() -> P + Send + 'static,
        F: FnOnce(&mut Replica<AnyStore>, P) -> R + Send + 'static,
        R: Send + 'static,
    {
        self.run_in(Some(scope), prepare, f).await
    }

    async fn run_in<P, R, G, F>(
        &self,
        scope: Option<String>,
        prepare: G,
        f: F,
    ) -> Result<R, ApiError>
    where
        G: FnOnce() -> P + Send + 'static,
        F: FnOnce(&mut Replica<AnyStore>, P) -> R + Send + 'static,
        R: Send + 'static,
    {
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let prepared = prepare();
            match &inner.backend {
                Backend::Local(replica) => {
                    let mut guard = replica.lock().unwrap_or_else(|p| p.into_inner());
                    Ok(f(&mut guard, prepared))
                }
                Backend::Postgres(db) => {
                    let mut store = db.store().map_err(unavailable)?;
                    if let Some(scope) = scope {
                        store.lock_scope(&scope)?;
                    }
                    let mut replica = Replica::new(AnyStore::Postgres(store));
                    Ok(f(&mut replica, prepared))
                }
            }
        })
        .await
        .map_err(ApiError::internal)?
    }

    /// Sends change announcements from request handlers: in one process they go straight to
    /// the streams; with PostgreSQL every process (this one too) hears them from the
    /// database, in commit order, so handlers send nothing.
    /// Runs `f` on the local replica's store with the hub's epoch, if it has one.
    pub(crate) async fn with_epoch(
        &self,
        f: fn(&mut AnyStore, &mesh_core::sync::Epoch) -> Result<(), crate::error::HubError>,
    ) -> Result<(), crate::error::HubError> {
        let Some(epoch) = self.0.epoch.get().cloned() else {
            return Ok(());
        };
        let Backend::Local(_) = &self.0.backend else {
            return Ok(());
        };
        let state = self.clone();
        tokio::task::spawn_blocking(move || {
            let Backend::Local(replica) = &state.0.backend else {
                return Ok(());
            };
            let mut guard = replica.lock().unwrap_or_else(|p| p.into_inner());
            f(guard.store_mut(), &epoch)
        })
        .await
        .map_err(|e| crate::error::HubError::Store(format!("epoch task: {e}")))?
    }

    pub fn announcer(&self) -> Announcer {
        match &self.0.backend {
            Backend::Local(_) => Announcer(Some(Listeners {
                tx: self.0.changes.clone(),
                readers: self.0.readers.clone(),
                paged: self.0.paged.clone(),
            })),
            Backend::Postgres(_) => Announcer(None),
        }
    }

    /// Runs blob store work on tokio's blocking pool.
    pub async fn blobs<R, F>(&self, f: F) -> Result<R, ApiError>
    where
        F: FnOnce(&BlobStore) -> R + Send + 'static,
        R: Send + 'static,
    {
        let blobs = self.0.blobs.clone();
        tokio::task::spawn_blocking(move || f(&blobs))
            .await
            .map_err(ApiError::internal)
    }

    /// Runs blocking account work on tokio's blocking pool.
    pub async fn accounts<R, F>(&self, f: F) -> Result<R, ApiError>
    where
        F: FnOnce(&Accounts) -> R + Send + 'static,
        R: Send + 'static,
    {
        let accounts = self.0.accounts.clone();
        tokio::task::spawn_blocking(move || f(&accounts))
            .await
            .map_err(ApiError::internal)
    }

    /// The keyring pushes are checked against (one that knows no device when verification is
    /// switched off).
    pub fn keyring(&self) -> Arc<dyn Keyring + Send + Sync> {
        if self.0.config.verify_signatures {
            self.0.accounts.keyring()
        } else {
            Arc::new(NoKeyring)
        }
    }

    pub fn presence(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, Presence>> {
        self.0.presence.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn seen(&self, device: &DeviceId) {
        self.presence().entry(device.clone()).or_default().last_seen = Some(now());
    }
}

/// Where a handler announces a feed's new head (see [`HubState::announcer`]).
#[derive(Clone)]
pub(crate) struct Announcer(Option<Listeners>);

/// Where announcements go: the process's notification streams.
#[derive(Clone)]
pub(crate) struct Listeners {
    tx: broadcast::Sender<Changed>,
    readers: Arc<crate::readers::Readers>,
    paged: Arc<std::sync::atomic::AtomicUsize>,
}

impl Announcer {
    /// An announcer to `tx` with `paged` streams asking for changes along (for tests).
    #[cfg(test)]
    pub fn listening(tx: broadcast::Sender<Changed>, paged: usize) -> Announcer {
        Announcer(Some(Listeners {
            tx,
            readers: Arc::default(),
            paged: Arc::new(std::sync::atomic::AtomicUsize::new(paged)),
        }))
    }

    fn send(&self, changed: Changed) {
        if let Some(l) = &self.0 {
            l.readers.changed(&changed.moved.feed);
            let _ = l.tx.send(changed);
        }
    }

    /// Announces `feed`'s new head as `store` holds it (nothing for a feed it no longer
    /// holds: a purged one).
    pub fn moved(
        &self,
        store: &impl mesh_core::store::Store,
        feed: &FeedKey,
    ) -> Result<(), mesh_core::CoreError> {
        if let Some(moved) = store.feed_moved(feed)? {
            self.send(moved.into());
        }
        Ok(())
    }

    /// Whether a notification stream asked for changes along: only then is a push's head
    /// before it worth reading.
    pub fn listened(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|l| l.paged.load(std::sync::atomic::Ordering::Relaxed) > 0)
    }

    /// The head of `feed` before a write, when a notification may carry the write's changes
    /// (`entries` of them at most; see [`crate::changed`]): for [`Announcer::written`].
    pub fn before(
        &self,
        store: &impl mesh_core::store::Store,
        feed: &FeedKey,
        entries: usize,
    ) -> Result<Option<Cursor>, mesh_core::CoreError> {
        match entries <= crate::changed::PAGE_MAX_CHANGES && self.listened() {
            true => store.head(feed).map(Some),
            false => Ok(None),
        }
    }

    /// Announces `feed`'s new head after a write that found it at `since` (from
    /// [`Announcer::before`]; `None`: the head only), with the write's changes when they are
    /// small enough to travel along; `by`: the device that pushed them through the sync
    /// protocol (none for the hub's own writes).
    pub fn written(
        &self,
        store: &impl mesh_core::store::Store,
        feed: &FeedKey,
        since: Option<Cursor>,
        by: Option<&DeviceId>,
    ) -> Result<(), mesh_core::CoreError> {
        match since {
            Some(since) => self.pushed(store, feed, since, by),
            None => self.moved(store, feed),
        }
    }

    /// Announces `feed`'s new head after a push by `by` that found it at `since`, with the
    /// push's changes when they are small enough to travel along (see [`crate::changed`]).
    pub fn pushed(
        &self,
        store: &impl mesh_core::store::Store,
        feed: &FeedKey,
        since: Cursor,
        by: Option<&DeviceId>,
    ) -> Result<(), mesh_core::CoreError> {
        let Some(moved) = store.feed_moved(feed)? else {
            return Ok(());
        };
        let backed_up = self
            .0
            .as_ref()
            .is_some_and(|l| l.tx.len() >= crate::changed::PAGED_BACKLOG);
        let page = match self.listened() && !backed_up {
            true => crate::changed::page(store, feed, since, &moved, by)?.map(Arc::new),
            false => None,
        };
        self.send(Changed { moved, page });
        Ok(())
    }
}

/// The scope a write to `feed` takes: its folder, or its user's mesh.
pub(crate) fn scope_of(feed: &FeedKey) -> String {
    match &feed.scope {
        mesh_core::model::Scope::Folder(f) => format!("folder:{f}"),
        mesh_core::model::Scope::Mesh(u) => format!("mesh:{u}"),
    }
}

/// The database is unreachable or out of connections: try again later.
fn unavailable(e: mesh_store::StoreError) -> ApiError {
    tracing::warn!(error = %e, "no database connection");
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the hub's database is unavailable; try again",
    )
}

/// Counts one open notification stream of a device while alive.
pub(crate) struct StreamGuard {
    state: HubState,
    device: DeviceId,
}

impl StreamGuard {
    pub fn new(state: &HubState, device: &DeviceId) -> Self {
        state.presence().entry(device.clone()).or_default().streams += 1;
        StreamGuard {
            state: state.clone(),
            device: device.clone(),
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(p) = self.state.presence().get_mut(&self.device) {
            p.streams = p.streams.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::store::Store;

    // The test holds the writer's (blocking) lock across awaits on purpose: that is the
    // situation reads must not wait in.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_do_not_wait_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let hub = crate::Hub::builder().data_dir(dir.path()).build().unwrap();
        let state = hub.state.clone();
        let Backend::Local(writer) = &state.0.backend else {
            panic!("a data directory is a local backend");
        };
        // A writer holds the replica for as long as this test wants.
        let held = writer.lock().unwrap();
        let reads = (0..(READERS * 2)).map(|_| state.run(|r| r.store().feeds().map(|f| f.len())));
        let done = tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(reads))
            .await
            .expect("reads finish while the writer holds the replica");
        assert!(done.into_iter().all(|r| matches!(r, Ok(Ok(0)))));
        drop(held);
        // In memory there is one replica and one lock: reads take it.
        let memory = crate::Hub::builder().build().unwrap();
        assert!(memory.state.0.reader_pool.is_none());
    }
}
