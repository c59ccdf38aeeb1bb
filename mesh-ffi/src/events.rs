//! Change events through callbacks: subscriptions, and the JSON form of an event.

use std::cell::Cell;
use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ::mesh_client::{ChangeKind, ChangeSource, Event, MappingEvent, TransferDirection};
use futures::StreamExt;
use mesh_core::id::{FeedName, FolderId};
use mesh_core::model::Scope;
use serde_json::json;

use crate::args::{handle_arg, opt_str_arg, Out};
use crate::client::mesh_client;
use crate::error::{guard, guard_void, mesh_error, mesh_status, to_c_string, Error};

/// Called with each event (JSON, borrowed for the call) and the `user_data` given at
/// registration. Runs on one of the client's runtime threads, one call at a time per
/// subscription.
pub type mesh_event_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, event_json: *const c_char)>;

/// Called once with `user_data` when a subscription is freed, after its last callback.
pub type mesh_finalizer = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

/// The C side's `user_data`: opaque to us, handed back to its callbacks.
struct UserData(*mut c_void);

// SAFETY: the registration contract (README, header) requires `user_data` to be usable from
// the runtime's threads; this crate never dereferences it.
unsafe impl Send for UserData {}
// SAFETY: as above; it is only copied and passed back.
unsafe impl Sync for UserData {}

/// What a subscription's delivery task and its handle share.
pub(crate) struct SubShared {
    cancelled: AtomicBool,
    /// Held while the callback runs, so that `_free` can wait for a running call to return.
    gate: Mutex<()>,
    callback: unsafe extern "C" fn(*mut c_void, *const c_char),
    finalizer: mesh_finalizer,
    user_data: UserData,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

thread_local! {
    /// The subscription whose callback this thread is running, if any.
    static IN_CALLBACK: Cell<*const SubShared> = const { Cell::new(std::ptr::null()) };
}

impl SubShared {
    /// Stops delivery: no callback starts after this (one that is running may finish).
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }

    fn deliver(&self, event: &Event) {
        let json = to_c_string(event_json(event));
        let _gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        if self.cancelled.load(Ordering::Acquire) {
            return;
        }
        IN_CALLBACK.with(|c| c.set(self as *const _));
        // SAFETY: the callback and `user_data` were registered together by the C side, which
        // promises the callback may be called with them from the runtime's threads; the JSON
        // outlives the call.
        unsafe { (self.callback)(self.user_data.0, json.as_ptr()) };
        IN_CALLBACK.with(|c| c.set(std::ptr::null()));
    }
}

/// A registered callback. `mesh_subscription_free` cancels it.
pub struct mesh_subscription {
    shared: Arc<SubShared>,
}

/// Registers `callback` for the client's change events: every event when `folder` is NULL;
/// the events of one folder's application feeds when `feed` is NULL; else of one feed. The
/// subscription handle goes to `*out`; `mesh_subscription_free` cancels it and then calls
/// `finalizer(user_data)` (when not NULL) exactly once. Delivery stops when the client is
/// closed.
///
/// The callback runs on the client's runtime threads, never on the caller's, one call at a
/// time per subscription; `user_data` must be usable there. It must return quickly, and must
/// not call `mesh_client_free` on its client; any other call is allowed.
///
/// Thread-safety: may be called from any thread, concurrently, including from a callback.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_subscribe(
    client: *const mesh_client,
    folder: *const c_char,
    feed: *const c_char,
    callback: mesh_event_callback,
    user_data: *mut c_void,
    finalizer: mesh_finalizer,
    out: *mut *mut mesh_subscription,
    error: *mut *mut mesh_error,
) -> mesh_status {
    guard(error, || {
        let c = handle_arg(client, "client")?;
        c.check_open()?;
        let folder: Option<FolderId> =
            opt_str_arg(folder, "folder")?.map(str::parse).transpose()?;
        let feed: Option<FeedName> = opt_str_arg(feed, "feed")?.map(str::parse).transpose()?;
        let callback = callback.ok_or_else(|| Error::null("callback"))?;
        if folder.is_none() && feed.is_some() {
            return Err(Error::new(
                mesh_status::MESH_STATUS_INVALID_INPUT,
                "a feed filter needs a folder",
            ));
        }
        let out = Out::new(out, "out")?;
        let mut stream = match &folder {
            None => c.client.events(),
            Some(f) => c.client.subscribe(f, feed.as_ref()),
        };
        let shared = Arc::new(SubShared {
            cancelled: AtomicBool::new(false),
            gate: Mutex::new(()),
            callback,
            finalizer,
            user_data: UserData(user_data),
            task: Mutex::new(None),
        });
        let s = shared.clone();
        let task = c.runtime().spawn(async move {
            while let Some(event) = stream.next().await {
                if s.cancelled.load(Ordering::Acquire) {
                    break;
                }
                s.deliver(&event);
            }
        });
        *shared.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
        {
            let mut subs = c.subs.lock().unwrap_or_else(|p| p.into_inner());
            subs.retain(|s| !s.cancelled.load(Ordering::Acquire));
            subs.push(shared.clone());
        }
        // A close that raced with this registration must not leave it delivering.
        if c.check_open().is_err() {
            shared.cancel();
        }
        out.write(Box::into_raw(Box::new(mesh_subscription { shared })));
        Ok(())
    })
}

