//! Access control for a replica that serves several users (a hub, or a device serving peers).
//!
//! Who may read and write what follows from the folders' `members` feeds held by the serving
//! replica itself, through the one permission check of the model
//! ([`authorize`](crate::model::authorize)):
//!
//! * a user's mesh feeds (`mesh:<user>/…`) belong to that user alone;
//! * a folder's `members` feed is visible to everyone named in it (so that an invited user can
//!   see and accept the invitation); its other feeds need an active membership;
//! * a pushed entry that teaches the replica nothing needs no permission (devices relay merge
//!   results); anything else is checked as the write it is: creating an entry, changing one
//!   (by author), inviting, accepting, managing members, deleting the folder.
//!
//! A user who may not read a feed is told it does not exist (`not_found`), never that it is
//! forbidden, so that folder ids do not leak.

use crate::error::{CoreError, Result};
use crate::feedsync::{merge, MergeOutcome};
use crate::id::{FolderId, UserId};
use crate::model::{
    authorize, names, Action, Entry, FeedKey, InvitationState, Member, Role, Scope,
};
use crate::replica::Replica;
use crate::store::Store;
use crate::sync::message::{PushResult, Request, Response};

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

/// Checks that `user` is an active member of `folder` whose role allows `action`, and gives
/// that role. A non-member (or a pending invitee) gets the same [`CoreError::NotFound`] as for
/// a folder that does not exist, so that folders are not revealed to outsiders.
pub fn check_folder<S: Store>(
    store: &S,
    user: &UserId,
    folder: &FolderId,
    action: Action<'_>,
) -> Result<Role> {
    let Some(role) = membership(store, folder, user)?.and_then(|m| m.effective_role()) else {
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
        Scope::Folder(folder) => {
            let m = membership(store, folder, user)?;
            Ok(match m {
                None => false,
                Some(m) if feed.name.as_str() == names::MEMBERS => {
                    m.state != InvitationState::Declined
                }
                Some(m) => m.effective_role().is_some(),
            })
        }
    }
}

fn not_found(feed: &FeedKey) -> CoreError {
    CoreError::NotFound {
        kind: "feed",
        id: feed.to_string(),
    }
}

/// Checks that `user` may push `entry` into `feed` of `store`.
pub fn check_push<S: Store>(store: &S, user: &UserId, feed: &FeedKey, entry: &Entry) -> Result<()> {
    let folder = match &feed.scope {
        Scope::Mesh(owner) if owner == user => return Ok(()),
        Scope::Mesh(_) => return Err(not_found(feed)),
        Scope::Folder(f) => f,
    };
    let local = store.get(feed, &entry.sync.id)?;
    if merge(local.as_ref(), entry.clone())?.outcome == MergeOutcome::Unchanged {
        return Ok(());
    }
    let me = membership(store, folder, user)?;
    let role = me.as_ref().and_then(Member::effective_role);
    if let (Some(local), names::MEMBERS | names::INFO) = (&local, feed.name.as_str()) {
        if local.content.author != entry.content.author {
            return Err(CoreError::PermissionDenied(format!(
                "the author of entry {} cannot change",
                entry.sync.id
            )));
        }
    }
    match feed.name.as_str() {
        names::MEMBERS => {
            check_member_write(store, folder, user, me.as_ref(), local.as_ref(), entry)
        }
        names::INFO => {
            if local.is_none() && folder_is_new(store, folder)? {
                Ok(())
            } else {
                authorize(user, role, Action::DeleteFolder)
            }
        }
        _ => check_entry_write(user, me.as_ref(), feed, local.as_ref(), entry),
    }
}

/// The rule for an ordinary entry (not a membership or the folder record) that would change
/// the serving replica: the pusher must be a member whose role allows creating it, or
/// changing an entry by its author; the author never changes.
fn check_entry_write(
    user: &UserId,
    me: Option<&Member>,
    feed: &FeedKey,
    local: Option<&Entry>,
    entry: &Entry,
) -> Result<()> {
    let Some(me) = me else {
        return Err(not_found(feed));
    };
    let role = me.effective_role();
    match local {
        Some(l) if l.content.author != entry.content.author => Err(CoreError::PermissionDenied(
            format!("the author of entry {} cannot change", entry.sync.id),
        )),
        Some(l) => authorize(
            user,
            role,
            Action::ChangeEntry {
                author: &l.content.author,
            },
        ),
        None if &entry.content.author == user => authorize(user, role, Action::CreateEntry),
        None => authorize(
            user,
            role,
            Action::ChangeEntry {
                author: &entry.content.author,
            },
        ),
    }
}

fn folder_is_new<S: Store>(store: &S, folder: &FolderId) -> Result<bool> {
    Ok(store.list(&FeedKey::members(folder), None, 1)?.is_empty())
}

