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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_core::id::FolderId;
use tokio::sync::Notify;
use tokio::time::Instant;

/// One folder's uploads: how many are in flight, when the last one ended, and the fetches
/// waiting for them.
#[derive(Debug, Clone)]
struct Activity {
    in_flight: u32,
    last_end: Instant,
    /// Woken when an upload to the folder ends (its objects stored, or not).
    ended: Arc<Notify>,
}

/// The uploads under way in this process, per folder (only folders with an upload in flight
/// or recent are kept: the record is bounded by the uploads themselves).
#[derive(Debug, Default)]
pub(crate) struct Uploads {
    folders: Mutex<HashMap<FolderId, Activity>>,
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
        let a = folders.entry(folder.clone()).or_insert_with(|| Activity {
            in_flight: 0,
            last_end: Instant::now(),
            ended: Arc::new(Notify::new()),
        });
        a.in_flight = a.in_flight.saturating_add(1);
        UploadGuard {
            uploads: self,
            folder: folder.clone(),
        }
    }

    /// Whether `folder` is receiving uploads now (given how long an ended upload counts), and
    /// if so what wakes a fetch waiting for them: listen to it (`notified().enable()`) before
    /// looking at the store, so that no upload ends unseen in between.
    pub(crate) fn watch(
        &self,
        folder: &FolderId,
        idle: Duration,
    ) -> (Receiving, Option<Arc<Notify>>) {
        match self.lock().get(folder) {
            Some(a) if a.in_flight > 0 => (Receiving::InFlight, Some(a.ended.clone())),
            Some(a) if a.last_end + idle > Instant::now() => {
                (Receiving::Until(a.last_end + idle), Some(a.ended.clone()))
            }
            _ => (Receiving::No, None),
        }
    }

    fn end(&self, folder: &FolderId, idle: Duration) {
        let mut folders = self.lock();
        let now = Instant::now();
        if let Some(a) = folders.get_mut(folder) {
            a.in_flight = a.in_flight.saturating_sub(1);
            a.last_end = now;
            a.ended.notify_waiters();
        }
        // Forget the folders quiet for longer than a wait looks back. (A fetch still holding
        // a forgotten folder's wake-up sleeps at most until its `Until`, then looks again.)
        folders.retain(|_, a| a.in_flight > 0 || a.last_end + idle > now);
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
        // An upload cut short (its request dropped, or refused) still ends, and does not
        // keep the folder receiving.
        self.uploads.end(&self.folder, Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_folder_receives_while_an_upload_is_in_flight_and_for_idle_after_and_only_its_uploads_wake_it(
    ) {
        let u = Uploads::default();
        let f: FolderId = "f".parse().unwrap();
        let idle = Duration::from_secs(2);
        assert_eq!(u.watch(&f, idle).0, Receiving::No);
        let g = u.begin(&f);
        let (receiving, wake) = u.watch(&f, idle);
        assert_eq!(receiving, Receiving::InFlight);
        let wake = wake.unwrap();
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(u.watch(&f, idle).0, Receiving::InFlight);
        // Another folder's upload does not wake this folder's fetches.
        let other: FolderId = "g".parse().unwrap();
        u.begin(&other).end(idle);
        assert!(futures::poll!(woken.as_mut()).is_pending());
        g.end(idle);
        assert!(futures::poll!(woken.as_mut()).is_ready());
        assert!(matches!(u.watch(&f, idle).0, Receiving::Until(_)));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(u.watch(&f, idle).0, Receiving::No);
        // Quiet folders are forgotten by the next upload's end.
        u.begin(&other).end(idle);
        assert_eq!(u.lock().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_dropped_midway_ends() {
        let u = Uploads::default();
        let f: FolderId = "f".parse().unwrap();
        drop(u.begin(&f));
        assert_eq!(u.watch(&f, Duration::from_secs(2)).0, Receiving::No);
    }
}
