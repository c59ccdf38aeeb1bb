//! A folder's members as the guard sees them while it judges one push.

use std::collections::HashMap;

use crate::error::Result;
use crate::id::UserId;
use crate::model::{Entry, FeedKey, InvitationState, Member, Role, Scope};
use crate::store::Store;

/// How many member records are read per page while loading a roster.
const PAGE: usize = 1000;

/// The live member records of one folder (invitations included), read once per pass of a push
/// and kept up to date as members entries of that pass are merged.
#[derive(Debug, Clone, Default)]
pub struct Roster {
    members: HashMap<UserId, Member>,
    any_record: bool,
    deleted: bool,
}

impl Roster {
    /// The roster of `feed`'s folder (empty for a mesh feed).
    pub fn load<S: Store>(store: &S, feed: &FeedKey) -> Result<Self> {
        let mut roster = Roster::default();
        let Scope::Folder(folder) = &feed.scope else {
            return Ok(roster);
        };
        roster.deleted = super::folder_deleted(store, folder)?;
        let key = FeedKey::members(folder);
        let mut after = None;
        loop {
            let page = store.list(&key, after.as_ref(), PAGE)?;
            roster.any_record |= !page.is_empty();
            for e in &page {
                roster.record(e);
            }
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some(last.sync.id.clone()),
                _ => break,
            }
        }
        Ok(roster)
    }

    /// Whether the folder never had a member record: its first record may come from a stranger
    /// (its creator).
    pub fn is_new(&self) -> bool {
        !self.any_record
    }

    /// Whether the folder was deleted (its folder record is a tombstone): nothing in it may be
    /// written any more, and only its `members` and `info` feeds (which say that it was
    /// deleted) may be read, by its members.
    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    /// The live record of `user`, if any.
    pub fn get(&self, user: &UserId) -> Option<&Member> {
        self.members.get(user)
    }

    /// Whether `user` may read `feed` of this roster's folder (what
    /// [`can_read`](super::can_read) answers, from the roster instead of the store). A mesh
    /// feed is not a folder's: the answer there is `false`; ask `can_read`.
    pub fn can_read(&self, user: &UserId, feed: &FeedKey) -> bool {
        matches!(feed.scope, Scope::Folder(_))
            && (!self.deleted || super::tells_deletion(feed))
            && super::readable(self.get(user), feed)
    }

    /// The role `user` may act with (an active membership), if any.
    pub fn role(&self, user: &UserId) -> Option<Role> {
        self.get(user).and_then(Member::effective_role)
    }

    /// How many active owners the folder has.
    pub fn active_owners(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.role == Role::Owner && m.state == InvitationState::Active)
            .count()
    }

    /// How many active owners the folder would have with `result` stored as its member entry.
    pub fn active_owners_with(&self, result: &Entry) -> usize {
        let mut next = self.clone();
        next.record(result);
        next.active_owners()
    }

    /// Takes a members entry that was just stored.
    pub(crate) fn apply(&mut self, result: &Entry) -> Result<()> {
        self.any_record = true;
        self.record(result);
        Ok(())
    }

    fn record(&mut self, e: &Entry) {
        let Ok(user) = e.sync.id.as_str().parse::<UserId>() else {
            return;
        };
        // A record that does not decode grants nothing (the guard refuses such pushes; this
        // only guards against a store written by something else).
        match (e.is_deleted(), e.content.content.decode::<Member>()) {
            (false, Ok(m)) if m.user == user => {
                self.members.insert(user, m);
            }
            _ => {
                self.members.remove(&user);
            }
        }
    }
}