/// Cancels and frees a subscription. Once it returns, the callback is not running and will not
/// be called again — except when called from inside that very callback, which then finishes
/// normally. Then the finalizer, if any, is called once with `user_data`, on this thread.
/// Valid before or after the client is closed or freed. `mesh_subscription_free(NULL)` does
/// nothing.
///
/// Thread-safety: any thread, including the subscription's own callback.
#[no_mangle]
pub unsafe extern "C" fn mesh_subscription_free(subscription: *mut mesh_subscription) {
    guard_void(|| {
        if subscription.is_null() {
            return;
        }
        // SAFETY: a non-NULL subscription came from `Box::into_raw` in `mesh_client_subscribe`
        // and, by contract, is freed once.
        let sub = unsafe { Box::from_raw(subscription) };
        let shared = &sub.shared;
        shared.cancel();
        let inside = IN_CALLBACK.with(|c| std::ptr::eq(c.get(), Arc::as_ptr(shared)));
        if !inside {
            // Wait for a running callback to return.
            drop(shared.gate.lock().unwrap_or_else(|p| p.into_inner()));
        }
        if let Some(fin) = shared.finalizer {
            // SAFETY: the finalizer and `user_data` were registered together; this is the one
            // call the contract promises, after the last callback.
            unsafe { fin(shared.user_data.0) };
        }
    });
}

fn kind_name(k: ChangeKind) -> &'static str {
    match k {
        ChangeKind::Added => "added",
        ChangeKind::Updated => "updated",
        ChangeKind::Deleted => "deleted",
        ChangeKind::Conflict => "conflict",
        ChangeKind::Resolved => "resolved",
    }
}

fn feed_fields(feed: &mesh_core::model::FeedKey) -> serde_json::Value {
    match &feed.scope {
        Scope::Folder(f) => json!({ "folder": f, "feed": feed.name }),
        Scope::Mesh(u) => json!({ "mesh": u, "feed": feed.name }),
    }
}

