//! The client handle: configuration, its runtime, and every client operation.

use std::ffi::c_char;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::mesh_client::store::StoreConfig;
use ::mesh_client::{Event, MeshClient, SyncOptions};
use futures::stream::BoxStream;
use mesh_core::id::{EntryId, FeedName, FolderId, RemoteId, UserId};
use mesh_core::model::{EntryDraft, FolderKind, Query, Role};
use mesh_core::replica::Resolution;
use serde::Deserialize;
use serde_json::json;

use crate::args::{handle_arg, id_arg, json_arg, opt_str_arg, str_arg, Out};
use crate::error::{guard, guard_void, mesh_error, mesh_status, Error, Result};
use crate::events::SubShared;
use crate::hub::mesh_hub;

/// A mesh client: a local replica, its remotes, background sync, and the runtime it all runs
/// on. Open with `mesh_client_open`, close with `mesh_client_close`, free with
/// `mesh_client_free`.
pub struct mesh_client {
    rt: tokio::runtime::Runtime,
    pub(crate) client: MeshClient,
    closed: AtomicBool,
    /// Set once on close: wakes pollers blocked in `mesh_client_poll_event`.
    closing: tokio::sync::watch::Sender<bool>,
    /// The poll queue: every event since the client was opened.
    poll: tokio::sync::Mutex<BoxStream<'static, Event>>,
    /// Live subscriptions, cancelled on close.
    pub(crate) subs: Mutex<Vec<Arc<SubShared>>>,
    /// Peer listeners (`mesh_client_listen_peers`), closed on close.
    listeners: Mutex<Vec<::mesh_client::peer::PeerListener>>,
    /// Peer discoveries (`mesh_client_discover_peers`), stopped on close.
    discoveries: Mutex<Vec<::mesh_client::peer::PeerDiscovery>>,
}

impl mesh_client {
    /// Fails with `MESH_STATUS_CLOSED` once the client was closed.
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::new(
                mesh_status::MESH_STATUS_CLOSED,
                "the client is closed",
            ))
        } else {
            Ok(())
        }
    }

    /// Runs a future on the client's runtime and waits for it on the calling thread. From a
    /// runtime thread (a callback), the worker is handed off first so that the runtime keeps
    /// going.
    pub(crate) fn run<F: Future>(&self, f: F) -> F::Output {
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::task::block_in_place(|| self.rt.handle().block_on(f))
        } else {
            self.rt.block_on(f)
        }
    }

    /// Keeps a peer listener until the client is closed (at most 16 at once).
    pub(crate) fn keep_listener(&self, listener: ::mesh_client::peer::PeerListener) -> Result<()> {
        let mut all = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() >= MAX_LISTENERS {
            return Err(Error::new(
                mesh_status::MESH_STATUS_INVALID_INPUT,
                format!("a client listens on at most {MAX_LISTENERS} addresses"),
            ));
        }
        all.push(listener);
        Ok(())
    }

    /// Keeps a peer discovery until the client is closed (at most 4 at once).
    pub(crate) fn keep_discovery(
        &self,
        discovery: ::mesh_client::peer::PeerDiscovery,
    ) -> Result<()> {
        let mut all = self.discoveries.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() >= MAX_DISCOVERIES {
            return Err(Error::new(
                mesh_status::MESH_STATUS_INVALID_INPUT,
                format!("a client runs at most {MAX_DISCOVERIES} discoveries"),
            ));
        }
        all.push(discovery);
        Ok(())
    }

    pub(crate) fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }
}

