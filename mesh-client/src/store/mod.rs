//! Local stores: SQLite (the embedded default) and memory.
//!
//! [`ClientStore`] is the store a client (or an in-process hub) holds: one of the
//! implementations of the core [`Store`] trait, chosen at run time by [`StoreConfig`].
//!
//! [`SqliteStore`] keeps a replica in one SQLite file (WAL, `synchronous = FULL`, versioned
//! schema); the in-memory store is `mesh_core`'s [`MemoryStore`](mesh_core::store::MemoryStore).
//! Both pass `mesh_core`'s store conformance suite ([`mesh_core::store::suite`]).

pub mod blobs;
mod lock;
pub mod sqlite;
pub use blobs::BlobStore;
pub use lock::lock_path;
pub(crate) use lock::StoreLock;
pub use sqlite::{Durability, SqliteStore};

use std::borrow::Cow;
use std::path::PathBuf;

use mesh_core::id::{EntryId, RemoteId, ReplicaId};
use mesh_core::model::{Entry, FeedKey};
use mesh_core::store::{ChangePage, Cursor, FeedHead, MemoryStore, Store, StoreTxn, SyncState};
use mesh_core::Result as CoreResult;

use base64::Engine as _;
use mesh_core::trust::{Enrollment, SecretKey};

use crate::error::{ClientError, Result};

/// Which store a client opens.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreConfig {
    /// Everything in memory; gone when the client is dropped.
    #[default]
    Memory,
    /// A SQLite database file (created if missing), with full durability. Beside it the
    /// client keeps `<file>.blobs/` (the content of folders of files) and `<file>.lock` (held
    /// while a client has the store open: a second client gets [`ErrorKind::Locked`]).
    ///
    /// [`ErrorKind::Locked`]: crate::ErrorKind::Locked
    Sqlite(PathBuf),
    /// A SQLite database file with a chosen durability.
    SqliteWith(PathBuf, Durability),
}

/// One of the store implementations.
#[derive(Debug)]
pub enum ClientStore {
    /// In memory.
    Memory(MemoryStore),
    /// In a SQLite file.
    Sqlite(SqliteStore),
}

impl ClientStore {
    /// Opens the configured store; `replica` is the id a new store takes.
    pub fn open(config: &StoreConfig, replica: ReplicaId) -> Result<Self> {
        match config {
            StoreConfig::Memory => Ok(ClientStore::Memory(MemoryStore::new(replica))),
            StoreConfig::Sqlite(path) => Ok(ClientStore::Sqlite(SqliteStore::open(path, replica)?)),
            StoreConfig::SqliteWith(path, durability) => Ok(ClientStore::Sqlite(
                SqliteStore::open_with(path, replica, *durability)?,
            )),
        }
    }
}

impl ClientStore {
    /// This device's signing key: read from a SQLite store, or made from the operating
    /// system's random source and saved there on first use. A memory store makes a new key
    /// each time it is opened (its data does not outlive it either). The key never leaves the
    /// store: nothing sends it anywhere.
    pub fn device_key(&mut self) -> Result<SecretKey> {
        const KEY: &str = "device_key";
        let ClientStore::Sqlite(s) = self else {
            return fresh_key();
        };
        if let Some(text) = s.meta(KEY)? {
            let seed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(text.as_bytes())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| ClientError::CorruptStore {
                    path: s.location().to_owned(),
                    reason: "the device key is malformed".into(),
                })?;
            return Ok(SecretKey::from_seed(seed));
        }
        let key = fresh_key()?;
        s.set_meta(
            KEY,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.to_seed()),
        )?;
        Ok(key)
    }

    /// The enrollment this device holds with `remote` (its certificate and the pinned
    /// authority), if it was saved (SQLite stores only).
    pub fn enrollment(&self, remote: &RemoteId) -> Result<Option<Enrollment>> {
        let ClientStore::Sqlite(s) = self else {
            return Ok(None);
        };
        match s.meta(&format!("enrollment:{remote}"))? {
            None => Ok(None),
            Some(text) => {
                serde_json::from_str(&text)
                    .map(Some)
                    .map_err(|e| ClientError::CorruptStore {
                        path: s.location().to_owned(),
                        reason: format!("the enrollment with {remote} is malformed: {e}"),
                    })
            }
        }
    }

    /// Saves the enrollment with `remote` (a no-op for memory stores).
    pub fn set_enrollment(&mut self, remote: &RemoteId, e: &Enrollment) -> Result<()> {
        if let ClientStore::Sqlite(s) = self {
            let text =
                serde_json::to_string(e).map_err(|e| ClientError::Internal(e.to_string()))?;
            s.set_meta(&format!("enrollment:{remote}"), &text)?;
        }
        Ok(())
    }
}

