//! The FeedSync 1.0.1 engine.
//!
//! Per-item sync metadata and the rules every endpoint follows so that any number of replicas,
//! exchanging items in any order, converge:
//!
//! * [`create`], [`update`], [`delete`] and [`resolve`] are the local operations;
//! * [`HistoryItem::covers`] and [`SyncMeta::knows`] decide subsumption;
//! * [`SyncMeta::winner_cmp`] orders versions;
//! * [`merge`] combines a local and an incoming item and says what happened
//!   ([`MergeOutcome`]);
//! * [`compact_history`] shortens histories without changing any merge result.
//!
//! Content is generic: the engine never looks at it. mesh's entries use
//! [`EntryData`](crate::model::EntryData); the conformance vectors use raw JSON.

mod history;
mod item;
pub mod limits;
mod merge;
mod ops;

pub use history::{compact_history, history_covers, HistoryItem};
pub use item::{Item, SyncMeta, Version};
pub use merge::{merge, MergeOutcome, Merged};
pub use ops::{canonicalize, create, delete, resolve, resolve_with_version, update, Stamp};
