//! `POST /mesh/sync`: the core sync protocol, authorized for the token's user; bodies
//! zstd-coded both ways when negotiated (see [`encoding`]).

use axum::extract::State;
use axum::http::header::ACCEPT_ENCODING;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use mesh_core::model::{names, Scope};
use mesh_core::sync::guard::Pusher;
use mesh_core::sync::{guard, Request, Response as SyncResponse};
use mesh_core::trust;

use crate::api::encoding::{self, Coding};
use crate::api::{blocking, json_body, Auth, RawBody};
use crate::error::ApiError;
use crate::state::{scope_of, HubState};

pub(crate) async fn sync(
    State(state): State<HubState>,
    auth: Auth,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    let t0 = std::time::Instant::now();
    let coding = match encoding::request_coding(&headers) {
        Ok(c) => c,
        Err(refused) => return Ok(*refused),
    };
    let compress_answer = encoding::accepts_zstd(&headers);
    let max = state.0.config.max_body;
    // A small body (one entry's push, a pull) is parsed here; a large one off the async
    // threads: a push page can be megabytes. A compressed body counts as large as soon as it
    // decodes to more than `INLINE`: at most that much is decoded here.
    let small = match coding {
        Coding::Identity => (body.len() <= INLINE).then(|| json_body::<Request>(&headers, &body)),
        Coding::Zstd if body.len() <= INLINE => encoding::decode_within(&body, INLINE)?
            .map(|json| json_body::<Request>(&headers, &json)),
        Coding::Zstd => None,
    };
    let request: Request = match small {
        Some(parsed) => parsed?,
        None => {
            blocking(move || match coding {
                Coding::Zstd => json_body::<Request>(&headers, &encoding::decode(&body, max)?),
                Coding::Identity => json_body::<Request>(&headers, &body),
            })
            .await??
        }
    };
    let t_parse = t0.elapsed();
    let kind = match &request {
        Request::Feeds { .. } => "feeds",
        Request::Pull { .. } => "pull",
        Request::Push { .. } => "push",
    };
    let user = auth.principal.user.clone();
    let changes = state.announcer();
    let keyring = state.keyring();
    // The signatures of the pusher's own devices are checked first, on every core and outside
    // the folder's lock: the next page of a pipelined push verifies while this one merges,
    // and under the lock only the rules around the signatures remain.
    let (request, checked) = match request {
        Request::Push {
            from,
            feed,
            entries,
        } if entries.len() >= PRECHECK_FROM => {
            let (ring, who) = (keyring.clone(), user.clone());
            blocking(move || {
                let checked =
                    trust::check_signatures(&*ring, &who, &feed, &entries, verify_threads());
                (
                    Request::Push {
                        from,
                        feed,
                        entries,
                    },
                    checked,
                )
            })
            .await?
        }
        other => (other, trust::Checked::default()),
    };
    let quotas = state.0.config.quotas.clone();
    let purge_state = state.clone();
    // A push writes one feed: its folder's writers take turns (across processes too).
    let scope = match &request {
        Request::Push { feed, .. } => Some(scope_of(feed)),
        _ => None,
    };
    let work = move |r: &mut mesh_core::replica::Replica<mesh_store::AnyStore>| {
        // The first write to a folder's members feed creates the folder.
        if let Request::Push { feed, entries, .. } = &request {
            let members = !entries.is_empty() && feed.name.as_str() == names::MEMBERS;
            if let (true, Scope::Folder(f)) = (members, &feed.scope) {
                if let Err(e) = crate::quota::check_new_folder(r, &quotas, &user, f)? {
                    return Ok(Err(e));
                }
            }
        }
        let response = guard::respond_as(
            r,
            Pusher::new(&user, &*keyring)
                .with_threads(verify_threads())
                .with_checked(&checked),
            request,
        )?;
        if let SyncResponse::Pushed { feed, results } = &response {
            if let (names::INFO, Scope::Folder(f)) = (feed.name.as_str(), &feed.scope) {
                if results.iter().any(|x| x.outcome.changed()) {
                    // The folder record may have become a tombstone: the folder is gone.
                    crate::purge::if_deleted(r, &purge_state.0.blobs, f)?;
                }
            }
            if results.iter().any(|x| x.outcome.changed()) {
                // Announced under the lock, so announcements leave in change order.
                changes.moved(r.store(), feed)?;
            }
        }
        let merged = match &response {
            SyncResponse::Pushed { results, .. } => {
                results.iter().filter(|x| x.outcome.changed()).count()
            }
            _ => 0,
        };
        Ok::<_, mesh_core::CoreError>(Ok((response, merged)))
    };
    let (mut response, merged) = match scope {
        Some(scope) => state.run_scoped(scope, work).await???,
        None => state.run(work).await???,
    };
    if let SyncResponse::Feeds { epoch, .. } = &mut response {
        // Cursors are valid in this epoch and in those it continues (see `crate::epoch`).
        epoch.clone_from(&state.0.epoch.get().cloned());
    }
    state
        .0
        .observer
        .metrics
        .entries_merged
        .inc_by(merged as u64);
    let t_respond = t0.elapsed();
    let small = small_answer(&response);
    let encode =
        move || serde_json::to_vec(&response).map(|b| encoding::compress(b, compress_answer));
    let body = if small {
        encode()
    } else {
        blocking(encode).await?
    };
    tracing::debug!(kind, ?t_parse, ?t_respond, total = ?t0.elapsed(), "sync");
    match body {
        Ok((body, coding)) => {
            let mut answer = crate::api::json_bytes(StatusCode::OK, body);
            encoding::mark(&mut answer, coding);
            if kind == "feeds" {
                // Tells the client it may send its requests zstd-coded.
                answer
                    .headers_mut()
                    .insert(ACCEPT_ENCODING, HeaderValue::from_static(encoding::ZSTD));
            }
            Ok(answer)
        }
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// The most bytes of JSON a request may have to be parsed on the async thread that took it.
const INLINE: usize = 64 << 10;

/// The most items (push results, entries, feeds) of an answer encoded on the async thread
/// that took the request.
const SMALL_ITEMS: usize = 64;

/// Whether `response` is small enough to be encoded (and compressed) on the async thread:
/// a hand-off to the blocking pool costs more than that for one entry's answer.
fn small_answer(response: &SyncResponse) -> bool {
    match response {
        SyncResponse::Pushed { results, .. } => results.len() <= SMALL_ITEMS,
        SyncResponse::Changes { entries, .. } => {
            entries.len() <= SMALL_ITEMS
                && entries
                    .iter()
                    .map(mesh_core::model::Entry::wire_len_bound)
                    .sum::<usize>()
                    <= INLINE
        }
        SyncResponse::Feeds {
            feeds,
            revocations,
            certificates,
            ..
        } => feeds.len() + revocations.len() + certificates.len() <= SMALL_ITEMS,
    }
}

/// Pushes of fewer entries are checked under the lock only (the early check would not pay for
/// its thread hand-off).
const PRECHECK_FROM: usize = 16;

/// How many threads check the signatures of one push: the machine's cores.
pub(crate) fn verify_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
