//! Enrollment: a device has the hub's authority certify its public key.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mesh_core::id::DeviceId;
use mesh_core::trust::PublicKey;
use serde::Deserialize;

use crate::api::{json, json_body, Auth, RawBody};
use crate::error::ApiError;
use crate::state::HubState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollRequest {
    key: PublicKey,
}

/// `POST /mesh/devices/{device}/certificate` `{"key": "<base64url>"}`: certifies the key of
/// the token's own device and answers the certificate, the authority's key and the hub's
/// endpoint. A token enrolls only its own device, and a device keeps the first key it
/// enrolled.
pub(crate) async fn enroll(
    State(state): State<HubState>,
    auth: Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    let device: DeviceId = id.parse()?;
    if device != auth.principal.device {
        // Another device's certificate is not this token's business (nor its existence).
        return Err(ApiError::not_found(format!("device {device}")));
    }
    let req: EnrollRequest = json_body(&headers, &body)?;
    let validity = i64::try_from(state.0.config.certificate_validity.as_secs()).unwrap_or(i64::MAX);
    let principal = auth.principal.clone();
    let enrollment = state
        .accounts(move |a| a.enroll(&principal, req.key, validity))
        .await??;
    tracing::info!(user = %auth.principal.user, %device, "device enrolled");
    Ok(json(StatusCode::OK, &enrollment))
}
