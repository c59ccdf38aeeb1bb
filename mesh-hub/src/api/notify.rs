//! Change notifications: server-sent events and long-poll, resumable from a cursor; and the
//! opaque cursors of the REST API.
//!
//! A notification says that a feed the caller may read has a new head (a position in that
//! feed, counted per feed). Its cursor (the SSE event id, or the long-poll answer's `cursor`)
//! covers every change of the hub up to a replica-wide number: reconnecting with it
//! (`?cursor=` or `Last-Event-ID`) first replays every readable feed that moved since, then
//! goes on live. Changes are broadcast under the replica's lock, so they leave in change order
//! and a cursor never runs ahead of a notification not yet sent.
//!
//! The replica-wide number counts every user's writes, so a cursor carries it encrypted, not
//! only authenticated: its text is the number XORed with a keystream drawn from the hub's
//! secret and the cursor's tag, then the tag (a synthetic-IV construction). Nobody without the
//! secret learns the number, or how far two cursors lie apart, or can make a cursor.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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
use serde_json::value::RawValue;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};

use crate::api::{encoding, json_bytes, Auth};
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

fn tag(key: &CursorKey, epoch: Option<&str>, scope: &str, seq: u64) -> [u8; 16] {
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
    let mut out = [0; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

/// The 8 bytes a cursor's number is XORed with: drawn from the hub's secret (under a key of
/// its own) and the cursor's tag, which differs for every number, scope and epoch.
fn keystream(key: &CursorKey, tag: &[u8; 16]) -> [u8; 8] {
    let k = blake3::derive_key("mesh-hub 2026 cursor number encryption v1", &key.secret);
    let mut out = [0; 8];
    out.copy_from_slice(&blake3::keyed_hash(&k, tag).as_bytes()[..8]);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `N` bytes from exactly `2N` lowercase or uppercase hex digits.
fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != 2 * N || !text.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0; N];
    for (o, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *o = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// An opaque cursor: a number (a feed position, or the replica-wide number for
/// notifications), bound to this hub replica and to `scope` (a feed key, or `*` for
/// notifications), encrypted and authenticated with the hub's secret.
pub(crate) fn encode_cursor(key: &CursorKey, scope: &str, seq: Cursor) -> String {
    let epoch = key.epochs.first().map(String::as_str);
    let t = tag(key, epoch, scope, seq.0);
    let ks = keystream(key, &t);
    let mut sealed = seq.0.to_be_bytes();
    for (b, k) in sealed.iter_mut().zip(ks) {
        *b ^= k;
    }
    format!("{}-{}", hex(&sealed), hex(&t))
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
    let (sealed, t) = text.split_once('-').ok_or_else(bad)?;
    let sealed = unhex::<8>(sealed).ok_or_else(bad)?;
    let t = unhex::<16>(t).ok_or_else(bad)?;
    let mut seq = sealed;
    for (b, k) in seq.iter_mut().zip(keystream(key, &t)) {
        *b ^= k;
    }
    let seq = u64::from_be_bytes(seq);
    let valid = if key.epochs.is_empty() {
        same(&tag(key, None, scope, seq), &t)
    } else {
        // Bounded: an epoch continues at most `MAX_CONTINUED_EPOCHS` others.
        key.epochs
            .iter()
            .any(|e| same(&tag(key, Some(e), scope, seq), &t))
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
    /// A small write's changes, except to the device that pushed them (see
    /// [`crate::changed`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    changes: Option<NotePage<'a>>,
}

#[derive(Serialize)]
struct NotePage<'a> {
    since: Cursor,
    entries: &'a [Box<RawValue>],
}

impl<'a> Note<'a> {
    /// The notification of `c` for watcher `w`: with the changes if it asked for them.
    fn of(c: &'a Changed, w: &Watcher) -> Self {
        let page = w.paged.as_ref().and_then(|_| c.page_for(&w.device));
        Note {
            feed: &c.moved.feed,
            head: c.moved.head,
            changes: page.map(|p| NotePage {
                since: p.since,
                entries: &p.entries,
            }),
        }
    }
}

/// Counts a watch that asked for changes along (`?changes=1`) while it lasts.
struct Paged(Arc<AtomicUsize>);

impl Paged {
    fn new(state: &HubState) -> Paged {
        state.0.paged.fetch_add(1, Ordering::Relaxed);
        Paged(state.0.paged.clone())
    }
}

impl Drop for Paged {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Serialize)]
struct LongPoll<'a> {
    cursor: String,
    changes: Vec<Note<'a>>,
}

enum Item {
    Change(Changed),
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
    pending: VecDeque<Changed>,
    /// The replica-wide number covered so far.
    pos: u64,
    heartbeat: tokio::time::Interval,
    _guard: StreamGuard,
    /// Set when the watch asked for changes along.
    paged: Option<Paged>,
    done: bool,
}

/// Readable feeds that moved after replica-wide number `since`, in the order they moved, and
/// the replica's newest number.
async fn backlog(
    state: &HubState,
    user: &UserId,
    since: Option<u64>,
) -> Result<(Vec<Changed>, u64), ApiError> {
    let user = user.clone();
    state
        .run(move |r| {
            // The user's own feeds only: what a stream costs grows with the asker's
            // folders, not with every user's.
            let global = r.store().last_moved()?;
            let mut out = Vec::new();
            if let Some(s) = since.filter(|s| *s < global) {
                for h in guard::user_heads(r.store(), &user)? {
                    let Some(m) = r.store().feed_moved(&h.feed)? else {
                        continue;
                    };
                    if m.seq > s && guard::can_read(r.store(), &user, &m.feed)? {
                        out.push(Changed::from(m));
                    }
                }
            }
            out.sort_by_key(|m| m.moved.seq);
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
        if let Some(c) = self.pending.pop_front() {
            self.pos = self.pos.max(c.moved.seq);
            return Some(Item::Change(c));
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
                        if c.moved.feed.name.as_str() == names::MEMBERS {
                            self.visible.clear();
                        }
                        if c.moved.seq > self.pos && self.visible(&c.moved.feed).await {
                            self.pos = c.moved.seq;
                            return Some(Item::Change(c));
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        // Missed some: replay from the store what moved since our position.
                        self.visible.clear();
                        let (back, _) = backlog(&self.state, &self.user, Some(self.pos)).await.ok()?;
                        self.pending.extend(back);
                        if let Some(c) = self.pending.pop_front() {
                            self.pos = self.pos.max(c.moved.seq);
                            return Some(Item::Change(c));
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
        Item::Change(c) => {
            let data = serde_json::to_string(&Note::of(&c, w)).unwrap_or_default();
            Event::default()
                .event("change")
                .id(encode_cursor(&key, "*", Cursor(w.pos)))
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
        .map(|c| decode_cursor(&key, "*", &c).map(|c| c.0))
        .transpose()?;
    let max_wait = state.0.config.long_poll_max;
    let wait = match q.get("wait") {
        None => max_wait.min(Duration::from_secs(30)),
        Some(w) => match w.parse::<u64>() {
            Ok(s) => Duration::from_secs(s).min(max_wait),
            Err(_) => return Err(ApiError::bad_request("wait must be a number of seconds")),
        },
    };
    let paged = match q.get("changes").map(String::as_str) {
        None | Some("0") => false,
        Some("1") => true,
        Some(_) => return Err(ApiError::bad_request("changes must be 0 or 1")),
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
        paged: paged.then(|| Paged::new(&state)),
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
        let response = Sse::new(s).into_response();
        // Notifications alone are too short to gain from coding; their changes are not.
        if paged && encoding::accepts_zstd(&headers) {
            return Ok(encoding::stream_frames(response));
        }
        return Ok(response);
    }

    // Long-poll: answer at once with what is pending, or wait for the first change.
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes: Vec<Changed> = w.pending.drain(..).collect();
    if let Some(c) = changes.last() {
        w.pos = w.pos.max(c.moved.seq);
    }
    while changes.is_empty() {
        match tokio::time::timeout_at(deadline, w.next()).await {
            Ok(Some(Item::Change(c))) => changes.push(c),
            Ok(Some(Item::Heartbeat)) => {}
            Ok(Some(Item::Revoked)) => return Err(ApiError::unauthorized()),
            Ok(None) | Err(_) => break,
        }
    }
    let body = LongPoll {
        cursor: encode_cursor(&w.state.cursor_key(), "*", Cursor(w.pos)),
        changes: changes.iter().map(|c| Note::of(c, &w)).collect(),
    };
    let body = serde_json::to_vec(&body).map_err(ApiError::internal)?;
    let (body, coding) = encoding::compress(body, encoding::accepts_zstd(&headers));
    let mut answer = json_bytes(StatusCode::OK, body);
    encoding::mark(&mut answer, coding);
    Ok(answer)
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
        // The last session's format: the number in clear before the tag.
        let clear = format!("2a-{}", &c[17..]);
        // One digit changed in the sealed number, or in the tag.
        let flip = |i: usize| {
            let mut t = c.clone().into_bytes();
            t[i] = if t[i] == b'0' { b'1' } else { b'0' };
            String::from_utf8(t).unwrap()
        };
        let (sealed_flipped, tag_flipped) = (flip(3), flip(30));
        let signed = format!("+{}", &c[1..]);
        for bad in [
            "",
            "-",
            "2a",
            "2a-",
            "zz-000000000000",
            "2b-",
            &clear,
            &sealed_flipped,
            &tag_flipped,
            &signed,
            &c[1..],
            &format!("{c}0"),
        ] {
            assert_eq!(
                decode_cursor(&r, "folder:f/todos", bad).unwrap_err().code,
                "invalid_cursor",
                "{bad:?}"
            );
        }
    }

    /// A cursor's number (for notifications, a count of every user's changes) is sealed: the
    /// text of one cursor shows nothing of it, and two cursors show nothing of their distance.
    #[test]
    fn cursors_do_not_show_their_number() {
        let key = CursorKey {
            replica: "hub-1".parse().unwrap(),
            secret: [3; 32],
            epochs: vec!["e1".into()],
        };
        let sealed = |n: u64| {
            let c = encode_cursor(&key, "*", Cursor(n));
            assert_eq!(decode_cursor(&key, "*", &c).unwrap(), Cursor(n));
            let (num, tag) = c.split_once('-').unwrap();
            assert_eq!((num.len(), tag.len()), (16, 32), "fixed lengths: {c}");
            u64::from_str_radix(num, 16).unwrap()
        };
        let mut bits_apart = 0;
        for n in 1..=256u64 {
            let (a, b) = (sealed(n), sealed(n + 1));
            assert_ne!(a, n, "the number shows in clear");
            assert_ne!(
                b.wrapping_sub(a),
                1,
                "consecutive numbers show as neighbours"
            );
            bits_apart += (a ^ b).count_ones();
        }
        // Unrelated 64-bit values differ in about 32 bits; a readable or merely offset
        // number in about 2.
        let mean = f64::from(bits_apart) / 256.0;
        assert!((24.0..40.0).contains(&mean), "mean bits apart {mean}");
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
