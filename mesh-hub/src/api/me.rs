//! `GET /mesh/me`: who the bearer token stands for, so that a client can check that it was
//! given its own user's and device's token (a client configured as `bob` with Ann's token
//! refuses to sync).

use axum::http::StatusCode;
use axum::response::Response;
use mesh_core::id::{DeviceId, UserId};
use serde::Serialize;

use crate::api::{json, Auth};

#[derive(Serialize)]
struct Me {
    user: UserId,
    device: DeviceId,
}

pub(crate) async fn me(auth: Auth) -> Response {
    json(
        StatusCode::OK,
        &Me {
            user: auth.principal.user,
            device: auth.principal.device,
        },
    )
}