// ---- configuration ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    user: String,
    device: String,
    #[serde(default)]
    device_name: Option<String>,
    #[serde(default)]
    device_kind: Option<String>,
    #[serde(default)]
    store_path: Option<String>,
    #[serde(default)]
    remotes: Vec<RemoteConfig>,
    #[serde(default)]
    sync: Option<SyncConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteConfig {
    name: String,
    #[serde(default)]
    in_process: bool,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncConfig {
    #[serde(default)]
    auto: Option<bool>,
    #[serde(default)]
    poll_interval_ms: Option<u64>,
    #[serde(default)]
    page_size: Option<u32>,
}

/// A remote given by URL: a `mesh-hub` reached through the HTTP transport, with the device
/// token the hub minted for this device.
fn http_remote(
    builder: ::mesh_client::MeshClientBuilder,
    name: &RemoteId,
    url: &str,
    token: Option<&str>,
) -> Result<::mesh_client::MeshClientBuilder> {
    let token = token.ok_or_else(|| {
        Error::new(
            mesh_status::MESH_STATUS_INVALID_INPUT,
            format!("remote {name}: a hub URL needs a \"token\""),
        )
    })?;
    let transport = ::mesh_client::transport::HttpTransport::new(url, token).map_err(|e| {
        Error::new(
            mesh_status::MESH_STATUS_INVALID_INPUT,
            format!("remote {name}: {e}"),
        )
    })?;
    Ok(builder.remote(name.clone(), transport))
}

fn open(config: &str, hub: Option<&mesh_hub>) -> Result<mesh_client> {
    let config: Config =
        serde_json::from_str(config).map_err(|e| Error::json("config_json", &e))?;
    let user: UserId = config.user.parse()?;
    let mut builder = MeshClient::builder()
        .user(user.clone())
        .device(config.device.parse()?);
    if config.device_name.is_some() || config.device_kind.is_some() {
        builder = builder.device_name(
            config.device_name.unwrap_or_else(|| config.device.clone()),
            config.device_kind.unwrap_or_else(|| "device".into()),
        );
    }
    if let Some(path) = config.store_path {
        builder = builder.store(StoreConfig::Sqlite(path.into()));
    }
    for r in &config.remotes {
        let name: RemoteId = r.name.parse()?;
        builder = match (r.in_process, &r.url) {
            (true, None) => {
                let hub =
                    hub.ok_or_else(|| Error::null("hub (the config names an in-process remote)"))?;
                builder.remote(name, hub.hub.connect(user.clone()))
            }
            (false, Some(url)) => http_remote(builder, &name, url, r.token.as_deref())?,
            _ => {
                return Err(Error::new(
                    mesh_status::MESH_STATUS_INVALID_JSON,
                    format!("remote {name}: give either \"in_process\": true or a \"url\""),
                ))
            }
        };
    }
    if let Some(s) = config.sync {
        let mut o = SyncOptions::default();
        if let Some(auto) = s.auto {
            o.auto = auto;
        }
        if let Some(ms) = s.poll_interval_ms {
            o.poll_interval = Duration::from_millis(ms.max(1));
        }
        if let Some(n) = s.page_size {
            o.page_size = n.max(1);
        }
        builder = builder.sync_options(o);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("mesh-runtime")
        .enable_all()
        .build()
        .map_err(|e| Error::new(mesh_status::MESH_STATUS_INTERNAL, format!("runtime: {e}")))?;
    let client = rt.block_on(builder.build())?;
    let poll = tokio::sync::Mutex::new(client.events());
    Ok(mesh_client {
        rt,
        client,
        closed: AtomicBool::new(false),
        closing: tokio::sync::watch::Sender::new(false),
        poll,
        subs: Mutex::new(Vec::new()),
        listeners: Mutex::new(Vec::new()),
        discoveries: Mutex::new(Vec::new()),
    })
}

/// The most addresses one client listens for peers on.
const MAX_LISTENERS: usize = 16;

/// The most peer discoveries one client runs.
const MAX_DISCOVERIES: usize = 4;

/// Opens a client from a JSON configuration (see the README: `user`, `device`,
/// `device_name`, `device_kind`, `store_path`, `remotes`, `sync`). `hub` may be NULL unless a
/// remote is `{"in_process": true}`. A remote given by `url` (and `token`) is a hub reached over
/// HTTP. The client starts its own
/// runtime (two worker threads) and one sync engine per remote.
///
/// Thread-safety: may be called from any thread, but not from a callback of this library.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_open(
    config_json: *const c_char,
    hub: *const mesh_hub,
    out: *mut *mut mesh_client,
    error: *mut *mut mesh_error,
) -> mesh_status {
    guard(error, || {
        let config = str_arg(config_json, "config_json")?;
        // SAFETY: by contract `hub` is NULL or a live hub from `mesh_hub_new`.
        let hub = unsafe { hub.as_ref() };
        let out = Out::new(out, "out")?;
        let client = open(config, hub)?;
        out.write(Box::into_raw(Box::new(client)));
        Ok(())
    })
}

/// Closes a client: stops its sync engines, cancels the delivery of every subscription, and
/// makes every later call on it fail with `MESH_STATUS_CLOSED`. The handle stays valid until
/// `mesh_client_free`. Calling it again (or on NULL) does nothing.
///
/// Thread-safety: may be called from any thread, concurrently with other calls (they finish
/// or fail with `MESH_STATUS_CLOSED`), and from a callback.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_close(client: *const mesh_client) {
    guard_void(|| {
        // SAFETY: by contract NULL or a live client.
        if let Some(c) = unsafe { client.as_ref() } {
            close(c);
        }
    });
}

