//! Change notifications: server-sent events and long-poll, resumable from a cursor; and the
//! opaque cursors of the REST API.
//!
//! A notification says that a feed the caller may read has a new head. Its cursor (the SSE
//! event id, or the long-poll answer's `cursor`) is the hub's change position it covers:
//! reconnecting with it (`?cursor=` or `Last-Event-ID`) first replays every readable feed
//! that moved since, then goes on live. Changes are broadcast under the replica's lock, so they
//! leave in change order and a cursor never runs ahead of a notification not yet sent.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::header::ACCEPT;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream;
use mesh_core::id::{DeviceId, ReplicaId, UserId};
use mesh_core::model::{names, FeedKey, Scope};
use mesh_core::store::{Cursor, Store};
use mesh_core::sync::guard;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};

use crate::api::{json, Auth};
use crate::error::ApiError;
use crate::state::{Changed, HubState, StreamGuard};

/// What cursors are authenticated with: the hub replica they belong to and the hub's secret
/// (kept in its data directory), so that nobody without the secret can make one.
#[derive(Clone)]
pub(crate) struct CursorKey {
    pub replica: ReplicaId,
    pub secret: [u8; 32],
    /// The hub's epoch and the earlier ones it continues (see `crate::epoch`), newest first:
    /// cursors are issued in the first and accepted from any (empty: a hub with no epochs).
    pub epochs: Vec<String>,
}

fn tag(key: &CursorKey, epoch: Option<&str>, scope: &str, seq: u64) -> String {
    let mut h = blake3::Hasher::new_keyed(&key.secret);
    h.update(key.replica.as_str().as_bytes());
    h.update(&[0]);
    if let Some(epoch) = epoch {
        // A cursor of an epoch a restored hub does not continue names changes it may lack.
        h.update(b"epoch:");
        h.update(epoch.as_bytes());
        h.update(&[0]);
    }
    h.update(scope.as_bytes());
    h.update(&[0]);
    h.update(&seq.to_be_bytes());
    h.finalize().as_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An opaque cursor: a change position, bound to this hub replica and to `scope` (a feed key,
/// or `*` for notifications), authenticated with the hub's secret.
pub(crate) fn encode_cursor(key: &CursorKey, scope: &str, seq: Cursor) -> String {
    let epoch = key.epochs.first().map(String::as_str);
    format!("{:x}-{}", seq.0, tag(key, epoch, scope, seq.0))
}

/// Reads back a cursor made by [`encode_cursor`] for the same replica and scope.
pub(crate) fn decode_cursor(key: &CursorKey, scope: &str, text: &str) -> Result<Cursor, ApiError> {
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
            "the cursor is malformed, or was issued for another feed or another hub replica; start again without one",
        )
    };
    let (seq, t) = text.split_once('-').ok_or_else(bad)?;
    if seq.is_empty() || seq.len() > 16 {
        return Err(bad());
    }
    let seq = u64::from_str_radix(seq, 16).map_err(|_| bad())?;
    let valid = if key.epochs.is_empty() {
        same(tag(key, None, scope, seq).as_bytes(), t.as_bytes())
    } else {
        // Bounded: an epoch continues at most `MAX_CONTINUED_EPOCHS` others.
        key.epochs
            .iter()
            .any(|e| same(tag(key, Some(e), scope, seq).as_bytes(), t.as_bytes()))
    };
    if !valid {
        return Err(bad());
    }
    Ok(Cursor(seq))
}

/// Compares a tag in time independent of where it differs.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Serialize)]
struct Note<'a> {
    feed: &'a FeedKey,
    head: Cursor,
}

#[derive(Serialize)]
struct LongPoll<'a> {
    cursor: String,
    changes: Vec<Note<'a>>,
}

enum Item {
    Change(FeedKey, Cursor),
    Heartbeat,
    Revoked,
}

/// One open watch (an SSE stream or a long-poll) of one device.
struct Watcher {
    state: HubState,
    user: UserId,
    device: DeviceId,
    token: String,
    rx: broadcast::Receiver<Changed>,
    revoked: broadcast::Receiver<DeviceId>,
    shutdown: watch::Receiver<bool>,
    visible: HashMap<FeedKey, bool>,
    pending: VecDeque<(FeedKey, Cursor)>,
    pos: Cursor,
    heartbeat: tokio::time::Interval,
    _guard: StreamGuard,
    done: bool,
}

