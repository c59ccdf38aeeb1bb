//! Access control for a replica that serves several users (a hub, or a device serving peers).
//!
//! Who may read and write what follows from the folders' `members` feeds held by the serving
//! replica itself, through the one permission check of the model
//! ([`authorize`](crate::model::authorize)), and from who **signed** each version
//! ([`crate::trust`]), never from who relayed it:
//!
//! * a user's mesh feeds (`mesh:<user>/…`) belong to that user alone;
//! * a folder's `members` feed is visible to everyone named in it (so that an invited user can
//!   see and accept the invitation); its other feeds need an active membership;
//! * a pushed entry is first held to the item-shape limits
//!   ([`limits`](crate::feedsync::limits)) and its signatures are checked: every history item
//!   the replica does not already hold, in the winning version and in every conflict
//!   ([`verify_entry`]);
//! * then every version the merge would newly store — winner or conflict — is authorized as a
//!   write of its signer's user (see [`rules`]): creating an entry, changing one (by author),
//!   inviting, answering an invitation, managing members, mapping, deleting the folder;
//! * a push may not discard a version it does not know (`noconflicts`), and a folder always
//!   keeps at least one active owner.
//!
//! The pusher itself needs only read access: a Reader's device may carry an Owner's signed
//! change. A user who may not read a feed is told it does not exist (`not_found`), never that
//! it is forbidden, so that folder ids do not leak. All of it runs inside the replica's
//! write transaction, so that concurrent requests cannot slip past a check.

mod roster;
pub mod rules;

use crate::error::{CoreError, Result};
use crate::feedsync::{limits, Merged};
use crate::id::{EntryId, FolderId, ReplicaId, UserId};
use crate::model::EntryData;
use crate::model::{
    authorize, names, Action, Entry, FeedKey, InvitationState, Member, Role, Scope,
};
use crate::replica::{MergeGate, Replica};
use crate::store::{Incoming, Store};
use crate::sync::message::{PushResult, Request, Response};
use crate::trust::{Checked, Keyring};

pub use roster::Roster;

/// Who pushes, and against what their data is checked.
#[derive(Clone, Copy)]
pub struct Pusher<'a> {
    /// The authenticated user who sends the data.
    pub user: &'a UserId,
    /// The devices whose signatures the replica can check.
    pub keyring: &'a dyn Keyring,
    /// Whose role versions signed by the authority itself are checked against: the REST
    /// caller when the hub writes on a caller's behalf; `None` when such versions arrive by
    /// sync (the authority checked the role when it signed them).
    pub authority_acts_for: Option<&'a UserId>,
    /// How many threads may verify signatures of one push (1: the calling thread only).
    pub threads: usize,
    /// The entries were pulled by the judging replica (a page a peer sent), not pushed to it:
    /// no answer goes back, so a new folder's founding records may come from whoever relays
    /// them (their signer must still be the user the folder's id names).
    pub pulled: bool,
    /// Signature checks already made (see [`Pusher::with_checked`]).
    pub checked: Option<&'a Checked>,
}

impl<'a> Pusher<'a> {
    /// `user` pushing data checked against `keyring`.
    pub fn new(user: &'a UserId, keyring: &'a dyn Keyring) -> Self {
        Pusher {
            user,
            keyring,
            authority_acts_for: None,
            threads: 1,
            pulled: false,
            checked: None,
        }
    }

    /// The authority writing on `user`'s behalf (the hub's REST API): versions it signs are
    /// authorized as `user`'s writes.
    pub fn on_behalf_of(user: &'a UserId, keyring: &'a dyn Keyring) -> Self {
        Pusher {
            user,
            keyring,
            authority_acts_for: Some(user),
            threads: 1,
            pulled: false,
            checked: None,
        }
    }
}

impl<'a> Pusher<'a> {
    /// Takes the signature checks in `checked` as passed (made early by
    /// [`check_signatures`](crate::trust::check_signatures), outside any lock).
    pub fn with_checked(mut self, checked: &'a Checked) -> Self {
        self.checked = Some(checked);
        self
    }

    /// Lets signature checks of one push use up to `threads` threads.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Judges a page pulled from a remote (see [`Pusher::pulled`]).
    pub fn pulled(mut self) -> Self {
        self.pulled = true;
        self
    }
}

impl std::fmt::Debug for Pusher<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher")
            .field("user", self.user)
            .field("authority_acts_for", &self.authority_acts_for)
            .finish_non_exhaustive()
    }
}