fn close(c: &mesh_client) {
    if c.closed.swap(true, Ordering::AcqRel) {
        return;
    }
    c.client.close();
    let listeners = std::mem::take(&mut *c.listeners.lock().unwrap_or_else(|p| p.into_inner()));
    for l in &listeners {
        l.close();
    }
    // Dropping a discovery stops it and removes the remotes it added.
    let discoveries = std::mem::take(&mut *c.discoveries.lock().unwrap_or_else(|p| p.into_inner()));
    drop(discoveries);
    c.closing.send_replace(true);
    let subs = std::mem::take(&mut *c.subs.lock().unwrap_or_else(|p| p.into_inner()));
    for s in subs {
        s.cancel();
    }
}

/// Closes (if needed) and frees a client: shuts its runtime down (waiting for its threads) and
/// releases everything it holds. Subscriptions stay valid handles until their own `_free`.
/// `mesh_client_free(NULL)` does nothing.
///
/// Thread-safety: any thread once no other call on this client is running; never from a
/// callback of this library (the runtime would be left to stop in the background).
#[no_mangle]
pub unsafe extern "C" fn mesh_client_free(client: *mut mesh_client) {
    guard_void(|| {
        if client.is_null() {
            return;
        }
        // SAFETY: a non-NULL client came from `Box::into_raw` in `mesh_client_open` and, by
        // contract, is freed once, with no other call on it running.
        let c = unsafe { Box::from_raw(client) };
        close(&c);
        let mesh_client {
            rt, client, poll, ..
        } = *c;
        drop(poll);
        if tokio::runtime::Handle::try_current().is_ok() {
            rt.shutdown_background();
        } else {
            drop(rt);
        }
        drop(client);
    });
}

/// The body of a client call: the handle is checked, then `f` runs.
pub(crate) fn with_client(
    client: *const mesh_client,
    error: *mut *mut mesh_error,
    f: impl FnOnce(&mesh_client) -> Result<()>,
) -> mesh_status {
    guard(error, || {
        let c = handle_arg(client, "client")?;
        c.check_open()?;
        f(c)
    })
}

fn role_arg(p: *const c_char) -> Result<Role> {
    let s = str_arg(p, "role")?;
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
        Error::new(
            mesh_status::MESH_STATUS_INVALID_INPUT,
            format!("role {s:?} is not one of reader, author, full, owner"),
        )
    })
}

// ---- devices ---------------------------------------------------------------------------------

/// This user's devices, as a JSON array, into `*devices_json`.
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_devices(
    client: *const mesh_client,
    devices_json: *mut *mut c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let out = Out::new(devices_json, "devices_json")?;
        out.write_json(&c.run(c.client.devices())?)
    })
}

/// Renames this device; the device record (JSON) goes to `*device_json` (may be NULL).
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_rename_device(
    client: *const mesh_client,
    name: *const c_char,
    device_json: *mut *mut c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let name = str_arg(name, "name")?;
        let d = c.run(c.client.rename_device(name))?;
        if !device_json.is_null() {
            Out::new(device_json, "device_json")?.write_json(&d)?;
        }
        Ok(())
    })
}

