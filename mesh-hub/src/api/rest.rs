//! The REST resources in the Live Framework shape: the mesh, devices, folders, members,
//! invitations, mappings, news, feeds, entries and changes.
//!
//! Reads check `guard::can_read`; every write is built as the FeedSync version it is (by the
//! hub's own endpoint, authored by the caller) and checked with `guard::check_push` before it
//! is merged, so REST and sync clients obey exactly the same role rules. A folder the caller
//! may not read answers 404, whether it exists or not.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::header::{ETAG, IF_MATCH, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use mesh_core::atom::{read_feed_bytes, write_entry, write_feed, AtomFeed};
use mesh_core::content::JsonContent;
use mesh_core::feedsync::{self, Stamp};
use mesh_core::id::{DeviceId, EntryId, FeedName, FolderId, UserId};
use mesh_core::model::odata::MAX_TOP;
use mesh_core::model::{
    names, odata, Device, Entry, EntryDraft, FeedInfo, FeedKey, Folder, FolderKind,
    InvitationState, Mapping, MediaRef, Member, NewsItem, NewsKind, Role, Scope, Selection,
};
use mesh_core::replica::Replica;
use mesh_core::store::{Cursor, Store};
use mesh_core::sync::guard::Pusher;
use mesh_core::sync::{guard, Request as SyncRequest, Response as SyncResponse, MAX_PAGE};
use mesh_core::time::Timestamp;
use mesh_core::trust;
use mesh_core::CoreError;
use mesh_store::AnyStore;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::news;
use crate::api::notify::decode_cursor;
use crate::api::{
    atom, blocking, encode_cursor, is_atom_body, json, json_body, no_content, wants_atom, Auth,
    RawBody,
};
use crate::error::ApiError;
use crate::state::{now, scope_of, HubState};

type Params = Query<HashMap<String, String>>;

// ---- ids from paths ------------------------------------------------------------------------

pub(crate) fn folder_id(s: &str) -> Result<FolderId, ApiError> {
    s.parse().map_err(|_| ApiError::not_found("folder"))
}

fn feed_name(s: &str) -> Result<FeedName, ApiError> {
    s.parse().map_err(|_| ApiError::not_found("feed"))
}

fn entry_id(s: &str) -> Result<EntryId, ApiError> {
    s.parse().map_err(|_| ApiError::not_found("entry"))
}

fn user_id(s: &str) -> Result<UserId, ApiError> {
    s.parse().map_err(|_| ApiError::not_found("user"))
}

fn device_id(s: &str) -> Result<DeviceId, ApiError> {
    s.parse().map_err(|_| ApiError::not_found("device"))
}

fn as_entry_id(s: &str) -> Result<EntryId, ApiError> {
    s.parse().map_err(|e: CoreError| e.into())
}

// ---- ETags ---------------------------------------------------------------------------------

/// A strong ETag over everything the entry holds (versions, conflicts, metadata).
pub(crate) fn etag(e: &Entry) -> String {
    let bytes = serde_json::to_vec(e).unwrap_or_default();
    let d = Sha256::digest(&bytes);
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get(IF_MATCH)
        .map(|v| v.to_str().unwrap_or("\u{0}").to_owned())
}

fn check_if_match(cond: &str, current: Option<&Entry>) -> Result<(), ApiError> {
    let Some(cur) = current else {
        return Err(ApiError::precondition_failed(
            "If-Match given, but the entry does not exist",
        ));
    };
    if cond.trim() == "*" {
        return Ok(());
    }
    let tag = etag(cur);
    if cond.split(',').any(|t| t.trim() == tag) {
        Ok(())
    } else {
        Err(ApiError::precondition_failed(format!(
            "the entry changed: its ETag is now {tag}"
        )))
    }
}

// ---- reading and writing the replica -------------------------------------------------------

async fn check_read(state: &HubState, user: &UserId, feed: &FeedKey) -> Result<(), ApiError> {
    let (u, f) = (user.clone(), feed.clone());
    // A deleted folder does not exist for REST clients (devices learn of the deletion by
    // sync, from its `info` feed).
    let ok = state
        .run(move |r| {
            Ok::<_, CoreError>(
                guard::can_read(r.store(), &u, &f)?
                    && match &f.scope {
                        Scope::Folder(folder) => !guard::folder_deleted(r.store(), folder)?,
                        Scope::Mesh(_) => true,
                    },
            )
        })
        .await??;
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_found(match &feed.scope {
            Scope::Folder(f) => format!("folder {f}"),
            Scope::Mesh(_) => format!("feed {feed}"),
        }))
    }
}

/// Builds the next version of an entry from the current one (if any), at `stamp`.
type Make = Box<dyn FnOnce(Option<&Entry>, &Stamp, Timestamp) -> Result<Entry, ApiError> + Send>;

/// A check made in the same step as a write, before it (a quota the write must keep).
type Check = Box<dyn FnOnce(&mut Replica<AnyStore>) -> Result<(), ApiError> + Send>;

/// Writes one entry as `user`: If-Match, then the version is built, checked against the
/// member roles, merged and announced, all under the replica's lock.
async fn write(
    state: &HubState,
    user: &UserId,
    feed: FeedKey,
    id: EntryId,
    precondition: Option<String>,
    make: Make,
) -> Result<Entry, ApiError> {
    write_checked(state, user, feed, id, precondition, None, make).await
}

