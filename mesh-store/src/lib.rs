//! # mesh-store
//!
//! The storage layer of [mesh](https://example.invalid/mesh): the implementations of the core's
//! store traits, beside `mesh-core` and below both the device SDK (`mesh-client`) and the hub
//! (`mesh-hub`), which depend on it and never on each other.
//!
//! * [`SqliteStore`]: a replica in one SQLite file (the embedded default of devices and of a
//!   single hub), with versioned migrations, WAL and a chosen [`Durability`];
//! * [`BlobStore`]: the object store of blobs (chunks and manifests by content address, the
//!   folders that claim them) in memory or SQLite, plus a device's index of mapped directories;
//! * [`AnyStore`]: one of the replica stores, chosen at run time by [`StoreConfig`];
//! * [`accounts`]: a hub's users, devices, token hashes, certificates and keys
//!   ([`AccountStore`](accounts::AccountStore), in SQLite or PostgreSQL);
//! * [`StoreLock`]: one client per store file;
//! * with the `postgres` feature, [`postgres`]: a hub's replica in PostgreSQL, shared by
//!   any number of hub processes.
//!
//! Every replica store passes the core's conformance suite
//! ([`mesh_core::store::suite`]); this crate's tests run it against each implementation.
//!
//! ```
//! use mesh_core::store::Store;
//! use mesh_store::{AnyStore, StoreConfig};
//! let store = AnyStore::open(&StoreConfig::Memory, "laptop".parse().unwrap()).unwrap();
//! assert_eq!(store.replica_id().as_str(), "laptop");
//! ```

pub mod accounts;
mod any;
pub mod backup;
pub mod blobs;
mod error;
mod lock;
#[cfg(feature = "postgres")]
pub mod postgres;
mod rows;
pub mod sqlite;

pub use any::{AnyStore, AnyTxn, StoreConfig};
pub use blobs::BlobStore;
pub use error::{Result, StoreError};
pub use lock::{lock_path, StoreLock};
pub use sqlite::{Durability, SqliteStore};
