//! The write rules, judged per version: every version a merge would newly store is checked as
//! a write of the user whose device signed it.

use crate::error::{CoreError, Result};
use crate::feedsync::SyncMeta;
use crate::id::UserId;
use crate::model::{
    authorize, names, Action, Entry, EntryData, FeedKey, Folder, InvitationState, Mapping, Member,
    NewsItem, Role, Scope,
};
use crate::sync::guard::{Pusher, Roster};
use crate::trust::{signer_of_meta, KeyStatus, Signer};

fn denied(why: String) -> CoreError {
    CoreError::PermissionDenied(why)
}

/// One version of an item, borrowed.
#[derive(Clone, Copy)]
struct V<'a> {
    sync: &'a SyncMeta,
    data: &'a EntryData,
}

fn versions(e: &Entry) -> impl Iterator<Item = V<'_>> {
    std::iter::once(V {
        sync: &e.sync,
        data: &e.content,
    })
    .chain(e.conflicts.iter().map(|c| V {
        sync: &c.sync,
        data: &c.content,
    }))
}

/// Checks the item a merge would store in place of `local`:
///
/// * no version `local` holds disappears unless a stored version knows it (a `noconflicts`
///   winner may not discard versions it never saw);
/// * every version that `local` does not hold identically is authorized as its signer's write;
/// * a members entry may not leave the folder without an active owner.
pub fn check_result(
    pusher: Pusher<'_>,
    feed: &FeedKey,
    roster: &Roster,
    local: Option<&Entry>,
    result: &Entry,
) -> Result<()> {
    if let Some(local) = local {
        for held in versions(local) {
            let kept = versions(result).any(|r| {
                (r.sync.same_version(held.sync) && r.data == held.data) || r.sync.knows(held.sync)
            });
            if !kept {
                return Err(denied(format!(
                    "entry {} would lose a version it does not know (sequence {} by {})",
                    result.sync.id,
                    held.sync.updates,
                    top_by(held.sync)
                )));
            }
        }
    }
    for v in versions(result) {
        let held = local.is_some_and(|l| versions(l).any(|h| h.sync == v.sync && h.data == v.data));
        if held {
            continue;
        }
        let actor = match signer_of_meta(pusher.keyring, v.sync) {
            Signer::User(u) => u,
            Signer::Foreign => pusher.user.clone(),
            Signer::Authority => match pusher.authority_acts_for {
                Some(u) => u.clone(),
                None => continue, // the authority checked the role when it signed
            },
        };
        check_version(pusher, feed, roster, &actor, local, v)?;
    }
    if feed.name.as_str() == names::MEMBERS
        && roster.active_owners() > 0
        && roster.active_owners_with(result) == 0
    {
        return Err(denied("a folder keeps at least one active owner".into()));
    }
    Ok(())
}

fn top_by(s: &SyncMeta) -> String {
    s.topmost()
        .and_then(|h| h.by.as_ref())
        .map_or_else(|| "(none)".into(), |b| b.to_string())
}