fn check_member_write<S: Store>(
    store: &S,
    folder: &FolderId,
    user: &UserId,
    me: Option<&Member>,
    local: Option<&Entry>,
    entry: &Entry,
) -> Result<()> {
    let target: UserId = entry.sync.id.as_str().parse()?;
    let new: Member = entry.content.content.decode()?;
    if new.user != target {
        return Err(CoreError::PermissionDenied(format!(
            "member entry {} names user {}",
            entry.sync.id, new.user
        )));
    }
    let old: Option<Member> = match local {
        Some(l) if !l.is_deleted() => Some(l.content.content.decode()?),
        _ => None,
    };
    let role = me.and_then(Member::effective_role);
    // The first owner of a new folder.
    if old.is_none() && folder_is_new(store, folder)? {
        return if &target == user && new.role == Role::Owner && new.state == InvitationState::Active
        {
            Ok(())
        } else {
            Err(CoreError::PermissionDenied(
                "a new folder's first member must be its creator, as an active owner".into(),
            ))
        };
    }
    if &target == user {
        if let Some(old) = &old {
            // Accepting or declining one's own invitation, or leaving.
            let answers = old.state == InvitationState::Invited
                && new.role == old.role
                && new.state != InvitationState::Invited;
            if answers || entry.is_deleted() {
                return Ok(());
            }
        }
        // Any other change to one's own membership (a new role, say) is an owner's business.
        return authorize(user, role, Action::ManageMember { target: &target });
    }
    match old {
        None => authorize(user, role, Action::Invite { role: new.role }),
        Some(_) => authorize(user, role, Action::ManageMember { target: &target }),
    }
}

/// Answers `request` from `user` against `replica`, applying the access rules above: feeds the
/// user may not read are left out of listings and answered `not_found`; pushed entries the user
/// may not write are refused one by one (see [`PushResult::refused`]) while the rest merge.
pub fn respond_as<S: Store>(
    replica: &mut Replica<S>,
    user: &UserId,
    request: Request,
) -> Result<Response> {
    match request {
        Request::Feeds { from: _, only } => {
            let mut feeds = Vec::new();
            for h in replica.store().feeds()? {
                if only.as_ref().is_none_or(|o| o.contains(&h.feed))
                    && can_read(replica.store(), user, &h.feed)?
                {
                    feeds.push(h);
                }
            }
            Ok(Response::Feeds {
                replica: replica.id(),
                feeds,
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
        } => {
            for e in &entries {
                e.validate()?;
            }
            if let Some(results) = push_ordinary(replica, user, &from, &feed, &entries)? {
                return Ok(Response::Pushed { feed, results });
            }
            let mut results: Vec<PushResult> = entries
                .iter()
                .map(|e| PushResult {
                    id: e.sync.id.clone(),
                    outcome: MergeOutcome::Unchanged,
                    refused: None,
                })
                .collect();
            // Entries may depend on each other (a folder's first owner, then the invitations
            // that owner made): merge what is allowed, then look again at what was refused,
            // until a pass allows nothing more.
            let mut pending: Vec<(usize, Entry)> = entries.into_iter().enumerate().collect();
            while !pending.is_empty() {
                let mut allowed = Vec::new();
                let mut refused = Vec::new();
                for (i, e) in pending {
                    match check_push(replica.store(), user, &feed, &e) {
                        Ok(()) => allowed.push((i, e)),
                        Err(
                            err @ (CoreError::PermissionDenied(_) | CoreError::NotFound { .. }),
                        ) => {
                            results[i].refused = Some(err.to_string());
                            refused.push((i, e));
                        }
                        Err(other) => return Err(other),
                    }
                }
                if allowed.is_empty() {
                    break;
                }
                let (index, batch): (Vec<usize>, Vec<Entry>) = allowed.into_iter().unzip();
                let reports = replica.merge_batch(&feed, batch, Some(&from))?;
                for (i, r) in index.into_iter().zip(reports) {
                    results[i].outcome = r.outcome;
                    results[i].refused = None;
                }
                pending = refused;
            }
            Ok(Response::Pushed { feed, results })
        }
    }
}

/// Pushes into an ordinary feed (not members or the folder record, whose entries can depend on
/// each other) in one pass: the pusher's membership is read once, and each entry is merged
/// once, checked only when it would change something. `None` for the other feeds.
fn push_ordinary<S: Store>(
    replica: &mut Replica<S>,
    user: &UserId,
    from: &crate::id::ReplicaId,
    feed: &FeedKey,
    entries: &[Entry],
) -> Result<Option<Vec<PushResult>>> {
    if matches!(feed.name.as_str(), names::MEMBERS | names::INFO) {
        return Ok(None);
    }
    // A stranger to the feed learns nothing, not even which entries it already holds.
    let refuse_all = |reason: CoreError| {
        entries
            .iter()
            .map(|e| PushResult {
                id: e.sync.id.clone(),
                outcome: MergeOutcome::Unchanged,
                refused: Some(reason.to_string()),
            })
            .collect()
    };
    let me = match &feed.scope {
        Scope::Mesh(owner) if owner == user => None,
        Scope::Mesh(_) => return Ok(Some(refuse_all(not_found(feed)))),
        Scope::Folder(f) => match membership(replica.store(), f, user)? {
            Some(m) => Some(m),
            None => return Ok(Some(refuse_all(not_found(feed)))),
        },
    };
    let outcomes =
        replica.merge_batch_filtered(feed, entries.to_vec(), Some(from), |local, incoming| {
            match me.as_ref() {
                None => Ok(()), // the user's own mesh feed
                Some(m) => check_entry_write(user, Some(m), feed, local, incoming),
            }
        })?;
    Ok(Some(
        outcomes
            .into_iter()
            .map(|(report, refused)| PushResult {
                id: report.id,
                outcome: report.outcome,
                refused: refused.map(|e| e.to_string()),
            })
            .collect(),
    ))
}
