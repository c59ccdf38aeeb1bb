//! Periodic work of a serving hub: last-seen times written to the accounts (so they survive
//! a restart), and revocations made outside this process (the admin command on the same
//! data, another hub process) noticed within [`REVOCATION_POLL`] so that the revoked devices'
//! open streams close.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use mesh_core::id::DeviceId;
use mesh_core::time::Timestamp;

use crate::state::HubState;

/// How often the accounts are checked for revocations made elsewhere.
pub(crate) const REVOCATION_POLL: Duration = Duration::from_millis(500);
/// How often last-seen times are written.
const SEEN_EVERY: u32 = 20; // polls: every 10 s
/// How often a process on PostgreSQL beats (and re-counts the processes it shares its rate
/// limits with), and how long a process counts after its last beat.
const BEAT_EVERY: u32 = 4; // polls: every 2 s
pub(crate) const BEAT_WINDOW: i64 = 6;

/// Starts the task (once per hub, on a tokio runtime).
pub(crate) fn start(state: &HubState) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if state.0.housekeeping.set(()).is_err() {
        return;
    }
    // A weak handle: the task never keeps an idle hub (and its data directory's lock) alive;
    // a round in progress holds it, so a server that stops waits for that round ([`stopped`]).
    let weak = std::sync::Arc::downgrade(&state.0);
    let task = runtime.spawn(run(weak, state.0.shutdown.subscribe()));
    *state
        .0
        .housekeeper
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(task);
}

/// Waits until the housekeeping task has ended, once the hub's shutdown was announced: a
/// round in progress (at most a few reads of the accounts) finishes first. After this the
/// task holds nothing of the hub, so a hub dropped after its server stopped lets go of its
/// data directory at once.
pub(crate) async fn stopped(state: &HubState) {
    let task = state
        .0
        .housekeeper
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(task) = task {
        let _ = task.await;
    }
}

/// Writes the last-seen times now (the hub does it when it stops serving).
pub(crate) async fn flush_now(state: &HubState) {
    let mut written = HashMap::new();
    flush_seen(state, &mut written).await;
}

async fn run(
    weak: std::sync::Weak<crate::state::Inner>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(REVOCATION_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut version: Option<i64> = None;
    let mut revoked: Option<HashSet<DeviceId>> = None;
    let mut written: HashMap<DeviceId, Timestamp> = HashMap::new();
    let mut n: u32 = 0;
    loop {
        tokio::select! {
            // A tick that is due as the hub stops starts no round.
            biased;
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        let Some(inner) = weak.upgrade() else { return };
        let state = HubState(inner);
        if n % BEAT_EVERY == 0 {
            beat(&state).await;
        }
        n = n.wrapping_add(1);
        if n % SEEN_EVERY == 0 {
            flush_seen(&state, &mut written).await;
        }
        // Revocations made elsewhere: read the devices again only when the accounts moved.
        let Ok(Ok(v)) = state.accounts(|a| a.store.version()).await else {
            continue;
        };
        if version == Some(v) {
            continue;
        }
        version = Some(v);
        let Ok(Ok(devices)) = state.accounts(|a| a.store.all_devices()).await else {
            continue;
        };
        let now: HashSet<DeviceId> = devices
            .into_iter()
            .filter(|d| d.revoked_at.is_some())
            .map(|d| d.id)
            .collect();
        if let Some(before) = &revoked {
            for d in now.difference(before) {
                let _ = state.0.revoked.send(d.clone());
            }
        }
        revoked = Some(now);
    }
}

/// On PostgreSQL: records this process's heartbeat and shares the rate limits with the
/// processes seen, so that together they never allow more than the configured rates.
async fn beat(state: &HubState) {
    let crate::state::Backend::Postgres(db) = &state.0.backend else {
        return;
    };
    let (db, id) = (db.clone(), state.0.process_id.clone());
    let now = crate::state::now().unix();
    if let Ok(Ok(n)) =
        tokio::task::spawn_blocking(move || db.heartbeat(&id, now, BEAT_WINDOW)).await
    {
        state.0.limiter.set_share(n);
    }
}

/// Writes the last-seen times that moved since the last write.
async fn flush_seen(state: &HubState, written: &mut HashMap<DeviceId, Timestamp>) {
    let moved: Vec<(DeviceId, i64)> = state
        .presence()
        .iter()
        .filter_map(|(d, p)| {
            let seen = p.last_seen?;
            (written.get(d) != Some(&seen)).then(|| (d.clone(), seen.unix()))
        })
        .collect();
    if moved.is_empty() {
        return;
    }
    let batch = moved.clone();
    if let Ok(Ok(())) = state.accounts(move |a| a.record_seen(&batch)).await {
        for (d, at) in moved {
            if let Ok(t) = Timestamp::from_unix(at) {
                written.insert(d, t);
            }
        }
    }
}