/// Readable feeds with a head after `since`, in head order, and the replica's newest position.
async fn backlog(
    state: &HubState,
    user: &UserId,
    since: Option<Cursor>,
) -> Result<(Vec<(FeedKey, Cursor)>, Cursor), ApiError> {
    let user = user.clone();
    state
        .run(move |r| {
            let mut global = Cursor::ZERO;
            let mut out = Vec::new();
            for h in r.store().feeds()? {
                global = global.max(h.head);
                if let Some(s) = since {
                    if h.head > s && guard::can_read(r.store(), &user, &h.feed)? {
                        out.push((h.feed, h.head));
                    }
                }
            }
            out.sort_by_key(|(_, h)| *h);
            Ok::<_, mesh_core::CoreError>((out, global))
        })
        .await?
        .map_err(ApiError::from)
}

impl Watcher {
    async fn visible(&mut self, feed: &FeedKey) -> bool {
        if let Scope::Mesh(owner) = &feed.scope {
            return owner == &self.user;
        }
        if let Some(v) = self.visible.get(feed) {
            return *v;
        }
        // The folder's roster is shared by every stream of this process.
        let v = match self.state.0.readers.lookup(&self.user, feed) {
            Ok(v) => v,
            Err(generation) => {
                let f = feed.clone();
                match self
                    .state
                    .run(move |r| guard::Roster::load(r.store(), &f))
                    .await
                {
                    Ok(Ok(roster)) => {
                        let v = roster.can_read(&self.user, feed);
                        if let Scope::Folder(folder) = &feed.scope {
                            self.state.0.readers.store(folder, generation, roster);
                        }
                        v
                    }
                    _ => false,
                }
            }
        };
        self.visible.insert(feed.clone(), v);
        v
    }

    async fn still_authorized(&self) -> bool {
        let (token, device) = (self.token.clone(), self.device.clone());
        matches!(
            self.state.accounts(move |a| a.authenticate(&token)).await,
            Ok(Ok(Some(p))) if p.device == device
        )
    }

