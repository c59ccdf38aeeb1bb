//! # mesh-client
//!
//! The SDK a Rust application embeds. It writes locally and returns at once, and keeps every
//! replica converging in the background: stores (SQLite by default, memory as an option),
//! transports (in-process, HTTP…) and the sync engine that moves `mesh-core`'s protocol
//! messages between them.

pub mod error;
pub mod store;

pub use error::{ClientError, ErrorKind};
