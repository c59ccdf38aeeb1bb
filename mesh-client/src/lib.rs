//! # mesh-client
//!
//! The SDK a Rust application embeds. It writes locally and returns at once, and keeps every
//! replica converging in the background.
//!
//! Start with `use mesh_client::prelude::*;`: it carries everything the client's methods take
//! and return, the core's ids, drafts and queries included.
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
pub mod peer;
pub mod prelude;
mod shared;
pub mod store;
pub mod sync;
pub mod transport;

pub use client::{BatchItem, BlobUsage, Clock, MeshClient, MeshClientBuilder, MAX_REMOTES};
pub use error::{ClientError, ErrorKind, SyncError};
/// The core crate, for the rare type the [`prelude`] does not carry.
pub use mesh_core as core;

/// The README's code blocks, compiled as doc tests against this crate (the one an
/// application depends on) so that they cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
pub use sync::{
    ChangeKind, ChangeSource, Event, MappingEvent, PauseReason, RemoteStatus, SyncOptions,
    TransferDirection,
};
