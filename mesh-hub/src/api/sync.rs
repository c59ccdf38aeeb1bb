//! `POST /mesh/sync`: the core sync protocol, authorized for the token's user; bodies
//! zstd-coded both ways when negotiated (see [`encoding`]).

use axum::extract::State;
use axum::http::header::ACCEPT_ENCODING;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use mesh_core::id::ReplicaId;
use mesh_core::model::{names, FeedKey, Scope};
use mesh_core::store::Incoming;
use mesh_core::sync::guard::Pusher;
use mesh_core::sync::{guard, EncodedChanges, Request, Response as SyncResponse};
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
        Request::Push { .. } | Request::PushEncoded { .. } => "push",
    };
    let user = auth.principal.user.clone();
    let device = auth.principal.device.clone();
    let changes = state.announcer();
    // The keyring is read on the blocking threads below, never here: reading it checks the
    // accounts' version, a query on PostgreSQL (and a lock on SQLite). For the work on the
    // replica it is read before the replica (a PostgreSQL connection) is taken.
    let keys = state.clone();
    // The signatures of the pusher's own devices are checked first, on every core and outside
    // the folder's lock: the next page of a pipelined push verifies while this one merges,
    // and under the lock only the rules around the signatures remain (against the same
    // keyring, read once). The entries' JSON, as the store keeps it, is made there too.
    let (job, checked, ring) = match request {
        Request::Push {
            from,
            feed,
            entries,
        } if entries.len() >= PRECHECK_FROM => {
            let (keys, who) = (keys.clone(), user.clone());
            blocking(move || {
                let ring = keys.keyring();
                let checked =
                    trust::check_signatures(&*ring, &who, &feed, &entries, verify_threads());
                let entries = entries
                    .into_iter()
                    .map(Incoming::encoded)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok::<_, mesh_core::CoreError>((
                    Job::Push {
                        from,
                        feed,
                        entries,
                    },
                    checked,
                    Some(ring),
                ))
            })
            .await??
        }
        other => (Job::Other(other), trust::Checked::default(), None),
    };
    let quotas = state.0.config.quotas.clone();
    let purge_state = state.clone();
    // A push writes one feed: its folder's writers take turns (across processes too).
    let scope = job.pushed().map(|(feed, _)| scope_of(feed));
    let keyring = move || ring.unwrap_or_else(|| keys.keyring());
    let work = move |r: &mut mesh_core::replica::Replica<mesh_store::AnyStore>,
                     keyring: std::sync::Arc<dyn trust::Keyring + Send + Sync>| {
        // The first write to a folder's members feed creates the folder.
        if let Some((feed, n)) = job.pushed() {
            let members = n > 0 && feed.name.as_str() == names::MEMBERS;
            if let (true, Scope::Folder(f)) = (members, &feed.scope) {
                if let Err(e) = crate::quota::check_new_folder(r, &quotas, &user, f)? {
                    return Ok(Err(e));
                }
            }
        }
        // Where the pushed feed stood: a small push's changes travel in its notification.
        let before = match job.pushed() {
            Some((feed, n)) => changes.before(r.store(), feed, n)?,
            None => None,
        };
        let pusher = Pusher::new(&user, &*keyring)
            .with_threads(verify_threads())
            .with_checked(&checked);
        let response = match job {
            // Entries pulled go out as the store keeps them, not decoded and encoded again.
            Job::Other(Request::Pull {
                from,
                feed,
                since,
                limit,
            }) => Answer::Changes(guard::pull_as(r, &user, &from, feed, since, limit)?),
            Job::Other(request) => Answer::Message(guard::respond_as(r, pusher, request)?),
            Job::Push {
                from,
                feed,
                entries,
            } => Answer::Message(guard::answer_push(r, pusher, &from, feed, entries)?),
        };
        if let Answer::Message(SyncResponse::Pushed { feed, results }) = &response {
            if let (names::INFO, Scope::Folder(f)) = (feed.name.as_str(), &feed.scope) {
                if results.iter().any(|x| x.outcome.changed()) {
                    // The folder record may have become a tombstone: the folder is gone.
                    crate::purge::if_deleted(r, &purge_state.0.blobs, f)?;
                }
            }
            if results.iter().any(|x| x.outcome.changed()) {
                // Announced under the lock, so announcements leave in change order.
                changes.written(r.store(), feed, before, Some(&device))?;
            }
        }
        let merged = match &response {
            Answer::Message(SyncResponse::Pushed { results, .. }) => {
                results.iter().filter(|x| x.outcome.changed()).count()
            }
            _ => 0,
        };
        Ok::<_, mesh_core::CoreError>(Ok((response, merged)))
    };
    let (mut response, merged) = match scope {
        Some(scope) => state.run_scoped(scope, keyring, work).await???,
        None => state.run_after(keyring, work).await???,
    };
    if let Answer::Message(SyncResponse::Feeds { epoch, .. }) = &mut response {
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
    // Where the next page starts, said in a header too, so that the device can ask for it
    // before it has read this one (see `docs/protocol.md`, "Asking ahead").
    let next_page = match &response {
        Answer::Changes(page) if page.more => Some(page.next),
        _ => None,
    };
    let small = small_answer(&response);
    if let (Some(next), false) = (next_page, small) {
        // A large page with more after it: its headers leave now, and the device asks for the
        // next page while this one is encoded and compressed.
        tracing::debug!(kind, ?t_parse, ?t_respond, "sync, its page to follow");
        let mut answer =
            encoding::answer_later(compress_answer, move || serde_json::to_vec(&response));
        answer
            .headers_mut()
            .insert(MESH_NEXT, HeaderValue::from(next.0));
        return Ok(answer);
    }
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
            if let Some(next) = next_page {
                answer
                    .headers_mut()
                    .insert(MESH_NEXT, HeaderValue::from(next.0));
            }
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

/// The header of a pull's answer that says where the next page starts, when more follow.
const MESH_NEXT: &str = "mesh-next";

/// A sync request as the work under the lock takes it.
enum Job {
    /// A large push, its signatures checked and its entries' JSON made ahead.
    Push {
        from: ReplicaId,
        feed: FeedKey,
        entries: Vec<Incoming>,
    },
    /// Any other request, small pushes included.
    Other(Request),
}

impl Job {
    /// The feed a push writes, and how many entries it pushes.
    fn pushed(&self) -> Option<(&FeedKey, usize)> {
        match self {
            Job::Push { feed, entries, .. } => Some((feed, entries.len())),
            Job::Other(Request::Push { feed, entries, .. }) => Some((feed, entries.len())),
            Job::Other(Request::PushEncoded { feed, entries, .. }) => Some((feed, entries.len())),
            Job::Other(_) => None,
        }
    }
}

/// The most bytes of JSON a request may have to be parsed on the async thread that took it.
const INLINE: usize = 64 << 10;

/// The most items (push results, entries, feeds) of an answer encoded on the async thread
/// that took the request.
const SMALL_ITEMS: usize = 64;

/// What the hub answers a sync request: a message, or a pull's changes as its store keeps
/// them (which the client reads as [`SyncResponse::Changes`]).
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Answer {
    Message(SyncResponse),
    Changes(EncodedChanges),
}

/// Whether `response` is small enough to be encoded (and compressed) on the async thread:
/// a hand-off to the blocking pool costs more than that for one entry's answer.
fn small_answer(response: &Answer) -> bool {
    let response = match response {
        Answer::Changes(page) => {
            return page.entries.len() <= SMALL_ITEMS
                && page.entries.iter().map(|e| e.get().len()).sum::<usize>() <= INLINE
        }
        Answer::Message(m) => m,
    };
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

/// How many threads check the signatures of one push: the machine's cores, looked up once
/// (the standard library reads the process's cgroup files for it on every call, tens of
/// microseconds on Linux: a third of a one-entry push's work outside its commit).
pub(crate) fn verify_threads() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;

    use mesh_core::id::{DeviceId, UserId};
    use mesh_core::replica::Replica;
    use mesh_store::accounts::{AccountStore, AddDevice, DeviceRow, SqliteAccounts};
    use mesh_store::{AnyStore, BlobStore, StoreConfig};

    use crate::accounts::Accounts;
    use crate::state::{Backend, HubConfig, HubState};

    /// Accounts whose `version` waits while the gate is closed: a PostgreSQL round trip, or
    /// a lock held by another request, that takes long.
    #[derive(Debug)]
    struct Gated {
        inner: SqliteAccounts,
        closed: Mutex<bool>,
        opened: Condvar,
        waiting: AtomicUsize,
    }

    type R<T> = mesh_store::Result<T>;

    impl AccountStore for GatedHandle {
        fn version(&self) -> R<i64> {
            let mut closed = self.0.closed.lock().unwrap();
            if *closed {
                self.0.waiting.fetch_add(1, Ordering::SeqCst);
            }
            // Bounded: a test that fails must not hang.
            for _ in 0..30 {
                if !*closed {
                    break;
                }
                closed = self
                    .0
                    .opened
                    .wait_timeout(closed, Duration::from_secs(1))
                    .unwrap()
                    .0;
            }
            drop(closed);
            self.0.inner.version()
        }
        fn add_user(&self, u: &UserId, at: i64) -> R<bool> {
            self.0.inner.add_user(u, at)
        }
        fn has_user(&self, u: &UserId) -> R<bool> {
            self.0.inner.has_user(u)
        }
        fn users(&self) -> R<Vec<UserId>> {
            self.0.inner.users()
        }
        fn add_device(
            &self,
            u: &UserId,
            d: &DeviceId,
            name: &str,
            kind: &str,
            at: i64,
            token_hash: &str,
            by: Option<&DeviceId>,
        ) -> R<AddDevice> {
            self.0
                .inner
                .add_device(u, d, name, kind, at, token_hash, by)
        }
        fn add_code(&self, u: &UserId, by: &DeviceId, hash: &str, until: i64) -> R<bool> {
            self.0.inner.add_code(u, by, hash, until)
        }
        fn redeem_code(&self, hash: &str, now: i64) -> R<Option<(UserId, DeviceId)>> {
            self.0.inner.redeem_code(hash, now)
        }
        fn confirm_device(&self, d: &DeviceId) -> R<bool> {
            self.0.inner.confirm_device(d)
        }
        fn request_revocation(&self, t: &DeviceId, by: &DeviceId, at: i64) -> R<Vec<DeviceId>> {
            self.0.inner.request_revocation(t, by, at)
        }
        fn remove_user(&self, u: &UserId, at: i64) -> R<Option<Vec<DeviceId>>> {
            self.0.inner.remove_user(u, at)
        }
        fn touch(&self, seen: &[(DeviceId, i64)]) -> R<()> {
            self.0.inner.touch(seen)
        }
        fn add_token(&self, d: &DeviceId, hash: &str, at: i64) -> R<bool> {
            self.0.inner.add_token(d, hash, at)
        }
        fn revoke_device(&self, d: &DeviceId, at: i64) -> R<Option<UserId>> {
            self.0.inner.revoke_device(d, at)
        }
        fn principal(&self, hash: &str) -> R<Option<(UserId, DeviceId)>> {
            self.0.inner.principal(hash)
        }
        fn is_live(&self, u: &UserId, d: &DeviceId) -> R<bool> {
            self.0.inner.is_live(u, d)
        }
        fn devices(&self, u: &UserId) -> R<Vec<DeviceRow>> {
            self.0.inner.devices(u)
        }
        fn all_devices(&self) -> R<Vec<DeviceRow>> {
            self.0.inner.all_devices()
        }
        fn set_certificate(&self, d: &DeviceId, body: &str, at: i64) -> R<()> {
            self.0.inner.set_certificate(d, body, at)
        }
        fn key(&self, name: &str) -> R<Option<String>> {
            self.0.inner.key(name)
        }
        fn init_key(&self, name: &str, value: &str) -> R<String> {
            self.0.inner.init_key(name, value)
        }
    }

    /// Reading the keyring checks the accounts' version: a query on PostgreSQL. A sync
    /// request reads it on a blocking thread, so a slow one never holds the thread that
    /// serves every other request (here the only one: a current-thread runtime).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_accounts_store_never_holds_the_async_threads() {
        let gated = Arc::new(Gated {
            inner: SqliteAccounts::in_memory().unwrap(),
            closed: Mutex::new(false),
            opened: Condvar::new(),
            waiting: AtomicUsize::new(0),
        });
        let accounts = Accounts::over(Box::new(GatedHandle(gated.clone()))).unwrap();
        let ann: UserId = "ann".parse().unwrap();
        accounts.add_user(&ann).unwrap();
        let token = accounts
            .add_device(&ann, &"laptop".parse().unwrap(), "L", "laptop")
            .unwrap();
        let id: mesh_core::id::ReplicaId = "hub-test".parse().unwrap();
        let store = AnyStore::open(&StoreConfig::Memory, id.clone()).unwrap();
        let state = HubState::new(
            Backend::Local(Box::new(std::sync::Mutex::new(Replica::new(store)))),
            0,
            id,
            BlobStore::memory(),
            Arc::new(accounts),
            HubConfig::default(),
            None,
        );
        // The hub on a runtime of one thread of its own.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, crate::api::router(state))
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let base = format!("http://{addr}");
        let http = reqwest::Client::new();
        *gated.closed.lock().unwrap() = true;
        let sync = tokio::spawn({
            let (http, url, token) = (http.clone(), format!("{base}/mesh/sync"), token.clone());
            async move {
                http.post(url)
                    .bearer_auth(token)
                    .json(&serde_json::json!({"type": "feeds", "from": "laptop"}))
                    .send()
                    .await
                    .map(|r| r.status())
            }
        });
        // The request has reached the accounts (bounded wait).
        let reached = tokio::time::timeout(Duration::from_secs(10), async {
            while gated.waiting.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(reached.is_ok(), "the sync request never read the keyring");
        let health = tokio::time::timeout(
            Duration::from_secs(5),
            http.get(format!("{base}/health")).send(),
        )
        .await;
        *gated.closed.lock().unwrap() = false;
        gated.opened.notify_all();
        assert!(
            matches!(health, Ok(Ok(ref r)) if r.status().is_success()),
            "the hub's only async thread waited for the accounts: {health:?}"
        );
        assert_eq!(sync.await.unwrap().unwrap(), reqwest::StatusCode::OK);
        let _ = stop.send(());
        server.join().unwrap();
    }

    /// The gated store, shared with the test that opens and closes the gate.
    #[derive(Debug)]
    struct GatedHandle(Arc<Gated>);
}
