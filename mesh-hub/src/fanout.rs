//! Notifications across hub processes that share one PostgreSQL database.
//!
//! Every commit that changes feeds sends `NOTIFY mesh_changes` with `<seq> <head> <feed>` for
//! each (the replica-wide number of the feed's latest change, its head, its key), delivered to
//! every process in commit order, which is the order of those numbers (see
//! `mesh_store::postgres`). This task turns them into the process's own change broadcast, so
//! a write through any process reaches the streams held by all of them; revocations arrive the
//! same way on `mesh_revoked`. When the listening connection drops, the task reconnects with
//! backoff and first announces every feed that moved after the last number it announced:
//! nothing committed while it was away is missed.

use std::sync::Weak;
use std::time::Duration;

use mesh_core::model::FeedKey;
use mesh_core::store::{Cursor, FeedMoved, Store};
use mesh_store::postgres::{PgDatabase, PgListener, CHANGES_CHANNEL, REVOKED_CHANNEL};
use tokio::sync::watch;

use crate::state::{Backend, HubState, Inner};

/// The longest wait between two attempts to listen again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Starts the task (once per hub; only for a PostgreSQL backend, on a tokio runtime).
pub(crate) fn start(state: &HubState) {
    let Backend::Postgres(db) = &state.0.backend else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if state.0.fanout.set(()).is_err() {
        return;
    }
    // A weak handle, taken only while announcing (never across an await): the task never
    // keeps a stopped hub (and a data directory's lock) alive.
    let weak = std::sync::Arc::downgrade(&state.0);
    runtime.spawn(run(
        db.clone(),
        weak,
        state.0.shutdown.subscribe(),
        state.0.opened_at,
    ));
}

/// Announces `moved` to this process's streams; `false` once the hub is gone.
fn announce(hub: &Weak<Inner>, moved: FeedMoved) -> bool {
    let Some(inner) = hub.upgrade() else {
        return false;
    };
    inner.readers.changed(&moved.feed);
    let _ = inner.changes.send(moved.into());
    true
}

async fn run(
    db: PgDatabase,
    hub: Weak<Inner>,
    mut shutdown: watch::Receiver<bool>,
    opened_at: u64,
) {
    // Announce everything after the position the hub opened at, even what commits before the
    // first LISTEN is in place (the first connection resyncs from there).
    let mut pos: Option<u64> = Some(opened_at);
    let (changes_channel, revoked_channel) =
        (db.channel(CHANGES_CHANNEL), db.channel(REVOKED_CHANNEL));
    let mut backoff = Duration::from_millis(50);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let d = db.clone();
        let channels = [changes_channel.clone(), revoked_channel.clone()];
        let listening = tokio::task::spawn_blocking(move || {
            PgListener::listen(&d, &[&channels[0], &channels[1]])
        })
        .await;
        let mut listener = match listening {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, ?backoff, "cannot listen for changes; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(_) => return,
        };
        backoff = Duration::from_millis(50);
        // What committed before we listened (or while we were away).
        let d = db.clone();
        let heads = tokio::task::spawn_blocking(move || -> Result<Vec<FeedMoved>, String> {
            let store = d.store().map_err(|e| e.to_string())?;
            store.moved_feeds().map_err(|e| e.to_string())
        })
        .await;
        let Ok(Ok(mut heads)) = heads else {
            tracing::warn!("cannot read the feeds' heads; listening again");
            continue;
        };
        heads.sort_by_key(|m| m.seq);
        let top = heads.last().map_or(0, |m| m.seq);
        if let Some(p) = pos {
            for moved in heads.into_iter().filter(|m| m.seq > p) {
                if !announce(&hub, moved) {
                    return;
                }
            }
        }
        pos = Some(pos.map_or(top, |p| p.max(top)));
        loop {
            tokio::select! {
                notice = listener.recv() => {
                    let Some(n) = notice else { break };
                    if n.channel == revoked_channel {
                        if let Ok(device) = n.payload.parse() {
                            let Some(inner) = hub.upgrade() else { return };
                            let _ = inner.revoked.send(device);
                        }
                        continue;
                    }
                    let Some(moved) = parse(&n.payload) else {
                        tracing::warn!(payload = %n.payload, "unreadable change notification");
                        continue;
                    };
                    // Covered already by the heads read when listening began.
                    if pos.is_some_and(|p| moved.seq <= p) {
                        continue;
                    }
                    pos = Some(moved.seq);
                    if !announce(&hub, moved) {
                        return;
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
        tracing::warn!("the change listener's connection ended; listening again");
    }
}

/// `<seq> <head> <feed key>`.
fn parse(payload: &str) -> Option<FeedMoved> {
    let (seq, rest) = payload.split_once(' ')?;
    let (head, feed) = rest.split_once(' ')?;
    Some(FeedMoved {
        feed: feed.parse::<FeedKey>().ok()?,
        head: Cursor(head.parse().ok()?),
        seq: seq.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_or_are_refused() {
        let m = parse("42 7 folder:f/notes").unwrap();
        assert_eq!(
            (m.seq, m.head, m.feed.to_string().as_str()),
            (42, Cursor(7), "folder:f/notes")
        );
        for bad in [
            "",
            "42",
            "42 folder:f/notes",
            "x 7 folder:f/notes",
            "42 x folder:f/notes",
            "42 7 not a feed",
            "-1 7 folder:f/notes",
            "42 -7 folder:f/notes",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }
}