/// A new signing key from the operating system's random source.
pub(crate) fn fresh_key() -> Result<SecretKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| ClientError::Internal(format!("no random source for a device key: {e}")))?;
    Ok(SecretKey::from_seed(seed))
}

/// A transaction on a [`ClientStore`].
pub enum ClientTxn<'a> {
    /// In memory.
    Memory(<MemoryStore as Store>::Txn<'a>),
    /// In a SQLite file.
    Sqlite(<SqliteStore as Store>::Txn<'a>),
}

macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            ClientStore::Memory($s) => $e,
            ClientStore::Sqlite($s) => $e,
        }
    };
}

impl Store for ClientStore {
    type Txn<'a> = ClientTxn<'a>;

    fn replica_id(&self) -> ReplicaId {
        each!(self, s => s.replica_id())
    }
    fn feeds(&self) -> CoreResult<Vec<FeedHead>> {
        each!(self, s => s.feeds())
    }
    fn head(&self, feed: &FeedKey) -> CoreResult<Cursor> {
        each!(self, s => s.head(feed))
    }
    fn get(&self, feed: &FeedKey, id: &EntryId) -> CoreResult<Option<Entry>> {
        each!(self, s => s.get(feed, id))
    }
    fn changes_since(
        &self,
        feed: &FeedKey,
        since: Cursor,
        limit: usize,
        skip_origin: Option<&ReplicaId>,
    ) -> CoreResult<ChangePage> {
        each!(self, s => s.changes_since(feed, since, limit, skip_origin))
    }
    fn list(
        &self,
        feed: &FeedKey,
        after: Option<&EntryId>,
        limit: usize,
    ) -> CoreResult<Vec<Entry>> {
        each!(self, s => s.list(feed, after, limit))
    }
    fn sync_state(&self, remote: &RemoteId, feed: &FeedKey) -> CoreResult<SyncState> {
        each!(self, s => s.sync_state(remote, feed))
    }
    fn begin(&mut self) -> CoreResult<ClientTxn<'_>> {
        Ok(match self {
            ClientStore::Memory(s) => ClientTxn::Memory(s.begin()?),
            ClientStore::Sqlite(s) => ClientTxn::Sqlite(s.begin()?),
        })
    }
}

macro_rules! each_txn {
    ($self:expr, $t:ident => $e:expr) => {
        match $self {
            ClientTxn::Memory($t) => $e,
            ClientTxn::Sqlite($t) => $e,
        }
    };
}

impl StoreTxn for ClientTxn<'_> {
    fn get(&mut self, feed: &FeedKey, id: &EntryId) -> CoreResult<Option<Cow<'_, Entry>>> {
        each_txn!(self, t => t.get(feed, id))
    }
    fn put(
        &mut self,
        feed: &FeedKey,
        entry: Entry,
        origin: Option<&ReplicaId>,
    ) -> CoreResult<Cursor> {
        each_txn!(self, t => t.put(feed, entry, origin))
    }
    fn set_sync_state(
        &mut self,
        remote: &RemoteId,
        feed: &FeedKey,
        state: &SyncState,
    ) -> CoreResult<()> {
        each_txn!(self, t => t.set_sync_state(remote, feed, state))
    }
    fn commit(self) -> CoreResult<()> {
        each_txn!(self, t => t.commit())
    }
}
