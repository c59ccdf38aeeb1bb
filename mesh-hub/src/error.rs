//! Errors: [`HubError`] for the library's own operations, [`ApiError`] for HTTP answers.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mesh_core::model::odata::QueryError;
use mesh_core::{CoreError, ErrorCode};
use serde::Serialize;

/// What can go wrong opening, administering or running a hub.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// A core error (an invalid id, say).
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The accounts database failed.
    #[error("accounts database: {0}")]
    Accounts(String),
    /// The replica store failed to open.
    #[error("store: {0}")]
    Store(String),
    /// Binding or serving failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Something named does not exist (a user, a device).
    #[error("{0} not found")]
    NotFound(String),
    /// Something to create exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// Not allowed (say, a device confirming itself).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The TLS certificate or key could not be used.
    #[error("tls: {0}")]
    Tls(String),
    /// Another hub serves this data directory (it holds the directory's lock).
    #[error("data directory {0} is in use by another hub")]
    DataDirInUse(String),
    /// The configuration (file, environment or flags) is invalid.
    #[error("configuration: {0}")]
    Config(String),
}

impl From<rusqlite::Error> for HubError {
    fn from(e: rusqlite::Error) -> Self {
        HubError::Accounts(e.to_string())
    }
}

impl From<mesh_store::StoreError> for HubError {
    fn from(e: mesh_store::StoreError) -> Self {
        match e {
            mesh_store::StoreError::Core(e) => HubError::Core(e),
            other => HubError::Store(other.to_string()),
        }
    }
}

/// An HTTP error answer: a status and the JSON body `{"code": …, "message": …}`.
///
/// Every 4xx and 5xx the hub sends has this body; `code` is stable (the core's
/// [`ErrorCode`] names plus the hub's own, listed in `docs/protocol.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code.
    pub code: &'static str,
    /// A readable explanation.
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    /// An error answer.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
    }

    /// 404 `not_found`.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{} not found", what.into()),
        )
    }

    /// 412 `precondition_failed`.
    pub fn precondition_failed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            message,
        )
    }

    /// 500 `internal`; the detail goes to the log, not to the client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the hub failed; see its log",
        )
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        serde_json::to_string(&Body {
            code: self.code,
            message: &self.message,
        })
        .unwrap_or_else(|_| r#"{"code":"internal","message":""}"#.into())
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        let code = e.code();
        let status = match code {
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::AlreadyExists => StatusCode::CONFLICT,
            ErrorCode::PermissionDenied
            | ErrorCode::InvalidSignature
            | ErrorCode::UntrustedCertificate
            | ErrorCode::Revoked => StatusCode::FORBIDDEN,
            ErrorCode::LimitExceeded => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Store => return ApiError::internal(e),
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, code.as_str(), e.to_string())
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.to_string())
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        match e {
            HubError::Core(c) => c.into(),
            HubError::NotFound(what) => ApiError::not_found(what),
            HubError::AlreadyExists(what) => ApiError::new(
                StatusCode::CONFLICT,
                "already_exists",
                format!("{what} already exists"),
            ),
            HubError::Forbidden(why) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", why),
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, self.body()).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }
}

/// The code the hub uses for a bare HTTP status (rejections produced by the HTTP stack).
pub(crate) fn code_for_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "permission_denied",
        404 => "not_found",
        405 => "method_not_allowed",
        406 => "not_acceptable",
        408 => "timeout",
        409 => "already_exists",
        411 => "length_required",
        412 => "precondition_failed",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        416 => "range_not_satisfiable",
        422 => "bad_request",
        429 => "rate_limited",
        431 => "headers_too_large",
        s if s >= 500 => "internal",
        _ => "bad_request",
    }
}
