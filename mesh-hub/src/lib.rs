//! # mesh-hub
//!
//! The reference hub of [mesh](https://example.invalid/mesh): the "cloud" replica that a
//! person's devices, and the people they share with, sync through. It is just another replica
//! (a `mesh-core` [`Replica`](mesh_core::replica::Replica) over a `mesh-store` store) served
//! over HTTP, with
//!
//! * **accounts** ([`Accounts`]): users, their devices, and bearer tokens bound to one user and
//!   one device, stored hashed; revoking a device cuts it off at once, open notification
//!   streams included;
//! * **the sync protocol** at `POST /mesh/sync`, answered by the core's
//!   [`respond_as`](mesh_core::sync::guard::respond_as) for the token's user, so every read
//!   and write is checked against the folder's member roles;
//! * **a REST API in the Live Framework shape**: `/mesh/devices`, `/mesh/folders/{id}`,
//!   members, invitations, mappings, news, feeds and entries (JSON, or Atom with FeedSync
//!   metadata), ETags with `If-Match`, `$top`/`$skip`/`$orderby`/`$filter`, a changes feed with
//!   opaque cursors;
//! * **blobs**: content-addressed objects (chunks and manifests) uploaded and downloaded in
//!   packs, per folder and under the folder's member roles, and whole blobs or single objects
//!   served with HTTP ranges (resumable downloads);
//! * **notifications** by server-sent events or long-poll, resumable from a cursor.
//!
//! `docs/protocol.md` specifies the wire format. The hub holds no sync logic of its own: merges,
//! change logs and role checks are the core's.
//!
//! ```no_run
//! # async fn run() -> Result<(), mesh_hub::HubError> {
//! let hub = mesh_hub::Hub::builder().data_dir("./hub-data").build()?;
//! hub.accounts().add_user(&"ann".parse()?)?;
//! let token = hub.accounts().add_device(&"ann".parse()?, &"laptop".parse()?, "Ann's laptop", "laptop")?;
//! println!("token for ann's laptop: {token}");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7300").await?;
//! hub.serve(listener, mesh_hub::shutdown_signal()).await
//! # }
//! ```

mod accounts;
mod api;
mod backup;
mod changed;
pub mod config;
mod datadir;
mod enrollment;
mod epoch;
mod error;
mod fanout;
mod housekeeping;
pub mod ops;
mod purge;
mod quota;
mod readers;
pub mod server;
mod state;
mod uploads;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mesh_core::id::ReplicaId;
use mesh_core::replica::Replica;
use mesh_core::store::Store;
use mesh_store::postgres::{PgAccounts, PgConfig, PgDatabase, PgObjects};
use mesh_store::{AnyStore, BlobStore, Durability, StoreConfig};

pub use accounts::{Accounts, DeviceRecord, Principal};
pub use backup::{backup, BackupReport};
pub use datadir::{make_private, LOCK_FILE, SECRET_FILE};
pub use enrollment::{Revocation, CODE_VALIDITY};
pub use error::{ApiError, HubError};
pub use quota::{QuotaError, Quotas};
pub use server::{ConnectionLimits, RateLimits, TlsConfig};
pub use state::HubConfig;

use state::{Backend, HubState};

/// The name of the accounts database in a hub's data directory.
pub const ACCOUNTS_DB: &str = "accounts.db";
/// The name of the replica database in a hub's data directory.
pub const REPLICA_DB: &str = "hub.db";
/// The name of the blob store (chunks and manifests) in a hub's data directory.
pub const BLOBS_DB: &str = "blobs.db";

/// Builds a [`Hub`].
#[must_use]
#[derive(Debug, Default)]
pub struct HubBuilder {
    data_dir: Option<PathBuf>,
    config: HubConfig,
    durability: Durability,
    postgres: Option<PgConfig>,
    migrate: bool,
}

