//! Entries of application feeds: put, get, delete, query, conflicts.

use mesh_core::error::CoreError;
use mesh_core::feedsync::HistoryItem;
use mesh_core::id::{EntryId, FeedName, FolderId};
use mesh_core::model::{names, Action, Entry, EntryDraft, FeedKey, Query};
use mesh_core::replica::{Replica, Resolution, Written};
use mesh_core::store::Store;

use crate::client::{check_in, MeshClient};
use crate::error::{ClientError, Result};
use crate::store::ClientStore;
use crate::sync::events::{ChangeKind, ChangeSource, Event};

/// What a local write did, for its event.
enum Op {
    Create,
    Update,
    Delete,
    Resolve,
}

impl MeshClient {
    pub(crate) fn app_feed(folder: &FolderId, feed: &FeedName) -> Result<FeedKey> {
        if names::RESERVED.contains(&feed.as_str()) {
            return Err(CoreError::InvalidId {
                kind: "feed name",
                reason: format!("{feed:?} is reserved for the system"),
            }
            .into());
        }
        Ok(FeedKey::folder(folder.clone(), feed.clone()))
    }

    /// Runs a replica write on the blocking pool, then announces it.
    pub(crate) async fn write_entry(
        &self,
        feed: FeedKey,
        f: impl FnOnce(&mut Replica<ClientStore>, &FeedKey) -> mesh_core::Result<Written>
            + Send
            + 'static,
    ) -> Result<Entry> {
        let k = feed.clone();
        let w = self.shared().run(move |r| f(r, &k)).await??;
        self.changed(feed, w.seq);
        Ok(w.entry)
    }

    async fn announce(&self, feed: FeedKey, op: Op, entry: Entry) -> Result<Entry> {
        let kind = match op {
            Op::Create => ChangeKind::Added,
            Op::Update => ChangeKind::Updated,
            Op::Delete => ChangeKind::Deleted,
            Op::Resolve => ChangeKind::Resolved,
        };
        self.emit(Event::EntryChanged {
            feed,
            id: entry.sync.id.clone(),
            kind,
            source: ChangeSource::Local,
        });
        Ok(entry)
    }

