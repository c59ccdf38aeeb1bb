//! A replica: FeedSync entries in a [`Store`], with local writes and merges that each take the
//! next position in their feed's change log.
//!
//! ```
//! use mesh_core::model::{EntryDraft, FeedKey};
//! use mesh_core::replica::{Actor, Replica};
//! use mesh_core::store::{Cursor, MemoryStore};
//! use mesh_core::time::Timestamp;
//!
//! let mut replica = Replica::new(MemoryStore::new("laptop".parse().unwrap()));
//! let feed = FeedKey::folder("f1".parse().unwrap(), "todos".parse().unwrap());
//! let ann = Actor::new("ann".parse().unwrap(), "laptop".parse().unwrap());
//! let now = Timestamp::from_unix(1_700_000_000).unwrap();
//! let w = replica
//!     .create(&feed, "t1".parse().unwrap(), EntryDraft::new("Buy milk", serde_json::json!({})), &ann, now)
//!     .unwrap();
//! assert_eq!(w.seq, Cursor(1));
//! let page = replica.changes_since(&feed, Cursor::ZERO, 10).unwrap();
//! assert_eq!(page.changes.len(), 1);
//! ```

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::feedsync::{self, MergeOutcome, Merged, Stamp};
use crate::id::{DeviceId, EntryId, RemoteId, ReplicaId, UserId};
use crate::model::{Entry, EntryData, EntryDraft, FeedKey};
use crate::store::{ChangePage, Cursor, Incoming, Store, StoreTxn, SyncState};
use crate::time::Timestamp;
use crate::trust::{self, PublicKey, SecretKey};

/// Who writes: a user, on one of their devices (the FeedSync endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Actor {
    /// The user; becomes the author of entries they create.
    pub user: UserId,
    /// The device; the `by` of the history items it writes.
    pub device: DeviceId,
}

impl Actor {
    /// A user on a device.
    pub fn new(user: UserId, device: DeviceId) -> Self {
        Actor { user, device }
    }

    fn stamp(&self, when: Timestamp) -> Stamp {
        Stamp::new(self.device.clone(), when)
    }
}

/// Options of a [`Replica`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaOptions {
    /// Compact the history of every version this replica writes to one item per device plus
    /// the topmost. Merge results are unchanged; histories stay short on long-lived entries.
    pub compact_history: bool,
}

/// A local write's result: the entry as stored and the position its change took in the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The entry after the write.
    pub entry: Entry,
    /// Its position in the change log.
    pub seq: Cursor,
}

/// What merging one incoming entry did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeReport {
    /// The entry.
    pub id: EntryId,
    /// What happened to the local copy.
    pub outcome: MergeOutcome,
    /// The position its change took in the feed, when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<Cursor>,
    /// Whether the entry's winning version is now a tombstone (when it changed).
    #[serde(default)]
    pub deleted: bool,
    /// Whether the merge cleared conflicts the entry held here: it had some, and what it
    /// stored has none (a resolution made elsewhere arrived).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resolved: bool,
}

/// How an application resolves an entry's conflicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Keep one of the versions: 0 is the current winner, `n` is conflict `n - 1`. A sync
    /// can reorder the versions between reading and resolving: prefer [`Resolution::Keep`].
    Pick(usize),
    /// Keep the version whose topmost history item is this one (the winner's or a
    /// conflict's `sync.topmost()`); refused with `not_found` when no version of the entry has
    /// it any more (a sync replaced it).
    Keep(crate::feedsync::HistoryItem),
    /// Keep new content written by the application.
    Write(EntryDraft),
    /// Resolve by deleting the entry.
    Delete,
}

/// A replica of feeds over a [`Store`].
pub struct Replica<S> {
    store: S,
    options: ReplicaOptions,
    signer: Option<SecretKey>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Replica<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("store", &self.store)
            .finish()
    }
}

impl<S: Store> Replica<S> {
    /// A replica over `store` with default options.
    pub fn new(store: S) -> Self {
        Replica::with_options(store, ReplicaOptions::default())
    }

    /// A replica over `store`.
    pub fn with_options(store: S, options: ReplicaOptions) -> Self {
        Replica {
            store,
            options,
            signer: None,
        }
    }