/// The membership record of `user` in `folder`, if any (tombstones count as none).
pub fn membership<S: Store>(store: &S, folder: &FolderId, user: &UserId) -> Result<Option<Member>> {
    let Ok(id) = user.as_str().parse() else {
        return Ok(None);
    };
    match store.get(&FeedKey::members(folder), &id)? {
        Some(e) if !e.is_deleted() => Ok(Some(e.content.content.decode()?)),
        _ => Ok(None),
    }
}

/// Whether `folder` was deleted: its folder record (in its `info` feed) is a tombstone. A
/// deleted folder is revoked for everyone: nothing in it may be written (its folder record
/// cannot be brought back either), and its members may read only its `members` and `info`
/// feeds, which tell them that it was deleted; to everyone else it does not exist.
pub fn folder_deleted<S: Store>(store: &S, folder: &FolderId) -> Result<bool> {
    let id: EntryId = names::FOLDER_RECORD.parse()?;
    Ok(store
        .get(&FeedKey::info(folder), &id)?
        .is_some_and(|e| e.is_deleted()))
}

/// The feeds of a deleted folder that its members may still read.
pub(crate) fn tells_deletion(feed: &FeedKey) -> bool {
    matches!(feed.name.as_str(), names::MEMBERS | names::INFO)
}

/// Checks that `user` is an active member of `folder` whose role allows `action`, and gives
/// that role. A non-member (or a pending invitee) gets the same [`CoreError::NotFound`] as for
/// a folder that does not exist, so that folders are not revealed to outsiders.
pub fn check_folder<S: Store>(
    store: &S,
    user: &UserId,
    folder: &FolderId,
    action: Action<'_>,
) -> Result<Role> {
    let role = match membership(store, folder, user)?.and_then(|m| m.effective_role()) {
        Some(role) if !folder_deleted(store, folder)? => Some(role),
        _ => None,
    };
    let Some(role) = role else {
        return Err(CoreError::NotFound {
            kind: "folder",
            id: folder.to_string(),
        });
    };
    authorize(user, Some(role), action)?;
    Ok(role)
}

/// Whether `user` may read `feed`.
pub fn can_read<S: Store>(store: &S, user: &UserId, feed: &FeedKey) -> Result<bool> {
    match &feed.scope {
        Scope::Mesh(owner) => Ok(owner == user),
        Scope::Folder(folder) => Ok(readable(membership(store, folder, user)?.as_ref(), feed)
            && (tells_deletion(feed) || !folder_deleted(store, folder)?)),
    }
}

/// Who a user may be told about (the devices' certificates and revocations): itself, and the
/// users who are members (invitees included) of a folder whose `members` feed is among the
/// feeds it may read. Anyone else's devices would tell a stranger who has an account here.
struct Audience<'a, S> {
    store: &'a S,
    folders: Vec<&'a FolderId>,
}

impl<'a, S: Store> Audience<'a, S> {
    /// The audience of a `feeds` answer listing `feeds` (those its asker may read).
    fn new(store: &'a S, feeds: &'a [crate::store::FeedHead]) -> Self {
        let folders = feeds
            .iter()
            .filter(|h| h.feed.name.as_str() == names::MEMBERS)
            .filter_map(|h| match &h.feed.scope {
                Scope::Folder(f) => Some(f),
                Scope::Mesh(_) => None,
            })
            .collect();
        Audience { store, folders }
    }

    /// Everyone `user` may be told about, `user` first, then the members of each folder in
    /// the order they are stored, at most `max` users; reading stops there, or after
    /// `16 × max` member records (removed members' tombstones included), whatever the
    /// folders hold.
    fn users(&self, user: &UserId, max: usize) -> Result<Vec<UserId>> {
        const PAGE: usize = 1000;
        let mut budget = max.saturating_mul(16);
        let mut seen = std::collections::HashSet::new();
        let mut out = vec![user.clone()];
        seen.insert(user.clone());
        for f in &self.folders {
            let key = FeedKey::members(f);
            let mut after = None;
            loop {
                if budget == 0 {
                    return Ok(out);
                }
                let page = self.store.list(&key, after.as_ref(), PAGE.min(budget))?;
                budget -= page.len().min(budget);
                for e in page.iter().filter(|e| !e.is_deleted()) {
                    if out.len() == max {
                        return Ok(out);
                    }
                    if let Ok(u) = e.sync.id.as_str().parse::<UserId>() {
                        if seen.insert(u.clone()) {
                            out.push(u);
                        }
                    }
                }
                match page.last() {
                    Some(last) if page.len() == PAGE => after = Some(last.sync.id.clone()),
                    _ => break,
                }
            }
        }
        Ok(out)
    }
}

