//! The hub's epochs: what tells devices that its change log was replaced by an older copy.
//!
//! Every time a hub opens its SQLite replica it starts a new epoch (a random id, and the
//! change position it starts at); when it stops serving cleanly, after its last commit, it
//! records where the epoch ended. The sync protocol's `feeds` answer names the current epoch and
//! the earlier ones that ended cleanly ([`Epoch::continues`]): a device's cursors of those stay
//! valid. An epoch without an end is one the hub crashed in, or one that was still running
//! when the copy it was restored from was taken (a backup): devices holding its cursors start
//! over, offering everything the hub lacks. An epoch missing from the list altogether is one
//! that a restored copy never saw: the same.
//!
//! On SQLite the record lives in the replica store's `meta` table (`hub.epochs`, JSON), so it
//! travels with every copy of the replica. On PostgreSQL, where several processes serve one
//! database, an epoch is one run of the processes (`mesh_epochs`): a process that starts while
//! another is alive joins its epoch, and the epoch ends cleanly when the last one stops; a
//! restored dump holds an epoch that never ended. In memory the hub presents no epoch.

use mesh_core::store::{Cursor, Store};
use mesh_core::sync::{Epoch, MAX_CONTINUED_EPOCHS};
use mesh_store::AnyStore;
use serde::{Deserialize, Serialize};

use crate::error::HubError;
use crate::state::{Backend, HubState};

/// The `meta` key of the record.
const META_KEY: &str = "hub.epochs";

/// How many epochs the record keeps (the newest).
const KEPT: usize = MAX_CONTINUED_EPOCHS + 1;

/// One epoch of the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    id: String,
    /// The change position the epoch started after.
    start: u64,
    /// The position of its last change, once it ended cleanly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end: Option<u64>,
}

/// The replica-wide number of the newest change.
fn newest_position(store: &AnyStore) -> Result<Cursor, HubError> {
    Ok(Cursor(
        store
            .moved_feeds()?
            .iter()
            .map(|m| m.seq)
            .max()
            .unwrap_or(0),
    ))
}

fn load(store: &mesh_store::SqliteStore) -> Result<Vec<Record>, HubError> {
    let Some(text) = store.meta(META_KEY).map_err(HubError::from)? else {
        return Ok(Vec::new());
    };
    match serde_json::from_str::<Vec<Record>>(&text) {
        Ok(records) => Ok(records),
        Err(e) => {
            // Unreadable: no earlier epoch can be trusted, so none is continued (devices
            // start over once); the hub still opens.
            tracing::warn!(error = %e, "the epoch record is unreadable; starting afresh");
            Ok(Vec::new())
        }
    }
}

fn save(store: &mut mesh_store::SqliteStore, records: &[Record]) -> Result<(), HubError> {
    let text = serde_json::to_string(records).map_err(|e| HubError::Store(e.to_string()))?;
    store.set_meta(META_KEY, &text).map_err(HubError::from)
}

/// Starts a new epoch on `store` (a SQLite replica) and returns what the hub announces; `None`
/// for other stores.
pub(crate) fn begin(store: &mut AnyStore) -> Result<Option<Epoch>, HubError> {
    let start = newest_position(store)?;
    let AnyStore::Sqlite(sqlite) = store else {
        return Ok(None);
    };
    let mut records = load(sqlite)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    records.push(Record {
        id: id.clone(),
        start: start.0,
        end: None,
    });
    if records.len() > KEPT {
        records.drain(..records.len() - KEPT);
    }
    save(sqlite, &records)?;
    let continues = records
        .iter()
        .rev()
        .skip(1)
        .filter(|r| r.end.is_some())
        .map(|r| r.id.clone())
        .take(MAX_CONTINUED_EPOCHS)
        .collect();
    tracing::info!(epoch = %id, start = start.0, "epoch begun");
    Ok(Some(Epoch { id, continues }))
}

/// Records that the current epoch `epoch` ended cleanly at the store's newest position: call
/// it after the last commit of the hub's run (when it stops serving).
pub(crate) fn end(store: &mut AnyStore, epoch: &Epoch) -> Result<(), HubError> {
    let end = newest_position(store)?;
    let AnyStore::Sqlite(sqlite) = store else {
        return Ok(());
    };
    let mut records = load(sqlite)?;
    match records.iter_mut().rev().find(|r| r.id == epoch.id) {
        Some(r) => r.end = Some(end.0),
        None => return Ok(()),
    }
    save(sqlite, &records)?;
    tracing::info!(epoch = %epoch.id, end = end.0, "epoch ended cleanly");
    Ok(())
}