    /// Signs every version this replica writes from now on with `key`, the key of the device
    /// that writes them (see [`crate::trust`]): the new topmost history item carries a
    /// [`Seal`](crate::trust::Seal).
    pub fn set_signer(&mut self, key: SecretKey) {
        self.signer = Some(key);
    }

    /// The public key versions are signed with, if any.
    pub fn signer(&self) -> Option<PublicKey> {
        self.signer.as_ref().map(SecretKey::public)
    }
}

/// Compacts (when asked) and signs (when a signer is set) a version a replica wrote.
fn finish(options: &ReplicaOptions, signer: Option<&SecretKey>, feed: &FeedKey, entry: &mut Entry) {
    if options.compact_history {
        entry.sync.compact();
    }
    if let Some(key) = signer {
        let deleted = entry.sync.deleted;
        trust::seal_version(
            feed,
            &entry.sync.id,
            &mut entry.sync.history,
            deleted,
            &entry.content,
            key,
        );
    }
}

impl<S: Store> Replica<S> {
    /// The replica's id.
    pub fn id(&self) -> ReplicaId {
        self.store.replica_id()
    }

    /// The store, for reads.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, for writes outside the replica's own operations (such as sync state).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Gives the store back.
    pub fn into_store(self) -> S {
        self.store
    }

    /// One entry (tombstones included).
    pub fn get(&self, feed: &FeedKey, id: &EntryId) -> Result<Option<Entry>> {
        self.store.get(feed, id)
    }

    /// Up to `limit` changes of `feed` after `since`.
    pub fn changes_since(&self, feed: &FeedKey, since: Cursor, limit: usize) -> Result<ChangePage> {
        self.store.changes_since(feed, since, limit, None)
    }

    /// Creates an entry authored by `actor.user`. Fails with `AlreadyExists` if the id is taken
    /// (tombstones included: ids are never reused).
    pub fn create(
        &mut self,
        feed: &FeedKey,
        id: EntryId,
        draft: EntryDraft,
        actor: &Actor,
        when: Timestamp,
    ) -> Result<Written> {
        let key = id.clone();
        self.write(feed, &key, |cur| match cur {
            Some(_) => Err(CoreError::AlreadyExists {
                kind: "entry",
                id: id.to_string(),
            }),
            None => Ok(feedsync::create(
                id,
                &actor.stamp(when),
                draft.into_new_data(actor.user.clone(), when),
            )),
        })
    }

    /// Writes a new version of an entry (also revives a deleted one).
    pub fn update(
        &mut self,
        feed: &FeedKey,
        id: &EntryId,
        draft: EntryDraft,
        actor: &Actor,
        when: Timestamp,
    ) -> Result<Written> {
        self.write(feed, id, |cur| {
            let cur = cur.ok_or_else(|| not_found(id))?;
            let data = draft.into_next_data(&cur.content, when);
            feedsync::update(cur, &actor.stamp(when), data, false)
        })
    }

    /// Deletes an entry, leaving a tombstone that syncs like any other version.
    pub fn delete(
        &mut self,
        feed: &FeedKey,
        id: &EntryId,
        actor: &Actor,
        when: Timestamp,
    ) -> Result<Written> {
        self.write(feed, id, |cur| {
            let cur = cur
                .filter(|e| !e.is_deleted())
                .ok_or_else(|| not_found(id))?;
            let mut data = cur.content.clone();
            data.updated = when;
            feedsync::update(cur, &actor.stamp(when), data, true)
        })
    }