/// Whether a member holding `m` may read `feed` of its folder.
pub(crate) fn readable(m: Option<&Member>, feed: &FeedKey) -> bool {
    match m {
        None => false,
        Some(m) if feed.name.as_str() == names::MEMBERS => m.state != InvitationState::Declined,
        Some(m) => m.effective_role().is_some(),
    }
}

fn not_found(feed: &FeedKey) -> CoreError {
    CoreError::NotFound {
        kind: "feed",
        id: feed.to_string(),
    }
}

/// The outcome of pushing one entry through the guard.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    /// What the merge did (`Unchanged` when refused).
    pub outcome: crate::feedsync::MergeOutcome,
    /// Why the entry was refused, typed.
    pub refused: Option<CoreError>,
    /// The position its change took in the feed, when it changed.
    pub seq: Option<crate::store::Cursor>,
    /// Whether the entry's winning version is now a tombstone (when it changed).
    pub deleted: bool,
    /// Whether the merge cleared conflicts the entry held (see [`MergeReport::resolved`]).
    ///
    /// [`MergeReport::resolved`]: crate::replica::MergeReport::resolved
    pub resolved: bool,
}

/// Pushes `entries` into `feed` of `replica` as `pusher`, in the replica's transactions:
/// each entry is checked (limits, signatures, the signer's role for every version it would
/// newly store, no discarded version, a remaining owner) and merged, or refused on its own.
///
/// Entries of the `members` and `info` feeds may depend on each other (a folder's first owner,
/// then the invitations that owner made): refused ones are looked at again after each pass
/// that merged something, at most once per entry of the batch.
///
/// Entries may come with their JSON made ahead ([`Incoming::encoded`]): those stored as they
/// came are written as that JSON.
pub fn push<S: Store, E: Into<Incoming>>(
    replica: &mut Replica<S>,
    pusher: Pusher<'_>,
    origin: Option<&ReplicaId>,
    feed: &FeedKey,
    entries: Vec<E>,
) -> Result<Vec<Judged>> {
    let entries: Vec<Incoming> = entries.into_iter().map(Into::into).collect();
    for e in &entries {
        e.entry().validate()?;
    }
    let dependent = matches!(feed.name.as_str(), names::MEMBERS | names::INFO);
    let mut results: Vec<Judged> = entries
        .iter()
        .map(|_| Judged {
            outcome: crate::feedsync::MergeOutcome::Unchanged,
            refused: None,
            seq: None,
            deleted: false,
            resolved: false,
        })
        .collect();
    // A stranger to the feed learns nothing, not even which entries it already holds, and
    // costs no signature checks.
    let mut roster = Some(Roster::load(replica.store(), feed)?);
    if !roster
        .as_ref()
        .is_some_and(|r| pusher_may_push(r, &pusher, feed))
    {
        for r in &mut results {
            r.refused = Some(not_found(feed));
        }
        return Ok(results);
    }
    // Shapes and signatures do not depend on the other entries of the push: they are judged
    // once, up front (signatures on several threads), against what the replica holds.
    let verdicts: Vec<Option<CoreError>> = {
        let ids: Vec<EntryId> = entries.iter().map(|e| e.entry().sync.id.clone()).collect();
        let locals = replica.store().get_many(feed, &ids)?;
        let shaped: Vec<Result<()>> = locals
            .iter()
            .zip(&entries)
            .map(|(l, e)| limits::check_shape(l.as_ref(), e.entry()))
            .collect();
        let pairs: Vec<(Option<&Entry>, &Entry)> = locals
            .iter()
            .zip(&entries)
            .zip(&shaped)
            .filter(|(_, s)| s.is_ok())
            .map(|((l, e), _)| (l.as_ref(), e.entry()))
            .collect();
        let mut signed = crate::trust::verify_entries_with(
            pusher.keyring,
            feed,
            &pairs,
            pusher.threads,
            pusher.checked,
        )
        .into_iter();
        shaped
            .into_iter()
            .map(|s| s.and_then(|()| signed.next().unwrap_or(Ok(()))).err())
            .collect()
    };
    let mut pending: Vec<(usize, Incoming)> = entries.into_iter().enumerate().collect();
    let mut passes = 0;
    while !pending.is_empty() {
        passes += 1;
        // The first pass uses the roster read above; later ones see what earlier ones merged.
        let roster = match roster.take() {
            Some(r) => r,
            None => Roster::load(replica.store(), feed)?,
        };
        if !pusher_may_push(&roster, &pusher, feed) {
            for (i, _) in pending {
                results[i].refused = Some(not_found(feed));
            }
            break;
        }
        let (index, batch): (Vec<usize>, Vec<Incoming>) = pending.into_iter().unzip();
        let retry = dependent.then(|| batch.clone());
        let mut gate = Gate {
            pusher,
            feed,
            roster,
            verdicts: &verdicts,
            order: &index,
            next: 0,
        };
        let outcomes = replica.merge_batch_filtered(feed, batch, origin, &mut gate)?;
        let mut progress = false;
        let mut refused = Vec::new();
        for (n, (report, why)) in outcomes.into_iter().enumerate() {
            let i = index[n];
            results[i].outcome = report.outcome;
            results[i].deleted = report.deleted;
            results[i].resolved = report.resolved;
            results[i].seq = report.seq;
            progress |= report.outcome.changed();
            if why.is_some() {
                refused.push(n);
            }
            results[i].refused = why;
        }
        pending = match retry {
            Some(batch) if progress && passes <= results.len() => {
                let mut batch: Vec<Option<Incoming>> = batch.into_iter().map(Some).collect();
                refused
                    .into_iter()
                    .filter_map(|n| batch[n].take().map(|e| (index[n], e)))
                    .collect()
            }
            _ => Vec::new(),
        };
    }
    Ok(results)
}

