//! The state every request shares: the hub's replica, its blob store, its change broadcast, the
//! accounts, device presence and the revocation and shutdown signals.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use mesh_client::store::{BlobStore, ClientStore};
use mesh_core::id::{DeviceId, ReplicaId};
use mesh_core::model::FeedKey;
use mesh_core::replica::Replica;
use mesh_core::store::Cursor;
use mesh_core::time::Timestamp;
use mesh_core::trust::{Keyring, NoKeyring};
use tokio::sync::{broadcast, watch};

use crate::accounts::Accounts;
use crate::api::CursorKey;
use crate::datadir::DataDir;
use crate::error::ApiError;
use crate::ops::Observer;
use crate::quota::Quotas;
use crate::server::rate::Limiter;
use crate::server::{ConnectionLimits, RateLimits};

/// A feed of the hub's replica moved to a new head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Changed {
    pub feed: FeedKey,
    pub head: Cursor,
}

/// Limits and timings of a hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// The largest request body accepted, in bytes (larger ones get 413).
    pub max_body: usize,
    /// How often an idle notification stream gets a heartbeat comment.
    pub heartbeat: Duration,
    /// The longest a long-poll waits before answering with no changes.
    pub long_poll_max: Duration,
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

pub(crate) struct Inner {
    pub replica: Mutex<Replica<ClientStore>>,
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
    /// Metrics and the request log.
    pub observer: Observer,
    /// Per-device and per-user request rates.
    pub limiter: Limiter,
    /// The secret that authenticates the hub's cursors: random for each hub, or the one kept
    /// in the data directory when the hub claimed it.
    pub secret: RwLock<[u8; 32]>,
    /// The data directory's claim, held for the hub's life (when it was opened with one).
    pub data_dir: Mutex<Option<DataDir>>,
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
        }
    }

    pub fn new(
        replica: Replica<ClientStore>,
        blobs: BlobStore,
        accounts: Arc<Accounts>,
        config: HubConfig,
    ) -> Self {
        let replica_id = replica.id();
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
            replica: Mutex::new(replica),
            replica_id,
            blobs,
            endpoint,
            accounts,
            changes,
            revoked,
            shutdown,
            presence: Mutex::new(HashMap::new()),
            observer: Observer::new(),
            limiter: Limiter::new(&config.rates),
            secret: RwLock::new(random_secret()),
            data_dir: Mutex::new(None),
            config,
        }))
    }

    /// Runs `f` with the replica locked, on tokio's blocking pool.
    pub async fn run<R, F>(&self, f: F) -> Result<R, ApiError>
    where
        F: FnOnce(&mut Replica<ClientStore>) -> R + Send + 'static,
        R: Send + 'static,
    {
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = inner.replica.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(ApiError::internal)
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