    /// Resolves every conflict of an entry.
    pub fn resolve(
        &mut self,
        feed: &FeedKey,
        id: &EntryId,
        resolution: Resolution,
        actor: &Actor,
        when: Timestamp,
    ) -> Result<Written> {
        self.write(feed, id, |cur| {
            let cur = cur.ok_or_else(|| not_found(id))?;
            if !cur.has_conflicts() {
                return Err(CoreError::NotFound {
                    kind: "conflict of entry",
                    id: id.to_string(),
                });
            }
            let stamp = actor.stamp(when);
            let (mut data, deleted) = match resolution {
                Resolution::Pick(0) => (cur.content.clone(), cur.sync.deleted),
                Resolution::Pick(n) => {
                    let v = cur
                        .conflicts
                        .get(n - 1)
                        .ok_or_else(|| CoreError::NotFound {
                            kind: "conflict version",
                            id: format!("{id}#{n}"),
                        })?;
                    (v.content.clone(), v.sync.deleted)
                }
                Resolution::Keep(top) => {
                    if cur.sync.topmost() == Some(&top) {
                        (cur.content.clone(), cur.sync.deleted)
                    } else {
                        let v = cur
                            .conflicts
                            .iter()
                            .find(|c| c.sync.topmost() == Some(&top))
                            .ok_or_else(|| CoreError::NotFound {
                                kind: "version",
                                id: format!("{id}@{}", top.sequence),
                            })?;
                        (v.content.clone(), v.sync.deleted)
                    }
                }
                Resolution::Write(draft) => (draft.into_next_data(&cur.content, when), false),
                Resolution::Delete => (cur.content.clone(), true),
            };
            data.updated = when;
            feedsync::resolve(cur, &stamp, data, deleted)
        })
    }

    /// Creates or updates many entries of one feed in one transaction (all or none): each
    /// id that exists gets a new version, the others are created by `actor`.
    pub fn write_batch(
        &mut self,
        feed: &FeedKey,
        drafts: Vec<(EntryId, EntryDraft)>,
        actor: &Actor,
        when: Timestamp,
    ) -> Result<Vec<Written>> {
        let stamp = actor.stamp(when);
        let mut tx = self.store.begin()?;
        let ids: Vec<EntryId> = drafts.iter().map(|(id, _)| id.clone()).collect();
        tx.prefetch(feed, &ids)?;
        let mut out = Vec::with_capacity(drafts.len());
        for (id, draft) in drafts {
            let mut entry = {
                let cur = tx.get(feed, &id)?;
                match cur.as_deref() {
                    Some(cur) => {
                        let data = draft.into_next_data(&cur.content, when);
                        feedsync::update(cur, &stamp, data, false)?
                    }
                    None => {
                        feedsync::create(id, &stamp, draft.into_new_data(actor.user.clone(), when))
                    }
                }
            };
            finish(&self.options, self.signer.as_ref(), feed, &mut entry);
            let seq = tx.put(feed, entry.clone(), None)?;
            out.push(Written { entry, seq });
        }
        tx.commit()?;
        Ok(out)
    }

