//! `mesh_client_status`: every remote's sync state, as JSON.

use std::ffi::c_char;
use std::time::UNIX_EPOCH;

use ::mesh_client::RemoteStatus;
use serde_json::json;

use crate::args::Out;
use crate::client::{mesh_client, with_client};
use crate::error::{mesh_error, mesh_status, status_of};

/// The JSON form of one remote's status (see the README).
pub(crate) fn remote_status_json(s: &RemoteStatus) -> serde_json::Value {
    json!({
        "remote": s.remote,
        "online": s.online,
        "last_sync_ms": s.last_sync.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64),
        "pending_up": s.pending_up,
        "pending_down": s.pending_down,
        "last_error": s.last_error.as_ref().map(|e| json!({
            "kind": e.kind.as_str(),
            "status": status_of(e.kind) as i32,
            "message": e.message,
        })),
    })
}

/// Every remote's sync state now, as a JSON array into `*status_json`: per remote `online`
/// (`null` before the first contact), `last_sync_ms` (Unix milliseconds or `null`),
/// `pending_up`, `pending_down` and `last_error` (`{kind, status, message}` or `null`). Each
/// change is also an event of type `status`.
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_status(
    client: *const mesh_client,
    status_json: *mut *mut c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let out = Out::new(status_json, "status_json")?;
        let all: Vec<serde_json::Value> =
            c.client.status().iter().map(remote_status_json).collect();
        out.write_json(&all)
    })
}
