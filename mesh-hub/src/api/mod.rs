//! The HTTP API: routing, authentication, content negotiation, error bodies, OPTIONS.

mod blob_stream;
mod blobs;
mod encoding;
mod me;
mod news;
mod notify;
mod rest;
mod routes;
mod sync;
mod trust;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request};
use axum::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::accounts::Principal;
use crate::error::{code_for_status, ApiError};
use crate::ops::Caller;
use crate::state::HubState;

pub(crate) use notify::{encode_cursor, CursorKey};

/// The authenticated caller: the user and device of a valid bearer token.
pub(crate) struct Auth {
    pub principal: Principal,
    pub token: String,
}

impl FromRequestParts<HubState> for Auth {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &HubState) -> Result<Self, Response> {
        let token =
            bearer(&parts.headers).ok_or_else(|| ApiError::unauthorized().into_response())?;
        let t = token.clone();
        let principal = state
            .accounts(move |a| a.authenticate(&t))
            .await
            .and_then(|r| r.map_err(ApiError::from))
            .map_err(IntoResponse::into_response)?
            .ok_or_else(|| ApiError::unauthorized().into_response())?;
        if let Some(caller) = parts.extensions.get::<Caller>() {
            caller.set(&principal.user, &principal.device);
        }
        if let Err(wait) = state.0.limiter.check(&principal.user, &principal.device) {
            state.0.observer.metrics.rate_limited.inc();
            return Err(rate_limited(wait));
        }
        state.seen(&principal.device);
        Ok(Auth { principal, token })
    }
}

/// The `429` of a request over its device's or user's rate.
fn rate_limited(wait: std::time::Duration) -> Response {
    let secs = crate::server::retry_after_secs(wait);
    let mut r = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests from this device or user; retry in {secs} s"),
    )
    .into_response();
    r.headers_mut()
        .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// The route template a path falls under (`/mesh/folders/{folder}`), for metrics; `other` for
/// paths the API does not have.
pub(crate) fn route_of(path: &str) -> &'static str {
    match path {
        "/health" => "/health",
        "/ready" => "/ready",
        "/metrics" => "/metrics",
        _ => routes::template(path).unwrap_or("other"),
    }
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

/// Whether the client asked for Atom rather than JSON.
pub(crate) fn wants_atom(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let atom = accept.find("application/atom+xml");
    let json = accept.find("application/json");
    match (atom, json) {
        (Some(a), Some(j)) => a < j,
        (Some(_), None) => true,
        _ => false,
    }
}

/// The request body's media type, lower-cased, without parameters.
pub(crate) fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

pub(crate) fn is_atom_body(headers: &HeaderMap) -> bool {
    matches!(
        content_type(headers).as_str(),
        "application/atom+xml" | "application/xml" | "text/xml"
    )
}

/// Parses a JSON request body.
pub(crate) fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    let ct = content_type(headers);
    if !(ct.is_empty() || ct == "application/json" || ct.ends_with("+json")) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("expected application/json, got {ct:?}"),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))
}

/// A JSON answer.
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body,
        )
            .into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// An Atom answer.
pub(crate) fn atom(status: StatusCode, xml: String) -> Response {
    (
        status,
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("application/atom+xml; charset=utf-8"),
        )],
        xml,
    )
        .into_response()
}

/// Runs CPU-heavy work (parsing or writing large bodies) off the async threads.
pub(crate) async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)
}

