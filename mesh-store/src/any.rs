//! A store chosen at run time: [`StoreConfig`] names one, [`AnyStore`] holds it.

use std::borrow::Cow;
use std::path::PathBuf;

use mesh_core::id::{EntryId, FolderId, RemoteId, ReplicaId, UserId};
use mesh_core::model::{Entry, FeedKey, Scope};
use mesh_core::store::{
    ChangePage, Cursor, EncodedPage, FeedHead, FeedMoved, Incoming, MemoryStore, Store, StoreTxn,
    SyncState,
};
use mesh_core::Result as CoreResult;

use crate::error::Result;
use crate::sqlite::{Durability, SqliteStore};

/// Which store to open.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreConfig {
    /// Everything in memory; gone when the client is dropped.
    #[default]
    Memory,
    /// A SQLite database file (created if missing), with full durability. Beside it a
    /// client keeps `<file>.blobs` (the [`BlobStore`](crate::BlobStore) of folders of files)
    /// and `<file>.lock` (held while a client has the store open: a second client gets
    /// [`StoreError::Locked`](crate::StoreError::Locked)).
    Sqlite(PathBuf),
    /// A SQLite database file with a chosen durability.
    SqliteWith(PathBuf, Durability),
}

/// One of the store implementations.
#[derive(Debug)]
pub enum AnyStore {
    /// In memory.
    Memory(MemoryStore),
    /// In a SQLite file.
    Sqlite(SqliteStore),
    /// In a PostgreSQL database (a hub's; made from a
    /// [`PgDatabase`](crate::postgres::PgDatabase), not from a [`StoreConfig`]).
    #[cfg(feature = "postgres")]
    Postgres(crate::postgres::PgStore),
}

impl AnyStore {
    /// Opens the configured store; `replica` is the id a new store takes.
    pub fn open(config: &StoreConfig, replica: ReplicaId) -> Result<Self> {
        match config {
            StoreConfig::Memory => Ok(AnyStore::Memory(MemoryStore::new(replica))),
            StoreConfig::Sqlite(path) => Ok(AnyStore::Sqlite(SqliteStore::open(path, replica)?)),
            StoreConfig::SqliteWith(path, durability) => Ok(AnyStore::Sqlite(
                SqliteStore::open_with(path, replica, *durability)?,
            )),
        }
    }

    /// [`SqliteStore::keep_file_locked`] for a store in a SQLite file; nothing for the others.
    pub fn keep_file_locked(&mut self) -> Result<()> {
        match self {
            AnyStore::Sqlite(s) => s.keep_file_locked(),
            _ => Ok(()),
        }
    }
}

/// A transaction on a [`AnyStore`].
pub enum AnyTxn<'a> {
    /// In memory.
    Memory(<MemoryStore as Store>::Txn<'a>),
    /// In a SQLite file.
    Sqlite(<SqliteStore as Store>::Txn<'a>),
    /// In a PostgreSQL database.
    #[cfg(feature = "postgres")]
    Postgres(<crate::postgres::PgStore as Store>::Txn<'a>),
}

macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Memory($s) => $e,
            AnyStore::Sqlite($s) => $e,
            #[cfg(feature = "postgres")]
            AnyStore::Postgres($s) => $e,
        }
    };
}

impl Store for AnyStore {
    type Txn<'a> = AnyTxn<'a>;

    fn replica_id(&self) -> ReplicaId {
        each!(self, s => s.replica_id())
    }
    fn feeds(&self) -> CoreResult<Vec<FeedHead>> {
        each!(self, s => s.feeds())
    }
    fn purge_feed(&mut self, feed: &FeedKey) -> CoreResult<u64> {
        each!(self, s => s.purge_feed(feed))
    }
    fn moved_feeds(&self) -> CoreResult<Vec<FeedMoved>> {
        each!(self, s => s.moved_feeds())
    }
    fn feed_moved(&self, feed: &FeedKey) -> CoreResult<Option<FeedMoved>> {
        each!(self, s => s.feed_moved(feed))
    }
    fn last_moved(&self) -> CoreResult<u64> {
        each!(self, s => s.last_moved())
    }
    fn feed_head(&self, feed: &FeedKey) -> CoreResult<Option<FeedHead>> {
        each!(self, s => s.feed_head(feed))
    }
    fn scope_feeds(&self, scope: &Scope) -> CoreResult<Vec<FeedHead>> {
        each!(self, s => s.scope_feeds(scope))
    }
    fn member_folders(&self, user: &UserId) -> CoreResult<Vec<FolderId>> {
        each!(self, s => s.member_folders(user))
    }
    fn get(&self, feed: &FeedKey, id: &EntryId) -> CoreResult<Option<Entry>> {
        each!(self, s => s.get(feed, id))
    }
    fn get_many(&self, feed: &FeedKey, ids: &[EntryId]) -> CoreResult<Vec<Option<Entry>>> {
        each!(self, s => s.get_many(feed, ids))
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
    fn encoded_changes_since(
        &self,
        feed: &FeedKey,
        since: Cursor,
        limit: usize,
        skip_origin: Option<&ReplicaId>,
    ) -> CoreResult<EncodedPage> {
        each!(self, s => s.encoded_changes_since(feed, since, limit, skip_origin))
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
    fn begin(&mut self) -> CoreResult<AnyTxn<'_>> {
        Ok(match self {
            AnyStore::Memory(s) => AnyTxn::Memory(s.begin()?),
            AnyStore::Sqlite(s) => AnyTxn::Sqlite(s.begin()?),
            #[cfg(feature = "postgres")]
            AnyStore::Postgres(s) => AnyTxn::Postgres(s.begin()?),
        })
    }
    fn begin_relaxed(&mut self) -> CoreResult<AnyTxn<'_>> {
        Ok(match self {
            AnyStore::Memory(s) => AnyTxn::Memory(s.begin_relaxed()?),
            AnyStore::Sqlite(s) => AnyTxn::Sqlite(s.begin_relaxed()?),
            #[cfg(feature = "postgres")]
            AnyStore::Postgres(s) => AnyTxn::Postgres(s.begin_relaxed()?),
        })
    }
}

macro_rules! each_txn {
    ($self:expr, $t:ident => $e:expr) => {
        match $self {
            AnyTxn::Memory($t) => $e,
            AnyTxn::Sqlite($t) => $e,
            #[cfg(feature = "postgres")]
            AnyTxn::Postgres($t) => $e,
        }
    };
}

impl StoreTxn for AnyTxn<'_> {
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
    fn put_incoming(
        &mut self,
        feed: &FeedKey,
        entry: Incoming,
        origin: Option<&ReplicaId>,
    ) -> CoreResult<Cursor> {
        each_txn!(self, t => t.put_incoming(feed, entry, origin))
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
