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

use crate::error::Result;

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