fn merge(mut a: serde_json::Value, b: serde_json::Value) -> serde_json::Value {
    if let (Some(a), serde_json::Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// The JSON form of an event (see the README).
pub(crate) fn event_json(e: &Event) -> String {
    let v = match e {
        Event::EntryChanged {
            feed,
            id,
            kind,
            source,
        } => merge(
            json!({
                "type": "entry_changed",
                "id": id,
                "kind": kind_name(*kind),
                "source": match source {
                    ChangeSource::Local => "local".to_owned(),
                    ChangeSource::Remote(r) => format!("remote:{r}"),
                },
            }),
            feed_fields(feed),
        ),
        Event::SyncProgress {
            remote,
            sent,
            received,
            pending,
            done,
        } => json!({
            "type": "sync_progress", "remote": remote, "sent": sent, "received": received,
            "pending": pending, "done": done,
        }),
        Event::Rejected {
            remote,
            feed,
            id,
            reason,
            kind,
        } => merge(
            json!({
                "type": "rejected", "remote": remote, "id": id, "reason": reason,
                "error_kind": kind.as_str(), "status": crate::error::status_of(*kind) as i32,
            }),
            feed_fields(feed),
        ),
        Event::Refused {
            remote,
            feed,
            id,
            reason,
            kind,
        } => merge(
            json!({
                "type": "refused", "remote": remote, "id": id, "reason": reason,
                "error_kind": kind.as_str(), "status": crate::error::status_of(*kind) as i32,
            }),
            feed_fields(feed),
        ),
        Event::SyncError {
            remote,
            error,
            retrying,
        } => {
            json!({
                "type": "sync_error", "remote": remote, "error": error.message,
                "error_kind": error.kind.as_str(),
                "status": crate::error::status_of(error.kind) as i32,
                "retrying": retrying,
            })
        }
        Event::Online { remote } => json!({ "type": "online", "remote": remote }),
        Event::PeerConnected { user, device, addr } => json!({
            "type": "peer_connected", "user": user, "device": device, "addr": addr.to_string(),
        }),
        Event::PeerLeft { user, device, addr } => json!({
            "type": "peer_left", "user": user, "device": device, "addr": addr.to_string(),
        }),
        Event::PeerDiscovered { user, device, addr } => json!({
            "type": "peer_discovered", "user": user, "device": device, "addr": addr.to_string(),
        }),
        Event::PeerLost { user, device, addr } => json!({
            "type": "peer_lost", "user": user, "device": device, "addr": addr.to_string(),
        }),
        Event::DeviceRevoked { user, device, at } => json!({
            "type": "device_revoked", "user": user, "device": device, "at": at.to_string(),
        }),
        Event::RemoteReset {
            remote,
            previous,
            now,
            feeds,
        } => json!({
            "type": "remote_reset", "remote": remote, "previous": previous, "now": now,
            "feeds": feeds,
        }),
        Event::Lagged { missed } => json!({ "type": "lagged", "missed": missed }),
        Event::Status { status } => merge(
            json!({ "type": "status" }),
            crate::status::remote_status_json(status),
        ),
        Event::Offline { remote } => json!({ "type": "offline", "remote": remote }),
        Event::Transfer {
            remote,
            folder,
            direction,
            done_bytes,
            total_bytes,
        } => json!({
            "type": "transfer", "remote": remote, "folder": folder,
            "direction": match direction {
                TransferDirection::Upload => "upload",
                TransferDirection::Download => "download",
            },
            "done_bytes": done_bytes, "total_bytes": total_bytes,
        }),
        Event::Mapping { folder, event } => {
            let detail = match event {
                MappingEvent::Scanned { paths, published } => {
                    json!({ "kind": "scanned", "paths": paths, "published": published })
                }
                MappingEvent::Applied { path, deleted } => {
                    json!({ "kind": "applied", "path": path, "deleted": deleted })
                }
                MappingEvent::ConflictCopy { path, copy } => {
                    json!({ "kind": "conflict_copy", "path": path, "copy": copy })
                }
                MappingEvent::Refused { path, reason } => {
                    json!({ "kind": "refused", "path": path, "reason": reason })
                }
                MappingEvent::Skipped { path, reason } => {
                    json!({ "kind": "skipped", "path": path, "reason": reason })
                }
                MappingEvent::Error { error } => json!({ "kind": "error", "error": error }),
                MappingEvent::Unreadable { path, error } => {
                    json!({ "kind": "unreadable", "path": path, "error": error })
                }
                MappingEvent::Resumed => json!({ "kind": "resumed" }),
                _ => json!({ "kind": "other" }),
            };
            merge(json!({ "type": "mapping", "folder": folder }), detail)
        }
        Event::MappingPaused { folder, reason } => json!({
            "type": "mapping_paused", "folder": folder, "reason": reason.kind(),
            "detail": reason.to_string(),
        }),
        _ => json!({ "type": "other" }),
    };
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_and_reset_events_have_their_own_types() {
        let addr: std::net::SocketAddr = "127.0.0.1:7300".parse().unwrap();
        let v: serde_json::Value = serde_json::from_str(&event_json(&Event::PeerConnected {
            user: "ann".parse().unwrap(),
            device: "ann-phone".parse().unwrap(),
            addr,
        }))
        .unwrap();
        assert_eq!(v["type"], "peer_connected");
        assert_eq!(v["device"], "ann-phone");
        assert_eq!(v["addr"], "127.0.0.1:7300");
        let v: serde_json::Value = serde_json::from_str(&event_json(&Event::PeerLeft {
            user: "ann".parse().unwrap(),
            device: "ann-phone".parse().unwrap(),
            addr,
        }))
        .unwrap();
        assert_eq!(v["type"], "peer_left");
        let v: serde_json::Value = serde_json::from_str(&event_json(&Event::RemoteReset {
            remote: "hub".parse().unwrap(),
            previous: "hub-1@a".into(),
            now: "hub-1@b".into(),
            feeds: 3,
        }))
        .unwrap();
        assert_eq!(
            (v["type"].as_str(), v["feeds"].as_u64()),
            (Some("remote_reset"), Some(3))
        );
        let v: serde_json::Value = serde_json::from_str(&event_json(&Event::Rejected {
            remote: "peer".parse().unwrap(),
            feed: mesh_core::model::FeedKey::folder("f".parse().unwrap(), "notes".parse().unwrap()),
            id: "n1".parse().unwrap(),
            reason: "not the signer's to write".into(),
            kind: ::mesh_client::ErrorKind::PermissionDenied,
        }))
        .unwrap();
        assert_eq!(
            (
                v["type"].as_str(),
                v["error_kind"].as_str(),
                v["id"].as_str()
            ),
            (Some("rejected"), Some("forbidden"), Some("n1"))
        );
    }
}
