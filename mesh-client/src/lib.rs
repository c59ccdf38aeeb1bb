//! # mesh-client
//!
//! The SDK a Rust application embeds. It writes locally and returns at once, and keeps every
//! replica converging in the background.
//!
//! * [`MeshClient`] — the handle: devices, folders, feeds, entries, members, mappings, news,
//!   conflicts, events. Every write is checked against the folder's member roles first.
//! * [`store`] — the local store: SQLite (the embedded default) or memory.
//! * [`transport`] — how sync messages reach a remote: in-process, simulated network, HTTP.
//! * [`sync`] — the background engine (one task per remote) and its [`Event`]s.
//! * [`mapping`] — folders of files: a folder kept equal to a directory on this device, its
//!   content moved as content-defined chunks (blobs) that only travel where they are missing.
//!
//! `mesh-client` moves `mesh-core`'s protocol messages and persists their state; it never
//! re-implements merge rules or message formats.

mod client;
pub mod error;
pub mod mapping;
mod shared;
pub mod store;
pub mod sync;
pub mod transport;

pub use client::{Clock, MeshClient, MeshClientBuilder};
pub use error::{ClientError, ErrorKind};
pub use sync::{
    ChangeKind, ChangeSource, Event, MappingEvent, PauseReason, SyncOptions, TransferDirection,
};
