//! Mappings: a folder's `files` feed kept equal to a directory on this device.
//!
//! [`MeshClient::map_folder`] binds a folder to a directory. The mapping then runs by itself:
//! an initial scan, file-system notifications (the `notify` crate; debounced) with a periodic
//! rescan as a fallback for missed events, and a pass whenever a sync brings changes to the
//! folder's files. Each pass ([`MeshClient::rescan`] runs one now) compares three things per
//! path: what is on disk, what the feed holds, and the mapping's index (what both last agreed
//! on), and so tells local changes from remote ones. (The feed is read whole once; each later
//! pass reads only the entries changed since, from the feed's change log. Changed local files
//! are hashed a group at a time, and each group is published as soon as it is hashed.)
//!
//! * a local change is published: a file's content is chunked into the blob store and its
//!   entry (path, size, mtime, mode, manifest; see [`FileMeta`]) written to the `files` feed;
//!   a file over 1 MiB is published in place: only its manifest is stored, with where each
//!   chunk lies in the file, and uploads and peers read the chunks from the file, checked
//!   against their hashes (a chunk whose file changed since is unavailable, and its version
//!   waits for the one the next pass publishes);
//!   directories are entries too, so empty ones sync; a deleted file becomes a tombstone;
//!   a rename is a tombstone plus a new entry whose content is already present everywhere
//!   (no byte moves again);
//! * a remote change is applied: missing chunks are downloaded (all files of a pass in shared
//!   batches), each file is written to a temporary file beside its target, synced and renamed
//!   over it, with the entry's mtime and mode; a file over 1 MiB has its chunks written into
//!   that temporary file as they arrive (checked first), not into the blob store, and an edit
//!   of a file held unchanged is built on the local copy and downloads only what changed; a
//!   tombstone deletes the file only if it is unchanged since it was synced;
//! * when both changed, nothing is lost: an edit beats a deletion on either side, and of two
//!   edits the one in the feed wins the path while this device's is kept as
//!   `name (conflict <device> <date> <time>).ext` and published in turn. A FeedSync conflict
//!   (two devices published concurrently) is settled the same way by the device whose version
//!   lost: it renames its file to a conflict copy, writes the winner and acknowledges the loss
//!   with an update of its own (which folds only its own versions: a third device's losing
//!   version stays a conflict until that device has kept its copy).
//!
//! Two conflict copies of one file in the same second never replace each other (a counter is
//! added: `… 2)`, `… 3)`), and copies name the device by its display name.
//!
//! # Guarantees
//!
//! A mapping never destroys data by mistaking absence of evidence for a deletion:
//!
//! * **Root identity.** [`MeshClient::map_folder`] writes a marker file ([`MARKER_FILE`],
//!   `.meshfolder`) at the directory's root naming the folder, the device and a random
//!   mapping id, and the mapping's index (what this device last agreed on, per path) is stored
//!   under that id: an index belongs to one directory. Every pass first checks that the root
//!   exists, is a directory and holds the same marker; if not, the mapping *pauses*
//!   ([`Event::MappingPaused`](crate::Event::MappingPaused) with a
//!   [`PauseReason`](crate::PauseReason); [`MeshClient::rescan`] fails with
//!   [`ClientError::MappingPaused`]): it publishes nothing and writes nothing. The pause
//!   states: `root_missing` (a drive not mounted, the directory moved or deleted),
//!   `root_unreadable`, `marker_missing` (another, unmarked directory in its place),
//!   `marker_mismatch` (a marker of another folder, device or mapping). It resumes by itself
//!   ([`MappingEvent::Resumed`]) when the same marked directory is back; otherwise the user
//!   acts by mapping the folder again. `map_folder` creates a missing directory only when it
//!   is not the one this device last mapped the folder onto (then the mapping starts paused),
//!   and refuses a directory marked for another folder or device.
//! * **Another directory is merged, never used to delete.** Mapping a folder onto a directory
//!   without a marker starts a new mapping with an empty index: the directory's files are
//!   offered as local files and merged with the feed (a conflict copy where both hold a
//!   different version of a path), and nothing is tombstoned. Unmapping keeps the directory's
//!   index, so mapping the same directory again carries on (no spurious conflict copies;
//!   deletions made meanwhile are published, not undone).
//! * **Honest scans.** A path is taken for deleted only when its directory was listed
//!   completely and the path is absent. A directory that cannot be listed (or fails part way),
//!   or a name whose metadata cannot be read, is left as it is on both sides for the pass —
//!   neither deleted nor written — with a [`MappingEvent::Unreadable`] event.
//! * **Race-free apply.** A remote file replaces its target only if the target is still what
//!   the pass saw: on Linux the new file and the target are exchanged atomically
//!   (`renameat2(RENAME_EXCHANGE)`) and a replaced file that changed meanwhile is kept as a
//!   conflict copy; a file that appeared meanwhile is never replaced (`RENAME_NOREPLACE`).
//!   Elsewhere the target is checked just before the rename (a narrow window remains).
//! * **Nothing outside the root.** Every file operation is resolved beneath the root's opened
//!   handle one component at a time without following symbolic links (Linux: `openat2` with
//!   `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`; other Unix systems: `openat` with `O_NOFOLLOW`;
//!   not Unix: path checks just before use, best effort), so a directory swapped for a symbolic
//!   link can redirect neither a read nor a write outside the root.
//! * **No torn reads.** A file is published only if it is, before and after it is read, the
//!   file the scan saw (same inode, size, modification time and mode); otherwise the next pass
//!   publishes it once it has settled.
//! * **Case.** Paths equal but for case are one entry (their ids are case-folded). A case-only
//!   rename is published as a new version of the entry and applied on other devices as a
//!   rename; two devices creating `Report.txt` and `report.txt` converge on the winner's name,
//!   the other content kept as a conflict copy.
//! * **Bulk changes** are published in batches: up to 1,000 new versions, and up to 1,000
//!   tombstones, per transaction.
//! * **A watch that misses is said so.** Notifications only start passes (see `watch`): a
//!   lost one (the kernel's queue overflowed) starts a pass, and when the system's limit on
//!   watched directories is reached the mapping emits a [`MappingEvent::Error`] once, keeps
//!   watching what it could, and finds changes in the rest by its periodic rescan. The watch
//!   never follows a symbolic link out of the directory.
//!
//! Safety of remote entries: every path is validated ([`FilePath`]: no absolute paths, `..`,
//! backslashes, NUL, `:`, reserved device names) and must match the entry's id; a symbolic link
//! on the way, or at the target, refuses the entry (each refusal is an
//! [`MappingEvent::Refused`] event). Symbolic links inside a mapped directory are neither
//! followed nor synced ([`MappingEvent::Skipped`]). Patterns in a `.meshignore` file at the
//! root (gitignore syntax) leave paths out on this device, both ways; the marker and the
//! mapping's temporary files are always left out. [`MeshClient::unmap_folder`] stops the
//! mapping and never deletes a local file.