// ---- folders and feeds -----------------------------------------------------------------------

/// Creates a folder owned by this user; its id goes to `*folder_id` (a plain string, not
/// JSON). `kind` says what it holds: `"files"`, `"app/<name>"`, or another kind of
/// `/`-separated segments of ASCII letters, digits, `-`, `_` and `.` (at most 128 bytes); any
/// other kind is `MESH_STATUS_INVALID_INPUT` and creates nothing.
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_create_folder(
    client: *const mesh_client,
    name: *const c_char,
    kind: *const c_char,
    folder_id: *mut *mut c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let name = str_arg(name, "name")?;
        let kind: FolderKind = id_arg(kind, "kind")?;
        let out = Out::new(folder_id, "folder_id")?;
        let f = c.run(c.client.create_folder(name, kind))?;
        out.write_string(f.id.to_string());
        Ok(())
    })
}

/// The folders this user is an active member of (JSON array of folder records).
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_folders(
    client: *const mesh_client,
    folders_json: *mut *mut c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let out = Out::new(folders_json, "folders_json")?;
        out.write_json(&c.run(c.client.folders())?)
    })
}

/// One folder's record (JSON); `MESH_STATUS_NOT_FOUND` when it has not arrived or was deleted.
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_folder(
    client: *const mesh_client,
    folder: *const c_char,
    folder_json: *mut *mut c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let folder: FolderId = id_arg(folder, "folder")?;
        let out = Out::new(folder_json, "folder_json")?;
        let f = c
            .run(c.client.folder(&folder))?
            .ok_or_else(|| Error::not_found("folder"))?;
        out.write_json(&f)
    })
}

/// Creates an application feed `name` in a folder (Author role or more).
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_create_feed(
    client: *const mesh_client,
    folder: *const c_char,
    name: *const c_char,
    title: *const c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let folder: FolderId = id_arg(folder, "folder")?;
        let name: FeedName = id_arg(name, "name")?;
        let title = str_arg(title, "title")?;
        c.run(c.client.create_feed(&folder, name, title))?;
        Ok(())
    })
}

/// The application feeds of a folder (JSON array).
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_feeds(
    client: *const mesh_client,
    folder: *const c_char,
    feeds_json: *mut *mut c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let folder: FolderId = id_arg(folder, "folder")?;
        let out = Out::new(feeds_json, "feeds_json")?;
        out.write_json(&c.run(c.client.feeds(&folder))?)
    })
}

// ---- entries ---------------------------------------------------------------------------------

/// Creates an entry with a new id from a draft (`{"title": ..., "content": ...}`); the entry
/// (JSON) goes to `*entry_json` (may be NULL).
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_put(
    client: *const mesh_client,
    folder: *const c_char,
    feed: *const c_char,
    draft_json: *const c_char,
    entry_json: *mut *mut c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let folder: FolderId = id_arg(folder, "folder")?;
        let feed: FeedName = id_arg(feed, "feed")?;
        let draft: EntryDraft = json_arg(draft_json, "draft_json")?;
        let e = c.run(c.client.put(&folder, &feed, draft))?;
        if !entry_json.is_null() {
            Out::new(entry_json, "entry_json")?.write_json(&e)?;
        }
        Ok(())
    })
}

/// Creates the entry `id`, or writes a new version of it; the entry (JSON) goes to
/// `*entry_json` (may be NULL).
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_put_with_id(
    client: *const mesh_client,
    folder: *const c_char,
    feed: *const c_char,
    id: *const c_char,
    draft_json: *const c_char,
    entry_json: *mut *mut c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let folder: FolderId = id_arg(folder, "folder")?;
        let feed: FeedName = id_arg(feed, "feed")?;
        let id: EntryId = id_arg(id, "id")?;
        let draft: EntryDraft = json_arg(draft_json, "draft_json")?;
        let e = c.run(c.client.put_with_id(&folder, &feed, id, draft))?;
        if !entry_json.is_null() {
            Out::new(entry_json, "entry_json")?.write_json(&e)?;
        }
        Ok(())
    })
}

