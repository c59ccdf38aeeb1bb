//! The client's error type.

use mesh_core::{CoreError, ErrorCode};

/// A small, stable classification of [`ClientError`]s, for matching, for the C ABI's statuses
/// and for Python's exception classes. Each kind has a stable name ([`ErrorKind::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input was invalid (ids, JSON, sync metadata…).
    InvalidInput,
    /// The thing asked for does not exist.
    NotFound,
    /// It exists already.
    AlreadyExists,
    /// Forbidden: the member's role (or the hub) does not allow it.
    PermissionDenied,
    /// The local store (or a mapped directory's file system) failed, is corrupt, or belongs to
    /// something else.
    Store,
    /// A remote failed in some other way (a 5xx, an unsupported request).
    Transport,
    /// The client was closed.
    Closed,
    /// A bug or an unexpected state.
    Internal,
    /// A remote cannot be reached (no route, refused, timed out, partitioned): try later.
    Offline,
    /// A remote refused the credentials (a wrong or expired token, an unknown device
    /// certificate): the user has to sign in again.
    Unauthorized,
    /// The device or its token was revoked: the device has to be enrolled again.
    Revoked,
    /// A remote answered something that is not the protocol, or sent data that failed
    /// verification (a bad signature, say).
    Protocol,
    /// A size or count limit of the remote was exceeded.
    Quota,
    /// The remote asks to slow down.
    RateLimited,
    /// The entry changed since the version the write expected, or the version a resolution
    /// names is no longer there.
    Conflict,
    /// The store is open in another client (in this process or another one).
    Locked,
    /// The hub says the token belongs to another user or device than the client's
    /// configuration.
    Mismatch,
}

impl ErrorKind {
    /// The stable snake_case name of this kind (`"offline"`, `"revoked"`…).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::PermissionDenied => "forbidden",
            ErrorKind::Store => "storage",
            ErrorKind::Transport => "transport",
            ErrorKind::Closed => "closed",
            ErrorKind::Internal => "internal",
            ErrorKind::Offline => "offline",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Revoked => "revoked",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Quota => "quota",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Locked => "locked",
            ErrorKind::Mismatch => "mismatch",
        }
    }

    /// The kind a stable error code stands for: a core [`ErrorCode`] name or a code of the
    /// hub's JSON error bodies (`docs/protocol.md`). `None` for a code this build does not
    /// know. Codes are matched as strings so that codes added to the core later (and sent by
    /// newer hubs) map without a change here.
    pub fn of_code(code: &str) -> Option<ErrorKind> {
        Some(match code {
            "invalid_id" | "invalid_time" | "invalid_json" | "invalid_xml" | "invalid_sync"
            | "duplicate_id" | "invalid_blob" | "invalid_path" | "bad_request"
            | "invalid_query" => ErrorKind::InvalidInput,
            "not_found" => ErrorKind::NotFound,
            "already_exists" => ErrorKind::AlreadyExists,
            "permission_denied" | "forbidden" => ErrorKind::PermissionDenied,
            "store" => ErrorKind::Store,
            "protocol" | "invalid_signature" => ErrorKind::Protocol,
            "unauthorized" | "untrusted_certificate" | "expired_certificate" => {
                ErrorKind::Unauthorized
            }
            "revoked" => ErrorKind::Revoked,
            "limit_exceeded" | "payload_too_large" | "quota_exceeded" => ErrorKind::Quota,
            "rate_limited" => ErrorKind::RateLimited,
            "precondition_failed" | "conflict" => ErrorKind::Conflict,
            "timeout" => ErrorKind::Offline,
            "internal" => ErrorKind::Transport,
            _ => return None,
        })
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that can go wrong in `mesh-client`.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// The entry is not at the version the write expected ([`MeshClient::put_if`]), or the
    /// version a resolution keeps is no longer there.
    ///
    /// [`MeshClient::put_if`]: crate::MeshClient::put_if
    #[error("conflict: {0}")]
    Conflict(String),
    /// The store is open in another client (in this process or another one).
    #[error("store {}: open in another client", path.display())]
    Locked {
        /// The store file.
        path: std::path::PathBuf,
    },
    /// A remote says the client's credentials belong to another user or device than the
    /// client is configured for.
    #[error("remote {remote} says the token is for {found}, but this client is {expected}")]
    Mismatch {
        /// The remote.
        remote: String,
        /// The user (and device) of the configuration.
        expected: String,
        /// The user (and device) the remote named.
        found: String,
    },
    /// An unexpected internal failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ClientError {
    /// The stable kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Core(e) => core_kind(e),
            ClientError::Store(_)
            | ClientError::CorruptStore { .. }
            | ClientError::StoreTooNew { .. }
            | ClientError::Io { .. }
            | ClientError::MappingPaused { .. } => ErrorKind::Store,
            ClientError::Transport { error, .. } => error.kind(),
            ClientError::Config(_) => ErrorKind::InvalidInput,
            ClientError::Closed => ErrorKind::Closed,
            ClientError::Locked { .. } => ErrorKind::Locked,
            ClientError::Conflict(_) => ErrorKind::Conflict,
            ClientError::Mismatch { .. } => ErrorKind::Mismatch,
            ClientError::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// The kind of a core error, by its stable code.
pub(crate) fn core_kind(e: &CoreError) -> ErrorKind {
    match e.code() {
        // The core's protocol errors are about messages that arrived from a remote.
        ErrorCode::Protocol => ErrorKind::Protocol,
        code => ErrorKind::of_code(code.as_str()).unwrap_or(ErrorKind::InvalidInput),
    }
}

/// A sync failure as [`Event::SyncError`](crate::Event::SyncError) carries it: a stable kind
/// to match on (prompt a sign-in on [`ErrorKind::Unauthorized`], show "offline" on
/// [`ErrorKind::Offline`]…) and a readable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SyncError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// A readable explanation (not stable: do not match on it).
    pub message: String,
}

impl From<&ClientError> for SyncError {
    fn from(e: &ClientError) -> Self {
        SyncError {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl From<mesh_store::StoreError> for ClientError {
    fn from(e: mesh_store::StoreError) -> Self {
        use mesh_store::StoreError as E;
        match e {
            E::Corrupt { path, reason } => ClientError::CorruptStore { path, reason },
            E::TooNew { found, supported } => ClientError::StoreTooNew { found, supported },
            E::Locked { path } => ClientError::Locked { path },
            E::Io { path, source } => ClientError::Io {
                path,
                error: source.to_string(),
            },
            E::Config(m) => ClientError::Config(m),
            E::Core(e) => ClientError::Core(e),
            other => ClientError::Store(other.to_string()),
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