impl HubBuilder {
    /// Keeps the hub's data (accounts, replica and blobs) in this directory, created if missing.
    /// Without one, everything lives in memory and is gone when the hub is dropped.
    pub fn data_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.data_dir = Some(dir.as_ref().to_owned());
        self
    }

    /// Limits and timings.
    pub fn config(mut self, config: HubConfig) -> Self {
        self.config = config;
        self
    }

    /// How the replica and blob databases sync commits to disk: `Full` (the default) survives a crash
    /// of the machine; `Normal` survives a crash of the hub process and saves an fsync per
    /// commit.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Keeps the replica, accounts, certificates and blobs in PostgreSQL instead of the data
    /// directory: any number of hub processes may serve one database at once (see
    /// `docs/operations.md`). The database must be migrated (`mesh-hub migrate`, or
    /// [`migrate`](Self::migrate)).
    pub fn postgres(mut self, config: PgConfig) -> Self {
        self.postgres = Some(config);
        self
    }

    /// Applies the database's missing schema migrations when the hub opens (PostgreSQL).
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// The largest request body accepted, in bytes.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.config.max_body = bytes;
        self
    }

    /// Like [`build`](Self::build), and with a data directory also claims it for this hub:
    /// the directory and its files become private to the hub's user (0700 and 0600), a second
    /// hub opening the same directory fails with [`HubError::DataDirInUse`] until this one is
    /// dropped (or its process ends), and the secret that authenticates the hub's cursors is
    /// kept there ([`SECRET_FILE`]), so cursors stay valid across restarts. The `mesh-hub`
    /// command serves through this.
    pub fn open(self) -> Result<Hub, HubError> {
        let claim = match &self.data_dir {
            Some(dir) => Some(datadir::DataDir::claim(dir)?),
            None => None,
        };
        let secret = claim.as_ref().map(datadir::DataDir::secret).transpose()?;
        let hub = self.build()?;
        if let Some(claim) = claim {
            claim.tighten()?;
            if let Some(secret) = secret {
                *hub.state
                    .0
                    .secret
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = secret;
            }
            *hub.state
                .0
                .data_dir
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(claim);
        }
        Ok(hub)
    }

    /// Opens the data directory, the database (or memory) and makes the hub. With
    /// PostgreSQL it blocks while it connects: call it from a blocking thread or before the
    /// runtime serves.
    pub fn build(self) -> Result<Hub, HubError> {
        let fresh: ReplicaId = format!("hub-{}", uuid::Uuid::new_v4().simple()).parse()?;
        if let Some(pg) = self.postgres {
            let db = PgDatabase::connect(pg)?;
            if self.migrate {
                let applied = db.migrate()?;
                tracing::info!(applied, "database migrated");
            }
            let replica_id = db.open_replica(fresh)?;
            let accounts = Accounts::over(Box::new(PgAccounts::new(db.clone())))?;
            let blobs = BlobStore::postgres(PgObjects::new(db.clone()));
            // Where the notification task starts announcing from: nothing committed once
            // requests are served can fall before it.
            let opened_at = db
                .store()?
                .moved_feeds()?
                .iter()
                .map(|m| m.seq)
                .max()
                .unwrap_or(0);
            tracing::info!(replica = %replica_id, "hub opened on PostgreSQL");
            let state = HubState::new(
                Backend::Postgres(db.clone()),
                opened_at,
                replica_id,
                blobs,
                Arc::new(accounts),
                self.config,
                None,
            );
            let _ = state
                .0
                .epoch
                .set(epoch::begin_postgres(&db, &state.0.process_id)?);
            return Ok(Hub { state });
        }
        let (accounts, store, blobs) = match &self.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let accounts = Accounts::open_with(&dir.join(ACCOUNTS_DB), self.durability)?;
                let store = open_store(&dir.join(REPLICA_DB), fresh, self.durability)?;
                let blobs = BlobStore::open(dir.join(BLOBS_DB), self.durability)?;
                (accounts, store, blobs)
            }
            None => (
                Accounts::in_memory()?,
                AnyStore::open(&StoreConfig::Memory, fresh)?,
                BlobStore::memory(),
            ),
        };
        let mut store = store;
        let epoch = epoch::begin(&mut store)?;
        let replica = Replica::new(store);
        let replica_id = replica.id();
        tracing::info!(replica = %replica_id, data = ?self.data_dir, "hub opened");
        // Reads take connections of their own and never wait for the writer.
        let readers = self
            .data_dir
            .as_ref()
            .map(|dir| state::ReaderPool::new(dir.join(REPLICA_DB), replica_id.clone()));
        let state = HubState::new(
            Backend::Local(Box::new(std::sync::Mutex::new(replica))),
            0,
            replica_id,
            blobs,
            Arc::new(accounts),
            self.config,
            readers,
        );
        if let Some(e) = epoch {
            let _ = state.0.epoch.set(e);
        }
        Ok(Hub { state })
    }
}

