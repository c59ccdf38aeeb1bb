//! Uploads under way, per folder: what lets a download wait for objects still arriving.
//!
//! A device that uploads a large blob sends its manifest first and pushes the entry naming it
//! while the chunks still travel, so another device can start fetching them before the upload
//! ends (the hub relays the blob). A fetch that finds none of the objects it asks for may then
//! wait, but only while the folder is receiving uploads in this process: an upload in flight,
//! or one that ended less than [`HubConfig::upload_idle`](crate::HubConfig::upload_idle) ago.
//! A blob whose uploader stopped (or whose chunks will never come) therefore never holds a
//! fetch longer than that, and no fetch waits longer than its own bound.
//!
//! The record is in memory and per process: with several hub processes on one PostgreSQL
//! database, a fetch served by another process than the upload does not wait (the device
//! tries again on its next pass).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use mesh_core::id::FolderId;
use tokio::sync::Notify;
use tokio::time::Instant;

/// One folder's uploads: how many are in flight, and when the last one ended.
#[derive(Debug, Clone, Copy)]
struct Activity {
    in_flight: u32,
    last_end: Instant,
}

/// The uploads under way in this process, per folder, and a wake-up for the fetches waiting
/// on them.
#[derive(Debug, Default)]
pub(crate) struct Uploads {
    folders: Mutex<HashMap<FolderId, Activity>>,
    /// Woken when an upload ends (its objects stored, or not).
    ended: Notify,
}

/// Until when a folder counts as receiving uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Receiving {
    /// An upload is in flight: until it ends.
    InFlight,
    /// The last upload ended; until this instant.
    Until(Instant),
    /// No upload in flight or recent.
    No,
}

impl Uploads {
    /// Marks an upload to `folder` as started; it ends when the guard is dropped.
    pub(crate) fn begin(&self, folder: &FolderId) -> UploadGuard<'_> {
        let mut folders = self.lock();
        let a = folders.entry(folder.clone()).or_insert(Activity {
            in_flight: 0,
            last_end: Instant::now(),
        });
        a.in_flight = a.in_flight.saturating_add(1);
        UploadGuard {
            uploads: self,
            folder: folder.clone(),
        }
    }

    /// Whether `folder` is receiving uploads now, given how long an ended upload counts.
    pub(crate) fn receiving(&self, folder: &FolderId, idle: Duration) -> Receiving {
        match self.lock().get(folder) {
            Some(a) if a.in_flight > 0 => Receiving::InFlight,
            Some(a) if a.last_end + idle > Instant::now() => Receiving::Until(a.last_end + idle),
            _ => Receiving::No,
        }
    }

    /// Resolves once some upload ends after this call: create it (and `enable` it) before
    /// looking at the store, so that no upload ends unseen in between.
    pub(crate) fn ended(&self) -> tokio::sync::futures::Notified<'_> {
        self.ended.notified()
    }

    fn end(&self, folder: &FolderId, idle: Duration) {
        {
            let mut folders = self.lock();
            let now = Instant::now();
            if let Some(a) = folders.get_mut(folder) {
                a.in_flight = a.in_flight.saturating_sub(1);
                a.last_end = now;
            }
            // Forget the folders that have been quiet for longer than any wait looks back
            // (bounded by the uploads in flight and in the last `idle`).
            folders.retain(|_, a| a.in_flight > 0 || a.last_end + idle > now);
        }
        self.ended.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FolderId, Activity>> {
        self.folders.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An upload in flight (see [`Uploads::begin`]).
pub(crate) struct UploadGuard<'a> {
    uploads: &'a Uploads,
    folder: FolderId,
}

impl UploadGuard<'_> {
    /// Ends the upload, keeping the folder "receiving" for `idle` more.
    pub(crate) fn end(self, idle: Duration) {
        self.uploads.end(&self.folder, idle);
        std::mem::forget(self);
    }
}

impl Drop for UploadGuard<'_> {
    fn drop(&mut self) {
        // An upload cut short (its request dropped) still ends.
        self.uploads.end(&self.folder, Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_folder_receives_while_an_upload_is_in_flight_and_for_idle_after() {
        let u = Uploads::default();
        let f: FolderId = "f".parse().unwrap();
        let idle = Duration::from_secs(2);
        assert_eq!(u.receiving(&f, idle), Receiving::No);
        let g = u.begin(&f);
        assert_eq!(u.receiving(&f, idle), Receiving::InFlight);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(u.receiving(&f, idle), Receiving::InFlight);
        g.end(idle);
        assert!(matches!(u.receiving(&f, idle), Receiving::Until(_)));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(u.receiving(&f, idle), Receiving::No);
        // A quiet folder is forgotten by the next upload's end.
        let other: FolderId = "g".parse().unwrap();
        u.begin(&other).end(idle);
        assert_eq!(u.lock().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_dropped_midway_ends() {
        let u = Uploads::default();
        let f: FolderId = "f".parse().unwrap();
        drop(u.begin(&f));
        assert_eq!(u.receiving(&f, Duration::from_secs(2)), Receiving::No);
    }
}