mod api;
mod apply;
mod beneath;
mod case;
mod dirs;
#[doc(hidden)]
pub mod faults;
pub(crate) mod fsops;
mod index;
mod ingest;
mod located;
mod options;
mod patch;
mod remote;
mod root;
mod scan;
mod stage;
mod watch;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use mesh_core::blob::ChunkHash;
use mesh_core::feedsync::HistoryItem;
use mesh_core::id::{EntryId, FeedName, FolderId};
use mesh_core::model::{
    names, Action, Entry, EntryData, EntryDraft, FeedKey, FileKind, FileMeta, FilePath, MediaRef,
};
use mesh_core::replica::Resolution;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub(crate) use fsops::write_atomically;
pub use fsops::TEMP_PREFIX;
pub(crate) use located::{read_located, read_objects};
pub use options::MappingOptions;
pub use root::MARKER_FILE;
pub use scan::IGNORE_FILE;

use crate::client::Inner;
use crate::error::{ClientError, Result};
use crate::store::blobs::LocatedFile;
use crate::sync::events::{Event, MappingEvent};
use crate::MeshClient;
use apply::{WriteJob, WriteOutcome};
use beneath::Beneath;
use index::{entry_version, version_key, IndexRecord};
use remote::RemoteFiles;
use scan::{Ignore, LocalFile};

/// Remote files a pass writes at once (with one flush of the file system), while the next
/// group's content downloads.
const WRITE_GROUP: usize = 1_000;

/// Groups of remote files whose objects download ahead of the group being written.
const FETCHES_AHEAD: usize = 2;

/// Downloads running ahead of a pass's writes; stopped when the pass drops them.
struct Downloads(std::collections::VecDeque<JoinHandle<Result<u64>>>);

impl Drop for Downloads {
    fn drop(&mut self) {
        for d in &self.0 {
            d.abort();
        }
    }
}

enum Cmd {
    Rescan(oneshot::Sender<Result<()>>),
}

/// A running mapping, owned by the client.
pub(crate) struct MappingHandle {
    cmd: mpsc::UnboundedSender<Cmd>,
    task: JoinHandle<()>,
}

impl Drop for MappingHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn files_feed() -> FeedName {
    // A constant, valid name.
    FeedName::new(names::FILES).unwrap_or_else(|_| unreachable!())
}

struct Mapper {
    client: Weak<Inner>,
    folder: FolderId,
    root: PathBuf,
    /// This device's display name, for conflict-copy names.
    device_name: String,
    /// The marker the directory must hold.
    marker: root::Marker,
    /// The directory, as opened by the last check of its marker.
    opened: Option<Arc<Beneath>>,
    /// Why the mapping is paused, if it is.
    paused: Option<crate::sync::events::PauseReason>,
    /// By fold key.
    index: BTreeMap<String, IndexRecord>,
    /// The folder's `files` feed as read so far (each pass reads on from where it ended).
    feed_read: remote::FeedRead,
    /// Skips and refusals already reported (each is reported once).
    reported: HashSet<(String, String)>,
    /// Index changes not yet saved to the blob store (saved at the end of a pass; a pass
    /// cut short by an error leaves them for the next one).
    unsaved: Vec<(String, Option<String>)>,
    /// Paths a remote version was written over in this pass: where their chunks lay (if they
    /// were published in place) is forgotten with the index changes.
    replaced: Vec<String>,
    /// Whether the last pass left a remote file unwritten because its content is not here
    /// yet (no remote served all of it: a blob still uploading, or a remote that lost it).
    content_pending: bool,
    /// How long until the pass after one that left content pending (doubling, up to the
    /// rescan interval; `None` when nothing is pending).
    retry: Option<std::time::Duration>,
    options: MappingOptions,
}

/// The first wait before a pass tries again for content that was not available.
const FIRST_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// A changed local file whose fate is decided once its content is hashed.
struct ToHash {
    key: String,
    local: LocalFile,
    /// Whether the feed's version differs from the index's, and which it is.
    remote_changed: bool,
    remote_version: Option<String>,
}

/// A local file or directory to publish: its fold key, what the scan saw, and its manifest
/// (`None` for a directory).
type ToPublish = (String, LocalFile, Option<ChunkHash>);

/// Files whose changes a pass hashes, then publishes, at a time (or fewer, up to
/// [`PUBLISH_GROUP_BYTES`] of content).
const PUBLISH_GROUP: usize = 1_000;

/// Content a pass hashes, then publishes, at a time (a group ends with the file that passes
/// it).
const PUBLISH_GROUP_BYTES: u64 = 64 << 20;

/// What a pass decided for one path.
enum Plan {
    /// Publish a tombstone for the entry.
    Tombstone(EntryId),
    /// Write the remote file (after keeping the local one as a conflict copy, if set).
    Write {
        meta: FileMeta,
        version: String,
        conflict_copy: bool,
        /// What the pass saw at the path (checked again just before the file is replaced).
        local: Option<LocalFile>,
    },
    /// Make the remote directory.
    MakeDir { meta: FileMeta, version: String },
    /// Delete the local file or (empty) directory.
    Remove(LocalFile),
    /// Record a new index state without touching the disk or the feed.
    Adopt(IndexRecord),
    /// Forget the path.
    Forget,
}