/// Whether `pusher` may push into `feed` at all (the entries are judged one by one after).
fn pusher_may_push(roster: &Roster, pusher: &Pusher<'_>, feed: &FeedKey) -> bool {
    match &feed.scope {
        Scope::Mesh(owner) => owner == pusher.user,
        // A new folder's first records (its members and info) come from a stranger to it: its
        // creator. Any other feed of a folder that does not exist is answered as a folder the
        // pusher may not read, so a push cannot tell whether a folder exists.
        // Nothing is written into a deleted folder, not even its folder record.
        Scope::Folder(_) if roster.is_deleted() => false,
        // A new folder is founded only by the user its id names (or, in a pulled page, by
        // whoever relays its founder's signed records): an id naming someone else is refused
        // as not found whether or not that folder exists, so trying to create a folder tells
        // no one that it exists.
        Scope::Folder(folder) => {
            (roster.is_new()
                && matches!(feed.name.as_str(), names::MEMBERS | names::INFO)
                && (pusher.pulled || folder.is_founded_by(pusher.user)))
                || readable(roster.get(pusher.user), feed)
        }
    }
}

/// The guard's [`MergeGate`]: limits and signatures before the merge, authorization of every
/// newly stored version and the folder invariants after it.
struct Gate<'a, 'k> {
    pusher: Pusher<'k>,
    feed: &'a FeedKey,
    roster: Roster,
    /// The shape and signature verdict of every entry of the push, by its index there.
    verdicts: &'a [Option<CoreError>],
    /// The indexes of this pass's batch, in the order the gate sees its entries.
    order: &'a [usize],
    next: usize,
}

impl MergeGate for Gate<'_, '_> {
    fn before(&mut self, _local: Option<&Entry>, _incoming: &Entry) -> Result<()> {
        let verdict = self
            .order
            .get(self.next)
            .and_then(|&i| self.verdicts.get(i));
        self.next += 1;
        match verdict {
            Some(Some(e)) => Err(e.clone()),
            Some(None) => Ok(()),
            None => Err(CoreError::Protocol(
                "the gate saw more entries than the push".into(),
            )),
        }
    }

    fn after(&mut self, local: Option<&Entry>, merged: &Merged<EntryData>) -> Result<()> {
        if merged.discarded {
            return Err(CoreError::PermissionDenied(
                "a noconflicts version would discard versions it does not know".into(),
            ));
        }
        let Some(result) = &merged.item else {
            return Ok(());
        };
        rules::check_result(self.pusher, self.feed, &self.roster, local, result)?;
        if self.feed.name.as_str() == names::MEMBERS {
            self.roster.apply(result)?;
        }
        Ok(())
    }
}

/// The heads of every feed `user` may read and then some, in key order: their own mesh
/// feeds and those of the folders they have a member record in (found by the store's
/// index of member records), never any other folder's. The caller checks each with
/// [`can_read`]. What a hub does for each `feeds` request grows with the asker's folders,
/// not with the folders of every user it serves.
pub fn user_heads<S: Store>(store: &S, user: &UserId) -> Result<Vec<crate::store::FeedHead>> {
    let mut heads = store.scope_feeds(&Scope::Mesh(user.clone()))?;
    for folder in store.member_folders(user)? {
        heads.extend(store.scope_feeds(&Scope::Folder(folder))?);
    }
    heads.sort_by(|a, b| a.feed.cmp(&b.feed));
    Ok(heads)
}

