//! The storage layer's error type.

use std::path::PathBuf;

/// Everything that can go wrong in `mesh-store`. Each variant has a stable [`code`](Self::code).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database engine failed (I/O, a full disk, a lock held too long…).
    #[error("{context}: {source}")]
    Sqlite {
        /// Which store and what it was doing.
        context: String,
        /// The engine's error.
        #[source]
        source: rusqlite::Error,
    },
    /// PostgreSQL failed (connection, query, transaction).
    #[cfg(feature = "postgres")]
    #[error("{context}: {}", crate::postgres::describe(source))]
    Postgres {
        /// Which store and what it was doing.
        context: String,
        /// The client's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// What the store was handed is invalid (a blob that does not match its hash, a malformed
    /// manifest, an unknown object…): the core's error, with its code.
    #[error(transparent)]
    Core(#[from] mesh_core::CoreError),
    /// The storage failed in some other way.
    #[error("store: {0}")]
    Backend(String),
    /// The store file is corrupt, or is not a mesh store.
    #[error("store file {path}: {reason}")]
    Corrupt {
        /// The file (or database).
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store was written by a newer version of mesh.
    #[error("store schema version {found} is newer than this build supports ({supported})")]
    TooNew {
        /// Version in the store.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// The store is open in another client (in this process or another one).
    #[error("store {}: open in another client", path.display())]
    Locked {
        /// The store file.
        path: PathBuf,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A configuration names something this build cannot open (say, a PostgreSQL URL in a
    /// build without the `postgres` feature, or a malformed URL).
    #[error("store configuration: {0}")]
    Config(String),
}

impl StoreError {
    /// The stable code of this error (`"store"`, `"corrupt_store"`, `"store_too_new"`,
    /// `"locked"`, `"io"`, `"config"`, or the core error's code).
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Sqlite { .. } | StoreError::Backend(_) => "store",
            #[cfg(feature = "postgres")]
            StoreError::Postgres { .. } => "store",
            StoreError::Corrupt { .. } => "corrupt_store",
            StoreError::TooNew { .. } => "store_too_new",
            StoreError::Locked { .. } => "locked",
            StoreError::Io { .. } => "io",
            StoreError::Config(_) => "config",
            StoreError::Core(e) => e.code().as_str(),
        }
    }

    /// An engine error with what the store was doing.
    pub fn sqlite(context: impl Into<String>, source: rusqlite::Error) -> Self {
        StoreError::Sqlite {
            context: context.into(),
            source,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::sqlite("sqlite", e)
    }
}

impl From<StoreError> for mesh_core::CoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Core(e) => e,
            other => mesh_core::CoreError::Store(other.to_string()),
        }
    }
}

/// Shorthand for `Result<T, StoreError>`.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