    pub(crate) async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Replica<ClientStore>) -> mesh_core::Result<R> + Send + 'static,
    ) -> Result<R> {
        Ok(self.shared().run(move |r| f(r)).await??)
    }

    /// Creates an entry with a new id in an application feed. Needs the Author role or more.
    pub async fn put(
        &self,
        folder: &FolderId,
        feed: &FeedName,
        draft: EntryDraft,
    ) -> Result<Entry> {
        self.put_with_id(folder, feed, new_id()?, draft).await
    }

    /// Creates the entry `id`, or writes a new version of it. Authors may only change their own
    /// entries; Full members and owners any.
    pub async fn put_with_id(
        &self,
        folder: &FolderId,
        feed: &FeedName,
        id: EntryId,
        draft: EntryDraft,
    ) -> Result<Entry> {
        let key = Self::app_feed(folder, feed)?;
        let (actor, now, k) = (self.actor().clone(), self.now(), key.clone());
        let (user, folder) = (self.user().clone(), folder.clone());
        // The author's lookup, the role check and the write in one step on the replica: no
        // sync comes in between, and the store's thread is reached once.
        let (w, op) = self
            .shared()
            .run(move |r| -> Result<(Written, Op)> {
                match r.get(&k, &id)?.map(|e| e.content.author) {
                    Some(author) => {
                        check_in(r, &user, &folder, Action::ChangeEntry { author: &author })?;
                        Ok((r.update(&k, &id, draft, &actor, now)?, Op::Update))
                    }
                    None => {
                        check_in(r, &user, &folder, Action::CreateEntry)?;
                        Ok((r.create(&k, id, draft, &actor, now)?, Op::Create))
                    }
                }
            })
            .await??;
        self.changed(key.clone(), w.seq);
        self.announce(key, op, w.entry).await
    }

    /// Writes the entry `id` only if it is still at the version the caller read: `expected`
    /// is that version's topmost history item (`entry.sync.topmost()`), or `None` for "the
    /// entry must not exist yet". Otherwise nothing is written and the error's kind is
    /// [`ErrorKind::Conflict`](crate::ErrorKind::Conflict) (re-read, then try again). The check
    /// and the write are one step: no sync can come in between.
    pub async fn put_if(
        &self,
        folder: &FolderId,
        feed: &FeedName,
        id: EntryId,
        expected: Option<&HistoryItem>,
        draft: EntryDraft,
    ) -> Result<Entry> {
        let key = Self::app_feed(folder, feed)?;
        let existing = self.entry_author(&key, &id).await?;
        let creating = existing.is_none();
        match &existing {
            Some(author) => self.check(folder, Action::ChangeEntry { author }).await?,
            None => self.check(folder, Action::CreateEntry).await?,
        };
        let (actor, now, k) = (self.actor().clone(), self.now(), key.clone());
        let expected = expected.cloned();
        let w = self
            .shared()
            .run(move |r| {
                let cur = r.get(&k, &id)?;
                let top = cur.as_ref().and_then(|e| e.sync.topmost().cloned());
                if top != expected {
                    return Err(ClientError::Conflict(format!(
                        "entry {id} is at {}, not at the expected {}",
                        describe(top.as_ref()),
                        describe(expected.as_ref())
                    )));
                }
                // Its author was checked above; it cannot change while this runs.
                if cur.is_none() != creating {
                    return Err(ClientError::Conflict(format!(
                        "entry {id} changed meanwhile"
                    )));
                }
                Ok(match cur {
                    Some(_) => r.update(&k, &id, draft, &actor, now)?,
                    None => r.create(&k, id, draft, &actor, now)?,
                })
            })
            .await??;
        self.changed(key.clone(), w.seq);
        let op = if creating { Op::Create } else { Op::Update };
        self.announce(key, op, w.entry).await
    }

    /// Creates or updates many entries of one feed in one local transaction (all or none).
    /// Like [`put`](MeshClient::put) and [`put_with_id`](MeshClient::put_with_id) in one:
    /// each item is an [`EntryDraft`] (a new entry with a new id) or an `(EntryId,
    /// EntryDraft)` (that entry, created or updated). The role check is the same as for each
    /// single write.
    pub async fn put_many<D: Into<BatchItem>>(
        &self,
        folder: &FolderId,
        feed: &FeedName,
        drafts: Vec<D>,
    ) -> Result<Vec<Entry>> {
        let drafts = drafts
            .into_iter()
            .map(|d| {
                let BatchItem { id, draft } = d.into();
                Ok((id.map_or_else(new_id, Ok)?, draft))
            })
            .collect::<Result<Vec<_>>>()?;
        let (written, _) = self
            .put_many_where(folder, feed, drafts, |_, _| true)
            .await?;
        Ok(written)
    }

    /// [`put_many`](MeshClient::put_many) for drafts that were planned against what their
    /// entries were: each is written only if `still(id, entry as it is now)` holds, checked
    /// in the same step as the write, so no sync can come in between. The others are left
    /// out; their ids are returned beside the entries written.
    pub(crate) async fn put_many_where<F>(
        &self,
        folder: &FolderId,
        feed: &FeedName,
        drafts: Vec<(EntryId, EntryDraft)>,
        still: F,
    ) -> Result<(Vec<Entry>, Vec<EntryId>)>
    where
        F: Fn(&EntryId, Option<&Entry>) -> bool + Send + 'static,
    {
        let key = Self::app_feed(folder, feed)?;
        let member = self.check(folder, Action::CreateEntry).await?;
        let role = member
            .as_ref()
            .and_then(mesh_core::model::Member::effective_role);
        let (actor, now, k) = (self.actor().clone(), self.now(), key.clone());
        let (written, changed) = self
            .shared()
            .run(move |r| {
                let (kept, changed) = split_unchanged(r, &k, drafts, |(id, _)| id, &still)?;
                if kept.is_empty() {
                    return Ok((Vec::new(), changed));
                }
                may_change_all(r, &k, kept.iter().map(|(id, _)| id), &actor.user, role)?;
                Ok::<_, ClientError>((r.write_batch(&k, kept, &actor, now)?, changed))
            })
            .await??;
        if let Some(last) = written.last() {
            self.changed(key.clone(), last.seq);
        }
        let mut out = Vec::with_capacity(written.len());
        for w in written {
            let op = if w.entry.sync.updates == 1 {
                Op::Create
            } else {
                Op::Update
            };
            out.push(self.announce(key.clone(), op, w.entry).await?);
        }
        Ok((out, changed))
    }

    /// Checks that this user may change the existing entry `id`; gives its feed key.
    async fn check_change(
        &self,
        folder: &FolderId,
        feed: &FeedName,
        id: &EntryId,
    ) -> Result<FeedKey> {
        let key = Self::app_feed(folder, feed)?;
        let author = self
            .entry_author(&key, id)
            .await?
            .ok_or_else(|| CoreError::NotFound {
                kind: "entry",
                id: id.to_string(),
            })?;
        self.check(folder, Action::ChangeEntry { author: &author })
            .await?;
        Ok(key)
    }

    async fn entry_author(
        &self,
        key: &FeedKey,
        id: &EntryId,
    ) -> Result<Option<mesh_core::id::UserId>> {
        let (k, i) = (key.clone(), id.clone());
        self.read(move |r| Ok(r.get(&k, &i)?.map(|e| e.content.author)))
            .await
    }

    /// One live entry (`None` when absent or deleted).
    pub async fn get(
        &self,
        folder: &FolderId,
        feed: &FeedName,
        id: &EntryId,
    ) -> Result<Option<Entry>> {
        self.check(folder, Action::Read).await?;
        let (k, i) = (Self::app_feed(folder, feed)?, id.clone());
        self.read(move |r| Ok(r.get(&k, &i)?.filter(|e| !e.is_deleted())))
            .await
    }

    /// Deletes an entry (a tombstone syncs to every replica).
    pub async fn delete(&self, folder: &FolderId, feed: &FeedName, id: &EntryId) -> Result<()> {
        let key = self.check_change(folder, feed, id).await?;
        let (actor, now, id) = (self.actor().clone(), self.now(), id.clone());
        let e = self
            .write_entry(key.clone(), move |r, k| r.delete(k, &id, &actor, now))
            .await?;
        self.announce(key, Op::Delete, e).await.map(|_| ())
    }

    /// Deletes many entries of a feed in one transaction (tombstones, like
    /// [`MeshClient::delete`]); ids that are absent or already deleted are skipped. Every entry
    /// must be one this user may change. Gives the tombstones written.
    pub async fn delete_many(
        &self,
        folder: &FolderId,
        feed: &FeedName,
        ids: Vec<EntryId>,
    ) -> Result<Vec<Entry>> {
        let (written, _) = self
            .delete_many_where(folder, feed, ids, |_, _| true)
            .await?;
        Ok(written)
    }

    /// [`delete_many`](MeshClient::delete_many) for deletions planned against what their
    /// entries were: each entry is deleted only if `still(id, entry as it is now)` holds,
    /// checked in the same step; the ids of the others are returned beside the tombstones.
    pub(crate) async fn delete_many_where<F>(
        &self,
        folder: &FolderId,
        feed: &FeedName,
        ids: Vec<EntryId>,
        still: F,
    ) -> Result<(Vec<Entry>, Vec<EntryId>)>
    where
        F: Fn(&EntryId, Option<&Entry>) -> bool + Send + 'static,
    {
        let key = Self::app_feed(folder, feed)?;
        let member = self.check(folder, Action::Read).await?;
        let role = member
            .as_ref()
            .and_then(mesh_core::model::Member::effective_role);
        let (actor, now, k) = (self.actor().clone(), self.now(), key.clone());
        let (written, changed) = self
            .shared()
            .run(move |r| {
                let (kept, changed) = split_unchanged(r, &k, ids, |id| id, &still)?;
                if kept.is_empty() {
                    return Ok((Vec::new(), changed));
                }
                may_change_all(r, &k, kept.iter(), &actor.user, role)?;
                Ok::<_, ClientError>((r.delete_batch(&k, &kept, &actor, now)?, changed))
            })
            .await??;
        if let Some(last) = written.last() {
            self.changed(key.clone(), last.seq);
        }
        let mut out = Vec::with_capacity(written.len());
        for w in written {
            out.push(self.announce(key.clone(), Op::Delete, w.entry).await?);
        }
        Ok((out, changed))
    }

    /// Entries of a feed that match `query` (filter, order, paging).
    pub async fn query(
        &self,
        folder: &FolderId,
        feed: &FeedName,
        query: Query,
    ) -> Result<Vec<Entry>> {
        self.check(folder, Action::Read).await?;
        let k = Self::app_feed(folder, feed)?;
        self.read(move |r| Ok(query.run(r.store().list(&k, None, usize::MAX)?)))
            .await
    }

    /// Every entry of the folder's application feeds that holds unresolved conflicts.
    pub async fn conflicts(&self, folder: &FolderId) -> Result<Vec<(FeedName, Entry)>> {
        self.check(folder, Action::Read).await?;
        let folder = folder.clone();
        self.read(move |r| {
            let mut out = Vec::new();
            for h in r.store().feeds()? {
                if h.feed.folder_id() != Some(&folder) || h.feed.is_system() {
                    continue;
                }
                for e in r.store().list(&h.feed, None, usize::MAX)? {
                    if e.has_conflicts() {
                        out.push((h.feed.name.clone(), e));
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Resolves every conflict of an entry: keep one version (best named by its topmost
    /// history item, [`Resolution::Keep`]: the kind is
    /// [`ErrorKind::Conflict`](crate::ErrorKind::Conflict) when that version is no longer
    /// there), write new content, or delete.
    pub async fn resolve(
        &self,
        folder: &FolderId,
        feed: &FeedName,
        id: &EntryId,
        resolution: Resolution,
    ) -> Result<Entry> {
        self.resolve_where(folder, feed, id, resolution, |_| true)
            .await?
            .ok_or_else(|| ClientError::Conflict(format!("{id} changed while it was resolved")))
    }

    /// [`resolve`](MeshClient::resolve) for a resolution chosen from what the entry was: made
    /// only if `still(entry as it is now)` holds, checked in the same step (`None` if not).
    pub(crate) async fn resolve_where<F>(
        &self,
        folder: &FolderId,
        feed: &FeedName,
        id: &EntryId,
        resolution: Resolution,
        still: F,
    ) -> Result<Option<Entry>>
    where
        F: FnOnce(&Entry) -> bool + Send + 'static,
    {
        let key = self.check_change(folder, feed, id).await?;
        let (actor, now, id) = (self.actor().clone(), self.now(), id.clone());
        let k = key.clone();
        let w = self
            .shared()
            .run(move |r| {
                let cur = r.get(&k, &id)?;
                if cur.as_ref().is_some_and(|cur| !still(cur)) {
                    return Ok(None);
                }
                if let Resolution::Keep(top) = &resolution {
                    let there = cur.is_some_and(|cur| {
                        cur.sync.topmost() == Some(top)
                            || cur.conflicts.iter().any(|c| c.sync.topmost() == Some(top))
                    });
                    if !there {
                        return Err(ClientError::Conflict(format!(
                            "the version of {id} at {} is no longer there",
                            describe(Some(top))
                        )));
                    }
                }
                Ok(Some(r.resolve(&k, &id, resolution, &actor, now)?))
            })
            .await??;
        let Some(w) = w else { return Ok(None) };
        self.changed(key.clone(), w.seq);
        self.announce(key, Op::Resolve, w.entry).await.map(Some)
    }
}

/// A version, by its topmost history item, for messages.
fn describe(top: Option<&HistoryItem>) -> String {
    match top {
        None => "no version".into(),
        Some(h) => format!(
            "update {} by {}",
            h.sequence,
            h.by.as_ref().map_or("?", |d| d.as_str())
        ),
    }
}

/// A fresh entry id: a version 7 UUID (RFC 9562) as 32 hex digits, which starts with the
/// time it was made in milliseconds, so that the ids one process makes sort in the order it
/// made them. Every replica keeps an index of entries by id; ids that arrive in order are
/// appended to it, where random ones rewrite index pages all over it with every commit (about
/// half of a plain SQLite insert's cost at 100,000 entries). The time an id shows, to the
/// millisecond, adds little to the entry's own `published` (to the second).
pub(crate) fn new_id() -> Result<EntryId> {
    Ok(uuid::Uuid::now_v7().simple().to_string().parse()?)
}

/// One item of [`MeshClient::put_many`]: a draft, with the id of the entry to write or
/// without one (a new entry gets a new id, as with [`MeshClient::put`]).
#[derive(Debug, Clone)]
pub struct BatchItem {
    id: Option<EntryId>,
    draft: EntryDraft,
}

impl From<EntryDraft> for BatchItem {
    fn from(draft: EntryDraft) -> Self {
        BatchItem { id: None, draft }
    }
}

impl From<(EntryId, EntryDraft)> for BatchItem {
    fn from((id, draft): (EntryId, EntryDraft)) -> Self {
        BatchItem {
            id: Some(id),
            draft,
        }
    }
}

/// Splits `items` into those whose entry (named by `id`) `still` accepts as it is now, and
/// the ids of the others.
fn split_unchanged<T>(
    r: &Replica<ClientStore>,
    feed: &FeedKey,
    items: Vec<T>,
    id: impl Fn(&T) -> &EntryId,
    still: &impl Fn(&EntryId, Option<&Entry>) -> bool,
) -> mesh_core::Result<(Vec<T>, Vec<EntryId>)> {
    let (mut kept, mut changed) = (Vec::with_capacity(items.len()), Vec::new());
    for item in items {
        let i = id(&item);
        if still(i, r.get(feed, i)?.as_ref()) {
            kept.push(item);
        } else {
            changed.push(i.clone());
        }
    }
    Ok((kept, changed))
}

/// Checks that `user`, holding `role`, may change every entry of `ids` that `feed` already
/// holds (the others would be created): one check for the batch calls.
fn may_change_all<'a>(
    r: &Replica<ClientStore>,
    feed: &FeedKey,
    ids: impl Iterator<Item = &'a EntryId>,
    user: &mesh_core::id::UserId,
    role: Option<mesh_core::model::Role>,
) -> mesh_core::Result<()> {
    for id in ids {
        if let Some(e) = r.get(feed, id)? {
            mesh_core::model::authorize(
                user,
                role,
                Action::ChangeEntry {
                    author: &e.content.author,
                },
            )?;
        }
    }
    Ok(())
}