/// Answers `user`'s pull of `feed` as [`respond_as`] does (`not_found` when they may not
/// read it), with the entries passed on as the store keeps them
/// ([`pull_encoded`](crate::sync::pull_encoded)): a hub's answer to a pull.
pub fn pull_as<S: Store>(
    replica: &Replica<S>,
    user: &UserId,
    from: &ReplicaId,
    feed: FeedKey,
    since: crate::store::Cursor,
    limit: u32,
) -> Result<crate::sync::EncodedChanges> {
    if !can_read(replica.store(), user, &feed)? {
        return Err(not_found(&feed));
    }
    crate::sync::pull_encoded(replica, from, feed, since, limit)
}

/// Answers `request` from `pusher` against `replica`, applying the access rules above: feeds
/// the user may not read are left out of listings and answered `not_found`; pushed entries
/// that may not be stored are refused one by one (see [`PushResult::refused`]) while the rest
/// merge.
pub fn respond_as<S: Store>(
    replica: &mut Replica<S>,
    pusher: Pusher<'_>,
    request: Request,
) -> Result<Response> {
    let user = pusher.user;
    match request {
        Request::Feeds {
            from: _,
            only,
            certificates,
        } => {
            let asked = match only {
                Some(only) => crate::sync::responder::named_heads(replica.store(), only)?,
                None => user_heads(replica.store(), user)?,
            };
            let mut feeds = Vec::new();
            for h in asked {
                if can_read(replica.store(), user, &h.feed)? {
                    feeds.push(h);
                }
            }
            // What the user needs to judge versions relayed by peers: the authority's word on
            // the devices of the users it shares folders with (revocations always,
            // certificates when asked), looked up by user so that the work follows the
            // asker's folders, not the mesh's size.
            let (mut revocations, mut sent) = (Vec::new(), Vec::new());
            let keyring = pusher.keyring;
            if certificates || keyring.any_revocations() {
                let max_r = crate::trust::MAX_REVOCATIONS_PER_ANSWER;
                let max_c = crate::trust::MAX_CERTIFICATES_PER_ANSWER;
                let audience = Audience::new(replica.store(), &feeds);
                for u in audience.users(user, max_r.max(max_c))? {
                    if revocations.len() < max_r {
                        revocations.extend(keyring.revocations_of(&u));
                        revocations.truncate(max_r);
                    }
                    if certificates && sent.len() < max_c {
                        sent.extend(keyring.certificates_of(&u));
                        sent.truncate(max_c);
                    }
                }
            }
            let certificates = sent;
            Ok(Response::Feeds {
                replica: replica.id(),
                feeds,
                epoch: None,
                revocations,
                certificates,
            })
        }
        Request::Pull {
            from,
            feed,
            since,
            limit,
        } => {
            if !can_read(replica.store(), user, &feed)? {
                return Err(not_found(&feed));
            }
            crate::sync::responder::pull(replica, &from, feed, since, limit)
        }
        Request::Push {
            from,
            feed,
            entries,
        } => answer_push(replica, pusher, &from, feed, entries),
        push @ Request::PushEncoded { .. } => respond_as(replica, pusher, push.decoded()?),
    }
}

/// Answers a push of `entries` into `feed` from the replica `from` as [`respond_as`] does
/// ([`push`], then the answer), for a caller that took the request apart: to make the entries'
/// JSON ahead ([`Incoming::encoded`]) before it takes the feed's lock, say.
pub fn answer_push<S: Store, E: Into<Incoming>>(
    replica: &mut Replica<S>,
    pusher: Pusher<'_>,
    from: &ReplicaId,
    feed: FeedKey,
    entries: Vec<E>,
) -> Result<Response> {
    let entries: Vec<Incoming> = entries.into_iter().map(Into::into).collect();
    let ids: Vec<_> = entries.iter().map(|e| e.entry().sync.id.clone()).collect();
    let judged = push(replica, pusher, Some(from), &feed, entries)?;
    let results = ids
        .into_iter()
        .zip(judged)
        .map(|(id, j)| PushResult {
            id,
            outcome: j.outcome,
            code: j.refused.as_ref().map(|e| e.code().as_str().to_string()),
            refused: j.refused.map(|e| e.to_string()),
        })
        .collect();
    Ok(Response::Pushed { feed, results })
}