    /// Deletes many entries of one feed in one transaction: a tombstone for each, as
    /// [`Replica::delete`] writes. Ids that are absent or already deleted are skipped.
    pub fn delete_batch(
        &mut self,
        feed: &FeedKey,
        ids: &[EntryId],
        actor: &Actor,
        when: Timestamp,
    ) -> Result<Vec<Written>> {
        let stamp = actor.stamp(when);
        let mut tx = self.store.begin()?;
        tx.prefetch(feed, ids)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let mut entry = {
                let cur = tx.get(feed, id)?;
                let Some(cur) = cur.as_deref().filter(|e| !e.is_deleted()) else {
                    continue;
                };
                let mut data = cur.content.clone();
                data.updated = when;
                feedsync::update(cur, &stamp, data, true)?
            };
            finish(&self.options, self.signer.as_ref(), feed, &mut entry);
            let seq = tx.put(feed, entry.clone(), None)?;
            out.push(Written { entry, seq });
        }
        tx.commit()?;
        Ok(out)
    }

    fn write(
        &mut self,
        feed: &FeedKey,
        id: &EntryId,
        f: impl FnOnce(Option<&Entry>) -> Result<Entry>,
    ) -> Result<Written> {
        let mut tx = self.store.begin()?;
        let mut entry = {
            let cur = tx.get(feed, id)?;
            f(cur.as_deref())?
        };
        finish(&self.options, self.signer.as_ref(), feed, &mut entry);
        let seq = tx.put(feed, entry.clone(), None)?;
        tx.commit()?;
        Ok(Written { entry, seq })
    }

    /// Merges one incoming entry; see [`Replica::merge_batch`].
    pub fn merge(
        &mut self,
        feed: &FeedKey,
        incoming: Entry,
        origin: Option<&ReplicaId>,
    ) -> Result<MergeReport> {
        let mut reports = self.merge_batch(feed, vec![incoming], origin)?;
        reports
            .pop()
            .ok_or_else(|| CoreError::Store("merge produced no report".into()))
    }

    /// Merges a batch of incoming entries in one transaction: all of it is applied, or (on any
    /// error, such as a malformed entry or a sync id given twice) none of it. Every entry that
    /// changes takes the feed's next position; `origin` is the replica the batch came
    /// from, so that it is not sent back what it already has.
    pub fn merge_batch(
        &mut self,
        feed: &FeedKey,
        incoming: Vec<Entry>,
        origin: Option<&ReplicaId>,
    ) -> Result<Vec<MergeReport>> {
        self.merge_batch_with_state(feed, incoming, origin, None)
    }

    /// [`Replica::merge_batch`] with a [`MergeGate`]: the gate sees every incoming entry before
    /// its merge and, when the merge would change the replica or discard a version, the
    /// merge's result. An entry the
    /// gate refuses with a per-entry error (see [`is_refusal`]) is left out (reported
    /// `Unchanged`, with the refusal) while the rest of the batch is merged; any other error
    /// aborts the whole batch.
    ///
    /// An incoming entry that carries its JSON ([`Incoming::encoded`]) and is stored as it
    /// came (no local version kept beside it, no conflicts) is written as that JSON.
    pub fn merge_batch_filtered(
        &mut self,
        feed: &FeedKey,
        incoming: Vec<Incoming>,
        origin: Option<&ReplicaId>,
        gate: &mut dyn MergeGate,
    ) -> Result<Vec<(MergeReport, Option<CoreError>)>> {
        check_unique(feed, incoming.iter().map(Incoming::entry))?;
        let mut tx = self.store.begin()?;
        let ids: Vec<EntryId> = incoming.iter().map(|e| e.entry().sync.id.clone()).collect();
        tx.prefetch(feed, &ids)?;
        let mut out = Vec::with_capacity(incoming.len());
        for incoming in incoming {
            let (entry, json) = incoming.into_storable_parts();
            let id = entry.sync.id.clone();
            let mut report = MergeReport {
                id,
                outcome: MergeOutcome::Unchanged,
                seq: None,
                deleted: false,
                resolved: false,
            };
            let (merged, refused, had_conflicts) = {
                let local = tx.get(feed, &report.id)?;
                let local = local.as_deref();
                let had_conflicts = local.is_some_and(Entry::has_conflicts);
                let (merged, refused) = match gate.before(local, &entry) {
                    Err(e) if is_refusal(&e) => (None, Some(e)),
                    Err(e) => return Err(e),
                    Ok(()) => {
                        let merged = feedsync::merge(local, entry)?;
                        let refused = if merged.item.is_some() || merged.discarded {
                            match gate.after(local, &merged) {
                                Ok(()) => None,
                                Err(e) if is_refusal(&e) => Some(e),
                                Err(e) => return Err(e),
                            }
                        } else {
                            None
                        };
                        (Some(merged), refused)
                    }
                };
                (merged, refused, had_conflicts)
            };
            if let (Some(merged), None) = (merged, &refused) {
                report.outcome = merged.outcome;
                if let Some(item) = merged.item {
                    report.deleted = item.sync.deleted;
                    report.resolved = had_conflicts && !item.has_conflicts();
                    report.seq = Some(put_merged(
                        &mut tx,
                        feed,
                        item,
                        merged.verbatim,
                        json,
                        origin,
                    )?);
                }
            }
            out.push((report, refused));
        }
        tx.commit()?;
        Ok(out)
    }

    /// [`Replica::merge_batch`], also recording a sync state in the same transaction (so that
    /// a pull cursor never runs ahead of the merged data).
    ///
    /// An incoming entry that carries its JSON ([`Incoming::encoded`]) and is stored as it
    /// came (no local version kept beside it, no conflicts) is written as that JSON, as in
    /// [`Replica::merge_batch_filtered`]: a receiver can make it while the batch before is
    /// merged.
    pub fn merge_batch_with_state<E: Into<Incoming>>(
        &mut self,
        feed: &FeedKey,
        incoming: Vec<E>,
        origin: Option<&ReplicaId>,
        state: Option<(&RemoteId, &SyncState)>,
    ) -> Result<Vec<MergeReport>> {
        let incoming: Vec<Incoming> = incoming.into_iter().map(Into::into).collect();
        check_unique(feed, incoming.iter().map(Incoming::entry))?;
        let mut tx = self.store.begin()?;
        let ids: Vec<EntryId> = incoming.iter().map(|e| e.entry().sync.id.clone()).collect();
        tx.prefetch(feed, &ids)?;
        let mut reports = Vec::with_capacity(incoming.len());
        for incoming in incoming {
            let (entry, json) = incoming.into_storable_parts();
            let id = entry.sync.id.clone();
            let (merged, had_conflicts) = {
                let local = tx.get(feed, &id)?;
                let had_conflicts = local.as_deref().is_some_and(Entry::has_conflicts);
                (feedsync::merge(local.as_deref(), entry)?, had_conflicts)
            };
            let (seq, deleted, resolved) = match merged.item {
                Some(item) => {
                    let deleted = item.sync.deleted;
                    let resolved = had_conflicts && !item.has_conflicts();
                    let seq = put_merged(&mut tx, feed, item, merged.verbatim, json, origin)?;
                    (Some(seq), deleted, resolved)
                }
                None => (None, false, false),
            };
            reports.push(MergeReport {
                id,
                outcome: merged.outcome,
                seq,
                deleted,
                resolved,
            });
        }
        if let Some((remote, state)) = state {
            tx.set_sync_state(remote, feed, state)?;
        }
        tx.commit()?;
        Ok(reports)
    }
}