fn open_store(path: &Path, fresh: ReplicaId, durability: Durability) -> Result<AnyStore, HubError> {
    AnyStore::open(&StoreConfig::SqliteWith(path.to_owned(), durability), fresh)
        .map_err(|e| HubError::Store(e.to_string()))
}

/// A hub: its replica, accounts and HTTP API. Cheap to clone (clones share one hub).
#[derive(Clone)]
pub struct Hub {
    state: HubState,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("replica", &self.state.0.replica_id)
            .finish()
    }
}

impl Hub {
    /// Starts building a hub.
    pub fn builder() -> HubBuilder {
        HubBuilder::default()
    }

    /// The accounts database: users, devices, tokens.
    pub fn accounts(&self) -> &Accounts {
        &self.state.0.accounts
    }

    /// The hub's blob store: every object uploaded, and the folders that claim them (for
    /// administration and tests; requests reach it through the API's role checks).
    pub fn blobs(&self) -> &BlobStore {
        &self.state.0.blobs
    }

    /// The id of the hub's replica (cursors issued by the hub belong to it).
    pub fn replica_id(&self) -> ReplicaId {
        self.state.0.replica_id.clone()
    }

    /// Revokes a device (and the devices it enrolled that were not confirmed): their tokens
    /// stop working and their open notification streams close now.
    pub fn revoke_device(&self, device: &mesh_core::id::DeviceId) -> Result<(), HubError> {
        let (_, revoked) = self.state.0.accounts.revoke_with_enrolled(device)?;
        for d in revoked {
            let _ = self.state.0.revoked.send(d);
        }
        Ok(())
    }

    /// Removes a user: every device revoked (open streams closed now), the id never reused.
    pub fn remove_user(&self, user: &mesh_core::id::UserId) -> Result<(), HubError> {
        for d in self.state.0.accounts.remove_user(user)? {
            let _ = self.state.0.revoked.send(d);
        }
        Ok(())
    }

    /// How many notification streams (SSE or long-poll) are open now.
    pub fn open_streams(&self) -> usize {
        self.state.presence().values().map(|p| p.streams).sum()
    }

    /// The HTTP API as an axum router (to serve it yourself, or to test it without sockets).
    pub fn router(&self) -> axum::Router {
        fanout::start(&self.state);
        housekeeping::start(&self.state);
        api::router(self.state.clone())
    }

    /// Ends every open notification stream; a server stops once its connections close.
    pub fn close_streams(&self) {
        self.state.0.shutdown.send_replace(true);
    }

    /// Serves the API on `listener` until `shutdown` completes, then closes the notification
    /// streams and waits for the requests in flight to finish. Connections are held to the
    /// [`ConnectionLimits`] of the hub's configuration.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), HubError> {
        self.serve_with(listener, None, shutdown).await
    }

    /// Like [`serve`](Self::serve), over TLS when `tls` is given.
    pub async fn serve_with(
        self,
        listener: tokio::net::TcpListener,
        tls: Option<TlsConfig>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), HubError> {
        let addr = listener.local_addr()?;
        tracing::info!(%addr, tls = tls.is_some(), "serving");
        // Changes made from now on are not covered by an end recorded by an earlier stop.
        epoch::serving(&self.state).await?;
        let state = self.state.clone();
        let shared = server::listener::Shared {
            app: self.router(),
            limits: self.state.0.config.connections.clone(),
            max_body: self.state.0.config.max_body,
            tls: tls.map(|t| t.acceptor),
            observer: self.state.0.observer.clone(),
        };
        server::listener::serve(listener, shared, async move {
            shutdown.await;
            tracing::info!("shutting down");
            state.0.shutdown.send_replace(true);
        })
        .await?;
        // The shutdown was announced: the housekeeping's round in progress, if any, ends.
        housekeeping::stopped(&self.state).await;
        // Last-seen times of this run, kept for the next.
        housekeeping::flush_now(&self.state).await;
        // Every request has finished: the epoch ends here, cleanly.
        epoch::stopped(&self.state).await?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM. The signal handlers are installed when this is
/// called (inside a Tokio runtime), so a signal that arrives before the future is first polled
/// is not lost.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let int = signal(SignalKind::interrupt()).ok();
        let term = signal(SignalKind::terminate()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(int) => {}
                _ = wait(term) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
