//! The PostgreSQL backend (feature `postgres`): a hub's replica, objects and accounts in one
//! PostgreSQL database, shared by any number of hub processes.
//!
//! [`PgDatabase`] is a connection pool (tokio-postgres under deadpool) bound to one database and
//! schema. It hands out [`PgStore`]s: each holds one pooled connection for as long as it lives,
//! and implements the core's synchronous [`Store`](mesh_core::store::Store) trait by running
//! each query on the tokio runtime it was made on. **Call a `PgStore` from a blocking thread**
//! (`tokio::task::spawn_blocking`), never from an async task: its methods wait for the
//! database.
//!
//! # Many processes, one database
//!
//! * **Positions and replica-wide numbers.** Each feed's change log counts its own positions
//!   (`mesh_entries.pos`, `mesh_feeds.head`), and every change also takes a replica-wide
//!   number (`mesh_feeds.seq` for a feed's latest), as in every store (`1, 2, 3…` without
//!   gaps). A write transaction locks the counter row (`mesh_replica.last_seq`,
//!   `SELECT … FOR UPDATE`) at its first write and holds it to its commit, so transactions
//!   that write take their numbers, and their feeds' positions, in commit order: a reader
//!   that has seen number `n` has seen everything numbered below `n`, whatever process wrote
//!   it (no late commit with a smaller number). The rest of a transaction's work (reads, merging,
//!   verification before it) runs in parallel across processes; its rows are sent in one
//!   batch at commit.
//! * **Scopes.** [`PgStore::lock_scope`] takes a session-level advisory lock on a name (a
//!   hub uses the folder's id) until the store is dropped: writers of one folder take turns
//!   across processes, so the membership a role check reads cannot change before the write
//!   commits.
//! * **Notifications.** A commit that changed feeds sends `NOTIFY mesh_changes` with each
//!   feed's replica-wide number, head and key (`<seq> <head> <key>`), delivered when (and
//!   only if) it commits, in commit order; [`PgListener`]
//!   turns them back into a stream in every process.
//!
//! # Schema
//!
//! Versioned migrations ([`MIGRATIONS`]) recorded in `mesh_migrations`; [`PgDatabase::migrate`]
//! applies the missing ones under an advisory lock (so hubs starting together take turns), and
//! a database migrated by a newer build is refused with
//! [`StoreError::TooNew`](crate::StoreError::TooNew).

mod accounts;
mod database;
mod listener;
mod migrations;
mod objects;
mod replica;

pub use accounts::PgAccounts;
pub use database::{PgConfig, PgDatabase};
pub use listener::{PgListener, PgNotice, CHANGES_CHANNEL};
pub use migrations::MIGRATIONS;
pub use objects::PgObjects;
pub use replica::{PgStore, PgTxn};

/// The channel a revocation is announced on (payload: the device id), so that every process
/// closes the device's open streams.
pub const REVOKED_CHANNEL: &str = "mesh_revoked";

/// A PostgreSQL error with the server's message, when the server sent one (the client's own
/// `Display` says only "db error").
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => e.to_string(),
    }
}
