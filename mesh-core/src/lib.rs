//! # mesh-core
//!
//! The pure heart of [mesh](https://example.invalid/mesh): everything about *what* syncs and
//! *how replicas converge*, with no I/O at all. No sockets, files, clocks, randomness or async
//! runtime live here: times and ids are arguments, storage is a trait, and the sync protocol is
//! a state machine whose messages some other crate carries.
//!
//! | module | holds |
//! |---|---|
//! | [`id`], [`time`], [`content`] | typed ids, whole-second UTC timestamps, canonical JSON |
//! | [`blob`] | content-defined chunks, BLAKE3 addresses, manifests, packs |
//! | [`model`] | the resource model: entries, feeds, devices, folders, members and roles, mappings, news |
//! | [`feedsync`] | the FeedSync 1.0.1 engine: create, update, delete, merge, resolve, compaction |
//! | [`atom`] | Atom feeds and entries with FeedSync `sx:` metadata, read and written |
//! | [`store`] | the transactional [`store::Store`] trait and an in-memory store |
//! | [`replica`] | a replica: writes and merges that feed a per-replica change log |
//! | [`sync`] | the sans-I/O sync protocol between two replicas, and the guard that serves it |
//! | [`trust`] | device keys and certificates, signed versions, verification |
//! | [`conformance`] | the runner for FeedSync conformance vectors |
//!
//! Layers above: `mesh-client` adds async I/O, the SQLite store and transports; `mesh-hub`
//! serves replicas over HTTP; `mesh-ffi` exposes the client to C.
//!
//! ## A two-replica conflict in a few lines
//!
//! ```
//! use mesh_core::feedsync::{create, merge, update, MergeOutcome, Stamp};
//! use mesh_core::time::Timestamp;
//!
//! let t0 = Timestamp::from_unix(1_200_000_000).unwrap();
//! let ep1 = Stamp::new("EP1".parse().unwrap(), t0);
//! let ep2 = Stamp::new("EP2".parse().unwrap(), t0.plus_secs(1));
//! let item = create("todo.1".parse().unwrap(), &ep1, "Buy groceries");
//! let mine = update(&item, &ep1, "Buy groceries and rolls", false).unwrap();
//! let theirs = update(&item, &ep2, "Buy groceries - DONE", false).unwrap();
//! let merged = merge(Some(&mine), theirs).unwrap();
//! assert_eq!(merged.outcome, MergeOutcome::Conflict);
//! ```

pub mod atom;
pub mod blob;
pub mod conformance;
pub mod content;
pub mod error;
pub mod feedsync;
pub mod id;
pub mod model;
pub mod replica;
pub mod store;
pub mod sync;
pub mod time;
pub mod trust;

pub use error::{CoreError, ErrorCode, Result};