/// One live entry (JSON); `MESH_STATUS_NOT_FOUND` when absent or deleted.
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_get(
    client: *const mesh_client,
    folder: *const c_char,
    feed: *const c_char,
    id: *const c_char,
    entry_json: *mut *mut c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let folder: FolderId = id_arg(folder, "folder")?;
        let feed: FeedName = id_arg(feed, "feed")?;
        let id: EntryId = id_arg(id, "id")?;
        let out = Out::new(entry_json, "entry_json")?;
        let e = c
            .run(c.client.get(&folder, &feed, &id))?
            .ok_or_else(|| Error::not_found("entry"))?;
        out.write_json(&e)
    })
}

/// Deletes an entry (a tombstone syncs to every replica).
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_delete(
    client: *const mesh_client,
    folder: *const c_char,
    feed: *const c_char,
    id: *const c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let folder: FolderId = id_arg(folder, "folder")?;
        let feed: FeedName = id_arg(feed, "feed")?;
        let id: EntryId = id_arg(id, "id")?;
        c.run(c.client.delete(&folder, &feed, &id))?;
        Ok(())
    })
}

/// The entries of a feed that match a query (mesh-core's `Query` as JSON; NULL: every live
/// entry in id order), as a JSON array.
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_query(
    client: *const mesh_client,
    folder: *const c_char,
    feed: *const c_char,
    query_json: *const c_char,
    entries_json: *mut *mut c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let folder: FolderId = id_arg(folder, "folder")?;
        let feed: FeedName = id_arg(feed, "feed")?;
        let query: Query = match opt_str_arg(query_json, "query_json")? {
            None => Query::default(),
            Some(s) => serde_json::from_str(s).map_err(|e| Error::json("query_json", &e))?,
        };
        let out = Out::new(entries_json, "entries_json")?;
        out.write_json(&c.run(c.client.query(&folder, &feed, query))?)
    })
}

// ---- members ---------------------------------------------------------------------------------

/// A folder's members, active and invited (JSON array).
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_members(
    client: *const mesh_client,
    folder: *const c_char,
    members_json: *mut *mut c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let folder: FolderId = id_arg(folder, "folder")?;
        let out = Out::new(members_json, "members_json")?;
        out.write_json(&c.run(c.client.members(&folder))?)
    })
}

/// Invites `user` into a folder with `role` (`"reader"`, `"author"`, `"full"`, `"owner"`);
/// the member record (JSON) goes to `*member_json` (may be NULL).
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_invite(
    client: *const mesh_client,
    folder: *const c_char,
    user: *const c_char,
    role: *const c_char,
    member_json: *mut *mut c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let folder: FolderId = id_arg(folder, "folder")?;
        let user: UserId = id_arg(user, "user")?;
        let role = role_arg(role)?;
        let m = c.run(c.client.invite(&folder, &user, role))?;
        if !member_json.is_null() {
            Out::new(member_json, "member_json")?.write_json(&m)?;
        }
        Ok(())
    })
}

/// The invitations this user has not answered yet:
/// `[{"folder": "<id>", "member": {...}}, ...]`.
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_invitations(
    client: *const mesh_client,
    invitations_json: *mut *mut c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let out = Out::new(invitations_json, "invitations_json")?;
        let list: Vec<_> = c
            .run(c.client.invitations())?
            .into_iter()
            .map(|(folder, member)| json!({ "folder": folder, "member": member }))
            .collect();
        out.write_json(&list)
    })
}

/// Accepts an invitation to a folder; the member record (JSON) goes to `*member_json` (may be
/// NULL). `MESH_STATUS_NOT_FOUND` when there is no open invitation (yet: sync first).
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_accept(
    client: *const mesh_client,
    folder: *const c_char,
    member_json: *mut *mut c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let folder: FolderId = id_arg(folder, "folder")?;
        let m = c.run(c.client.accept(&folder))?;
        if !member_json.is_null() {
            Out::new(member_json, "member_json")?.write_json(&m)?;
        }
        Ok(())
    })
}