/// The hub's router over `state`.
pub(crate) fn router(state: HubState) -> Router {
    let limit = state.0.config.max_body;
    Router::new()
        .route("/health", get(crate::ops::health::live))
        .route("/ready", get(crate::ops::health::ready))
        .route("/metrics", get(crate::ops::health::metrics))
        .route("/mesh", get(rest::mesh))
        .route("/mesh/me", get(me::me))
        .route("/mesh/sync", post(sync::sync))
        .route("/mesh/notifications", get(notify::notifications))
        .route("/mesh/devices", get(rest::devices).post(rest::add_device))
        .route("/mesh/devices/codes", post(rest::mint_code))
        .route("/mesh/devices/{device}/confirm", post(rest::confirm_device))
        .route(
            "/mesh/devices/{device}",
            get(rest::device).delete(rest::revoke_device),
        )
        .route("/mesh/devices/{device}/certificate", post(trust::enroll))
        .route("/mesh/invitations", get(rest::invitations))
        .route(
            "/mesh/invitations/{folder}/{answer}",
            post(rest::answer_invitation),
        )
        .route("/mesh/news", get(rest::mesh_news))
        .route(
            "/mesh/folders",
            get(rest::folders).post(rest::create_folder),
        )
        .route(
            "/mesh/folders/{folder}",
            get(rest::folder).delete(rest::delete_folder),
        )
        .route(
            "/mesh/folders/{folder}/members",
            get(rest::members).post(rest::invite),
        )
        .route(
            "/mesh/folders/{folder}/members/{user}",
            get(rest::member)
                .put(rest::set_role)
                .delete(rest::remove_member),
        )
        .route("/mesh/folders/{folder}/mappings", get(rest::mappings))
        .route(
            "/mesh/folders/{folder}/mappings/{device}",
            get(rest::mapping)
                .put(rest::put_mapping)
                .delete(rest::delete_mapping),
        )
        .route("/mesh/folders/{folder}/news", get(rest::folder_news))
        .route(
            "/mesh/folders/{folder}/feeds",
            get(rest::feeds).post(rest::create_feed),
        )
        .route("/mesh/folders/{folder}/feeds/{feed}", get(rest::feed))
        .route(
            "/mesh/folders/{folder}/feeds/{feed}/entries",
            get(rest::entries).post(rest::post_entries),
        )
        .route(
            "/mesh/folders/{folder}/feeds/{feed}/entries/{entry}",
            get(rest::entry)
                .put(rest::put_entry)
                .delete(rest::delete_entry),
        )
        .route(
            "/mesh/folders/{folder}/feeds/{feed}/changes",
            get(rest::changes),
        )
        .route("/mesh/folders/{folder}/objects", post(blobs::upload))
        .route(
            "/mesh/folders/{folder}/objects/missing",
            post(blobs::missing),
        )
        .route("/mesh/folders/{folder}/objects/fetch", post(blobs::fetch))
        .route(
            "/mesh/folders/{folder}/objects/{object}",
            get(blobs::object),
        )
        .route("/mesh/folders/{folder}/blobs/{manifest}", get(blobs::blob))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(options_and_errors))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn fallback() -> ApiError {
    ApiError::not_found("resource")
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed here; OPTIONS lists what is"),
    )
}

/// Answers OPTIONS from the route table, and gives every error answer a JSON body
/// `{code, message}` (the HTTP stack's own rejections included).
async fn options_and_errors(req: Request, next: Next) -> Response {
    if req.method() == Method::OPTIONS {
        return routes::options(req.uri().path());
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status();
    tracing::debug!(%method, %path, status = status.as_u16(), elapsed = ?started.elapsed(), "request");
    if status.as_u16() < 400 {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let message = String::from_utf8_lossy(&text).trim().to_owned();
    let message = if message.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        message
    };
    let err = ApiError::new(status, code_for_status(status), message);
    let mut out = err.into_response();
    // Keep headers such as Allow and Retry-After.
    for (k, v) in parts.headers.iter() {
        if k != CONTENT_TYPE && k != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// A response with an empty body.
pub(crate) fn no_content() -> Response {
    (StatusCode::NO_CONTENT, Body::empty()).into_response()
}

/// Shorthand used by handlers: the body as bytes.
pub(crate) type RawBody = Bytes;

/// A JSON answer from already serialized bytes.
pub(crate) fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response()
}
