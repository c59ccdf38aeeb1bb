//! The core's error type.
//!
//! Every fallible function of `mesh-core` returns [`CoreError`]. Each variant has a stable
//! [`ErrorCode`] (see [`CoreError::code`]) that outer layers (the client, the hub's JSON error
//! bodies, the C ABI's status enum) map from in exactly one place.

use std::fmt;

/// A stable, machine-readable classification of a [`CoreError`].
///
/// The string form (see [`ErrorCode::as_str`]) is part of the wire protocol and never changes
/// meaning once published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// An identifier was empty, too long or held forbidden characters.
    InvalidId,
    /// A timestamp could not be parsed or is out of range.
    InvalidTime,
    /// A JSON document was malformed or did not have the expected shape.
    InvalidJson,
    /// An XML (Atom/FeedSync) document was malformed or did not have the expected shape.
    InvalidXml,
    /// FeedSync metadata broke one of the specification's rules.
    InvalidSync,
    /// The same sync id appeared twice where ids must be unique.
    DuplicateId,
    /// An entry, feed or other resource does not exist.
    NotFound,
    /// An entry with this id already exists.
    AlreadyExists,
    /// The acting member's role does not allow the operation.
    PermissionDenied,
    /// A sync protocol message arrived that the session did not expect.
    Protocol,
    /// The storage backend failed.
    Store,
    /// A blob object, manifest, pack or hash was malformed or did not match its hash.
    InvalidBlob,
    /// A file path from an entry is unsafe or malformed.
    InvalidPath,
    /// A signature is missing, malformed, or does not verify.
    InvalidSignature,
    /// A device certificate is missing, expired, or not signed by the trusted authority.
    UntrustedCertificate,
    /// The device was revoked.
    Revoked,
    /// A value is beyond one of the limits that keep items bounded (conflicts, history
    /// length, `updates`).
    LimitExceeded,
}

impl ErrorCode {
    /// The stable snake_case name of this code, as used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidId => "invalid_id",
            ErrorCode::InvalidTime => "invalid_time",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidXml => "invalid_xml",
            ErrorCode::InvalidSync => "invalid_sync",
            ErrorCode::DuplicateId => "duplicate_id",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::Protocol => "protocol",
            ErrorCode::Store => "store",
            ErrorCode::InvalidBlob => "invalid_blob",
            ErrorCode::InvalidPath => "invalid_path",
            ErrorCode::InvalidSignature => "invalid_signature",
            ErrorCode::UntrustedCertificate => "untrusted_certificate",
            ErrorCode::Revoked => "revoked",
            ErrorCode::LimitExceeded => "limit_exceeded",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where in an XML document a problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XmlPosition {
    /// Byte offset from the start of the document.
    pub offset: u64,
    /// 1-based line number.
    pub line: u32,
    /// 1-based column (in bytes) within the line.
    pub column: u32,
}

impl fmt::Display for XmlPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {} (byte {})",
            self.line, self.column, self.offset
        )
    }
}

/// Everything that can go wrong in `mesh-core`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// An identifier was rejected.
    #[error("invalid {kind}: {reason}")]
    InvalidId {
        /// Which kind of id (e.g. `"device id"`).
        kind: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// A timestamp was rejected.
    #[error("invalid timestamp {value:?}: {reason}")]
    InvalidTime {
        /// The offending text.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Malformed or mis-shaped JSON.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// Malformed or mis-shaped XML, with the position of the problem.
    #[error("invalid XML at {position}: {message}")]
    InvalidXml {
        /// Where the problem is.
        position: XmlPosition,
        /// What the problem is.
        message: String,
    },
    /// FeedSync metadata that breaks the specification.
    #[error("invalid sync metadata for item {id:?}: {reason}")]
    InvalidSync {
        /// The sync id of the offending item (may be empty when the id itself is missing).
        id: String,
        /// Which rule was broken.
        reason: String,
    },
    /// An id that must be unique appeared twice.
    #[error("duplicate id {id:?} in {context}")]
    DuplicateId {
        /// The repeated id.
        id: String,
        /// Where (e.g. the feed).
        context: String,
    },
    /// Something named does not exist.
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// What kind of thing (e.g. `"entry"`).
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// Creation of something that already exists.
    #[error("{kind} {id:?} already exists")]
    AlreadyExists {
        /// What kind of thing.
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// The role check refused the operation.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A sync message that does not fit the session's state.
    #[error("sync protocol error: {0}")]
    Protocol(String),
    /// The storage backend failed.
    #[error("store error: {0}")]
    Store(String),
    /// A malformed blob object, manifest, pack or hash, or an object that does not match its
    /// hash.
    #[error("invalid blob: {0}")]
    InvalidBlob(String),
    /// An unsafe or malformed file path.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The offending path (at most 200 characters of it).
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// A signature is missing, malformed, or does not verify.
    #[error("invalid signature: {0}")]
    InvalidSignature(String),
    /// A device certificate is missing, expired, or not signed by the trusted authority.
    #[error("untrusted certificate: {0}")]
    UntrustedCertificate(String),
    /// A version signed by a revoked device that the replica does not already hold.
    #[error("device {device:?} is revoked")]
    Revoked {
        /// The revoked device.
        device: String,
    },
    /// A limit on the shape of items was exceeded.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
}

impl CoreError {
    /// The stable classification of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            CoreError::InvalidId { .. } => ErrorCode::InvalidId,
            CoreError::InvalidTime { .. } => ErrorCode::InvalidTime,
            CoreError::InvalidJson(_) => ErrorCode::InvalidJson,
            CoreError::InvalidXml { .. } => ErrorCode::InvalidXml,
            CoreError::InvalidSync { .. } => ErrorCode::InvalidSync,
            CoreError::DuplicateId { .. } => ErrorCode::DuplicateId,
            CoreError::NotFound { .. } => ErrorCode::NotFound,
            CoreError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            CoreError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            CoreError::Protocol(_) => ErrorCode::Protocol,
            CoreError::Store(_) => ErrorCode::Store,
            CoreError::InvalidBlob(_) => ErrorCode::InvalidBlob,
            CoreError::InvalidPath { .. } => ErrorCode::InvalidPath,
            CoreError::InvalidSignature(_) => ErrorCode::InvalidSignature,
            CoreError::UntrustedCertificate(_) => ErrorCode::UntrustedCertificate,
            CoreError::Revoked { .. } => ErrorCode::Revoked,
            CoreError::LimitExceeded(_) => ErrorCode::LimitExceeded,
        }
    }

    pub(crate) fn invalid_sync(id: impl Into<String>, reason: impl Into<String>) -> Self {
        CoreError::InvalidSync {
            id: id.into(),
            reason: reason.into(),
        }
    }
}

impl From<serde_json::Error> for CoreError {
    fn from(e: serde_json::Error) -> Self {
        CoreError::InvalidJson(e.to_string())
    }
}

/// Shorthand for `Result<T, CoreError>`.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
