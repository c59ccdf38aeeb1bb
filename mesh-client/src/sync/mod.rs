//! Background sync: the engine (one task per remote) and the events it reports.

mod dirty;
pub(crate) mod engine;
pub mod events;
mod notified;
mod options;
pub(crate) mod status;
pub(crate) mod stream;
pub(crate) mod transfer;

pub use events::{ChangeKind, ChangeSource, Event, MappingEvent, PauseReason, TransferDirection};
pub use options::SyncOptions;
pub use status::RemoteStatus;