/// Judges the entries of a [`Replica::merge_batch_filtered`]: once before each merge, and
/// again with the result when the merge would change the replica.
pub trait MergeGate {
    /// Checks an incoming entry against what the replica holds, before any merge work.
    fn before(&mut self, local: Option<&Entry>, incoming: &Entry) -> Result<()>;
    /// Checks a merge that would change the replica (`merged.item` is the item it would store
    /// in place of `local`), or that would discard versions (`merged.discarded`).
    fn after(&mut self, local: Option<&Entry>, merged: &Merged<EntryData>) -> Result<()>;
}

/// Whether a gate's error refuses one entry (permissions, signatures, certificates,
/// revocations, limits, unknown resources) rather than the whole batch.
pub fn is_refusal(e: &CoreError) -> bool {
    matches!(
        e,
        CoreError::PermissionDenied(_)
            | CoreError::NotFound { .. }
            | CoreError::InvalidSignature(_)
            | CoreError::UntrustedCertificate(_)
            | CoreError::Revoked { .. }
            | CoreError::LimitExceeded(_)
    )
}

/// Stores a merge's result `item`: when the merge kept the incoming entry `verbatim`, as the
/// JSON made ahead for it (if any, see [`Incoming::into_storable_parts`]) and as coming from
/// `origin`; otherwise encoded by the store, as this replica's own version.
fn put_merged<T: StoreTxn>(
    tx: &mut T,
    feed: &FeedKey,
    item: Entry,
    verbatim: bool,
    json: Option<String>,
    origin: Option<&ReplicaId>,
) -> Result<Cursor> {
    match verbatim {
        true => tx.put_incoming(feed, Incoming::rejoin(item, json), origin),
        false => tx.put(feed, item, None),
    }
}

fn not_found(id: &EntryId) -> CoreError {
    CoreError::NotFound {
        kind: "entry",
        id: id.to_string(),
    }
}

/// Refuses a batch that names one sync id twice.
fn check_unique<'a>(
    feed: &FeedKey,
    incoming: impl ExactSizeIterator<Item = &'a Entry>,
) -> Result<()> {
    if incoming.len() > 1 {
        let mut seen = HashSet::with_capacity(incoming.len());
        for e in incoming {
            if !seen.insert(&e.sync.id) {
                return Err(CoreError::DuplicateId {
                    id: e.sync.id.to_string(),
                    context: format!("merge batch for {feed}"),
                });
            }
        }
    }
    Ok(())
}