/// [`write`], with `check` run first in the same step: nothing another request writes can
/// come between them.
async fn write_checked(
    state: &HubState,
    user: &UserId,
    feed: FeedKey,
    id: EntryId,
    precondition: Option<String>,
    check: Option<Check>,
    make: Make,
) -> Result<Entry, ApiError> {
    let user = user.clone();
    let endpoint = state.0.endpoint.clone();
    let changes = state.announcer();
    let accounts = state.0.accounts.clone();
    // Read on the blocking thread, before the replica: on PostgreSQL it is a query.
    let keys = state.clone();
    let purge_state = state.clone();
    state
        .run_scoped(
            scope_of(&feed),
            move || keys.keyring(),
            move |r, keyring| {
                if let Some(check) = check {
                    check(r)?;
                }
                let local = r.get(&feed, &id)?;
                if let Some(cond) = precondition {
                    check_if_match(&cond, local.as_ref())?;
                }
                let when = now();
                let stamp = Stamp::new(endpoint, when);
                let mut new = make(local.as_ref(), &stamp, when)?;
                let before = changes.before(r.store(), &feed, 1)?;
                // The hub writes under its own endpoint, signed with the authority key, and the
                // guard checks the version as the caller's write, in the same transaction.
                let deleted = new.sync.deleted;
                trust::seal_version(
                    &feed,
                    &id,
                    &mut new.sync.history,
                    deleted,
                    &new.content,
                    accounts.authority(),
                );
                let judged = guard::push(
                    r,
                    Pusher::on_behalf_of(&user, &*keyring),
                    None,
                    &feed,
                    vec![new],
                )?;
                let changed = judged.iter().any(|j| j.outcome.changed());
                if let Some(refused) = judged.into_iter().find_map(|j| j.refused) {
                    return Err(refused.into());
                }
                if changed {
                    if let (names::INFO, Scope::Folder(f)) = (feed.name.as_str(), &feed.scope) {
                        // Deleting the folder record deletes the folder: purge it.
                        crate::purge::if_deleted(r, &purge_state.0.blobs, f)?;
                    }
                    changes.written(r.store(), &feed, before, None)?;
                }
                r.get(&feed, &id)?
                    .ok_or_else(|| ApiError::internal("written entry vanished"))
            },
        )
        .await?
}

/// Creates the entry, or writes a new version of it.
fn upsert(user: UserId, id: EntryId, draft: EntryDraft) -> Make {
    Box::new(move |local, stamp, when| match local {
        Some(l) => {
            let data = draft.into_next_data(&l.content, when);
            Ok(feedsync::update(l, stamp, data, false)?)
        }
        None => Ok(feedsync::create(id, stamp, draft.into_new_data(user, when))),
    })
}

/// Writes a new version of an existing live entry.
fn update_only(draft: EntryDraft, what: &'static str) -> Make {
    Box::new(move |local, stamp, when| match local {
        Some(l) if !l.is_deleted() => {
            let data = draft.into_next_data(&l.content, when);
            Ok(feedsync::update(l, stamp, data, false)?)
        }
        _ => Err(ApiError::not_found(what)),
    })
}

/// Leaves a tombstone on an existing live entry.
fn tombstone(what: &'static str) -> Make {
    Box::new(move |local, stamp, when| match local {
        Some(l) if !l.is_deleted() => {
            let mut data = l.content.clone();
            data.updated = when;
            Ok(feedsync::update(l, stamp, data, true)?)
        }
        _ => Err(ApiError::not_found(what)),
    })
}

fn record<T: Serialize>(title: impl Into<String>, value: &T) -> Result<EntryDraft, ApiError> {
    Ok(EntryDraft {
        title: title.into(),
        content: JsonContent::from_serialize(value)?,
        media: None,
    })
}

fn decode<T: DeserializeOwned>(e: &Entry) -> Result<T, ApiError> {
    Ok(e.content.content.decode()?)
}

/// The live records of one of a folder's system feeds (`feed` picks which), for a user who may
/// read it; `not_found` otherwise, as for a folder that does not exist.
async fn readable_records<T: DeserializeOwned + Send + 'static>(
    state: &HubState,
    auth: &Auth,
    folder: &str,
    feed: fn(&FolderId) -> FeedKey,
) -> Result<Vec<T>, ApiError> {
    let key = feed(&folder_id(folder)?);
    check_read(state, &auth.principal.user, &key).await?;
    live_records(state, key).await
}

/// One live record (keyed by `id`) of a folder's system feed, for a user who may read it.
async fn readable_record<T: DeserializeOwned>(
    state: &HubState,
    auth: &Auth,
    folder: &str,
    feed: fn(&FolderId) -> FeedKey,
    id: &str,
    what: &str,
) -> Result<T, ApiError> {
    let key = feed(&folder_id(folder)?);
    check_read(state, &auth.principal.user, &key).await?;
    let e = get_entry(state, key, as_entry_id(id)?)
        .await?
        .filter(|e| !e.is_deleted())
        .ok_or_else(|| ApiError::not_found(format!("{what} {id}")))?;
    decode(&e)
}

async fn live_records<T: DeserializeOwned + Send + 'static>(
    state: &HubState,
    feed: FeedKey,
) -> Result<Vec<T>, ApiError> {
    let entries = state
        .run(move |r| r.store().list(&feed, None, usize::MAX))
        .await??;
    entries
        .iter()
        .filter(|e| !e.is_deleted())
        .map(decode)
        .collect()
}

async fn get_entry(
    state: &HubState,
    feed: FeedKey,
    id: EntryId,
) -> Result<Option<Entry>, ApiError> {
    Ok(state.run(move |r| r.get(&feed, &id)).await??)
}

/// Best-effort activity record in a folder's news feed.
async fn news(state: &HubState, auth: &Auth, folder: &FolderId, kind: NewsKind, summary: String) {
    let item = NewsItem {
        kind,
        actor: auth.principal.user.clone(),
        device: Some(auth.principal.device.clone()),
        folder: Some(folder.clone()),
        feed: None,
        entry: None,
        summary: summary.clone(),
        at: now(),
    };
    let Ok(id) = uuid::Uuid::new_v4().simple().to_string().parse::<EntryId>() else {
        return;
    };
    let Ok(draft) = record(summary, &item) else {
        return;
    };
    let user = auth.principal.user.clone();
    let r = write(
        state,
        &user,
        FeedKey::folder_news(folder),
        id.clone(),
        None,
        upsert(user.clone(), id, draft),
    )
    .await;
    if let Err(e) = r {
        tracing::debug!(code = e.code, "news not recorded");
    }
}

// ---- the mesh and devices ------------------------------------------------------------------

#[derive(Serialize)]
struct MeshDoc {
    user: UserId,
    device: DeviceId,
    replica: String,
    links: HashMap<&'static str, &'static str>,
}

pub(crate) async fn mesh(State(state): State<HubState>, auth: Auth) -> Response {
    let links = HashMap::from([
        ("devices", "/mesh/devices"),
        ("folders", "/mesh/folders"),
        ("invitations", "/mesh/invitations"),
        ("news", "/mesh/news"),
        ("notifications", "/mesh/notifications"),
        ("sync", "/mesh/sync"),
    ]);
    json(
        StatusCode::OK,
        &MeshDoc {
            user: auth.principal.user,
            device: auth.principal.device,
            replica: state.0.replica_id.to_string(),
            links,
        },
    )
}