/// Takes back a clean end recorded for `epoch` (the hub serves again after it stopped): its
/// changes from now on are not covered by it.
pub(crate) fn resume(store: &mut AnyStore, epoch: &Epoch) -> Result<(), HubError> {
    let AnyStore::Sqlite(sqlite) = store else {
        return Ok(());
    };
    let mut records = load(sqlite)?;
    match records.iter_mut().rev().find(|r| r.id == epoch.id) {
        Some(r) if r.end.is_some() => r.end = None,
        _ => return Ok(()),
    }
    save(sqlite, &records)
}

/// Begins (or joins) the epoch of a PostgreSQL replica for process `process`.
pub(crate) fn begin_postgres(
    db: &mesh_store::postgres::PgDatabase,
    process: &str,
) -> Result<Epoch, HubError> {
    let fresh = uuid::Uuid::new_v4().simple().to_string();
    let now = crate::state::now().unix();
    let (id, continues) = db.begin_epoch(
        process,
        &fresh,
        now,
        crate::housekeeping::BEAT_WINDOW,
        MAX_CONTINUED_EPOCHS,
    )?;
    tracing::info!(epoch = %id, joined = id != fresh, "epoch begun");
    Ok(Epoch { id, continues })
}

/// The hub starts serving: changes from now on are not covered by an end recorded earlier.
pub(crate) async fn serving(state: &HubState) -> Result<(), HubError> {
    match &state.0.backend {
        Backend::Local(_) => state.with_epoch(resume).await,
        Backend::Postgres(_) => Ok(()),
    }
}

/// The hub stopped serving, after its last commit: its epoch ends cleanly (on PostgreSQL, when
/// no other process serves the database any more).
pub(crate) async fn stopped(state: &HubState) -> Result<(), HubError> {
    match &state.0.backend {
        Backend::Local(_) => state.with_epoch(end).await,
        Backend::Postgres(db) => {
            let Some(epoch) = state.0.epoch.get().cloned() else {
                return Ok(());
            };
            let (db, process) = (db.clone(), state.0.process_id.clone());
            let now = crate::state::now().unix();
            let ended = tokio::task::spawn_blocking(move || {
                db.end_epoch(&process, &epoch.id, now, crate::housekeeping::BEAT_WINDOW)
            })
            .await
            .map_err(|e| HubError::Store(format!("epoch task: {e}")))??;
            tracing::info!(ended, "stopped serving the epoch");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_store::StoreConfig;

    fn open(path: &std::path::Path) -> AnyStore {
        AnyStore::open(
            &StoreConfig::Sqlite(path.to_owned()),
            "hub-test".parse().unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn only_cleanly_ended_epochs_are_continued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.db");
        let mut s = open(&path);
        let e1 = begin(&mut s).unwrap().unwrap();
        assert!(e1.continues.is_empty());
        end(&mut s, &e1).unwrap();
        let e2 = begin(&mut s).unwrap().unwrap();
        assert_eq!(e2.continues, vec![e1.id.clone()]);
        // e2 never ends (a crash, or a copy taken while it ran).
        drop(s);
        let mut s = open(&path);
        let e3 = begin(&mut s).unwrap().unwrap();
        assert_eq!(e3.continues, vec![e1.id.clone()]);
        end(&mut s, &e3).unwrap();
        resume(&mut s, &e3).unwrap();
        let e4 = begin(&mut s).unwrap().unwrap();
        assert_eq!(
            e4.continues,
            vec![e1.id.clone()],
            "a resumed epoch is open again"
        );
        assert!(Epoch::valid_id(&e4.id));
    }

    #[test]
    fn the_record_is_bounded_and_an_unreadable_one_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.db");
        let mut s = open(&path);
        for _ in 0..(KEPT + 10) {
            let e = begin(&mut s).unwrap().unwrap();
            end(&mut s, &e).unwrap();
        }
        let e = begin(&mut s).unwrap().unwrap();
        assert_eq!(e.continues.len(), MAX_CONTINUED_EPOCHS);
        let AnyStore::Sqlite(sqlite) = &mut s else {
            unreachable!()
        };
        assert_eq!(load(sqlite).unwrap().len(), KEPT);
        sqlite.set_meta(META_KEY, "{not json").unwrap();
        let e = begin(&mut s).unwrap().unwrap();
        assert!(e.continues.is_empty());
    }

    #[test]
    fn memory_stores_have_no_epoch() {
        let mut s = AnyStore::open(&StoreConfig::Memory, "hub-test".parse().unwrap()).unwrap();
        assert_eq!(begin(&mut s).unwrap(), None);
    }
}