/// Declines an invitation to a folder.
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_decline(
    client: *const mesh_client,
    folder: *const c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let folder: FolderId = id_arg(folder, "folder")?;
        c.run(c.client.decline(&folder))?;
        Ok(())
    })
}

/// Changes a member's role (owners only; a folder keeps at least one owner); the member record
/// (JSON) goes to `*member_json` (may be NULL).
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_set_role(
    client: *const mesh_client,
    folder: *const c_char,
    user: *const c_char,
    role: *const c_char,
    member_json: *mut *mut c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let folder: FolderId = id_arg(folder, "folder")?;
        let user: UserId = id_arg(user, "user")?;
        let role = role_arg(role)?;
        let m = c.run(c.client.set_role(&folder, &user, role))?;
        if !member_json.is_null() {
            Out::new(member_json, "member_json")?.write_json(&m)?;
        }
        Ok(())
    })
}

/// Removes a member (owners), or leaves the folder (`user` = this user).
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_remove_member(
    client: *const mesh_client,
    folder: *const c_char,
    user: *const c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let folder: FolderId = id_arg(folder, "folder")?;
        let user: UserId = id_arg(user, "user")?;
        c.run(c.client.remove_member(&folder, &user))?;
        Ok(())
    })
}

// ---- folders of files ------------------------------------------------------------------------

/// Maps `folder` onto the directory `path` (UTF-8) on this device and starts keeping the two
/// in sync: local edits are published, remote ones written atomically, concurrent edits keep a
/// conflict copy. The directory is marked with a `.meshfolder` file; a missing directory is
/// created unless it is the one this device last mapped the folder onto (then the mapping
/// starts paused: a `mapping_paused` event, and nothing is published or written until the
/// marked directory is back). A directory marked for another folder or device fails with
/// `MESH_STATUS_STORE`. Symbolic links inside the directory are neither followed nor synced; a
/// `.meshignore` file at its root (gitignore syntax) leaves paths out. The mapping record
/// (JSON) goes to `*mapping_json` (may be NULL). Progress and refusals arrive as `transfer`
/// and `mapping` events.
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_map_folder(
    client: *const mesh_client,
    folder: *const c_char,
    path: *const c_char,
    mapping_json: *mut *mut c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let folder: FolderId = id_arg(folder, "folder")?;
        let path = str_arg(path, "path")?.to_owned();
        let m = c.run(c.client.map_folder(&folder, path))?;
        if !mapping_json.is_null() {
            Out::new(mapping_json, "mapping_json")?.write_json(&m)?;
        }
        Ok(())
    })
}

/// Stops the mapping of `folder` on this device. Never deletes a local file.
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_unmap_folder(
    client: *const mesh_client,
    folder: *const c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let folder: FolderId = id_arg(folder, "folder")?;
        c.run(c.client.unmap_folder(&folder))?;
        Ok(())
    })
}

/// Runs a pass of the folder's mapping now (publish local changes, apply remote ones) and
/// waits for it. `MESH_STATUS_NOT_FOUND` when the folder is not mapped on this device;
/// `MESH_STATUS_STORE` when the mapping is paused (its directory missing, unreadable, or
/// without its marker).
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_rescan(
    client: *const mesh_client,
    folder: *const c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let folder: FolderId = id_arg(folder, "folder")?;
        c.run(c.client.rescan(&folder))?;
        Ok(())
    })
}

// ---- sync and conflicts ----------------------------------------------------------------------

/// Syncs with every remote now and waits until each session has finished with both sides
/// caught up. The report (may be NULL) is a JSON array:
/// `[{"remote": "hub", "sent": 1, "received": 0, "added": 0, "updated": 0, "conflicts": 0}]`.
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_sync_now(
    client: *const mesh_client,
    report_json: *mut *mut c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let reports = c.run(c.client.sync_now())?;
        if !report_json.is_null() {
            let list: Vec<_> = reports
                .iter()
                .map(|(remote, r)| {
                    json!({
                        "remote": remote, "sent": r.sent, "received": r.received,
                        "added": r.added, "updated": r.updated, "conflicts": r.conflicts,
                    })
                })
                .collect();
            Out::new(report_json, "report_json")?.write_json(&list)?;
        }
        Ok(())
    })
}