async fn device_docs(state: &HubState, user: &UserId) -> Result<Vec<Device>, ApiError> {
    let u = user.clone();
    let records = state.accounts(move |a| a.devices(&u)).await??;
    let presence = state.presence();
    Ok(records
        .into_iter()
        .map(|d| {
            let p = presence.get(&d.id).cloned().unwrap_or_default();
            let recorded = d.last_seen.and_then(|s| Timestamp::from_unix(s).ok());
            Device {
                id: d.id,
                owner: d.owner,
                name: d.name,
                kind: d.kind,
                last_seen: p.last_seen.max(recorded),
                online: p.streams > 0,
                addresses: Vec::new(),
            }
        })
        .collect())
}

pub(crate) async fn devices(
    State(state): State<HubState>,
    auth: Auth,
) -> Result<Response, ApiError> {
    let docs = device_docs(&state, &auth.principal.user).await?;
    Ok(json(StatusCode::OK, &docs))
}

pub(crate) async fn device(
    State(state): State<HubState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = device_id(&id)?;
    let docs = device_docs(&state, &auth.principal.user).await?;
    let d = docs
        .into_iter()
        .find(|d| d.id == id)
        .ok_or_else(|| ApiError::not_found(format!("device {id}")))?;
    Ok(json(StatusCode::OK, &d))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDevice {
    id: DeviceId,
    /// An enrollment code minted by a device of the user (`POST /mesh/devices/codes`).
    code: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

#[derive(Serialize)]
struct NewDeviceDoc {
    device: Device,
    token: String,
}

#[derive(Serialize)]
struct CodeDoc {
    code: String,
    expires_at: Timestamp,
}

/// `POST /mesh/devices/codes`: a one-time enrollment code for a new device of the caller's
/// user.
pub(crate) async fn mint_code(
    State(state): State<HubState>,
    auth: Auth,
) -> Result<Response, ApiError> {
    let p = auth.principal.clone();
    let (code, expires) = state.accounts(move |a| a.mint_code(&p)).await??;
    tracing::info!(user = %auth.principal.user, device = %auth.principal.device, "enrollment code minted");
    Ok(json(
        StatusCode::CREATED,
        &CodeDoc {
            code,
            expires_at: Timestamp::from_unix(expires)?,
        },
    ))
}

/// `POST /mesh/devices` (no token needed: the code is the credential): registers a device
/// with an enrollment code and answers its first token.
pub(crate) async fn add_device(
    State(state): State<HubState>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    let req: NewDevice = json_body(&headers, &body)?;
    let name = req.name.unwrap_or_else(|| req.id.to_string());
    let kind = req.kind.unwrap_or_else(|| "device".into());
    let (d, n, k, code) = (req.id.clone(), name.clone(), kind.clone(), req.code);
    let (user, token) = state
        .accounts(move |a| a.register_with_code(&code, &d, &n, &k))
        .await??;
    tracing::info!(%user, device = %req.id, "device registered with a code");
    let doc = NewDeviceDoc {
        device: Device {
            id: req.id.clone(),
            owner: user,
            name,
            kind,
            last_seen: None,
            online: false,
            addresses: Vec::new(),
        },
        token,
    };
    let mut resp = json(StatusCode::CREATED, &doc);
    if let Ok(v) = HeaderValue::from_str(&format!("/mesh/devices/{}", req.id)) {
        resp.headers_mut().insert(LOCATION, v);
    }
    Ok(resp)
}

/// `POST /mesh/devices/{device}/confirm`: another device of the user vouches for a device
/// enrolled by a code.
pub(crate) async fn confirm_device(
    State(state): State<HubState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = device_id(&id)?;
    let (p, d) = (auth.principal.clone(), id.clone());
    state.accounts(move |a| a.confirm_device(&p, &d)).await??;
    Ok(no_content())
}

#[derive(Serialize)]
struct PendingDoc {
    pending: bool,
    message: &'static str,
}

/// `DELETE /mesh/devices/{device}`: a device revokes itself at once; another device's
/// revocation waits for a second device's request (202 until then).
pub(crate) async fn revoke_device(
    State(state): State<HubState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = device_id(&id)?;
    let user = auth.principal.user.clone();
    let (p, d) = (auth.principal.clone(), id.clone());
    match state
        .accounts(move |a| a.request_revocation(&p, &d))
        .await??
    {
        crate::Revocation::Pending => {
            tracing::info!(%user, device = %id, by = %auth.principal.device, "revocation requested");
            Ok(json(
                StatusCode::ACCEPTED,
                &PendingDoc {
                    pending: true,
                    message: "another device of the user must ask too",
                },
            ))
        }
        crate::Revocation::Revoked(devices) => {
            for d in devices {
                tracing::info!(%user, device = %d, "device revoked");
                let _ = state.0.revoked.send(d);
            }
            Ok(no_content())
        }
    }
}

// ---- folders -------------------------------------------------------------------------------

/// The id of a folder's own record in its `info` feed.
fn folder_record(_folder: &FolderId) -> EntryId {
    names::FOLDER_RECORD
        .parse()
        .unwrap_or_else(|_| unreachable!("the record id is valid"))
}

pub(crate) async fn folders(
    State(state): State<HubState>,
    auth: Auth,
) -> Result<Response, ApiError> {
    let user = auth.principal.user.clone();
    let mut list: Vec<Folder> = state
        .run(move |r| {
            let mut out = Vec::new();
            for f in &r.store().member_folders(&user)? {
                let active = guard::membership(r.store(), f, &user)?
                    .is_some_and(|m| m.effective_role().is_some());
                if !active {
                    continue;
                }
                if let Some(e) = r.get(&FeedKey::info(f), &folder_record(f))? {
                    if !e.is_deleted() {
                        out.push(e.content.content.decode::<Folder>()?);
                    }
                }
            }
            Ok::<_, CoreError>(out)
        })
        .await??;
    list.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    Ok(json(StatusCode::OK, &list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewFolder {
    name: String,
    #[serde(default)]
    kind: Option<FolderKind>,
    #[serde(default)]
    id: Option<FolderId>,
}

pub(crate) async fn create_folder(
    State(state): State<HubState>,
    auth: Auth,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    let req: NewFolder = json_body(&headers, &body)?;
    let user = auth.principal.user.clone();
    // A new folder's id names its founder: one naming anyone else is refused before anything
    // is looked up, so the answer says nothing about whether such a folder exists.
    let id = match req.id {
        Some(id) if id.is_founded_by(&user) => id,
        Some(id) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_id",
                format!(
                    "a new folder's id must be `<name>@{user}` (it names its founder), not {id}"
                ),
            ))
        }
        None => FolderId::founded_by(&uuid::Uuid::new_v4().simple().to_string(), &user)?,
    };
    let when = now();
    let folder = Folder {
        id: id.clone(),
        name: req.name.clone(),
        kind: match req.kind {
            Some(kind) => kind,
            None => FolderKind::app("mesh")?,
        },
        created_by: user.clone(),
        created_at: when,
    };
    let owner = Member {
        user: user.clone(),
        role: Role::Owner,
        state: InvitationState::Active,
        invited_by: user.clone(),
        invited_at: when,
    };
    let members = FeedKey::members(&id);
    let uid = as_entry_id(user.as_str())?;
    // Whether the id is taken and the folder quota are checked in the step that creates the
    // folder: two creations at once cannot both pass on the same room. (A taken id answers
    // as a conflict only to its founder: the id names the caller.)
    let quotas = state.0.config.quotas.clone();
    let (u, f) = (user.clone(), id.clone());
    let check: Check = Box::new(move |r| {
        if crate::quota::folder_exists(r, &f)? {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_exists",
                format!("folder {f} already exists"),
            ));
        }
        Ok(crate::quota::check_new_folder(r, &quotas, &u, &f)??)
    });
    write_checked(
        &state,
        &user,
        members,
        uid.clone(),
        None,
        Some(check),
        upsert(user.clone(), uid, record(user.to_string(), &owner)?),
    )
    .await?;
    let rec = folder_record(&id);
    write(
        &state,
        &user,
        FeedKey::info(&id),
        rec.clone(),
        None,
        upsert(user.clone(), rec, record(req.name.clone(), &folder)?),
    )
    .await?;
    news(
        &state,
        &auth,
        &id,
        NewsKind::FolderCreated,
        format!("{user} created {:?}", req.name),
    )
    .await;
    let mut resp = json(StatusCode::CREATED, &folder);
    if let Ok(v) = HeaderValue::from_str(&format!("/mesh/folders/{id}")) {
        resp.headers_mut().insert(LOCATION, v);
    }
    Ok(resp)
}

