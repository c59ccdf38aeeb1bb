//! Local stores: SQLite (the embedded default) and memory.
//!
//! [`SqliteStore`] keeps a replica in one SQLite file (WAL, `synchronous = FULL`, versioned
//! schema); the in-memory store is `mesh_core`'s [`MemoryStore`](mesh_core::store::MemoryStore).
//! Both pass `mesh_core`'s store conformance suite ([`mesh_core::store::suite`]).

pub mod sqlite;
pub use sqlite::SqliteStore;
