//! Notifications across hub processes that share one PostgreSQL database.
//!
//! Every commit that changes feeds sends `NOTIFY mesh_changes` with `<head> <feed>` for each,
//! delivered to every process in commit order, which is sequence order (see
//! `mesh_store::postgres`). This task turns them into the process's own change broadcast, so
//! a write through any process reaches the streams held by all of them; revocations arrive the
//! same way on `mesh_revoked`. When the listening connection drops, the task reconnects with
//! backoff and first announces every feed whose head moved past the last position it
//! announced: nothing committed while it was away is missed.

use std::time::Duration;

use mesh_core::model::FeedKey;
use mesh_core::store::{Cursor, Store};
use mesh_store::postgres::{PgDatabase, PgListener, CHANGES_CHANNEL, REVOKED_CHANNEL};

use crate::state::{Backend, Changed, HubState};

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
    runtime.spawn(run(db.clone(), state.clone()));
}

async fn run(db: PgDatabase, state: HubState) {
    let mut shutdown = state.0.shutdown.subscribe();
    // Announce everything after the position the hub opened at, even what commits before the
    // first LISTEN is in place (the first connection resyncs from there).
    let mut pos: Option<Cursor> = Some(state.0.opened_at);
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
        let heads =
            tokio::task::spawn_blocking(move || -> Result<Vec<(Cursor, FeedKey)>, String> {
                let store = d.store().map_err(|e| e.to_string())?;
                let feeds = store.feeds().map_err(|e| e.to_string())?;
                Ok(feeds.into_iter().map(|h| (h.head, h.feed)).collect())
            })
            .await;
        let Ok(Ok(mut heads)) = heads else {
            tracing::warn!("cannot read the feeds' heads; listening again");
            continue;
        };
        heads.sort();
        let top = heads.last().map_or(Cursor::ZERO, |h| h.0);
        if let Some(p) = pos {
            for (head, feed) in heads.into_iter().filter(|h| h.0 > p) {
                state.0.readers.changed(&feed);
                let _ = state.0.changes.send(Changed { feed, head });
            }
        }
        pos = Some(pos.map_or(top, |p| p.max(top)));
        loop {
            tokio::select! {
                notice = listener.recv() => {
                    let Some(n) = notice else { break };
                    if n.channel == revoked_channel {
                        if let Ok(device) = n.payload.parse() {
                            let _ = state.0.revoked.send(device);
                        }
                        continue;
                    }
                    let Some((head, feed)) = parse(&n.payload) else {
                        tracing::warn!(payload = %n.payload, "unreadable change notification");
                        continue;
                    };
                    // Covered already by the heads read when listening began.
                    if pos.is_some_and(|p| head <= p) {
                        continue;
                    }
                    pos = Some(head);
                    state.0.readers.changed(&feed);
                    let _ = state.0.changes.send(Changed { feed, head });
                }
                _ = shutdown.changed() => return,
            }
        }
        tracing::warn!("the change listener's connection ended; listening again");
    }
}

/// `<head> <feed key>`.
fn parse(payload: &str) -> Option<(Cursor, FeedKey)> {
    let (head, feed) = payload.split_once(' ')?;
    Some((Cursor(head.parse().ok()?), feed.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_or_are_refused() {
        let (h, f) = parse("42 folder:f/notes").unwrap();
        assert_eq!((h, f.to_string().as_str()), (Cursor(42), "folder:f/notes"));
        for bad in [
            "",
            "42",
            "x folder:f/notes",
            "42 not a feed",
            "-1 folder:f/notes",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }
}