pub(crate) async fn folder(
    State(state): State<HubState>,
    auth: Auth,
    Path(f): Path<String>,
) -> Result<Response, ApiError> {
    let f = folder_id(&f)?;
    let info = FeedKey::info(&f);
    check_read(&state, &auth.principal.user, &info).await?;
    let e = get_entry(&state, info, folder_record(&f))
        .await?
        .filter(|e| !e.is_deleted())
        .ok_or_else(|| ApiError::not_found(format!("folder {f}")))?;
    let folder: Folder = decode(&e)?;
    Ok(json(StatusCode::OK, &folder))
}

pub(crate) async fn delete_folder(
    State(state): State<HubState>,
    auth: Auth,
    Path(f): Path<String>,
) -> Result<Response, ApiError> {
    let f = folder_id(&f)?;
    let info = FeedKey::info(&f);
    check_read(&state, &auth.principal.user, &info).await?;
    write(
        &state,
        &auth.principal.user,
        info,
        folder_record(&f),
        None,
        tombstone("folder"),
    )
    .await?;
    Ok(no_content())
}

// ---- members and invitations ---------------------------------------------------------------

pub(crate) async fn members(
    State(state): State<HubState>,
    auth: Auth,
    Path(f): Path<String>,
) -> Result<Response, ApiError> {
    let list: Vec<Member> = readable_records(&state, &auth, &f, FeedKey::members).await?;
    Ok(json(StatusCode::OK, &list))
}

pub(crate) async fn member(
    State(state): State<HubState>,
    auth: Auth,
    Path((f, u)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let u = user_id(&u)?;
    let m: Member =
        readable_record(&state, &auth, &f, FeedKey::members, u.as_str(), "member").await?;
    Ok(json(StatusCode::OK, &m))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Invite {
    user: UserId,
    role: Role,
}

pub(crate) async fn invite(
    State(state): State<HubState>,
    auth: Auth,
    Path(f): Path<String>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    let f = folder_id(&f)?;
    let key = FeedKey::members(&f);
    check_read(&state, &auth.principal.user, &key).await?;
    let req: Invite = json_body(&headers, &body)?;
    let target = req.user.clone();
    let exists = state.accounts(move |a| a.has_user(&target)).await??;
    if !exists {
        return Err(ApiError::not_found(format!("user {}", req.user)));
    }
    let id = as_entry_id(req.user.as_str())?;
    let current = get_entry(&state, key.clone(), id.clone()).await?;
    if current.is_some_and(|e| !e.is_deleted()) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_exists",
            format!("{} is already a member or invited", req.user),
        ));
    }
    let me = auth.principal.user.clone();
    let m = Member {
        user: req.user.clone(),
        role: req.role,
        state: InvitationState::Invited,
        invited_by: me.clone(),
        invited_at: now(),
    };
    write(
        &state,
        &me,
        key,
        id.clone(),
        None,
        upsert(me.clone(), id, record(req.user.to_string(), &m)?),
    )
    .await?;
    news(
        &state,
        &auth,
        &f,
        NewsKind::MemberInvited,
        format!("{me} invited {} as {}", req.user, req.role),
    )
    .await;
    let mut resp = json(StatusCode::CREATED, &m);
    if let Ok(v) = HeaderValue::from_str(&format!("/mesh/folders/{f}/members/{}", req.user)) {
        resp.headers_mut().insert(LOCATION, v);
    }
    Ok(resp)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetRole {
    role: Role,
}

async fn member_of(state: &HubState, f: &FolderId, u: &UserId) -> Result<Member, ApiError> {
    let e = get_entry(state, FeedKey::members(f), as_entry_id(u.as_str())?)
        .await?
        .filter(|e| !e.is_deleted())
        .ok_or_else(|| ApiError::not_found(format!("member {u}")))?;
    decode(&e)
}

async fn other_owners(state: &HubState, f: &FolderId, u: &UserId) -> Result<bool, ApiError> {
    let all: Vec<Member> = live_records(state, FeedKey::members(f)).await?;
    Ok(all
        .iter()
        .any(|m| &m.user != u && m.role == Role::Owner && m.state == InvitationState::Active))
}

