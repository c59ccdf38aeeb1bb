//! The client's error type.

use mesh_core::{CoreError, ErrorCode};

/// A small, stable classification of [`ClientError`]s, for matching and for the C ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input was invalid (ids, JSON, sync metadata…).
    InvalidInput,
    /// The thing asked for does not exist.
    NotFound,
    /// It exists already.
    AlreadyExists,
    /// The member's role does not allow it.
    PermissionDenied,
    /// The local store (or a mapped directory's file system) failed, is corrupt, or belongs to
    /// something else.
    Store,
    /// A remote could not be reached or answered wrongly.
    Transport,
    /// The client was closed.
    Closed,
    /// A bug or an unexpected state.
    Internal,
}

/// Everything that can go wrong in `mesh-client`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// An error from the core (validation, merge, protocol…).
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The local store failed.
    #[error("store: {0}")]
    Store(String),
    /// The store file is corrupt, or is not a mesh store.
    #[error("store file {path}: {reason}")]
    CorruptStore {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store was written by a newer version of mesh.
    #[error("store schema version {found} is newer than this build supports ({supported})")]
    StoreTooNew {
        /// Version in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// A remote could not be reached or refused the request.
    #[error("sync with {remote}: {error}")]
    Transport {
        /// The remote.
        remote: String,
        /// What went wrong.
        error: crate::transport::TransportError,
    },
    /// A file of a mapped directory (or one given to a blob call) could not be read or
    /// written.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        error: String,
    },
    /// A folder's mapping is paused: its directory is missing, unreadable or not the one it
    /// was mapped onto (see [`PauseReason`](crate::sync::events::PauseReason)).
    #[error("mapping of {folder} paused: {reason}")]
    MappingPaused {
        /// The folder.
        folder: String,
        /// Why.
        reason: crate::sync::events::PauseReason,
    },
    /// The client's configuration is incomplete or inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// An unexpected internal failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ClientError {
    /// The stable kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Core(e) => match e.code() {
                ErrorCode::NotFound => ErrorKind::NotFound,
                ErrorCode::AlreadyExists => ErrorKind::AlreadyExists,
                ErrorCode::PermissionDenied => ErrorKind::PermissionDenied,
                ErrorCode::Store => ErrorKind::Store,
                ErrorCode::Protocol => ErrorKind::Transport,
                _ => ErrorKind::InvalidInput,
            },
            ClientError::Store(_)
            | ClientError::CorruptStore { .. }
            | ClientError::StoreTooNew { .. }
            | ClientError::Io { .. }
            | ClientError::MappingPaused { .. } => ErrorKind::Store,
            ClientError::Transport { .. } => ErrorKind::Transport,
            ClientError::Config(_) => ErrorKind::InvalidInput,
            ClientError::Closed => ErrorKind::Closed,
            ClientError::Internal(_) => ErrorKind::Internal,
        }
    }
}

impl From<rusqlite::Error> for ClientError {
    fn from(e: rusqlite::Error) -> Self {
        ClientError::Store(e.to_string())
    }
}

/// Shorthand for `Result<T, ClientError>`.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
