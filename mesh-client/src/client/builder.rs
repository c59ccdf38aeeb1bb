//! Building a [`MeshClient`].

use std::sync::{Arc, Mutex};

use mesh_core::id::{DeviceId, RemoteId, ReplicaId, UserId};
use mesh_core::replica::{Actor, Replica, ReplicaOptions};
use mesh_core::time::Timestamp;
use tokio::sync::broadcast;

use crate::client::{Inner, MeshClient};
use crate::error::{ClientError, Result};
use crate::shared::SharedReplica;
use crate::store::{BlobStore, ClientStore, DeviceStore, StoreConfig, StoreLock};
use crate::sync::engine;
use crate::sync::SyncOptions;
use crate::transport::Transport;

/// Where a client's time comes from (whole-second UTC). Tests pass a fixed or stepping clock.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

fn system_clock() -> Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Timestamp::from_unix(secs).unwrap_or(Timestamp::EPOCH)
}

/// Builds a [`MeshClient`]: identity, store, remotes. Consumed by [`MeshClientBuilder::build`].
#[must_use]
#[derive(Default)]
pub struct MeshClientBuilder {
    user: Option<UserId>,
    device: Option<DeviceId>,
    device_name: Option<String>,
    device_kind: Option<String>,
    store: StoreConfig,
    remotes: Vec<(RemoteId, Arc<dyn Transport>)>,
    clock: Option<Clock>,
    options: SyncOptions,
    compact_history: bool,
    device_key: Option<mesh_core::trust::SecretKey>,
}

impl MeshClientBuilder {
    /// The user the client acts for (required).
    pub fn user(mut self, user: UserId) -> Self {
        self.user = Some(user);
        self
    }

    /// This device's id, its FeedSync endpoint (required; unique per device).
    pub fn device(mut self, device: DeviceId) -> Self {
        self.device = Some(device);
        self
    }

    /// A human-readable device name and kind ("Ann's laptop", "laptop") for the devices list.
    pub fn device_name(mut self, name: impl Into<String>, kind: impl Into<String>) -> Self {
        self.device_name = Some(name.into());
        self.device_kind = Some(kind.into());
        self
    }

    /// The local store (memory by default).
    pub fn store(mut self, store: StoreConfig) -> Self {
        self.store = store;
        self
    }

    /// Adds a remote to sync with, under a name that keys its cursors.
    pub fn remote(mut self, name: RemoteId, transport: impl Transport) -> Self {
        self.remotes.push((name, Arc::new(transport)));
        self
    }

    /// Replaces the system clock.
    pub fn clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Sync engine timing.
    pub fn sync_options(mut self, options: SyncOptions) -> Self {
        self.options = options;
        self
    }

    /// Compact the history of every version this device writes.
    pub fn compact_history(mut self, on: bool) -> Self {
        self.compact_history = on;
        self
    }

    /// The device's signing key, when the application holds it (to authenticate to peers
    /// with the certificate an authority issued for it, say). By default the store's own
    /// key (made on first use). A SQLite store that already holds another key refuses it
    /// ([`ClientError::Config`]); one that holds none saves it.
    pub fn device_key(mut self, key: mesh_core::trust::SecretKey) -> Self {
        self.device_key = Some(key);
        self
    }

    /// Opens the store, registers the device, and starts one sync engine per remote. Must be
    /// called inside a tokio runtime.
    pub async fn build(self) -> Result<MeshClient> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ClientError::Config(
                "a MeshClient needs a tokio runtime".into(),
            ));
        }
        let user = self
            .user
            .ok_or_else(|| ClientError::Config("no user given".into()))?;
        let device = self
            .device
            .ok_or_else(|| ClientError::Config("no device given".into()))?;
        let replica_id: ReplicaId = format!(
            "{device}.{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        )
        .parse()?;
        let config = self.store.clone();
        let given_key = self.device_key.clone();
        let (lock, store, blobs, key) = tokio::task::spawn_blocking(move || {
            // The lock first: a second client must not even open the store.
            let lock = match &config {
                StoreConfig::Memory => None,
                StoreConfig::Sqlite(path) | StoreConfig::SqliteWith(path, _) => {
                    Some(StoreLock::acquire(path)?)
                }
            };
            let mut store = ClientStore::open(&config, replica_id)?;
            let blobs = BlobStore::for_config(&config)?;
            if lock.is_some() {
                // This client alone uses the files (the lock says so): each transaction
                // can skip SQLite's file locking.
                store.keep_file_locked()?;
                blobs.keep_file_locked()?;
            }
            let key = match given_key {
                Some(key) => {
                    store.adopt_device_key(&key)?;
                    key
                }
                None => store.device_key()?,
            };
            Ok::<_, ClientError>((lock, store, blobs, key))
        })
        .await
        .map_err(|e| ClientError::Internal(e.to_string()))??;
        let mut replica = Replica::with_options(
            store,
            ReplicaOptions {
                compact_history: self.compact_history,
            },
        );
        let public_key = key.public();
        // Every version this device writes carries its signature.
        replica.set_signer(key);
        let saved = replica.store().revocations()?;
        let shared = SharedReplica::new(replica, blobs, saved);
        let (events, _) = broadcast::channel(4096);
        let clock: Clock = self.clock.unwrap_or_else(|| Arc::new(system_clock));
        let identity = engine::Identity {
            user: user.clone(),
            device: device.clone(),
            key: public_key,
            clock: clock.clone(),
        };
        let statuses = tokio::sync::watch::Sender::new(Vec::new());
        let client = MeshClient {
            inner: Arc::new(Inner {
                actor: Actor::new(user, device.clone()),
                shared: shared.clone(),
                events: events.clone(),
                engines: Mutex::new(Vec::new()),
                mappings: Mutex::default(),
                clock: clock.clone(),
                statuses: statuses.clone(),
                engine_setup: (self.options.clone(), identity.clone()),
                _lock: lock,
            }),
        };
        let name = self.device_name.unwrap_or_else(|| device.to_string());
        let kind = self.device_kind.unwrap_or_else(|| "device".into());
        client.register_device(name, kind).await?;
        let engines = self
            .remotes
            .into_iter()
            .map(|(remote, transport)| {
                engine::spawn(
                    shared.clone(),
                    events.clone(),
                    remote,
                    transport,
                    self.options.clone(),
                    identity.clone(),
                    statuses.clone(),
                )
            })
            .collect();
        *client
            .inner
            .engines
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = engines;
        Ok(client)
    }
}