/// The entries of a folder that hold unresolved conflicts:
/// `[{"feed": "todos", "entry": {...}}, ...]`.
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_conflicts(
    client: *const mesh_client,
    folder: *const c_char,
    conflicts_json: *mut *mut c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let folder: FolderId = id_arg(folder, "folder")?;
        let out = Out::new(conflicts_json, "conflicts_json")?;
        let list: Vec<_> = c
            .run(c.client.conflicts(&folder))?
            .into_iter()
            .map(|(feed, entry)| json!({ "feed": feed, "entry": entry }))
            .collect();
        out.write_json(&list)
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum ResolutionJson {
    Pick(usize),
    Keep(mesh_core::feedsync::HistoryItem),
    Write(EntryDraft),
    Delete,
}

/// Resolves every conflict of an entry. `resolution_json`: `{"keep": history_item}` (the
/// version whose topmost history item this is, e.g. `entry.sync.history[0]` of a conflict;
/// `MESH_STATUS_CONFLICT` when it is no longer there), `{"pick": n}` (0 = the current winner,
/// n = conflict n-1), `{"write": {"title": ..., "content": ...}}` or `"delete"`. The
/// resulting entry (JSON) goes to `*entry_json` (may be NULL).
///
/// Thread-safety: may be called from any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_resolve(
    client: *const mesh_client,
    folder: *const c_char,
    feed: *const c_char,
    id: *const c_char,
    resolution_json: *const c_char,
    entry_json: *mut *mut c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    with_client(client, error, |c| {
        let folder: FolderId = id_arg(folder, "folder")?;
        let feed: FeedName = id_arg(feed, "feed")?;
        let id: EntryId = id_arg(id, "id")?;
        let resolution = match json_arg(resolution_json, "resolution_json")? {
            ResolutionJson::Pick(n) => Resolution::Pick(n),
            ResolutionJson::Keep(h) => Resolution::Keep(h),
            ResolutionJson::Write(d) => Resolution::Write(d),
            ResolutionJson::Delete => Resolution::Delete,
        };
        let e = c.run(c.client.resolve(&folder, &feed, &id, resolution))?;
        if !entry_json.is_null() {
            Out::new(entry_json, "entry_json")?.write_json(&e)?;
        }
        Ok(())
    })
}

// ---- polling ---------------------------------------------------------------------------------

/// The next event of the client's poll queue (JSON, see the README), waiting at most
/// `timeout_ms` milliseconds (0: do not wait). `MESH_STATUS_TIMEOUT` when none came; the queue
/// holds the events since the client was opened (the latest 4096). `mesh_client_close` (from
/// another thread) wakes every poller at once with `MESH_STATUS_CLOSED`.
///
/// Thread-safety: may be called from any thread; concurrent pollers take turns, each event
/// goes to one of them.
#[no_mangle]
pub unsafe extern "C" fn mesh_client_poll_event(
    client: *const mesh_client,
    timeout_ms: u32,
    event_json: *mut *mut c_char,
    error: *mut *mut mesh_error,
) -> mesh_status {
    use futures::{FutureExt, StreamExt};
    with_client(client, error, |c| {
        let out = Out::new(event_json, "event_json")?;
        let mut closing = c.closing.subscribe();
        let next = c.run(async {
            let wait = async {
                let mut stream = c.poll.lock().await;
                if timeout_ms == 0 {
                    stream.next().now_or_never().flatten()
                } else {
                    tokio::time::timeout(Duration::from_millis(timeout_ms.into()), stream.next())
                        .await
                        .ok()
                        .flatten()
                }
            };
            tokio::select! {
                biased;
                _ = closing.wait_for(|closed| *closed) => None,
                e = wait => e,
            }
        });
        match next {
            Some(e) => {
                out.write_string(crate::events::event_json(&e));
                Ok(())
            }
            None => {
                c.check_open()?;
                Err(Error::new(
                    mesh_status::MESH_STATUS_TIMEOUT,
                    "no event before the timeout",
                ))
            }
        }
    })
}