pub(crate) async fn set_role(
    State(state): State<HubState>,
    auth: Auth,
    Path((f, u)): Path<(String, String)>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    let f = folder_id(&f)?;
    let key = FeedKey::members(&f);
    check_read(&state, &auth.principal.user, &key).await?;
    let u = user_id(&u)?;
    let req: SetRole = json_body(&headers, &body)?;
    let mut m = member_of(&state, &f, &u).await?;
    if m.role == Role::Owner && req.role != Role::Owner && !other_owners(&state, &f, &u).await? {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_denied",
            "a folder keeps at least one owner",
        ));
    }
    m.role = req.role;
    let id = as_entry_id(u.as_str())?;
    write(
        &state,
        &auth.principal.user,
        key,
        id,
        None,
        update_only(record(u.to_string(), &m)?, "member"),
    )
    .await?;
    Ok(json(StatusCode::OK, &m))
}

pub(crate) async fn remove_member(
    State(state): State<HubState>,
    auth: Auth,
    Path((f, u)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let f = folder_id(&f)?;
    let key = FeedKey::members(&f);
    check_read(&state, &auth.principal.user, &key).await?;
    let u = user_id(&u)?;
    let m = member_of(&state, &f, &u).await?;
    if m.role == Role::Owner && !other_owners(&state, &f, &u).await? {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_denied",
            "a folder keeps at least one owner",
        ));
    }
    write(
        &state,
        &auth.principal.user,
        key,
        as_entry_id(u.as_str())?,
        None,
        tombstone("member"),
    )
    .await?;
    news(&state, &auth, &f, NewsKind::MemberLeft, format!("{u} left")).await;
    Ok(no_content())
}

#[derive(Serialize)]
struct Invitation {
    folder: FolderId,
    member: Member,
}

pub(crate) async fn invitations(
    State(state): State<HubState>,
    auth: Auth,
) -> Result<Response, ApiError> {
    let user = auth.principal.user.clone();
    let list = state
        .run(move |r| {
            let mut out = Vec::new();
            for f in r.store().member_folders(&user)? {
                if let Some(m) = guard::membership(r.store(), &f, &user)? {
                    if m.state == InvitationState::Invited {
                        out.push(Invitation {
                            folder: f,
                            member: m,
                        });
                    }
                }
            }
            Ok::<_, CoreError>(out)
        })
        .await??;
    Ok(json(StatusCode::OK, &list))
}

