//! `GET /health` (the process answers), `GET /ready` (it can serve: not shutting down, its
//! accounts and replica answer in time) and `GET /metrics` (Prometheus text).

use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::{bearer, json};
use crate::error::ApiError;
use crate::state::HubState;

/// How long `/ready` waits for the stores before saying the hub is not ready.
const READY_WITHIN: Duration = Duration::from_secs(2);

/// `GET /health`: 200 while the process serves.
pub(crate) async fn live() -> Response {
    json(StatusCode::OK, &json!({"status": "ok"}))
}

/// `GET /ready`: 200 when the hub can serve requests now, 503 otherwise.
pub(crate) async fn ready(State(state): State<HubState>) -> Response {
    let not_ready = |why: &str| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", why).into_response()
    };
    if *state.0.shutdown.borrow() {
        return not_ready("the hub is shutting down");
    }
    let probe = async {
        state.accounts(|a| a.users().map(|_| ())).await??;
        state.run(|r| r.id()).await?;
        Ok::<_, ApiError>(())
    };
    match tokio::time::timeout(READY_WITHIN, probe).await {
        Ok(Ok(())) => json(StatusCode::OK, &json!({"status": "ready"})),
        Ok(Err(e)) => not_ready(&format!("a store failed: {}", e.message)),
        Err(_) => not_ready("the stores did not answer in time"),
    }
}

/// `GET /metrics`: the metrics in Prometheus' text format; with a metrics token configured,
/// only for a request bearing it.
pub(crate) async fn metrics(State(state): State<HubState>, headers: HeaderMap) -> Response {
    if let Some(want) = &state.0.config.metrics_token {
        let given = bearer(&headers).unwrap_or_default();
        if !same_secret(given.as_bytes(), want.as_bytes()) {
            return ApiError::unauthorized().into_response();
        }
    }
    let m = state.0.observer.metrics.clone();
    m.streams_open.set(
        state
            .presence()
            .values()
            .map(|p| p.streams as i64)
            .sum::<i64>(),
    );
    if let Ok(Ok((_, bytes))) = state.blobs(|b| b.usage()).await {
        m.store_bytes
            .get_or_create(&crate::ops::metrics::StoreLabel { store: "blobs" })
            .set(bytes as i64);
    }
    // The stores' files, when the hub claimed its data directory (database, WAL and
    // shared-memory files together).
    let dir = state
        .0
        .data_dir
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|d| d.path().to_owned());
    if let Some(dir) = dir {
        for (store, name) in [
            ("replica_file", crate::REPLICA_DB),
            ("blobs_file", crate::BLOBS_DB),
            ("accounts_file", crate::ACCOUNTS_DB),
        ] {
            let size: u64 = ["", "-wal", "-shm"]
                .iter()
                .filter_map(|ext| std::fs::metadata(dir.join(format!("{name}{ext}"))).ok())
                .map(|md| md.len())
                .sum();
            m.store_bytes
                .get_or_create(&crate::ops::metrics::StoreLabel { store })
                .set(size as i64);
        }
    }
    let text = m.encode();
    (
        StatusCode::OK,
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// Compares two secrets in time independent of where they differ (their digests are compared).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (x, y) = (Sha256::digest(a), Sha256::digest(b));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}
