//! The sync protocol: a sans-I/O [`SyncSession`] on the syncing side, [`respond`] on the
//! answering side, and the [`Request`]/[`Response`] messages between them.
//!
//! A session asks the peer for its feeds and heads, then for each feed pulls the peer's
//! changes since the stored cursor (merging each page with its new cursor in one transaction)
//! and pushes local changes since the last acknowledged position. Entries that came verbatim
//! from the peer are never sent back to it. Because every merge is idempotent, a message lost,
//! duplicated or replayed after a crash does no harm: the worst case is sending a page again.

pub mod guard;
mod message;
mod responder;
mod session;

pub use guard::respond_as;
pub use message::{
    EncodedChanges, Epoch, Prepared, PushResult, RawEntry, Request, Response, MAX_CONTINUED_EPOCHS,
    MAX_EPOCH_ID, MAX_ONLY, MAX_PAGE, MAX_PAGE_BYTES,
};
pub use responder::{pull_encoded, respond};
pub use session::{
    FeedFilter, KnownRemote, PushPlace, SessionConfig, SessionEvent, Step, SyncReport, SyncSession,
};