    async fn next(&mut self) -> Option<Item> {
        if self.done {
            return None;
        }
        if let Some((feed, head)) = self.pending.pop_front() {
            self.pos = self.pos.max(head);
            return Some(Item::Change(feed, head));
        }
        loop {
            if *self.shutdown.borrow() {
                return None;
            }
            tokio::select! {
                _ = self.shutdown.changed() => return None,
                d = self.revoked.recv() => match d {
                    Ok(d) if d == self.device => return Some(Item::Revoked),
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {
                        if !self.still_authorized().await {
                            return Some(Item::Revoked);
                        }
                    }
                    Err(RecvError::Closed) => return None,
                },
                c = self.rx.recv() => match c {
                    Ok(c) => {
                        if c.feed.name.as_str() == names::MEMBERS {
                            self.visible.clear();
                        }
                        if c.head > self.pos && self.visible(&c.feed).await {
                            self.pos = c.head;
                            return Some(Item::Change(c.feed, c.head));
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        // Missed some: replay from the store what moved since our position.
                        self.visible.clear();
                        let (back, _) = backlog(&self.state, &self.user, Some(self.pos)).await.ok()?;
                        self.pending.extend(back);
                        if let Some((feed, head)) = self.pending.pop_front() {
                            self.pos = self.pos.max(head);
                            return Some(Item::Change(feed, head));
                        }
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = self.heartbeat.tick() => {
                    // Catches revocations made outside this process (the admin command).
                    if !self.still_authorized().await {
                        return Some(Item::Revoked);
                    }
                    return Some(Item::Heartbeat);
                }
            }
        }
    }
}

fn sse_event(w: &Watcher, item: Item) -> Event {
    let key = w.state.cursor_key();
    match item {
        Item::Change(feed, head) => {
            let data = serde_json::to_string(&Note { feed: &feed, head }).unwrap_or_default();
            Event::default()
                .event("change")
                .id(encode_cursor(&key, "*", w.pos))
                .data(data)
        }
        Item::Heartbeat => Event::default().comment("heartbeat"),
        Item::Revoked => Event::default()
            .event("revoked")
            .data(r#"{"code":"unauthorized","message":"this device was revoked"}"#),
    }
}

pub(crate) async fn notifications(
    State(state): State<HubState>,
    auth: Auth,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let key = state.cursor_key();
    let cursor_text = q.get("cursor").cloned().or_else(|| {
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let since = cursor_text
        .filter(|c| !c.is_empty())
        .map(|c| decode_cursor(&key, "*", &c))
        .transpose()?;
    let max_wait = state.0.config.long_poll_max;
    let wait = match q.get("wait") {
        None => max_wait.min(Duration::from_secs(30)),
        Some(w) => match w.parse::<u64>() {
            Ok(s) => Duration::from_secs(s).min(max_wait),
            Err(_) => return Err(ApiError::bad_request("wait must be a number of seconds")),
        },
    };
    let sse = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));

    // Subscribe before looking at the store, so that nothing falls in between.
    let rx = state.0.changes.subscribe();
    let revoked = state.0.revoked.subscribe();
    let shutdown = state.0.shutdown.subscribe();
    let user = auth.principal.user.clone();
    let (back, global) = backlog(&state, &user, since).await?;
    let period = state.0.config.heartbeat;
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut w = Watcher {
        _guard: StreamGuard::new(&state, &auth.principal.device),
        state,
        user,
        device: auth.principal.device,
        token: auth.token,
        rx,
        revoked,
        shutdown,
        visible: HashMap::new(),
        pending: back.into(),
        pos: since.unwrap_or(global),
        heartbeat,
        done: false,
    };

    if sse {
        let s = stream::unfold(w, |mut w| async move {
            let item = w.next().await?;
            if matches!(item, Item::Revoked) {
                w.done = true;
            }
            let ev = sse_event(&w, item);
            Some((Ok::<_, Infallible>(ev), w))
        });
        return Ok(Sse::new(s).into_response());
    }

    // Long-poll: answer at once with what is pending, or wait for the first change.
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes: Vec<(FeedKey, Cursor)> = w.pending.drain(..).collect();
    if let Some((_, h)) = changes.last() {
        w.pos = w.pos.max(*h);
    }
    while changes.is_empty() {
        match tokio::time::timeout_at(deadline, w.next()).await {
            Ok(Some(Item::Change(f, h))) => changes.push((f, h)),
            Ok(Some(Item::Heartbeat)) => {}
            Ok(Some(Item::Revoked)) => return Err(ApiError::unauthorized()),
            Ok(None) | Err(_) => break,
        }
    }
    let body = LongPoll {
        cursor: encode_cursor(&w.state.cursor_key(), "*", w.pos),
        changes: changes
            .iter()
            .map(|(feed, head)| Note { feed, head: *head })
            .collect(),
    };
    Ok(json(StatusCode::OK, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_forgeries() {
        use sha2::{Digest, Sha256};
        let key = |replica: &str, secret: u8| CursorKey {
            replica: replica.parse().unwrap(),
            secret: [secret; 32],
            epochs: Vec::new(),
        };
        let r = key("hub-1", 1);
        let c = encode_cursor(&r, "folder:f/todos", Cursor(42));
        assert_eq!(decode_cursor(&r, "folder:f/todos", &c).unwrap(), Cursor(42));
        assert!(decode_cursor(&r, "folder:f/other", &c).is_err());
        assert!(decode_cursor(&key("hub-2", 1), "folder:f/todos", &c).is_err());
        // The same replica with another secret (another hub's, or a guess) refuses it.
        assert!(decode_cursor(&key("hub-1", 2), "folder:f/todos", &c).is_err());
        // The tag of the old, unkeyed scheme (anyone could compute it) is refused.
        let mut h = Sha256::new();
        h.update(b"hub-1\0folder:f/todos\0");
        h.update(42u64.to_be_bytes());
        let old: String = h.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(decode_cursor(&r, "folder:f/todos", &format!("2a-{old}")).is_err());
        for bad in [
            "",
            "-",
            "2a",
            "2a-",
            "zz-000000000000",
            "2b-".to_owned().as_str(),
            &c.replace("2a-", "2b-"),
        ] {
            assert_eq!(
                decode_cursor(&r, "folder:f/todos", bad).unwrap_err().code,
                "invalid_cursor"
            );
        }
    }

    #[test]
    fn cursors_hold_across_continued_epochs_only() {
        let key = |epochs: &[&str]| CursorKey {
            replica: "hub-1".parse().unwrap(),
            secret: [7; 32],
            epochs: epochs.iter().map(|e| e.to_string()).collect(),
        };
        let c = encode_cursor(&key(&["e1"]), "*", Cursor(9));
        assert_eq!(decode_cursor(&key(&["e1"]), "*", &c).unwrap(), Cursor(9));
        // A later epoch that continues e1 takes it; one that does not (a restored copy) refuses.
        assert_eq!(
            decode_cursor(&key(&["e2", "e1"]), "*", &c).unwrap(),
            Cursor(9)
        );
        assert!(decode_cursor(&key(&["e3", "e0"]), "*", &c).is_err());
        assert!(decode_cursor(&key(&[]), "*", &c).is_err());
        // A cursor of a hub with no epochs is not one of an epoch.
        let plain = encode_cursor(&key(&[]), "*", Cursor(9));
        assert!(decode_cursor(&key(&["e1"]), "*", &plain).is_err());
    }
}