pub(crate) async fn answer_invitation(
    State(state): State<HubState>,
    auth: Auth,
    Path((f, answer)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let f = folder_id(&f)?;
    let new_state = match answer.as_str() {
        "accept" => InvitationState::Active,
        "decline" => InvitationState::Declined,
        _ => return Err(ApiError::not_found("resource")),
    };
    let user = auth.principal.user.clone();
    let not_invited = || ApiError::not_found(format!("invitation to folder {f}"));
    let mut m = member_of(&state, &f, &user)
        .await
        .map_err(|_| not_invited())?;
    if m.state != InvitationState::Invited {
        return Err(not_invited());
    }
    m.state = new_state;
    write(
        &state,
        &user,
        FeedKey::members(&f),
        as_entry_id(user.as_str())?,
        None,
        update_only(record(user.to_string(), &m)?, "invitation"),
    )
    .await?;
    if new_state == InvitationState::Active {
        news(
            &state,
            &auth,
            &f,
            NewsKind::MemberJoined,
            format!("{user} joined as {}", m.role),
        )
        .await;
    }
    Ok(json(StatusCode::OK, &m))
}

// ---- mappings and news ---------------------------------------------------------------------

pub(crate) async fn mappings(
    State(state): State<HubState>,
    auth: Auth,
    Path(f): Path<String>,
) -> Result<Response, ApiError> {
    let list: Vec<Mapping> = readable_records(&state, &auth, &f, FeedKey::mappings).await?;
    Ok(json(StatusCode::OK, &list))
}

pub(crate) async fn mapping(
    State(state): State<HubState>,
    auth: Auth,
    Path((f, d)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let d = device_id(&d)?;
    let m: Mapping = readable_record(
        &state,
        &auth,
        &f,
        FeedKey::mappings,
        d.as_str(),
        "mapping of device",
    )
    .await?;
    Ok(json(StatusCode::OK, &m))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PutMapping {
    #[serde(default)]
    path: Option<String>,
}

pub(crate) async fn put_mapping(
    State(state): State<HubState>,
    auth: Auth,
    Path((f, d)): Path<(String, String)>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    let f = folder_id(&f)?;
    let key = FeedKey::mappings(&f);
    let user = auth.principal.user.clone();
    check_read(&state, &user, &key).await?;
    let d = device_id(&d)?;
    let req: PutMapping = if body.is_empty() {
        PutMapping::default()
    } else {
        json_body(&headers, &body)?
    };
    if !device_docs(&state, &user).await?.iter().any(|x| x.id == d) {
        return Err(ApiError::not_found(format!("device {d}")));
    }
    let m = Mapping {
        device: d.clone(),
        user: user.clone(),
        path: req.path,
        created_at: now(),
    };
    let id = as_entry_id(d.as_str())?;
    write(
        &state,
        &user,
        key,
        id.clone(),
        None,
        upsert(user.clone(), id, record(d.to_string(), &m)?),
    )
    .await?;
    Ok(json(StatusCode::OK, &m))
}

pub(crate) async fn delete_mapping(
    State(state): State<HubState>,
    auth: Auth,
    Path((f, d)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let f = folder_id(&f)?;
    let key = FeedKey::mappings(&f);
    check_read(&state, &auth.principal.user, &key).await?;
    let d = device_id(&d)?;
    write(
        &state,
        &auth.principal.user,
        key,
        as_entry_id(d.as_str())?,
        None,
        tombstone("mapping"),
    )
    .await?;
    Ok(no_content())
}

fn top_param(q: &HashMap<String, String>, default: usize) -> Result<usize, ApiError> {
    match q.get("$top") {
        None => Ok(default),
        Some(t) => Ok(odata::parse_query(None, None, Some(t), None)?
            .top
            .unwrap_or(default)),
    }
}

pub(crate) async fn folder_news(
    State(state): State<HubState>,
    auth: Auth,
    Path(f): Path<String>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let top = top_param(&q, 100)?;
    let key = FeedKey::folder_news(&folder_id(&f)?);
    check_read(&state, &auth.principal.user, &key).await?;
    let items = state
        .run(move |r| news::recent(r.store(), &key, top))
        .await??;
    Ok(json(StatusCode::OK, &news::newest(items, top)))
}

pub(crate) async fn mesh_news(
    State(state): State<HubState>,
    auth: Auth,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let top = top_param(&q, 100)?;
    let user = auth.principal.user.clone();
    let entries = state
        .run(move |r| {
            let mut out = Vec::new();
            for h in guard::user_heads(r.store(), &user)? {
                if h.feed.name.as_str() != names::NEWS
                    || !guard::can_read(r.store(), &user, &h.feed)?
                {
                    continue;
                }
                if let Scope::Folder(f) = &h.feed.scope {
                    let active = guard::membership(r.store(), f, &user)?
                        .is_some_and(|m| m.effective_role().is_some());
                    if !active {
                        continue;
                    }
                }
                out.extend(news::recent(r.store(), &h.feed, top)?);
            }
            Ok::<_, CoreError>(out)
        })
        .await??;
    Ok(json(StatusCode::OK, &news::newest(entries, top)))
}

// ---- feeds ---------------------------------------------------------------------------------

#[derive(Serialize)]
struct FeedDoc {
    name: FeedName,
    title: Option<String>,
    created_at: Option<Timestamp>,
    head: Cursor,
    entries: u64,
}

pub(crate) async fn feeds(
    State(state): State<HubState>,
    auth: Auth,
    Path(f): Path<String>,
) -> Result<Response, ApiError> {
    let list: Vec<FeedInfo> = readable_records(&state, &auth, &f, FeedKey::feeds).await?;
    Ok(json(StatusCode::OK, &list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewFeed {
    name: FeedName,
    #[serde(default)]
    title: Option<String>,
}

pub(crate) async fn create_feed(
    State(state): State<HubState>,
    auth: Auth,
    Path(f): Path<String>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    let f = folder_id(&f)?;
    let key = FeedKey::feeds(&f);
    let user = auth.principal.user.clone();
    check_read(&state, &user, &key).await?;
    let req: NewFeed = json_body(&headers, &body)?;
    if names::RESERVED.contains(&req.name.as_str()) {
        return Err(CoreError::InvalidId {
            kind: "feed name",
            reason: format!("{:?} is reserved for the system", req.name.as_str()),
        }
        .into());
    }
    let id = as_entry_id(req.name.as_str())?;
    if get_entry(&state, key.clone(), id.clone())
        .await?
        .is_some_and(|e| !e.is_deleted())
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_exists",
            format!("feed {} already exists", req.name),
        ));
    }
    let title = req.title.unwrap_or_else(|| req.name.to_string());
    let info = FeedInfo {
        name: req.name.clone(),
        title: title.clone(),
        created_at: now(),
    };
    write(
        &state,
        &user,
        key,
        id.clone(),
        None,
        upsert(user.clone(), id, record(title, &info)?),
    )
    .await?;
    let mut resp = json(StatusCode::CREATED, &info);
    if let Ok(v) = HeaderValue::from_str(&format!("/mesh/folders/{f}/feeds/{}", req.name)) {
        resp.headers_mut().insert(LOCATION, v);
    }
    Ok(resp)
}

pub(crate) async fn feed(
    State(state): State<HubState>,
    auth: Auth,
    Path((f, n)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let f = folder_id(&f)?;
    let n = feed_name(&n)?;
    let key = FeedKey::folder(f.clone(), n.clone());
    check_read(&state, &auth.principal.user, &key).await?;
    let (k, id) = (key.clone(), as_entry_id(n.as_str())?);
    let (info, head, count) = state
        .run(move |r| {
            let info = r.get(&FeedKey::feeds(&f), &id)?.filter(|e| !e.is_deleted());
            let head = r.store().head(&k)?;
            let count = r.store().feed_head(&k)?.map_or(0, |h| h.entries);
            Ok::<_, CoreError>((info, head, count))
        })
        .await??;
    let info: Option<FeedInfo> = info.as_ref().map(decode).transpose()?;
    if info.is_none() && head == Cursor::ZERO && !key.is_system() {
        return Err(ApiError::not_found(format!("feed {n}")));
    }
    Ok(json(
        StatusCode::OK,
        &FeedDoc {
            name: n,
            title: info.as_ref().map(|i| i.title.clone()),
            created_at: info.map(|i| i.created_at),
            head,
            entries: count,
        },
    ))
}

// ---- entries -------------------------------------------------------------------------------

fn feed_key(f: &str, n: &str) -> Result<FeedKey, ApiError> {
    Ok(FeedKey::folder(folder_id(f)?, feed_name(n)?))
}

#[derive(Serialize)]
struct EntryList<'a> {
    feed: &'a FeedKey,
    count: usize,
    /// Whether more entries match past this page (then `$skip` reads on).
    more: bool,
    entries: &'a [Entry],
}

fn atom_feed(
    state: &HubState,
    feed: &FeedKey,
    entries: Vec<Entry>,
    next: Option<String>,
) -> AtomFeed {
    let updated = entries
        .iter()
        .map(|e| e.content.updated)
        .max()
        .unwrap_or_else(now);
    AtomFeed {
        id: format!("urn:mesh:{}:{feed}", state.0.replica_id),
        title: feed.to_string(),
        updated,
        entries,
        next,
    }
}

/// Where the next page of a listing is, as a reference of its query alone (`?…`, which keeps
/// the request's own path, behind whatever proxy): the request's parameters `q` with
/// `$skip` moved past the `returned` entries of this page, and `$top` as asked (or
/// [`MAX_TOP`]).
fn next_listing(q: &HashMap<String, String>, skip: usize, returned: usize, top: usize) -> String {
    let (skip, top) = (skip.saturating_add(returned).to_string(), top.to_string());
    query_reference(q, &[("$skip", &skip), ("$top", &top)])
}

/// Where the next page of changes is: the request's parameters `q` with `cursor` moved to
/// `cursor`, as [`next_listing`] writes them.
fn next_changes(q: &HashMap<String, String>, cursor: &str) -> String {
    query_reference(q, &[("cursor", cursor)])
}

/// A reference of a query alone (`?…`): the parameters `q` with those of `set` replaced (or
/// added), form-encoded, in name order.
fn query_reference(q: &HashMap<String, String>, set: &[(&str, &str)]) -> String {
    let mut params: Vec<(&str, &str)> = q
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .filter(|(k, _)| !set.iter().any(|(s, _)| s == k))
        .chain(set.iter().copied())
        .collect();
    params.sort();
    let mut out = url::form_urlencoded::Serializer::for_suffix(String::from("?"), 1);
    for (k, v) in &params {
        out.append_pair(k, v);
    }
    out.finish()
}

/// Entries read from a feed a page at a time.
const LIST_PAGE: usize = 1_000;

/// The answer to `query` over feed `key`, and whether more entries match than it returns (at
/// most [`MAX_TOP`] when it names no `$top`). The feed is read in pages of [`LIST_PAGE`] in id
/// order and what is held stays bounded by the query's `$skip` and `$top`
/// ([`Selection`]); without `$orderby`, reading stops once enough entries match.
fn select<S: Store>(
    store: &S,
    key: &FeedKey,
    query: &mesh_core::model::Query,
) -> Result<(Vec<Entry>, bool), CoreError> {
    let mut selection = Selection::new(query, MAX_TOP);
    let mut after: Option<EntryId> = None;
    loop {
        let page = store.list(key, after.as_ref(), LIST_PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.entry_id().clone());
        for e in page {
            selection.offer(e);
        }
        if selection.is_settled() {
            break;
        }
    }
    Ok(selection.finish())
}

pub(crate) async fn entries(
    State(state): State<HubState>,
    auth: Auth,
    Path((f, n)): Path<(String, String)>,
    Query(q): Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = feed_key(&f, &n)?;
    let mut query = odata::parse_query(
        q.get("$filter").map(String::as_str),
        q.get("$orderby").map(String::as_str),
        q.get("$top").map(String::as_str),
        q.get("$skip").map(String::as_str),
    )?;
    let atom_out = wants_atom(&headers);
    // Atom is the FeedSync form: tombstones travel too.
    query.include_deleted =
        atom_out || matches!(q.get("deleted").map(String::as_str), Some("true" | "1"));
    check_read(&state, &auth.principal.user, &key).await?;
    let k = key.clone();
    let (skip, top) = (query.skip, query.top);
    let (list, more) = state.run(move |r| select(r.store(), &k, &query)).await??;
    if atom_out {
        // A paged feed (RFC 5005): a reader follows the next link to read on, so a listing
        // without `$top` is answered a page at a time rather than refused.
        let next = more.then(|| next_listing(&q, skip, list.len(), top.unwrap_or(MAX_TOP)));
        let feed = atom_feed(&state, &key, list, next);
        let xml = blocking(move || write_feed(&feed)).await?;
        return Ok(atom(StatusCode::OK, xml));
    }
    if more && top.is_none() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit_exceeded",
            format!("more than {MAX_TOP} entries of feed {key} match: page with $top and $skip"),
        ));
    }
    Ok(json(
        StatusCode::OK,
        &EntryList {
            feed: &key,
            count: list.len(),
            more,
            entries: &list,
        },
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEntry {
    #[serde(default)]
    id: Option<String>,
    title: String,
    #[serde(default)]
    content: serde_json::Value,
    #[serde(default)]
    media: Option<MediaRef>,
}

#[derive(Serialize)]
struct MergeDoc<'a> {
    feed: &'a FeedKey,
    results: &'a [mesh_core::sync::PushResult],
}

fn entry_response(status: StatusCode, e: &Entry, as_atom: bool) -> Response {
    let mut resp = if as_atom {
        atom(status, write_entry(e))
    } else {
        json(status, e)
    };
    if let Ok(v) = HeaderValue::from_str(&etag(e)) {
        resp.headers_mut().insert(ETAG, v);
    }
    resp
}

pub(crate) async fn post_entries(
    State(state): State<HubState>,
    auth: Auth,
    Path((f, n)): Path<(String, String)>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    let key = feed_key(&f, &n)?;
    let user = auth.principal.user.clone();
    check_read(&state, &user, &key).await?;
    if is_atom_body(&headers) {
        // A FeedSync feed: merged entry by entry, each checked as the write it is.
        let feed = blocking(move || read_feed_bytes(&body)).await??;
        let from = state.0.replica_id.clone();
        let k = key.clone();
        let changes = state.announcer();
        let keys = state.clone();
        let response = state
            .run_scoped(
                scope_of(&key),
                move || keys.keyring(),
                move |r, keyring| {
                    let before = changes.before(r.store(), &k, feed.entries.len())?;
                    let resp = guard::respond_as(
                        r,
                        Pusher::new(&user, &*keyring)
                            .with_threads(crate::api::sync::verify_threads()),
                        SyncRequest::Push {
                            from,
                            feed: k.clone(),
                            entries: feed.entries,
                        },
                    )?;
                    if let SyncResponse::Pushed { results, .. } = &resp {
                        if results.iter().any(|x| x.outcome.changed()) {
                            changes.written(r.store(), &k, before, None)?;
                        }
                    }
                    Ok::<_, CoreError>(resp)
                },
            )
            .await??;
        let SyncResponse::Pushed { results, .. } = response else {
            return Err(ApiError::internal("push answered with another message"));
        };
        return Ok(json(
            StatusCode::OK,
            &MergeDoc {
                feed: &key,
                results: &results,
            },
        ));
    }
    let req: NewEntry = json_body(&headers, &body)?;
    let id: EntryId = match req.id {
        Some(id) => as_entry_id(&id)?,
        None => uuid::Uuid::new_v4().simple().to_string().parse()?,
    };
    let draft = EntryDraft {
        title: req.title,
        content: JsonContent::from_value(&req.content)?,
        media: req.media,
    };
    let eid = id.clone();
    let make: Make = Box::new(move |local, stamp, when| match local {
        Some(_) => Err(CoreError::AlreadyExists {
            kind: "entry",
            id: eid.to_string(),
        }
        .into()),
        None => Ok(feedsync::create(
            eid,
            stamp,
            draft.into_new_data(user, when),
        )),
    });
    let e = write(
        &state,
        &auth.principal.user,
        key.clone(),
        id.clone(),
        None,
        make,
    )
    .await?;
    let mut resp = entry_response(StatusCode::CREATED, &e, wants_atom(&headers));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "/mesh/folders/{f}/feeds/{n}/entries/{}",
        urlencode(id.as_str())
    )) {
        resp.headers_mut().insert(LOCATION, v);
    }
    Ok(resp)
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) async fn entry(
    State(state): State<HubState>,
    auth: Auth,
    Path((f, n, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = feed_key(&f, &n)?;
    let id = entry_id(&id)?;
    check_read(&state, &auth.principal.user, &key).await?;
    let e = get_entry(&state, key, id.clone())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("entry {id}")))?;
    Ok(entry_response(StatusCode::OK, &e, wants_atom(&headers)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutEntry {
    title: String,
    #[serde(default)]
    content: serde_json::Value,
    #[serde(default)]
    media: Option<MediaRef>,
}

pub(crate) async fn put_entry(
    State(state): State<HubState>,
    auth: Auth,
    Path((f, n, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    let key = feed_key(&f, &n)?;
    let id = entry_id(&id)?;
    check_read(&state, &auth.principal.user, &key).await?;
    let req: PutEntry = json_body(&headers, &body)?;
    let draft = EntryDraft {
        title: req.title,
        content: JsonContent::from_value(&req.content)?,
        media: req.media,
    };
    let make: Make = Box::new(move |local, stamp, when| match local {
        // Writing a deleted entry revives it.
        Some(l) => {
            let data = draft.into_next_data(&l.content, when);
            Ok(feedsync::update(l, stamp, data, false)?)
        }
        None => Err(ApiError::not_found("entry")),
    });
    let e = write(
        &state,
        &auth.principal.user,
        key,
        id,
        if_match(&headers),
        make,
    )
    .await?;
    Ok(entry_response(StatusCode::OK, &e, wants_atom(&headers)))
}

pub(crate) async fn delete_entry(
    State(state): State<HubState>,
    auth: Auth,
    Path((f, n, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = feed_key(&f, &n)?;
    let id = entry_id(&id)?;
    check_read(&state, &auth.principal.user, &key).await?;
    write(
        &state,
        &auth.principal.user,
        key,
        id,
        if_match(&headers),
        tombstone("entry"),
    )
    .await?;
    Ok(no_content())
}

#[derive(Serialize)]
struct ChangesDoc<'a> {
    feed: &'a FeedKey,
    entries: Vec<Box<serde_json::value::RawValue>>,
    cursor: String,
    more: bool,
}

pub(crate) async fn changes(
    State(state): State<HubState>,
    auth: Auth,
    Path((f, n)): Path<(String, String)>,
    Query(q): Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = feed_key(&f, &n)?;
    let scope = key.to_string();
    let cursor_key = state.cursor_key();
    let since = match q.get("cursor").filter(|c| !c.is_empty()) {
        Some(c) => decode_cursor(&cursor_key, &scope, c)?,
        None => Cursor::ZERO,
    };
    let limit = match q.get("limit") {
        None => 100,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE as usize).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit must be 1 to {MAX_PAGE}"
                )))
            }
        },
    };
    check_read(&state, &auth.principal.user, &key).await?;
    let k = key.clone();
    if !wants_atom(&headers) {
        // JSON: the entries go out as the replica keeps them, not decoded and encoded again.
        let page = state
            .run(move |r| r.store().encoded_changes_since(&k, since, limit, None))
            .await??;
        return Ok(json(
            StatusCode::OK,
            &ChangesDoc {
                feed: &key,
                entries: page.changes.into_iter().map(|c| c.entry).collect(),
                cursor: encode_cursor(&cursor_key, &scope, page.next),
                more: page.more,
            },
        ));
    }
    let page = state
        .run(move |r| r.store().changes_since(&k, since, limit, None))
        .await??;
    let cursor = encode_cursor(&cursor_key, &scope, page.next);
    let entries: Vec<Entry> = page.changes.into_iter().map(|c| c.entry).collect();
    let next = page.more.then(|| next_changes(&q, &cursor));
    let feed = atom_feed(&state, &key, entries, next);
    let xml = blocking(move || write_feed(&feed)).await?;
    let mut resp = atom(StatusCode::OK, xml);
    if let Ok(v) = HeaderValue::from_str(&cursor) {
        resp.headers_mut().insert("Mesh-Cursor", v);
    }
    resp.headers_mut().insert(
        "Mesh-More",
        HeaderValue::from_static(if page.more { "true" } else { "false" }),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::replica::Actor;
    use mesh_core::store::MemoryStore;

    /// A next-page link keeps the request's other parameters, replaces the ones it moves, and
    /// encodes what a query needs encoded.
    #[test]
    fn a_query_reference_keeps_the_rest_of_the_query() {
        let q: HashMap<String, String> = [("$filter", "a & b"), ("cursor", "old"), ("x", "1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(next_changes(&q, "c1"), "?%24filter=a+%26+b&cursor=c1&x=1");
        assert_eq!(
            next_listing(&q, 20, 10, 10),
            "?%24filter=a+%26+b&%24skip=30&%24top=10&cursor=old&x=1"
        );
        assert_eq!(next_changes(&HashMap::new(), "c"), "?cursor=c");
    }

    /// A listing without `$top` answers at most `MAX_TOP` entries and says that more match;
    /// without `$orderby` it reads only as far as it needs.
    #[test]
    fn a_listing_is_bounded_and_says_when_more_match() {
        let mut r = Replica::new(MemoryStore::new("hub".parse().unwrap()));
        let feed = FeedKey::folder("f@ann".parse().unwrap(), "todos".parse().unwrap());
        let actor = Actor::new("ann".parse().unwrap(), "d".parse().unwrap());
        let at = Timestamp::from_unix(1_700_000_000).unwrap();
        for n in 0..=MAX_TOP {
            let id = format!("e{n:05}").parse().unwrap();
            let draft = EntryDraft::new("t", serde_json::json!({ "n": n }));
            r.create(&feed, id, draft, &actor, at).unwrap();
        }
        let query = |s: &str| odata::parse_query(None, Some(s), None, None).unwrap();
        let (list, more) = select(r.store(), &feed, &query("")).unwrap();
        assert_eq!((list.len(), more), (MAX_TOP, true));
        let (list, more) = select(r.store(), &feed, &query("id desc")).unwrap();
        assert_eq!((list.len(), more), (MAX_TOP, true));
        assert_eq!(list[0].sync.id.as_str(), format!("e{MAX_TOP:05}"));
        let mut q = query("");
        q.top = Some(MAX_TOP + 1);
        let (list, more) = select(r.store(), &feed, &q).unwrap();
        assert_eq!((list.len(), more), (MAX_TOP + 1, false));
    }
}