/// Checks one newly stored version `v` as a write by `actor`.
fn check_version(
    pusher: Pusher<'_>,
    feed: &FeedKey,
    roster: &Roster,
    actor: &UserId,
    local: Option<&Entry>,
    v: V<'_>,
) -> Result<()> {
    let Scope::Folder(folder) = &feed.scope else {
        // A user's mesh feeds: only that user's devices (or the pusher, for foreign items).
        return match &feed.scope {
            Scope::Mesh(owner) if owner == actor => Ok(()),
            _ => Err(denied(format!(
                "a version in {feed} signed for {actor} (only the feed's owner writes it)"
            ))),
        };
    };
    let role = roster.role(actor);
    // Members and mappings records have rules of their own for who changes them; every
    // feed keeps the author of what a version continues.
    let changes = match feed.name.as_str() {
        names::MEMBERS => Changes::ByMemberRules,
        names::MAPPINGS => Changes::OwnOnly,
        _ => Changes::ByRole,
    };
    // A new folder's first records (its creator's owner record, its folder record) come
    // from someone who holds no role in it yet: their own rules below decide.
    let founding = roster.is_new() && matches!(feed.name.as_str(), names::MEMBERS | names::INFO);
    if founding && !folder.is_founded_by(actor) {
        // Whoever relays them, a folder's first records are its founder's: the user its id
        // names (see `FolderId::founded_by`).
        return Err(denied(format!(
            "folder {folder} can only be founded by the user its id names, not by {actor}"
        )));
    }
    if !founding {
        check_lineage(actor, role, local, v, changes)?;
    }
    if feed.name.as_str() == names::INFO && v.sync.id.as_str() == names::FOLDER_RECORD {
        // Every member's folder list decodes this record: one that does not (a malformed
        // kind, say) is refused here rather than break those lists.
        decode::<Folder>(v, "folder record")?;
    }
    match feed.name.as_str() {
        names::MEMBERS => check_member(pusher, roster, actor, role, local, v),
        names::INFO if founding && local.is_none() => Ok(()),
        names::INFO => authorize(actor, role, Action::DeleteFolder),
        names::MAPPINGS => {
            let m: Mapping = decode(v, "mapping")?;
            if &m.user != actor {
                return Err(denied(format!(
                    "a mapping of {}'s device written by {actor}",
                    m.user
                )));
            }
            if let KeyStatus::Device(d) = pusher.keyring.lookup(&m.device) {
                if &d.certificate.user != actor {
                    return Err(denied(format!(
                        "device {} is not a device of {actor}",
                        m.device
                    )));
                }
            }
            authorize(actor, role, Action::Map)
        }
        names::NEWS => {
            let n: NewsItem = decode(v, "news item")?;
            if &n.actor != actor {
                return Err(denied(format!(
                    "a news item naming {} as its actor, written by {actor}",
                    n.actor
                )));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Who may write a version that continues (knows) versions the replica holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Changes {
    /// As the role allows: changing an entry by its author (ordinary feeds, news, info).
    ByRole,
    /// Only the user whose record it is (mappings).
    OwnOnly,
    /// As the member rules say ([`check_member`]).
    ByMemberRules,
}

/// The rule shared by every folder feed: a version continues the versions it knows, which its
/// signer must be allowed to change, and keeps their author; a version that knows no held
/// version is a new entry (or a concurrent creation of the same id), created by its author.
fn check_lineage(
    actor: &UserId,
    role: Option<Role>,
    local: Option<&Entry>,
    v: V<'_>,
    changes: Changes,
) -> Result<()> {
    let author = &v.data.author;
    let mut continues = false;
    let mut keeps_author = false;
    for held in local.into_iter().flat_map(versions) {
        if !v.sync.knows(held.sync) {
            continue;
        }
        continues = true;
        keeps_author |= &held.data.author == author;
        let whose = &held.data.author;
        match changes {
            Changes::ByRole => authorize(actor, role, Action::ChangeEntry { author: whose })?,
            Changes::OwnOnly if whose != actor => {
                return Err(denied(format!(
                    "{actor} may not change {whose}'s record {}",
                    v.sync.id
                )))
            }
            Changes::OwnOnly | Changes::ByMemberRules => {}
        }
    }
    if continues {
        if !keeps_author {
            return Err(denied(format!(
                "the author of entry {} cannot change",
                v.sync.id
            )));
        }
        return Ok(());
    }
    match changes {
        Changes::ByRole if author == actor => authorize(actor, role, Action::CreateEntry),
        // Creating an entry in another user's name is changing that user's entry.
        Changes::ByRole => authorize(actor, role, Action::ChangeEntry { author }),
        Changes::OwnOnly if author != actor => Err(denied(format!(
            "{actor} may not write a record {} authored by {author}",
            v.sync.id
        ))),
        // An owner's invitation is authored by the owner, not by the invitee: the member
        // rules judge it.
        Changes::OwnOnly | Changes::ByMemberRules => Ok(()),
    }
}

fn decode<T: serde::de::DeserializeOwned>(v: V<'_>, what: &str) -> Result<T> {
    v.data
        .content
        .decode()
        .map_err(|e| denied(format!("entry {} is not a valid {what}: {e}", v.sync.id)))
}

fn check_member(
    pusher: Pusher<'_>,
    roster: &Roster,
    actor: &UserId,
    role: Option<Role>,
    local: Option<&Entry>,
    v: V<'_>,
) -> Result<()> {
    let target: UserId = v
        .sync
        .id
        .as_str()
        .parse()
        .map_err(|_| denied(format!("member entry {} is not a user id", v.sync.id)))?;
    let new: Member = decode(v, "member record")?;
    if new.user != target {
        return Err(denied(format!(
            "member entry {} names user {}",
            v.sync.id, new.user
        )));
    }
    let old: Option<Member> = match local {
        Some(l) if !l.is_deleted() => l.content.content.decode().ok(),
        _ => None,
    };
    // The first owner of a new folder: its creator, as an active owner.
    if roster.is_new() && old.is_none() {
        return if &target == actor
            && new.role == Role::Owner
            && new.state == InvitationState::Active
            && !v.sync.deleted
        {
            Ok(())
        } else {
            Err(denied(
                "a new folder's first member must be its creator, as an active owner".into(),
            ))
        };
    }
    if v.sync.deleted {
        // Removing a member, or leaving: the tombstone keeps the record it removes.
        if let Some(old) = &old {
            if &new != old {
                return Err(denied(format!(
                    "the tombstone of member {target} changes the record"
                )));
            }
        }
        return if &target == actor {
            authorize(actor, role, Action::Leave)
        } else {
            authorize(actor, role, Action::ManageMember { target: &target })
        };
    }
    if &target == actor {
        if let Some(old) = &old {
            // Accepting or declining one's own invitation.
            let answers = old.state == InvitationState::Invited
                && new.role == old.role
                && new.invited_by == old.invited_by
                && new.state != InvitationState::Invited;
            if answers {
                return Ok(());
            }
        }
        // Any other change to one's own membership (a new role, say) is an owner's business,
        // and only an accept makes a membership active.
        if new.state == InvitationState::Active
            && old.as_ref().map(|o| o.state) != Some(InvitationState::Active)
        {
            return Err(denied(format!(
                "{target} can become active only by accepting an invitation"
            )));
        }
        return authorize(actor, role, Action::ManageMember { target: &target });
    }
    // Someone else's record: only its user answers an invitation.
    let old_state = old.as_ref().map(|o| o.state);
    if new.state != InvitationState::Invited && old_state != Some(new.state) {
        return Err(denied(format!(
            "only {target} can accept or decline an invitation to {target}"
        )));
    }
    match old {
        None => {
            if &new.invited_by != actor {
                return Err(denied(format!(
                    "an invitation of {target} naming {} as its inviter, written by {actor}",
                    new.invited_by
                )));
            }
            authorize(actor, role, Action::Invite { role: new.role })?;
            // Only someone with an account here can be invited (when the keyring can tell).
            if pusher.keyring.has_user(&target) == Some(false) {
                return Err(CoreError::NotFound {
                    kind: "user",
                    id: target.to_string(),
                });
            }
            Ok(())
        }
        Some(_) => authorize(actor, role, Action::ManageMember { target: &target }),
    }
}
