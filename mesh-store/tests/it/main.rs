//! Integration tests of the storage layer: each store implementation against the core's
//! conformance suite, plus what only a real engine can show (reopen, corrupt files, kill -9).

mod accounts;
mod objects;
#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;
