//! Local stores: SQLite (the embedded default) and memory.

// pub mod sqlite;
// pub use sqlite::SqliteStore;