impl Mapper {
    async fn run(mut self, mut cmd_rx: mpsc::UnboundedReceiver<Cmd>) {
        // The root as opened at start, by device and inode: the watch is set up on it.
        let identity = {
            let (root, marker) = (self.root.clone(), self.marker.clone());
            tokio::task::spawn_blocking(move || {
                let opened = root::check(&root, &marker).ok()?;
                apply::remove_stale_temps(&opened);
                opened.root().identity()
            })
            .await
            .ok()
            .flatten()
        };
        let (wakes, mut woken) = watch::wakes();
        // Kept for as long as the mapping runs, set up again when the root is another
        // directory. A gap in the watch is told once per mapping.
        let mut watching = watch::Watch::default();
        let mut gap_told = false;
        if self.options.watch {
            if let Some(gap) = watching.ensure(&self.root, identity, &wakes).await {
                gap_told = true;
                self.emit_error(gap);
            }
        }
        let mut remote = match self.client.upgrade() {
            Some(inner) => inner.shared.subscribe(),
            None => return,
        };
        let files = FeedKey::folder(self.folder.clone(), files_feed());
        let mut due = Some(tokio::time::Instant::now());
        // When the last pass ended and how long it took (see `watch::pass_after`).
        let mut last: Option<(tokio::time::Instant, std::time::Duration)> = None;
        loop {
            let rescan_at = tokio::time::Instant::now() + self.options.rescan_interval;
            let wake = due.unwrap_or(rescan_at);
            tokio::select! {
                cmd = cmd_rx.recv() => match cmd {
                    Some(Cmd::Rescan(tx)) => {
                        let started = tokio::time::Instant::now();
                        let r = self.pass().await;
                        last = Some((tokio::time::Instant::now(), started.elapsed()));
                        let _ = tx.send(r);
                        self.rewatch(&mut watching, &wakes, &mut gap_told).await;
                        due = self.retry_due();
                        continue;
                    }
                    None => return,
                },
                Some(gap) = woken.next() => {
                    if let Some(error) = gap {
                        if !std::mem::replace(&mut gap_told, true) {
                            self.emit_error(error);
                        }
                    }
                    // The first notification sets the deadline; later ones ride along.
                    if due.is_none() {
                        due = Some(watch::pass_after(
                            tokio::time::Instant::now(),
                            &self.options,
                            last,
                        ));
                    }
                    continue;
                }
                c = remote.recv() => {
                    match c {
                        Ok(c) if c.feed == files && c.via.is_some() && self.options.follow_remote => {
                            due = Some(tokio::time::Instant::now());
                        }
                        // Changes went by unread while a pass ran: the folder's may be among
                        // them.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_))
                            if self.options.follow_remote =>
                        {
                            due = Some(tokio::time::Instant::now());
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                        _ => {}
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            let started = tokio::time::Instant::now();
            let r = self.pass().await;
            last = Some((tokio::time::Instant::now(), started.elapsed()));
            match r {
                Ok(()) | Err(ClientError::MappingPaused { .. }) => {}
                Err(ClientError::Closed) => return,
                Err(e) => self.emit_error(e.to_string()),
            }
            self.rewatch(&mut watching, &wakes, &mut gap_told).await;
            due = self.retry_due();
        }
    }

    /// After a pass that found the root in place: the watch set up again if the directory
    /// there is not the one watched (see [`watch::Watch`]).
    async fn rewatch(
        &mut self,
        watching: &mut watch::Watch,
        wakes: &watch::Wakes,
        gap_told: &mut bool,
    ) {
        if !self.options.watch || self.paused.is_some() {
            return;
        }
        // The directory this pass checked and opened (no second look-up by path).
        let now = self.opened.as_ref().and_then(|o| o.root().identity());
        if let Some(gap) = watching.ensure(&self.root, now, wakes).await {
            if !std::mem::replace(gap_told, true) {
                self.emit_error(gap);
            }
        }
    }

    /// When to run the next pass after one that left content pending, if it did. Content
    /// that was not available may be by now without any new version announcing it (a relayed
    /// blob finished uploading after the download stopped waiting; a remote got it back): it
    /// is tried again, less and less often, up to the rescan interval.
    fn retry_due(&mut self) -> Option<tokio::time::Instant> {
        self.retry = self.content_pending.then(|| {
            self.retry
                .map_or(FIRST_RETRY, |d| d * 2)
                .min(self.options.rescan_interval)
        });
        self.retry.map(|d| tokio::time::Instant::now() + d)
    }

    fn client(&self) -> Result<MeshClient> {
        self.client
            .upgrade()
            .map(|inner| MeshClient { inner })
            .ok_or(ClientError::Closed)
    }

    fn emit(&self, event: MappingEvent) {
        if let Some(inner) = self.client.upgrade() {
            let _ = inner.events.send(Event::Mapping {
                folder: self.folder.clone(),
                event,
            });
        }
    }

    fn emit_error(&self, error: String) {
        tracing::warn!(folder = %self.folder, %error, "mapping");
        self.emit(MappingEvent::Error { error });
    }

    /// Pauses the mapping (telling it once per reason).
    fn pause(&mut self, reason: crate::sync::events::PauseReason) {
        self.opened = None;
        if self.paused.as_ref() == Some(&reason) {
            return;
        }
        tracing::warn!(folder = %self.folder, %reason, "mapping paused");
        self.paused = Some(reason.clone());
        if let Some(inner) = self.client.upgrade() {
            let _ = inner.events.send(Event::MappingPaused {
                folder: self.folder.clone(),
                reason,
            });
        }
    }

    /// Checks that the mapped directory is still the marked one: pauses the mapping if not,
    /// resumes it if it was paused and the directory is back.
    async fn check_root(&mut self) -> Result<Arc<Beneath>> {
        let (root, marker) = (self.root.clone(), self.marker.clone());
        let checked = tokio::task::spawn_blocking(move || root::check(&root, &marker))
            .await
            .map_err(|e| ClientError::Internal(e.to_string()))?;
        match checked {
            Ok(opened) => {
                if self.paused.take().is_some() {
                    tracing::info!(folder = %self.folder, "mapping resumed");
                    self.emit(MappingEvent::Resumed);
                }
                let opened = Arc::new(opened);
                self.opened = Some(opened.clone());
                Ok(opened)
            }
            Err(reason) => {
                self.pause(reason.clone());
                Err(ClientError::MappingPaused {
                    folder: self.folder.to_string(),
                    reason,
                })
            }
        }
    }

    /// Records the agreed state of a path (saved with the pass).
    fn set_index(&mut self, key: String, rec: IndexRecord) -> Result<()> {
        let body = serde_json::to_string(&rec).map_err(mesh_core::CoreError::from)?;
        self.unsaved.push((key.clone(), Some(body)));
        self.index.insert(key, rec);
        Ok(())
    }

    /// Forgets a path (saved with the pass).
    fn forget(&mut self, key: String) {
        self.index.remove(&key);
        self.unsaved.push((key, None));
    }

    fn report_once(&mut self, path: String, reason: String, refused: bool) {
        if self.reported.insert((path.clone(), reason.clone())) {
            tracing::info!(folder = %self.folder, %path, %reason, refused, "mapping left a path out");
            self.emit(if refused {
                MappingEvent::Refused { path, reason }
            } else {
                MappingEvent::Skipped { path, reason }
            });
        }
    }

    /// One pass: scan, compare, publish, download, write, delete, record.
    async fn pass(&mut self) -> Result<()> {
        self.content_pending = false;
        let client = self.client()?;
        let root = self.check_root().await?;
        let scan = tokio::task::spawn_blocking(move || {
            let ignore = Ignore::load(&root);
            (scan::scan(&root, &ignore), ignore)
        })
        .await
        .map_err(|e| ClientError::Internal(e.to_string()))?;
        let (scan, ignore) = scan;
        // The root may have gone while it was scanned: then what the scan missed is not gone.
        self.check_root().await?;
        let unknown = scan.unknown_prefixes();
        for (path, error) in scan.unreadable {
            if self
                .reported
                .insert((path.clone(), format!("unreadable: {error}")))
            {
                tracing::warn!(folder = %self.folder, %path, %error, "unreadable; left as it is");
                self.emit(MappingEvent::Unreadable { path, error });
            }
        }
        for (path, reason) in scan.skipped {
            self.report_once(path, reason, false);
        }
        let mut local = scan.files;
        let me = client.device().clone();
        let (mut remote, mut seen) = self.remote_entries(&client).await?;
        faults::at(faults::Moment::Plan, &self.root);
        self.follow_case(&mut local, &remote, &unknown).await?;
        // A deletion that conflicts with an edit: the edit wins. The device whose edit it is
        // brings it back, with an update of its own that keeps the edit's content (an update
        // folds only this device's versions: another device's edit in conflict stays, for its
        // device to keep in turn); the others wait for that. Only if the deletion is still
        // the entry's winner as read: one that a sync replaced since waits for the next pass.
        let mut revivals: Vec<(EntryId, EntryDraft)> = Vec::new();
        for (key, (_, e)) in &remote {
            if !e.is_deleted() {
                continue;
            }
            let mine = e
                .conflicts()
                .iter()
                .find(|c| !c.sync.deleted && written_by(&c.sync, &me));
            if let Some(c) = mine {
                revivals.push((e.entry_id().clone(), draft_of(&c.content)));
            } else if e.conflicts().iter().any(|c| !c.sync.deleted) {
                tracing::debug!(path = %key, "waiting for an edit to win over a deletion");
            }
        }
        if !revivals.is_empty() {
            let still = as_read(&seen, revivals.iter().map(|(id, _)| id));
            client
                .put_many_where(&self.folder, &files_feed(), revivals, still)
                .await?;
            (remote, seen) = self.remote_entries(&client).await?;
        }
        remote
            .retain(|_, (_, e)| !(e.is_deleted() && e.conflicts().iter().any(|c| !c.sync.deleted)));

        let mut keys: BTreeSet<String> = local.keys().cloned().collect();
        keys.extend(self.index.keys().cloned());
        keys.extend(remote.keys().cloned());

        let mut plans: Vec<(String, Plan)> = Vec::new();
        let mut publish_check: Vec<ToHash> = Vec::new();
        for key in keys {
            // Below a directory that could not be read: nothing is known, nothing changes.
            if scan::is_unknown(&unknown, &key) {
                continue;
            }
            let l = local.get(&key);
            let i = self.index.get(&key);
            let r = remote.get(&key);
            // A remote entry this device leaves out or cannot hold.
            if let Some((Some(meta), _)) = r {
                if ignore.ignored(meta.path.as_str(), meta.kind == FileKind::Dir) {
                    continue;
                }
                // A local case-only rename the feed has not seen is published below; any
                // other difference in case is one `follow_case` could not settle.
                let newer_here = i.is_some_and(|i| {
                    i.path == meta.path && r.is_some_and(|(_, e)| e.version() == i.version)
                });
                if let Some(l) = l {
                    if l.path != meta.path && !newer_here {
                        self.report_once(
                            meta.path.to_string(),
                            format!("differs only in case from the local {}", l.path),
                            true,
                        );
                        continue;
                    }
                }
            }
            let local_changed = match (l, i) {
                (None, None) => false,
                (Some(l), Some(i)) => !i.matches(l),
                _ => true,
            };
            let remote_version = r.map(|(_, e)| e.version().to_owned());
            let remote_changed = match (&remote_version, i) {
                (Some(v), Some(i)) => *v != i.version,
                (Some(_), None) => r.is_some_and(|(_, e)| !e.is_deleted()),
                (None, _) => false,
            };
            let live = r.and_then(|(m, e)| (!e.is_deleted()).then_some(m.as_ref()).flatten());
            let tomb = r.is_some_and(|(_, e)| e.is_deleted());
            let plan = match (local_changed, remote_changed) {
                (false, false) => continue,
                (true, false) => match l {
                    Some(l) => {
                        publish_check.push(ToHash {
                            key: key.clone(),
                            local: l.clone(),
                            remote_changed,
                            remote_version,
                        });
                        continue;
                    }
                    None => match r {
                        Some((_, e)) if !e.is_deleted() => Plan::Tombstone(e.entry_id().clone()),
                        _ => Plan::Forget,
                    },
                },
                (false, true) => {
                    let Some(r_entry) = r.map(|(_, e)| e) else {
                        continue;
                    };
                    if tomb {
                        match l {
                            Some(l) => Plan::Remove(l.clone()),
                            None => Plan::Forget,
                        }
                    } else if let Some(meta) = live {
                        // Did this device's version lose a FeedSync conflict, holding content
                        // the winner's writer did not knowingly replace?
                        let lost = i.is_some_and(|i| {
                            r_entry.conflicts().iter().any(|c| {
                                version_key(&c.sync) == i.version && written_by(&c.sync, &me)
                            }) && !r_entry
                                .with_conflicts()
                                .is_some_and(|e| i.loss_is_known_to(&e.sync))
                        });
                        let same_content = i.is_some_and(|i| {
                            i.kind == meta.kind && i.manifest == meta.manifest && l.is_some()
                        });
                        match meta.kind {
                            FileKind::Dir => Plan::MakeDir {
                                meta: meta.clone(),
                                version: remote_version.clone().unwrap_or_default(),
                            },
                            // (A version that lost to the same content leaves nothing to
                            // keep: the file already holds the winner, and the loss is
                            // acknowledged once the index records it.)
                            FileKind::File if same_content => {
                                let l = l.cloned().unwrap_or_else(|| unreachable!());
                                Plan::Adopt(IndexRecord::of(
                                    &l,
                                    meta.manifest,
                                    remote_version.clone().unwrap_or_default(),
                                ))
                            }
                            FileKind::File => Plan::Write {
                                meta: meta.clone(),
                                version: remote_version.clone().unwrap_or_default(),
                                conflict_copy: lost && l.is_some(),
                                local: l.cloned(),
                            },
                        }
                    } else {
                        continue; // Refused when read.
                    }
                }
                (true, true) => match (l, live, tomb) {
                    (None, _, true) => Plan::Forget,
                    (None, Some(meta), _) => match meta.kind {
                        FileKind::Dir => Plan::MakeDir {
                            meta: meta.clone(),
                            version: remote_version.clone().unwrap_or_default(),
                        },
                        FileKind::File => Plan::Write {
                            meta: meta.clone(),
                            version: remote_version.clone().unwrap_or_default(),
                            conflict_copy: false,
                            local: None,
                        },
                    },
                    (Some(l), _, true) => {
                        publish_check.push(ToHash {
                            key: key.clone(),
                            local: l.clone(),
                            remote_changed,
                            remote_version,
                        });
                        continue;
                    }
                    (Some(l), Some(meta), _) => {
                        if l.kind == FileKind::Dir
                            && meta.kind == FileKind::Dir
                            && l.path == meta.path
                        {
                            Plan::Adopt(IndexRecord::of(
                                l,
                                None,
                                remote_version.clone().unwrap_or_default(),
                            ))
                        } else {
                            // Decided after hashing the local file (below).
                            publish_check.push(ToHash {
                                key: key.clone(),
                                local: l.clone(),
                                remote_changed,
                                remote_version,
                            });
                            continue;
                        }
                    }
                    _ => continue,
                },
            };
            plans.push((key, plan));
        }

        // Hash the local files that changed, a group at a time: publish, adopt, or lose to the
        // feed's version. Each group's new versions are published as soon as it is hashed, so
        // the engine uploads and pushes them while the next group is read.
        let deleted = self.deleted_manifests(&plans);
        let mut published = 0;
        let mut checks = publish_check.into_iter().peekable();
        while checks.peek().is_some() {
            let mut group = Vec::new();
            let mut bytes = 0u64;
            while let Some(t) =
                checks.next_if(|_| group.len() < PUBLISH_GROUP && bytes < PUBLISH_GROUP_BYTES)
            {
                bytes += t.local.size;
                group.push(t);
            }
            let (decided, publish) = self.hash_and_decide(&client, group, &remote).await?;
            plans.extend(decided);
            published += self.publish(&client, publish, &deleted, &seen).await?;
        }
        self.execute(&client, plans, &remote, &seen, local.len(), published)
            .await
    }

    /// Hashes the changed local files of `group` and decides what becomes of each: the plans,
    /// and apart from them the versions to publish (with their manifests).
    async fn hash_and_decide(
        &mut self,
        client: &MeshClient,
        group: Vec<ToHash>,
        remote: &RemoteFiles,
    ) -> Result<(Vec<(String, Plan)>, Vec<ToPublish>)> {
        let to_hash: Vec<LocalFile> = group
            .iter()
            .filter(|t| t.local.kind == FileKind::File)
            .map(|t| t.local.clone())
            .collect();
        let hashed = self.ingest(client, to_hash).await?;
        let mut plans = Vec::new();
        let mut publish = Vec::new();
        for ToHash {
            key,
            local: l,
            remote_changed,
            remote_version,
        } in group
        {
            let i = self.index.get(&key);
            let live = remote
                .get(&key)
                .and_then(|(m, e)| (!e.is_deleted()).then_some(m.as_ref()).flatten());
            let manifest = match l.kind {
                FileKind::Dir => None,
                FileKind::File => match hashed.get(l.path.as_str()) {
                    Some(Ok(m)) => Some(*m),
                    Some(Err(reason)) => {
                        self.report_once(l.path.to_string(), reason.clone(), false);
                        continue;
                    }
                    None => continue,
                },
            };
            let plan = match (remote_changed, live) {
                (true, Some(meta))
                    if meta.manifest == manifest && meta.kind == l.kind && meta.path == l.path =>
                {
                    Plan::Adopt(IndexRecord::of(
                        &l,
                        manifest,
                        remote_version.unwrap_or_default(),
                    ))
                }
                // The same content, renamed here in case: the rename is the newer change.
                (true, Some(meta)) if meta.manifest == manifest && meta.kind == l.kind => {
                    publish.push((key, l, manifest));
                    continue;
                }
                (true, Some(meta)) => Plan::Write {
                    meta: meta.clone(),
                    version: remote_version.unwrap_or_default(),
                    conflict_copy: true,
                    local: Some(l.clone()),
                },
                _ => {
                    // (A different case is a rename, to publish.)
                    let unchanged = i.is_some_and(|i| {
                        i.kind == l.kind
                            && i.manifest == manifest
                            && i.mode == l.mode
                            && i.path == l.path
                    }) && !remote_changed;
                    if unchanged {
                        let v = i.map(|i| i.version.clone()).unwrap_or_default();
                        Plan::Adopt(IndexRecord::of(&l, manifest, v))
                    } else {
                        publish.push((key, l, manifest));
                        continue;
                    }
                }
            };
            plans.push((key, plan));
        }
        Ok((plans, publish))
    }

    /// The manifests of the files `plans` delete, with their paths: a new file with one of
    /// these manifests is published as renamed from that path.
    fn deleted_manifests(&self, plans: &[(String, Plan)]) -> HashMap<ChunkHash, FilePath> {
        plans
            .iter()
            .filter_map(|(k, p)| match p {
                Plan::Tombstone(_) => self
                    .index
                    .get(k)
                    .and_then(|i| i.manifest.map(|m| (m, i.path.clone()))),
                _ => None,
            })
            .collect()
    }

    /// Publishes local files and directories (with their manifests), each only if its entry
    /// is still as the pass read it, and records what was written in the index. Gives how
    /// many were asked to be published (none when this user may not write).
    async fn publish(
        &mut self,
        client: &MeshClient,
        files: Vec<ToPublish>,
        deleted: &HashMap<ChunkHash, FilePath>,
        versions: &HashMap<EntryId, String>,
    ) -> Result<usize> {
        if files.is_empty() {
            return Ok(0);
        }
        if let Err(e) = client.check(&self.folder, Action::CreateEntry).await {
            self.report_once(
                String::new(),
                format!("local changes are not published: {e}"),
                false,
            );
            return Ok(0);
        }
        let mut drafts: Vec<(EntryId, EntryDraft)> = Vec::with_capacity(files.len());
        let mut by_id: HashMap<EntryId, ToPublish> = HashMap::with_capacity(files.len());
        for (key, l, manifest) in files {
            let meta = FileMeta {
                path: l.path.clone(),
                kind: l.kind,
                size: l.size,
                mtime_ns: l.mtime_ns,
                mode: l.mode,
                manifest,
                renamed_from: manifest.and_then(|m| deleted.get(&m).cloned()),
            };
            let draft = EntryDraft {
                title: l.path.to_string(),
                content: mesh_core::content::JsonContent::from(
                    &serde_json::to_value(&meta).map_err(mesh_core::CoreError::from)?,
                ),
                media: manifest.map(|m| MediaRef {
                    hash: m.to_string(),
                    content_type: "application/octet-stream".into(),
                    length: l.size,
                }),
            };
            drafts.push((l.path.entry_id(), draft));
            by_id.insert(l.path.entry_id(), (key, l, manifest));
        }
        let asked = drafts.len();
        let feed = files_feed();
        for batch in drafts.chunks(1000) {
            // Each entry only if it is still as this pass read it: a version that arrived
            // since (a sync runs beside the pass) is not overwritten unseen; the next pass
            // meets it (and keeps a conflict copy if the two differ).
            let still = as_read(versions, batch.iter().map(|(id, _)| id));
            let (written, changed) = client
                .put_many_where(&self.folder, &feed, batch.to_vec(), still)
                .await?;
            for id in changed {
                tracing::debug!(entry = %id, "changed since the pass read it; left to the next pass");
            }
            for e in written {
                if let Some((key, l, m)) = by_id.remove(e.entry_id()) {
                    let rec = IndexRecord::of(&l, m, entry_version(&e));
                    self.set_index(key, rec)?;
                }
            }
        }
        Ok(asked)
    }

    /// The folder's `files` entries by fold key: the entry and its checked metadata (`None`
    /// for a tombstone; entries that were refused are reported and left out); and the version
    /// of every entry read (refused ones too), which the pass's publications expect to find
    /// unchanged. Reads only the changes since the last pass read the feed
    /// ([`remote::FeedRead`]).
    async fn remote_entries(
        &mut self,
        client: &MeshClient,
    ) -> Result<(RemoteFiles, HashMap<EntryId, String>)> {
        let key = FeedKey::folder(self.folder.clone(), files_feed());
        let since = self.feed_read.upto();
        let changed = client
            .shared()
            .run(move |r| remote::read_changes(r.store(), &key, since))
            .await??;
        self.feed_read.apply(changed);
        let view = self.feed_read.view(&self.index);
        for (p, r) in view.refused {
            self.report_once(p, r, true);
        }
        Ok((view.files, view.versions))
    }

    /// The mapped directory as opened by this pass.
    fn opened(&self) -> Result<Arc<Beneath>> {
        self.opened
            .clone()
            .ok_or_else(|| ClientError::Internal("the mapped directory is not open".into()))
    }

    /// Chunks local files into the blob store, many small files per transaction.
    async fn ingest(
        &self,
        client: &MeshClient,
        files: Vec<LocalFile>,
    ) -> Result<HashMap<String, std::result::Result<ChunkHash, String>>> {
        if files.is_empty() {
            return Ok(HashMap::new());
        }
        let root = self.opened()?;
        let folder = self.folder.clone();
        let mapping = self.marker.mapping.clone();
        client
            .shared()
            .run_blobs(move |b| ingest::ingest_files(b, &folder, &mapping, &root, files))
            .await?
    }

    async fn execute(
        &mut self,
        client: &MeshClient,
        plans: Vec<(String, Plan)>,
        remote: &RemoteFiles,
        versions: &HashMap<EntryId, String>,
        seen: usize,
        published: usize,
    ) -> Result<()> {
        let mut tombstones: Vec<(String, EntryId)> = Vec::new();
        let mut jobs: Vec<WriteJob> = Vec::new();
        let mut dirs: Vec<(String, FileMeta, String)> = Vec::new();
        let mut removals: Vec<(String, LocalFile)> = Vec::new();
        for (key, plan) in plans {
            match plan {
                Plan::Tombstone(id) => tombstones.push((key, id)),
                Plan::Write {
                    meta,
                    version,
                    conflict_copy,
                    local,
                } => {
                    // The local file holds the version the index recorded: the new version's
                    // chunks it shares are copied from it rather than written again.
                    let base = match (&local, self.index.get(&key)) {
                        (Some(l), Some(i))
                            if !conflict_copy
                                && i.kind == FileKind::File
                                && i.matches(l)
                                && i.manifest != meta.manifest =>
                        {
                            i.manifest
                        }
                        _ => None,
                    };
                    jobs.push(WriteJob {
                        key,
                        meta,
                        version,
                        conflict_copy,
                        expected: local,
                        base,
                        staged: None,
                    });
                }
                Plan::MakeDir { meta, version } => dirs.push((key, meta, version)),
                Plan::Remove(l) => removals.push((key, l)),
                Plan::Adopt(rec) => {
                    self.set_index(key, rec)?;
                }
                Plan::Forget => {
                    self.forget(key);
                }
            }
        }
        let published = published + tombstones.len();

        // Publish local deletions.
        let feed = files_feed();
        // Deletions in batches, like creations: one transaction for many tombstones.
        for batch in tombstones.chunks(1000) {
            let ids: Vec<EntryId> = batch.iter().map(|(_, id)| id.clone()).collect();
            // Like publications: an edit that arrived since the pass read the entry is not
            // deleted unseen (the next pass brings it back to the file).
            let still = as_read(versions, ids.iter());
            let (_, changed) = client
                .delete_many_where(&self.folder, &feed, ids, still)
                .await?;
            let changed: HashSet<EntryId> = changed.into_iter().collect();
            for (key, id) in batch {
                if changed.contains(id) {
                    tracing::debug!(entry = %id, "changed since the pass read it; left to the next pass");
                } else {
                    self.forget(key.clone());
                }
            }
        }

        // Apply remote changes: directories, then files (after one shared download), then
        // deletions deepest first.
        if !dirs.is_empty() {
            // All of them in one hand-off, through one handle per parent directory.
            let root = self.opened()?;
            let paths: Vec<FilePath> = dirs.iter().map(|(_, meta, _)| meta.path.clone()).collect();
            let made = tokio::task::spawn_blocking(move || apply::make_dirs(&root, &paths))
                .await
                .map_err(|e| ClientError::Internal(e.to_string()))?;
            for ((key, meta, version), made) in dirs.into_iter().zip(made) {
                match made {
                    Ok(()) => {
                        let rec = IndexRecord {
                            path: meta.path.clone(),
                            kind: FileKind::Dir,
                            size: 0,
                            mtime_ns: 0,
                            mode: 0,
                            manifest: None,
                            version,
                            ino: 0,
                            acknowledged: None,
                        };
                        self.set_index(key, rec)?;
                        self.emit(MappingEvent::Applied {
                            path: meta.path.to_string(),
                            deleted: false,
                        });
                    }
                    Err(reason) => self.report_once(meta.path.to_string(), reason, true),
                }
            }
        }

        if !jobs.is_empty() {
            // In groups: the next groups' objects download (up to FETCHES_AHEAD groups, each
            // in a task of its own) while this one's files are written; each group is written
            // once its own download has ended.
            let mut groups: Vec<Vec<WriteJob>> = Vec::new();
            let mut jobs = jobs.into_iter().peekable();
            while jobs.peek().is_some() {
                groups.push(jobs.by_ref().take(WRITE_GROUP).collect());
            }
            // Large files download straight into place (`stage`), not into the store; files
            // built on a local copy do not download the chunks that copy holds.
            let blobs = client.shared().blobs().clone();
            let mut needed = groups
                .iter()
                .map(|group| {
                    let manifests = group
                        .iter()
                        .filter(|j| !stage::is_large(&blobs, j))
                        .filter_map(|j| j.meta.manifest)
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect::<Vec<ChunkHash>>();
                    let bases = group.iter().filter_map(|j| j.base).collect::<Vec<_>>();
                    (manifests, bases)
                })
                .collect::<Vec<_>>()
                .into_iter();
            let folder = self.folder.clone();
            let fetch = |(needed, bases): (Vec<ChunkHash>, Vec<ChunkHash>)| {
                let (client, folder) = (client.clone(), folder.clone());
                tokio::spawn(async move {
                    let except = client
                        .shared()
                        .run_blobs(move |b| {
                            let mut held = HashSet::new();
                            for base in bases {
                                if let Ok(Some(m)) = b.manifest(&base) {
                                    held.extend(m.chunks().iter().map(|c| c.hash));
                                }
                            }
                            held
                        })
                        .await?;
                    let how = crate::sync::transfer::Fetch {
                        sink: None,
                        except: Arc::new(except),
                    };
                    client.fetch_objects_with(&folder, needed, &how).await
                })
            };
            // (Dropped with the pass: a pass that ends early stops its downloads.)
            let mut ahead = Downloads(needed.by_ref().take(FETCHES_AHEAD).map(fetch).collect());
            for mut group in groups {
                let fetched = match ahead.0.pop_front() {
                    Some(download) => download
                        .await
                        .map_err(|e| ClientError::Internal(e.to_string()))
                        .and_then(|r| r),
                    None => Ok(0),
                };
                if let Err(e) = fetched {
                    // Write what is complete; the rest waits for the next pass.
                    self.emit_error(format!("download: {e}"));
                }
                if let Some(n) = needed.next() {
                    ahead.0.push_back(fetch(n));
                }
                for job in group.iter_mut().filter(|j| stage::is_large(&blobs, j)) {
                    job.staged = stage::stage(client, self.opened()?, &self.folder, job).await;
                }
                let root = self.opened()?;
                let device_name = self.device_name.clone();
                let blobs = client.shared().blobs().clone();
                let now = client.now();
                let results = tokio::task::spawn_blocking(move || {
                    apply::write_files(&blobs, &root, group, &device_name, now)
                })
                .await;
                let results = results.map_err(|e| ClientError::Internal(e.to_string()))?;
                let mut to_locate: Vec<(LocatedFile, ChunkHash)> = Vec::new();
                for (job, outcome) in results {
                    match outcome {
                        WriteOutcome::Written { local, copy } => {
                            if let Some(copy) = copy {
                                self.emit(MappingEvent::ConflictCopy {
                                    path: job.meta.path.to_string(),
                                    copy: copy.to_string(),
                                });
                            }
                            match (&job.staged, job.meta.manifest) {
                                // Its chunks now lie in the file: recorded below.
                                (Some(_), Some(m)) => to_locate.push((
                                    LocatedFile {
                                        key: job.key.clone(),
                                        path: local.path.to_string(),
                                        size: local.size,
                                        mtime_ns: local.mtime_ns,
                                        ino: local.ino,
                                    },
                                    m,
                                )),
                                _ => self.replaced.push(job.key.clone()),
                            }
                            let rec = IndexRecord::of(&local, job.meta.manifest, job.version);
                            self.set_index(job.key, rec)?;
                            self.emit(MappingEvent::Applied {
                                path: job.meta.path.to_string(),
                                deleted: false,
                            });
                        }
                        WriteOutcome::Refused(reason) => {
                            self.report_once(job.meta.path.to_string(), reason, true)
                        }
                        WriteOutcome::Pending => self.content_pending = true,
                        WriteOutcome::ChangedMeanwhile => tracing::info!(
                            path = %job.meta.path,
                            "changed locally while the remote version was written; both are kept"
                        ),
                        WriteOutcome::Failed(error) => {
                            self.emit_error(format!("writing {}: {error}", job.meta.path))
                        }
                    }
                }
                if !to_locate.is_empty() {
                    let (f, mapping) = (self.folder.clone(), self.marker.mapping.clone());
                    let located = client
                        .shared()
                        .run_blobs(move |b| {
                            for (file, m) in to_locate {
                                if let Some(m) = b.manifest(&m)? {
                                    b.locate(&f, &mapping, &file, &stage::located_chunks(&m))?;
                                }
                            }
                            Ok::<_, crate::store::StoreError>(())
                        })
                        .await?;
                    if let Err(e) = located {
                        self.emit_error(format!("recording where written files lie: {e}"));
                    }
                }
            }
        }
        self.acknowledge_losses(client, remote, versions).await?;

        removals.sort_by(|a, b| b.1.path.cmp(&a.1.path));
        if !removals.is_empty() {
            // All of them in one hand-off, through one handle per directory.
            let root = self.opened()?;
            let asked: Vec<(FilePath, FileKind, Option<IndexRecord>)> = removals
                .iter()
                .map(|(key, l)| (l.path.clone(), l.kind, self.index.get(key).cloned()))
                .collect();
            let results = tokio::task::spawn_blocking(move || apply::remove_files(&root, asked))
                .await
                .map_err(|e| ClientError::Internal(e.to_string()))?;
            for ((key, l), removed) in removals.into_iter().zip(results) {
                // Forgotten either way: a directory with files left in it, or a changed file,
                // is published again by the next pass.
                self.forget(key);
                match removed {
                    Ok(()) => self.emit(MappingEvent::Applied {
                        path: l.path.to_string(),
                        deleted: true,
                    }),
                    Err(reason) => tracing::debug!(path = %l.path, %reason, "not removed"),
                }
            }
        }

        let changes = std::mem::take(&mut self.unsaved);
        let replaced = std::mem::take(&mut self.replaced);
        if !changes.is_empty() || !replaced.is_empty() {
            let f = self.folder.clone();
            let mapping = self.marker.mapping.clone();
            client
                .shared()
                .run_blobs(move |b| {
                    b.index_update(&f, &mapping, &changes)?;
                    if !replaced.is_empty() && b.has_located(Some(&f))? {
                        b.unlocate(&f, &mapping, &replaced)?;
                    }
                    Ok::<_, crate::store::StoreError>(())
                })
                .await??;
        }
        self.emit(MappingEvent::Scanned {
            paths: seen,
            published,
        });
        Ok(())
    }

    /// Acknowledges the FeedSync conflicts this device's versions lost, once the winner is on
    /// disk here (the index holds the winner's version, so the lost version was kept as a
    /// conflict copy when the winner replaced it, or had no file): an update by this device
    /// that keeps the winner's content. An update folds only this device's own versions into
    /// its history; another device's losing version stays a conflict until that device has
    /// kept it as a copy and acknowledged it in turn. (A resolution would fold every version,
    /// and a device whose version was folded before it kept a copy would take the resolution
    /// for a plain remote edit and write over its file.) Each update is written only if the
    /// entry's winner is still the one this pass read and wrote to disk.
    async fn acknowledge_losses(
        &mut self,
        client: &MeshClient,
        remote: &RemoteFiles,
        versions: &HashMap<EntryId, String>,
    ) -> Result<()> {
        let me = client.device().clone();
        let mut drafts: Vec<(EntryId, EntryDraft)> = Vec::new();
        let mut keys: HashMap<EntryId, String> = HashMap::new();
        for (key, (meta, e)) in remote {
            let Some(e) = e.with_conflicts() else {
                continue;
            };
            if meta.is_none() || !e.conflicts.iter().any(|c| written_by(&c.sync, &me)) {
                continue;
            }
            // (The winner's version, formatted, only for the few entries in conflict.)
            let on_disk = self
                .index
                .get(key)
                .is_some_and(|i| i.version == entry_version(e));
            if on_disk {
                drafts.push((e.entry_id().clone(), draft_of(&e.content)));
                keys.insert(e.entry_id().clone(), key.clone());
            }
        }
        // Two deletions in conflict hold no content: the devices whose deletion lost settle
        // them, while every version is still a deletion.
        let tombs: Vec<&Entry> = remote
            .values()
            .filter_map(|(_, e)| e.with_conflicts())
            .filter(|e| {
                e.is_deleted()
                    && e.conflicts.iter().all(|c| c.sync.deleted)
                    && e.conflicts.iter().any(|c| written_by(&c.sync, &me))
            })
            .collect();
        for e in tombs {
            let read = entry_version(e);
            let settled = client
                .resolve_where(
                    &self.folder,
                    &files_feed(),
                    e.entry_id(),
                    Resolution::Delete,
                    move |now| {
                        entry_version(now) == read
                            && now.is_deleted()
                            && now.conflicts.iter().all(|c| c.sync.deleted)
                    },
                )
                .await;
            if let Err(err) = settled {
                self.emit_error(format!("settling two deletions: {err}"));
            }
        }
        if drafts.is_empty() {
            return Ok(());
        }
        let still = as_read(versions, drafts.iter().map(|(id, _)| id));
        match client
            .put_many_where(&self.folder, &files_feed(), drafts, still)
            .await
        {
            Ok((written, changed)) => {
                for id in changed {
                    tracing::debug!(entry = %id, "conflict left to the next pass: the entry changed");
                }
                for e in written {
                    let Some(key) = keys.remove(e.entry_id()) else {
                        continue;
                    };
                    let acked = remote
                        .get(&key)
                        .and_then(|(_, read)| read.with_conflicts())
                        .and_then(|read| read.sync.topmost());
                    if let (Some(mut rec), Some(acked)) = (self.index.get(&key).cloned(), acked) {
                        rec.version = entry_version(&e);
                        rec.acknowledged = Some(HistoryItem {
                            seal: None,
                            ..acked.clone()
                        });
                        self.set_index(key, rec)?;
                    }
                }
            }
            Err(e) => self.emit_error(format!("acknowledging conflicts: {e}")),
        }
        Ok(())
    }
}

/// A draft that writes `data`'s title, content and media again.
fn draft_of(data: &EntryData) -> EntryDraft {
    EntryDraft {
        title: data.title.clone(),
        content: data.content.clone(),
        media: data.media.clone(),
    }
}

/// Whether an entry of `ids` is still as a pass read it: at the version `versions` recorded,
/// or still absent if it had none.
fn as_read<'a>(
    versions: &HashMap<EntryId, String>,
    ids: impl Iterator<Item = &'a EntryId>,
) -> impl Fn(&EntryId, Option<&Entry>) -> bool + Send + 'static {
    let expected: HashMap<EntryId, Option<String>> = ids
        .map(|id| (id.clone(), versions.get(id).cloned()))
        .collect();
    move |id, now| {
        expected
            .get(id)
            .is_some_and(|want| now.map(entry_version) == *want)
    }
}

/// Whether `device` wrote this version.
fn written_by(sync: &mesh_core::feedsync::SyncMeta, device: &mesh_core::id::DeviceId) -> bool {
    sync.topmost().and_then(|h| h.by.as_ref()) == Some(device)
}
